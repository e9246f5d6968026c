#!/usr/bin/env python3
"""A fanotify mount taken off its path while still in use is served until it is gone (rafsd serve,
prefetch off, so that what was not read is a hole of the cache file):

1. lazily detached: two files are held open, `umount -l`, then `rafsctl umount`: it says the mount
   is still in use and lists it as detached; the first held file then reads its bytes (before,
   rafsd unmarked the cache file at once and the file read zeros); a new mount on the same path
   works meanwhile, and the second held file reads its bytes too; once it is closed, rafsd forgets
   the detached mount.
2. a copy in another mount namespace (unshare -m after the mount): `rafsctl umount` unmounts the
   path, but the copy still reads the image: its files read their bytes, and once the namespace's
   last process is gone, rafsd forgets the mount.
3. a stop with such a mount: rafsd fills its cache files before it exits; the held file then reads
   its bytes without rafsd.
4. a reload, then a failover, with such mounts: one unmounted through rafsctl, then, after the
   reload, one unmounted by hand (umount -l) behind rafsd's back, each with a file held open and
   its directory removed. The new program, then after a kill -9 of its worker the next one, takes
   both over from the state dir's table and the kept superblock watches (before, a new worker denied their reads: EIO, and
   its stop let them read holes); the held files read their bytes; once they are closed, rafsd
   forgets both (the watches outlived the workers that made them).
"""

import contextlib
import os
import signal
import subprocess
import sys

from rafstest import harness
from rafstest.rafsd import RafsdServe, network_config, rafsctl, rafsctl_mount, worker_of
from rafstest.readers import READ_TIMEOUT, Reader, run_slow_cases

MiB = 1 << 20
FILES = [('held', 3 * MiB), ('held2', 2 * MiB + 4096), ('ns', 3 * MiB + 4096), ('stop', 3 * MiB + 8192), ('other', 2 * MiB),
         ('failover', 3 * MiB + 12288), ('failover2', 2 * MiB + 8192)]
STILL_IN_USE = 'still in use'


@contextlib.contextmanager
def served_mount(ck, rafsd, ctl, image, tmp, name):
    """`rafsd serve` (fanotify, prefetch off) with the image mounted by rafsctl on tmp/mnt-NAME:
    yields (the RafsdServe, its socket, the mountpoint), or None if either failed (reported); then
    checks that SIGTERM stops rafsd with exit 0, unless the case stopped it."""
    sock = os.path.join(tmp, name + '.sock')
    config = network_config(tmp, name, fetch={'amplify': 0})
    mnt = os.path.join(tmp, 'mnt-' + name)
    os.makedirs(mnt)
    with RafsdServe(rafsd, config, sock, os.path.join(tmp, name + '.log')) as srv:
        ok = ck.check(srv.start(), '%s: rafsd serve answers' % name, srv.log_text()[-2000:]) and \
            mount(ck, ctl, sock, image, mnt, name)
        yield (srv, sock, mnt) if ok else None
        if ok and srv.proc is not None:
            ck.check(srv.stop(signal.SIGTERM) == 0, '%s: rafsd stops with exit 0' % name)


def listed(ctl, sock):
    r = rafsctl(ctl, sock, 'list')
    return r.stdout.decode(errors='replace')


def mount(ck, ctl, sock, image, mnt, what):
    return rafsctl_mount(ck, ctl, sock, image['blobs'], image['boot'], mnt, '%s: rafsctl mount' % what)


def umount_still_in_use(ck, ctl, sock, mnt, what):
    r = rafsctl(ctl, sock, 'umount', mnt)
    out = r.stdout.decode() + r.stderr.decode()
    ck.check(r.returncode == 0 and STILL_IN_USE in out, '%s: rafsctl umount says it is still in use' % what, out)
    text = listed(ctl, sock)
    ck.check(mnt + ' (detached' in text, '%s: rafsctl list shows it detached' % what, text)


def forgotten(ck, ctl, sock, srv, mnt, what):
    seen = {}

    def gone():
        seen['list'] = listed(ctl, sock)
        return mnt + ' (detached' not in seen['list']
    ck.check(harness.wait_for(gone, timeout=30) and 'no longer in use' in srv.log_text(),
             '%s: once it is gone, rafsd forgets it' % what, seen['list'] + srv.log_text()[-1500:])


def read_checked(ck, reader, what):
    reader.start()
    reader.join(READ_TIMEOUT)
    ck.check(reader.result == 'ok', '%s (%s)' % (what, reader.result))


def detach_holding(ck, ctl, sock, mnt, content, name, what):
    """A Reader (not started) holding mnt/NAME open; then the mount lazily detached and rafsctl's
    umount of it, which must say it is still in use."""
    held = Reader(os.path.join(mnt, name), content[name], hold=True)
    subprocess.run(['umount', '-l', mnt], check=True)
    umount_still_in_use(ck, ctl, sock, mnt, what)
    return held


