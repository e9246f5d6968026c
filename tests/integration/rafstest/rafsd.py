"""Running rafsd and rafsctl for integration tests.

  rafsd mount [--config F] [--engine E] [--blob-dir D] [--cache-dir C] BOOTSTRAP MOUNTPOINT
  rafsd serve --config F                    (control socket: daemon.socket in F)
  rafsctl [--socket S] mount|umount|list|status ...

RafsdMount starts `rafsd mount` in the background, waits for the mount to appear, and stops it
with a signal on exit. A rafsd that the exit stops must exit 0 and leave nothing mounted, else the
exit raises CleanupFailure (unless the block is leaving on an exception already): a test that
leaves the stop to it still fails on a crash at shutdown.
"""

import os
import signal
import subprocess
import time

from . import mount
from .harness import log


def require_fanotify_engine():
    """Exits 77 (skip) on a kernel older than 6.14, which has no fanotify pre-content events: the
    only thing these tests cannot run without. Missing tools are failures, not skips."""
    import platform
    import re
    from .harness import skip
    m = re.match(r'(\d+)\.(\d+)', platform.release())
    if m and (int(m.group(1)), int(m.group(2))) < (6, 14):
        skip('kernel %s has no fanotify pre-content events (6.14+): the fanotify engine cannot run'
             % platform.release())


def require_tools(*tools):
    """Fails (exit 1) naming the tools missing: scripts/setup installs them."""
    import shutil
    import sys
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        log('FAIL: missing tools (scripts/setup installs them): ' + ', '.join(missing))
        sys.exit(1)


def start_test(name, doc, tools=(), extra=None):
    """The common start of a rafsd test: parses its arguments (extra(argparser) adds its own),
    checks root, EROFS, the fanotify engine and `tools`. Returns (args, Mkrafs, rafsd binary, rafsctl binary, Checker)."""
    from . import harness
    from .mkrafs import Mkrafs
    args = harness.parse_args(doc, extra)
    harness.require_root_and_erofs()
    require_fanotify_engine()
    require_tools(*tools)
    mk = Mkrafs(harness.check_mkrafs(args.mkrafs))
    rafsd_bin, rafsctl_bin = binaries()
    return args, mk, rafsd_bin, rafsctl_bin, harness.Checker(name)


def binaries():
    """(rafsd, rafsctl) from $RAFSD / $RAFSCTL."""
    rafsd, rafsctl = os.environ.get('RAFSD'), os.environ.get('RAFSCTL')
    if not rafsd or not rafsctl:
        raise SystemExit('FAIL: set RAFSD and RAFSCTL to the built binaries')
    return rafsd, rafsctl


def write_config(path, **sections):
    """write_config(p, prefetch={'enable': False}, daemon={'socket': '/x'}). Without a
    daemon.state_dir, one beside the file (PATH.state): a test's rafsd keeps nothing in the host's
    /var/lib/rafsd."""
    sections = dict(sections)
    sections['daemon'] = dict(sections.get('daemon', {}))
    sections['daemon'].setdefault('state_dir', path + '.state')
    lines = []
    for section, values in sections.items():
        lines.append('[%s]' % section)
        for k, v in values.items():
            if isinstance(v, bool):
                lines.append('%s = %s' % (k, 'true' if v else 'false'))
            elif isinstance(v, int):
                lines.append('%s = %d' % (k, v))
            elif isinstance(v, list):
                lines.append('%s = [%s]' % (k, ', '.join('"%s"' % x for x in v)))
            else:
                lines.append('%s = "%s"' % (k, v))
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    return path


def network_config(tmp, name, backend=None, **sections):
    """The config of a test's `rafsd serve` named `name`: fanotify engine, socket
    <tmp>/<name>.sock, its own cache and state dirs under tmp, no prefetch; `backend` is the
    [backend] table (none: the default), `sections` more tables by name (e.g.
    'backend.hosts."127.0.0.1:5000"')."""
    base = {'daemon': {'engine': 'fanotify', 'socket': os.path.join(tmp, name + '.sock'),
                       'cache_dir': os.path.join(tmp, name + '-cache'), 'state_dir': os.path.join(tmp, name + '-state')},
            'prefetch': {'enable': False}}
    if backend is not None:
        base['backend'] = backend
    for section, values in sections.items():
        base[section] = dict(base.get(section, {}), **values)
    return write_config(os.path.join(tmp, name + '.toml'), **base)


class CleanupFailure(Exception):
    """A rafsd stopped at the end of its `with` block exited non-zero or left a mount."""


