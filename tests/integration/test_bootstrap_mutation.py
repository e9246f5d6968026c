#!/usr/bin/env python3
"""Mutation test of the bootstrap check (format/BootstrapCheck.h), which `mkrafs inspect`
and `rafsd mount` both run.

Two images are built by mkrafs (sha256 digests, 64 KiB chunks, a prefetch list) from a seeded
tree of small and multi-chunk files, an empty file, a hardlink, symlinks, a fifo, xattrs and
nested directories: one with a chunk info table, one without (--no-chunk-table; the same blob,
whose blob.digest section holds the digests, and whose chunk indexes only the blob's ci array can
vouch for). Then, for MUTATIONS seeded mutations (default 300, seed SEED; two thirds on the first
image), one field or byte of a bootstrap is changed: superblock, extended superblock, device slot, blob table, chunk info
table, prefetch table, inode fields, chunk indexes, dirents, names, symlink targets, xattrs, or a
byte in use. The first mutations are fixed: the chunk size bits in a file's i_u set to 4 KiB
(issue 11) and the block addresses of two chunk indexes swapped, both refused; and two whole chunk
indexes swapped, a consistent image that must be served. Each mutated bootstrap must be either

- refused by `mkrafs inspect` (with its blobs) and by `rafsd mount`: non-zero exit, one
  `rafsd: ...` line, nothing mounted, no crash; or
- mounted by rafsd (fanotify engine), and then serve only bytes its own chunk digests vouch for:
  every regular file either fails to read with EIO or reads, chunk by chunk, bytes whose sha256
  is the digest recorded for the chunk the file's index names: in the mutated chunk info table,
  or, without one, in the blob (the file's chunks as the check saw them: `mkrafs inspect -v`
  without blobs). Directories are listed, symlinks read, files stat'ed; any error but EIO
  means the kernel found something the check let through. Reads run in a child process with a
  time limit (no hang), and rafsd must stop cleanly.

Every loop is bounded in count and time (TIME_LIMIT seconds, default 240: mutations not run by
then are reported, and the test still passes if at least 100 ran).
"""

import json
import os
import random
import re
import struct
import subprocess
import sys
import time

from rafstest import harness, mount
from rafstest.harness import log, run, text
from rafstest.rafsd import RafsdMount, chunk_table, start_test, write_config

SEED = int(os.environ.get('SEED', '11'))
MUTATIONS = int(os.environ.get('MUTATIONS', '300'))
TIME_LIMIT = float(os.environ.get('TIME_LIMIT', '240'))
CHUNK = 64 * 1024
READ_TIMEOUT = 30
EIO = 5

SB = 1024
EXT = 1152
DEVT = 1408
# (offset, size) of every field, as in kernel-abi/erofs.h and kernel-abi/rafs.h.
SB_FIELDS = [(0, 4), (4, 4), (8, 4), (12, 1), (13, 1), (14, 2), (16, 8), (24, 8), (32, 4), (36, 4), (40, 4),
             (44, 4), (48, 16), (64, 16), (80, 4), (84, 2), (86, 2), (88, 2), (90, 1), (91, 1), (92, 4), (96, 8),
             (104, 1), (105, 23)]
EXT_FIELDS = [(0, 8), (8, 8), (16, 4), (20, 4), (24, 8), (32, 8), (40, 8), (48, 4), (52, 4), (56, 200)]
SLOT_FIELDS = [(0, 64), (64, 4), (68, 4), (72, 56)]
BLOB_FIELDS = [(0, 64), (64, 4), (68, 4), (72, 4), (76, 4), (80, 4), (84, 4), (88, 8), (96, 8), (104, 4),
               (108, 4), (112, 8), (120, 8), (128, 8), (136, 32), (168, 32), (200, 8), (208, 8), (216, 4),
               (220, 36)]
CHUNK_INFO_FIELDS = [(0, 32), (32, 4), (36, 4), (40, 4), (44, 4), (48, 8), (56, 8), (64, 8), (72, 4), (76, 4)]
COMPACT_FIELDS = [(0, 2), (2, 2), (4, 2), (6, 2), (8, 4), (12, 4), (16, 4), (20, 4), (24, 2), (26, 2), (28, 4)]
EXTENDED_FIELDS = [(0, 2), (2, 2), (4, 2), (6, 2), (8, 8), (16, 4), (20, 4), (24, 4), (28, 4), (32, 8), (40, 4),
                   (44, 4), (48, 16)]
