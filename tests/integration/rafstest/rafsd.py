"""Running rafsd and rafsctl for integration tests.

  rafsd mount [--config F] [--engine E] [--blob-dir D] [--cache-dir C] BOOTSTRAP MOUNTPOINT
  rafsd serve --config F                    (control socket: daemon.socket in F)
  rafsctl [--socket S] mount|umount|list|status ...

RafsdMount starts `rafsd mount` in the background, waits for the mount to appear, and stops it
with a signal on exit (checking that it exits 0 and leaves nothing mounted).
"""

import os
import signal
import subprocess
import time

from . import mount
from .harness import log


def binaries():
    """(rafsd, rafsctl) from $RAFSD / $RAFSCTL."""
    rafsd, rafsctl = os.environ.get('RAFSD'), os.environ.get('RAFSCTL')
    if not rafsd or not rafsctl:
        raise SystemExit('FAIL: set RAFSD and RAFSCTL to the built binaries')
    return rafsd, rafsctl


def write_config(path, **sections):
    """write_config(p, prefetch={'enable': False}, daemon={'socket': '/x'})"""
    lines = []
    for section, values in sections.items():
        lines.append('[%s]' % section)
        for k, v in values.items():
            if isinstance(v, bool):
                lines.append('%s = %s' % (k, 'true' if v else 'false'))
            elif isinstance(v, int):
                lines.append('%s = %d' % (k, v))
            else:
                lines.append('%s = "%s"' % (k, v))
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    return path


class RafsdMount:
    def __init__(self, rafsd, bootstrap, mountpoint, blob_dir=None, cache_dir=None, config=None,
                 engine=None, log_path=None):
        self.cmd = [rafsd, 'mount']
        if config:
            self.cmd += ['--config', config]
        if engine:
            self.cmd += ['--engine', engine]
        if blob_dir:
            self.cmd += ['--blob-dir', blob_dir]
        if cache_dir:
            self.cmd += ['--cache-dir', cache_dir]
        self.cmd += [bootstrap, mountpoint]
        self.mountpoint = mountpoint
        self.log_path = log_path or (mountpoint.rstrip('/') + '.rafsd.log')
        self.proc = None
        self.exit_code = None

    def start(self, timeout=30):
        log('$ ' + ' '.join(self.cmd) + ' &')
        self.log_file = open(self.log_path, 'wb')
        self.proc = subprocess.Popen(self.cmd, stdout=self.log_file, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if os.path.ismount(self.mountpoint):
                return True
            if self.proc.poll() is not None:
                return False
            time.sleep(0.05)
        return False

    def stop(self, sig=signal.SIGINT, timeout=60):
        """Signal rafsd, wait for it; returns its exit code (None if it had to be killed)."""
        if self.proc is None:
            return self.exit_code
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
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

    def __exit__(self, *exc):
        if self.proc is not None:
            self.stop()
        if os.path.ismount(self.mountpoint):
            mount.umount(self.mountpoint)
        return False


def fetched_bytes(log_text):
    """Sum of 'fetched N bytes' over the blobs rafsd reported when it stopped."""
    total = 0
    for line in log_text.splitlines():
        if ': fetched ' in line:
            total += int(line.split(': fetched ')[1].split()[0])
    return total
