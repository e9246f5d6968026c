#!/usr/bin/env python3
"""rafs-snapshotter with the real containerd 1.6 and runc from Debian, driven by `ctr`. Everything
is started by the test under its own temporary directory: Debian's docker-registry on 127.0.0.1
(TLS with the test's CA, htpasswd auth) holding an ordinary OCI image (a static busybox, a small
and a big data file) and its `mkrafs convert`ed RAFS image behind an OCI index; `rafsd serve`
(fanotify engine, no prefetch) with the registry's CA and credentials; rafs-snapshotter serving
containerd's snapshots API (its root given through a symlink); containerd with its own root,
state, socket and config naming the snapshotter as proxy plugin `rafs` (CRI disabled).

1. RAFS image through ctr: `ctr content fetch --metadata-only` of the index, then
   `rafs-snapshotter register` (the remote Prepare of every layer through containerd), then
   `ctr run --snapshotter rafs` prints a file of the image and runs busybox from it; the data
   blobs never entered containerd's content store; rafsd fetched only part of the blobs (figures
   printed); the snapshotter's table holds the blob layers and the bootstrap layer (an EROFS mount
   of rafsd's) as committed snapshots.
2. The ordinary OCI image through the same snapshotter: `ctr images pull --snapshotter rafs`
   extracts its layer, `ctr run` runs it; `ctr snapshots usage` reports the layer's blocks and
   inodes.
3. A container of the RAFS image runs while the snapshotter is killed (-9) and started again,
   rafsd's worker is killed (-9, its supervisor starts another) and containerd is killed (-9) and
   started again: the container still reads the
   big file (never read before) correctly, and a new container starts. Then, with no container
   left on it, the image's EROFS mount is taken away behind the snapshotter's back (as a reboot
   would) and the snapshotter killed and started again: it mounts the image again through rafsd
   (once it serves), removes directories no snapshot owns, and a new container runs. With rafsd stopped (it unmounts
   its images), `ctr run` fails naming rafsd's socket and leaves no snapshot; once rafsd is back,
   the next container's Prepare mounts the image again. With rafsd serve killed whole (-9), its
   mount left behind unserved: `ctr run` fails naming rafsd's socket (nobody listens: no container
   may start on a mount whose holes read as zeros) and leaves the mount (a supervisor between
   workers would take it over); with rafsd started again, the next container's Prepare detaches
   it and has the image mounted again, served.
4. Bad input, one error line each and a non-zero exit: register of an ordinary image, of an
   unknown tag, with no containerd at the socket; serve with a missing config file.
5. Removal: containers, the registration and both images gone, containerd's GC done: no snapshot
   in the snapshotter's table, no mount under its root, nothing left in its directories, rafsd
   serves no image. A file of the image held open through the removal keeps its mount up and
   served by rafsd (not detached behind rafsd's back) until the next GC after it is closed.
"""

import gzip
import hashlib
import io
import json
import os
import random
import signal
import socket
import sys
import tarfile
import time

from rafstest import harness
from rafstest.harness import log, run, text, wait_for
from rafstest.rafsd import RafsdProcess, RafsdServe, children, network_config, rafsctl, rafsctl_status, start_test
from rafstest.rafsimage import OCI_MANIFEST, OCI_TAR_GZIP, Pusher, host_arch
from rafstest.servers import basic_auth, docker_config, htpasswd_registry
from rafstest.containerd import RafsSnapshotter

MiB = 1 << 20
USER, PASSWORD = 'rafs', 'pw-snapshotter-secret'
NAMESPACE = 'rafstest'
HELLO = b'hello from a lazily loaded RAFS image\n'


def socket_answers(path):
    if not os.path.exists(path):
        return False
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


