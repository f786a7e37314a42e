"""What a client sent wrong, in words: msgspec's validation errors as the contract's errors.

Client input (WebSocket frames, HTTP request bodies) is declared as msgspec Structs whose
fields carry their bounds and a `description` written to follow "<field> must be": "an
integer from 1 to 65535". `Rules` reads those descriptions from the JSON Schema msgspec
generates, so a declaration is at once the decoder, the published schema and the error
message, and the three cannot drift apart. A field without a description, or a path with
two different rules, fails at import rather than giving a client a vague message.

msgspec reports the first bad field in document order, as "Expected `int` >= 1 - at
`$.port`"; `Rules.error` turns that into `BadRequest("port must be an integer from 1 to
65535", details={"field": "port"})`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec

from gateway.errors import BadRequest

# msgspec's messages: "Expected `int` >= 1 - at `$.port`", "Invalid enum value 'robot' - at
# `$.messages[3].role`", "Object missing required field `content` - at `$.messages[1]`",
# "Object contains unknown field `x`".
_VALIDATION = re.compile(r"(?P<problem>.*?)(?: - at `\$\.?(?P<path>[^`]*)`)?", re.DOTALL)
_MISSING = re.compile(r"Object missing required field `(?P<name>[^`]+)`")
_UNKNOWN = re.compile(r"Object contains unknown field `(?P<name>[^`]+)`")
_INDEX = re.compile(r"\[\d+\]")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Rule:
    text: str  # follows "<field> must be"
    is_object: bool  # a Struct: an error inside names the item ("messages[0]")


class Rules:
    """Every field path of the declared input ("port", "messages[].role", "ports[]") with its
    rule. A path means one thing in every member of a union (a field name is one alias
    everywhere), so one table serves a whole union of frames; a tagged union's tag field
    gets the rule "one of <its tags>"."""

    def __init__(self, schema: dict[str, Any], *, tag_field: str = "type") -> None:
        self._defs: dict[str, Any] = schema.get("$defs", {})
        self._rules: dict[str, _Rule] = {}
        self._tag_field = tag_field
        tags: set[str] = set()
        for member in schema.get("anyOf", [schema]):
            self._visit(member, "", tags)
        if tags:
            self._add(tag_field, _Rule(f"one of {', '.join(sorted(tags))}", is_object=False))

    @classmethod
    def of(cls, kind: Any) -> Rules:
        """The rules of a declared Struct (or union of them)."""
        (root,), components = msgspec.json.schema_components((kind,))
        return cls({**root, "$defs": components})

    def rule(self, path: str) -> str:
        """The rule of a field, by its path ("messages[3].metadata")."""
        return self._rules[_INDEX.sub("[]", path)].text

    def error(self, exc: msgspec.ValidationError, given: dict[str, Any]) -> BadRequest:
        """The client-facing error for a validation failure of `given` (the decoded JSON
        object, to quote a bad tag back)."""
        message = str(exc)
        found = _VALIDATION.fullmatch(message)
        assert found is not None  # every part of the pattern is optional
        where = found["path"] or ""
        if unknown := _UNKNOWN.fullmatch(found["problem"]):
            name = f"{where}.{unknown['name']}" if where else unknown["name"]
            return BadRequest(f"unknown field {name}", details={"field": name})
        if missing := _MISSING.fullmatch(found["problem"]):
            where = f"{where}.{missing['name']}" if where else missing["name"]
        rule = self._rules.get(_INDEX.sub("[]", where))
        if rule is None:  # not a declared field (a msgspec message this does not know)
            details = {"field": where} if where else None
            return BadRequest(f"invalid input: {message}", details=details)
        # An item of a list of numbers is reported as the list ("ports"); an item of a list
        # of objects by its index ("messages[0]").
        field = where
        if where.endswith("]") and not rule.is_object:
            field = where[: where.rindex("[")]
        text = f"{where} must be {rule.text}"
        tag = given.get(self._tag_field)
        if where == self._tag_field and isinstance(tag, str):
            text += f", not {tag!r}"
        return BadRequest(text, details={"field": field})

    def _add(self, path: str, rule: _Rule) -> None:
        if self._rules.setdefault(path, rule) != rule:
            raise TypeError(f"input field {path} has two rules: {self._rules[path]}, {rule}")

    def _visit(self, node: dict[str, Any], path: str, tags: set[str]) -> None:
        description = node.get("description")
        while "anyOf" in node:  # `X | None`: the rule is X's
            members = [member for member in node["anyOf"] if member != {"type": "null"}]
            if len(members) != 1:
                break
            [node] = members
            description = description or node.get("description")
        if "$ref" in node:
            struct = self._defs[node["$ref"].rsplit("/", 1)[1]]
            if path:
                self._add(path, _Rule("an object", is_object=True))
            for name, prop in struct["properties"].items():
                if not path and name == self._tag_field and "enum" in prop:
                    tags.update(prop["enum"])  # the tag: {"enum": ["message"]}
                else:
                    self._visit(prop, f"{path}.{name}" if path else name, tags)
            return
        if description is None:
            raise TypeError(f"input field {path} has no description (its rule)")
        self._add(path, _Rule(description, is_object=False))
        if node.get("type") == "array":
            self._visit(node["items"], path + "[]", tags)


def convert(given: dict[str, Any], kind: type[T], rules: Rules) -> T:
    """A decoded JSON object as the declared `kind`, or the `BadRequest` naming what is
    wrong (strict: no string for a number, no number for a boolean)."""
    try:
        return msgspec.convert(given, kind)
    except msgspec.ValidationError as exc:
        raise rules.error(exc, given) from None


def schema_of(kind: Any, *, title: str, description: str) -> dict[str, Any]:
    """The JSON Schema (2020-12) of a declared Struct or union, components under `$defs`."""
    (root,), components = msgspec.json.schema_components((kind,), ref_template="#/$defs/{name}")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": title,
        "description": description,
        **root,
        "$defs": components,
    }
