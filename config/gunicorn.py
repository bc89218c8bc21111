"""gunicorn settings for production: `gunicorn -c config/gunicorn.py config.wsgi`.

Every knob from the environment:

- ``PORT`` (8000) / ``GUNICORN_BIND`` (``0.0.0.0:$PORT``), ``WEB_CONCURRENCY`` (workers, default
  2 × CPUs + 1), ``GUNICORN_THREADS`` (4; gthread workers), ``GUNICORN_TIMEOUT`` (30 s),
  ``GUNICORN_MAX_REQUESTS`` (0 = never recycle a worker), ``GUNICORN_KEEPALIVE`` (5 s).
- Logs: the error log on stderr; one JSON line per request on stdout (``GUNICORN_ACCESS_LOG=-``;
  empty turns it off), written by ``config.logs.GunicornJsonLogger`` with secrets redacted.
- Metrics: several worker processes share their Prometheus counters through files in
  ``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's multiprocess mode). It defaults to a fresh
  directory under the system temp dir, emptied when gunicorn starts; a dead worker's
  live-only series are dropped.
"""

import multiprocessing
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `config.logs` from any cwd

bind = os.environ.get("GUNICORN_BIND") or f"0.0.0.0:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY") or multiprocessing.cpu_count() * 2 + 1)
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
worker_class = "gthread" if threads > 1 else "sync"
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "5"))
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "0"))
max_requests_jitter = max_requests // 10
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")

accesslog = os.environ.get("GUNICORN_ACCESS_LOG", "-") or None
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")
logger_class = "config.logs.GunicornJsonLogger"

os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", os.path.join(tempfile.gettempdir(), f"billing-prometheus-{os.getpid()}"))
_metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"]


def on_starting(server):
    """A fresh metrics directory: files left by an earlier run would add to the new counts."""
    shutil.rmtree(_metrics_dir, ignore_errors=True)
    os.makedirs(_metrics_dir, exist_ok=True)


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
