"""Dedup keys and content digests, shared by the protocol (ingest) and the state reloader.

Both must compute exactly the same digests, so they live in one place.
"""

from __future__ import annotations

import hashlib
from datetime import datetime


def dedup_key(
    port: int, role: str, content: str, client_ts: datetime | None, client_id: str | None
) -> str:
    """The contract's dedup key as 32 hex digits (a uuid): the client id when given, else a
    fingerprint of (port, role, content, timestamp)."""
    if client_id is not None:
        material = b"id\0" + client_id.encode()
    else:
        stamp = client_ts.isoformat() if client_ts else ""
        material = f"fp\0{port}\0{role}\0{stamp}\0{content}".encode()
    return hashlib.blake2b(material, digest_size=16).hexdigest()


def content_hash(content: str) -> str:
    """16 hex digits of the content: tells an edit (same client id, new content) from a resend."""
    return hashlib.blake2b(content.encode(), digest_size=8).hexdigest()
