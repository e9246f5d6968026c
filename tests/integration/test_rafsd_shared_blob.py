#!/usr/bin/env python3
"""A blob shared by two mounted images, one of them unmounted while the blob is still being
prefetched, and a third image mounted after it (fanotify engine, rafsd serve, prefetch on at
256 KiB/s, unbounded cache):

1. image S mounted twice (S1, S2: the same bootstrap, so one blob X, one cache file): a file read
   through S2 is in S2's start trace; then S2 unmounted: S1's prefetch of X goes on (the unmount
   drops only what S2 alone used);
2. image C mounted: it takes the fetcher's slot S2 had; its blob Y is prefetched behind X, so
   most of it is still missing;
3. every file of S1 read: X completes, and its completion unmarks X's cache file, not the file
   of whichever image now has the slot of the mount that registered the callback (S2's, now C's):
   C's files read back exactly (an unmarked incomplete file would read its holes as zeros);
4. X's file is unmarked: S1's files, read again, raise no event (its hits stay);
5. an image naming blob X with other chunk digests (S's bootstrap, one digest changed): its mount
   is refused while S1 has X open, and once S is unmounted it mounts without trusting the cache S
   filled (X's cache state discarded); S mounted again reads back exactly.
"""

import os
import struct
import sys
import time

from rafstest import harness
from rafstest.harness import text
from rafstest.rafsd import (EXT_SB_OFFSET, RafsdServe, drop_file_cache, image_of, make_small_tree, rafsctl, rafsctl_status,
                            start_test, write_config)

KiB, MiB = 1 << 10, 1 << 20
CHUNK = 256 * KiB
FILES_S = [('s/one', 3 * MiB + 5), ('s/two', 2 * MiB), ('s/three', 700 * KiB)]
FILES_C = [('c/one', 4 * MiB + 17), ('c/two', 2 * MiB)]


def present(ctl, sock, mnt):
    image = image_of(rafsctl_status(ctl, sock), mnt)
    return sum(b['chunks_present'] for b in image['blobs']) if image else -1


def read_all(root, content):
    """The relpaths whose bytes differ from `content`."""
    bad = []
    for rel, data in content.items():
        with open(os.path.join(root, rel), 'rb') as f:
            if f.read() != data:
                bad.append(rel)
    return bad


def ok_or_none(r):
    return r if r.returncode == 0 else None


