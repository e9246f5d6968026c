#!/usr/bin/env python3
"""containerd 1.6 and runc from Debian driven through CRI v1 (a gRPC client of the test's own,
rafstest/cri_v1.proto), every component started by the test as root with its own directories:
docker-registry on 127.0.0.1 with TLS and htpasswd auth holding a small image built with umoci
from busybox-static (rafstest/appimage.py), and the pod sandbox image from the same registry.

1. plain OCI image through CRI with overlayfs (containerd's own snapshotter): Version answers;
   PullImage downloads every layer into containerd's content store; RunPodSandbox (host network),
   then CreateContainer / StartContainer: a container prints a file of the image, a script of the
   image runs, a container reads the image's large file whole (sha256 equal); StopPodSandbox /
   RemovePodSandbox leave no container mount; RemoveImage removes the image.
2. RAFS image (`mkrafs convert`ed) through CRI with rafs-snapshotter and `rafsd serve`:
   PullImage; a container prints a file of the image and a program of the image runs; no layer
   of the image in containerd's content store; rafsd fetched under half of the data blobs;
   rafs-snapshotter and rafsd's worker killed (-9) and restarted while a container runs: it reads
   the image's large file correctly (ExecSync), a new container starts; after RemoveContainer,
   RemovePodSandbox and RemoveImage no mount is left and rafsd serves no image.
   --rafs-snapshotter (or $RAFS_SNAPSHOTTER) names the program; without it the test fails.
"""

import os
import signal
import time

from rafstest import harness
from rafstest.appimage import GREETING, make_images
from rafstest.containerd import Containerd, RafsSnapshotter, registry_access
from rafstest.oci import ImageRegistry
from rafstest.harness import log, wait_for
from rafstest.rafsd import RafsdServe, children, network_config, rafsctl_status, start_test

TOOLS = ('containerd', 'containerd-shim-runc-v2', 'runc', 'ctr', 'protoc', 'grpc_python_plugin',
         'docker-registry', 'skopeo', 'umoci', 'htpasswd', 'openssl')


def layer_digests(reg, repo, tag):
    return [l['digest'] for l in reg.manifest(repo, tag)['layers']]


def container_mounts(ctd):
    """Mounts of container root file systems (and the sandboxes' shm) under containerd's dirs."""
    return [m for m in ctd.mounts() if m.endswith('/rootfs') or m.endswith('/shm')]


def run_and_check(ck, cri, pod, label, name, image, command, want):
    """Runs a container to its exit; checks exit 0 and that `want` is in its output."""
    code, out = cri.run(pod, name, image, command)
    ck.check(code == 0 and want in out, '%s: %s prints %r' % (label, ' '.join(command), want.strip()),
             'exit %s, output %r' % (code, out[-500:]))


def oci_overlayfs_section(ck, tmp, reg, pause, app, big_sha):
    label = 'overlayfs'
    with Containerd(os.path.join(tmp, 'containerd-overlayfs'), registry_access(reg), pause) as ctd:
        ctd.start()
        cri = ctd.cri()
        v = cri.version()
        ck.check(v.runtime_name == 'containerd' and v.runtime_api_version == 'v1',
                 '%s: CRI Version: %s %s, API %s' % (label, v.runtime_name, v.runtime_version, v.runtime_api_version))
        image_id = cri.pull(app)
        ck.ok('%s: PullImage %s -> %s' % (label, app, image_id))
        layers = layer_digests(reg, 'test/app', 'app')
        stored = ctd.content_blobs()
        ck.check(all(d in stored for d in layers),
                 '%s: all %d layers were downloaded into the content store' % (label, len(layers)))
        pod = cri.run_pod('oci-pod')
        ck.ok('%s: RunPodSandbox (host network) -> %s' % (label, pod[:12]))
        try:
            run_and_check(ck, cri, pod, label, 'greeting', app, ['/bin/cat', '/etc/rafs-test/greeting'], GREETING)
            run_and_check(ck, cri, pod, label, 'hello', app, ['/usr/bin/rafs-hello'],
                          'rafs-hello ran as %d bytes' % len(GREETING))
            run_and_check(ck, cri, pod, label, 'big', app, ['/bin/sha256sum', '/data/big'], big_sha)
            ck.check(len([m for m in ctd.mounts() if m.endswith('/rootfs')]) == 1,
                     '%s: only the sandbox rootfs stays mounted once the containers are removed' % label,
                     repr(ctd.mounts()))
        finally:
            cri.stop_pod(pod)
            cri.remove_pod(pod)
        ck.check(container_mounts(ctd) == [], '%s: no container mount left after RemovePodSandbox' % label,
                 repr(container_mounts(ctd)))
        cri.remove_image(app)
        ck.check(not any(app in img.repo_tags for img in cri.list_images()),
                 '%s: RemoveImage: the image is gone from ListImages' % label)


