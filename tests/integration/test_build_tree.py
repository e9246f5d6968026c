#!/usr/bin/python3
"""mkrafs build from a directory: the full tree round-trips through the real kernel.

For several compressor / digester / chunk-size combinations:
  make_full_tree -> mkrafs build -> output layout (image.boot, blobs/ = device table)
  -> mkrafs inspect -> mkrafs unpack --raw-dir -> fsck.erofs --device=... (advisory:
  erofs-utils 1.5 may not know every feature; printed as a warning) -> kernel mount(2)
  with device= in device-table order -> compare_trees(source, mount): everything must
  match (types, modes, owners, mtimes to the ns, rdev, symlinks, xattrs incl. ACLs and
  capabilities, contents incl. the 5 GiB sparse file, hardlink groups).
One combination also exports with `unpack --tar` and compares the tar with the tree.
Reproducibility: the same tree built twice with --mtime 0 gives byte-identical
image.boot and blobs; so does a second copy of the tree created in a different order on
a tmpfs (different readdir order, xattr listing order and inode numbers).
A prefetch list naming a file twice, two names of one file, and paths the image lacks (a trace
of an earlier version), one with a NUL byte: built, each file in the table once, the missing
paths left out and said, the NUL escaped. An --output dir inside the source directory is not
packed into the image. A 64 GiB sparse file builds uncompressed in 2 GiB of address space.

Exit: 0 pass, 77 skip (not root / no EROFS), 1 fail.
"""

import os
import re
import shutil
import sys
import tarfile

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from rafstest import compare, harness, tree  # noqa: E402
from rafstest.harness import log  # noqa: E402
from rafstest.mkrafs import Mkrafs, files_identical, verify_build  # noqa: E402

MiB = 1 << 20

# (label, compressor, digester, chunk size, extra checks)
COMBOS = [
    ('none-blake3-default', 'none', 'blake3', None, {'prefetch': True}),
    ('zstd-sha256-4k', 'zstd', 'sha256', 4096, {}),
    ('lz4-blake3-16m', 'lz4_block', 'blake3', 16 * MiB, {}),
    ('zstd-blake3-1m', 'zstd', 'blake3', MiB, {'tar': True}),
    ('none-sha256-64k', 'none', 'sha256', 64 * 1024, {}),
]


def compare_outputs(ck, a, b, label):
    """Byte-identical image.boot and blobs (same names, same bytes)."""
    la = sorted(harness.dir_listing(a))
    lb = sorted(harness.dir_listing(b))
    if not ck.check('image.boot' in la and 'image.boot' in lb,
                    '%s: both builds wrote image.boot' % label, '%s vs %s' % (la, lb)):
        return
    if not ck.check(la == lb, '%s: same output file names' % label, '%s vs %s' % (la, lb)):
        return
    for rel in la:
        pa, pb = os.path.join(a, rel), os.path.join(b, rel)
        if os.path.isdir(pa):
            continue
        ck.check(files_identical(pa, pb), '%s: %s byte-identical' % (label, rel))


def make_shuffled_copy(ck, tmp):
    """The small tree again, leaves created in a shuffled order, on a tmpfs: ext4 returns
    directory entries in hash order whatever the creation order, tmpfs in creation order,
    so the builder sees a different readdir order (and different xattr listing order and
    inode numbers). Falls back to the same file system if tmpfs cannot hold the tree."""
    mnt = os.path.join(tmp, 'tmpfs')
    os.mkdir(mnt)
    r = harness.run(['mount', '-t', 'tmpfs', '-o', 'size=512m,mode=0755', 'tmpfs', mnt])
    if r.returncode == 0:
        s2 = os.path.join(mnt, 'small-b')
        try:
            tree.make_full_tree(s2, big_sparse=False, shuffle=True)
            return s2
        except OSError as e:
            ck.warn('tmpfs cannot hold the tree (%s); shuffled copy made on the same file system' % e)
            shutil.rmtree(s2, ignore_errors=True)
    else:
        ck.warn('cannot mount a tmpfs; shuffled copy made on the same file system')
    s2 = os.path.join(tmp, 'small-b')
    tree.make_full_tree(s2, big_sparse=False, shuffle=True)
    return s2


