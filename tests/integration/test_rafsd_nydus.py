#!/usr/bin/env python3
"""rafsd mount (fanotify engine, localfs backend) serves the images Nydus built (the fixtures):

1. rafs-v6-2.2.boot with its blob be7d77... in a blob dir;
2. the blob 2fa78... whose bootstrap is inline (named by the blob file itself, blob dir = its dir);
   the copy of it extracted into the cache dir for the file-backed mount is cut short between the
   rounds (a damaged copy), and must be written again whole.

For each, cold (prefetch off) and then once more from the complete cache: every regular file's
content, cut at the chunk boundaries `mkrafs inspect -v` lists, must have the blake3 (or sha256)
digest that the bootstrap's chunk info table records for that chunk. The table is parsed here
(nydus rafs/src/metadata/layout/v6.rs); for the inline blob the bootstrap is taken out of the blob's tail sections
(3.4) and decompressed with the zstd tool, independently of rafsd and mkrafs.
"""

import hashlib
import os
import sys

from rafstest import harness
from rafstest.harness import log
from rafstest.rafsd import (RafsdMount, blake3_hex, bootstrap_flags, chunk_table, fetched_bytes,
                            inline_bootstrap, inspect_chunks, start_test, write_config)

FIXTURES = os.environ.get('RAFSTEST_FIXTURES') or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), '..', '..', '..', 'shared', 'fixtures', 'nydus')
BOOT_22 = 'rafs-v6-2.2.boot'
BLOB_22 = 'be7d77eeb719f70884758d1aa800ed0fb09d701aaec469964e9d54325f0d5fef'
INLINE = '2fa78cad554b75ac91a4a125ed148d0ddeb25efa4aaa8bd80e5dc292690a4dca'

HASH_BLAKE3 = 0x4
HASH_SHA256 = 0x8


def digest_fn(flags):
    if flags & HASH_BLAKE3:
        return blake3_hex
    if flags & HASH_SHA256:
        return lambda data: hashlib.sha256(data).hexdigest()
    raise ValueError('bootstrap names no digester (flags 0x%x)' % flags)


def check_content(ck, label, mnt, files, table, digest):
    """Every chunk of every regular file read through the mount has its recorded digest."""
    diffs = []
    chunks = 0
    for path, (size, file_chunks) in sorted(files.items()):
        try:
            with open(os.path.join(mnt, path.lstrip('/')), 'rb') as f:
                data = f.read()
        except OSError as e:
            diffs.append('%s: %s' % (path, e))
            continue
        if len(data) != size:
            diffs.append('%s: read %d bytes, inode says %d' % (path, len(data), size))
        covered = 0
        for at, blob, ci, _uoff, usize in file_chunks:
            entry = table.get((blob, ci))
            if entry is None:
                diffs.append('%s: chunk at %d (blob %d ci %d) not in the chunk info table' % (path, at, blob, ci))
                continue
            if entry['uncompressed_size'] != usize:
                diffs.append('%s: chunk at %d: size %d in the table, %d in the inode' %
                             (path, at, entry['uncompressed_size'], usize))
            got = digest(data[at:at + usize])
            if got != entry['digest']:
                diffs.append('%s: chunk at %d (blob %d ci %d): digest %s, bootstrap records %s' %
                             (path, at, blob, ci, got, entry['digest']))
            covered += usize
            chunks += 1
        if covered != size:
            diffs.append('%s: chunks cover %d of %d bytes' % (path, covered, size))
    ck.diffs('%s: %d files, %d chunks against the bootstrap digests' % (label, len(files), chunks), diffs)
    return chunks


