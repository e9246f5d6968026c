"""Driving mkrafs through its command-line contract, and verifying what it produced.

  mkrafs build [--chunk-size N] [--compressor none|zstd|lz4_block] [--digester blake3|sha256]
               [--prefetch-list FILE] [--mtime SECONDS] --output DIR SOURCE...
      -> DIR/image.boot, DIR/blobs/<blob-id>
  mkrafs inspect DIR/image.boot --blob-dir DIR/blobs
  mkrafs unpack DIR/image.boot --blob-dir DIR/blobs --raw-dir OUT   -> OUT/<blob-id>
  mkrafs unpack DIR/image.boot --blob-dir DIR/blobs --tar FILE

verify_build() runs the whole chain: output layout -> inspect -> unpack --raw-dir ->
fsck.erofs (advisory) -> kernel mount with device= in device-table order -> compare_trees,
and optionally the --tar export.
"""

import os
import shutil
import stat
import subprocess

from . import boot, compare, harness, mount
from . import tar as rtar
from .harness import log, run, text


class Mkrafs:
    def __init__(self, path, timeout=1800):
        self.path = path
        self.timeout = timeout

    def build(self, output, sources, chunk_size=None, compressor=None, digester=None,
              prefetch_list=None, mtime=None, stdin=None, extra=(), timeout=None):
        cmd = [self.path, 'build']
        if chunk_size is not None:
            cmd += ['--chunk-size', str(chunk_size)]
        if compressor is not None:
            cmd += ['--compressor', compressor]
        if digester is not None:
            cmd += ['--digester', digester]
        if prefetch_list is not None:
            cmd += ['--prefetch-list', prefetch_list]
        if mtime is not None:
            cmd += ['--mtime', str(mtime)]
        cmd += list(extra)
        if output is not None:
            cmd += ['--output', output]
        cmd += list(sources)
        return run(cmd, timeout=timeout or self.timeout, stdin=stdin)

    def inspect(self, out):
        return run([self.path, 'inspect', boot_path(out), '--blob-dir', blob_dir(out)],
                   timeout=self.timeout)

    def unpack_raw(self, out, raw_dir):
        return run([self.path, 'unpack', boot_path(out), '--blob-dir', blob_dir(out),
                    '--raw-dir', raw_dir], timeout=self.timeout)

    def unpack_tar(self, out, tar_file):
        return run([self.path, 'unpack', boot_path(out), '--blob-dir', blob_dir(out),
                    '--tar', tar_file], timeout=self.timeout)


def boot_path(out):
    return os.path.join(out, 'image.boot')


def blob_dir(out):
    return os.path.join(out, 'blobs')


def check_output_layout(ck, out, label):
    """DIR/image.boot exists; DIR/blobs/* names match the device table. Returns blob ids."""
    bp = boot_path(out)
    if not ck.check(os.path.isfile(bp), '%s: mkrafs wrote %s' % (label, bp)):
        return None
    try:
        sb = boot.read_superblock(bp)
        ids = boot.blob_ids(bp)
    except (boot.BootError, OSError) as e:
        ck.fail('%s: cannot read the bootstrap superblock: %s' % (label, e))
        return None
    present = sorted(os.listdir(blob_dir(out))) if os.path.isdir(blob_dir(out)) else []
    log('  %s: image.boot %d bytes, %d inodes, %d blob(s) in the device table: %s' % (
        label, os.path.getsize(bp), sb['inos'], len(ids), ', '.join(ids) or '-'))
    for b in present:
        log('    blobs/%s: %d bytes' % (b, os.path.getsize(os.path.join(blob_dir(out), b))))
    ck.check(sorted(ids) == present, '%s: blobs/ holds exactly the blobs of the device table' % label,
             'table %s, blobs/ %s' % (ids, present))
    ck.check(len(set(ids)) == len(ids), '%s: device-table blob ids are distinct' % label)
    return ids


def raw_devices(ck, raw_dir, ids, label):
    devs = [os.path.join(raw_dir, i) for i in ids]
    missing = [d for d in devs if not os.path.isfile(d)]
    ck.check(not missing, '%s: unpack --raw-dir wrote every blob' % label, 'missing %s' % missing)
    extra = sorted(set(os.listdir(raw_dir)) - set(ids))
    if extra:
        ck.warn('%s: unpack --raw-dir wrote unexpected files: %s' % (label, extra))
    return devs


def run_fsck(ck, out, devs, label):
    """fsck.erofs 1.5 predates some features: a failure is printed as a warning only; the
    kernel mount + compare is the verdict."""
    if shutil.which('fsck.erofs') is None:
        ck.warn('%s: fsck.erofs not installed, skipped' % label)
        return
    r = run(['fsck.erofs'] + ['--device=' + d for d in devs] + ['--extract', boot_path(out)])
    if r.returncode == 0:
        ck.ok('%s: fsck.erofs --extract (%.1fs)' % (label, r.elapsed))
    else:
        ck.warn('%s: fsck.erofs --extract failed (exit %s), advisory only: %s' % (
            label, r.returncode, (text(r.stderr) + text(r.stdout)).strip()[-1500:]))


