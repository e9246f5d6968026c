#!/usr/bin/python3
"""mkrafs build from OCI tar layers: whiteouts, opaque dirs, replacements, cross-layer
hardlinks and cross-layer chunk dedup, checked through the real kernel.

Part 1: three layers -- L1 gzip (file), L2 zstd (on stdin as `-`), L3 plain tar (file) --
  built with `mkrafs build --chunk-size 1048576 --compressor none --output DIR L1 - L3`.
  The expected merged tree is built independently (rafstest.tar.apply_layers: extract in
  order, apply whiteouts in Python). unpack -> kernel mount -> compare_trees.
  Dedup: a 1 MiB random chunk R appears three times (L1 at offset 0, L3 at offset 1 MiB,
  L3 as a whole file). The blobs' uncompressed address space (sum of the raw blob sizes
  from `unpack --raw-dir`) must stay below (all unique chunk bytes of every layer, 4 KiB
  aligned) + 1 MiB: storing R twice would exceed it.
  The same layers are also built with zstd compression and compared again. A member dated
  before 1970 with a fraction of a second ("mtime=-86400.5") keeps its time, in the mount and in
  the zstd build's `unpack --tar` export.
Part 2: ../shared/fixtures/nydus/all-entry-type.tar (nydus's tar with every entry type)
  built, mounted and compared with its extraction by GNU tar (-xpf --xattrs --acls).
Part 3: a layer without chunks (so without a blob) under a layer with a hardlinked file: the
  blobs are renumbered, each inode's chunks once however many names it has.
Part 4: directory layers (two tar layers extracted by GNU tar, whiteout files and all): built from
  the directories, the tree is the one the tars give (whiteouts and opaque directories applied).

Exit: 0 pass, 77 skip (not root / no EROFS), 1 fail.
"""

import os
import random
import shutil
import sys

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from rafstest import harness, tree  # noqa: E402
from rafstest import tar as rtar  # noqa: E402
from rafstest.harness import log, run  # noqa: E402
from rafstest.mkrafs import Mkrafs, verify_build  # noqa: E402
from rafstest.tar import LayerWriter, acl_xattr  # noqa: E402

MiB = 1 << 20
CHUNK = MiB
T0 = 1650000000 * 10**9


def t(i, ns=0):
    return T0 + i * 10**9 + ns