def tear_extracted_bootstrap(ck, label, cache, boot_bytes):
    """An inline bootstrap is extracted into the cache dir for the file-backed mount: cut that
    copy short, as damage could; the next mount must not use it."""
    copies = [n for n in os.listdir(cache) if n.endswith('.boot')]
    if not copies:
        return
    path = os.path.join(cache, copies[0])
    with open(path, 'rb') as f:
        ck.check(f.read() == boot_bytes, '%s: the extracted bootstrap is the inline one' % label)
    os.truncate(path, len(boot_bytes) // 2)
    ck.ok('%s: extracted bootstrap cut to %d bytes before the warm round' % (label, len(boot_bytes) // 2))


def serve_case(ck, rafsd, mkrafs, tmp, label, image, blob_dir, boot_bytes):
    files = inspect_chunks(mkrafs, image, blob_dir)
    table = chunk_table(boot_bytes)
    if not ck.check(files and table, '%s: %d files listed, %d chunk info entries' % (label, len(files), len(table))):
        return
    digest = digest_fn(bootstrap_flags(boot_bytes))
    mnt = os.path.join(tmp, label + '-mnt')
    cache = os.path.join(tmp, label + '-cache')
    os.makedirs(mnt)
    state = os.path.join(tmp, label + '-state')
    config = write_config(os.path.join(tmp, label + '.toml'), prefetch={'enable': False}, daemon={'state_dir': state})
    for round_ in ('cold cache', 'warm cache'):
        with RafsdMount(rafsd, image, mnt, blob_dir=blob_dir, cache_dir=cache, config=config) as m:
            if not ck.check(m.start(), '%s, %s: rafsd mounted it' % (label, round_), m.log_text()[-2000:]):
                return
            check_content(ck, '%s, %s' % (label, round_), mnt, files, table, digest)
            code = m.stop()
            ck.check(code == 0, '%s, %s: rafsd exits 0' % (label, round_), 'exit %s' % code)
            ck.check(not os.path.ismount(mnt), '%s, %s: mount is gone' % (label, round_))
            fetched = fetched_bytes(m.log_text())
            if round_ == 'cold cache':
                ck.check(fetched > 0, '%s: cold reads fetched %d bytes' % (label, fetched), m.log_text()[-1000:])
                tear_extracted_bootstrap(ck, label, cache, boot_bytes)
                traces = os.listdir(os.path.join(state, 'traces')) if os.path.isdir(os.path.join(state, 'traces')) else []
                ck.check(len(traces) == 1 and 'trace not saved' not in m.log_text(),
                         '%s: the start trace is saved at the stop' % label, m.log_text()[-1000:])
            else:
                ck.check(fetched == 0, '%s: warm reads fetched nothing' % label, m.log_text()[-1000:])
    copies = [n for n in os.listdir(cache) if n.endswith('.boot')]
    if copies:
        with open(os.path.join(cache, copies[0]), 'rb') as f:
            ck.check(f.read() == boot_bytes, '%s: the torn copy was written again whole' % label)


def main():
    args, mk, rafsd, _, ck = start_test('rafsd_nydus', __doc__, tools=('b3sum', 'zstd'))
    mkrafs = mk.path
    fixtures = os.path.realpath(FIXTURES)
    if not os.path.isfile(os.path.join(fixtures, BOOT_22)):
        log('FAIL: Nydus fixtures not found in %s (set RAFSTEST_FIXTURES)' % fixtures)
        return harness.FAIL
    with harness.temp_dir('rafsd-nydus-', keep=args.keep) as tmp:
        ck.section('rafs-v6-2.2.boot with blob %s' % BLOB_22[:12])
        boot = os.path.join(fixtures, BOOT_22)
        with open(boot, 'rb') as f:
            serve_case(ck, rafsd, mkrafs, tmp, 'nydus-2.2', boot, fixtures, f.read())

        ck.section('blob %s with an inline bootstrap' % INLINE[:12])
        blob = os.path.join(fixtures, INLINE)
        serve_case(ck, rafsd, mkrafs, tmp, 'nydus-inline', blob, fixtures, inline_bootstrap(blob))
    return ck.finish()


if __name__ == '__main__':
    sys.exit(main())
