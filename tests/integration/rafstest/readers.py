"""Readers of a mount that check every byte they get against the source: the test of anything
that may stop or replace rafsd under readers (failover, reload)."""

import os
import threading
import time

PIECE = 256 * 1024
READ_TIMEOUT = 120


def run_slow_cases(name, doc, files, seed, cases):
    """The main of such a test: its image (slow_image), then each case of `cases`, a list of
    (title, case(ck, rafsd, rafsctl, image, content, tmp)). Returns the exit status."""
    from . import harness
    from .rafsd import start_test
    args, mk, rafsd, rafsctl, ck = start_test(name, doc)
    with harness.temp_dir(name.replace('_', '-') + '-', keep=args.keep) as tmp:
        built = slow_image(ck, mk, tmp, files, seed)
        if built is not None:
            content, image = built
            for title, case in cases:
                harness.log('== ' + title)
                case(ck, rafsd, rafsctl, image, content, tmp)
    return ck.finish()


def slow_mount(rafsd, image, tmp, name, delay_ms, cls=None):
    """`rafsd mount --engine fanotify` of slow_image()'s image on tmp/mnt-NAME, its cache
    tmp/cache-NAME, every backend read delayed by `delay_ms`; not started. `cls`: a RafsdMount
    subclass. Returns (mountpoint, the RafsdMount)."""
    from .rafsd import RafsdMount
    mnt = os.path.join(tmp, 'mnt-' + name)
    os.makedirs(mnt)
    m = (cls or RafsdMount)(rafsd, image['boot'], mnt, blob_dir=image['blobs'],
                            cache_dir=os.path.join(tmp, 'cache-' + name), config=image['config'], engine='fanotify')
    m.cmd[2:2] = ['--test-fetch-delay', str(delay_ms)]
    return mnt, m


def slow_image(ck, mk, tmp, files, seed):
    """The image such a test reads: `files` under tmp/src built into tmp/out, and a config with
    prefetch off and no amplification (so that every read of a cold range waits on its own fetch).
    Returns ({relpath: bytes}, {'boot', 'blobs', 'config'}), or None if the build failed (reported)."""
    from .rafsd import make_small_tree, write_config
    src, out = os.path.join(tmp, 'src'), os.path.join(tmp, 'out')
    content = make_small_tree(src, files, seed=seed)
    if not ck.cmd_ok(mk.build(out, [src]), 'mkrafs build'):
        return None
    return content, {'boot': os.path.join(out, 'image.boot'), 'blobs': os.path.join(out, 'blobs'),
                     'config': write_config(os.path.join(tmp, 'config.toml'), prefetch={'enable': False},
                                            fetch={'amplify': 0})}


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
