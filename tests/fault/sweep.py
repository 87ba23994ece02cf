#!/usr/bin/env python3
"""Fault-injection sweep of one small amberfs snapshot.

Every mutating system call the snapshot makes (counted with strace, per
system call and per thread, as strace counts them) is, one at a time:
killed at (SIGKILL delivered on entry), failed with ENOSPC, and failed
with EIO (strace --inject).  After each run:

  - `git fsck --full` passes on the archive;
  - every earlier snapshot restores byte-identical to its source;
  - a failed command printed a clear error (an "amberfs:" line on stderr)
    and a non-zero exit status; a command that succeeded despite the
    fault wrote a snapshot that restores identical to the source;
  - the next snapshot (no fault) succeeds and restores identically.

Usage: sweep.py AMBERFS_BIN [--sample K [--offset R]] [--encrypted] [--cmd snapshot|repack]
                [--progress]
  --sample K   only every K-th injection point (the test suite's sample)
  --offset R   with --sample: the points whose number modulo K is R, so that
               K runs with offsets 0..K-1 together cover every point
  --progress   print a line per run (so an interrupted sweep says how far it got)
Prints one line per failure and a summary "N points, N runs, N failures";
exits 1 if any run failed.
"""
import argparse
import filecmp
import os
import shutil
import subprocess
import sys
import tempfile

MUTATING = ("write,pwrite64,writev,pwritev,pwritev2,fsync,fdatasync,sync_file_range,"
            "rename,renameat,renameat2,unlink,unlinkat,mkdir,mkdirat,rmdir,link,linkat,"
            "symlink,symlinkat,ftruncate,fallocate,openat,creat,fchmod,fchmodat,flock")
MODES = ("signal=SIGKILL", "error=ENOSPC", "error=EIO")


def run(cmd, env, **kw):
    return subprocess.run(cmd, env=env, capture_output=True, text=True, **kw)


def make_tree(root, step):
    """The source tree at a step: small files, a 3 MB multi-chunk file, a
    symlink, a nested directory; each step changes a few of them."""
    os.makedirs(os.path.join(root, "d", "e"), exist_ok=True)
    for i in range(4):
        with open(os.path.join(root, "d", "f%d" % i), "w") as f:
            f.write("file %d step %d\n" % (i, step if i < 2 else 0))
    big = os.path.join(root, "big")
    rnd = __import__("random").Random(7)
    with open(big, "wb") as f:
        f.write(bytes(rnd.getrandbits(8) for _ in range(3_000_000)))
        f.write(("tail %d\n" % step).encode() * (step * 1000 + 1))
    if not os.path.lexists(os.path.join(root, "link")):
        os.symlink("d/f0", os.path.join(root, "link"))
    with open(os.path.join(root, "d", "e", "step"), "w") as f:
        f.write(str(step))


def trees_equal(a, b):
    cmp = filecmp.dircmp(a, b)
    if cmp.left_only or cmp.right_only or cmp.diff_files or cmp.funny_files:
        return False
    for sub in cmp.common_dirs:
        if not trees_equal(os.path.join(a, sub), os.path.join(b, sub)):
            return False
    _, mism, errs = filecmp.cmpfiles(a, b, cmp.common_files, shallow=False)
    return not mism and not errs