CHUNK_INDEX_FIELDS = [(0, 2), (2, 2), (4, 4)]
DIRENT_FIELDS = [(0, 8), (8, 2), (10, 1), (11, 1)]

READER = r'''
import hashlib, json, os, sys
root, chunk = sys.argv[1], int(sys.argv[2])
out = {}
def failed(e):
    out['/' + os.path.relpath(e.filename, root)] = ['readdir-error', e.errno, 0]
for dp, dns, fns in os.walk(root, onerror=failed):
    for n in fns + [d for d in dns if os.path.islink(os.path.join(dp, d))]:
        p = os.path.join(dp, n)
        rel = '/' + os.path.relpath(p, root)
        try:
            st = os.lstat(p)
            if (st.st_mode & 0o170000) == 0o120000:
                os.readlink(p)
        except OSError as e:
            out[rel] = ['stat-error', e.errno, 0]
            continue
        if (st.st_mode & 0o170000) != 0o100000:
            continue
        try:
            with open(p, 'rb') as f:
                data = f.read()
        except OSError as e:
            out[rel] = ['error', e.errno, st.st_ino]
            continue
        out[rel] = ['ok', st.st_ino, len(data), [hashlib.sha256(data[i:i + chunk]).hexdigest()
                                                 for i in range(0, len(data), chunk)]]
json.dump(out, sys.stdout)
'''


def make_tree(root, rnd):
    """Small, multi-chunk, empty, compressible files, a hardlink, symlinks, a fifo, xattrs."""
    def put(rel, data):
        p = os.path.join(root, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, 'wb') as f:
            f.write(data)
        return p
    put('a/one', rnd.randbytes(3 * CHUNK + 1234))
    put('a/two', rnd.randbytes(CHUNK))
    put('a/b/three', b'text ' * 30000)
    put('a/b/c/deep', rnd.randbytes(5000))
    put('empty', b'')
    put('small', b'hello\n')
    for i in range(8):
        put('many/f%02d' % i, rnd.randbytes(rnd.randrange(1, 3 * CHUNK)))
    os.link(os.path.join(root, 'a/two'), os.path.join(root, 'hard'))
    os.symlink('a/one', os.path.join(root, 'link'))
    os.symlink('x' * 300, os.path.join(root, 'many/longlink'))
    os.mkfifo(os.path.join(root, 'fifo'))
    try:
        os.setxattr(put('attrs', b'x' * 100), 'user.note', b'value')
        os.setxattr(os.path.join(root, 'attrs'), 'trusted.other', b'v' * 40)
    except OSError as e:
        log('no xattrs on this file system (%s): the xattr mutations are fewer' % e)


def inode_facts(boot, meta, nid):
    """(offset, extended, icount, layout, size, i_u) of an inode."""
    off = meta * 4096 + nid * 32
    fmt, icount = struct.unpack_from('<HH', boot, off)
    extended = fmt & 1
    size = struct.unpack_from('<Q' if extended else '<I', boot, off + 8)[0]
    i_u = struct.unpack_from('<I', boot, off + 16)[0]
    return off, extended, icount, (fmt >> 1) & 7, size, i_u


