#!/usr/bin/env python3
"""SIGTERM to rafsd mount while 8 readers are busy on cold data (fanotify engine, prefetch off,
every backend read delayed so that reads are waiting for fetches when the signal comes):

1. rafsd exits 0, promptly (bounded by a timeout, no hang);
2. the mount is gone;
3. no reader ever got wrong bytes: every read either returned the source's bytes or failed with
   an error (in particular never zeros from a cache-file hole, which is what a fanotify group
   closed under a live mount gives);
4. the readers saw both: data before the signal, errors (or the mount gone) after it.

Each reader keeps going after an error, file after file, until opening fails because the mount
is gone: the harshest reader for a daemon that must not leave holes readable. One more reader
opens a file before the signal and reads it only a second after: rafsd must keep the (by then
detached) mount served until that file is closed or the mount's cache files are complete, and only
then exit; the late read gets its bytes or an error, never zeros.

5. A file held open for longer than rafsd waits (a container that goes on running): rafsd fills
   the mount's cache files before it closes the fanotify group, and that file, read only after
   rafsd has exited, returns its bytes, not the zeros of a cache-file hole.
6. The same when the blobs cannot be fetched any more: rafsd says so in one line and exits.
7. One `rafsd serve` with the image mounted twice (two bootstraps, one blob: one cache file
   shared by two superblocks): a file held open on the first, the second idle. Unmounting the second closes the shared file too, which must not pass
   for the first mount's last close: the held file, read after rafsd has exited, has its bytes.
8. `rafsd serve` stopped while a file is held open and the blobs cannot be fetched (a registry
   down, a full cache disk at `systemctl stop`): rafsd exits 1 naming the mount, which stays on its
   path and in the mount table; the next `rafsd serve`, the blobs back, takes it over, and the held
   file, read only then, has its bytes (before, the mount was detached and forgotten, and the
   container read zeros for good).
"""

import errno
import os
import shutil
import signal
import sys
import threading
import time

from rafstest import harness
from rafstest.harness import log
from rafstest.mount import umount
from rafstest.rafsd import (RafsdMount, RafsdServe, make_small_tree, network_config, rafsctl, rafsctl_mount,
                            start_test, write_config)

MiB = 1 << 20
FILES = [('f%02d' % i, 4 * MiB + 1000 * i) for i in range(16)] + [('zz-hold', 4 * MiB)]
HOLD = 'zz-hold'  # read by the holder only
HOLD_SECONDS = 1.0
READERS = 8
PIECE = 256 * 1024
FETCH_DELAY_MS = 150
STOP_TIMEOUT = 30  # rafsd must have exited by then
READERS_TIMEOUT = 60


class Holder(threading.Thread):
    """Opens HOLD now; HOLD_SECONDS after `signalled` is set, reads a cold range of it, then closes."""

    def __init__(self, mnt, data, signalled):
        super().__init__(daemon=True)
        self.fd = os.open(os.path.join(mnt, HOLD), os.O_RDONLY)
        self.data, self.signalled = data, signalled
        self.result = None

    def run(self):
        self.signalled.wait()
        time.sleep(HOLD_SECONDS)
        off = 2 * MiB + 8192
        try:
            got = os.pread(self.fd, 4096, off)
            if got == self.data[off:off + len(got)] and got:
                self.result = 'data'
            else:
                self.result = 'zeros' if got == bytes(len(got)) else 'wrong bytes'
        except OSError as e:
            self.result = 'error %s' % errno.errorcode.get(e.errno, e.errno)
        finally:
            os.close(self.fd)