def fetched(status):
    return sum(b.get('bytes_fetched', 0) for img in (status or {}).get('images', []) for b in img.get('blobs', []))


def rafs_snapshotter_section(ck, tmp, reg, pause, app, big_sha, snapshotter, mk, rafsd, rafsctl_bin):
    """The same through rafs-snapshotter (containerd's [proxy_plugins.rafs], CRI snapshotter
    "rafs") with the mkrafs-converted image: PullImage; the container prints a file and a program
    of the image runs; the data blobs never enter containerd's content store; rafsd fetched only
    part of them; rafs-snapshotter (kill -9) and rafsd's worker (kill -9, its supervisor starts
    another) restarted while a container runs: it reads the large file correctly, a new container
    starts; RemoveContainer, RemovePodSandbox, RemoveImage: no mount left under the snapshotter's
    root, rafsd serves no image."""
    if not snapshotter:
        ck.fail('rafs-snapshotter not given (--rafs-snapshotter or $RAFS_SNAPSHOTTER): section 2 cannot run')
        return
    label = 'rafs'
    image = reg.ref('rafs/app', 'v1')
    reg.convert(mk.path, app, image)
    layers = reg.manifest('rafs/app', 'v1')['layers']
    blobs = layers[:-1]
    blob_bytes = sum(l['size'] for l in blobs)
    cfg = network_config(tmp, 'rafsd', {'type': 'localfs'},
                         **{'backend.registry': {'docker_config': reg.auth_file},
                            'backend.transport': {'certs_dir': reg.certs_dir, 'retries': 1}})
    rafsd_sock = os.path.join(tmp, 'rafsd.sock')
    sn_root = os.path.join(tmp, 'snapshotter')
    sn_sock = os.path.join(tmp, 'snapshotter.sock')
    with RafsdServe(rafsd, cfg, rafsd_sock, os.path.join(tmp, 'rafsd.log')) as srv, \
            RafsSnapshotter(snapshotter, cfg, sn_root, sn_sock, os.path.join(tmp, 'snapshotter.log')) as sn, \
            Containerd(os.path.join(tmp, 'containerd-rafs'), registry_access(reg), pause, snapshotter='rafs',
                       rafs_socket=sn_sock) as ctd:
        if not ck.check(srv.start(), 'rafsd serve starts', srv.log_text()[-2000:]):
            return
        sn.start()
        ctd.start()
        cri = ctd.cri()
        began = time.monotonic()
        cri.pull(image)
        ck.ok('%s: PullImage %s (%.1fs)' % (label, image, time.monotonic() - began))
        stored = ctd.content_blobs()
        ck.check(not any(l['digest'] in stored for l in layers),
                 '%s: no layer of the image in containerd\'s content store (%d items there)' % (label, len(stored)))
        pod = cri.run_pod('rafs-pod')
        long_id = None
        try:
            run_and_check(ck, cri, pod, label, 'greeting', image, ['/bin/cat', '/etc/rafs-test/greeting'], GREETING)
            run_and_check(ck, cri, pod, label, 'hello', image, ['/usr/bin/rafs-hello'],
                          'rafs-hello ran as %d bytes' % len(GREETING))
            got = fetched(rafsctl_status(rafsctl_bin, rafsd_sock))
            ck.check(0 < got < blob_bytes // 2, '%s: rafsd fetched %d of %d data blob bytes' % (label, got, blob_bytes))

            long_id = cri.create(pod, 'long', image, ['/bin/sleep', '600'])
            cri.start(long_id)
            sn.restart()
            ck.ok('%s: rafs-snapshotter killed (-9) and started again while a container runs' % label)
            worker = children(srv.proc.pid)
            if ck.check(len(worker) == 1, '%s: rafsd serve has a worker' % label):
                os.kill(worker[0], signal.SIGKILL)
                ck.check(wait_for(lambda: [p for p in children(srv.proc.pid) if p != worker[0]]),
                         '%s: rafsd\'s worker killed (-9), its supervisor started another' % label)
            code, out, err = cri.exec_sync(long_id, ['/bin/sha256sum', '/data/big'])
            ck.check(code == 0 and big_sha in out.decode(),
                     '%s: the running container reads the large file (never read before) correctly' % label,
                     'exit %s: %r %r' % (code, out[-200:], err[-500:]))
            # containerd's connection to the killed snapshotter backs off: retried up to 30 s.
            began = time.monotonic()

            def new_container():
                try:
                    code, out = cri.run(pod, 'after-restart-%d' % int(time.monotonic() * 1000), image,
                                        ['/bin/cat', '/etc/rafs-test/greeting'])
                    return code == 0 and out == GREETING
                except Exception:  # noqa: B902 - retried until the deadline
                    return False
            ck.check(wait_for(new_container, timeout=30, interval=1),
                     '%s: a new container starts after both restarts (%.1fs)' % (label, time.monotonic() - began))
        finally:
            if long_id:
                cri.stop(long_id, timeout=0)
                cri.remove(long_id)
            cri.stop_pod(pod)
            cri.remove_pod(pod)
        cri.remove_image(image)
        ck.check(not any(image in img.repo_tags for img in cri.list_images()), '%s: RemoveImage' % label)
        # containerd removes the image's snapshots in its garbage collection, after RemoveImage.
        gone = wait_for(lambda: not ctd.mounts() + mounts_under(sn_root), timeout=30)
        ck.check(gone, '%s: no mount left under containerd\'s or the snapshotter\'s directories' % label,
                 repr(ctd.mounts() + mounts_under(sn_root)))
        listed = rafsctl_status(rafsctl_bin, rafsd_sock) or {}
        ck.check(wait_for(lambda: not (rafsctl_status(rafsctl_bin, rafsd_sock) or {}).get('images'), timeout=30),
                 '%s: rafsd serves no image' % label, repr(listed)[:500])


def mounts_under(path):
    with open('/proc/self/mountinfo') as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(path + '/')]


