"""gateway/guard.py: foreign Hosts and Origins are refused before any route, in both modes;
clients without an Origin keep working; every response carries the security headers."""

from __future__ import annotations

import dataclasses

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from gateway.guard import Allowed, default_hosts
from gateway.settings import Settings
from tests.conftest import RECV_TIMEOUT, RunningGateway, request, run_gateway

EVIL = "https://evil.example"


def test_default_hosts_are_the_names_of_the_address_served() -> None:
    """Loopback gets its three names, a wildcard anything, an address or a name itself."""
    assert default_hosts("127.0.0.1") == {"localhost", "127.0.0.1", "[::1]"}
    assert default_hosts("::1") == {"localhost", "127.0.0.1", "[::1]"}
    assert default_hosts("0.0.0.0") == {"*"}
    assert default_hosts("::") == {"*"}
    assert default_hosts("192.0.2.7") == {"192.0.2.7"}
    assert default_hosts("fd00::7") == {"[fd00::7]"}
    assert default_hosts("Chat.Internal") == {"chat.internal"}


def test_hosts_and_origins_match_as_browsers_send_them() -> None:
    """Host is matched without its port; an Origin passes when it is the request's own
    (scheme http/https, same host and port) or listed."""
    allowed = Allowed.for_address("127.0.0.1", "", "https://ui.example")
    assert allowed.host_allowed("127.0.0.1:8000") and allowed.host_allowed("LOCALHOST")
    assert allowed.host_allowed("[::1]:8000")
    assert not allowed.host_allowed("evil.example:8000")
    assert not allowed.host_allowed(None) and not allowed.host_allowed("")
    assert allowed.origin_allowed("http://127.0.0.1:8000", "127.0.0.1:8000")
    assert not allowed.origin_allowed("http://127.0.0.1:3000", "127.0.0.1:8000")
    assert not allowed.origin_allowed("null", "127.0.0.1:8000")
    assert allowed.origin_allowed("https://UI.example/", "127.0.0.1:8000")
    assert not allowed.origin_allowed(EVIL, "127.0.0.1:8000")
    listed = Allowed.for_address("0.0.0.0", "chat.example, Other.example", "")
    assert listed.hosts == {"chat.example", "other.example"}


async def test_a_foreign_origin_gets_no_websocket(gateway: RunningGateway) -> None:
    """The report's attack: a page on evil.example opening /ws is refused with 403 before
    anything is read or stored; the same client without an Origin is served."""
    with pytest.raises(InvalidStatus) as refused:
        async with connect(gateway.ws_url, origin=EVIL, open_timeout=RECV_TIMEOUT):  # type: ignore[arg-type]
            pass
    assert refused.value.response.status_code == 403
    assert b'"code":"forbidden"' in refused.value.response.body
    assert b"GATEWAY_ALLOWED_ORIGINS" in refused.value.response.body
    async with gateway.connect() as ide:  # no Origin: an IDE extension
        ack = await request(ide, {"type": "message", "port": 9330, "content": "hi"})
    assert ack["type"] == "ack"
    own = f"http://127.0.0.1:{gateway.port}"
    async with gateway.connect(origin=own) as tab:  # the gateway's own web UI
        assert (await request(tab, {"type": "ping"}))["type"] == "pong"


async def test_a_foreign_host_is_refused_on_every_route(gateway: RunningGateway) -> None:
    """DNS rebinding: a request naming another Host gets 403 with the contract's error,
    on the API, the UI and /ws alike."""
    async with httpx.AsyncClient(base_url=gateway.http_url, timeout=RECV_TIMEOUT) as http:
        for path in ("/api/stats", "/", "/healthz", "/openapi.json"):
            response = await http.get(path, headers={"Host": f"evil.example:{gateway.port}"})
            assert response.status_code == 403, path
            assert response.json()["error"]["code"] == "forbidden"
            assert "GATEWAY_ALLOWED_HOSTS" in response.json()["error"]["message"]
        assert (await http.get("/api/stats", headers={"Host": "localhost"})).status_code == 200
    with pytest.raises(InvalidStatus) as refused:
        # The URI names the Host header; host and port only say where the TCP goes.
        rebound = f"ws://evil.example:{gateway.port}/ws"
        async with connect(rebound, host="127.0.0.1", port=gateway.port, open_timeout=RECV_TIMEOUT):
            pass
    assert refused.value.response.status_code == 403


async def test_a_foreign_page_cannot_write_over_http(gateway: RunningGateway) -> None:
    """A cross-site POST or PATCH (a form or fetch from evil.example) is refused and
    changes nothing; the gateway's own page may."""
    async with gateway.connect() as ide:
        sid = (await request(ide, {"type": "message", "port": 9331, "content": "x"}))["session_id"]
    async with httpx.AsyncClient(base_url=gateway.http_url, timeout=RECV_TIMEOUT) as http:
        foreign = {"Origin": EVIL}
        created = await http.post("/api/sessions", json={"port": 9332}, headers=foreign)
        renamed = await http.patch(f"/api/sessions/{sid}", json={"title": "pwn"}, headers=foreign)
        assert (created.status_code, renamed.status_code) == (403, 403)
        session = (await http.get(f"/api/sessions/{sid}")).json()
        assert session["title"] is None
        ports = (await http.get("/api/ports")).json()["ports"]
        assert 9332 not in [p["port"] for p in ports]
        own = {"Origin": gateway.http_url}
        accepted = await http.patch(f"/api/sessions/{sid}", json={"title": "ok"}, headers=own)
        assert accepted.status_code == 200 and accepted.json()["title"] == "ok"


async def test_configured_origins_and_hosts_are_let_in(settings: Settings) -> None:
    """GATEWAY_ALLOWED_ORIGINS admits a listed page; GATEWAY_ALLOWED_HOSTS a listed name,
    and only it (the loopback defaults no longer apply)."""
    configured = dataclasses.replace(
        settings, allowed_origins="https://ui.example", allowed_hosts="chat.example, 127.0.0.1"
    )
    async with run_gateway(configured) as running:
        async with running.connect(origin="https://ui.example") as tab:
            assert (await request(tab, {"type": "ping"}))["type"] == "pong"
        async with httpx.AsyncClient(base_url=running.http_url, timeout=RECV_TIMEOUT) as http:
            assert (await http.get("/healthz", headers={"Host": "chat.example"})).status_code == 200
            assert (await http.get("/healthz", headers={"Host": "localhost"})).status_code == 403


async def test_every_response_carries_the_security_headers(
    gateway: RunningGateway, http: httpx.AsyncClient
) -> None:
    """API answers, errors, static files and the page all say nosniff, no-referrer and no
    framing; the page keeps its own full policy."""
    for path in ("/api/stats", "/api/sessions/nope", "/ui/app.js", "/openapi.json", "/metrics"):
        response = await http.get(path)
        assert response.headers["x-content-type-options"] == "nosniff", path
        assert response.headers["referrer-policy"] == "no-referrer", path
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"], path
    page = await http.get("/")
    assert "script-src 'self'" in page.headers["content-security-policy"]
