#!/usr/bin/env python3
"""podman 4.3 from Debian over rafsd through containers-storage's additional layer store, every
component started by the test as root: docker-registry on 127.0.0.1 (TLS, htpasswd auth, access
log) with a busybox image (rafstest/appimage.py) and its `mkrafs convert`ed RAFS image; `rafsd
serve` with the registry backend; podman with its own storage.conf (overlay, graphroot and runroot
under the test's directory, additionallayerstores = ["STORE:ref"]).

1. `rafsctl layer-store add --store STORE IMAGE`: an entry per layer (diff, info, blob), info as
   containers-storage reads it, the bootstrap layer's diff is rafsd's EROFS mount;
2. `podman pull IMAGE`: every layer found in the store (none copied), and podman never GETs a data
   blob from the registry;
3. `podman run`: a container prints a file of the image from the lazy mount, runs a script of the
   image, and reads the image's large file whole (sha256 equal); the data blob bytes came through
   rafsd (its status counts them) and only rafsd's requests fetched them; `podman push` of the
   image to an OCI layout fails (the store's `blob` is no layer tar);
3b. rafsd stopped (SIGTERM unmounts): every layer's `blob` marker is withdrawn with the mount, so
   containers-storage no longer takes the layers (an empty diff would be a container without its
   files), and the empty mount point goes, so that `podman run` of the image pulled before fails at
   its overlay mount instead of running on an empty root; rafsd started again: it mounts the image again from its mount table, the markers come
   back, and `podman run` reads the image again;
4. `rafsctl layer-store remove` while a file of the image is open (a running container) is refused
   and leaves the entries (a container's overlay lower directories); after `podman rmi`, `rafsctl
   layer-store remove`: the mount is gone, rafsd lists no image, the store holds nothing of the image;
5. bad input, one error line, non-zero exit, nothing left in the store: an ordinary OCI image, a tag
   the registry lacks, a store directory that does not exist (not made), the same image added
   twice, removing an image that is not in the store;
6. two images sharing a data layer, both pulled: podman keeps the layer under the first one's entry,
   so removing that image from the store keeps that entry, the other image's containers still run,
   and once the other image is removed too nothing is left.
"""

import base64
import json
import os

from rafstest import harness
from rafstest.appimage import BIG, GREETING, blob_gets, make_images
from rafstest.oci import ImageRegistry
from rafstest.harness import log, run, text
from rafstest.rafsd import RafsdServe, network_config, rafsctl_status, start_test

TOOLS = ('podman', 'runc', 'conmon', 'docker-registry', 'skopeo', 'umoci', 'htpasswd', 'openssl')


class Podman:
    """podman with storage, runroot, events and temp files of its own under `work`."""

    def __init__(self, work, store, auth_file, certs_dir):
        self.work = work
        self.auth_file, self.certs_dir = auth_file, certs_dir
        os.makedirs(work, exist_ok=True)
        self.conf = os.path.join(work, 'storage.conf')
        with open(self.conf, 'w') as f:
            f.write('[storage]\ndriver = "overlay"\ngraphroot = "%s"\nrunroot = "%s"\n'
                    '[storage.options]\nadditionallayerstores = ["%s:ref"]\n'
                    % (os.path.join(work, 'graph'), os.path.join(work, 'run'), store))
        self.registries = os.path.join(work, 'registries.conf')
        with open(self.registries, 'w') as f:
            f.write('unqualified-search-registries = []\n')
        self.containers_conf = os.path.join(work, 'containers.conf')
        with open(self.containers_conf, 'w') as f:
            f.write('[engine]\nevents_logger = "file"\ncgroup_manager = "cgroupfs"\nruntime = "runc"\n'
                    'tmp_dir = "%s"\nvolume_path = "%s"\nstatic_dir = "%s"\n'
                    % (os.path.join(work, 'tmp'), os.path.join(work, 'volumes'), os.path.join(work, 'libpod')))
        self.env = dict(os.environ, CONTAINERS_STORAGE_CONF=self.conf, CONTAINERS_REGISTRIES_CONF=self.registries,
                        CONTAINERS_CONF=self.containers_conf, PATH='/usr/sbin:/usr/bin:/sbin:/bin',
                        TMPDIR=os.path.join(work, 'tmp'))
        os.makedirs(os.path.join(work, 'tmp'))

    def __call__(self, *args, timeout=300):
        # crun 1.8 fails on this machine's hybrid cgroups; runc works (see the env above).
        # Not --root/--runroot: with those podman 4.3 drops storage.conf's driver options, the
        # additional layer store among them.
        return run(['podman', '--cgroup-manager=cgroupfs', '--events-backend=file', '--runtime', 'runc', *args],
                   timeout=timeout, env=self.env)

    def pull(self, image):
        return self('pull', '--authfile', self.auth_file, '--cert-dir', os.path.join(self.certs_dir, image.split('/')[0]),
                    image)

    def run_in(self, image, *argv):
        # The default ulimits fail with EPERM here; host networking needs no CNI.
        return self('run', '--rm', '--network=host', '--ulimit', 'nofile=1024:1024', '--ulimit', 'nproc=1024:1024',
                    image, *argv)

    def clean(self):
        """Every container and image of this podman gone; on every exit path."""
        self('rm', '--all', '--force', timeout=120)
        self('rmi', '--all', '--force', timeout=120)


