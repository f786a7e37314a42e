"""Who a request is: standard JWTs in token mode, the local user in local mode.

Token mode has three sources of trust, one at a time:

* `GATEWAY_AUTH_SECRET`: HS256 tokens signed with the shared secret (`chat-gateway token`
  mints them: anyone holding the secret can);
* `GATEWAY_AUTH_PUBLIC_KEY`: RS256 or ES256 tokens from an identity service, checked with
  its PEM public key (the text, or a path to a file holding it);
* `GATEWAY_AUTH_JWKS_URL`: the same, the key picked by the token's `kid` from the service's
  JWKS document (fetched off the event loop, cached for five minutes).

Claims: `sub` is the user id, `exp` is required; `aud` and `iss` are checked when
`GATEWAY_AUTH_AUDIENCE` / `GATEWAY_AUTH_ISSUER` are set; `admin: true` makes the user an
operator (the database health report), as does naming them in `GATEWAY_ADMIN_USERS`. In
local mode the local user is the operator: the machine is theirs. PyJWT does the checking: the
algorithm list is pinned per mode, so a token cannot pick `none` or turn the public key
into an HMAC secret. Without any of the three the gateway is in local single-user mode.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from gateway.errors import Forbidden, Unauthorized
from gateway.local_token import token_matches
from gateway.settings import Settings

_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_USER_CHARS = 128
SECRET_ALGORITHMS = ("HS256",)
KEY_ALGORITHMS = ("RS256", "ES256")
_JWKS_CACHE_S = 300
# RFC 7518 3.2: an HS256 key of fewer than 256 bits can be brute-forced offline from any
# one token, so a shorter secret is refused rather than warned about.
MIN_SECRET_BYTES = 32


def parse_duration(text: str) -> int:
    """Seconds in a duration like `90s`, `15m`, `12h` or `30d`."""
    match = _DURATION.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a duration like 30s, 15m, 12h or 1d")
    return int(match.group(1)) * _UNITS[match.group(2)]


def issue_token(
    secret: str,
    user_id: str,
    ttl_s: int,
    *,
    now: float | None = None,
    audience: str = "",
    issuer: str = "",
    admin: bool = False,
) -> str:
    """An HS256 token for `user_id`, valid `ttl_s` seconds (`aud`/`iss` when given; the
    `admin` claim when `admin`)."""
    check_secret(secret)
    if ttl_s <= 0:
        raise ValueError("the lifetime must be more than 0 seconds")
    if not user_id or len(user_id) > MAX_USER_CHARS:
        raise ValueError(f"user id must be 1 to {MAX_USER_CHARS} characters")
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {"sub": user_id, "iat": issued, "exp": issued + ttl_s}
    if audience:
        claims["aud"] = audience
    if issuer:
        claims["iss"] = issuer
    if admin:
        claims["admin"] = True
    return jwt.encode(claims, secret, algorithm="HS256")


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a request speaks for, and whether they are an operator (`authenticate_identity`
    says who is; from a token alone, its `admin` claim)."""

    user_id: str
    admin: bool = False


@dataclass(frozen=True)
class TokenVerifier:
    """Checks tokens against the configured source of trust (see the module docstring)."""

    key: Any  # the HMAC secret, or a public key object; None with a JWKS client
    algorithms: tuple[str, ...]
    jwks: jwt.PyJWKClient | None = None
    audience: str = ""
    issuer: str = ""

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenVerifier | None:
        """The verifier token mode uses; None in local mode. A public key that cannot be
        read is a ValueError naming GATEWAY_AUTH_PUBLIC_KEY."""
        aud, iss = settings.auth_audience, settings.auth_issuer
        if settings.auth_secret:
            check_secret(settings.auth_secret)
            return cls(settings.auth_secret, SECRET_ALGORITHMS, audience=aud, issuer=iss)
        if settings.auth_public_key:
            key = _public_key(settings.auth_public_key)
            return cls(key, KEY_ALGORITHMS, audience=aud, issuer=iss)
        if settings.auth_jwks_url:
            client = jwt.PyJWKClient(settings.auth_jwks_url, lifespan=_JWKS_CACHE_S, timeout=5)
            return cls(None, KEY_ALGORITHMS, jwks=client, audience=aud, issuer=iss)
        return None

    async def user_of(self, token: str, *, now: float | None = None) -> str:
        """The token's user id, or `Unauthorized` saying what is wrong with it."""
        return (await self.identity_of(token, now=now)).user_id

    async def identity_of(self, token: str, *, now: float | None = None) -> Identity:
        """The token's user and admin claim, or `Unauthorized` saying what is wrong."""
        key = self.key
        if self.jwks is not None:
            try:
                # urllib underneath: off the event loop (a cache hit costs a thread hop).
                found = await asyncio.to_thread(self.jwks.get_signing_key_from_jwt, token)
            except jwt.PyJWKClientConnectionError as exc:
                raise Unauthorized(f"the token's signing keys could not be fetched: {exc}") from exc
            except (jwt.PyJWKClientError, jwt.DecodeError) as exc:
                raise Unauthorized(f"invalid token: {exc}") from None
            key = found.key
        return self.identity(token, key, now=now)

    def check(self, token: str, key: Any, *, now: float | None = None) -> str:
        """The user id of `token` checked with `key`."""
        return self.identity(token, key, now=now).user_id

    def identity(self, token: str, key: Any, *, now: float | None = None) -> Identity:
        """The identity of `token` checked with `key`. `now` (tests) replaces the clock for
        `exp`, which PyJWT otherwise checks against the current time."""
        options: dict[str, Any] = {
            "require": ["exp", "sub"],
            "verify_aud": bool(self.audience),
            "verify_exp": now is None,
        }
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=list(self.algorithms),
                audience=self.audience or None,
                issuer=self.issuer or None,
                options=options,  # type: ignore[arg-type]  # PyJWT types options as a TypedDict
            )
            if now is not None and not (isinstance(claims["exp"], int) and now < claims["exp"]):
                raise jwt.ExpiredSignatureError
        except jwt.ExpiredSignatureError:
            raise Unauthorized("token expired") from None
        except jwt.InvalidSignatureError:
            raise Unauthorized("invalid token signature") from None
        except jwt.InvalidAudienceError:
            raise Unauthorized("the token is not for this gateway (aud)") from None
        except jwt.InvalidIssuerError:
            raise Unauthorized("the token is from another issuer (iss)") from None
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthorized(f"the token has no {exc.claim!r} claim") from None
        except jwt.InvalidTokenError:
            raise Unauthorized("malformed token") from None
        user_id = claims["sub"]
        if not isinstance(user_id, str) or not 1 <= len(user_id) <= MAX_USER_CHARS:
            raise Unauthorized(
                f"the token's sub must be a user id of 1 to {MAX_USER_CHARS} characters"
            )
        return Identity(user_id, claims.get("admin") is True)


