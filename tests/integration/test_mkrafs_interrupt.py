#!/usr/bin/python3
"""mkrafs stopped by a signal leaves nothing behind, also while it waits on a stalled input.

1. `mkrafs build -o NEW -` reading a tar from a pipe that stalls mid-file: SIGINT ends it with
   status 130 and one error line on stderr ("mkrafs: interrupted by SIGINT"), and NEW (with its
   staging dir) is gone;
2. the same into an existing empty output dir, SIGTERM: status 143, the dir is empty again;
3. `mkrafs convert --work-dir W` from Debian's docker-registry (plain http, behind the test's own
   proxy, which stalls every layer GET) into `oci:NEW`: SIGHUP, status 129, W empty, NEW absent;
4. `mkrafs convert` of a two-layer image into an existing `oci:` layout, the second layer's GET
   stalled: once the first layer's RAFS blob is in the layout, SIGINT, status 130, and the layout
   holds exactly the files it held before (no blob, no temporary file);
5. a second run of case 1 left to finish: the signal handling changes nothing for a run that ends
   by itself (the image builds, exit 0);
6. SIGKILL, which nothing can clean up after: a build killed so leaves its staging dir in the
   output dir, and a convert its work dir; the next run into the same output dir, or with the
   same --work-dir, removes it (once it is over a minute old: the test ages it) and says so,
   while the staging dir of a build still running is left alone.
Each signal is sent once mkrafs has made its staging or work directory, and each exit is waited
for at most 10 s.

Exit: 0 pass, 77 skip (not root / no EROFS / no docker-registry), 1 fail.
"""

import gzip
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from rafstest import harness  # noqa: E402
from rafstest.harness import log, text  # noqa: E402
from rafstest.servers import FaultProxy, free_port, push_data, push_manifest, registry  # noqa: E402

MiB = 1 << 20
REPO = 'test/app'
EXIT_BOUND = 10


def tar_header(name, size):
    info = tarfile.TarInfo(name)
    info.size = size
    return info.tobuf(format=tarfile.GNU_FORMAT)


def wait_signalled(ck, proc, sig, what, expect_status):
    """Sends `sig` to `proc` and checks the status and the one line mkrafs prints."""
    proc.send_signal(sig)
    t0 = time.monotonic()
    try:
        _, err = proc.communicate(timeout=EXIT_BOUND)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        ck.check(False, '%s: mkrafs ended within %d s of %s' % (what, EXIT_BOUND, sig.name))
        return
    lines = text(err).strip().splitlines()
    log('  %s: status %s after %.2f s, stderr %r' % (what, proc.returncode, time.monotonic() - t0, lines))
    ck.check(proc.returncode == expect_status, '%s: exit status %d (%s)' % (what, expect_status, proc.returncode))
    # Progress lines may come before it (convert); the error line is the last and only one.
    errors = [line for line in lines if line.startswith('mkrafs:')]
    ck.check(errors == ['mkrafs: interrupted by %s' % sig.name] and lines[-1] == errors[0],
             '%s: one error line naming the signal, last' % what, repr(lines))


def stalled_build(ck, mkrafs, output, sig, what, expect_status):
    """mkrafs build from a pipe holding a tar cut short mid-file, which is never closed."""
    read_end, write_end = os.pipe()
    proc = subprocess.Popen([mkrafs, 'build', '-o', output, '-'], stdin=read_end, stderr=subprocess.PIPE)
    os.close(read_end)
    try:
        os.write(write_end, tar_header('big', 64 * MiB) + os.urandom(2 * MiB))
        staged = harness.wait_for(lambda: os.path.isdir(output) and any(n.startswith('.mkrafs-') for n in os.listdir(output)),
                                  timeout=EXIT_BOUND)
        ck.check(staged, '%s: mkrafs staged its output (%s)' % (what, os.listdir(output) if os.path.isdir(output) else '-'))
        wait_signalled(ck, proc, sig, what, expect_status)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(write_end)