def main():
    args, mkrafs, ck = harness.start_mkrafs_test('test_build_tree', __doc__, ('setfacl', 'tar', 'cmp'))
    mk = Mkrafs(mkrafs)
    with harness.temp_dir('rafs-build-tree-', keep=args.keep) as tmp:
        ck.section('make_full_tree')
        src = os.path.join(tmp, 'src')
        desc = tree.make_full_tree(src, big_sparse=not args.small)
        log('  %d entries, %d bytes of file data (apparent)' % (desc['entries'], desc['total_file_bytes']))
        self_diffs = compare.compare_trees(src, src)
        if self_diffs:
            ck.diffs('comparator sanity (tree vs itself)', self_diffs)
            return ck.finish()

        prefetch = os.path.join(tmp, 'prefetch.list')
        with open(prefetch, 'w') as f:
            f.write('/files/small.txt\n/dedup\n/hardlinks/triple_1\n')

        for label, compressor, digester, chunk, extra in COMBOS:
            ck.section('build %s' % label)
            out = os.path.join(tmp, 'out-' + label)
            r = mk.build(out, [src], chunk_size=chunk, compressor=compressor, digester=digester,
                         prefetch_list=prefetch if extra.get('prefetch') else None)
            if ck.cmd_ok(r, '%s: mkrafs build' % label):
                if r.stderr.strip():
                    log('    build stderr: ' + harness.text(r.stderr).strip()[-500:])
                verify_build(ck, mk, out, src, label, tmp, tar_export=extra.get('tar', False))
            shutil.rmtree(out, ignore_errors=True)

        ck.section('a prefetch list with a path twice, two names of one file, and paths not in the image')
        small = os.path.join(tmp, 'prefetch-src')
        os.makedirs(small)
        for name in ('a', 'b'):
            with open(os.path.join(small, name), 'w') as f:
                f.write(name * 5000)
        os.link(os.path.join(small, 'a'), os.path.join(small, 'a-link'))
        stale = os.path.join(tmp, 'stale.list')
        with open(stale, 'w') as f:
            f.write('/a\n/a\n/a-link\n/gone\0since\n/gone-too\n/b\n')
        out = os.path.join(tmp, 'out-stale')
        r = mk.build(out, [small], prefetch_list=stale)
        if ck.cmd_ok(r, 'mkrafs build with a stale prefetch list'):
            said = harness.text(r.stdout) + harness.text(r.stderr)
            ck.check("2 of its paths are not in the image, left out (the first: '/gone\\x00since')" in said,
                     'the paths not in the image are left out, and said (a NUL in one escaped)', said[-500:])
            r = harness.run([mk.path, 'inspect', os.path.join(out, 'image.boot')])
            nids = re.findall(r'prefetch: nids ([0-9 ]+)', harness.text(r.stdout))
            ck.check(len(nids) == 1 and len(nids[0].split()) == 2, 'the prefetch table names each file once (a, b)',
                     repr(nids))
        shutil.rmtree(out, ignore_errors=True)

        ck.section('a 64 GiB sparse file without compression, in 2 GiB of address space')
        # Its holes are skipped, not read: nothing in proportion to its size, memory neither.
        sparse_src = os.path.join(tmp, 'sparse-src')
        os.makedirs(sparse_src)
        with open(os.path.join(sparse_src, 'huge'), 'wb') as f:
            f.truncate(64 << 30)
            f.seek((64 << 30) - 4)
            f.write(b'tail')
        out = os.path.join(tmp, 'out-sparse')
        r = harness.run(['prlimit', '--as=%d' % (2 << 30), mk.path, 'build', '--compressor', 'none',
                         '--output', out, sparse_src], timeout=300)
        if ck.cmd_ok(r, 'mkrafs build --compressor none of a 64 GiB sparse file, under prlimit --as=2GiB'):
            blob_bytes = sum(os.path.getsize(os.path.join(out, 'blobs', b)) for b in os.listdir(os.path.join(out, 'blobs')))
            ck.check(blob_bytes < 4 << 20, 'its blob holds the zero chunk once and the tail (%d bytes)' % blob_bytes)
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(sparse_src, ignore_errors=True)

        ck.section('--output inside the source directory')
        out = os.path.join(small, 'out')
        r = mk.build(out, [small])
        if ck.cmd_ok(r, 'mkrafs build --output SRC/out SRC'):
            tar_path = os.path.join(tmp, 'inside.tar')
            r = harness.run([mk.path, 'unpack', '--blob-dir', os.path.join(out, 'blobs'), '--tar', tar_path,
                             os.path.join(out, 'image.boot')])
            if ck.cmd_ok(r, 'mkrafs unpack --tar'):
                with tarfile.open(tar_path) as t:
                    names = sorted(n.strip('./') for n in t.getnames() if n.strip('./'))
                ck.check(names == ['a', 'a-link', 'b'], 'the output dir and its staging files are not in the '
                         'image', repr(names))
        shutil.rmtree(out, ignore_errors=True)

        ck.section('reproducibility: same tree twice with --mtime 0')
        outs = []
        for i in (1, 2):
            out = os.path.join(tmp, 'repro-%d' % i)
            r = mk.build(out, [src], mtime=0)
            if not ck.cmd_ok(r, 'build #%d with --mtime 0' % i):
                break
            outs.append(out)
        if len(outs) == 2:
            compare_outputs(ck, outs[0], outs[1], 'same tree twice')
        for o in outs:
            shutil.rmtree(o, ignore_errors=True)

        ck.section('reproducibility: a copy of the tree created in another order')
        s1 = os.path.join(tmp, 'small-a')
        tree.make_full_tree(s1, big_sparse=False)
        s2 = make_shuffled_copy(ck, tmp)
        d = compare.compare_trees(s1, s2)
        if ck.diffs('the two small trees are equal', d):
            order_a = os.listdir(os.path.join(s1, 'modes'))
            order_b = os.listdir(os.path.join(s2, 'modes'))
            log('  readdir order differs between the copies: %s' % (order_a != order_b))
            oa, ob = os.path.join(tmp, 'small-out-a'), os.path.join(tmp, 'small-out-b')
            ra = mk.build(oa, [s1], mtime=0)
            rb = mk.build(ob, [s2], mtime=0)
            if ck.cmd_ok(ra, 'build copy A') and ck.cmd_ok(rb, 'build copy B'):
                compare_outputs(ck, oa, ob, 'copies created in different order')
                # whether --mtime also clamps file mtimes is not in the contract: ignore them
                verify_build(ck, mk, oa, s1, 'small tree (--mtime 0)', tmp, ignore={'mtime'})
    return ck.finish()


if __name__ == '__main__':
    sys.exit(main())
