"""Tar helpers for the tests.

LayerWriter    -- write OCI layer tars (pax format, exact nanosecond mtimes, SCHILY.xattr.*
                  xattrs incl. binary values, whiteouts `.wh.NAME`, opaque `.wh..wh..opq`),
                  plain, gzip or zstd (zstd via the `zstd` CLI)
acl_xattr()    -- build a system.posix_acl_* xattr value (binary, version 2)
apply_layers() -- build the expected merged tree by extracting layers in order and
                  applying OCI whiteouts, independently of the builder under test
read_tar_entries() / compare_tar_to_tree()
               -- compare an exported tar against a directory tree, attribute by attribute
"""

import collections
import gzip
import io
import os
import shutil
import stat
import struct
import subprocess
import tarfile
import tempfile

from . import compare as _cmp

WH_PREFIX = '.wh.'
WH_OPAQUE = '.wh..wh..opq'

# ----------------------------------------------------------------------------- ACLs
ACL_USER_OBJ, ACL_USER, ACL_GROUP_OBJ, ACL_GROUP, ACL_MASK, ACL_OTHER = 1, 2, 4, 8, 0x10, 0x20
ACL_UNDEFINED_ID = 0xFFFFFFFF
_TAGS = {'u': (ACL_USER_OBJ, ACL_USER), 'user': (ACL_USER_OBJ, ACL_USER),
         'g': (ACL_GROUP_OBJ, ACL_GROUP), 'group': (ACL_GROUP_OBJ, ACL_GROUP),
         'm': (ACL_MASK, ACL_MASK), 'mask': (ACL_MASK, ACL_MASK),
         'o': (ACL_OTHER, ACL_OTHER), 'other': (ACL_OTHER, ACL_OTHER)}


def _perm(s):
    s = s.strip()
    if s.isdigit():
        return int(s)
    v = 0
    for ch, bit in (('r', 4), ('w', 2), ('x', 1)):
        if ch in s:
            v |= bit
    return v


def acl_xattr(text):
    """'u::rw-,u:1000:r-x,g::r--,m::r-x,o::r--' -> the binary value the kernel stores in
    system.posix_acl_access/default (header version 2, entries sorted by tag then id).
    Named qualifiers must be numeric; a 4th field (libarchive/GNU tar text) is the id."""
    entries = []
    for item in text.replace('\n', ',').split(','):
        item = item.split('#', 1)[0].strip()
        if not item:
            continue
        parts = item.split(':')
        tagname, qual, perms = parts[0], parts[1], parts[2]
        if len(parts) >= 4 and parts[3].strip():
            qual = parts[3].strip()
        obj_tag, named_tag = _TAGS[tagname]
        if qual and tagname not in ('m', 'mask', 'o', 'other'):
            if not qual.isdigit():
                import grp
                import pwd
                qual = str(pwd.getpwnam(qual).pw_uid if named_tag == ACL_USER
                           else grp.getgrnam(qual).gr_gid)
            entries.append((named_tag, _perm(perms), int(qual)))
        else:
            entries.append((obj_tag, _perm(perms), ACL_UNDEFINED_ID))
    entries.sort(key=lambda t: (t[0], t[2]))
    return struct.pack('<I', 2) + b''.join(struct.pack('<HHI', t, p, i) for t, p, i in entries)


# ----------------------------------------------------------------------------- writing
def _pax_mtime(ns):
    """A pax time is a signed decimal: -1.5 s is '-1.500000000'."""
    if ns < 0:
        return '-' + _pax_mtime(-ns)
    sec, frac = divmod(ns, 10**9)
    return '%d.%09d' % (sec, frac) if frac else '%d' % sec


