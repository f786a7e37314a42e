"""The OpenAPI document: valid, complete, and true of the running API (schemathesis).

The fuzz run drives schemathesis (sync, `requests`) from a worker thread: the gateway runs in
this test's event loop, which must keep serving while the requests are made.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from dataclasses import dataclass, replace
from typing import Any

import httpx
import jsonschema_rs
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import APIOperation, Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.specs.openapi.schemas import OpenApiSchema
from starlette.routing import Route

from gateway.app import create_app
from gateway.auth import issue_token
from gateway.http.openapi import document
from gateway.settings import Settings
from storage.writer import BatchWriter
from tests.conftest import RunningGateway, request, run_gateway

Endpoint = tuple[str, str]  # (METHOD, path template)
Operation = APIOperation[Any, Any, Any, Any]

# Documented but not served by the app yet: other changes wire them. The fuzz and security
# runs cover what the app serves, so wiring one puts it under test; delete its entry then.
NOT_YET_SERVED: set[Endpoint] = set()

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# Deterministic and bounded: the same cases every run, no example database written to disk,
# and no shrinking, so a failing run is as quick as a passing one (schemathesis prints each
# failure with a curl line to reproduce it).
FUZZ = settings(
    max_examples=25,
    phases=[Phase.explicit, Phase.generate],
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
    print_blob=False,
)


def served() -> set[Endpoint]:
    """The HTTP operations the app routes (not `/ws`, not the static mount; HEAD is implied)."""
    app = create_app(Settings())  # nothing connects before the lifespan starts
    return {
        (method, route.path)
        for route in app.routes
        if isinstance(route, Route)
        for method in route.methods or ()
        if method != "HEAD"
    }


def documented(doc: dict[str, Any]) -> list[Endpoint]:
    """The document's operations, in its order."""
    return [
        (method.upper(), path)
        for path, item in doc["paths"].items()
        for method in item
        if method in {"get", "put", "post", "patch", "delete"}
    ]


def live_operations(schema: OpenApiSchema) -> list[Operation]:
    """The documented operations the app serves, in the document's order."""
    serving = served()
    return [
        schema[path][method]
        for method, path in documented(schema.raw_schema)
        if (method, path) in serving
    ]


def test_document_is_valid_openapi() -> None:
    """The document is valid OpenAPI 3.1 and each component schema is valid JSON Schema."""
    doc = document()
    schemathesis.openapi.from_dict(doc).validate()
    for name, schema in doc["components"]["schemas"].items():
        assert jsonschema_rs.meta.is_valid(schema), name


def test_every_served_operation_is_documented() -> None:
    """Every route the app serves is documented; only known pending ones are not served yet."""
    doc = document()
    assert served() - set(documented(doc)) == set(), "document these in gateway/http/openapi.py"
    assert set(documented(doc)) - served() <= NOT_YET_SERVED


def sample(operation: Operation) -> Case[Operation]:
    """A request the operation accepts, authentication aside (the session id is unknown)."""
    values = {"port": 9222, "session_id": str(uuid.uuid4())}
    kwargs: dict[str, Any] = {
        "path_parameters": {k: v for k, v in values.items() if f"{{{k}}}" in operation.path}
    }
    if operation.path == "/api/search":
        kwargs["query"] = {"q": "hello"}
    if operation.method in {"post", "patch"} and len(operation.body) > 0:  # takes a body
        kwargs["body"] = {"port": 9222} if operation.method == "post" else {}
    return operation.Case(**kwargs)


def refusals(schema: OpenApiSchema, base_url: str, token: str | None) -> set[str]:
    """The served operations that answer a sample request with 401; every answer must be
    documented."""
    refused = set()
    headers = {"Authorization": f"Bearer {token}"} if token else None
    with requests.Session() as http:
        for operation in live_operations(schema):
            case = sample(operation)
            response = case.call(base_url=base_url, session=http, headers=headers)
            case.validate_response(response, checks=CHECKS, headers=headers)
            if response.status_code == 401:
                refused.add(operation.label)
    return refused


async def test_token_requirements_are_as_documented(settings: Settings) -> None:
    """With a secret, exactly the operations documented as protected need a token (else 401)."""
    secured = replace(settings, auth_secret="openapi-test-secret-0123456789abcd")
    schema = schemathesis.openapi.from_dict(document())
    protected = {
        f"{method.upper()} {path}"
        for path, item in schema.raw_schema["paths"].items()
        for method, operation in item.items()
        if method != "parameters" and operation.get("security") != []
    }
    token = issue_token(secured.auth_secret, secured.local_user, 60)
    async with run_gateway(secured) as running:
        anonymous = await asyncio.to_thread(refusals, schema, running.http_url, None)
        authorized = await asyncio.to_thread(refusals, schema, running.http_url, token)
    assert anonymous == {op.label for op in live_operations(schema)} & protected
    assert authorized == set()