def main():
    args, mk, rafsd, ctl, ck = start_test('rafsd_shared_blob', __doc__)
    with harness.temp_dir('rafsd-shared-', keep=args.keep) as tmp:
        src_s, src_c = os.path.join(tmp, 'src-s'), os.path.join(tmp, 'src-c')
        out_s, out_c = os.path.join(tmp, 'out-s'), os.path.join(tmp, 'out-c')
        mnt = {name: os.path.join(tmp, 'mnt-' + name) for name in ('s1', 's2', 'c')}
        for d in mnt.values():
            os.makedirs(d)
        content_s = make_small_tree(src_s, FILES_S, seed=21)
        content_c = make_small_tree(src_c, FILES_C, seed=22)
        if not (ck.cmd_ok(mk.build(out_s, [src_s], chunk_size=CHUNK), 'mkrafs build S') and
                ck.cmd_ok(mk.build(out_c, [src_c], chunk_size=CHUNK), 'mkrafs build C')):
            return ck.finish()
        sock = os.path.join(tmp, 'run', 'api.sock')
        config = write_config(os.path.join(tmp, 'config.toml'),
                              daemon={'engine': 'fanotify', 'socket': sock, 'cache_dir': os.path.join(tmp, 'cache'),
                                      'state_dir': os.path.join(tmp, 'state')},
                              fetch={'amplify': 0},
                              prefetch={'enable': True, 'bandwidth': '256KiB'})

        with RafsdServe(rafsd, config, sock, os.path.join(tmp, 'serve.log')) as srv:
            if not ck.check(srv.start(), 'rafsd serve answers on %s' % sock, srv.log_text()[-2000:]):
                return ck.finish()

            def mount(name, out):
                r = rafsctl(ctl, sock, 'mount', '--blob-dir', os.path.join(out, 'blobs'),
                            os.path.join(out, 'image.boot'), mnt[name])
                return ck.check(r.returncode == 0 and os.path.ismount(mnt[name]), 'mount %s' % name, text(r.stderr))

            ck.section('S mounted twice, one unmounted')
            if not (mount('s1', out_s) and mount('s2', out_s)):
                return ck.finish()
            ids = [[b['id'] for b in image_of(rafsctl_status(ctl, sock), mnt[n])['blobs']] for n in ('s1', 's2')]
            ck.check(ids[0] == ids[1], 'S1 and S2 share their blob', repr(ids))
            # The engine's events name the shared cache file, not the mount: a read through S2 is in
            # S2's start trace (and in S1's).
            with open(os.path.join(mnt['s2'], 's/three'), 'rb') as f:
                ck.check(f.read() == content_s['s/three'], 'S2/s/three reads back exactly')
            r = rafsctl(ctl, sock, 'trace', mnt['s2'])
            traced = [line for line in text(r.stdout).splitlines() if line and not line.startswith('#')]
            ck.check(r.returncode == 0 and traced == ['/s/three'], "S2's start trace has the file read through it",
                     repr(traced) + text(r.stderr))
            r = rafsctl(ctl, sock, 'umount', mnt['s2'])
            ck.check(r.returncode == 0 and not os.path.ismount(mnt['s2']), 'umount S2', text(r.stderr))
            before = present(ctl, sock, mnt['s1'])
            deadline = time.monotonic() + 10
            after = before
            while time.monotonic() < deadline and after <= before:
                time.sleep(0.25)
                after = present(ctl, sock, mnt['s1'])
            ck.check(after > before, "S1's prefetch of the shared blob goes on after S2's unmount "
                     '(%d -> %d chunks present)' % (before, after))

            ck.section('C mounted in the slot S2 had')
            if not mount('c', out_c):
                return ck.finish()
            chunks_c = image_of(rafsctl_status(ctl, sock), mnt['c'])['blobs'][0]['chunks']
            ck.section('the shared blob completes')
            ck.check(not read_all(mnt['s1'], content_s), "S1's files read back exactly")
            s1 = image_of(rafsctl_status(ctl, sock), mnt['s1'])['blobs'][0]
            ck.check(s1['chunks_present'] == s1['chunks'], 'S1\'s blob is complete (%d of %d chunks)' %
                     (s1['chunks_present'], s1['chunks']))
            missing_c = chunks_c - present(ctl, sock, mnt['c'])
            ck.check(missing_c > 0, "C's blob is still incomplete (%d of %d chunks missing)" % (missing_c, chunks_c))
            bad = read_all(mnt['c'], content_c)
            ck.check(not bad, "C's files read back exactly", repr(bad))
            c = image_of(rafsctl_status(ctl, sock), mnt['c'])['blobs'][0]
            ck.check(c['misses'] > 0 and c['errors'] == 0,
                     "C's reads of missing chunks were fetched (%d misses, %d errors)" % (c['misses'], c['errors']))

            ck.section("the shared blob's file unmarked")
            for rel in content_s:
                drop_file_cache(os.path.join(mnt['s1'], rel))
            hits = image_of(rafsctl_status(ctl, sock), mnt['s1'])['blobs'][0]['hits']
            ck.check(not read_all(mnt['s1'], content_s), "S1's files read back exactly again")
            again = image_of(rafsctl_status(ctl, sock), mnt['s1'])['blobs'][0]['hits']
            ck.check(again == hits, 'without an event: its hits stay at %d (%d)' % (hits, again))

            ck.section('an image naming blob X with other chunk digests')
            # S's bootstrap with the first chunk's digest changed: the same blob id, but digests that
            # vouch for other bytes. It must neither share S1's open blob nor trust the cache S filled.
            with open(os.path.join(out_s, 'image.boot'), 'rb') as f:
                forged = bytearray(f.read())
            table_offset = struct.unpack_from('<Q', forged, EXT_SB_OFFSET + 24)[0]
            forged[table_offset] ^= 0x01
            forged_boot = os.path.join(tmp, 'forged.boot')
            with open(forged_boot, 'wb') as f:
                f.write(forged)
            mnt['f'] = os.path.join(tmp, 'mnt-f')
            os.makedirs(mnt['f'])
            r = rafsctl(ctl, sock, 'mount', '--blob-dir', os.path.join(out_s, 'blobs'), forged_boot, mnt['f'])
            ck.check(r.returncode not in (0, None) and 'describes its chunks otherwise' in text(r.stderr) and
                     not os.path.ismount(mnt['f']),
                     'while S1 is mounted, its mount is refused: ' + text(r.stderr).strip())
            ck.check(rafsctl(ctl, sock, 'umount', mnt['s1']).returncode == 0, 'umount S1')
            # The prefetcher may hold X a moment longer (it paces at 256 KiB/s).
            r = harness.wait_for(lambda: ok_or_none(rafsctl(ctl, sock, 'mount', '--blob-dir', os.path.join(out_s, 'blobs'),
                                                            forged_boot, mnt['f'])), timeout=10, interval=0.2)
            ck.check(r is not None, 'with S unmounted, it mounts')
            ck.check('filled under another chunk table' in srv.log_text(),
                     "the cache S filled is not trusted for it (X's cache state discarded)")
            ck.check(rafsctl(ctl, sock, 'umount', mnt['f']).returncode == 0, 'umount it')
            r = harness.wait_for(lambda: ok_or_none(rafsctl(ctl, sock, 'mount', '--blob-dir', os.path.join(out_s, 'blobs'),
                                                            os.path.join(out_s, 'image.boot'), mnt['s1'])),
                                 timeout=10, interval=0.2)
            if ck.check(r is not None, 'S mounted again'):
                ck.check(not read_all(mnt['s1'], content_s), "S's files read back exactly")
    return ck.finish()


if __name__ == '__main__':
    sys.exit(main())