def make_layers(d):
    """Write the three layers; return (paths, stdin_index, {name: bytes} of all file data)."""
    rng = random.Random(4242)
    R = rng.randbytes(CHUNK)          # the chunk repeated across layers
    A, B = rng.randbytes(CHUNK), rng.randbytes(CHUNK)
    cap = tree.CAPABILITY_NET_BIND
    acl = acl_xattr('u::rw-,u:1000:r--,g::r--,g:100000:r--,m::r--,o::r--')
    l1 = os.path.join(d, 'layer1.tar.gz')
    l2 = os.path.join(d, 'layer2.tar.zst')
    l3 = os.path.join(d, 'layer3.tar')

    with LayerWriter(l1, 'gzip') as w:
        for i, name in enumerate(['etc', 'usr', 'usr/bin', 'var', 'var/cache', 'var/cache/sub',
                                  'a', 'a/deep', 'a/deep/er', 'rep', 'rep/dir_to_file',
                                  'rep/dir_file_dir', 'hl', 'dev', 'data']):
            w.dir(name, mtime_ns=t(i, 100 + i))
        w.dir('secure', mode=0o750, uid=1000, gid=1000, mtime_ns=t(20, 7),
              xattrs={'trusted.dir': b'dir attr', 'user.dir': b'u'})
        w.file('etc/hosts', b'127.0.0.1 localhost\n', mtime_ns=t(30, 123456789))
        # Before 1970 with a fraction: "mtime=-86400.5", one day and half a second before.
        w.file('etc/old', b'from 1969\n', mtime_ns=-(86400 * 10**9 + 5 * 10**8))
        w.file('etc/passwd', b'root:x:0:0:root:/root:/bin/sh\n', mode=0o644)
        w.file('etc/shadow', b'root:*:19000:0:99999:7:::\n', mode=0o640, gid=42)
        w.file('usr/bin/ping', b'\x7fELF ping', mode=0o4755,
               xattrs={'security.capability': cap})
        w.file('usr/bin/big', R + A + rng.randbytes(500 * 1024), mode=0o755)
        w.file('usr/bin/acl', b'acl file', mode=0o644, xattrs={'system.posix_acl_access': acl})
        w.file('var/cache/c1', b'c1')
        w.file('var/cache/c2', rng.randbytes(5000))
        w.file('var/cache/sub/c3', b'c3')
        w.file('a/keep', b'keep me')
        w.file('a/remove_me', b'to be whited out')
        w.file('a/deep/er/gone', b'whole dir whited out')
        w.file('rep/file_to_dir', b'I become a directory')
        w.file('rep/dir_to_file/child', b'my dir becomes a file')
        w.file('rep/dir_file_dir/old', b'must not come back')
        w.file('hl/orig', b'hardlinked across layers\n', mode=0o600, uid=1000, gid=1000,
               mtime_ns=t(40, 999999999))
        w.hardlink('hl/orig_link', 'hl/orig')
        w.symlink('etc/localtime', '/usr/share/zoneinfo/UTC', mtime_ns=t(41, 5))
        w.symlink('hl/dangling', 'nowhere')
        w.device('dev/null', 'chr', 1, 3, mode=0o666)
        w.device('dev/sda', 'blk', 8, 0, mode=0o660, gid=6)
        w.device('dev/big_minor', 'chr', 240, 300000, mode=0o600)
        w.fifo('dev/initctl', mode=0o600)
        w.file('secure/owned', b'uid 100000', uid=100000, gid=100000, mode=0o640)
        w.file('data/empty', b'')

    with LayerWriter(l2, 'zstd') as w:
        w.dir('a', mtime_ns=t(50, 1))
        w.whiteout('a/remove_me')
        w.whiteout('a/deep')
        w.whiteout('a/never_existed')
        w.dir('var', mtime_ns=t(51, 2))
        w.dir('var/cache', mtime_ns=t(52, 3))
        w.opaque('var/cache')
        w.file('var/cache/new', b'only this survives in var/cache')
        w.dir('rep', mtime_ns=t(53, 4))
        w.dir('rep/file_to_dir', mode=0o700, mtime_ns=t(54, 5))
        w.file('rep/file_to_dir/child', b'inside the new dir')
        w.file('rep/dir_to_file', b'was a directory', mode=0o600)
        w.file('rep/dir_file_dir', b'dir -> file (then dir again in layer 3)')
        w.dir('hl', mtime_ns=t(55, 6))
        w.hardlink('hl/l2_link', 'hl/orig')            # to a file of layer 1
        w.dir('etc', mtime_ns=t(56, 7))
        w.file('etc/hosts', b'127.0.0.1 localhost\n::1 localhost\n', mtime_ns=t(57, 8))
        w.dir('l2', mtime_ns=t(58, 9))
        w.file('l2/unique', rng.randbytes(CHUNK + 77))
        w.file('l2/xattrs', b'x', xattrs={'user.layer': b'2', 'trusted.t': b'\0\1\2'})

    with LayerWriter(l3, 'none') as w:
        w.dir('rep', mtime_ns=t(60, 10))
        w.dir('rep/dir_file_dir', mtime_ns=t(61, 11))
        w.file('rep/dir_file_dir/new', b'a fresh directory; "old" must stay gone')
        w.dir('l3', mtime_ns=t(62, 12))
        w.file('l3/dup', B + R + b'tail after the repeated chunk')
        w.file('l3/dup_whole', R)
        w.dir('hl', mtime_ns=t(63, 13))
        w.hardlink('hl/l3_link', 'hl/l2_link')          # to a link made in layer 2
        w.dir('new3', mtime_ns=t(64, 14))
        w.opaque('new3')                                # opaque marker in a fresh dir
        w.file('new3/f', b'f')
        w.dir('etc', mode=0o750, mtime_ns=t(65, 15))    # metadata-only change of a lower dir
        w.dir('a', mtime_ns=t(66, 16))
        w.whiteout('a/keep')                            # a now holds nothing
    return [l1, l2, l3], 1


