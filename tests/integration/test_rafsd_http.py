#!/usr/bin/env python3
"""rafsd's http backend (backend.type = "http") against nginx-light on 127.0.0.1 as the range
server, fanotify engine:

1. an image served by `rafsd serve` + `rafsctl mount` reads back equal to its source; `rafsctl
   status` shows the backend's requests, bytes and latency (and no retries or failures);
2. the mount-time probe: a blob missing on the server, also at a second mount of an image whose
   first found it (its cache collected: a complete cache mounts and reads without the server),
   and a server that is not there, each fail the mount with one error line naming the blob and the
   URL, and nothing is mounted;
3. a server that ignores Range (python's http.server, answering 200 with the whole file): the image
   still reads back equal, rafsd warns once that every read downloads its blob from the start,
   and status and /metrics (checked by `promtool check metrics`) count the whole-blob answers;
4. a server that redirects every blob to another (nginx, 302): the image reads back equal; one
   that redirects in a loop fails the mount with one line naming the blob and the redirects;
5. bad configuration of the network keys: one error line naming the file, line and key.
"""

import functools
import http.server
import os
import re
import subprocess
import sys

from rafstest import compare, harness
from rafstest.harness import log
from rafstest.rafsd import (RafsdServe, expect_error, network_config, rafsctl, rafsctl_mount, rafsctl_status,
                            small_image, start_test)
from rafstest.servers import ThreadedServer, free_port, nginx

MiB = 1 << 20
FILES = [('a/one', 3 * MiB + 17), ('a/two', 700000), ('b/three', 5 * MiB), ('c/small', 999), ('c/empty', 0)]


