"""Minimal, independent reading of an EROFS / RAFS v6 bootstrap's superblock and device
table (nydus rafs/src/metadata/layout/v6.rs). Used by the tests to learn the blob ids in
device-table order without relying on the format of `mkrafs inspect` output."""

import struct

EROFS_MAGIC = 0xE0F5E1E2
SB_OFFSET = 1024
DEVT_SLOT_SIZE = 128


class BootError(ValueError):
    pass


def read_superblock(path):
    with open(path, 'rb') as f:
        f.seek(SB_OFFSET)
        sb = f.read(128)
    if len(sb) < 128:
        raise BootError('%s: too short for an EROFS superblock' % path)
    magic, checksum, feat_compat, blkszbits, extslots, root_nid, inos, build_time, \
        build_time_nsec, blocks, meta_blkaddr, xattr_blkaddr = struct.unpack_from(
            '<IIIBBHQQIIII', sb, 0)
    feat_incompat, = struct.unpack_from('<I', sb, 80)
    extra_devices, devt_slotoff = struct.unpack_from('<HH', sb, 86)
    if magic != EROFS_MAGIC:
        raise BootError('%s: bad EROFS magic 0x%08x' % (path, magic))
    return {
        'checksum': checksum, 'feature_compat': feat_compat, 'blkszbits': blkszbits,
        'sb_extslots': extslots, 'root_nid': root_nid, 'inos': inos,
        'build_time': build_time, 'build_time_nsec': build_time_nsec, 'blocks': blocks,
        'meta_blkaddr': meta_blkaddr, 'xattr_blkaddr': xattr_blkaddr,
        'feature_incompat': feat_incompat, 'extra_devices': extra_devices,
        'devt_slotoff': devt_slotoff,
    }


def device_table(path):
    """[(tag:str, blocks:int, mapped_blkaddr:int)] in device-table order."""
    sb = read_superblock(path)
    out = []
    with open(path, 'rb') as f:
        for i in range(sb['extra_devices']):
            f.seek(sb['devt_slotoff'] * DEVT_SLOT_SIZE + i * DEVT_SLOT_SIZE)
            slot = f.read(DEVT_SLOT_SIZE)
            if len(slot) < DEVT_SLOT_SIZE:
                raise BootError('%s: device table slot %d truncated' % (path, i))
            tag = slot[:64].split(b'\0', 1)[0].decode('ascii', 'replace')
            blocks, mapped = struct.unpack_from('<II', slot, 64)
            out.append((tag, blocks, mapped))
    return out


def blob_ids(path):
    """Blob ids (device-table tags) in device-table order."""
    return [t for t, _, _ in device_table(path)]