def oci_image(layers=1):
    """(config bytes, [layer bytes]): gzip tar layers of 4 MiB of random data each."""
    tars = []
    for n in range(layers):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode='w', format=tarfile.GNU_FORMAT) as t:
            data = os.urandom(4 * MiB)
            info = tarfile.TarInfo('data%d' % n)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
        tars.append(buf.getvalue())
    config = json.dumps({'architecture': 'amd64', 'os': 'linux',
                         'rootfs': {'type': 'layers', 'diff_ids': ['sha256:' + hashlib.sha256(t).hexdigest() for t in tars]}})
    return config.encode(), [gzip.compress(t, compresslevel=1) for t in tars]


def push_image(base, config, layers):
    """Pushes the image as repo:v1; returns the layers' digests."""
    digests = [push_data(base, REPO, layer) for layer in layers]
    manifest = {'schemaVersion': 2, 'mediaType': 'application/vnd.oci.image.manifest.v1+json',
                'config': {'mediaType': 'application/vnd.oci.image.config.v1+json',
                           'digest': push_data(base, REPO, config), 'size': len(config)},
                'layers': [{'mediaType': 'application/vnd.oci.image.layer.v1.tar+gzip', 'digest': d, 'size': len(layer)}
                           for d, layer in zip(digests, layers)]}
    push_manifest(base, REPO, 'v1', 'application/vnd.oci.image.manifest.v1+json', json.dumps(manifest).encode())
    return digests


def interrupted_convert(ck, mkrafs, tmp, work_name, proxy_port, target, sig, what, ready, ready_what):
    """`mkrafs convert` of repo:v1 through the proxy into oci:TARGET with a new work dir, signalled
    once ready(work dir) holds; checks the exit and that the work dir is left empty."""
    work = os.path.join(tmp, work_name)
    os.makedirs(work)
    cmd = [mkrafs, 'convert', '--plain-http', '--authfile', os.path.join(tmp, 'none.json'), '--work-dir', work,
           '127.0.0.1:%d/%s:v1' % (proxy_port, REPO), 'oci:' + target]
    log('$ ' + ' '.join(cmd))
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        ck.check(harness.wait_for(lambda: ready(work), timeout=EXIT_BOUND), '%s: %s' % (what, ready_what))
        wait_signalled(ck, proc, sig, what, 128 + sig)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    ck.check(os.listdir(work) == [], '%s: the work dir holds nothing' % what, repr(os.listdir(work)))


def stalled_convert(ck, mkrafs, tmp):
    reg_port, proxy_port = free_port(), free_port()
    base = 'http://127.0.0.1:%d' % reg_port
    config, layers = oci_image()
    # The first blob GET (the config) passes, every later one (the layer) stalls.
    with registry(tmp, 'registry', reg_port), FaultProxy(proxy_port, reg_port, lambda n: 'ok' if n == 0 else 'stall',
                                                         stall_seconds=60).start() as proxy:
        push_image(base, config, layers)
        proxy.active = True
        target = os.path.join(tmp, 'converted')
        interrupted_convert(ck, mkrafs, tmp, 'work', proxy_port, target, signal.SIGHUP, 'convert',
                                   lambda w: os.listdir(w) and proxy.made['stall'] > 0,
                                   'mkrafs made its work dir and waits on the stalled layer')
        ck.check(not os.path.exists(target), 'convert: no OCI layout was left at the target')


def layout_files(layout):
    return sorted(os.path.relpath(os.path.join(d, f), layout) for d, _, files in os.walk(layout) for f in files)


