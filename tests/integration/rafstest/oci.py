"""OCI images in a registry of the caller's own, the way a container host meets them, for
scripts/demo and scripts/bench-coldstart. Everything addresses 127.0.0.1, in a network namespace
of the caller's (servers.Netns) if one is given, and stops only what it started:

  ImageRegistry(work, netns)      docker-registry with TLS (a CA made here) and htpasswd auth, plus
                                  the docker config.json and certs.d dir that name it (auth_file,
                                  certs_dir), as skopeo, mkrafs and rafsd read them
  .push(layout_ref, repo, tag)    an OCI layout (oci:DIR:TAG) into it with skopeo copy
  .copy(src, target)              `skopeo copy` between registries, timed
  .convert(mkrafs, src, target)   `mkrafs convert` from one reference to another, timed
  .manifest(repo, tag)            the manifest it serves (skopeo inspect --raw)
  .pull_unpack(...)               the baseline: skopeo copy to an OCI layout, then umoci unpack, timed
  ImageMount(...)                 `rafsd mount IMAGE MOUNTPOINT` in the background, timed to mounted;
                                  unmount() says how many bytes it fetched
  ServedImageMount(...)           the same through a `rafsd serve` already running, asked on its
                                  control socket as rafs-snapshotter asks it
  drop_caches()                   the page cache, dentries and inodes dropped: a cold start
  time_to_first_line(cmd, ...)    seconds from starting cmd to its first output line (or its exit)
  chroot_cmd(root, argv)          argv in a chroot of root with a minimal environment
"""

import base64
import json
import os
import select
import shutil
import signal
import subprocess
import time

from .mount import umount
from .rafsd import RafsdMount, RafsdServe, fetched_bytes, write_config
from .servers import TestCa, free_port, htpasswd, registry


def drop_caches():
    os.sync()
    with open('/proc/sys/vm/drop_caches', 'w') as f:
        f.write('3\n')


def chroot_cmd(root, argv):
    return ['chroot', root, '/usr/bin/env', '-i', 'PATH=/usr/local/bin:/usr/bin:/bin', 'HOME=/root',
            'LANG=C.UTF-8'] + list(argv)


def time_to_first_line(cmd, ready=None, timeout=300):
    """Starts cmd and returns (seconds, its stdout): the seconds until the first stdout line that
    contains `ready` ('' for any line), or until its exit when ready is None. A command that ends
    first must exit with status 0; one still running after the line is waited for (bounded), so
    its whole output is returned and nothing is left behind."""
    start = time.monotonic()
    deadline = start + timeout
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out = b''
        elapsed = None
        while ready is not None and elapsed is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError('%s: no line with %r within %d s' % (' '.join(cmd), ready, timeout))
            if not select.select([proc.stdout], [], [], left)[0]:
                continue
            data = os.read(proc.stdout.fileno(), 65536)
            if not data:
                break
            out += data
            if any(ready in line.decode('utf-8', 'replace') for line in out.split(b'\n')[:-1]):
                elapsed = time.monotonic() - start
        rest, err = proc.communicate(timeout=max(1, deadline - time.monotonic()))
        out += rest
        if elapsed is None:
            if ready is not None:
                raise RuntimeError('%s ended without a line with %r: %s'
                                   % (' '.join(cmd), ready, (out + err).decode('utf-8', 'replace')[-500:]))
            elapsed = time.monotonic() - start
        if proc.returncode != 0:
            raise RuntimeError('%s: exit status %d: %s' % (' '.join(cmd), proc.returncode, err.decode()[-500:]))
        return elapsed, out.decode('utf-8', 'replace')
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


