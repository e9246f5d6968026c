#!/usr/bin/env python3
"""rafs-snapshotter's snapshots API called directly over gRPC (rafstest/snapshots_v1.proto), no
containerd: Prepares labelled as CRI labels a layer (snapshot.ref, cri.image-ref,
cri.manifest-digest, cri.layer-digest) without Nydus's marks, so that the snapshotter asks the
image's registry for its manifest. The registry is a listener of the test's own on 127.0.0.1 that
accepts connections and never answers.

1. while such a Prepare waits on the registry, an ordinary Prepare and a Mounts answer; once the
   lookup fails (the configured transport timeouts), the layer is prepared as an ordinary one;
2. the next layer of the same image does not ask the registry again (no new connection);
3. a layer labelled as the bootstrap of a RAFS image in Debian's docker-registry (as an image's
   own annotations can label it) is refused unless its snapshot.ref is that image's chain ID;
4. while rafsd (a stand-in of the test's on the control socket, which holds one mount request)
   mounts the image a Prepare stands on, other Prepares and Mounts answer, and a Remove of that
   image's snapshot waits for the mount;
5. a mount request the stand-in drops unanswered (a worker that died under it) is made again;
6. a second `rafs-snapshotter serve` on the same socket, or on the same root, is refused with one
   line, and the first one still answers (before, gRPC's bind took the socket's path over, and its
   exit removed it, cutting the first one off from containerd).
"""

import os
import socket
import sys
import threading
import time

from rafstest import harness
from rafstest.harness import log, wait_for
from rafstest.containerd import RafsSnapshotter, compile_proto
from rafstest.rafsd import network_config, small_image, start_test
from rafstest.rafsimage import OCI_MANIFEST, Pusher
from rafstest.servers import free_port, registry as registry_server

TRANSPORT = {'retries': 0, 'timeout': 6, 'connect_timeout': 2, 'low_speed_limit': 1, 'low_speed_time': 3}


class Listener:
    """Accepts connections on the bound socket `sock` on a thread of its own and hands each to
    on_accept(); closes them and the socket on exit."""

    def __init__(self, sock):
        self.sock = sock
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.conns = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            self.conns.append(conn)
            self.on_accept(conn)

    def on_accept(self, conn):
        pass

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        self.thread.join(timeout=5)
        for conn in self.conns:
            conn.close()
        self.sock.close()
        return False


class SilentRegistry(Listener):
    """Accepts connections on 127.0.0.1 and never answers; counts them."""

    def __init__(self):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(('127.0.0.1', 0))
        super().__init__(sock)
        self.port = sock.getsockname()[1]

    @property
    def accepted(self):
        return len(self.conns)


class HoldingRafsd(Listener):
    """Answers rafsd's control protocol on `path` as a rafsd with nothing mounted would, without
    mounting anything; while `hold` is set it keeps each mount request waiting until release()
    (at most 60 s). Records the ops it was sent."""

    def __init__(self, path):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(path)
        super().__init__(sock)
        self.ops, self.hold, self.released = [], False, threading.Event()
        # As a worker that dies during that many mount requests (the connection closes unanswered),
        # and, with nothing mounted, refuses an umount as rafsd does.
        self.lose_mounts = 0

    def on_accept(self, conn):
        threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn):
        import json
        conn.settimeout(10)
        line = b''
        while not line.endswith(b'\n') and len(line) < 65536:
            chunk = conn.recv(4096)
            if not chunk:
                return
            line += chunk
        op = json.loads(line)['op']
        self.ops.append(op)
        if op == 'mount' and self.lose_mounts > 0:
            self.lose_mounts -= 1
            conn.close()
            return
        if op == 'umount':
            conn.sendall(json.dumps({'ok': False, 'error': 'not mounted by rafsd'}).encode() + b'\n')
            return
        if op == 'mount' and self.hold:
            self.released.wait(timeout=60)
        conn.sendall(json.dumps({'ok': True, 'images': []}).encode() + b'\n')

    def release(self):
        self.released.set()

    def __exit__(self, *exc):
        self.released.set()
        return super().__exit__(*exc)


