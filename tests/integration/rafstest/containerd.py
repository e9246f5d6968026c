"""containerd 1.6 and runc from Debian, started by a test or benchmark with everything of its own
under one directory, and a CRI v1 client for it (shared/docs/containerd.md in the workplace
records what this machine needs):

  Containerd(work, registry, ...)   containerd as root: its own root, state dir, socket, config
                                    (CRI plugin with the snapshotter chosen, snapshot annotations
                                    on, restrict_oom_score_adj, the sandbox image and the test
                                    registry's CA and credentials; [proxy_plugins.rafs] when a
                                    snapshotter socket is given). stop() ends it by PID, then the
                                    shims it started, and unmounts what is left under its dirs.
  .cri()                            a Cri client over its socket
  .content_blobs()                  digests in its content store (what it downloaded)
  Cri(socket, work)                 RuntimeService and ImageService calls (rafstest/cri_v1.proto,
                                    compiled at run time with protoc and grpc_python_plugin)
  RegistryAccess(host, ca, user, password)   what containerd needs to pull from the test registry;
  registry_access(reg)              that of an oci.ImageRegistry
  RafsSnapshotter(binary, config, root, socket, log)   rafs-snapshotter serve, in the background
"""

import collections
import os
import signal
import subprocess
import sys
import time

from . import mount
from .harness import log
from .rafsd import RafsdProcess

RegistryAccess = collections.namedtuple('RegistryAccess', 'host ca_file user password')


def registry_access(reg):
    """The RegistryAccess of an oci.ImageRegistry."""
    return RegistryAccess(reg.host, reg.ca.cert, reg.USER, reg.PASSWORD)

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO = 'cri_v1.proto'


def _toml_str(s):
    return '"%s"' % s.replace('\\', '\\\\').replace('"', '\\"')