class LayerWriter:
    """Write a layer tar. Use as a context manager; the file is complete on exit.

        with LayerWriter('/tmp/l1.tar.gz', compression='gzip') as w:
            w.dir('etc', mode=0o755)
            w.file('etc/hosts', b'...', mtime_ns=..., xattrs={'user.a': b'1'})
            w.whiteout('etc/old')          # etc/.wh.old
            w.opaque('var/cache')          # var/cache/.wh..wh..opq
    """

    def __init__(self, path, compression='none', default_mtime_ns=1650000000 * 10**9):
        if compression not in ('none', 'gzip', 'zstd'):
            raise ValueError(compression)
        self.path = path
        self.compression = compression
        self.default_mtime_ns = default_mtime_ns
        self.buf = io.BytesIO()
        self.tf = tarfile.open(fileobj=self.buf, mode='w', format=tarfile.PAX_FORMAT,
                               encoding='utf-8', errors='surrogateescape')
        self.count = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if exc[0] is None:
            self.close()

    def _info(self, name, kind, mode, uid, gid, mtime_ns, xattrs):
        ti = tarfile.TarInfo(name)
        ti.type = kind
        ti.mode = mode
        ti.uid, ti.gid = uid, gid
        ti.uname = ti.gname = ''
        ns = self.default_mtime_ns + self.count * 1000003 if mtime_ns is None else mtime_ns
        self.count += 1
        ti.mtime = ns // 10**9
        pax = {}
        if ns % 10**9:
            pax['mtime'] = _pax_mtime(ns)
        for k, v in (xattrs or {}).items():
            pax['SCHILY.xattr.' + k] = v.decode('utf-8', 'surrogateescape')
        ti.pax_headers = pax
        return ti

    def add(self, ti, data=None):
        self.tf.addfile(ti, io.BytesIO(data) if data is not None else None)
        return ti

    def dir(self, name, mode=0o755, uid=0, gid=0, mtime_ns=None, xattrs=None):
        return self.add(self._info(name.rstrip('/') + '/', tarfile.DIRTYPE, mode, uid, gid,
                                   mtime_ns, xattrs))

    def file(self, name, data, mode=0o644, uid=0, gid=0, mtime_ns=None, xattrs=None):
        ti = self._info(name, tarfile.REGTYPE, mode, uid, gid, mtime_ns, xattrs)
        ti.size = len(data)
        return self.add(ti, data)

    def symlink(self, name, target, uid=0, gid=0, mtime_ns=None, xattrs=None):
        ti = self._info(name, tarfile.SYMTYPE, 0o777, uid, gid, mtime_ns, xattrs)
        ti.linkname = target
        return self.add(ti)

    def hardlink(self, name, target, mode=0o644, uid=0, gid=0, mtime_ns=None):
        ti = self._info(name, tarfile.LNKTYPE, mode, uid, gid, mtime_ns, None)
        ti.linkname = target
        return self.add(ti)

    def device(self, name, kind, major, minor, mode=0o600, uid=0, gid=0, mtime_ns=None,
               xattrs=None):
        t = {'chr': tarfile.CHRTYPE, 'blk': tarfile.BLKTYPE}[kind]
        ti = self._info(name, t, mode, uid, gid, mtime_ns, xattrs)
        ti.devmajor, ti.devminor = major, minor
        return self.add(ti)

    def fifo(self, name, mode=0o644, uid=0, gid=0, mtime_ns=None, xattrs=None):
        return self.add(self._info(name, tarfile.FIFOTYPE, mode, uid, gid, mtime_ns, xattrs))

    def whiteout(self, path, mtime_ns=None):
        d, base = os.path.split(path.rstrip('/'))
        return self.add(self._info(os.path.join(d, WH_PREFIX + base), tarfile.REGTYPE, 0o644,
                                   0, 0, mtime_ns, None))

    def opaque(self, dirpath, mtime_ns=None):
        return self.add(self._info(os.path.join(dirpath.rstrip('/'), WH_OPAQUE),
                                   tarfile.REGTYPE, 0o644, 0, 0, mtime_ns, None))

    def close(self):
        self.tf.close()
        raw = self.buf.getvalue()
        write_compressed(self.path, raw, self.compression)


def write_compressed(path, raw, compression):
    if compression == 'none':
        data = raw
    elif compression == 'gzip':
        data = gzip.compress(raw, compresslevel=6, mtime=0)
    elif compression == 'zstd':
        data = subprocess.run(['zstd', '-q', '-c', '-3'], input=raw, capture_output=True,
                              check=True).stdout
    else:
        raise ValueError(compression)
    with open(path, 'wb') as f:
        f.write(data)


