"""localstripe (a stateful fake Stripe server from PyPI) as the Stripe peer of
the tests, started as a real process on a free port, and a small HTTP front
of ours that gives it what it lacks of Stripe's behaviour.

localstripe 1.15.10 differs from Stripe in two ways that matter here, worked
around in this front (never by mocking the ``stripe`` library):

- It ignores the ``Idempotency-Key`` header: a retried POST creates a second
  object. The front keeps Stripe's documented rule: the first response to a
  key is stored and replayed for a retry with the same parameters (header
  ``Idempotent-Replayed: true``); the same key with other parameters, or on
  another endpoint, answers 400 ``idempotency_error``. Like Stripe, nothing
  is stored for a 400 (parameters refused) or a 409. The front also logs the
  key of every POST, so a test can check that each carried one of ours
  (stripe-python adds a random uuid4 key to any POST that has none).
- It refuses ``description`` on PaymentIntents (400 "Unexpected
  description"); the front drops that one display field before forwarding.

The process writes its state to /tmp/localstripe.pickle after each change
(hard-coded in localstripe); ``--from-scratch`` keeps it from reading it
back, so parallel instances (one per xdist worker) do not see each other.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

API_KEY = "sk_test_localstripe_billing"
PUBLISHABLE_KEY = "pk_test_localstripe_billing"
_HOP_HEADERS = {"host", "content-length", "connection", "keep-alive", "transfer-encoding", "accept-encoding"}


class LocalStripeUnavailable(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def localstripe_command(port: int) -> list[str]:
    """The console script next to this interpreter, else ``python -m localstripe``."""
    script = os.path.join(os.path.dirname(sys.executable), "localstripe")
    if os.access(script, os.X_OK):
        return [script, "--from-scratch", "--port", str(port)]
    found = shutil.which("localstripe")
    if found:
        return [found, "--from-scratch", "--port", str(port)]
    return [sys.executable, "-m", "localstripe", "--from-scratch", "--port", str(port)]


@dataclass
class _Stored:
    fingerprint: str
    status: int
    headers: list[tuple[str, str]]
    body: bytes


@dataclass
class IdempotencyFront:
    """Forwards every request to localstripe, with Stripe's idempotency rule."""

    upstream_port: int
    port: int = 0
    posts: list[tuple[str, str]] = field(default_factory=list)  # (path, Idempotency-Key) of every POST
    _stored: dict[str, _Stored] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    def reset(self) -> None:
        """Forget stored keys and the log (between tests: our ids repeat in a fresh test database)."""
        with self._lock:
            self._stored.clear()
            self.posts.clear()

    def start(self) -> None:
        front = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                self._answer(*front.forward("GET", self.path, dict(self.headers), b""))

            def do_DELETE(self):
                self._answer(*front.forward("DELETE", self.path, dict(self.headers), b""))

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self._answer(*front.post(self.path, dict(self.headers), body))

            def _answer(self, status, headers, body):
                self.send_response(status)
                for name, value in headers:
                    if name.lower() not in _HOP_HEADERS and name.lower() not in ("date", "server"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, name="localstripe-front", daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def forward(self, method: str, path: str, headers: dict, body: bytes):
        conn = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=30)
        try:
            out = {k: v for k, v in headers.items() if k.lower() not in _HOP_HEADERS}
            conn.request(method, path, body=body or None, headers=out)
            response = conn.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            conn.close()

    def post(self, path: str, headers: dict, body: bytes):
        key = next((v for k, v in headers.items() if k.lower() == "idempotency-key"), "")
        fingerprint = hashlib.sha256(f"POST {path.split('?')[0]}\n".encode() + body).hexdigest()
        forwarded = self._drop_unsupported(path, body)
        if not key:
            return self.forward("POST", path, headers, forwarded)
        with self._lock:  # one idempotent request at a time (Stripe answers a concurrent one 409)
            self.posts.append((path.split("?")[0], key))
            stored = self._stored.get(key)
            if stored is not None:
                if stored.fingerprint != fingerprint:
                    return 400, [("Content-Type", "application/json")], (
                        b'{"error": {"type": "idempotency_error", "message": "Keys for idempotent requests can only '
                        b'be used with the same parameters they were first used with."}}')
                return stored.status, [*stored.headers, ("Idempotent-Replayed", "true")], stored.body
            status, response_headers, response_body = self.forward("POST", path, headers, forwarded)
            if status not in (400, 409):
                self._stored[key] = _Stored(fingerprint, status, response_headers, response_body)
            return status, response_headers, response_body

    @staticmethod
    def _drop_unsupported(path: str, body: bytes) -> bytes:
        if path.split("?")[0] != "/v1/payment_intents" or b"description=" not in body:
            return body
        pairs = urllib.parse.parse_qsl(body.decode(), keep_blank_values=True)
        return urllib.parse.urlencode([(k, v) for k, v in pairs if k != "description"]).encode()