def ctl(rafsctl_bin, sock, *args):
    return run([rafsctl_bin, '--socket', sock, *args], timeout=120)


def expect_error(ck, what, r, must_contain):
    err = [line for line in text(r.stderr).splitlines() if line.strip()]
    ck.check(r.returncode not in (0, None) and len(err) == 1 and err[0].startswith('rafsctl: ') and
             must_contain in err[0], '%s: %s' % (what, err[-1] if err else '(no message)'),
             'exit %s, stderr %r' % (r.returncode, text(r.stderr)[-800:]))


def main():
    args, mk, rafsd, rafsctl_bin, ck = start_test('podman_layer_store', __doc__, tools=TOOLS)
    with harness.temp_dir('podman-layer-store-', keep=args.keep) as tmp:
        layout = os.path.join(tmp, 'layout')
        big_sha = make_images(tmp, layout)
        store = os.path.join(tmp, 'layer-store')
        os.makedirs(store)
        reg = ImageRegistry(os.path.join(tmp, 'registry-work'), access_log=True)
        try:
            reg.push('oci:%s:app' % layout, 'test/app', 'app')
            oci, image = reg.ref('test/app', 'app'), reg.ref('rafs/app', 'v1')
            reg.convert(mk.path, oci, image)
            # The app's base layer alone: a second image sharing a data blob with the first.
            reg.push('oci:%s:pause' % layout, 'test/pause', 'pause')
            base = reg.ref('rafs/pause', 'v1')
            reg.convert(mk.path, reg.ref('test/pause', 'pause'), base)
            manifest = reg.manifest('rafs/app', 'v1')
            layers = manifest['layers']
            data_blobs = [l['digest'] for l in layers[:-1]]
            log('RAFS image %s: %d data blob(s), bootstrap layer %s' % (image, len(data_blobs), layers[-1]['digest']))

            cfg = network_config(tmp, 'rafsd', {'type': 'localfs'},
                                 **{'backend.registry': {'docker_config': reg.auth_file},
                                    'backend.transport': {'certs_dir': reg.certs_dir, 'retries': 1}})
            sock = os.path.join(tmp, 'rafsd.sock')
            podman = Podman(os.path.join(tmp, 'podman'), store, reg.auth_file, reg.certs_dir)
            with RafsdServe(rafsd, cfg, sock, os.path.join(tmp, 'rafsd.log')) as srv:
                if not ck.check(srv.start(), 'rafsd serve starts', srv.log_text()[-2000:]):
                    return ck.finish()
                try:
                    sections(ck, reg, podman, rafsctl_bin, sock, store, image, oci, layers, data_blobs, big_sha, srv)
                    shared_layer(ck, reg, podman, rafsctl_bin, sock, store, image, base)
                finally:
                    podman.clean()
                    for i in (image, base):
                        ctl(rafsctl_bin, sock, 'layer-store', 'remove', '--store', store, i)
                ck.check(srv.stop() == 0, 'rafsd exits 0')
        finally:
            reg.stop()
    return ck.finish()