class Reader(threading.Thread):
    def __init__(self, n, mnt, content, stop):
        super().__init__(daemon=True)
        self.n, self.mnt, self.content, self.stop_flag = n, mnt, content, stop
        self.good = 0
        self.errors = {}
        self.wrong = []  # (file, offset, length, how)
        self.done_reason = None

    def run(self):
        names = sorted(n for n in self.content if n != HOLD)
        i = self.n * 2
        t_end = time.monotonic() + READERS_TIMEOUT
        while time.monotonic() < t_end:
            name = names[i % len(names)]
            i += 1
            try:
                fd = os.open(os.path.join(self.mnt, name), os.O_RDONLY)
            except OSError as e:
                if self.stop_flag.is_set():
                    self.done_reason = 'open: %s' % e.strerror
                    return
                self.errors[e.errno] = self.errors.get(e.errno, 0) + 1
                time.sleep(0.01)
                continue
            try:
                data = self.content[name]
                # Readers start at different offsets so their ranges differ, and all are cold.
                off = (self.n * 3 * PIECE) % len(data)
                while off < len(data):
                    try:
                        got = os.pread(fd, PIECE, off)
                    except OSError as e:
                        self.errors[e.errno] = self.errors.get(e.errno, 0) + 1
                        break
                    if not got:
                        self.wrong.append((name, off, 0, 'end of file before the end'))
                        break
                    # A short read is fine, if what it returned is right.
                    want = data[off:off + len(got)]
                    if got == want:
                        self.good += 1
                    elif got == bytes(len(got)):
                        self.wrong.append((name, off, len(got), 'zeros'))
                    else:
                        self.wrong.append((name, off, len(got), 'differs'))
                    off += len(got)
            finally:
                os.close(fd)
        self.done_reason = 'timeout'


def check_after_exit(ck, name, fd, data, log_text):
    """The held file `fd`, read whole once rafsd has exited, must have its bytes (`data`)."""
    got = b''
    while len(got) < len(data):
        piece = os.pread(fd, PIECE, len(got))
        if not piece:
            break
        got += piece
    wrong = [i for i in range(0, len(data), 4096) if got[i:i + 4096] != data[i:i + 4096]]
    zeros = [i for i in wrong if got[i:i + 4096] == bytes(len(got[i:i + 4096]))]
    ck.check(not wrong, '%s: the held file, read after rafsd exited, has its bytes' % name,
             '%d of %d blocks wrong, %d of them zeros\n%s' % (len(wrong), len(data) // 4096, len(zeros),
                                                             log_text[-2000:]))


def held_past_stop(ck, rafsd, tmp, out, content, name, blobs_gone):
    """Parts 5 and 6: SIGTERM while a file stays open past rafsd's stop; its reads after the exit."""
    mnt = os.path.join(tmp, name)
    os.makedirs(mnt)
    config = write_config(os.path.join(tmp, name + '.toml'), prefetch={'enable': False}, fetch={'amplify': 0})
    blob_dir = os.path.join(tmp, name + '-blobs')
    shutil.copytree(os.path.join(out, 'blobs'), blob_dir)
    m = RafsdMount(rafsd, os.path.join(out, 'image.boot'), mnt, blob_dir=blob_dir,
                   cache_dir=os.path.join(tmp, name + '-cache'), config=config)
    with m:
        if not ck.check(m.start(), '%s: rafsd mounted the image' % name, m.log_text()[-2000:]):
            return
        data = content[HOLD]
        fd = os.open(os.path.join(mnt, HOLD), os.O_RDONLY)
        try:
            ck.check(os.pread(fd, 4096, 0) == data[:4096], '%s: the held file reads before the stop' % name)
            if blobs_gone:
                shutil.rmtree(blob_dir)
            code = m.stop(sig=signal.SIGTERM, timeout=STOP_TIMEOUT + 60)
            ck.check(code is not None, '%s: rafsd exits with a file still open (exit %s)' % (name, code))
            text = m.log_text()
            if blobs_gone:
                ck.check('cache files not complete' in text, '%s: rafsd says it could not fill the busy mount' % name,
                         text[-2000:])
                return
            ck.check(code == 0, '%s: rafsd exits 0' % name, text[-2000:])
            ck.check('every cache file is complete' in text, '%s: rafsd filled the busy mount\'s cache files' % name,
                     text[-2000:])
            check_after_exit(ck, name, fd, data, text)
        finally:
            os.close(fd)


