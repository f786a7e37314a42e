"""GATEWAY_METRICS_ADDRESS: /metrics on its own address, or nowhere, and off the public
listener either way."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import httpx
import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML: from uvicorn[standard] and schemathesis

from gateway.app import create_app
from gateway.metrics_listener import Address, parse_address
from gateway.settings import Settings
from tests.conftest import RECV_TIMEOUT, request, run_gateway


def test_addresses_parse_or_name_the_setting() -> None:
    """host:port (IPv6 in brackets) parses; empty and `off` mean no listener; anything else
    is one error naming GATEWAY_METRICS_ADDRESS."""
    assert parse_address("127.0.0.1:9100") == Address("127.0.0.1", 9100)
    assert parse_address("[::1]:9100") == Address("::1", 9100)
    assert parse_address("") is None and parse_address("off") is None
    for bad in ("9100", "127.0.0.1:", "127.0.0.1:70000", "example.com:9100", "a:b"):
        with pytest.raises(ValueError, match="GATEWAY_METRICS_ADDRESS"):
            parse_address(bad)


def test_a_separate_address_needs_one_worker(settings: Settings) -> None:
    """Several workers cannot share one metrics port: refused before anything starts."""
    with pytest.raises(ValueError, match="--workers 1"):
        create_app(dataclasses.replace(settings, metrics_address="127.0.0.1:0", workers=2))


async def test_metrics_move_to_their_own_address(settings: Settings) -> None:
    """The separate listener serves the exposition (with live counters); the public one
    answers 404 for /metrics, and the listener answers nothing but /metrics."""
    moved = dataclasses.replace(settings, metrics_address="127.0.0.1:0")
    async with run_gateway(moved) as running:
        async with running.connect() as ide:
            await request(ide, {"type": "ping"})
        port = running.app_state.metrics_port
        async with httpx.AsyncClient(timeout=RECV_TIMEOUT) as http:
            scraped = await http.get(f"http://127.0.0.1:{port}/metrics")
            other = await http.get(f"http://127.0.0.1:{port}/api/stats")
            public = await http.get(f"{running.http_url}/metrics")
        assert scraped.status_code == 200
        assert 'gateway_frames_in_total{type="ping"} 1.0' in scraped.text
        assert other.status_code == 404
        assert public.status_code == 404 and public.json()["error"]["code"] == "not_found"


async def test_a_silent_scraper_does_not_hold_the_listener(settings: Settings) -> None:
    """A client that connects and sends nothing complete is dropped; others are served."""
    moved = dataclasses.replace(settings, metrics_address="127.0.0.1:0")
    async with run_gateway(moved) as running:
        port = running.app_state.metrics_port
        _, idle = await asyncio.open_connection("127.0.0.1", port)
        idle.write(b"GET /metr")
        async with httpx.AsyncClient(timeout=RECV_TIMEOUT) as http:
            assert (await http.get(f"http://127.0.0.1:{port}/metrics")).status_code == 200
        idle.close()


async def test_metrics_off_are_served_nowhere(settings: Settings) -> None:
    """`off`: the public /metrics is 404 and no listener is opened."""
    async with run_gateway(dataclasses.replace(settings, metrics_address="off")) as running:
        async with httpx.AsyncClient(base_url=running.http_url, timeout=RECV_TIMEOUT) as http:
            assert (await http.get("/metrics")).status_code == 404
        assert not hasattr(running.app_state, "metrics_port")


def test_compose_keeps_metrics_off_the_published_port() -> None:
    """The compose stack moves the gateway's /metrics to a port it does not publish."""
    compose = yaml.safe_load((Path(__file__).resolve().parents[1] / "compose.yaml").read_text())
    gateway = compose["services"]["gateway"]
    address = parse_address(gateway["environment"]["GATEWAY_METRICS_ADDRESS"])
    assert address is not None
    published = {str(mapping).split(":")[-1] for mapping in gateway.get("ports", [])}
    assert str(address.port) not in published and published == {"8000"}