class Containerd(RafsdProcess):
    """containerd with its own root, state dir, socket and config; the proxy snapshotter `rafs`."""

    def __init__(self, tmp, snapshotter_address):
        self.address = os.path.join(tmp, 'containerd.sock')
        config = os.path.join(tmp, 'containerd.toml')
        with open(config, 'w') as f:
            f.write('\n'.join([
                'version = 2',
                'root = "%s"' % os.path.join(tmp, 'containerd-root'),
                'state = "%s"' % os.path.join(tmp, 'containerd-state'),
                'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
                '[grpc]', '  address = "%s"' % self.address,
                '[ttrpc]', '  address = "%s.ttrpc"' % self.address,
                '[proxy_plugins.rafs]', '  type = "snapshot"', '  address = "%s"' % snapshotter_address, '']))
        super().__init__(['containerd', '--config', config], os.path.join(tmp, 'containerd.log'))

    def ready(self):
        if not socket_answers(self.address):
            return False
        return self.ctr('version', quiet=True).returncode == 0

    def ctr(self, *args, timeout=300, quiet=False):
        return run(['ctr', '--address', self.address, '--namespace', NAMESPACE] + [str(a) for a in args],
                   timeout=timeout, quiet=quiet)


def restarted(snapshotter, log_path):
    """kill -9 of the snapshotter and a start, logging to `log_path`; whether it answers again."""
    try:
        snapshotter.restart(log_path)
        return True
    except RuntimeError:
        return False


def make_source_layer():
    """(tar bytes, {path: bytes}): busybox, etc/hello, a small and a big data file."""
    rng = random.Random(10)
    with open('/bin/busybox', 'rb') as f:
        busybox = f.read()
    files = {'etc/hello': HELLO, 'data/small': rng.randbytes(100 * 1024), 'data/big': rng.randbytes(24 * MiB)}
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode='w', format=tarfile.PAX_FORMAT) as t:
        for d in ('bin', 'etc', 'data', 'tmp', 'proc', 'sys', 'dev'):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            t.addfile(info)
        for path, data, mode in [('bin/busybox', busybox, 0o755)] + [(p, d, 0o644) for p, d in files.items()]:
            info = tarfile.TarInfo(path)
            info.size, info.mode = len(data), mode
            t.addfile(info, io.BytesIO(data))
    return out.getvalue(), files


def push_source(push):
    """The ordinary OCI image as tag v1; returns the files in it."""
    tar, files = make_source_layer()
    layer = push.blob(gzip.compress(tar, mtime=0))
    config = push.config(['sha256:' + hashlib.sha256(tar).hexdigest()], [{'created_by': 'rafs-snapshotter test'}])
    push.manifest('v1', {'schemaVersion': 2, 'mediaType': OCI_MANIFEST, 'config': config,
                         'layers': [dict(layer, mediaType=OCI_TAR_GZIP)]})
    return files


def sha256_hex(data):
    return hashlib.sha256(data).hexdigest()


def mounts_under(path):
    with open('/proc/self/mountinfo') as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(path + '/')]


def snapshot_table(root):
    try:
        with open(os.path.join(root, 'snapshots.json')) as f:
            return json.load(f).get('snapshots', {})
    except (OSError, ValueError):
        return None


def one_error(ck, r, what, must_contain):
    lines = [line for line in text(r.stderr).splitlines() if line.strip()]
    ck.check(r.returncode not in (0, None) and len(lines) == 1 and lines[0].startswith('rafs-snapshotter: ') and
             must_contain in lines[0], '%s: %s' % (what, lines[0] if lines else '(nothing said)'),
             'exit %s, stderr %r' % (r.returncode, text(r.stderr)[-800:]))


def bootstrap_snapshot(table):
    """The name of the bootstrap layer's snapshot in the snapshotter's table."""
    return next((name for name, s in table.items() if s['backing'] == 'rafs-image'), None)


def ok_or_none(r):
    return r if r.returncode == 0 else None


def fetched(status):
    return sum(b.get('bytes_fetched', 0) for img in (status or {}).get('images', []) for b in img.get('blobs', []))


