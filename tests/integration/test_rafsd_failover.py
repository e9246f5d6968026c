#!/usr/bin/env python3
"""fanotify mounts fail closed when rafsd dies (prefetch off, every backend read delayed, so that
readers are waiting on cold data when the kill comes):

1. worker: `rafsd mount --engine fanotify`; 8 readers wait on cold files and one more file is held
   open; kill -9 the worker. The supervisor's next worker takes the group over, answers the events
   the dead one read (the kernel keeps them pending), and every read completes with the right bytes.
   Then the case a user met: an 8 MiB file never read, kill -9 of the worker, `cat` of it: the
   file's bytes, never zeros.
   Then a takeover that fails (the bootstrap moved away, the worker killed): the supervisor keeps
   the group and starts worker after worker (a release would allow the reads of holes); a reader
   of an unread file waits meanwhile, and once the bootstrap is back a worker takes over and the
   reader gets the file's bytes.
   Then a stop while no worker can take over (the bootstrap gone again, the supervisor waiting
   between attempts): a reader waits on an unread file; the bootstrap comes back and SIGINT comes
   at once. The supervisor starts one more worker to unmount, rather than release the group with
   the mount up (which would hand the waiting reader zeros): the reader gets its bytes or an
   error, rafsd exits 0 and the mount is gone.
2. supervisor: kill -9 of the supervisor alone changes nothing for readers; the worker serves on.
3. service: `rafsd serve` under a test playing systemd's fd store; rafsctl mounts an image; readers
   wait; the whole rafsd (supervisor and worker) is killed; the restarted rafsd gets the group,
   the journal and the cache files from LISTEN_FDS, reattaches the mount from its state dir, and
   every read completes with the right bytes.
   Then a takeover that fails after the mounts were taken over (the control socket's path taken by
   a file, the worker killed): the failing workers leave the mount and the state dir's table of it
   as they are (unwinding would unmount it and empty the table, so no later worker or rafsd could
   take it over); a reader of an unread file waits, and once the path is free a worker serves it.
   Then `rafsctl list` right after a worker died (the next one not yet listening) waits for the
   next worker instead of failing with "connection refused".
   Then a mount one worker cannot take over while it serves (its bootstrap moved away, the worker
   killed): the next worker serves on, and the mount's reads fail (EIO) rather than read holes;
   once the bootstrap is back, that worker takes it over (it tries again with a growing delay) and
   an unread file reads right. Moved away again and the worker killed, a stop unmounts the mount
   no worker serves, rather than leave it up to read zeros once rafsd is gone.

4. no fd store: `rafsd serve` killed whole where nothing holds the group, the one case the design
   leaves (every holder gone at once). The kernel lets reads of holes through meanwhile: a file read
   then reads zeros. A rafsd restarted with another cache_dir (a changed config) refuses to take
   the mount over, naming the cache file that is not the mount's, rather than mark new files the
   mount never reads and call it served; killed whole in turn, it leaves the mount listed. The
   rafsd restarted with the old config takes the mount over with its new group and drops the
   mount's page cache: that file, one never read and one read before the kill all read right.

5. full state dir: the worker killed while the state dir's file system has no block left. The next
   worker takes the mount over and serves it although it cannot rewrite the mount table (it logs
   that), and a stop unmounts; before, every worker died on the table and the reads hung.

No reader ever sees zeros or wrong bytes but in case 4 between the kill and the restart, and none
gets an error but the reader of the mount no worker serves.
"""

import os
import re
import signal
import subprocess
import sys
import time

from rafstest import harness
from rafstest.fdstore import FdStore
from rafstest.rafsd import BackgroundServe, RafsdServe, worker_of, write_config
from rafstest.readers import READ_TIMEOUT, Reader, read_all, run_slow_cases, slow_mount

MiB = 1 << 20
FILES = [('r%d' % i, 2 * MiB + 4096 * i) for i in range(8)] + [('held', 2 * MiB), ('big', 8 * MiB), ('late', 3 * MiB),
                                                              ('stop', 3 * MiB), ('bind', 3 * MiB)]
HOLDING = 'readers wait rather than read holes'  # the supervisor's log line between attempts
FETCH_DELAY_MS = 1500


