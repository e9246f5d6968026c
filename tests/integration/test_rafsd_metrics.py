#!/usr/bin/env python3
"""Prometheus metrics of rafsd (fanotify engine, prefetch off, no read amplification):

1. `rafsd mount` with [metrics] on a loopback TCP port; every file is read: GET /metrics passes
   Debian's `promtool check metrics`, and its counters match what the reads must have caused,
   computed from the bootstrap's own chunk table (every chunk fetched once, bytes fetched = the
   chunks' stored sizes, every chunk present, no errors), with miss and backend latency
   histograms that counted the misses and fetches;
2. a real `prometheus` started by the test scrapes it, and a query returns the same counters;
3. a unix-socket address answers too (curl --unix-socket), other paths are 404;
4. bad addresses are one error line naming the key and a non-zero exit, and a port already taken
   is an error before anything is mounted.
"""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

from rafstest import harness
from rafstest.harness import log
from rafstest.rafsd import RafsdMount, chunk_table, make_small_tree, start_test, write_config

MiB = 1 << 20
FILES = [('f%d' % i, 1 * MiB + 7000 * i) for i in range(6)] + [('small', 5000)]
SCRAPE_TIMEOUT = 60


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def parse(text):
    """{(name, frozenset(labels)): value} of Prometheus text."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith('#'):
            continue
        head, value = line.rsplit(' ', 1)
        labels = frozenset()
        if '{' in head:
            name, rest = head.split('{', 1)
            labels = frozenset(tuple(kv.split('=', 1)) for kv in rest.rstrip('}').split('",') if kv)
            labels = frozenset((k, v.strip('"')) for k, v in labels)
        else:
            name = head
        out[(name, labels)] = float(value)
    return out


def value(metrics, name, **labels):
    want = frozenset(labels.items())
    found = [v for (n, l), v in metrics.items() if n == name and want <= l]
    return found[0] if len(found) == 1 else None


def main():
    args, mk, rafsd, _, ck = start_test('rafsd_metrics', __doc__, tools=('promtool', 'prometheus', 'curl'))
    with harness.temp_dir('rafsd-metrics-', keep=args.keep) as tmp:
        src, out, mnt = (os.path.join(tmp, n) for n in ('src', 'out', 'mnt'))
        os.makedirs(mnt)
        content = make_small_tree(src, FILES, seed=5)
        if not ck.cmd_ok(mk.build(out, [src]), 'mkrafs build'):
            return ck.finish()
        boot = os.path.join(out, 'image.boot')
        with open(boot, 'rb') as f:
            table = chunk_table(f.read())
        blob_id = os.listdir(os.path.join(out, 'blobs'))[0]
        chunks = len(table)
        stored = sum(c['compressed_size'] for c in table.values())
        port = free_port()
        config = write_config(os.path.join(tmp, 'config.toml'), prefetch={'enable': False}, fetch={'amplify': 0},
                              metrics={'address': '127.0.0.1:%d' % port})
        m = RafsdMount(rafsd, boot, mnt, blob_dir=os.path.join(out, 'blobs'), cache_dir=os.path.join(tmp, 'cache'),
                       config=config, engine='fanotify')
        prom = None
        with m:
            if not ck.check(m.start(), 'rafsd mounted the image with metrics on 127.0.0.1:%d' % port,
                            m.log_text()[-2000:]):
                return ck.finish()
            for name, data in content.items():
                with open(os.path.join(mnt, name), 'rb') as f:
                    ck.check(f.read() == data, 'read %s' % name)
            url = 'http://127.0.0.1:%d/metrics' % port
            text = urllib.request.urlopen(url, timeout=10).read().decode()
            r = subprocess.run(['promtool', 'check', 'metrics'], input=text.encode(), capture_output=True, timeout=60)
            ck.check(r.returncode == 0, 'promtool check metrics accepts /metrics', (r.stdout + r.stderr).decode())
            got = parse(text)
            b = {'blob': blob_id}
            ck.check(value(got, 'rafsd_mounts', engine='fanotify') == 1, 'one fanotify mount')
            ck.check(value(got, 'rafsd_blob_chunks', **b) == chunks, 'chunks: %d' % chunks)
            ck.check(value(got, 'rafsd_blob_chunks_present', **b) == chunks, 'every chunk present after the reads')
            ck.check(value(got, 'rafsd_blob_fetched_bytes_total', **b) == stored,
                     'bytes fetched = the stored chunks\' sizes (%d)' % stored,
                     str(value(got, 'rafsd_blob_fetched_bytes_total', **b)))
            misses = value(got, 'rafsd_blob_misses_total', **b)
            ck.check(misses is not None and misses >= 1, 'misses counted (%s)' % misses)
            ck.check(value(got, 'rafsd_blob_errors_total', **b) == 0, 'no errors')
            ck.check(value(got, 'rafsd_miss_latency_seconds_count', **b) == misses,
                     'the miss latency histogram counted every miss')
            fetches = value(got, 'rafsd_backend_request_latency_seconds_count', **b)
            ck.check(fetches is not None and 1 <= fetches <= chunks, 'backend requests timed (%s)' % fetches)
            cache_bytes = value(got, 'rafsd_cache_size_bytes')
            data_bytes = os.stat(os.path.join(tmp, 'cache', blob_id + '.blob.data')).st_blocks * 512
            ck.check(cache_bytes is not None and cache_bytes >= data_bytes,
                     'cache size %s covers the blob\'s cache file (%d bytes on disk)' % (cache_bytes, data_bytes))
            ck.check(value(got, 'rafsd_cache_evictions_total') == 0 and
                     value(got, 'rafsd_cache_gc_runs_total', trigger='auto') == 0,
                     'an unbounded cache: no collection, nothing evicted')
            events = value(got, 'rafsd_fanotify_events_total')
            ck.check(events is not None and events >= misses, 'fanotify events counted (%s)' % events)
            notfound = subprocess.run(['curl', '-s', '-o', '/dev/null', '-w', '%{http_code}',
                                       'http://127.0.0.1:%d/other' % port], capture_output=True, timeout=30)
            ck.check(notfound.stdout == b'404', 'another path is 404')

            # A real Prometheus scrapes it.
            prom_port = free_port()
            prom_dir = os.path.join(tmp, 'prometheus')
            os.makedirs(prom_dir)
            with open(os.path.join(prom_dir, 'prometheus.yml'), 'w') as f:
                f.write('global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: rafsd\n'
                        '    static_configs:\n      - targets: ["127.0.0.1:%d"]\n' % port)
            prom_log = open(os.path.join(prom_dir, 'log'), 'wb')
            prom = subprocess.Popen(['prometheus', '--config.file=' + os.path.join(prom_dir, 'prometheus.yml'),
                                     '--storage.tsdb.path=' + os.path.join(prom_dir, 'data'),
                                     '--web.listen-address=127.0.0.1:%d' % prom_port],
                                    stdout=prom_log, stderr=subprocess.STDOUT)
            try:
                query = 'rafsd_blob_fetched_bytes_total{blob="%s"}' % blob_id
                api = 'http://127.0.0.1:%d/api/v1/query?query=%s' % (prom_port, urllib.parse.quote(query))
                scraped = None
                deadline = time.monotonic() + SCRAPE_TIMEOUT
                while time.monotonic() < deadline and scraped is None:
                    try:
                        reply = json.load(urllib.request.urlopen(api, timeout=5))
                        result = reply.get('data', {}).get('result', [])
                        if result:
                            scraped = float(result[0]['value'][1])
                    except OSError:
                        pass
                    if scraped is None:
                        time.sleep(0.5)
                ck.check(scraped == stored, 'prometheus scraped rafsd: %s = %s' % (query, scraped))
            finally:
                prom.terminate()
                try:
                    prom.wait(30)
                except subprocess.TimeoutExpired:
                    prom.kill()
                    prom.wait()
                prom_log.close()

            # A port already taken: refused before anything is mounted.
            mnt2 = os.path.join(tmp, 'mnt2')
            os.makedirs(mnt2)
            r = subprocess.run([rafsd, 'mount', '--config', config, '--engine', 'fanotify',
                                '--blob-dir', os.path.join(out, 'blobs'), '--cache-dir', os.path.join(tmp, 'cache2'),
                                boot, mnt2], capture_output=True, timeout=60)
            err = r.stderr.decode()
            ck.check(r.returncode != 0 and 'cannot bind the metrics endpoint 127.0.0.1:%d' % port in err,
                     'a taken port is an error naming it', err)
            ck.check(not os.path.ismount(mnt2), 'and nothing was mounted')
            ck.check(m.stop() == 0, 'rafsd stops with exit 0')

        # A unix socket address.
        sock = os.path.join(tmp, 'run', 'metrics.sock')
        config2 = write_config(os.path.join(tmp, 'unix.toml'), prefetch={'enable': False},
                               metrics={'address': 'unix:' + sock})
        m2 = RafsdMount(rafsd, boot, mnt, blob_dir=os.path.join(out, 'blobs'), cache_dir=os.path.join(tmp, 'cache'),
                        config=config2, engine='fanotify')
        with m2:
            if ck.check(m2.start(), 'rafsd mounted the image with metrics on unix:' + sock, m2.log_text()[-2000:]):
                r = subprocess.run(['curl', '-s', '--unix-socket', sock, 'http://rafsd/metrics'], capture_output=True,
                                   timeout=30)
                got = parse(r.stdout.decode())
                ck.check(value(got, 'rafsd_blob_chunks_present', blob=blob_id) == chunks,
                         'the unix socket serves the metrics (the cache from before is complete)')
                ck.check(m2.stop() == 0, 'rafsd stops with exit 0')
        ck.check(not os.path.exists(sock), 'the socket file is removed at exit')

        # Bad addresses.
        for address, key_msg in [('10.1.2.3:9100', 'a loopback address'), ('127.0.0.1:0', 'HOST:PORT'),
                                 ('unix:relative', 'unix:/absolute/path'), ('nonsense', 'HOST:PORT')]:
            bad = write_config(os.path.join(tmp, 'bad.toml'), metrics={'address': address})
            r = subprocess.run([rafsd, 'mount', '--config', bad, '--blob-dir', os.path.join(out, 'blobs'), boot, mnt],
                               capture_output=True, timeout=60)
            lines = r.stderr.decode().strip().splitlines()
            ck.check(r.returncode != 0 and len(lines) == 1 and 'address' in lines[0] and key_msg in lines[0],
                     'metrics.address = %r: one error line naming the key' % address, r.stderr.decode())
            ck.check(not os.path.ismount(mnt), 'and nothing mounted')
    return ck.finish()


if __name__ == '__main__':
    sys.exit(main())
