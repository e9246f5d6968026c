#!/usr/bin/env python3
"""rafsd mount stopped while prefetch requests are in flight (fanotify engine, prefetch on, every
backend read delayed, 32 fetch threads): the requests complete after the engine has stopped, and
the last of a blob's chunks makes the blob complete, whose callback unmarks its file in the
engine. rafsd must wait for them before the engine goes away: SIGINT right after the mount, five
times, and each time rafsd exits 0 within the timeout and the mount is gone (before the fix it
hung in a freed mutex, or crashed).
"""

import os
import signal
import subprocess
import sys
import time

from rafstest import harness
from rafstest.rafsd import RafsdMount, make_small_tree, start_test, worker_of, write_config

MiB = 1 << 20
FILES = [('f%d' % i, MiB - 100 * i) for i in range(8)]
FETCH_DELAY_MS = 300
ROUNDS = 5
STOP_TIMEOUT = 20


def proc_stat(pid):
    """(state, parent pid, start time) from /proc/PID/stat, or None if there is no such process."""
    try:
        with open('/proc/%d/stat' % pid) as f:
            stat = f.read()
    except OSError:
        return None
    rest = stat[stat.rindex(')') + 2:].split()  # from field 3 (state) on
    return rest[0], int(rest[1]), rest[19]  # fields 3, 4 and 22 (starttime)


def same_process_running(pid, start):
    """Whether `pid` is still the process that started at `start` and has not exited (a zombie
    whose parent is not this test has exited: it only waits for its new parent to reap it)."""
    st = proc_stat(pid)
    if st is None or st[2] != start:
        return False
    return st[0] != 'Z' or st[1] == os.getpid()


def main():
    args, mk, rafsd, _, ck = start_test('rafsd_stop_prefetch', __doc__)
    with harness.temp_dir('rafsd-stop-prefetch-', keep=args.keep) as tmp:
        src, out = os.path.join(tmp, 'src'), os.path.join(tmp, 'out')
        make_small_tree(src, FILES, seed=3)
        if not ck.cmd_ok(mk.build(out, [src]), 'mkrafs build'):
            return ck.finish()
        cfg = write_config(os.path.join(tmp, 'rafsd.toml'), prefetch={'enable': True},
                           fetch={'max_inflight': 32})
        for round_ in range(ROUNDS):
            mnt = os.path.join(tmp, 'mnt%d' % round_)
            os.makedirs(mnt)
            cache = os.path.join(tmp, 'cache%d' % round_)
            m = RafsdMount(rafsd, os.path.join(out, 'image.boot'), mnt, blob_dir=os.path.join(out, 'blobs'),
                           cache_dir=cache, config=cfg, log_path=os.path.join(tmp, 'rafsd%d.log' % round_))
            m.cmd[2:2] = ['--test-fetch-delay', str(FETCH_DELAY_MS)]
            with m:
                if not ck.check(m.start(), 'round %d: rafsd mount' % round_, m.log_text()[-1500:]):
                    break
                worker = worker_of(m.proc.pid)
                worker_stat = proc_stat(worker)
                if not ck.check(worker_stat is not None, 'round %d: worker %d found' % (round_, worker)):
                    break
                worker_start = worker_stat[2]
                time.sleep(0.05)  # prefetch requests are out, none has come back
                m.proc.send_signal(signal.SIGINT)
                try:
                    rc = m.proc.wait(timeout=STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    rc = None
                worker_left = same_process_running(worker, worker_start)
                ck.check(rc == 0, 'round %d: rafsd exits 0 within %d s (exit %s)' % (round_, STOP_TIMEOUT, rc),
                         m.log_text()[-1500:])
                if rc is not None:
                    # the supervisor waits for its worker before it exits
                    ck.check(not worker_left, 'round %d: worker %d is gone once the supervisor exited' % (round_, worker),
                             'still running, /proc/%d/stat: %s' % (worker, proc_stat(worker)))
                # Cleanup only: the processes this test started go, so the next round and the
                # cleanup are not held up (the worker only if its pid is still that process).
                if rc is None:
                    m.proc.kill()
                    m.proc.wait()
                if worker_left and same_process_running(worker, worker_start):
                    try:
                        os.kill(worker, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                ck.check(not os.path.ismount(mnt), 'round %d: nothing mounted' % round_)
    return ck.finish()


if __name__ == '__main__':
    sys.exit(main())