class Containerd(RafsdProcess):
    """containerd with root, state, socket, config and logs under `work`. `registry`: a
    RegistryAccess; `sandbox_image`: the pod sandbox image (a reference in that registry);
    `snapshotter`: the CRI plugin's snapshotter ("overlayfs", or "rafs" with `rafs_socket`, the
    proxy snapshotter's socket); `netns`: a network namespace of the caller's to run it in."""

    def __init__(self, work, registry, sandbox_image, snapshotter='overlayfs', rafs_socket=None, netns=None):
        self.work = os.path.abspath(work)
        self.root = os.path.join(self.work, 'root')
        self.state = os.path.join(self.work, 'state')
        self.socket = os.path.join(self.work, 'containerd.sock')
        self.config = os.path.join(self.work, 'config.toml')
        self.runc_root = os.path.join(self.work, 'runc')
        self.pod_logs = os.path.join(self.work, 'pod-logs')
        cmd = ['containerd', '--config', self.config]
        super().__init__(['nsenter', '--net=/run/netns/' + netns] + cmd if netns else cmd,
                         os.path.join(self.work, 'containerd.log'))
        self._cri = None
        for d in (self.root, self.state, self.runc_root, self.pod_logs, os.path.join(self.work, 'cni')):
            os.makedirs(d, exist_ok=True)
        self._write_config(registry, sandbox_image, snapshotter, rafs_socket)

    def _write_config(self, registry, sandbox_image, snapshotter, rafs_socket):
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        host = registry.host
        lines = [
            'version = 2',
            'root = %s' % _toml_str(self.root),
            'state = %s' % _toml_str(self.state),
            # Snapshotters this machine has no use for; they only add errors to the log.
            'disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",'
            ' "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",'
            ' "io.containerd.tracing.processor.v1.otlp"]',
            '[grpc]',
            '  address = %s' % _toml_str(self.socket),
            '[debug]',
            '  level = "info"',
            '[plugins."io.containerd.internal.v1.opt"]',
            '  path = %s' % _toml_str(os.path.join(self.work, 'opt')),
            '[%s]' % cri,
            '  sandbox_image = %s' % _toml_str(sandbox_image),
            # No CAP_SYS_RESOURCE here: without this runc fails ("can't get final child's PID from pipe").
            '  restrict_oom_score_adj = true',
            '  stream_server_port = "0"',
            '[%s.cni]' % cri,
            '  bin_dir = "/usr/lib/cni"',
            '  conf_dir = %s' % _toml_str(os.path.join(self.work, 'cni')),
            '[%s.containerd]' % cri,
            '  snapshotter = %s' % _toml_str(snapshotter),
            # The CRI plugin labels each layer's Prepare (containerd.io/snapshot/cri.*) only so:
            # what lets a remote snapshotter skip the download.
            '  disable_snapshot_annotations = false',
            '  default_runtime_name = "runc"',
            '[%s.containerd.runtimes.runc]' % cri,
            '  runtime_type = "io.containerd.runc.v2"',
            '[%s.containerd.runtimes.runc.options]' % cri,
            '  Root = %s' % _toml_str(self.runc_root),
            '[%s.registry.mirrors.%s]' % (cri, _toml_str(host)),
            '  endpoint = [%s]' % _toml_str('https://' + host),
            '[%s.registry.configs.%s.tls]' % (cri, _toml_str(host)),
            '  ca_file = %s' % _toml_str(registry.ca_file),
            '[%s.registry.configs.%s.auth]' % (cri, _toml_str(host)),
            '  username = %s' % _toml_str(registry.user),
            '  password = %s' % _toml_str(registry.password),
        ]
        if rafs_socket:
            lines += ['[proxy_plugins.rafs]', '  type = "snapshot"', '  address = %s' % _toml_str(rafs_socket)]
        with open(self.config, 'w') as f:
            f.write('\n'.join(lines) + '\n')

    def ready(self):
        try:
            return os.path.exists(self.socket) and bool(self.cri().version(timeout=2))
        except Exception:  # noqa: B902 - any gRPC error: not serving yet
            return False

    def start(self, timeout=60, poll=0.1):
        """Starts containerd and waits until its CRI service answers Version; raises if it does not."""
        self.cri()  # the stubs compiled first: their errors are not "not ready yet"
        if not super().start(timeout, poll):
            tail = self.log_text()[-3000:]
            self.stop()
            raise RuntimeError('containerd did not start:\n' + tail)
        return self

    def cri(self):
        if self._cri is None:
            self._cri = Cri(self.socket, os.path.join(self.work, 'cri-stubs'), self.pod_logs)
        return self._cri

    def content_blobs(self):
        """Digests (sha256:...) of the blobs in containerd's content store."""
        d = os.path.join(self.root, 'io.containerd.content.v1.content', 'blobs', 'sha256')
        return sorted('sha256:' + n for n in os.listdir(d)) if os.path.isdir(d) else []

    def _shim_pids(self):
        """PIDs of the runc shims this containerd started (they name its socket on their command
        line and outlive it by design)."""
        pids = []
        for pid in os.listdir('/proc'):
            if not pid.isdigit():
                continue
            try:
                with open('/proc/%s/cmdline' % pid, 'rb') as f:
                    argv = f.read().split(b'\0')
            except OSError:
                continue
            if argv and argv[0].endswith(b'containerd-shim-runc-v2') and os.fsencode(self.socket) in argv:
                pids.append(int(pid))
        return pids

    def stop(self, sig=None, timeout=20):
        """Stops containerd (SIGTERM, then SIGKILL after `timeout` s), then the shims it left (their
        containers with them), and unmounts whatever is still mounted under its directories.
        Call it on every exit path; it does nothing the second time."""
        if self._cri is not None:
            self._cri.close()
            self._cri = None
        code = super().stop(sig, timeout)
        # Containers still running (an interrupted test): runc kills their processes and removes
        # them; then the shims, which outlive containerd by design, go.
        for ns in (os.listdir(self.runc_root) if os.path.isdir(self.runc_root) else []):
            for cid in os.listdir(os.path.join(self.runc_root, ns)):
                log('removing container %s with runc' % cid[:12])
                subprocess.run(['runc', '--root', os.path.join(self.runc_root, ns), 'delete', '--force', cid],
                               capture_output=True, timeout=60)
        for pid in self._shim_pids():
            log('stopping containerd shim %d' % pid)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while self._shim_pids() and time.monotonic() < deadline:
            time.sleep(0.1)
        for mp in self.mounts():
            try:
                mount.umount(mp)
            except OSError as e:
                log('warning: could not unmount %s: %s' % (mp, e))
        return code

    def mounts(self):
        """Mount points under this containerd's directories, deepest first."""
        found = []
        with open('/proc/self/mountinfo') as f:
            for line in f:
                mp = line.split()[4].encode().decode('unicode_escape')
                if mp.startswith(self.work + '/'):
                    found.append(mp)
        return sorted(found, key=len, reverse=True)

    def __exit__(self, *exc):
        self.stop()
        return False


