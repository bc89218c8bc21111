"""Prometheus metrics at /metrics (prometheus_client).

- ``billing_http_request_duration_seconds{route,method}``: a latency histogram per URL
  pattern (``api/v1/pay/check``, never the raw path, so ids and tokens make no series);
  ``billing_http_requests_total{route,method,status}`` beside it.
- ``billing_entitlement_results_total{route,code}``: check answers by ``code`` (``ok``,
  ``insufficient_balance``, …) and track answers (``ok`` or the error code).
- ``billing_celery_queue_depth{queue}``: messages waiting in the Celery queue (Redis ``LLEN``),
  read at scrape time, when ``REDIS_URL`` is set.

Under gunicorn with several workers, ``PROMETHEUS_MULTIPROC_DIR`` (set by config/gunicorn.py)
makes every worker write its counts to files that a scrape of any worker adds up.

``METRICS_BEARER_TOKEN`` set: a scrape must send ``Authorization: Bearer <token>``, else 404.
Unset: /metrics is open, so keep it off the public listener (the load balancer routes only
/api, /portal, /checkout, /admin) or set the token.
"""

from __future__ import annotations

import hmac
import logging
import os
import time

from django.conf import settings
from django.http import HttpResponse, HttpResponseNotFound
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

logger = logging.getLogger("billing.metrics")

REQUEST_LATENCY = Histogram(
    "billing_http_request_duration_seconds", "Time to answer a request, by URL pattern.", ["route", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
REQUESTS = Counter("billing_http_requests", "Requests answered, by URL pattern and status.", ["route", "method", "status"])
ENTITLEMENT_RESULTS = Counter(
    "billing_entitlement_results", "check and track answers by result code.", ["route", "code"]
)
_RESULT_ROUTES = frozenset({"check", "track"})


def _route(request) -> str:
    match = getattr(request, "resolver_match", None)
    return match.route if match is not None and match.route else "<unmatched>"


def _result_code(response) -> str | None:
    data = getattr(response, "data", None)
    if response.has_header("Idempotent-Replayed"):
        return "replayed"
    if not isinstance(data, dict):
        return None
    if isinstance(data.get("error"), dict):
        return str(data["error"].get("code") or "error")
    return str(data.get("code") or "ok") if response.status_code < 400 else None


class MetricsMiddleware:
    """Outermost: times every request, the rate limit and the auth included."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        started = time.perf_counter()
        response = self.get_response(request)
        route = _route(request)
        REQUEST_LATENCY.labels(route, request.method).observe(time.perf_counter() - started)
        REQUESTS.labels(route, request.method, str(response.status_code)).inc()
        match = getattr(request, "resolver_match", None)
        if match is not None and match.url_name in _RESULT_ROUTES and match.namespace == "":
            code = _result_code(response)
            if code is not None:
                ENTITLEMENT_RESULTS.labels(match.url_name, code).inc()
        return response


class QueueDepthCollector:
    """LLEN of the Celery queue at scrape time (Redis broker only)."""

    def collect(self):
        url = settings.REDIS_URL
        broker = getattr(settings, "CELERY_BROKER_URL", "")
        if not url or not broker.startswith(("redis://", "rediss://", "unix://")):
            return
        import redis

        queue = settings.CELERY_TASK_DEFAULT_QUEUE
        family = GaugeMetricFamily("billing_celery_queue_depth", "Messages waiting in the Celery queue.", labels=["queue"])
        try:
            client = redis.Redis.from_url(broker, socket_timeout=1, socket_connect_timeout=1)
            try:
                family.add_metric([queue], client.llen(queue))
            finally:
                client.close()
        except redis.RedisError as exc:
            logger.warning("metrics: the Celery queue depth could not be read (%s)", exc.__class__.__name__)
            return
        yield family


_QUEUE_DEPTH = QueueDepthCollector()
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    REGISTRY.register(_QUEUE_DEPTH)


def _registry():
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        registry.register(_QUEUE_DEPTH)
        return registry
    return REGISTRY


def metrics_view(request):
    token = settings.METRICS_BEARER_TOKEN
    if token:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme != "Bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            return HttpResponseNotFound()
    if request.method != "GET":
        return HttpResponse(status=405, headers={"Allow": "GET"})
    return HttpResponse(generate_latest(_registry()), content_type=CONTENT_TYPE_LATEST)
