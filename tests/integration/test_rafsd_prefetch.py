#!/usr/bin/env python3
"""Prefetch in rafsd serve (fanotify engine), with images built with
`mkrafs build --prefetch-list FILE` naming the file that comes last in the source's order:

0. the layout: by default the listed file's chunks lead the blob, in file order, the others
   follow in source order, and the same build twice gives the same blob; with --keep-blob-order
   the blob is byte for byte the one of a build without the list, the file last in it; a list
   naming the file through a symlinked directory gives the same image as one naming it directly;
1. (the --keep-blob-order image) bandwidth capped at 1 MiB/s: one second after the mount far less than the image has been
   fetched (the cap holds, roughly); the prefetch-table file becomes complete in the cache file
   while most of the blob is still missing (the table goes first, not blob order); nothing is
   read through the mount;
2. (the default image) no cap: without any read the cache becomes complete; then the complete blob is unmarked: with
   the backend directory removed every file still reads correctly, and the reads reach rafsd not
   at all (no misses, no hits, nothing fetched, no errors).
"""

import os
import shutil
import sys
import time

from rafstest import compare, harness
from rafstest.boot import blob_ids
from rafstest.harness import log
from rafstest.rafsd import (RafsdServe, data_in_range, inspect_chunks, make_small_tree, rafsctl,
                            rafsctl_status, start_test, write_config)

MiB = 1 << 20
# Blob order: a directory's files, then its subdirectories: z/hot is last.
FILES = [('a/one', 4 * MiB), ('a/two', 4 * MiB + 4096), ('b/three', 6 * MiB), ('z/hot', 3 * MiB + 1234)]
HOT = '/z/hot'


def blob_status(ctl, sock, mnt):
    s = rafsctl_status(ctl, sock, mnt)
    if not s or not s.get('images'):
        return None
    return s['images'][0]['blobs'][0]


def serve(ck, rafsd, ctl, tmp, name, boot, blobs, mnt, bandwidth):
    sock = os.path.join(tmp, name + '.sock')
    config = write_config(os.path.join(tmp, name + '.toml'),
                          daemon={'engine': 'fanotify', 'socket': sock, 'cache_dir': os.path.join(tmp, name + '-cache'),
                                  'state_dir': os.path.join(tmp, name + '-state')},
                          prefetch={'enable': True, 'bandwidth': bandwidth})
    srv = RafsdServe(rafsd, config, sock, os.path.join(tmp, name + '.log'))
    if not ck.check(srv.start(), '%s: rafsd serve answers' % name, srv.log_text()[-2000:]):
        srv.stop()
        return None, sock
    return srv, sock


