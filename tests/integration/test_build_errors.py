#!/usr/bin/python3
"""mkrafs build must fail cleanly on bad input.

For every case: exit status != 0 and < 128 (no crash, no signal), no timeout, exactly one
line on stderr, naming the problem (the case's phrase from mkrafs's message, case-insensitive,
looked for with the input and output paths taken out of the line: the input files have neutral
names too, so a line that only names the input cannot pass), and no partial output: the output dir is absent or holds nothing but an empty blobs/ dir, and
nothing else appeared next to it (each case runs in its own empty parent directory, which
is also the working directory).

Cases: truncated tar (file and stdin), corrupt gzip (garbage that still inflates, caught
only by the CRC32/ISIZE trailer; and a broken deflate stream), not a tar at all, hardlink to a
missing target, a 256-byte name component, a sparse member of 1 PiB (more chunks than mkrafs
takes for one file), an unreadable
source file (permission denied: mkrafs runs without CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH),
a source file whose read fails with an I/O-level error (a file on an EROFS image with
corrupted lz4 data: open and stat work, read gives EUCLEAN), a full output file system
(1 MiB tmpfs), an output dir that holds an earlier image (refused, left as it was; an empty
existing dir is fine), and invalid options (--chunk-size 3000 / 2048 / 0 / 32M / 33554432 / 1G / 8G / abc,
--compressor foo, --digester md5, missing --output, non-existent source, no source,
unknown option, unknown subcommand).
Not errors: `../`, `a/../../` and absolute member paths are cleaned as containerd applies them
(inside the root); the image built from them holds /evil, /evil2 and /etc/evil.

Exit: 0 pass, 77 skip (not root / no EROFS), 1 fail.
"""

import errno
import gzip
import io
import os
import random
import shutil
import sys
import tarfile

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from rafstest import harness, mount  # noqa: E402
from rafstest.harness import log, run, text  # noqa: E402
from rafstest.mkrafs import no_partial_output  # noqa: E402

MiB = 1 << 20


