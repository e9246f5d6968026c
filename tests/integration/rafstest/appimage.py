"""A small application image in a registry of the test's own, for the container runtime tests
(containerd through CRI, podman):

  ImageRegistry(tmp, netns=None)   Debian's docker-registry on 127.0.0.1 with TLS (a CA made here)
                                   and htpasswd auth, the docker config.json and certs.d dir that
                                   name it (skopeo, mkrafs convert, rafsd read them)
    .push(layout, tag, repo)       an OCI layout's tag into it (skopeo copy)
    .convert(mkrafs, src, dst)     mkrafs convert between two of its references
    .blob_gets(digest)             the user agents that GET a blob so far (its access log)
    .manifest(ref)                 the manifest it serves, parsed
    .access()                      a containerd.RegistryAccess for it
  make_images(tmp, layout)         with umoci, from busybox-static: tag `pause` (busybox, sleeps:
                                   the pod sandbox image) and tag `app` on top of it (a greeting
                                   file, a script /usr/bin/rafs-hello, and a large file nobody
                                   reads, so a lazy image leaves most of its blob unread)
  GREETING                         what /etc/rafs-test/greeting holds
"""

import base64
import hashlib
import json
import os
import shutil
import subprocess

from .servers import TestCa, free_port, htpasswd, registry
from .containerd import RegistryAccess

GREETING = 'hello from a lazily loaded image\n'
BIG = 16 << 20
USER, PASSWORD = 'runtime', 'pw-runtime-Q7'
BUSYBOX_APPLETS = ('sh', 'cat', 'sleep', 'sha256sum', 'ls', 'echo', 'head', 'wc')


def _sh(cmd):
    subprocess.run(cmd, check=True, capture_output=True)


def make_images(tmp, layout):
    """Builds the `pause` and `app` tags in the OCI layout `layout`; returns the sha256 of the big
    file (for a check that reads it through the container)."""
    _sh(['umoci', 'init', '--layout', layout])
    _sh(['umoci', 'new', '--image', layout + ':pause'])
    bundle = os.path.join(tmp, 'image-bundle')

    def layer(src_tag, dst_tag, edit):
        shutil.rmtree(bundle, ignore_errors=True)
        _sh(['umoci', 'unpack', '--image', '%s:%s' % (layout, src_tag), bundle])
        edit(os.path.join(bundle, 'rootfs'))
        _sh(['umoci', 'repack', '--image', '%s:%s' % (layout, dst_tag), bundle])
        shutil.rmtree(bundle)

    def base(root):
        os.makedirs(os.path.join(root, 'bin'))
        shutil.copy('/bin/busybox', os.path.join(root, 'bin/busybox'))
        for applet in BUSYBOX_APPLETS:
            os.symlink('busybox', os.path.join(root, 'bin', applet))
        for d in ('proc', 'sys', 'dev', 'etc', 'tmp'):
            os.makedirs(os.path.join(root, d), exist_ok=True)

    big = os.urandom(BIG)

    def app(root):
        os.makedirs(os.path.join(root, 'etc/rafs-test'))
        with open(os.path.join(root, 'etc/rafs-test/greeting'), 'w') as f:
            f.write(GREETING)
        os.makedirs(os.path.join(root, 'usr/bin'))
        script = os.path.join(root, 'usr/bin/rafs-hello')
        with open(script, 'w') as f:
            f.write('#!/bin/sh\necho "rafs-hello ran as $(cat /etc/rafs-test/greeting | wc -c) bytes"\n')
        os.chmod(script, 0o755)
        os.makedirs(os.path.join(root, 'data'))
        with open(os.path.join(root, 'data/big'), 'wb') as f:
            f.write(big)

    layer('pause', 'pause', base)
    _sh(['umoci', 'config', '--image', layout + ':pause', '--config.cmd', '/bin/sleep',
         '--config.cmd', '2147483647'])
    layer('pause', 'app', app)
    _sh(['umoci', 'config', '--image', layout + ':app', '--config.cmd', '/bin/cat',
         '--config.cmd', '/etc/rafs-test/greeting'])
    return hashlib.sha256(big).hexdigest()


