#!/usr/bin/env python3
"""How rafsd's registry backend reaches the registry, against Debian's docker-registry on
127.0.0.1 (fanotify engine):

1. mirrors: the first mirror is down, the second has the blob (the registry itself does not):
   the image reads back equal to its source; a mirror with a damaged copy of the blob: the chunk
   that fails its digest is read again from the registry, and the image reads back equal; a
   mirror with a damaged copy of the bootstrap layer: it is read again from the registry, and the
   image mounted by reference reads right; a tag is resolved at the registry, never at a
   mirror: with a mirror answering the same tag with another image, `rafsd mount REF` mounts the
   registry's image (unless mirrors_resolve_tags = true, which the test sets next);
2. proxy: through a working HTTP proxy (the test's own), requests go through it; with the
   proxy stopped while mounted, the rest of the image still reads right, direct;
3. mutual TLS: a registry that wants a client certificate serves rafsd with the one configured
   in backend.hosts; without it the mount fails with one error line naming the host;
   A TLS registry set as plain HTTP fails the mount with one line saying so.
4. bad servers: a server that speaks no HTTP, and a plain-HTTP server addressed with https://,
   each fail the mount with one error line naming the URL (the second: and plain_http);
5. redirects: a registry (nginx-light standing in) that wants Basic auth and answers 307 to a
   signed URL on another host (blob storage, which refuses any request with an Authorization
   header or without the signature): the image reads back equal, the storage URL is reused
   rather than asked for again, and the signature appears in no log line.
"""

import base64
import json
import os
import socket
import subprocess
import sys
import threading
import urllib.request

from rafstest import compare, harness
from rafstest.harness import log
from rafstest.rafsd import (RafsdMount, RafsdServe, expect_error, network_config, rafsctl,
                            rafsctl_status, small_image, start_test)
from rafstest.servers import FaultProxy, TestCa, free_port, nginx, push_blob, push_data, registry

MiB = 1 << 20
FILES = [('a/one', 3 * MiB), ('a/two', 1 * MiB + 3), ('b/three', 2 * MiB)]
REPO = 'test/img'


def one_file_layout(layout, bundle, name, text):
    """An OCI layout with tag v1: one layer holding the file `name` with `text`."""
    for cmd in (['umoci', 'init', '--layout', layout], ['umoci', 'new', '--image', layout + ':v1'],
                ['umoci', 'unpack', '--image', layout + ':v1', bundle]):
        subprocess.run(cmd, check=True, capture_output=True)
    with open(os.path.join(bundle, 'rootfs', name), 'w') as f:
        f.write(text)
    subprocess.run(['umoci', 'repack', '--image', layout + ':v1', bundle], check=True, capture_output=True)


class GarbageServer:
    """Answers every connection with a line that is not HTTP, then closes it."""

    def __init__(self, port):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(('127.0.0.1', port))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            try:
                conn.recv(4096)
                conn.sendall(b'SSH-2.0-not-a-registry\r\n')
            except OSError:
                pass
            conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        self.thread.join(timeout=5)
        self.sock.close()
        return False


