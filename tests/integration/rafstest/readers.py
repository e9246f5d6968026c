"""Readers of a mount that check every byte they get against the source: the test of anything
that may stop or replace rafsd under readers (failover, reload)."""

import os
import threading
import time

PIECE = 256 * 1024
READ_TIMEOUT = 120


class Reader(threading.Thread):
    """Reads a file piece by piece, each piece checked against `data`: from an fd opened now
    (`hold`), or from its path once started. `result`: 'ok', or what went wrong."""

    def __init__(self, path, data, hold=False):
        super().__init__(daemon=True)
        self.path, self.data = path, data
        self.fd = os.open(path, os.O_RDONLY) if hold else None
        self.result = None

    def run(self):
        fd = self.fd if self.fd is not None else os.open(self.path, os.O_RDONLY)
        try:
            off = 0
            while off < len(self.data):
                got = os.pread(fd, PIECE, off)
                if not got:
                    self.result = 'end of file at %d' % off
                    return
                want = self.data[off:off + len(got)]
                if got != want:
                    self.result = '%s at %d+%d' % ('zeros' if got == bytes(len(got)) else 'wrong bytes', off, len(got))
                    return
                off += len(got)
            self.result = 'ok'
        except OSError as e:
            self.result = 'error %s' % e
        finally:
            os.close(fd)


def read_all(ck, mnt, content, names, kill, what, held=None, wait_ms=1500):
    """Starts a reader per name (and one on the already-open `held` reader), waits until they wait
    on cold data (every backend read delayed by `wait_ms`), calls kill(), and checks every reader
    got exactly the file's bytes."""
    readers = [Reader(os.path.join(mnt, n), content[n]) for n in names]
    if held is not None:
        readers.append(held)
    for r in readers:
        r.start()
    time.sleep(wait_ms / 1000 * 0.6)
    waiting = sum(r.is_alive() for r in readers)
    ck.check(waiting == len(readers), '%s: all %d readers wait on cold data at the kill' % (what, len(readers)),
             '%d still reading' % waiting)
    kill()
    for r in readers:
        r.join(READ_TIMEOUT)
    ck.check(not any(r.is_alive() for r in readers), '%s: every reader finished within %d s' % (what, READ_TIMEOUT))
    bad = ['%s: %s' % (r.path, r.result) for r in readers if r.result != 'ok']
    ck.diffs('%s: reads that did not return the right bytes' % what, bad)
