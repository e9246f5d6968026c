#!/usr/bin/env python3
"""Prefetch learned from a real start (fanotify engine, rafsd serve, prefetch off while tracing):

1. after a mount, a workload reads four files of the image in a known order (one of them twice, one
   only partly, and one shares its content with a file it never reads): `rafsctl trace MNT` prints
   those files in that order as a prefetch list, and the same list is kept in the state dir
   (traces/sha256-<bootstrap digest>.list), without a file whose name a list cannot carry (a
   trailing blank); an unmount keeps the trace of the whole mount, and a
   later mount that reads nothing leaves it as it is;
2. `mkrafs build --prefetch-list TRACE` writes it into a new image's prefetch table (mkrafs inspect
   lists it), and mounted with prefetch on and bandwidth capped low, those files are in the cache
   before the rest of the blob: the first prefetched chunks are the traced files';
3. `rafsctl trace` of a directory rafsd has not mounted is an error naming it;
4. a blob complete in the cache at the mount (a warm host) is read without asking rafsd: a trace
   of a start there says so in a comment naming the blob, and does not replace the trace kept from
   a start that saw every blob; with `[trace] cached_blobs_for = 15` the same start is traced in
   full, and 15 s later the complete cache file is no longer watched (the group's marks in
   /proc/PID/fdinfo), so warm reads cost no event again.
"""

import os
import re
import sys
import time

from rafstest import harness
from rafstest.harness import log, run, text
from rafstest.rafsd import (RafsdServe, data_in_range, inspect_chunks, make_small_tree, rafsctl, rafsctl_status,
                            start_test, write_config)

MiB = 1 << 20
FILES = [('bin/first', 300 * 1024), ('lib/second', 2 * MiB + 17), ('etc/third', 5000),
         ('usr/share/fourth', 3 * MiB), ('usr/share/unread', 4 * MiB), ('var/also-unread', 100 * 1024),
         ('bin/blank-at-end ', 9000)]
ORDER = ['usr/share/fourth', 'bin/first', 'etc/third', 'lib/second']  # the workload's first reads


def ctl_ok(ck, r, what):
    return ck.check(r.returncode == 0, what, 'exit %s: %s' % (r.returncode, text(r.stderr).strip()))


def serve_config(tmp, name, prefetch, **sections):
    return write_config(os.path.join(tmp, name + '.toml'),
                        daemon={'engine': 'fanotify', 'socket': os.path.join(tmp, name + '.sock'),
                                'cache_dir': os.path.join(tmp, name + '-cache'),
                                'state_dir': os.path.join(tmp, name + '-state')},
                        prefetch=prefetch, **sections)


def group_watches(pid, inode):
    """Whether a fanotify group `pid` holds marks the inode (fs/notify/fdinfo.c: 'ino:%lx')."""
    for fd in os.listdir('/proc/%d/fd' % pid):
        try:
            if os.readlink('/proc/%d/fd/%s' % (pid, fd)) != 'anon_inode:[fanotify]':
                continue
            with open('/proc/%d/fdinfo/%s' % (pid, fd)) as f:
                if re.search(r'\bino:%x\b' % inode, f.read()):
                    return True
        except OSError:
            continue
    return False


def read_all(mnt, data):
    return all(open(os.path.join(mnt, rel), 'rb').read() == want for rel, want in data.items())