def stalled_convert_into_layout(ck, mkrafs, tmp):
    """Two layers, the second one's GET stalls: the first layer's RAFS blob is written into the
    existing layout target, then SIGINT: the layout is left as it was."""
    reg_port, proxy_port = free_port(), free_port()
    base = 'http://127.0.0.1:%d' % reg_port
    config, layers = oci_image(2)
    target = os.path.join(tmp, 'existing-layout')
    os.makedirs(os.path.join(target, 'blobs', 'sha256'))
    with open(os.path.join(target, 'oci-layout'), 'w') as f:
        f.write('{"imageLayoutVersion": "1.0.0"}')
    with open(os.path.join(target, 'index.json'), 'w') as f:
        f.write('{"schemaVersion": 2, "manifests": []}')
    with open(os.path.join(target, 'blobs', 'sha256', hashlib.sha256(b'other').hexdigest()), 'wb') as f:
        f.write(b'other')
    before = layout_files(target)
    with registry(tmp, 'registry2', reg_port):
        digests = push_image(base, config, layers)
        stalled_digest = digests[1]
        with FaultProxy(proxy_port, reg_port, lambda n, path: 'stall' if path.endswith(stalled_digest) else 'ok',
                        stall_seconds=60, by_path=True).start() as proxy:
            proxy.active = True
            interrupted_convert(ck, mkrafs, tmp, 'work2', proxy_port, target, signal.SIGINT,
                                'convert into an existing layout',
                                lambda _: len(os.listdir(os.path.join(target, 'blobs', 'sha256'))) > 1
                                and proxy.made['stall'] > 0,
                                'the first layer\'s blob is in the layout while the second layer stalls')
            after = layout_files(target)
            ck.check(after == before, 'convert into an existing layout: it holds what it held before', repr(after))


def age(path):
    """Makes `path` look two minutes old: a run's directory younger than a minute is never removed."""
    then = time.time() - 120
    os.utime(path, (then, then))


def run_dirs(parent, prefix):
    return [n for n in os.listdir(parent) if n.startswith(prefix)]


def killed_build(ck, mkrafs, tmp, small_tar):
    killed, busy = os.path.join(tmp, 'killed'), os.path.join(tmp, 'busy')
    for d in (killed, busy):
        os.makedirs(d)
    procs, pipes = [], []
    try:
        for d in (killed, busy):
            read_end, write_end = os.pipe()
            procs.append(subprocess.Popen([mkrafs, 'build', '-o', d, '-'], stdin=read_end, stderr=subprocess.PIPE))
            os.close(read_end)
            pipes.append(write_end)
            os.write(write_end, tar_header('big', 64 * MiB) + os.urandom(2 * MiB))
            ck.check(harness.wait_for(lambda: run_dirs(d, '.mkrafs-'), timeout=EXIT_BOUND),
                     'build into %s: staged' % os.path.basename(d))
        procs[0].kill()
        procs[0].wait()
        left = run_dirs(killed, '.mkrafs-')
        ck.check(len(left) == 1, 'a build killed by SIGKILL leaves its staging dir', repr(os.listdir(killed)))
        for d in (killed, busy):
            for n in run_dirs(d, '.mkrafs-'):
                age(os.path.join(d, n))
        r = harness.run([mkrafs, 'build', '-o', killed, small_tar], timeout=120)
        ck.check(r.returncode == 0 and sorted(os.listdir(killed)) == ['blobs', 'image.boot']
                 and 'left by a run that did not end' in text(r.stderr),
                 'the next build into that dir removes it, says so, and builds',
                 'exit %s, %r, %s' % (r.returncode, os.listdir(killed), text(r.stderr)))
        r = harness.run([mkrafs, 'build', '-o', busy, small_tar], timeout=120)
        ck.check(r.returncode != 0 and 'is not empty' in text(r.stderr) and len(run_dirs(busy, '.mkrafs-')) == 1
                 and procs[1].poll() is None,
                 'the staging dir of a build still running is left alone (the new build is refused)',
                 'exit %s, %r, %s' % (r.returncode, os.listdir(busy), text(r.stderr)))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        for fd in pipes:
            os.close(fd)


