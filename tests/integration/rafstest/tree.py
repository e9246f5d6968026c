"""Generate a directory tree that covers every case a container image has.

make_full_tree(path) creates the tree (as root: it needs mknod, chown, trusted.* xattrs)
and returns a description dict. The tree is deterministic: two calls with the same
arguments give trees that are identical in names, types, contents, modes, owners,
mtimes (to the nanosecond) and xattrs. With shuffle=True the leaves are created in a
different order, so directory read order (readdir) differs on most file systems while
the tree itself stays the same: a reproducible builder must produce the same image.

Layout (relative to the root):
  files/      empty, 1 byte, 4095/4096/4097 bytes, exactly 1 MiB, 1 MiB + 1, 3 MiB + tail,
              exactly 16 MiB, 16 MiB + 4097, zeros (non-sparse), compressible text
  dedup/      whole-file copies, shared prefixes/middles at chunk-aligned offsets,
              content repeated inside one file (1 MiB and 4 KiB periods)
  sparse/     data islands, an all-hole file, and a 5 GiB file (> 4 GiB) with data at a
              few offsets, one of them straddling the 4 GiB boundary
  dirs/       nested dirs, a dir with 3000 entries (dirents span many 4 KiB blocks),
              255-byte names (ASCII, UTF-8), odd names (spaces, tab, control bytes,
              invalid UTF-8, NFC vs NFD), a dir with mode 0000
  deep/       a file and a dir at depth 20+
  links/      relative, absolute, dangling, self-referencing symlinks, a 1200-byte and a
              4095-byte target (PATH_MAX - 1 is the Linux maximum)
  hardlinks/  groups of 2 and 3 across directories, a hardlinked empty file, a
              hardlinked file with xattrs
  special/    char and block devices (minor > 255, major 4095 / minor 1048575),
              fifos, a unix socket. A char device 0:0 is deliberately absent: it is the
              overlayfs whiteout shape, and a directory source has no whiteout semantics
              in the mkrafs contract, so its handling would be ambiguous.
  modes/      0000, 0777, 4755, 2755, 6755, 7777, sticky file, 1777 dir, 2775 dir
  owners/     uid/gid 0, 1000, 65534, 100000, 2147483648
  times/      mtime 0, nanoseconds, 2^31 (> 2038), year 2100 with .999999999
  xattrs/     user.*, trusted.*, security.* (incl. a real v2 security.capability),
              POSIX ACLs (access + default, named users/groups, via setfacl),
              a ~4 KB value, a 255-byte name, empty and binary values, odd names,
              60 xattrs on one file, the same xattr set on 20 files, xattrs on a
              symlink, a device and a fifo
"""

import os
import random
import socket
import stat
import struct
import subprocess

MiB = 1 << 20
GiB = 1 << 30
KiB = 1 << 10

# A v2 file capability: cap_net_bind_service in permitted, effective flag set.
# struct vfs_cap_data { le32 magic_etc; { le32 permitted, inheritable } data[2]; }
VFS_CAP_REVISION_2 = 0x02000000
VFS_CAP_FLAGS_EFFECTIVE = 0x000001
CAP_NET_BIND_SERVICE = 10
CAPABILITY_NET_BIND = struct.pack('<IIIII', VFS_CAP_REVISION_2 | VFS_CAP_FLAGS_EFFECTIVE,
                                  1 << CAP_NET_BIND_SERVICE, 0, 0, 0)

BIG_SPARSE_SIZE = 5 * GiB
# (offset, length) of data islands in the 5 GiB file; one straddles the 4 GiB boundary
BIG_SPARSE_ISLANDS = [(1 * GiB, 4096), (4 * GiB - 2048, 4096), (4 * GiB + 12288 + 5, 100),
                      (BIG_SPARSE_SIZE - 10, 10)]

MAX_SYMLINK = 4095  # PATH_MAX (4096) including the NUL