def main():
    args, mk, rafsd, ctl, ck = start_test('rafsd_trace', __doc__)
    with harness.temp_dir('rafsd-trace-', keep=args.keep) as tmp:
        src, out = os.path.join(tmp, 'src'), os.path.join(tmp, 'out')
        data = make_small_tree(src, FILES, seed=5)
        # A file with the same bytes as one the workload reads: its chunks are deduplicated, and
        # the trace names the file that was read, never this one.
        with open(os.path.join(src, 'usr/share/copy-of-third'), 'wb') as f:
            f.write(data['etc/third'])
        if not ck.cmd_ok(mk.build(out, [src]), 'mkrafs build'):
            return ck.finish()
        boot = os.path.join(out, 'image.boot')
        mnt = os.path.join(tmp, 'mnt')
        os.makedirs(mnt)

        ck.section('1. rafsctl trace after a start')
        cfg = serve_config(tmp, 'trace', {'enable': False})
        sock = os.path.join(tmp, 'trace.sock')
        with RafsdServe(rafsd, cfg, sock, os.path.join(tmp, 'trace.log')) as d:
            if not ck.check(d.start(), 'rafsd serve', d.log_text()[-1500:]):
                return ck.finish()
            r = rafsctl(ctl, sock, 'mount', '--blob-dir', os.path.join(out, 'blobs'), boot, mnt)
            if not ctl_ok(ck, r, 'rafsctl mount'):
                return ck.finish()
            for rel in ORDER:
                with open(os.path.join(mnt, rel), 'rb') as f:
                    got = f.read(100 * 1024) if rel == 'lib/second' else f.read()
                want = data[rel][:100 * 1024] if rel == 'lib/second' else data[rel]
                ck.check(got == want, 'read %s' % rel)
            with open(os.path.join(mnt, 'bin/first'), 'rb') as f:
                f.read()
            # A name a prefetch list cannot carry (its trailing blank would be dropped) is left out.
            with open(os.path.join(mnt, 'bin/blank-at-end '), 'rb') as f:
                f.read()
            r = rafsctl(ctl, sock, 'trace', mnt)
            ctl_ok(ck, r, 'rafsctl trace')
            lines = text(r.stdout).splitlines()
            paths = [line for line in lines if line and not line.startswith('#')]
            ck.check(paths == ['/' + p for p in ORDER], 'the files in the order first read', repr(paths))
            ck.check(lines and lines[0].startswith('# rafsd start trace of ') and '4 files' in lines[0],
                     'a comment line says what it is: ' + (lines[0] if lines else ''))
            traces = os.path.join(tmp, 'trace-state', 'traces')
            saved = os.listdir(traces) if os.path.isdir(traces) else []
            ck.check(len(saved) == 1 and re.fullmatch(r'sha256-[0-9a-f]{64}\.list', saved[0] or ''),
                     'kept in state_dir/traces/', repr(saved))
            trace_file = os.path.join(tmp, 'trace.list')
            r = rafsctl(ctl, sock, 'trace', '-o', trace_file, mnt)
            ctl_ok(ck, r, 'rafsctl trace -o FILE')
            r = rafsctl(ctl, sock, 'trace', os.path.join(tmp, 'src'))
            ck.check(r.returncode not in (0, None) and 'not mounted by rafsd' in text(r.stderr),
                     '3. trace of an unmounted directory: ' + text(r.stderr).strip())
            with open(os.path.join(mnt, 'var/also-unread'), 'rb') as f:
                f.read()
            ctl_ok(ck, rafsctl(ctl, sock, 'umount', mnt), 'rafsctl umount')
            if saved:
                with open(os.path.join(traces, saved[0])) as f:
                    kept = [line for line in f.read().splitlines() if line and not line.startswith('#')]
                ck.check(kept == ['/' + p for p in ORDER] + ['/var/also-unread'],
                         'the unmount kept the whole mount\'s trace', repr(kept))
                # A mount that reads nothing (as a warm cache or a taken-over mount may show rafsd)
                # says nothing about the start: the trace kept stays.
                r = rafsctl(ctl, sock, 'mount', '--blob-dir', os.path.join(out, 'blobs'), boot, mnt)
                ctl_ok(ck, r, 'rafsctl mount again')
                ctl_ok(ck, rafsctl(ctl, sock, 'umount', mnt), 'rafsctl umount, nothing read')
                with open(os.path.join(traces, saved[0])) as f:
                    again = [line for line in f.read().splitlines() if line and not line.startswith('#')]
                ck.check(again == kept, 'a mount that read nothing left the trace kept', repr(again))

        ck.section('2. the trace as a prefetch list')
        out2 = os.path.join(tmp, 'out2')
        if not ck.cmd_ok(mk.build(out2, [src], prefetch_list=trace_file), 'mkrafs build --prefetch-list TRACE'):
            return ck.finish()
        r = run([mk.path, 'inspect', os.path.join(out2, 'image.boot')])
        nids = re.findall(r'prefetch: nids ([0-9 ]+)', text(r.stdout))
        ck.check(len(nids) == 1 and len(nids[0].split()) == 4, 'mkrafs inspect shows a prefetch table of the 4 files',
                 repr(nids))
        # Prefetch on, 2 MiB/s: the traced files' 5.4 MiB come first, the other 4.1 MiB after them.
        # Once the chunks of the first two traced files are in, reading them misses nothing, and the
        # blob is still far from complete: they came first.
        cfg2 = serve_config(tmp, 'prefetch', {'enable': True, 'bandwidth': '2MiB'})
        sock2 = os.path.join(tmp, 'prefetch.sock')
        mnt2 = os.path.join(tmp, 'mnt2')
        os.makedirs(mnt2)
        with RafsdServe(rafsd, cfg2, sock2, os.path.join(tmp, 'prefetch.log')) as d:
            if not ck.check(d.start(), 'rafsd serve (prefetch on, 2 MiB/s)', d.log_text()[-1500:]):
                return ck.finish()
            r = rafsctl(ctl, sock2, 'mount', '--blob-dir', os.path.join(out2, 'blobs'), out2 + '/image.boot', mnt2)
            if not ctl_ok(ck, r, 'rafsctl mount'):
                return ck.finish()
            # The first two traced files' chunks in the cache file (a chunk's data lands just before
            # its bit is set, hence the moment's pause after), then the blob's state.
            blobs2 = os.path.join(out2, 'blobs')
            files = inspect_chunks(mk.path, os.path.join(out2, 'image.boot'), blobs2)
            wanted = [c for rel in ORDER[:2] for c in files['/' + rel][1]]
            cache_file = os.path.join(tmp, 'prefetch-cache', os.listdir(blobs2)[0] + '.blob.data')
            arrived = harness.wait_for(lambda: os.path.exists(cache_file) and all(
                data_in_range(cache_file, c[3], c[3] + c[4]) for c in wanted), timeout=30)
            time.sleep(0.2)
            status = rafsctl_status(ctl, sock2, mnt2)
            blob = status['images'][0]['blobs'][0] if status else {}
            present = blob.get('chunks_present', 0)
            unread = [c for rel in ('usr/share/unread', 'var/also-unread') for c in files['/' + rel][1]]
            early = [c for c in unread if data_in_range(cache_file, c[3], c[3] + c[4])]
            # lib/second is last in the trace (3 chunks at 2 MiB/s) but before usr/share/fourth in
            # the blob: it is not all in yet unless the blob's order won over the trace's.
            last = files['/' + ORDER[3]][1]
            last_in = all(data_in_range(cache_file, c[3], c[3] + c[4]) for c in last)
            ck.check(arrived and present >= len(wanted) and not early and not last_in,
                     'prefetch brought the first two traced files\' %d chunks first: not yet all of the last traced '
                     'file, no chunk of a file the trace does not name (%d of %d chunks present)'
                     % (len(wanted), present, blob.get('chunks', 0)), repr(early))
            ck.check(blob.get('misses', 0) == 0, 'no read made them present (no misses)')
            # Reads now of the traced files must all be hits or nearly: they were fetched first.
            before = blob.get('misses', 0)
            for rel in ORDER[:2]:
                with open(os.path.join(mnt2, rel), 'rb') as f:
                    ck.check(f.read() == data[rel], 'read %s' % rel)
            after = rafsctl_status(ctl, sock2, mnt2)['images'][0]['blobs'][0]
            ck.check(after.get('misses', 0) == before, 'the first traced files were in the cache already (%d '
                     'misses)' % (after.get('misses', 0) - before))
            ctl_ok(ck, rafsctl(ctl, sock2, 'umount', mnt2), 'rafsctl umount')

        ck.section('4. a start on a warm cache')
        # Two layers: the first one's blob complete in the cache (a base shared with an image
        # started before), the second one's not.
        extra = os.path.join(tmp, 'extra')
        extra_data = make_small_tree(extra, [('opt/app', 200 * 1024)], seed=6)
        out4 = os.path.join(tmp, 'out4')
        if not ck.cmd_ok(mk.build(out4, [src, extra]), 'mkrafs build, two layers'):
            return ck.finish()
        boot4 = os.path.join(out4, 'image.boot')
        for name, traced_for in (('warm', None), ('warm-traced', 15)):
            cfg = serve_config(tmp, name, {'enable': False},
                               **({'trace': {'cached_blobs_for': traced_for}} if traced_for else {}))
            sock = os.path.join(tmp, name + '.sock')
            traces = os.path.join(tmp, name + '-state', 'traces')
            with RafsdServe(rafsd, cfg, sock, os.path.join(tmp, name + '.log')) as d:
                if not ck.check(d.start(), 'rafsd serve (%s)' % name, d.log_text()[-1500:]):
                    return ck.finish()
                mount_cmd = ['mount', '--blob-dir', os.path.join(out4, 'blobs'), boot4, mnt]
                ctl_ok(ck, rafsctl(ctl, sock, *mount_cmd), 'rafsctl mount, cold')
                ck.check(read_all(mnt, data), 'every file of the first layer read: its blob is complete in the cache')
                ctl_ok(ck, rafsctl(ctl, sock, 'umount', mnt), 'rafsctl umount')
                saved = os.listdir(traces) if os.path.isdir(traces) else []
                full = open(os.path.join(traces, saved[0])).read() if saved else ''
                listed = [line for line in full.splitlines() if line and not line.startswith('#')]
                # Every file but the one with a trailing blank, and the copy read as its original.
                ck.check('# not traced' not in full and len(listed) == len(FILES) - 1,
                         'the cold start\'s trace saw every file', full[:300])
                ctl_ok(ck, rafsctl(ctl, sock, *mount_cmd), 'rafsctl mount, warm')
                for rel in ORDER[:2]:
                    with open(os.path.join(mnt, rel), 'rb') as f:
                        ck.check(f.read() == data[rel], 'warm read %s' % rel)
                ck.check(read_all(mnt, extra_data), 'read opt/app, of the second layer')
                r = rafsctl(ctl, sock, 'trace', mnt)
                lines = text(r.stdout).splitlines()
                paths = [line for line in lines if line and not line.startswith('#')]
                blob = os.listdir(os.path.join(out, 'blobs'))[0]  # the first layer's, as built alone
                if not traced_for:
                    ck.check(paths == ['/opt/app'] and
                             any(line.startswith('# not traced') and blob in line for line in lines),
                             'the warm start\'s trace names the blob it could not see', text(r.stdout)[:400])
                    ctl_ok(ck, rafsctl(ctl, sock, 'umount', mnt), 'rafsctl umount')
                    ck.check(saved and open(os.path.join(traces, saved[0])).read() == full,
                             'the trace that saw every blob is kept')
                    continue
                ck.check(paths == ['/' + p for p in ORDER[:2]] + ['/opt/app'] and
                         not any('not traced' in line for line in lines),
                         'with cached_blobs_for, the warm start is traced in full', text(r.stdout)[:400])
                cache_file = os.path.join(tmp, name + '-cache', blob + '.blob.data')
                inode = os.stat(cache_file).st_ino
                ck.check(group_watches(d.proc.pid, inode), 'the complete cache file is watched meanwhile')
                unwatched = harness.wait_for(lambda: not group_watches(d.proc.pid, inode), timeout=traced_for + 15)
                ck.check(unwatched, 'and no longer once cached_blobs_for is over')
                ck.check(read_all(mnt, data) and read_all(mnt, extra_data), 'every file reads right after')
                ctl_ok(ck, rafsctl(ctl, sock, 'umount', mnt), 'rafsctl umount')
    return ck.finish()


if __name__ == '__main__':
    sys.exit(main())