def main():
    args, mk, rafsd, ctl, ck = start_test('snapshotter_ctr', __doc__,
                                          tools=('docker-registry', 'openssl', 'htpasswd', 'containerd', 'ctr', 'runc',
                                                 'containerd-shim-runc-v2'))
    snapshotter_bin = os.environ.get('RAFS_SNAPSHOTTER')
    if not snapshotter_bin:
        raise SystemExit('FAIL: set RAFS_SNAPSHOTTER to the built rafs-snapshotter')
    with harness.temp_dir('snapshotter-ctr-', keep=args.keep) as tmp:
        reg, host, ca = htpasswd_registry(tmp, {USER: PASSWORD})
        auth_file = os.path.join(tmp, 'auth.json')
        docker_config(auth_file, host, USER, PASSWORD)
        certs_dir = os.path.join(tmp, 'certs.d')
        os.makedirs(os.path.join(certs_dir, host))
        with open(ca.cert, 'rb') as f, open(os.path.join(certs_dir, host, 'ca.crt'), 'wb') as g:
            g.write(f.read())
        cfg = network_config(tmp, 'rafsd', {'type': 'localfs'},
                             **{'backend.localfs': {'dir': os.path.join(tmp, 'no-blobs')},
                                'backend.registry': {'docker_config': auth_file},
                                'backend.transport': {'retries': 1, 'backoff_base_ms': 10, 'timeout': 30,
                                                      'certs_dir': os.path.join(tmp, 'no-certs.d')},
                                'backend.hosts."%s"' % host: {'ca_file': ca.cert}})
        rafsd_sock = os.path.join(tmp, 'rafsd.sock')
        # The snapshotter is given its root through a symlink (as /var/lib on another disk would
        # be): the kernel lists its mounts by the resolved path, which the snapshotter must match.
        sn_root = os.path.join(tmp, 'snapshotter')
        sn_root_link = os.path.join(tmp, 'snapshotter-link')
        os.makedirs(sn_root)
        os.symlink(sn_root, sn_root_link)
        sn_sock = os.path.join(tmp, 'snapshotter.sock')
        # ctr speaks plain HTTP to a 127.0.0.1 registry unless a hosts.toml says https.
        hosts_dir = os.path.join(tmp, 'ctr-hosts')
        os.makedirs(os.path.join(hosts_dir, host))
        with open(os.path.join(hosts_dir, host, 'hosts.toml'), 'w') as f:
            f.write('server = "https://%s"\n[host."https://%s"]\n  ca = "%s"\n  capabilities = ["pull", "resolve"]\n'
                    % (host, host, ca.cert))
        ctr_auth = ['--user', '%s:%s' % (USER, PASSWORD), '--hosts-dir', hosts_dir]
        rafs_ref = '%s/rafs/app:index' % host
        plain_ref = '%s/src/app:v1' % host

        with reg, \
                RafsdServe(rafsd, cfg, rafsd_sock, os.path.join(tmp, 'rafsd.log')) as srv, \
                RafsSnapshotter(snapshotter_bin, cfg, sn_root_link, sn_sock, os.path.join(tmp, 'snapshotter.log'),
                                verbose=True) as sn, \
                Containerd(tmp, sn_sock) as ctd:
            push = Pusher('https://' + host, 'src/app', ca.context(), basic_auth(USER, PASSWORD))
            files = push_source(push)
            os.makedirs(os.path.join(tmp, 'convert'))
            r = run([mk.path, 'convert', '--authfile', auth_file, '--cert-dir', certs_dir, '--work-dir',
                     os.path.join(tmp, 'convert'), plain_ref, '%s/rafs/app:v1' % host], timeout=600)
            if not ck.cmd_ok(r, 'mkrafs convert of the OCI image'):
                return ck.finish()
            # `ctr content fetch --metadata-only` skips layers only below an index (a bare manifest's
            # layers it fetches): the RAFS manifest goes into one, as nydusify publishes them.
            rafs_push = Pusher('https://' + host, 'rafs/app', ca.context(), basic_auth(USER, PASSWORD))
            manifest_bytes = get_manifest(rafs_push, 'v1')
            rafs_manifest = json.loads(manifest_bytes)
            rafs_digest = 'sha256:' + sha256_hex(manifest_bytes)
            rafs_push.index('index', [(rafs_digest, len(manifest_bytes), host_arch(), True)])
            blobs = [l for l in rafs_manifest['layers'] if l['mediaType'].endswith('nydus.blob.v1')]
            blob_bytes = sum(l['size'] for l in blobs)
            log('RAFS manifest %s: %d data blob(s), %d bytes' % (rafs_digest, len(blobs), blob_bytes))

            if not (ck.check(srv.start(), 'rafsd serve answers', srv.log_text()[-2000:]) and
                    ck.check(sn.start(), 'rafs-snapshotter answers', sn.log_text()[-2000:]) and
                    ck.check(ctd.start(), 'containerd answers', ctd.log_text()[-3000:])):
                return ck.finish()
            r = ctd.ctr('plugins', 'ls')
            ck.check(any(l.split()[:2] == ['io.containerd.snapshotter.v1', 'rafs'] and l.split()[-1] == 'ok'
                         for l in text(r.stdout).splitlines()), 'ctr plugins ls: snapshotter rafs ok',
                     text(r.stdout)[-2000:])

            ck.section('1. the RAFS image: metadata-only fetch, register, ctr run')
            ck.cmd_ok(ctd.ctr('content', 'fetch', '--metadata-only', *ctr_auth, rafs_ref), 'ctr content fetch --metadata-only')
            r = run([snapshotter_bin, '--config', cfg, 'register', '--containerd', ctd.address, '--namespace', NAMESPACE,
                     rafs_ref], timeout=300)
            ck.cmd_ok(r, 'rafs-snapshotter register')
            log(text(r.stdout))
            r = ctd.ctr('run', '--rm', '--snapshotter', 'rafs', rafs_ref, 'rafs-1', '/bin/busybox', 'cat', '/etc/hello')
            ck.cmd_ok(r, 'ctr run --snapshotter rafs: cat /etc/hello')
            ck.check(r.stdout == HELLO, 'the container printed etc/hello of the image', repr(r.stdout[-300:]))
            r = ctd.ctr('run', '--rm', '--snapshotter', 'rafs', rafs_ref, 'rafs-2', '/bin/busybox', 'sha256sum',
                        '/data/small')
            ck.check(r.returncode == 0 and text(r.stdout).split()[:1] == [sha256_hex(files['data/small'])],
                     'busybox from the image computes the sha256 of data/small', text(r.stdout) + text(r.stderr))
            r = ctd.ctr('content', 'ls', '--quiet')
            content = text(r.stdout).split()
            ck.check(r.returncode == 0 and not any(l['digest'] in content for l in blobs),
                     'no data blob in containerd\'s content store (%d items there)' % len(content))
            status = rafsctl_status(ctl, rafsd_sock)
            got = fetched(status)
            log('  rafsd fetched %d of %d blob bytes (%.1f%%)' % (got, blob_bytes, 100.0 * got / max(blob_bytes, 1)))
            ck.check(0 < got < blob_bytes // 2, 'rafsd fetched less than half the data blobs',
                     '%d of %d' % (got, blob_bytes))
            table = snapshot_table(sn_root) or {}
            kinds = sorted(s['backing'] for s in table.values())
            ck.check(kinds.count('rafs-image') == 1 and kinds.count('rafs-blob') == len(blobs),
                     'the snapshotter\'s table: one bootstrap snapshot, one per data blob', repr(kinds))
            image_mounts = mounts_under(os.path.join(sn_root, 'mnt'))
            ck.check(len(image_mounts) == 1, 'one rafsd mount under the snapshotter\'s mnt/', repr(image_mounts))
            ck.check('rafs-snapshotter info: committed %s' % bootstrap_snapshot(table) in sn.log_text() and
                     '(bootstrap layer) as a remote snapshot of %s/rafs/app@%s' % (host, rafs_digest) in sn.log_text(),
                     'the snapshotter logged the remote commit of the bootstrap layer', sn.log_text()[-1500:])

            ck.section('2. the ordinary OCI image through the same snapshotter')
            ck.cmd_ok(ctd.ctr('images', 'pull', '--snapshotter', 'rafs', *ctr_auth, plain_ref),
                      'ctr images pull --snapshotter rafs (extracted)')
            r = ctd.ctr('run', '--rm', '--snapshotter', 'rafs', plain_ref, 'plain-1', '/bin/busybox', 'cat', '/etc/hello')
            ck.check(r.returncode == 0 and r.stdout == HELLO, 'ctr run of the OCI image prints etc/hello',
                     text(r.stdout) + text(r.stderr))
            table = snapshot_table(sn_root) or {}
            ck.check(any(s['backing'] == 'directory' and s['kind'] == 'committed' for s in table.values()),
                     'its layer is an extracted directory snapshot')
            r = ctd.ctr('snapshots', '--snapshotter', 'rafs', 'usage', '-b')
            usage = {}
            for line in text(r.stdout).splitlines()[1:]:
                key, size, inodes = line.split()[:3]
                usage[key] = (int(size), int(inodes))
            layer_bytes = sum(len(d) for d in files.values()) + os.path.getsize('/bin/busybox')
            # 8 directories (the root among them) and 4 files; sizes in whole blocks.
            ck.check(any(layer_bytes <= size < layer_bytes + 1 * MiB and inodes == 12 for size, inodes in usage.values()),
                     'ctr snapshots usage: the extracted layer\'s blocks (%d bytes of files) and 12 inodes' % layer_bytes,
                     repr(usage))

            ck.section('3. kill -9 of the snapshotter while a container runs; started again')
            r = ctd.ctr('run', '-d', '--snapshotter', 'rafs', rafs_ref, 'rafs-long', '/bin/busybox', 'sleep', '600')
            ck.cmd_ok(r, 'ctr run -d: a long-running container')
            ck.check(restarted(sn, os.path.join(tmp, 'snapshotter-2.log')), 'rafs-snapshotter starts again',
                     sn.log_text()[-2000:])
            worker = children(srv.proc.pid)
            if ck.check(len(worker) == 1, 'rafsd serve has a worker'):
                os.kill(worker[0], signal.SIGKILL)
                ck.check(wait_for(lambda: [p for p in children(srv.proc.pid) if p != worker[0]]) is not None,
                         'rafsd: kill -9 of the worker, the supervisor starts another')
            ctd.stop(sig=signal.SIGKILL)
            ck.check(ctd.start(), 'containerd killed (-9) and started again', ctd.log_text()[-2000:])
            r = ctd.ctr('tasks', 'exec', '--exec-id', 'read-big', 'rafs-long', '/bin/busybox', 'sha256sum', '/data/big')
            ck.check(r.returncode == 0 and text(r.stdout).split()[:1] == [sha256_hex(files['data/big'])],
                     'the running container reads data/big (first read, after the three restarts) correctly',
                     text(r.stdout) + text(r.stderr))
            # containerd's gRPC connection to the snapshotter backs off after the kill (its first
            # retry comes after about a second): the new container is tried for up to 30 s.
            began = time.monotonic()
            r = wait_for(lambda: ok_or_none(ctd.ctr('run', '--rm', '--snapshotter', 'rafs', rafs_ref, 'rafs-3',
                                                    '/bin/busybox', 'cat', '/etc/hello')), timeout=30, interval=1)
            ck.check(r is not None and r.stdout == HELLO,
                     'a new container starts after the restart (%.1f s after it)' % (time.monotonic() - began),
                     sn.log_text()[-1500:])

            ctd.ctr('tasks', 'kill', '--signal', 'SIGKILL', 'rafs-long')
            wait_for(lambda: 'STOPPED' in text(ctd.ctr('tasks', 'ls', quiet=True).stdout) or
                     'rafs-long' not in text(ctd.ctr('tasks', 'ls', quiet=True).stdout), timeout=30)
            ck.cmd_ok(ctd.ctr('tasks', 'rm', '--force', 'rafs-long'), 'ctr tasks rm')
            ck.cmd_ok(ctd.ctr('containers', 'rm', 'rafs-long'), 'ctr containers rm')
            image_mounts = mounts_under(os.path.join(sn_root, 'mnt'))
            if ck.check(len(image_mounts) == 1, 'the image is still mounted once', repr(image_mounts)):
                r = rafsctl(ctl, rafsd_sock, 'umount', image_mounts[0])
                ck.check(r.returncode == 0 and mounts_under(os.path.join(sn_root, 'mnt')) == [],
                         'the mount taken away behind the snapshotter\'s back', text(r.stderr))
                # What a crash between creating a snapshot's directory and recording it leaves.
                leftovers = [os.path.join(sn_root, 'snapshots', '999', 'fs'), os.path.join(sn_root, 'mnt', '998')]
                for d in leftovers:
                    os.makedirs(d)
                restarted(sn, os.path.join(tmp, 'snapshotter-3.log'))
                # In the background once it serves (a registry away must not hold up its start).
                wait_for(lambda: mounts_under(os.path.join(sn_root, 'mnt')) == image_mounts, timeout=30)
                ck.check(mounts_under(os.path.join(sn_root, 'mnt')) == image_mounts,
                         'the restarted snapshotter mounted the image again', sn.log_text()[-1500:])
                ck.check(not any(os.path.exists(os.path.dirname(d) if d.endswith('fs') else d) for d in leftovers),
                         'directories no snapshot owns are removed on start')
                r = wait_for(lambda: ok_or_none(ctd.ctr('run', '--rm', '--snapshotter', 'rafs', rafs_ref, 'rafs-4',
                                                        '/bin/busybox', 'cat', '/etc/hello')), timeout=30, interval=1)
                ck.check(r is not None and r.stdout == HELLO, 'a new container runs on the mount made again')

            # rafsd stopped (it unmounts what it serves): a container cannot start and leaves no
            # snapshot behind; rafsd started again, the next Prepare mounts the image again.
            ck.check(srv.stop() == 0, 'rafsd serve stopped (SIGTERM)')
            r = ctd.ctr('run', '--rm', '--snapshotter', 'rafs', rafs_ref, 'rafs-5', '/bin/busybox', 'true')
            ck.check(r.returncode not in (0, None) and rafsd_sock in text(r.stderr),
                     'without rafsd, ctr run fails naming rafsd\'s socket', text(r.stderr)[-600:])
            table = snapshot_table(sn_root) or {}
            ck.check(table and not any(k.endswith('/rafs-5') for k in table), 'the failed Prepare left no snapshot',
                     repr(sorted(table)))
            ck.check(srv.start(), 'rafsd serve started again', srv.log_text()[-1500:])
            r = ctd.ctr('run', '--rm', '--snapshotter', 'rafs', rafs_ref, 'rafs-6', '/bin/busybox', 'cat', '/etc/hello')
            ck.check(r.returncode == 0 and r.stdout == HELLO, 'with rafsd back, a container starts (image mounted again)',
                     text(r.stdout) + text(r.stderr)[-600:])

            # rafsd serve killed whole (supervisor, then worker; no systemd fd store here): the
            # image's mount stays, served by no one, its holes readable as zeros. Started again,
            # rafsd does not serve it; the next container's Prepare finds that out, detaches it and
            # has the image mounted again.
            worker = children(srv.proc.pid)
            srv.stop(sig=signal.SIGKILL)
            for pid in worker:
                os.kill(pid, signal.SIGKILL)
            wait_for(lambda: not any(os.path.exists('/proc/%d' % pid) for pid in worker), timeout=30)
            stale = mounts_under(os.path.join(sn_root, 'mnt'))
            ck.check(len(stale) == 1, 'rafsd killed whole: the image\'s mount is left behind', repr(stale))
            # Nobody listens on rafsd's socket now: no new container may start on that mount.
            r = ctd.ctr('run', '--rm', '--snapshotter', 'rafs', rafs_ref, 'rafs-dead', '/bin/busybox', 'true')
            ck.check(r.returncode not in (0, None) and rafsd_sock in text(r.stderr),
                     'rafsd gone: ctr run fails naming rafsd\'s socket, on no unserved mount', text(r.stderr)[-600:])
            # Left for rafsd's next worker (a supervisor may hold it between workers): not detached.
            ck.check(mounts_under(os.path.join(sn_root, 'mnt')) == stale, 'and the mount is left as it was')
            ck.check(srv.start(), 'rafsd serve started again, fresh', srv.log_text()[-1500:])
            r = ctd.ctr('run', '--rm', '--snapshotter', 'rafs', rafs_ref, 'rafs-7', '/bin/busybox', 'cat', '/etc/hello')
            served = [i.get('mountpoint') for i in (rafsctl_status(ctl, rafsd_sock) or {}).get('images', [])]
            ck.check(r.returncode == 0 and r.stdout == HELLO and served == stale,
                     'a new container starts on the image mounted again, which rafsd serves',
                     'rafsd serves %r; %s' % (served, text(r.stderr)[-600:]))

            ck.section('4. bad input: one error line each')
            r = run([snapshotter_bin, '--config', cfg, 'register', '--containerd', ctd.address, '--namespace', NAMESPACE,
                     plain_ref], timeout=120)
            one_error(ck, r, 'register of an ordinary OCI image', 'not a RAFS image')
            r = run([snapshotter_bin, '--config', cfg, 'register', '--containerd', os.path.join(tmp, 'nothing.sock'),
                     '--namespace', NAMESPACE, rafs_ref], timeout=120)
            one_error(ck, r, 'register with no containerd at the socket', 'nothing.sock')
            r = run([snapshotter_bin, '--config', cfg, 'register', '--containerd', ctd.address, rafs_ref + '-nope'],
                    timeout=120)
            one_error(ck, r, 'register of an unknown tag', 'index-nope')
            r = run([snapshotter_bin, '--config', os.path.join(tmp, 'no.toml'), 'serve', '--root', sn_root + '-x',
                     '--address', sn_sock + '-x'], timeout=60)
            one_error(ck, r, 'serve with a config file that does not exist', 'no.toml')

            ck.section('5. containers, registration and images removed: nothing left')
            # A file of the image held open through the removal (as a process still using it would): the
            # mount is busy, so it stays, served by rafsd, until the next Cleanup after the close.
            image_mounts = mounts_under(sn_root)
            held = os.open(os.path.join(image_mounts[0], 'etc/hello'), os.O_RDONLY) if image_mounts else None
            ck.check(len(image_mounts) == 1, 'one mount under the snapshotter\'s root: the RAFS image\'s',
                     repr(image_mounts))
            r = run([snapshotter_bin, '--config', cfg, 'unregister', '--containerd', ctd.address, '--namespace',
                     NAMESPACE, rafs_ref], timeout=300)
            ck.cmd_ok(r, 'rafs-snapshotter unregister')
            ck.cmd_ok(ctd.ctr('images', 'rm', '--sync', rafs_ref, plain_ref), 'ctr images rm --sync')
            ck.check(wait_for(lambda: snapshot_table(sn_root) == {}, timeout=60) is not None,
                     'the snapshotter\'s table is empty', repr(snapshot_table(sn_root)))
            if held is not None:
                status = rafsctl_status(ctl, rafsd_sock)
                listed = [i.get('mountpoint') for i in (status or {}).get('images', [])]
                ck.check(mounts_under(sn_root) == image_mounts and listed == image_mounts,
                         'the busy mount stays, mounted and served by rafsd (not detached behind its back)',
                         '%r, rafsd lists %r' % (mounts_under(sn_root), listed))
                ck.check(os.pread(held, 4096, 0) == HELLO, 'the file held open reads right')
                os.close(held)
                # containerd calls a snapshotter's Cleanup in a GC after one of its snapshots went:
                # an empty one made and removed, then a lease deleted with --sync for the GC.
                lease = text(ctd.ctr('leases', 'create').stdout).split()
                ck.check(len(lease) == 1 and
                         ctd.ctr('snapshots', '--snapshotter', 'rafs', 'prepare', 'gc-trigger').returncode == 0 and
                         ctd.ctr('snapshots', '--snapshotter', 'rafs', 'rm', 'gc-trigger').returncode == 0 and
                         ctd.ctr('leases', 'delete', '--sync', lease[0]).returncode == 0,
                         'a GC after the close (a snapshot made and removed, a lease deleted with --sync)')
                ck.check(wait_for(lambda: mounts_under(sn_root) == [] or None, timeout=60) is not None,
                         'Cleanup then has rafsd unmount it', sn.log_text()[-1500:])
            ck.check(mounts_under(sn_root) == [], 'no mount under the snapshotter\'s root', repr(mounts_under(sn_root)))
            for area in ('snapshots', 'mnt'):
                d = os.path.join(sn_root, area)
                left = os.listdir(d) if os.path.isdir(d) else []
                ck.check(left == [], '%s/ is empty' % area, repr(left))
            status = rafsctl_status(ctl, rafsd_sock)
            ck.check(status is not None and status.get('images') == [], 'rafsd serves no image any more',
                     repr(status)[:500])
            # every log the snapshotter wrote: the first run's, and each restart's
            sn_logs = [os.path.join(tmp, 'snapshotter.log'), os.path.join(tmp, 'snapshotter-2.log')]
            if os.path.exists(os.path.join(tmp, 'snapshotter-3.log')):
                sn_logs.append(os.path.join(tmp, 'snapshotter-3.log'))
            with_password = []
            for path in sn_logs:
                try:
                    with open(path, 'rb') as f:
                        if PASSWORD.encode() in f.read():
                            with_password.append(os.path.basename(path))
                except OSError as e:
                    with_password.append('%s (unreadable: %s)' % (os.path.basename(path), e))
            ck.check(sn.log_path in sn_logs and not with_password,
                     'the password is in no snapshotter log line (%s)' % ', '.join(os.path.basename(p) for p in sn_logs),
                     'in %s' % with_password)
            for c in text(ctd.ctr('containers', 'ls', '--quiet', quiet=True).stdout).split():
                ctd.ctr('tasks', 'rm', '--force', c, quiet=True)
                ctd.ctr('containers', 'rm', c, quiet=True)
            ck.check(ctd.stop() == 0, 'containerd exits 0')
            ck.check(sn.stop() == 0, 'rafs-snapshotter exits 0 on SIGTERM', sn.log_text()[-1500:])
    return ck.finish()


def get_manifest(push, tag):
    """The manifest bytes the registry holds for `tag` in push's repository."""
    from rafstest.servers import _request
    headers = dict(push.headers or {}, Accept=OCI_MANIFEST)
    code, _, body = _request('GET', '%s/v2/%s/manifests/%s' % (push.base, push.repo, tag), push.context, headers)
    if code != 200:
        raise SystemExit('FAIL: GET manifest %s: HTTP %d' % (tag, code))
    return body


if __name__ == '__main__':
    sys.exit(main())
