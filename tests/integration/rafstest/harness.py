"""Plumbing shared by the integration test scripts.

Exit codes follow meson: 0 pass, 77 skip, 1 fail.
Environment:
  MKRAFS          path of the mkrafs binary (or --mkrafs PATH on the command line)
  RAFSD_TEST_TMP  parent directory for temporary data (default: the system temp dir;
                  it must support xattrs (trusted.*, security.*), ACLs, mknod, sparse files)
  RAFSTEST_KEEP   if set to 1, keep the temporary directory for inspection
  RAFSTEST_SMALL  if set to 1, leave the 5 GiB sparse file out of the full tree (faster)
"""

import argparse
import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from . import mount as _mount

PASS, FAIL, SKIP = 0, 1, 77


def log(*a):
    print(*a, flush=True)


def skip(msg):
    log('SKIP: ' + msg)
    sys.exit(SKIP)


def require_root_and_erofs():
    if os.geteuid() != 0:
        skip('needs root (mount(2), mknod, chown, trusted.* xattrs)')
    if not _mount.erofs_available():
        skip('kernel has no EROFS support (/proc/filesystems)')


def require_tools(*tools):
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        skip('missing tools: ' + ', '.join(missing))


def _on_sigterm(signum, frame):
    # meson kills a test that times out with SIGTERM: turn it into SystemExit so the
    # finally blocks unmount what the test mounted and remove its scratch data
    log('terminated by signal %d: cleaning up' % signum)
    sys.exit(FAIL)


def parse_args(description, extra=None):
    signal.signal(signal.SIGTERM, _on_sigterm)
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument('--mkrafs', default=os.environ.get('MKRAFS'),
                    help='mkrafs binary (default: $MKRAFS)')
    ap.add_argument('--keep', action='store_true', default=os.environ.get('RAFSTEST_KEEP') == '1',
                    help='keep the temporary directory')
    ap.add_argument('--small', action='store_true', default=os.environ.get('RAFSTEST_SMALL') == '1',
                    help='leave the 5 GiB sparse file out')
    if extra:
        extra(ap)
    return ap.parse_args()


def start_mkrafs_test(name, doc, tools=()):
    """The common start of a test of mkrafs alone: parses its arguments (described by the
    docstring's summary line), checks root, EROFS and `tools`. Returns (args, mkrafs path, Checker)."""
    args = parse_args(doc.split('\n')[1])
    require_root_and_erofs()
    require_tools(*tools)
    return args, check_mkrafs(args.mkrafs), Checker(name)


def check_mkrafs(path):
    """Return the absolute mkrafs path or exit FAIL with a clear message."""
    if not path:
        log('FAIL: mkrafs not given: set MKRAFS or pass --mkrafs PATH')
        sys.exit(FAIL)
    p = shutil.which(path) or path
    if not (os.path.isfile(p) and os.access(p, os.X_OK)):
        log('FAIL: mkrafs binary %r does not exist or is not executable' % path)
        sys.exit(FAIL)
    return os.path.abspath(p)


def _mounts_under(path):
    path = os.path.realpath(path)
    found = []
    with open('/proc/self/mountinfo') as f:
        for line in f:
            mp = line.split()[4].encode().decode('unicode_escape')
            if mp == path or mp.startswith(path + '/'):
                found.append(mp)
    return sorted(found, key=len, reverse=True)


def cleanup_dir(path):
    for mp in _mounts_under(path):
        try:
            _mount.umount(mp)
        except OSError as e:
            log('warning: could not unmount %s: %s' % (mp, e))
    shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def temp_dir(prefix, keep=False):
    base = os.environ.get('RAFSD_TEST_TMP') or None
    if base:
        os.makedirs(base, exist_ok=True)
    d = tempfile.mkdtemp(prefix=prefix, dir=base)
    os.chmod(d, 0o755)
    try:
        yield d
    finally:
        if keep:
            for mp in _mounts_under(d):
                with contextlib.suppress(OSError):
                    _mount.umount(mp)
            log('kept temporary directory: ' + d)
        else:
            cleanup_dir(d)


def read_text(path):
    with open(path, encoding='utf-8', errors='replace') as f:
        return f.read()


