"""Liveness and readiness: plain Django views, no auth."""

from __future__ import annotations

import logging
import os

import redis
from django.conf import settings
from django.db import connection
from django.http import JsonResponse

logger = logging.getLogger(__name__)


def healthz(request):
    return JsonResponse({"status": "ok"})


def _broker_ok() -> tuple[bool, str]:
    if settings.REDIS_URL:
        try:
            redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2).ping()
            return True, "redis"
        except redis.RedisError as exc:
            return False, f"redis: {exc.__class__.__name__}"
    folder = settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("data_folder_in", "")
    return (bool(folder) and os.access(folder, os.W_OK)), "filesystem"


def readyz(request):
    checks = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:  # any driver error means not ready
        logger.warning("readyz: database not ready: %s", exc.__class__.__name__)
        checks["database"] = "down"
    ok, kind = _broker_ok()
    checks["broker"] = "ok" if ok else "down"
    checks["brokerKind"] = kind.split(":")[0]
    ready = checks["database"] == "ok" and ok
    return JsonResponse({"status": "ready" if ready else "not ready", "checks": checks}, status=200 if ready else 503)