def sections(ck, reg, podman, rafsctl_bin, sock, store, image, oci, layers, data_blobs, big_sha, srv):
    ck.section('1. rafsctl layer-store add')
    r = ctl(rafsctl_bin, sock, 'layer-store', 'add', '--store', store, image)
    if not ck.cmd_ok(r, 'rafsctl layer-store add --store STORE ' + image):
        return
    log(text(r.stdout).strip())
    top = os.path.join(store, base64.b64encode(image.encode()).decode())
    ck.check(sorted(os.listdir(top)) == sorted({l['digest'] for l in layers}),
             'one entry per layer under STORE/base64(IMAGE)', repr(os.listdir(top)))
    for l in layers:
        entry = os.path.join(top, l['digest'])
        ck.check(all(os.path.exists(os.path.join(entry, n)) for n in ('diff', 'info', 'blob')),
                 '%s: diff, info and blob' % l['digest'][:19])
        with open(os.path.join(entry, 'info')) as f:
            info = json.load(f)
        bootstrap = l is layers[-1]
        want = {'compressed-diff-digest': l['digest'], 'compressed-size': l['size'],
                'diff-digest': l['annotations']['containerd.io/uncompressed'] if bootstrap else l['digest'],
                'compression': 2 if bootstrap else 0}
        if not bootstrap:
            want['diff-size'] = l['size']
        ck.check(info == want, '%s: info %s' % (l['digest'][:19], json.dumps(info)), json.dumps(want))
        ck.check(os.path.ismount(os.path.join(entry, 'diff')) == bootstrap,
                 '%s: diff is %s' % (l['digest'][:19], 'the EROFS mount' if bootstrap else 'an empty directory'))
    boot_diff = os.path.join(top, layers[-1]['digest'], 'diff')
    with open(os.path.join(boot_diff, 'etc/rafs-test/greeting')) as f:
        ck.check(f.read() == GREETING, 'the mount holds the image tree')

    ck.section('2. podman pull')
    r = podman.pull(image)
    if not ck.cmd_ok(r, 'podman pull ' + image):
        return
    out = text(r.stdout) + text(r.stderr)
    log(out.strip())
    graph = os.path.join(podman.work, 'graph', 'overlay')
    taken = [d for d in os.listdir(graph) if os.path.exists(os.path.join(graph, d, 'additionallayer'))]
    ck.check(len(taken) == len(layers), 'podman pull: all %d layers taken from the store (%d)' % (len(layers), len(taken)))
    ck.check(any('containers/' in line for line in reg.server.log_text().splitlines()),
             'the registry logged podman\'s requests (the manifest)')
    ck.check(all(not any('containers/' in a for a in blob_gets(reg, l['digest'])) for l in layers),
             'podman GET no layer blob from the registry')

    ck.section('3. podman run from the lazy mount')
    # One container for the file and the script: each podman run here waits 20 s for conmon
    # ("Exceeded conmon timeout", with any image).
    r = podman.run_in(image, '/bin/sh', '-c', 'cat /etc/rafs-test/greeting && /usr/bin/rafs-hello')
    out = text(r.stdout)
    ck.check(r.returncode == 0 and out.startswith(GREETING), 'podman run: cat prints the greeting (%.1fs)' % r.elapsed,
             'exit %s: %s %s' % (r.returncode, out[-300:], text(r.stderr)[-800:]))
    ck.check('rafs-hello ran as %d bytes' % len(GREETING) in out, 'podman run: the image\'s script runs', out[-300:])
    status = rafsctl_status(rafsctl_bin, sock, boot_diff) or {}
    fetched_before_big = sum(b.get('bytes_fetched', 0) for i in status.get('images', []) for b in i.get('blobs', []))
    r = podman.run_in(image, '/bin/sha256sum', '/data/big')
    ck.check(r.returncode == 0 and big_sha in text(r.stdout),
             'podman run: the large file reads back whole (sha256, %.1fs)' % r.elapsed,
             text(r.stdout)[-300:] + text(r.stderr)[-500:])
    status = rafsctl_status(rafsctl_bin, sock, boot_diff) or {}
    fetched = sum(b.get('bytes_fetched', 0) for i in status.get('images', []) for b in i.get('blobs', []))
    ck.check(fetched_before_big < BIG // 4 and fetched - fetched_before_big >= BIG,
             'the data came through rafsd: %d bytes fetched before the large file was read, %d after'
             % (fetched_before_big, fetched))
    agents = [a for d in data_blobs for a in blob_gets(reg, d)]
    ck.check(agents and not any('containers/' in a for a in agents),
             'only rafsd GET the data blobs (%d requests)' % len(agents), repr(agents[:5]))

    # The store has no layer tars: a copy out of it must fail, not write bytes that are no layer.
    out_layout = os.path.join(podman.work, 'pushed')
    r = podman('push', image, 'oci:%s:v1' % out_layout)
    ck.check(r.returncode not in (0, None), 'podman push of the image out of the store fails (exit %s): %s'
             % (r.returncode, text(r.stderr).strip().splitlines()[-1:]))

    ck.section('3b. rafsd stopped, then started again')
    markers = [os.path.join(top, l['digest'], 'blob') for l in layers]
    ck.check(srv.stop() == 0, 'rafsd stops (exit 0)')
    ck.check(not os.path.ismount(boot_diff) and not any(os.path.exists(m) for m in markers),
             'with the mount gone, no layer of the image has its blob marker (containers-storage takes none)',
             repr([m for m in markers if os.path.exists(m)]))
    # podman took the layers before: it looks at no marker, but the missing directory fails the
    # container's overlay rather than run it on an empty root.
    ck.check(not os.path.exists(boot_diff), 'the empty mount point is gone too')
    r = podman('run', '--rm', image, '/bin/true', timeout=120)
    ck.check(r.returncode not in (0, None) and 'overlay' in text(r.stderr),
             'podman run of the image pulled before fails at its overlay mount, not on an empty root',
             'exit %s: %s' % (r.returncode, text(r.stderr)[-500:]))
    if not ck.check(srv.start(), 'rafsd serve starts again', srv.log_text()[-2000:]):
        return
    # After READY, in the background: a registry that is slow to answer must not hold up the start.
    harness.wait_for(lambda: 'layer store image mounted again' in srv.log_text(), timeout=60)
    ck.check('layer store image mounted again' in srv.log_text() and os.path.ismount(boot_diff)
             and all(os.path.exists(m) for m in markers),
             'rafsd mounted the image again from its mount table, and the markers are back', srv.log_text()[-2000:])
    r = podman.run_in(image, '/bin/cat', '/etc/rafs-test/greeting')
    ck.check(r.returncode == 0 and text(r.stdout).startswith(GREETING),
             'podman run after the restart: cat prints the greeting (%.1fs)' % r.elapsed,
             'exit %s: %s %s' % (r.returncode, text(r.stdout)[-300:], text(r.stderr)[-800:]))

    ck.section('4. podman rmi, then rafsctl layer-store remove')
    # An overlay on the layers' directories, as a running container has: they must stay, or its
    # root lists empty.
    container = os.path.join(podman.work, 'container')
    for d in ('upper', 'work', 'merged'):
        os.makedirs(os.path.join(container, d), exist_ok=True)
    # The digests' colons escaped: lowerdir separates its directories with colons.
    lower = ':'.join(os.path.join(top, l['digest'], 'diff').replace(':', '\\:') for l in reversed(layers))
    r = run(['mount', '-t', 'overlay', 'overlay', '-o', 'lowerdir=%s,upperdir=%s/upper,workdir=%s/work'
             % (lower, container, container), os.path.join(container, 'merged')])
    if not ck.cmd_ok(r, 'an overlay on the image\'s layers, as a container has'):
        return
    try:
        r = ctl(rafsctl_bin, sock, 'layer-store', 'remove', '--store', store, image)
        expect_error(ck, 'remove while a container runs on the image', r, 'still in use')
        ck.check(all(os.path.isdir(os.path.join(top, l['digest'], 'diff')) for l in layers[:-1]) and
                 'rafs-test' in os.listdir(os.path.join(container, 'merged', 'etc')),
                 'in use: the entries stay, and the container still lists its files')
        # Its mount detached now, rafsd still serves it: a second try is refused as well.
        r = ctl(rafsctl_bin, sock, 'layer-store', 'remove', '--store', store, image)
        expect_error(ck, 'remove again while the container runs', r, 'still in use')
        ck.check('rafs-test' in os.listdir(os.path.join(container, 'merged', 'etc')),
                 'the container still lists its files')
    finally:
        run(['umount', os.path.join(container, 'merged')])
    ck.cmd_ok(podman('rmi', image), 'podman rmi')
    r = ctl(rafsctl_bin, sock, 'layer-store', 'remove', '--store', store, image)
    ck.cmd_ok(r, 'rafsctl layer-store remove')
    ck.check(not os.path.ismount(boot_diff) and not os.path.exists(top), 'the mount and the entries are gone')
    r = ctl(rafsctl_bin, sock, 'list')
    ck.check(r.returncode == 0 and image.split('/')[0] not in text(r.stdout), 'rafsd lists no image', text(r.stdout))

    ck.section('5. bad input')
    r = ctl(rafsctl_bin, sock, 'layer-store', 'add', '--store', store, oci)
    expect_error(ck, 'an ordinary OCI image', r, 'not a RAFS image')
    r = ctl(rafsctl_bin, sock, 'layer-store', 'add', '--store', store, '%s/rafs/app:missing' % reg.host)
    expect_error(ck, 'a tag the registry lacks', r, 'missing')
    ck.check(os.listdir(store) == [], 'nothing left in the store', repr(os.listdir(store)))
    typo = store + '-typo'
    r = ctl(rafsctl_bin, sock, 'layer-store', 'add', '--store', typo, image)
    expect_error(ck, 'a store that does not exist (a mistyped path)', r, 'does not exist: make it')
    ck.check(not os.path.exists(typo), 'it is not made')
    r = ctl(rafsctl_bin, sock, 'layer-store', 'add', '--store', store, image)
    ck.cmd_ok(r, 'add again')
    r = ctl(rafsctl_bin, sock, 'layer-store', 'add', '--store', store, image)
    expect_error(ck, 'the same image twice', r, 'in the layer store')
    ck.check(os.path.ismount(boot_diff), 'the first one stays mounted')
    ck.cmd_ok(ctl(rafsctl_bin, sock, 'layer-store', 'remove', '--store', store, image), 'remove')
    r = ctl(rafsctl_bin, sock, 'layer-store', 'remove', '--store', store, image)
    expect_error(ck, 'removing an image not in the store', r, 'is not in the layer store')
    ck.check(os.listdir(store) == [] and not os.path.ismount(boot_diff), 'nothing left in the store')



