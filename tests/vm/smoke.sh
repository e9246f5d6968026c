#!/usr/bin/env bash
# smoke.sh: proves that the scripts/vm-test guest is fit for the fscache engine's tests.
#   scripts/vm-test -- tests/vm/smoke.sh
# Checks the guest's mounts (/proc, /sys, devtmpfs /dev, tmpfs /run, overlays /tmp and /mnt,
# ext4 /mnt/cache), then talks to /dev/cachefiles the way the daemon will (fs/cachefiles/daemon.c,
# ondemand.c): open O_RDWR, write `dir /mnt/cache/fscache`, `tag smoke`, `bind ondemand` (each must
# succeed), then `restore`,
# which must be accepted (6.8+) or fail with EOPNOTSUPP; prints which. Mounting is not tested here.
# Exit status 0 when everything holds; 1 with a message naming the failed check otherwise.
set -euo pipefail
# The body is one { ... } block ending in exit: bash parses it whole before running it, so editing
# this file while it runs (e.g. a git pull during a long run) cannot derail the running copy.
{

fail() { echo "smoke: FAIL: $*" >&2; exit 1; }
ok() { echo "smoke: ok: $*"; }

[ "${RAFSD_IN_VM:-}" = 1 ] || fail "not inside the scripts/vm-test guest (RAFSD_IN_VM is not 1)"

fstype() { # MOUNTPOINT -> file system type of the top mount there
  local dev mnt type rest found=
  while read -r dev mnt type rest; do [ "$mnt" = "$1" ] && found=$type; done </proc/mounts
  echo "$found"
}
expect_fs() { # MOUNTPOINT TYPE
  local t
  t=$(fstype "$1")
  [ "$t" = "$2" ] || fail "$1 is ${t:-not a mount point}, expected $2"
  ok "$1 is $2"
}
[ -r /proc/mounts ] || fail "/proc is not mounted"
expect_fs /proc proc
expect_fs /sys sysfs
expect_fs /dev devtmpfs
expect_fs /run tmpfs
expect_fs /tmp overlay
expect_fs /mnt overlay
cache=${RAFSD_VM_CACHE_DIR:-/mnt/cache}
expect_fs "$cache" ext4
[ "$(fstype /)" = 9p ] || fail "/ is not the host's root over 9p"
ok "/ is 9p ($(uname -r))"

probe=$(mktemp) && echo x >"$probe" && rm -f "$probe" || fail "/tmp is not writable"
[ -c /dev/cachefiles ] || fail "/dev/cachefiles is missing or not a character device"
ok "/dev/cachefiles is a character device"

mkdir -p "$cache/fscache"
# Debian's interpreter directly: a pyenv shim on PATH costs some 30 s of process start-ups under TCG.
py=/usr/bin/python3
[ -x "$py" ] || py=python3
"$py" - "$cache/fscache" <<'EOF'
import errno, os, sys

cache_dir = sys.argv[1]

def fail(msg):
    print(f"smoke: FAIL: {msg}", file=sys.stderr)
    sys.exit(1)

try:
    fd = os.open("/dev/cachefiles", os.O_RDWR | os.O_CLOEXEC)
except OSError as e:
    fail(f"open /dev/cachefiles: {e.strerror} ({errno.errorcode.get(e.errno, e.errno)})")
print("smoke: ok: opened /dev/cachefiles")

def command(text):
    """Writes one command; returns None on success, else the errno."""
    data = text.encode()
    try:
        n = os.write(fd, data)
    except OSError as e:
        return e.errno
    if n != len(data):
        fail(f"{text!r}: short write {n} of {len(data)}")
    return None

for cmd in (f"dir {cache_dir}", "tag smoke", "bind ondemand"):
    err = command(cmd)
    if err is not None:
        fail(f"{cmd!r} failed: {os.strerror(err)} ({errno.errorcode.get(err, err)})")
    print(f"smoke: ok: {cmd!r} accepted")

# Before any request is pending, read() returns 0 (fs/cachefiles/ondemand.c, cachefiles_ondemand_daemon_read()).
buf = os.read(fd, 1024)
if buf:
    fail(f"unexpected message from an idle cache: {len(buf)} bytes")
print("smoke: ok: read() on the idle device returns 0 bytes")

err = command("restore")
if err is None:
    print("smoke: ok: 'restore' accepted (failover supported)")
elif err == errno.EOPNOTSUPP:
    print("smoke: ok: 'restore' gives EOPNOTSUPP (no failover on this kernel)")
else:
    fail(f"'restore' failed: {os.strerror(err)} ({errno.errorcode.get(err, err)})")
os.close(fd)
EOF
echo "smoke: PASS"
exit
}
