"""Shared helpers for rafsd's integration tests (real kernel, real tools).

Modules:
  tree     -- make_full_tree(): a directory tree with every case a container image has
  compare  -- compare_trees(): attribute-exact comparison of two trees (also a CLI)
  mount    -- erofs_mount()/umount()/mounted(): file-backed EROFS mounts via mount(2)
  tar      -- layer tar writer, OCI layer application (whiteouts), tar-vs-tree comparison
  boot     -- minimal read-only parsing of an EROFS/RAFS v6 superblock and device table
  harness  -- small test-script plumbing (skip codes, temp dirs, running commands)

Python 3 standard library only.
"""