class Sweep:
    def __init__(self, args):
        self.bin = args.bin
        self.work = tempfile.mkdtemp(prefix="amberfs-fault-")
        self.encrypted = args.encrypted
        self.cmd = args.cmd
        self.env = dict(os.environ)
        self.env["XDG_CACHE_HOME"] = os.path.join(self.work, "cache-template")
        self.failures = []
        self.runs = 0

    def key_opts(self):
        return ["--passphrase-file", os.path.join(self.work, "pass")] if self.encrypted else []

    def amber(self, *argv, env=None, prefix=()):
        return run(list(prefix) + [self.bin, "--kdf-profile=test"] + list(argv), env or self.env)

    def setup(self):
        w = self.work
        with open(os.path.join(w, "pass"), "w") as f:
            f.write("fault sweep passphrase\n")
        init = ["init", os.path.join(w, "template")] + (self.key_opts() or ["--plain"])
        r = self.amber(*init)
        if r.returncode != 0:
            sys.exit("init failed: " + r.stderr)
        self.earlier = []
        for step in (1, 2):
            src = os.path.join(w, "src%d" % step)
            make_tree(src, step)
            r = self.amber("snapshot", os.path.join(w, "template"), src, *self.key_opts())
            if r.returncode != 0:
                sys.exit("snapshot failed: " + r.stderr)
            self.earlier.append((r.stdout.strip(), src))
        self.src = os.path.join(w, "src3")
        make_tree(self.src, 3)

    def fresh(self, name):
        """A copy of the template archive and cache for one run."""
        d = os.path.join(self.work, name)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        shutil.copytree(os.path.join(self.work, "template"), os.path.join(d, "a"), symlinks=True)
        shutil.copytree(self.env["XDG_CACHE_HOME"], os.path.join(d, "cache"), symlinks=True)
        env = dict(self.env)
        env["XDG_CACHE_HOME"] = os.path.join(d, "cache")
        return d, env

    def command(self, d):
        if self.cmd == "repack":
            return ["repack", os.path.join(d, "a"), "--all"]  # needs no key
        return ["snapshot", os.path.join(d, "a"), self.src] + self.key_opts()

    def count_points(self):
        d, env = self.fresh("count")
        log = os.path.join(d, "strace.log")
        r = self.amber(*self.command(d), env=env,
                       prefix=["strace", "-f", "-qq", "-e", "trace=" + MUTATING, "-o", log])
        if r.returncode != 0:
            sys.exit("the unfaulted command failed: " + r.stderr)
        per = {}
        with open(log) as f:
            for line in f:
                parts = line.split(None, 1)
                if len(parts) < 2 or "(" not in parts[1]:
                    continue
                sc = parts[1].split("(", 1)[0]
                if not sc.isidentifier():
                    continue
                key = (sc, parts[0])
                per[key] = per.get(key, 0) + 1
        most = {}
        for (sc, _), n in per.items():
            most[sc] = max(most.get(sc, 0), n)
        shutil.rmtree(d)
        return sorted((sc, n) for sc, n in most.items() for n in range(1, n + 1))

    def fail(self, point, why):
        self.failures.append("%s:%d %s: %s" % (point[0], point[1], point[2], why))
        print("FAIL %s:%d %s: %s" % (point[0], point[1], point[2], why), flush=True)

    def restores(self, d, env, spec, src):
        dest = os.path.join(d, "restore-%s" % spec[:12])
        r = self.amber("restore", os.path.join(d, "a"), spec, dest, *self.key_opts(), env=env)
        if r.returncode != 0:
            return "restore %s failed: %s" % (spec[:12], r.stderr.strip())
        if not trees_equal(src, dest):
            return "restore %s differs from its source" % spec[:12]
        shutil.rmtree(dest)
        return None

    def check(self, point, d, env, r):
        arch = os.path.join(d, "a")
        fsck = run(["git", "-C", arch, "fsck", "--full", "--no-progress"], env)
        if fsck.returncode != 0:
            self.fail(point, "git fsck: " + (fsck.stderr or fsck.stdout).strip()[:300])
        for spec, src in self.earlier:
            why = self.restores(d, env, spec, src)
            if why:
                self.fail(point, "earlier snapshot: " + why)
        if point[2] != "signal=SIGKILL":
            if r.returncode == 0:
                if self.cmd == "snapshot":
                    why = self.restores(d, env, r.stdout.strip(), self.src)
                    if why:
                        self.fail(point, "snapshot that reported success: " + why)
            elif "amberfs:" not in r.stderr or r.stderr.strip().endswith(":"):
                self.fail(point, "no clear error (exit %d, stderr %r)" %
                          (r.returncode, r.stderr.strip()[:200]))
        nxt = self.amber(*self.command(d), env=env)
        if nxt.returncode != 0:
            self.fail(point, "the next run failed: " + nxt.stderr.strip())
        elif self.cmd == "snapshot":
            why = self.restores(d, env, nxt.stdout.strip(), self.src)
            if why:
                self.fail(point, "next snapshot: " + why)

    def one(self, point):
        sc, n, mode = point
        d, env = self.fresh("run")
        inject = "inject=%s:%s:when=%d" % (sc, mode, n)
        r = self.amber(*self.command(d), env=env,
                       prefix=["strace", "-f", "-qq", "-e", "trace=none", "-e", inject])
        self.runs += 1
        self.check(point, d, env, r)
        shutil.rmtree(d)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bin")
    ap.add_argument("--sample", type=int, default=1)
    ap.add_argument("--offset", type=int, default=0)
    ap.add_argument("--encrypted", action="store_true")
    ap.add_argument("--cmd", default="snapshot", choices=("snapshot", "repack"))
    ap.add_argument("--progress", action="store_true", help="a line per run")
    args = ap.parse_args()
    s = Sweep(args)
    try:
        s.setup()
        points = [(sc, n, m) for sc, n in s.count_points() for m in MODES]
        print("%d points" % len(points), flush=True)
        for i, p in enumerate(points):
            if i % args.sample == args.offset % args.sample:
                s.one(p)
                if args.progress:
                    print("run %d/%d %s:%d %s" % (i + 1, len(points), *p), flush=True)
        print("%d points, %d runs, %d failures" % (len(points), s.runs, len(s.failures)))
    finally:
        shutil.rmtree(s.work, ignore_errors=True)
    return 1 if s.failures else 0


if __name__ == "__main__":
    sys.exit(main())
