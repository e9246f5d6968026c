#!/usr/bin/env python3
"""rafsd's registry backend (backend.type = "registry") against Debian's docker-registry on
127.0.0.1, with TLS from a CA the test makes with openssl and htpasswd (Basic) auth; the blobs are
pushed with the plain distribution upload API; fanotify engine:

1. an image served by `rafsd mount` reads back equal to its source; the credentials come from a
   docker config.json, the CA from backend.hosts.<host>.ca_file; the password is in no log line;
   the credentials go with the first request (the registry's access log shows no 401);
2. the same through `rafsd serve`, with the CA found by the /etc/docker/certs.d convention
   (transport.certs_dir = a directory of the test's): `rafsctl status` shows the backend's
   requests and bytes, and neither the password nor the config's auth string;
3. the credentials from a credential helper instead (config.json's credsStore names
   docker-credential-rafstest, a script of the test's on PATH that answers `get` for the host):
   the image reads back equal;
   with an anonymous registry (TLS, no auth) and a credsStore helper that fails, the image reads
   back equal and the helper ran once, not once per request;
4. the mount-time probe: a wrong password, an unknown CA, a blob missing from the repository and
   a registry that is not there each fail the mount with one error line naming it, and nothing
   is mounted.
"""

import json
import os
import shutil
import sys

from rafstest import compare, harness
from rafstest.harness import log
from rafstest.rafsd import (RafsdMount, RafsdServe, expect_error, network_config, rafsctl,
                            small_image, start_test)
from rafstest.rafsimage import Pusher
from rafstest.servers import basic_auth, docker_config, free_port, htpasswd_registry, push_blob, registry

MiB = 1 << 20
FILES = [('usr/bin/tool', 2 * MiB + 5), ('usr/lib/big', 6 * MiB), ('etc/conf', 1234), ('var/empty', 0)]
USER, PASSWORD = 'rafs', 'pw-Zq8-secret'
REPO = 'test/img'


def registry_config(tmp, name, host, docker_cfg, ca_file=None, certs_dir=None, repo=REPO):
    sections = {'backend.registry': {'host': host, 'repo': repo, 'docker_config': docker_cfg},
                'backend.transport': {'retries': 1, 'backoff_base_ms': 10, 'timeout': 30,
                                      'certs_dir': certs_dir or os.path.join(tmp, 'no-certs.d')}}
    if ca_file:
        sections['backend.hosts."%s"' % host] = {'ca_file': ca_file}
    return network_config(tmp, name, {'type': 'registry'}, **sections)