class ImageRegistry:
    """docker-registry with TLS and htpasswd auth on 127.0.0.1 (in `netns` if given)."""

    def __init__(self, tmp, netns=None, name='registry'):
        self.tmp = tmp
        self.ca = TestCa(os.path.join(tmp, name + '-ca'))
        cert, key = self.ca.issue('registry')
        pw_file = os.path.join(tmp, name + '.htpasswd')
        htpasswd(pw_file, {USER: PASSWORD})
        self.port = free_port()
        self.host = '127.0.0.1:%d' % self.port
        self.user, self.password = USER, PASSWORD
        self.certs_dir = os.path.join(tmp, name + '-certs.d')
        os.makedirs(os.path.join(self.certs_dir, self.host))
        shutil.copy(self.ca.cert, os.path.join(self.certs_dir, self.host, 'ca.crt'))
        self.auth_file = os.path.join(tmp, name + '-auth.json')
        with open(self.auth_file, 'w') as f:
            json.dump({'auths': {self.host: {'auth': base64.b64encode(
                ('%s:%s' % (USER, PASSWORD)).encode()).decode()}}}, f)
        self.server = registry(tmp, name, self.port, cert, key,
                               auth={'htpasswd': {'realm': 'rafs-test', 'path': pw_file}}, netns=netns, access_log=True)
        self.netns = netns
        self.data_dir = os.path.join(tmp, name, 'data')

    def _skopeo(self, *args):
        cmd = ['skopeo', *args]
        if self.netns:
            cmd = ['nsenter', '--net=/run/netns/' + self.netns] + cmd
        return subprocess.run(cmd, capture_output=True, timeout=600)

    def push(self, layout, tag, repo):
        """skopeo copy oci:LAYOUT:TAG docker://HOST/REPO:TAG; returns HOST/REPO:TAG."""
        ref = '%s/%s:%s' % (self.host, repo, tag)
        r = self._skopeo('copy', '--dest-cert-dir', os.path.join(self.certs_dir, self.host), '--authfile',
                         self.auth_file, 'oci:%s:%s' % (layout, tag), 'docker://' + ref)
        if r.returncode != 0:
            raise RuntimeError('skopeo copy to %s: %s' % (ref, r.stderr.decode()[-1000:]))
        return ref

    def convert(self, mkrafs, src, dst):
        """mkrafs convert SRC DST within this registry (references HOST/REPO:TAG)."""
        work = os.path.join(self.tmp, 'convert-work')
        os.makedirs(work, exist_ok=True)
        cmd = [mkrafs, 'convert', '--authfile', self.auth_file, '--cert-dir', self.certs_dir, '--work-dir', work, src, dst]
        if self.netns:
            cmd = ['nsenter', '--net=/run/netns/' + self.netns] + cmd
        r = subprocess.run(cmd, capture_output=True, timeout=600)
        if r.returncode != 0:
            raise RuntimeError('mkrafs convert %s %s: %s' % (src, dst, r.stderr.decode()[-1000:]))
        return dst

    def manifest(self, ref):
        r = self._skopeo('inspect', '--raw', '--cert-dir', os.path.join(self.certs_dir, self.host),
                         '--authfile', self.auth_file, 'docker://' + ref)
        if r.returncode != 0:
            raise RuntimeError('skopeo inspect %s: %s' % (ref, r.stderr.decode()[-1000:]))
        return json.loads(r.stdout)

    def blob_gets(self, digest):
        """User agents of the GET requests for blob `digest` so far, from its access log."""
        agents = []
        for line in self.server.log_text().splitlines():
            if '"GET /v2/' in line and '/blobs/%s ' % digest in line:
                agents.append(line.rsplit('"', 2)[-2] if line.endswith('"') else line)
        return agents

    def access(self):
        return RegistryAccess(self.host, self.ca.cert, USER, PASSWORD)

    def stop(self):
        self.server.stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False
