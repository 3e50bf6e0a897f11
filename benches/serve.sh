#!/usr/bin/env bash
# The service's speed figures (README, "Running as a service", "Speed"). Usage:
#
#   STRATA=path/to/strata benches/serve.sh WORKDIR [SNAPSHOTS] [ENTRIES]
#
# In WORKDIR (removed first) it makes a repository of SNAPSHOTS snapshots (default 10,000:
# one CLI backup of one small file each, all with the first as parent so that none lists
# the others) and one of a directory of ENTRIES empty files (default 100,000); starts
# `strata serve` on 127.0.0.1:$PORT (default 18431) and times with curl (`time_total`) the
# snapshot listing five times, pages of 10,000 and 1,000 entries three times each, and all
# the pages of 10,000 in turn; reads the service's CPU time from /proc/PID/stat over
# $IDLE seconds (default 60) with no run due; then times the same first backup of 256 MiB
# (four random files) by the CLI and by a plan run through the API (the operation's start
# to end in the history), into fresh repositories, five rounds each way round. Needs curl
# and python3.
set -euo pipefail
W=${1:?usage: benches/serve.sh WORKDIR [SNAPSHOTS] [ENTRIES]}
SNAPSHOTS=${2:-10000}
ENTRIES=${3:-100000}
B=${STRATA:?set STRATA to the strata binary to measure}
PORT=${PORT:-18431}
rm -rf "$W"
mkdir -p "$W"
W=$(cd "$W" && pwd)
echo pw > "$W/pw"
fast_init() { "$B" -r "$1" --password-file "$W/pw" init --kdf-memory-mib 8 --kdf-iterations 1 >/dev/null; }
backup() { "$B" -r "$1" --password-file "$W/pw" --no-cache -q backup "${@:2}"; }

mkdir -p "$W/snaps/src" "$W/big/src/d"
echo hi > "$W/snaps/src/a"
fast_init "$W/snaps/repo"
backup "$W/snaps/repo" "$W/snaps/src"
first=$(ls "$W/snaps/repo/snapshots")
for _ in $(seq 2 "$SNAPSHOTS"); do backup "$W/snaps/repo" --parent "$first" "$W/snaps/src"; done
python3 -c "
import sys
for i in range(int(sys.argv[2])): open('%s/f%06d' % (sys.argv[1], i), 'w').close()
" "$W/big/src/d" "$ENTRIES"
fast_init "$W/big/repo"
backup "$W/big/repo" "$W/big/src"

cat > "$W/m.toml" <<EOT
listen = "127.0.0.1:$PORT"
state_dir = "$W/state"

[[repository]]
name = "snaps"
location = "$W/snaps/repo"
password_file = "$W/pw"

[[repository]]
name = "big"
location = "$W/big/repo"
password_file = "$W/pw"
EOT
T=$("$B" serve --config "$W/m.toml" token create --name m --role read)
"$B" serve --config "$W/m.toml" 2> "$W/serve.log" &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
until curl -sf "http://127.0.0.1:$PORT/api/v1/health" >/dev/null; do sleep 0.1; done
get() {
    curl -s -o "$W/out.json" -w '%{time_total}' -H "Authorization: Bearer $T" \
        "http://127.0.0.1:$PORT$1"
}
next_offset() {
    python3 -c "import json; v = json.load(open('$W/out.json'))['next_offset']; print('' if v is None else v)"
}
echo "snapshots: $(ls "$W/snaps/repo/snapshots" | wc -l)"
for i in 1 2 3 4 5; do echo "list snapshots #$i: $(get /api/v1/repositories/snaps/snapshots) s"; done
D="$W/big/src/d"
tree="/api/v1/repositories/big/snapshots/latest/tree?path=$D"
last=$(( (ENTRIES - 1) / 10000 * 10000 ))
for i in 1 2 3; do echo "page of 10,000 at $last #$i: $(get "$tree&limit=10000&offset=$last") s"; done
for i in 1 2 3; do echo "page of 1,000 at 0 #$i: $(get "$tree&limit=1000") s"; done
start=$(date +%s.%N)
offset=0
while [ -n "$offset" ]; do
    get "$tree&limit=10000&offset=$offset" >/dev/null
    offset=$(next_offset)
done
echo "all pages of 10,000: $(python3 -c "import time; print(round(time.time() - $start, 3))") s (with a python start per page)"
ticks() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
a=$(ticks)
sleep "${IDLE:-60}"
b=$(ticks)
echo "idle CPU over ${IDLE:-60} s: $((b - a)) ticks of 1/$(getconf CLK_TCK) s"
kill $PID
wait $PID || true

# The same first backup by the CLI and by the service.
mkdir -p "$W/bk/src"
for i in 1 2 3 4; do head -c 64M /dev/urandom > "$W/bk/src/r$i"; done
cli_backup() {
    local s e
    s=$(date +%s.%N)
    "$B" -r "$W/bk/cli" --password-file "$W/pw" --cache-dir "$W/bk/cache" -q backup "$W/bk/src"
    e=$(date +%s.%N)
    echo "round $1 CLI: $(python3 -c "print(round($e - $s, 2))") s"
}
service_backup() {
    cat > "$W/bk/b.toml" <<EOT
listen = "127.0.0.1:$PORT"
state_dir = "$W/bk/state"

[[repository]]
name = "svc"
location = "$W/bk/svc"
password_file = "$W/pw"

[[plan]]
name = "p"
repository = "svc"
paths = ["$W/bk/src"]
schedule = "0 0 1 1 *"
EOT
    local t pid id
    t=$("$B" serve --config "$W/bk/b.toml" token create --name "m$1" --role operate)
    "$B" serve --config "$W/bk/b.toml" 2> "$W/bk/serve.log" &
    pid=$!
    until curl -sf "http://127.0.0.1:$PORT/api/v1/health" >/dev/null; do sleep 0.1; done
    id=$(curl -s -X POST -H "Authorization: Bearer $t" "http://127.0.0.1:$PORT/api/v1/plans/p/run" |
        python3 -c "import json, sys; print(json.load(sys.stdin)['operation'])")
    while :; do
        curl -s -H "Authorization: Bearer $t" "http://127.0.0.1:$PORT/api/v1/operations/$id" > "$W/bk/op.json"
        python3 -c "import json, sys; sys.exit(json.load(open('$W/bk/op.json'))['status'] == 'running')" && break
        sleep 0.2
    done
    python3 -c "
import json, datetime
o = json.load(open('$W/bk/op.json'))
t = lambda s: datetime.datetime.fromisoformat(s.replace('Z', '+00:00'))
print('round $1 service:', round((t(o['ended']) - t(o['started'])).total_seconds(), 2), 's', o['status'])"
    kill $pid
    wait $pid || true
}
for round in 1 2 3 4 5 6 7 8 9 10; do
    rm -rf "$W/bk/cli" "$W/bk/svc" "$W/bk/state" "$W/bk/cache"
    fast_init "$W/bk/cli"
    fast_init "$W/bk/svc"
    if [ $((round % 2)) = 1 ]; then
        cli_backup $round
        service_backup $round
    else
        service_backup $round
        cli_backup $round
    fi
done