def unique_chunk_bytes(layers, tmp):
    """Sum over distinct chunk contents (file content split at CHUNK) of 4 KiB-aligned sizes,
    across every regular file of every layer."""
    seen = set()
    total = 0
    for layer in layers:
        with rtar.open_tar(layer, tmp) as tf:
            for m in tf.getmembers():
                if not m.isreg() or os.path.basename(m.name).startswith(rtar.WH_PREFIX):
                    continue
                data = tf.extractfile(m).read()
                for off in range(0, len(data), CHUNK):
                    c = data[off:off + CHUNK]
                    if c not in seen:
                        seen.add(c)
                        total += (len(c) + 4095) // 4096 * 4096
    return total


def layers_part(ck, mk, tmp):
    ld = os.path.join(tmp, 'layers')
    os.mkdir(ld)
    layers, stdin_idx = make_layers(ld)
    exp = os.path.join(tmp, 'expected')
    info = rtar.apply_layers(layers, exp)
    ck.check(not info['implicit_dirs'], 'every directory of the layers is explicit',
             str(info['implicit_dirs']))
    log('  layers: %s (layer %d on stdin)' % (', '.join(os.path.basename(l) for l in layers), stdin_idx + 1))
    sources = [l if i != stdin_idx else '-' for i, l in enumerate(layers)]

    for label, compressor in (('layers-none', 'none'), ('layers-zstd', 'zstd')):
        ck.section('build %s' % label)
        out = os.path.join(tmp, 'out-' + label)
        with open(layers[stdin_idx], 'rb') as stdin:
            r = mk.build(out, sources, chunk_size=CHUNK, compressor=compressor, stdin=stdin)
        if not ck.cmd_ok(r, '%s: mkrafs build L1 - L3 < L2' % label):
            continue
        # The zstd build is exported too: etc/old's time must survive the tar's writer as its reader.
        verify_build(ck, mk, out, exp, label, tmp, ignore={'root_mtime'},
                     keep_raw=(compressor == 'none'), tar_export=(compressor == 'zstd'))
        if compressor == 'none':
            check_dedup(ck, tmp, out, layers, label)
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(os.path.join(tmp, 'raw-' + os.path.basename(out)), ignore_errors=True)


def check_dedup(ck, tmp, out, layers, label):
    raw = os.path.join(tmp, 'raw-' + os.path.basename(out))
    if not os.path.isdir(raw):
        ck.fail('%s: no raw blobs to measure dedup' % label)
        return
    total_raw = sum(os.path.getsize(os.path.join(raw, f)) for f in os.listdir(raw))
    blobs = os.path.join(out, 'blobs')
    total_blob = sum(os.path.getsize(os.path.join(blobs, f)) for f in os.listdir(blobs))
    bound = unique_chunk_bytes(layers, tmp)
    log('  unique chunk bytes over all layers (4 KiB aligned): %d; raw address space: %d; '
        'blob files: %d' % (bound, total_raw, total_blob))
    ck.check(total_raw < bound + CHUNK,
             '%s: the chunk repeated across layers is stored once (raw %d < %d + 1 MiB)' % (
                 label, total_raw, bound),
             'raw address space is %d bytes over the unique-chunk bound' % (total_raw - bound))


def fixture_part(ck, mk, tmp):
    here = os.path.dirname(os.path.abspath(__file__))
    repo = os.path.dirname(os.path.dirname(here))
    fx = os.environ.get('RAFSTEST_FIXTURES') or os.path.join(os.path.dirname(repo), 'shared',
                                                               'fixtures', 'nydus')
    path = os.path.join(fx, 'all-entry-type.tar')
    ck.section('nydus fixture all-entry-type.tar')
    if not os.path.isfile(path):
        ck.fail('fixture %s not found: part 2 cannot run (set RAFSTEST_FIXTURES)' % path)
        return
    exp = os.path.join(tmp, 'fixture-expected')
    os.mkdir(exp, 0o755)
    r = run(['tar', '-xpf', path, '--xattrs', '--xattrs-include=*', '--acls', '--numeric-owner',
             '-C', exp])
    if not ck.cmd_ok(r, 'GNU tar extracts the fixture'):
        return
    os.chown(exp, 0, 0)
    os.chmod(exp, 0o755)
    out = os.path.join(tmp, 'out-fixture')
    r = mk.build(out, [path])
    if ck.cmd_ok(r, 'mkrafs build all-entry-type.tar'):
        verify_build(ck, mk, out, exp, 'all-entry-type', tmp, ignore={'root_mtime'},
                     tar_export=True)


