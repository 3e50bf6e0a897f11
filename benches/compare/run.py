#!/usr/bin/env python3
"""Side-by-side benchmark of strata against restic, rustic, borg and bupstash.

One command from a fresh clone:

    python3 benches/compare/run.py            # all three corpora, all tools
    python3 benches/compare/run.py --quick    # small smoke run

It installs what is missing (Debian packages, `cargo install` of rustic and bupstash into a
cache dir), builds strata, prepares the corpora, measures the machine's read/hash/compress
ceiling, then runs the four phases (first backup, unchanged re-backup, backup after a
deterministic mutation, full restore verified byte for byte) interleaved tool by tool, and
writes a markdown report plus the raw numbers as JSON. See README.md beside this file.

Python 3.11 standard library only.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import re
import shlex
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
ALL_TOOLS = ["strata", "restic", "rustic", "borg", "bupstash"]
# Not in ALL_TOOLS: an earlier strata binary (--strata-base BIN), run beside the current one
# so that a change is measured before and after in one run.
BASE_TOOL = "strata-base"
# The binary given by --strata, if any (reported instead of this checkout's git revision).
STRATA_GIVEN: str | None = None
CORPORA = ["usr-share", "large", "small-text"]
PHASES = ["backup1", "backup2", "backup3", "restore"]
PHASE_TITLES = {
    "backup1": "first backup",
    "backup2": "re-backup (unchanged)",
    "backup3": "backup after mutation",
    "restore": "full restore",
}
PASSWORD = "strata-bench-password"
MB = 1_000_000
MIB = 1 << 20
GIB = 1 << 30

# Debian packages: command that proves it is there -> package.
APT_COMMANDS = {
    "restic": "restic",
    "borg": "borgbackup",
    "b3sum": "b3sum",
    "zstd": "zstd",
    "tar": "tar",
    "/usr/bin/time": "time",
}
CARGO_CRATES = {"rustic": ("rustic-rs", "rustic"), "bupstash": ("bupstash", "bupstash")}


def log(msg: str) -> None:
    print(f"[{dt.datetime.now().strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def sh(cmd, **kw) -> subprocess.CompletedProcess:
    """Run a helper command (not timed), raising on failure."""
    kw.setdefault("check", True)
    return subprocess.run(cmd, **kw)


def capture(cmd, env=None) -> str:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120,
                           stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unavailable ({e})"
    out = (p.stdout or p.stderr).strip()
    return out.splitlines()[0].strip() if out else f"unavailable (exit {p.returncode})"


# ----------------------------------------------------------------------------------------
# Installation


def ensure_installed(args, tools: list[str], cache: Path) -> dict[str, Path]:
    """Install missing Debian packages and cargo-built tools; return tool -> binary path."""
    need_apt = []
    wanted = ["b3sum", "zstd", "tar", "/usr/bin/time"]
    if "restic" in tools:
        wanted.append("restic")
    if "borg" in tools:
        wanted.append("borg")
    for c in wanted:
        if shutil.which(c) is None:
            need_apt.append(APT_COMMANDS[c])
    cargo_root = cache / "cargo"
    cargo_needed = [t for t in tools if t in CARGO_CRATES
                    and not (cargo_root / "bin" / CARGO_CRATES[t][1]).exists()]
    if "bupstash" in cargo_needed:  # its build needs libsodium through pkg-config
        if shutil.which("pkg-config") is None:
            need_apt += ["pkg-config", "libsodium-dev"]
        elif subprocess.run(["pkg-config", "--exists", "libsodium"]).returncode != 0:
            need_apt.append("libsodium-dev")
    if need_apt:
        if args.no_install:
            sys.exit(f"missing Debian packages: {' '.join(need_apt)} (and --no-install given)")
        if os.geteuid() != 0:
            sys.exit(f"missing Debian packages, run as root or install them: "
                     f"apt-get install -y {' '.join(need_apt)}")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        log(f"apt-get update && apt-get install -y {' '.join(need_apt)}")
        sh(["apt-get", "update", "-q"], env=env, stdout=subprocess.DEVNULL)
        sh(["apt-get", "install", "-y", "-q", *need_apt], env=env, stdout=subprocess.DEVNULL)
    for t in cargo_needed:
        crate, binname = CARGO_CRATES[t]
        if args.no_install:
            sys.exit(f"{cargo_root}/bin/{binname} missing (and --no-install given)")
        cmd = ["cargo", "install", "--locked", "--root", str(cargo_root), crate]
        log(f"{shlex.join(cmd)}   (takes many minutes on 2 cores; cached afterwards)")
        sh(cmd)
    bins = {}
    for t in tools:
        if t == "strata":
            bins[t] = (Path(args.strata).resolve() if args.strata
                       else REPO_ROOT / "target" / "release" / "strata")
        elif t == BASE_TOOL:
            if not args.strata_base:
                sys.exit(f"--tools {BASE_TOOL} needs --strata-base BIN")
            bins[t] = Path(args.strata_base).resolve()
        elif t in CARGO_CRATES:
            bins[t] = cargo_root / "bin" / CARGO_CRATES[t][1]
        else:
            bins[t] = Path(shutil.which(t) or t)
    if "strata" in tools and not args.no_build and not args.strata:
        log("cargo build --release")
        sh(["cargo", "build", "--release"], cwd=REPO_ROOT)
    return bins


# ----------------------------------------------------------------------------------------
# Tools. Every command gets its repository, password and caches through the environment;
# HOME and XDG dirs point into the tool's own directory inside the work dir, so no config or
# cache from the real home is read and every tool starts cold for each corpus.


class Tool:
    name = ""
    # The exact flags, for the report and README.
    flags = ""
    # How it is pointed at an S3 bucket (None: no S3 backend).
    s3_flags: str | None = None

    def __init__(self, binary: Path, base: Path, src: Path, backend: str = "local",
                 s3: "S3Server | None" = None, bucket: str | None = None):
        self.bin = str(binary)
        self.base = base  # this tool's dir for this corpus
        self.repo = base / "repo"
        self.cache = base / "cache"
        self.home = base / "home"
        self.src = src
        self.snapshot_ids: list[str] = []
        self.backend = backend
        self.s3 = s3
        self.bucket = bucket
        # The repository lies under the prefix `repo` of the tool's own bucket.
        self.s3_url = f"s3:{s3.endpoint}/{bucket}/repo" if s3 else None

    def location(self) -> str:
        return self.s3_url if self.backend == "s3" else str(self.repo)

    def env(self) -> dict:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("STRATA_", "RESTIC_", "RUSTIC_", "BORG_", "BUPSTASH_",
                                    "AWS_", "OPENDAL_"))}
        env.update(HOME=str(self.home), XDG_CACHE_HOME=str(self.cache),
                   XDG_CONFIG_HOME=str(self.home / ".config"),
                   XDG_DATA_HOME=str(self.home / ".local/share"))
        if self.backend == "s3":
            env.update(AWS_ACCESS_KEY_ID=S3_KEY, AWS_SECRET_ACCESS_KEY=S3_KEY,
                       AWS_DEFAULT_REGION=S3_REGION)
        env.update(self.tool_env())
        return env

    def repo_size(self) -> tuple[int, int]:
        """(apparent, allocated) bytes of the repository; on S3 the sum of object sizes."""
        if self.backend == "s3":
            n = sum(size for _k, size in self.s3.list_objects(self.bucket, "repo/"))
            return n, n
        return tree_size(self.repo)

    def tool_env(self) -> dict:
        return {}

    def prepare(self) -> None:
        for d in (self.cache, self.home):
            d.mkdir(parents=True, exist_ok=True)

    def init_cmds(self) -> list[list[str]]:
        raise NotImplementedError

    def backup_cmd(self, n: int) -> list[str]:
        raise NotImplementedError

    def after_backup(self, n: int, stdout: str) -> None:
        pass

    def restore_cmd(self, target: Path) -> tuple[list[str], Path | None]:
        """(command, cwd)."""
        raise NotImplementedError

    def restored_root(self, target: Path) -> Path:
        return target / self.src.relative_to("/")

    def version(self) -> str:
        raise NotImplementedError


class Strata(Tool):
    name = "strata"
    flags = ("`strata init` (defaults: zstd level 3, XChaCha20-Poly1305, Argon2id 32 MiB × 3 × 4 lanes, "
             "16 MiB packs); `strata backup SRC -q --json`; "
             "`strata restore latest --target DIR -q`")
    s3_flags = ("`-r s3:http://127.0.0.1:PORT/BUCKET/repo` (path-style; defaults: "
                "8 connections, 16 MiB packs)")

    def tool_env(self):
        return {"STRATA_REPOSITORY": self.location(), "STRATA_PASSWORD": PASSWORD,
                "STRATA_CACHE_DIR": str(self.cache)}

    def init_cmds(self):
        return [[self.bin, "init", "-q"]]

    def backup_cmd(self, n):
        return [self.bin, "backup", str(self.src), "-q", "--json"]

    def restore_cmd(self, target):
        return [self.bin, "restore", "latest", "--target", str(target), "-q"], None

    def version(self):
        v = capture([self.bin, "--version"])
        if STRATA_GIVEN:  # --strata BIN: not necessarily built from this checkout
            return f"{v} ({STRATA_GIVEN})"
        rev = capture(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"])
        dirty = subprocess.run(["git", "-C", str(REPO_ROOT), "diff", "--quiet", "HEAD", "--",
                                "src", "Cargo.toml", "Cargo.lock"]).returncode
        return f"{v} (git {rev}{' + uncommitted changes' if dirty else ''})"


class StrataBase(Strata):
    """An earlier strata binary (`--strata-base`), with the same flags as `strata`."""
    name = BASE_TOOL
    flags = "as strata, with the binary given by `--strata-base`"

    def version(self):
        return capture([self.bin, "--version"]) + f" ({self.bin})"


class Restic(Tool):
    name = "restic"
    flags = ("`restic init --repository-version 2`; "
             "`restic backup SRC -q --compression auto` (auto = klauspost zstd SpeedDefault, "
             "≈ zstd level 3; AES-256-CTR + Poly1305-AES; scrypt key); "
             "`restic restore latest --target DIR -q`")

    s3_flags = "`-r s3:http://127.0.0.1:PORT/BUCKET/repo` (defaults: `-o s3.connections=5`)"

    def tool_env(self):
        return {"RESTIC_REPOSITORY": self.location(), "RESTIC_PASSWORD": PASSWORD,
                "RESTIC_CACHE_DIR": str(self.cache)}

    def init_cmds(self):
        return [[self.bin, "init", "--repository-version", "2", "-q"]]

    def backup_cmd(self, n):
        return [self.bin, "backup", str(self.src), "-q", "--compression", "auto"]

    def restore_cmd(self, target):
        return [self.bin, "restore", "latest", "--target", str(target), "-q"], None

    def version(self):
        return capture([self.bin, "version"])


class Rustic(Tool):
    name = "rustic"
    flags = ("`rustic init --set-compression 3` (restic repository format v2, zstd level 3); "
             "`rustic backup SRC --no-progress`; `rustic restore latest DIR --no-progress`")

    s3_flags = ("OpenDAL's S3 service: `RUSTIC_REPOSITORY=opendal:s3` with `OPENDAL_ENDPOINT`, "
                "`_BUCKET`, `_ROOT=/repo`, `_REGION`, `_ACCESS_KEY_ID`, `_SECRET_ACCESS_KEY` "
                "(rustic's `[repository.options]` from the environment; path-style; "
                "no `connections` limit set, rustic's default)")

    def tool_env(self):
        env = {"RUSTIC_REPOSITORY": str(self.repo), "RUSTIC_PASSWORD": PASSWORD,
               "RUSTIC_CACHE_DIR": str(self.cache)}
        if self.backend == "s3":
            env.update(RUSTIC_REPOSITORY="opendal:s3", OPENDAL_ENDPOINT=self.s3.endpoint,
                       OPENDAL_BUCKET=self.bucket, OPENDAL_ROOT="/repo",
                       OPENDAL_REGION=S3_REGION, OPENDAL_ACCESS_KEY_ID=S3_KEY,
                       OPENDAL_SECRET_ACCESS_KEY=S3_KEY)
        return env

    def init_cmds(self):
        return [[self.bin, "init", "--set-compression", "3", "--no-progress"]]

    def backup_cmd(self, n):
        return [self.bin, "backup", str(self.src), "--no-progress"]

    def restore_cmd(self, target):
        return [self.bin, "restore", "latest", str(target), "--no-progress"], None

    def version(self):
        return capture([self.bin, "--version"])


class Borg(Tool):
    name = "borg"
    flags = ("`borg init -e repokey-blake2` (AES-256-CTR + BLAKE2b-256 MAC); "
             "`borg create --compression zstd,3 ::snap-N SRC`; "
             "`borg extract ::snap-3` run inside DIR")

    def tool_env(self):
        return {"BORG_REPO": str(self.repo), "BORG_PASSPHRASE": PASSWORD,
                "BORG_BASE_DIR": str(self.home), "BORG_CACHE_DIR": str(self.cache),
                "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes"}

    def init_cmds(self):
        return [[self.bin, "init", "-e", "repokey-blake2"]]

    def backup_cmd(self, n):
        return [self.bin, "create", "--compression", "zstd,3", f"::snap-{n}", str(self.src)]

    def restore_cmd(self, target):
        target.mkdir(parents=True)
        return [self.bin, "extract", "::snap-3"], target

    def version(self):
        return capture([self.bin, "--version"])


class Bupstash(Tool):
    name = "bupstash"
    flags = ("`bupstash new-key -o KEY` + `bupstash init` (always encrypted, libsodium); "
             "`bupstash put -q --compression zstd:3 --send-log CACHE/send-log SRC` "
             "(zstd:3 is also its default); `bupstash restore -q --into DIR id=ID`")

    def tool_env(self):
        return {"BUPSTASH_REPOSITORY": str(self.repo), "BUPSTASH_KEY": str(self.home / "key"),
                "BUPSTASH_SEND_LOG": str(self.cache / "send-log"),
                "BUPSTASH_QUERY_CACHE": str(self.cache / "query-cache")}

    def init_cmds(self):
        return [[self.bin, "new-key", "-o", str(self.home / "key")], [self.bin, "init"]]

    def backup_cmd(self, n):
        return [self.bin, "put", "-q", "--compression", "zstd:3",
                "--send-log", str(self.cache / "send-log"), str(self.src)]

    def after_backup(self, n, stdout):
        ids = re.findall(r"[0-9a-f]{32}", stdout)
        if ids:
            self.snapshot_ids.append(ids[-1])

    def restore_cmd(self, target):
        target.mkdir(parents=True)
        sid = self.snapshot_ids[-1] if self.snapshot_ids else "missing"
        return [self.bin, "restore", "-q", "--into", str(target), f"id={sid}"], None

    def restored_root(self, target):
        return target

    def version(self):
        return capture([self.bin, "version"])


TOOL_CLASSES = {c.name: c for c in (Strata, StrataBase, Restic, Rustic, Borg, Bupstash)}


# ----------------------------------------------------------------------------------------
# Timed runs


def run_timed(cmd: list[str], env: dict, cwd: Path | None, logbase: Path,
              timeout: float) -> dict:
    """Run cmd under /usr/bin/time -v; wall time from a monotonic clock around it."""
    timefile = logbase.with_suffix(".time")
    load = os.getloadavg()[0]  # on a shared machine, what else was running
    full = ["/usr/bin/time", "-v", "-o", str(timefile), *cmd]
    with open(logbase.with_suffix(".out"), "wb") as out, \
            open(logbase.with_suffix(".err"), "wb") as err:
        t0 = time.monotonic()
        # Own process group, so a timeout ends the tool and its children, not only `time`.
        p = subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env,
                             cwd=cwd, start_new_session=True)
        try:
            rc = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, 9)
            p.wait()
            rc = "timeout"
        except BaseException:
            os.killpg(p.pid, 9)
            p.wait()
            raise
        wall = time.monotonic() - t0
    res = {"cmd": shlex.join(cmd), "cwd": str(cwd) if cwd else None, "wall_s": wall, "rc": rc,
           "rss_kb": None, "user_s": None, "sys_s": None, "loadavg_before": load}
    try:
        text = timefile.read_text()
        m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
        res["rss_kb"] = int(m.group(1)) if m else None
        m = re.search(r"User time \(seconds\): ([\d.]+)", text)
        res["user_s"] = float(m.group(1)) if m else None
        m = re.search(r"System time \(seconds\): ([\d.]+)", text)
        res["sys_s"] = float(m.group(1)) if m else None
    except OSError:
        pass
    res["ok"] = rc == 0
    if rc != 0:
        errtext = logbase.with_suffix(".err").read_bytes().decode(errors="replace").strip()
        res["error"] = f"exit {rc}: " + " | ".join(errtext.splitlines()[-5:])[:600]
    return res


def tree_size(path: Path) -> tuple[int, int]:
    """(apparent bytes, allocated bytes) of every file below path."""
    apparent = allocated = 0
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            try:
                st = os.lstat(os.path.join(dirpath, f))
            except OSError:
                continue
            apparent += st.st_size
            allocated += st.st_blocks * 512
    return apparent, allocated


def compare_trees(a: Path, b: Path, limit: int = 10) -> tuple[bool, list[str], int]:
    """Byte-for-byte comparison of two trees: names, entry types, file contents and symlink
    targets (modes, owners and times are not compared). Returns (ok, problems, files)."""
    problems: list[str] = []
    nfiles = 0

    def same_content(x: str, y: str) -> bool:
        with open(x, "rb") as fx, open(y, "rb") as fy:
            while True:
                bx = fx.read(MIB)
                by = fy.read(MIB)
                if bx != by:
                    return False
                if not bx:
                    return True

    stack = [""]
    while stack and len(problems) < limit:
        rel = stack.pop()
        da, db = os.path.join(a, rel), os.path.join(b, rel)
        try:
            na, nb = set(os.listdir(da)), set(os.listdir(db))
        except OSError as e:
            problems.append(f"{rel or '.'}: {e}")
            continue
        for n in sorted(na - nb):
            problems.append(f"missing: {os.path.join(rel, n)}")
        for n in sorted(nb - na):
            problems.append(f"extra: {os.path.join(rel, n)}")
        for n in sorted(na & nb):
            r = os.path.join(rel, n)
            sa, sb = os.lstat(os.path.join(a, r)), os.lstat(os.path.join(b, r))
            if stat.S_IFMT(sa.st_mode) != stat.S_IFMT(sb.st_mode):
                problems.append(f"type differs: {r}")
            elif stat.S_ISDIR(sa.st_mode):
                stack.append(r)
            elif stat.S_ISLNK(sa.st_mode):
                if os.readlink(os.path.join(a, r)) != os.readlink(os.path.join(b, r)):
                    problems.append(f"symlink target differs: {r}")
            elif stat.S_ISREG(sa.st_mode):
                nfiles += 1
                if sa.st_size != sb.st_size:
                    problems.append(f"size differs: {r} ({sa.st_size} vs {sb.st_size})")
                elif not same_content(os.path.join(a, r), os.path.join(b, r)):
                    problems.append(f"content differs: {r}")
    return not problems, problems[:limit], nfiles


# ----------------------------------------------------------------------------------------
# Corpora


def corpus_stats(src: Path) -> dict:
    files = dirs = links = other = 0
    nbytes = 0
    for dirpath, dirnames, filenames in os.walk(src):
        for n in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, n))
            if stat.S_ISREG(st.st_mode):
                files += 1
                nbytes += st.st_size
            elif stat.S_ISDIR(st.st_mode):
                dirs += 1
            elif stat.S_ISLNK(st.st_mode):
                links += 1
            else:
                other += 1
    return {"files": files, "dirs": dirs, "symlinks": links, "other": other, "bytes": nbytes}


def prepare_usr_share(dst: Path, nfiles: int, seed: int) -> str:
    """A copy of /usr/share (all of it, or a seeded sample of nfiles files and symlinks)."""
    origin = Path("/usr/share")
    if nfiles <= 0:
        dst.parent.mkdir(parents=True, exist_ok=True)
        sh(["cp", "-a", str(origin), str(dst)])
        return "copy of /usr/share (`cp -a`)"
    entries = []
    for dirpath, dirnames, filenames in os.walk(origin):
        dirnames.sort()
        for n in sorted(filenames):
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
                entries.append(os.path.relpath(p, origin))
    rng = random.Random(seed)
    chosen = sorted(rng.sample(entries, min(nfiles, len(entries))))
    for rel in chosen:
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(origin / rel, target, follow_symlinks=False)
    return f"seeded sample of {len(chosen)} files and symlinks of /usr/share (of {len(entries)})"


def rust_docs_html() -> Path | None:
    """The HTML documentation of the Rust toolchain (rustup's `rust-docs` component)."""
    try:
        sysroot = subprocess.run(["rustc", "--print", "sysroot"], capture_output=True,
                                 text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    html = Path(sysroot) / "share" / "doc" / "rust" / "html"
    return html if html.is_dir() else None


def prepare_small_text(dst: Path) -> str:
    """Tens of thousands of small text files: the Rust toolchain's HTML documentation
    (`$(rustc --print sysroot)/share/doc/rust/html`, about 52,000 files, most under 64 KiB)."""
    origin = rust_docs_html()
    if origin is None:
        sys.exit("corpus small-text needs the Rust documentation: rustup component add rust-docs")
    dst.parent.mkdir(parents=True, exist_ok=True)
    sh(["cp", "-a", str(origin), str(dst)])
    return f"copy of the Rust toolchain's HTML documentation ({origin})"


class TextGen:
    """Deterministic log-like text: a pool of lines from a Zipf-weighted vocabulary,
    emitted in random order (zstd -3 compresses it roughly 3-4x, nothing deduplicates)."""

    def __init__(self, rng: random.Random, pool_lines: int = 40000):
        self.rng = rng
        syll = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "qu", "an", "el", "or",
                "in", "us", "th", "st", "er", "on", "ch"]
        words = sorted({"".join(rng.choice(syll) for _ in range(rng.randint(1, 4)))
                        for _ in range(6000)})
        weights = [1.0 / (i + 1) for i in range(len(words))]
        cum, s = [], 0.0
        for w in weights:
            s += w
            cum.append(s)
        hosts = [f"node-{i:02d}" for i in range(24)]
        svcs = ["api", "worker", "db", "cache", "auth", "billing", "cron", "gateway"]
        lines = []
        for i in range(pool_lines):
            ws = rng.choices(words, cum_weights=cum, k=rng.randint(4, 18))
            lines.append(
                f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T"
                f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}."
                f"{rng.randint(0, 999):03d}Z {rng.choice(hosts)} {rng.choice(svcs)}"
                f"[{rng.randint(100, 65000)}]: {' '.join(ws)} id={rng.getrandbits(48):012x} "
                f"took={rng.randint(0, 5000)}ms\n")
        self.lines = lines
        self.avg = sum(map(len, lines)) / len(lines)

    def block(self, n: int) -> bytes:
        k = int(n / self.avg * 1.1) + 8
        b = "".join(self.rng.choices(self.lines, k=k)).encode()
        while len(b) < n:
            b += "".join(self.rng.choices(self.lines, k=64)).encode()
        return b[:n]