def killed_convert(ck, mkrafs, tmp):
    reg_port, proxy_port = free_port(), free_port()
    base = 'http://127.0.0.1:%d' % reg_port
    config, layers = oci_image()
    work = os.path.join(tmp, 'work-killed')
    os.makedirs(work)
    with registry(tmp, 'registry3', reg_port), FaultProxy(proxy_port, reg_port, lambda n: 'ok' if n == 0 else 'stall',
                                                          stall_seconds=60).start() as proxy:
        push_image(base, config, layers)
        proxy.active = True
        cmd = [mkrafs, 'convert', '--plain-http', '--authfile', os.path.join(tmp, 'none.json'), '--work-dir', work]
        proc = subprocess.Popen(cmd + ['127.0.0.1:%d/%s:v1' % (proxy_port, REPO), 'oci:' + os.path.join(tmp, 'conv-killed')],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            ck.check(harness.wait_for(lambda: os.listdir(work) and proxy.made['stall'] > 0, timeout=EXIT_BOUND),
                     'convert: made its work dir and waits on the stalled layer')
        finally:
            proc.kill()
            proc.wait()
        left = run_dirs(work, 'mkrafs-convert-')
        ck.check(len(left) == 1, 'a convert killed by SIGKILL leaves its work dir', repr(os.listdir(work)))
        for n in left:
            age(os.path.join(work, n))
        target = os.path.join(tmp, 'conv-after')
        r = harness.run(cmd + ['127.0.0.1:%d/%s:v1' % (reg_port, REPO), 'oci:' + target], timeout=120)
        ck.check(r.returncode == 0 and os.listdir(work) == [] and 'left by a run that did not end' in text(r.stderr),
                 'the next convert with that --work-dir removes it, says so, and converts',
                 'exit %s, %r, %s' % (r.returncode, os.listdir(work), text(r.stderr)))


def main():
    args, mkrafs, ck = harness.start_mkrafs_test('test_mkrafs_interrupt', __doc__, ('docker-registry',))
    with harness.temp_dir('rafs-interrupt-', keep=args.keep) as tmp:
        ck.section('1. build from a stalled pipe into a new dir, SIGINT')
        new = os.path.join(tmp, 'new')
        stalled_build(ck, mkrafs, new, signal.SIGINT, 'build, new dir', 128 + signal.SIGINT)
        ck.check(not os.path.exists(new), 'build, new dir: the output dir is gone')

        ck.section('2. build from a stalled pipe into an existing empty dir, SIGTERM')
        existing = os.path.join(tmp, 'existing')
        os.makedirs(existing)
        stalled_build(ck, mkrafs, existing, signal.SIGTERM, 'build, existing dir', 128 + signal.SIGTERM)
        ck.check(os.path.isdir(existing) and os.listdir(existing) == [], 'build, existing dir: left empty, as it was',
                 repr(os.listdir(existing)) if os.path.isdir(existing) else 'gone')

        ck.section('3. convert from a registry whose layer GET stalls, SIGHUP')
        stalled_convert(ck, mkrafs, tmp)

        ck.section('4. convert into an existing layout, the second layer stalls after the first one\'s blob is written, SIGINT')
        stalled_convert_into_layout(ck, mkrafs, tmp)

        ck.section('5. a build that is not interrupted')
        tar = os.path.join(tmp, 'small.tar')
        with open(tar, 'wb') as f:
            f.write(tar_header('small', 3 * MiB) + os.urandom(3 * MiB) + bytes(-(3 * MiB) % 512) + bytes(1024))
        out = os.path.join(tmp, 'whole')
        r = harness.run([mkrafs, 'build', '-o', out, tar], timeout=120)
        ck.check(r.returncode == 0 and os.path.isfile(os.path.join(out, 'image.boot')),
                 'the image builds, exit 0', text(r.stderr))

        ck.section('6. SIGKILL: the next run removes what the killed one left')
        killed_build(ck, mkrafs, tmp, tar)
        killed_convert(ck, mkrafs, tmp)
    return ck.finish()


if __name__ == '__main__':
    sys.exit(main())