def main():
    args, mk, rafsd, ctl, ck = start_test('rafsd_routes', __doc__, tools=('docker-registry', 'openssl', 'umoci'))
    with harness.temp_dir('rafsd-routes-', keep=args.keep) as tmp:
        image = small_image(ck, mk, tmp, FILES, 44)
        if image is None:
            return ck.finish()
        _, boot, blob, mnt = image
        src, out = os.path.join(tmp, 'src'), os.path.join(tmp, 'out')
        blob_file = os.path.join(out, 'blobs', blob)
        none_json = os.path.join(tmp, 'none.json')

        def config(name, host, hosts=None, docker_config=none_json, **transport):
            sections = {'backend.registry': {'host': host, 'repo': REPO, 'docker_config': docker_config},
                        'backend.transport': dict({'retries': 1, 'backoff_base_ms': 10, 'timeout': 20,
                                                   'certs_dir': os.path.join(tmp, 'no-certs.d')}, **transport)}
            for h, settings in (hosts or {}).items():
                sections['backend.hosts."%s"' % h] = settings
            return network_config(tmp, name, {'type': 'registry'}, **sections)

        def mounted_reads_right(what, cfg, name):
            with RafsdMount(rafsd, boot, mnt, config=cfg, log_path=os.path.join(tmp, name + '.log')) as m:
                if ck.check(m.start(), '%s: rafsd mount' % what, m.log_text()[-2000:]):
                    ck.diffs(what, compare.compare_trees(src, mnt))
                ck.check(m.stop() == 0, '%s: rafsd mount exits 0' % what)

        origin_port, mirror_port, down_port = free_port(), free_port(), free_port()
        origin = '127.0.0.1:%d' % origin_port
        with registry(tmp, 'origin', origin_port), registry(tmp, 'mirror', mirror_port):
            ck.section('mirrors: the first down, the second serves')
            push_blob('http://127.0.0.1:%d' % mirror_port, REPO, blob_file)
            mirrors = ['http://127.0.0.1:%d' % down_port, 'http://127.0.0.1:%d' % mirror_port]
            cfg = config('mirrors', origin, {origin: {'plain_http': True, 'mirrors': mirrors}})
            mounted_reads_right('through the second mirror', cfg, 'mirrors')

            ck.section('mirrors: one with a damaged copy of the blob')
            # The registry serves what it stores: a byte flipped in its file is served as is.
            push_blob('http://' + origin, REPO, blob_file)
            damaged_port = free_port()
            with registry(tmp, 'damaged', damaged_port):
                push_blob('http://127.0.0.1:%d' % damaged_port, REPO, blob_file)
                stored = os.path.join(tmp, 'damaged', 'data', 'docker', 'registry', 'v2', 'blobs', 'sha256',
                                      blob[:2], blob, 'data')
                with open(stored, 'r+b') as f:
                    f.seek(os.path.getsize(stored) // 2)
                    byte = f.read(1)
                    f.seek(-1, os.SEEK_CUR)
                    f.write(bytes([byte[0] ^ 0xff]))
                cfg = config('damaged', origin, {origin: {'plain_http': True,
                                                          'mirrors': ['http://127.0.0.1:%d' % damaged_port]}})
                with RafsdMount(rafsd, boot, mnt, config=cfg, log_path=os.path.join(tmp, 'damaged.log')) as m:
                    if ck.check(m.start(), 'damaged mirror: rafsd mount', m.log_text()[-2000:]):
                        ck.diffs('damaged mirror: the chunk that fails its digest is read again from the registry',
                                 compare.compare_trees(src, mnt))
                    ck.check(m.stop() == 0, 'damaged mirror: rafsd mount exits 0')
                    ck.check('fetching it again' in m.log_text(), 'damaged mirror: the damaged chunk was seen',
                             m.log_text()[-2000:])

            ck.section('mirrors: a tag is the registry\'s to resolve')
            for port, which in ((origin_port, 'origin'), (mirror_port, 'mirror')):
                layout = os.path.join(tmp, 'layout-' + which)
                one_file_layout(layout, os.path.join(tmp, 'bundle-' + which), 'which', which)
                r = harness.run([mk.path, 'convert', '--plain-http', 'oci:%s:v1' % layout,
                                 '127.0.0.1:%d/test/tagged:v1' % port], timeout=300)
                ck.cmd_ok(r, 'mkrafs convert into the %s' % which)
            tagged = os.path.join(tmp, 'mnt-tagged')
            os.makedirs(tagged)
            # By default the registry says what the tag is; trusted by configuration (a pull-through
            # cache), the mirror does.
            for name, trusted, expected in (('tagged', False, 'origin'), ('tagged-trusted', True, 'mirror')):
                cfg = config(name, origin, {origin: {'plain_http': True, 'mirrors_resolve_tags': trusted,
                                                     'mirrors': ['http://127.0.0.1:%d' % mirror_port]}})
                what = 'mirrors_resolve_tags = %s' % ('true' if trusted else 'false')
                with RafsdMount(rafsd, origin + '/test/tagged:v1', tagged, config=cfg,
                                log_path=os.path.join(tmp, name + '.log')) as m:
                    if ck.check(m.start(), '%s: rafsd mount by reference, with a mirror' % what, m.log_text()[-2000:]):
                        with open(os.path.join(tagged, 'which')) as f:
                            got = f.read()
                        ck.check(got == expected, '%s: the image mounted is the %s\'s' % (what, expected), got)
                    ck.check(m.stop() == 0, '%s: rafsd mount exits 0' % what)

            ck.section('mirrors: one with a damaged copy of the bootstrap layer')
            # The image's bootstrap layer is fetched whole and checked against its digest: a
            # mismatch is that mirror's copy, and the registry's is read instead.
            manifest = json.loads(urllib.request.urlopen(urllib.request.Request(
                'http://%s/v2/test/tagged/manifests/v1' % origin,
                headers={'Accept': 'application/vnd.oci.image.manifest.v1+json'}), timeout=60).read())
            layer = manifest['layers'][-1]['digest']
            data = urllib.request.urlopen('http://%s/v2/test/tagged/blobs/%s' % (origin, layer), timeout=60).read()
            damaged_port = free_port()
            with registry(tmp, 'damaged-boot', damaged_port, access_log=True) as damaged:
                push_data('http://127.0.0.1:%d' % damaged_port, 'test/tagged', data)
                stored = os.path.join(tmp, 'damaged-boot', 'data', 'docker', 'registry', 'v2', 'blobs', 'sha256',
                                      layer[7:9], layer[7:], 'data')
                with open(stored, 'r+b') as f:
                    f.seek(len(data) // 2)
                    byte = f.read(1)
                    f.seek(-1, os.SEEK_CUR)
                    f.write(bytes([byte[0] ^ 0xff]))
                cfg = config('damaged-boot', origin, {origin: {'plain_http': True,
                                                               'mirrors': ['http://127.0.0.1:%d' % damaged_port]}})
                with RafsdMount(rafsd, origin + '/test/tagged:v1', tagged, config=cfg,
                                log_path=os.path.join(tmp, 'damaged-boot.log')) as m:
                    if ck.check(m.start(), 'damaged bootstrap layer at the mirror: rafsd mount by reference',
                                m.log_text()[-2000:]):
                        with open(os.path.join(tagged, 'which')) as f:
                            got = f.read()
                        ck.check(got == 'origin', 'damaged bootstrap layer at the mirror: the image reads right', got)
                    ck.check(m.stop() == 0, 'damaged bootstrap layer at the mirror: rafsd mount exits 0')
                ck.check('GET /v2/test/tagged/blobs/%s' % layer in damaged.log_text(),
                         'damaged bootstrap layer at the mirror: the mirror was asked first', damaged.log_text()[-1000:])

            ck.section('proxy: through it, then direct when it is gone')
            push_blob('http://' + origin, REPO, blob_file)
            proxy_port = free_port()
            proxy = FaultProxy(proxy_port, origin_port, lambda n: 'ok').start()
            sock = os.path.join(tmp, 'proxy.sock')
            cfg = config('proxy', origin, {origin: {'plain_http': True}}, proxy='http://127.0.0.1:%d' % proxy_port)
            with RafsdServe(rafsd, cfg, sock, os.path.join(tmp, 'proxy.log')) as srv:
                try:
                    if ck.check(srv.start(), 'rafsd serve answers', srv.log_text()[-2000:]):
                        r = rafsctl(ctl, sock, 'mount', boot, mnt)
                        if ck.check(r.returncode == 0, 'rafsctl mount (with a proxy)', (r.stderr or b'').decode()):
                            with open(os.path.join(mnt, 'a/two'), 'rb') as f:
                                ck.check(f.read() == open(os.path.join(src, 'a/two'), 'rb').read(), 'a/two reads right')
                            through = sum(proxy.made.values())
                            ck.check(through >= 2, 'requests went through the proxy (%d)' % through)
                            proxy.stop()
                            ck.diffs('the rest, direct', compare.compare_trees(src, mnt))
                            b = ((rafsctl_status(ctl, sock) or {}).get('backends') or [{}])[0]
                            log('  backend status: %r' % b)
                            ck.check(b.get('failures') == 0, 'no read failed')
                            r = rafsctl(ctl, sock, 'umount', mnt)
                            ck.check(r.returncode == 0, 'rafsctl umount', (r.stderr or b'').decode())
                    ck.check(srv.stop() == 0, 'rafsd serve exits 0')
                finally:
                    proxy.stop()

        ck.section('mutual TLS')
        ca = TestCa(os.path.join(tmp, 'ca'))
        cert, key = ca.issue('registry')
        client_cert, client_key = ca.issue('rafsd-client', server=False)
        mtls_port = free_port()
        mtls = '127.0.0.1:%d' % mtls_port
        with registry(tmp, 'mtls', mtls_port, cert, key, client_ca=ca.cert):
            context = ca.context()
            context.load_cert_chain(client_cert, client_key)
            push_blob('https://' + mtls, REPO, blob_file, context)
            cfg = config('mtls', mtls, {mtls: {'ca_file': ca.cert, 'client_cert': client_cert, 'client_key': client_key}})
            mounted_reads_right('with the client certificate', cfg, 'mtls')
            cfg = config('nocert', mtls, {mtls: {'ca_file': ca.cert}})
            expect_error(ck, 'without the client certificate', [rafsd, 'mount', '--config', cfg, boot, mnt], mnt,
                         [blob, mtls])
            cfg = config('tls-as-plain', mtls, {mtls: {'plain_http': True}})
            expect_error(ck, 'http:// to a TLS server', [rafsd, 'mount', '--config', cfg, boot, mnt], mnt,
                         [blob, 'http://%s/v2/' % mtls, 'as a TLS server answers a plain HTTP request', 'plain_http'])

        ck.section('bad servers')
        garbage_port = free_port()
        with GarbageServer(garbage_port):
            host = '127.0.0.1:%d' % garbage_port
            cfg = config('garbage', host, {host: {'plain_http': True}})
            expect_error(ck, 'a server that speaks no HTTP', [rafsd, 'mount', '--config', cfg, boot, mnt], mnt,
                         [blob, 'http://%s/v2/' % host])
        plain_port = free_port()
        with registry(tmp, 'plain', plain_port):
            host = '127.0.0.1:%d' % plain_port
            cfg = config('tlsplain', host)
            expect_error(ck, 'https:// to a plain HTTP server', [rafsd, 'mount', '--config', cfg, boot, mnt], mnt,
                         [blob, 'https://%s/v2/' % host, 'the server answered in plain HTTP', 'plain_http'])

        ck.section('redirects to blob storage on another host')
        reg_port, store_port = free_port(), free_port()
        host = '127.0.0.1:%d' % reg_port
        pw_file = os.path.join(tmp, 'nginx.htpasswd')
        subprocess.run(['htpasswd', '-cbm', pw_file, 'rafs', 'redirect-pw'], check=True, capture_output=True)
        auth_json = os.path.join(tmp, 'redirect-config.json')
        with open(auth_json, 'w') as f:
            json.dump({'auths': {host: {'auth': base64.b64encode(b'rafs:redirect-pw').decode()}}}, f)
        servers = '''
    server {
        listen 127.0.0.1:%(reg)d;
        location ~ "^/v2/%(repo)s/blobs/sha256:(?<blobid>[0-9a-f]{64})$" {
            auth_basic "rafsd-test";
            auth_basic_user_file %(pw)s;
            root %(tmp)s/nothing-here;
            error_page 404 =307 http://127.0.0.1:%(store)d/storage/$blobid?sig=SIGNATURE-x9;
        }
    }
    server {
        listen 127.0.0.1:%(store)d;
        location /storage/ {
            if ($http_authorization) { return 400; }
            if ($arg_sig != "SIGNATURE-x9") { return 403; }
            alias %(blobs)s/;
        }
    }''' % {'reg': reg_port, 'store': store_port, 'repo': REPO, 'pw': pw_file, 'tmp': tmp,
               'blobs': os.path.join(out, 'blobs')}
        with nginx(None, reg_port, tmp, servers=servers):
            cfg = config('redirect', host, {host: {'plain_http': True}}, docker_config=auth_json)
            with RafsdMount(rafsd, boot, mnt, config=cfg, log_path=os.path.join(tmp, 'redirect.log')) as m:
                if ck.check(m.start(), 'rafsd mount (redirecting registry)', m.log_text()[-2000:]):
                    ck.diffs('through the redirect', compare.compare_trees(src, mnt))
                ck.check(m.stop() == 0, 'rafsd mount exits 0')
                ck.check('SIGNATURE-x9' not in m.log_text() and 'redirect-pw' not in m.log_text(),
                         'no signature or password in the log')
            with open(os.path.join(tmp, 'nginx-%d' % reg_port, 'access.log')) as f:
                access = f.read().splitlines()
            asked = [line for line in access if '/v2/' in line and '" 307 ' in line]
            stored = [line for line in access if '/storage/' in line and '" 206 ' in line]
            log('  %d redirects, %d storage range replies' % (len(asked), len(stored)))
            ck.check(stored and len(asked) < len(stored), 'the storage URL is reused (%d redirects for %d ranges)'
                     % (len(asked), len(stored)))
            ck.check(not [line for line in access if '/storage/' in line and ('" 400 ' in line or '" 403 ' in line)],
                     'storage never saw an Authorization header or a missing signature')
    return ck.finish()


if __name__ == '__main__':
    sys.exit(main())
