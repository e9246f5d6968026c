#!/usr/bin/env python3
"""rafsd serve --config FILE with a control socket, driven by rafsctl (fanotify engine):

1. serve starts and answers; `rafsctl list` shows no image; a mount table it cannot read (damaged)
   is said so in one line and kept aside as mounts.json.unreadable, not overwritten;
2. `rafsctl mount` of two images: one from the config's backend dir, one with --blob-dir;
   `rafsctl list` shows both;
3. `rafsctl status` (per image and blob: misses, bytes fetched, bytes from cache, prefetch
   progress, errors) moves sensibly: a cold read of a file adds misses and at least the file's
   bytes fetched and chunks present; reading it again (page cache dropped) adds bytes from cache
   and no misses; the image nobody reads makes prefetch progress (capped bandwidth); no errors;
   the text table has every column; status of one mountpoint shows only that image;
4. `rafsctl umount` unmounts one; list no longer shows it; a second umount and status of it fail
   with one line; an image unmounted by hand (umount(8)) takes a new mount on its path at once, and
   is forgotten by `rafsctl umount` and mounted again on the same directory;
5. SIGTERM: serve exits 0 promptly, the other image is unmounted, the socket is gone.
Between 2 and 3: a second `rafsd serve` with the same config is refused (the socket is taken)
before it touches the first one's mount table; so is one with another socket and the same
state dir (its mount table is the first one's).
"""

import os
import signal
import subprocess
import sys
import time

from rafstest import harness
from rafstest.harness import log, text
from rafstest.rafsd import (RafsdServe, drop_file_cache, image_of, make_small_tree, rafsctl, rafsctl_status,
                            start_test, write_config)

MiB = 1 << 20
# z/four comes last in the blob: prefetch (B's first, then A's, at 256 KiB/s) has not reached it
# when the test reads it.
FILES_A = [('a/one', 2 * MiB + 100), ('a/two', MiB), ('three', 300000), ('z/four', 4 * MiB)]
FILES_B = [('b1', 3 * MiB), ('b2', 2 * MiB + 7)]
FIELDS = ('id', 'size', 'chunks', 'chunks_present', 'misses', 'bytes_fetched', 'bytes_from_cache',
          'prefetch_done', 'errors')


def blob_sums(image):
    """The image's blob counters added up."""
    sums = {}
    for blob in image['blobs']:
        for k in FIELDS[2:]:
            sums[k] = sums.get(k, 0) + blob.get(k, 0)
    return sums