def shared_blob_held(ck, rafsd, ctl, tmp, out, content):
    """Part 7: two mounts of one image in one rafsd serve, a file held open on the first."""
    sock = os.path.join(tmp, 'shared.sock')
    config = network_config(tmp, 'shared', fetch={'amplify': 0})
    mnts = [os.path.join(tmp, 'shared-%d' % i) for i in (1, 2)]
    for mnt in mnts:
        os.makedirs(mnt)
    try:
        with RafsdServe(rafsd, config, sock, os.path.join(tmp, 'shared.log')) as srv:
            if not ck.check(srv.start(), 'shared: rafsd serve answers', srv.log_text()[-2000:]):
                return
            # The second from a copy of the bootstrap: a superblock of its own (the same file mounted
            # twice shares one), on the same blob's cache file.
            boots = [os.path.join(out, 'image.boot'), os.path.join(tmp, 'shared-copy.boot')]
            shutil.copyfile(boots[0], boots[1])
            for mnt, boot in zip(mnts, boots):
                if not rafsctl_mount(ck, ctl, sock, os.path.join(out, 'blobs'), boot, mnt,
                                     'shared: rafsctl mount on %s' % mnt):
                    return
            data = content[HOLD]
            fd = os.open(os.path.join(mnts[0], HOLD), os.O_RDONLY)
            try:
                ck.check(os.pread(fd, 4096, 0) == data[:4096], 'shared: the held file reads before the stop')
                code = srv.stop(sig=signal.SIGTERM, timeout=STOP_TIMEOUT + 60)
                text = srv.log_text()
                ck.check(code == 0, 'shared: rafsd serve exits 0 with a file still open', 'exit %s\n%s' % (code, text[-2000:]))
                check_after_exit(ck, 'shared', fd, data, text)
            finally:
                os.close(fd)
    finally:
        for mnt in mnts:
            if os.path.ismount(mnt):
                umount(mnt)


def unfilled_serve_stop(ck, rafsd, ctl, tmp, out, content):
    """Part 8."""
    name = 'unfilled'
    mnt = os.path.join(tmp, name + '-mnt')
    os.makedirs(mnt)
    blob_dir = os.path.join(tmp, name + '-blobs')
    shutil.copytree(os.path.join(out, 'blobs'), blob_dir)
    config = network_config(tmp, name, fetch={'amplify': 0})
    sock = os.path.join(tmp, name + '.sock')
    fd = None
    try:
        with RafsdServe(rafsd, config, sock, os.path.join(tmp, name + '.log')) as srv:
            if not (ck.check(srv.start(), 'unfilled: rafsd serve answers', srv.log_text()[-2000:]) and
                    rafsctl_mount(ck, ctl, sock, blob_dir, os.path.join(out, 'image.boot'), mnt, 'unfilled: rafsctl mount')):
                return
            data = content[HOLD]
            fd = os.open(os.path.join(mnt, HOLD), os.O_RDONLY)
            ck.check(os.pread(fd, 4096, 0) == data[:4096], 'unfilled: the held file reads before the stop')
            shutil.rmtree(blob_dir)
            code = srv.stop(sig=signal.SIGTERM, timeout=STOP_TIMEOUT + 60)
            text = srv.log_text()
            ck.check(code == 1 and 'left mounted and in the mount table' in text,
                     'unfilled: rafsd serve exits 1, naming the mount it leaves', 'exit %s\n%s' % (code, text[-2000:]))
        ck.check(os.path.ismount(mnt), 'unfilled: the mount stays on its path')
        with open(os.path.join(tmp, name + '-state', 'mounts.json')) as f:
            ck.check(mnt in f.read(), 'unfilled: the mount table lists it')
        shutil.copytree(os.path.join(out, 'blobs'), blob_dir)
        with RafsdServe(rafsd, config, sock, os.path.join(tmp, name + '-again.log')) as srv:
            if not ck.check(srv.start(), 'unfilled: the next rafsd serve answers', srv.log_text()[-2000:]):
                return
            check_after_exit(ck, 'unfilled, taken over', fd, content[HOLD], srv.log_text())
            os.close(fd)
            fd = None
            r = rafsctl(ctl, sock, 'umount', mnt)
            ck.check(r.returncode == 0, 'unfilled: rafsctl umount once the file is closed', (r.stderr or b'').decode())
            ck.check(srv.stop() == 0, 'unfilled: that rafsd serve exits 0', srv.log_text()[-2000:])
    finally:
        if fd is not None:
            os.close(fd)
        if os.path.ismount(mnt):
            umount(mnt)


