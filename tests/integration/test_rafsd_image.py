#!/usr/bin/env python3
"""Mount by image reference: `rafsd mount HOST:PORT/REPO:TAG MNT` and `rafsctl mount IMAGE MNT`
against Debian's docker-registry on 127.0.0.1 (TLS with the test's CA, htpasswd auth), fanotify
engine. The RAFS image is pushed the way Nydus lays one out (rafstest/rafsimage.py): `mkrafs
build` of a small tree, its blob, a bootstrap layer (tar.gz holding image/image.boot), a config
and the manifest; tag `v1` is an index holding an ordinary OCI image and the RAFS one for this
host's platform, marked as nydusify marks it, and a RAFS image for another platform.
backend.type is localfs: a mount by image uses the registry whatever it says.

1. `rafsd mount HOST/REPO:v1` resolves the index to the RAFS manifest, keeps the bootstrap in
   state_dir/images/sha256-<manifest hex>/ and reads every file equal to the source; the time to
   mount is printed;
2. a second mount of the same manifest (tag `direct`, the manifest itself) reuses that copy: no
   bootstrap fetched, the kept files untouched; a bootstrap layer that is a plain tar mounts too;
3. `rafsd serve` + `rafsctl mount IMAGE`: list shows the reference; after kill -9 of the worker the
   next one takes the mount over from the mount table (reference and manifest digest) and the
   files not yet read come from the registry; `rafsctl gc` leaves the mounted image's kept
   bootstrap alone, and once it is unmounted `gc --dry-run` names it, `gc` removes it and a new
   mount fetches it again; `rafsd mount` of a tag that is then moved to another
   image, kill -9 of its worker: the next worker serves the image the kernel has mounted;
4. bad input, each one error line naming it, nothing mounted, nothing left in the state dir: an
   unknown tag, an ordinary OCI image, no manifest for this platform, a bootstrap layer whose
   bytes do not match its digest, a tar without image/image.boot, garbage gzip, an encrypted
   bootstrap layer, a tar+gzip data layer, a reference that is not one.
"""

import json
import os
import random
import signal
import sys
import time

from rafstest import compare, harness
from rafstest.harness import log, wait_for
from rafstest.boot import blob_ids
from rafstest.rafsd import (RafsdMount, RafsdServe, children, expect_error, make_small_tree, network_config, rafsctl,
                            small_image, start_test, worker_of)
from rafstest.rafsimage import OCI_TAR_GZIP, Pusher, bootstrap_layer, host_arch
from rafstest.servers import basic_auth, docker_config, htpasswd_registry

MiB = 1 << 20
FILES = [('usr/bin/tool', 2 * MiB + 5), ('usr/lib/big', 5 * MiB), ('etc/conf', 1234), ('var/empty', 0),
         ('opt/late', 3 * MiB + 77)]
USER, PASSWORD = 'rafs', 'pw-image-secret'
REPO = 'test/app'
OTHER_ARCH = 's390x' if host_arch() != 's390x' else 'riscv64'


def image_config(tmp, name, host, docker_cfg, ca_file, cache=None):
    """A daemon config whose backend.type is localfs; the registry's CA and credentials are set."""
    return network_config(tmp, name, {'type': 'localfs'}, cache=cache or {},
                          **{'backend.localfs': {'dir': os.path.join(tmp, 'no-blobs')},
                             'backend.registry': {'docker_config': docker_cfg},
                             'backend.transport': {'retries': 1, 'backoff_base_ms': 10, 'timeout': 30,
                                                   'certs_dir': os.path.join(tmp, 'no-certs.d')},
                             'backend.hosts."%s"' % host: {'ca_file': ca_file}})


def mount_image(ck, rafsd, ref, mnt, cfg, src, log_path):
    """`rafsd mount REF MNT`: mounted, timed, the tree compared with `src`, stopped; its log."""
    with RafsdMount(rafsd, ref, mnt, config=cfg, log_path=log_path) as m:
        began = time.monotonic()
        if ck.check(m.start(), 'rafsd mount ' + ref, m.log_text()[-2000:]):
            log('  time to mount %s: %.0f ms' % (ref, (time.monotonic() - began) * 1000))
            ck.diffs('tree of %s' % ref, compare.compare_trees(src, mnt))
        ck.check(m.stop() == 0, 'rafsd mount exits 0')
        return m.log_text()


def state_entries(tmp, name):
    d = os.path.join(tmp, name + '-state', 'images')
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def gc_keeps_mounted(ck, ctl, sock, kept, mnt, src):
    """rafsctl gc while the image is mounted: its kept bootstrap stays (the mount table lists it)."""
    r = rafsctl(ctl, sock, 'gc')
    out = (r.stdout or b'').decode()
    ck.check(r.returncode == 0 and 'bootstrap of image' not in out, 'rafsctl gc while mounted removes no bootstrap', out)
    ck.check(os.path.exists(os.path.join(kept, 'image.boot')), 'the mounted image\'s kept bootstrap stays')
    ck.diffs('tree after gc', compare.compare_trees(src, mnt))