def shared_layer(ck, reg, podman, rafsctl_bin, sock, store, image, base):
    ck.section('6. two images sharing a data layer')
    shared = [l['digest'] for l in reg.manifest('rafs/pause', 'v1')['layers'][:-1]]
    app_blobs = [l['digest'] for l in reg.manifest('rafs/app', 'v1')['layers'][:-1]]
    if not ck.check(shared and set(shared) <= set(app_blobs), 'the base image\'s data blob is the app\'s first',
                    repr((shared, app_blobs))):
        return
    for i in (base, image):
        if not ck.cmd_ok(ctl(rafsctl_bin, sock, 'layer-store', 'add', '--store', store, i), 'add ' + i):
            return
        # podman keeps one copy of the shared layer: the base's, pulled first.
        if not ck.cmd_ok(podman.pull(i), 'podman pull ' + i):
            return
    ck.cmd_ok(podman('rmi', base), 'podman rmi ' + base)
    ck.cmd_ok(ctl(rafsctl_bin, sock, 'layer-store', 'remove', '--store', store, base), 'layer-store remove ' + base)
    base_top = os.path.join(store, base64.b64encode(base.encode()).decode())
    ck.check(all(os.path.isdir(os.path.join(base_top, d, 'diff')) for d in shared) and
             sorted(n for n in os.listdir(base_top) if n.startswith('sha256:')) == sorted(shared),
             'the base\'s entry of the shared layer stays (the app lists it), its other entries go',
             repr(os.listdir(base_top) if os.path.isdir(base_top) else None))
    r = podman.run_in(image, '/bin/cat', '/etc/rafs-test/greeting')
    ck.check(r.returncode == 0 and text(r.stdout).startswith(GREETING),
             'podman run of the app after the base left the store: cat prints the greeting (%.1fs)' % r.elapsed,
             'exit %s: %s %s' % (r.returncode, text(r.stdout)[-300:], text(r.stderr)[-800:]))
    ck.cmd_ok(podman('rmi', image), 'podman rmi ' + image)
    ck.cmd_ok(ctl(rafsctl_bin, sock, 'layer-store', 'remove', '--store', store, image), 'layer-store remove ' + image)
    ck.check(os.listdir(store) == [], 'the app removed too: nothing is left in the store', repr(os.listdir(store)))


if __name__ == '__main__':
    raise SystemExit(main())
