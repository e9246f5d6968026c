"""Network peers for the http and registry backend tests, each started by the test on 127.0.0.1
and stopped by it (only the processes it started):

  free_port()                      a port nothing listens on now
  Netns(name)                      a network namespace of our own, its loopback shaped by tbf on demand
  Server(cmd, port, log)           a process in the background, ready once its port accepts
  nginx(root, port, tmp)           nginx-light serving `root` at /blobs/ (a range server)
  TestCa(dir)                      a CA made with openssl, and server certificates for 127.0.0.1
  registry(...)                    Debian's docker-registry (distribution 2.8), TLS, htpasswd or token auth
  htpasswd_registry(tmp, users)    the same on a free port with a new CA and htpasswd auth
  docker_config(path, host, ...)   a docker config.json holding a host's credentials
  push_blob(url, repo, path, ...)  a blob uploaded with the plain distribution API (POST + PUT)
  push_data(url, repo, bytes, ...) the same from bytes
  push_manifest(url, repo, ref, media_type, bytes, ...)  a manifest or index PUT under a tag
"""

import base64
import hashlib
import json
import os
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request

from .harness import log


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def in_netns(netns, fn):
    """fn() in a thread that joined the network namespace /run/netns/<netns> (None: this one), so
    its sockets are that namespace's; returns what fn returns."""
    if netns is None:
        return fn()
    import ctypes
    result = {}

    def run():
        try:
            fd = os.open('/run/netns/' + netns, os.O_RDONLY)
            try:
                if ctypes.CDLL(None, use_errno=True).setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
                    raise OSError(ctypes.get_errno(), 'setns ' + netns)
            finally:
                os.close(fd)
            result['value'] = fn()
        except BaseException as e:  # noqa: B902 - handed to the caller
            result['error'] = e

    t = threading.Thread(target=run)
    t.start()
    t.join()
    if 'error' in result:
        raise result['error']
    return result['value']


class Netns:
    """A network namespace of the caller's own, /run/netns/<name>, with its loopback up; shape()
    limits that loopback with tbf. lo's MTU is lowered to 1500 first: with its default of 65536
    and a burst below it, tbf drops every large packet. Servers and clients in it address
    127.0.0.1 and nothing else. remove() deletes it."""

    def __init__(self, name):
        self.name = name
        # A namespace of this name is a leftover of an interrupted run of the same caller.
        subprocess.run(['ip', 'netns', 'del', name], stderr=subprocess.DEVNULL)
        subprocess.run(['ip', 'netns', 'add', name], check=True)
        self._exec('ip', 'link', 'set', 'lo', 'mtu', '1500', 'up')

    def _exec(self, *args):
        subprocess.run(['ip', 'netns', 'exec', self.name] + list(args), check=True)

    def cmd(self, argv):
        """argv run in this namespace's network (nsenter --net: the mount namespace stays ours)."""
        return ['nsenter', '--net=/run/netns/' + self.name] + list(argv)

    def shape(self, mbit):
        """The loopback limited to `mbit` Mbit/s (tbf)."""
        self._exec('tc', 'qdisc', 'replace', 'dev', 'lo', 'root', 'tbf', 'rate', '%dmbit' % mbit, 'burst', '32kb',
                   'latency', '50ms')

    def remove(self):
        subprocess.run(['ip', 'netns', 'del', self.name], stderr=subprocess.DEVNULL)


def port_open(port, netns=None):
    def probe():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(0.5)
            return s.connect_ex(('127.0.0.1', port)) == 0
    return in_netns(netns, probe)


