#!/usr/bin/env python3
"""A corrupted blob in the backend (bytes flipped inside one chunk's compressed data), served by
rafsd mount (fanotify engine, localfs backend, prefetch off):

1. reading the file with the bad chunk fails with EIO, every time, and rafsd logs an error
   naming the blob and the chunk's offset; it fetches the chunk again a bounded number of times
   per read (fetch.retries) and never marks it present;
2. the other files, and the file's good chunks, keep reading correctly;
3. the cache file holds no bad data: the bad chunk's range is still a hole;
4. after the backend blob is repaired, the same mount reads the file correctly, and the chunk's
   range in the cache file is filled;
5. rafsd exits 0 and reports the error in its counters.
"""

import errno
import os
import re
import sys

from rafstest import harness
from rafstest.boot import blob_ids
from rafstest.harness import log
from rafstest.rafsd import (RafsdMount, chunk_table, data_in_range, drop_file_cache, inspect_chunks,
                            make_small_tree, start_test, write_config)

MiB = 1 << 20
FILES = [('a/small', 300000), ('b/big', 3 * MiB + 5000), ('c/mid', 700000), ('d/tiny', 100)]
BAD_FILE = '/b/big'
BAD_CHUNK = 1  # the file's second chunk: [1 MiB, 2 MiB), stored uncompressed (random bytes)
TEXT_FILE = '/e/text'  # one compressed chunk, corrupted too: decompression or digest fails


def read_whole(path):
    try:
        with open(path, 'rb') as f:
            return f.read(), None
    except OSError as e:
        return None, e


def pread_at(path, length, offset):
    try:
        with open(path, 'rb') as f:
            return os.pread(f.fileno(), length, offset), None
    except OSError as e:
        return None, e


