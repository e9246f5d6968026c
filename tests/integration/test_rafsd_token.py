#!/usr/bin/env python3
"""Bearer tokens: docker-registry on 127.0.0.1 in token mode (TLS, `auth.token`) with a token
service of the test's own (python3-jwt); rafsd serve's registry backend, fanotify engine, no
prefetch, no read amplification, 64 KiB chunks, so a slow cold read of a few files is a long
stream of range requests from several threads at once. The client under test is rafsd's.

1. tokens valid 3 s, expires_in 3: renewed before they expire; no read fails, every byte is
   right, and there are no more token fetches than one per renewal period (plus one);
2. tokens valid 3 s at the registry but expires_in left out (the client assumes 60 s): each expiry
   shows as a 401, answered by one token fetch however many reads got it;
3. the credentials in config.json change while mounted (the token service then knows only the new
   ones): the next token requests use them, no read fails;
4. `mkrafs convert` into one repository, then into another with --mount-from the first: every
   blob is mounted across repositories with a token that names both (the challenge's scope); and
   with --chunk-dict, a dict blob tried first from a repository without it is then mounted from
   the dict's own (the declined mount's upload session cancelled at best).
While the four threads read, rafsd holds one connection to the registry (HTTP/2: their requests
are streams on it), sampled with `ss`.
5. a token service whose token holds a CR LF and a header after it: refused (it would go into the
   registry's Authorization header as it is), and nothing is mounted.
`rafsctl status` and /metrics count the token refreshes: as many as the token service issued.
"""

import base64
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request

from rafstest import harness
from rafstest.harness import log
from rafstest.rafsd import RafsdServe, network_config, rafsctl, rafsctl_status, small_image, start_test
from rafstest.servers import TestCa, TokenIssuer, free_port, push_blob, registry

KiB, MiB = 1 << 10, 1 << 20
PHASES = ['early', 'on401', 'newcreds']
FILES_PER_PHASE = 4
FILE_SIZE = 2 * MiB
PIECE = 64 * KiB
PAUSE = 0.25  # between pieces: a phase reads for about 32 * 0.25 s = 8 s
REPO = 'test/img'
USER, PASSWORD = 'rafs', 'tok-pw-1'
USER2, PASSWORD2 = 'rafs2', 'tok-pw-2'


def write_docker_config(path, user, password):
    auth = base64.b64encode(('%s:%s' % (user, password)).encode()).decode()
    temp = path + '.tmp'
    with open(temp, 'w') as f:
        json.dump({'auths': {HOST[0]: {'auth': auth}}}, f)
    os.rename(temp, path)


HOST = [None]


