#!/usr/bin/env python3
"""Reload: `rafsd serve` replaced by a new build of itself on SIGHUP (systemd's ExecReload), its
mounts kept up and their readers served throughout (fanotify engine, prefetch off, every backend
read delayed, so that readers wait on cold data when the signal comes):

1. upgrade: rafsd runs from a copy of the binary under a test playing systemd (notify socket and fd
   store); rafsctl mounts an image; 8 readers wait on cold files and one more file is held open;
   the binary is replaced (a new file at the same path, as a package upgrade does) and the
   supervisor gets SIGHUP. Every reader completes with the file's bytes; the process keeps its
   pid and now runs the new file; it said RELOADING=1 and READY=1 again; the mount is still
   listed and served; the new rafsd answered the events the old worker left; a loop of
   `rafsctl list` running through the reload never failed (the socket file is left in place).
2. refused: a configuration that no longer parses, one that keeps its state elsewhere (the new
   rafsd would not find the mount table), one that caches elsewhere (the mounts' chunk maps would
   part from their cache files), and a binary that does not run: SIGHUP is refused with
   one line naming what is wrong, and the worker serves on undisturbed.
2b. rollback, without systemd: a new binary that passes the check and then fails at start, and a
   configuration that parses but whose workers cannot start (the metrics address taken). The
   holder forked before the exec keeps the kernel objects, carries on as the supervisor with the
   previous program once the new one gives up, and the readers waiting through all of it get the
   files' bytes.
2c. under systemd (no holder): the new program's workers fail on a metrics address taken; the
   kept cache files stay in the fd store, and once the address is free a worker takes the mount
   over and a cold read gets its bytes (before, it waited for good on the worker's own event).
3. hangup: `rafsd mount` in a session of its own gets SIGHUP in supervisor and worker at once, as
   from a closed terminal: it unmounts and exits 0 (before, both died and the mount was left to
   read its holes as zeros); a reader holding a file open never gets wrong bytes.
4. a reload while the mount table is damaged, then the table put back and a second reload: the
   mount is taken over and a cold read gets its bytes (before, every miss hung).
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

from rafstest import harness
from rafstest.fdstore import FdStore
from rafstest.harness import log
from rafstest.rafsd import BackgroundServe, RafsdMount, children, rafsctl_mount, worker_of, write_config
from rafstest.readers import READ_TIMEOUT, Reader, read_all, run_slow_cases, slow_mount

MiB = 1 << 20
FILES = [('r%d' % i, 2 * MiB + 4096 * i) for i in range(8)] + [('held', 2 * MiB), ('after', 3 * MiB),
                                                              ('hup', 4 * MiB)]
FETCH_DELAY_MS = 1500


def install(src, dest):
    """Puts a copy of `src` at `dest` as a package manager does: a new file renamed over the old."""
    tmp = dest + '.new'
    shutil.copy2(src, tmp)
    os.rename(tmp, dest)
    return os.stat(dest).st_ino


def wait_for_log(proc, text, timeout=30):
    return bool(harness.wait_for(lambda: text in proc.log_text(), timeout))


def rafsctl_list(rafsctl, sock):
    r = subprocess.run([rafsctl, '--socket', sock, 'list'], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=60)
    return r.returncode, r.stdout.decode()


class ListLoop:
    """`rafsctl list` over and over in a thread (every 20 ms), as a script polling the service
    does, until a second after `done()` holds (for `seconds` at most); keeps what each call that
    failed said."""

    def __init__(self, rafsctl, sock, seconds, done):
        self.rafsctl, self.sock, self.seconds, self.done = rafsctl, sock, seconds, done
        self.calls, self.failures = 0, []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        end = time.monotonic() + self.seconds
        while time.monotonic() < end:
            if self.done():
                end = min(end, time.monotonic() + 1)
                self.done = lambda: False
            code, out = rafsctl_list(self.rafsctl, self.sock)
            self.calls += 1
            if code != 0:
                self.failures.append(out.strip())
            time.sleep(0.02)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.thread.join(self.seconds + 70)


def scratch_service(rafsd, tmp, name):
    """What a `rafsd serve` of this test needs, all named after `name` under tmp: a mountpoint, a
    copy of the rafsd binary that the test may replace, the control socket, and the config (its
    path and its values). Returns (mnt, binary, sock, config, values)."""
    mnt = os.path.join(tmp, 'mnt-' + name)
    os.makedirs(mnt)
    os.makedirs(os.path.join(tmp, 'bin-' + name))
    binary = os.path.join(tmp, 'bin-' + name, 'rafsd')
    install(rafsd, binary)
    sock = os.path.join(tmp, name + '.sock')
    values = dict(daemon={'socket': sock, 'cache_dir': os.path.join(tmp, 'cache-' + name),
                          'state_dir': os.path.join(tmp, 'state-' + name), 'engine': 'fanotify'},
                  prefetch={'enable': False}, fetch={'amplify': 0})
    return mnt, binary, sock, write_config(os.path.join(tmp, name + '.toml'), **values), values


def case_upgrade_and_refusals(ck, rafsd, rafsctl, image, content, tmp):
    mnt, binary, sock, config, config_values = scratch_service(rafsd, tmp, 'serve')
    argv = [binary, 'serve', '--config', config, '--test-fetch-delay', str(FETCH_DELAY_MS)]
    store = FdStore()
    serve = BackgroundServe(argv, os.path.join(tmp, 'serve.log'), store.env())
    try:
        serve.start()
        if not ck.check(store.wait_for('READY=1'), 'upgrade: rafsd serve said READY=1', serve.log_text()[-2000:]):
            return
        r = subprocess.run([rafsctl, '--socket', sock, 'mount', '--blob-dir', image['blobs'], image['boot'], mnt],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        if not ck.check(r.returncode == 0, 'upgrade: rafsctl mount', r.stdout.decode() + serve.log_text()[-2000:]):
            return
        pid = serve.proc.pid
        old_worker = worker_of(pid)
        held = Reader(os.path.join(mnt, 'held'), content['held'], hold=True)
        new_inode = None

        def upgrade():
            nonlocal new_inode
            new_inode = install(rafsd, binary)
            os.kill(pid, signal.SIGHUP)
        # A script polling the service meanwhile: the old worker leaves the socket file for the
        # next one, so a call finds it refusing and waits, as after a worker's death.
        with ListLoop(rafsctl, sock, 60, lambda: 'passed on by the previous rafsd (reload)' in serve.log_text()) \
                as polling:
            read_all(ck, mnt, content, ['r%d' % i for i in range(8)], upgrade, 'upgrade', held, FETCH_DELAY_MS)
        ck.check(polling.calls >= 5 and not polling.failures and 'passed on by the previous rafsd' in serve.log_text(),
                 'upgrade: every rafsctl list of a loop running through the reload succeeded (%d calls)'
                 % polling.calls, '\n'.join(polling.failures[:3]))
        ck.check(wait_for_log(serve, 'passed on by the previous rafsd (reload)'),
                 'upgrade: the new program took the group over from the old one', serve.log_text()[-3000:])
        ck.check(serve.proc.poll() is None and os.stat('/proc/%d/exe' % pid).st_ino == new_inode,
                 'upgrade: the same pid now runs the new binary',
                 'running %s' % (os.readlink('/proc/%d/exe' % pid) if serve.proc.poll() is None else 'nothing'))
        new_worker = worker_of(pid)
        ck.check(new_worker != old_worker and not os.path.exists('/proc/%d' % old_worker),
                 'upgrade: the old worker is gone, a new one serves')
        text = serve.log_text()
        ck.check('reattached' in text and 'every orphaned event answered' in text,
                 'upgrade: the new rafsd reattached the mount and answered the events the old worker left',
                 text[-3000:])
        with store.lock:
            messages = list(store.messages)
        ck.check('RELOADING=1' in messages and messages.count('READY=1') >= 2
                 and messages.index('RELOADING=1') < len(messages) - 1 - messages[::-1].index('READY=1'),
                 'upgrade: systemd was told RELOADING=1, then READY=1 again', str(messages))
        code, listing = rafsctl_list(rafsctl, sock)
        ck.check(code == 0 and mnt in listing, 'upgrade: rafsctl list shows the mount', listing)
        after = Reader(os.path.join(mnt, 'after'), content['after'])
        after.run()
        ck.check(after.result == 'ok', 'upgrade: a cold file read after the reload has its bytes', after.result)

        log('== refused: a configuration that does not parse')
        with open(config, 'a') as f:
            f.write('[daemon\n')
        os.kill(pid, signal.SIGHUP)
        ck.check(wait_for_log(serve, 'reload refused'), 'refused: a broken configuration is named, one line',
                 serve.log_text()[-2000:])
        refusal = [line for line in serve.log_text().splitlines() if 'reload refused' in line]
        ck.check(len(refusal) == 1 and 'serve.toml' in refusal[0], 'refused: the line names the configuration file',
                 str(refusal))
        time.sleep(0.5)
        ck.check(worker_of(pid) == new_worker, 'refused: the worker serves on')
        write_config(config, **config_values)

        for key, said in (('state_dir', 'keeps its state elsewhere'), ('cache_dir', 'caches elsewhere')):
            log('== refused: a configuration whose %s moved' % key)
            moved = dict(config_values, daemon=dict(config_values['daemon'], **{key: os.path.join(tmp, key + '2')}))
            write_config(config, **moved)
            os.kill(pid, signal.SIGHUP)
            ck.check(wait_for_log(serve, said), 'refused: a moved %s, saying so' % key, serve.log_text()[-2000:])
            time.sleep(0.5)
            ck.check(worker_of(pid) == new_worker, 'refused: the worker serves on')
            write_config(config, **config_values)

        log('== refused: a binary that does not run')
        with open(binary + '.new', 'w') as f:
            f.write('#!/bin/sh\necho "rafsd: this build is broken" >&2\nexit 1\n')
        os.chmod(binary + '.new', 0o755)
        os.rename(binary + '.new', binary)
        os.kill(pid, signal.SIGHUP)
        ck.check(wait_for_log(serve, 'this build is broken'), 'refused: a binary that does not run is refused, saying why',
                 serve.log_text()[-2000:])
        time.sleep(0.5)
        ck.check(worker_of(pid) == new_worker, 'refused: the worker serves on')
        code, listing = rafsctl_list(rafsctl, sock)
        ck.check(code == 0 and mnt in listing, 'refused: rafsctl list still shows the mount', listing)
        install(rafsd, binary)

        ck.check(serve.stop(signal.SIGTERM, timeout=60) == 0, 'SIGTERM then stops rafsd, exit 0')
        ck.check(not os.path.ismount(mnt), 'the mount is gone')
        held.join(1)
    finally:
        if serve.proc is not None and serve.proc.poll() is None:
            serve.proc.kill()
            serve.proc.wait()
        store.close()
        if os.path.ismount(mnt):
            subprocess.run(['umount', '-l', mnt])


def break_binary(rafsd, binary, config, values):
    """A new build that passes the check and fails when it runs for real, before it serves."""
    with open(binary + '.new', 'w') as f:
        f.write('#!/bin/sh\ncase " $* " in *" --check-config "*) exec %s "$@";; esac\n'
                'echo "rafsd: this build breaks at start" >&2\nexit 1\n' % rafsd)
    os.chmod(binary + '.new', 0o755)
    os.rename(binary + '.new', binary)


def break_workers(rafsd, binary, config, values):
    """A configuration that parses, whose workers cannot start: their metrics address is taken."""
    taken = socket.socket()
    taken.bind(('127.0.0.1', 0))
    taken.listen(1)
    write_config(config, metrics={'address': '127.0.0.1:%d' % taken.getsockname()[1]}, **values)
    return taken


def case_rollback(ck, rafsd, rafsctl, image, content, tmp, name, breakage, said):
    mnt, binary, sock, config, values = scratch_service(rafsd, tmp, name)
    env = {k: v for k, v in os.environ.items() if k != 'NOTIFY_SOCKET'}
    serve = BackgroundServe([binary, 'serve', '--config', config, '--test-fetch-delay', str(FETCH_DELAY_MS)],
                  os.path.join(tmp, name + '.log'), env)
    holder = None
    kept = []
    try:
        serve.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and rafsctl_list(rafsctl, sock)[0] != 0:
            time.sleep(0.1)
        r = subprocess.run([rafsctl, '--socket', sock, 'mount', '--blob-dir', image['blobs'], image['boot'], mnt],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        if not ck.check(r.returncode == 0, 'rollback: rafsctl mount', r.stdout.decode() + serve.log_text()[-2000:]):
            return
        pid = serve.proc.pid

        def broken_upgrade():
            kept.append(breakage(rafsd, binary, config, values))
            os.kill(pid, signal.SIGHUP)
        read_all(ck, mnt, content, ['r%d' % i for i in range(8)], broken_upgrade, name, wait_ms=FETCH_DELAY_MS)
        ck.check(wait_for_log(serve, said) and wait_for_log(serve, 'serves on with the previous program'),
                 '%s: the new program gave up (%s), the holder took over, saying so' % (name, said),
                 serve.log_text()[-3000:])
        found = re.search(r'this process \(pid (\d+)\) serves on', serve.log_text())
        holder = int(found.group(1)) if found else None
        ck.check(serve.proc.wait(30) == 1 and holder is not None and os.path.exists('/proc/%d' % holder),
                 '%s: the broken program exited, the holder lives on' % name)
        code, listing = rafsctl_list(rafsctl, sock)
        ck.check(code == 0 and mnt in listing, '%s: rafsctl list shows the mount' % name, listing)
        after = Reader(os.path.join(mnt, 'after'), content['after'])
        after.run()
        ck.check(after.result == 'ok', '%s: a cold file read afterwards has its bytes' % name, after.result)
        if holder is not None:
            os.kill(holder, signal.SIGTERM)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and os.path.exists('/proc/%d' % holder):
                time.sleep(0.05)
            ck.check(not os.path.exists('/proc/%d' % holder) and not os.path.ismount(mnt),
                     '%s: SIGTERM to the holder stops it and unmounts' % name)
            holder = None
    finally:
        if serve.proc is not None and serve.proc.poll() is None:
            serve.proc.kill()
            serve.proc.wait()
        if holder is not None and os.path.exists('/proc/%d' % holder):
            os.kill(holder, signal.SIGKILL)
        for k in kept:
            if k is not None:
                k.close()
        if os.path.ismount(mnt):
            subprocess.run(['umount', '-l', mnt])


def case_workers_fail_under_systemd(ck, rafsd, rafsctl, image, content, tmp):
    """Under systemd (no holder), a reload to a configuration whose workers cannot start (the
    metrics address taken): each failing worker must leave the kept cache files alone. Before, the
    first dropped them (FDSTOREREMOVE), and once the address was free the next worker opened them
    anew, marked, and its first write into one waited on its own event for good."""
    mnt, binary, sock, config, values = scratch_service(rafsd, tmp, 'systemd-taken')
    store = FdStore()
    serve = BackgroundServe([binary, 'serve', '--config', config, '--test-fetch-delay', str(FETCH_DELAY_MS)],
                            os.path.join(tmp, 'systemd-taken.log'), store.env())
    taken = None
    try:
        serve.start()
        if not ck.check(store.wait_for('READY=1'), 'systemd, workers fail: rafsd serve said READY=1',
                        serve.log_text()[-2000:]):
            return
        r = subprocess.run([rafsctl, '--socket', sock, 'mount', '--blob-dir', image['blobs'], image['boot'], mnt],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        if not ck.check(r.returncode == 0, 'systemd, workers fail: rafsctl mount', r.stdout.decode()):
            return
        # Kept cache files are named c<inode>-<device> in hex (KeptCacheFiles).
        kept = [n for n in store.names() if re.match(r'c[0-9a-f]+-[0-9a-f]+$', n)]
        taken = break_workers(rafsd, binary, config, values)
        os.kill(serve.proc.pid, signal.SIGHUP)
        failed = harness.wait_for(lambda: serve.log_text().count('cannot bind the metrics endpoint') >= 2, timeout=60)
        ck.check(failed, 'systemd, workers fail: two workers of the new program failed on the metrics address',
                 serve.log_text()[-2000:])
        with store.lock:
            removed = [m for m in store.messages if re.match(r'FDNAME=c[0-9a-f]+-', m)]
        ck.check(kept and all(n in store.names() for n in kept),
                 'systemd, workers fail: the cache files stay in the fd store (%d)' % len(kept),
                 'kept before %s, now %s, removals %s' % (kept, store.names(), removed))
        taken.close()
        taken = None
        ck.check(wait_for_log(serve, 'reattached', timeout=60), 'systemd, workers fail: once the address is free, '
                 'a worker takes the mount over', serve.log_text()[-2000:])
        after = Reader(os.path.join(mnt, 'after'), content['after'])
        after.start()
        after.join(READ_TIMEOUT)
        ck.check(after.result == 'ok', 'systemd, workers fail: a cold file read then has its bytes',
                 '%s\n%s' % (after.result, serve.log_text()[-2000:]))
        if after.result is None:
            os.kill(worker_of(serve.proc.pid), signal.SIGKILL)  # stuck on its own event: killable
        ck.check(serve.stop(signal.SIGTERM, timeout=60) == 0 and not os.path.ismount(mnt),
                 'systemd, workers fail: SIGTERM stops rafsd and unmounts')
    finally:
        if taken is not None:
            taken.close()
        if serve.proc is not None and serve.proc.poll() is None:
            for pid in children(serve.proc.pid) + [serve.proc.pid]:
                os.kill(pid, signal.SIGKILL)
            serve.proc.wait()
        store.close()
        if os.path.ismount(mnt):
            subprocess.run(['umount', '-l', mnt])


class SessionMount(RafsdMount):
    """`rafsd mount` as a terminal runs it: in a session (and process group) of its own."""

    popen_options = {'start_new_session': True}


def case_table_restored(ck, rafsd, rafsctl, image, content, tmp):
    """A reload while the mount table is damaged (the new worker cannot take the mount over, and
    its reads fail), then the table put back and a second reload: the mount is taken over through
    the files opened before they were marked, and a cold read gets its bytes (before, the first
    worker dropped those files, the second opened new ones, and its own cache writes waited on its
    own events: every miss hung)."""
    mnt, binary, sock, config, _ = scratch_service(rafsd, tmp, 'table')
    store = FdStore()
    serve = BackgroundServe([binary, 'serve', '--config', config], os.path.join(tmp, 'table.log'), store.env())
    table = os.path.join(tmp, 'state-table', 'mounts.json')
    try:
        serve.start()
        if not ck.check(store.wait_for('READY=1'), 'table: rafsd serve said READY=1', serve.log_text()[-2000:]):
            return
        if not rafsctl_mount(ck, rafsctl, sock, image['blobs'], image['boot'], mnt, 'table: rafsctl mount'):
            return
        with open(table, 'rb') as f:
            saved = f.read()
        with open(table, 'wb') as f:
            f.write(b'garbage')
        os.kill(serve.proc.pid, signal.SIGHUP)
        ck.check(wait_for_log(serve, 'not a table of mounts'), 'table: the reloaded rafsd says the table is damaged',
                 serve.log_text()[-2000:])
        ck.check(harness.wait_for(lambda: len(re.findall(r'fanotify worker \d+ serves', serve.log_text())) >= 2,
                                  timeout=30), 'table: it serves on', serve.log_text()[-2000:])
        with open(table, 'wb') as f:
            f.write(saved)
        os.kill(serve.proc.pid, signal.SIGHUP)
        ck.check(wait_for_log(serve, 'reattached'), 'table: put back, the next reload takes the mount over',
                 serve.log_text()[-3000:])
        after = Reader(os.path.join(mnt, 'after'), content['after'])
        after.run()
        ck.check(after.result == 'ok', 'table: a cold file read after it has its bytes', '%s\n%s' % (after.result, serve.log_text()[-3000:]))
    finally:
        code = serve.stop(signal.SIGTERM, timeout=60) if serve.proc and serve.proc.poll() is None else None
        log('table: rafsd serve exit %s' % code)
        if os.path.ismount(mnt):
            subprocess.run(['umount', '-l', mnt])


def case_hangup(ck, rafsd, image, content, tmp):
    mnt, m = slow_mount(rafsd, image, tmp, 'hangup', FETCH_DELAY_MS, SessionMount)
    with m:
        if not ck.check(m.start(), 'hangup: rafsd mounted the image', m.log_text()[-2000:]):
            return
        # Open before the hangup, read after it: rafsd keeps the detached mount answering until the
        # file is closed (test_rafsd_sigterm), then exits.
        held = Reader(os.path.join(mnt, 'hup'), content['hup'], hold=True)
        os.killpg(m.proc.pid, signal.SIGHUP)
        held.start()
        held.join(READ_TIMEOUT)
        ck.check(held.result == 'ok' or (held.result or '').startswith('error'),
                 'hangup: the file held open gives its bytes or an error, never zeros', str(held.result))
        try:
            code = m.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            code = None
        ck.check(code == 0, 'hangup: rafsd mount exits 0 on SIGHUP to its process group', m.log_text()[-2000:])
        ck.check(not os.path.ismount(mnt), 'hangup: the mount is gone, not left to read holes')


def main():
    return run_slow_cases('rafsd_reload', __doc__, FILES, 13, [
        ('upgrade: the binary replaced, SIGHUP', case_upgrade_and_refusals),
        ('rollback: the new program fails after the check',
         lambda *a: case_rollback(*a, 'rollback', break_binary, 'this build breaks at start')),
        ('rollback: the new program\'s workers fail before they serve',
         lambda *a: case_rollback(*a, 'rollback-workers', break_workers, 'times since the reload')),
        ('under systemd, the new program\'s workers fail, then start', case_workers_fail_under_systemd),
        ('hangup of rafsd mount', lambda ck, rafsd, ctl, *rest: case_hangup(ck, rafsd, *rest)),
        ('a reload with the mount table damaged, then put back', case_table_restored),
    ])


if __name__ == '__main__':
    sys.exit(main())
