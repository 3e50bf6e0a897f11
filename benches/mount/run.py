#!/usr/bin/env python3
"""Benchmark of `strata mount` against `strata cat` and `strata ls --recursive`, in one run.

Builds strata in release mode, backs up a generated 100 MiB file and 50,000 small files into a
fresh repository, then measures (median of --runs, each on a freshly started mount so that
neither the kernel's page cache nor strata's caches hold the data):

  read:  `cat MOUNT/snapshots/latest/.../big.bin > /dev/null`  versus
         `strata cat latest .../big.bin > /dev/null`
  list:  `find MOUNT/snapshots/latest/.../files | wc -l`  versus
         `strata ls latest .../files --recursive | wc -l`

and prints both ratios: mount read throughput as a share of `strata cat`'s (target >= 70%),
and the listing time as a multiple of `strata ls`'s (target <= 2x). The repository's pack files
are in the page cache for both sides (a warm-up read comes first). Run as root (FUSE).
Python 3 standard library only.
"""
import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MIB = 1 << 20


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="/tmp/strata-mount-bench", help="scratch directory")
    ap.add_argument("--runs", type=int, default=3, help="measurements per side (median)")
    ap.add_argument("--files", type=int, default=50_000, help="small files to list")
    ap.add_argument("--big-mib", type=int, default=100, help="size of the file to read")
    ap.add_argument("--no-build", action="store_true", help="skip cargo build --release")
    ap.add_argument("--json", help="also write the raw numbers to this file")
    return ap.parse_args()


def build():
    subprocess.run(["cargo", "build", "--release", "--locked"], cwd=ROOT, check=True)


def write_big(path, mib):
    """Each MiB: half random bytes, half a repeated phrase (compressible), as the tests do."""
    rng = random.Random(20240601)
    with open(path, "wb") as f:
        for i in range(mib):
            f.write(rng.randbytes(MIB // 2))
            phrase = f"strata mount benchmark, segment {i}; ".encode()
            f.write((phrase * (MIB // 2 // len(phrase) + 1))[: MIB // 2])


def write_small(root, count):
    """`count` files of 20..300 bytes in directories of 500."""
    rng = random.Random(7)
    for i in range(count):
        d = root / f"d{i // 500:03}"
        if i % 500 == 0:
            d.mkdir(parents=True)
        (d / f"f{i:06}.txt").write_bytes(rng.randbytes(rng.randint(10, 150)).hex().encode())


def prepare(work, args):
    if work.exists():
        shutil.rmtree(work)
    src = work / "src"
    (src / "big").mkdir(parents=True)
    write_big(src / "big" / "big.bin", args.big_mib)
    write_small(src / "files", args.files)
    return src


class Strata:
    def __init__(self, work):
        self.bin = str(ROOT / "target" / "release" / "strata")
        self.env = dict(os.environ)
        self.env.update(
            STRATA_REPOSITORY=str(work / "repo"),
            STRATA_PASSWORD="bench",
            STRATA_CACHE_DIR=str(work / "cache"),
        )

    def run(self, *args, stdout=subprocess.DEVNULL):
        return subprocess.run([self.bin, *args], env=self.env, stdout=stdout, check=True)

    def shell(self, command):
        """Seconds a shell command takes, and its stdout."""
        started = time.perf_counter()
        out = subprocess.run(
            command, shell=True, env=self.env, check=True, capture_output=True, text=True
        )
        return time.perf_counter() - started, out.stdout.strip()


class Mount:
    """A freshly started `strata mount`, stopped with SIGTERM on exit."""

    def __init__(self, strata, mountpoint):
        self.strata, self.mountpoint = strata, mountpoint

    def __enter__(self):
        mp = self.mountpoint
        mp.mkdir(exist_ok=True)
        self.proc = subprocess.Popen(
            [self.strata.bin, "mount", str(mp)], env=self.strata.env, stdout=subprocess.DEVNULL
        )
        deadline = time.time() + 60
        while not (mp / "snapshots").exists():
            if self.proc.poll() is not None or time.time() > deadline:
                sys.exit(f"strata mount did not start (exit {self.proc.poll()})")
            time.sleep(0.02)
        return mp

    def __exit__(self, *exc):
        self.proc.send_signal(signal.SIGTERM)
        if self.proc.wait(timeout=60) != 0:
            sys.exit("strata mount did not stop cleanly")


def measure(strata, work, src, runs):
    """Seconds per run for each of the four commands."""
    big = f"{src}/big/big.bin"
    files = f"{src}/files"
    mp = work / "mnt"
    inside = f"{mp}/snapshots/latest{src}"
    times = {"mount_read": [], "cat": [], "mount_find": [], "ls": []}
    counts = {}
    strata.run("cat", "latest", big)  # warm the page cache with the pack files
    for _ in range(runs):
        times["cat"].append(strata.shell(f"{strata.bin} cat latest {big} > /dev/null")[0])
        seconds, counts["ls"] = strata.shell(f"{strata.bin} ls latest {files} -R | wc -l")
        times["ls"].append(seconds)
        with Mount(strata, mp):
            times["mount_read"].append(strata.shell(f"cat {inside}/big/big.bin > /dev/null")[0])
        with Mount(strata, mp):
            seconds, counts["find"] = strata.shell(f"find {inside}/files -mindepth 1 | wc -l")
            times["mount_find"].append(seconds)
    if counts["ls"] != counts["find"]:
        sys.exit(f"find listed {counts['find']} entries, strata ls {counts['ls']}")
    return times, int(counts["ls"])


def main():
    args = parse_args()
    work = Path(args.work)
    if not args.no_build:
        build()
    src = prepare(work, args)
    strata = Strata(work)
    strata.run("init", "--kdf-memory-mib", "8", "--kdf-iterations", "1")
    strata.run("backup", str(src))
    times, entries = measure(strata, work, src, args.runs)
    med = {k: statistics.median(v) for k, v in times.items()}
    mib = args.big_mib
    print(f"read {mib} MiB:  mount {mib / med['mount_read']:.0f} MiB/s, "
          f"strata cat {mib / med['cat']:.0f} MiB/s  "
          f"-> mount at {100 * med['cat'] / med['mount_read']:.0f}% of cat (target >= 70%)")
    print(f"list {entries} entries:  find on the mount {med['mount_find']:.2f} s, "
          f"strata ls -R {med['ls']:.2f} s  "
          f"-> {med['mount_find'] / med['ls']:.2f}x (target <= 2x)")
    if args.json:
        Path(args.json).write_text(json.dumps({"seconds": times, "entries": entries}, indent=2))
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
