#!/usr/bin/env python3
"""rafsd refuses bad input with one clear line and a non-zero exit, never a crash, and leaves
nothing mounted:

- config files: an unknown key, a value of the wrong type, a value out of range, bad TOML syntax
  (for `rafsd mount` and `rafsd serve`), a config file that does not exist;
- a blob missing from the blob dir;
- a "bootstrap" that is not RAFS v6: a plain mkfs.erofs image, random bytes, an empty file, a
  directory;
- `--fsid` or `--domain-id` (fscache cookies) for a fanotify mount;
- a cache dir on tmpfs (no fanotify pre-content events there);
- a mountpoint that does not exist, and one that is a regular file;
- a blob dir without the blob when the cache dir already holds some of the blob's data (the blob
  is checked at every mount), and one holding a blob cut short;
- a second daemon on the cache dir of a running one (it would trust bits the other never wrote);
- a second image on a mountpoint rafsd already serves (it would hide the first);
- the same kinds of mistakes through `rafsctl mount` to `rafsd serve`, which goes on serving.

The error line must be rafsd's own ("rafsd: ..."), name what is wrong (the file and line for
config errors, the blob id, the path), and be the only line on stderr at error level. A failed
mount leaves the cache dir as it found it: a cache dir it had to create is gone again, an
existing one holds no new file.

And a backend that fails every read (its blob removed while mounted) gives readers EIO and the
log one line for the blob, not one per read, with the failed chunks counted in the blob's summary.
"""

import errno
import os
import re
import shutil
import signal
import subprocess
import sys

from rafstest import harness, mount
from rafstest.harness import log, run, text
from rafstest.rafsd import RafsdMount, RafsdServe, expect_error, make_small_tree, rafsctl, start_test, write_config

def expect_untouched(ck, what, cache_dir, before=None):
    """A failed mount left `cache_dir` as it was: absent if `before` is None, else with exactly
    the entries `before`."""
    if before is None:
        ck.check(not os.path.exists(cache_dir), '%s: the cache dir it created is gone' % what,
                 '%s left with %s' % (cache_dir, os.listdir(cache_dir) if os.path.isdir(cache_dir) else '?'))
    else:
        left = sorted(set(os.listdir(cache_dir)) - set(before))
        ck.check(not left, '%s: nothing new in the cache dir' % what, 'left %s in %s' % (left, cache_dir))


def backend_gone(ck, mk, rafsd, tmp):
    """The blob vanishes from the blob dir while mounted: every read of a missing chunk fails, and
    the log says so once for the blob (within RepeatedFailureLog's 10 s), not once per read."""
    src, out, mnt = (os.path.join(tmp, n) for n in ('gone-src', 'gone-out', 'gone-mnt'))
    os.makedirs(mnt)
    files = make_small_tree(src, [('f%02d' % i, 200000) for i in range(40)], seed=5)
    if not ck.cmd_ok(mk.build(out, [src], chunk_size=65536), 'mkrafs build, 40 files of 64 KiB chunks'):
        return
    blobs = os.path.join(tmp, 'gone-blobs')
    shutil.copytree(os.path.join(out, 'blobs'), blobs)
    config = write_config(os.path.join(tmp, 'gone.toml'), prefetch={'enable': False}, fetch={'amplify': '64KiB'})
    with RafsdMount(rafsd, os.path.join(out, 'image.boot'), mnt, blob_dir=blobs,
                    cache_dir=os.path.join(tmp, 'gone-cache'), config=config) as m:
        if not ck.check(m.start(), 'rafsd mounted the image', m.log_text()[-2000:]):
            return
        with open(os.path.join(mnt, 'f00'), 'rb') as f:
            ck.check(f.read() == files['f00'], 'f00 reads back equal while the blob is there')
        shutil.rmtree(blobs)
        failed = 0
        for rel in sorted(files)[1:]:
            try:
                with open(os.path.join(mnt, rel), 'rb') as f:
                    f.read()
            except OSError as e:
                failed += e.errno == errno.EIO
        ck.check(failed == len(files) - 1, 'with the blob gone, %d of %d reads fail with EIO'
                 % (failed, len(files) - 1))
        code = m.stop()
        ck.check(code == 0, 'rafsd exits 0', 'exit %s' % code)
        text_ = m.log_text()
        lines = [line for line in text_.splitlines() if 'rafsd error:' in line]
        log('  error lines: %d; %s' % (len(lines), lines[:1]))
        ck.check(len(lines) == 1 and 'cannot open blob' in lines[0],
                 'one error line for the blob, not one per read (%d)' % len(lines), '\n'.join(lines[:5]))
        summary = [int(n) for n in re.findall(r', (\d+) errors$', text_, re.M)]
        ck.check(summary and summary[0] >= len(files) - 1,
                 'the blob summary counts the failed chunks (%s)' % summary, text_[-1000:])