def main():
    args, mk, rafsd, ctl, ck = start_test('rafsd_sigterm', __doc__)
    with harness.temp_dir('rafsd-sigterm-', keep=args.keep) as tmp:
        src, out, mnt = (os.path.join(tmp, n) for n in ('src', 'out', 'mnt'))
        os.makedirs(mnt)
        content = make_small_tree(src, FILES, seed=3)
        if not ck.cmd_ok(mk.build(out, [src]), 'mkrafs build'):
            return ck.finish()
        config = write_config(os.path.join(tmp, 'config.toml'), prefetch={'enable': False},
                              fetch={'amplify': 0})
        m = RafsdMount(rafsd, os.path.join(out, 'image.boot'), mnt, blob_dir=os.path.join(out, 'blobs'),
                       cache_dir=os.path.join(tmp, 'cache'), config=config)
        m.cmd[2:2] = ['--test-fetch-delay', str(FETCH_DELAY_MS)]
        with m:
            if not ck.check(m.start(), 'rafsd mounted the image', m.log_text()[-2000:]):
                return ck.finish()
            stop = threading.Event()
            readers = [Reader(n, mnt, content, stop) for n in range(READERS)]
            holder = Holder(mnt, content[HOLD], stop)
            holder.start()
            for r in readers:
                r.start()
            time.sleep(1.5)
            good_before = sum(r.good for r in readers)
            log('%d good pieces read before SIGTERM' % good_before)
            stop.set()
            t0 = time.monotonic()
            code = m.stop(sig=signal.SIGTERM, timeout=STOP_TIMEOUT)
            dt = time.monotonic() - t0
            ck.check(code == 0, 'rafsd exits 0 on SIGTERM within %d s (%.1fs)' % (STOP_TIMEOUT, dt),
                     'exit %s' % code)
            ck.check(not os.path.ismount(mnt), 'the mount is gone')
            ck.check(dt >= HOLD_SECONDS * 0.9 or 'every cache file is complete' in m.log_text(),
                     'rafsd waited for the file held open, or filled what it reads first (%.1fs)' % dt)
            holder.join(10)
            ck.check(holder.result == 'data' or (holder.result or '').startswith('error'),
                     'the held file\'s late read got its bytes or an error, not zeros (%s)' % holder.result)
            for r in readers:
                r.join(READERS_TIMEOUT + 10)
            ck.check(not any(r.is_alive() for r in readers), 'every reader finished')
            wrong = [(r.n,) + w for r in readers for w in r.wrong]
            ck.diffs('reads that returned wrong bytes', ['reader %d: %s @%d+%d: %s' % w for w in wrong])
            good = sum(r.good for r in readers)
            errors = {}
            for r in readers:
                for e, n in r.errors.items():
                    errors[errno.errorcode.get(e, str(e))] = errors.get(errno.errorcode.get(e, str(e)), 0) + n
            log('pieces read correctly: %d; errors: %s; readers ended on: %s' %
                (good, errors, sorted(set(r.done_reason for r in readers))))
            ck.check(good_before > 0, 'readers got data before the signal')
            ck.check(all(r.done_reason and r.done_reason.startswith('open') for r in readers),
                     'every reader ended when the mount was gone')
            text = m.log_text()
            ck.check('cache files not complete' not in text, 'rafsd did not give up on the busy mount')
            if code != 0 or wrong:
                log(text[-3000:])
        held_past_stop(ck, rafsd, tmp, out, content, 'held', blobs_gone=False)
        held_past_stop(ck, rafsd, tmp, out, content, 'held-gone', blobs_gone=True)
        shared_blob_held(ck, rafsd, ctl, tmp, out, content)
        unfilled_serve_stop(ck, rafsd, ctl, tmp, out, content)
    return ck.finish()


if __name__ == '__main__':
    sys.exit(main())
