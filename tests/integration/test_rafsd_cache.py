#!/usr/bin/env python3
"""A bounded cache (cache.max_size, rafsctl gc) and a full disk, fanotify engine, rafsd serve:

1. capped below the image: a 32 MiB image with prefetch on, cache.max_size 8 MiB. Prefetch leaves
   the blob alone (it cannot fit); a full-tree read makes it complete (and it stays marked, since
   the cache is bounded), the collector brings the cache dir under 8 MiB by punching holes into
   the mounted blob, and every file then reads back equal to its source with the page cache
   dropped: freed chunks are fetched again;
2. GC during concurrent reads: 4 readers loop over the tree (page cache dropped per file) while
   `rafsctl gc` runs again and again with a 4 MiB cap and the worker is killed -9 once (its
   successor takes the mount over): never a wrong byte or a failed read, chunks freed and fetched
   again;
3. unused caches: an image mounted, read and unmounted, then another mounted: `rafsctl gc
   --dry-run` names the first image's blob and removes nothing; `rafsctl gc` removes its files and
   leaves the mounted one's; a bad config value is one error;
4. a full disk: the cache dir on a 20 MiB ext4 image, unbounded cache, a 32 MiB image. Half the
   tree read, then the rest: the write that finds the disk full frees the chunks read earlier and
   succeeds; every file reads correctly. With keep_recent so long that nothing may go, reads past
   the disk's end fail with EIO (never zeros), logged in a few lines (once per 10 s), and for a
   second after a write found the disk full they fail unfetched;
5. a full disk and a complete image: on the same small disk, a 4 MiB image read whole, unmounted
   and mounted again complete (so the engine unmarks its file at the mount and its reads no longer
   reach rafsd), then the 32 MiB image read: the full disk's collection frees the big image's
   chunks, never the complete image's, which reads back exactly afterwards.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

from rafstest import harness
from rafstest.harness import log
from rafstest.rafsd import (RafsdServe, drop_file_cache, image_of, make_small_tree, rafsctl, rafsctl_mount,
                            rafsctl_status,
                            start_test, worker_of, write_config)

MiB = 1 << 20
FILES = [('d%d/f%02d' % (i // 4, i), 2 * MiB) for i in range(16)]  # 32 MiB in 256 KiB chunks
FILES_SMALL = [('s/f%d' % i, 2 * MiB) for i in range(2)]  # 4 MiB


def serve(ck, rafsd, tmp, name, cache_dir, cache, prefetch=False):
    """rafsd serve `name` with its [cache] table; (server or None, socket, an empty mountpoint)."""
    sock = os.path.join(tmp, name + '.sock')
    config = write_config(os.path.join(tmp, name + '.toml'),
                          daemon={'engine': 'fanotify', 'socket': sock, 'cache_dir': cache_dir,
                                  'state_dir': os.path.join(tmp, name + '-state')},
                          prefetch={'enable': prefetch}, cache=cache)
    srv = RafsdServe(rafsd, config, sock, os.path.join(tmp, name + '.log'))
    mnt = os.path.join(tmp, 'mnt-' + name)
    os.makedirs(mnt)
    if not ck.check(srv.start(), '%s: rafsd serve answers' % name, srv.log_text()[-2000:]):
        srv.stop()
        return None, sock, mnt
    return srv, sock, mnt


def dir_size(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_blocks * 512
            except OSError:
                pass
    return total


def read_file(mnt, rel):
    """The file's bytes through the mount, its page cache dropped first (so the read reaches the
    cache file, and rafsd where the cache file has holes)."""
    path = os.path.join(mnt, rel)
    drop_file_cache(path)
    with open(path, 'rb') as f:
        return f.read()


def read_tree(mnt, sources, rels=None):
    """[(rel, problem)] for files that do not read back equal to their source."""
    bad = []
    for rel in rels or sorted(sources):
        try:
            data = read_file(mnt, rel)
        except OSError as e:
            bad.append((rel, 'read failed: %s' % e))
            continue
        if data != sources[rel]:
            bad.append((rel, 'WRONG BYTES (%d bytes, %d differ)' %
                        (len(data), sum(1 for a, b in zip(data, sources[rel]) if a != b))))
    return bad


def blob(ctl, sock):
    s = rafsctl_status(ctl, sock)
    return s['images'][0]['blobs'][0] if s and s.get('images') else None


def cache_status(ctl, sock):
    s = rafsctl_status(ctl, sock)
    return s.get('cache') if s else None


def capped(ck, rafsd, ctl, tmp, boot, blobs, sources):
    ck.section('capped below the image: a complete blob gets holes')
    cache_dir = os.path.join(tmp, 'capped-cache')
    srv, sock, mnt = serve(ck, rafsd, tmp, 'capped', cache_dir,
                      {'max_size': '8MiB', 'high_watermark': 90, 'low_watermark': 75, 'keep_recent': 3,
                       'gc_interval': 1}, prefetch=True)
    if srv is None:
        return
    with srv:
        if not rafsctl_mount(ck, ctl, sock, blobs, boot, mnt):
            return
        # rafsd logs nothing when it leaves a blob out of prefetch (the mount request hands the
        # prefetcher an empty list of whole blobs), so there is no line to wait for: give a
        # prefetcher that wrongly fetches the blob time to show it.
        time.sleep(2)
        b = blob(ctl, sock)
        ck.check(b['bytes_fetched'] == 0, 'prefetch leaves a blob larger than the cache alone (%d bytes fetched)' %
                 b['bytes_fetched'])
        bad = read_tree(mnt, sources)
        b = blob(ctl, sock)
        # keep_recent 3 s: nothing goes before the reads have made the blob complete.
        ck.check(not bad and b['chunks_present'] == b['chunks'], 'a full-tree read makes the blob complete (%d of %d '
                 'chunks)' % (b['chunks_present'], b['chunks']), str(bad[:5]))
        ok = harness.wait_for(lambda: dir_size(cache_dir) <= 8 * MiB, timeout=30, interval=0.2)
        b, c = blob(ctl, sock), cache_status(ctl, sock)
        log('blob %s; cache %s; cache dir %d bytes' % (b, c, dir_size(cache_dir)))
        ck.check(ok, 'the collector brought the cache dir under 8 MiB (%d bytes)' % dir_size(cache_dir))
        ck.check(b['chunks_present'] < b['chunks'] and c['freed_chunk_bytes'] >= 16 * MiB,
                 'by freeing chunks of the mounted blob (%d of %d chunks left, %d bytes freed)' %
                 (b['chunks_present'], b['chunks'], c['freed_chunk_bytes']))
        fetched = b['bytes_fetched']
        bad = read_tree(mnt, sources)
        ck.check(not bad, 'every file reads back equal to its source after the holes', str(bad[:5]))
        b = blob(ctl, sock)
        ck.check(b['bytes_fetched'] > fetched and b['misses'] > 0 and b['errors'] == 0,
                 'freed chunks were fetched again (%d more bytes, %d misses), no errors' %
                 (b['bytes_fetched'] - fetched, b['misses']))
        r = rafsctl(ctl, sock, 'umount', mnt)
        ck.check(r.returncode == 0, 'rafsctl umount', r.stderr.decode())
        ck.check(srv.stop() == 0, 'rafsd exits 0')
    freed = re.findall(r'cache gc \(auto\): .*', srv.log_text())
    ck.check(freed, 'the log says what the collector did', str(freed[:2]))


def concurrent(ck, rafsd, ctl, tmp, boot, blobs, sources):
    ck.section('GC during concurrent reads')
    srv, sock, mnt = serve(ck, rafsd, tmp, 'busy', os.path.join(tmp, 'busy-cache'),
                      {'max_size': '4MiB', 'low_watermark': 50, 'keep_recent': 1, 'gc_interval': 1})
    if srv is None:
        return
    with srv:
        if not rafsctl_mount(ck, ctl, sock, blobs, boot, mnt):
            return
        bad, rounds = [], [0] * 4
        stop = time.monotonic() + 10
        rels = sorted(sources)

        def reader(n):
            # Each reader on its own quarter of the tree, a file every 0.5 s: a file's chunks are
            # 2 s old when it is read again, past keep_recent, so the collector frees them between.
            mine = rels[n * 4:n * 4 + 4]
            while time.monotonic() < stop and not bad:
                bad.extend(read_tree(mnt, sources, [mine[rounds[n] % len(mine)]]))
                rounds[n] += 1
                time.sleep(0.5)

        threads = [threading.Thread(target=reader, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        gcs, killed = [0, 0], None  # successful gc runs before and after the kill
        # Failed gc runs. The control socket is the worker's: from the kill until the next worker
        # listens again, a connect is refused (or, while the killed one's last threads end, the
        # connection is dropped); that is all that may fail, and only in that window (before the
        # first gc after the kill that succeeds).
        gc_failed, takeover_refused = [], []
        while time.monotonic() < stop:
            if killed is None and time.monotonic() > stop - 5:
                # A crash in the middle of collections: the supervisor's next worker takes the
                # mount over from the cache as the dead one left it.
                killed = worker_of(srv.proc.pid)
                os.kill(killed, signal.SIGKILL)
                log('killed worker %d' % killed)
            r = rafsctl(ctl, sock, 'gc')
            err = r.stderr.decode().strip()
            if r.returncode == 0:
                gcs[0 if killed is None else 1] += 1
            elif killed is not None and gcs[1] == 0 and r.returncode == 1 and err.startswith('rafsctl: '):
                takeover_refused.append(err)
            else:
                gc_failed.append('exit %s: %s' % (r.returncode, err))
            time.sleep(0.3)
        for t in threads:
            t.join(timeout=120)
        b, c = blob(ctl, sock), cache_status(ctl, sock)
        log('%d file reads %s, %d gc runs (%d before the kill); blob %s; cache %s' %
            (sum(rounds), rounds, sum(gcs), gcs[0], b, c))
        ck.check(not any(t.is_alive() for t in threads), 'the readers finished')
        ck.check(killed is not None, 'the worker was killed during the collections')
        ck.check(not gc_failed, 'every rafsctl gc exited 0 but those refused while the next worker took over (%d '
                 'refused then, %d other failures)' % (len(takeover_refused), len(gc_failed)), str(gc_failed[:3]))
        # The loop's first pass runs a gc before the kill; the kill leaves the loop about 5 s, in
        # which the next worker (it takes over within a second) answers gc again.
        ck.check(gcs[0] >= 1 and gcs[1] >= 1, 'gc ran before and after the kill (%d and %d times)' % tuple(gcs))
        # Every reader reads a file as soon as it starts (the loop gives them 10 s).
        ck.check(min(rounds) >= 1, 'every reader read (%s file reads)' % rounds)
        gcs = sum(gcs)
        ck.check(not bad, '%d file reads by 4 readers while gc ran %d times and the worker was killed once: all '
                 'correct' % (sum(rounds), gcs), str(bad[:5]))
        ck.check(worker_of(srv.proc.pid) != killed, 'another worker serves the mount')
        ck.check(c['freed_chunk_bytes'] > 0 and b['bytes_fetched'] > 0 and b['errors'] == 0,
                 'its collections freed chunks (%d bytes) that were fetched again (%d bytes), no errors' %
                 (c['freed_chunk_bytes'], b['bytes_fetched']))
        rafsctl(ctl, sock, 'umount', mnt)
        ck.check(srv.stop() == 0, 'rafsd exits 0')


def unused(ck, rafsd, ctl, mk, tmp, boot, blobs, sources, blob_id):
    ck.section('unused caches go; mounted ones stay')
    other_src = os.path.join(tmp, 'other-src')
    other_out = os.path.join(tmp, 'other-out')
    other_sources = make_small_tree(other_src, [('x/y', 3 * MiB)], seed=9)
    if not ck.cmd_ok(mk.build(other_out, [other_src]), 'mkrafs build (another image)'):
        return
    cache_dir = os.path.join(tmp, 'unused-cache')
    srv, sock, mnt = serve(ck, rafsd, tmp, 'unused', cache_dir, {'keep_recent': 0})
    if srv is None:
        return
    data = os.path.join(cache_dir, blob_id + '.blob.data')
    with srv:
        rafsctl_mount(ck, ctl, sock, blobs, boot, mnt, 'mount the first image')
        ck.check(not read_tree(mnt, sources, sorted(sources)[:4]), 'read some of it')
        rafsctl(ctl, sock, 'umount', mnt)
        rafsctl_mount(ck, ctl, sock, os.path.join(other_out, 'blobs'), os.path.join(other_out, 'image.boot'), mnt,
                      'mount the other image')
        ck.check(not read_tree(mnt, other_sources), 'read it whole')
        files_before = sorted(os.listdir(cache_dir))
        r = rafsctl(ctl, sock, 'gc', '--dry-run')
        out = r.stdout.decode()
        log(out)
        ck.check(r.returncode == 0 and 'would remove blob %s' % blob_id in out,
                 'gc --dry-run names the unmounted image\'s blob', out + r.stderr.decode())
        ck.check(sorted(os.listdir(cache_dir)) == files_before and os.path.exists(data), 'and removes nothing')
        r = rafsctl(ctl, sock, 'gc')
        out = r.stdout.decode()
        log(out)
        ck.check(r.returncode == 0 and 'removed blob %s' % blob_id in out, 'gc removes it', out + r.stderr.decode())
        left = os.listdir(cache_dir)
        ck.check(not any(f.startswith(blob_id) for f in left), 'none of its files is left', str(left))
        b = blob(ctl, sock)
        ck.check(b['chunks_present'] == b['chunks'], 'the mounted image keeps its whole cache (%d of %d chunks)' %
                 (b['chunks_present'], b['chunks']))
        ck.check(not read_tree(mnt, other_sources), 'and reads correctly')
        rafsctl(ctl, sock, 'umount', mnt)
        ck.check(srv.stop() == 0, 'rafsd exits 0')
    bad_config = write_config(os.path.join(tmp, 'bad.toml'), cache={'high_watermark': 50, 'low_watermark': 60})
    r = subprocess.run([rafsd, 'serve', '--config', bad_config], capture_output=True, timeout=60)
    err = r.stderr.decode().strip()
    ck.check(r.returncode != 0 and len(err.splitlines()) == 1 and 'low_watermark' in err,
             'low_watermark above high_watermark: one error', err)


def full_disk(ck, rafsd, ctl, tmp, boot, blobs, sources):
    ck.section('a full disk')
    with harness.small_disk(ck, tmp, 'disk') as disk:
        if disk is None:
            return
        free = os.statvfs(disk).f_bavail * 4096
        log('%d bytes free on the small file system' % free)
        rels = sorted(sources)
        for name, keep, expect_ok in (('full', 1, True), ('full-stuck', 3600, False)):
            cache_dir = os.path.join(disk, name)
            srv, sock, mnt = serve(ck, rafsd, tmp, name, cache_dir, {'keep_recent': keep})
            if srv is None:
                return
            with srv:
                if not rafsctl_mount(ck, ctl, sock, blobs, boot, mnt):
                    return
                # In three parts, each less than the free space, with pauses longer than keep_recent
                # (1 s) between them: each part's writes may free the parts before.
                first = read_tree(mnt, sources, rels[:6])
                time.sleep(2.5)
                second = read_tree(mnt, sources, rels[6:11])
                time.sleep(2.5)
                second += read_tree(mnt, sources, rels[11:])
                wrong = [p for p in first + second if 'WRONG' in p[1]]
                ck.check(not wrong, '%s: never a wrong byte' % name, str(wrong[:3]))
                if expect_ok:
                    ck.check(not first and not second, 'keep_recent 1 s: every file of the 32 MiB tree reads '
                             'correctly on the %d bytes free' % free, str((first + second)[:4]))
                    c = cache_status(ctl, sock)
                    ck.check(c['freed_chunk_bytes'] > 0, 'chunks read earlier were freed (%d bytes)' % c['freed_chunk_bytes'])
                else:
                    failed = [p for p in second if 'read failed' in p[1]]
                    ck.check(failed and all('Input/output error' in p[1] for p in failed),
                             'keep_recent 1 h: reads past the disk\'s end fail with EIO (%d files)' % len(failed),
                             (first + second)[:4])
                    image = image_of(rafsctl_status(ctl, sock), mnt) or {'blobs': []}
                    fetched = sum(b['bytes_fetched'] for b in image['blobs'])
                    stored = sum(os.path.getsize(os.path.join(blobs, f)) for f in os.listdir(blobs))
                    # A run due right after a write found the disk full fails unfetched: without that,
                    # every failed read fetched its range again (47.7 MB here, 35 times the blob in a
                    # full-tree read by hand).
                    ck.check(0 < fetched < stored, 'the reads that fail fetch less than the blob (%d of %d bytes)'
                             % (fetched, stored))
                    # Chunks readers asked for, not the read-ahead window each failed read came with.
                    errors = sum(b['errors'] for b in image['blobs'])
                    chunks = sum(b['chunks'] for b in image['blobs'])
                    ck.check(0 < errors <= chunks, 'the error count is of chunks asked for (%d errors, %d chunks in '
                             'the image)' % (errors, chunks))
                rafsctl(ctl, sock, 'umount', mnt)
                ck.check(srv.stop() == 0, '%s: rafsd exits 0' % name)
            shutil.rmtree(cache_dir)
            text = srv.log_text()
            if expect_ok:
                ck.check('cache gc (disk full)' in text, 'the log names the collection on a full disk')
            else:
                # Every read past the disk's end fails a write: one line per blob per 10 s says so.
                lines = [l for l in text.splitlines() if 'No space left on device' in l]
                ck.check(lines and all('cache write failed' in l for l in lines) and len(lines) <= 3,
                         'the failed writes are logged in a few lines naming the full disk (%d)' % len(lines),
                         str(lines[:4]))
                gc_lines = [l for l in text.splitlines() if 'cache gc (disk full)' in l]
                ck.check(1 <= len(gc_lines) <= 3, 'the collections that freed nothing are logged in a few lines (%d)'
                         % len(gc_lines), str(gc_lines[:4]))


def full_disk_complete(ck, rafsd, ctl, tmp, big, small):
    """`big` and `small`: (bootstrap, blob dir, sources) of the 32 MiB and the 4 MiB image."""
    ck.section('a full disk and a complete image')
    with harness.small_disk(ck, tmp, 'disk2') as disk:
        if disk is None:
            return
        srv, sock, mnt = serve(ck, rafsd, tmp, 'full-complete', os.path.join(disk, 'cache'), {'keep_recent': 1})
        if srv is None:
            return
        with srv:
            mnt_small = mnt + '-small'
            os.makedirs(mnt_small)
            boot, blobs, sources = small
            if not rafsctl_mount(ck, ctl, sock, blobs, boot, mnt_small, 'mount the 4 MiB image'):
                return
            ck.check(not read_tree(mnt_small, sources), 'it reads back exactly (and is complete)')
            rafsctl(ctl, sock, 'umount', mnt_small)
            if not rafsctl_mount(ck, ctl, sock, blobs, boot, mnt_small, 'mount it again, complete'):
                return
            big_boot, big_blobs, big_sources = big
            if not rafsctl_mount(ck, ctl, sock, big_blobs, big_boot, mnt, 'mount the 32 MiB image'):
                return
            rels = sorted(big_sources)
            # In parts of 8 MiB, less than the space left, with pauses longer than keep_recent, as in
            # full_disk, so that the full disk's collection has chunks it may free: the big image's,
            # read earlier.
            bad = []
            for part in range(0, len(rels), 4):
                if part:
                    time.sleep(2.5)
                bad += read_tree(mnt, big_sources, rels[part:part + 4])
            ck.check(not bad, 'every file of the 32 MiB image reads correctly on the full disk', str(bad[:3]))
            c = cache_status(ctl, sock)
            ck.check(c['freed_chunk_bytes'] > 0, 'the full disk freed chunks (%d bytes)' % c['freed_chunk_bytes'])
            bad = read_tree(mnt_small, sources)
            ck.check(not bad, 'the complete image, unmarked, still reads back exactly', str(bad[:3]))
            small_blob = [i for i in rafsctl_status(ctl, sock)['images'] if i['mountpoint'] == mnt_small][0]['blobs'][0]
            ck.check(small_blob['chunks_present'] == small_blob['chunks'],
                     'none of its chunks was freed (%d of %d present)' % (small_blob['chunks_present'], small_blob['chunks']))
            for m in (mnt, mnt_small):
                rafsctl(ctl, sock, 'umount', m)
            ck.check(srv.stop() == 0, 'rafsd exits 0')


def main():
    args, mk, rafsd, ctl, ck = start_test('rafsd_cache', __doc__, tools=('mkfs.ext4',))
    with harness.temp_dir('rafsd-cache-', keep=args.keep) as tmp:
        src, out = os.path.join(tmp, 'src'), os.path.join(tmp, 'out')
        sources = make_small_tree(src, FILES, seed=7)
        if not ck.cmd_ok(mk.build(out, [src], chunk_size=256 * 1024), 'mkrafs build'):
            return ck.finish()
        boot, blobs = os.path.join(out, 'image.boot'), os.path.join(out, 'blobs')
        from rafstest.boot import blob_ids
        blob_id = blob_ids(boot)[0]
        capped(ck, rafsd, ctl, tmp, boot, blobs, sources)
        concurrent(ck, rafsd, ctl, tmp, boot, blobs, sources)
        unused(ck, rafsd, ctl, mk, tmp, boot, blobs, sources, blob_id)
        full_disk(ck, rafsd, ctl, tmp, boot, blobs, sources)
        src_small, out_small = os.path.join(tmp, 'src-small'), os.path.join(tmp, 'out-small')
        small_sources = make_small_tree(src_small, FILES_SMALL, seed=8)
        if ck.cmd_ok(mk.build(out_small, [src_small], chunk_size=256 * 1024), 'mkrafs build (4 MiB)'):
            full_disk_complete(ck, rafsd, ctl, tmp, (boot, blobs, sources),
                               (os.path.join(out_small, 'image.boot'), os.path.join(out_small, 'blobs'), small_sources))
    return ck.finish()


if __name__ == '__main__':
    sys.exit(main())