def tar_bytes(members):
    """members: [(TarInfo-kwargs, data-or-None)] -> raw tar bytes (pax)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode='w', format=tarfile.PAX_FORMAT) as tf:
        for kw, data in members:
            ti = tarfile.TarInfo(kw.pop('name'))
            for k, v in kw.items():
                setattr(ti, k, v)
            if data is not None:
                ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def reg(name, data, **kw):
    return (dict(name=name, type=tarfile.REGTYPE, mode=0o644, **kw), data)


def dirent(name):
    return (dict(name=name, type=tarfile.DIRTYPE, mode=0o755), None)


def write(path, data):
    with open(path, 'wb') as f:
        f.write(data)
    return path


class Case:
    def __init__(self, name, phrase, sources=None, opts=(), stdin=None, output=True,
                 wrapper=(), subcommand='build', note=''):
        self.name = name
        self.phrase = phrase
        self.sources = sources
        self.opts = list(opts)
        self.stdin = stdin
        self.output = output
        self.wrapper = list(wrapper)
        self.subcommand = subcommand
        self.note = note


def make_inputs(tmp):
    rng = random.Random(7)
    inp = os.path.join(tmp, 'inputs')
    os.mkdir(inp)
    good_dir = os.path.join(inp, 'good-dir')
    os.mkdir(good_dir)
    write(os.path.join(good_dir, 'hello'), b'hello\n')
    paths = {'good_dir': good_dir}

    big = rng.randbytes(300 * 1024)
    good_tar = tar_bytes([dirent('d'), reg('d/big', big), reg('d/after', b'after')])
    cut = len(good_tar) * 6 // 10
    paths['truncated'] = write(os.path.join(inp, 'in01.tar'), good_tar[:cut])

    words = [bytes(rng.choice(b'abcdefghijklmnop') for _ in range(rng.randint(2, 8)))
             for _ in range(300)]
    txt = b' '.join(rng.choice(words) for _ in range(200000))
    gz = bytearray(gzip.compress(tar_bytes([reg('text', txt)]), mtime=0))
    for i in range(len(gz) // 2, len(gz) // 2 + 64):
        gz[i] ^= 0xA5
    # garbage in the middle of the deflate data: it still inflates, to wrong bytes of the
    # wrong length; only the gzip trailer (CRC32, ISIZE) tells
    paths['corrupt_gz'] = write(os.path.join(inp, 'in02.tar.gz'), bytes(gz))
    gz2 = bytearray(gzip.compress(tar_bytes([reg('text', txt)]), mtime=0))
    for i in range(10, 10 + 16):   # right after the 10-byte gzip header: block headers
        gz2[i] ^= 0xFF
    paths['corrupt_gz2'] = write(os.path.join(inp, 'in03.tar.gz'), bytes(gz2))
    paths['not_tar'] = write(os.path.join(inp, 'in04.tar'), rng.randbytes(64 * 1024))
    paths['dotdot'] = write(os.path.join(inp, 'in05.tar'),
                            tar_bytes([reg('ok', b'ok'), reg('../evil', b'evil')]))
    paths['dotdot_mid'] = write(os.path.join(inp, 'in06.tar'),
                                tar_bytes([dirent('a'), reg('a/../../evil2', b'evil')]))
    paths['absolute'] = write(os.path.join(inp, 'in07.tar'),
                              tar_bytes([reg('ok', b'ok'), reg('/etc/evil', b'evil')]))
    paths['hardlink'] = write(os.path.join(inp, 'in08.tar'), tar_bytes([
        reg('ok', b'ok'),
        (dict(name='link', type=tarfile.LNKTYPE, linkname='no/such/target', mode=0o644), None)]))
    paths['name256'] = write(os.path.join(inp, 'in09.tar'),
                             tar_bytes([dirent('d'), reg('d/' + 'n' * 256, b'x')]))
    # Linux's XATTR_NAME_MAX (255) bounds the whole name, namespace included.
    paths['xattr_name'] = write(os.path.join(inp, 'in10.tar'), tar_bytes(
        [reg('f', b'x', pax_headers={'SCHILY.xattr.user.' + 'n' * 251: 'v'})]))
    paths['xattr_acl'] = write(os.path.join(inp, 'in11a.tar'), tar_bytes(
        [reg('f', b'x', pax_headers={'SCHILY.xattr.system.posix_acl_access': 'garbage'})]))
    paths['xattr_total'] = write(os.path.join(inp, 'in11.tar'), tar_bytes(
        [dirent('d'), reg('d/f', b'x', pax_headers={'SCHILY.xattr.user.%d' % i: 'v' * 60000 for i in range(5)})]))

    # A GNU sparse (pax 1.0) member of 1 PiB in a tar of a few KiB: its chunk records alone would
    # take gigabytes (before the limit, std::bad_alloc naming nothing).
    realsize = 1 << 50
    sparse_map = b'1\n%d\n4\n' % (realsize - 4)
    sparse_map += b'\0' * (-len(sparse_map) % 512)
    paths['sparse_huge'] = write(os.path.join(inp, 'in12.tar'), tar_bytes([(dict(
        name='GNUSparseFile.0/huge', mode=0o644,
        pax_headers={'GNU.sparse.major': '1', 'GNU.sparse.minor': '0', 'GNU.sparse.name': 'huge',
                     'GNU.sparse.realsize': str(realsize)}), sparse_map + b'TAIL')]))

    # (the input files have neutral names: a message that names only its input names no problem)

    # unreadable by permission: mode 0000, owned by another user; mkrafs runs without
    # CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH (still uid 0, so output writes work)
    perm = os.path.join(inp, 'perm-dir')
    os.mkdir(perm)
    write(os.path.join(perm, 'readable'), b'fine\n')
    sec = write(os.path.join(perm, 'secret-file'), b'secret\n')
    os.chown(sec, 1000, 1000)
    os.chmod(sec, 0o000)
    paths['perm_dir'] = perm

    big_src = os.path.join(inp, 'big-dir')
    os.mkdir(big_src)
    write(os.path.join(big_src, 'random-4m'), rng.randbytes(4 * MiB))
    paths['big_dir'] = big_src
    return paths


def make_eio_source(ck, tmp):
    """An EROFS image (mkfs.erofs -zlz4) whose compressed data is overwritten: stat and open
    of 'bad-file' work, read() fails (EUCLEAN, 'Structure needs cleaning'). Returns the
    mounted directory and the error text a read of 'bad-file' gives, or None (with a note) if that
    cannot be set up here."""
    if shutil.which('mkfs.erofs') is None:
        ck.warn('mkfs.erofs missing: the read-error case is not run')
        return None
    d = os.path.join(tmp, 'eio')
    src = os.path.join(d, 'src')
    os.makedirs(src)
    rng = random.Random(99)
    words = [bytes(rng.choice(b'abcdefghij') for _ in range(rng.randint(2, 9))) for _ in range(500)]
    write(os.path.join(src, 'bad-file'), b' '.join(rng.choice(words) for _ in range(60000)))
    write(os.path.join(src, 'good-file'), b'good\n')
    img = os.path.join(d, 'img')
    r = run(['mkfs.erofs', '--quiet', '-zlz4', img, src])
    if r.returncode != 0:
        ck.warn('mkfs.erofs -zlz4 failed; read-error case not run: %s' % text(r.stderr))
        return None
    # overwrite every block after the first (metadata + inline data live in block 0 for
    # such a small image; the compressed pclusters follow)
    size = os.path.getsize(img)
    with open(img, 'r+b') as f:
        f.seek(4096)
        f.write(b'\xff' * (size - 4096))
    mnt = os.path.join(d, 'mnt')
    os.mkdir(mnt)
    try:
        mount.erofs_mount(img, mnt)
    except mount.MountError as e:
        ck.warn('cannot mount the corrupted image; read-error case not run: %s' % e)
        return None
    try:
        with open(os.path.join(mnt, 'bad-file'), 'rb') as f:
            f.read()
        ck.warn('reading the corrupted file did not fail; read-error case not run')
        mount.umount(mnt)
        return None
    except OSError as e:
        log('  read-error source ready: reading bad-file fails with: %s' % e.strerror)
        return mnt, e.strerror


def names_problem(line, phrase, paths):
    """Whether `line` holds `phrase` (case-insensitive) once the `paths` (the case's input and
    output) are taken out of it: naming the input is not naming the problem."""
    for p in sorted(paths, key=len, reverse=True):
        line = line.replace(p, '')
    return phrase.lower() in line.lower()


def check_case(ck, mkrafs, c, tmp, idx):
    parent = os.path.join(tmp, 'case-%02d' % idx)
    os.mkdir(parent)
    out = os.path.join(parent, 'out')
    cmd = c.wrapper + [mkrafs, c.subcommand] + c.opts
    if c.output:
        cmd += ['--output', out]
    cmd += c.sources
    log('\n--- case %d: %s%s' % (idx, c.name, (' (%s)' % c.note) if c.note else ''))
    if c.stdin:
        with open(c.stdin, 'rb') as stdin:
            r = run(cmd, timeout=300, stdin=stdin, cwd=parent)
    else:
        # an empty, closed stdin: a builder that wrongly waits on stdin does not hang
        r = run(cmd, timeout=300, input=b'', cwd=parent)
    failures = []
    err = text(r.stderr)
    lines = err.rstrip('\n').split('\n') if err.strip() else []
    if r.returncode is None:
        failures.append('timed out')
    elif r.returncode == 0:
        failures.append('exit status 0 (must fail)')
    elif r.returncode < 0 or r.returncode >= 128:
        failures.append('crashed or killed (exit status %d)' % r.returncode)
    if len(lines) != 1:
        failures.append('stderr has %d lines (must be exactly 1)' % len(lines))
    elif not names_problem(lines[0], c.phrase, [s for s in c.sources if s != '-'] + [out]):
        failures.append('stderr does not name the problem (%r, paths aside): %r' % (c.phrase, lines[0]))
    left = no_partial_output(out)
    if left:
        failures.append('partial output left in %s: %s' % (out, left[:10]))
    others = sorted(set(os.listdir(parent)) - {'out'})
    if others:
        failures.append('files left next to the output dir: %s' % others[:10])
    if lines:
        log('  stderr: ' + ' | '.join(lines[:5]))
    log('  exit status: %s' % r.returncode)
    if failures:
        ck.fail('%s: %s' % (c.name, '; '.join(failures)))
    else:
        ck.ok(c.name)
    shutil.rmtree(parent, ignore_errors=True)


def main():
    args, mkrafs, ck = harness.start_mkrafs_test('test_build_errors', __doc__, ('setpriv',))
    with harness.temp_dir('rafs-build-errors-', keep=args.keep) as tmp:
        p = make_inputs(tmp)
        good = [p['good_dir']]
        no_dac = ['setpriv', '--bounding-set=-dac_override,-dac_read_search', '--']
        power_of_two = 'must be a power of two from 4 KiB to 16 MiB'
        cases = [
            Case('truncated tar', 'truncated tar archive', [p['truncated']]),
            Case('truncated tar on stdin', 'truncated tar archive', ['-'], stdin=p['truncated']),
            Case('corrupt gzip tar (only the CRC/length trailer shows it)',
                 'corrupt gzip data: CRC or length mismatch', [p['corrupt_gz']]),
            Case('corrupt gzip tar (broken deflate stream)', 'corrupt gzip data', [p['corrupt_gz2']]),
            Case('not a tar at all', 'unrecognized archive format', [p['not_tar']]),
            Case('hardlink to a missing target', 'hardlink target no/such/target does not exist',
                 [p['hardlink']]),
            Case('name component of 256 bytes', 'path component longer than 255 bytes', [p['name256']]),
            Case('xattr name of 256 bytes', 'name longer than 255 bytes', [p['xattr_name']]),
            Case('an ACL xattr that is no ACL', 'member f: an ACL xattr (system.posix_acl_*) that is no valid POSIX ACL',
                 [p['xattr_acl']]),
            Case('xattrs of one file beyond the inline limit', 'member d/f: xattrs of one inode exceed the inline limit',
                 [p['xattr_total']]),
            Case('a sparse member of 1 PiB', 'member huge: 1125899906842624 bytes make 1073741824 chunks of '
                 '1048576 bytes; mkrafs takes up to 4194304 chunks per file', [p['sparse_huge']]),
            Case('unreadable source file (permission denied)', 'permission denied',
                 [p['perm_dir']], wrapper=no_dac,
                 note='mkrafs without CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH; file mode 0000'),
            Case('--chunk-size 3000', '--chunk-size 3000: ' + power_of_two, good,
                 opts=['--chunk-size', '3000']),
            Case('--chunk-size 2048', '--chunk-size 2048: ' + power_of_two, good,
                 opts=['--chunk-size', '2048']),
            Case('--chunk-size 0', '--chunk-size 0: ' + power_of_two, good, opts=['--chunk-size', '0']),
            Case('--chunk-size 32M', '--chunk-size 33554432: ' + power_of_two, good,
                 opts=['--chunk-size', '32M']),
            Case('--chunk-size 33554432', '--chunk-size 33554432: ' + power_of_two, good,
                 opts=['--chunk-size', '33554432']),
            Case('--chunk-size 1G', '--chunk-size 1073741824: ' + power_of_two, good, opts=['--chunk-size', '1G']),
            Case('--chunk-size 8G', "--chunk-size '8G': too large", good, opts=['--chunk-size', '8G']),
            Case('--chunk-size abc', "--chunk-size 'abc': not a size", good, opts=['--chunk-size', 'abc']),
            Case('--compressor foo', "unknown compressor 'foo'", good, opts=['--compressor', 'foo']),
            Case('--digester md5', "unknown digest algorithm 'md5'", good, opts=['--digester', 'md5']),
            Case('missing --output', '--output is required', good, output=False),
            # the path is taken out of the line: "source '' does not exist" is left
            Case('non-existent source', 'does not exist', ['/nonexistent/source/path']),
            Case('no source', 'SOURCE is required', []),
            Case('unknown option', 'not expected: --bogus-option', good, opts=['--bogus-option']),
            Case('unknown subcommand', "unknown command 'frobnicate'", good,
                 subcommand='frobnicate', output=False),
        ]
        for i, c in enumerate(cases, 1):
            check_case(ck, mkrafs, c, tmp, i)
        n = len(cases)

        # read error from the source file system
        eio = make_eio_source(ck, tmp)
        if eio:
            eio, strerror = eio
            n += 1
            # the error text the kernel gives for the read ('Structure needs cleaning')
            check_case(ck, mkrafs, Case('source file read fails (EUCLEAN from EROFS)', strerror,
                                        [eio], note='corrupted lz4 data on an EROFS image'),
                       tmp, n)
            mount.umount(eio)

        n += 1
        check_case_existing_output(ck, mkrafs, good, tmp, n)
        check_cleaned_paths(ck, mkrafs, p, tmp)

        # full output file system: 1 MiB tmpfs as the output dir's parent
        fs = os.path.join(tmp, 'fullfs')
        os.mkdir(fs)
        r = run(['mount', '-t', 'tmpfs', '-o', 'size=1m,mode=0755', 'tmpfs', fs])
        if r.returncode != 0:
            ck.fail('cannot mount a tmpfs for the full-fs case: %s' % text(r.stderr))
        else:
            try:
                n += 1
                check_case_fullfs(ck, mkrafs, p['big_dir'], fs, n)
            finally:
                mount.umount(fs)
    return ck.finish()


def check_cleaned_paths(ck, mkrafs, p, tmp):
    """Members named ../evil, a/../../evil2 and /etc/evil land inside the root, as containerd's
    archive.Apply puts them (filepath.Clean, then fs.RootPath)."""
    out = os.path.join(tmp, 'cleaned')
    r = run([mkrafs, 'build', '--output', out, p['dotdot'], p['dotdot_mid'], p['absolute']])
    if not ck.check(r.returncode == 0, "layers with ../, a/../../ and absolute members build", text(r.stderr)):
        return
    unpacked = os.path.join(tmp, 'cleaned.tar')
    r = run([mkrafs, 'unpack', os.path.join(out, 'image.boot'), '--blob-dir', os.path.join(out, 'blobs'),
             '--tar', unpacked])
    if not ck.check(r.returncode == 0, 'mkrafs unpack --tar of it', text(r.stderr)):
        return
    with tarfile.open(unpacked) as t:
        members = {m.name.removeprefix('./').rstrip('/'): m for m in t.getmembers()}
        found = {name: t.extractfile(m).read() for name, m in members.items() if m.isfile()}
    ck.check(found == {'ok': b'ok', 'evil': b'evil', 'evil2': b'evil', 'etc/evil': b'evil'},
             'they are /evil, /evil2 and /etc/evil, beside /ok', repr(sorted(members)))
    # Its blob missing: unpack fails naming it and leaves no output directory behind.
    raw, empty = os.path.join(tmp, 'cleaned-raw'), os.path.join(tmp, 'no-blobs')
    os.makedirs(empty)
    r = run([mkrafs, 'unpack', os.path.join(out, 'image.boot'), '--blob-dir', empty, '--raw-dir', raw])
    ck.check(r.returncode != 0 and len(text(r.stderr).strip().splitlines()) == 1 and not os.path.exists(raw),
             'mkrafs unpack --raw-dir without the blob: one error line, no output directory left',
             '%s; %s exists: %s' % (text(r.stderr).strip(), raw, os.path.exists(raw)))


def snapshot(root):
    """{relative path: bytes or None for a dir} of everything under root."""
    out = {}
    for rel in harness.dir_listing(root):
        p = os.path.join(root, rel)
        if os.path.isdir(p):
            out[rel] = None
        else:
            with open(p, 'rb') as f:
                out[rel] = f.read()
    return out


def check_case_existing_output(ck, mkrafs, sources, tmp, idx):
    """An output dir holding an earlier image is refused and left as it was (mkrafs does not
    mix old blobs with a new image); an existing empty dir is used."""
    name = 'output dir that holds an earlier image'
    log('\n--- case %d: %s' % (idx, name))
    out = os.path.join(tmp, 'existing-out')
    r = run([mkrafs, 'build', '--output', out] + sources, timeout=300)
    if not ck.cmd_ok(r, 'the earlier image'):
        return
    blob = os.path.join(out, 'blobs', 'f' * 64)
    write(blob, b'a blob of an older build')
    before = snapshot(out)
    r = run([mkrafs, 'build', '--chunk-size', '64K', '--output', out] + sources, timeout=300)
    err = text(r.stderr).strip()
    failures = []
    if r.returncode in (0, None) or r.returncode < 0 or r.returncode >= 128:
        failures.append('exit status %s (must fail cleanly)' % r.returncode)
    if len(err.splitlines()) != 1 or 'not empty' not in err or out not in err:
        failures.append('stderr must be one line naming %s as not empty: %r' % (out, err))
    if snapshot(out) != before:
        failures.append('the output dir changed: %s' % sorted(set(snapshot(out)) ^ set(before))[:10])
    log('  stderr: ' + err)
    if failures:
        ck.fail('%s: %s' % (name, '; '.join(failures)))
    else:
        ck.ok(name + ': refused, left as it was')
    empty = os.path.join(tmp, 'empty-out')
    os.mkdir(empty)
    r = run([mkrafs, 'build', '--output', empty] + sources, timeout=300)
    if ck.cmd_ok(r, 'an existing empty output dir is used'):
        ck.check(sorted(os.listdir(empty)) == ['blobs', 'image.boot'], 'it holds the image',
                 str(os.listdir(empty)))


def check_case_fullfs(ck, mkrafs, src, fs, idx):
    out = os.path.join(fs, 'out')
    name = 'full output file system (1 MiB tmpfs, 4 MiB of random data, --compressor none)'
    log('\n--- case %d: %s' % (idx, name))
    r = run([mkrafs, 'build', '--compressor', 'none', '--output', out, src], timeout=300)
    failures = []
    err = text(r.stderr)
    lines = err.rstrip('\n').split('\n') if err.strip() else []
    if r.returncode is None:
        failures.append('timed out')
    elif r.returncode == 0:
        failures.append('exit status 0 (must fail)')
    elif r.returncode < 0 or r.returncode >= 128:
        failures.append('crashed or killed (exit status %d)' % r.returncode)
    phrase = os.strerror(errno.ENOSPC)  # 'No space left on device'
    if len(lines) != 1:
        failures.append('stderr has %d lines (must be exactly 1)' % len(lines))
    elif not names_problem(lines[0], phrase, [src, out, fs]):
        failures.append('stderr does not name the problem (%r, paths aside): %r' % (phrase, lines[0]))
    left = no_partial_output(out)
    if left:
        failures.append('partial output left: %s' % left[:10])
    others = sorted(set(os.listdir(fs)) - {'out'})
    if others:
        failures.append('files left on the file system: %s' % others[:10])
    st = os.statvfs(fs)
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    if used > 64 * 1024:
        failures.append('%d bytes still used on the tmpfs after the failed build' % used)
    if lines:
        log('  stderr: ' + ' | '.join(lines[:5]))
    log('  exit status: %s' % r.returncode)
    if failures:
        ck.fail('%s: %s' % (name, '; '.join(failures)))
    else:
        ck.ok(name)


if __name__ == '__main__':
    sys.exit(main())
