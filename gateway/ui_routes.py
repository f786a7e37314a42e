"""The web UI: the page at `/` and its static files under `/ui/`.

No build step: plain HTML, CSS and JavaScript modules in `gateway/ui/`, served as they are.
The page holds no data: everything it shows comes from the API and `/ws` with the user's
token, so serving it needs no authentication.

The page is sent with a Content-Security-Policy that allows only this origin's scripts,
styles and connections. The UI never turns message content into HTML, and the policy is the
second line of defence if a bug ever did: no inline script, no foreign image, no plugin runs.
"""

from __future__ import annotations

import re
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

UI_DIR = Path(__file__).resolve().parent / "ui"

# A Host header we are willing to echo into the policy (name or address, optional port).
_HOST = re.compile(r"^[A-Za-z0-9.\-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$")


def content_security_policy(host: str | None) -> str:
    """The page's policy. `connect-src 'self'` covers same-origin WebSockets in current
    browsers; the explicit ws:/wss: origin is for older ones that read 'self' as http(s) only."""
    connect = "'self'"
    if host and _HOST.match(host):
        connect += f" ws://{host} wss://{host}"
    return "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            f"connect-src {connect}",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )


async def index(request: Request) -> Response:
    """The single page. Not cached, so a new gateway version's UI is picked up on reload."""
    return FileResponse(
        UI_DIR / "index.html",
        headers={
            "Content-Security-Policy": content_security_policy(request.headers.get("host")),
            "Cache-Control": "no-cache",
            "X-Content-Type-Options": "nosniff",
            # The page URL may carry ?token=: never send it to sites that messages link to.
            "Referrer-Policy": "no-referrer",
        },
    )


routes: list[BaseRoute] = [
    Route("/", index, methods=["GET"]),
    Mount("/ui", app=StaticFiles(directory=UI_DIR), name="ui"),
]
