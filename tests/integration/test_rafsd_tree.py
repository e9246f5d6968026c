#!/usr/bin/env python3
"""rafsd mount (fanotify engine, localfs backend) of a tree with every case an image has.

1. cold cache, prefetch off: 8 concurrent readers on overlapping random ranges of the regular
   files, each byte compared with the source; then every path's type, mode, owner, size, mtime,
   xattrs, link target, hardlink grouping and content compared with the source;
2. SIGINT: rafsd exits 0 and the mount is gone;
3. the cache is now complete: remount with the backend directory removed; everything still
   reads, and nothing is fetched.
"""

import os
import random
import shutil
import sys
import threading

from rafstest import compare, harness, tree
from rafstest.harness import log
from rafstest.rafsd import RafsdMount, fetched_bytes, start_test, write_config


def regular_files(root):
    files = []
    for dp, _, fns in os.walk(root):
        for n in fns:
            p = os.path.join(dp, n)
            if os.path.isfile(p) and not os.path.islink(p) and os.path.getsize(p) > 0:
                files.append(os.path.relpath(p, root))
    return sorted(files)


def concurrent_reads(ck, src, mnt, files, threads=8, reads=150, seed=7):
    errors = []
    lock = threading.Lock()

    def reader(n):
        rnd = random.Random(seed + n)
        # Every reader starts with the same few files, so their ranges overlap.
        pool = files[:4] + rnd.sample(files, min(len(files), 12))
        for _ in range(reads):
            rel = rnd.choice(pool)
            size = os.path.getsize(os.path.join(src, rel))
            off = rnd.randrange(0, size)
            length = min(size - off, rnd.choice([1, 4096, 65536, 300000, 2 << 20]))
            with open(os.path.join(src, rel), 'rb') as f:
                want = os.pread(f.fileno(), length, off)
            try:
                with open(os.path.join(mnt, rel), 'rb') as f:
                    got = os.pread(f.fileno(), length, off)
            except OSError as e:
                with lock:
                    errors.append('%s @%d+%d: %s' % (rel, off, length, e))
                continue
            if got != want:
                with lock:
                    errors.append('%s @%d+%d: content differs' % (rel, off, length))

    ts = [threading.Thread(target=reader, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    ck.diffs('%d readers x %d random reads' % (threads, reads), errors)


def main():
    args, mk, rafsd, _, ck = start_test('rafsd_tree', __doc__)
    with harness.temp_dir('rafsd-tree-', keep=args.keep) as tmp:
        src, out, mnt = (os.path.join(tmp, n) for n in ('src', 'out', 'mnt'))
        cache = os.path.join(tmp, 'cache')
        os.makedirs(mnt)
        ck.section('source tree and image')
        tree.make_full_tree(src, big_sparse=not args.small)
        if not ck.cmd_ok(mk.build(out, [src]), 'mkrafs build'):
            return ck.finish()
        config = write_config(os.path.join(tmp, 'config.toml'), prefetch={'enable': False})
        blobs = os.path.join(out, 'blobs')

        ck.section('cold cache: concurrent readers, then the whole tree')
        with RafsdMount(rafsd, os.path.join(out, 'image.boot'), mnt, blob_dir=blobs,
                        cache_dir=cache, config=config) as m:
            if not ck.check(m.start(), 'rafsd mounted the image', m.log_text()[-2000:]):
                return ck.finish()
            concurrent_reads(ck, src, mnt, regular_files(src))
            ck.diffs('tree through rafsd vs source', compare.compare_trees(src, mnt))
            code = m.stop()
            ck.check(code == 0, 'rafsd exits 0 on SIGINT', 'exit %s' % code)
            ck.check(not os.path.ismount(mnt), 'mount is gone after rafsd exits')
            ck.check(fetched_bytes(m.log_text()) > 0, 'cold reads fetched from the backend')

        ck.section('complete cache, backend removed')
        shutil.move(blobs, blobs + '.gone')
        with RafsdMount(rafsd, os.path.join(out, 'image.boot'), mnt, blob_dir=blobs,
                        cache_dir=cache, config=config) as m:
            if ck.check(m.start(), 'rafsd mounted the image without its backend', m.log_text()[-2000:]):
                ck.diffs('tree from the cache alone vs source', compare.compare_trees(src, mnt))
                code = m.stop()
                ck.check(code == 0, 'rafsd exits 0', 'exit %s' % code)
                ck.check(fetched_bytes(m.log_text()) == 0, 'nothing fetched', m.log_text()[-1000:])
    return ck.finish()


if __name__ == '__main__':
    sys.exit(main())