def verify_build(ck, mk, out, expected, label, tmp, ignore=(), exclude=(), tar_export=False,
                 keep_raw=False):
    """inspect -> unpack -> fsck -> mount -> compare [-> tar export]. Returns True if the
    kernel mount matched."""
    ids = check_output_layout(ck, out, label)
    if ids is None:
        return False
    ck.cmd_ok(mk.inspect(out), '%s: mkrafs inspect' % label)
    raw = os.path.join(tmp, 'raw-' + os.path.basename(out))
    shutil.rmtree(raw, ignore_errors=True)
    os.makedirs(raw)
    ok = False
    try:
        if not ck.cmd_ok(mk.unpack_raw(out, raw), '%s: mkrafs unpack --raw-dir' % label):
            return False
        devs = raw_devices(ck, raw, ids, label)
        for d in devs:
            if os.path.isfile(d):
                log('    raw %s: %d bytes' % (os.path.basename(d), os.path.getsize(d)))
        run_fsck(ck, out, devs, label)
        try:
            with mount.mounted(boot_path(out), devices=devs) as mnt:
                ck.ok('%s: kernel mount with %d device(s)' % (label, len(devs)))
                diffs = compare.compare_trees(expected, mnt, ignore=ignore, exclude=exclude)
        except mount.MountError as e:
            ck.fail('%s: kernel mount failed: %s' % (label, e))
            return False
        ok = ck.diffs('%s: compare_trees(expected, kernel mount)' % label, diffs)
    finally:
        if not keep_raw:
            shutil.rmtree(raw, ignore_errors=True)
    if tar_export:
        verify_tar_export(ck, mk, out, expected, label, tmp, ignore=ignore, exclude=exclude)
    return ok


def not_utf8_entries(root):
    """How many entries of a tar of `root` carry a path that is not UTF-8: their own, their symlink
    target, or for a hardlink the first name of its file in bytewise order, which it links to."""
    def utf8(b):
        try:
            b.decode('utf-8')
            return True
        except UnicodeDecodeError:
            return False
    top = os.fsencode(root)
    paths = sorted(os.path.join(d, n)[len(top):] for d, dns, fns in os.walk(top) for n in dns + fns)
    first = {}  # (dev, ino) of a file with several names: its first name
    count = 0
    for rel in paths:
        st = os.lstat(top + rel)
        target = os.readlink(top + rel) if os.path.islink(top + rel) else b''
        key = (st.st_dev, st.st_ino)
        if not os.path.isdir(top + rel) and st.st_nlink > 1:
            if key in first:
                target = first[key]
            else:
                first[key] = rel
        if not utf8(rel) or not utf8(target):
            count += 1
    return count


def sparse_bytes(root):
    """(apparent size, bytes not allocated) summed over the regular files under root."""
    apparent = holes = 0
    for d, _, fns in os.walk(root):
        for n in fns:
            st = os.lstat(os.path.join(d, n))
            if stat.S_ISREG(st.st_mode):
                apparent += st.st_size
                holes += max(0, st.st_size - st.st_blocks * 512)
    return apparent, holes


def verify_tar_export(ck, mk, out, expected, label, tmp, ignore=(), exclude=()):
    tf = os.path.join(tmp, 'export-' + os.path.basename(out) + '.tar')
    try:
        if not ck.cmd_ok(mk.unpack_tar(out, tf), '%s: mkrafs unpack --tar' % label):
            return
        if not ck.check(os.path.isfile(tf), '%s: tar export file exists' % label):
            return
        log('    export: %d bytes' % os.path.getsize(tf))
        apparent, holes = sparse_bytes(expected)
        if holes >= 64 << 20:
            # Holes go as the tar's sparse map; a chunk with data in it goes whole, hence the half.
            ck.check(os.path.getsize(tf) < apparent - holes // 2, '%s: the export keeps the %d bytes of holes out '
                     '(sparse entries)' % (label, holes), '%d bytes, files %d' % (os.path.getsize(tf), apparent))
        r = run(['tar', '-tvf', tf])
        if ck.cmd_ok(r, '%s: GNU tar can list the export' % label):
            log('    GNU tar lists %d members' % len(text(r.stdout).splitlines()))
            # hdrcharset=BINARY (which GNU tar does not know) only for what UTF-8 cannot carry
            warned = text(r.stderr).count("unknown extended header keyword 'hdrcharset'")
            binary = not_utf8_entries(expected)
            ck.check(warned <= binary, '%s: GNU tar warns only about the %d names or targets that are not UTF-8'
                     % (label, binary), '%d warnings: %s' % (warned, text(r.stderr)[-300:]))
        diffs = rtar.compare_tar_to_tree(tf, expected, ignore=set(ignore) - {'sockets'},
                                         exclude=exclude, tmpdir=tmp)
        ck.diffs('%s: compare_tar_to_tree(export, expected)' % label, diffs)
        # second opinion, advisory: GNU tar's own --compare against the tree
        r = run(['tar', '--compare', '--xattrs', '--xattrs-include=*', '--numeric-owner',
                 '-f', tf, '-C', expected])
        if r.returncode == 0:
            ck.ok('%s: GNU tar --compare agrees' % label)
        else:
            ck.warn('%s: GNU tar --compare reports differences (advisory): %s' % (
                label, (text(r.stdout) + text(r.stderr)).strip()[-1500:]))
    finally:
        if os.path.exists(tf):
            os.unlink(tf)


def no_partial_output(out):
    """[] if `out` is absent or holds nothing but an empty blobs/ directory; otherwise the
    leftover relative paths."""
    if not os.path.lexists(out):
        return []
    if not os.path.isdir(out):
        return ['(output path is a non-directory)']
    left = harness.dir_listing(out)
    if left == ['blobs'] and os.path.isdir(os.path.join(out, 'blobs')):
        return []
    return left


def files_identical(a, b):
    """Byte-compare two files (cmp)."""
    r = subprocess.run(['cmp', '-s', a, b])
    return r.returncode == 0