# ----------------------------------------------------------------------------- reading
def _decompressed_file(path, tmpdir):
    """Return a path to an uncompressed tar (zstd is decompressed with the CLI)."""
    with open(path, 'rb') as f:
        magic = f.read(4)
    if magic == b'\x28\xb5\x2f\xfd':
        out = os.path.join(tmpdir, 'layer.tar')
        subprocess.run(['zstd', '-q', '-d', '-f', '-o', out, path], check=True)
        return out
    return path


def open_tar(path, tmpdir):
    """tarfile opened for reading, handling plain/gzip/zstd."""
    return tarfile.open(_decompressed_file(path, tmpdir), mode='r:*', encoding='utf-8',
                        errors='surrogateescape')


def pax_mtime_ns(m):
    """Exact mtime in ns from a TarInfo (pax 'mtime' string if present), and whether the
    archive carried sub-second precision."""
    s = m.pax_headers.get('mtime')
    if s is not None:
        if '.' in s:
            sec, frac = s.split('.', 1)
            neg = sec.startswith('-')
            frac = (frac + '000000000')[:9]
            ns = abs(int(sec)) * 10**9 + int(frac)
            return (-ns if neg else ns), True
        return int(s) * 10**9, True
    return int(m.mtime) * 10**9, False


def member_xattrs(m):
    """xattrs of a TarInfo from SCHILY.xattr.*, LIBARCHIVE.xattr.* and SCHILY.acl.* records."""
    import base64
    import urllib.parse
    out = {}
    # libarchive (3.6) percent-encodes the name in both records; its LIBARCHIVE.xattr record is
    # the one that says so, so it wins over a SCHILY.xattr record with the same encoded name.
    libarchive_names = set()
    for k, v in m.pax_headers.items():
        if k.startswith('LIBARCHIVE.xattr.'):
            encoded = k[len('LIBARCHIVE.xattr.'):]
            libarchive_names.add(encoded)
            pad = '=' * (-len(v) % 4)
            out[urllib.parse.unquote_to_bytes(encoded).decode('utf-8', 'surrogateescape')] = \
                base64.b64decode(v + pad)
    for k, v in m.pax_headers.items():
        if k.startswith('SCHILY.xattr.') and k[len('SCHILY.xattr.'):] not in libarchive_names:
            out[k[len('SCHILY.xattr.'):]] = v.encode('utf-8', 'surrogateescape')
    for k, name in (('SCHILY.acl.access', 'system.posix_acl_access'),
                    ('SCHILY.acl.default', 'system.posix_acl_default')):
        if k in m.pax_headers and name not in out and m.pax_headers[k].strip():
            out[name] = acl_xattr(m.pax_headers[k])
    return out


def norm_member(name):
    """Normalise a member name: strip './' and trailing '/'; '' is the root."""
    n = name
    while n.startswith('./'):
        n = n[2:]
    n = n.strip('/')
    if n == '.':
        n = ''
    return n


def _is_safe(n):
    return not any(c == '..' for c in n.split('/'))


# ----------------------------------------------------------------------------- layers
def _remove(p):
    if os.path.islink(p) or not os.path.isdir(p):
        os.unlink(p)
    else:
        shutil.rmtree(p)


def _set_meta(p, m, is_link=False):
    os.chown(p, m.uid, m.gid, follow_symlinks=False)
    if not is_link:
        os.chmod(p, m.mode & 0o7777)
    for name, value in member_xattrs(m).items():
        os.setxattr(p, name, value, follow_symlinks=False)


