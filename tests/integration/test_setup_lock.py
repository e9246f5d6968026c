#!/usr/bin/python3
"""scripts/setup waits for a lock another package manager holds, says so, and gives up after
RAFSD_SETUP_LOCK_WAIT seconds.

It runs the real scripts/setup and the real apt-get in a private mount namespace whose apt and
dpkg state are copies (dpkg's status without one of setup's packages, so setup has something to
install; no package sources, so nothing is downloaded), and holds their locks the way apt does
(fcntl write locks):
- the lists lock (apt-get update) held throughout, RAFSD_SETUP_LOCK_WAIT=3: setup says it waits,
  names the lock, gives up after 3 s with a non-zero exit;
- the same lock released while setup waits: setup goes on (and then fails only because the
  package is in no source: nothing to download from here);
- dpkg's frontend lock (apt-get install) held throughout: the install step waits and gives up too.
The host's own apt and dpkg state are not touched.

Exit: 0 pass, 77 skip (not root), 1 fail.
"""

import fcntl
import os
import shutil
import subprocess
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from rafstest import harness  # noqa: E402
from rafstest.harness import log  # noqa: E402

SETUP = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                     'scripts', 'setup')
PACKAGE = 'hyperfine'  # one of setup's packages; its stanza is left out of the copied status


def private_state(tmp):
    """Copies of dpkg's and apt's state (tmp/dpkg, tmp/apt, tmp/cache, tmp/sources.list.d) for
    the namespace; returns the shell commands that bind them over the host's."""
    dpkg = os.path.join(tmp, 'dpkg')
    os.makedirs(os.path.join(dpkg, 'updates'))
    os.makedirs(os.path.join(dpkg, 'info'))
    with open('/var/lib/dpkg/status') as f:
        stanzas = f.read().split('\n\n')
    kept = [s for s in stanzas if not s.startswith('Package: %s\n' % PACKAGE)]
    if len(kept) != len(stanzas) - 1:
        harness.skip('%s is not installed: scripts/setup would really install it' % PACKAGE)
    with open(os.path.join(dpkg, 'status'), 'w') as f:
        f.write('\n\n'.join(kept))
    if os.path.exists('/var/lib/dpkg/arch'):
        shutil.copy('/var/lib/dpkg/arch', dpkg)
    for name in ('lock', 'lock-frontend'):
        open(os.path.join(dpkg, name), 'w').close()
    apt = os.path.join(tmp, 'apt')
    os.makedirs(os.path.join(apt, 'lists', 'partial'))
    open(os.path.join(apt, 'lists', 'lock'), 'w').close()
    cache = os.path.join(tmp, 'cache')
    os.makedirs(os.path.join(cache, 'archives', 'partial'))
    sources = os.path.join(tmp, 'sources.list.d')
    os.makedirs(sources)
    binds = [(dpkg, '/var/lib/dpkg'), (apt, '/var/lib/apt'), (cache, '/var/cache/apt'),
             (sources, '/etc/apt/sources.list.d')]
    if os.path.exists('/etc/apt/sources.list'):
        empty = os.path.join(tmp, 'sources.list')
        open(empty, 'w').close()
        binds.append((empty, '/etc/apt/sources.list'))
    return ' && '.join('mount --bind %s %s' % b for b in binds)


class Lock:
    """An fcntl write lock on `path`, as apt takes it."""

    def __init__(self, path):
        self.fd = os.open(path, os.O_RDWR)
        fcntl.lockf(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def release(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def run_setup(binds, lock_path, wait, err_path, release_when_waiting=False, timeout=120):
    """Runs scripts/setup in the namespace while this process holds the lock on `lock_path`
    (until setup says it waits, if `release_when_waiting`).
    Returns (exit code or None, elapsed seconds, stdout, stderr)."""
    lock = Lock(lock_path)
    try:
        return run_setup_locked(binds, wait, err_path, lock.release if release_when_waiting else None, timeout)
    finally:
        lock.release()


def run_setup_locked(binds, wait, err_path, release, timeout):
    env = dict(os.environ, RAFSD_SETUP_LOCK_WAIT=str(wait))
    cmd = ['unshare', '--mount', '--propagation', 'private', '--', 'sh', '-c', binds + ' && exec "$0"', SETUP]
    log('$ RAFSD_SETUP_LOCK_WAIT=%d %s' % (wait, harness.fmt_cmd(cmd)))
    t0 = time.monotonic()
    with open(err_path, 'w+') as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, env=env)
        deadline = t0 + timeout
        while release and proc.poll() is None and time.monotonic() < deadline:
            with open(err_path) as f:
                if 'waiting for it' in f.read():
                    log('  setup waits; releasing the lock')
                    release()
                    break
            time.sleep(0.1)
        try:
            out, _ = proc.communicate(timeout=max(1, deadline - time.monotonic()))
            code = proc.returncode
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
            code = None
        err.seek(0)
        stderr = err.read()
    elapsed = time.monotonic() - t0
    log('  exit %s after %.1f s\n  stdout: %s\n  stderr: %s' % (code, elapsed, out.decode().strip(),
                                                                 stderr.strip().replace('\n', '\n          ')))
    return code, elapsed, out.decode(), stderr


def main():
    args = harness.parse_args(__doc__.split('\n')[0])
    if os.geteuid() != 0:
        harness.skip('needs root (mount namespace, apt-get)')
    harness.require_tools('unshare', 'apt-get', 'dpkg-query')
    ck = harness.Checker('setup_lock')
    with harness.temp_dir('rafsd-setup-lock-', keep=args.keep) as tmp:
        binds = private_state(tmp)
        lists_lock = os.path.join(tmp, 'apt', 'lists', 'lock')
        frontend_lock = os.path.join(tmp, 'dpkg', 'lock-frontend')

        ck.section('the lists lock held throughout (apt-get update)')
        code, elapsed, out, err = run_setup(binds, lists_lock, 3, os.path.join(tmp, 'err1'))
        ck.check('installing %s' % PACKAGE in out, 'setup finds %s missing' % PACKAGE, out)
        ck.check(code not in (0, None), 'setup fails (exit %s)' % code)
        ck.check('waiting for it, at most 3 s' in err and '/var/lib/apt/lists/lock' in err,
                 'setup says it waits, naming the lock', err)
        ck.check('gave up after waiting' in err, 'setup says it gave up', err)
        ck.check(3 <= elapsed < 30, 'setup waited about 3 s (%.1f s)' % elapsed)

        ck.section('the lists lock released while setup waits')
        code, elapsed, out, err = run_setup(binds, lists_lock, 60, os.path.join(tmp, 'err2'),
                                            release_when_waiting=True)
        ck.check('waiting for it' in err, 'setup waited', err)
        ck.check('gave up' not in err and 'Unable to locate package %s' % PACKAGE in err,
                 'then setup went on: apt-get update ran, apt-get install found no source for %s' % PACKAGE, err)
        ck.check(code not in (0, None) and elapsed < 60, 'and it ended (exit %s, %.1f s)' % (code, elapsed))

        ck.section("dpkg's frontend lock held throughout (apt-get install)")
        code, elapsed, out, err = run_setup(binds, frontend_lock, 3, os.path.join(tmp, 'err3'))
        ck.check('/var/lib/dpkg/lock-frontend' in err and 'waiting for it, at most 3 s' in err,
                 'setup says it waits for the frontend lock', err)
        ck.check(code not in (0, None) and 'gave up after waiting' in err, 'and gives up (exit %s)' % code, err)
    return ck.finish()


if __name__ == '__main__':
    sys.exit(main())
