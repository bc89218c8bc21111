"""Outgoing webhooks: endpoints, the fan-out of outbox events into deliveries,
and the delivery of each with retries (API.md, "Outgoing webhooks").

The flow:

1. ``event_emit`` writes an OutboxEvent in the transaction of the change (a
   plain INSERT: the hot path never touches an endpoint row) and, after that
   transaction commits, enqueues one fan-out task (``webhook_dispatch_after_commit``).
2. The fan-out (``webhook_events_dispatch``) locks the active endpoints, claims
   the undispatched events (``FOR UPDATE SKIP LOCKED``, oldest first), makes one
   delivery per listening endpoint numbered by the endpoint's ``next_sequence``,
   marks the events dispatched, and enqueues the deliveries after its commit.
3. A delivery attempt (``webhook_delivery_attempt``) claims the attempt with a
   conditional UPDATE, POSTs outside any transaction, then records the attempt:
   success, or the next attempt time from ``retry_delays()``, or failed when the
   retries are used up. An endpoint failing for ``WEBHOOK_DISABLE_AFTER_SECONDS``
   is disabled.
4. Beat runs ``webhook_sweep`` every ``WEBHOOK_SWEEP_INTERVAL_SECONDS``: it
   dispatches events nobody dispatched (the broker was down at commit) and
   enqueues every delivery that is due. Nothing depends on a message arriving.

Apart from that flow, ``webhook_endpoint_test`` POSTs one ``webhook.test`` event to
one endpoint at a merchant's request and answers what happened: no outbox row, no
delivery, no sequence number, no retry.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import socket
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone as dt_timezone
from urllib.parse import urlsplit

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Min

from billing.errors import Conflict, NotFound, ValidationFailed
from billing.locks import lock_webhook_delivery, lock_webhook_endpoint, lock_webhook_endpoints_active
from billing.models import OutboxEvent, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from billing.models.events import new_id_evt
from billing.models.webhooks import RESPONSE_EXCERPT_MAX
from billing.net import AddressRefused, connect_public, host_problem, resolve_public
from billing.selectors.webhooks import webhook_endpoint_get
from billing.services.audit import audit_record
from billing.services.events import EVENT_TYPES

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Cynco-Signature"
ALL_EVENTS = "*"
MAX_EVENTS_PER_ENDPOINT = len(EVENT_TYPES) + 1
DISPATCH_BATCH = 500  # events one fan-out transaction claims
SWEEP_DELIVERY_LIMIT = 1000  # due deliveries one sweep enqueues


# --- endpoints ----------------------------------------------------------------


def _url_problem(url: str) -> str | None:
    if len(url) > 2000:
        return "must be at most 2000 characters"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return "must be an absolute http(s) URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an absolute http(s) URL"
    if parts.username or parts.password:
        return "must not contain credentials"
    if any(c.isspace() for c in url):
        return "must not contain whitespace"
    return None


def webhook_events_clean(events) -> list[str]:
    """The endpoint's event list, checked: known types or ``"*"``, no repeats, in
    the order given. Raises ValidationFailed on field ``events``."""
    if not isinstance(events, list):
        raise ValidationFailed("events", "must be a list of event types")
    cleaned: list[str] = []
    for i, name in enumerate(events):
        if not isinstance(name, str):
            raise ValidationFailed(f"events[{i}]", "must be a string")
        if name != ALL_EVENTS and name not in EVENT_TYPES:
            raise ValidationFailed(f"events[{i}]", f"unknown event type {name[:64]!r}; use \"*\" or one of: "
                                   + ", ".join(EVENT_TYPES))
        if name not in cleaned:
            cleaned.append(name)
    return cleaned


def webhook_endpoint_create(*, url: str, events: list[str], now: datetime) -> tuple[WebhookEndpoint, str]:
    """A new active endpoint and its signing secret (``whsec_…``), which only this
    call returns. ``events`` empty or ``["*"]``: every type. Unless
    WEBHOOK_ALLOW_PRIVATE_URLS, a URL whose host is a non-public IP literal or a
    local name is refused here, without DNS (names are judged when a delivery
    resolves them). Raises ValidationFailed."""
    problem = _url_problem(url)
    if not problem and not settings.WEBHOOK_ALLOW_PRIVATE_URLS:
        refused = host_problem(urlsplit(url).hostname)
        if refused:
            problem = f"refused: {refused}; webhooks go to public hosts only"
    if problem:
        raise ValidationFailed("url", problem)
    cleaned = webhook_events_clean(events)
    secret = "whsec_" + secrets.token_urlsafe(32)
    with transaction.atomic(durable=True):
        endpoint = WebhookEndpoint.objects.create(url=url, events=cleaned, secret=secret, created_at=now, updated_at=now)
    _active_endpoints_forget()
    return endpoint, secret


def webhook_endpoint_delete(*, endpoint_id: str, now: datetime) -> WebhookEndpoint:
    """Soft-delete: no new deliveries, and its pending deliveries (an active or a
    disabled endpoint's) end ``failed`` in the same transaction, each with one
    more attempt row that was not sent and says why, so the sweeper never looks
    at them again and staff see the reason. Raises NotFound."""
    with transaction.atomic(durable=True):
        endpoint = lock_webhook_endpoint(pk=endpoint_id)  # before its deliveries (billing/locks.py)
        if endpoint is None or endpoint.deleted_at is not None:
            raise NotFound("webhook", endpoint_id)
        endpoint.deleted_at = now
        endpoint.updated_at = now
        endpoint.save(update_fields=["deleted_at", "updated_at"])
        pending = WebhookDelivery.objects.filter(endpoint=endpoint, status=WebhookDelivery.Status.PENDING)
        reason = f"Not sent: the endpoint was deleted at {now.isoformat(timespec='seconds')}."
        WebhookAttempt.objects.bulk_create(
            [WebhookAttempt(delivery_id=pk, number=attempts + 1, attempted_at=now, error=reason)
             for pk, attempts in pending.select_for_update(no_key=True).values_list("pk", "attempts")],
            batch_size=1000,
        )
        # A POST under way now is still recorded as its attempt, but no longer moves the delivery.
        pending.update(status=WebhookDelivery.Status.FAILED, next_attempt_at=None, attempts=F("attempts") + 1)
    _active_endpoints_forget()
    return endpoint


def webhook_endpoint_enable(*, endpoint_id: str, now: datetime) -> tuple[WebhookEndpoint, list[str]]:
    """Re-enable a disabled endpoint: its failing clock starts again, and the
    deliveries that waited while it was disabled are due now. Returns the endpoint
    and those deliveries' ids (enqueued after commit). Raises NotFound."""
    with transaction.atomic(durable=True):
        endpoint = lock_webhook_endpoint(pk=endpoint_id)
        if endpoint is None or endpoint.deleted_at is not None:
            raise NotFound("webhook", endpoint_id)
        endpoint.status = WebhookEndpoint.Status.ACTIVE
        endpoint.disabled_reason = ""
        endpoint.disabled_at = None
        endpoint.failing_since = None
        endpoint.updated_at = now
        endpoint.save(update_fields=["status", "disabled_reason", "disabled_at", "failing_since", "updated_at"])
        waiting = WebhookDelivery.objects.filter(endpoint=endpoint, status=WebhookDelivery.Status.PENDING)
        waiting.filter(next_attempt_at__gt=now).update(next_attempt_at=now)
        ids = list(waiting.values_list("pk", flat=True))
        transaction.on_commit(lambda: _enqueue_deliveries(ids), robust=True)
    _active_endpoints_forget()
    return endpoint, ids


def webhook_delivery_redeliver(*, delivery_id: str, now: datetime) -> WebhookDelivery:
    """Send a delivery again now, whatever its status. It keeps its sequence
    number. A delivery that had used all its retries gets this one attempt only.
    Raises NotFound, Conflict (endpoint disabled or deleted)."""
    with transaction.atomic(durable=True):
        locked = lock_webhook_delivery(pk=delivery_id)  # the endpoint, then the delivery
        if locked is None:
            raise NotFound("webhook_delivery", delivery_id)
        endpoint, delivery = locked
        if endpoint.deleted_at is not None or endpoint.status != WebhookEndpoint.Status.ACTIVE:
            raise Conflict("The endpoint is disabled or deleted; re-enable it first.",
                           details={"endpoint": endpoint.pk, "status": endpoint.status})
        delivery.status = WebhookDelivery.Status.PENDING
        delivery.next_attempt_at = now
        delivery.save(update_fields=["status", "next_attempt_at"])
        transaction.on_commit(lambda: _enqueue_deliveries([delivery.pk]), robust=True)
    return delivery


# --- after commit: one cheap enqueue per transaction ----------------------------

_ACTIVE_CACHE_SECONDS = 5.0
_active_cache: list = [0.0, False]  # [monotonic expiry, any active endpoint]


def _active_endpoints_forget() -> None:
    _active_cache[0] = 0.0


def _any_active_endpoint() -> bool:
    """Whether some endpoint is active, remembered for a few seconds per process,
    so a service without webhooks enqueues nothing and the hot path asks rarely.
    An endpoint made in another process is seen within the cache time; events
    emitted meanwhile are fanned out by the sweeper."""
    if time.monotonic() >= _active_cache[0]:
        _active_cache[1] = WebhookEndpoint.objects.filter(
            status=WebhookEndpoint.Status.ACTIVE, deleted_at__isnull=True).exists()
        _active_cache[0] = time.monotonic() + _ACTIVE_CACHE_SECONDS
    return _active_cache[1]


def webhook_dispatch_after_commit() -> None:
    """Enqueue one fan-out once the current transaction commits (at most one per
    transaction, however many events it emitted; nothing if it rolls back)."""
    if not _any_active_endpoint():
        return
    conn = transaction.get_connection()
    if conn.in_atomic_block and any(func is _enqueue_dispatch for _, func, _ in conn.run_on_commit):
        return
    transaction.on_commit(_enqueue_dispatch, robust=True)


# After the broker refused an enqueue, this process skips enqueues for a while: a request
# that emits an event must not wait on the broker client's connection retries (seconds
# each, seen in the fault tests with Redis stopped). The sweeper sends what was skipped.
BROKER_PAUSE_SECONDS = 30.0
_broker_down_until = [0.0]


def _broker_paused() -> bool:
    return time.monotonic() < _broker_down_until[0]


def _broker_failed(what: str) -> None:
    _broker_down_until[0] = time.monotonic() + BROKER_PAUSE_SECONDS
    logger.warning("webhooks: could not enqueue %s; enqueues paused for %.0f s, the sweeper will catch up",
                   what, BROKER_PAUSE_SECONDS, exc_info=True)


def _enqueue_dispatch() -> None:
    from billing.tasks import webhooks_dispatch

    if _broker_paused():
        return
    try:
        webhooks_dispatch.apply_async(retry=False)
    except Exception:  # the broker is down: the sweeper dispatches these events later
        _broker_failed("the fan-out")


def _enqueue_deliveries(ids: list[str]) -> None:
    from billing.tasks import webhook_deliver

    for delivery_id in ids:
        if _broker_paused():
            return
        try:
            webhook_deliver.apply_async(kwargs={"delivery_id": delivery_id}, retry=False)
        except Exception:
            _broker_failed(f"delivery {delivery_id}")
            return


# --- fan-out ------------------------------------------------------------------


@dataclass(frozen=True)
class Dispatched:
    events: int  # events marked dispatched
    deliveries: list[str]  # ids of the deliveries made for them


def webhook_events_dispatch(*, now: datetime, limit: int = DISPATCH_BATCH) -> Dispatched:
    """Fan out up to ``limit`` undispatched events, oldest first, into deliveries
    for the active endpoints that listen to them (an endpoint gets only events
    from its creation on). The new deliveries are enqueued after commit.

    The active endpoints are locked first (primary-key order), so two fan-outs
    number one endpoint's deliveries one after the other, never interleaved;
    events are claimed ``FOR UPDATE SKIP LOCKED``, so with no endpoint two
    fan-outs split the marking instead of waiting."""
    with transaction.atomic(durable=True):
        endpoints = lock_webhook_endpoints_active()
        events = list(
            OutboxEvent.objects.select_for_update(skip_locked=True)
            .filter(dispatched_at__isnull=True).order_by("created_at", "id")[:limit]
        )
        # An endpoint made while this fan-out waited for the locks is not among
        # them (the locking read saw the table as it was when it started): the
        # events from its creation on wait for the next fan-out, which locks it.
        newer = (WebhookEndpoint.objects.filter(status=WebhookEndpoint.Status.ACTIVE, deleted_at__isnull=True)
                 .exclude(pk__in=[e.pk for e in endpoints]).aggregate(first=Min("created_at"))["first"])
        if newer is not None:
            events = [e for e in events if e.created_at < newer]
        if not events:
            return Dispatched(events=0, deliveries=[])
        deliveries: list[WebhookDelivery] = []
        for endpoint in endpoints:
            matching = [e for e in events if e.created_at >= endpoint.created_at and endpoint.listens_to(e.type)]
            if not matching:
                continue
            first = endpoint.next_sequence
            deliveries += [
                WebhookDelivery(endpoint=endpoint, event=event, sequence=first + i, next_attempt_at=now, created_at=now)
                for i, event in enumerate(matching)
            ]
            WebhookEndpoint.objects.filter(pk=endpoint.pk).update(next_sequence=first + len(matching))
        WebhookDelivery.objects.bulk_create(deliveries)
        OutboxEvent.objects.filter(pk__in=[e.pk for e in events]).update(dispatched_at=now)
        ids = [d.pk for d in deliveries]
        if ids:
            transaction.on_commit(lambda: _enqueue_deliveries(ids), robust=True)
    return Dispatched(events=len(events), deliveries=ids)


def webhook_sweep(*, now: datetime) -> dict:
    """The beat job: fan out every event still undispatched, then enqueue every
    delivery that is due (first attempts the broker lost, retries, attempts of
    a worker that died). Safe to run at any time and in parallel."""
    dispatched = 0
    while True:
        batch = webhook_events_dispatch(now=now)
        dispatched += batch.events
        if batch.events < DISPATCH_BATCH:
            break
    due = list(
        WebhookDelivery.objects.filter(
            status=WebhookDelivery.Status.PENDING, next_attempt_at__lte=now,
            endpoint__status=WebhookEndpoint.Status.ACTIVE, endpoint__deleted_at__isnull=True,
        ).order_by("next_attempt_at").values_list("pk", flat=True)[:SWEEP_DELIVERY_LIMIT]
    )
    _enqueue_deliveries(due)
    return {"dispatched": dispatched, "due": len(due)}


# --- delivery -----------------------------------------------------------------


def retry_delays() -> list[timedelta]:
    """Wait after failed attempt 1, 2, …; when they run out the delivery has failed."""
    return [timedelta(seconds=s) for s in settings.WEBHOOK_RETRY_DELAYS_SECONDS]


def max_attempts() -> int:
    return len(settings.WEBHOOK_RETRY_DELAYS_SECONDS) + 1


def webhook_payload(event: OutboxEvent) -> bytes:
    """The body of every delivery of ``event``: ``{id, type, createdAt, data}``."""
    return _payload(event_id=event.pk, type=event.type, created_at=event.created_at, data=event.data)


def _payload(*, event_id: str, type: str, created_at: datetime, data: dict) -> bytes:
    created = created_at.astimezone(dt_timezone.utc).isoformat().replace("+00:00", "Z")
    return json.dumps({"id": event_id, "type": type, "createdAt": created, "data": data},
                      separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _signed_headers(*, secret: str, now: datetime, body: bytes, event_id: str, event_type: str) -> dict[str, str]:
    """The headers every POST carries, real delivery or test: the signature and the event."""
    return {
        "Content-Type": "application/json",
        "User-Agent": "cynco-billing-webhooks/1",
        SIGNATURE_HEADER: webhook_signature(secret=secret, timestamp=int(now.timestamp()), body=body),
        "X-Cynco-Event-Id": event_id,
        "X-Cynco-Event-Type": event_type,
    }


def webhook_signature(*, secret: str, timestamp: int, body: bytes) -> str:
    """``t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>``"""
    digest = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


@dataclass(frozen=True)
class HttpOutcome:
    status_code: int | None
    latency_ms: int
    excerpt: str
    error: str

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None  # a 3xx is an answer like any other non-2xx: a failed attempt


class _Deadline:
    """The end of one whole attempt: connect, send and answer. urllib's timeout is
    per socket operation, so a receiver sending a byte every few seconds could hold
    a POST open for ever, past the claim's lease, and a second worker would send the
    delivery while the first POST still runs. A timer shuts the attempt's socket
    down at the deadline (through a duplicate of it, so the descriptor can never be
    another socket's by then); a socket made after the deadline (a slow resolver)
    is closed before anything is sent."""

    def __init__(self, seconds: float):
        self.expired = False
        self._done = False
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> "_Deadline":
        self._timer.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._timer.cancel()
        with self._lock:
            self._done = True
            for sock in self._socks:
                sock.close()

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            if self.expired:
                sock.close()
                raise TimeoutError("the attempt's deadline passed before it connected")
            self._socks.append(sock.dup())

    def _expire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.expired = True
            for sock in self._socks:
                try:
                    sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked read or write with EOF / an error
                except OSError:
                    pass


def _watched(http_class, deadline: _Deadline, *, public_only: bool):
    """``http_class`` whose sockets (TLS handshake included) are under ``deadline``;
    with ``public_only`` they connect only to the public addresses the host
    resolved to, once (``billing.net.connect_public``; TLS still checks the name)."""
    connect = connect_public if public_only else socket.create_connection

    def create_connection(address, timeout=socket._GLOBAL_DEFAULT_TIMEOUT, source_address=None):
        sock = connect(address, timeout, source_address)
        deadline.watch(sock)
        return sock

    def make(*args, **kwargs):
        conn = http_class(*args, **kwargs)
        conn._create_connection = create_connection  # what http.client's connect() calls
        return conn

    return make


class _Guarded:
    """``do_open`` under the attempt's deadline and, unless private URLs are allowed,
    the SSRF guard. Through a proxy from the environment (HTTP(S)_PROXY, which the
    operator set) the socket goes to the proxy: the target's name is resolved and
    vetted here, but the proxy resolves it again, so against DNS rebinding the proxy
    must hold its own rules."""

    def __init__(self, deadline: _Deadline, allow_private: bool):
        super().__init__()
        self.deadline, self.allow_private = deadline, allow_private

    def do_open(self, http_class, req, **kwargs):
        public_only = not self.allow_private
        if public_only and (req.has_proxy() or req._tunnel_host):
            target = urlsplit(req.full_url)
            resolve_public(target.hostname, target.port or (443 if target.scheme == "https" else 80))
            public_only = False
        return super().do_open(_watched(http_class, self.deadline, public_only=public_only), req, **kwargs)


class _HttpUntil(_Guarded, urllib.request.HTTPHandler):
    pass


class _HttpsUntil(_Guarded, urllib.request.HTTPSHandler):
    pass


def _opener_until(deadline: _Deadline, *, allow_private: bool) -> urllib.request.OpenerDirector:
    """urllib's opener (proxies from the environment, TLS checks), no redirects."""
    return urllib.request.build_opener(_NoRedirects, _HttpUntil(deadline, allow_private),
                                       _HttpsUntil(deadline, allow_private))


def _excerpt(response) -> bytes:
    try:
        return response.read(RESPONSE_EXCERPT_MAX)
    except Exception:  # noqa: BLE001 - the body is best effort once the status has come
        return b""


def _post(url: str, body: bytes, headers: dict[str, str], timeout: float, *, allow_private: bool) -> HttpOutcome:
    """POST ``body``; the whole attempt ends within ``timeout`` seconds. A status
    that arrived in time is the answer (a 2xx is a success even if its body was
    still trickling at the deadline: the excerpt is what came). Unless
    ``allow_private``, a host that resolves to any non-public address is not
    contacted: the attempt fails with "refused: …" as its error."""
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    started = time.monotonic()
    code, raw, error = None, b"", ""
    with _Deadline(timeout) as deadline:
        try:
            with _opener_until(deadline, allow_private=allow_private).open(request, timeout=timeout) as response:
                # Cut at the deadline, the headers end early and look complete to http.client.
                code = None if deadline.expired else response.status
                raw = _excerpt(response) if code is not None else b""
        except urllib.error.HTTPError as exc:
            code = None if deadline.expired else exc.code
            raw = _excerpt(exc) if code is not None else b""
            exc.close()
        except AddressRefused as exc:
            error = f"{exc} (WEBHOOK_ALLOW_PRIVATE_URLS is off)"[:500]
        except Exception as exc:  # noqa: BLE001 - any failure to get an answer is a failed attempt
            error = f"{type(exc).__name__}: {exc}"[:500]
    if code is None and deadline.expired:
        error = (f"TimeoutError: no complete answer within {timeout:g} s "
                 "(WEBHOOK_TIMEOUT_SECONDS bounds the whole attempt)")
    latency = int((time.monotonic() - started) * 1000)
    return HttpOutcome(status_code=code, latency_ms=latency, excerpt=raw.decode("utf-8", "replace")[:RESPONSE_EXCERPT_MAX],
                       error=error)


DISABLE_MIN_DELIVERY_AGE = timedelta(hours=24)  # API.md: retried for at least 24 h
RETRY_TIMER_MAX = timedelta(minutes=5)  # below the Redis broker's 1 h visibility timeout


def webhook_retry_soon(*, delivery_id: str, now: datetime) -> None:
    """Enqueue the next attempt with a countdown when it is due within a few
    minutes (the first retries), so it goes on time rather than at the next
    sweep; later retries are left to the sweeper (a long countdown on Redis
    would be redelivered past the visibility timeout)."""
    due = WebhookDelivery.objects.filter(pk=delivery_id, status=WebhookDelivery.Status.PENDING).values_list(
        "next_attempt_at", flat=True).first()
    if due is None or due - now > RETRY_TIMER_MAX:
        return
    from billing.tasks import webhook_deliver

    try:
        webhook_deliver.apply_async(kwargs={"delivery_id": delivery_id}, countdown=max(0.0, (due - now).total_seconds()),
                                    retry=False)
    except Exception:
        logger.warning("webhooks: could not enqueue the retry of %s; the sweeper will", delivery_id, exc_info=True)


def _in_transaction() -> bool:
    """Inside an atomic block other than a test case's own wrapper."""
    return any(not getattr(block, "_from_testcase", False) for block in connection.atomic_blocks)


def webhook_delivery_attempt(*, delivery_id: str, now: datetime) -> WebhookAttempt | None:
    """Make the next attempt of a due delivery; None when there is nothing to do
    (not due, already sent, claimed by another worker, endpoint not active).

    The attempt is claimed by one conditional UPDATE (pending, due, endpoint
    active → attempts + 1 and next_attempt_at pushed past the HTTP timeout), so
    two workers never send the same attempt; if this worker dies mid-request the
    delivery is due again once that lease runs out. The POST happens outside any
    transaction and ends within WEBHOOK_TIMEOUT_SECONDS (``_post``); the lease is
    three times that, so a second worker cannot claim the delivery while this POST
    still runs (the rest covers recording it, a slow resolver and clock skew).
    Must not be called inside a transaction (RuntimeError)."""
    if _in_transaction():
        raise RuntimeError("webhook_delivery_attempt makes an HTTP call: call it outside a transaction")
    timeout = settings.WEBHOOK_TIMEOUT_SECONDS
    # The endpoint test is a subquery, not a join: with a join Django writes
    # "UPDATE … WHERE id IN (SELECT …)", and PostgreSQL would not re-check the
    # status and due time on a row another worker updated while this one waited.
    live = WebhookEndpoint.objects.filter(status=WebhookEndpoint.Status.ACTIVE, deleted_at__isnull=True).values("pk")
    claimed = WebhookDelivery.objects.filter(
        pk=delivery_id, status=WebhookDelivery.Status.PENDING, next_attempt_at__lte=now, endpoint_id__in=live,
    ).update(attempts=F("attempts") + 1, next_attempt_at=now + timedelta(seconds=3 * timeout), last_attempt_at=now)
    if not claimed:
        return None
    delivery = WebhookDelivery.objects.select_related("endpoint", "event").get(pk=delivery_id)
    endpoint, number = delivery.endpoint, delivery.attempts
    body = webhook_payload(delivery.event)
    headers = {
        **_signed_headers(secret=endpoint.secret, now=now, body=body, event_id=delivery.event_id,
                          event_type=delivery.event.type),
        "X-Cynco-Sequence": str(delivery.sequence),
        "X-Cynco-Delivery": delivery.pk,
        "X-Cynco-Attempt": str(number),
    }
    outcome = _post(endpoint.url, body, headers, timeout, allow_private=settings.WEBHOOK_ALLOW_PRIVATE_URLS)
    return webhook_attempt_record(delivery=delivery, number=number, outcome=outcome, now=now)


def webhook_attempt_record(*, delivery: WebhookDelivery, number: int, outcome: HttpOutcome, now: datetime) -> WebhookAttempt:
    """Record attempt ``number`` and move the delivery on: succeeded; pending with
    the next attempt after the backoff; or failed when the retries are used up.
    A success clears the endpoint's ``failing_since``; a failure sets it if unset,
    and disables the endpoint once it has failed for WEBHOOK_DISABLE_AFTER_SECONDS."""
    def add_attempt() -> WebhookAttempt:
        # The attempt row's foreign key share-locks the delivery row: it too comes after the endpoint.
        return WebhookAttempt.objects.create(
            delivery=delivery, number=number, attempted_at=now, status_code=outcome.status_code,
            latency_ms=outcome.latency_ms, response_excerpt=outcome.excerpt, error=outcome.error,
            succeeded=outcome.succeeded,
        )

    with transaction.atomic(durable=True):
        mine = WebhookDelivery.objects.filter(pk=delivery.pk, attempts=number, status=WebhookDelivery.Status.PENDING)
        # The endpoint row before anything on the delivery's (billing/locks.py):
        # re-enabling and deleting lock the endpoint, then its deliveries.
        if outcome.succeeded:
            # A conditional UPDATE: it locks the endpoint only when there is a
            # failing clock to clear, so successes do not queue on the endpoint.
            WebhookEndpoint.objects.filter(pk=delivery.endpoint_id, failing_since__isnull=False).update(
                failing_since=None, updated_at=now)
            attempt = add_attempt()
            mine.update(status=WebhookDelivery.Status.SUCCEEDED, next_attempt_at=None, succeeded_at=now)
            return attempt
        endpoint = lock_webhook_endpoint(pk=delivery.endpoint_id)
        attempt = add_attempt()
        delays = retry_delays()
        if number <= len(delays):
            mine.update(next_attempt_at=now + delays[number - 1])
        else:
            mine.update(status=WebhookDelivery.Status.FAILED, next_attempt_at=None)
        if endpoint.failing_since is None:
            endpoint.failing_since = now
            endpoint.save(update_fields=["failing_since"])
        window = timedelta(seconds=settings.WEBHOOK_DISABLE_AFTER_SECONDS)
        # failing_since is cleared only by a success, so after failures long ago
        # and quiet days it is stale: one blip of a new delivery must not disable
        # the endpoint (and drop every later event). The delivery that fails must
        # itself have been retried for a day (or the window, if shorter) first.
        retried_enough = now - delivery.created_at >= min(window, DISABLE_MIN_DELIVERY_AGE)
        if endpoint.status == WebhookEndpoint.Status.ACTIVE and now - endpoint.failing_since >= window and retried_enough:
            _disable(endpoint=endpoint, now=now)
    return attempt


def _disable(*, endpoint: WebhookEndpoint, now: datetime) -> None:
    days = settings.WEBHOOK_DISABLE_AFTER_SECONDS / 86400
    endpoint.status = WebhookEndpoint.Status.DISABLED
    endpoint.disabled_at = now
    endpoint.disabled_reason = (f"Every delivery failed for {days:g} days (since "
                                f"{endpoint.failing_since.isoformat(timespec='seconds')}).")
    endpoint.updated_at = now
    endpoint.save(update_fields=["status", "disabled_at", "disabled_reason", "updated_at"])
    audit_record(actor_type="system", actor_id="webhooks", action="webhook.disable", target_type="webhook_endpoint",
                 target_id=endpoint.pk, data={"reason": endpoint.disabled_reason, "url": endpoint.url}, now=now)
    transaction.on_commit(_active_endpoints_forget)


# --- test deliveries ------------------------------------------------------------

TEST_EVENT_TYPE = "webhook.test"  # sent only by webhook_endpoint_test, never emitted, not in EVENT_TYPES
TEST_EVENT_MESSAGE = "A test event sent by POST webhooks/{id}/test. Nothing happened in billing."


@dataclass(frozen=True)
class WebhookTestResult:
    event_id: str
    delivered: bool  # the receiver answered 2xx
    status_code: int | None  # the receiver's status, None when no answer came
    latency_ms: int
    error: str | None  # why no answer came (refused, timed out, connection error), else None


def webhook_endpoint_test(*, endpoint_id: str, actor_type: str, actor_id: str, request_id: str = "",
                          now: datetime) -> WebhookTestResult:
    """POST one signed ``webhook.test`` event to a live endpoint (active or disabled)
    now, once, and say what happened. It is not an OutboxEvent and has no delivery:
    no other endpoint gets it, it takes no sequence number, it is never retried, and
    it leaves the endpoint's failing clock and status alone. The same signature,
    ``_post`` (whole-attempt timeout, no redirects) and SSRF guard as a real attempt;
    the headers lack X-Cynco-Sequence, X-Cynco-Delivery and X-Cynco-Attempt. The
    outcome is recorded as an audit event ``webhook.test`` by the given actor.
    Raises NotFound (unknown or deleted); RuntimeError inside a transaction."""
    if _in_transaction():
        raise RuntimeError("webhook_endpoint_test makes an HTTP call: call it outside a transaction")
    endpoint = webhook_endpoint_get(endpoint_id=endpoint_id)
    event_id = new_id_evt()
    body = _payload(event_id=event_id, type=TEST_EVENT_TYPE, created_at=now,
                    data={"webhookId": endpoint.pk, "message": TEST_EVENT_MESSAGE})
    headers = _signed_headers(secret=endpoint.secret, now=now, body=body, event_id=event_id,
                              event_type=TEST_EVENT_TYPE)
    outcome = _post(endpoint.url, body, headers, settings.WEBHOOK_TIMEOUT_SECONDS,
                    allow_private=settings.WEBHOOK_ALLOW_PRIVATE_URLS)
    result = WebhookTestResult(event_id=event_id, delivered=outcome.succeeded, status_code=outcome.status_code,
                               latency_ms=outcome.latency_ms, error=outcome.error or None)
    audit_record(actor_type=actor_type, actor_id=actor_id, action="webhook.test", target_type="webhook_endpoint",
                 target_id=endpoint.pk, request_id=request_id, now=now,
                 data={"eventId": event_id, "url": endpoint.url, "delivered": result.delivered,
                       "status": result.status_code, "latencyMs": result.latency_ms, "error": result.error})
    return result