@dataclass
class LocalStripe:
    """A running localstripe process (``direct_url``) and our front (``url``)."""

    process: subprocess.Popen
    port: int
    front: IdempotencyFront
    log_path: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.front.port}"

    @property
    def direct_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    @classmethod
    def start(cls, *, attempts: int = 3, timeout: float = 20.0) -> LocalStripe:
        """Start localstripe on a free port and wait until it answers.
        Raises LocalStripeUnavailable saying what failed."""
        failures = []
        for _ in range(attempts):  # another process may take the free port first
            port = free_port()
            log = tempfile.NamedTemporaryFile(prefix=f"localstripe-{port}-", suffix=".log", delete=False)
            command = localstripe_command(port)
            try:
                process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            except OSError as exc:
                raise LocalStripeUnavailable(f"cannot run {' '.join(command)}: {exc}") from exc
            log.close()
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if process.poll() is not None:
                    break
                if _answers(port):
                    front = IdempotencyFront(upstream_port=port)
                    front.start()
                    return cls(process=process, port=port, front=front, log_path=log.name)
                time.sleep(0.1)
            _terminate(process)
            with open(log.name, errors="replace") as f:
                tail = f.read()[-600:]
            failures.append(f"{' '.join(command)} (exit {process.returncode}): {tail.strip() or 'no output'}")
        raise LocalStripeUnavailable("localstripe did not answer: " + " | ".join(failures))

    def use_as_gateway(self, settings, *, stripe_js: bool = False) -> LocalStripe:
        """Point the Stripe gateway (pytest-django's ``settings``) at our front, after forgetting
        what it stored; with ``stripe_js``, Stripe.js too (localstripe's fake one calls the API
        at its own origin, so both are the front's)."""
        self.front.reset()
        settings.BILLING_GATEWAY = "stripe"
        settings.STRIPE_API_KEY = API_KEY
        settings.STRIPE_API_BASE = self.url
        if stripe_js:
            settings.STRIPE_PUBLISHABLE_KEY = PUBLISHABLE_KEY
            settings.STRIPE_JS_URL = f"{self.url}/js.stripe.com/v3/"
        return self

    def direct_client(self):
        """A stripe client straight to localstripe, past the front: what Stripe.js in the
        customer's browser (or the dashboard) does."""
        import stripe

        return stripe.StripeClient(API_KEY, base_addresses={"api": self.direct_url})

    def stop(self) -> None:
        self.front.stop()
        _terminate(self.process)
        try:
            os.unlink(self.log_path)
        except OSError:
            pass


def _answers(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/v1/customers?limit=1", headers={"Authorization": f"Bearer {API_KEY}"})
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    except OSError:
        return False


def _terminate(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def running_localstripe():
    """A pytest fixture body: a started localstripe, stopped after; the tests skip, saying why,
    when it cannot start."""
    import pytest

    try:
        peer = LocalStripe.start()
    except LocalStripeUnavailable as exc:
        pytest.skip(str(exc))
    yield peer
    peer.stop()
