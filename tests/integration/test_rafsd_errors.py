#!/usr/bin/env python3
"""rafsd refuses bad input with one clear line and a non-zero exit, never a crash, and leaves
nothing mounted:

- config files: an unknown key, a value of the wrong type, a value out of range, bad TOML syntax
  (for `rafsd mount` and `rafsd serve`), a config file that does not exist;
- a blob missing from the blob dir;
- a "bootstrap" that is not RAFS v6: a plain mkfs.erofs image, random bytes, an empty file, a
  directory;
- a cache dir on tmpfs (no fanotify pre-content events there);
- a mountpoint that does not exist, and one that is a regular file;
- a second daemon on the cache dir of a running one (it would trust bits the other never wrote);
- the same kinds of mistakes through `rafsctl mount` to `rafsd serve`, which goes on serving.

The error line must be rafsd's own ("rafsd: ..."), name what is wrong (the file and line for
config errors, the blob id, the path), and be the only line on stderr at error level.
"""

import os
import shutil
import signal
import subprocess
import sys

from rafstest import harness, mount
from rafstest.harness import log, run, text
from rafstest.rafsd import RafsdServe, expect_error, make_small_tree, rafsctl, start_test, write_config

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

        plain = os.path.join(tmp, 'plain.erofs')
        r = run(['mkfs.erofs', plain, src])
        if ck.cmd_ok(r, 'mkfs.erofs image'):
            expect_error(ck, 'a plain EROFS image as bootstrap', mount_cmd(bootstrap=plain), mnt, [plain, 'RAFS v6'])
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

        ck.section('cache dir and mountpoint')
        tmpfs = os.path.join(tmp, 'tmpfs')
        os.makedirs(tmpfs)
        r = run(['mount', '-t', 'tmpfs', '-o', 'size=64m', 'tmpfs', tmpfs])
        if ck.cmd_ok(r, 'mount a tmpfs'):
            try:
                expect_error(ck, 'cache dir on tmpfs', mount_cmd(cache_dir=os.path.join(tmpfs, 'cache')), mnt,
                             ['pre-content'])
            finally:
                mount.umount(tmpfs)
        gone = os.path.join(tmp, 'no-such-dir')
        expect_error(ck, 'a mountpoint that does not exist', mount_cmd(mountpoint=gone), None,
                     [gone, 'No such file or directory'])
        afile = os.path.join(tmp, 'a-file')
        open(afile, 'w').close()
        expect_error(ck, 'a mountpoint that is a file', mount_cmd(mountpoint=afile), None, [afile])

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
