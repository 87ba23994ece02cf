#!/usr/bin/env python3
"""Bit-flip sweep: every byte of a small archive's packs and pack indexes
flipped, one at a time (all eight bits inverted).

After each flip:
  - no amberfs command crashes (no signal, no sanitizer report);
  - `amberfs verify --read-data` reports the damage (exit 1 with a line
    naming what is damaged): every corruption is found, including bytes
    no read uses (CRCs, checksums);
  - `amberfs restore` either reproduces the source byte for byte or fails
    with an "amberfs:" message -- never a wrong byte;
  - on a real mount (every M-th flip), every file reads back identical to
    the source or fails with EIO: zero wrong bytes served.

Usage: bitflip.py AMBERFS_BIN [--sample K [--offset R]] [--mount-every M] [--encrypted] [--progress]
  (--offset R: with --sample K, the bytes whose number modulo K is R, so that
  K runs with offsets 0..K-1 together flip every byte)
  --progress   a line per flip (so an interrupted sweep says how far it got)
Prints one line per failure and "N flips, N checked, N mounted, N failures".
"""
import argparse
import errno
import os
import shutil
import subprocess
import sys
import tempfile
import time

SANITIZER = ("AddressSanitizer", "runtime error:", "LeakSanitizer")


def run(cmd, env, timeout=60):
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


