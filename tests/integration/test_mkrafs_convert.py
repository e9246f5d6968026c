#!/usr/bin/env python3
"""mkrafs convert against Debian's docker-registry on 127.0.0.1 (TLS with a CA the test makes,
htpasswd auth), with an OCI image built by umoci (three gzip layers: a base, a layer that deletes
a file and empties a directory of the base with whiteouts and adds files, a layer repeating the
base's big file) and pushed by skopeo:

1. convert registry -> registry: the RAFS manifest has one Nydus blob layer per source layer that
   added chunks, the bootstrap layer last with Nydus's annotations, config diff_ids to match and
   the Nydus history entry; the bootstrap layer is a gzip'd tar of image/image.boot; the tree
   (mkrafs unpack --tar of the bootstrap over the blobs pulled by skopeo) equals umoci's unpack of
   the source, whiteouts applied; the repeated file is stored once;
2. the same source and options again: the same manifest digest, no blob uploaded;
3. into another repository of the same registry with --mount-from: every blob mounted across
   repositories, none sent;
4. --merge-index: an index holding the original manifest and the RAFS one, marked as Nydus marks it,
   the original's blobs mounted from the source repository; into a second registry, where nothing
   can be mounted, every blob sent; through a proxy that drops the reply to the first blob PUT
   (the upload committed), the conversion goes on; a target that refuses uploads stops the
   conversion at the first refusal, not after every layer is built;
5. oci: layout to oci: layout, and the layout result equals the registry result (same digest);
   with --prefetch-trace the prefetch table lists the traced files in order and their chunks lead
   their blobs, the tree still equal (a trace naming a missing path is an error); a
   Docker schema 2 copy of the source (skopeo --format v2s2) converts to the same RAFS image; an
   index of two platforms (and an attestation; only the index named in index.json): --platform
   picks one, --all-platforms converts both into an index of
   RAFS manifests, a platform the index lacks is an error listing the ones it has, and so is
   --platform naming another platform than a single manifest's;
6. --chunk-dict: a second image whose one layer repeats the first image's big file, converted with
   the first RAFS image as chunk dict: its blob holds only the new chunks, the dict's blob joins its
   manifest (mounted, not sent), and the tree reads back equal through rafsd; without the dict the
   blob is larger by the big file;
7. `rafsd mount IMAGE`: the converted image mounted by reference (fanotify engine) reads back equal
   to the source;
8. bad input, each one error line, non-zero exit, and the target tag never appears: an unknown
   tag, an image that is already RAFS, a layer media type it does not handle (encrypted), a config
   whose rootfs.diff_ids are wrong or too few, a layer whose bytes do not match its digest (a damaged OCI layout; into a new layout, none is left;
   into an existing one, its index and its blobs are as they were), wrong credentials, a registry
   whose CA is unknown, a target registry in read-only mode (its 405 named as such).
"""

import fcntl
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time

from rafstest import compare, harness
from rafstest.harness import log, run, text
from rafstest.rafsd import blob_section, chunk_table, inspect_chunks, start_test
from rafstest.oci import ImageRegistry
from rafstest.servers import ThreadedServer, docker_config, free_port, registry

MiB = 1 << 20


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, **kw)


def make_second_image(tmp, layout, tag, big):
    """One layer: a copy of the first image's big file (the base it shares) and a new file."""
    sh(['umoci', 'new', '--image', '%s:%s' % (layout, tag)])
    bundle = os.path.join(tmp, 'bundle2')
    sh(['umoci', 'unpack', '--image', '%s:%s' % (layout, tag), bundle])
    root = os.path.join(bundle, 'rootfs')
    os.makedirs(os.path.join(root, 'usr/bin'))
    shutil.copy(big, os.path.join(root, 'usr/bin/big'))
    with open(os.path.join(root, 'usr/bin/second'), 'wb') as f:
        f.write(os.urandom(200 * 1024))
    sh(['umoci', 'repack', '--image', '%s:%s' % (layout, tag), bundle])
    expected = os.path.join(tmp, 'expected2')
    sh(['umoci', 'unpack', '--image', '%s:%s' % (layout, tag), expected])
    return os.path.join(expected, 'rootfs')


def blob_sizes(raw):
    """Sizes of a RAFS manifest's data blob layers."""
    return [l['size'] for l in json.loads(raw)['layers'][:-1]]


def mount_image(ck, rafsd, tmp, reg, image, expected, label):
    """rafsd mount IMAGE MNT with the test's CA and credentials; compares the tree."""
    from rafstest.rafsd import RafsdMount, network_config
    name = label.replace(' ', '-')
    cfg = network_config(tmp, name, {'type': 'localfs'},
                         **{'backend.registry': {'docker_config': reg.auth_file},
                            'backend.transport': {'certs_dir': reg.certs_dir, 'retries': 1}})
    mnt = os.path.join(tmp, 'mnt-' + name)
    os.makedirs(mnt)
    with RafsdMount(rafsd, image, mnt, config=cfg, log_path=os.path.join(tmp, name + '.log')) as m:
        if ck.check(m.start(), '%s: rafsd mount %s' % (label, image), m.log_text()[-2000:]):
            ck.diffs('%s: tree through rafsd' % label, compare.compare_trees(expected, mnt, ignore=('root_mtime',)))
        ck.check(m.stop() == 0, '%s: rafsd exits 0' % label)