def dropped_blob_part(ck, mk, tmp):
    ck.section('a layer without a blob under hardlinks')
    d = os.path.join(tmp, 'dropped')
    os.mkdir(d)
    rng = random.Random(77)
    paths = [os.path.join(d, 'l%d.tar' % i) for i in (1, 2, 3)]
    with LayerWriter(paths[0], 'none') as w:
        w.dir('base')
        w.file('base/data', rng.randbytes(CHUNK + 5))
    with LayerWriter(paths[1], 'none') as w:
        w.dir('empty')                                  # no chunks: no blob
    with LayerWriter(paths[2], 'none') as w:
        w.dir('hl')
        w.file('hl/orig', rng.randbytes(2 * CHUNK + 9))
        w.hardlink('hl/link1', 'hl/orig')
        w.hardlink('hl/link2', 'hl/orig')
    exp = os.path.join(tmp, 'dropped-expected')
    rtar.apply_layers(paths, exp)
    out = os.path.join(tmp, 'out-dropped')
    r = mk.build(out, paths, chunk_size=CHUNK, compressor='none')
    if ck.cmd_ok(r, 'mkrafs build L1 L2 L3 (L2 without chunks)'):
        blobs = os.listdir(os.path.join(out, 'blobs'))
        ck.check(len(blobs) == 2, 'two blobs: the empty layer has none', str(blobs))
        verify_build(ck, mk, out, exp, 'dropped-blob', tmp, ignore={'root_mtime'})


def directory_layers_part(ck, mk, tmp):
    ck.section('directory layers: their OCI whiteouts apply as a tar layer\'s do')
    d = os.path.join(tmp, 'dir-layers')
    os.mkdir(d)
    tars = [os.path.join(d, 'l%d.tar' % i) for i in (1, 2)]
    # Each directory's members right after it: GNU tar sets a directory's mtime once it has left
    # it, and a member that comes back into it later would change it again.
    with LayerWriter(tars[0], 'none') as w:
        w.dir('a', mtime_ns=t(1))
        w.file('a/x', b'x1')
        w.file('a/y', b'y1')
        w.dir('a/sub', mtime_ns=t(2))
        w.file('a/sub/z', b'z1')
        w.dir('o', mtime_ns=t(3))
        w.file('o/p', b'p1')
        w.dir('o/q', mtime_ns=t(4))
        w.file('o/q/r', b'r1')
        w.file('f', b'f1')
    with LayerWriter(tars[1], 'none') as w:
        w.dir('a', mtime_ns=t(11))
        w.whiteout('a/x')
        w.whiteout('a/sub')
        w.dir('o', mtime_ns=t(12))
        w.opaque('o')
        w.file('o/new', b'n2')
        w.dir('o/q', mtime_ns=t(13))
        w.file('o/q/r2', b'r2')
        w.whiteout('f')
    dirs = []
    for layer in tars:
        dirs.append(layer[:-len('.tar')])
        os.mkdir(dirs[-1])
        if not ck.cmd_ok(run(['tar', '-xpf', layer, '--numeric-owner', '-C', dirs[-1]]),
                         'GNU tar extracts %s' % os.path.basename(layer)):
            return
    ck.check(os.path.isfile(os.path.join(dirs[1], 'o', '.wh..wh..opq')), 'the whiteouts are files of the layer dir')
    exp = os.path.join(tmp, 'dir-layers-expected')
    rtar.apply_layers(tars, exp)
    out = os.path.join(tmp, 'out-dir-layers')
    r = mk.build(out, dirs)
    if ck.cmd_ok(r, 'mkrafs build DIR1 DIR2'):
        verify_build(ck, mk, out, exp, 'directory-layers', tmp, ignore={'root_mtime'})


def main():
    args, mkrafs, ck = harness.start_mkrafs_test('test_build_layers', __doc__, ('tar', 'zstd', 'setfacl'))
    mk = Mkrafs(mkrafs)
    with harness.temp_dir('rafs-build-layers-', keep=args.keep) as tmp:
        layers_part(ck, mk, tmp)
        fixture_part(ck, mk, tmp)
        dropped_blob_part(ck, mk, tmp)
        directory_layers_part(ck, mk, tmp)
    return ck.finish()


if __name__ == '__main__':
    sys.exit(main())