def slow_read(paths, sources):
    """Reads every path in its own thread, PIECE by PIECE with a pause; returns the problems."""
    problems = []

    def reader(path, expected):
        try:
            with open(path, 'rb', buffering=0) as f:
                pos = 0
                while True:
                    piece = f.read(PIECE)
                    if not piece:
                        break
                    if piece != expected[pos:pos + len(piece)]:
                        problems.append('%s: wrong bytes at %d' % (path, pos))
                        return
                    pos += len(piece)
                    time.sleep(PAUSE)
                if pos != len(expected):
                    problems.append('%s: %d of %d bytes' % (path, pos, len(expected)))
        except OSError as e:
            problems.append('%s: %s' % (path, e))

    threads = [threading.Thread(target=reader, args=(p, sources[i])) for i, p in enumerate(paths)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
        if t.is_alive():
            problems.append('a reader still runs after 120 s')
    return problems


def main():
    args, mk, rafsd, ctl, ck = start_test('rafsd_token', __doc__, tools=('docker-registry', 'openssl', 'umoci', 'curl'))
    with harness.temp_dir('rafsd-token-', keep=args.keep) as tmp:
        files = [('%s/f%d' % (phase, i), FILE_SIZE) for phase in PHASES for i in range(FILES_PER_PHASE)]
        image = small_image(ck, mk, tmp, files, 21, chunk_size='64K')
        if image is None:
            return ck.finish()
        sources, boot, blob, mnt = image
        out = os.path.join(tmp, 'out')
        ca = TestCa(os.path.join(tmp, 'ca'))
        cert, key = ca.issue('registry')
        port, token_port = free_port(), free_port()
        host = HOST[0] = '127.0.0.1:%d' % port
        issuer = TokenIssuer(os.path.join(tmp, 'issuer'), token_port, {USER: PASSWORD}).start()
        with issuer, registry(tmp, 'registry', port, cert, key, auth=issuer.registry_auth()):
            # The test's own push token, by the same token service.
            req = urllib.request.Request('%s?service=%s&scope=repository:%s:pull,push' % (issuer.realm(), issuer.SERVICE, REPO),
                                         headers={'Authorization': 'Basic ' + base64.b64encode(
                                             ('%s:%s' % (USER, PASSWORD)).encode()).decode()})
            with urllib.request.urlopen(req, timeout=30) as r:
                push_token = json.load(r)['token']
            push_blob('https://' + host, REPO, os.path.join(out, 'blobs', blob), ca.context(),
                      {'Authorization': 'Bearer ' + push_token})
            issued_by_test = issuer.issued
            issuer.lifetime, issuer.told = 3, 3
            cfg_json = os.path.join(tmp, 'docker-config.json')
            write_docker_config(cfg_json, USER, PASSWORD)
            cfg = network_config(tmp, 'serve', {'type': 'registry'}, fetch={'amplify': 0, 'max_inflight': 8}, **{
                'backend.registry': {'host': host, 'repo': REPO, 'docker_config': cfg_json},
                'backend.transport': {'certs_dir': os.path.join(tmp, 'no-certs.d')},
                'backend.hosts."%s"' % host: {'ca_file': ca.cert},
                'metrics': {'address': 'unix:' + os.path.join(tmp, 'metrics.sock')}})
            sock = os.path.join(tmp, 'serve.sock')
            with RafsdServe(rafsd, cfg, sock, os.path.join(tmp, 'serve.log')) as srv:
                if not ck.check(srv.start(), 'rafsd serve answers', srv.log_text()[-2000:]):
                    return ck.finish()
                r = rafsctl(ctl, sock, 'mount', boot, mnt)
                if not ck.check(r.returncode == 0, 'rafsctl mount', (r.stderr or b'').decode()):
                    return ck.finish()

                connections = []

                def sample_connections(stop):
                    while not stop.wait(0.5):
                        r = subprocess.run(['ss', '-Htn', 'state', 'established', '( dport = :%d )' % port],
                                           capture_output=True, text=True)
                        connections.append(len([line for line in r.stdout.splitlines() if line.strip()]))

                def phase(name, lifetime, told, during=None):
                    issuer.lifetime, issuer.told = lifetime, told
                    before = issuer.issued
                    paths = [os.path.join(mnt, name, 'f%d' % i) for i in range(FILES_PER_PHASE)]
                    expected = [sources['%s/f%d' % (name, i)] for i in range(FILES_PER_PHASE)]
                    t0 = time.monotonic()
                    timer = threading.Timer(3.5, during) if during else None
                    if timer:
                        timer.start()
                    problems = slow_read(paths, expected)
                    if timer:
                        timer.join()
                    elapsed = time.monotonic() - t0
                    fetched = issuer.issued - before
                    log('  %s: %.1f s, %d tokens issued, %d refused' % (name, elapsed, fetched, issuer.refused))
                    ck.check(not problems, '%s: every read correct, none failed' % name, '; '.join(problems[:5]))
                    return elapsed, fetched

                ck.section('tokens renewed before they expire (expires_in 3)')
                stop = threading.Event()
                sampler = threading.Thread(target=sample_connections, args=(stop,))
                sampler.start()
                elapsed, fetched = phase('early', 3, 3)
                stop.set()
                sampler.join()
                ck.check(connections and max(connections) == 1,
                         'one connection to the registry for all readers (samples %r)' % connections[:20])
                # Renewed at 4/5 of 3 s: about one fetch per 2.4 s.
                bound = int(elapsed / 2.4) + 2
                ck.check(2 <= fetched <= bound, 'tokens renewed: %d fetches in %.1f s (2 to %d)' % (fetched, elapsed, bound))

                ck.section('tokens refused on expiry (no expires_in)')
                elapsed, fetched = phase('on401', 3, None)
                bound = int(elapsed / 3) + 2
                ck.check(2 <= fetched <= bound,
                         'one token fetch per expiry: %d in %.1f s (2 to %d)' % (fetched, elapsed, bound))

                ck.section('credentials changed in config.json while mounted')
                switched = {}

                def switch():
                    with issuer.lock:
                        issuer.users = {USER2: PASSWORD2}
                        switched['at'] = len(issuer.seen_users)
                    write_docker_config(cfg_json, USER2, PASSWORD2)

                phase('newcreds', 3, 3, during=switch)
                after = issuer.seen_users[switched.get('at', 0):]
                ck.check(after and after[-1] == USER2 and issuer.refused == 0,
                         'token requests after the change use the new credentials (%r, %d refused)'
                         % (after[-6:], issuer.refused))

                status = rafsctl_status(ctl, sock) or {}
                b = (status.get('backends') or [{}])[0]
                log('  backend status: %r' % b)
                ck.check(b.get('token_refreshes') == issuer.issued - issued_by_test,
                         'status counts the token refreshes (%r, issued %d)' % (b.get('token_refreshes'),
                                                                                issuer.issued - issued_by_test))
                raw = json.dumps(status)
                ck.check(PASSWORD not in raw and PASSWORD2 not in raw, 'no secret in the status')
                r = subprocess.run(['curl', '-s', '--unix-socket', os.path.join(tmp, 'metrics.sock'),
                                    'http://rafsd/metrics'], capture_output=True, timeout=60)
                metrics = r.stdout.decode()
                found = re.search(r'^rafsd_backend_token_refreshes_total\{backend="[^"]*"\} (\d+)$', metrics, re.M)
                ck.check(found is not None and int(found.group(1)) == issuer.issued - issued_by_test,
                         '/metrics counts the same token refreshes', metrics[-3000:])
                ck.check(PASSWORD not in metrics and PASSWORD2 not in metrics, 'no secret in /metrics')
                r = rafsctl(ctl, sock, 'umount', mnt)
                ck.check(r.returncode == 0, 'rafsctl umount', (r.stderr or b'').decode())
                ck.check(srv.stop() == 0, 'rafsd serve exits 0')
                text = srv.log_text()
                ck.check(PASSWORD not in text and PASSWORD2 not in text, 'no secret in the log')
            convert_across_repositories(ck, mk, tmp, host, ca, cfg_json)
            injected_token(ck, rafsd, ctl, tmp, host, ca, cfg_json, boot, mnt, issuer)
    return ck.finish()


def injected_token(ck, rafsd, ctl, tmp, host, ca, cfg_json, boot, mnt, issuer):
    ck.section('5. a token with a CR LF and a header after it')
    # A cache of its own: the blob must be fetched, so a token is.
    cfg = network_config(tmp, 'injected', {'type': 'registry'}, **{
        'backend.registry': {'host': host, 'repo': REPO, 'docker_config': cfg_json},
        'backend.transport': {'certs_dir': os.path.join(tmp, 'no-certs.d')},
        'backend.hosts."%s"' % host: {'ca_file': ca.cert}})
    sock = os.path.join(tmp, 'injected.sock')
    issuer.token_suffix = '\r\nX-Injected: by the token service'
    try:
        with RafsdServe(rafsd, cfg, sock, os.path.join(tmp, 'injected.log')) as srv:
            if not ck.check(srv.start(), 'rafsd serve answers', srv.log_text()[-2000:]):
                return
            r = rafsctl(ctl, sock, 'mount', boot, mnt)
            err = (r.stderr or b'').decode()
            ck.check(r.returncode != 0 and 'its token holds a space, a control or a non-ASCII character' in err
                     and not os.path.ismount(mnt), 'the token is refused, nothing is mounted', err)
            ck.check(srv.stop() == 0, 'rafsd serve exits 0')
    finally:
        issuer.token_suffix = ''


def push_counts(err):
    """(uploaded, already there, mounted) from mkrafs convert's 'pushed REF: ...' line, or None."""
    m = re.search(r'^pushed \S+: (\d+) blobs uploaded \([^)]*\), (\d+) already there, (\d+) mounted from other '
                  r'repositories$', err, re.MULTILINE)
    return tuple(int(n) for n in m.groups()) if m else None


def convert_across_repositories(ck, mk, tmp, host, ca, cfg_json):
    """4. `mkrafs convert` of a small OCI image into one repository, then into another with
    --mount-from the first: the second mounts every blob across repositories, which takes a token
    with pull on the first repository too (the registry names it in its challenge). Then a chunk
    dict blob tried first from a repository without it is mounted from the dict's own."""
    layout, bundle = os.path.join(tmp, 'layout'), os.path.join(tmp, 'bundle')
    harness.run(['umoci', 'init', '--layout', layout], quiet=True)
    harness.run(['umoci', 'new', '--image', layout + ':v1'], quiet=True)
    harness.run(['umoci', 'unpack', '--image', layout + ':v1', bundle], quiet=True)
    with open(os.path.join(bundle, 'rootfs', 'data'), 'wb') as f:
        f.write(os.urandom(MiB))
    harness.run(['umoci', 'repack', '--image', layout + ':v1', bundle], quiet=True)
    certs = os.path.join(tmp, 'certs.d', host)
    os.makedirs(certs)
    with open(ca.cert, 'rb') as src, open(os.path.join(certs, 'ca.crt'), 'wb') as dst:
        dst.write(src.read())
    write_docker_config(cfg_json, USER2, PASSWORD2)
    common = [mk.path, 'convert', '--authfile', cfg_json, '--cert-dir', os.path.dirname(certs)]
    r = harness.run(common + ['oci:%s:v1' % layout, '%s/conv/a:v1' % host])
    ck.check(r.returncode == 0, 'mkrafs convert into conv/a', (r.stderr or b'').decode()[-800:])
    r = harness.run(common + ['--mount-from', 'conv/a', 'oci:%s:v1' % layout, '%s/conv/b:v1' % host])
    err = (r.stderr or b'').decode()
    # the same image as in conv/a: its blob, its bootstrap layer and its config, all three mounted
    counts = push_counts(err)
    ck.check(r.returncode == 0 and counts == (0, 0, 3),
             'mkrafs convert into conv/b --mount-from conv/a: every blob mounted, none uploaded '
             '(uploaded, already there, mounted: %s)' % (counts,), err[-800:])
    # The chunk dict's blob, tried first from a repository without it: the registry opens an upload
    # session instead (202), whose cancel a pull+push token may not make; the next candidate, the
    # dict's own repository, has it.
    r = harness.run(common + ['--chunk-dict', '%s/conv/a:v1' % host, '--mount-from', 'conv/none',
                              'oci:%s:v1' % layout, '%s/conv/c:v1' % host])
    err = harness.text(r.stderr)
    # every chunk is in the dict: the image is conv/a's again, its blob (the dict blob), bootstrap
    # layer and config all mounted from conv/a, nothing uploaded
    counts = push_counts(err)
    ck.check(r.returncode == 0 and counts == (0, 0, 3),
             'mkrafs convert --chunk-dict conv/a --mount-from conv/none: the dict blob mounted from conv/a '
             '(uploaded, already there, mounted: %s)' % (counts,), err[-800:])


if __name__ == '__main__':
    sys.exit(main())