def check_secret(secret: str) -> None:
    """Refuse an HS256 secret too short to resist guessing, naming the setting."""
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise ValueError(
            f"GATEWAY_AUTH_SECRET must be at least {MIN_SECRET_BYTES} bytes for HS256"
            f" (it has {len(secret.encode())}); make one with"
            " python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )


def verify_token(secret: str, token: str, *, now: float | None = None) -> str:
    """An HS256 token's user id under `secret` (what `chat-gateway token` mints)."""
    return TokenVerifier(secret, SECRET_ALGORITHMS).check(token, secret, now=now)


def bearer_token(authorization: str | None, query_token: str | None) -> str | None:
    """The token from `Authorization: Bearer …`, else from `?token=` (browsers' WebSockets
    cannot set headers)."""
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return query_token or None


async def authenticate(
    settings: Settings,
    verifier: TokenVerifier | None,
    authorization: str | None,
    query_token: str | None,
    cookie_token: str | None = None,
) -> str:
    """The user of a request: the local user in local mode (holding the local token when
    one is set, see gateway/local_token.py), else the token's user."""
    identity = await authenticate_identity(
        settings, verifier, authorization, query_token, cookie_token
    )
    return identity.user_id


async def authenticate_identity(
    settings: Settings,
    verifier: TokenVerifier | None,
    authorization: str | None,
    query_token: str | None,
    cookie_token: str | None = None,
) -> Identity:
    """Who a request is (see `authenticate`), with whether they are an operator: the local
    user is one in local mode; in token mode, a token's `admin` claim or a user named in
    GATEWAY_ADMIN_USERS makes one."""
    if verifier is None:
        if settings.local_token and not token_matches(
            settings.local_token, bearer_token(authorization, query_token) or cookie_token
        ):
            raise Unauthorized(
                "this gateway wants its local token: the local-token file in its data folder,"
                " as Authorization: Bearer <token> or ?token="
            )
        return Identity(settings.local_user, admin=True)
    token = bearer_token(authorization, query_token)
    if token is None:
        raise Unauthorized("a token is required: Authorization: Bearer <token> or ?token=")
    identity = await verifier.identity_of(token)
    if not identity.admin and identity.user_id in settings.admin_user_ids:
        return Identity(identity.user_id, admin=True)
    return identity


def require_operator(identity: Identity) -> str:
    """The operator's user id; `Forbidden` for anyone else."""
    if identity.admin:
        return identity.user_id
    raise Forbidden(
        "this needs an operator: a token with the admin claim (chat-gateway token --admin),"
        " or a user named in GATEWAY_ADMIN_USERS"
    )


def _public_key(value: str) -> Any:
    """A PEM public key, given as its text or as the path of a file holding it."""
    text = value
    if "-----BEGIN" not in value:
        try:
            text = Path(value).read_text()
        except OSError as exc:
            raise ValueError(
                f"GATEWAY_AUTH_PUBLIC_KEY: cannot read {value}: {exc.strerror}"
            ) from None
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        return load_pem_public_key(text.encode())
    except ValueError as exc:
        raise ValueError(f"GATEWAY_AUTH_PUBLIC_KEY is not a PEM public key: {exc}") from None