class Flip:
    def __init__(self, args):
        self.bin = args.bin
        self.encrypted = args.encrypted
        self.work = tempfile.mkdtemp(prefix="amberfs-bitflip-")
        self.env = dict(os.environ)
        self.env["XDG_CACHE_HOME"] = os.path.join(self.work, "cache")
        self.failures = 0
        self.mounted = 0
        self.checked = 0

    def key_opts(self):
        return ["--passphrase-file", os.path.join(self.work, "pass")] if self.encrypted else []

    def amber(self, *argv):
        r = run([self.bin, "--kdf-profile=test"] + list(argv), self.env)
        if r.returncode < 0 or r.returncode >= 128 or any(s in r.stderr for s in SANITIZER):
            raise Crash("%s: exit %d: %s" % (argv[0], r.returncode, r.stderr[-400:]))
        return r

    def setup(self):
        w = self.work
        with open(os.path.join(w, "pass"), "w") as f:
            f.write("bit flip passphrase\n")
        src = self.src = os.path.join(w, "src")
        os.makedirs(os.path.join(src, "d"))
        with open(os.path.join(src, "a.txt"), "w") as f:
            f.write("alpha\n" * 50)
        with open(os.path.join(src, "d", "b.txt"), "w") as f:
            f.write("bravo\n")
        os.symlink("a.txt", os.path.join(src, "l"))
        self.files = ["a.txt", "d/b.txt"]
        self.template = os.path.join(w, "template")
        init = ["init", self.template] + (self.key_opts() or ["--plain"])
        if self.amber(*init).returncode != 0:
            sys.exit("init failed")
        r = self.amber("snapshot", self.template, src, *self.key_opts())
        if r.returncode != 0:
            sys.exit("snapshot failed: " + r.stderr)
        self.id = r.stdout.strip()
        packdir = os.path.join(self.template, "objects", "pack")
        self.targets = []
        for name in sorted(os.listdir(packdir)):
            if name.endswith((".pack", ".idx")):
                size = os.path.getsize(os.path.join(packdir, name))
                self.targets += [(name, off) for off in range(size)]

    def fail(self, where, why):
        self.failures += 1
        print("FAIL %s+%d: %s" % (where[0], where[1], why), flush=True)

    def flipped_copy(self, name, off):
        arch = os.path.join(self.work, "a")
        shutil.rmtree(arch, ignore_errors=True)
        shutil.rmtree(self.env["XDG_CACHE_HOME"], ignore_errors=True)
        shutil.copytree(self.template, arch, symlinks=True)
        path = os.path.join(arch, "objects", "pack", name)
        os.chmod(path, 0o644)
        with open(path, "r+b") as f:
            f.seek(off)
            b = f.read(1)
            f.seek(off)
            f.write(bytes([b[0] ^ 0xFF]))
        return arch

    def restore_ok(self, arch, where):
        dest = os.path.join(self.work, "dest")
        shutil.rmtree(dest, ignore_errors=True)
        r = self.amber("restore", arch, self.id, dest, *self.key_opts())
        if r.returncode != 0:
            if "amberfs:" not in r.stderr:
                self.fail(where, "restore failed without a message: %r" % r.stderr[:200])
            return False
        d = run(["diff", "-r", "--no-dereference", self.src, dest], self.env)
        if d.returncode != 0:
            self.fail(where, "restore exited 0 with wrong contents: " + d.stdout[:300])
        return True

    def mount_ok(self, arch, where):
        mnt = os.path.join(self.work, "mnt")
        os.makedirs(mnt, exist_ok=True)
        log = os.path.join(self.work, "mount.log")
        p = subprocess.Popen([self.bin, "--kdf-profile=test", "mount", arch, mnt, "-f"] +
                             self.key_opts(),
                             env=self.env, stdout=subprocess.DEVNULL,
                             stderr=open(log, "w"))
        bad = 0
        try:
            for _ in range(200):
                if os.path.ismount(mnt) or p.poll() is not None:
                    break
                time.sleep(0.02)
            if not os.path.ismount(mnt):
                text = open(log).read()
                if p.poll() is not None and p.returncode >= 128 or any(
                        s in text for s in SANITIZER):
                    self.fail(where, "mount crashed: " + text[-300:])
                return True  # refused to mount: serves nothing
            self.mounted += 1
            for rel in self.files:
                try:
                    with open(os.path.join(mnt, "ids", self.id, rel), "rb") as f:
                        got = f.read()
                except OSError as e:
                    if e.errno not in (errno.EIO, errno.ENOENT):
                        self.fail(where, "mount: %s: unexpected error %s" % (rel, e))
                    bad += 1
                    continue
                with open(os.path.join(self.src, rel), "rb") as f:
                    if got != f.read():
                        self.fail(where, "mount served wrong bytes for " + rel)
        finally:
            run(["fusermount3", "-u", mnt], self.env)
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                self.fail(where, "mount daemon did not exit after unmount")
        if p.returncode not in (0, None) and p.returncode >= 128:
            self.fail(where, "mount daemon died: exit %d" % p.returncode)
        text = open(log).read()
        if any(s in text for s in SANITIZER):
            self.fail(where, "mount sanitizer report: " + text[-300:])
        return bad == 0

    def one(self, name, off, mount):
        where = (name, off)
        arch = self.flipped_copy(name, off)
        self.checked += 1
        try:
            v = self.amber("verify", arch, "--read-data", *self.key_opts())
            exact = self.restore_ok(arch, where)
            served = self.mount_ok(arch, where) if mount else True
        except Crash as c:
            self.fail(where, "crash: " + str(c))
            return
        except subprocess.TimeoutExpired as t:
            self.fail(where, "hang: " + str(t.cmd[:3]))
            return
        if v.returncode == 0 and (not exact or not served):
            self.fail(where, "verify found nothing, but reading failed")
        if v.returncode != 0 and v.returncode != 1:
            self.fail(where, "verify exit %d: %s" % (v.returncode, v.stderr[:200]))
        if v.returncode == 1 and not v.stdout.strip() and not v.stderr.strip():
            self.fail(where, "verify failed without naming anything")
        if v.returncode == 0:
            self.fail(where, "verify --read-data found nothing (every corruption must be found)")


class Crash(Exception):
    pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bin")
    ap.add_argument("--sample", type=int, default=1)
    ap.add_argument("--offset", type=int, default=0)
    ap.add_argument("--mount-every", type=int, default=1)
    ap.add_argument("--encrypted", action="store_true")
    ap.add_argument("--progress", action="store_true", help="a line per flip")
    args = ap.parse_args()
    f = Flip(args)
    try:
        f.setup()
        picked = f.targets[args.offset % args.sample::args.sample]
        print("%d flips, %d picked" % (len(f.targets), len(picked)), flush=True)
        for i, (name, off) in enumerate(picked):
            f.one(name, off, i % args.mount_every == 0)
            if args.progress:
                print("flip %d/%d %s+%d" % (i + 1, len(picked), name, off), flush=True)
        print("%d flips, %d checked, %d mounted, %d failures" %
              (len(f.targets), f.checked, f.mounted, f.failures))
    finally:
        mnt = os.path.join(f.work, "mnt")
        if os.path.ismount(mnt):
            run(["fusermount3", "-u", mnt], f.env)
        shutil.rmtree(f.work, ignore_errors=True)
    return 1 if f.failures else 0


if __name__ == "__main__":
    sys.exit(main())
