#!/usr/bin/python3
"""`meson install` puts what a Debian user expects where they expect it.

Runs `meson install --destdir TMP --no-rebuild` on this build dir and checks, under TMP and the
configured prefix (/usr/local by default):
- bin/mkrafs, bin/rafsd, bin/rafsctl, bin/rafs-snapshotter: executables that run (`--help` exits 0);
- lib/systemd/system/rafsd.service and rafs-snapshotter.service: each ExecStart is the installed
  program (`serve`, no --config that would have to exist), KillMode=process, Documentation the
  installed README, no @word@ left unreplaced; rafsd's ExecReload sends SIGHUP;
- share/doc/rafsd/README.md and config.example.toml: the source tree's files;
and that nothing else is installed.

Exit: 0 pass, 1 fail.
"""

import argparse
import os
import re
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from rafstest import harness  # noqa: E402
from rafstest.harness import run, text  # noqa: E402

SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--build-root', required=True)
    ap.add_argument('--prefix', required=True)
    ap.add_argument('--keep', action='store_true', default=os.environ.get('RAFSTEST_KEEP') == '1')
    args = ap.parse_args()
    ck = harness.Checker('install')
    with harness.temp_dir('rafsd-install-', keep=args.keep) as tmp:
        dest = os.path.join(tmp, 'dest')
        r = run(['meson', 'install', '-C', args.build_root, '--destdir', dest, '--no-rebuild'], timeout=300)
        if not ck.cmd_ok(r, 'meson install --destdir'):
            return ck.finish()
        prefix = args.prefix.rstrip('/')
        root = dest + prefix

        def installed(rel):
            return os.path.join(root, rel)

        expected = ['bin/mkrafs', 'bin/rafsd', 'bin/rafsctl', 'bin/rafs-snapshotter', 'lib/systemd/system/rafsd.service',
                    'lib/systemd/system/rafs-snapshotter.service',
                    'share/doc/rafsd/README.md', 'share/doc/rafsd/config.example.toml']
        files = sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(dest) for f in fs)
        ck.check(files == sorted(expected), 'installed exactly %s under %s' % (', '.join(expected), prefix),
                 'installed: %s' % files)

        for prog in ('mkrafs', 'rafsd', 'rafsctl', 'rafs-snapshotter'):
            path = installed('bin/' + prog)
            r = run([path, '--help'], timeout=30)
            ck.check(r.returncode == 0 and prog in text(r.stdout), '%s/bin/%s --help runs' % (prefix, prog),
                     'exit %s: %s' % (r.returncode, text(r.stdout + r.stderr)[-500:]))

        for prog in ('rafsd', 'rafs-snapshotter'):
            unit_path = installed('lib/systemd/system/%s.service' % prog)
            if not os.path.exists(unit_path):
                continue
            with open(unit_path) as f:
                unit = f.read()
            ck.check(re.search(r'^ExecStart=%s/%s serve( |$)' % (re.escape(prefix + '/bin'), prog), unit, re.M),
                     '%s.service starts %s/bin/%s serve' % (prog, prefix, prog),
                     'ExecStart lines: %s' % re.findall(r'^ExecStart=.*$', unit, re.M))
            ck.check(re.search(r'^KillMode=process$', unit, re.M), '%s.service: KillMode=process' % prog)
            if prog == 'rafsd':
                ck.check(re.search(r'^ExecReload=/bin/kill -HUP \$MAINPID$', unit, re.M),
                         'rafsd.service: systemctl reload sends SIGHUP (the reload that keeps the mounts)')
            ck.check('Documentation=file://%s/share/doc/rafsd/README.md' % prefix in unit,
                     '%s.service documents the installed README' % prog)
            ck.check(not re.search(r'@\w+@', unit), '%s.service: no @word@ left' % prog, str(re.findall(r'@\w+@', unit)))

        for rel, source in (('share/doc/rafsd/README.md', 'README.md'),
                            ('share/doc/rafsd/config.example.toml', 'daemon/api/config.example.toml')):
            path = installed(rel)
            if os.path.exists(path):
                with open(path, 'rb') as f, open(os.path.join(SOURCE_ROOT, source), 'rb') as g:
                    ck.check(f.read() == g.read(), '%s/%s is %s' % (prefix, rel, source))
    return ck.finish()


if __name__ == '__main__':
    sys.exit(main())