def gc_removes_unmounted(ck, ctl, sock, kept, digest, ref, mnt, src):
    """Unmounted: rafsctl gc --dry-run names the kept bootstrap and leaves it, rafsctl gc removes it,
    a new mount of the image fetches it again."""
    r = rafsctl(ctl, sock, 'gc', '--dry-run')
    out = (r.stdout or b'').decode()
    log(out)
    ck.check(r.returncode == 0 and 'would remove bootstrap of image %s' % digest in out,
             'rafsctl gc --dry-run names the unmounted image\'s kept bootstrap', out + (r.stderr or b'').decode())
    ck.check(os.path.exists(os.path.join(kept, 'image.boot')), 'and leaves it')
    r = rafsctl(ctl, sock, 'gc')
    out = (r.stdout or b'').decode()
    ck.check(r.returncode == 0 and 'removed bootstrap of image %s' % digest in out, 'rafsctl gc removes it',
             out + (r.stderr or b'').decode())
    left = os.listdir(os.path.dirname(kept))
    ck.check(left == [], 'nothing is left in state_dir/images', repr(left))
    r = rafsctl(ctl, sock, 'mount', ref, mnt)
    if ck.check(r.returncode == 0, 'rafsctl mount %s again' % ref, (r.stderr or b'').decode()):
        ck.check(os.path.exists(os.path.join(kept, 'image.boot')), 'its bootstrap is fetched and kept again')
        ck.diffs('tree of the new mount', compare.compare_trees(src, mnt))
        r = rafsctl(ctl, sock, 'umount', mnt)
        ck.check(r.returncode == 0, 'rafsctl umount', (r.stderr or b'').decode())