class RafsSnapshotter(RafsdProcess):
    """`rafs-snapshotter --config CONFIG [--verbose] serve --root ROOT --address SOCKET` (rafsd's config: it
    mounts through the rafsd at daemon.socket), in the background; started when its socket accepts.
    restart() kills it (-9) and starts it again, as a crash and a restart by systemd would."""

    def __init__(self, binary, config, root, address, log_path, netns=None, verbose=False):
        cmd = [binary, '--config', config] + (['--verbose'] if verbose else []) + ['serve', '--root', root,
                                                                                  '--address', address]
        super().__init__(['nsenter', '--net=/run/netns/' + netns] + cmd if netns else cmd, log_path)
        self.root, self.address = root, address

    def ready(self):
        import socket
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            try:
                s.connect(self.address)
                return True
            except OSError:
                return False

    def start(self, timeout=60, poll=0.05):
        if not super().start(timeout, poll):
            self.stop()
            raise RuntimeError('rafs-snapshotter did not start:\n' + self.log_text()[-2000:])
        return self

    def restart(self, log_path=None):
        """kill -9, then started again; logging to `log_path` from then on if given (the old log
        stays for the test's messages)."""
        self.stop(signal.SIGKILL)
        if log_path:
            self.log_path = log_path
        return self.start()


def compile_proto(out_dir, proto=PROTO):
    """Python modules (messages, gRPC stubs) for rafstest/`proto` in out_dir (protoc with Debian's
    grpc_python_plugin: python3-grpc-tools in Debian 12 is too old for its protobuf)."""
    import importlib
    os.makedirs(out_dir, exist_ok=True)
    subprocess.run(['protoc', '-I', HERE, '--python_out=' + out_dir, '--grpc_out=' + out_dir,
                    '--plugin=protoc-gen-grpc=/usr/bin/grpc_python_plugin', os.path.join(HERE, proto)],
                   check=True, capture_output=True)
    if out_dir not in sys.path:
        sys.path.insert(0, out_dir)
    base = os.path.splitext(proto)[0]
    return importlib.import_module(base + '_pb2'), importlib.import_module(base + '_pb2_grpc')


