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
2. RAFS image through CRI with rafs-snapshotter: the place for the proxy snapshotter's test
   (rafs_snapshotter_section); it runs when --rafs-snapshotter (or $RAFS_SNAPSHOTTER) names the
   program, and says so when it is not given.
"""

import os

from rafstest import harness
from rafstest.appimage import GREETING, ImageRegistry, make_images
from rafstest.containerd import Containerd
from rafstest.harness import log
from rafstest.rafsd import start_test

TOOLS = ('containerd', 'containerd-shim-runc-v2', 'runc', 'ctr', 'protoc', 'grpc_python_plugin',
         'docker-registry', 'skopeo', 'umoci', 'htpasswd', 'openssl')


def layer_digests(reg, ref):
    return [l['digest'] for l in reg.manifest(ref)['layers']]


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
    with Containerd(os.path.join(tmp, 'containerd-overlayfs'), reg.access(), pause) as ctd:
        ctd.start()
        cri = ctd.cri()
        v = cri.version()
        ck.check(v.runtime_name == 'containerd' and v.runtime_api_version == 'v1',
                 '%s: CRI Version: %s %s, API %s' % (label, v.runtime_name, v.runtime_version, v.runtime_api_version))
        image_id = cri.pull(app)
        ck.ok('%s: PullImage %s -> %s' % (label, app, image_id))
        layers = layer_digests(reg, app)
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


def rafs_snapshotter_section(ck, tmp, reg, pause, app, big_sha, snapshotter):
    """The same through rafs-snapshotter (containerd's [proxy_plugins.rafs], CRI snapshotter
    "rafs") with the mkrafs-converted image. To be written once rafs-snapshotter exists:
    PullImage of the RAFS image; run: the container prints a file and a program from the image
    runs; the data blobs never enter containerd's content store (content_blobs()), the registry
    served only part of them; restart the snapshotter and rafsd while a container runs: it keeps
    reading correct data and a new container starts; RemoveImage and RemoveContainer: no mount
    left under containerd's or the snapshotter's directories."""
    if not snapshotter:
        log('  rafs-snapshotter not given (--rafs-snapshotter or $RAFS_SNAPSHOTTER): section not run')
        return
    ck.fail('rafs-snapshotter section: not written yet')


def main():
    def extra(ap):
        ap.add_argument('--rafs-snapshotter', default=os.environ.get('RAFS_SNAPSHOTTER'),
                        help='the rafs-snapshotter program (default: $RAFS_SNAPSHOTTER)')

    args, mk, rafsd, rafsctl, ck = start_test('containerd_cri', __doc__, tools=TOOLS, extra=extra)
    with harness.temp_dir('containerd-cri-', keep=args.keep) as tmp:
        layout = os.path.join(tmp, 'layout')
        big_sha = make_images(tmp, layout)
        with ImageRegistry(tmp) as reg:
            pause = reg.push(layout, 'pause', 'test/pause')
            app = reg.push(layout, 'app', 'test/app')
            for title, section in (('1. plain OCI image through CRI with overlayfs', oci_overlayfs_section),
                                   ('2. RAFS image through CRI with rafs-snapshotter', rafs_snapshotter_section)):
                ck.section(title)
                extra_args = (args.rafs_snapshotter,) if section is rafs_snapshotter_section else ()
                try:
                    section(ck, tmp, reg, pause, app, big_sha, *extra_args)
                except Exception as e:  # noqa: B902 - a failed step (gRPC error, timeout) fails the section
                    ck.fail('%s: %s: %s' % (title, type(e).__name__, str(e)[-2000:]))
    return ck.finish()


if __name__ == '__main__':
    raise SystemExit(main())