def case_worker(ck, rafsd, image, content, tmp):
    mnt, m = slow_mount(rafsd, image, tmp, 'worker', FETCH_DELAY_MS)
    with m:
        if not ck.check(m.start(), 'worker: rafsd mounted the image', m.log_text()[-2000:]):
            return
        first = worker_of(m.proc.pid)
        held = Reader(os.path.join(mnt, 'held'), content['held'], hold=True)
        read_all(ck, mnt, content, ['r%d' % i for i in range(8)], lambda: os.kill(first, signal.SIGKILL),
                 'worker killed', held, FETCH_DELAY_MS)
        second = worker_of(m.proc.pid)
        ck.check(second != first and m.proc.poll() is None, 'worker: the supervisor started another worker')
        text = m.log_text()
        ck.check('failover' in text, 'worker: the log says failover')
        ck.check('answering' in text and 'every orphaned event answered' in text,
                 'worker: the new worker answered the events the dead one left', text[-3000:])
        # The user's case: a file never read, the worker killed, then cat.
        os.kill(second, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and worker_of(m.proc.pid) == second:
            time.sleep(0.05)
        r = subprocess.run(['cat', os.path.join(mnt, 'big')], stdout=subprocess.PIPE, timeout=READ_TIMEOUT)
        ck.check(r.returncode == 0 and r.stdout == content['big'],
                 'worker: cat of an unread 8 MiB file after kill -9 gives its bytes',
                 'exit %d, %s' % (r.returncode, 'zeros' if r.stdout == bytes(len(r.stdout)) else 'differs'))
        # A takeover that cannot work until the bootstrap is back.
        third = worker_of(m.proc.pid)
        moved = image['boot'] + '.away'
        os.rename(image['boot'], moved)
        try:
            os.kill(third, signal.SIGKILL)
            late = Reader(os.path.join(mnt, 'late'), content['late'])
            late.start()
            time.sleep(4)
            ck.check(late.is_alive() and late.result is None and m.proc.poll() is None,
                     'worker: while no worker can take over, the supervisor holds the group and the reader waits',
                     'reader %s, supervisor %s' % (late.result, m.proc.poll()))
        finally:
            os.rename(moved, image['boot'])
        late.join(READ_TIMEOUT)
        ck.check(late.result == 'ok', 'worker: once the bootstrap is back, a worker takes over and the reader '
                 'gets the bytes', '%s\n%s' % (late.result, m.log_text()[-2000:]))
        stop_while_holding(ck, m, mnt, image, content)


def long_pause(log_text, seen):
    """Whether a pause between attempts of 4 s or more was logged after the first `seen`."""
    lines = [line for line in log_text.splitlines() if HOLDING in line][seen:]
    return any(int(m.group(1)) >= 4 for m in (re.search(r'another worker in (\d+) s', line) for line in lines) if m)


def stop_while_holding(ck, m, mnt, image, content):
    moved = image['boot'] + '.away'
    holding = m.log_text().count(HOLDING)
    os.rename(image['boot'], moved)
    try:
        os.kill(worker_of(m.proc.pid), signal.SIGKILL)
        # The pause between attempts doubles from 1 s: the stop must come within one, so wait for
        # one of 4 s or more.
        harness.wait_for(lambda: long_pause(m.log_text(), holding), timeout=60, interval=0.02)
        waiting = Reader(os.path.join(mnt, 'stop'), content['stop'])
        waiting.start()
        held = ck.check(long_pause(m.log_text(), holding), 'worker: no worker can take over, the supervisor '
                        'holds the group between attempts', m.log_text()[-2000:])
    finally:
        os.rename(moved, image['boot'])
    if not held:
        return
    code = m.stop()
    waiting.join(READ_TIMEOUT)
    text = m.log_text()
    ck.check('one more worker takes the mounts over' in text, 'worker: the stop came while the supervisor held the '
             'group', text[-2000:])
    ck.check(waiting.result is not None and not waiting.result.startswith(('zeros', 'wrong')),
             'worker: the reader waiting at the stop got its bytes or an error, never zeros (%s)' % waiting.result)
    ck.check(code == 0, 'worker: SIGINT then stops rafsd with exit 0', 'exit %s\n%s' % (code, text[-2000:]))
    ck.check(not os.path.ismount(mnt), 'worker: the mount is gone')


def case_supervisor(ck, rafsd, image, content, tmp):
    mnt, m = slow_mount(rafsd, image, tmp, 'supervisor', FETCH_DELAY_MS)
    with m:
        if not ck.check(m.start(), 'supervisor: rafsd mounted the image', m.log_text()[-2000:]):
            return
        worker = worker_of(m.proc.pid)
        read_all(ck, mnt, content, ['r%d' % i for i in range(4)], m.proc.kill, 'supervisor killed',
                 wait_ms=FETCH_DELAY_MS)
        m.proc.wait()
        ck.check(os.path.exists('/proc/%d' % worker), 'supervisor: the worker serves on alone')
        # The worker is no child of ours: stop it by its pid and wait for the mount to go.
        os.kill(worker, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and os.path.exists('/proc/%d' % worker):
            time.sleep(0.05)
        ck.check(not os.path.exists('/proc/%d' % worker), 'supervisor: the worker stops on SIGTERM')
        ck.check(not os.path.ismount(mnt), 'supervisor: the worker unmounted on SIGTERM')


def serve_setup(tmp, name, state):
    """A `rafsd serve` case's mount point, control socket and config (fanotify, prefetch off, no
    amplification), all named after `name`, its state dir tmp/STATE."""
    mnt = os.path.join(tmp, 'mnt-' + name)
    os.makedirs(mnt)
    sock = os.path.join(tmp, name + '.sock')
    config = write_config(os.path.join(tmp, name + '.toml'),
                          daemon={'socket': sock, 'cache_dir': os.path.join(tmp, 'cache-' + name),
                                  'state_dir': os.path.join(tmp, state), 'engine': 'fanotify'},
                          prefetch={'enable': False}, fetch={'amplify': 0})
    return mnt, sock, config


def case_service(ck, rafsd, rafsctl, image, content, tmp):
    mnt, sock, config = serve_setup(tmp, 'service', 'state')
    argv = [rafsd, 'serve', '--config', config, '--test-fetch-delay', str(FETCH_DELAY_MS)]
    log_path = os.path.join(tmp, 'serve.log')
    store = FdStore()
    first = second = None
    try:
        first = BackgroundServe(argv, log_path, store.env())
        first.start()
        if not ck.check(store.wait_for('READY=1'), 'service: rafsd serve said READY=1', first.log_text()[-2000:]):
            return
        r = subprocess.run([rafsctl, '--socket', sock, 'mount', '--blob-dir', image['blobs'], image['boot'], mnt],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        if not ck.check(r.returncode == 0, 'service: rafsctl mount', r.stdout.decode() + first.log_text()[-2000:]):
            return
        time.sleep(0.3)
        names = store.names()
        # The cache file under its identity (KeptCacheFiles.h: short names, for systemd's 128 KiB
        # LISTEN_FDNAMES), which must be the file the image's blob is cached in.
        with store.lock:
            cache_files = [os.readlink('/proc/self/fd/%d' % fd) for n, fd in store.fds.items()
                           if re.fullmatch(r'c[0-9a-f]+-[0-9a-f]+', n)]
        blob_ids = [f.split('.')[0] for f in os.listdir(image['blobs'])]
        ck.check('fanotify' in names and 'fanotify-journal' in names and len(cache_files) == 1 and
                 os.path.basename(cache_files[0]) in [i + '.blob.data' for i in blob_ids] and
                 len(max(names, key=len)) <= 24,
                 'service: the group, the journal and the cache file are in the fd store, under short names',
                 '%s: %s' % (names, cache_files))
        worker = worker_of(first.proc.pid)

        def kill_all():
            nonlocal second
            first.proc.kill()
            os.kill(worker, signal.SIGKILL)
            first.proc.wait()
            time.sleep(0.5)
            restart, fds = store.restart_argv(argv)
            second = BackgroundServe(restart, log_path, store.env(), pass_fds=fds)
            second.start()
        read_all(ck, mnt, content, ['r%d' % i for i in range(8)], kill_all, 'service killed whole',
                 wait_ms=FETCH_DELAY_MS)
        text = second.log_text()
        ck.check('taken from systemd' in text and 'reattached' in text and 'every orphaned event answered' in text,
                 'service: the restarted rafsd took the fds over, reattached the mount, answered the orphans',
                 text[-3000:])
        socket_taken(ck, second, mnt, sock, os.path.join(tmp, 'state'), content)
        rafsctl_between_workers(ck, second, rafsctl, sock)
        moved = image['boot'] + '.away'
        bootstrap_gone(ck, second, mnt, image['boot'], moved, content)
        ck.check(second.stop(signal.SIGTERM, timeout=60) == 0, 'service: SIGTERM stops the restarted rafsd, exit 0')
        ck.check(not os.path.ismount(mnt), 'service: the mount is gone (also one no worker served)',
                 second.log_text()[-2000:])
    finally:
        if os.path.exists(image['boot'] + '.away'):
            os.rename(image['boot'] + '.away', image['boot'])
        for d in (first, second):
            if d is not None and d.proc is not None and d.proc.poll() is None:
                d.proc.kill()
                d.proc.wait()
        store.close()
        if os.path.ismount(mnt):
            subprocess.run(['umount', '-l', mnt])


def case_no_store(ck, rafsd, rafsctl, image, content, tmp):
    mnt, sock, config = serve_setup(tmp, 'nostore', 'state-nostore')
    argv = [rafsd, 'serve', '--config', config]
    log_path = os.path.join(tmp, 'nostore.log')
    env = {k: v for k, v in os.environ.items() if k not in ('NOTIFY_SOCKET', 'LISTEN_FDS', 'LISTEN_PID')}
    first = second = None

    def read(name):
        r = subprocess.run(['cat', os.path.join(mnt, name)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=READ_TIMEOUT)
        if r.returncode != 0:
            return 'exit %d: %s' % (r.returncode, r.stderr.decode().strip())
        if r.stdout == content[name]:
            return 'ok'
        return 'zeros' if r.stdout == bytes(len(r.stdout)) else 'wrong bytes'

    def started(serve):
        return harness.wait_for(lambda: serve.proc.poll() is None and os.path.exists(sock) and
                                subprocess.run([rafsctl, '--socket', sock, 'list'], capture_output=True).returncode == 0,
                                timeout=30)
    try:
        first = BackgroundServe(argv, log_path, env)
        first.start()
        if not ck.check(started(first), 'no store: rafsd serve answers', first.log_text()[-2000:]):
            return
        r = subprocess.run([rafsctl, '--socket', sock, 'mount', '--blob-dir', image['blobs'], image['boot'], mnt],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        if not ck.check(r.returncode == 0, 'no store: rafsctl mount', r.stdout.decode() + first.log_text()[-2000:]):
            return
        ck.check(read('r0') == 'ok', 'no store: a file reads right before the kill')
        worker = worker_of(first.proc.pid)
        first.proc.kill()
        os.kill(worker, signal.SIGKILL)
        first.proc.wait()
        harness.wait_for(lambda: not os.path.exists('/proc/%d' % worker), timeout=30)
        ck.check(read('r1') == 'zeros', 'no store: with every holder of the group gone, the kernel lets a read of '
                 'holes through (the case the design leaves): zeros')
        moved = write_config(os.path.join(tmp, 'nostore-moved.toml'),
                             daemon={'socket': sock, 'cache_dir': os.path.join(tmp, 'cache-nostore-moved'),
                                     'state_dir': os.path.join(tmp, 'state-nostore'), 'engine': 'fanotify'},
                             prefetch={'enable': False}, fetch={'amplify': 0})
        wrong = BackgroundServe([rafsd, 'serve', '--config', moved], os.path.join(tmp, 'nostore-moved.log'), env)
        wrong.start()
        try:
            if ck.check(started(wrong), 'no store: rafsd serve with another cache_dir answers', wrong.log_text()[-2000:]):
                # Past its first retry of the mounts it could not take over (a second after the start).
                harness.wait_for(lambda: 'still cannot take it over' in wrong.log_text(), timeout=30)
                text = wrong.log_text()
                listed = subprocess.run([rafsctl, '--socket', sock, 'list'], capture_output=True, text=True).stdout
                ck.check('still cannot take it over' in text and 'is not the cache file the mount reads' in text
                         and "taken over by this rafsd's group" not in text and 'reattached' not in text
                         and 'taken over, after no worker could' not in text,
                         'no store: with another cache_dir the mount is not taken over, and rafsd says why', text[-2000:])
                ck.check(read('r2') == 'zeros', 'no store: (nothing serves it: an unread file reads zeros)')
                harness.log('  rafsctl list: %r' % listed)
        finally:
            worker = worker_of(wrong.proc.pid) if wrong.proc.poll() is None else None
            wrong.proc.kill()
            if worker:
                os.kill(worker, signal.SIGKILL)
            wrong.proc.wait()
            if worker:
                harness.wait_for(lambda: not os.path.exists('/proc/%d' % worker), timeout=30)
        second = BackgroundServe(argv, log_path, env)
        second.start()
        if not ck.check(started(second), 'no store: a new rafsd serve answers', second.log_text()[-2000:]):
            return
        text = second.log_text()
        ck.check("taken over by this rafsd's group" in text, 'no store: the new rafsd took the mount over, saying '
                 'what readers saw meanwhile', text[-2000:])
        for name, what in (('r1', 'the file read as zeros meanwhile'), ('big', 'a file never read'),
                           ('r0', 'a file read before the kill')):
            got = read(name)
            ck.check(got == 'ok', 'no store: %s reads right' % what, got)
        ck.check(second.stop(signal.SIGTERM, timeout=60) == 0, 'no store: SIGTERM stops the new rafsd, exit 0',
                 second.log_text()[-2000:])
        ck.check(not os.path.ismount(mnt), 'no store: the mount is gone')
    finally:
        for d in (first, second):
            if d is not None and d.proc is not None and d.proc.poll() is None:
                d.proc.kill()
                d.proc.wait()
        if os.path.ismount(mnt):
            subprocess.run(['umount', '-l', mnt])


def socket_taken(ck, serve, mnt, sock, state_dir, content):
    """Workers of `serve` that take the mount over and then fail (the control socket's path is a
    file) leave it up, and the table, for the worker that can serve."""
    table = os.path.join(state_dir, 'mounts.json')
    listed = lambda: os.path.exists(table) and mnt in harness.read_text(table)
    if not ck.check(listed(), 'service: the state dir lists the mount', table):
        return
    # Stopped, the supervisor starts the next worker only once the file is in place.
    os.kill(serve.proc.pid, signal.SIGSTOP)
    try:
        os.kill(worker_of(serve.proc.pid), signal.SIGKILL)
        os.unlink(sock)
        open(sock, 'w').close()
    finally:
        os.kill(serve.proc.pid, signal.SIGCONT)
    waiting = Reader(os.path.join(mnt, 'bind'), content['bind'])
    try:
        failed = harness.wait_for(lambda: serve.log_text().count('is not a socket') >= 2, timeout=60)
        ck.check(failed and os.path.ismount(mnt) and listed() and serve.proc.poll() is None,
                 'service: workers that fail after the takeover leave the mount and its table as they are',
                 'mounted %s, listed %s\n%s' % (os.path.ismount(mnt), listed(), serve.log_text()[-2000:]))
        waiting.start()
        time.sleep(1)
        ck.check(waiting.is_alive() and waiting.result is None, 'service: meanwhile a reader of an unread file waits',
                 str(waiting.result))
    finally:
        os.unlink(sock)
    waiting.join(READ_TIMEOUT)
    ck.check(waiting.result == 'ok', 'service: once the path is free, a worker takes over and the reader gets the '
             'bytes', '%s\n%s' % (waiting.result, serve.log_text()[-2000:]))


def rafsctl_between_workers(ck, serve, rafsctl, sock):
    """rafsctl right after a worker died, before the next one listens (the supervisor held
    stopped meanwhile): the socket refuses connections, and rafsctl waits for the next worker
    rather than say that rafsd is not running."""
    os.kill(serve.proc.pid, signal.SIGSTOP)
    try:
        worker = worker_of(serve.proc.pid)
        os.kill(worker, signal.SIGKILL)
        harness.wait_for(lambda: harness.read_text('/proc/%d/stat' % worker).split(') ')[-1].startswith('Z'),
                         timeout=10)
        listing = subprocess.Popen([rafsctl, '--socket', sock, 'list'], stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT)
        time.sleep(1)
        waited = listing.poll() is None
    finally:
        os.kill(serve.proc.pid, signal.SIGCONT)
    out, _ = listing.communicate(timeout=60)
    ck.check(waited and listing.returncode == 0, 'service: rafsctl list between two workers waits for the next one',
             '%s, exit %s: %s' % ('waited' if waited else 'did not wait', listing.returncode, out.decode()))


def bootstrap_gone(ck, serve, mnt, boot, moved, content):
    """A worker of `serve` that cannot take the mount over (its bootstrap gone) serves on; the
    mount's reads fail meanwhile, and the worker takes it over once the bootstrap is back. Ends with
    the bootstrap moved away again and the mount unserved, for the stop."""
    def unserved():
        # recoverMounts' own line (the retries say "still cannot take it over").
        failed = lambda: serve.log_text().count(': cannot take it over: ')
        before = failed()
        os.rename(boot, moved)
        os.kill(worker_of(serve.proc.pid), signal.SIGKILL)
        return harness.wait_for(lambda: failed() > before, timeout=60)

    if not ck.check(unserved(), 'service: the next worker cannot take the mount over (bootstrap gone)',
                    serve.log_text()[-2000:]):
        return
    failing = Reader(os.path.join(mnt, 'late'), content['late'])
    failing.start()
    failing.join(READ_TIMEOUT)
    ck.check(failing.result is not None and failing.result.startswith('error') and 'Input/output' in failing.result,
             'service: meanwhile a read of the unserved mount fails (EIO), never zeros', str(failing.result))
    denied = re.search(r'fanotify event for a file not served \((\S+), dev', serve.log_text())
    ck.check(denied is not None and os.path.basename(os.path.dirname(denied.group(1))).startswith('cache-'),
             'service: the denial names the cache file', serve.log_text()[-2000:])
    os.rename(moved, boot)
    ck.check(harness.wait_for(lambda: 'taken over, after no worker could' in serve.log_text(), timeout=60),
             'service: once the bootstrap is back, the worker takes the mount over', serve.log_text()[-2000:])
    reader = Reader(os.path.join(mnt, 'stop'), content['stop'])
    reader.start()
    reader.join(READ_TIMEOUT)
    ck.check(reader.result == 'ok', 'service: then an unread file reads right', str(reader.result))
    ck.check(unserved(), 'service: the bootstrap moved away again, the next worker cannot take the mount over',
             serve.log_text()[-2000:])


def fill(directory):
    """Writes into `directory` until its file system has no block left (bounded in rounds). ext4
    reserves delayed-allocation blocks by a worst case and gives back what the fsync did not use,
    and near the end it may refuse a write that needs an extent block beside its data block: the
    file is topped up, then small new files (extents in their inodes) take what is left."""
    def write_until_full(path, size):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for _ in range(1 << 12):
                try:
                    if os.write(fd, bytes(size)) < size:
                        break
                except OSError:
                    break
            try:
                os.fsync(fd)
            except OSError:
                pass  # what could not be allocated is dropped: statvfs says what is left
        finally:
            os.close(fd)

    write_until_full(os.path.join(directory, 'filler'), 1 << 20)
    for i in range(16):
        if os.statvfs(directory).f_bavail == 0:
            return
        write_until_full(os.path.join(directory, 'filler' if i < 2 else 'filler-%d' % i), 4096)


def case_full_state(ck, rafsd, rafsctl, image, content, tmp):
    with harness.small_disk(ck, tmp, 'state-disk') as disk:
        if disk is None:
            return
        mnt, sock, config = serve_setup(tmp, 'full-state', os.path.join('state-disk', 'state'))
        with RafsdServe(rafsd, config, sock, os.path.join(tmp, 'full-state.log'),
                        ['--test-fetch-delay', str(FETCH_DELAY_MS)]) as srv:
            if not ck.check(srv.start(), 'full state dir: rafsd serve starts', srv.log_text()[-2000:]):
                return
            r = subprocess.run([rafsctl, '--socket', sock, 'mount', '--blob-dir', image['blobs'], image['boot'], mnt],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
            if not ck.check(r.returncode == 0, 'full state dir: rafsctl mount', r.stdout.decode()):
                return
            fill(disk)
            free = os.statvfs(disk).f_bavail
            ck.check(free == 0, 'full state dir: no block left on its file system', '%d blocks free' % free)
            read_all(ck, mnt, content, ['r0', 'r1'], lambda: os.kill(worker_of(srv.proc.pid), signal.SIGKILL),
                     'worker killed, the state dir full', wait_ms=FETCH_DELAY_MS)
            text = srv.log_text()
            ck.check('serving the mounts taken over all the same' in text,
                     'full state dir: the table it could not write is logged, and the worker serves on', text[-2000:])
            code = srv.stop()
            ck.check(code == 0 and not os.path.ismount(mnt), 'full state dir: a stop unmounts and exits 0',
                     'exit %s\n%s' % (code, srv.log_text()[-2000:]))


def main():
    return run_slow_cases('rafsd_failover', __doc__, FILES, 11, [
        ('kill -9 of the worker', lambda ck, rafsd, ctl, *rest: case_worker(ck, rafsd, *rest)),
        ('kill -9 of the supervisor alone', lambda ck, rafsd, ctl, *rest: case_supervisor(ck, rafsd, *rest)),
        ('rafsd serve killed whole, restarted with the fds from the fd store', case_service),
        ('rafsd serve killed whole without an fd store, restarted', case_no_store),
        ('kill -9 of the worker with the state dir full', case_full_state),
    ])


if __name__ == '__main__':
    sys.exit(main())
