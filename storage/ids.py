"""Time-ordered ids (UUIDv7, RFC 9562) for sessions and messages.

Time-ordered keys land next to each other in B-tree indexes, so inserts touch few pages; they
also sort by creation time, which makes them good keyset cursors.
"""

from __future__ import annotations

import random
import time
import uuid

# Not a CSPRNG on purpose: ids must be unique, not secret (access is checked per user), and
# os.urandom per id costs a syscall on the ingest hot path. The module-level generator is
# reseeded in forked workers.


def new_id(unix_ms: int | None = None) -> uuid.UUID:
    """A UUIDv7: 48 bits of Unix milliseconds, version, variant and 74 random bits."""
    ms = time.time_ns() // 1_000_000 if unix_ms is None else unix_ms
    rand = random.getrandbits(74)
    value = (ms & 0xFFFF_FFFF_FFFF) << 80
    value |= 0x7 << 76  # version 7
    value |= (rand >> 62) << 64  # 12 bits rand_a
    value |= 0b10 << 62  # RFC 9562 variant
    value |= rand & ((1 << 62) - 1)  # 62 bits rand_b
    return uuid.UUID(int=value)