def main():
    args, mk, rafsd, ctl, ck = start_test('rafsd_http', __doc__, tools=('nginx', 'promtool', 'curl'))
    with harness.temp_dir('rafsd-http-', keep=args.keep) as tmp:
        image = small_image(ck, mk, tmp, FILES, 8)
        if image is None:
            return ck.finish()
        _, boot, blob, mnt = image
        src, out = os.path.join(tmp, 'src'), os.path.join(tmp, 'out')
        port = free_port()
        empty_dir = os.path.join(tmp, 'empty')
        os.makedirs(empty_dir)

        def config(name, url):
            return network_config(tmp, name, {'type': 'http'}, **{
                'backend.http': {'url': url},
                'backend.transport': {'retries': 1, 'backoff_base_ms': 10, 'timeout': 20}})

        with nginx(os.path.join(out, 'blobs'), port, tmp):
            ck.section('an image over http reads back equal to its source')
            cfg = config('serve', 'http://127.0.0.1:%d/blobs' % port)
            sock = os.path.join(tmp, 'serve.sock')
            with RafsdServe(rafsd, cfg, sock, os.path.join(tmp, 'serve.log')) as srv:
                if not ck.check(srv.start(), 'rafsd serve answers', srv.log_text()[-2000:]):
                    return ck.finish()
                r = rafsctl(ctl, sock, 'mount', boot, mnt)
                if ck.check(r.returncode == 0, 'rafsctl mount (backend http)', (r.stderr or b'').decode()):
                    ck.diffs('tree over http', compare.compare_trees(src, mnt))
                    status = rafsctl_status(ctl, sock) or {}
                    backends = status.get('backends', [])
                    if ck.check(len(backends) == 1, 'status lists one backend', repr(status)[:1000]):
                        b = backends[0]
                        log('  backend status: %r' % b)
                        total = sum(size for _, size in FILES)
                        ck.check(b['backend'] == 'http:http://127.0.0.1:%d/blobs' % port, 'status names the backend')
                        ck.check(b['requests'] >= 2, 'requests counted (%d)' % b['requests'])
                        ck.check(b['bytes'] >= total, 'bytes counted (%d >= %d)' % (b['bytes'], total))
                        ck.check(b['retries'] == 0 and b['failures'] == 0, 'no retries, no failures')
                        ck.check(b['whole_blob_answers'] == 0, 'nginx answers every range with the range')
                        ck.check(0 < b['latency_p50_us'] <= b['latency_p99_us'], 'latency p50 <= p99, both set')
                    r = rafsctl(ctl, sock, 'status')
                    text = (r.stdout or b'').decode()
                    ck.check(r.returncode == 0 and all(c in text for c in ('BACKEND', 'TOKEN REFRESHES', 'WHOLE BLOBS')),
                             'rafsctl status prints the backend table', text[-1500:])
                    r = rafsctl(ctl, sock, 'umount', mnt)
                    ck.check(r.returncode == 0, 'rafsctl umount', (r.stderr or b'').decode())
                    # The blob gone from the server: a complete cache needs none, and mounts; an
                    # incomplete one does, and each mount asks the server (not what it said before).
                    blob_file = os.path.join(out, 'blobs', blob)
                    os.rename(blob_file, blob_file + '.away')
                    try:
                        r = rafsctl(ctl, sock, 'mount', boot, mnt)
                        if ck.check(r.returncode == 0, 'the blob gone from the server: its complete cache mounts',
                                    (r.stderr or b'').decode()):
                            ck.diffs('read from the complete cache alone', compare.compare_trees(src, mnt))
                            rafsctl(ctl, sock, 'umount', mnt)
                        r = rafsctl(ctl, sock, 'gc')
                        ck.check(r.returncode == 0 and 'removed' in (r.stdout or b'').decode(),
                                 'rafsctl gc removes the unmounted image\'s cache', (r.stdout or b'').decode())
                        r = rafsctl(ctl, sock, 'mount', boot, mnt)
                        err = (r.stderr or b'').decode().strip()
                        ck.check(r.returncode != 0 and blob in err and '404' in err and not os.path.ismount(mnt),
                                 'its cache collected: the mount is refused, naming the blob', err)
                    finally:
                        os.rename(blob_file + '.away', blob_file)
                ck.check(srv.stop() == 0, 'rafsd serve exits 0')

            ck.section('the mount-time probe')

            def mount_cmd(cfg):
                return [rafsd, 'mount', '--config', cfg, boot, mnt]

            missing_url = 'http://127.0.0.1:%d/nothing-here' % port
            expect_error(ck, 'a blob missing on the server', mount_cmd(config('missing', missing_url)), mnt,
                         [blob, missing_url, '404'])
            down = free_port()
            down_url = 'http://127.0.0.1:%d/blobs' % down
            expect_error(ck, 'a server that is not there', mount_cmd(config('down', down_url)), mnt,
                         [blob, '127.0.0.1:%d' % down])

        ck.section('a server that ignores Range')

        class WholeFiles(http.server.SimpleHTTPRequestHandler):
            """Always the whole file with a 200, whatever Range asks (also once python's
            http.server learns Range)."""
            def do_GET(self):
                del self.headers['Range']
                super().do_GET()

            def log_message(self, *args):
                pass

        whole_port = free_port()
        handler = functools.partial(WholeFiles, directory=out)
        with ThreadedServer().serve(http.server.ThreadingHTTPServer(('127.0.0.1', whole_port), handler)):
            metrics_sock = os.path.join(tmp, 'metrics.sock')
            cfg = network_config(tmp, 'whole', {'type': 'http'}, **{
                'backend.http': {'url': 'http://127.0.0.1:%d/blobs' % whole_port},
                'metrics': {'address': 'unix:' + metrics_sock}})
            sock = os.path.join(tmp, 'whole.sock')
            with RafsdServe(rafsd, cfg, sock, os.path.join(tmp, 'whole.log')) as srv:
                if ck.check(srv.start(), 'rafsd serve answers', srv.log_text()[-2000:]):
                    r = rafsctl(ctl, sock, 'mount', boot, mnt)
                    if ck.check(r.returncode == 0, 'rafsctl mount (a server without Range)', (r.stderr or b'').decode()):
                        ck.diffs('tree from a server that ignores Range', compare.compare_trees(src, mnt))
                        warnings = [line for line in srv.log_text().splitlines() if 'ignores Range' in line]
                        ck.check(len(warnings) == 1, 'one warning that the server ignores Range', repr(warnings))
                        b = ((rafsctl_status(ctl, sock) or {}).get('backends') or [{}])[0]
                        ck.check(b.get('whole_blob_answers', 0) >= 1,
                                 'status counts the whole-blob answers (%r)' % b.get('whole_blob_answers'))
                        r = subprocess.run(['curl', '-s', '--unix-socket', metrics_sock, 'http://rafsd/metrics'],
                                           capture_output=True, timeout=60)
                        text = r.stdout.decode()
                        check = subprocess.run(['promtool', 'check', 'metrics'], input=r.stdout, capture_output=True,
                                               timeout=60)
                        ck.check(check.returncode == 0, 'promtool check metrics accepts /metrics',
                                 (check.stdout + check.stderr).decode())
                        found = re.search(r'^rafsd_backend_whole_blob_answers_total\{backend="([^"]*)"\} (\d+)$', text, re.M)
                        ck.check(found is not None and found.group(1) == b.get('backend') and int(found.group(2)) >= 1,
                                 '/metrics counts them for that backend', text[-3000:])
                        for name in ('requests', 'retries', 'failures', 'token_refreshes'):
                            ck.check(re.search(r'^rafsd_backend_%s_total\{backend=' % name, text, re.M) is not None,
                                     '/metrics has rafsd_backend_%s_total' % name)
                        r = rafsctl(ctl, sock, 'umount', mnt)
                        ck.check(r.returncode == 0, 'rafsctl umount', (r.stderr or b'').decode())
                ck.check(srv.stop() == 0, 'rafsd serve exits 0')

        ck.section('a server that redirects')
        front, store = free_port(), free_port()
        servers = '''server {
        listen 127.0.0.1:%(front)d;
        location /blobs/ { rewrite ^/blobs/(.*)$ http://127.0.0.1:%(store)d/store/$1 redirect; }
        location /loop/ { rewrite ^/loop/(.*)$ http://127.0.0.1:%(front)d/loop/$1 redirect; }
    }
    server {
        listen 127.0.0.1:%(store)d;
        location /store/ { alias %(root)s/; }
    }''' % {'front': front, 'store': store, 'root': os.path.abspath(os.path.join(out, 'blobs'))}
        with nginx(None, front, tmp, servers):
            cfg = config('redirected', 'http://127.0.0.1:%d/blobs' % front)
            sock = os.path.join(tmp, 'redirected.sock')
            with RafsdServe(rafsd, cfg, sock, os.path.join(tmp, 'redirected.log')) as srv:
                if (ck.check(srv.start(), 'rafsd serve answers', srv.log_text()[-2000:]) and
                        rafsctl_mount(ck, ctl, sock, None, boot, mnt, 'rafsctl mount (every blob redirected)')):
                    ck.diffs('tree through redirects', compare.compare_trees(src, mnt))
                    ck.check(rafsctl(ctl, sock, 'umount', mnt).returncode == 0, 'rafsctl umount')
                ck.check(srv.stop() == 0, 'rafsd serve exits 0')
            expect_error(ck, 'a server that redirects in a loop',
                         [rafsd, 'mount', '--config', config('loop', 'http://127.0.0.1:%d/loop' % front), boot, mnt],
                         mnt, [blob, 'redirects'])

        ck.section('bad network configuration')
        bad = os.path.join(tmp, 'bad.toml')
        cases = [
            ('an ftp URL', '[backend.http]\nurl = "ftp://127.0.0.1/x"\n', ['bad.toml:2', 'backend.http.url']),
            ('a proxy that is no URL', '[backend.transport]\nproxy = "127.0.0.1:3128"\n',
             ['bad.toml:2', 'backend.transport.proxy']),
            ('retries out of range', '[backend.transport]\nretries = 99\n', ['bad.toml:2', 'backend.transport.retries']),
            ('an unknown transport key', '[backend.transport]\nretry = 3\n', ['bad.toml:2', 'backend.transport.retry']),
            ('a relative CA file', '[backend.hosts."127.0.0.1:5000"]\nca_file = "ca.pem"\n',
             ['bad.toml:2', 'ca_file']),
            ('a client cert without its key', '[backend.hosts."127.0.0.1:5000"]\nclient_cert = "/c.pem"\n',
             ['bad.toml:', 'client_key']),
            ('registry without a repo', '[backend]\ntype = "registry"\n[backend.registry]\nhost = "127.0.0.1:5000"\n',
             ['bad.toml:2', 'backend.registry.repo']),
            ('a CA file that does not exist',
             '[backend]\ntype = "http"\n[backend.http]\nurl = "https://127.0.0.1:5000/b"\n'
             '[backend.hosts."127.0.0.1:5000"]\nca_file = "/nonexistent/ca.pem"\n', ['/nonexistent/ca.pem']),
        ]
        for what, body, names in cases:
            with open(bad, 'w') as f:
                f.write(body)
            expect_error(ck, 'config with ' + what, [rafsd, 'mount', '--config', bad, boot, mnt], mnt, names)
    return ck.finish()


if __name__ == '__main__':
    sys.exit(main())
