"""RAFS images in a registry laid out as Nydus lays them out (nydus-snapshotter's converter; the
repo's registry/RafsLayers.h and registry/BootstrapLayer.h say what rafsd reads), made without
mkrafs convert from a bootstrap and blob files that `mkrafs build` wrote:

  bootstrap_layer(boot, ...)        the bootstrap layer: a tar(.gz) with image/ and image/image.boot
  Pusher(base_url, repo, ...)       pushes blobs, configs, manifests and indexes to one repository
    .rafs_image(tag, boot, blobs)   a Nydus-style manifest (blob layers, then the bootstrap layer)
    .index(tag, entries)            an OCI index of (manifest digest, size, platform) entries
    .oci_image(tag, files)          an ordinary OCI image (one tar+gzip layer)
"""

import gzip
import hashlib
import io
import json
import platform
import tarfile

from .servers import push_data, push_manifest

OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json'
OCI_INDEX = 'application/vnd.oci.image.index.v1+json'
OCI_CONFIG = 'application/vnd.oci.image.config.v1+json'
OCI_TAR_GZIP = 'application/vnd.oci.image.layer.v1.tar+gzip'
NYDUS_BLOB = 'application/vnd.oci.image.layer.nydus.blob.v1'
NYDUS_ARTIFACT = 'application/vnd.nydus.image.manifest.v1+json'
A_BLOB = 'containerd.io/snapshot/nydus-blob'
A_BOOTSTRAP = 'containerd.io/snapshot/nydus-bootstrap'
A_FS_VERSION = 'containerd.io/snapshot/nydus-fs-version'
A_UNCOMPRESSED = 'containerd.io/uncompressed'


def host_arch():
    """This machine's architecture as image indexes name it (Go's GOARCH)."""
    m = platform.machine()
    return {'x86_64': 'amd64', 'aarch64': 'arm64', 'i686': '386', 'armv7l': 'arm'}.get(m, m)


def sha256(data):
    return 'sha256:' + hashlib.sha256(data).hexdigest()


def tar_of(members):
    """A tar of [(path, bytes or None for a directory, mode)]."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode='w', format=tarfile.PAX_FORMAT) as t:
        for path, data, mode in members:
            info = tarfile.TarInfo(path)
            info.mode = mode
            if data is None:
                info.type = tarfile.DIRTYPE
                t.addfile(info)
            else:
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
    return out.getvalue()


def bootstrap_layer(boot, compress=True, path='image/image.boot'):
    """(layer bytes, tar digest): the tar Nydus writes (directory image/, then image/image.boot, mode
    0444), gzip-compressed unless `compress` is False; `path` puts the bootstrap elsewhere."""
    with open(boot, 'rb') as f:
        data = f.read()
    tar = tar_of([('image', None, 0o755), (path, data, 0o444)])
    return (gzip.compress(tar, mtime=0) if compress else tar), sha256(tar)


def json_bytes(doc):
    return json.dumps(doc, sort_keys=True, separators=(',', ':')).encode()


class Pusher:
    """Pushes to `repo` at `base_url` (https://127.0.0.1:PORT) with `context` (TLS) and `headers` (auth)."""

    def __init__(self, base_url, repo, context=None, headers=None):
        self.base, self.repo, self.context, self.headers = base_url, repo, context, headers

    def blob(self, data):
        """Pushes bytes; returns their descriptor fields (digest, size)."""
        return {'digest': push_data(self.base, self.repo, data, self.context, self.headers), 'size': len(data)}

    def manifest(self, tag, doc, media_type=OCI_MANIFEST):
        """PUTs a manifest or index document as `tag` (None: by its digest only); returns (digest, size)."""
        body = json_bytes(doc)
        ref = tag or sha256(body)
        return push_manifest(self.base, self.repo, ref, media_type, body, self.context, self.headers), len(body)

    def config(self, diff_ids, history):
        doc = {'architecture': host_arch(), 'os': 'linux', 'config': {},
               'rootfs': {'type': 'layers', 'diff_ids': diff_ids}, 'history': history}
        return dict(self.blob(json_bytes(doc)), mediaType=OCI_CONFIG)

    def rafs_image(self, tag, boot, blob_paths, layer=None, bootstrap_media_type=OCI_TAR_GZIP, blob_media_type=NYDUS_BLOB):
        """A RAFS image: the blobs (their digests are their blob ids), then the bootstrap layer
        (`layer`: (bytes, tar digest) instead of bootstrap_layer(boot)), a config and the manifest
        pushed as `tag` (None: no tag). Returns (manifest digest, manifest size)."""
        layers, diff_ids = [], []
        for path in blob_paths:
            with open(path, 'rb') as f:
                d = self.blob(f.read())
            layers.append(dict(d, mediaType=blob_media_type, annotations={A_BLOB: 'true'}))
            diff_ids.append(d['digest'])
        data, tar_digest = layer or bootstrap_layer(boot)
        d = self.blob(data)
        layers.append(dict(d, mediaType=bootstrap_media_type,
                           annotations={A_BOOTSTRAP: 'true', A_FS_VERSION: '6', A_UNCOMPRESSED: tar_digest}))
        diff_ids.append(tar_digest)
        config = self.config(diff_ids, [{'created_by': 'Nydus Bootstrap Layer', 'comment': 'rafsd test'}])
        return self.manifest(tag, {'schemaVersion': 2, 'mediaType': OCI_MANIFEST,
                                                  'config': config, 'layers': layers})

    def oci_image(self, tag, files):
        """An ordinary OCI image: one tar+gzip layer of {path: bytes}."""
        tar = tar_of([(p, data, 0o644) for p, data in files.items()])
        d = self.blob(gzip.compress(tar, mtime=0))
        config = self.config([sha256(tar)], [{'created_by': 'rafsd test'}])
        return self.manifest(tag, {'schemaVersion': 2, 'mediaType': OCI_MANIFEST, 'config': config,
                                   'layers': [dict(d, mediaType=OCI_TAR_GZIP)]})

    def index(self, tag, entries):
        """An OCI index of [(digest, size, architecture, nydus)] (os linux); a nydus entry is marked
        as nydusify marks it (artifactType and os.features)."""
        manifests = []
        for digest, size, arch, nydus in entries:
            entry = {'mediaType': OCI_MANIFEST, 'digest': digest, 'size': size,
                     'platform': {'os': 'linux', 'architecture': arch}}
            if nydus:
                entry['artifactType'] = NYDUS_ARTIFACT
                entry['platform']['os.features'] = ['nydus.remoteimage.v1']
            manifests.append(entry)
        return self.manifest(tag, {'schemaVersion': 2, 'mediaType': OCI_INDEX, 'manifests': manifests}, OCI_INDEX)