def in_thread(call):
    """Runs `call` on a thread; returns (thread, outcome dict with 'value' or 'error')."""
    import grpc
    outcome = {}

    def run():
        try:
            outcome['value'] = call()
        except grpc.RpcError as e:
            outcome['error'] = '%s: %s' % (e.code(), e.details())
    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def labels(port, chain, layer):
    return {'containerd.io/snapshot.ref': 'sha256:' + chain * 64,
            'containerd.io/snapshot/cri.image-ref': '127.0.0.1:%d/test/app:v1' % port,
            'containerd.io/snapshot/cri.manifest-digest': 'sha256:' + 'b' * 64,
            'containerd.io/snapshot/cri.layer-digest': 'sha256:' + layer * 64}


def push_rafs_image(host, boot, blob):
    """Pushes a RAFS image as tag `rafs` of test/rafs; returns (HOST/REPO@manifest digest, the
    bootstrap layer's digest, the image's last chain ID), read back from the registry."""
    import hashlib
    import json
    import urllib.request
    digest, _ = Pusher('http://' + host, 'test/rafs').rafs_image('rafs', boot, [blob])

    def get(path, accept):
        request = urllib.request.Request('http://%s/v2/test/rafs/%s' % (host, path), headers={'Accept': accept})
        with urllib.request.urlopen(request, timeout=30) as r:
            return json.loads(r.read())
    manifest = get('manifests/' + digest, OCI_MANIFEST)
    config = get('blobs/' + manifest['config']['digest'], '*/*')
    chain = None
    for diff_id in config['rootfs']['diff_ids']:
        chain = diff_id if chain is None else 'sha256:' + hashlib.sha256((chain + ' ' + diff_id).encode()).hexdigest()
    return '%s/test/rafs@%s' % (host, digest), manifest['layers'][-1]['digest'], chain


