"""Message and session ids are UUIDv7: version 7, RFC 9562 variant, the creation millisecond
first, so ids sort by creation time; the text form on the ingest path is the same."""

from __future__ import annotations

import time
import uuid

from storage.ids import new_id, new_id_text


def test_new_id_text_is_a_canonical_uuid_v7_of_now() -> None:
    """new_id_text gives lowercase canonical text of a version-7, RFC-variant uuid whose
    first 48 bits are the current Unix millisecond."""
    before = time.time_ns() // 1_000_000
    texts = [new_id_text() for _ in range(1000)]
    after = time.time_ns() // 1_000_000
    for text in texts:
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
        assert before <= parsed.int >> 80 <= after
    assert len(set(texts)) == len(texts)


def test_both_forms_agree_on_layout() -> None:
    """new_id and new_id_text put the same fields in the same bits."""
    made = new_id(1_765_000_000_123)
    assert made.version == 7 and made.variant == uuid.RFC_4122
    assert made.int >> 80 == 1_765_000_000_123
    text = uuid.UUID(new_id_text())
    assert (text.int >> 76) & 0xF == (made.int >> 76) & 0xF == 7
    assert (text.int >> 62) & 0b11 == (made.int >> 62) & 0b11 == 0b10