class RafsdProcess:
    """A rafsd process in the background with its output in `log_path`; stopped with
    `stop_signal` on exit."""

    stop_signal = signal.SIGTERM
    popen_options = {}  # more keyword arguments for Popen

    def __init__(self, cmd, log_path):
        self.cmd = cmd
        self.log_path = log_path
        self.proc = None
        self.exit_code = None

    def ready(self):
        raise NotImplementedError

    def start(self, timeout=30, poll=0.05):
        """Starts rafsd; True once ready() (checked every `poll` seconds), False if it exits or the
        timeout passes first."""
        log('$ ' + ' '.join(self.cmd) + ' &')
        self.log_file = open(self.log_path, 'wb')
        self.proc = subprocess.Popen(self.cmd, stdout=self.log_file, stderr=subprocess.STDOUT, **self.popen_options)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready():
                return True
            if self.proc.poll() is not None:
                return False
            time.sleep(poll)
        return False

    def stop(self, sig=None, timeout=60):
        """Signals rafsd and waits; its exit code, or None if it had to be killed."""
        if self.proc is None:
            return self.exit_code
        if self.proc.poll() is None:
            self.proc.send_signal(sig or self.stop_signal)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self.exit_code = None
                self.proc = None
                self.log_file.close()
                return None
        self.exit_code = self.proc.returncode
        self.proc = None
        self.log_file.close()
        return self.exit_code

    def log_text(self):
        with open(self.log_path, 'rb') as f:
            return f.read().decode('utf-8', 'backslashreplace')

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        # Only a rafsd still running here is this exit's to judge: one the test killed or stopped
        # was judged by the test.
        running = self.proc is not None and self.proc.poll() is None
        if self.proc is not None:
            code = self.stop()
            if running and code != 0 and exc_type is None:
                raise CleanupFailure('%s exited %s when stopped at the end of the test; its log ends:\n%s'
                                     % (' '.join(self.cmd[:2]), code, self.log_text()[-1500:]))
        return False


class RafsdMount(RafsdProcess):
    """`rafsd mount` in the background; started when the mount appears."""

    stop_signal = signal.SIGINT

    def __init__(self, rafsd, bootstrap, mountpoint, blob_dir=None, cache_dir=None, config=None,
                 engine=None, log_path=None):
        cmd = [rafsd, 'mount']
        if config:
            cmd += ['--config', config]
        if engine:
            cmd += ['--engine', engine]
        if blob_dir:
            cmd += ['--blob-dir', blob_dir]
        if cache_dir:
            cmd += ['--cache-dir', cache_dir]
            if not config:
                # Not the host's /var/lib/rafsd (start traces are kept there).
                cmd += ['--state-dir', cache_dir.rstrip('/') + '-state']
        cmd += [bootstrap, mountpoint]
        super().__init__(cmd, log_path or (mountpoint.rstrip('/') + '.rafsd.log'))
        self.mountpoint = mountpoint

    def ready(self):
        return os.path.ismount(self.mountpoint)

    def __exit__(self, exc_type, *exc):
        try:
            super().__exit__(exc_type, *exc)
        finally:
            left = os.path.ismount(self.mountpoint)
            if left:
                mount.umount(self.mountpoint)
        if left and exc_type is None:
            raise CleanupFailure('rafsd mount left %s mounted' % self.mountpoint)
        return False


EXPECT_ERROR_TIMEOUT = 60


# rafsd's defaults (daemon/api/Config.h): a command that fails must not have made them.
DEFAULT_DIRS = ('/var/lib/rafsd', '/var/cache/rafsd', '/run/rafsd')


def expect_error(ck, what, cmd, mnt, must_contain=()):
    """Runs a rafsd command that must fail; checks exit code, the one error line, no mount, and
    none of rafsd's default directories made by it."""
    from .harness import run, text
    absent = [d for d in DEFAULT_DIRS if not os.path.exists(d)]
    r = run(cmd, timeout=EXPECT_ERROR_TIMEOUT)
    made = [d for d in absent if os.path.exists(d)]
    ck.check(not made, '%s: none of rafsd\'s default directories made' % what, 'made: %s' % made)
    err = text(r.stderr).strip()
    lines = [line for line in err.splitlines() if line.strip()]
    # rafsd's own log lines ("rafsd info: ...") may come before; the error itself is one line.
    problems = [line for line in lines if not line.startswith(('rafsd info:', 'rafsd debug:'))]
    detail = 'exit %s, stderr: %r' % (r.returncode, err[-1500:])
    if r.returncode is None:
        ck.fail('%s: rafsd did not exit within %d s' % (what, EXPECT_ERROR_TIMEOUT))
    elif r.returncode < 0 or r.returncode >= 128:
        ck.fail('%s: rafsd crashed (%s)' % (what, detail))
    elif ck.check(r.returncode != 0, '%s: non-zero exit (%d)' % (what, r.returncode), detail):
        one = len(problems) == 1 and problems[0].startswith('rafsd: ')
        ck.check(one, '%s: one error line: %s' % (what, problems[0] if problems else '(none)'), detail)
        if one:
            missing = [s for s in must_contain if s not in problems[0]]
            ck.check(not missing, '%s: the error names %s' % (what, ', '.join(repr(s) for s in must_contain)),
                     'missing %r in %r' % (missing, problems[0]))
    if mnt is not None and os.path.isdir(mnt):
        mounted = os.path.ismount(mnt)
        ck.check(not mounted, '%s: nothing mounted' % what)
        if mounted:
            mount.umount(mnt)