def main():
    args, mk, rafsd, ctl, ck = start_test('rafsd_errors', __doc__, tools=('mkfs.erofs',))
    with harness.temp_dir('rafsd-errors-', keep=args.keep) as tmp:
        src, out, mnt = (os.path.join(tmp, n) for n in ('src', 'out', 'mnt'))
        cache = os.path.join(tmp, 'cache')
        os.makedirs(mnt)
        make_small_tree(src, [('a/one', 300000), ('b/two', 1 << 20), ('three', 5000)])
        if not ck.cmd_ok(mk.build(out, [src]), 'mkrafs build'):
            return ck.finish()
        boot = os.path.join(out, 'image.boot')
        blobs = os.path.join(out, 'blobs')
        good = write_config(os.path.join(tmp, 'good.toml'), prefetch={'enable': False},
                            daemon={'cache_dir': cache, 'socket': os.path.join(tmp, 'api.sock'),
                                    'state_dir': os.path.join(tmp, 'state')})

        def mount_cmd(config=good, bootstrap=boot, mountpoint=mnt, blob_dir=blobs, cache_dir=None):
            cmd = [rafsd, 'mount', '--config', config, '--blob-dir', blob_dir]
            if cache_dir:
                cmd += ['--cache-dir', cache_dir]
            return cmd + [bootstrap, mountpoint]

        ck.section('config files')
        configs = [
            ('unknown key', '[fetch]\namplify = "1MiB"\nretires = 2\n', ['bad.toml:3', 'retires']),
            ('unknown section', '[prefetch]\nenable = false\n[fetcher]\nretries = 1\n', ['bad.toml:3', 'fetcher']),
            ('bad value type', '[prefetch]\nenable = "yes"\n', ['bad.toml:2', 'enable']),
            ('bad integer type', '[fetch]\nmax_inflight = "eight"\n', ['bad.toml:2', 'max_inflight']),
            ('value out of range', '[fetch]\nmax_inflight = 0\n', ['bad.toml:2', 'max_inflight']),
            ('bad size', '[prefetch]\nbandwidth = "12 parsecs"\n', ['bad.toml:2', 'bandwidth']),
            ('bad TOML syntax', '[fetch\nretries = 1\n', ['bad.toml:1']),
            ('bad TOML value', '[fetch]\nretries = = 1\n', ['bad.toml:2']),
            ('relative path', '[daemon]\ncache_dir = "relative/dir"\n', ['bad.toml:2', 'cache_dir']),
        ]
        bad = os.path.join(tmp, 'bad.toml')
        for what, body, names in configs:
            with open(bad, 'w') as f:
                f.write(body)
            expect_error(ck, 'mount, config with ' + what, mount_cmd(config=bad), mnt, names)
        for what, body, names in configs[:1] + configs[6:7]:
            with open(bad, 'w') as f:
                f.write(body)
            expect_error(ck, 'serve, config with ' + what, [rafsd, 'serve', '--config', bad], None, names)
        missing_config = os.path.join(tmp, 'no-such.toml')
        expect_error(ck, 'config file that does not exist', mount_cmd(config=missing_config), mnt,
                     [missing_config])

        ck.section('blobs and bootstraps')
        empty_blobs = os.path.join(tmp, 'empty-blobs')
        os.makedirs(empty_blobs)
        blob_id = os.listdir(blobs)[0]
        expect_error(ck, 'blob missing from the blob dir', mount_cmd(blob_dir=empty_blobs), mnt, [blob_id])
        new_cache = os.path.join(tmp, 'new-cache')
        expect_error(ck, 'blob missing, new cache dir',
                     mount_cmd(blob_dir=empty_blobs, cache_dir=os.path.join(new_cache, 'sub')), mnt, [blob_id])
        expect_untouched(ck, 'blob missing, new cache dir', new_cache)

        plain = os.path.join(tmp, 'plain.erofs')
        r = run(['mkfs.erofs', plain, src])
        if ck.cmd_ok(r, 'mkfs.erofs image'):
            expect_error(ck, 'a plain EROFS image as bootstrap', mount_cmd(bootstrap=plain), mnt,
                         [plain, 'a plain EROFS image', 'mount -t erofs', 'mkrafs build'])
        rnd = os.path.join(tmp, 'random.boot')
        with open(rnd, 'wb') as f:
            f.write(os.urandom(64 * 1024))
        expect_error(ck, 'random bytes as bootstrap', mount_cmd(bootstrap=rnd), mnt, [rnd, 'RAFS v6'])
        empty = os.path.join(tmp, 'empty.boot')
        open(empty, 'wb').close()
        expect_error(ck, 'an empty file as bootstrap', mount_cmd(bootstrap=empty), mnt, [empty, 'RAFS v6'])
        expect_error(ck, 'a directory as bootstrap', mount_cmd(bootstrap=src), mnt, [src])
        nothing = os.path.join(tmp, 'no-such.boot')
        expect_error(ck, 'a bootstrap that does not exist', mount_cmd(bootstrap=nothing), mnt, [nothing])

        for option in ('--fsid', '--domain-id'):
            cmd = mount_cmd()
            expect_error(ck, option + ' with the fanotify engine', cmd[:2] + ['--engine', 'fanotify', option, 'x'] +
                         cmd[2:], mnt, ['--fsid and --domain-id', 'fanotify'])

        ck.section('cache dir and mountpoint')
        tmpfs = os.path.join(tmp, 'tmpfs')
        os.makedirs(tmpfs)
        r = run(['mount', '-t', 'tmpfs', '-o', 'size=64m', 'tmpfs', tmpfs])
        if ck.cmd_ok(r, 'mount a tmpfs'):
            try:
                expect_error(ck, 'cache dir on tmpfs', mount_cmd(cache_dir=os.path.join(tmpfs, 'cache')), mnt,
                             ['pre-content'])
                expect_untouched(ck, 'cache dir on tmpfs', os.path.join(tmpfs, 'cache'))
                expect_error(ck, 'cache dir on tmpfs, existing', mount_cmd(cache_dir=tmpfs), mnt, ['pre-content'])
                expect_untouched(ck, 'cache dir on tmpfs, existing', tmpfs, before=[])
            finally:
                mount.umount(tmpfs)
        gone = os.path.join(tmp, 'no-such-dir')
        expect_error(ck, 'a mountpoint that does not exist', mount_cmd(mountpoint=gone), None,
                     [gone, 'No such file or directory'])
        afile = os.path.join(tmp, 'a-file')
        open(afile, 'w').close()
        expect_error(ck, 'a mountpoint that is a file', mount_cmd(mountpoint=afile), None, [afile])

        ck.section('the cache dir holds data of the blob, the blob dir not the blob')
        warm = os.path.join(tmp, 'warm-cache')
        with RafsdMount(rafsd, boot, mnt, blob_dir=blobs, cache_dir=warm, config=good) as m:
            if ck.check(m.start(), 'rafsd mounted the image (prefetch off)', m.log_text()[-2000:]):
                with open(os.path.join(mnt, 'three'), 'rb') as f:
                    f.read()
                ck.check(m.stop() == 0, 'rafsd exits 0')
        # mkrafs lists every chunk in the bootstrap's chunk info table: the mount needs no copy
        # of the blob's ci array.
        meta = os.path.join(warm, blob_id + '.blob.meta')
        ck.check(not os.path.exists(meta), 'no copy of the chunk table in the cache dir (%s)' % os.path.basename(meta),
                 str(os.listdir(warm)))
        if ck.check(len(os.listdir(warm)) > 0, 'the cache dir holds what was read', str(os.listdir(warm))):
            before = os.listdir(warm)
            expect_error(ck, 'warm cache, blob missing from the blob dir',
                         mount_cmd(blob_dir=empty_blobs, cache_dir=warm), mnt, [blob_id, 'not available'])
            expect_untouched(ck, 'warm cache, blob missing', warm, before)
            short_blobs = os.path.join(tmp, 'short-blobs')
            os.makedirs(short_blobs)
            with open(os.path.join(blobs, blob_id), 'rb') as f, open(os.path.join(short_blobs, blob_id), 'wb') as g:
                g.write(f.read(4096))
            expect_error(ck, 'warm cache, blob cut short in the blob dir',
                         mount_cmd(blob_dir=short_blobs, cache_dir=warm), mnt, [blob_id, '4096 bytes'])

        ck.section('a backend that fails every read: one log line for the blob')
        backend_gone(ck, mk, rafsd, tmp)

        ck.section('rafsd serve: bad mounts through rafsctl fail with one line, serve goes on')
        sock = os.path.join(tmp, 'api.sock')
        with RafsdServe(rafsd, good, sock, os.path.join(tmp, 'serve.log')) as srv:
            if ck.check(srv.start(), 'rafsd serve answers', srv.log_text()[-2000:]):
                cases = [
                    ('missing blob', ['--blob-dir', empty_blobs, boot, mnt], [blob_id]),
                    ('random bytes as bootstrap', ['--blob-dir', blobs, rnd, mnt], [rnd, 'RAFS v6']),
                    ('mountpoint that does not exist', ['--blob-dir', blobs, boot, gone], [gone]),
                    ('unknown engine', ['--engine', 'fuse', '--blob-dir', blobs, boot, mnt], ['fuse']),
                ]
                for what, margs, names in cases:
                    r = rafsctl(ctl, sock, 'mount', *margs)
                    err = text(r.stderr).strip()
                    ok = r.returncode not in (0, None) and len(err.splitlines()) == 1 and \
                        err.startswith('rafsctl: ') and all(n in err for n in names)
                    ck.check(ok, 'rafsctl mount, %s: %s' % (what, err), 'exit %s' % r.returncode)
                    ck.check(not os.path.ismount(mnt), 'rafsctl mount, %s: nothing mounted' % what)
                r = rafsctl(ctl, sock, 'list')
                ck.check(r.returncode == 0 and srv.proc.poll() is None, 'rafsd serve still answers',
                         text(r.stderr))
                r = rafsctl(ctl, sock, 'mount', '--blob-dir', blobs, boot, mnt)
                if ck.check(r.returncode == 0 and os.path.ismount(mnt), 'then the good image mounts',
                            text(r.stderr)):
                    with open(os.path.join(mnt, 'a', 'one'), 'rb') as f, \
                            open(os.path.join(src, 'a', 'one'), 'rb') as g:
                        ck.check(f.read() == g.read(), 'a/one reads back equal')
                    r = rafsctl(ctl, sock, 'umount', mnt)
                    ck.check(r.returncode == 0 and not os.path.ismount(mnt), 'rafsctl umount', text(r.stderr))
                code = srv.stop()
                ck.check(code == 0, 'rafsd serve exits 0 on SIGTERM', 'exit %s' % code)

        ck.section('after all that, the image still mounts')
        r = subprocess.Popen(mount_cmd(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            import time
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not os.path.ismount(mnt) and r.poll() is None:
                time.sleep(0.05)
            if ck.check(os.path.ismount(mnt), 'rafsd mounted the good image'):
                second = os.path.join(tmp, 'mnt2')
                os.makedirs(second)
                expect_error(ck, 'a second rafsd on the same cache dir', mount_cmd(mountpoint=second), second,
                             ['in use by another process', 'cache dir'])
                other_cache = os.path.join(tmp, 'other-cache')
                expect_error(ck, 'a second image on the same mountpoint', mount_cmd(cache_dir=other_cache), None,
                             [mnt, 'already has an EROFS mount', boot])
                expect_untouched(ck, 'a second image on the same mountpoint', other_cache)
                with open('/proc/self/mountinfo') as f:
                    stacked = sum(1 for line in f if line.split()[4] == mnt)
                ck.check(stacked == 1, 'one mount on %s (%d)' % (mnt, stacked))
                with open(os.path.join(mnt, 'b', 'two'), 'rb') as f, open(os.path.join(src, 'b', 'two'), 'rb') as g:
                    ck.check(f.read() == g.read(), 'b/two reads back equal, the first rafsd unharmed')
        finally:
            if r.poll() is None:
                r.send_signal(signal.SIGTERM)
            try:
                code = r.wait(timeout=60)
            except subprocess.TimeoutExpired:
                r.kill()
                code = r.wait()
            ck.check(code == 0, 'rafsd exits 0 on SIGTERM', 'exit %s: %s' % (code, text(r.stderr.read())[-1000:]))
            if os.path.ismount(mnt):
                mount.umount(mnt)
    return ck.finish()


if __name__ == '__main__':
    sys.exit(main())