@dataclass(frozen=True)
class Seeded:
    session: str  # archived, with stored messages, a buffered edit and a buffered message
    doomed: str  # for DELETE, which would otherwise take the other away
    cursor: str  # a real `next_cursor`


async def seed(running: RunningGateway) -> Seeded:
    """Data on every read path: a session with messages in PostgreSQL and in the buffer
    (including a buffered edit of a stored one), every optional message field set, and a
    rotation, so the generated reads meet real records and not only 404s."""
    rich = {"timestamp": "2026-11-23T10:00:00+02:00", "metadata": {"k": [1, "x", None]}}
    async with running.connect() as ws:
        first = await request(
            ws,
            {
                "type": "extracted",
                "port": 9222,
                "messages": [
                    {"id": "t1", "content": "hello", **rich},
                    {"id": "t2", "role": "assistant", "content": "# hi", "content_type": "code"},
                ],
            },
        )
        await request(ws, {"type": "message", "port": 9222, "id": "t2", "content": "# hi!"})
        gateway = running.gateway
        async with BatchWriter(gateway.pool, gateway.redis, gateway.keys).running() as writer:
            await asyncio.wait_for(writer.wait_drained(), 15)
        # No writer from here on: the rest stays in the buffer.
        await request(ws, {"type": "message", "port": 9222, "id": "t1", "content": "hello!"})
        await request(ws, {"type": "message", "port": 9222, "role": "tool", "content": "x", **rich})
        await request(ws, {"type": "session.new", "port": 9222, "title": "second"})
        await request(ws, {"type": "message", "port": 9222, "content": "in the new session"})
        doomed = await request(ws, {"type": "session.new", "port": 9400})
    async with httpx.AsyncClient(base_url=running.http_url) as http:
        page = (await http.get("/api/sessions", params={"limit": 1})).json()
    return Seeded(first["session_id"], doomed["session"]["id"], page["next_cursor"])


def aims(operation: Operation, seeded: Seeded) -> list[dict[str, Any]]:
    """Fixed inputs for extra runs of the operation, aimed at data that exists: generated
    ids, ports and cursors alone almost only ever reach 404, empty lists and 400."""
    if "{session_id}" in operation.path:
        target = seeded.doomed if operation.method == "delete" else seeded.session
        return [{"path_parameters": {"session_id": target}}]
    if operation.path == "/api/ports/{port}/messages":
        return [{"path_parameters": {"port": 9222}}]
    if operation.label == "GET /api/sessions":
        return [{"query": {"cursor": seeded.cursor}}]
    return []


def free_inputs(operation: Operation, fixed: dict[str, Any]) -> bool:
    """Whether the operation has a body or a parameter that `fixed` leaves to generate."""
    pinned = {**fixed.get("path_parameters", {}), **fixed.get("query", {})}
    parameters = itertools.chain(operation.path_parameters, operation.query)
    return bool(operation.body) or any(p.name not in pinned for p in parameters)


def fuzz(schema: OpenApiSchema, base_url: str, seeded: Seeded) -> list[str]:
    """Every served operation with valid and invalid inputs, generated freely and aimed at
    seeded data; the failures found, one per run."""
    failures: list[str] = []
    with requests.Session() as http:
        for operation in live_operations(schema):
            modes = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
            for mode, fixed in itertools.product(modes, [{}, *aims(operation, seeded)]):
                if mode is GenerationMode.NEGATIVE and not free_inputs(operation, fixed):
                    continue  # nothing left to make invalid
                strategy = operation.as_strategy(generation_mode=mode, **fixed)

                @FUZZ
                @given(case=strategy)
                def run(case: Case[Operation]) -> None:
                    if isinstance(case.body, dict) and case.body.get("durable") is True:
                        # No writer runs here: a durable send would wait for a commit that
                        # cannot come (test_send_api checks `durable` with a writer).
                        case.body["durable"] = False
                    case.call_and_validate(base_url=base_url, session=http, checks=CHECKS)

                try:
                    run()
                except (Exception, BaseExceptionGroup) as exc:
                    failures.append(f"[{mode.value} {fixed or ''}] {operation.label}\n{exc}")
    return failures


async def test_api_conforms_to_its_document(gateway_no_writer: RunningGateway) -> None:
    """Generated valid and invalid requests get no 5xx, only documented statuses and bodies."""
    seeded = await seed(gateway_no_writer)
    schema = schemathesis.openapi.from_dict(document())
    failures = await asyncio.to_thread(fuzz, schema, gateway_no_writer.http_url, seeded)
    assert not failures, "\n\n".join(failures)