class Server:
    """A server process of the test's own, ready when 127.0.0.1:port accepts connections; in the
    network namespace `netns` if given (nsenter --net: the mount namespace stays this one)."""

    def __init__(self, name, cmd, port, log_path, env=None, netns=None):
        if netns:
            cmd = ['nsenter', '--net=/run/netns/' + netns] + cmd
        self.name, self.cmd, self.port, self.log_path, self.env = name, cmd, port, log_path, env
        self.netns = netns
        self.proc = None

    def start(self, timeout=20):
        log('$ ' + ' '.join(self.cmd) + ' &')
        self.log_file = open(self.log_path, 'wb')
        self.proc = subprocess.Popen(self.cmd, stdout=self.log_file, stderr=subprocess.STDOUT, env=self.env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if port_open(self.port, self.netns):
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError('%s did not start on port %d:\n%s' % (self.name, self.port, self.log_text()[-2000:]))

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        self.log_file.close()

    def log_text(self):
        try:
            with open(self.log_path, 'rb') as f:
                return f.read().decode('utf-8', 'replace')
        except OSError:
            return ''

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False


def nginx(root, port, tmp, servers=None):
    """nginx-light in the foreground, one process, serving `root` at http://127.0.0.1:port/blobs/,
    or the given `servers` (server blocks) instead."""
    prefix = os.path.join(tmp, 'nginx-%d' % port)
    os.makedirs(os.path.join(prefix, 'body'), exist_ok=True)
    conf = os.path.join(prefix, 'nginx.conf')
    with open(conf, 'w') as f:
        f.write('''daemon off;
master_process off;
worker_processes 1;
pid %(p)s/nginx.pid;
error_log %(p)s/error.log;
events { worker_connections 256; }
http {
    access_log %(p)s/access.log;
    client_body_temp_path %(p)s/body;
    %(servers)s
}
''' % {'p': prefix, 'servers': servers or '''server {
        listen 127.0.0.1:%d;
        location /blobs/ { alias %s/; }
    }''' % (port, os.path.abspath(root))})
    return Server('nginx', ['nginx', '-p', prefix, '-c', conf], port, os.path.join(prefix, 'out.log')).start()


class TestCa:
    """A certificate authority of the test's own (openssl), and certificates it signs."""

    def __init__(self, directory, name='rafsd test CA'):
        self.dir = directory
        os.makedirs(directory, exist_ok=True)
        self.cert = os.path.join(directory, 'ca.pem')
        self.key = os.path.join(directory, 'ca.key')
        subprocess.run(['openssl', 'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
                        '-keyout', self.key, '-out', self.cert, '-days', '2', '-subj', '/CN=' + name],
                       check=True, capture_output=True)

    def issue(self, name, server=True):
        """(cert, key) for 127.0.0.1 (server) or a client named `name`."""
        key = os.path.join(self.dir, name + '.key')
        csr = os.path.join(self.dir, name + '.csr')
        cert = os.path.join(self.dir, name + '.pem')
        ext = os.path.join(self.dir, name + '.ext')
        with open(ext, 'w') as f:
            if server:
                f.write('subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n')
            else:
                f.write('extendedKeyUsage=clientAuth\n')
        subprocess.run(['openssl', 'req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
                        '-keyout', key, '-out', csr, '-subj', '/CN=' + name], check=True, capture_output=True)
        subprocess.run(['openssl', 'x509', '-req', '-in', csr, '-CA', self.cert, '-CAkey', self.key,
                        '-CAcreateserial', '-out', cert, '-days', '2', '-extfile', ext], check=True, capture_output=True)
        return cert, key

    def context(self):
        """An ssl context that trusts this CA, for the test's own requests."""
        return ssl.create_default_context(cafile=self.cert)


def htpasswd(path, users):
    """A bcrypt htpasswd file (the registry ignores other hashes)."""
    open(path, 'w').close()
    for user, password in users.items():
        subprocess.run(['htpasswd', '-bB', path, user, password], check=True, capture_output=True)


def registry(tmp, name, port, cert=None, key=None, auth=None, client_ca=None, netns=None, access_log=False,
             read_only=False):
    """Debian's docker-registry on 127.0.0.1:port with filesystem storage under tmp.
    auth: None, {'htpasswd': {'realm': ..., 'path': ...}} or {'token': {...}} (registry.md §2).
    access_log: one line per request in its log (combined log format: method, path, user agent).
    read_only: distribution's read-only maintenance mode (pulls only; pushes get 405)."""
    root = os.path.join(tmp, name)
    os.makedirs(root, exist_ok=True)
    config = {'version': 0.1, 'log': {'level': 'warn', 'accesslog': {'disabled': not access_log}},
              'storage': {'filesystem': {'rootdirectory': os.path.join(root, 'data')}, 'delete': {'enabled': True}},
              'http': {'addr': '127.0.0.1:%d' % port, 'secret': 'rafsd-test',
                       'debug': {'addr': ''}, 'headers': {'X-Content-Type-Options': ['nosniff']}}}
    if read_only:
        config['storage']['maintenance'] = {'readonly': {'enabled': True}}
    if cert:
        config['http']['tls'] = {'certificate': cert, 'key': key}
        if client_ca:
            config['http']['tls']['clientcas'] = [client_ca]
    if auth:
        config['auth'] = auth
    path = os.path.join(root, 'config.yml')
    with open(path, 'w') as f:
        json.dump(config, f)  # JSON is YAML
    return Server('docker-registry', ['docker-registry', 'serve', path], port, os.path.join(root, 'log'),
                  netns=netns).start()


def htpasswd_registry(tmp, users, name='registry', access_log=False):
    """docker-registry on a free port of 127.0.0.1 with TLS from a new test CA (tmp/<name>-ca) and
    htpasswd (Basic) auth for `users` ({user: password}); returns (server, 'host:port', ca).
    access_log: as for registry()."""
    ca = TestCa(os.path.join(tmp, name + '-ca'))
    cert, key = ca.issue('registry')
    pw_file = os.path.join(tmp, name + '-htpasswd')
    htpasswd(pw_file, users)
    port = free_port()
    server = registry(tmp, name, port, cert, key, auth={'htpasswd': {'realm': 'rafsd-test', 'path': pw_file}},
                      access_log=access_log)
    return server, '127.0.0.1:%d' % port, ca


def docker_config(path, host, user, password):
    """A docker config.json at `path` with the credentials of `host`; returns its auth string."""
    auth = base64.b64encode(('%s:%s' % (user, password)).encode()).decode()
    with open(path, 'w') as f:
        json.dump({'auths': {host: {'auth': auth}}}, f)
    return auth


def _request(method, url, context, headers=None, data=None, timeout=60):
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, context=context, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def basic_auth(user, password):
    return {'Authorization': 'Basic ' + base64.b64encode(('%s:%s' % (user, password)).encode()).decode()}


def push_blob(base_url, repo, path, context=None, headers=None):
    """Uploads the file at `path` as a blob of `repo` (POST, then a monolithic PUT); returns its digest."""
    with open(path, 'rb') as f:
        return push_data(base_url, repo, f.read(), context, headers)


def push_data(base_url, repo, data, context=None, headers=None):
    """Uploads the bytes `data` as a blob of `repo`; returns its digest."""
    digest = 'sha256:' + hashlib.sha256(data).hexdigest()
    status, hdrs, body = _request('POST', '%s/v2/%s/blobs/uploads/' % (base_url, repo), context, headers)
    if status != 202:
        raise RuntimeError('POST upload: %d %s' % (status, body[:300]))
    location = hdrs.get('Location') or hdrs.get('location')
    if location.startswith('/'):
        location = base_url + location
    sep = '&' if '?' in location else '?'
    put_headers = dict(headers or {}, **{'Content-Type': 'application/octet-stream'})
    status, _, body = _request('PUT', location + sep + 'digest=' + digest, context, put_headers, data)
    if status != 201:
        raise RuntimeError('PUT upload: %d %s' % (status, body[:300]))
    return digest


def push_manifest(base_url, repo, reference, media_type, body, context=None, headers=None):
    """PUTs a manifest or index (bytes) as `reference` (a tag) of `repo`; returns its digest."""
    put_headers = dict(headers or {}, **{'Content-Type': media_type})
    status, _, reply = _request('PUT', '%s/v2/%s/manifests/%s' % (base_url, repo, reference), context, put_headers, body)
    if status != 201:
        raise RuntimeError('PUT manifest %s: %d %s' % (reference, status, reply[:300]))
    return 'sha256:' + hashlib.sha256(body).hexdigest()


class ThreadedServer:
    """A server in threads of the test process (socketserver), stopped on exit."""

    server = None

    def serve(self, server):
        self.server = server
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self):
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False


