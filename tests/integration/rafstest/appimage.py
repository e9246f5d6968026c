"""A small application image for the container runtime tests (containerd through CRI, podman),
pushed to a registry of the test's own (rafstest.oci.ImageRegistry):

  make_images(tmp, layout)         with umoci, from busybox-static: tag `pause` (busybox, sleeps:
                                   the pod sandbox image) and tag `app` on top of it (a greeting
                                   file, a script /usr/bin/rafs-hello, and a large file nobody
                                   reads, so a lazy image leaves most of its blob unread)
  GREETING                         what /etc/rafs-test/greeting holds
  blob_gets(reg, digest)           the user agents that GET a blob so far (the registry's access log)
"""

import hashlib
import os
import shutil
import subprocess

GREETING = 'hello from a lazily loaded image\n'
BIG = 16 << 20
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


def blob_gets(reg, digest):
    """User agents of the GET requests for blob `digest` an oci.ImageRegistry made with
    access_log=True has served so far."""
    agents = []
    for line in reg.server.log_text().splitlines():
        if '"GET /v2/' in line and '/blobs/%s ' % digest in line:
            agents.append(line.rsplit('"', 2)[-2] if line.endswith('"') else line)
    return agents
