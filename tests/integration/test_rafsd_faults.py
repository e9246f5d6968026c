#!/usr/bin/env python3
"""A fault-injecting proxy of the test's own between rafsd (registry backend, fanotify engine) and
Debian's docker-registry on 127.0.0.1: bursts of 503, connection resets, truncated bodies, a
stalled response, a reply that never starts, 429 with Retry-After, flipped bits in a body.

1. with faults on about 40% of the blob GETs, four threads read cold files piece by piece: every
   piece read returns the right bytes or EIO, never wrong bytes; none takes longer than the
   configured timeouts allow; every kind of fault was made; the retries show in `rafsctl status`;
2. with every blob GET failing, a read ends with EIO within the bound, and rafsd logs one line
   naming the blob, the byte range and the URL;
3. with the proxy healthy again, the same file reads back right (a failure is not remembered);
4. one GET left without any reply (the proxy, like a plain HTTP/1.x server, closes each
   connection after one reply): a piece of another file reads right within 1 s while it hangs (its
   GET does not wait on that connection to learn whether it could share it), and the first piece
   reads right after the retry;
5. `rafsctl mount HOST/REPO:TAG` while its registry leaves three GETs without a reply: `rafsctl
   list` and `status` answer meanwhile, a second mount on the same mount point is refused, and the
   mount completes once the registry answers;
6. a manifest reply whose body never ends: the mount fails within a second or so, with one line
   naming the oversized reply, instead of reading until the transfer timeout (and again per retry).
"""

import errno
import os
import random
import subprocess
import sys
import threading
import time

from rafstest import harness
from rafstest.harness import log
from rafstest.rafsd import RafsdServe, network_config, rafsctl, rafsctl_status, small_image, start_test
from rafstest.rafsimage import Pusher
from rafstest.servers import FaultProxy, free_port, push_blob, registry

KiB, MiB = 1 << 10, 1 << 20
FILES = [('f%d' % i, 2 * MiB) for i in range(7)]
PIECE = 64 * KiB
REPO = 'test/img'
FAULTS = ['503', '503', '503', 'reset', 'truncate', 'stall', '429', 'flip']
TRANSPORT = {'retries': 4, 'backoff_base_ms': 20, 'backoff_max_ms': 300, 'retry_after_max': 2, 'timeout': 10,
             'connect_timeout': 5, 'low_speed_limit': 1024, 'low_speed_time': 2}
# A backend read takes at most (retries + 1) attempts of `timeout` plus the waits between them; a
# chunk with a bad digest is read once more (fetch.retries = 1).
READ_BOUND = 2 * ((TRANSPORT['retries'] + 1) * TRANSPORT['timeout'] + TRANSPORT['retries'] * TRANSPORT['retry_after_max'])