def case_detached(ck, ctl, image, content, srv, sock, mnt):
    held2 = Reader(os.path.join(mnt, 'held2'), content['held2'], hold=True)
    held = detach_holding(ck, ctl, sock, mnt, content, 'held', 'detached')
    read_checked(ck, held, 'detached: a file held open on the detached mount reads its bytes, not zeros')
    # The new mount marks the same cache file again: the second held file is read after it.
    if mount(ck, ctl, sock, image, mnt, 'detached: the same path again, meanwhile'):
        r = subprocess.run(['cat', os.path.join(mnt, 'other')], stdout=subprocess.PIPE, timeout=READ_TIMEOUT)
        ck.check(r.stdout == content['other'], 'detached: the new mount reads its bytes')
    read_checked(ck, held2, 'detached: the other file held open there reads its bytes')
    forgotten(ck, ctl, sock, srv, mnt, 'detached')
    r = rafsctl(ctl, sock, 'umount', mnt)
    ck.check(r.returncode == 0 and STILL_IN_USE not in r.stdout.decode() and not os.path.ismount(mnt),
             'detached: a mount not in use unmounts as before', r.stdout.decode() + r.stderr.decode())


def case_namespace(ck, ctl, image, content, srv, sock, mnt):
    # A mount namespace copied after the mount (a service's private one, say): its copy of the
    # mount shares the superblock.
    holder = subprocess.Popen(['unshare', '--mount', '--propagation', 'private', 'sleep', '600'])
    try:
        copied = harness.wait_for(
            lambda: mnt in harness.read_text('/proc/%d/mountinfo' % holder.pid) and
            os.readlink('/proc/%d/ns/mnt' % holder.pid) != os.readlink('/proc/self/ns/mnt'), timeout=10)
        if not ck.check(copied, 'namespace: the copy holds the mount'):
            return
        umount_still_in_use(ck, ctl, sock, mnt, 'namespace')
        ck.check(not os.path.ismount(mnt), 'namespace: the path is unmounted here')
        read_checked(ck, Reader('/proc/%d/root%s/ns' % (holder.pid, mnt), content['ns']),
                     'namespace: the copy reads its bytes, not zeros')
    finally:
        holder.kill()
        holder.wait()
    forgotten(ck, ctl, sock, srv, mnt, 'namespace')


def case_stop(ck, ctl, image, content, srv, sock, mnt):
    held = detach_holding(ck, ctl, sock, mnt, content, 'stop', 'stop')
    code = srv.stop(signal.SIGTERM)
    text = srv.log_text()
    ck.check(code == 0 and 'every cache file is complete' in text,
             'stop: rafsd filled the still used mount\'s cache file, then exited 0', 'exit %s\n%s' % (code, text[-2000:]))
    read_checked(ck, held, 'stop: the held file reads its bytes without rafsd')


def case_failover(ck, ctl, image, content, srv, sock, mnt):
    held = detach_holding(ck, ctl, sock, mnt, content, 'failover', 'failover')
    os.rmdir(mnt)  # as the snapshotter removes a released snapshot's directory
    mnt2 = mnt + '-2'
    os.makedirs(mnt2)
    held2 = None
    for what, sig in (('reload', signal.SIGHUP), ('kill -9', signal.SIGKILL)):
        worker = worker_of(srv.proc.pid)
        os.kill(srv.proc.pid if sig == signal.SIGHUP else worker, sig)
        # Only the next worker answers the list once the old one is gone.
        again = harness.wait_for(lambda: not os.path.exists('/proc/%d' % worker) and
                                 mnt + ' (detached' in listed(ctl, sock), timeout=60)
        ck.check(again, 'failover: after a %s the next worker took the detached mount over' % what,
                 srv.log_text()[-2000:])
        if held2 is None and mount(ck, ctl, sock, image, mnt2, 'failover: a second mount'):
            held2 = Reader(os.path.join(mnt2, 'failover2'), content['failover2'], hold=True)
            subprocess.run(['umount', '-l', mnt2], check=True)
            os.rmdir(mnt2)
    text = listed(ctl, sock)
    ck.check(mnt2 + ' (detached' in text, 'failover: the mount unmounted by hand was taken over too', text)
    read_checked(ck, held, 'failover: the file held on the mount unmounted through rafsctl reads its bytes')
    if held2 is not None:
        read_checked(ck, held2, 'failover: the file held on the mount unmounted by hand reads its bytes')
    forgotten(ck, ctl, sock, srv, mnt, 'failover')
    forgotten(ck, ctl, sock, srv, mnt2, 'failover: the second')


def on_served_mount(name, case):
    """The case run on served_mount(NAME)."""
    def run(ck, rafsd, ctl, image, content, tmp):
        with served_mount(ck, rafsd, ctl, image, tmp, name) as served:
            if served is not None:
                case(ck, ctl, image, content, *served)
    return run


def main():
    return run_slow_cases('rafsd_still_in_use', __doc__, FILES, 12, [
        ('lazily detached, then rafsctl umount', on_served_mount('detached', case_detached)),
        ('a copy in another mount namespace', on_served_mount('namespace', case_namespace)),
        ('a stop with a mount still in use', on_served_mount('stop', case_stop)),
        ('a failover with a mount still in use', on_served_mount('failover', case_failover)),
    ])


if __name__ == '__main__':
    sys.exit(main())
