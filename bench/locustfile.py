"""Locust users that drive the gateway over WebSocket as IDE extensions do.

    pip install 'chat-gateway[locust]'
    locust -f bench/locustfile.py --headless -u 50 -r 25 -t 20s --host http://127.0.0.1:8000

(without `--headless`, Locust serves its web UI on http://127.0.0.1:8089). A token-mode
gateway needs a token in BENCH_TOKEN (`chat-gateway token --user U`), sent as
`Authorization: Bearer`; not GATEWAY_TOKEN, which a gateway started from the same shell would
warn about as an unknown `GATEWAY_*` setting.

Each user opens one WebSocket to HOST/ws, says `hello` (kind `ide`, one port: 9222 + its
index % 10) and waits for `welcome`. Its tasks then send `message` frames, user and assistant
in turn, each with a client id of its own and about 300 bytes of content; one task in ten
instead re-sends one of its earlier frames, which must come back `duplicate: true`. Every
answer is one Locust request event, request type `WS`, name `message` or `resend`: its
response time runs from the send to the `ack` (or `error`) carrying the frame's `ref`. An
`error` frame, a re-send acked as new, or a new message acked as a duplicate is a failure;
so are a refused connection (name `connect`), which stops that user, and a dropped one,
after which the user connects again at its next task.

What this measures: ack latency per frame, closed loop (one frame in flight per user, the
next sent when the last is answered, so a slow gateway also slows the offered rate), and the
rate of acks. It checks nothing about persistence: `chat-gateway loadtest` (docs/loadtesting.md)
checks that every acked message reaches PostgreSQL and that subscriber tabs get each seq.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import time
import uuid
from collections import deque
from typing import Any

import websocket
from locust import User, constant, task
from locust.exception import StopUser

FIRST_PORT, PORTS = 9222, 10
CONTENT_BYTES = 300
RESENDABLE = 1_000  # the newest frames a user keeps for re-sends: memory stays bounded
TIMEOUT_S = 30.0  # connect, and wait for one answer

_indexes = itertools.count()  # per Locust process: each worker of a distributed run counts anew


class GatewayError(Exception):
    """An `error` frame answered the frame, or the ack said something other than expected."""


class IdeUser(User):
    """One IDE connection serving one port."""

    host = "http://127.0.0.1:8000"  # `chat-gateway serve`'s default; --host overrides it
    wait_time = constant(0)

    def on_start(self) -> None:
        index = next(_indexes)
        self.port = FIRST_PORT + index % PORTS
        self.run_id = uuid.uuid4().hex[:8]  # client ids unique across users and runs
        self.numbers = itertools.count()  # of its messages: client ids, roles in turn
        self.refs = itertools.count()
        self.sent: deque[dict[str, Any]] = deque(maxlen=RESENDABLE)
        # Connected by the first task: a StopUser raised there ends the user quietly, where
        # Locust logs a traceback for any exception out of on_start, StopUser included.
        self.ws: websocket.WebSocket | None = None

    def on_stop(self) -> None:
        if self.ws is not None:
            self.ws.close()
            self.ws = None

    @task(9)
    def message(self) -> None:
        number = next(self.numbers)
        head = f"locust {self.run_id} {number} "
        frame = {
            "type": "message",
            "port": self.port,
            "id": f"{self.run_id}-{number}",
            "role": "assistant" if number % 2 else "user",
            "content": head + "x" * max(0, CONTENT_BYTES - len(head)),
        }
        self.sent.append(frame)
        self._exchange("message", frame, duplicate=False)

    @task(1)
    def resend(self) -> None:
        if not self.sent:
            self.message()
            return
        self._exchange("resend", random.choice(self.sent), duplicate=True)

    def _connect(self) -> None:
        """Open the WebSocket and trade `hello` for `welcome`; a failure stops this user."""
        url = str(self.host).replace("http", "ws", 1).rstrip("/") + "/ws"
        token = os.environ.get("BENCH_TOKEN", "")
        header = [f"Authorization: Bearer {token}"] if token else []
        started = time.perf_counter()
        try:
            self.ws = websocket.create_connection(url, timeout=TIMEOUT_S, header=header)
            hello = {"type": "hello", "kind": "ide", "ports": [self.port],
                     "client": {"name": "locust"}}  # fmt: skip
            self.ws.send(json.dumps(hello))
            welcome = json.loads(self.ws.recv())
            if welcome.get("type") != "welcome":
                raise GatewayError(f"hello refused: {welcome.get('code', welcome.get('type'))}")
        except (websocket.WebSocketException, OSError, ValueError, GatewayError) as error:
            if isinstance(error, websocket.WebSocketBadStatusException):  # e.g. 401, no token
                error = GatewayError(f"handshake refused: HTTP {error.status_code}")
            self._report("connect", started, 0, error)
            self.on_stop()
            raise StopUser from error
        self._report("connect", started, 0, None)

    def _exchange(self, name: str, frame: dict[str, Any], duplicate: bool) -> None:
        """Send the frame with a fresh `ref`, read until the answer carrying that `ref`, and
        report it; a lost connection is reported and the next task connects again."""
        if self.ws is None:
            self._connect()
        assert self.ws is not None
        ref = f"{name}-{next(self.refs)}"
        started = time.perf_counter()
        length = 0
        error: Exception | None = None
        try:
            self.ws.send(json.dumps({**frame, "ref": ref}))
            while True:
                raw = self.ws.recv()
                answer = json.loads(raw)
                if answer.get("ref") == ref:  # anything else (presence, ...) is not ours
                    break
            length = len(raw)
            if answer.get("type") != "ack":
                error = GatewayError(str(answer.get("code", answer.get("type"))))
            elif bool(answer["results"][0].get("duplicate")) != duplicate:
                error = GatewayError(f"{name} acked with duplicate {not duplicate}")
        except (websocket.WebSocketException, OSError, ValueError) as lost:
            error = lost
            self.on_stop()
        self._report(name, started, length, error)

    def _report(self, name: str, started: float, length: int, error: Exception | None) -> None:
        self.environment.events.request.fire(
            request_type="WS",
            name=name,
            response_time=(time.perf_counter() - started) * 1000,
            response_length=length,
            exception=error,
            context={},
        )