def main():
    args, mk, rafsd, _, ck = start_test('rafsd_corrupt', __doc__)
    with harness.temp_dir('rafsd-corrupt-', keep=args.keep) as tmp:
        src, out, mnt = (os.path.join(tmp, n) for n in ('src', 'out', 'mnt'))
        cache = os.path.join(tmp, 'cache')
        os.makedirs(mnt)
        content = make_small_tree(src, FILES)
        words = [b'alpha', b'beta', b'gamma', b'delta', b'epsilon', b'zeta']
        text_data = b' '.join(words[(i * 7 + i // 3) % len(words)] for i in range(90000))
        os.makedirs(os.path.join(src, 'e'))
        with open(os.path.join(src, 'e', 'text'), 'wb') as f:
            f.write(text_data)
        content['e/text'] = text_data
        if not ck.cmd_ok(mk.build(out, [src]), 'mkrafs build'):
            return ck.finish()
        boot = os.path.join(out, 'image.boot')
        blobs = os.path.join(out, 'blobs')

        ck.section('corrupt one chunk of the blob')
        with open(boot, 'rb') as f:
            table = chunk_table(f.read())
        files = inspect_chunks(mk.path, boot, blobs)
        _, bad_file_chunks = files[BAD_FILE]
        at, blob_index, ci, uoff, usize = bad_file_chunks[BAD_CHUNK]
        entry = table[(blob_index, ci)]

        blob_id = blob_ids(boot)[blob_index]
        blob_path = os.path.join(blobs, blob_id)
        coff, csize = entry['compressed_offset'], entry['compressed_size']
        flip_at, flip_len = coff + csize // 2, 16
        log('bad chunk: %s at %d, blob %s ci %d, compressed %d+%d, uncompressed %d+%d; flipping %d bytes at %d' %
            (BAD_FILE, at, blob_id[:12], ci, coff, csize, uoff, usize, flip_len, flip_at))
        with open(blob_path, 'r+b') as f:
            f.seek(flip_at)
            original = f.read(flip_len)
            f.seek(flip_at)
            f.write(bytes(b ^ 0xA5 for b in original))
        (t_at, t_blob, t_ci, t_uoff, t_usize), = files[TEXT_FILE][1]
        t_entry = table[(t_blob, t_ci)]
        t_coff, t_csize = t_entry['compressed_offset'], t_entry['compressed_size']
        ck.check(t_csize < t_usize // 2, '%s is one compressed chunk (%d -> %d bytes)' % (TEXT_FILE, t_usize, t_csize))
        t_flip_at = t_coff + t_csize // 2
        with open(blob_path, 'r+b') as f:
            f.seek(t_flip_at)
            t_original = f.read(flip_len)
            f.seek(t_flip_at)
            f.write(bytes(b ^ 0x5A for b in t_original))
        config = write_config(os.path.join(tmp, 'config.toml'), prefetch={'enable': False},
                              fetch={'amplify': 0, 'retries': 1})
        cache_file = os.path.join(cache, blob_id + '.blob.data')

        with RafsdMount(rafsd, boot, mnt, blob_dir=blobs, cache_dir=cache, config=config) as m:
            if not ck.check(m.start(), 'rafsd mounted the image', m.log_text()[-2000:]):
                return ck.finish()
            ck.section('reads')
            bad = os.path.join(mnt, BAD_FILE.lstrip('/'))
            for attempt in (1, 2):
                data, err = read_whole(bad)
                ck.check(err is not None and err.errno == errno.EIO,
                         'read %d of %s fails with EIO' % (attempt, BAD_FILE),
                         'got %s' % (err if err else '%d bytes' % len(data)))
                data, err = pread_at(bad, 4096, at + 4096)
                ck.check(err is not None and err.errno == errno.EIO,
                         'pread inside the bad chunk (attempt %d) fails with EIO' % attempt,
                         'got %s' % (err if err else '%d bytes' % len(data)))
            # A good chunk of the same file, two chunks away from the bad one.
            good_at = bad_file_chunks[BAD_CHUNK + 2][0]
            data, err = pread_at(bad, 65536, good_at + 4096)
            want = content[BAD_FILE.lstrip('/')][good_at + 4096:good_at + 4096 + 65536]
            ck.check(err is None and data == want, 'a good chunk of %s reads correctly' % BAD_FILE,
                     str(err) if err else 'content differs')
            data, err = read_whole(os.path.join(mnt, TEXT_FILE.lstrip('/')))
            ck.check(err is not None and err.errno == errno.EIO, 'read of %s (compressed chunk) fails with EIO' %
                     TEXT_FILE, 'got %s' % (err if err else '%d bytes' % (len(data))))
            for rel, _ in FILES:
                if '/' + rel == BAD_FILE:
                    continue
                data, err = read_whole(os.path.join(mnt, rel))
                ck.check(err is None and data == content[rel], '%s reads correctly' % rel,
                         str(err) if err else 'content differs')

            text = m.log_text()
            named = [line for line in text.splitlines()
                     if blob_id in line and 'compressed %d+%d' % (coff, csize) in line and 'error' in line]
            ck.check(named, 'rafsd logged an error naming the blob and the chunk offset',
                     text[-2000:])
            if named:
                log('    ' + named[0])
            t_named = [line for line in text.splitlines()
                       if blob_id in line and 'compressed %d+%d' % (t_coff, t_csize) in line and 'error' in line]
            ck.check(t_named, 'and one naming the compressed chunk', text[-2000:])
            if t_named:
                log('    ' + t_named[0])
            fetches = [line for line in text.splitlines() if 'fetching it again' in line and blob_id in line and
                       ' chunk %d (' % ci in line]
            # retries = 1: one extra fetch per failed kernel read; the kernel reads again after a
            # failed readahead, so about 2 per read of the 4 reads above (8 seen); 16 leaves room.
            ck.check(0 < len(fetches) <= 16, 'the bad chunk was fetched again, a bounded number of times (%d)' %
                     len(fetches))

            ck.section('the cache holds no bad data')
            ck.check(os.path.exists(cache_file), 'cache file %s exists' % os.path.basename(cache_file))
            ck.check(not data_in_range(cache_file, uoff, uoff + usize),
                     'the bad chunk [%d, +%d) is a hole in the cache file' % (uoff, usize))
            ck.check(not data_in_range(cache_file, t_uoff, t_uoff + t_usize),
                     'the bad compressed chunk [%d, +%d) is a hole in the cache file' % (t_uoff, t_usize))
            other = bad_file_chunks[0]
            ck.check(data_in_range(cache_file, other[3], other[3] + other[4]),
                     'a good chunk read before is in the cache file')

            ck.section('repair the backend blob')
            with open(blob_path, 'r+b') as f:
                f.seek(flip_at)
                f.write(original)
                f.seek(t_flip_at)
                f.write(t_original)
            drop_file_cache(bad)
            drop_file_cache(os.path.join(mnt, TEXT_FILE.lstrip('/')))
            data, err = read_whole(os.path.join(mnt, TEXT_FILE.lstrip('/')))
            ck.check(err is None and data == text_data, '%s reads correctly after the repair' % TEXT_FILE,
                     str(err) if err else 'content differs')
            data, err = read_whole(bad)
            ck.check(err is None and data == content[BAD_FILE.lstrip('/')],
                     '%s reads correctly after the repair' % BAD_FILE, str(err) if err else 'content differs')
            ck.check(data_in_range(cache_file, uoff, uoff + usize), 'the repaired chunk is in the cache file')

            code = m.stop(timeout=60)
            ck.check(code == 0, 'rafsd exits 0', 'exit %s' % code)
            ck.check(not os.path.ismount(mnt), 'mount is gone')
            final = m.log_text()
            summary = [line for line in final.splitlines() if line.startswith('rafsd info: blob ' + blob_id)]
            errors = re.search(r', (\d+) errors$', summary[-1]) if summary else None
            # Each chunk that stays bad after its retries is one error, logged with "readers get EIO"
            # (a localfs backend does not fail, the cache file takes every write).
            bad_chunks = len([line for line in final.splitlines()
                              if blob_id in line and line.endswith('; readers get EIO')])
            ck.check(errors is not None and bad_chunks > 0 and int(errors.group(1)) == bad_chunks,
                     'the exit counters show the errors (%s errors, %d chunk failures logged)' %
                     (errors.group(1) if errors else None, bad_chunks),
                     summary[-1] if summary else final[-1000:])
    return ck.finish()


if __name__ == '__main__':
    sys.exit(main())
