"""Build a Hugging Face hub cache in tmp, laid out as huggingface_hub lays it out:

    <cache>/models--ORG--NAME/blobs/<sha256 of the file>
    <cache>/models--ORG--NAME/refs/<revision>          (the commit hash, no newline)
    <cache>/models--ORG--NAME/snapshots/<commit>/<path> -> ../../blobs/<sha256> (relative symlinks)
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def populate_hf_cache(cache: Path, repo_id: str, src: Path, revision: str = "main") -> Path:
    """Put every file under ``src`` into ``cache`` as one commit of ``repo_id``; returns the snapshot."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    files = sorted(p for p in src.rglob("*") if p.is_file())
    commit = hashlib.sha1(b"".join(p.relative_to(src).as_posix().encode() + p.read_bytes()
                                   for p in files)).hexdigest()
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    for f in files:
        data = f.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        if not blob.exists():
            blob.write_bytes(data)
        link = snapshot / f.relative_to(src)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / revision).write_text(commit)
    return snapshot
