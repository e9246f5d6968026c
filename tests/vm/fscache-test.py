#!/usr/bin/python3
"""The fscache engine against a real on-demand cachefiles kernel, in the scripts/vm-test VM.

Run:  tests/vm/fscache-test.py --rafsd R --rafsctl C --mkrafs M --work DIR [--fixtures DIR] [--timeout S]
                               [--kernel-series 6.1] [CASE...]
On the host it generates source trees, builds images with mkrafs into DIR (which the guest must
see: not under /run, /dev, /proc or /sys; the guest sees the host's /tmp and /mnt), writes
manifests of what each image must contain, then runs itself inside the VM (scripts/vm-test) for
the cases. The Nydus fixtures are in --fixtures, else $RAFSTEST_FIXTURES, else ../shared/fixtures/nydus
next to the repository. Prints "PASS <case>" or "FAIL <case>: why"
per case and a summary line; exits 1 if any case failed (77: skipped, no qemu).
Debian's python3, standard library only. RAFSD_TEST_KERNEL picks the guest kernel (vm-test), or
--kernel-series the one scripts/build-test-kernel builds of that series.
"""

import argparse
import concurrent.futures
import errno
import hashlib
import io
import json
import os
import random
import re
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tarfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
NYDUS = os.environ.get('RAFSTEST_FIXTURES') or os.path.join(os.path.dirname(REPO), 'shared', 'fixtures', 'nydus')
NYDUS_BOOT = 'rafs-v6-2.2.boot'
NYDUS_INLINE = '2fa78cad554b75ac91a4a125ed148d0ddeb25efa4aaa8bd80e5dc292690a4dca'
KiB, MiB = 1 << 10, 1 << 20
# A marker in the file whose blob bytes the corruption case damages.
VICTIM_MARK = b'RAFSD-FSCACHE-TEST-VICTIM-BLOCK:'


# --- host: trees, images, manifests ----------------------------------------------------------

def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'wb') as f:
        f.write(data)


def make_tree(root, seed):
    """Regular files of awkward sizes, dirs, symlinks, hard links, a fifo: what the cases read."""
    rnd = random.Random(seed)
    sizes = [0, 1, 4095, 4096, 4097, 65537, MiB - 1, MiB, MiB + 1, 3 * MiB + 123, 2 * MiB + 4096]
    for size in sizes:
        write(f'{root}/files/random-{size}', rnd.randbytes(size))
    write(f'{root}/files/zeros-2M', bytes(2 * MiB))
    text = b''.join(b'line %d of a compressible file\n' % i for i in range(150000))
    write(f'{root}/files/text', text)
    for i in range(300):
        write(f'{root}/many/f{i:03d}', rnd.randbytes(rnd.randrange(0, 9000)))
    write(f'{root}/deep/' + '/'.join(f'd{i}' for i in range(12)) + '/leaf', rnd.randbytes(5000))
    os.symlink('../files/random-4096', f'{root}/many/link-rel')
    os.symlink('/does/not/exist', f'{root}/many/link-dangling')
    os.link(f'{root}/files/random-65537', f'{root}/many/hardlink')
    os.mkfifo(f'{root}/many/fifo')
    os.makedirs(f'{root}/empty-dir')


def manifest_of_dir(root):
    entries = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            e = {'mode': stat.S_IFMT(st.st_mode)}
            if stat.S_ISREG(st.st_mode):
                with open(path, 'rb') as f:
                    e['sha256'] = hashlib.sha256(f.read()).hexdigest()
                e['size'] = st.st_size
            elif stat.S_ISLNK(st.st_mode):
                e['target'] = os.readlink(path)
            entries[rel] = e
    return entries


def manifest_of_tar(data):
    entries = {}
    links = []
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for m in tar.getmembers():
            rel = os.path.normpath(m.name.lstrip('/'))
            if rel in ('.', ''):
                continue
            if m.isreg():
                body = tar.extractfile(m).read()
                entries[rel] = {'mode': stat.S_IFREG, 'size': len(body), 'sha256': hashlib.sha256(body).hexdigest()}
            elif m.islnk():
                links.append((rel, os.path.normpath(m.linkname.lstrip('/'))))
            elif m.issym():
                entries[rel] = {'mode': stat.S_IFLNK, 'target': m.linkname}
            elif m.isdir():
                entries[rel] = {'mode': stat.S_IFDIR}
            elif m.ischr() or m.isblk() or m.isfifo():
                entries[rel] = {'mode': {tarfile.CHRTYPE: stat.S_IFCHR, tarfile.BLKTYPE: stat.S_IFBLK,
                                         tarfile.FIFOTYPE: stat.S_IFIFO}[m.type]}
    for rel, target in links:
        entries[rel] = dict(entries[target])
    return entries


def run(cmd, **kw):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw)
    if r.returncode != 0:
        sys.exit(f'fscache-test: {" ".join(cmd)} failed ({r.returncode}):\n{r.stdout.decode(errors="replace")}')
    return r.stdout


def blob_ids(mkrafs, boot):
    out = run([mkrafs, 'inspect', boot]).decode()
    return re.findall(r'^blob \d+: ([0-9a-f]{64}):', out, re.M)


def prepare(args):
    work = args.work
    if os.path.exists(work):
        shutil.rmtree(work)
    os.makedirs(work)
    mk = args.mkrafs
    meta = {}
    make_tree(f'{work}/src1', 1)
    os.makedirs(f'{work}/src2/layer2')
    rnd = random.Random(2)
    for i in range(5):
        write(f'{work}/src2/layer2/g{i}', rnd.randbytes(700 * KiB + i))
    run([mk, 'build', '--output', f'{work}/img1', f'{work}/src1'])
    # Same lower layer: its blob is the same blob, shared with img1 in a domain.
    run([mk, 'build', '--output', f'{work}/img12', f'{work}/src1', f'{work}/src2'])
    meta['img1'] = {'manifest': manifest_of_dir(f'{work}/src1'), 'blobs': blob_ids(mk, f'{work}/img1/image.boot')}
    m12 = manifest_of_dir(f'{work}/src1')
    m12.update(manifest_of_dir(f'{work}/src2'))
    meta['img12'] = {'manifest': m12, 'blobs': blob_ids(mk, f'{work}/img12/image.boot')}

    # Corruption: uncompressed chunks, so the victim's bytes can be found and damaged in the blob.
    rnd = random.Random(3)
    victim = VICTIM_MARK + rnd.randbytes(300 * KiB)
    write(f'{work}/src3/victim', victim)
    write(f'{work}/src3/ok-before', rnd.randbytes(1500 * KiB))
    write(f'{work}/src3/ok-after', rnd.randbytes(200 * KiB))
    write(f'{work}/src3/small', b'small file\n')
    run([mk, 'build', '--compressor', 'none', '--output', f'{work}/img3', f'{work}/src3'])
    (blob3,) = blob_ids(mk, f'{work}/img3/image.boot')
    os.makedirs(f'{work}/img3/bad-blobs')
    data = bytearray(open(f'{work}/img3/blobs/{blob3}', 'rb').read())
    at = data.find(victim[:4096])
    if at < 0:
        sys.exit('fscache-test: the victim file is not stored verbatim in its blob')
    bad_block = bytearray(victim[:4096])
    bad_block[100] ^= 0xff
    data[at:at + 4096] = bad_block
    write(f'{work}/img3/bad-blobs/{blob3}', bytes(data))
    meta['img3'] = {'manifest': manifest_of_dir(f'{work}/src3'), 'blobs': [blob3],
                    'bad_block_sha256': hashlib.sha256(bytes(bad_block)).hexdigest()}

    # img1's bootstrap with its first chunk's digest changed: the same blob, described otherwise
    # (kernel-abi/rafs.h: the chunk table's offset at 24 in the extended superblock at 1152; each
    # entry 80 bytes, its digest first).
    boot = bytearray(open(f'{work}/img1/image.boot', 'rb').read())
    (table,) = struct.unpack_from('<Q', boot, 1152 + 24)
    boot[table] ^= 0xff
    os.makedirs(f'{work}/img1-redigest')
    write(f'{work}/img1-redigest/image.boot', bytes(boot))
    os.symlink('../img1/blobs', f'{work}/img1-redigest/blobs')

    # One tree under two build times: bootstraps of one size that differ (each entry's mtime),
    # with the same blob.
    for name, mtime in (('mtime1', 1), ('mtime2', 2)):
        run([mk, 'build', '--mtime', str(mtime), '--output', f'{work}/{name}', f'{work}/src3'])
    if os.path.getsize(f'{work}/mtime1/image.boot') != os.path.getsize(f'{work}/mtime2/image.boot'):
        sys.exit('fscache-test: the bootstraps built with --mtime 1 and 2 differ in size')

    # Nydus images: the reference is the tree mkrafs unpacks (every chunk verified against the
    # digests nydus-image wrote).
    nydus = args.fixtures
    boot = f'{nydus}/{NYDUS_BOOT}'
    meta['nydus'] = {'manifest': manifest_of_tar(run([mk, 'unpack', boot, '--blob-dir', nydus, '--tar', '-'])),
                     'blobs': blob_ids(mk, boot)}
    inline_dir = f'{work}/nydus-inline'
    os.makedirs(inline_dir)
    inline = f'{nydus}/{NYDUS_INLINE}'
    for blob in blob_ids(mk, inline):
        os.symlink(inline, f'{inline_dir}/{blob}')
    meta['nydus-inline'] = {'manifest': manifest_of_tar(run([mk, 'unpack', inline, '--blob-dir', inline_dir,
                                                             '--tar', '-'])),
                            'blobs': blob_ids(mk, inline)}
    with open(f'{work}/meta.json', 'w') as f:
        json.dump(meta, f)