def fetched_bytes(log_text):
    """Sum of 'fetched N bytes' over the blobs rafsd reported when it stopped."""
    total = 0
    for line in log_text.splitlines():
        if ': fetched ' in line:
            total += int(line.split(': fetched ')[1].split()[0])
    return total


# ------------------------------------------------------------------ small trees and image facts

def make_small_tree(root, files, seed=1):
    """Creates `files` ([(relpath, size)]) under root with seeded random (incompressible) bytes;
    returns {relpath: bytes}."""
    import random
    rnd = random.Random(seed)
    out = {}
    for rel, size in files:
        p = os.path.join(root, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        data = rnd.randbytes(size)
        with open(p, 'wb') as f:
            f.write(data)
        out[rel] = data
    return out


def small_image(ck, mk, tmp, files, seed, **build):
    """A test's image: `files` made under tmp/src (make_small_tree), built with mkrafs into tmp/out,
    and an empty tmp/mnt. Returns (sources, bootstrap, blob id, mountpoint), or None if the build
    failed (reported)."""
    from .boot import blob_ids
    src, out, mnt = (os.path.join(tmp, n) for n in ('src', 'out', 'mnt'))
    os.makedirs(mnt)
    sources = make_small_tree(src, files, seed=seed)
    if not ck.cmd_ok(mk.build(out, [src], **build), 'mkrafs build'):
        return None
    boot = os.path.join(out, 'image.boot')
    return sources, boot, blob_ids(boot)[0], mnt


EXT_SB_OFFSET = 1152
CHUNK_INFO_SIZE = 80


def bootstrap_flags(boot):
    """The RAFS extended superblock's s_flags of bootstrap bytes."""
    import struct
    return struct.unpack_from('<Q', boot, EXT_SB_OFFSET)[0]


def chunk_table(boot):
    """The chunk info table of bootstrap bytes (nydus rafs/src/metadata/layout/v6.rs), read independently of mkrafs:
    {(blob_index, ci): {'digest', 'compressed_offset', 'compressed_size', 'uncompressed_offset',
    'uncompressed_size'}}."""
    import struct
    off, size = struct.unpack_from('<QQ', boot, EXT_SB_OFFSET + 24)
    table = {}
    for pos in range(off, off + size, CHUNK_INFO_SIZE):
        digest = boot[pos:pos + 32]
        blob, _flags, csize, usize, coff, uoff, _foff, ci = struct.unpack_from('<IIIIQQQI', boot, pos + 32)
        table[(blob, ci)] = {'digest': digest.hex(), 'compressed_offset': coff, 'compressed_size': csize,
                             'uncompressed_offset': uoff, 'uncompressed_size': usize}
    return table


def blob_section(blob_path, wanted):
    """The content of section `wanted` of a Nydus blob's tail: peels the 'reverse tar' sections
    (each its content, then a 512-byte tar header) from the end (nydus storage/src/meta/toc.rs)."""
    with open(blob_path, 'rb') as f:
        data = f.read()
    end = len(data)
    while end >= 512:
        hdr = data[end - 512:end]
        name = hdr[:100].split(b'\0', 1)[0].decode()
        size = int(hdr[124:136].split(b'\0', 1)[0].strip() or b'0', 8)
        if name == wanted:
            return data[end - 512 - size:end - 512]
        end -= 512 + size
    raise ValueError('%s: no %s section' % (blob_path, wanted))


def inline_bootstrap(blob_path):
    """The bootstrap inside a Nydus blob with an inline bootstrap, decompressed with the zstd tool."""
    content = blob_section(blob_path, 'image.boot')
    if content[:4] == b'\x28\xb5\x2f\xfd':
        return subprocess.run(['zstd', '-dc'], input=content, capture_output=True, check=True).stdout
    return content


def inspect_chunks(mkrafs, bootstrap, blob_dir):
    """`mkrafs inspect -v`: {'/path': (size, [(file_offset, blob_index, ci, uncompressed_offset, size)])}
    for the regular files."""
    import re
    r = subprocess.run([mkrafs, 'inspect', '-v', bootstrap, '--blob-dir', blob_dir], capture_output=True)
    if r.returncode != 0:
        raise RuntimeError('mkrafs inspect failed: ' + r.stdout.decode() + r.stderr.decode())
    files = {}
    current = None
    for line in r.stdout.decode('utf-8', 'replace').splitlines():
        m = re.match(r'^-\S+ \S+ +(\d+) \S+ nid \d+ nlink \d+ (/.*)$', line)
        if m:
            current = m.group(2)
            files[current] = (int(m.group(1)), [])
            continue
        m = re.match(r'^ +chunk at (\d+): blob (\d+) ci (\d+) uncompressed 0x([0-9a-f]+)\+(\d+)', line)
        if m and current is not None:
            files[current][1].append((int(m.group(1)), int(m.group(2)), int(m.group(3)),
                                      int(m.group(4), 16), int(m.group(5))))
        elif not line.startswith(' '):
            current = None
    return files


def blake3_hex(data):
    r = subprocess.run(['b3sum', '--no-names'], input=data, capture_output=True, check=True)
    return r.stdout.decode().split()[0]


def data_in_range(path, begin, end):
    """True if the file has any data (not a hole) in [begin, end)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            pos = os.lseek(fd, begin, os.SEEK_DATA)
        except OSError:
            return False  # ENXIO: no data at or after begin
        return pos < end
    finally:
        os.close(fd)


def drop_file_cache(path):
    """Drops the page cache of one file (e.g. on the EROFS mount) so its next read goes to the kernel
    again."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


# ------------------------------------------------------------------ rafsd serve and rafsctl

def rafsctl(rafsctl_bin, socket_path, *args, timeout=60):
    cmd = [rafsctl_bin, '--socket', socket_path] + [str(a) for a in args]
    log('$ ' + ' '.join(cmd))
    try:
        return subprocess.run(cmd, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        return subprocess.CompletedProcess(cmd, None, e.stdout or b'', e.stderr or b'')


def rafsctl_mount(ck, rafsctl_bin, socket_path, blobs, boot, mnt, what='rafsctl mount'):
    """`rafsctl mount --blob-dir BLOBS BOOT MNT` (without --blob-dir if BLOBS is None: the config's
    backend), checked as `what`; whether it worked."""
    r = rafsctl(rafsctl_bin, socket_path, 'mount', *(['--blob-dir', blobs] if blobs else []), boot, mnt)
    return ck.check(r.returncode == 0, what, (r.stdout + r.stderr).decode(errors='replace'))


def rafsctl_status(rafsctl_bin, socket_path, mountpoint=None):
    """rafsctl status --json, parsed; None if it failed."""
    import json
    args = ['status', '--json'] + ([mountpoint] if mountpoint else [])
    r = rafsctl(rafsctl_bin, socket_path, *args)
    if r.returncode != 0:
        log('rafsctl status failed: ' + (r.stderr or b'').decode())
        return None
    return json.loads(r.stdout)


def image_of(status, mountpoint):
    """The entry of `mountpoint` in a parsed `rafsctl status --json`, or None."""
    for image in (status or {}).get('images', []):
        if image.get('mountpoint') == mountpoint:
            return image
    return None


def children(pid):
    """The pids of the children of `pid`."""
    try:
        with open('/proc/%d/task/%d/children' % (pid, pid)) as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def worker_of(pid, timeout=30):
    """The first child of rafsd `pid` (its supervisor): the worker."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kids = children(pid)
        if kids:
            return kids[0]
        time.sleep(0.05)
    raise RuntimeError('rafsd %d has no worker' % pid)


class BackgroundServe(RafsdProcess):
    """`rafsd serve` as a restart test starts it: with `env` (a notify socket, or none) and
    `pass_fds` (a restart's stored fds), its output appended to `log_path`; start() does not wait."""

    def __init__(self, cmd, log_path, env, pass_fds=()):
        super().__init__(cmd, log_path)
        self.env, self.pass_fds = env, pass_fds

    def start(self, timeout=30):
        log('$ ' + ' '.join(self.cmd) + ' &')
        self.log_file = open(self.log_path, 'ab')
        self.proc = subprocess.Popen(self.cmd, stdout=self.log_file, stderr=subprocess.STDOUT, env=self.env,
                                     pass_fds=self.pass_fds)
        return True


class RafsdServe(RafsdProcess):
    """`rafsd serve --config F` in the background; started when the control socket answers."""

    def __init__(self, rafsd, config, socket_path, log_path, extra=()):
        super().__init__([rafsd, 'serve', '--config', config] + list(extra), log_path)
        self.socket = socket_path

    def ready(self):
        if not os.path.exists(self.socket):
            return False
        import socket as sk
        s = sk.socket(sk.AF_UNIX, sk.SOCK_STREAM)
        try:
            s.connect(self.socket)
            return True
        except OSError:
            return False
        finally:
            s.close()