class _Entry:
    __slots__ = ('path', 'kind', 'data', 'target', 'rdev', 'mode', 'uid', 'gid',
                 'mtime_ns', 'xattrs', 'acl')

    def __init__(self, path, kind, **kw):
        self.path = path            # bytes, relative, no leading slash ('' = root)
        self.kind = kind            # dir file symlink hardlink chr blk fifo sock
        self.data = kw.get('data')  # bytes, or ('sparse', size, [(off, bytes)...])
        self.target = kw.get('target')
        self.rdev = kw.get('rdev', 0)
        self.mode = kw.get('mode')
        self.uid = kw.get('uid', 0)
        self.gid = kw.get('gid', 0)
        self.mtime_ns = kw.get('mtime_ns')
        self.xattrs = kw.get('xattrs', [])
        self.acl = kw.get('acl')    # (access_spec or None, default_spec or None) for setfacl --set


def _b(s):
    return s if isinstance(s, bytes) else os.fsencode(s)


class _Spec:
    def __init__(self, seed):
        self.rng = random.Random(seed)
        self.entries = []
        self.by_path = {}
        self.idx = 0

    def rand(self, n):
        return self.rng.randbytes(n)

    def add(self, path, kind, **kw):
        path = _b(path)
        assert path not in self.by_path, path
        self.idx += 1
        if kw.get('mtime_ns') is None and kind != 'hardlink':
            # deterministic, distinct, with nanoseconds
            kw['mtime_ns'] = (1600000000 + self.idx * 7919) * 10**9 + (self.idx * 123456789) % 10**9
        if kw.get('mode') is None and kind not in ('hardlink', 'symlink'):
            kw['mode'] = 0o755 if kind == 'dir' else 0o644
        e = _Entry(path, kind, **kw)
        self.entries.append(e)
        self.by_path[path] = e
        # implicit parents
        parent = os.path.dirname(path)
        if parent and parent not in self.by_path:
            raise AssertionError('parent not declared before child: %r' % path)
        return e

    def dir(self, path, **kw):
        return self.add(path, 'dir', **kw)

    def file(self, path, data, **kw):
        return self.add(path, 'file', data=data, **kw)

    def symlink(self, path, target, **kw):
        return self.add(path, 'symlink', target=_b(target), **kw)

    def hardlink(self, path, target):
        return self.add(path, 'hardlink', target=_b(target))