def main():
    args, mk, rafsd, ctl, ck = start_test('rafsd_registry', __doc__, tools=('docker-registry', 'openssl', 'htpasswd'))
    with harness.temp_dir('rafsd-registry-', keep=args.keep) as tmp:
        image = small_image(ck, mk, tmp, FILES, 11)
        if image is None:
            return ck.finish()
        _, boot, blob, mnt = image
        src, out = os.path.join(tmp, 'src'), os.path.join(tmp, 'out')
        server, host, ca = htpasswd_registry(tmp, {USER: PASSWORD}, access_log=True)
        with server:
            digest = push_blob('https://' + host, REPO, os.path.join(out, 'blobs', blob), ca.context(),
                               basic_auth(USER, PASSWORD))
            ck.check(digest == 'sha256:' + blob, 'blob pushed as sha256:<blob id>')
            cfg_json = os.path.join(tmp, 'docker-config.json')
            auth_string = docker_config(cfg_json, host, USER, PASSWORD)

            ck.section('rafsd mount: TLS with the test CA, Basic auth from config.json')
            cfg = registry_config(tmp, 'mount', host, cfg_json, ca_file=ca.cert)
            with RafsdMount(rafsd, boot, mnt, config=cfg, log_path=os.path.join(tmp, 'mount.log')) as m:
                if ck.check(m.start(), 'rafsd mount', m.log_text()[-2000:]):
                    ck.diffs('tree through the registry', compare.compare_trees(src, mnt))
                ck.check(m.stop() == 0, 'rafsd mount exits 0')
                text = m.log_text()
                ck.check(PASSWORD not in text and auth_string not in text, 'the password is in no log line')
            # The credentials went with the first request: no request was answered 401 first.
            refused = [line for line in server.log_text().splitlines() if '" 401 ' in line]
            ck.check(not refused, 'no request of rafsd was answered 401 (credentials sent at once)',
                     '\n'.join(refused[:5]))

            ck.section('credentials from a credential helper (credsStore)')
            bin_dir = os.path.join(tmp, 'bin')
            os.makedirs(bin_dir)
            helper = os.path.join(bin_dir, 'docker-credential-rafstest')
            with open(helper, 'w') as f:
                f.write('#!/bin/sh\n[ "$1" = get ] || exit 2\nread host\n'
                        'if [ "$host" = "%s" ]; then echo \'{"ServerURL":"%s","Username":"%s","Secret":"%s"}\'\n'
                        'else echo "credentials not found in native keychain"; exit 1; fi\n'
                        % (host, host, USER, PASSWORD))
            os.chmod(helper, 0o755)
            helper_json = os.path.join(tmp, 'helper-config.json')
            with open(helper_json, 'w') as f:
                json.dump({'credsStore': 'rafstest'}, f)
            os.environ['PATH'] = bin_dir + ':' + os.environ.get('PATH', '')
            cfg = registry_config(tmp, 'helper', host, helper_json, ca_file=ca.cert)
            with RafsdMount(rafsd, boot, mnt, config=cfg, log_path=os.path.join(tmp, 'helper.log')) as m:
                if ck.check(m.start(), 'rafsd mount (credentials from docker-credential-rafstest)', m.log_text()[-2000:]):
                    ck.diffs('tree with the helper\'s credentials', compare.compare_trees(src, mnt))
                ck.check(m.stop() == 0, 'rafsd mount exits 0')
                ck.check(PASSWORD not in m.log_text(), 'the password is in no log line')

            ck.section('an anonymous registry and a credential helper that fails: run once, not per request')
            anon_port = free_port()
            anon_host = '127.0.0.1:%d' % anon_port
            cert, key = ca.issue('anon')
            calls = os.path.join(tmp, 'broken-helper-calls')
            broken = os.path.join(bin_dir, 'docker-credential-rafsbroken')
            with open(broken, 'w') as f:
                f.write('#!/bin/sh\necho "$1" >> %s\necho "keychain locked" >&2\nexit 3\n' % calls)
            os.chmod(broken, 0o755)
            broken_json = os.path.join(tmp, 'broken-config.json')
            with open(broken_json, 'w') as f:
                json.dump({'credsStore': 'rafsbroken'}, f)
            with registry(tmp, 'anon', anon_port, cert, key):
                push_blob('https://' + anon_host, REPO, os.path.join(out, 'blobs', blob), ca.context())
                cfg = registry_config(tmp, 'anon', anon_host, broken_json, ca_file=ca.cert)
                with RafsdMount(rafsd, boot, mnt, config=cfg, log_path=os.path.join(tmp, 'anon.log')) as m:
                    if ck.check(m.start(), 'rafsd mount (anonymous registry, failing helper)', m.log_text()[-2000:]):
                        ck.diffs('tree from the anonymous registry', compare.compare_trees(src, mnt))
                    ck.check(m.stop() == 0, 'rafsd mount exits 0')
                with open(calls) as f:
                    runs = len(f.read().split())
                ck.check(runs == 1, 'the failing helper ran once for the whole mount and read (%d runs)' % runs)

            ck.section('rafsd serve: the CA from <certs_dir>/<host>/ca.crt, status')
            certs_dir = os.path.join(tmp, 'certs.d')
            os.makedirs(os.path.join(certs_dir, host))
            shutil.copy(ca.cert, os.path.join(certs_dir, host, 'ca.crt'))
            cfg = registry_config(tmp, 'serve', host, cfg_json, certs_dir=certs_dir)
            sock = os.path.join(tmp, 'serve.sock')
            with RafsdServe(rafsd, cfg, sock, os.path.join(tmp, 'serve.log')) as srv:
                if ck.check(srv.start(), 'rafsd serve answers', srv.log_text()[-2000:]):
                    r = rafsctl(ctl, sock, 'mount', boot, mnt)
                    if ck.check(r.returncode == 0, 'rafsctl mount (backend registry)', (r.stderr or b'').decode()):
                        ck.diffs('tree through the registry (serve)', compare.compare_trees(src, mnt))
                        r = rafsctl(ctl, sock, 'status', '--json')
                        raw = (r.stdout or b'').decode()
                        status = json.loads(raw) if r.returncode == 0 else {}
                        b = (status.get('backends') or [{}])[0]
                        log('  backend status: %r' % b)
                        ck.check(b.get('backend') == 'registry:https://%s/%s' % (host, REPO), 'status names the registry')
                        ck.check(b.get('requests', 0) >= 2 and b.get('bytes', 0) >= sum(s for _, s in FILES),
                                 'requests and bytes counted')
                        ck.check(PASSWORD not in raw and auth_string not in raw, 'no secret in the status')
                        # The same repository by image reference: one backend, not a second of one name.
                        Pusher('https://' + host, REPO, ca.context(), basic_auth(USER, PASSWORD)).rafs_image(
                            'v1', boot, [os.path.join(out, 'blobs', blob)])
                        by_ref = mnt + '-by-reference'
                        os.makedirs(by_ref, exist_ok=True)
                        r = rafsctl(ctl, sock, 'mount', '%s/%s:v1' % (host, REPO), by_ref)
                        if ck.check(r.returncode == 0, 'rafsctl mount of the repository by reference',
                                    (r.stderr or b'').decode()):
                            ck.diffs('tree by reference (serve)', compare.compare_trees(src, by_ref))
                            r = rafsctl(ctl, sock, 'status', '--json')
                            status = json.loads((r.stdout or b'{}').decode()) if r.returncode == 0 else {}
                            backends = status.get('backends') or []
                            ck.check(len(backends) == 1 and backends[0].get('requests', 0) > b.get('requests', 0),
                                     'status lists one registry backend, which served both mounts', repr(backends))
                            r = rafsctl(ctl, sock, 'umount', by_ref)
                            ck.check(r.returncode == 0, 'rafsctl umount (by reference)', (r.stderr or b'').decode())
                        r = rafsctl(ctl, sock, 'umount', mnt)
                        ck.check(r.returncode == 0, 'rafsctl umount', (r.stderr or b'').decode())
                ck.check(srv.stop() == 0, 'rafsd serve exits 0')
                text = srv.log_text()
                ck.check(PASSWORD not in text and auth_string not in text, 'the password is in no log line (serve)')

            ck.section('the mount-time probe: one error naming the problem, nothing mounted')

            def mount_cmd(cfg):
                return [rafsd, 'mount', '--config', cfg, boot, mnt]

            wrong_json = os.path.join(tmp, 'wrong-config.json')
            docker_config(wrong_json, host, USER, 'not-the-password')
            expect_error(ck, 'a wrong password', mount_cmd(registry_config(tmp, 'wrong', host, wrong_json, ca_file=ca.cert)),
                         mnt, [blob, host, 'refused', wrong_json])
            none_json = os.path.join(tmp, 'empty-config.json')
            with open(none_json, 'w') as f:
                f.write('{}')
            expect_error(ck, 'no credentials', mount_cmd(registry_config(tmp, 'nocreds', host, none_json, ca_file=ca.cert)),
                         mnt, [blob, host, 'credentials', none_json])
            expect_error(ck, 'an unknown CA', mount_cmd(registry_config(tmp, 'noca', host, cfg_json)), mnt,
                         [blob, host, 'certificate'])
            expect_error(ck, 'a blob missing from the repository',
                         mount_cmd(registry_config(tmp, 'norepo', host, cfg_json, ca_file=ca.cert, repo='test/other')),
                         mnt, [blob, 'test/other', '404'])
            down = '127.0.0.1:%d' % free_port()
            expect_error(ck, 'a registry that is not there',
                         mount_cmd(registry_config(tmp, 'down', down, cfg_json, ca_file=ca.cert)), mnt, [blob, down])
    return ck.finish()


if __name__ == '__main__':
    sys.exit(main())