def main():
    args, mk, _, _, ck = start_test('snapshotter_grpc', __doc__, tools=('protoc', 'grpc_python_plugin', 'docker-registry'))
    snapshotter_bin = os.environ.get('RAFS_SNAPSHOTTER')
    if not snapshotter_bin:
        raise SystemExit('FAIL: set RAFS_SNAPSHOTTER to the built rafs-snapshotter')
    import grpc
    with harness.temp_dir('snapshotter-grpc-', keep=args.keep) as tmp, SilentRegistry() as registry:
        pb, stubs = compile_proto(os.path.join(tmp, 'stubs'), 'snapshots_v1.proto')
        image = small_image(ck, mk, tmp, [('bin/tool', 300 * 1024)], 3)
        if image is None:
            return ck.finish()
        reg_port = free_port()
        host = '127.0.0.1:%d' % reg_port
        reg = registry_server(tmp, 'registry', reg_port)
        rafs_image = push_rafs_image(host, image[1], os.path.join(tmp, 'out', 'blobs', image[2]))
        rafsd_sock = os.path.join(tmp, 'rafsd.sock')
        cfg = network_config(tmp, 'rafsd', {'type': 'localfs'}, **{'backend.localfs': {'dir': tmp},
                                                                    'backend.transport': TRANSPORT,
                                                                    'backend.hosts."%s"' % host: {'plain_http': True}})
        sock = os.path.join(tmp, 'snapshotter.sock')
        with reg, RafsSnapshotter(snapshotter_bin, cfg, os.path.join(tmp, 'root'), sock,
                                  os.path.join(tmp, 'snapshotter.log')) as sn:
            if not ck.check(sn.start(), 'rafs-snapshotter answers', sn.log_text()[-2000:]):
                return ck.finish()
            channel = grpc.insecure_channel('unix://' + sock)
            stub = stubs.SnapshotsStub(channel)

            ck.section('1. a layer whose registry never answers holds up no other call')
            outcome = {}

            def prepare_labelled():
                t0 = time.monotonic()
                try:
                    r = stub.Prepare(pb.PrepareSnapshotRequest(key='layer-1', labels=labels(registry.port, 'a', 'c')),
                                     timeout=60)
                    outcome['mounts'] = len(r.mounts)
                except grpc.RpcError as e:
                    outcome['error'] = '%s: %s' % (e.code(), e.details())
                outcome['seconds'] = time.monotonic() - t0

            labelled = threading.Thread(target=prepare_labelled)
            labelled.start()
            try:
                wait_for(lambda: registry.accepted > 0, timeout=20)
                plain = stub.Prepare(pb.PrepareSnapshotRequest(key='plain'), timeout=60)
                mounts = stub.Mounts(pb.MountsRequest(key='plain'), timeout=60)
                waiting = labelled.is_alive()
            finally:
                labelled.join(timeout=60)
            ck.check(registry.accepted > 0 and len(plain.mounts) == 1 and len(mounts.mounts) == 1 and waiting,
                     'an ordinary Prepare and a Mounts answer while the labelled Prepare waits on the registry',
                     'registry connections %d, labelled Prepare still waiting: %r' % (registry.accepted, waiting))
            ck.check(outcome.get('mounts') == 1,
                     'the labelled layer is prepared as an ordinary one once the lookup fails (%.1f s)'
                     % outcome.get('seconds', -1), repr(outcome))

            ck.section('2. the next layer of the same image does not ask the registry again')
            before = registry.accepted
            t0 = time.monotonic()
            r = stub.Prepare(pb.PrepareSnapshotRequest(key='layer-2', labels=labels(registry.port, 'd', 'e')),
                             timeout=60)
            log('  prepared in %.2f s' % (time.monotonic() - t0))
            ck.check(len(r.mounts) == 1 and registry.accepted == before,
                     'prepared as an ordinary layer without a new connection to the registry',
                     'connections %d -> %d' % (before, registry.accepted))
            ck.check('taking it as an ordinary layer' in sn.log_text(), 'the snapshotter logged why')

            ck.section('3. a bootstrap layer is taken only as part of the image its labels name')
            # Labels may come from the image's own annotations: one naming another image's bootstrap
            # (a private one rafsd can read) under a chain ID that is not that image's is refused.
            ref, bootstrap_digest, chain = rafs_image
            marks = {'containerd.io/snapshot/nydus-bootstrap': 'true',
                     'containerd.io/snapshot/cri.image-ref': ref.split('@')[0] + ':rafs',
                     'containerd.io/snapshot/cri.manifest-digest': ref.split('@')[1],
                     'containerd.io/snapshot/cri.layer-digest': bootstrap_digest}
            for name, snapshot_ref, want in [('another chain ID', 'sha256:' + 'f' * 64, 'is not part of'),
                                             ('its own chain ID', chain, rafsd_sock)]:
                error = ''
                try:
                    stub.Prepare(pb.PrepareSnapshotRequest(key='boot-' + name.replace(' ', '-'),
                                                           labels=dict(marks, **{'containerd.io/snapshot.ref': snapshot_ref})),
                                 timeout=60)
                except grpc.RpcError as e:
                    error = e.details()
                ck.check(want in error, 'labelled with %s: %s' % (name, 'refused' if want != rafsd_sock else
                         'taken as the bootstrap (rafsd, not running here, is asked to mount it)'), error)

            ck.section('4. a mount rafsd takes long over holds up no other call')
            with HoldingRafsd(rafsd_sock) as rafsd:
                error = ''
                try:
                    stub.Prepare(pb.PrepareSnapshotRequest(key='boot', labels=dict(marks, **{'containerd.io/snapshot.ref': chain})),
                                 timeout=60)
                except grpc.RpcError as e:
                    error = e.details()
                ck.check('already exists (a remote snapshot)' in error and rafsd.ops == ['mount'],
                         'the bootstrap layer is committed as a remote snapshot, rafsd asked to mount it',
                         '%s; ops %r' % (error, rafsd.ops))
                # The stand-in mounted nothing, so a container's Prepare on it mounts it again.
                rafsd.hold = True
                child, child_outcome = in_thread(lambda: stub.Prepare(pb.PrepareSnapshotRequest(key='ctr', parent=chain),
                                                                      timeout=90))
                held = wait_for(lambda: rafsd.ops.count('mount') == 2, timeout=20)
                other = other_mounts = None
                try:
                    t0 = time.monotonic()
                    try:
                        other = stub.Prepare(pb.PrepareSnapshotRequest(key='plain-2'), timeout=10)
                        other_mounts = stub.Mounts(pb.MountsRequest(key='plain-2'), timeout=10)
                    except grpc.RpcError as e:
                        log('  ordinary call: %s' % e.code())
                    others = time.monotonic() - t0
                    remover, removed = in_thread(lambda: stub.Remove(pb.RemoveSnapshotRequest(key=chain), timeout=90))
                    remover.join(timeout=1)
                    remove_waited = remover.is_alive()
                    still_held = child.is_alive()
                finally:
                    rafsd.release()
                    child.join(timeout=60)
                ck.check(held and other and len(other.mounts) == 1 and other_mounts and len(other_mounts.mounts) == 1
                         and still_held,
                         'an ordinary Prepare and a Mounts answer (%.2f s) while rafsd holds the image\'s mount'
                         % others, 'held %r, child still waiting %r' % (held, still_held))
                remover.join(timeout=60)
                ck.check(remove_waited and 'has children' in removed.get('error', ''),
                         'a Remove of the image\'s snapshot waits for the mount, then sees the new child',
                         'waited %r, %r' % (remove_waited, removed))
                ck.check(len(getattr(child_outcome.get('value'), 'mounts', [])) == 1,
                         'the Prepare on the image answers once rafsd has mounted it', repr(child_outcome))

                ck.section('5. a mount request whose rafsd worker dies under it is made again to the next')
                rafsd.hold, rafsd.lose_mounts = False, 1
                del rafsd.ops[:]
                outcome = ''
                try:
                    outcome = len(stub.Prepare(pb.PrepareSnapshotRequest(key='ctr-2', parent=chain), timeout=60).mounts)
                except grpc.RpcError as e:
                    outcome = e.details()
                ck.check(outcome == 1 and rafsd.ops.count('mount') == 2,
                         'the Prepare answers after its mount request is made again', '%r; ops %r' % (outcome, rafsd.ops))
            ck.section('6. a second snapshotter on the same socket or root is refused')
            for what, root, address, must in (
                    ('the same socket', os.path.join(tmp, 'root2'), sock, 'another process is already listening on ' + sock),
                    ('the same root', os.path.join(tmp, 'root'), os.path.join(tmp, 'sn2.sock'),
                     'the root of another rafs-snapshotter')):
                r = harness.run([snapshotter_bin, '--config', cfg, 'serve', '--root', root, '--address', address],
                                timeout=30)
                err = [line for line in harness.text(r.stderr).splitlines() if line.startswith('rafs-snapshotter:')]
                ck.check(r.returncode not in (0, None) and len(err) == 1 and must in err[0],
                         'a second snapshotter on %s: refused with one line' % what,
                         'exit %s: %s' % (r.returncode, harness.text(r.stderr)[-1000:]))
            ck.check(os.path.exists(sock) and sn.ready() and
                     len(stub.Prepare(pb.PrepareSnapshotRequest(key='after-second'), timeout=30).mounts) >= 1,
                     'the first snapshotter still answers on its socket')
            channel.close()
            ck.check(sn.stop() == 0, 'rafs-snapshotter exits 0 on SIGTERM', sn.log_text()[-1500:])
    return ck.finish()


if __name__ == '__main__':
    sys.exit(main())