def _build_spec(seed, big_sparse):
    s = _Spec(seed)
    s.dir('', mode=0o755, mtime_ns=1700000000 * 10**9 + 111111111)

    # ---------------------------------------------------------------- files
    s.dir('files')
    s.file('files/empty', b'')
    s.file('files/one_byte', b'x')
    s.file('files/small.txt', b'hello, rafs\n')
    s.file('files/block_4095', s.rand(4095))
    s.file('files/block_4096', s.rand(4096))
    s.file('files/block_4097', s.rand(4097))
    s.file('files/chunk_1m_exact', s.rand(MiB))
    s.file('files/chunk_1m_plus1', s.rand(MiB + 1))
    s.file('files/multi_3m_tail', s.rand(3 * MiB + 12345))
    s.file('files/chunk_16m_exact', s.rand(16 * MiB))
    s.file('files/chunk_16m_plus_4097', s.rand(16 * MiB + 4097))
    s.file('files/zeros_2m', bytes(2 * MiB))  # written, not sparse
    words = [bytes(s.rng.choice(b'abcdefghijklmnopqrstuvwxyz') for _ in range(s.rng.randint(1, 10)))
             for _ in range(800)]
    text = b' '.join(s.rng.choice(words) for _ in range(450000))[:2 * MiB + 777]
    s.file('files/compressible.txt', text)

    # ---------------------------------------------------------------- dedup
    r = [s.rand(MiB) for _ in range(5)]
    s.dir('dedup')
    s.dir('dedup/sub')
    a = r[0] + r[1] + r[2]
    s.file('dedup/a_3m', a)
    s.file('dedup/b_copy_of_a', a)
    s.file('dedup/c_shared_prefix', r[0] + r[1] + s.rand(500 * KiB))
    s.file('dedup/d_repeat_inside', r[3] * 4 + b'tail-bytes')
    s.file('dedup/sub/e_shared_middle', s.rand(MiB) + r[1] + r[2][:300000])
    s.file('dedup/f_4k_repeat', s.rand(4096) * 64)
    s.file('dedup/g_tail_equal_to_small', b'hello, rafs\n')  # same bytes as files/small.txt

    # ---------------------------------------------------------------- sparse
    s.dir('sparse')
    s.file('sparse/islands', ('sparse', 20 * MiB + 7,
                              [(0, s.rand(4096)), (5 * MiB + 123, s.rand(10000)),
                               (12 * MiB, s.rand(MiB)), (20 * MiB, s.rand(7))]))
    s.file('sparse/hole_only', ('sparse', 10 * MiB, []))
    if big_sparse:
        s.file('sparse/big_5g', ('sparse', BIG_SPARSE_SIZE,
                                 [(off, s.rand(n)) for off, n in BIG_SPARSE_ISLANDS]))

    # ---------------------------------------------------------------- dirs
    s.dir('dirs')
    p = 'dirs/nested'
    s.dir(p)
    for name in ('a', 'b', 'c', 'd'):
        p += '/' + name
        s.dir(p)
    s.file(p + '/leaf.txt', b'leaf\n')
    s.dir('dirs/empty_dir')
    s.dir('dirs/mode0000', mode=0o000)
    s.file('dirs/mode0000/inside', b'inside a 0000 dir\n')
    s.dir('dirs/many')
    first = '._-0Aa~Zz9'
    for i in range(3000):
        name = '%s%05d-%s' % (first[i % len(first)], i, 'n' * (i % 41))
        path = 'dirs/many/' + name
        if i % 100 == 0:
            s.dir(path)
            if i % 500 == 0:
                s.file(path + '/f', b'%d\n' % i)
        elif i % 100 == 1:
            s.symlink(path, '../%05d' % (i - 1))
        elif i % 50 == 3:
            s.file(path, s.rand(i % 300))
        else:
            s.file(path, b'')
    s.dir('dirs/names')
    odd = [
        b'L' * 255,
        ('\u00e9' * 127 + 'x').encode(),          # 255 bytes of UTF-8
        ('\u65e5' * 85).encode(),                 # 255 bytes, 3-byte chars
        b'with spaces  and  more ',
        b' leading space',
        b'tab\there',
        b'ctrl-\x01\x02\x1f\x7f',
        b'invalid-utf8-\xff\xfe\x80',
        b'-leading-dash',
        b'...',
        b'..dotdot-prefix',
        b'.hidden',
        b'back\\slash',
        b'quote\'"',
        b'*?[glob]{a,b}',
        b'%s%n%d',
        b'colon:semi;pipe|amp&lt<gt>',
        '\u00e9-nfc'.encode(),
        'e\u0301-nfd'.encode(),
        '\U0001F600-emoji'.encode(),
    ]
    for n in odd:
        s.file(b'dirs/names/' + n, b'odd name: ' + n + b'\n')
    s.dir(b'dirs/names/' + b'D' * 255)
    s.file(b'dirs/names/' + b'D' * 255 + b'/' + b'F' * 255, b'255/255\n')

    # ---------------------------------------------------------------- deep
    p = 'deep'
    s.dir(p)
    for lvl in range(1, 21):
        p += '/level-%02d-with-a-longer-directory-name' % lvl
        s.dir(p)
    s.file(p + '/file-at-depth-21', b'deep file\n')
    s.dir(p + '/dir-at-depth-21')
    s.file(p + '/dir-at-depth-21/x', b'x')

    # ---------------------------------------------------------------- symlinks
    s.dir('links')
    s.symlink('links/relative', '../files/small.txt')
    s.symlink('links/absolute', '/files/small.txt')
    s.symlink('links/dangling', 'does/not/exist')
    s.symlink('links/to_dir', '../dirs/nested')
    s.symlink('links/self', 'self')
    s.symlink('links/dot', '.')
    s.symlink('links/utf8', '\u00fcn\u00efc\u00f6de target \u65e5')
    long_t = '/'.join('component-%03d' % i for i in range(90))  # 90*13+89 = 1259 bytes
    s.symlink('links/long_1259', long_t)
    max_t = (('m' * 200 + '/') * 21)[:MAX_SYMLINK]
    s.symlink('links/max_4095', max_t)
    s.symlink('links/owned_1000', 'small.txt', uid=1000, gid=100000)

    # ---------------------------------------------------------------- hardlinks
    s.dir('hardlinks')
    s.dir('hardlinks/other')
    s.file('hardlinks/pair_a', s.rand(5000))
    s.hardlink('hardlinks/other/pair_b', 'hardlinks/pair_a')
    s.file('hardlinks/triple_1', s.rand(MiB + MiB // 2), mode=0o640, uid=1000, gid=1000)
    s.hardlink('files/triple_2', 'hardlinks/triple_1')
    s.hardlink('dirs/nested/a/triple_3', 'hardlinks/triple_1')
    s.file('hardlinks/empty_1', b'')
    s.hardlink('hardlinks/other/empty_2', 'hardlinks/empty_1')
    s.file('hardlinks/xattr_1', b'linked with xattrs\n', mode=0o4755,
           xattrs=[('user.linked', b'yes'), ('security.capability', CAPABILITY_NET_BIND)])
    s.hardlink('hardlinks/other/xattr_2', 'hardlinks/xattr_1')
    # same content as pair_a's group but a distinct inode: must NOT be merged with it
    s.file('hardlinks/same_content_not_linked', b'linked with xattrs\n', mode=0o4755,
           xattrs=[('user.linked', b'yes'), ('security.capability', CAPABILITY_NET_BIND)])

    # ---------------------------------------------------------------- special files
    s.dir('special')
    mk = os.makedev
    s.add('special/chr_1_3', 'chr', rdev=mk(1, 3), mode=0o666)
    s.add('special/chr_4_300', 'chr', rdev=mk(4, 300), mode=0o620, uid=0, gid=5)
    s.add('special/chr_max', 'chr', rdev=mk(4095, 1048575), mode=0o600)
    s.add('special/blk_8_0', 'blk', rdev=mk(8, 0), mode=0o660, gid=6)
    s.add('special/blk_259_65536', 'blk', rdev=mk(259, 65536), mode=0o640, uid=65534)
    s.add('special/fifo', 'fifo', mode=0o644)
    s.add('special/fifo_0600_u1000', 'fifo', mode=0o600, uid=1000, gid=1000)
    s.add('special/socket', 'sock', mode=0o755)

    # ---------------------------------------------------------------- modes
    s.dir('modes')
    for m in (0o000, 0o777, 0o4755, 0o2755, 0o6755, 0o7777, 0o1644, 0o4711, 0o2711, 0o444, 0o200):
        s.file('modes/file_%04o' % m, b'mode %04o\n' % m, mode=m)
    s.file('modes/setuid_u1000', b'suid 1000\n', mode=0o4755, uid=1000, gid=1000)
    s.dir('modes/dir_1777', mode=0o1777)
    s.dir('modes/dir_2775', mode=0o2775, gid=1000)
    s.dir('modes/dir_0700', mode=0o700)
    s.dir('modes/dir_7777', mode=0o7777)

    # ---------------------------------------------------------------- owners
    s.dir('owners', uid=1000, gid=1000)
    for uid, gid in ((0, 0), (1000, 1000), (65534, 65534), (100000, 100000), (0, 100000),
                     (100000, 0), (2147483648, 2147483649)):
        s.file('owners/u%d_g%d' % (uid, gid), b'%d:%d\n' % (uid, gid), uid=uid, gid=gid)
    s.dir('owners/dir_100000', uid=100000, gid=100000)
    s.add('owners/chr_65534', 'chr', rdev=mk(1, 5), uid=65534, gid=65534)

    # ---------------------------------------------------------------- times
    s.dir('times')
    s.file('times/epoch_0', b'0\n', mtime_ns=0)
    s.file('times/nsec', b'ns\n', mtime_ns=1234567890 * 10**9 + 123456789)
    s.file('times/nsec_1', b'ns1\n', mtime_ns=1500000000 * 10**9 + 1)
    s.file('times/y2038_plus', b'2^31\n', mtime_ns=2147483648 * 10**9)
    s.file('times/y2100', b'2100\n', mtime_ns=4102444800 * 10**9 + 999999999)
    s.file('times/u32_max', b'2^32-1\n', mtime_ns=4294967295 * 10**9 + 500000000)
    s.symlink('times/symlink_mtime', 'nsec', mtime_ns=1111111111 * 10**9 + 222222222)
    s.dir('times/dir_2040', mtime_ns=2208988800 * 10**9 + 42)

    # ---------------------------------------------------------------- xattrs
    s.dir('xattrs', xattrs=[('user.dir_attr', b'on a directory'), ('trusted.dir', b'td')])
    s.file('xattrs/user', b'u\n', xattrs=[('user.a', b'1'), ('user.empty', b''),
                                          ('user.binary', bytes(range(256))),
                                          ('user.with space', b'sp'),
                                          ('user.\u00fcn\u00ef', 'v\u00e4l'.encode())])
    s.file('xattrs/trusted', b't\n', xattrs=[('trusted.test', b'trusted value'),
                                             ('trusted.zero', b'\0\0\0')])
    s.file('xattrs/security', b's\n', xattrs=[('security.test_label', b'system_u:object_r:x_t:s0'),
                                              ('security.capability', CAPABILITY_NET_BIND)])
    s.file('xattrs/caps_binary', b'#!/bin/true\n', mode=0o755,
           xattrs=[('security.capability', CAPABILITY_NET_BIND)])
    s.file('xattrs/mixed', b'm\n', xattrs=[('user.m', b'1'), ('trusted.m', b'2'),
                                           ('security.m', b'3')],
           acl=('u::rw-,u:1000:r--,g::r--,m::r--,o::---', None))
    s.file('xattrs/acl_file', b'acl\n',
           acl=('u::rw-,u:1000:rwx,u:65534:r--,u:100000:-w-,g::r--,g:0:r--,g:100000:rw-,'
                'm::rwx,o::r--', None))
    s.dir('xattrs/acl_dir',
          acl=('u::rwx,u:1000:r-x,g::r-x,g:65534:r-x,m::r-x,o::r-x',
               'u::rwx,u:1000:rwx,u:100000:r-x,g::r-x,g:1000:rwx,m::rwx,o::---'))
    s.dir('xattrs/default_acl_only', acl=(None, 'u::rwx,g::r-x,g:1000:rwx,m::rwx,o::r-x'))
    s.file('xattrs/large_value', b'L\n', xattrs=[('user.large', s.rand(3900))])
    s.file('xattrs/name_255', b'N\n', xattrs=[('user.' + 'n' * 250, b'name is 255 bytes')])
    s.file('xattrs/many', b'M\n', xattrs=[('user.k%02d' % i, b'v' * i) for i in range(60)])
    s.dir('xattrs/shared')
    for i in range(20):
        s.file('xattrs/shared/f%02d' % i, b'%d\n' % i,
               xattrs=[('user.shared', b'same value on 20 files'), ('trusted.shared', b'T')])
    s.symlink('xattrs/symlink', 'user', xattrs=[('trusted.on_symlink', b'sym')])
    s.add('xattrs/chr', 'chr', rdev=mk(10, 200), xattrs=[('trusted.on_dev', b'dev')])
    s.add('xattrs/fifo', 'fifo', xattrs=[('trusted.on_fifo', b'fifo'),
                                         ('security.on_fifo', b'sf')])
    return s


def _mode_type(kind):
    return {'chr': stat.S_IFCHR, 'blk': stat.S_IFBLK}[kind]


def _create_leaf(root, e):
    p = os.path.join(root, e.path)
    if e.kind == 'file':
        if isinstance(e.data, tuple):
            _, size, islands = e.data
            with open(p, 'wb') as f:
                f.truncate(size)
                for off, blob in islands:
                    f.seek(off)
                    f.write(blob)
        else:
            with open(p, 'wb') as f:
                f.write(e.data)
    elif e.kind == 'symlink':
        os.symlink(e.target, p)
    elif e.kind in ('chr', 'blk'):
        os.mknod(p, _mode_type(e.kind) | 0o600, e.rdev)
    elif e.kind == 'fifo':
        os.mkfifo(p, 0o600)
    elif e.kind == 'sock':
        # sun_path is limited to 108 bytes: bind a relative name from inside the dir
        d, name = os.path.split(p)
        cwd = os.open('.', os.O_RDONLY)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            os.chdir(d)
            sock.bind(name)
        finally:
            sock.close()
            os.fchdir(cwd)
            os.close(cwd)
    else:
        raise AssertionError(e.kind)


def _apply_meta(root, e):
    p = os.path.join(root, e.path) if e.path else root
    # order matters: chown clears setuid/setgid and security.capability
    os.chown(p, e.uid, e.gid, follow_symlinks=False)
    if e.kind != 'symlink':
        os.chmod(p, e.mode)
    for name, value in e.xattrs:
        os.setxattr(p, name, value, follow_symlinks=False)
    if e.acl:
        access, default = e.acl
        if access:
            subprocess.run(['setfacl', '--set', access, p], check=True)
        if default:
            subprocess.run(['setfacl', '-d', '--set', default, p], check=True)


def make_full_tree(path, big_sparse=True, shuffle=False, seed=20240601):
    """Create the full test tree at `path` (must not exist or be an empty directory).

    big_sparse: include the 5 GiB sparse file (sparse/big_5g).
    shuffle:    create leaves in a shuffled order (same tree, different readdir order).
    Returns a description dict (see keys below).
    """
    if os.geteuid() != 0:
        raise PermissionError('make_full_tree needs root (mknod, chown, trusted.* xattrs)')
    root = os.fsencode(os.path.abspath(path))
    spec = _build_spec(seed, big_sparse)
    os.makedirs(root, exist_ok=True)
    if os.listdir(root):
        raise FileExistsError('%r is not empty' % root)
    dirs = [e for e in spec.entries if e.kind == 'dir']
    leaves = [e for e in spec.entries if e.kind not in ('dir', 'hardlink')]
    links = [e for e in spec.entries if e.kind == 'hardlink']
    if shuffle:
        random.Random(seed ^ 0x5A5A).shuffle(leaves)
        random.Random(seed ^ 0xA5A5).shuffle(links)
        dirs = sorted(dirs, key=lambda e: (e.path.count(b'/'), e.path[::-1]))
    for e in dirs:
        if e.path:
            os.mkdir(os.path.join(root, e.path), 0o700)
    for e in leaves:
        _create_leaf(root, e)
    for e in links:
        os.link(os.path.join(root, e.target), os.path.join(root, e.path), follow_symlinks=False)
    metas = [e for e in spec.entries if e.kind != 'hardlink']
    if shuffle:
        metas = [e for e in metas if e.kind != 'dir'] + dirs
    for e in metas:
        _apply_meta(root, e)
    # mtimes last: leaves first, then directories deepest first (creating entries and
    # setting xattrs/ACLs do not touch a directory's mtime afterwards)
    for e in metas:
        if e.kind != 'dir':
            os.utime(os.path.join(root, e.path), ns=(e.mtime_ns, e.mtime_ns),
                     follow_symlinks=False)
    for e in sorted((e for e in spec.entries if e.kind == 'dir'),
                    key=lambda e: -e.path.count(b'/') - (1 if e.path else 0)):
        p = os.path.join(root, e.path) if e.path else root
        os.utime(p, ns=(e.mtime_ns, e.mtime_ns), follow_symlinks=False)

    groups = {}
    for e in links:
        groups.setdefault(e.target, [e.target]).append(e.path)
    return {
        'root': os.fsdecode(root),
        'entries': len(spec.entries),
        'big_sparse': 'sparse/big_5g' if big_sparse else None,
        'sockets': [os.fsdecode(e.path) for e in spec.entries if e.kind == 'sock'],
        'hardlink_groups': [[os.fsdecode(x) for x in g] for g in groups.values()],
        'total_file_bytes': sum((e.data[1] if isinstance(e.data, tuple) else len(e.data))
                                for e in spec.entries if e.kind == 'file'),
    }


if __name__ == '__main__':
    import json
    import sys
    if len(sys.argv) < 2:
        sys.exit('usage: python3 -m rafstest.tree DIR [--small] [--shuffle]')
    print(json.dumps(make_full_tree(sys.argv[1], big_sparse='--small' not in sys.argv,
                                    shuffle='--shuffle' in sys.argv), indent=1))