class Cri:
    """The CRI v1 calls the tests make, over a unix socket. Pods run with host networking (no CNI
    here); their containers' logs go to files under `log_root`."""

    def __init__(self, socket_path, stub_dir, log_root):
        import grpc
        self.pb, grpc_mod = compile_proto(stub_dir)
        self.grpc = grpc
        self.channel = grpc.insecure_channel('unix://' + socket_path)
        self.runtime = grpc_mod.RuntimeServiceStub(self.channel)
        self.images = grpc_mod.ImageServiceStub(self.channel)
        self.log_root = log_root
        self.pod_configs = {}

    def close(self):
        self.channel.close()

    def version(self, timeout=10):
        return self.runtime.Version(self.pb.VersionRequest(version='v1'), timeout=timeout)

    def pull(self, image, timeout=600):
        """PullImage; returns the image id (the config digest)."""
        return self.images.PullImage(self.pb.PullImageRequest(image=self.pb.ImageSpec(image=image)),
                                     timeout=timeout).image_ref

    def list_images(self):
        return list(self.images.ListImages(self.pb.ListImagesRequest(), timeout=30).images)

    def remove_image(self, image):
        self.images.RemoveImage(self.pb.RemoveImageRequest(image=self.pb.ImageSpec(image=image)), timeout=120)

    def _host_namespaces(self):
        return self.pb.NamespaceOption(network=self.pb.NODE, pid=self.pb.CONTAINER, ipc=self.pb.POD)

    def run_pod(self, name, timeout=300):
        """RunPodSandbox with host networking; returns the sandbox id."""
        log_dir = os.path.join(self.log_root, name)
        os.makedirs(log_dir, exist_ok=True)
        config = self.pb.PodSandboxConfig(
            metadata=self.pb.PodSandboxMetadata(name=name, uid='uid-' + name, namespace='rafs-test'),
            log_directory=log_dir,
            linux=self.pb.LinuxPodSandboxConfig(security_context=self.pb.LinuxSandboxSecurityContext(
                namespace_options=self._host_namespaces())))
        pod_id = self.runtime.RunPodSandbox(self.pb.RunPodSandboxRequest(config=config),
                                            timeout=timeout).pod_sandbox_id
        self.pod_configs[pod_id] = config
        return pod_id

    def create(self, pod_id, name, image, command, args=(), timeout=300):
        """CreateContainer in the pod from `image` running command + args; returns its id."""
        config = self.pb.ContainerConfig(
            metadata=self.pb.ContainerMetadata(name=name), image=self.pb.ImageSpec(image=image),
            command=list(command), args=list(args), log_path=name + '.log',
            linux=self.pb.LinuxContainerConfig(security_context=self.pb.LinuxContainerSecurityContext(
                namespace_options=self._host_namespaces())))
        return self.runtime.CreateContainer(self.pb.CreateContainerRequest(
            pod_sandbox_id=pod_id, config=config, sandbox_config=self.pod_configs[pod_id]),
            timeout=timeout).container_id

    def start(self, container_id, timeout=120):
        self.runtime.StartContainer(self.pb.StartContainerRequest(container_id=container_id), timeout=timeout)

    def status(self, container_id):
        return self.runtime.ContainerStatus(self.pb.ContainerStatusRequest(container_id=container_id),
                                            timeout=30).status

    def wait_exit(self, container_id, timeout=120):
        """Waits (polling, bounded) until the container exited; returns its status."""
        deadline = time.monotonic() + timeout
        while True:
            st = self.status(container_id)
            if st.state == self.pb.CONTAINER_EXITED or time.monotonic() > deadline:
                return st
            time.sleep(0.05)

    def output(self, container_id):
        """What the container wrote to stdout and stderr, from its CRI log file (lines of
        `TIME STREAM P|F TEXT`, F ending a line)."""
        path = self.status(container_id).log_path
        try:
            with open(path, 'rb') as f:
                raw = f.read().decode('utf-8', 'replace')
        except OSError:
            return ''
        out = []
        for line in raw.splitlines():
            parts = line.split(' ', 3)
            if len(parts) == 4:
                out.append(parts[3] + ('\n' if parts[2] == 'F' else ''))
        return ''.join(out)

    def run(self, pod_id, name, image, command, timeout=120):
        """CreateContainer, StartContainer, wait for its exit, RemoveContainer: (exit code or None
        if it did not exit in time, its output)."""
        cid = self.create(pod_id, name, image, command)
        try:
            self.start(cid)
            st = self.wait_exit(cid, timeout)
            code = st.exit_code if st.state == self.pb.CONTAINER_EXITED else None
            return code, self.output(cid)
        finally:
            if self.status(cid).state == self.pb.CONTAINER_RUNNING:
                self.stop(cid, timeout=0)
            self.remove(cid)

    def exec_sync(self, container_id, cmd, timeout=120):
        """ExecSync: (exit code, stdout bytes, stderr bytes) of cmd run in the container."""
        r = self.runtime.ExecSync(self.pb.ExecSyncRequest(container_id=container_id, cmd=list(cmd), timeout=timeout),
                                  timeout=timeout + 30)
        return r.exit_code, r.stdout, r.stderr

    def stop(self, container_id, timeout=10):
        self.runtime.StopContainer(self.pb.StopContainerRequest(container_id=container_id, timeout=timeout),
                                   timeout=timeout + 60)

    def remove(self, container_id):
        self.runtime.RemoveContainer(self.pb.RemoveContainerRequest(container_id=container_id), timeout=120)

    def stop_pod(self, pod_id):
        self.runtime.StopPodSandbox(self.pb.StopPodSandboxRequest(pod_sandbox_id=pod_id), timeout=120)

    def remove_pod(self, pod_id):
        self.runtime.RemovePodSandbox(self.pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id), timeout=120)
        self.pod_configs.pop(pod_id, None)