def write_blocks(path: Path, total: int, gen) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        left = total
        while left > 0:
            n = min(left, 8 * MIB)
            f.write(gen(n))
            left -= n


def prepare_large(dst: Path, total_bytes: int, seed: int) -> str:
    """Generated large files: compressible text, incompressible random, and a VM-image-like
    file (zero runs, regions repeated at 4 KiB-aligned offsets, fresh text and random)."""
    rng = random.Random(seed)
    text = TextGen(rng)
    t_bytes, r_bytes = int(total_bytes * 0.40), int(total_bytes * 0.25)
    v_bytes = total_bytes - t_bytes - r_bytes
    for i in range(4):
        write_blocks(dst / "logs" / f"app-{i + 1}.log", t_bytes // 4, text.block)
    for i in range(3):
        write_blocks(dst / "media" / f"blob-{i + 1}.bin", r_bytes // 3, rng.randbytes)
    # VM image: a pool of "OS file" segments reused at many offsets.
    pool = []
    for i in range(32):
        n = rng.randint(16, 512) * 4096
        kind = i % 3
        if kind == 0:
            pool.append(text.block(n))
        elif kind == 1:
            pool.append(rng.randbytes(n))
        else:  # structured binary records: compressible, not text
            rec = bytearray()
            base = rng.getrandbits(32)
            while len(rec) < n:
                rec += (base + len(rec)).to_bytes(8, "little") + bytes(8) + rng.randbytes(4)
            pool.append(bytes(rec[:n]))
    img = dst / "vm" / "disk.img"
    img.parent.mkdir(parents=True, exist_ok=True)
    with open(img, "wb") as f:
        left = v_bytes
        while left > 0:
            r = rng.random()
            if r < 0.25:
                seg = bytes(rng.randint(16, 1024) * 4096)
            elif r < 0.65:
                seg = rng.choice(pool)
            elif r < 0.85:
                seg = text.block(rng.randint(16, 512) * 4096)
            else:
                seg = rng.randbytes(rng.randint(16, 512) * 4096)
            seg = seg[:left]
            f.write(seg)
            left -= len(seg)
    return (f"generated: 4 log-like text files ({t_bytes / MB:.0f} MB), 3 random files "
            f"({r_bytes / MB:.0f} MB), 1 VM-image-like file ({v_bytes / MB:.0f} MB)")


def mutate(src: Path, seed: int) -> dict:
    """Deterministic mutation of the tree, applied once to the shared source after phase 2:
    ~2% of regular files edited in place (a third overwritten in place at the same size, a
    third with bytes inserted in the middle so the rest of the content shifts, a third
    appended), 0.5% deleted, and some new files (a few hundred on a big tree) — half fresh
    text, half near-copies of existing small files."""
    rng = random.Random(seed)
    files = []
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames.sort()
        for n in sorted(filenames):
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode) and st.st_nlink == 1:
                files.append(p)
    n = len(files)
    n_edit = max(3, round(0.02 * n))
    n_del = round(0.005 * n)
    n_new = min(300, max(3, n // 10))
    picked = rng.sample(files, min(n, n_edit + n_del))
    deleted, edited = picked[:n_del], picked[n_del:]
    summary = {"files_before": n, "overwritten": 0, "inserted": 0, "appended": 0,
               "deleted": 0, "new": 0, "bytes_written": 0}
    for i, p in enumerate(edited):
        size = os.path.getsize(p)
        kind = i % 3
        with open(p, "r+b") as f:
            if kind == 0:  # overwrite 4 KiB blocks in place (a VM disk write, a patched file)
                for _ in range(1 + size // (16 * MIB)):
                    blk = min(4096, max(size, 1))
                    off = rng.randrange(0, size // 4096) * 4096 if size >= 8192 else 0
                    data = rng.randbytes(blk)
                    f.seek(off)
                    f.write(data)
                    summary["bytes_written"] += len(data)
                summary["overwritten"] += 1
            elif kind == 1:  # insert bytes in the middle: everything after shifts
                off = rng.randint(size // 3, (2 * size) // 3) if size else 0
                data = rng.randbytes(rng.randint(1, 4096))
                f.seek(off)
                tail = f.read()
                f.seek(off)
                f.write(data)
                f.write(tail)
                summary["inserted"] += 1
                summary["bytes_written"] += len(data)
            else:  # append
                k = rng.randint(100, 65536) if size < MIB else rng.randint(MIB, 4 * MIB)
                data = rng.randbytes(k)
                f.seek(0, os.SEEK_END)
                f.write(data)
                summary["appended"] += 1
                summary["bytes_written"] += len(data)
    for p in deleted:
        os.unlink(p)
        summary["deleted"] += 1
    pickedset = set(picked)
    small = [p for p in files if p not in pickedset and os.path.getsize(p) <= MIB]
    text = TextGen(rng, pool_lines=2000)
    newdir = src / "new-files"
    newdir.mkdir(exist_ok=True)
    dirs = sorted({os.path.dirname(p) for p in files})
    for i in range(n_new):
        where = newdir if i % 2 == 0 or not dirs else Path(rng.choice(dirs))
        path = where / f"bench-new-{i:04d}.dat"
        if i % 2 == 1 and small:
            data = Path(rng.choice(small)).read_bytes() + f"\ncopy {i}\n".encode()
        else:
            data = text.block(rng.randint(1024, 64 * 1024))
        path.write_bytes(data)
        summary["new"] += 1
        summary["bytes_written"] += len(data)
    return summary


# ----------------------------------------------------------------------------------------
# Ceiling


def timed_shell(script: str, logbase: Path) -> dict:
    """Time a bash pipeline (pipefail), wall clock."""
    with open(logbase.with_suffix(".out"), "wb") as out, \
            open(logbase.with_suffix(".err"), "wb") as err:
        t0 = time.monotonic()
        p = subprocess.run(["bash", "-o", "pipefail", "-c", script], stdout=out, stderr=err,
                           stdin=subprocess.DEVNULL)
        wall = time.monotonic() - t0
    res = {"cmd": script, "wall_s": wall, "rc": p.returncode, "ok": p.returncode == 0}
    if p.returncode:
        res["error"] = logbase.with_suffix(".err").read_text(errors="replace")[-400:]
    return res


def measure_ceiling(src: Path, nbytes: int, nproc: int, logdir: Path) -> dict:
    q = shlex.quote(str(src))
    # Warm-up: one full read so that every tool (and the ceiling) starts from a warm page
    # cache; dropping caches is not reliably possible here.
    warm = timed_shell(f"tar -C {q} -cf - . | cat > /dev/null", logdir / "warmup")
    read = timed_shell(f"tar -C {q} -cf - . | cat > /dev/null", logdir / "ceiling-read")
    hashed = timed_shell(
        f"find {q} -type f -print0 | xargs -0 -r -P {nproc} -n 256 "
        f"b3sum --num-threads {nproc} > /dev/null", logdir / "ceiling-b3sum")
    comp = timed_shell(f"tar -C {q} -cf - . | zstd -3 -T{nproc} -q -c | wc -c",
                       logdir / "ceiling-zstd")
    try:
        zbytes = int((logdir / "ceiling-zstd.out").read_text().strip())
    except ValueError:
        zbytes = None
    out = {"warmup": warm, "read": read, "b3sum": hashed, "zstd": comp,
           "zstd_output_bytes": zbytes}
    for k in ("read", "b3sum", "zstd"):
        out[f"{k}_MBps"] = nbytes / MB / out[k]["wall_s"] if out[k]["ok"] else None
    rates = [out["b3sum_MBps"], out["zstd_MBps"]]
    out["ceiling_MBps"] = min(r for r in rates if r) if any(rates) else None
    return out


# ----------------------------------------------------------------------------------------
# Object storage (--backend s3): a moto server, a delaying TCP proxy in front of it, and a
# plain S3 client (SigV4, stdlib) for buckets, sizes and the server's raw ceiling.

MOTO_VERSION = "5.2.5"
S3_KEY = "test"  # dummy credentials: moto accepts any
S3_REGION = "us-east-1"
# Tools with an S3 backend; strata and strata-base also run on a local repository in the same
# run, for the remote/local ratios.
S3_TOOLS = ("strata", BASE_TOOL, "restic", "rustic")
LOCAL_TWINS = ("strata", BASE_TOOL)
# moto's ceiling: CEIL_OBJECTS PUTs of CEIL_OBJECT bytes, then ranged GETs of CEIL_RANGE bytes
# covering them, CEIL_CONC at once, through the proxy.
CEIL_CONC = 8
CEIL_OBJECTS = 32
CEIL_OBJECT = 16 * MIB
CEIL_RANGE = 8 * MIB
# ... and ranged GETs of CEIL_SMALL_RANGE bytes over the first CEIL_SMALL_OBJECTS objects: moto
# reads a whole object for every ranged GET, so small ranges cost it far more per byte.
CEIL_SMALL_RANGE = MIB
CEIL_SMALL_OBJECTS = 4
# Objects up to this size stay in moto's memory instead of its temp files (its default is
# 5 MiB): no disk in the server's path, and none of the shared disk used by it.
MOTO_BUFFER = 64 * MIB
PROXY_CHUNK = MIB
PROXY_CAP = 16 * MIB  # bytes held per connection and direction before reading pauses


def find_moto(args, cache: Path) -> Path:
    """moto_server of the test suite's venv (made by .ci/setup), else one under --cache."""
    for c in (os.environ.get("STRATA_MOTO_BIN"),
              Path.home() / ".cache" / "strata-test" / "moto-venv" / "bin" / "moto_server",
              cache / "moto-venv" / "bin" / "moto_server"):
        if c and Path(c).exists():
            return Path(c)
    venv = cache / "moto-venv"
    if args.no_install:
        sys.exit(f"moto_server not found (and --no-install given): "
                 f"python3 -m venv {venv} && {venv}/bin/pip install 'moto[server]=={MOTO_VERSION}'")
    if subprocess.run([sys.executable, "-c", "import ensurepip"],
                      stderr=subprocess.DEVNULL).returncode != 0:
        if os.geteuid() != 0:
            sys.exit("python3 -m venv needs python3-venv: apt-get install -y python3-venv")
        log("apt-get install -y python3-venv")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        sh(["apt-get", "install", "-y", "-q", "python3-venv"], env=env, stdout=subprocess.DEVNULL)
    log(f"python3 -m venv {venv} && pip install 'moto[server]=={MOTO_VERSION}'")
    sh([sys.executable, "-m", "venv", str(venv)])
    sh([str(venv / "bin" / "pip"), "install", "--quiet", f"moto[server]=={MOTO_VERSION}"])
    return venv / "bin" / "moto_server"


def s3_sign(method: str, host: str, path: str, query: dict, headers: dict) -> dict:
    """AWS Signature V4 headers for a request with an unsigned payload."""
    import hashlib
    import hmac
    import urllib.parse
    now = dt.datetime.now(dt.timezone.utc)
    amzdate, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    h = {k.lower(): str(v).strip() for k, v in headers.items()}
    h.update({"host": host, "x-amz-date": amzdate, "x-amz-content-sha256": "UNSIGNED-PAYLOAD"})
    signed = ";".join(sorted(h))
    q = "&".join(f"{urllib.parse.quote(k, safe='-_.~')}={urllib.parse.quote(str(v), safe='-_.~')}"
                 for k, v in sorted(query.items()))
    canon = "\n".join([method, urllib.parse.quote(path, safe="/-_.~"), q,
                       "".join(f"{k}:{h[k]}\n" for k in sorted(h)), signed, "UNSIGNED-PAYLOAD"])
    scope = f"{day}/{S3_REGION}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amzdate, scope,
                         hashlib.sha256(canon.encode()).hexdigest()])
    k = ("AWS4" + S3_KEY).encode()
    for part in (day, S3_REGION, "s3", "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    sig = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
    h["authorization"] = (f"AWS4-HMAC-SHA256 Credential={S3_KEY}/{scope}, "
                          f"SignedHeaders={signed}, Signature={sig}")
    del h["host"]  # http.client sends the same Host itself
    return h


def _proxy_child(target_port: int, delay_s: float, port, up, down, conns, ready) -> None:
    """The delaying proxy (its own process, so that neither the harness nor moto shares its
    interpreter): every byte from a client is forwarded to moto at its arrival time + delay,
    chunk by chunk in order, so a request costs `delay` more while throughput stays what the
    server and the client make it (not `delay` per chunk). Answers pass back at once."""
    import asyncio
    import collections
    import signal
    import socket

    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))

    async def delayed_copy(reader, upstream, counter):
        """Reads from the client from the start (arrival times are true ones), delivers
        once `upstream` (a future: moto's writer, or None if it could not be reached) is
        there."""
        loop = asyncio.get_running_loop()
        q = collections.deque()
        have, room = asyncio.Event(), asyncio.Event()
        buffered = 0

        async def pump():
            nonlocal buffered
            try:
                while True:
                    while buffered >= PROXY_CAP:
                        room.clear()
                        await room.wait()
                    data = await reader.read(PROXY_CHUNK)
                    q.append((loop.time() + delay_s, data))
                    buffered += len(data)
                    have.set()
                    if not data:
                        return
            except OSError:
                q.append((loop.time(), None))
                have.set()

        pump_task = asyncio.create_task(pump())
        try:
            writer = await upstream
            if writer is None:
                return
            while True:
                while not q:
                    have.clear()
                    await have.wait()
                due, data = q.popleft()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if data is None:
                    return
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                counter.value += len(data)
                buffered -= len(data)
                room.set()
                await writer.drain()
        except OSError:
            return
        finally:
            pump_task.cancel()

    async def copy(reader, writer, counter):
        try:
            while True:
                data = await reader.read(PROXY_CHUNK)
                if not data:
                    return
                writer.write(data)
                counter.value += len(data)
                await writer.drain()
        except OSError:
            return

    handlers = set()  # asyncio holds tasks weakly: a handler whose client left must live on

    async def handle(creader, cwriter):
        me = asyncio.current_task()
        handlers.add(me)
        try:
            await relay(creader, cwriter)
        finally:
            handlers.discard(me)

    async def relay(creader, cwriter):
        conns.value += 1
        upstream = asyncio.get_running_loop().create_future()
        up_t = asyncio.create_task(delayed_copy(creader, upstream, up))
        try:
            ureader, uwriter = await asyncio.open_connection("127.0.0.1", target_port)
        except OSError:
            upstream.set_result(None)
            cwriter.close()
            return
        upstream.set_result(uwriter)
        for w in (cwriter, uwriter):
            s = w.get_extra_info("socket")
            if s is not None:
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        down_t = asyncio.create_task(copy(ureader, cwriter, down))
        done, _ = await asyncio.wait({up_t, down_t}, return_when=asyncio.FIRST_COMPLETED)
        if down_t in done:  # moto closed: nothing more to deliver
            up_t.cancel()
        else:  # the client's EOF was delivered: let moto finish its answer
            await down_t
        for w in (cwriter, uwriter):
            try:
                w.close()
            except OSError:
                pass

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=256)
        port.value = server.sockets[0].getsockname()[1]
        ready.set()
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (all its threads)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


class S3Server:
    """A moto server on 127.0.0.1 and the delaying proxy in front of it. Tools talk to the
    proxy; the harness's own bookkeeping (buckets, sizes) goes to moto directly."""

    REQ_RE = re.compile(r'"([A-Z]+) [^"]*" (\d{3})')

    def __init__(self, moto_bin: Path, workdir: Path, latency_ms: float):
        import multiprocessing
        self.workdir = workdir
        self.latency_ms = latency_ms
        tmp = workdir / "moto-tmp"  # moto spills objects over 5 MiB to temp files: keep them here
        tmp.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "moto.log"
        self.moto = None
        for _attempt in range(3):
            with socket_free_port() as p:
                self.moto_port = p
            env = dict(os.environ, TMPDIR=str(tmp),
                       MOTO_S3_DEFAULT_KEY_BUFFER_SIZE=str(MOTO_BUFFER))
            self.moto = subprocess.Popen(
                [str(moto_bin), "-H", "127.0.0.1", "-p", str(self.moto_port)],
                stdin=subprocess.DEVNULL, stdout=open(self.log_path, "ab"),
                stderr=subprocess.STDOUT, env=env, start_new_session=True)
            if self._wait_up(self.moto_port, self.moto):
                break
            self.moto.kill()
            self.moto.wait()
        else:
            raise RuntimeError(f"moto_server did not start (see {self.log_path})")
        ctx = multiprocessing.get_context("fork")
        self.up, self.down, self.conns = (ctx.Value("Q", 0, lock=False) for _ in range(3))
        port, ready = ctx.Value("i", 0, lock=False), ctx.Event()
        self.proxy = ctx.Process(target=_proxy_child, daemon=True,
                                 args=(self.moto_port, latency_ms / 1000, port, self.up,
                                       self.down, self.conns, ready))
        self.proxy.start()
        if not ready.wait(30):
            self.stop()
            raise RuntimeError("the latency proxy did not start")
        self.port = port.value
        self.endpoint = f"http://127.0.0.1:{self.port}"

    @staticmethod
    def _wait_up(port: int, proc) -> bool:
        import http.client
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                c.request("GET", "/")
                c.getresponse().read()
                c.close()
                return True
            except OSError:
                time.sleep(0.2)
        return False

    def connection(self, via_proxy: bool = False, timeout: float = 300):
        import http.client
        return http.client.HTTPConnection(
            "127.0.0.1", self.port if via_proxy else self.moto_port, timeout=timeout)

    def request(self, conn, method: str, path: str, query: dict | None = None,
                headers: dict | None = None, body: bytes | None = None) -> tuple[int, bytes]:
        import urllib.parse
        query = query or {}
        headers = dict(headers or {})
        if body is not None or method == "PUT":
            headers["Content-Length"] = str(len(body or b""))
            headers["Content-Type"] = "application/octet-stream"
        h = s3_sign(method, f"{conn.host}:{conn.port}", path, query, headers)
        url = path + ("?" + urllib.parse.urlencode(sorted(query.items())) if query else "")
        conn.request(method, url, body=body, headers=h)
        r = conn.getresponse()
        return r.status, r.read()

    def create_bucket(self, bucket: str) -> None:
        c = self.connection()
        st, body = self.request(c, "PUT", f"/{bucket}")
        c.close()
        if st != 200:
            raise RuntimeError(f"PUT /{bucket}: HTTP {st}: {body[:300]!r}")

    def list_objects(self, bucket: str, prefix: str = "") -> list[tuple[str, int]]:
        c = self.connection()
        out, token = [], None
        while True:
            q = {"list-type": "2", "prefix": prefix}
            if token:
                q["continuation-token"] = token
            st, body = self.request(c, "GET", f"/{bucket}", q)
            if st != 200:
                raise RuntimeError(f"list {bucket}: HTTP {st}: {body[:300]!r}")
            text = body.decode()
            for m in re.finditer(r"<Contents>(.*?)</Contents>", text, re.S):
                key = re.search(r"<Key>(.*?)</Key>", m.group(1), re.S).group(1)
                size = int(re.search(r"<Size>(\d+)</Size>", m.group(1)).group(1))
                out.append((key, size))
            m = re.search(r"<NextContinuationToken>(.*?)</NextContinuationToken>", text)
            if "<IsTruncated>true</IsTruncated>" not in text or not m:
                break
            token = m.group(1)
        c.close()
        return out

    def delete_objects(self, bucket: str, keys) -> None:
        import html
        import urllib.parse
        c = self.connection()
        for k in keys:
            self.request(c, "DELETE", f"/{bucket}/" + urllib.parse.quote(html.unescape(k)))
        c.close()

    def snapshot(self) -> dict:
        try:
            log_off = self.log_path.stat().st_size
        except OSError:
            log_off = 0
        return {"up": self.up.value, "down": self.down.value, "conns": self.conns.value,
                "moto_cpu": proc_cpu_s(self.moto.pid), "proxy_cpu": proc_cpu_s(self.proxy.pid),
                "log": log_off}

    def delta(self, before: dict) -> dict:
        """Traffic through the proxy, CPU of moto and the proxy, and moto's request log
        (method and status counts) since `before`."""
        time.sleep(0.2)  # moto logs a request after answering it
        now = self.snapshot()
        reqs: dict[str, int] = {}
        try:
            with open(self.log_path, "rb") as f:
                f.seek(before["log"])
                text = f.read(now["log"] - before["log"]).decode(errors="replace")
            for m in self.REQ_RE.finditer(re.sub(r"\x1b\[[0-9;]*m", "", text)):
                k = f"{m.group(1)} {m.group(2)}"
                reqs[k] = reqs.get(k, 0) + 1
        except OSError:
            pass
        return {"up_bytes": now["up"] - before["up"], "down_bytes": now["down"] - before["down"],
                "connections": now["conns"] - before["conns"],
                "moto_cpu_s": round(now["moto_cpu"] - before["moto_cpu"], 2),
                "proxy_cpu_s": round(now["proxy_cpu"] - before["proxy_cpu"], 2),
                "requests": dict(sorted(reqs.items()))}

    def alive(self) -> bool:
        return self.moto.poll() is None and self.proxy.is_alive()

    def stop(self) -> None:
        if self.proxy is not None and self.proxy.is_alive():
            self.proxy.terminate()
            self.proxy.join(10)
        if self.moto is not None and self.moto.poll() is None:
            self.moto.terminate()
            try:
                self.moto.wait(15)
            except subprocess.TimeoutExpired:
                self.moto.kill()
                self.moto.wait()
        shutil.rmtree(self.workdir / "moto-tmp", ignore_errors=True)


class socket_free_port:
    """A port that was free a moment ago (for moto_server, which takes -p)."""

    def __enter__(self) -> int:
        import socket
        self.s = socket.socket()
        self.s.bind(("127.0.0.1", 0))
        return self.s.getsockname()[1]

    def __exit__(self, *exc) -> None:
        self.s.close()


def measure_s3_ceiling(server: S3Server, seed: int) -> dict:
    """moto's raw ceiling through the proxy with a plain client: CEIL_CONC threads, each with
    its own connection (which moto closes after every answer), PUT CEIL_OBJECTS objects of CEIL_OBJECT bytes, then GET them
    back in ranges of CEIL_RANGE bytes. Also the round trip of a small request, direct and
    through the proxy (which should add the configured latency, no more)."""
    import statistics
    import threading
    bucket = "ceiling"
    server.create_bucket(bucket)
    payload = random.Random(seed).randbytes(CEIL_OBJECT)
    out = {"concurrency": CEIL_CONC, "objects": CEIL_OBJECTS, "object_bytes": CEIL_OBJECT,
           "range_bytes": CEIL_RANGE, "errors": []}

    def rtt(via_proxy):
        c = server.connection(via_proxy)
        server.request(c, "PUT", f"/{bucket}/small", body=b"x" * 100)
        ts = []
        for _ in range(20):
            t0 = time.monotonic()
            st, _b = server.request(c, "HEAD", f"/{bucket}/small")
            ts.append(time.monotonic() - t0)
        c.close()
        return 1000 * statistics.median(ts)

    out["rtt_direct_ms"] = rtt(False)
    out["rtt_proxy_ms"] = rtt(True)

    def run(jobs):
        lock = threading.Lock()
        jobs = list(jobs)

        def worker():
            c = server.connection(True)
            while True:
                with lock:
                    if not jobs:
                        break
                    method, key, headers, body = jobs.pop()
                try:
                    st, data = server.request(c, method, f"/{bucket}/{key}", headers=headers,
                                              body=body)
                    if st >= 300:
                        raise RuntimeError(f"{method} {key}: HTTP {st}")
                except Exception as e:  # noqa: BLE001 - recorded, the ceiling is then suspect
                    with lock:
                        out["errors"].append(str(e)[:200])
                    c.close()
                    c = server.connection(True)
            c.close()

        before = server.snapshot()
        t0 = time.monotonic()
        threads = [threading.Thread(target=worker) for _ in range(CEIL_CONC)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.monotonic() - t0
        return wall, server.delta(before)

    total = CEIL_OBJECTS * CEIL_OBJECT
    wall, d = run(("PUT", f"obj-{i:03d}", {}, payload) for i in range(CEIL_OBJECTS))
    out.update(put_s=wall, put_MBps=total / MB / wall, put_moto_cpu_s=d["moto_cpu_s"],
               put_proxy_cpu_s=d["proxy_cpu_s"])
    ranges = [("GET", f"obj-{i:03d}", {"Range": f"bytes={o}-{o + CEIL_RANGE - 1}"}, None)
              for i in range(CEIL_OBJECTS) for o in range(0, CEIL_OBJECT, CEIL_RANGE)]
    wall, d = run(ranges)
    out.update(get_s=wall, get_MBps=total / MB / wall, get_moto_cpu_s=d["moto_cpu_s"],
               get_proxy_cpu_s=d["proxy_cpu_s"])
    small = [("GET", f"obj-{i:03d}", {"Range": f"bytes={o}-{o + CEIL_SMALL_RANGE - 1}"}, None)
             for i in range(CEIL_SMALL_OBJECTS) for o in range(0, CEIL_OBJECT, CEIL_SMALL_RANGE)]
    wall, d = run(small)
    out.update(small_range_bytes=CEIL_SMALL_RANGE, small_get_s=wall,
               small_get_MBps=len(small) * CEIL_SMALL_RANGE / MB / wall,
               small_get_moto_cpu_s=d["moto_cpu_s"])
    server.delete_objects(bucket, [k for k, _ in server.list_objects(bucket)])
    return out


# ----------------------------------------------------------------------------------------
# The benchmark


def plan_runs(tools: list[str], backend: str) -> list[tuple[str, str, str]]:
    """(label, tool, backend) in run order. With --backend local the label is the tool's name;
    with s3 every tool with an S3 backend runs on it (label TOOL@s3), and strata and
    strata-base also on a local repository (TOOL@local), just before."""
    if backend == "local":
        return [(t, t, "local") for t in tools]
    runs = []
    for t in tools:
        if t in LOCAL_TWINS:
            runs.append((f"{t}@local", t, "local"))
        if t in S3_TOOLS:
            runs.append((f"{t}@s3", t, "s3"))
    return runs


def run_corpus(name: str, args, bins: dict, tools: list[str], workrun: Path,
               nproc: int) -> dict:
    cdir = workrun / name
    src = cdir / "src"
    logdir = cdir / "logs"
    logdir.mkdir(parents=True)
    log(f"[{name}] preparing corpus in {src}")
    t0 = time.monotonic()
    if name == "usr-share":
        desc = prepare_usr_share(src, args.usr_share_files, args.seed)
    elif name == "small-text":
        desc = prepare_small_text(src)
    else:
        desc = prepare_large(src, int(args.large_gib * GIB), args.seed)
    stats = corpus_stats(src)
    log(f"[{name}] {desc}: {stats['files']} files, {stats['bytes'] / MB:.1f} MB "
        f"({time.monotonic() - t0:.0f} s)")
    os.sync()
    ceiling = measure_ceiling(src, stats["bytes"], nproc, logdir)
    log(f"[{name}] ceiling: read {ceiling['read_MBps']:.0f} MB/s, b3sum "
        f"{ceiling['b3sum_MBps'] or 0:.0f} MB/s, zstd -3 -T{nproc} "
        f"{ceiling['zstd_MBps'] or 0:.0f} MB/s")
    result = {"description": desc, "source": str(src), "stats": stats, "ceiling": ceiling,
              "backend": args.backend, "tools": {}}
    runs = plan_runs(tools, args.backend)
    server = None
    try:
        if args.backend == "s3":
            # A fresh moto per corpus: its objects live in its memory and temp files, which
            # stopping it frees.
            server = S3Server(bins["moto"], cdir / "s3", args.latency_ms)
            log(f"[{name}] moto on 127.0.0.1:{server.moto_port}, latency proxy "
                f"(+{args.latency_ms:g} ms client→server) on {server.endpoint}")
            sc = measure_s3_ceiling(server, args.seed)
            result["s3_ceiling"] = sc
            log(f"[{name}] moto ceiling through the proxy, {CEIL_CONC} at once: PUT "
                f"{sc['put_MBps']:.0f} MB/s, ranged GET {sc['get_MBps']:.0f} MB/s "
                f"({sc['small_get_MBps']:.0f} MB/s in 1 MiB ranges); small "
                f"request {sc['rtt_proxy_ms']:.1f} ms (direct {sc['rtt_direct_ms']:.1f} ms)"
                + (f"; {len(sc['errors'])} errors: {sc['errors'][0]}" if sc["errors"] else ""))
            result["skipped"] = {t: "no S3 backend" for t in tools if t not in S3_TOOLS}
            for t, why in result["skipped"].items():
                log(f"[{name}] {t}: skipped ({why})")
        objs = {}
        for label, t, backend in runs:
            bucket = f"{name}-{t}" if backend == "s3" else None
            if bucket:
                server.create_bucket(bucket)
            obj = TOOL_CLASSES[t](bins[t], cdir / label.replace("@", "-"), src, backend,
                                  server if backend == "s3" else None, bucket)
            obj.prepare()
            objs[label] = obj
            r = {"tool": t, "backend": backend, "location": obj.location(), "init": [],
                 "phases": {}, "repo_bytes": {}, "repo_alloc_bytes": {}, "cache_bytes": {}}
            ok = True
            for i, cmd in enumerate(obj.init_cmds()):
                res = run_timed(cmd, obj.env(), None, logdir / f"{label}-init{i}", args.timeout)
                r["init"].append(res)
                ok = ok and res["ok"]
            r["init_ok"] = ok
            if not ok:
                log(f"[{name}] {label} init FAILED: {r['init'][-1].get('error')}")
            result["tools"][label] = r

        for phase in PHASES:
            if phase == "backup3":
                log(f"[{name}] mutating the source (seed {args.seed})")
                result["mutation"] = mutate(src, args.seed + 1)
                result["stats_after_mutation"] = corpus_stats(src)
                log(f"[{name}] mutation: {result['mutation']}")
            for label, t, backend in runs:
                obj, r = objs[label], result["tools"][label]
                if not r["init_ok"]:
                    r["phases"][phase] = {"ok": False, "skipped": True, "error": "init failed"}
                    continue
                os.sync()  # no pending writeback from the previous tool
                before = server.snapshot() if backend == "s3" else None
                if phase == "restore":
                    target = workrun / "restore" / f"{name}-{label}"  # fresh, never used before
                    target.parent.mkdir(parents=True, exist_ok=True)
                    cmd, cwd = obj.restore_cmd(target)
                    res = run_timed(cmd, obj.env(), cwd, logdir / f"{label}-{phase}",
                                    args.timeout)
                    if before is not None:
                        res["s3"] = server.delta(before)
                    if res["ok"]:
                        root = obj.restored_root(target)
                        vok, problems, nfiles = compare_trees(src, root)
                        res["verified"] = vok
                        res["verified_files"] = nfiles
                        res["restored_root"] = str(root)
                        if not vok:
                            res["ok"] = False
                            res["error"] = "verification failed: " + "; ".join(problems)
                    if not args.keep:  # disk: one restore at a time
                        shutil.rmtree(target, ignore_errors=True)
                else:
                    n = int(phase[-1])
                    res = run_timed(obj.backup_cmd(n), obj.env(), None,
                                    logdir / f"{label}-{phase}", args.timeout)
                    if before is not None:
                        res["s3"] = server.delta(before)
                    obj.after_backup(n, (logdir / f"{label}-{phase}.out")
                                     .read_text(errors="replace"))
                    os.sync()
                    r["repo_bytes"][phase], r["repo_alloc_bytes"][phase] = obj.repo_size()
                    r["cache_bytes"][phase] = tree_size(obj.cache)[0]
                r["phases"][phase] = res
                status = "ok" if res["ok"] else "FAILED: " + res.get("error", "")
                rss = f"{res['rss_kb'] / 1024:.0f} MiB" if res.get("rss_kb") else "?"
                extra = ""
                if res.get("s3"):
                    d = res["s3"]
                    bad = sum(v for k, v in d["requests"].items() if k[-3] in "45")
                    extra = (f"  up {d['up_bytes'] / MB:.0f} MB, down {d['down_bytes'] / MB:.0f}"
                             f" MB, {sum(d['requests'].values())} requests"
                             + (f" ({bad} answered 4xx/5xx)" if bad else "")
                             + f", moto CPU {d['moto_cpu_s']:.1f} s")
                log(f"[{name}] {PHASE_TITLES[phase]:<22} {label:<17} {res['wall_s']:8.2f} s  "
                    f"peak RSS {rss:>9}{extra}  {status}")
                if server is not None and not server.alive():
                    log(f"[{name}] moto or the proxy died (see {server.log_path})")
            if phase == "backup1":
                for label in result["tools"]:
                    r = result["tools"][label]
                    p = r["phases"].get("backup1", {})
                    if p.get("ok"):
                        r["first_backup_MBps"] = stats["bytes"] / MB / p["wall_s"]
                        if ceiling["ceiling_MBps"]:
                            r["share_of_ceiling"] = (r["first_backup_MBps"]
                                                     / ceiling["ceiling_MBps"])
        nrestored = result.get("stats_after_mutation", stats)["bytes"]
        for label in result["tools"]:
            r = result["tools"][label]
            rb = r["repo_bytes"]
            r["repo_after_first_bytes"] = rb.get("backup1")
            if "backup3" in rb and "backup2" in rb:
                r["bytes_added_by_third"] = rb["backup3"] - rb["backup2"]
            if "backup2" in rb and "backup1" in rb:
                r["bytes_added_by_second"] = rb["backup2"] - rb["backup1"]
            p = r["phases"].get("restore", {})
            if p.get("ok"):
                r["restore_MBps"] = nrestored / MB / p["wall_s"]
            sc = result.get("s3_ceiling")
            for phase, key, direction in (("backup1", "put", "up_bytes"),
                                          ("restore", "get", "down_bytes")):
                p = r["phases"].get(phase, {})
                if p.get("ok") and p.get("s3"):
                    wire = p["s3"][direction] / MB / p["wall_s"]
                    r[f"{phase}_wire_MBps"] = wire
                    if sc and sc.get(f"{key}_MBps"):
                        r[f"{phase}_share_of_moto"] = wire / sc[f"{key}_MBps"]
    finally:
        if server is not None:
            server.stop()
    if not args.keep:
        log(f"[{name}] removing {cdir} and the restores")
        shutil.rmtree(cdir, ignore_errors=True)
        for label in result["tools"]:
            shutil.rmtree(workrun / "restore" / f"{name}-{label}", ignore_errors=True)
        os.sync()
    return result


# ----------------------------------------------------------------------------------------
# Report


def fmt(x, spec=".2f", none="—"):
    return none if x is None else format(x, spec)


def machine_info(nproc: int, work: Path) -> dict:
    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = None
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    fs = capture(["findmnt", "-no", "FSTYPE", "-T", str(work)])
    if fs.startswith("unavailable"):
        fs = capture(["stat", "-f", "-c", "%T", str(work)])
    debian = Path("/etc/debian_version").read_text().strip() \
        if Path("/etc/debian_version").exists() else "n/a"
    return {"nproc": nproc, "cpu": cpu, "mem_total_kb": mem_kb,
            "mem_total_gib": round(mem_kb / 1024 / 1024, 1) if mem_kb else None,
            "kernel": platform.release(), "debian": debian, "work_fs": fs,
            "python": platform.python_version()}


# The targets for strata on object storage: (name, numerator label and phase,
# denominator label and phase, "min"/"max", bound). Each ratio is of wall times, arranged so
# that it reads as written: speed of the S3 run relative to the other.
S3_TARGETS = [
    ("first backup to S3, speed vs local disk", ("@local", "backup1"), ("@s3", "backup1"),
     "min", 0.80),
    ("first backup to S3, speed vs restic to S3", ("restic@s3", "backup1"), ("@s3", "backup1"),
     "min", 2.0),
    ("restore from S3, speed vs local disk", ("@local", "restore"), ("@s3", "restore"),
     "min", 0.70),
    ("restore from S3, speed vs restic from S3", ("restic@s3", "restore"), ("@s3", "restore"),
     "min", 2.0),
    ("unchanged re-backup, warm cache: time on S3 / local", ("@s3", "backup2"),
     ("@local", "backup2"), "max", 1.5),
]


def cpu_floor(phase: dict, nproc: int) -> float | None:
    """The shortest wall time a phase could take on these cores: the CPU seconds of the tool,
    moto and the proxy together (they share the machine), divided by the number of cores."""
    d = phase.get("s3")
    if not (phase.get("ok") and d):
        return None
    cpu = phase["user_s"] + phase["sys_s"] + d["moto_cpu_s"] + d["proxy_cpu_s"]
    return cpu / nproc


def render_s3(c: dict, nproc: int) -> list[str]:
    """The object-storage tables: rates against moto's ceiling, traffic, the targets, and the
    wall time each target needs against the phase's CPU floor on this machine."""
    sc = c.get("s3_ceiling") or {}
    lines = ["Object storage: rates are the corpus's bytes per wall second (the restore's: "
             "the mutated corpus's); wire MB/s is what passed the proxy (requests and "
             "answers, headers included) per wall second, as a share of moto's ceiling above "
             "(PUT for the first backup, GET for the restore); requests are moto's log of "
             "the phase (method and status: 4xx/5xx answers show retries and misses).", "",
             "| run | first s | first MB/s | up MB/s wire (% moto PUT) | re-backup s | "
             "restore s | restore MB/s | down MB/s wire (% moto GET) | moto CPU s 1st/re/"
             "restore | requests 1st | requests re-backup | requests restore |",
             "|" + "---|" * 12]

    def reqs(p):
        d = p.get("s3")
        if not d:
            return "—"
        return ", ".join(f"{k}: {v}" for k, v in d["requests"].items()) or "0"

    for label, r in c["tools"].items():
        ph = r["phases"]

        def t(p):
            x = ph.get(p, {})
            return f"{x['wall_s']:.2f}" if x.get("ok") else "FAIL"

        def wire(phase):
            w = r.get(f"{phase}_wire_MBps")
            sh_ = r.get(f"{phase}_share_of_moto")
            if w is None:
                return "—"
            return f"{w:.0f}" + (f" ({100 * sh_:.0f}%)" if sh_ is not None else "")

        cpu = "/".join(fmt(ph.get(p, {}).get("s3", {}).get("moto_cpu_s"), ".1f")
                       for p in ("backup1", "backup2", "restore"))
        lines.append("| " + " | ".join([
            label, t("backup1"), fmt(r.get("first_backup_MBps"), ".0f"), wire("backup1"),
            t("backup2"), t("restore"), fmt(r.get("restore_MBps"), ".0f"), wire("restore"),
            cpu if r.get("backend") == "s3" else "—",
            reqs(ph.get("backup1", {})), reqs(ph.get("backup2", {})),
            reqs(ph.get("restore", {}))]) + " |")
    lines.append("")
    tools = [t for t in ("strata", BASE_TOOL) if f"{t}@s3" in c["tools"]]
    lines += ["Targets (wall-time ratios; per tool, the ratio, then the wall time of its S3 "
              "phase that the bound needs, against that phase's CPU floor: the CPU seconds "
              f"the tool, moto and the proxy spent in it, over the {nproc} cores they share. "
              "A needed time below the floor takes less CPU, not more overlap):", "",
              "| target | bound | " + " | ".join(
                  f"{t} | {t}: S3 wall needed / CPU floor s" for t in tools) + " |",
              "|---|---|" + "---|---|" * len(tools)]
    for name, (nl, np_), (dl, dp), kind, bound in S3_TARGETS:
        cells = []
        for t in tools:
            a = c["tools"].get(nl if not nl.startswith("@") else t + nl, {})
            b = c["tools"].get(dl if not dl.startswith("@") else t + dl, {})
            x, y = a.get("phases", {}).get(np_, {}), b.get("phases", {}).get(dp, {})
            if not (x.get("ok") and y.get("ok") and y["wall_s"] > 0):
                cells += ["—", "—"]
                continue
            v = x["wall_s"] / y["wall_s"]
            met = v >= bound if kind == "min" else v <= bound
            cells.append(f"{v:.2f}" + ("" if met else " **missed**"))
            # The S3 phase is the denominator of a speed ratio and the numerator of a time one.
            s3, needed = (y, x["wall_s"] / bound) if kind == "min" else (x, bound * y["wall_s"])
            floor = cpu_floor(s3, nproc)
            cells.append(f"{needed:.2f} / {fmt(floor, '.2f')}"
                         + (" (below the floor)" if floor is not None and needed < floor else ""))
        lines.append(f"| {name} | {'≥' if kind == 'min' else '≤'} {bound:g} | "
                     + " | ".join(cells) + " |")
    lines.append("")
    return lines


def render_markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        "# strata vs restic, rustic, borg, bupstash"
        + (" — repositories on S3" if report.get("backend") == "s3" else ""),
        "",
        f"Generated by `benches/compare/run.py` on {report['date']}.",
        "",
        f"- Machine: {m['nproc']} cores ({m['cpu']}), {m['mem_total_gib']} GiB RAM, "
        f"Linux {m['kernel']}, Debian {m['debian']}, work dir on {m['work_fs']}",
        f"- Reproduce: `{report['command']}`",
        "- Versions: " + "; ".join(f"{t}: {v}" for t, v in report["versions"].items()),
        "- Times are wall seconds; RSS is the peak resident set (MB = 10^6 bytes; "
        "`/usr/bin/time -v`); repo sizes are apparent bytes of every file in the repository "
        "(caches excluded). Ratios are restic's time / the tool's time: above 1 is faster "
        "than restic. The page cache was warm (one full read of the corpus before phase 1); "
        "`sync` ran before every timed command.",
    ]
    s3 = report.get("backend") == "s3"
    if s3:
        skipped = [t for t in report["tools"] if t not in S3_TOOLS]
        lines.append(
            f"- Backend: S3, one bucket per tool on a local moto server (a single Python "
            f"process, started fresh for each corpus), reached through a proxy in the harness "
            f"that delays every byte from the tools to moto by {report['latency_ms']:g} ms "
            f"(answers are not delayed), so every request costs about that much more; dummy "
            f"credentials. Rows `TOOL@s3` use it, rows `TOOL@local` a local repository in "
            f"the same run."
            + (f" Skipped, no S3 backend: {', '.join(skipped)}." if skipped else ""))
    lines += ["", "Flags per tool:", ""]
    for t in report["tools"]:
        if s3 and t not in S3_TOOLS:
            continue
        fl = TOOL_CLASSES[t].flags
        if s3:
            fl += f"; on S3: {TOOL_CLASSES[t].s3_flags}"
        lines.append(f"- **{t}**: {fl}")
    lines.append("")
    for cname, c in report["corpora"].items():
        st = c["stats"]
        ce = c["ceiling"]
        lines += [
            f"## Corpus `{cname}`",
            "",
            f"{c['description']}: {st['files']:,} files, {st['dirs']:,} directories, "
            f"{st['symlinks']:,} symlinks, {st['bytes'] / MB:,.1f} MB.",
        ]
        mu = c.get("mutation")
        if mu:
            lines.append(
                f"Mutation before the third backup, in files: {mu['overwritten']} overwritten "
                f"in place, {mu['inserted']} with bytes inserted in the middle, {mu['appended']} "
                f"appended, {mu['deleted']} deleted, {mu['new']} new "
                f"({mu['bytes_written'] / MB:.1f} MB written).")
        zb = ce.get("zstd_output_bytes")
        lines += [
            "",
            f"Physical ceiling on all {m['nproc']} cores: read (`tar | cat`) "
            f"{fmt(ce['read_MBps'], '.0f')} MB/s; BLAKE3 (`b3sum`) "
            f"{fmt(ce['b3sum_MBps'], '.0f')} MB/s; zstd -3 "
            f"{fmt(ce['zstd_MBps'], '.0f')} MB/s"
            + (f" (output {zb / MB:.1f} MB, ratio {st['bytes'] / zb:.2f})" if zb else "")
            + f". Ceiling = slower of hash and compress = {fmt(ce['ceiling_MBps'], '.0f')} MB/s.",
            "",
        ]
        sc = c.get("s3_ceiling")
        if sc:
            lines += [
                f"moto's ceiling, measured with a plain client through the same proxy, "
                f"{sc['concurrency']} requests at once (moto closes the connection after every "
                f"answer, for the tools too): PUT of "
                f"{sc['objects']} objects of {sc['object_bytes'] // MIB} MiB "
                f"**{sc['put_MBps']:.0f} MB/s** (moto CPU {sc['put_moto_cpu_s']:.1f} s in "
                f"{sc['put_s']:.1f} s); ranged GETs of {sc['range_bytes'] // MIB} MiB of them "
                f"**{sc['get_MBps']:.0f} MB/s** (moto CPU {sc['get_moto_cpu_s']:.1f} s in "
                f"{sc['get_s']:.1f} s); ranged GETs of {sc['small_range_bytes'] // MIB} MiB "
                f"{sc['small_get_MBps']:.0f} MB/s (moto reads the whole object for every "
                f"range). A small request (HEAD) takes {sc['rtt_proxy_ms']:.1f} ms "
                f"through the proxy, {sc['rtt_direct_ms']:.1f} ms direct."
                + (f" Errors: {'; '.join(sc['errors'][:3])}." if sc["errors"] else ""), ""]
        s = c["tools"].get("strata") or c["tools"].get("strata@local") or {}
        if s.get("share_of_ceiling") is not None:
            lines += [f"**strata's first backup: {s['first_backup_MBps']:.0f} MB/s = "
                      f"{100 * s['share_of_ceiling']:.0f}% of the ceiling.**", ""]
        hdr = ["tool", "first s", "re-backup s", "mutated s", "restore s",
               "peak RSS MB (1st/re/mut/restore)", "repo after 1st MB", "added by 3rd MB",
               "1st MB/s (% ceiling)", "×restic 1st", "×restic re", "×restic mut",
               "×restic restore"]
        lines += ["| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
        ref = "restic@s3" if c.get("backend") == "s3" else "restic"
        restic = c["tools"].get(ref, {}).get("phases", {})
        ref_backend = c["tools"].get(ref, {}).get("backend")
        notes = []
        for t, r in c["tools"].items():
            ph = r["phases"]
            if not r.get("init_ok", True):
                bad = next((x for x in r["init"] if not x["ok"]), {})
                notes.append(f"{t} init (`{bad.get('cmd', '?')}`): {bad.get('error', 'failed')}")

            def cell(p):
                x = ph.get(p, {})
                if x.get("skipped"):
                    return "skipped (init failed)"
                if not x.get("ok"):
                    notes.append(f"{t} {PHASE_TITLES[p]}: {x.get('error', 'failed')}")
                    return f"FAIL ({x['wall_s']:.2f})" if "wall_s" in x else "FAIL"
                return f"{x['wall_s']:.2f}"

            def ratio(p):
                x, y = ph.get(p, {}), restic.get(p, {})
                if r.get("backend", ref_backend) != ref_backend:
                    return "—"  # restic ran on the other backend
                if x.get("ok") and y.get("ok") and x["wall_s"] > 0:
                    return f"{y['wall_s'] / x['wall_s']:.2f}"
                return "—"

            rss = "/".join(fmt(ph[p]["rss_kb"] * 1024 / MB if ph.get(p, {}).get("rss_kb")
                               else None, ".0f") for p in PHASES)
            rate = r.get("first_backup_MBps")
            share = r.get("share_of_ceiling")
            rate_s = "—" if rate is None else (
                f"{rate:.0f}" + (f" ({100 * share:.0f}%)" if share is not None else ""))
            added = r.get("bytes_added_by_third")
            first = r.get("repo_after_first_bytes")
            row = [t] + [cell(p) for p in PHASES] + [
                rss, fmt(None if first is None else first / MB, ".1f"),
                fmt(None if added is None else added / MB, ".1f"), rate_s] + [ratio(p) for p in PHASES]
            lines.append("| " + " | ".join(row) + " |")
        loads = [x["loadavg_before"] for r in c["tools"].values()
                 for x in r["phases"].values() if x.get("loadavg_before") is not None]
        if loads:
            lines += ["", f"Load average (1 min) when the timed commands started: "
                      f"{min(loads):.1f} to {max(loads):.1f} on {m['nproc']} cores."]
        verified = sorted({x["phases"]["restore"].get("verified_files") for x in
                           c["tools"].values() if x["phases"].get("restore", {}).get("verified")})
        if verified:
            lines += ["", "Every restore marked ok was verified byte for byte against the "
                      f"mutated source ({', '.join(f'{v:,}' for v in verified)} files)."]
        lines.append("")
        if c.get("backend") == "s3":
            lines += render_s3(c, m["nproc"])
        for t, why in c.get("skipped", {}).items():
            notes.append(f"{t}: skipped ({why})")
        if notes:
            lines += ["Failures and skips:", ""] + [f"- {n}" for n in notes] + [""]
    lines += ["Raw numbers (every command, exit code, user/sys CPU, repo and cache sizes per "
              "phase) are in the JSON file beside this one.", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", choices=[*CORPORA, "all"], default="all")
    ap.add_argument("--tools", default=",".join(ALL_TOOLS),
                    help=f"comma-separated subset of {','.join(ALL_TOOLS)} (run in this order); "
                    f"{BASE_TOOL} runs the binary of --strata-base")
    ap.add_argument("--strata", default=None, metavar="BIN",
                    help="the strata binary to run as tool strata (default: target/release/strata, "
                    "built first unless --no-build)")
    ap.add_argument("--strata-base", default=None, metavar="BIN",
                    help=f"an earlier strata binary, run as tool {BASE_TOOL} (before/after)")
    ap.add_argument("--large-gib", type=float, default=None,
                    help="size of the generated large corpus in GiB (default 2; 0.2 with --quick)")
    ap.add_argument("--usr-share-files", type=int, default=None,
                    help="sample this many files of /usr/share (default all; 3000 with --quick)")
    ap.add_argument("--work", default="/tmp/strata-bench", help="work dir (default %(default)s)")
    ap.add_argument("--out", default=str(REPO_ROOT / "BENCHMARKS.md"),
                    help="markdown output; the JSON goes beside it (default %(default)s)")
    ap.add_argument("--cache", default=str(Path.home() / ".cache" / "strata-bench"),
                    help="where cargo-installed tools are kept (default %(default)s)")
    ap.add_argument("--backend", choices=["local", "s3"], default="local",
                    help="where the repositories live: local directories, or buckets of a local "
                    "moto S3 server (borg and bupstash, which have no S3 backend, are skipped; "
                    "strata and strata-base also run locally for the ratios)")
    ap.add_argument("--latency-ms", type=float, default=0,
                    help="with --backend s3: delay every byte from the tools to moto by this "
                    "many ms (a proxy in the harness), so every request costs that much more")
    ap.add_argument("--quick", action="store_true", help="small smoke run")
    ap.add_argument("--seed", type=int, default=20240601)
    ap.add_argument("--timeout", type=float, default=7200, help="per command, seconds")
    ap.add_argument("--keep", action="store_true", help="keep sources, repos and restores")
    ap.add_argument("--no-install", action="store_true", help="fail instead of installing")
    ap.add_argument("--no-build", action="store_true", help="do not run cargo build --release")
    args = ap.parse_args()
    if args.large_gib is None:
        args.large_gib = 0.2 if args.quick else 2.0
    if args.usr_share_files is None:
        args.usr_share_files = 3000 if args.quick else 0
    global STRATA_GIVEN
    STRATA_GIVEN = str(Path(args.strata).resolve()) if args.strata else None
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    for t in tools:
        if t not in TOOL_CLASSES:
            sys.exit(f"unknown tool {t!r}; choose from {','.join(ALL_TOOLS)}")
    corpora = CORPORA if args.corpus == "all" else [args.corpus]
    out_md = Path(args.out).resolve()
    out_json = out_md.with_suffix(".json")
    cache = Path(args.cache).expanduser()
    work = Path(args.work).resolve()
    command = "python3 benches/compare/run.py" + (" " + shlex.join(sys.argv[1:])
                                                  if sys.argv[1:] else "")

    if args.latency_ms and args.backend != "s3":
        sys.exit("--latency-ms needs --backend s3")
    if args.backend == "s3":
        skipped = [t for t in tools if t not in S3_TOOLS]
        if skipped:
            log(f"--backend s3: skipping {', '.join(skipped)} (no S3 backend)")
        bins = ensure_installed(args, [t for t in tools if t in S3_TOOLS], cache)
        bins["moto"] = find_moto(args, cache)
    else:
        bins = ensure_installed(args, tools, cache)
    nproc = os.cpu_count() or 1
    try:
        nproc = int(capture(["nproc"]))
    except ValueError:
        pass
    # A fresh run dir (never-used paths for sources, repos and restore targets); runs left by
    # earlier invocations are removed first.
    work.mkdir(parents=True, exist_ok=True)
    for old in work.glob("run-*"):
        log(f"removing old run {old}")
        shutil.rmtree(old, ignore_errors=True)
    workrun = work / ("run-" + dt.datetime.now().strftime("%Y%m%d-%H%M%S"))
    workrun.mkdir()
    (workrun / "bin").mkdir()
    for t in ("strata", BASE_TOOL):
        if t in bins:
            # A private copy, so a concurrent `cargo build` cannot swap the binary mid-run.
            bins[t] = Path(shutil.copy2(bins[t], workrun / "bin" / t))
    os.sync()

    versions = {}
    for t in tools:
        if t in bins:
            versions[t] = TOOL_CLASSES[t](bins[t], workrun, workrun).version()
    if "moto" in bins:
        py = bins["moto"].parent / "python"
        versions["moto"] = capture([str(py), "-c", "import moto; print(moto.__version__)"]) \
            + f" ({bins['moto']})"
    versions["b3sum"] = capture(["b3sum", "--version"])
    versions["zstd"] = capture(["zstd", "--version"]).strip("* ")
    report = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": command,
        "argv": sys.argv,
        "options": {k: v for k, v in vars(args).items()},
        "machine": machine_info(nproc, work),
        "versions": versions,
        "tools": tools,
        "backend": args.backend,
        "latency_ms": args.latency_ms,
        "binaries": {t: str(b) for t, b in bins.items()},
        "flags": {t: TOOL_CLASSES[t].flags for t in tools},
        "work_run": str(workrun),
        "corpora": {},
    }
    log("versions: " + "; ".join(f"{k}: {v}" for k, v in versions.items()))
    for c in corpora:
        report["corpora"][c] = run_corpus(c, args, bins, tools, workrun, nproc)
        # Write after each corpus so a late failure keeps the earlier results.
        out_md.parent.mkdir(parents=True, exist_ok=True)
        out_json.write_text(json.dumps(report, indent=2) + "\n")
        out_md.write_text(render_markdown(report))
    if not args.keep:
        shutil.rmtree(workrun, ignore_errors=True)
    log(f"wrote {out_md} and {out_json}")
    print(render_markdown(report))
    failed = [(c, t, p) for c, cr in report["corpora"].items() for t, r in cr["tools"].items()
              for p, x in r["phases"].items() if not x.get("ok")]
    if failed:
        log(f"{len(failed)} failed phase(s): " + ", ".join("/".join(f) for f in failed))
        sys.exit(1)


if __name__ == "__main__":
    main()