def apply_layers(layers, dest, root_mode=0o755):
    """Extract tar layers (paths; plain/gzip/zstd) in order into dest, applying OCI
    whiteouts: `.wh.NAME` deletes NAME from lower layers, `.wh..wh..opq` hides the
    lower-layer contents of its directory. A non-directory replaces whatever was at its
    path; a directory over a lower directory merges; a hardlink may point at a file from
    a lower layer. Directory mtimes are applied after the last layer (the last layer that
    lists a directory wins). Returns {'implicit_dirs': [...]} (directories created only
    because a member needed a parent; their mtime is not defined by the layers)."""
    os.makedirs(dest, exist_ok=True)
    os.chown(dest, 0, 0)
    os.chmod(dest, root_mode)
    dir_meta = {}
    implicit = set()
    with tempfile.TemporaryDirectory(prefix='rafs-layer-') as tmp:
        for layer in layers:
            with open_tar(layer, tmp) as tf:
                members = tf.getmembers()
                # pass 1: whiteouts and opaque markers act on the lower layers only
                for m in members:
                    n = norm_member(m.name)
                    d, base = os.path.split(n)
                    if base == WH_OPAQUE:
                        dp = os.path.join(dest, d)
                        if os.path.isdir(dp) and not os.path.islink(dp):
                            for child in os.listdir(dp):
                                _remove(os.path.join(dp, child))
                                _forget(dir_meta, implicit, os.path.join(d, child))
                    elif base.startswith(WH_PREFIX):
                        target = os.path.join(d, base[len(WH_PREFIX):])
                        tp = os.path.join(dest, target)
                        if os.path.lexists(tp):
                            _remove(tp)
                        _forget(dir_meta, implicit, target)
                # pass 2: the entries
                for m in members:
                    n = norm_member(m.name)
                    base = os.path.basename(n)
                    if base.startswith(WH_PREFIX):
                        continue
                    if not _is_safe(n):
                        raise ValueError('unsafe member %r' % m.name)
                    p = os.path.join(dest, n) if n else dest
                    _ensure_parents(dest, n, implicit)
                    if m.isdir():
                        if n and os.path.lexists(p) and not (os.path.isdir(p) and not os.path.islink(p)):
                            _remove(p)
                        if not os.path.lexists(p):
                            os.mkdir(p, 0o700)
                        _set_meta(p, m)
                        ns, _ = pax_mtime_ns(m)
                        dir_meta[n] = ns
                        implicit.discard(n)
                        continue
                    if os.path.lexists(p):
                        if m.islnk() and norm_member(m.linkname) == n:
                            continue
                        _remove(p)
                        _forget(dir_meta, implicit, n)
                    if m.isreg():
                        with tf.extractfile(m) as src, open(p, 'wb') as dst:
                            shutil.copyfileobj(src, dst, 1 << 20)
                    elif m.issym():
                        os.symlink(m.linkname, p)
                    elif m.islnk():
                        t = norm_member(m.linkname)
                        tp = os.path.join(dest, t)
                        if not os.path.lexists(tp):
                            raise ValueError('hardlink %r -> missing %r' % (m.name, m.linkname))
                        os.link(tp, p, follow_symlinks=False)
                        continue  # metadata belongs to the target inode
                    elif m.ischr() or m.isblk():
                        os.mknod(p, (stat.S_IFCHR if m.ischr() else stat.S_IFBLK) | 0o600,
                                 os.makedev(m.devmajor, m.devminor))
                    elif m.isfifo():
                        os.mkfifo(p, 0o600)
                    else:
                        raise ValueError('unsupported member type %r for %r' % (m.type, m.name))
                    _set_meta(p, m, is_link=m.issym())
                    ns, _ = pax_mtime_ns(m)
                    os.utime(p, ns=(ns, ns), follow_symlinks=False)
    for n in sorted(dir_meta, key=lambda x: -x.count('/') - (1 if x else 0)):
        p = os.path.join(dest, n) if n else dest
        if os.path.isdir(p):
            os.utime(p, ns=(dir_meta[n], dir_meta[n]))
    return {'implicit_dirs': sorted(implicit)}


def _forget(dir_meta, implicit, n):
    for k in [k for k in dir_meta if k == n or k.startswith(n + '/')]:
        del dir_meta[k]
    for k in [k for k in implicit if k == n or k.startswith(n + '/')]:
        implicit.discard(k)