class ImageRegistry:
    """docker-registry on 127.0.0.1 (in `netns`, a servers.Netns, if given) with TLS and htpasswd
    auth. Registries made in the same `work` dir share a CA (`ca`, made by the first), the docker
    config.json with their credentials (auth_file) and the docker certs.d dir with their CA
    (certs_dir: <certs_dir>/<host>/ca.crt); each has its own `name`, port and storage.
    access_log: the registry logs every request (rafstest.appimage.blob_gets reads it)."""

    USER, PASSWORD = 'rafsd', 'demo-password'

    def __init__(self, work, netns=None, name='registry', ca=None, access_log=False):
        self.work, self.netns, self.name = work, netns, name
        os.makedirs(work, exist_ok=True)
        self.ca = ca or TestCa(os.path.join(work, 'ca'))
        cert, key = self.ca.issue(name)
        self.port = free_port()
        self.host = '127.0.0.1:%d' % self.port
        self.certs_dir = os.path.join(work, 'certs.d')
        os.makedirs(os.path.join(self.certs_dir, self.host), exist_ok=True)
        shutil.copyfile(self.ca.cert, os.path.join(self.certs_dir, self.host, 'ca.crt'))
        self.auth_file = os.path.join(work, 'docker', 'config.json')
        os.makedirs(os.path.dirname(self.auth_file), exist_ok=True)
        config = {'auths': {}}
        if os.path.exists(self.auth_file):
            with open(self.auth_file) as f:
                config = json.load(f)
        config['auths'][self.host] = {
            'auth': base64.b64encode(('%s:%s' % (self.USER, self.PASSWORD)).encode()).decode()}
        with open(self.auth_file, 'w') as f:
            json.dump(config, f)
        self.htpasswd = os.path.join(work, 'htpasswd')
        if not os.path.exists(self.htpasswd):
            htpasswd(self.htpasswd, {self.USER: self.PASSWORD})
        shutil.rmtree(os.path.join(work, name), ignore_errors=True)
        self.server = registry(work, name, self.port, cert, key,
                               auth={'htpasswd': {'realm': 'rafsd-demo', 'path': self.htpasswd}},
                               netns=netns.name if netns else None, access_log=access_log)

    def stop(self, remove=False):
        """Stops the registry; remove: its storage too."""
        self.server.stop()
        if remove:
            shutil.rmtree(os.path.join(self.work, self.name), ignore_errors=True)

    def pid(self):
        return self.server.proc.pid if self.server.proc else None

    def ref(self, repo, tag):
        return '%s/%s:%s' % (self.host, repo, tag)

    def cmd(self, argv):
        return self.netns.cmd(argv) if self.netns else list(argv)

    def _skopeo(self, *args):
        r = subprocess.run(self.cmd(['skopeo'] + list(args)), capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError('skopeo %s: %s' % (args[0], r.stderr.strip()[-1000:]))
        return r.stdout

    def _cert_dir(self, ref):
        """The certs.d entry of the registry an image reference names."""
        return os.path.join(self.certs_dir, ref.split('/', 1)[0])

    def push(self, layout_ref, repo, tag):
        """Copies an OCI layout's image (oci:DIR:TAG) to repo:tag, layers as they are."""
        self._skopeo('copy', '--quiet', '--dest-authfile', self.auth_file, '--dest-cert-dir', self._cert_dir(self.host),
                     layout_ref, 'docker://' + self.ref(repo, tag))

    def copy(self, source, target):
        """skopeo copy of image reference `source` to `target` (either may be another registry
        made in the same work dir); returns the seconds it took."""
        t = time.monotonic()
        self._skopeo('copy', '--quiet', '--src-authfile', self.auth_file, '--src-cert-dir', self._cert_dir(source),
                     '--dest-authfile', self.auth_file, '--dest-cert-dir', self._cert_dir(target),
                     'docker://' + source, 'docker://' + target)
        return time.monotonic() - t

    def convert(self, mkrafs, source, target, options=()):
        """`mkrafs convert` of image reference `source` to `target` with this work dir's
        credentials and CAs; returns the seconds it took."""
        t = time.monotonic()
        r = subprocess.run(self.cmd([mkrafs, 'convert', '--authfile', self.auth_file, '--cert-dir', self.certs_dir]
                                    + list(options) + [source, target]), capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError('mkrafs convert %s %s: exit status %d: %s'
                               % (source, target, r.returncode, r.stderr.strip()[-1000:]))
        return time.monotonic() - t

    def manifest(self, repo, tag):
        return json.loads(self._skopeo('inspect', '--raw', '--authfile', self.auth_file,
                                       '--cert-dir', self._cert_dir(self.host), 'docker://' + self.ref(repo, tag)))

    def pull_unpack(self, repo, tag, layout, bundle):
        """The baseline a container host runs today: skopeo copy of repo:tag into a fresh OCI
        layout, then umoci unpack into a fresh bundle. Returns (copy seconds, unpack seconds);
        the root file system is <bundle>/rootfs."""
        for d in (layout, bundle):
            shutil.rmtree(d, ignore_errors=True)
        t = time.monotonic()
        self._skopeo('copy', '--quiet', '--src-authfile', self.auth_file, '--src-cert-dir', self._cert_dir(self.host),
                     'docker://' + self.ref(repo, tag), 'oci:%s:%s' % (layout, tag))
        copied = time.monotonic() - t
        r = subprocess.run(['umoci', 'unpack', '--image', '%s:%s' % (layout, tag), bundle], capture_output=True,
                           text=True)
        if r.returncode != 0:
            raise RuntimeError('umoci unpack: ' + r.stderr.strip()[-1000:])
        return copied, time.monotonic() - t - copied


def layers_size(manifest):
    return sum(layer['size'] for layer in manifest['layers'])


def bootstrap_layer(manifest):
    """The RAFS bootstrap layer of a Nydus-style manifest (its last layer, so annotated), or None."""
    for layer in manifest['layers']:
        if (layer.get('annotations') or {}).get('containerd.io/snapshot/nydus-bootstrap') == 'true':
            return layer
    return None


def cold_rafsd_config(reg, work, prefetch, **daemon):
    """A rafsd config for `reg` whose cache and state dirs (work/rafsd-cache, work/rafsd-state) are
    emptied first: a cold start. Returns (config path, cache dir)."""
    cache_dir = os.path.join(work, 'rafsd-cache')
    state_dir = os.path.join(work, 'rafsd-state')
    for d in (cache_dir, state_dir):
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
    config = write_config(os.path.join(work, 'rafsd.toml'), daemon=dict(daemon, state_dir=state_dir, cache_dir=cache_dir),
                          prefetch={'enable': prefetch}, **{'backend.registry': {'docker_config': reg.auth_file},
                                                             'backend.transport': {'certs_dir': reg.certs_dir}})
    return config, cache_dir


class ImageMount(RafsdMount):
    """`rafsd mount --config CFG --cache-dir DIR IMAGE MOUNTPOINT` in the registry's network
    namespace, with a config naming the registry's docker config and certs dir, and cache and
    state dirs emptied first (a cold start). mount() returns the seconds until the image is
    mounted; unmount() ends rafsd with SIGINT (it unmounts) and returns the bytes its blobs
    fetched."""

    def __init__(self, rafsd, reg, image, mountpoint, work, prefetch=False):
        config, cache_dir = cold_rafsd_config(reg, work, prefetch)
        os.makedirs(mountpoint, exist_ok=True)
        super().__init__(rafsd, image, mountpoint, cache_dir=cache_dir, config=config,
                         log_path=os.path.join(work, 'rafsd.log'))
        self.cmd = reg.cmd(self.cmd)
        self.image = image

    def mount(self, timeout=120):
        if os.path.ismount(self.mountpoint):
            raise RuntimeError('%s is mounted already' % self.mountpoint)
        t = time.monotonic()
        if not self.start(timeout, poll=0.005):
            code = self.proc.poll()
            self.stop()
            why = 'exit status %d before it mounted' % code if code is not None else 'not mounted in %d s' % timeout
            raise RuntimeError('rafsd mount %s: %s:\n%s' % (self.image, why, self.log_text()[-2000:]))
        return time.monotonic() - t

    def unmount(self):
        return stop_and_count(self, signal.SIGINT, 'rafsd mount %s' % self.image)


def stop_and_count(process, sig, what):
    """Ends rafsd with `sig` (it unmounts); the bytes its blobs fetched."""
    code = process.stop(sig=sig)
    if os.path.ismount(process.mountpoint):  # rafsd was killed before it could unmount
        umount(process.mountpoint)
    if code != 0:
        raise RuntimeError('%s: exit status %s on %s:\n%s' % (what, code, sig.name, process.log_text()[-2000:]))
    return fetched_bytes(process.log_text())


class ServedImageMount(RafsdServe):
    """`rafsd serve` in the registry's network namespace with a cold cache, started (start()) before
    the clock does, as on a container host; mount() asks it on its control socket to mount IMAGE on
    MOUNTPOINT, as rafs-snapshotter does, and returns the seconds until it answered (mounted);
    unmount() ends rafsd with SIGTERM (it unmounts) and returns the bytes its blobs fetched."""

    def __init__(self, rafsd, reg, image, mountpoint, work, prefetch=False):
        sock = os.path.join(work, 'rafsd.sock')
        config, _ = cold_rafsd_config(reg, work, prefetch, socket=sock)
        os.makedirs(mountpoint, exist_ok=True)
        super().__init__(rafsd, config, sock, os.path.join(work, 'rafsd.log'))
        self.cmd = reg.cmd(self.cmd)
        self.image, self.mountpoint = image, mountpoint

    def mount(self, timeout=120):
        import socket as sk
        request = json.dumps({'op': 'mount', 'image': self.image, 'mountpoint': self.mountpoint}) + '\n'
        t = time.monotonic()
        with sk.socket(sk.AF_UNIX, sk.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(self.socket)
            s.sendall(request.encode())
            reply = b''
            while not reply.endswith(b'\n'):
                piece = s.recv(65536)
                if not piece:
                    break
                reply += piece
        seconds = time.monotonic() - t
        answer = json.loads(reply or b'{}')
        if answer.get('ok') is not True:
            raise RuntimeError('rafsd serve: mount %s: %s\n%s' % (self.image, answer, self.log_text()[-2000:]))
        return seconds

    def unmount(self):
        return stop_and_count(self, signal.SIGTERM, 'rafsd serve')
