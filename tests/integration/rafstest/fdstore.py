"""Playing systemd for a Type=notify service with an fd store (sd_notify(3), sd_listen_fds(3)):
a NOTIFY_SOCKET that collects READY=1 and the fds sent with FDSTORE=1 / FDNAME=, honours
FDSTOREREMOVE=1, and the environment that passes the stored fds to a restarted service."""

import os
import socket
import struct
import tempfile
import threading
import time


class FdStore:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix='rafs-notify-')
        self.path = os.path.join(self.dir, 'notify.sock')
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)  # as systemd: creds are sent
        self.sock.settimeout(0.2)
        self.fds = {}  # name -> fd (ours)
        self.messages = []
        self.lock = threading.Lock()
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopping:
            try:
                data, ancillary, _, _ = self.sock.recvmsg(4096, 4096)
            except socket.timeout:
                continue
            except OSError:
                return
            fields = data.decode(errors='replace').split('\n')
            received = []
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    n = len(payload) // 4
                    received += list(struct.unpack('%di' % n, payload[:4 * n]))
            name = next((f[len('FDNAME='):] for f in fields if f.startswith('FDNAME=')), 'stored')
            with self.lock:
                self.messages += fields
                if 'FDSTORE=1' in fields:
                    for fd in received:
                        old = self.fds.pop(name, None)
                        if old is not None:
                            os.close(old)
                        self.fds[name] = fd
                else:
                    for fd in received:
                        os.close(fd)
                if 'FDSTOREREMOVE=1' in fields:
                    old = self.fds.pop(name, None)
                    if old is not None:
                        os.close(old)

    def env(self):
        return dict(os.environ, NOTIFY_SOCKET=self.path)

    def wait_for(self, what, timeout=30):
        """Waits until `what` (e.g. 'READY=1') was sent; True if it was."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if what in self.messages:
                    return True
            time.sleep(0.05)
        return False

    def names(self):
        with self.lock:
            return sorted(self.fds)

    def restart_argv(self, argv):
        """argv that starts `argv` as systemd restarts the service: the stored fds at 3.., LISTEN_PID
        the new process, LISTEN_FDS and LISTEN_FDNAMES set; and the fds to pass to Popen."""
        with self.lock:
            items = sorted(self.fds.items())
        # Each fd first to a number above all of them, so that no move clobbers another.
        high = max([fd for _, fd in items] + [2 + len(items)]) + 1
        steps = ['exec ' + ' '.join('%d>&%d' % (high + i, fd) for i, (_, fd) in enumerate(items)),
                 'exec ' + ' '.join('%d>&-' % fd for _, fd in items),
                 'exec ' + ' '.join('%d>&%d %d>&-' % (3 + i, high + i, high + i) for i in range(len(items)))]
        names = ':'.join(name for name, _ in items)
        script = '; '.join(steps if items else []) + ('; ' if items else '') + \
            'LISTEN_PID=$$ LISTEN_FDS=%d LISTEN_FDNAMES=%s exec "$@"' % (len(items), names)
        return ['/bin/bash', '-c', script, 'rafsd'] + argv, tuple(fd for _, fd in items)

    def close(self):
        self.stopping = True
        self.thread.join(5)
        self.sock.close()
        with self.lock:
            for fd in self.fds.values():
                os.close(fd)
            self.fds.clear()
        os.unlink(self.path)
        os.rmdir(self.dir)
