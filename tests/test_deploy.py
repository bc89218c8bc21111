"""Deployment: `check --deploy` is clean under the production settings, gunicorn with
config/gunicorn.py (several workers, JSON access log, metrics summed over workers),
the /metrics route and the Procfile."""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from billing.services.api_keys import api_key_create

ROOT = Path(__file__).resolve().parents[1]


def production_env(tmp_path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "DJANGO_SETTINGS"))}
    env.update(PRODUCTION="1", DEBUG="0", SECRET_KEY=secrets.token_urlsafe(60), VAR_DIR=str(tmp_path / "var"),
               ALLOWED_HOSTS="billing.example.com", DJANGO_SETTINGS_MODULE="config.settings")
    env.update(extra)
    return env


def manage(env, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


class TestProductionSettings:
    def test_check_deploy_is_clean(self, tmp_path):
        result = manage(production_env(tmp_path), "check", "--deploy", "--fail-level", "WARNING")
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        assert "System check identified no issues" in output, output

    def test_production_without_a_real_secret_key_refuses_to_start(self, tmp_path):
        for key in ("", "too-short", "django-insecure-" + "x" * 60):
            result = manage(production_env(tmp_path, SECRET_KEY=key), "check")
            assert result.returncode != 0 and "PRODUCTION=1 needs SECRET_KEY" in result.stderr

    def test_production_with_debug_refuses_to_start(self, tmp_path):
        result = manage(production_env(tmp_path, DEBUG="1"), "check")
        assert result.returncode != 0 and "turn DEBUG off" in result.stderr

    def test_production_pages_are_https_only_with_hsts(self, tmp_path):
        code = (
            "import django; django.setup(); from django.conf import settings as s; import json; print(json.dumps("
            "[s.SECURE_SSL_REDIRECT, s.SECURE_HSTS_SECONDS, s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.LOG_FORMAT]))"
        )
        result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=production_env(tmp_path),
                                capture_output=True, text=True, timeout=120)
        assert json.loads(result.stdout) == [True, 365 * 24 * 3600, True, True, "json"], result.stderr


@pytest.mark.django_db
class TestMetrics:
    def scrape(self, client=None, **headers) -> str:
        response = (client or APIClient()).get("/metrics", headers=headers)
        assert response.status_code == 200
        assert response["Content-Type"].startswith("text/plain")
        return response.content.decode()

    @staticmethod
    def value(text: str, name: str, **labels) -> float:
        for line in text.splitlines():
            if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def test_latency_per_route_and_check_results_by_code(self, sk_client):
        before = self.scrape()
        assert sk_client.post("/api/v1/pay/customers", {"customerId": "m1"}, format="json").status_code == 201
        for _ in range(3):
            body = sk_client.post("/api/v1/pay/check", {"customer": "m1", "feature": "nothing"}, format="json").json()
            assert body["code"] == "feature_not_included"
        after = self.scrape()
        name = "billing_entitlement_results_total"
        assert self.value(after, name, route="check", code="feature_not_included") - \
            self.value(before, name, route="check", code="feature_not_included") == 3
        count = "billing_http_request_duration_seconds_count"
        assert self.value(after, count, route="api/v1/pay/check", method="POST") - \
            self.value(before, count, route="api/v1/pay/check", method="POST") == 3
        # ids in a path make no series of their own
        sk_client.get("/api/v1/pay/customers/m1")
        text = self.scrape()
        assert re.search(r'route="api/v1/pay/customers/<[^"]+>"', text) and "/customers/m1" not in text

    def test_track_errors_are_counted_by_code(self, sk_client):
        before = self.scrape()
        response = sk_client.post("/api/v1/pay/track", {"customer": "nobody", "feature": "x"}, format="json")
        assert response.status_code == 404
        name = "billing_entitlement_results_total"
        assert self.value(self.scrape(), name, route="track", code="NOT_FOUND") - \
            self.value(before, name, route="track", code="NOT_FOUND") == 1

    def test_a_bearer_token_guards_the_route(self, settings):
        settings.METRICS_BEARER_TOKEN = "t" * 40
        assert APIClient().get("/metrics").status_code == 404
        assert APIClient().get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 404
        assert "billing_http_requests_total" in self.scrape(Authorization="Bearer " + "t" * 40)

    def test_queue_depth_is_read_from_redis(self, settings):
        if not settings.REDIS_URL:
            pytest.skip("needs REDIS_URL (CI sets it)")
        import redis

        queue = f"test-metrics-{secrets.token_hex(4)}"
        settings.CELERY_TASK_DEFAULT_QUEUE = queue
        settings.CELERY_BROKER_URL = settings.REDIS_URL
        client = redis.Redis.from_url(settings.REDIS_URL)
        client.rpush(queue, "a", "b", "c")
        try:
            assert self.value(self.scrape(), "billing_celery_queue_depth", queue=queue) == 3
        finally:
            client.delete(queue)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url, headers=None):
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


