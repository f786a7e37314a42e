"""Local mode with a token: the gap between "loopback" and "this user" closed, Jupyter-style.

Plain local mode trusts whatever reaches the port, and on a shared machine every account
reaches loopback. With `GATEWAY_LOCAL_TOKEN=auto` (`serve --local-token`) a random token is
kept in `<data_dir>/local-token`, readable by its owner only (0600). `serve` prints the URL
holding it; an IDE extension reads the file; the web UI trades `?token=` for an HttpOnly,
SameSite=Strict cookie at its first load, so the token leaves the address bar and no page
script can read it. Tokens are compared in constant time.
"""

from __future__ import annotations

import hmac
import secrets
from pathlib import Path

from storage.embedded import write_private_file

FILE_NAME = "local-token"
COOKIE_NAME = "chat_gateway_local_token"
# The setting's value that asks for the data folder's token.
AUTO = "auto"
# 32 random bytes, like an HS256 secret: guessing is not an option.
_TOKEN_BYTES = 32


def load_or_create_local_token(data_dir: Path) -> tuple[Path, str]:
    """The token file's path and the token, creating both (0600) on first use."""
    path = data_dir / FILE_NAME
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        token = ""
    if token:
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)  # tightened; delete the file to get a new token
        return path, token
    data_dir.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(_TOKEN_BYTES)
    write_private_file(path, token)
    return path, token


def token_matches(expected: str, given: str | None) -> bool:
    """Whether `given` is the local token, in time independent of where they differ."""
    return given is not None and hmac.compare_digest(expected.encode(), given.encode())