def wait_for(predicate, timeout=30, interval=0.05):
    """predicate()'s first true value, polled every `interval` seconds; None once `timeout`
    seconds have passed without one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return None


def fmt_cmd(cmd):
    return ' '.join(shlex.quote(os.fsdecode(c)) for c in cmd)


def run(cmd, timeout=1800, stdin=None, input=None, quiet=False, env=None, cwd=None):
    """Run a command, capture output; returns CompletedProcess with .elapsed.
    A timeout is reported as returncode None."""
    if not quiet:
        log('$ ' + fmt_cmd(cmd) + (' < ' + stdin.name if hasattr(stdin, 'name') else ''))
    t0 = time.monotonic()
    # In a session of its own, so that a timeout ends what it started too (rafsd's worker outlives
    # its supervisor, by design).
    with subprocess.Popen(cmd, stdin=subprocess.PIPE if input is not None else stdin, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, env=env, cwd=cwd, start_new_session=True) as p:
        try:
            out, err = p.communicate(input=input, timeout=timeout)
            r = subprocess.CompletedProcess(cmd, p.returncode, out, err)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            out, err = p.communicate()
            r = subprocess.CompletedProcess(cmd, None, out or b'', err or b'')
    r.elapsed = time.monotonic() - t0
    return r


def text(b):
    return (b or b'').decode('utf-8', 'backslashreplace')


class Checker:
    """Collects failures; prints each as it happens; exit code at the end."""

    def __init__(self, name):
        self.name = name
        self.failures = []
        self.warnings = []
        self.t0 = time.monotonic()

    def section(self, title):
        log('\n=== %s  [%.0fs]' % (title, time.monotonic() - self.t0))

    def ok(self, msg):
        log('  ok: ' + msg)

    def fail(self, msg):
        self.failures.append(msg)
        log('  FAIL: ' + msg)

    def warn(self, msg):
        self.warnings.append(msg)
        log('  WARNING: ' + msg)

    def check(self, cond, msg, detail=None):
        if cond:
            self.ok(msg)
        else:
            self.fail(msg + (': ' + detail if detail else ''))
        return cond

    def diffs(self, what, diffs, limit=80):
        """Report a list of differences as one failure (printing up to `limit`)."""
        if not diffs:
            self.ok('%s: no differences' % what)
            return True
        log('  %s: %d difference(s):' % (what, len(diffs)))
        for d in diffs[:limit]:
            log('    ' + d)
        if len(diffs) > limit:
            log('    ... %d more' % (len(diffs) - limit))
        self.fail('%s: %d difference(s), first: %s' % (what, len(diffs), diffs[0]))
        return False

    def cmd_ok(self, r, what):
        """Check a CompletedProcess succeeded; print its output on failure."""
        if r.returncode == 0:
            self.ok('%s (%.1fs)' % (what, r.elapsed))
            return True
        rc = 'timed out' if r.returncode is None else 'exit %s' % r.returncode
        self.fail('%s failed (%s)' % (what, rc))
        out, err = text(r.stdout).strip(), text(r.stderr).strip()
        if out:
            log('    stdout: ' + out[-3000:].replace('\n', '\n            '))
        if err:
            log('    stderr: ' + err[-3000:].replace('\n', '\n            '))
        return False

    def finish(self):
        dt = time.monotonic() - self.t0
        log('')
        for w in self.warnings:
            log('warning: ' + w)
        if self.failures:
            log('%s: FAILED (%d failure(s), %.0fs)' % (self.name, len(self.failures), dt))
            for f in self.failures:
                log('  - ' + f)
            return FAIL
        log('%s: PASSED (%.0fs)' % (self.name, dt))
        return PASS


@contextlib.contextmanager
def small_disk(ck, tmp, name):
    """A 20 MiB ext4 file system made and loop-mounted at tmp/name for the test, unmounted after;
    yields its mount point, or None if it could not be made (reported)."""
    image, disk = os.path.join(tmp, name + '.ext4'), os.path.join(tmp, name)
    os.makedirs(disk)
    if not (ck.cmd_ok(run(['mkfs.ext4', '-q', '-F', '-b', '4096', '-m', '0', image, '20M']), 'mkfs.ext4 20 MiB')
            and ck.cmd_ok(run(['mount', '-o', 'loop', image, disk]), 'mount it')):
        yield None
        return
    try:
        yield disk
    finally:
        run(['umount', disk])


def dir_listing(path):
    """Relative paths of everything under path (for 'no partial output' checks)."""
    out = []
    for dp, dns, fns in os.walk(path):
        for n in dns + fns:
            out.append(os.path.relpath(os.path.join(dp, n), path))
    return sorted(out)
