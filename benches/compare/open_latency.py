#!/usr/bin/env python3
"""Opening latency on object storage: the median wall time of `strata snapshots` and of an
unchanged `strata backup` (200 files of 20 KB) against a local moto S3 server behind
run.py's proxy, which adds 20 ms to every request. The binaries given take turns, 10 runs
each, on one repository with one warm cache, so that a change to how commands open a
repository is measured before and after in one run:

    python3 benches/compare/open_latency.py OLD_BIN NEW_BIN

Needs moto (.ci/setup puts it in ~/.cache/strata-test/moto-venv). Work dir: /dev/shm/s3o.
"""
import importlib.util
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
spec = importlib.util.spec_from_file_location("run", HERE / "run.py")
run = importlib.util.module_from_spec(spec)
sys.modules["run"] = run
spec.loader.exec_module(run)

RUNS = 10
LATENCY_MS = 20


def main() -> None:
    bins = sys.argv[1:]
    if not bins:
        sys.exit(__doc__)
    work = Path("/dev/shm/s3o")
    shutil.rmtree(work, ignore_errors=True)
    src = work / "src"
    src.mkdir(parents=True)
    for i in range(200):
        (src / f"f{i}").write_bytes(os.urandom(20000))
    moto = Path.home() / ".cache/strata-test/moto-venv/bin/moto_server"
    server = run.S3Server(moto, work, LATENCY_MS)
    try:
        server.request(server.connection(), "PUT", "/bkt")
        env = dict(os.environ, AWS_ACCESS_KEY_ID=run.S3_KEY, AWS_SECRET_ACCESS_KEY=run.S3_KEY,
                   AWS_DEFAULT_REGION=run.S3_REGION, STRATA_PASSWORD="open-latency",
                   XDG_CACHE_HOME=str(work / "cache"),
                   STRATA_REPOSITORY=f"s3:{server.endpoint}/bkt/repo")

        def timed(binary: str, *args: str) -> float:
            start = time.monotonic()
            done = subprocess.run([binary, *args], env=env, capture_output=True, timeout=300)
            if done.returncode != 0:
                sys.exit(f"{binary} {' '.join(args)}: {done.stderr.decode()}")
            return time.monotonic() - start

        timed(bins[0], "init")
        timed(bins[0], "backup", str(src), "-q")
        times = {(b, c): [] for b in bins for c in ("snapshots", "backup")}
        for turn in range(RUNS):
            for b in bins if turn % 2 == 0 else bins[::-1]:
                times[(b, "snapshots")].append(timed(b, "snapshots", "-q"))
                times[(b, "backup")].append(timed(b, "backup", str(src), "-q"))
        for (b, command), ts in times.items():
            print(f"{b} {command}: median {statistics.median(ts):.3f} s, min {min(ts):.3f} s")
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