def main():
    def extra(ap):
        ap.add_argument('--rafs-snapshotter', default=os.environ.get('RAFS_SNAPSHOTTER'),
                        help='the rafs-snapshotter program (default: $RAFS_SNAPSHOTTER)')

    args, mk, rafsd, rafsctl, ck = start_test('containerd_cri', __doc__, tools=TOOLS, extra=extra)
    with harness.temp_dir('containerd-cri-', keep=args.keep) as tmp:
        layout = os.path.join(tmp, 'layout')
        big_sha = make_images(tmp, layout)
        reg = ImageRegistry(os.path.join(tmp, 'registry-work'))
        try:
            reg.push('oci:%s:pause' % layout, 'test/pause', 'pause')
            reg.push('oci:%s:app' % layout, 'test/app', 'app')
            pause, app = reg.ref('test/pause', 'pause'), reg.ref('test/app', 'app')
            for title, section in (('1. plain OCI image through CRI with overlayfs', oci_overlayfs_section),
                                   ('2. RAFS image through CRI with rafs-snapshotter', rafs_snapshotter_section)):
                ck.section(title)
                extra_args = ((args.rafs_snapshotter, mk, rafsd, rafsctl) if section is rafs_snapshotter_section
                              else ())
                try:
                    section(ck, tmp, reg, pause, app, big_sha, *extra_args)
                except Exception as e:  # noqa: B902 - a failed step (gRPC error, timeout) fails the section
                    ck.fail('%s: %s: %s' % (title, type(e).__name__, str(e)[-2000:]))
        finally:
            reg.stop()
    return ck.finish()


if __name__ == '__main__':
    raise SystemExit(main())
