"""gateway/validation.py: declared input decodes strictly, and a mistake is named in words.

Pure: the HTTP request bodies of gateway/wire.py serve as the declarations (the client frames
have their own cases in tests/test_protocol.py).
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from gateway import wire
from gateway.errors import BadRequest
from gateway.validation import Rules, convert

NEW_SESSION = Rules.of(wire.NewSession)
SESSION_CHANGE = Rules.of(wire.SessionChange)


@pytest.mark.parametrize(
    ("body", "message", "field"),
    [
        ({}, "port must be an integer from 1 to 65535", "port"),
        ({"port": "9222"}, "port must be an integer from 1 to 65535", "port"),
        ({"port": True}, "port must be an integer from 1 to 65535", "port"),
        ({"port": 0}, "port must be an integer from 1 to 65535", "port"),
        ({"port": 1, "title": 5}, "title must be a string of at most 200 characters", "title"),
        ({"port": 1, "title": "x" * 201}, "title must be a string of at most 200", "title"),
        ({"port": 1, "title": "a\u0000b"}, "without NUL", "title"),
        ({"port": 1, "colour": "red"}, "unknown field colour", "colour"),
    ],
)
def test_a_bad_new_session_names_its_field_and_rule(
    body: dict[str, Any], message: str, field: str
) -> None:
    """Each mistake in a `POST /api/sessions` body is one BadRequest naming the field."""
    with pytest.raises(BadRequest) as caught:
        convert(body, wire.NewSession, NEW_SESSION)
    assert message in caught.value.message
    assert caught.value.details == {"field": field}


def test_a_session_change_tells_absent_from_null() -> None:
    """An absent field stays UNSET (left as it is); a null title is there, to clear it."""
    untouched = convert({"pinned": True}, wire.SessionChange, SESSION_CHANGE)
    assert untouched.title is msgspec.UNSET and untouched.status is msgspec.UNSET
    assert untouched.pinned is True
    cleared = convert({"title": None, "status": "archived"}, wire.SessionChange, SESSION_CHANGE)
    assert cleared.title is None and cleared.status == "archived"
    for body, field in (({"status": "deleted"}, "status"), ({"pinned": "yes"}, "pinned")):
        with pytest.raises(BadRequest) as caught:
            convert(body, wire.SessionChange, SESSION_CHANGE)
        assert caught.value.details == {"field": field}
        assert caught.value.message.startswith(f"{field} must be ")


def test_a_field_without_a_rule_is_refused_at_declaration() -> None:
    """A declared field with no description (no rule to state) fails when its rules are
    built, not later in front of a client."""

    class Vague(msgspec.Struct):
        port: int

    with pytest.raises(TypeError, match="port has no description"):
        Rules.of(Vague)