def read_pieces(path, expected, results):
    """Reads `path` PIECE by PIECE; appends (offset, 'ok' | 'eio' | 'wrong' | error, seconds)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        for offset in range(0, len(expected), PIECE):
            t0 = time.monotonic()
            try:
                data = os.pread(fd, PIECE, offset)
                outcome = 'ok' if data == expected[offset:offset + PIECE] else 'wrong'
            except OSError as e:
                outcome = 'eio' if e.errno == errno.EIO else 'error %s' % e
            results.append((path, offset, outcome, time.monotonic() - t0))
    finally:
        os.close(fd)


def main():
    args, mk, rafsd, ctl, ck = start_test('rafsd_faults', __doc__, tools=('docker-registry',))
    with harness.temp_dir('rafsd-faults-', keep=args.keep) as tmp:
        image = small_image(ck, mk, tmp, FILES, 33, chunk_size='64K')
        if image is None:
            return ck.finish()
        sources, boot, blob, mnt = image
        out = os.path.join(tmp, 'out')
        reg_port, proxy_port = free_port(), free_port()
        host = '127.0.0.1:%d' % proxy_port
        rnd = random.Random(7)
        plan = {'mode': 'some'}

        def choose(n):
            if plan['mode'] == 'all':
                return '503'
            if plan['mode'] == 'hang':
                plan['hangs'] -= 1
                if plan['hangs'] == 0:
                    plan['mode'] = 'none'
                return 'hang'
            if plan['mode'] == 'hang-one':
                plan['mode'] = 'none'
                return 'hang'
            if plan['mode'] == 'none':
                return 'ok'
            if rnd.random() < 0.6:
                return 'ok'
            return FAULTS[n % len(FAULTS)]

        with registry(tmp, 'registry', reg_port), FaultProxy(proxy_port, reg_port, choose).start() as proxy:
            push_blob('http://127.0.0.1:%d' % reg_port, REPO, os.path.join(out, 'blobs', blob))
            cfg = network_config(tmp, 'serve', {'type': 'registry'}, fetch={'amplify': 0, 'max_inflight': 8, 'retries': 1},
                                 **{'backend.registry': {'host': host, 'repo': REPO,
                                                         'docker_config': os.path.join(tmp, 'none.json')},
                                    'backend.transport': TRANSPORT,
                                    'backend.hosts."%s"' % host: {'plain_http': True}})
            sock = os.path.join(tmp, 'serve.sock')
            with RafsdServe(rafsd, cfg, sock, os.path.join(tmp, 'serve.log')) as srv:
                if not ck.check(srv.start(), 'rafsd serve answers', srv.log_text()[-2000:]):
                    return ck.finish()
                r = rafsctl(ctl, sock, 'mount', boot, mnt)
                if not ck.check(r.returncode == 0, 'rafsctl mount (through the proxy, no faults yet)',
                                (r.stderr or b'').decode()):
                    return ck.finish()

                ck.section('faults on about 40% of the blob GETs')
                proxy.active = True
                results = []
                threads = [threading.Thread(target=read_pieces, args=(os.path.join(mnt, name), sources[name], results))
                           for name, _ in FILES[:4]]
                t0 = time.monotonic()
                for t in threads:
                    t.start()
                for t in threads:
                    t.join(timeout=4 * READ_BOUND)
                ck.check(not any(t.is_alive() for t in threads), 'the readers finished (%.1f s)' % (time.monotonic() - t0))
                # a reader that died (open failed, an exception) leaves pieces out
                expected = sum(len(range(0, len(sources[name]), PIECE)) for name, _ in FILES[:4])
                ck.check(len(results) == expected, 'every piece was read (%d of %d)' % (len(results), expected))
                outcomes = {}
                for _, _, outcome, _ in results:
                    outcomes[outcome] = outcomes.get(outcome, 0) + 1
                slowest = max((s for _, _, _, s in results), default=0)
                log('  outcomes %r, slowest piece %.1f s, faults made %r' % (outcomes, slowest, dict(proxy.made)))
                ck.check(outcomes.get('wrong', 0) == 0, 'no piece read wrong bytes')
                ck.check(set(outcomes) <= {'ok', 'eio'}, 'every piece right or EIO')
                ck.check(outcomes.get('ok', 0) >= 0.9 * len(results), 'at least 90%% of the pieces read (%r)' % outcomes)
                ck.check(slowest <= READ_BOUND, 'no piece took longer than the timeouts allow (%.1f <= %d s)'
                         % (slowest, READ_BOUND))
                missing = [f for f in set(FAULTS) if proxy.made[f] == 0]
                ck.check(not missing, 'every kind of fault was made', 'never: %r' % missing)
                status = rafsctl_status(ctl, sock) or {}
                b = (status.get('backends') or [{}])[0]
                log('  backend status: %r' % b)
                # Every spoiled attempt is retried but the last of a request that runs out of them.
                spoiled = sum(proxy.made[f] for f in ('503', '429', 'reset', 'truncate', 'stall'))
                ck.check(b.get('retries', 0) >= spoiled - b.get('failures', 0) > 0,
                         'the retries show in status (%r retries, %d spoiled attempts, %r failures)'
                         % (b.get('retries'), spoiled, b.get('failures')))

                ck.section('every blob GET failing: EIO within the bound, one line naming blob, range and URL')
                plan['mode'] = 'all'
                name = FILES[4][0]
                results = []
                read_pieces(os.path.join(mnt, name), sources[name][:PIECE], results)
                _, _, outcome, seconds = results[0]
                ck.check(outcome == 'eio', 'the read fails with EIO (%s)' % outcome)
                ck.check(seconds <= READ_BOUND, 'within the bound (%.1f <= %d s)' % (seconds, READ_BOUND))
                url = 'http://%s/v2/%s/blobs/sha256:%s' % (host, REPO, blob)
                lines = [line for line in srv.log_text().splitlines() if 'error' in line and url in line]
                ck.check(lines and blob in lines[-1] and 'bytes' in lines[-1],
                         'rafsd logs the blob, the range and the URL', lines[-1] if lines else srv.log_text()[-1500:])

                ck.section('the proxy healthy again: the same file reads right')
                proxy.active = False
                results = []
                read_pieces(os.path.join(mnt, name), sources[name], results)
                expected = len(range(0, len(sources[name]), PIECE))
                ck.check(len(results) == expected and all(outcome == 'ok' for _, _, outcome, _ in results),
                         'every piece right (%d of %d read)' % (len(results), expected))

                ck.section('one hanging GET holds no other read')
                # The proxy closes each connection after one reply, as a plain HTTP/1.x server may:
                # the next GET must get a connection of its own rather than wait for that one.
                name = FILES[5][0]
                plan['mode'] = 'hang-one'
                proxy.active = True
                hung = []
                first = threading.Thread(target=read_pieces, args=(os.path.join(mnt, name), sources[name][:PIECE], hung))
                first.start()
                harness.wait_for(lambda: proxy.made['hang'] > 0, timeout=10)
                time.sleep(0.2)
                other = FILES[6][0]
                fd = os.open(os.path.join(mnt, other), os.O_RDONLY)
                try:
                    t0 = time.monotonic()
                    data = os.pread(fd, PIECE, MiB)
                    seconds = time.monotonic() - t0
                finally:
                    os.close(fd)
                ck.check(data == sources[other][MiB:MiB + PIECE] and seconds < 1.0 and first.is_alive(),
                         'a piece of another file reads right in %.3f s while the first GET hangs' % seconds)
                first.join(timeout=READ_BOUND)
                ck.check(hung and hung[0][2] == 'ok', 'the piece whose GET hung reads right after a retry (%.1f s)'
                         % (hung[0][3] if hung else -1))
                proxy.active = False

                ck.section('a mount by reference waiting on its registry holds up no other request')
                Pusher('http://127.0.0.1:%d' % reg_port, REPO).rafs_image('rafs', boot, [os.path.join(out, 'blobs', blob)])
                mnt2 = os.path.join(tmp, 'mnt2')
                os.makedirs(mnt2)
                ref = '%s/%s:rafs' % (host, REPO)
                plan['mode'], plan['hangs'] = 'hang', 3
                hangs_before = proxy.made['hang']
                proxy.active = True
                mounting = subprocess.Popen([ctl, '--socket', sock, 'mount', ref, mnt2],
                                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                try:
                    harness.wait_for(lambda: proxy.made['hang'] > hangs_before, timeout=20)
                    listed = rafsctl(ctl, sock, 'list')
                    status = rafsctl(ctl, sock, 'status', '--json')
                    again = rafsctl(ctl, sock, 'mount', ref, mnt2)
                    waiting = mounting.poll() is None
                    _, err = mounting.communicate(timeout=4 * READ_BOUND)
                finally:
                    if mounting.poll() is None:
                        mounting.kill()
                        mounting.wait()
                proxy.active = False
                ck.check(listed.returncode == 0 and status.returncode == 0 and waiting,
                         'list and status answer while the mount waits on its registry',
                         'list %r, status %r, mount still waiting: %r' % (listed.returncode, status.returncode, waiting))
                ck.check(again.returncode not in (0, None) and b'is being mounted' in again.stderr,
                         'a second mount on that mount point meanwhile is refused', again.stderr.decode())
                ck.check(mounting.returncode == 0 and proxy.made['hang'] - hangs_before == 3,
                         'the mount completes once its registry answers (%d GETs hung)'
                         % (proxy.made['hang'] - hangs_before), err.decode())
                if mounting.returncode == 0:
                    name = FILES[6][0]
                    with open(os.path.join(mnt2, name), 'rb') as f:
                        ck.check(f.read() == sources[name], 'a file of the mount by reference reads right')
                    r = rafsctl(ctl, sock, 'umount', mnt2)
                    ck.check(r.returncode == 0, 'rafsctl umount of it', (r.stderr or b'').decode())

                ck.section('a manifest reply that never ends: refused at once, one line')
                proxy.manifest_fault = 'endless'
                mnt3 = os.path.join(tmp, 'mnt3')
                os.makedirs(mnt3)
                start = time.monotonic()
                r = rafsctl(ctl, sock, 'mount', ref, mnt3)
                took = time.monotonic() - start
                proxy.manifest_fault = None
                err = (r.stderr or b'').decode().strip()
                ck.check(r.returncode not in (0, None) and 'more than 4194304 bytes' in err and len(err.splitlines()) == 1,
                         'the mount fails naming the oversized reply', err)
                ck.check(took < TRANSPORT['timeout'], 'within %.1f s, not at the transfer timeout (%d s)'
                         % (took, TRANSPORT['timeout']))
                ck.check(not os.path.ismount(mnt3), 'nothing mounted')

                r = rafsctl(ctl, sock, 'umount', mnt)
                ck.check(r.returncode == 0, 'rafsctl umount', (r.stderr or b'').decode())
                ck.check(srv.stop() == 0, 'rafsd serve exits 0')
    return ck.finish()


if __name__ == '__main__':
    sys.exit(main())