def main():
    args, mk, rafsd, ctl, ck = start_test('rafsd_prefetch', __doc__)
    with harness.temp_dir('rafsd-prefetch-', keep=args.keep) as tmp:
        src, out, mnt = (os.path.join(tmp, n) for n in ('src', 'out', 'mnt'))
        os.makedirs(mnt)
        make_small_tree(src, FILES, seed=5)
        os.symlink('z', os.path.join(src, 'lnk'))
        plist, linked_list = os.path.join(tmp, 'prefetch.list'), os.path.join(tmp, 'linked.list')
        with open(plist, 'w') as f:
            f.write(HOT + '\n')
        with open(linked_list, 'w') as f:
            f.write('/lnk/hot\n')
        ck.section('blob layout')
        plain, first, again, linked = (os.path.join(tmp, n) for n in ('plain', 'first', 'again', 'linked'))
        if not (ck.cmd_ok(mk.build(plain, [src]), 'mkrafs build (no list)') and
                ck.cmd_ok(mk.build(out, [src], prefetch_list=plist, extra=['--keep-blob-order']),
                          'mkrafs build --prefetch-list --keep-blob-order') and
                ck.cmd_ok(mk.build(first, [src], prefetch_list=plist), 'mkrafs build --prefetch-list') and
                ck.cmd_ok(mk.build(again, [src], prefetch_list=plist), 'the same build again') and
                ck.cmd_ok(mk.build(linked, [src], prefetch_list=linked_list), 'mkrafs build, the list through a symlink')):
            return ck.finish()
        ids = {n: blob_ids(os.path.join(d, 'image.boot'))[0] for n, d in
               (('plain', plain), ('kept', out), ('first', first), ('again', again))}
        ck.check(ids['kept'] == ids['plain'], '--keep-blob-order: the blob of the build without the list', str(ids))
        ck.check(ids['first'] != ids['plain'] and ids['first'] == ids['again'],
                 'default: another blob, the same one from the same build twice', str(ids))
        # /lnk -> z: the list naming /lnk/hot is the list naming /z/hot, blob and prefetch table alike.
        with open(os.path.join(first, 'image.boot'), 'rb') as f, open(os.path.join(linked, 'image.boot'), 'rb') as g:
            ck.check(f.read() == g.read(), 'a list naming %s through a symlinked directory: the same image' % HOT)
        chunks = inspect_chunks(mk.path, os.path.join(first, 'image.boot'), os.path.join(first, 'blobs'))
        hot = chunks[HOT][1]
        ck.check([c[2] for c in hot] == list(range(len(hot))) and hot[0][3] == 0 and
                 all(b[3] == a[3] + a[4] for a, b in zip(hot, hot[1:])),
                 '%s leads the blob: ci 0 to %d, contiguous from offset 0' % (HOT, len(hot) - 1),
                 str(hot))
        rest = [c[2] for name, _ in FILES if '/' + name != HOT for c in chunks['/' + name][1]]
        ck.check(rest == list(range(len(hot), len(hot) + len(rest))), 'the other files follow in source order', str(rest))
        r = mk.inspect(first)
        ck.check(r.returncode == 0, 'mkrafs inspect checks the relaid blob', r.stdout.decode()[-2000:] + r.stderr.decode())

        boot = os.path.join(out, 'image.boot')
        blobs = os.path.join(out, 'blobs')
        blob_id = blob_ids(boot)[0]
        total = sum(size for _, size in FILES)
        _, hot_chunks = inspect_chunks(mk.path, boot, blobs)[HOT]
        hot_begin = min(c[3] for c in hot_chunks)
        hot_end = max(c[3] + c[4] for c in hot_chunks)
        log('%s is [%d, %d) of the blob\'s %d bytes' % (HOT, hot_begin, hot_end, total))
        ck.check(hot_begin > total // 2, '--keep-blob-order: %s lies in the second half of the blob' % HOT)

        ck.section('bandwidth capped at 1 MiB/s')
        srv, sock = serve(ck, rafsd, ctl, tmp, 'capped', boot, blobs, mnt, '1MiB')
        if srv is None:
            return ck.finish()
        with srv:
            r = rafsctl(ctl, sock, 'mount', '--blob-dir', blobs, boot, mnt)
            t0 = time.monotonic()
            if not ck.check(r.returncode == 0, 'rafsctl mount', r.stderr.decode()):
                return ck.finish()
            time.sleep(max(0.0, 1.0 - (time.monotonic() - t0)))
            b = blob_status(ctl, sock, mnt)
            dt = time.monotonic() - t0
            log('after %.2fs: %s' % (dt, b))
            # The bucket lets a few 1 MiB runs through ahead of time; a loaded machine may take
            # the status late, hence the bound in dt.
            ck.check(b['bytes_fetched'] <= (dt + 3) * MiB and b['bytes_fetched'] < total // 2,
                     'after %.1fs at 1 MiB/s: %d bytes fetched, well under the image\'s %d' %
                     (dt, b['bytes_fetched'], total))
            cache_file = os.path.join(tmp, 'capped-cache', blob_id + '.blob.data')
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not all(
                    data_in_range(cache_file, c[3], c[3] + c[4]) for c in hot_chunks):
                time.sleep(0.1)
            b = blob_status(ctl, sock, mnt)
            dt = time.monotonic() - t0
            hot_done = all(data_in_range(cache_file, c[3], c[3] + c[4]) for c in hot_chunks)
            ck.check(hot_done, '%s (prefetch table) is complete in the cache after %.1fs' % (HOT, dt))
            ck.check(b['chunks_present'] < b['chunks'] and b['bytes_fetched'] < total * 3 // 4,
                     'while the blob is not (%d of %d chunks, %d bytes fetched)' %
                     (b['chunks_present'], b['chunks'], b['bytes_fetched']))
            rate = b['bytes_fetched'] / dt
            ck.check(rate <= 3 * MiB, 'average rate %.2f MiB/s respects the cap roughly (bursts of a few runs)' % (rate / MiB))
            ck.check(b['misses'] == 0 and b['errors'] == 0, 'no misses, no errors')
            r = rafsctl(ctl, sock, 'umount', mnt)
            ck.check(r.returncode == 0, 'rafsctl umount', r.stderr.decode())
            code = srv.stop()
            ck.check(code == 0, 'rafsd exits 0', 'exit %s' % code)

        ck.section('no cap: the cache completes without reads (default layout)')
        boot = os.path.join(first, 'image.boot')
        blobs = os.path.join(first, 'blobs')
        srv, sock = serve(ck, rafsd, ctl, tmp, 'free', boot, blobs, mnt, '0')
        if srv is None:
            return ck.finish()
        with srv:
            r = rafsctl(ctl, sock, 'mount', '--blob-dir', blobs, boot, mnt)
            t0 = time.monotonic()
            if not ck.check(r.returncode == 0, 'rafsctl mount', r.stderr.decode()):
                return ck.finish()
            b = None
            while time.monotonic() - t0 < 60:
                b = blob_status(ctl, sock, mnt)
                if b and b['chunks_present'] == b['chunks']:
                    break
                time.sleep(0.2)
            log('after %.1fs: %s' % (time.monotonic() - t0, b))
            ck.check(b['chunks_present'] == b['chunks'] and b['prefetch_done'] == 100,
                     'cache complete without reads (%d of %d chunks, %d%%)' %
                     (b['chunks_present'], b['chunks'], b['prefetch_done']))
            ck.check(b['misses'] == 0 and b['errors'] == 0 and b['bytes_fetched'] >= total,
                     'no misses, no errors, the whole blob fetched (%d bytes)' % b['bytes_fetched'])
            before = b
            shutil.move(blobs, blobs + '.gone')
            try:
                ck.diffs('files with the backend removed vs source', compare.compare_trees(src, mnt))
                after = blob_status(ctl, sock, mnt)
                log('after the reads: %s' % after)
                ck.check(all(after[k] == before[k] for k in ('misses', 'hits', 'bytes_fetched', 'bytes_from_cache',
                                                              'errors')),
                         'the reads never reached rafsd: the complete blob is unmarked')
            finally:
                shutil.move(blobs + '.gone', blobs)
            code = srv.stop()
            ck.check(code == 0, 'rafsd exits 0', 'exit %s' % code)
            ck.check(not os.path.ismount(mnt), 'mount is gone')
    return ck.finish()


if __name__ == '__main__':
    sys.exit(main())