def field_spans(boot, nids):
    """Every field of the bootstrap worth mutating: [(label, offset, size)]."""
    spans = [('superblock+%d' % o, SB + o, s) for o, s in SB_FIELDS]
    spans += [('ext superblock+%d' % o, EXT + o, s) for o, s in EXT_FIELDS]
    extra = struct.unpack_from('<H', boot, SB + 86)[0]
    meta = struct.unpack_from('<I', boot, SB + 40)[0]
    blob_off, blob_size = struct.unpack_from('<QI', boot, EXT + 8)
    chunk_off, chunk_size = struct.unpack_from('<QQ', boot, EXT + 24)
    pf_off, pf_size = struct.unpack_from('<QI', boot, EXT + 40)
    for d in range(extra):
        spans += [('device slot %d+%d' % (d, o), DEVT + d * 128 + o, s) for o, s in SLOT_FIELDS]
    for b in range(blob_size // 256):
        spans += [('blob %d+%d' % (b, o), blob_off + b * 256 + o, s) for o, s in BLOB_FIELDS]
    for c in range(chunk_size // 80):
        spans += [('chunk info %d+%d' % (c, o), chunk_off + c * 80 + o, s) for o, s in CHUNK_INFO_FIELDS]
    for p in range(pf_size // 4):
        spans.append(('prefetch %d' % p, pf_off + p * 4, 4))
    for nid, (path, kind) in nids.items():
        off, extended, icount, layout, size, i_u = inode_facts(boot, meta, nid)
        isize = 64 if extended else 32
        spans += [('nid %d %s inode+%d' % (nid, path, o), off + o, s)
                  for o, s in (EXTENDED_FIELDS if extended else COMPACT_FIELDS)]
        xsize = 12 + 4 * (icount - 1) if icount else 0
        if xsize:
            spans += [('nid %d %s xattrs+%d' % (nid, path, o), off + isize + o, 1) for o in range(0, xsize)]
        inline = off + isize + xsize
        if kind == '-' and layout == 4:
            array = (inline + 7) // 8 * 8
            for k in range((size + CHUNK - 1) // CHUNK):
                spans += [('nid %d %s chunk index %d+%d' % (nid, path, k, o), array + k * 8 + o, s)
                          for o, s in CHUNK_INDEX_FIELDS]
        elif kind in 'dl' and size:
            tail = size % 4096 if layout == 2 else 0
            data = [(i_u * 4096, size - tail)] if size - tail else []
            if tail:
                data.append((inline, tail))
            for start, length in data:
                if kind == 'l':
                    spans += [('nid %d %s target+%d' % (nid, path, o), start + o, 1) for o in range(length)]
                    continue
                for blk in range(0, length, 4096):
                    base = start + blk
                    count = struct.unpack_from('<H', boot, base + 8)[0] // 12
                    for e in range(count):
                        spans += [('nid %d %s dirent %d+%d' % (nid, path, e, o), base + e * 12 + o, s)
                                  for o, s in DIRENT_FIELDS]
                    spans += [('nid %d %s names+%d' % (nid, path, o), base + count * 12 + o, 1)
                              for o in range(0, min(4096, length - blk) - count * 12)]
    return spans


def mutate(boot, spans, nonzero, rnd):
    """One mutation of one field, or of one byte in use (one time in five): (label, new bytes)."""
    if rnd.randrange(5) == 0:
        off = rnd.choice(nonzero)
        label, off, size = 'byte %d' % off, off, 1
    else:
        label, off, size = rnd.choice(spans)
    b = bytearray(boot)
    old = int.from_bytes(b[off:off + size], 'little')
    op = rnd.randrange(7)
    if op == 0:
        new, how = 0, 'zero'
    elif op == 1:
        new, how = (1 << (8 * size)) - 1, 'all ones'
    elif op == 2:
        new, how = (old + 1) % (1 << (8 * size)), '+1'
    elif op == 3:
        new, how = (old - 1) % (1 << (8 * size)), '-1'
    elif op == 4:
        bit = rnd.randrange(8 * size)
        new, how = old ^ (1 << bit), 'bit %d' % bit
    elif op == 5:
        new, how = rnd.getrandbits(8 * size), 'random'
    else:
        # A value from another field of the same size: nids, offsets and indexes that are valid
        # somewhere else.
        same = [s for s in spans if s[2] == size and s[1] != off]
        other = rnd.choice(same) if same else (label, off, size)
        new, how = int.from_bytes(boot[other[1]:other[1] + size], 'little'), 'copy of ' + other[0]
    b[off:off + size] = new.to_bytes(size, 'little')
    if new == old:
        # The same value again: flip the lowest bit instead, so that every mutation changes the image.
        b[off] ^= 1
        how += ' (same value; bit 0 flipped)'
    return '%s: %s' % (label, how), bytes(b)


def listing(mk, boot_path, empty):
    """The regular files as the check walks them, by nid (the kernel's inode number): {nid: (size,
    [(blob, ci)])}, or None if refused. Names may hold any byte but '/' and NUL, so files are
    matched by nid, not by path."""
    r = run([mk.path, 'inspect', '-v', boot_path, '--blob-dir', empty], timeout=60, quiet=True)
    if r.returncode != 0:
        return None
    files, current = {}, None
    # Split on newlines only: names may hold other line-breaking bytes, and a newline in a name
    # only adds a line that is neither an inode nor a chunk.
    for line in r.stdout.decode('utf-8', 'surrogateescape').split('\n'):
        if re.match(r'^[-dlcbps][0-7]{4} \d+:\d+ ', line):
            m = re.match(r'^-\S+ \S+ +(\d+) \S+ nid (\d+) nlink \d+ /', line)
            current = int(m.group(2)) if m else None
            if m:
                files[current] = (int(m.group(1)), [])
            continue
        m = re.match(r'^ +chunk at \d+: blob (\d+) ci (\d+) ', line)
        if m and current is not None:
            files[current][1].append((int(m.group(1)), int(m.group(2))))
    return files


def refusal_problems(r, mnt):
    """What is wrong with a refusal by `rafsd mount` (exit code, error lines, mount left)."""
    problems = []
    if r.returncode is None:
        problems.append('rafsd did not exit in time')
    elif r.returncode < 0 or r.returncode >= 128:
        problems.append('rafsd crashed (exit %s)' % r.returncode)
    elif r.returncode == 0:
        problems.append('rafsd exited 0')
    lines = [ln for ln in text(r.stderr).splitlines()
             if ln.strip() and not ln.startswith(('rafsd info:', 'rafsd debug:'))]
    if len(lines) != 1 or not lines[0].startswith('rafsd: '):
        problems.append('not one "rafsd: " line: %r' % lines[-5:])
    if os.path.ismount(mnt):
        problems.append('left a mount')
        mount.umount(mnt)
    return problems


def served_problems(files, table, result):
    """What the mounted image served that its own digests do not vouch for."""
    problems = []
    for path, res in sorted(result.items()):
        if res[0] != 'ok':
            if res[1] != EIO:
                problems.append('%s: %s errno %d (only EIO is expected)' % (path, res[0], res[1]))
            continue
        nid = res[1]
        if nid not in files:
            problems.append('%s: the kernel shows a file (nid %d) the check never walked' % (path, nid))
            continue
        size, chunks = files[nid]
        length, digests = res[2], res[3]
        if length != size:
            problems.append('%s: read %d bytes, the check saw size %d' % (path, length, size))
            continue
        for k, digest in enumerate(digests):
            want = table.get(chunks[k]) if k < len(chunks) else None
            if want is None or want['digest'] != digest:
                problems.append('%s: chunk %d (blob/ci %s) reads bytes its digest does not vouch for'
                                % (path, k, chunks[k] if k < len(chunks) else None))
                break
    return problems


def prepare(ck, mk, tmp, empty, src, name, prefetch, extra=()):
    """Builds one image and checks that inspect accepts it. Returns (bootstrap bytes, blob dir, {nid: (path, type letter)}) or None."""
    out = os.path.join(tmp, name)
    if not ck.cmd_ok(mk.build(out, [src], chunk_size=CHUNK, digester='sha256', prefetch_list=prefetch,
                              extra=extra), 'mkrafs build ' + ' '.join(extra)):
        return None
    boot_path, blobs = os.path.join(out, 'image.boot'), os.path.join(out, 'blobs')
    with open(boot_path, 'rb') as f:
        original = f.read()
    r = run([mk.path, 'inspect', '-v', boot_path, '--blob-dir', empty], timeout=60, quiet=True)
    if not ck.check(r.returncode == 0, 'mkrafs inspect -v without blobs accepts it', text(r.stderr)):
        return None
    nids = {}
    for line in text(r.stdout).splitlines():
        parts = line.split()
        if len(parts) >= 9 and parts[4] == 'nid':
            nids.setdefault(int(parts[5]), (parts[8], line[0]))
    r = run([mk.path, 'inspect', boot_path, '--blob-dir', blobs], timeout=60)
    ck.check(r.returncode == 0, 'mkrafs inspect with blobs accepts it', text(r.stderr))
    return original, blobs, nids


def fixed_mutations(original, nids):
    """The mutations every run makes: [(label, bytes, expected verdict)]."""
    meta = struct.unpack_from('<I', original, SB + 40)[0]
    one_nid = next(n for n, (p, _) in nids.items() if p == '/a/one')
    off, extended, icount, _, _, _ = inode_facts(original, meta, one_nid)
    fixed = []
    b = bytearray(original)
    struct.pack_into('<H', b, off + 16, 0x20)  # 4 KiB kernel chunks over 64 KiB RAFS chunks
    fixed.append(('/a/one i_u chunk bits: 4 KiB (issue 11)', bytes(b), 'refused'))
    array = (off + (64 if extended else 32) + (12 + 4 * (icount - 1) if icount else 0) + 7) // 8 * 8
    b = bytearray(original)
    b[array + 4:array + 8], b[array + 12:array + 16] = original[array + 12:array + 16], original[array + 4:array + 8]
    fixed.append(('/a/one blkaddr of chunk indexes 0 and 1 swapped, ci indexes kept', bytes(b), 'refused'))
    # Whole indexes swapped: a consistent image whose /a/one holds its two first chunks the other
    # way round, each vouched for by its digest.
    b = bytearray(original)
    b[array:array + 8], b[array + 8:array + 16] = original[array + 8:array + 16], original[array:array + 8]
    fixed.append(('/a/one chunk indexes 0 and 1 swapped', bytes(b), 'served'))
    return fixed


def main():
    args, mk, rafsd, _, ck = start_test('bootstrap_mutation', __doc__)
    rnd = random.Random(SEED)
    with harness.temp_dir('bootstrap-mutation-', keep=args.keep) as tmp:
        src, mnt, empty = (os.path.join(tmp, n) for n in ('src', 'mnt', 'no-blobs'))
        for d in (mnt, empty):
            os.makedirs(d)
        make_tree(src, rnd)
        prefetch = os.path.join(tmp, 'prefetch.list')
        with open(prefetch, 'w') as f:
            f.write('/a\n/small\n')
        config = write_config(os.path.join(tmp, 'config.toml'), prefetch={'enable': True})

        ck.section('two images: with a chunk info table, and without (--no-chunk-table)')
        with_table = prepare(ck, mk, tmp, empty, src, 'table', prefetch)
        without = prepare(ck, mk, tmp, empty, src, 'no-table', prefetch, ['--no-chunk-table'])
        if with_table is None or without is None:
            return ck.finish()
        # The same source gives the same blob: the table's digests are those of the table-less
        # image's blob.digest section, by (blob, ci).
        digests = chunk_table(with_table[0])
        ck.check(not chunk_table(without[0]) and os.listdir(with_table[1]) == os.listdir(without[1]),
                 'the two images share their blob; only the first has a chunk info table')
        for label, (original, blobs, _) in (('with a table', with_table), ('without a table', without)):
            verdict = try_mutation(ck, mk, rafsd, config, tmp, mnt, empty, blobs, original, 'original ' + label,
                                   digests)
            ck.check(verdict == 'served', 'rafsd mounts and serves the original %s (%s)' % (label, verdict))

        ck.section('the table-less image over a blob whose blob.digest section was changed')
        bad_blobs = os.path.join(tmp, 'bad-digests')
        harness.cleanup_dir(bad_blobs)
        os.makedirs(bad_blobs)
        (blob_name,) = os.listdir(without[1])
        with open(os.path.join(without[1], blob_name), 'rb') as f:
            blob = bytearray(f.read())
        # mkrafs's tail: ... blob.digest, its tar header, then the ToC (4 entries of 128 bytes and
        # its tar header): the byte before the digest section's header is its last.
        blob[len(blob) - (4 * 128 + 512) - 512 - 1] ^= 0x01
        with open(os.path.join(bad_blobs, blob_name), 'wb') as f:
            f.write(blob)
        boot = os.path.join(tmp, 'no-table.boot')
        with open(boot, 'wb') as f:
            f.write(without[0])
        cache = os.path.join(tmp, 'cache')
        harness.cleanup_dir(cache)
        with RafsdMount(rafsd, boot, mnt, blob_dir=bad_blobs, cache_dir=cache, config=config,
                        log_path=os.path.join(tmp, 'rafsd-bad-digests.log')) as m:
            started = m.start(timeout=30)
            code = m.stop()
            with open(m.log_path, 'rb') as f:
                said = text(f.read())
        ck.check(not started and code not in (0, None) and 'blob.digest section does not match its ToC' in said
                 and blob_name in said and not os.path.ismount(mnt),
                 'rafsd refuses the mount, naming the blob and its digest section (exit %s)' % code, said[-600:])

        counts = {'refused': 0, 'served': 0, 'failed': 0}
        deadline = time.monotonic() + TIME_LIMIT
        ran = 0
        # Two thirds of the mutations on the image with a table, one third on the other.
        plan = [(with_table, MUTATIONS - MUTATIONS // 3, True), (without, MUTATIONS // 3, False)]
        for (original, blobs, nids), count, has_table in plan:
            spans = field_spans(original, nids)
            nonzero = [i for i in range(SB, len(original)) if original[i]]
            ck.section('%d mutations of the image %s a chunk info table, seed %d: %d inodes, %d fields'
                       % (count, 'with' if has_table else 'without', SEED, len(nids), len(spans)))
            fixed = fixed_mutations(original, nids)
            for i in range(count):
                if time.monotonic() > deadline:
                    ck.warn('time limit of %.0f s reached after %d of %d mutations' % (TIME_LIMIT, ran, MUTATIONS))
                    break
                label, mutated, expected = fixed[i] if i < len(fixed) else mutate(original, spans, nonzero, rnd) + (None,)
                verdict = try_mutation(ck, mk, rafsd, config, tmp, mnt, empty, blobs, mutated, '#%d %s' % (i, label),
                                       digests)
                counts[verdict] += 1
                ran += 1
                if expected:
                    ck.check(verdict == expected, 'fixed mutation %s: %s (%s)' % (label, expected, verdict))
        log('\nmutations run %d: refused %d, mounted and served correctly %d, failed %d'
            % (ran, counts['refused'], counts['served'], counts['failed']))
        ck.check(ran >= min(100, MUTATIONS), '%d mutations ran in the time limit' % ran)
        ck.check(counts['refused'] > 0 and counts['served'] > 0,
                 'both outcomes occur (refused %d, served %d)' % (counts['refused'], counts['served']))
    return ck.finish()


def try_mutation(ck, mk, rafsd, config, tmp, mnt, empty, blobs, image, label, blob_digests):
    """Runs one bootstrap through inspect and rafsd; returns 'refused', 'served' or 'failed'
    (after reporting the failure). `blob_digests`: the blob's own chunk digests, {(blob, ci):
    {'digest': sha256 hex, ...}}, which vouch for an image without a chunk info table."""
    boot = os.path.join(tmp, 'mutated.boot')
    with open(boot, 'wb') as f:
        f.write(image)
    insp = run([mk.path, 'inspect', boot, '--blob-dir', blobs], timeout=60, quiet=True)
    if insp.returncode is None or insp.returncode < 0:
        ck.fail('%s: mkrafs inspect crashed or hung (exit %s)' % (label, insp.returncode))
        return 'failed'
    cache = os.path.join(tmp, 'cache')
    harness.cleanup_dir(cache)
    with RafsdMount(rafsd, boot, mnt, blob_dir=blobs, cache_dir=cache, config=config,
                    log_path=os.path.join(tmp, 'rafsd.log')) as m:
        started = m.start(timeout=30)
        if not started:
            code = m.stop()
            with open(m.log_path, 'rb') as f:
                stderr = f.read()
            r = subprocess.CompletedProcess(m.cmd, code, b'', stderr)
            problems = refusal_problems(r, mnt)
            if insp.returncode == 0:
                problems.append('rafsd refused what mkrafs inspect accepts: %s' % text(stderr).strip()[-300:])
            if problems:
                ck.fail('%s: %s' % (label, '; '.join(problems)))
                return 'failed'
            log('  refused: %s: %s' % (label, text(stderr).strip().splitlines()[-1][:200]))
            return 'refused'
        files = listing(mk, boot, empty)
        problems = []
        if files is None:
            problems.append('rafsd mounted what the metadata check refuses')
        else:
            try:
                r = subprocess.run([sys.executable, '-c', READER, mnt, str(CHUNK)], capture_output=True,
                                   timeout=READ_TIMEOUT)
                result = json.loads(r.stdout) if r.returncode == 0 else None
                if result is None:
                    problems.append('reader failed: %s' % text(r.stderr)[-300:])
                else:
                    # A mounted image's table is valid: it vouches with its own digests. Without
                    # one (built so, or its size mutated to 0) rafsd verifies with the blob's.
                    problems += served_problems(files, chunk_table(image) or blob_digests, result)
            except subprocess.TimeoutExpired:
                problems.append('reads hung for %d s' % READ_TIMEOUT)
        code = m.stop()
        if code != 0:
            problems.append('rafsd exit %s when stopped' % code)
    if os.path.ismount(mnt):
        mount.umount(mnt)
    if problems:
        ck.fail('%s: %s' % (label, '; '.join(problems[:3])))
        return 'failed'
    log('  served: %s%s' % (label, '' if insp.returncode == 0 else ' (inspect with blobs refuses: %s)'
                            % text(insp.stderr).strip()[-150:]))
    return 'served'


if __name__ == '__main__':
    sys.exit(main())