def make_oci_image(tmp, layout, tag):
    """Three layers with umoci; returns the directory of the expected final tree."""
    sh(['umoci', 'init', '--layout', layout])
    sh(['umoci', 'new', '--image', '%s:%s' % (layout, tag)])
    bundle = os.path.join(tmp, 'bundle')

    def layer(edit):
        shutil.rmtree(bundle, ignore_errors=True)
        sh(['umoci', 'unpack', '--image', '%s:%s' % (layout, tag), bundle])
        edit(os.path.join(bundle, 'rootfs'))
        sh(['umoci', 'repack', '--image', '%s:%s' % (layout, tag), bundle])

    def base(root):
        for d in ('usr/bin', 'etc/conf.d', 'var/lib/app'):
            os.makedirs(os.path.join(root, d), exist_ok=True)
        with open(os.path.join(root, 'usr/bin/big'), 'wb') as f:
            f.write(os.urandom(3 * MiB + 123))
        for i in range(20):
            with open(os.path.join(root, 'etc/conf.d/%02d.conf' % i), 'w') as f:
                f.write('setting %d\n' % i * (i + 1))
        with open(os.path.join(root, 'var/lib/app/gone'), 'w') as f:
            f.write('deleted by the next layer\n')
        os.symlink('big', os.path.join(root, 'usr/bin/link'))

    def upper(root):
        os.unlink(os.path.join(root, 'var/lib/app/gone'))
        shutil.rmtree(os.path.join(root, 'etc/conf.d'))
        os.makedirs(os.path.join(root, 'etc/conf.d'))
        with open(os.path.join(root, 'etc/conf.d/new.conf'), 'w') as f:
            f.write('only this one\n')
        os.makedirs(os.path.join(root, 'app'))
        with open(os.path.join(root, 'app/data'), 'wb') as f:
            f.write(os.urandom(MiB + 7))

    def repeat(root):
        shutil.copy(os.path.join(root, 'usr/bin/big'), os.path.join(root, 'app/big-copy'))

    layer(base)
    layer(upper)
    layer(repeat)
    # As image builders annotate the manifest (its source, its revision): kept by the conversion.
    sh(['umoci', 'config', '--image', '%s:%s' % (layout, tag),
        '--manifest.annotation', 'org.opencontainers.image.source=https://example.org/app'])
    expected = os.path.join(tmp, 'expected')
    sh(['umoci', 'unpack', '--image', '%s:%s' % (layout, tag), expected])
    return os.path.join(expected, 'rootfs')


class Registry:
    """The test's registry (rafstest.oci.ImageRegistry: TLS, htpasswd, its docker config and certs.d),
    with the raw manifests the checks compare; stopped when the `with` block ends."""

    def __init__(self, tmp, work_dir):
        self.registry = ImageRegistry(os.path.join(tmp, 'registry'))
        self.host, self.auth_file, self.certs_dir = self.registry.host, self.registry.auth_file, self.registry.certs_dir
        self.work_dir = work_dir

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.registry.stop()

    def skopeo(self, *args):
        return run(['skopeo', *args], timeout=300)

    def raw(self, ref, ck=None):
        r = self.skopeo('inspect', '--raw', '--cert-dir', self.certs_dir + '/' + self.host,
                        '--authfile', self.auth_file, 'docker://%s/%s' % (self.host, ref))
        if r.returncode != 0:
            return None
        return r.stdout

    def exists(self, ref):
        return self.raw(ref) is not None

    def absent(self, ref):
        """(True, None) if the registry says `ref` is not there (MANIFEST_UNKNOWN, or NAME_UNKNOWN for a
        repository never pushed to), (False, None) if it is there, (False, error) if the lookup failed
        for another reason (a lookup that cannot answer is not taken for an absent tag)."""
        r = self.skopeo('inspect', '--raw', '--cert-dir', self.certs_dir + '/' + self.host,
                        '--authfile', self.auth_file, 'docker://%s/%s' % (self.host, ref))
        if r.returncode == 0:
            return False, None
        err = text(r.stderr).strip()
        if re.search(r'manifest unknown|name unknown', err, re.IGNORECASE):
            return True, None
        return False, 'skopeo inspect %s failed (exit %s): %s' % (ref, r.returncode, err)