class TokenIssuer(ThreadedServer):
    """A token service for docker-registry's `auth.token` mode (registry.md §2), in a thread of the
    test: ES256 JWTs signed by a P-256 key whose self-signed certificate is the registry's
    rootcertbundle (python3-jwt, python3-cryptography). Grants pull on what `scope` asks for to
    anyone whose Basic credentials are in `users`; a token lives `lifetime` seconds at the
    registry (which allows 60 s of leeway, so exp is set 60 s early); `expires_in` tells the client
    `told` seconds (None: the field is left out). Counts what it issued and refused."""

    SERVICE = 'rafsd-test-registry'
    ISSUER = 'rafsd-test-issuer'

    def __init__(self, directory, port, users, lifetime=300, told=300):
        import datetime
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
        os.makedirs(directory, exist_ok=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, 'rafsd test token signer')])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(self.key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=2))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .sign(self.key, hashes.SHA256()))
        self.bundle = os.path.join(directory, 'signer.pem')
        with open(self.bundle, 'wb') as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
        self.x5c = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
        self.port = port
        self.users = dict(users)
        self.lifetime, self.told = lifetime, told
        self.issued, self.refused, self.seen_users = 0, 0, []
        self.token_suffix = ''  # appended to every token issued: a hostile token service's
        self.lock = threading.Lock()

    def realm(self):
        return 'http://127.0.0.1:%d/token' % self.port

    def registry_auth(self):
        return {'token': {'realm': self.realm(), 'service': self.SERVICE, 'issuer': self.ISSUER,
                          'rootcertbundle': self.bundle}}

    def _token(self, user, scopes):
        import jwt
        access = []
        for scope in scopes:
            parts = scope.split(':')
            if len(parts) >= 3:
                access.append({'type': parts[0], 'name': ':'.join(parts[1:-1]), 'actions': parts[-1].split(',')})
        now = int(time.time())
        claims = {'iss': self.ISSUER, 'sub': user or 'anonymous', 'aud': self.SERVICE, 'iat': now, 'nbf': now - 5,
                  'exp': now - 60 + self.lifetime, 'jti': '%d-%d' % (now, self.issued), 'access': access}
        return jwt.encode(claims, self.key, algorithm='ES256', headers={'x5c': [self.x5c]})

    def start(self):
        import http.server
        import urllib.parse
        issuer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                url = urllib.parse.urlparse(self.path)
                query = urllib.parse.parse_qs(url.query)
                user = None
                header = self.headers.get('Authorization', '')
                if header.startswith('Basic '):
                    user, _, password = base64.b64decode(header[6:]).decode().partition(':')
                with issuer.lock:
                    issuer.seen_users.append(user)
                    ok = url.path == '/token' and user is not None and issuer.users.get(user) == password
                    if ok:
                        issuer.issued += 1
                        body = {'token': issuer._token(user, query.get('scope', [])) + issuer.token_suffix}
                        if issuer.told is not None:
                            body['expires_in'] = issuer.told
                    else:
                        issuer.refused += 1
                data = json.dumps(body if ok else {'errors': [{'code': 'UNAUTHORIZED'}]}).encode()
                self.send_response(200 if ok else 401)
                self.send_header('Content-Type', 'application/json')
                self.send_header('Content-Length', str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return self.serve(http.server.ThreadingHTTPServer(('127.0.0.1', self.port), Handler))


class FaultProxy(ThreadedServer):
    """A reverse proxy of the test's own in front of an http:// server on 127.0.0.1, one request
    per connection, that spoils the replies to blob GETs while `active`: `choose()` (a callable
    given the request number) names the fault for each:

      'ok'        the reply as it is
      '503'       503 Service Unavailable
      '429'       429 with Retry-After: 1
      'reset'     the connection reset (RST) before any reply
      'truncate'  headers with the full Content-Length, half the body, then closed
      'stall'     headers and a few bytes, then silence for `stall_seconds`, then closed
      'hang'      no reply at all for `stall_seconds`, then closed
      'flip'      the whole reply with one bit of the body flipped
    With `by_path`, choose() is given the request's path too. Counts the faults it made (`made`).
    `manifest_fault`, if set, applies to every manifest GET instead (choose() is not asked); one
    more kind there: 'endless', a 200 whose body never ends (up to 1 GiB, or until the client
    goes)."""

    def __init__(self, port, upstream_port, choose, stall_seconds=8, by_path=False):
        import collections
        self.port, self.upstream_port, self.choose, self.by_path = port, upstream_port, choose, by_path
        self.stall_seconds = stall_seconds
        self.active = False
        self.manifest_fault = None
        self.made = collections.Counter()
        self.requests = 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()

    def _serve(self, conn):
        import http.client
        conn.settimeout(30)
        data = b''
        while b'\r\n\r\n' not in data:
            piece = conn.recv(65536)
            if not piece:
                return
            data += piece
        head = data.split(b'\r\n\r\n', 1)[0].decode('latin-1').split('\r\n')
        method, path, _ = head[0].split(' ', 2)
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(':')
            if name.lower() not in ('connection', 'host', 'keep-alive', 'proxy-connection'):
                headers[name.strip()] = value.strip()
        fault = 'ok'
        with self.lock:
            if self.manifest_fault and method == 'GET' and '/manifests/' in path:
                fault = self.manifest_fault
            elif self.active and method == 'GET' and '/blobs/' in path:
                fault = self.choose(self.requests, path) if self.by_path else self.choose(self.requests)
                self.requests += 1
            self.made[fault] += 1
        if fault == 'endless':
            conn.sendall(b'HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\n'
                         b'Connection: close\r\n\r\n')
            piece = b'{' * 65536
            for _ in range((1 << 30) // len(piece)):
                if self.stopping.is_set():
                    break
                conn.sendall(piece)
            return
        if fault == 'hang':
            self.stopping.wait(self.stall_seconds)
            return
        if fault == 'reset':
            import struct
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
            return
        if fault in ('503', '429'):
            extra = 'Retry-After: 1\r\n' if fault == '429' else ''
            conn.sendall(('HTTP/1.1 %s Fault\r\n%sContent-Length: 0\r\nConnection: close\r\n\r\n' % (fault, extra)).encode())
            return
        upstream = http.client.HTTPConnection('127.0.0.1', self.upstream_port, timeout=30)
        try:
            upstream.request(method, path, headers=headers)
            r = upstream.getresponse()
            body = r.read() if method != 'HEAD' else b''
            out_headers = [(k, v) for k, v in r.getheaders()
                           if k.lower() not in ('connection', 'transfer-encoding', 'content-length', 'keep-alive')]
            length = int(r.getheader('Content-Length') or len(body)) if method == 'HEAD' else len(body)
            status, reason = r.status, r.reason
        finally:
            upstream.close()
        if fault == 'flip' and body:
            b = bytearray(body)
            b[len(b) // 2] ^= 0x10
            body = bytes(b)
        reply = 'HTTP/1.1 %d %s\r\n' % (status, reason)
        reply += ''.join('%s: %s\r\n' % kv for kv in out_headers)
        reply += 'Content-Length: %d\r\nConnection: close\r\n\r\n' % length
        conn.sendall(reply.encode('latin-1'))
        if fault == 'truncate':
            conn.sendall(body[:len(body) // 2])
        elif fault == 'stall':
            conn.sendall(body[:100])
            self.stopping.wait(self.stall_seconds)
        else:
            conn.sendall(body)

    def start(self):
        import socketserver
        proxy = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                try:
                    proxy._serve(self.request)
                except OSError:
                    pass

        class Server(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = True

        return self.serve(Server(('127.0.0.1', self.port), Handler))

    def stop(self):
        self.stopping.set()  # a stalled reply ends now
        super().stop()
