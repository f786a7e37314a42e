"""Standard JWTs: HS256 with the shared secret, RS256/ES256 from an identity service's public
key or JWKS document, `aud` and `iss` when configured, and no algorithm a token can pick."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from gateway.auth import TokenVerifier, authenticate, issue_token
from gateway.errors import Unauthorized
from gateway.settings import Settings
from tests.conftest import request, run_gateway

SECRET = "jwt-test-secret-0123456789abcdef-xyz"


def _rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem(private: Any) -> str:
    return str(
        private.public_key()
        .public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        .decode()
    )


def _claims(user: str = "alice", ttl: int = 60, **extra: Any) -> dict[str, Any]:
    return {"sub": user, "exp": int(time.time()) + ttl, **extra}


def _verifier(**fields: str) -> TokenVerifier:
    verifier = TokenVerifier.from_settings(replace(Settings(), **fields))  # type: ignore[arg-type]
    assert verifier is not None
    return verifier


async def test_hs256_checks_aud_and_iss_when_configured() -> None:
    """With an audience and an issuer set, a token must carry both; `chat-gateway token`'s
    `issue_token` writes them."""
    verifier = _verifier(auth_secret=SECRET, auth_audience="chat", auth_issuer="https://id")
    good = issue_token(SECRET, "alice", 60, audience="chat", issuer="https://id")
    assert await verifier.user_of(good) == "alice"
    for token, fault in [
        (issue_token(SECRET, "alice", 60, issuer="https://id"), "no 'aud' claim"),
        (issue_token(SECRET, "alice", 60, audience="chat"), "no 'iss' claim"),
        (issue_token(SECRET, "alice", 60, audience="other", issuer="https://id"), "aud"),
        (issue_token(SECRET, "alice", 60, audience="chat", issuer="https://evil"), "iss"),
    ]:
        with pytest.raises(Unauthorized, match=fault):
            await verifier.user_of(token)


async def test_claims_are_required_and_checked() -> None:
    """No `exp`, no `sub`, a `sub` that is no user id, or a past `exp` is refused."""
    verifier = _verifier(auth_secret=SECRET)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"sub": "alice"}, "'exp' claim"),
        ({"exp": int(time.time()) + 60}, "'sub' claim"),
        (_claims(user="x" * 129), "sub must be a user id"),
        (_claims(ttl=-10), "expired"),
    ]
    for claims, message in cases:
        with pytest.raises(Unauthorized, match=message):
            await verifier.user_of(jwt.encode(claims, SECRET, algorithm="HS256"))


async def test_a_token_cannot_choose_its_algorithm() -> None:
    """`alg: none`, and an HS256 token "signed" with the public key's text (the classic key
    confusion), are refused by a public-key verifier; an RS256 token by a secret one."""
    private = _rsa()
    verifier = _verifier(auth_public_key=_pem(private))
    unsigned = jwt.encode(_claims(), "", algorithm="none")
    with pytest.raises(Unauthorized):
        await verifier.user_of(unsigned)
    # PyJWT itself refuses to HMAC-sign with a PEM, so the forgery is built by hand.
    header = jwt.utils.base64url_encode(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = jwt.utils.base64url_encode(json.dumps(_claims(user="mallory")).encode())
    signing_input = header + b"." + body
    mac = jwt.algorithms.HMACAlgorithm(jwt.algorithms.HMACAlgorithm.SHA256)
    forged_sig = mac.sign(signing_input, _pem(private).encode())
    forged = (signing_input + b"." + jwt.utils.base64url_encode(forged_sig)).decode()
    with pytest.raises(Unauthorized):
        await verifier.user_of(forged)
    rs256 = jwt.encode(_claims(), private, algorithm="RS256")
    with pytest.raises(Unauthorized):
        await _verifier(auth_secret=SECRET).user_of(rs256)


@pytest.mark.parametrize("curve", ["RS256", "ES256"])
async def test_public_key_as_text_or_file(tmp_path: Path, curve: str) -> None:
    """RS256 and ES256 tokens check against the PEM given inline or as a file's path; a token
    from another key is refused."""
    private: Any = _rsa() if curve == "RS256" else ec.generate_private_key(ec.SECP256R1())
    stranger: Any = _rsa() if curve == "RS256" else ec.generate_private_key(ec.SECP256R1())
    key_file = tmp_path / "issuer.pem"
    key_file.write_text(_pem(private))
    token = jwt.encode(_claims(), private, algorithm=curve)
    for source in (_pem(private), str(key_file)):
        verifier = _verifier(auth_public_key=source)
        assert await verifier.user_of(token) == "alice"
        with pytest.raises(Unauthorized, match="signature"):
            await verifier.user_of(jwt.encode(_claims(), stranger, algorithm=curve))


def test_bad_keys_and_short_secrets_name_the_setting(tmp_path: Path) -> None:
    """A public key that is missing or not PEM, or a secret too short for HS256, is one
    ValueError naming its variable, raised before anything serves."""
    not_pem = tmp_path / "key.txt"
    not_pem.write_text("hello")
    for fields, message in [
        ({"auth_public_key": str(tmp_path / "missing.pem")}, "GATEWAY_AUTH_PUBLIC_KEY: cannot"),
        ({"auth_public_key": str(not_pem)}, "GATEWAY_AUTH_PUBLIC_KEY is not a PEM"),
        ({"auth_secret": "short"}, "GATEWAY_AUTH_SECRET must be at least 32 bytes"),
    ]:
        with pytest.raises(ValueError, match=message):
            TokenVerifier.from_settings(replace(Settings(), **fields))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="GATEWAY_AUTH_SECRET"):
        issue_token("short", "alice", 60)


@pytest.fixture
def jwks_server() -> Iterator[tuple[str, dict[str, Any]]]:
    """A JWKS document served on 127.0.0.1 (an identity service's), and the keys behind it;
    `document["keys"]` can be changed while it runs, `hits` counts fetches."""
    state: dict[str, Any] = {"document": {"keys": []}, "hits": 0}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state["hits"] += 1
            body = json.dumps(state["document"]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json", state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def _jwk(private: Any, kid: str) -> dict[str, Any]:
    algorithm = RSAAlgorithm if isinstance(private, rsa.RSAPrivateKey) else ECAlgorithm
    jwk: dict[str, Any] = json.loads(algorithm.to_jwk(private.public_key()))
    return {**jwk, "kid": kid, "use": "sig"}


async def test_jwks_picks_the_key_by_kid(jwks_server: tuple[str, dict[str, Any]]) -> None:
    """The verifier fetches the JWKS once and picks each token's key by `kid` (RS256 and
    ES256 side by side); an unknown `kid` is refused, and so is a JWKS that cannot be
    fetched, saying so."""
    url, state = jwks_server
    rsa_key, ec_key = _rsa(), ec.generate_private_key(ec.SECP256R1())
    state["document"] = {"keys": [_jwk(rsa_key, "r1"), _jwk(ec_key, "e1")]}
    verifier = _verifier(auth_jwks_url=url)
    by_rsa = jwt.encode(_claims("rita"), rsa_key, algorithm="RS256", headers={"kid": "r1"})
    by_ec = jwt.encode(_claims("eve"), ec_key, algorithm="ES256", headers={"kid": "e1"})
    assert await verifier.user_of(by_rsa) == "rita"
    assert await verifier.user_of(by_ec) == "eve"
    assert await verifier.user_of(by_rsa) == "rita"
    assert state["hits"] == 1  # cached
    unknown = jwt.encode(_claims(), _rsa(), algorithm="RS256", headers={"kid": "zz"})
    with pytest.raises(Unauthorized, match="invalid token"):
        await verifier.user_of(unknown)
    closed = _verifier(auth_jwks_url="http://127.0.0.1:9/jwks.json")  # port 9: closed
    with pytest.raises(Unauthorized, match="could not be fetched"):
        await closed.user_of(by_rsa)


async def test_authenticate_takes_header_then_query() -> None:
    """The bearer header wins over `?token=`; no token is 401 naming both ways to send one;
    local mode is the local user whatever is sent."""
    settings = replace(Settings(), auth_secret=SECRET)
    verifier = TokenVerifier.from_settings(settings)
    alice, bob = issue_token(SECRET, "alice", 60), issue_token(SECRET, "bob", 60)
    assert await authenticate(settings, verifier, f"Bearer {alice}", bob) == "alice"
    assert await authenticate(settings, verifier, None, bob) == "bob"
    with pytest.raises(Unauthorized, match="Authorization: Bearer"):
        await authenticate(settings, verifier, None, None)
    assert await authenticate(Settings(), None, None, None) == Settings().local_user


async def test_gateway_with_an_identity_services_key(settings: Settings) -> None:
    """End to end: a gateway configured with a public key, audience and issuer takes an
    RS256 token of the service on the socket and over HTTP, and refuses one for another
    audience with 401."""
    private = _rsa()
    secured = replace(
        settings, auth_public_key=_pem(private), auth_audience="gw", auth_issuer="https://id"
    )
    token = jwt.encode(_claims("ida", aud="gw", iss="https://id"), private, algorithm="RS256")
    wrong = jwt.encode(_claims("ida", aud="x", iss="https://id"), private, algorithm="RS256")
    async with run_gateway(secured) as running:
        headers = {"Authorization": f"Bearer {token}"}
        async with running.connect(additional_headers=headers) as ws:
            assert (await request(ws, {"type": "hello"}))["user_id"] == "ida"
        async with httpx.AsyncClient(base_url=running.http_url) as http:
            ok = await http.get("/api/stats", headers=headers)
            refused = await http.get("/api/stats", headers={"Authorization": f"Bearer {wrong}"})
    assert ok.status_code == 200
    assert refused.status_code == 401
    assert "aud" in refused.json()["error"]["message"]
