"""File-backed EROFS mounts through mount(2), the way the kernel sees a RAFS image.

mount(8) would turn a regular-file source into a loop device (and then `device=` must be
a block device too), so we call libc's mount() directly:
    mount(bootstrap, mnt, "erofs", MS_RDONLY, "device=/abs/blob0,device=/abs/blob1")
"""

import contextlib
import ctypes
import ctypes.util
import os
import shutil
import subprocess
import tempfile
import time

MS_RDONLY = 1
MNT_DETACH = 2

_libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6', use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_char_p]
_libc.mount.restype = ctypes.c_int
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.umount2.restype = ctypes.c_int


class MountError(OSError):
    pass


def erofs_available():
    """True if the running kernel has EROFS (built in or loaded)."""
    try:
        with open('/proc/filesystems') as f:
            return any(line.split()[-1] == 'erofs' for line in f if line.strip())
    except OSError:
        return False


def _kernel_log_tail(n=6):
    try:
        out = subprocess.run(['dmesg'], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return ''
    lines = [l for l in out.splitlines() if 'erofs' in l.lower()]
    return '\n'.join(lines[-n:])


def mount_options(devices=(), extra=()):
    opts = []
    for d in devices:
        d = os.path.abspath(os.fsdecode(d))
        if ',' in d:
            raise ValueError('device path contains a comma: %r' % d)
        opts.append('device=' + d)
    opts.extend(extra)
    return ','.join(opts)


def erofs_mount(bootstrap, mountpoint, devices=(), extra_options=()):
    """mount(bootstrap, mountpoint, "erofs", MS_RDONLY, "device=...,...").

    devices: blob files in device-table order (absolute paths are used).
    Raises MountError with the errno text (and recent erofs kernel messages) on failure."""
    src = os.path.abspath(os.fsdecode(bootstrap))
    tgt = os.path.abspath(os.fsdecode(mountpoint))
    opts = mount_options(devices, extra_options)
    rc = _libc.mount(os.fsencode(src), os.fsencode(tgt), b'erofs', MS_RDONLY,
                     os.fsencode(opts) if opts else None)
    if rc != 0:
        err = ctypes.get_errno()
        msg = 'mount(%s, %s, "erofs", MS_RDONLY, "%s") failed: %s' % (
            src, tgt, opts, os.strerror(err))
        log = _kernel_log_tail()
        if log:
            msg += '\nkernel log (erofs lines):\n' + log
        raise MountError(err, msg)


def umount(mountpoint, retries=20):
    """Unmount; retry on EBUSY for a while, then detach lazily as a last resort."""
    tgt = os.fsencode(os.path.abspath(os.fsdecode(mountpoint)))
    for _ in range(retries):
        if _libc.umount2(tgt, 0) == 0:
            return
        err = ctypes.get_errno()
        if err == 16:  # EBUSY
            time.sleep(0.25)
            continue
        raise OSError(err, 'umount(%s) failed: %s' % (os.fsdecode(tgt), os.strerror(err)))
    if _libc.umount2(tgt, MNT_DETACH) != 0:
        err = ctypes.get_errno()
        raise OSError(err, 'umount2(%s, MNT_DETACH) failed: %s' % (os.fsdecode(tgt), os.strerror(err)))


def is_mountpoint(path):
    return os.path.ismount(path)


@contextlib.contextmanager
def mounted(bootstrap, mountpoint=None, devices=(), extra_options=()):
    """Context manager: mount, yield the mountpoint, always unmount (and remove the
    mountpoint directory if we created it)."""
    created = None
    if mountpoint is None:
        created = mountpoint = tempfile.mkdtemp(prefix='rafs-mnt-',
                                                dir=os.environ.get('RAFSD_TEST_TMP'))
    else:
        os.makedirs(mountpoint, exist_ok=True)
    try:
        erofs_mount(bootstrap, mountpoint, devices, extra_options)
        try:
            yield mountpoint
        finally:
            umount(mountpoint)
    finally:
        if created:
            shutil.rmtree(created, ignore_errors=True)