class RegistryProxy(ThreadedServer):
    """A plain-HTTP proxy of the test's own in front of a registry on 127.0.0.1 that forwards each
    request whole (the client's Host kept, so that upload Locations name the proxy). Subclasses
    change what a request gets: refuse() answers it instead of the registry, hold() delays it,
    drop_reply() closes the connection instead of relaying the registry's reply."""

    def __init__(self, port, upstream_port):
        self.port, self.upstream_port = port, upstream_port

    def refuse(self, command, path):
        return None

    def hold(self, command, path):
        pass

    def drop_reply(self, command, path):
        return False

    def __enter__(self):
        import http.client
        import http.server
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = 'HTTP/1.1'

            def reply(self, status, reason, headers, data):
                self.send_response(status, reason)
                for name, value in headers:
                    if name.lower() not in ('connection', 'keep-alive', 'transfer-encoding', 'content-length'):
                        self.send_header(name, value)
                self.send_header('Content-Length', str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (4d)
                    self.close_connection = True

            def forward(self):
                body = self.rfile.read(int(self.headers.get('Content-Length') or 0))
                refused = proxy.refuse(self.command, self.path)
                if refused:
                    status, data = refused
                    self.reply(status, None, [('Content-Type', 'application/json')], data)
                    return
                proxy.hold(self.command, self.path)
                up = http.client.HTTPConnection('127.0.0.1', proxy.upstream_port, timeout=60)
                up.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                for name, value in self.headers.items():
                    if name.lower() not in ('connection', 'keep-alive'):
                        up.putheader(name, value)
                up.endheaders(body)
                reply = up.getresponse()
                data = reply.read()
                up.close()
                if proxy.drop_reply(self.command, self.path):
                    self.close_connection = True
                    return
                self.reply(reply.status, reply.reason, reply.getheaders(), data)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = forward

            def log_message(self, *args):
                pass

        return self.serve(http.server.ThreadingHTTPServer(('127.0.0.1', self.port), Handler))


class ReplyDroppingProxy(RegistryProxy):
    """Closes the connection instead of relaying the registry's reply to the first blob upload PUT."""

    dropped = 0

    def drop_reply(self, command, path):
        if command == 'PUT' and '/blobs/uploads/' in path and self.dropped == 0:
            self.dropped += 1
            return True
        return False


class UploadRefusingProxy(RegistryProxy):
    """Refuses every blob upload (and cross-repository mount) with 403 DENIED, as a registry does a
    client without push access, and holds each GET of the blob `held` for `seconds`."""

    def __init__(self, port, upstream_port, held, seconds):
        super().__init__(port, upstream_port)
        self.held, self.seconds, self.refused = held, seconds, 0

    def refuse(self, command, path):
        if command == 'POST' and '/blobs/uploads/' in path:
            self.refused += 1
            return 403, b'{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}'
        return None

    def hold(self, command, path):
        if command == 'GET' and path.endswith(self.held):
            time.sleep(self.seconds)


def convert(mk, reg, src, dst, *extra):
    return run([mk.path, 'convert', '--authfile', reg.auth_file, '--cert-dir', reg.certs_dir, '--work-dir',
                reg.work_dir, *extra, src, dst], timeout=600)


def expect_fail(ck, what, r, must_contain):
    err = [line for line in text(r.stderr).splitlines() if line.strip()]
    last = err[-1] if err else ''
    if r.returncode is None:
        ck.fail('%s: mkrafs convert did not exit' % what)
        return
    ck.check(r.returncode not in (0, None) and r.returncode < 128, '%s: non-zero exit (%s)' % (what, r.returncode))
    ck.check(last.startswith('mkrafs: ') and must_contain in last, '%s: %s' % (what, last),
             'wanted %r in the last line; stderr: %r' % (must_contain, text(r.stderr)[-1500:]))


def blob_path(layout, digest):
    return os.path.join(layout, 'blobs', 'sha256', digest.split(':', 1)[1])


def copy_layout(src, dst):
    """A copy of the OCI layout `src` at `dst`; returns its first manifest, parsed."""
    shutil.copytree(src, dst)
    with open(os.path.join(dst, 'index.json')) as f:
        idx = json.load(f)
    with open(blob_path(dst, idx['manifests'][0]['digest']), 'rb') as f:
        return json.load(f)


def replace_manifest(layout, manifest):
    """Stores `manifest` in `layout` and points the index's first entry at it."""
    data = json.dumps(manifest).encode()
    digest = 'sha256:' + hashlib.sha256(data).hexdigest()
    with open(blob_path(layout, digest), 'wb') as f:
        f.write(data)
    with open(os.path.join(layout, 'index.json')) as f:
        idx = json.load(f)
    idx['manifests'][0].update(digest=digest, size=len(data))
    with open(os.path.join(layout, 'index.json'), 'w') as f:
        json.dump(idx, f)


def check_rafs_image(ck, mk, tmp, layout, manifest_digest, expected, label):
    """A RAFS image in an OCI layout: its structure, and its tree against `expected`."""
    with open(blob_path(layout, manifest_digest), 'rb') as f:
        manifest = json.load(f)
    layers = manifest['layers']
    blobs, boot = layers[:-1], layers[-1]
    ck.check(all(l['mediaType'] == 'application/vnd.oci.image.layer.nydus.blob.v1' and
                 l.get('annotations', {}).get('containerd.io/snapshot/nydus-blob') == 'true' for l in blobs),
             '%s: %d Nydus blob layers' % (label, len(blobs)))
    a = boot.get('annotations', {})
    ck.check(boot['mediaType'] == 'application/vnd.oci.image.layer.v1.tar+gzip' and
             a.get('containerd.io/snapshot/nydus-bootstrap') == 'true' and
             a.get('containerd.io/snapshot/nydus-fs-version') == '6', '%s: bootstrap layer last, annotated' % label)
    with open(blob_path(layout, manifest['config']['digest']), 'rb') as f:
        config = json.load(f)
    tar_path = blob_path(layout, boot['digest'])
    import gzip
    with gzip.open(tar_path, 'rb') as f:
        tar_bytes = f.read()
    diff_ids = [l['digest'] for l in blobs] + ['sha256:' + hashlib.sha256(tar_bytes).hexdigest()]
    ck.check(config['rootfs']['diff_ids'] == diff_ids, '%s: config diff_ids = blob digests + bootstrap tar' % label,
             '%r' % config['rootfs'])
    ck.check(config['history'][-1].get('comment') == 'Nydus Bootstrap Layer', '%s: history entry' % label)
    paired = [h for h in config['history'] if not h.get('empty_layer')]
    ck.check(len(paired) == len(layers), '%s: one history entry per layer (a source layer that gave no blob: '
             'empty_layer)' % label, '%d entries for %d layers: %r' % (len(paired), len(layers), config['history']))
    ck.check(a.get('containerd.io/uncompressed') == diff_ids[-1], '%s: uncompressed annotation' % label)
    with tarfile.open(tar_path) as t:
        names = t.getnames()
        ck.check(names == ['image', 'image/image.boot'], '%s: bootstrap tar holds image/image.boot' % label,
                 repr(names))
        member = t.getmember('image/image.boot')
        ck.check(member.mode == 0o444, '%s: image.boot mode 0444' % label)
        work = os.path.join(tmp, 'check-' + label.replace(' ', '-'))
        os.makedirs(work)
        t.extract(member, work)
    blob_dir = os.path.join(work, 'blobs')
    os.makedirs(blob_dir)
    for l in blobs:
        os.symlink(blob_path(layout, l['digest']), os.path.join(blob_dir, l['digest'].split(':')[1]))
    bootfile = os.path.join(work, 'image', 'image.boot')
    # Every chunk of every blob has its digest in the bootstrap, also the base layer's chunks that
    # the upper layer deletes or replaces: a mount verifies from the bootstrap alone.
    with open(bootfile, 'rb') as f:
        table = chunk_table(f.read())
    missing = []
    for i, l in enumerate(blobs):
        section = blob_section(blob_path(layout, l['digest']), 'blob.digest')
        own = [section[k:k + 32].hex() for k in range(0, len(section), 32)]
        missing += [(i, ci) for ci, d in enumerate(own) if table.get((i, ci), {}).get('digest') != d]
    ck.check(not missing and len(table) > 0, '%s: the chunk info table holds the digest of every chunk of every blob '
             '(%d entries)' % (label, len(table)), 'missing or different: %r' % missing[:10])
    r = run([mk.path, 'inspect', '--blob-dir', blob_dir, bootfile])
    ck.cmd_ok(r, '%s: mkrafs inspect checks every chunk' % label)
    tree_tar = os.path.join(work, 'tree.tar')
    if ck.cmd_ok(run([mk.path, 'unpack', '--blob-dir', blob_dir, '--tar', tree_tar, bootfile]), '%s: unpack' % label):
        tree = os.path.join(work, 'tree')
        os.makedirs(tree)
        sh(['tar', '-xpf', tree_tar, '-C', tree, '--numeric-owner', '--xattrs', '--xattrs-include=*'])
        ck.diffs('%s: tree equals umoci unpack of the source' % label,
                 compare.compare_trees(expected, tree, ignore=('root_mtime',)))
    return manifest


def main():
    args, mk, rafsd, _, ck = start_test('mkrafs_convert', __doc__,
                                        tools=('docker-registry', 'openssl', 'htpasswd', 'skopeo', 'umoci'))
    with harness.temp_dir('mkrafs-convert-', keep=args.keep) as tmp:
        src_layout = os.path.join(tmp, 'src-layout')
        expected = make_oci_image(tmp, src_layout, 'v1')
        work_dir = os.path.join(tmp, 'work')
        os.makedirs(work_dir)
        with Registry(tmp, work_dir) as reg:
            host, auth_file, certs_dir = reg.host, reg.auth_file, reg.certs_dir
            r = reg.skopeo('copy', '--dest-cert-dir', os.path.join(certs_dir, host), '--authfile', auth_file,
                           'oci:%s:v1' % src_layout, 'docker://%s/src/app:v1' % host)
            if not ck.cmd_ok(r, 'skopeo pushes the OCI image'):
                return ck.finish()

            ck.section('1. convert registry -> registry')
            r = convert(mk, reg, '%s/src/app:v1' % host, '%s/rafs/app:v1' % host)
            ck.cmd_ok(r, 'mkrafs convert')
            log(text(r.stderr))
            out_layout = os.path.join(tmp, 'pulled')
            r = reg.skopeo('copy', '--src-cert-dir', os.path.join(certs_dir, host), '--authfile', auth_file,
                           'docker://%s/rafs/app:v1' % host, 'oci:%s:v1' % out_layout)
            if not ck.cmd_ok(r, 'skopeo pulls the RAFS image'):
                return ck.finish()
            raw = reg.raw('rafs/app:v1')
            digest1 = 'sha256:' + hashlib.sha256(raw).hexdigest()
            manifest = check_rafs_image(ck, mk, tmp, out_layout, digest1, expected, 'registry')
            ck.check(len(manifest['layers']) == 3,
                     'the layer that only repeats the base adds no blob (%d layers)' % len(manifest['layers']))
            source_manifest = json.loads(reg.raw('src/app:v1') or b'{}')
            ck.check(source_manifest.get('annotations') and
                     manifest.get('annotations') == source_manifest.get('annotations'),
                     'the source manifest\'s annotations are kept', repr(manifest.get('annotations')))

            ck.section('2. the same conversion again')
            r = convert(mk, reg, '%s/src/app:v1' % host, '%s/rafs/app:v1' % host)
            ck.cmd_ok(r, 'mkrafs convert again')
            ck.check(reg.raw('rafs/app:v1') == raw, 'the same manifest digest')
            ck.check('0 blobs uploaded' in text(r.stderr), 'no blob uploaded', text(r.stderr)[-400:])

            ck.section('3. into another repository of the same registry')
            r = convert(mk, reg, '%s/src/app:v1' % host, '%s/other/app:v1' % host, '--mount-from', 'rafs/app')
            ck.cmd_ok(r, 'mkrafs convert into other/app --mount-from rafs/app')
            ck.check(reg.raw('other/app:v1') == raw, 'the same manifest')
            ck.check('0 blobs uploaded' in text(r.stderr) and '4 mounted' in text(r.stderr),
                     'every blob mounted from rafs/app, none sent', text(r.stderr)[-300:])

            ck.section('4. --merge-index')
            r = convert(mk, reg, '%s/src/app:v1' % host, '%s/merged/app:v1' % host, '--merge-index',
                        '--mount-from', 'rafs/app')
            ck.cmd_ok(r, 'mkrafs convert --merge-index')
            ck.check('0 blobs uploaded' in text(r.stderr) and '8 mounted' in text(r.stderr),
                     "the original's config and 3 layers and the RAFS image's 4 blobs mounted from src/app and "
                     "rafs/app, none sent", text(r.stderr)[-300:])
            index = json.loads(reg.raw('merged/app:v1') or b'{}')
            entries = index.get('manifests', [])
            ck.check(index.get('mediaType') == 'application/vnd.oci.image.index.v1+json' and len(entries) == 2,
                     'an index of two manifests', json.dumps(index)[:500])
            if len(entries) == 2:
                original, rafs = entries
                src_raw = reg.raw('src/app:v1')
                ck.check(original['digest'] == 'sha256:' + hashlib.sha256(src_raw).hexdigest(),
                         'the first is the original manifest')
                ck.check(rafs['digest'] == digest1 and
                         rafs.get('artifactType') == 'application/vnd.nydus.image.manifest.v1+json' and
                         'nydus.remoteimage.v1' in rafs.get('platform', {}).get('os.features', []),
                         'the second is the RAFS manifest, marked as Nydus marks it')
                ck.check(reg.exists('merged/app@' + original['digest']), 'the original manifest is in the repository')

            ck.section('4b. --merge-index into another registry')
            # Nothing can be mounted there: the original's blobs are read from the source registry
            # and sent to the other (through the work dir, not from the upload's own thread).
            reg2 = ImageRegistry(os.path.join(tmp, 'registry'), name='registry2')
            try:
                r = convert(mk, reg, '%s/src/app:v1' % host, '%s/merged/app:v1' % reg2.host, '--merge-index')
                ck.cmd_ok(r, 'mkrafs convert --merge-index into a second registry')
                ck.check('8 blobs uploaded' in text(r.stderr), "the original's 4 blobs and the RAFS image's 4 sent",
                         text(r.stderr)[-300:])
                r = reg.skopeo('inspect', '--raw', '--cert-dir', os.path.join(certs_dir, reg2.host), '--authfile',
                               auth_file, 'docker://%s/merged/app:v1' % reg2.host)
                ck.check(r.returncode == 0 and len(json.loads(r.stdout or b'{}').get('manifests', [])) == 2,
                         'the second registry has the index of two manifests', text(r.stderr))
                ck.check(os.listdir(work_dir) == [], 'nothing left in the work dir', repr(os.listdir(work_dir)))
            finally:
                reg2.stop()

            ck.section('4c. a blob PUT whose reply is lost')
            # The registry commits the upload and the reply never comes: the retried PUT finds its
            # session gone; mkrafs looks the blob up, finds it there and goes on.
            plain_port, proxy_port = free_port(), free_port()
            with registry(tmp, 'plain-registry', plain_port), ReplyDroppingProxy(proxy_port, plain_port) as proxy:
                r = run([mk.path, 'convert', '--plain-http', '--work-dir', work_dir, 'oci:%s:v1' % src_layout,
                         '127.0.0.1:%d/lost/app:v1' % proxy_port], timeout=600)
                ck.cmd_ok(r, 'mkrafs convert through a proxy that drops the first blob PUT\'s reply')
                ck.check(proxy.dropped == 1, 'one reply was dropped (%d)' % proxy.dropped)

            ck.section('4d. a target that refuses uploads: the conversion stops at the first refusal')
            # Layer 2's download is held, so that it is still on its way when the first blob (layer
            # 0's) is refused: mkrafs must stop then, not build layer 2 and fail at the end.
            plain_port, proxy_port = free_port(), free_port()
            with open(os.path.join(src_layout, 'index.json')) as f:
                src_manifest = blob_path(src_layout, json.load(f)['manifests'][0]['digest'])
            with open(src_manifest) as f:
                last_layer = json.load(f)['layers'][2]['digest']
            with registry(tmp, 'refusing-registry', plain_port):
                r = run(['skopeo', 'copy', '--dest-tls-verify=false', 'oci:%s:v1' % src_layout,
                         'docker://127.0.0.1:%d/src/app:v1' % plain_port], timeout=300)
                ck.cmd_ok(r, 'skopeo copy of the source into a plain registry')
                # Held for less than mkrafs's 10 s without progress (the transport's low-speed limit).
                with UploadRefusingProxy(proxy_port, plain_port, last_layer, 4) as proxy:
                    r = run([mk.path, 'convert', '--plain-http', '--work-dir', work_dir,
                             '127.0.0.1:%d/src/app:v1' % proxy_port, '127.0.0.1:%d/dst/app:v1' % proxy_port],
                            timeout=120)
                    expect_fail(ck, 'a target that refuses uploads', r, 'DENIED')
                    ck.check(proxy.refused >= 1 and not re.search(r'^layer 2:', text(r.stderr), re.MULTILINE),
                             'stopped before layer 2 was built (%d uploads refused)' % proxy.refused,
                             text(r.stderr)[-1500:])
                    ck.check(os.listdir(work_dir) == [], 'nothing left in the work dir', repr(os.listdir(work_dir)))

            ck.section('5. oci: layout -> oci: layout')
            dst_layout = os.path.join(tmp, 'dst-layout')
            r = run([mk.path, 'convert', '--work-dir', work_dir, 'oci:%s:v1' % src_layout, 'oci:%s:rafs' % dst_layout],
                    timeout=600)
            ck.cmd_ok(r, 'mkrafs convert oci: -> oci:')
            with open(os.path.join(dst_layout, 'index.json')) as f:
                dst_index = json.load(f)
            layout_digest = dst_index['manifests'][0]['digest']
            ck.check(layout_digest == digest1, 'the same manifest digest as through the registry')
            check_rafs_image(ck, mk, tmp, dst_layout, layout_digest, expected, 'layout')
            # A blob of the layout damaged since (cut short): the same conversion again writes it anew
            # rather than take it as there.
            with open(blob_path(dst_layout, layout_digest)) as f:
                damaged = blob_path(dst_layout, json.load(f)['layers'][0]['digest'])
            size = os.path.getsize(damaged)
            os.truncate(damaged, 1000)
            r = run([mk.path, 'convert', '--work-dir', work_dir, 'oci:%s:v1' % src_layout, 'oci:%s:rafs' % dst_layout],
                    timeout=600)
            ck.check(r.returncode == 0 and os.path.getsize(damaged) == size and
                     ': 1 blobs uploaded' in text(r.stderr),
                     'a blob cut short in the target layout is written again', text(r.stderr)[-500:])

            ck.section('5a. two converts into one layout at once: both tags kept (the layout lock)')
            # The test holds the layout's lock first, as a third writer would, so that both
            # converts are started and waiting before either runs: whatever the timing, each must
            # say it waits, and neither may lose the other's tag.
            shared_layout = os.path.join(tmp, 'shared-layout')
            os.makedirs(shared_layout)
            holder = os.open(shared_layout, os.O_RDONLY | os.O_DIRECTORY)
            fcntl.flock(holder, fcntl.LOCK_EX)
            outs = [open(os.path.join(tmp, 'convert-%s.out' % tag), 'w+b') for tag in ('one', 'two')]
            procs = [subprocess.Popen([mk.path, 'convert', '--work-dir', work_dir, 'oci:%s:v1' % src_layout,
                                       'oci:%s:%s' % (shared_layout, tag)], stdout=out, stderr=subprocess.STDOUT)
                     for tag, out in zip(('one', 'two'), outs)]

            def output(i):
                outs[i].seek(0)
                return outs[i].read()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not all(b'waiting for another mkrafs' in output(i) for i in (0, 1)):
                time.sleep(0.05)
            ck.check(all(b'waiting for another mkrafs' in output(i) for i in (0, 1)),
                     'both converts wait for the lock the test holds', text(output(0) + output(1))[-600:])
            os.close(holder)
            for p in procs:
                p.wait(timeout=600)
            ck.check(all(p.returncode == 0 for p in procs), 'both converts succeed once it is let go',
                     text(output(0) + output(1))[-600:])
            for out in outs:
                out.close()
            with open(os.path.join(shared_layout, 'index.json')) as f:
                shared = {m.get('annotations', {}).get('org.opencontainers.image.ref.name'): m['digest']
                          for m in json.load(f)['manifests']}
            ck.check(shared == {'one': layout_digest, 'two': layout_digest},
                     'index.json tags the one manifest twice', repr(shared))
            leftovers = [n for _, _, names in os.walk(shared_layout) for n in names if '.tmp-' in n]
            ck.check(not leftovers, 'no temporary file is left in the layout', repr(leftovers))

            ck.section('5b. --prefetch-trace: the table, and the traced files first in their blobs')
            traced = ['/usr/bin/big', '/app/data', '/etc/conf.d/new.conf']
            trace = os.path.join(tmp, 'start.trace')
            with open(trace, 'w') as f:
                f.write('# a start trace, as rafsctl trace writes it\n' + '\n'.join(traced) + '\n')
            traced_layout = os.path.join(tmp, 'traced-layout')
            r = run([mk.path, 'convert', '--work-dir', work_dir, '--prefetch-trace', trace, 'oci:%s:v1' % src_layout,
                     'oci:%s:rafs' % traced_layout], timeout=600)
            if ck.cmd_ok(r, 'mkrafs convert --prefetch-trace'):
                with open(os.path.join(traced_layout, 'index.json')) as f:
                    traced_digest = json.load(f)['manifests'][0]['digest']
                check_rafs_image(ck, mk, tmp, traced_layout, traced_digest, expected, 'traced')
                work = os.path.join(tmp, 'check-traced')
                bootfile, blob_dir = os.path.join(work, 'image', 'image.boot'), os.path.join(work, 'blobs')
                r = run([mk.path, 'inspect', '-v', '--blob-dir', blob_dir, bootfile])
                nid_of = {}
                for line in text(r.stdout).splitlines():
                    parts = line.split()
                    if len(parts) >= 9 and parts[4] == 'nid':
                        nid_of[parts[8]] = parts[5]
                table = next((line.split()[2:] for line in text(r.stdout).splitlines() if line.startswith('prefetch: nids')),
                             [])
                ck.check(table == [nid_of.get(p) for p in traced], 'the prefetch table lists the traced files in order',
                         '%r against %r' % (table, [nid_of.get(p) for p in traced]))
                chunks = inspect_chunks(mk.path, bootfile, blob_dir)
                by_blob = {}
                for p in traced:
                    for c in chunks[p][1]:
                        by_blob.setdefault(c[1], []).append(c[2])
                ck.check(sorted(by_blob) == [0, 1] and all(cis == list(range(len(cis))) for cis in by_blob.values()),
                         'each blob starts with its traced files\' chunks, in trace order (ci by blob: %r)' % by_blob)
            missing = os.path.join(tmp, 'missing.trace')
            with open(missing, 'w') as f:
                f.write('/usr/bin/big\n/no/such/file\n')
            # A trace recorded on an earlier version of the image: what this one lacks is left out.
            r = run([mk.path, 'convert', '--work-dir', work_dir, '--prefetch-trace', missing, 'oci:%s:v1' % src_layout,
                     'oci:%s:rafs' % os.path.join(tmp, 'stale-layout')], timeout=600)
            ck.check(r.returncode == 0 and "not in the image, left out (the first: '/no/such/file')" in text(r.stderr),
                     'a trace naming a path the image lacks: converted, the path left out and said',
                     text(r.stderr)[-1000:])

            r = reg.skopeo('copy', '--format', 'v2s2', '--dest-cert-dir', os.path.join(certs_dir, host),
                           '--authfile', auth_file, 'oci:%s:v1' % src_layout, 'docker://%s/src/docker:v1' % host)
            ck.cmd_ok(r, 'skopeo pushes a Docker schema 2 copy')
            ck.check(b'application/vnd.docker.distribution.manifest.v2+json' in (reg.raw('src/docker:v1') or b''),
                     'the copy is a Docker manifest')
            r = convert(mk, reg, '%s/src/docker:v1' % host, '%s/rafs/docker:v1' % host)
            ck.cmd_ok(r, 'mkrafs convert of the Docker manifest')
            docker_raw = reg.raw('rafs/docker:v1') or b'{"layers":[]}'
            ck.check(json.loads(docker_raw)['layers'][:-1] == manifest['layers'][:-1],
                     'the same data blobs as from the OCI manifest')

            # Uncompressed layers under Docker's media type for them (containerd's images package
            # knows it; skopeo writes it for uncompressed v2s2 copies).
            docker_tar = os.path.join(tmp, 'docker-tar-layout')
            plain = copy_layout(src_layout, docker_tar)
            for layer in plain['layers']:
                with open(blob_path(docker_tar, layer['digest']), 'rb') as f:
                    data = gzip.decompress(f.read())
                layer.update(mediaType='application/vnd.docker.image.rootfs.diff.tar', size=len(data),
                             digest='sha256:' + hashlib.sha256(data).hexdigest())
                with open(blob_path(docker_tar, layer['digest']), 'wb') as f:
                    f.write(data)
            replace_manifest(docker_tar, plain)
            r = convert(mk, reg, 'oci:%s:v1' % docker_tar, '%s/rafs/docker-tar:v1' % host)
            ck.cmd_ok(r, 'mkrafs convert of uncompressed layers of Docker\'s media type')
            docker_tar_raw = reg.raw('rafs/docker-tar:v1') or b'{"layers":[]}'
            ck.check(json.loads(docker_tar_raw)['layers'][:-1] == manifest['layers'][:-1],
                     'the same data blobs as from the gzip layers')

            # An index of two platforms (the same image twice, as amd64 and arm64).
            multi = os.path.join(tmp, 'multi-layout')
            shutil.copytree(src_layout, multi)
            with open(os.path.join(multi, 'index.json')) as f:
                idx = json.load(f)
            v1 = [d for d in idx['manifests'] if d['annotations']['org.opencontainers.image.ref.name'] == 'v1'][0]
            plat_index = {'schemaVersion': 2, 'mediaType': 'application/vnd.oci.image.index.v1+json',
                          'manifests': [dict(v1, annotations={}, platform={'os': 'linux', 'architecture': arch})
                                        for arch in ('amd64', 'arm64')]}
            for m in plat_index['manifests']:
                del m['annotations']
            # And an attestation, as BuildKit adds them: no platform's image.
            plat_index['manifests'].append(dict(v1, platform={'os': 'unknown', 'architecture': 'unknown'},
                                                annotations={'vnd.docker.reference.type': 'attestation-manifest'}))
            data = json.dumps(plat_index).encode()
            pd = 'sha256:' + hashlib.sha256(data).hexdigest()
            with open(blob_path(multi, pd), 'wb') as f:
                f.write(data)
            # Only the index is named in index.json (as skopeo copy --all writes a layout): the
            # platforms' manifests are found by digest among the blobs.
            idx['manifests'] = [{'mediaType': 'application/vnd.oci.image.index.v1+json', 'digest': pd,
                                 'size': len(data), 'annotations': {'org.opencontainers.image.ref.name': 'multi'}}]
            with open(os.path.join(multi, 'index.json'), 'w') as f:
                json.dump(idx, f)
            r = convert(mk, reg, 'oci:%s:multi' % multi, '%s/multi/app:arm' % host, '--platform', 'linux/arm64')
            ck.cmd_ok(r, 'mkrafs convert --platform linux/arm64')
            ck.check('linux/arm64' in text(r.stderr), 'the arm64 entry converted')
            r = convert(mk, reg, 'oci:%s:multi' % multi, '%s/multi/app:all' % host, '--all-platforms')
            ck.cmd_ok(r, 'mkrafs convert --all-platforms')
            all_index = json.loads(reg.raw('multi/app:all') or b'{}')
            plats = [(m.get('platform', {}).get('architecture'), m.get('artifactType')) for m in
                     all_index.get('manifests', [])]
            ck.check(plats == [('amd64', 'application/vnd.nydus.image.manifest.v1+json'),
                               ('arm64', 'application/vnd.nydus.image.manifest.v1+json')],
                     'an index of the two RAFS manifests', repr(plats))
            # A chunk dict is taken for the platform converted, not this machine's: an index of the
            # arm64 image alone (--merge-index: the original and the RAFS manifest) serves as the dict
            # of an arm64 conversion.
            r = convert(mk, reg, 'oci:%s:multi' % multi, '%s/multi/app:arm-index' % host, '--platform', 'linux/arm64',
                        '--merge-index')
            ck.cmd_ok(r, 'mkrafs convert --platform linux/arm64 --merge-index')
            r = convert(mk, reg, 'oci:%s:multi' % multi, '%s/multi/app:arm-dict' % host, '--platform', 'linux/arm64',
                        '--chunk-dict', '%s/multi/app:arm-index' % host)
            ck.cmd_ok(r, 'mkrafs convert --platform linux/arm64 --chunk-dict (an arm64-only index)')
            ck.check(re.search(r'chunk dict .*: [1-9]\d* chunks referenced', text(r.stderr)) is not None,
                     'the arm64 dict\'s chunks referenced', text(r.stderr)[-600:])
            r = convert(mk, reg, 'oci:%s:multi' % multi, '%s/multi/app:all-dict' % host, '--all-platforms',
                        '--chunk-dict', '%s/multi/app:arm-index' % host)
            ck.cmd_ok(r, 'mkrafs convert --all-platforms --chunk-dict (an arm64-only index)')
            ck.check('chunk dict for linux/amd64: ' in text(r.stderr) and 'converting it without one' in text(r.stderr),
                     'amd64, which the dict has no image for, is converted without it', text(r.stderr)[-600:])
            expect_fail(ck, 'platform not in the index',
                        convert(mk, reg, 'oci:%s:multi' % multi, '%s/bad/app:t' % host, '--platform', 'linux/s390x'),
                        'linux/amd64, linux/arm64')
            # A single manifest has no other platform to give: one that is not the one asked for is refused.
            r = convert(mk, reg, 'oci:%s:v1' % src_layout, '%s/bad/app:single' % host, '--platform', 'linux/s390x')
            expect_fail(ck, 'a single manifest for another platform', r, 'not linux/s390x (--platform)')
            absent, lookup_error = reg.absent('bad/app:single')
            ck.check(absent and 'converting ' not in text(r.stderr),
                     'refused before any layer was read: nothing under the target',
                     lookup_error or text(r.stderr)[-400:])

            ck.section('6. --chunk-dict')
            expected2 = make_second_image(tmp, src_layout, 'v2', os.path.join(expected, 'usr/bin/big'))
            r = reg.skopeo('copy', '--dest-cert-dir', os.path.join(certs_dir, host), '--authfile', auth_file,
                           'oci:%s:v2' % src_layout, 'docker://%s/src/app:v2' % host)
            ck.cmd_ok(r, 'skopeo pushes the second image')
            r = convert(mk, reg, '%s/src/app:v2' % host, '%s/plain/app2:v2' % host)
            ck.cmd_ok(r, 'mkrafs convert of the second image without a chunk dict')
            plain = blob_sizes(reg.raw('plain/app2:v2') or b'{"layers":[]}')
            r = convert(mk, reg, '%s/src/app:v2' % host, '%s/dict/app2:v2' % host,
                        '--chunk-dict', '%s/rafs/app:v1' % host)
            ck.cmd_ok(r, 'mkrafs convert --chunk-dict %s/rafs/app:v1' % host)
            log(text(r.stderr))
            with_dict = blob_sizes(reg.raw('dict/app2:v2') or b'{"layers":[]}')
            ck.check(len(plain) == 1 and len(with_dict) == 2, 'with the dict: its own blob and the dict blob',
                     '%r %r' % (plain, with_dict))
            if len(plain) == 1 and len(with_dict) == 2:
                saved = plain[0] - with_dict[0]
                log('  chunk dict: own blob %d bytes instead of %d (%d saved)' % (with_dict[0], plain[0], saved))
                ck.check(saved >= 3 * MiB, 'the big file is not stored again (%d bytes saved)' % saved)
            pushed = re.search(r'^pushed .*: (\d+) blobs uploaded .*, (\d+) mounted from other repositories$',
                               text(r.stderr), re.MULTILINE)
            ck.check(pushed is not None and int(pushed.group(2)) == 1,
                     'the dict blob mounted from rafs/app, not sent (%s mounted)' % (pushed and pushed.group(2)),
                     text(r.stderr)[-600:])
            mount_image(ck, rafsd, tmp, reg, '%s/dict/app2:v2' % host, expected2, 'chunk dict image')

            ck.section('7. rafsd mount IMAGE')
            mount_image(ck, rafsd, tmp, reg, '%s/rafs/app:v1' % host, expected, 'converted image')

            ck.section('8. bad input')
            expect_fail(ck, 'unknown tag', convert(mk, reg, '%s/src/app:nope' % host, '%s/bad/app:t' % host),
                        'no such manifest')
            expect_fail(ck, 'already RAFS', convert(mk, reg, '%s/rafs/app:v1' % host, '%s/bad/app:t' % host),
                        'RAFS image already')
            # An image whose layer is encrypted (ocicrypt's media type), pushed by hand.
            enc_layout = os.path.join(tmp, 'enc-layout')
            m = copy_layout(src_layout, enc_layout)
            m['layers'][1]['mediaType'] = 'application/vnd.oci.image.layer.v1.tar+gzip+encrypted'
            replace_manifest(enc_layout, m)
            expect_fail(ck, 'encrypted layer', convert(mk, reg, 'oci:%s:v1' % enc_layout, '%s/bad/app:t' % host),
                        'tar+gzip+encrypted')
            # A config whose diff_ids do not describe the layers: one wrong, one missing.
            for label, edit, message in (
                    ('a wrong diff_id', lambda ids: ids[:1] + ['sha256:' + '0' * 64] + ids[2:],
                     "not sha256:%s as the image's config says (rootfs.diff_ids)" % ('0' * 64)),
                    ('a diff_id missing', lambda ids: ids[:-1], 'rootfs.diff_ids lists')):
                diff_layout = os.path.join(tmp, 'diff-layout-%d' % len(message))
                m = copy_layout(src_layout, diff_layout)
                with open(blob_path(diff_layout, m['config']['digest']), 'rb') as f:
                    config = json.load(f)
                config['rootfs']['diff_ids'] = edit(config['rootfs']['diff_ids'])
                data = json.dumps(config).encode()
                m['config'].update(digest='sha256:' + hashlib.sha256(data).hexdigest(), size=len(data))
                with open(blob_path(diff_layout, m['config']['digest']), 'wb') as f:
                    f.write(data)
                replace_manifest(diff_layout, m)
                expect_fail(ck, label, convert(mk, reg, 'oci:%s:v1' % diff_layout, '%s/bad/app:t' % host), message)
            # A damaged layout: the last layer's bytes changed, its digest kept.
            bad_layout = os.path.join(tmp, 'bad-layout')
            m = copy_layout(src_layout, bad_layout)
            victim = blob_path(bad_layout, m['layers'][-1]['digest'])
            with open(victim, 'r+b') as f:
                f.seek(os.path.getsize(victim) // 2)
                b = f.read(1)
                f.seek(-1, 1)
                f.write(bytes([b[0] ^ 0xff]))
            expect_fail(ck, 'damaged layer', convert(mk, reg, 'oci:%s:v1' % bad_layout, '%s/bad/app:t' % host),
                        m['layers'][-1]['digest'])
            # Into a layout: one the conversion would create is not left half made, and an existing
            # one keeps its index as it was.
            never_made = os.path.join(tmp, 'never-made')
            expect_fail(ck, 'damaged layer into a new layout',
                        convert(mk, reg, 'oci:%s:v1' % bad_layout, 'oci:%s:t' % never_made), m['layers'][-1]['digest'])
            ck.check(not os.path.exists(never_made), 'the failed conversion left no layout behind')
            existing = os.path.join(tmp, 'existing-layout')
            copy_layout(src_layout, existing)
            with open(os.path.join(existing, 'index.json'), 'rb') as f:
                index_before = f.read()
            blobs_before = sorted(os.listdir(os.path.join(existing, 'blobs', 'sha256')))
            expect_fail(ck, 'damaged layer into an existing layout',
                        convert(mk, reg, 'oci:%s:v1' % bad_layout, 'oci:%s:t' % existing), m['layers'][-1]['digest'])
            with open(os.path.join(existing, 'index.json'), 'rb') as f:
                ck.check(f.read() == index_before, 'the existing layout keeps its index.json as it was')
            blobs_after = sorted(os.listdir(os.path.join(existing, 'blobs', 'sha256')))
            ck.check(blobs_after == blobs_before, 'and its blobs: the RAFS blobs of the layers converted before the '
                     'damaged one are gone again (%d blobs before, %d after)' % (len(blobs_before), len(blobs_after)),
                     repr(sorted(set(blobs_after) ^ set(blobs_before))))
            wrong_auth = os.path.join(tmp, 'wrong-auth.json')
            docker_config(wrong_auth, host, ImageRegistry.USER, 'wrong')
            expect_fail(ck, 'wrong password', run([mk.path, 'convert', '--authfile', wrong_auth, '--cert-dir',
                                                   certs_dir, '--work-dir', work_dir, '%s/src/app:v1' % host,
                                                   '%s/bad/app:t' % host]),
                        'refused the credentials')
            expect_fail(ck, 'unknown CA', run([mk.path, 'convert', '--authfile', auth_file, '--cert-dir',
                                               os.path.join(tmp, 'no-certs'), '--work-dir', work_dir,
                                               '%s/src/app:v1' % host,
                                               '%s/bad/app:t' % host]), host)
            ro_port = free_port()
            with registry(tmp, 'read-only', ro_port, read_only=True):
                expect_fail(ck, 'a read-only target', run([mk.path, 'convert', '--plain-http', '--work-dir', work_dir,
                                                           'oci:%s:v1' % src_layout, '127.0.0.1:%d/ro/app:t' % ro_port]),
                            'this registry takes no pushes')
            absent, lookup_error = reg.absent('bad/app:t')
            ck.check(absent, 'no failed conversion made the target tag appear', lookup_error)
            leftovers = os.listdir(work_dir)
            ck.check(not leftovers, 'no work directory left behind', repr(leftovers))
    return ck.finish()


if __name__ == '__main__':
    sys.exit(main())