def _ensure_parents(dest, n, implicit):
    parts = n.split('/')[:-1] if n else []
    cur = ''
    for part in parts:
        cur = cur + '/' + part if cur else part
        p = os.path.join(dest, cur)
        if os.path.lexists(p) and not (os.path.isdir(p) and not os.path.islink(p)):
            _remove(p)
        if not os.path.lexists(p):
            os.mkdir(p, 0o755)
            implicit.add(cur)


# ----------------------------------------------------------------------------- tar vs tree
class _TarEntry:
    __slots__ = ('member', 'mtime_ns', 'precise', 'xattrs')


def read_tar_entries(tf):
    """{relpath(bytes): _TarEntry} with hardlinks kept as LNKTYPE members."""
    out = {}
    for m in tf.getmembers():
        n = os.fsencode(norm_member(m.name))
        e = _TarEntry()
        e.member = m
        e.mtime_ns, e.precise = pax_mtime_ns(m)
        e.xattrs = member_xattrs(m)
        out[n] = e
    return out


_TAR_KIND = {tarfile.REGTYPE: stat.S_IFREG, tarfile.AREGTYPE: stat.S_IFREG,
             tarfile.CONTTYPE: stat.S_IFREG, tarfile.GNUTYPE_SPARSE: stat.S_IFREG,
             tarfile.DIRTYPE: stat.S_IFDIR, tarfile.SYMTYPE: stat.S_IFLNK,
             tarfile.CHRTYPE: stat.S_IFCHR, tarfile.BLKTYPE: stat.S_IFBLK,
             tarfile.FIFOTYPE: stat.S_IFIFO}