def main():
    args, mk, rafsd, ctl, ck = start_test('rafsd_serve', __doc__)
    with harness.temp_dir('rafsd-serve-', keep=args.keep) as tmp:
        src_a, src_b = os.path.join(tmp, 'src-a'), os.path.join(tmp, 'src-b')
        out_a, out_b = os.path.join(tmp, 'out-a'), os.path.join(tmp, 'out-b')
        mnt_a, mnt_b = os.path.join(tmp, 'mnt-a'), os.path.join(tmp, 'mnt-b')
        for d in (mnt_a, mnt_b):
            os.makedirs(d)
        content_a = make_small_tree(src_a, FILES_A, seed=11)
        make_small_tree(src_b, FILES_B, seed=12)
        if not (ck.cmd_ok(mk.build(out_a, [src_a]), 'mkrafs build A') and
                ck.cmd_ok(mk.build(out_b, [src_b]), 'mkrafs build B')):
            return ck.finish()
        sock = os.path.join(tmp, 'run', 'api.sock')
        config = write_config(os.path.join(tmp, 'config.toml'),
                              daemon={'engine': 'fanotify', 'socket': sock, 'cache_dir': os.path.join(tmp, 'cache'),
                                      'state_dir': os.path.join(tmp, 'state')},
                              fetch={'amplify': 0},
                              prefetch={'enable': True, 'bandwidth': '256KiB'},
                              **{'backend.localfs': {'dir': os.path.join(out_b, 'blobs')}})

        ck.section('serve')
        os.makedirs(os.path.join(tmp, 'state'))
        damaged = b'{"version": 1, "mounts": [{"engine": "fanotify", "bootst'
        with open(os.path.join(tmp, 'state', 'mounts.json'), 'wb') as f:
            f.write(damaged)
        with RafsdServe(rafsd, config, sock, os.path.join(tmp, 'serve.log')) as srv:
            if not ck.check(srv.start(), 'rafsd serve answers on %s' % sock, srv.log_text()[-2000:]):
                return ck.finish()
            aside = os.path.join(tmp, 'state', 'mounts.json.unreadable')
            kept = open(aside, 'rb').read() if os.path.exists(aside) else None
            ck.check(kept == damaged and 'not a table of mounts' in srv.log_text() and 'kept as ' + aside in srv.log_text(),
                     'a damaged mount table is named and kept aside, not overwritten', srv.log_text()[-2000:])
            r = rafsctl(ctl, sock, 'list')
            ck.check(r.returncode == 0 and mnt_a not in text(r.stdout), 'rafsctl list: no image yet',
                     text(r.stdout) + text(r.stderr))

            ck.section('rafsctl mount')
            r = rafsctl(ctl, sock, 'mount', os.path.join(out_b, 'image.boot'), mnt_b)
            ck.check(r.returncode == 0 and os.path.ismount(mnt_b), 'rafsctl mount B (config backend dir): %s' %
                     text(r.stdout).strip(), text(r.stderr))
            r = rafsctl(ctl, sock, 'mount', '--blob-dir', os.path.join(out_a, 'blobs'),
                        os.path.join(out_a, 'image.boot'), mnt_a)
            ck.check(r.returncode == 0 and os.path.ismount(mnt_a), 'rafsctl mount A (--blob-dir): %s' %
                     text(r.stdout).strip(), text(r.stderr))
            if not (os.path.ismount(mnt_a) and os.path.ismount(mnt_b)):
                return ck.finish()
            r = rafsctl(ctl, sock, 'mount', os.path.join(out_b, 'image.boot'), mnt_b)
            ck.check(r.returncode != 0 and len(text(r.stderr).strip().splitlines()) == 1,
                     'mounting on the same mountpoint again fails: %s' % text(r.stderr).strip())
            # Neither a file nor a reference: the error says both, and what does not parse.
            os.makedirs(os.path.join(tmp, 'mnt-none'))
            for arg, said in (('127.0.0.1:5000/rafs/app@sha256:abc', 'digest'),
                              (os.path.join(tmp, 'missing.boot'), 'not a host')):
                r = rafsctl(ctl, sock, 'mount', arg, os.path.join(tmp, 'mnt-none'))
                err = text(r.stderr).strip()
                ck.check(r.returncode != 0 and len(err.splitlines()) == 1 and 'no such file, and not an image reference'
                         in err and said in err, 'rafsctl mount of %s fails naming both: %s' % (arg, err))
            r = rafsctl(ctl, sock, 'list')
            out = text(r.stdout)
            ck.check(r.returncode == 0 and mnt_a in out and mnt_b in out and 'fanotify' in out,
                     'rafsctl list shows both images', out + text(r.stderr))
            log(out.rstrip())

            ck.section('a second rafsd serve beside the first')
            table = os.path.join(tmp, 'state', 'mounts.json')
            before = harness.read_text(table)
            r = harness.run([rafsd, 'serve', '--config', config], timeout=60)
            err = text(r.stderr)
            ck.check(r.returncode not in (0, None) and 'another process is already listening on %s' % sock in err,
                     'refused: another rafsd listens on the socket', err[-1500:])
            ck.check(harness.read_text(table) == before, 'the first one\'s mount table is left as it was')
            # Another socket, the same state dir: its worker would take the table for its own.
            other = write_config(os.path.join(tmp, 'other.toml'),
                                 daemon={'engine': 'fanotify', 'socket': os.path.join(tmp, 'run', 'other.sock'),
                                         'cache_dir': os.path.join(tmp, 'other-cache'),
                                         'state_dir': os.path.join(tmp, 'state')})
            # In a session of its own: if it serves after all, its worker goes with it at the timeout.
            proc = subprocess.Popen([rafsd, 'serve', '--config', other], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, start_new_session=True)
            try:
                _, err = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                _, err = proc.communicate()
            err = text(err)
            ck.check(proc.returncode not in (0, -signal.SIGKILL) and 'another rafsd serve' in err and
                     os.path.join(tmp, 'state') in err, 'refused: another rafsd serve uses the state dir', err[-1500:])
            ck.check(harness.read_text(table) == before, 'the first one\'s mount table is left as it was (state dir)')
            r = rafsctl(ctl, sock, 'list')
            ck.check(r.returncode == 0 and mnt_a in text(r.stdout) and mnt_b in text(r.stdout),
                     'the first one still serves both images', text(r.stdout) + text(r.stderr))

            ck.section('rafsctl status')
            s0 = rafsctl_status(ctl, sock)
            a0, b0 = image_of(s0, mnt_a), image_of(s0, mnt_b)
            if not ck.check(a0 is not None and b0 is not None, 'status lists both images', repr(s0)):
                return ck.finish()
            missing = [(k, image['mountpoint']) for image in (a0, b0) for blob in image['blobs']
                       for k in FIELDS if k not in blob]
            ck.check(not missing, 'every blob has %s' % ', '.join(FIELDS), repr(missing))
            sa0 = blob_sums(a0)

            path = os.path.join(mnt_a, 'z', 'four')
            with open(path, 'rb') as f:
                ck.check(f.read() == content_a['z/four'], 'A/z/four reads correctly (cold)')
            sa1 = blob_sums(image_of(rafsctl_status(ctl, sock), mnt_a))
            log('A before: %s\nA after a cold read of 4 MiB: %s' % (sa0, sa1))
            ck.check(sa1['misses'] > sa0['misses'], 'misses went up (%d -> %d)' % (sa0['misses'], sa1['misses']))
            ck.check(sa1['bytes_fetched'] - sa0['bytes_fetched'] >= 4 * MiB,
                     'bytes fetched went up by at least the file (%d -> %d)' %
                     (sa0['bytes_fetched'], sa1['bytes_fetched']))
            ck.check(sa1['chunks_present'] - sa0['chunks_present'] >= 4,
                     'chunks present went up by at least the file\'s 4 (%d -> %d)' %
                     (sa0['chunks_present'], sa1['chunks_present']))

            drop_file_cache(path)
            with open(path, 'rb') as f:
                ck.check(f.read() == content_a['z/four'], 'A/z/four reads correctly again (page cache dropped)')
            sa2 = blob_sums(image_of(rafsctl_status(ctl, sock), mnt_a))
            log('A after reading it again: %s' % sa2)
            ck.check(sa2['bytes_from_cache'] - sa1['bytes_from_cache'] >= 4 * MiB,
                     'bytes from cache went up by at least the file (%d -> %d)' %
                     (sa1['bytes_from_cache'], sa2['bytes_from_cache']))
            ck.check(sa2['misses'] == sa1['misses'], 'no new misses')

            # B is never read: prefetch alone fills it, slowly (256 KiB/s).
            deadline = time.monotonic() + 20
            b1 = None
            while time.monotonic() < deadline:
                b1 = image_of(rafsctl_status(ctl, sock), mnt_b)
                if b1 and blob_sums(b1)['chunks_present'] > 0:
                    break
                time.sleep(0.5)
            sb1 = blob_sums(b1)
            ck.check(sb1['chunks_present'] > 0 and sb1['bytes_fetched'] > 0 and sb1['misses'] == 0,
                     'B, never read, has prefetched chunks (%d present, %d bytes, %d misses)' %
                     (sb1['chunks_present'], sb1['bytes_fetched'], sb1['misses']))
            prefetched = [(blob.get('prefetched_chunks', 0), blob.get('prefetched_bytes', 0)) for blob in b1['blobs']]
            ck.check(sum(c for c, _ in prefetched) > 0 and sum(b for _, b in prefetched) > 0,
                     'B counts its prefetched chunks and their bytes (%r)' % prefetched)
            for blob in b1['blobs']:
                want = blob['chunks_present'] * 100 // max(1, blob['chunks'])
                ck.check(0 < blob['prefetch_done'] <= 100 and abs(blob['prefetch_done'] - want) <= 1,
                         'B blob %s: prefetch progress %d%% (%d of %d chunks)' %
                         (blob['id'][:12], blob['prefetch_done'], blob['chunks_present'], blob['chunks']))
            s_all = rafsctl_status(ctl, sock)
            errors = sum(blob['errors'] for image in s_all['images'] for blob in image['blobs'])
            ck.check(errors == 0, 'no errors')

            r = rafsctl(ctl, sock, 'status')
            out = text(r.stdout)
            log(out.rstrip())
            headers = ('BLOB', 'CHUNKS', 'MISSES', 'FETCHED', 'FROM CACHE', 'PREFETCH', 'ERRORS')
            ck.check(r.returncode == 0 and mnt_a in out and mnt_b in out and all(h in out for h in headers),
                     'rafsctl status prints both images with every column', out + text(r.stderr))
            one = rafsctl_status(ctl, sock, mnt_a)
            ck.check(one is not None and [i['mountpoint'] for i in one['images']] == [mnt_a],
                     'rafsctl status MOUNTPOINT shows that image only')

            ck.section('rafsctl umount')
            r = rafsctl(ctl, sock, 'umount', mnt_a)
            ck.check(r.returncode == 0 and not os.path.ismount(mnt_a), 'rafsctl umount A', text(r.stderr))
            r = rafsctl(ctl, sock, 'list')
            ck.check(r.returncode == 0 and mnt_a not in text(r.stdout) and mnt_b in text(r.stdout),
                     'list shows B only', text(r.stdout))
            for what, cmd in (('umount A again', ['umount', mnt_a]), ('status of A', ['status', mnt_a])):
                r = rafsctl(ctl, sock, *cmd)
                err = text(r.stderr).strip()
                ck.check(r.returncode != 0 and len(err.splitlines()) == 1 and mnt_a in err,
                         '%s fails with one line: %s' % (what, err))
            r = harness.run(['umount', mnt_b])
            ck.check(r.returncode == 0 and not os.path.ismount(mnt_b), 'B unmounted by hand', text(r.stderr))
            r = rafsctl(ctl, sock, 'mount', os.path.join(out_b, 'image.boot'), mnt_b)
            ck.check(r.returncode == 0 and os.path.ismount(mnt_b), 'B, unmounted by hand, mounted again at once',
                     text(r.stderr))
            r = harness.run(['umount', mnt_b])
            ck.check(r.returncode == 0 and not os.path.ismount(mnt_b), 'B unmounted by hand again', text(r.stderr))
            r = rafsctl(ctl, sock, 'umount', mnt_b)
            ck.check(r.returncode == 0, 'rafsctl umount of B, unmounted by hand, forgets it', text(r.stderr))
            r = rafsctl(ctl, sock, 'mount', os.path.join(out_b, 'image.boot'), mnt_b)
            ck.check(r.returncode == 0 and os.path.ismount(mnt_b), 'B mounted again on the same directory',
                     text(r.stderr))

            ck.section('SIGTERM')
            t0 = time.monotonic()
            code = srv.stop(signal.SIGTERM, timeout=30)
            dt = time.monotonic() - t0
            ck.check(code == 0, 'rafsd serve exits 0 on SIGTERM (%.1fs)' % dt, 'exit %s' % code)
            ck.check(dt < 15, 'promptly')
            ck.check(not os.path.ismount(mnt_b), 'B is unmounted')
            ck.check(not os.path.exists(sock), 'the control socket is gone')
            if code != 0:
                log(srv.log_text()[-3000:])
    return ck.finish()


if __name__ == '__main__':
    sys.exit(main())