class TestGunicorn:
    def test_workers_share_metrics_and_write_json_access_logs_without_secrets(self, tmp_path):
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "PROMETHEUS"))}
        env.update(VAR_DIR=str(tmp_path / "var"), GUNICORN_BIND=f"127.0.0.1:{port}", WEB_CONCURRENCY="2",
                   GUNICORN_THREADS="2", LOG_FORMAT="json", PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prom"),
                   DJANGO_SETTINGS_MODULE="config.settings")
        out, err = open(tmp_path / "out.log", "w+"), open(tmp_path / "err.log", "w+")
        server = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.py", "config.wsgi"],
                                  cwd=ROOT, env=env, stdout=out, stderr=err)
        base = f"http://127.0.0.1:{port}"
        token = ".eJyrVkrOz0vOTypWslIyNDA0MjYxNTA0NjYwNrFSigUAYRcHFA:1tXyZa:" + secrets.token_urlsafe(32)
        key = "cp_sk_" + secrets.token_urlsafe(32)
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if get(base + "/healthz")[0] == 200:
                        break
                except OSError:
                    pass
                assert server.poll() is None, (tmp_path / "err.log").read_text()
                assert time.monotonic() < deadline, "gunicorn did not answer in 120 s"
                time.sleep(0.5)
            for _ in range(20):
                assert get(base + "/healthz")[0] == 200
            assert get(f"{base}/portal/{token}/")[0] == 403
            assert get(f"{base}/api/v1/nowhere?key={key}", {"Authorization": f"Bearer {key}"})[0] == 404
            status, metrics = get(base + "/metrics")
            assert status == 200
            counts = re.findall(r'billing_http_request_duration_seconds_count\{method="GET",route="healthz"\} (\S+)',
                                metrics)
            assert len(counts) == 1 and float(counts[0]) >= 21  # both workers' requests, in one sum
        finally:
            server.terminate()
            server.wait(timeout=60)
        access = [json.loads(line) for line in (tmp_path / "out.log").read_text().splitlines() if line.startswith("{")]
        assert {"GET"} == {a["method"] for a in access}
        portal = [a for a in access if a["path"].startswith("/portal/")]
        assert portal and portal[0]["path"] == "/portal/[redacted]/" and portal[0]["status"] == 403
        assert all(a["request_id"].startswith("req_") for a in access)
        everything = (tmp_path / "out.log").read_text() + (tmp_path / "err.log").read_text()
        assert token not in everything and token.split(":")[-1] not in everything and key not in everything
        app_lines = [json.loads(line) for line in (tmp_path / "err.log").read_text().splitlines()
                     if line.startswith("{")]
        assert any(e["logger"] == "django.request" and "/portal/[redacted]/" in e["message"] for e in app_lines)


def test_the_procfile_names_web_worker_beat_and_release():
    lines = dict(line.split(":", 1) for line in (ROOT / "Procfile").read_text().splitlines() if ":" in line)
    assert set(lines) >= {"web", "worker", "beat", "release"}
    assert "config/gunicorn.py" in lines["web"] and "migrate" in lines["release"]