# --- guest: the cases ------------------------------------------------------------------------

class Failure(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Failure(msg)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        while True:
            b = f.read(MiB)
            if not b:
                return h.hexdigest()
            h.update(b)


def compare_tree(mnt, manifest, threads=4, skip=()):
    """Problems found comparing the mount with the manifest; regular files read by `threads`."""
    problems = []
    seen = set()
    for dirpath, dirnames, filenames in os.walk(mnt):
        for name in dirnames + filenames:
            seen.add(os.path.relpath(os.path.join(dirpath, name), mnt))
    for rel in sorted(set(manifest) ^ seen):
        problems.append(f'{rel}: {"missing" if rel in manifest else "unexpected"}')
    files = []
    for rel, e in sorted(manifest.items()):
        if rel not in seen or rel in skip:
            continue
        path = os.path.join(mnt, rel)
        st = os.lstat(path)
        if stat.S_IFMT(st.st_mode) != e['mode']:
            problems.append(f'{rel}: type {stat.S_IFMT(st.st_mode):o}, expected {e["mode"]:o}')
        elif 'target' in e and os.readlink(path) != e['target']:
            problems.append(f'{rel}: symlink to {os.readlink(path)!r}, expected {e["target"]!r}')
        elif 'sha256' in e:
            if st.st_size != e['size']:
                problems.append(f'{rel}: size {st.st_size}, expected {e["size"]}')
            else:
                files.append(rel)

    def content(rel):
        try:
            got = sha256_file(os.path.join(mnt, rel))
        except OSError as err:
            return f'{rel}: {err.strerror}'
        return None if got == manifest[rel]['sha256'] else f'{rel}: content differs'

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        problems += [p for p in pool.map(content, files) if p]
    return problems


def is_mount(path):
    with open('/proc/self/mountinfo') as f:
        return any(line.split()[4] == path for line in f)


class Rafsd:
    """rafsd (mount or serve) in its own session; its stderr goes to a log file."""
    count = 0

    def __init__(self, g, args, wait_mount=None, argv0=None, pass_fds=()):
        Rafsd.count += 1
        self.log_path = f'/tmp/rafsd-{Rafsd.count}.log'
        self.log = open(self.log_path, 'wb')
        self.proc = subprocess.Popen((argv0 or [g.rafsd]) + args, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True, pass_fds=pass_fds)
        if wait_mount:
            self.wait_for(lambda: is_mount(wait_mount), f'{wait_mount} to be mounted')

    def text(self):
        with open(self.log_path, 'rb') as f:
            return f.read().decode(errors='replace')

    def wait_for(self, cond, what, timeout=120):
        deadline = time.monotonic() + timeout
        while not cond():
            if self.proc.poll() is not None:
                raise Failure(f'rafsd exited ({self.proc.returncode}) while waiting for {what}:\n{self.text()}')
            if time.monotonic() > deadline:
                raise Failure(f'timeout waiting for {what}:\n{self.text()}')
            time.sleep(0.1)

    def stop(self, sig=signal.SIGTERM, timeout=120):
        """Returns rafsd's exit status after `sig`."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise Failure(f'rafsd did not exit within {timeout} s of signal {sig}:\n{self.text()}')

    def kill(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def counters(self):
        m = re.findall(r'fscache: (\d+) OPEN \((\d+) refused\), (\d+) READ \((\d+) for blobs, (\d+) failed, '
                       r'(\d+) stale chunks\), (\d+) CLOSE', self.text())
        check(m, f'no fscache counters in the log:\n{self.text()}')
        keys = ('opens', 'refused', 'reads', 'blob_reads', 'read_errors', 'stale', 'closes')
        return dict(zip(keys, map(int, m[-1])))


class Guest:
    def __init__(self, args):
        self.rafsd, self.rafsctl = args.rafsd, args.rafsctl
        self.work = args.work
        self.fixtures = args.fixtures
        self.cache_root = os.environ.get('RAFSD_VM_CACHE_DIR', '/mnt/cache')
        with open(f'{self.work}/meta.json') as f:
            self.meta = json.load(f)
        self.daemons = []

    def config(self, name, cache, extra=''):
        path = f'/tmp/{name}.toml'
        with open(path, 'w') as f:
            f.write(f'[daemon]\nengine = "fscache"\ncache_dir = "{cache}"\nsocket = "/tmp/{name}.sock"\n'
                    f'state_dir = "/tmp/{name}-state"\n[prefetch]\nenable = false\n{extra}')
        return path

    def mnt(self, name):
        path = f'/tmp/mnt-{name}'
        os.makedirs(path, exist_ok=True)
        return path

    def image(self, name):
        return f'{self.work}/{name}/image.boot', f'{self.work}/{name}/blobs'

    def mount(self, name, cache, mnt, boot=None, blobs=None, extra=()):
        """`rafsd mount --engine fscache` of image `name`; returns the running Rafsd."""
        b, d = self.image(name)
        cfg = self.config(os.path.basename(mnt), cache)
        d = Rafsd(self, ['mount', '--config', cfg, '--engine', 'fscache', '--blob-dir', blobs or d,
                         *extra, boot or b, mnt], wait_mount=mnt)
        self.daemons.append(d)
        return d

    def serve(self, name, cache, extra=''):
        """`rafsd serve` with config `name` (plus the TOML `extra`); returns it once its socket
        exists, and the rafsctl argv that talks to it."""
        d = Rafsd(self, ['serve', '--config', self.config(name, cache, extra)])
        self.daemons.append(d)
        d.wait_for(lambda: os.path.exists(f'/tmp/{name}.sock'), 'the control socket')
        return d, [self.rafsctl, '--socket', f'/tmp/{name}.sock']

    def cleanup(self):
        for d in self.daemons:
            if d.proc.poll() is None:
                d.stop()
        self.daemons = []
        for line in open('/proc/self/mountinfo').read().splitlines():
            mp = line.split()[4]
            if mp.startswith('/tmp/mnt-'):
                subprocess.run(['umount', '-l', mp])

    def expect_clean_stop(self, d, mnt):
        rc = d.stop()
        check(rc == 0, f'rafsd exit status {rc} after SIGTERM:\n{d.text()}')
        check(not is_mount(mnt), f'{mnt} still mounted after rafsd exited')

    # -- cases --

    def case_tree(self):
        """Every file of a generated image reads back equal, 4 concurrent readers; SIGTERM unmounts."""
        mnt, cache = self.mnt('tree'), f'{self.cache_root}/tree'
        d = self.mount('img1', cache, mnt)
        problems = compare_tree(mnt, self.meta['img1']['manifest'])
        check(not problems, 'mismatches: ' + '; '.join(problems[:10]))
        self.expect_clean_stop(d, mnt)
        c = d.counters()
        check(c['blob_reads'] > 0 and c['read_errors'] == 0 and c['refused'] == 0, f'counters {c}')
        return f'{len(self.meta["img1"]["manifest"])} entries; {c}'

    def case_remount_cached(self):
        """Remount with the cache of case tree: all data comes from the kernel's cache, zero READs."""
        mnt, cache = self.mnt('tree'), f'{self.cache_root}/tree'
        check(os.path.isdir(cache), 'needs case tree first')
        d = self.mount('img1', cache, mnt)
        problems = compare_tree(mnt, self.meta['img1']['manifest'])
        check(not problems, 'mismatches: ' + '; '.join(problems[:10]))
        self.expect_clean_stop(d, mnt)
        c = d.counters()
        check(c['reads'] == 0, f'{c["reads"]} READ requests for cached data: {c}')
        check(c['opens'] == 2, f'expected 2 OPENs (bootstrap, blob): {c}')
        return str(c)

    def case_stale_state(self):
        """The kernel's cache files gone, rafsd's chunk maps kept (a crash before cachefiles linked its
        tmpfiles in): READs for chunks the maps call present are noticed and fetched again."""
        mnt, cache = self.mnt('tree'), f'{self.cache_root}/tree'
        check(os.path.isdir(f'{cache}/fscache/cache'), 'needs case tree first')
        shutil.rmtree(f'{cache}/fscache/cache')
        d = self.mount('img1', cache, mnt)
        problems = compare_tree(mnt, self.meta['img1']['manifest'])
        check(not problems, 'mismatches: ' + '; '.join(problems[:10]))
        self.expect_clean_stop(d, mnt)
        c = d.counters()
        check(c['stale'] > 0 and c['read_errors'] == 0, f'counters {c}')
        return str(c)

    def case_nydus(self):
        """The Nydus fixtures (separate bootstrap; bootstrap inline in the blob) read back equal."""
        out = []
        for name, boot, blobs in (('nydus', f'{self.fixtures}/{NYDUS_BOOT}', self.fixtures),
                                  ('nydus-inline', f'{self.fixtures}/{NYDUS_INLINE}', f'{self.work}/nydus-inline')):
            mnt, cache = self.mnt(name), f'{self.cache_root}/{name}'
            d = self.mount(name, cache, mnt, boot=boot, blobs=blobs)
            problems = compare_tree(mnt, self.meta[name]['manifest'])
            check(not problems, f'{name}: ' + '; '.join(problems[:10]))
            self.expect_clean_stop(d, mnt)
            c = d.counters()
            check(c['read_errors'] == 0, f'{name}: counters {c}')
            out.append(f'{name}: {len(self.meta[name]["manifest"])} entries')
        return ', '.join(out)

    def case_reused_fsid(self):
        """Two bootstraps of one size mounted one after the other under one --fsid on one cache: each
        mount reads its own bootstrap, not the cache file the kernel kept of the one before."""
        mnt, cache = self.mnt('reused'), f'{self.cache_root}/reused'
        seen = []
        for name, mtime in (('mtime1', 1), ('mtime2', 2), ('mtime1', 1)):
            d = self.mount(name, cache, mnt, extra=['--fsid', 'reused'])
            seen.append(os.stat(f'{mnt}/small').st_mtime)
            check(seen[-1] == mtime, f'{name}: mtime {seen[-1]} where its bootstrap says {mtime} '
                                     '(the bootstrap mounted before under this fsid?)')
            self.expect_clean_stop(d, mnt)
        # The same fsid twice at once: the second mount is refused, the first serves on.
        d, ctl = self.serve('twice', f'{self.cache_root}/twice')
        b1, blobs1 = self.image('mtime1')
        b2, blobs2 = self.image('mtime2')
        first, second = self.mnt('twice1'), self.mnt('twice2')
        r = subprocess.run(ctl + ['mount', '--engine', 'fscache', '--fsid', 'twice', '--blob-dir', blobs1, b1, first],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
        check(r.returncode == 0, f'first mount: {r.stdout!r}\n{d.text()}')
        r = subprocess.run(ctl + ['mount', '--engine', 'fscache', '--fsid', 'twice', '--blob-dir', blobs2, b2, second],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
        check(r.returncode != 0 and r.stdout.count(b'\n') == 1 and
              f'fsid twice is the fsid of the image on {first} already'.encode() in r.stdout and not is_mount(second),
              f'second mount with the same fsid: {r.stdout!r}')
        check(os.stat(f'{first}/small').st_mtime == 1, 'the first mount broke')
        check(d.stop() == 0, f'rafsd serve did not stop cleanly:\n{d.text()}')
        return f'mtimes {seen}; the same fsid twice refused'

    def case_unknown_cookie(self):
        """A mount naming a cookie rafsd does not know: copen -ENOENT, that mount fails, rafsd serves on."""
        mnt, cache = self.mnt('cookie'), f'{self.cache_root}/cookie'
        d = self.mount('img1', cache, mnt)
        bogus = self.mnt('bogus')
        r = subprocess.run(['mount', '-t', 'erofs', '-o', 'fsid=no-such-image', 'none', bogus],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
        check(r.returncode != 0 and not is_mount(bogus), f'mount of an unknown fsid succeeded: {r.stdout!r}')
        check("unknown cookie 'no-such-image'" in d.text(), f'no warning about the cookie:\n{d.text()}')
        check(sha256_file(f'{mnt}/files/random-4097') == self.meta['img1']['manifest']['files/random-4097']['sha256'],
              'the served image broke')
        self.expect_clean_stop(d, mnt)
        c = d.counters()
        check(c['refused'] == 1, f'counters {c}')
        return f'mount(8) said: {r.stdout.decode(errors="replace").strip()}'

    def case_missing_blob(self):
        """A blob missing from the backend: rafsd mount fails at once with one clear line, and leaves
        the cache dir's fscache state as it found it (no new volume, no new chunk map)."""
        mnt, cache = self.mnt('missing'), f'{self.cache_root}/missing'
        os.makedirs('/tmp/empty-blobs', exist_ok=True)
        b, _ = self.image('img1')
        r = subprocess.run([self.rafsd, 'mount', '--config', self.config('missing', cache), '--engine', 'fscache',
                            '--blob-dir', '/tmp/empty-blobs', b, mnt],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
        text = r.stdout.decode(errors='replace')
        errors = [line for line in text.splitlines() if line.startswith('rafsd:')]
        blob = self.meta['img1']['blobs'][0]
        check(r.returncode != 0 and not is_mount(mnt), f'exit status {r.returncode}:\n{text}')
        check(len(errors) == 1 and blob in errors[0], f'expected one error line naming blob {blob}:\n{text}')
        # The cache dir as failed mounts found it (README), also a level down, in the fscache
        # state another image's mount left: no new volume (--fsid), no new chunk map in a volume
        # shared by --domain-id.
        d = self.mount('img1', cache, mnt, extra=('--domain-id', 'dmiss'))
        self.expect_clean_stop(d, mnt)
        state = f'{cache}/fscache-state'

        def listing():
            return sorted(os.path.relpath(os.path.join(p, n), state) for p, ds, fs in os.walk(state) for n in ds + fs)
        before = listing()
        b3, _ = self.image('img3')
        for extra in (['--fsid', 'missing-x'], ['--domain-id', 'dmiss']):
            self.one_error(['mount', '--config', self.config('missing', cache), '--engine', 'fscache',
                            '--blob-dir', '/tmp/empty-blobs', *extra, b3, mnt], self.meta['img3']['blobs'][0])
            check(listing() == before, f'a failed mount ({" ".join(extra)}) left {set(listing()) - set(before)} in '
                                       f'{state}')
        return errors[0]

    def one_error(self, argv, *expect):
        r = subprocess.run([self.rafsd] + argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
        text = r.stdout.decode(errors='replace')
        errors = [line for line in text.splitlines() if line.startswith('rafsd:')]
        check(r.returncode != 0 and len(errors) == 1 and all(e in errors[0] for e in expect),
              f'expected one error line with {expect}, exit status {r.returncode}:\n{text}')
        return errors[0]

    def case_device_errors(self):
        """Clear one-line errors: cache dir on tmpfs; /dev/cachefiles held by another daemon; the
        fanotify engine on these kernels, older than its pre-content events (6.14)."""
        b, blobs = self.image('img1')
        mnt = self.mnt('errors')
        tmpfs = self.one_error(['mount', '--engine', 'fscache', '--cache-dir', '/tmp/on-tmpfs', '--blob-dir', blobs,
                                b, mnt], 'cachefiles cannot use')
        old_kernel = self.one_error(['mount', '--engine', 'fanotify', '--cache-dir', f'{self.cache_root}/errors-fan',
                                     '--blob-dir', blobs, b, mnt],
                                    f'kernel {os.uname().release} lacks fanotify pre-content events (Linux 6.14+)')
        d = self.mount('img1', f'{self.cache_root}/errors', mnt)
        other = self.mnt('errors2')
        busy = self.one_error(['mount', '--engine', 'fscache', '--cache-dir', f'{self.cache_root}/errors2',
                               '--blob-dir', blobs, b, other], 'busy')
        self.expect_clean_stop(d, mnt)
        return f'{tmpfs} | {busy} | {old_kernel}'

    def case_corrupt_blob(self):
        """A damaged chunk: EIO for its file, the others read fine, the bad bytes never reach the cache."""
        mnt, cache = self.mnt('corrupt'), f'{self.cache_root}/corrupt'
        meta = self.meta['img3']
        b, _ = self.image('img3')
        d = self.mount('img3', cache, mnt, blobs=f'{self.work}/img3/bad-blobs')
        try:
            with open(f'{mnt}/victim', 'rb') as f:
                f.read()
            raise Failure('reading the damaged file succeeded')
        except OSError as err:
            check(err.errno == errno.EIO, f'damaged file: {err}, expected EIO')
        problems = compare_tree(mnt, meta['manifest'], skip={'victim'})
        check(not problems, 'mismatches: ' + '; '.join(problems[:10]))
        self.expect_clean_stop(d, mnt)
        c = d.counters()
        check(c['read_errors'] > 0, f'counters {c}')
        blob = meta['blobs'][0]
        files = [os.path.join(dp, n) for dp, _, ns in os.walk(f'{cache}/fscache/cache') for n in ns if n == 'D' + blob]
        check(len(files) == 1, f'expected one cache file D{blob}, found {files}')
        with open(files[0], 'rb') as f:
            data = f.read()
        blocks = {hashlib.sha256(data[i:i + 4096]).hexdigest() for i in range(0, len(data), 4096)}
        check(meta['bad_block_sha256'] not in blocks, 'the damaged block is in the kernel cache file')
        return f'EIO for victim; counters {c}'

    def case_blob_gone(self):
        """The blob goes from the backend after the mount: every read of the tree fails with EIO, and
        the log says so in a few lines, not one per failed READ."""
        mnt, cache = self.mnt('gone'), f'{self.cache_root}/gone'
        _, blobs = self.image('img1')
        copy = '/tmp/gone-blobs'
        shutil.copytree(blobs, copy, dirs_exist_ok=True)
        d = self.mount('img1', cache, mnt, blobs=copy)
        for name in os.listdir(copy):
            os.unlink(os.path.join(copy, name))
        failed = ok = 0
        for rel, entry in self.meta['img1']['manifest'].items():
            if 'sha256' not in entry or not entry.get('size'):
                continue
            try:
                with open(f'{mnt}/{rel}', 'rb') as f:
                    f.read()
                ok += 1
            except OSError as err:
                check(err.errno == errno.EIO, f'{rel}: {err}, expected EIO')
                failed += 1
        self.expect_clean_stop(d, mnt)
        lines = [line for line in d.text().splitlines() if 'the reader gets EIO' in line]
        check(failed > 20 and ok == 0, f'{failed} files failed, {ok} read')
        check(len(lines) <= 3, f'{len(lines)} lines of failed READs for {failed} files:\n' + '\n'.join(lines[:10]))
        return f'{failed} files failed with EIO, {len(lines)} log lines of failed READs'

    def case_shared_domain(self):
        """Two images sharing a blob in one --domain-id: the blob is opened and cached once."""
        cache = f'{self.cache_root}/domain'
        d, ctl = self.serve('domain', cache)
        mnts = {}
        for name in ('img1', 'img12'):
            b, blobs = self.image(name)
            mnts[name] = self.mnt('domain-' + name)
            r = subprocess.run(ctl + ['mount', '--engine', 'fscache', '--domain-id', 'shared', '--blob-dir', blobs, b,
                                      mnts[name]], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
            check(r.returncode == 0, f'rafsctl mount {name}: {r.stdout!r}\n{d.text()}')
        for name, mnt in mnts.items():
            problems = compare_tree(mnt, self.meta[name]['manifest'])
            check(not problems, f'{name}: ' + '; '.join(problems[:10]))
        for mnt in mnts.values():
            r = subprocess.run(ctl + ['umount', mnt], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
            check(r.returncode == 0, f'rafsctl umount {mnt}: {r.stdout!r}')
        check(d.stop() == 0, f'rafsd serve did not stop cleanly:\n{d.text()}')
        c = d.counters()
        shared = self.meta['img1']['blobs'][0]
        check(shared in self.meta['img12']['blobs'], 'img12 does not share the blob of img1')
        # 2 bootstraps + the shared blob once + img12's own blob.
        check(c['opens'] == 4, f'expected 4 OPENs, got {c}')
        names = [n for _, _, ns in os.walk(f'{cache}/fscache/cache') for n in ns]
        check(names.count('D' + shared) == 1, f'cache files: {sorted(names)}')
        vols = os.listdir(f'{cache}/fscache/cache')
        check(vols == ['Ierofs,shared'], f'volumes: {vols}')
        return f'{c}; cache files {len(names)}'

    def case_discarded_chunk_map(self):
        """A blob cached in a shared domain, then named by an image that describes it otherwise (one
        chunk digest changed): with its chunk map the kernel's cache file of it goes too, so reads
        reach rafsd and the changed chunk fails its digest, never read unchecked from the file."""
        cache = f'{self.cache_root}/redigest'
        d, ctl = self.serve('redigest', cache)
        mnt = self.mnt('redigest')
        problems = {}
        for name in ('img1', 'img1-redigest'):
            b, blobs = self.image(name)
            r = subprocess.run(ctl + ['mount', '--engine', 'fscache', '--domain-id', 'redigest', '--blob-dir', blobs, b,
                                      mnt], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
            check(r.returncode == 0, f'rafsctl mount {name}: {r.stdout!r}\n{d.text()}')
            problems[name] = compare_tree(mnt, self.meta['img1']['manifest'])
            r = subprocess.run(ctl + ['umount', mnt], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
            check(r.returncode == 0, f'rafsctl umount {name}: {r.stdout!r}')
        check(d.stop() == 0, f'rafsd serve did not stop cleanly:\n{d.text()}')
        check(not problems['img1'], 'img1: ' + '; '.join(problems['img1'][:10]))
        bad = problems['img1-redigest']
        check(bad, 'every file of the image with a changed digest read back: read from the kernel\'s cache file, '
                   'unchecked')
        check(all('Input/output error' in p for p in bad), 'not EIO: ' + '; '.join(bad[:10]))
        check('cache state discarded' in d.text(), f'the chunk map was not discarded:\n{d.text()}')
        return f'{len(bad)} file(s) EIO: {bad[0]}'

    def case_cache_gc(self):
        """A cache capped below the image: the automatic collection removes the volume of an
        unmounted image (its cache files culled through cachefiles, its chunk maps deleted) while a
        mounted one reads correctly and keeps its volume. Then rafsctl gc --dry-run and gc do the
        same on request, the removed volumes' directories go too (also the one a refused mount by
        hand of an unknown fsid left), and the removed image mounts again and reads correctly,
        fetched anew."""
        cache = f'{self.cache_root}/gc'
        b, blobs = self.image('img1')
        mnt = self.mnt('gc')
        d, ctl = self.serve('gc-capped', cache, '[cache]\nmax_size = "1MiB"\ngc_interval = 1\nkeep_recent = 0\n')
        for fsid in ('old', 'new'):
            r = subprocess.run(ctl + ['mount', '--engine', 'fscache', '--fsid', fsid, '--blob-dir', blobs, b, mnt],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
            check(r.returncode == 0, f'rafsctl mount: {r.stdout!r}\n{d.text()}')
            problems = compare_tree(mnt, self.meta['img1']['manifest'])
            check(not problems, f'capped, {fsid}: ' + '; '.join(problems[:10]))
            if fsid == 'old':
                subprocess.run(ctl + ['umount', mnt], timeout=120, check=True)
        old_dir = f'{cache}/fscache/cache/Ierofs,old'
        d.wait_for(lambda: not [n for _, _, ns in os.walk(old_dir) for n in ns], 'the unmounted volume culled', 60)
        check(not os.path.exists(f'{cache}/fscache-state/old') and os.path.isdir(f'{cache}/fscache-state/new'),
              'chunk maps: the unmounted volume\'s gone, the mounted one\'s kept')
        problems = compare_tree(mnt, self.meta['img1']['manifest'])
        check(not problems, 'capped, mounted, after the collection: ' + '; '.join(problems[:10]))
        subprocess.run(ctl + ['umount', mnt], timeout=120, check=True)
        check(d.stop() == 0, f'rafsd serve did not stop cleanly:\n{d.text()}')
        check('cache gc (auto)' in d.text(), f'no automatic collection in the log:\n{d.text()}')
        check('over cache.max_size' in d.text(), f'the mounted image over the bound was not said:\n{d.text()}')

        cache = f'{self.cache_root}/gc-manual'
        d, ctl = self.serve('gc', cache)

        def ctl_ok(*args):
            r = subprocess.run(ctl + list(args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
            check(r.returncode == 0, f'rafsctl {" ".join(args)}: {r.stdout!r}\n{d.text()}')
            return r.stdout.decode()

        def volume_files(fsid):
            return [n for _, _, ns in os.walk(f'{cache}/fscache/cache/Ierofs,{fsid}') for n in ns]

        ctl_ok('mount', '--engine', 'fscache', '--fsid', 'gone', '--blob-dir', blobs, b, mnt)
        problems = compare_tree(mnt, self.meta['img1']['manifest'])
        check(not problems, 'first mount: ' + '; '.join(problems[:10]))
        ctl_ok('umount', mnt)
        ctl_ok('mount', '--engine', 'fscache', '--fsid', 'kept', '--blob-dir', blobs, b, mnt)
        problems = compare_tree(mnt, self.meta['img1']['manifest'])
        check(not problems, 'second mount: ' + '; '.join(problems[:10]))
        # A mounted volume's files are O_TMPFILEs until the kernel lets go of them: only the
        # unmounted one's are linked in.
        gone = volume_files('gone')
        check(gone and os.path.isdir(f'{cache}/fscache-state/gone'), f'cache files: {gone}')
        # Yet their data counts toward the cache's size: the same image read whole in each volume.
        linked = sum(os.lstat(os.path.join(p, n)).st_blocks * 512
                     for p, _, ns in os.walk(f'{cache}/fscache/cache/Ierofs,gone') for n in ns)
        size = json.loads(ctl_ok('status', '--json'))['cache']['size']
        check(size >= 1.9 * linked, f'cache size {size} bytes with two volumes of the image read whole, one of them '
                                    f'{linked} bytes: the mounted one is not counted')
        out = ctl_ok('gc', '--dry-run')
        check('would remove fscache volume gone' in out and 'kept' not in out, f'gc --dry-run: {out}')
        check(volume_files('gone') == gone, 'gc --dry-run removed files')
        # A mount by hand of an fsid nobody registered is refused, but leaves its volume's 256
        # fan-out directories behind.
        r = subprocess.run(['mount', '-t', 'erofs', '-o', 'fsid=mistyped', 'none', self.mnt('gc-mistyped')],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        check(r.returncode != 0, f'a mount by hand of an unknown fsid: {r.stdout!r}')
        mistyped = f'{cache}/fscache/cache/Ierofs,mistyped'
        check(os.path.isdir(mistyped), 'the refused mount made no volume directory (the case no longer tests anything)')
        out = ctl_ok('gc')
        check('removed fscache volume gone' in out and 'removed fscache volume mistyped' in out and 'kept' not in out,
              f'gc: {out}')
        check(not volume_files('gone'), f'left of the removed volume: {volume_files("gone")}')
        check(not os.path.exists(f'{cache}/fscache/cache/Ierofs,gone') and not os.path.exists(mistyped),
              'the removed volumes\' directories are left')
        check(os.path.isdir(f'{cache}/fscache/cache/Ierofs,kept'), 'the mounted volume lost its directory')
        check(not os.path.exists(f'{cache}/fscache-state/gone'), 'its chunk maps are left')
        check(os.path.isdir(f'{cache}/fscache-state/kept'), 'the mounted volume lost its chunk maps')
        check(not os.listdir(f'{cache}/fscache/graveyard'), 'the graveyard is not empty')
        problems = compare_tree(mnt, self.meta['img1']['manifest'])
        check(not problems, 'the mounted image after gc: ' + '; '.join(problems[:10]))
        ctl_ok('umount', mnt)
        check(volume_files('kept'), 'the kept volume has no cache files after its unmount')
        ctl_ok('mount', '--engine', 'fscache', '--fsid', 'gone', '--blob-dir', blobs, b, mnt)
        problems = compare_tree(mnt, self.meta['img1']['manifest'])
        check(not problems, 'the removed image mounted again: ' + '; '.join(problems[:10]))
        ctl_ok('umount', mnt)
        check(d.stop() == 0, f'rafsd serve did not stop cleanly:\n{d.text()}')
        c = d.counters()
        return f'{len(gone)} cache files culled; {c}'

    def case_register_by_hand(self):
        """rafsctl mount --register-only: rafsd serves the image, the user mounts it by hand with the
        command rafsctl prints, after a failover of rafsd's worker; rafsctl umount after a manual
        umount only unregisters."""
        cache = f'{self.cache_root}/byhand'
        d, ctl = self.serve('byhand', cache)
        b, blobs = self.image('img1')
        mnt = self.mnt('byhand')

        def run(argv):
            return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)

        r = run(ctl + ['mount', '--engine', 'fanotify', '--register-only', '--blob-dir', blobs, b, mnt])
        check(r.returncode != 0 and b'needs the fscache engine' in r.stdout and r.stdout.count(b'\n') == 1,
              f'--register-only with fanotify: {r.stdout!r}')
        r = run(ctl + ['mount', '--engine', 'fscache', '--register-only', '--fsid', 'handmade', '--blob-dir', blobs, b,
                       mnt])
        check(r.returncode == 0, f'rafsctl mount --register-only: {r.stdout!r}\n{d.text()}')
        check(not is_mount(mnt), f'{mnt} is mounted although only registered')
        command = r.stdout.decode().splitlines()[-1].strip()
        check(command == f'mount -t erofs -o fsid=handmade none {mnt}', f'printed command: {r.stdout!r}')
        # The worker dies before the user mounts: the next one keeps the image registered.
        worker = self.worker_of(d)
        os.kill(worker, signal.SIGKILL)
        d.wait_for(lambda: self.worker_of_or_none(d) not in (None, worker) and run(ctl + ['list']).returncode == 0,
                   'the next worker')
        r = run(ctl + ['list'])
        check(mnt.encode() in r.stdout, f'the registration is gone after the failover: {r.stdout!r}\n{d.text()}')
        r = run(command.split())
        check(r.returncode == 0, f'{command}: {r.stdout!r}\n{d.text()}')
        problems = compare_tree(mnt, self.meta['img1']['manifest'])
        check(not problems, 'mismatches: ' + '; '.join(problems[:10]))
        r = run(['umount', mnt])
        check(r.returncode == 0, f'umount by hand: {r.stdout!r}')
        r = run(ctl + ['umount', mnt])
        check(r.returncode == 0, f'rafsctl umount after the manual umount: {r.stdout!r}')
        r = run(ctl + ['list'])
        check(mnt.encode() not in r.stdout, f'still listed: {r.stdout!r}')
        check(d.stop() == 0, f'rafsd serve did not stop cleanly:\n{d.text()}')
        c = d.counters()
        check(c['blob_reads'] > 0 and c['read_errors'] == 0 and c['refused'] == 0, f'counters {c}')
        return f'{command}; {c}'

    def worker_of(self, d):
        """The pid of the supervisor's worker."""
        for pid in filter(str.isdigit, os.listdir('/proc')):
            try:
                with open(f'/proc/{pid}/stat') as f:
                    fields = f.read().rsplit(')', 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == d.proc.pid:
                return int(pid)
        raise Failure(f'rafsd {d.proc.pid} has no worker process')

    def worker_of_or_none(self, d):
        try:
            return self.worker_of(d)
        except Failure:
            return None

    def start_reader(self, path):
        result = {}

        def read():
            try:
                result['sha256'] = sha256_file(path)
            except OSError as err:
                result['error'] = err
        t = threading.Thread(target=read, daemon=True)
        t.start()
        return t, result

    def case_failover(self):
        """kill -9 the worker while a reader waits on a slow miss: a new worker serves it, data correct."""
        mnt, cache = self.mnt('failover'), f'{self.cache_root}/failover'
        d = self.mount('img1', cache, mnt, extra=('--test-fetch-delay', '4000'))
        worker = self.worker_of(d)
        rel = 'files/random-3145851'
        t, result = self.start_reader(f'{mnt}/{rel}')
        time.sleep(1.5)
        check(t.is_alive(), f'the reader did not wait for the slow miss: {result}')
        os.kill(worker, signal.SIGKILL)
        t.join(180)
        check(not t.is_alive(), f'the reader still waits 180 s after the worker died:\n{d.text()}')
        check(result.get('sha256') == self.meta['img1']['manifest'][rel]['sha256'], f'reader got {result}\n{d.text()}')
        check(d.proc.poll() is None, f'the supervisor exited:\n{d.text()}')
        check('failover' in d.text(), f'no failover in the log:\n{d.text()}')
        new_worker = self.worker_of(d)
        check(new_worker != worker, 'no new worker')
        manifest = self.meta['img1']['manifest']
        for other in ('files/random-65537', 'many/f001', 'deep/' + '/'.join(f'd{i}' for i in range(12)) + '/leaf'):
            check(sha256_file(f'{mnt}/{other}') == manifest[other]['sha256'], f'{other} differs after the failover')
        self.expect_clean_stop(d, mnt)
        return f'worker {worker} killed, {new_worker} completed the read'

    def case_sigterm_in_flight(self):
        """SIGTERM while readers wait on slow misses: their READs complete with the right data before
        the device closes (not ENOBUFS), and rafsd exits 0. Files of one READ each: a read after
        the stop gets an error (README)."""
        mnt, cache = self.mnt('sigterm'), f'{self.cache_root}/sigterm'
        d = self.mount('img1', cache, mnt, extra=('--test-fetch-delay', '2500'))
        manifest = self.meta['img1']['manifest']
        rels = ['files/random-65537', 'files/random-4097', 'many/f007']
        readers = [(rel, *self.start_reader(f'{mnt}/{rel}')) for rel in rels]
        time.sleep(1)
        check(all(t.is_alive() for _, t, _ in readers), 'the readers did not wait for the slow misses')
        rc = d.stop()
        for rel, t, result in readers:
            t.join(60)
            check(result.get('sha256') == manifest[rel]['sha256'], f'{rel}: reader got {result}\n{d.text()}')
        check(rc == 0, f'rafsd exit status {rc} after SIGTERM:\n{d.text()}')
        return f'{len(rels)} reads in flight at the stop completed'

    def notified(self, argv, notify):
        """rafsd started as systemd starts a Type=notify service (NOTIFY_SOCKET = `notify`); returns it and
        the fd it put in the fd store (FDSTORE=1, FDNAME=cachefiles) once it said READY=1."""
        os.environ['NOTIFY_SOCKET'] = notify.getsockname()
        try:
            d = Rafsd(self, argv)
        finally:
            del os.environ['NOTIFY_SOCKET']
        self.daemons.append(d)
        messages, stored = [], None
        while 'READY=1' not in messages:
            data, ancillary, _, _ = notify.recvmsg(4096, 1024)
            messages += data.decode().split('\n')
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    check(stored is None and 'FDSTORE=1' in messages and 'FDNAME=cachefiles' in messages,
                          f'unexpected fds with {messages}')
                    (stored,) = struct.unpack('i', payload[:4])
        check(stored is not None, f'no fd stored; messages {messages}')
        return d, stored

    def restarted(self, argv, stored):
        """rafsd restarted as systemd restarts the service: the stored fd at 3, LISTEN_PID = the new process."""
        script = f'exec 3>&{stored} {stored}>&-; LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=cachefiles exec "$@"'
        d = Rafsd(self, [], argv0=['/bin/bash', '-c', script, 'rafsd', self.rafsd] + argv, pass_fds=(stored,))
        self.daemons.append(d)
        return d

    @staticmethod
    def notify_socket():
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind('/tmp/notify.sock')
        notify.settimeout(120)
        notify.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)  # as systemd: sd_notify sends creds
        return notify

    def case_fd_store(self):
        """systemd's fd store: rafsd stores the device fd; the whole rafsd is killed while a reader
        waits on a miss; a new rafsd gets the fd through LISTEN_FDS, reattaches, serves the reader."""
        mnt, cache = self.mnt('fdstore'), f'{self.cache_root}/fdstore'
        notify = self.notify_socket()
        stored = None
        try:
            b, blobs = self.image('img1')
            cfg = self.config('fdstore', cache)
            argv = ['mount', '--config', cfg, '--engine', 'fscache', '--blob-dir', blobs,
                    '--test-fetch-delay', '4000', b, mnt]
            d, stored = self.notified(argv, notify)
            check(is_mount(mnt), f'{mnt} not mounted at READY=1')
            rel = 'files/random-3145851'
            t, result = self.start_reader(f'{mnt}/{rel}')
            time.sleep(1.5)
            check(t.is_alive(), f'the reader did not wait for the slow miss: {result}')
            d.kill()
            time.sleep(0.5)
            check(t.is_alive(), f'the reader did not survive the daemon (the stored fd must keep the cache): {result}')
            new = self.restarted(argv, stored)
            t.join(180)
            check(not t.is_alive(), f'the reader still waits 180 s after the restart:\n{new.text()}')
            check(result.get('sha256') == self.meta['img1']['manifest'][rel]['sha256'], f'reader got {result}')
            check("taken from systemd's fd store" in new.text() and 'reattached' in new.text(), new.text())
            os.close(stored)
            stored = None
            self.expect_clean_stop(new, mnt)
            return 'the restarted rafsd took the stored fd and completed the read'
        finally:
            if stored is not None:
                os.close(stored)
            notify.close()
            os.unlink('/tmp/notify.sock')

    def case_serve_failover(self):
        """rafsd serve as a systemd service: rafsctl mounts an image, a reader waits on a slow miss, the
        whole rafsd is killed; the restarted one gets the device from the fd store, reattaches the mount
        listed in its state dir and serves the reader. Then its worker is killed: its supervisor's next
        worker does the same. Then workers that fail after taking the mount over (the socket's path
        taken): the mount and its table stay, and a worker that can serve serves it."""
        name = 'serve-failover'
        mnt, cache = self.mnt(name), f'{self.cache_root}/{name}'
        cfg, sock, table = self.config(name, cache), f'/tmp/{name}.sock', f'/tmp/{name}-state/mounts.json'
        argv = ['serve', '--config', cfg, '--test-fetch-delay', '4000']
        manifest = self.meta['img1']['manifest']

        def ctl(*args):
            return subprocess.run([self.rafsctl, '--socket', sock, *args], stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, timeout=300)

        def listed(d):
            """`rafsctl list` once the restarted rafsd listens (the old socket file lingers until then)."""
            d.wait_for(lambda: ctl('list').returncode == 0, 'the control socket')
            out = ctl('list').stdout.decode(errors='replace')
            check(mnt in out and 'fscache' in out, f'rafsctl list:\n{out}')

        def table_mounts():
            with open(table) as f:
                return json.load(f)['mounts']

        def slow_read(rel, kill):
            t, result = self.start_reader(f'{mnt}/{rel}')
            time.sleep(1.5)
            check(t.is_alive(), f'{rel}: the reader did not wait for the slow miss: {result}')
            kill()
            t.join(180)
            check(not t.is_alive(), f'{rel}: the reader still waits 180 s after the kill')
            check(result.get('sha256') == manifest[rel]['sha256'], f'{rel}: reader got {result}')

        notify = self.notify_socket()
        stored = None
        try:
            d, stored = self.notified(argv, notify)
            b, blobs = self.image('img1')
            r = ctl('mount', '--engine', 'fscache', '--blob-dir', blobs, b, mnt)
            check(r.returncode == 0, f'rafsctl mount: {r.stdout!r}\n{d.text()}')
            check([m['mountpoint'] for m in table_mounts()] == [mnt], f'{table} lacks {mnt}')

            instances = []

            def kill_all():
                d.kill()
                time.sleep(0.5)
                instances.append(self.restarted(argv, stored))
            slow_read('files/random-3145851', kill_all)
            new = instances[0]
            check("taken from systemd's fd store" in new.text() and 'reattached' in new.text(), new.text())
            listed(new)
            worker = self.worker_of(new)
            slow_read('files/random-2101248', lambda: os.kill(worker, signal.SIGKILL))
            check('failover' in new.text() and self.worker_of(new) != worker, f'no new worker:\n{new.text()}')
            listed(new)
            # Workers that fail after the takeover (the socket's path is a file) leave the mount up
            # and listed; the supervisor, stopped meanwhile, starts the next one on SIGCONT.
            os.kill(new.proc.pid, signal.SIGSTOP)
            try:
                os.kill(self.worker_of(new), signal.SIGKILL)
                os.unlink(sock)
                open(sock, 'w').close()
            finally:
                os.kill(new.proc.pid, signal.SIGCONT)
            rel = 'files/text'
            t, result = self.start_reader(f'{mnt}/{rel}')
            try:
                new.wait_for(lambda: new.text().count('is not a socket') >= 2, 'workers failing on the socket path')
                check([m['mountpoint'] for m in table_mounts()] == [mnt] and os.path.ismount(mnt),
                      f'the failed takeovers unmounted {mnt} or emptied {table}:\n{new.text()}')
            finally:
                os.unlink(sock)
            t.join(180)
            check(not t.is_alive() and result.get('sha256') == manifest[rel]['sha256'],
                  f'{rel}: reader got {result} after the socket path was freed:\n{new.text()}')
            listed(new)
            os.close(stored)
            stored = None
            self.expect_clean_stop(new, mnt)
            check(table_mounts() == [], f'{table} still lists mounts after a clean stop')
            return 'the restarted rafsd serve, then its next worker, reattached the mount and served the readers'
        finally:
            if stored is not None:
                os.close(stored)
            notify.close()
            os.unlink('/tmp/notify.sock')

    def case_reload(self):
        """rafsd serve reloads on SIGHUP while a reader waits on a slow miss of its fscache mount: the
        same pid runs the program at its path again with the bound device passed on, writes `restore`
        (Linux 6.8+), reattaches the mount and serves the reader."""
        name = 'reload'
        mnt, cache = self.mnt(name), f'{self.cache_root}/{name}'
        sock = f'/tmp/{name}.sock'
        d = Rafsd(self, ['serve', '--config', self.config(name, cache), '--test-fetch-delay', '4000'])
        self.daemons.append(d)
        manifest = self.meta['img1']['manifest']

        def ctl(*args):
            return subprocess.run([self.rafsctl, '--socket', sock, *args], stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, timeout=300)
        d.wait_for(lambda: ctl('list').returncode == 0, 'the control socket')
        b, blobs = self.image('img1')
        r = ctl('mount', '--engine', 'fscache', '--blob-dir', blobs, b, mnt)
        check(r.returncode == 0, f'rafsctl mount: {r.stdout!r}\n{d.text()}')
        worker = self.worker_of(d)
        rel = 'files/random-3145851'
        t, result = self.start_reader(f'{mnt}/{rel}')
        time.sleep(1.5)
        check(t.is_alive(), f'the reader did not wait for the slow miss: {result}')
        os.kill(d.proc.pid, signal.SIGHUP)
        t.join(180)
        check(not t.is_alive(), f'the reader still waits 180 s after the reload:\n{d.text()}')
        check(result.get('sha256') == manifest[rel]['sha256'], f'reader got {result}\n{d.text()}')
        text = d.text()
        check(d.proc.poll() is None and 'passed on by the previous rafsd (reload)' in text and 'reattached' in text
              and 'restore sent' in text, f'no reload in the log:\n{text}')
        check(self.worker_of(d) != worker, f'the old worker still serves:\n{text}')
        d.wait_for(lambda: ctl('list').returncode == 0, 'the control socket after the reload')
        listing = ctl('list').stdout.decode(errors='replace')
        check(mnt in listing, f'rafsctl list after the reload:\n{listing}')
        other = 'files/random-2101248'
        check(sha256_file(f'{mnt}/{other}') == manifest[other]['sha256'], f'{other} differs after the reload')
        self.expect_clean_stop(d, mnt)
        return 'the reloaded rafsd reattached the mount and completed the waiting read'

    def registry_config(self, name, user, password, backend_repo=None):
        """docker-registry on the guest's loopback with TLS from a test CA and htpasswd auth for
        `user` (running), and the config `name` of an fscache daemon with that CA and the
        credentials in a docker config.json; with `backend_repo`, backend.type is registry and
        names that repository. Returns (the registry, 'host:port', the CA, the config path)."""
        sys.path.insert(0, f'{REPO}/tests/integration')
        from rafstest.servers import docker_config, htpasswd_registry
        tmp = f'/tmp/{name}-case'
        os.makedirs(tmp, exist_ok=True)
        server, host, ca = htpasswd_registry(tmp, {user: password})
        docker_cfg = f'{tmp}/config.json'
        docker_config(docker_cfg, host, user, password)
        cfg = self.config(name, f'{self.cache_root}/{name}')
        with open(cfg, 'a') as f:
            if backend_repo:
                f.write(f'[backend]\ntype = "registry"\n')
            f.write(f'[backend.registry]\ndocker_config = "{docker_cfg}"\n')
            if backend_repo:
                f.write(f'host = "{host}"\nrepo = "{backend_repo}"\n')
            f.write(f'[backend.hosts."{host}"]\nca_file = "{ca.cert}"\n')
        return server, host, ca, cfg

    def case_registry(self):
        """The registry backend with the fscache engine: Debian's docker-registry on the guest's
        loopback with TLS from a test CA and htpasswd (Basic) auth, the image's blob pushed with the
        upload API; every file reads back equal through `rafsd mount --engine fscache` with the
        credentials from a docker config.json; the password is in no log line."""
        user, password, repo = 'rafs', 'vm-secret-4711', 'rafs/vm'
        boot, blobs = self.image('img1')
        server, host, ca, cfg = self.registry_config('registry', user, password, backend_repo=repo)
        from rafstest.servers import basic_auth, push_blob
        with server:
            for blob in os.listdir(blobs):
                digest = push_blob(f'https://{host}', repo, f'{blobs}/{blob}', ca.context(), basic_auth(user, password))
                check(digest == 'sha256:' + blob, f'pushed {blob} as {digest}')
            mnt = self.mnt('registry')
            d = Rafsd(self, ['mount', '--config', cfg, '--engine', 'fscache', boot, mnt], wait_mount=mnt)
            self.daemons.append(d)
            manifest = self.meta['img1']['manifest']
            problems = compare_tree(mnt, manifest)
            check(not problems, 'tree through the registry differs:\n' + '\n'.join(problems[:20]))
            self.expect_clean_stop(d, mnt)
            check(password not in d.text(), 'the password is in rafsd\'s log')
        return f'{len(manifest)} entries read back equal from the TLS registry (fscache engine)'

    def case_registry_image(self):
        """Mount by image reference with the fscache engine: img1 pushed as a Nydus-style RAFS image
        (rafstest/rafsimage.py) to docker-registry on the guest's loopback (TLS, htpasswd), tagged
        as an index; `rafsd mount --engine fscache HOST/REPO:v1` resolves it, keeps the bootstrap in
        the state dir and every file reads back equal; backend.type stays localfs."""
        user, password, repo = 'rafs', 'vm-secret-4712', 'rafs/image'
        boot, blobs = self.image('img1')
        server, host, ca, cfg = self.registry_config('registry-image', user, password)
        from rafstest.rafsimage import Pusher, host_arch
        from rafstest.servers import basic_auth
        with server:
            push = Pusher(f'https://{host}', repo, ca.context(), basic_auth(user, password))
            digest, size = push.rafs_image(None, boot, [f'{blobs}/{b}' for b in sorted(os.listdir(blobs))])
            push.index('v1', [(digest, size, host_arch(), True)])
            mnt = self.mnt('registry-image')
            began = time.monotonic()
            d = Rafsd(self, ['mount', '--config', cfg, '--engine', 'fscache', f'{host}/{repo}:v1', mnt], wait_mount=mnt)
            took = time.monotonic() - began
            self.daemons.append(d)
            kept = f'/tmp/registry-image-state/images/sha256-{digest[7:]}/image.boot'
            with open(kept, 'rb') as f, open(boot, 'rb') as g:
                check(f.read() == g.read(), f'{kept} is not the bootstrap')
            manifest = self.meta['img1']['manifest']
            problems = compare_tree(mnt, manifest)
            check(not problems, 'tree mounted by image reference differs:\n' + '\n'.join(problems[:20]))
            self.expect_clean_stop(d, mnt)
        return f'{len(manifest)} entries read back equal, mounted by reference in {took:.1f} s (fscache engine)'

    def case_kill_no_failover(self):
        """The whole daemon killed (no supervisor left): waiting readers get EIO, nothing hangs."""
        mnt, cache = self.mnt('killed'), f'{self.cache_root}/killed'
        d = self.mount('img1', cache, mnt, extra=('--test-fetch-delay', '4000'))
        t, result = self.start_reader(f'{mnt}/files/random-3145851')
        time.sleep(1.5)
        check(t.is_alive(), f'the reader did not wait for the slow miss: {result}')
        d.kill()
        t.join(60)
        check(not t.is_alive(), 'the reader hangs 60 s after the daemon died')
        # The kernel fails reads of a dead cache with EIO or, when netfs finds no cache to read
        # from, ENOBUFS (seen on 6.12 for a reader that waited on the dead daemon).
        err = result.get('error')
        check(err is not None and err.errno in (errno.EIO, errno.ENOBUFS), f'reader got {result}, expected EIO')
        try:
            with open(f'{mnt}/files/random-4097', 'rb') as f:
                f.read()
            raise Failure('a new read after the daemon died succeeded')
        except OSError as e:
            check(e.errno in (errno.EIO, errno.ENOBUFS), f'new read: {e}')
            new_errno = e.errno
        r = subprocess.run(['umount', mnt], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        check(r.returncode == 0, f'umount of the orphaned mount: {r.stdout!r}')
        return f'waiting reader: {errno.errorcode[err.errno]}, new reader: {errno.errorcode[new_errno]}'


    def case_serve_killed_whole(self):
        """rafsd serve without an fd store, killed whole: the kernel fails its fscache mounts' reads
        for good (their cache went with the dead daemon's fd). A new rafsd serve unmounts such a
        mount and mounts the image again: the path reads right and rafsctl lists it. Killed whole
        again while a file there is open: the mount is in use, so it is left up and listed for later
        (the open file keeps failing: EIO or ENOBUFS, never zeros; a mount of the image elsewhere,
        under the fsid it holds, is refused naming it); unmounted by hand, the next start
        mounts it again. A mount by hand (--register-only) is registered again: unmounted and
        mounted by hand, it reads right."""
        name = 'killed-whole'
        mnt, byhand, cache = self.mnt(name), self.mnt(name + '-byhand'), f'{self.cache_root}/{name}'
        manifest = self.meta['img1']['manifest']
        rel = 'files/random-3145851'
        d, ctl = self.serve(name, cache)
        b, blobs = self.image('img1')

        def run(argv):
            return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)

        r = run(ctl + ['mount', '--engine', 'fscache', '--blob-dir', blobs, b, mnt])
        check(r.returncode == 0, f'rafsctl mount: {r.stdout!r}\n{d.text()}')
        r = run(ctl + ['mount', '--engine', 'fscache', '--register-only', '--fsid', 'byhand-fsid', '--blob-dir', blobs,
                       b, byhand])
        check(r.returncode == 0, f'rafsctl mount --register-only: {r.stdout!r}\n{d.text()}')
        by_hand = ['mount', '-t', 'erofs', '-o', 'fsid=byhand-fsid', 'none', byhand]
        r = run(by_hand)
        check(r.returncode == 0, f'mount by hand: {r.stdout!r}')

        def restart(old):
            old.kill()
            if os.path.exists(f'/tmp/{name}.sock'):  # left by a kill, not by a stop
                os.unlink(f'/tmp/{name}.sock')
            new, _ = self.serve(name, cache)
            new.wait_for(lambda: run(ctl + ['list']).returncode == 0, 'the control socket')
            new.wait_for(lambda: 'image mounted again' in new.text() or 'still mounted;' in new.text(), 'the mount again')
            return new, run(ctl + ['list']).stdout.decode(errors='replace')

        with open(f'{mnt}/files/text', 'rb') as f:
            check(hashlib.sha256(f.read()).hexdigest() == manifest['files/text']['sha256'], 'files/text before the kill')
        d, listed = restart(d)
        check(mnt in listed and 'image mounted again' in d.text(), f'rafsctl list:\n{listed}\n{d.text()}')
        problems = compare_tree(mnt, manifest)
        check(not problems, 'the image mounted again reads wrong:\n' + '\n'.join(problems[:20]))
        check('registered again' in d.text(), f'the mount by hand:\n{d.text()}')
        r = run(['umount', byhand])
        check(r.returncode == 0, f'umount by hand: {r.stdout!r}')
        r = run(by_hand)
        check(r.returncode == 0, f'mount by hand again: {r.stdout!r}\n{d.text()}')
        problems = compare_tree(byhand, manifest)
        check(not problems, 'the mount by hand, made again, reads wrong:\n' + '\n'.join(problems[:20]))
        run(['umount', byhand])
        held = open(f'{mnt}/{rel}', 'rb')
        try:
            d, listed = restart(d)
            check(mnt not in listed and 'in use (Device or resource busy)' in d.text() and 'still mounted' in d.text(),
                  f'rafsctl list:\n{listed}\n{d.text()}')
            # The same image elsewhere, under the same (derived) fsid, which the left mount holds.
            r = run(ctl + ['mount', '--engine', 'fscache', '--blob-dir', blobs, b, self.mnt(name + '-again')])
            out = r.stdout.decode(errors='replace')
            check(r.returncode != 0 and f'left mounted on {mnt}' in out and '--fsid' in out,
                  f'a mount under the fsid the left mount holds: {out}')
            # Its pages were cached by the tree's read above: dropped, so that the read reaches cachefiles.
            with open('/proc/sys/vm/drop_caches', 'w') as f:
                f.write('3\n')
            try:
                got = held.read()
                raise Failure(f'the file held open on the dead mount read {len(got)} bytes'
                              + (' of zeros' if got == bytes(len(got)) else ''))
            except OSError as e:
                check(e.errno in (errno.EIO, errno.ENOBUFS), f'the file held open: {e}')
                held_errno = e.errno
        finally:
            held.close()
        check(d.stop() == 0, f'rafsd exit status after SIGTERM:\n{d.text()}')
        r = run(['umount', mnt])
        check(r.returncode == 0, f'umount of the mount left in use, once closed: {r.stdout!r}')
        d, listed = restart(d)
        check(mnt in listed and 'image mounted again' in d.text(), f'the next start:\n{listed}\n{d.text()}')
        problems = compare_tree(mnt, manifest)
        check(not problems, 'mounted again at the next start, it reads wrong:\n' + '\n'.join(problems[:20]))
        self.expect_clean_stop(d, mnt)
        return (f'mounted again after a kill; the mount by hand registered again; in use at the next kill: left up '
                f'(the open file got {errno.errorcode[held_errno]}), and mounted again at the start after its unmount')

CASES = ['tree', 'sigterm_in_flight', 'remount_cached', 'stale_state', 'nydus', 'reused_fsid', 'unknown_cookie', 'missing_blob', 'device_errors',
         'corrupt_blob', 'blob_gone', 'shared_domain', 'register_by_hand', 'failover', 'fd_store', 'serve_failover', 'reload', 'kill_no_failover', 'serve_killed_whole', 'registry',
         'registry_image', 'cache_gc', 'discarded_chunk_map']


def guest_main(args):
    g = Guest(args)
    names = args.cases or CASES
    failed = []
    for name in names:
        start = time.monotonic()
        try:
            detail = getattr(g, 'case_' + name)()
            print(f'PASS {name} ({time.monotonic() - start:.1f} s): {detail}', flush=True)
        except Exception as e:  # a case's failure must not stop the others
            failed.append(name)
            print(f'FAIL {name} ({time.monotonic() - start:.1f} s): {type(e).__name__}: {e}', flush=True)
        finally:
            try:
                g.cleanup()
            except Exception as e:
                print(f'fscache-test: cleanup after {name}: {e}', flush=True)
    print(f'fscache-test: {len(names) - len(failed)} passed, {len(failed)} failed'
          + (f' ({", ".join(failed)})' if failed else ''), flush=True)
    return 1 if failed else 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--rafsd', required=True)
    p.add_argument('--rafsctl', required=True)
    p.add_argument('--mkrafs', required=True)
    p.add_argument('--work', required=True, help='scratch dir the guest can see (not under /run)')
    p.add_argument('--timeout', type=int, default=900, help='VM wall time limit, seconds')
    p.add_argument('--kernel-series', help='boot the kernel scripts/build-test-kernel builds of this series '
                   '(e.g. 6.1, Debian 12\'s own; vm-test --kernel-series); default: RAFSD_TEST_KERNEL or vm-test\'s')
    p.add_argument('--fixtures', default=NYDUS, help=f'the Nydus fixtures (default {NYDUS})')
    p.add_argument('--in-vm', action='store_true', help=argparse.SUPPRESS)
    p.add_argument('cases', nargs='*', metavar='CASE', help='run only these: ' + ', '.join(CASES))
    args = p.parse_args()
    unknown = set(args.cases) - set(CASES)
    if unknown:
        p.error(f'unknown cases: {", ".join(sorted(unknown))} (known: {", ".join(CASES)})')
    for name in ('rafsd', 'rafsctl', 'mkrafs', 'work', 'fixtures'):
        setattr(args, name, os.path.abspath(getattr(args, name)))
    if args.in_vm:
        sys.exit(guest_main(args))
    if shutil.which('qemu-system-x86_64') is None:
        print('fscache-test: SKIP: qemu-system-x86_64 not installed')
        sys.exit(77)
    for name in ('work', 'fixtures'):
        if re.match(r'/(run|var/run|dev|proc|sys)(/|$)', getattr(args, name)):
            sys.exit(f'fscache-test: --{name} {getattr(args, name)} is hidden in the guest '
                     '(it mounts its own /run, /dev, /proc, /sys)')
    if not os.path.isfile(f'{args.fixtures}/{NYDUS_BOOT}'):
        sys.exit(f'fscache-test: no Nydus fixtures in {args.fixtures} (set RAFSTEST_FIXTURES or --fixtures)')
    prepare(args)
    kernel = ['--kernel-series', args.kernel_series] if args.kernel_series else []
    cmd = [f'{REPO}/scripts/vm-test', '--timeout', str(args.timeout)] + kernel + ['--', '/usr/bin/python3',
           os.path.abspath(__file__), '--in-vm', '--rafsd', args.rafsd, '--rafsctl', args.rafsctl,
           '--mkrafs', args.mkrafs, '--work', args.work, '--fixtures', args.fixtures] + args.cases
    sys.exit(subprocess.run(cmd, cwd=REPO).returncode)


if __name__ == '__main__':
    main()