def main():
    args, mk, rafsd, ctl, ck = start_test('rafsd_image', __doc__, tools=('docker-registry', 'openssl', 'htpasswd'))
    with harness.temp_dir('rafsd-image-', keep=args.keep) as tmp:
        image = small_image(ck, mk, tmp, FILES, 17)
        if image is None:
            return ck.finish()
        _, boot, blob, mnt = image
        src, out = os.path.join(tmp, 'src'), os.path.join(tmp, 'out')
        blob_path = os.path.join(out, 'blobs', blob)
        server, host, ca = htpasswd_registry(tmp, {USER: PASSWORD})
        with server:
            push = Pusher('https://' + host, REPO, ca.context(), basic_auth(USER, PASSWORD))
            rafs_digest, rafs_size = push.rafs_image('direct', boot, [blob_path])
            plain_digest, plain_size = push.oci_image('plain', {'etc/os-release': b'ID=test\n'})
            push.index('v1', [(plain_digest, plain_size, host_arch(), False), (rafs_digest, rafs_size, host_arch(), True),
                              (rafs_digest, rafs_size, OTHER_ARCH, True)])
            log('RAFS manifest %s, index tagged v1' % rafs_digest)
            cfg_json = os.path.join(tmp, 'docker-config.json')
            docker_config(cfg_json, host, USER, PASSWORD)
            kept_dir = os.path.join(tmp, 'mount-state', 'images', 'sha256-' + rafs_digest.split(':')[1])

            ck.section('rafsd mount HOST/REPO:v1 (an index): resolved, bootstrap kept, every file equal')
            cfg = image_config(tmp, 'mount', host, cfg_json, ca.cert)
            text = mount_image(ck, rafsd, '%s/%s:v1' % (host, REPO), mnt, cfg, src, os.path.join(tmp, 'mount1.log'))
            with open(os.path.join(kept_dir, 'image.boot'), 'rb') as f, open(boot, 'rb') as g:
                ck.check(f.read() == g.read(), 'state_dir/images/sha256-<manifest>/image.boot is the bootstrap')
            ck.check(state_entries(tmp, 'mount') == [os.path.basename(kept_dir)], 'one image kept, no temporary',
                     repr(state_entries(tmp, 'mount')))
            ck.check('bootstrap of' in text, 'the first mount fetched the bootstrap layer')
            ck.check(PASSWORD not in text, 'the password is in no log line')

            ck.section('a second mount of the same manifest (tag direct) reuses the kept bootstrap')
            before = os.stat(os.path.join(kept_dir, 'image.json')).st_mtime_ns
            text = mount_image(ck, rafsd, '%s/%s:direct' % (host, REPO), mnt, cfg, src, os.path.join(tmp, 'mount2.log'))
            ck.check('bootstrap of' not in text, 'no bootstrap fetched the second time', text[-1500:])
            ck.check(os.stat(os.path.join(kept_dir, 'image.json')).st_mtime_ns == before, 'the kept copy untouched')

            push.rafs_image('plain-tar', boot, [blob_path], layer=bootstrap_layer(boot, compress=False),
                            bootstrap_media_type='application/vnd.oci.image.layer.v1.tar')
            mount_image(ck, rafsd, '%s/%s:plain-tar' % (host, REPO), mnt, cfg, src, os.path.join(tmp, 'mount3.log'))

            ck.section('rafsd serve + rafsctl mount IMAGE; kill -9 of the worker, the next one takes it over')
            # keep_recent 0: rafsctl gc may take a kept bootstrap as soon as no mount needs it.
            cfg = image_config(tmp, 'serve', host, cfg_json, ca.cert, cache={'keep_recent': 0})
            served_kept = os.path.join(tmp, 'serve-state', 'images', os.path.basename(kept_dir))
            sock = os.path.join(tmp, 'serve.sock')
            ref = '%s/%s:v1' % (host, REPO)
            with RafsdServe(rafsd, cfg, sock, os.path.join(tmp, 'serve.log')) as srv:
                if ck.check(srv.start(), 'rafsd serve answers', srv.log_text()[-2000:]):
                    r = rafsctl(ctl, sock, 'mount', ref, mnt)
                    if ck.check(r.returncode == 0, 'rafsctl mount ' + ref, (r.stderr or b'').decode()):
                        r = rafsctl(ctl, sock, 'list')
                        ck.check(ref in (r.stdout or b'').decode(), 'rafsctl list shows the reference',
                                 (r.stdout or b'').decode())
                        with open(os.path.join(mnt, 'usr/bin/tool'), 'rb') as f, \
                                open(os.path.join(src, 'usr/bin/tool'), 'rb') as g:
                            ck.check(f.read() == g.read(), 'usr/bin/tool reads back before the kill')
                        table = json.load(open(os.path.join(tmp, 'serve-state', 'mounts.json')))
                        rec = (table.get('mounts') or [{}])[0]
                        ck.check(rec.get('image') == ref and rec.get('manifest_digest') == rafs_digest,
                                 'the mount table records the reference and the manifest digest', repr(rec))
                        workers = wait_for(lambda: children(srv.proc.pid), timeout=30)
                        if ck.check(workers is not None, 'rafsd serve has a worker'):
                            worker = workers[0]  # the supervisor's first child, as worker_of() takes it
                            os.kill(worker, signal.SIGKILL)
                            second = wait_for(lambda: [p for p in children(srv.proc.pid) if p != worker])
                            ck.check(second is not None, 'the supervisor started another worker')
                            ck.check(wait_for(lambda: 'reattached' in srv.log_text()) is not None,
                                     'the new worker reattached the image', srv.log_text()[-2000:])
                            ck.diffs('tree after the takeover (the rest from the registry)', compare.compare_trees(src, mnt))
                            r = rafsctl(ctl, sock, 'status', '--json')
                            status = json.loads((r.stdout or b'{}').decode()) if r.returncode == 0 else {}
                            img = (status.get('images') or [{}])[0]
                            ck.check(img.get('manifest') == rafs_digest, 'status names the manifest', repr(img))
                            names = [b.get('backend') for b in status.get('backends') or []]
                            ck.check('registry:https://%s/%s' % (host, REPO) in names, 'status shows the registry backend',
                                     repr(names))
                        gc_keeps_mounted(ck, ctl, sock, served_kept, mnt, src)
                        r = rafsctl(ctl, sock, 'umount', mnt)
                        ck.check(r.returncode == 0, 'rafsctl umount', (r.stderr or b'').decode())
                        gc_removes_unmounted(ck, ctl, sock, served_kept, rafs_digest, ref, mnt, src)
                    r = rafsctl(ctl, sock, 'mount', '%s/%s:nope' % (host, REPO), mnt)
                    err = (r.stderr or b'').decode().strip()
                    ck.check(r.returncode != 0 and 'nope' in err and len(err.splitlines()) == 1,
                             'rafsctl mount of an unknown tag: one error line', err)
                    ck.check(not os.path.ismount(mnt), 'rafsctl: nothing mounted')
                ck.check(srv.stop() == 0, 'rafsd serve exits 0')

            ck.section('rafsd mount by a tag that moves, kill -9 of the worker: the next one serves what is mounted')
            cfg = image_config(tmp, 'moving', host, cfg_json, ca.cert)  # a cold cache: reads go to the worker
            src2, out2 = os.path.join(tmp, 'src2'), os.path.join(tmp, 'out2')
            make_small_tree(src2, FILES, seed=23)
            if ck.cmd_ok(mk.build(out2, [src2]), 'mkrafs build of a second image'):
                boot2 = os.path.join(out2, 'image.boot')
                blobs2 = [os.path.join(out2, 'blobs', b) for b in blob_ids(boot2)]
                push.rafs_image('moving', boot, [blob_path])
                ref = '%s/%s:moving' % (host, REPO)
                with RafsdMount(rafsd, ref, mnt, config=cfg, log_path=os.path.join(tmp, 'moving.log')) as m:
                    if ck.check(m.start(), 'rafsd mount ' + ref, m.log_text()[-2000:]):
                        with open(os.path.join(mnt, 'etc/conf'), 'rb') as f, open(os.path.join(src, 'etc/conf'), 'rb') as g:
                            ck.check(f.read() == g.read(), 'etc/conf reads back before the tag moves')
                        push.rafs_image('moving', boot2, blobs2)
                        worker = worker_of(m.proc.pid)
                        os.kill(worker, signal.SIGKILL)
                        ck.check(wait_for(lambda: 'reattached' in m.log_text()) is not None,
                                 'the next worker reattached the mount', m.log_text()[-2000:])
                        ck.diffs('tree after the tag moved and the worker died: still the mounted image',
                                 compare.compare_trees(src, mnt))
                    ck.check(m.stop() == 0, 'rafsd mount exits 0')
                left = os.listdir(os.path.join(tmp, 'moving-state'))
                ck.check(not [n for n in left if n.startswith('mount-')], 'no table of the rafsd mount left after it stopped',
                         repr(left))

            ck.section('bad input: one error line, nothing mounted, nothing left in the state dir')
            bad_cfg = image_config(tmp, 'bad', host, cfg_json, ca.cert)

            def bad(what, tag, must_contain):
                expect_error(ck, what, [rafsd, 'mount', '--config', bad_cfg, '%s/%s:%s' % (host, REPO, tag), mnt], mnt,
                             must_contain)
                ck.check(state_entries(tmp, 'bad') == [], '%s: nothing in state_dir/images' % what,
                         repr(state_entries(tmp, 'bad')))

            bad('an unknown tag', 'nope', ['nope', 'no such manifest'])
            bad('an ordinary OCI image', 'plain', ['ordinary OCI image', 'mkrafs convert'])
            push.index('other-arch', [(rafs_digest, rafs_size, OTHER_ARCH, True)])
            bad('no manifest for this platform', 'other-arch', ['no manifest for linux/' + host_arch(), OTHER_ARCH])
            layer, tar_digest = bootstrap_layer(boot)
            push.blob(layer)
            cut = push.rafs_image(None, boot, [blob_path], layer=(layer, tar_digest))
            # The same layer, its descriptor claiming one byte less: what is read does not hash to it.
            manifest = json.loads(push_get_manifest(push, cut[0]))
            manifest['layers'][-1]['size'] -= 1
            push.manifest('cut', manifest)
            bad('a bootstrap layer that does not match its digest', 'cut', ['digest mismatch'])
            push.rafs_image('no-boot', boot, [blob_path], layer=bootstrap_layer(boot, path='image/other.boot'))
            bad('a tar without image/image.boot', 'no-boot', ['image/image.boot'])
            garbage = b'\x1f\x8b\x08\x00' + random.Random(5).randbytes(4000)
            push.rafs_image('garbage', boot, [blob_path], layer=(garbage, 'sha256:' + '0' * 64))
            bad('garbage gzip', 'garbage', ['bootstrap layer'])
            encrypted = 'application/vnd.oci.image.layer.v1.tar+gzip+encrypted'
            push.rafs_image('encrypted', boot, [blob_path], bootstrap_media_type=encrypted)
            bad('an encrypted bootstrap layer', 'encrypted', [encrypted, 'does not handle'])
            push.rafs_image('tar-data', boot, [blob_path], blob_media_type=OCI_TAR_GZIP)
            bad('a tar+gzip data layer', 'tar-data', [OCI_TAR_GZIP, 'does not handle'])
            expect_error(ck, 'a path that is not there and no reference', [rafsd, 'mount', '--config', bad_cfg,
                                                                           os.path.join(tmp, 'missing.boot'), mnt],
                         mnt, ['missing.boot', 'no such file'])
    return ck.finish()


def push_get_manifest(push, digest):
    """The bytes of manifest `digest` as the registry serves them."""
    import urllib.request
    req = urllib.request.Request('%s/v2/%s/manifests/%s' % (push.base, push.repo, digest),
                                 headers=dict(push.headers, Accept='application/vnd.oci.image.manifest.v1+json'))
    with urllib.request.urlopen(req, context=push.context, timeout=30) as r:
        return r.read()


if __name__ == '__main__':
    sys.exit(main())