def compare_tar_to_tree(tarpath, tree_root, ignore=(), exclude=(), tmpdir=None):
    """Compare a tar archive with a directory tree. Returns a list of differences.

    Sockets in the tree are skipped (tar cannot store them). The root entry ('./') is
    compared only if the archive has one. mtimes are compared to the nanosecond when the
    member has a pax mtime record with a fraction, otherwise to the second. Hardlink
    members must point at a path of the same inode group in the tree."""
    ignore = set(ignore)
    tree = _cmp.scan_tree(tree_root, exclude)
    tree = {k: v for k, v in tree.items() if not stat.S_ISSOCK(v.st.st_mode)}
    excl = [os.fsencode(x).strip(b'/') for x in exclude]
    diffs = []
    with tempfile.TemporaryDirectory(prefix='rafs-tarcmp-', dir=tmpdir) as tmp, \
            open_tar(tarpath, tmp) as tf:
        entries = read_tar_entries(tf)
        entries = {k: v for k, v in entries.items()
                   if not any(k == x or k.startswith(x + b'/') for x in excl)}
        counts = collections.Counter(os.fsencode(norm_member(m.name)) for m in tf.getmembers())
        dups = sorted(n for n, c in counts.items() if c > 1)
        for n in dups:
            diffs.append('%s: appears more than once in the tar' % _cmp.show(n))
        tree_keys = set(tree) - {b''}
        tar_keys = set(entries) - {b''}
        for rel in sorted(tree_keys - tar_keys):
            diffs.append('%s: missing in tar (expected %s)' % (
                _cmp.show(rel), _cmp.type_name(tree[rel].st.st_mode)))
        for rel in sorted(tar_keys - tree_keys):
            diffs.append('%s: unexpected in tar' % _cmp.show(rel))
        groups = _cmp._groups(tree)
        root_root = os.fsencode(tree_root)
        for rel in sorted((tree_keys & tar_keys) | ({b''} & set(entries))):
            te, fe = entries[rel], tree[rel]
            m = te.member
            where = _cmp.show(rel)
            fmode = fe.st.st_mode
            if m.islnk():
                t = os.fsencode(norm_member(m.linkname))
                if stat.S_ISDIR(fmode):
                    diffs.append('%s: hardlink member for a directory' % where)
                elif t not in groups.get(rel, ()) or t == rel:
                    diffs.append('%s: tar hardlink to %s, but the tree does not link them' % (
                        where, _cmp.show(t)))
                continue
            kind = _TAR_KIND.get(m.type)
            if kind is None or kind != stat.S_IFMT(fmode):
                diffs.append('%s: type: expected %s, tar has type %r' % (
                    where, _cmp.type_name(fmode), m.type))
                continue
            if 'mode' not in ignore and (m.mode & 0o7777) != stat.S_IMODE(fmode) \
                    and not stat.S_ISLNK(fmode):
                diffs.append('%s: mode: expected %04o, tar %04o' % (
                    where, stat.S_IMODE(fmode), m.mode & 0o7777))
            if 'uid' not in ignore and m.uid != fe.st.st_uid:
                diffs.append('%s: uid: expected %d, tar %d' % (where, fe.st.st_uid, m.uid))
            if 'gid' not in ignore and m.gid != fe.st.st_gid:
                diffs.append('%s: gid: expected %d, tar %d' % (where, fe.st.st_gid, m.gid))
            is_dir = stat.S_ISDIR(fmode)
            if not ('mtime' in ignore or (is_dir and 'dir_mtime' in ignore)
                    or (rel == b'' and 'root_mtime' in ignore)):
                want = fe.st.st_mtime_ns
                got = te.mtime_ns
                if not te.precise or 'mtime_nsec' in ignore:
                    want, got = want // 10**9, got // 10**9
                    if want != got:
                        diffs.append('%s: mtime: expected %d, tar %d (seconds)' % (where, want, got))
                elif want != got:
                    diffs.append('%s: mtime: expected %s, tar %s' % (
                        where, _cmp._fmt_mtime(want), _cmp._fmt_mtime(got)))
            if stat.S_ISREG(fmode) and m.size != fe.st.st_size:
                diffs.append('%s: size: expected %d, tar %d' % (where, fe.st.st_size, m.size))
            if stat.S_ISLNK(fmode) and os.fsencode(m.linkname) != fe.target:
                diffs.append('%s: symlink target: expected %r, tar %r' % (
                    where, fe.target[:80], os.fsencode(m.linkname)[:80]))
            if (stat.S_ISCHR(fmode) or stat.S_ISBLK(fmode)) and 'rdev' not in ignore:
                if (m.devmajor, m.devminor) != (os.major(fe.st.st_rdev), os.minor(fe.st.st_rdev)):
                    diffs.append('%s: rdev: expected %d:%d, tar %d:%d' % (
                        where, os.major(fe.st.st_rdev), os.minor(fe.st.st_rdev),
                        m.devmajor, m.devminor))
            if 'xattrs' not in ignore:
                for name in sorted(set(fe.xattrs) | set(te.xattrs)):
                    if 'acl' in ignore and name in _cmp.ACL_NAMES:
                        continue
                    a, b = fe.xattrs.get(name), te.xattrs.get(name)
                    if a != b:
                        diffs.append('%s: xattr %s: expected %s, tar %s' % (
                            where, name, 'absent' if a is None else _cmp._fmt_value(a),
                            'absent' if b is None else _cmp._fmt_value(b)))
            if stat.S_ISREG(fmode) and 'content' not in ignore and m.size == fe.st.st_size:
                with open(os.path.join(root_root, rel), 'rb', buffering=0) as ef, \
                        tf.extractfile(m) as af:
                    msg = _cmp.compare_streams(ef, af, m.size, exp_fd_for_holes=ef.fileno())
                if msg:
                    diffs.append('%s: %s' % (where, msg))
        # every multi-path inode group of the tree must be expressed by hardlink members
        if 'hardlinks' not in ignore:
            seen = set()
            for rel, g in groups.items():
                if len(g) < 2 or g in seen or not g <= tar_keys:
                    continue
                seen.add(g)
                regular = [p for p in g if not entries[p].member.islnk()]
                if len(regular) != 1:
                    diffs.append('hardlink group [%s]: expected exactly one full member and %d '
                                 'hardlink members, tar has %d full members' % (
                                     ', '.join(_cmp.show(p) for p in sorted(g)), len(g) - 1,
                                     len(regular)))
    return diffs
