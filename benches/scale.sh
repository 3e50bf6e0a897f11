#!/usr/bin/env bash
# Peak memory and wall time of strata's commands on a repository of N blobs (README,
# "Performance", "Scale"). Usage, from the repository root:
#
#   benches/scale.sh N WORKDIR
#
# It builds the release binary (unless $STRATA names one to measure) and the generator
# (benches/scale.rs) in $CARGO_TARGET_DIR (default target/), writes a fresh repository of N
# random data blobs under WORKDIR (about 260 bytes of disk per blob, and another 200 while
# restore's output exists), then runs each
# command under /usr/bin/time -v and prints one table row per command: peak RSS (MiB) and
# wall time (s). WORKDIR is removed first and left in place afterwards ($SCALE_FROM and
# $SCALE_GENERATE_ONLY below reuse one generated repository). mount needs FUSE
# (/dev/fuse and fusermount3) and runs in the foreground until this script unmounts it.
set -euo pipefail
N=${1:?usage: benches/scale.sh N WORKDIR}
W=${2:?usage: benches/scale.sh N WORKDIR}
TARGET=${CARGO_TARGET_DIR:-target}
# $STRATA: a strata binary to measure instead of the one built here.
if [ -z "${STRATA:-}" ]; then
    cargo build --release --quiet
    STRATA=$TARGET/release/strata
fi
rm -rf "$W"
mkdir -p "$W"
W=$(cd "$W" && pwd)
export STRATA_REPOSITORY=$W/repo STRATA_PASSWORD=scale STRATA_CACHE_DIR=$W/cache

# One table row from /usr/bin/time -v's report in $W/time.txt.
row() {
    awk -v name="$1" -v n="$N" -F': ' '
        /Maximum resident set size/ { rss = $2 / 1024 }
        /Elapsed \(wall clock\)/ { k = split($2, t, ":"); s = 0; for (i = 1; i <= k; i++) s = s * 60 + t[i] }
        /Exit status/ { status = $2 }
        END { printf "| %s | %d | %.0f MiB | %.1f s |%s\n", name, n, rss, s, status == 0 ? "" : " exit " status }
    ' "$W/time.txt" | tee -a "$W/results.md"
}

# Runs a command under /usr/bin/time -v, its output to $W/NAME.log, and prints its row.
measure() {
    local name=$1
    shift
    /usr/bin/time -v -o "$W/time.txt" "$@" >"$W/$name.log" 2>&1 || true
    row "$name"
}

echo "| command | blobs | peak RSS | wall time |" | tee "$W/results.md"
echo "|---|---|---|---|" | tee -a "$W/results.md"
if [ -n "${SCALE_FROM:-}" ]; then
    # $SCALE_FROM: the WORKDIR of an earlier run with $SCALE_GENERATE_ONLY (same N), whose
    # untouched repository is copied instead of generating one, so that two binaries are
    # measured on the same repository.
    cp -a "$SCALE_FROM/repo" "$W/repo"
    cp "$SCALE_FROM/generate.log" "$W/generate.log"
    awk '/^\| generate/' "$SCALE_FROM/results.md" >>"$W/results.md"
else
    # $SCALE_GENERATOR: an already built benches/scale.rs executable, to skip the cargo build.
    measure generate ${SCALE_GENERATOR:-cargo bench --quiet --bench scale --} --blobs "$N" --repo "$W/repo"
fi
# $SCALE_GENERATE_ONLY: stop here, leaving a repository for $SCALE_FROM.
[ -n "${SCALE_GENERATE_ONLY:-}" ] && exit 0
base=$(awk '/^snapshot base/ { print $3 }' "$W/generate.log")

# The first command to open the repository loads every index file into the local index.
measure "ls (first open, builds the local index)" "$STRATA" ls "$base" /scale

mkdir -p "$W/small"
for i in $(seq 1 100); do head -c 20000 /dev/urandom >"$W/small/f$i"; done
measure "backup (100 new files)" "$STRATA" backup --tag keep "$W/small"
measure check "$STRATA" check
measure "check --read-data-subset 1%" "$STRATA" check --read-data-subset 1%
measure "forget --keep-tag keep" "$STRATA" forget --keep-tag keep
measure prune "$STRATA" prune
measure "restore (base snapshot)" "$STRATA" restore "$base" --target "$W/restore"
rm -rf "$W/restore"

# mount: list one directory of 1,000 files recursively and read one file, then unmount.
mkdir -p "$W/mnt"
/usr/bin/time -v -o "$W/time.txt" "$STRATA" mount --snapshot "$base" "$W/mnt" >"$W/mount.log" 2>&1 &
timer=$!
dir=""
for _ in $(seq 1 600); do
    dir=$(ls -d "$W"/mnt/ids/*/scale/d00000 2>/dev/null || true)
    [ -n "$dir" ] && break
    sleep 0.5
done
started=$(date +%s.%N)
entries=$(ls -R "$dir" | wc -l)
bytes=$(wc -c <"$dir/f00000000")
echo "ls -R: $entries lines, read $bytes bytes, in $(echo "$(date +%s.%N) - $started" | bc) s" >"$W/mount-read.log"
kill -TERM "$(pgrep -P "$timer")"
wait "$timer" || true
row "mount (ls -R one directory, read one file)"
du -sh "$W/repo" "$W/cache" | tee -a "$W/results.md"
