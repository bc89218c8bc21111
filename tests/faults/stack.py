"""The fault tests' own stack: a PostgreSQL cluster, a Redis, gunicorn and Celery,
each a real process on a free port in a temporary directory, none of them shared.

Every process is started in its own session (process group), so stopping it
kills its children too; ``Stack.close`` stops everything that is still running
and is called from a finalizer, on failure too. Children also get SIGTERM when
the test process dies (PR_SET_PDEATHSIG). PostgreSQL runs as the ``postgres``
OS user when we are root (initdb and postgres refuse root).
"""

from __future__ import annotations

import ctypes
import http.client
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
PG_BIN = Path(os.environ.get("FAULTS_PG_BIN", "/usr/lib/postgresql/15/bin"))
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
HMAC_SECRET = "faults-" + "s" * 40  # the credits API's shared secret (32+ characters)


def missing_binaries() -> str | None:
    """Why the stack cannot run here, or None."""
    for path in (PG_BIN / "initdb", PG_BIN / "pg_ctl", PG_BIN / "postgres", Path(REDIS_SERVER),
                 VENV_BIN / "gunicorn", VENV_BIN / "celery"):
        if not os.access(path, os.X_OK):
            return f"fault tests need {path} (PostgreSQL 15 server binaries, redis-server, gunicorn, celery)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "fault tests run PostgreSQL as the 'postgres' OS user when root, and there is none"
        if not shutil.which("runuser"):
            return "fault tests need runuser to start PostgreSQL as 'postgres' when root"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def log(message: str) -> None:
    print(f"[faults {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Proc:
    """A child process in its own session, its output in a log file."""

    def __init__(self, name: str, args: list[str], *, env: dict, log_path: Path, cwd: Path = ROOT):
        self.name, self.args, self.log_path = name, args, log_path
        self.log_file = open(log_path, "ab")
        self.popen = subprocess.Popen(args, cwd=cwd, env=env, stdout=self.log_file, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_die_with_parent)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def children(self) -> list[int]:
        try:
            text = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text()
        except OSError:
            return []
        return [int(p) for p in text.split()]

    def kill9(self) -> None:
        """SIGKILL the whole process group at once (the master and its workers)."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.popen.wait(timeout=10)

    def stop(self, timeout: float = 10) -> None:
        if self.alive():
            try:
                os.killpg(self.pid, signal.SIGTERM)
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
            except ProcessLookupError:
                pass
        try:
            os.killpg(self.pid, signal.SIGKILL)  # stragglers of the group
        except ProcessLookupError:
            pass
        try:
            self.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self.log_file.close()

    def tail(self, chars: int = 3000) -> str:
        self.log_file.flush()
        return f"--- {self.name} log (tail) ---\n" + self.log_path.read_text(errors="replace")[-chars:]


class Stack:
    def __init__(self):
        base = Path(tempfile.mkdtemp(prefix="billing-faults-"))
        base.chmod(0o755)  # PostgreSQL (as postgres) reaches its data directory through it
        self.base = base
        self.pg_dir = base / "pg"
        self.var_dir = base / "var"
        self.var_dir.mkdir()
        self.pg_port, self.redis_port, self.web_port = free_port(), free_port(), free_port()
        self.queue = "faults"
        self.redis: Proc | None = None
        self.web: Proc | None = None
        self.worker: Proc | None = None
        self.beat: Proc | None = None
        self.extra: list[Proc] = []
        self.pg_running = False
        self.db_url = f"postgres://postgres@127.0.0.1:{self.pg_port}/billing"
        self.env = dict(
            os.environ,
            DATABASE_URL=self.db_url,
            REDIS_URL=f"redis://127.0.0.1:{self.redis_port}/0",
            SVC_HMAC_SECRETS=HMAC_SECRET,
            VAR_DIR=str(self.var_dir),
            SECRET_KEY="faults-" + secrets.token_urlsafe(30),
            DEBUG="0",
            LOG_LEVEL="WARNING",
            CELERY_TASK_DEFAULT_QUEUE=self.queue,
            BILLING_CYCLE_INTERVAL_SECONDS="1",
            DATABASE_CONN_MAX_AGE="60",
            PYTHONUNBUFFERED="1",
            # Outgoing webhooks: a short HTTP timeout (a claimed attempt is retried 3x that
            # later), a sweep every second and retries within seconds, so a run fits the budget.
            WEBHOOK_TIMEOUT_SECONDS="2",
            WEBHOOK_SWEEP_INTERVAL_SECONDS="1",
            WEBHOOK_RETRY_DELAYS_SECONDS="1,1,2,2,3,5,5,10,10,20",
        )
        self.env.pop("DJANGO_SETTINGS_MODULE", None)  # manage.py and the wsgi module set it
        self.api_key = ""

    # --- PostgreSQL ------------------------------------------------------------------

    def _as_postgres(self, args: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args

    def _pg(self, args: list[str], timeout: float = 60) -> None:
        done = subprocess.run(self._as_postgres(args), capture_output=True, text=True, timeout=timeout,
                              cwd=self.base, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} exited {done.returncode}:\n{done.stdout[-2000:]}{done.stderr[-2000:]}\n"
                               + self.pg_log_tail())

    def pg_log_tail(self) -> str:
        path = self.pg_dir / "server.log"
        return "--- postgres log (tail) ---\n" + (path.read_text(errors="replace")[-2000:] if path.exists() else "")

    def pg_init(self) -> None:
        self.pg_dir.mkdir(mode=0o700)
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.pg_dir, pw.pw_uid, pw.pw_gid)
        self._pg([str(PG_BIN / "initdb"), "-D", str(self.pg_dir / "data"), "-A", "trust", "-U", "postgres",
                  "--no-sync", "-E", "UTF8", "--locale=C"], timeout=120)
        with open(self.pg_dir / "data" / "postgresql.conf", "a") as conf:
            conf.write("\n# fault tests: speed over durability, a private socket directory\n"
                       "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                       f"listen_addresses = '127.0.0.1'\nunix_socket_directories = '{self.pg_dir}'\n"
                       "max_connections = 100\nshared_buffers = 64MB\n")
        self.pg_start()
        import psycopg

        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.pg_port}/postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE billing")

    def _pg_ctl(self, *args: str, timeout: float = 60) -> None:
        self._pg([str(PG_BIN / "pg_ctl"), "-D", str(self.pg_dir / "data"), "-w", "-t", "30",
                  "-l", str(self.pg_dir / "server.log"), *args], timeout=timeout)

    def pg_start(self) -> None:
        self._pg_ctl("-o", f"-p {self.pg_port} -k {self.pg_dir}", "start")
        self.pg_running = True

    def pg_restart(self) -> None:
        self._pg_ctl("-m", "fast", "-o", f"-p {self.pg_port} -k {self.pg_dir}", "restart")
        self.pg_running = True

    def pg_stop(self, mode: str = "fast") -> None:
        if self.pg_running:
            self._pg_ctl("-m", mode, "stop")
            self.pg_running = False

    def sql(self, query: str, params=None) -> list[tuple]:
        import psycopg

        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.pg_port}/billing", autocommit=True,
                             connect_timeout=10) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []

    def scalar(self, query: str, params=None):
        return self.sql(query, params)[0][0]

    # --- Redis -----------------------------------------------------------------------

    def redis_start(self) -> None:
        self.redis = Proc("redis", [REDIS_SERVER, "--port", str(self.redis_port), "--bind", "127.0.0.1",
                                    "--save", "", "--appendonly", "no", "--daemonize", "no",
                                    "--dir", str(self.var_dir)],
                          env=self.env, log_path=self.base / "redis.log")
        wait_for(lambda: self.redis_ping(), 15, "redis to answer PING", self.redis)

    def redis_stop(self) -> None:
        if self.redis is not None:
            self.redis.kill9()
            self.redis.log_file.close()
            self.redis = None

    def redis_ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.redis_port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    # --- the service -----------------------------------------------------------------

    def manage(self, *args: str, timeout: float = 180, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if check and done.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} exited {done.returncode}:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
        return done

    def web_start(self) -> None:
        self.web = Proc("gunicorn", [str(VENV_BIN / "gunicorn"), "config.wsgi", "-w", "2", "--threads", "4",
                                     "-b", f"127.0.0.1:{self.web_port}", "--graceful-timeout", "5",
                                     "--timeout", "60"],
                        env=self.env, log_path=self.base / "gunicorn.log")
        wait_for(lambda: self.http("GET", "/healthz")[0] == 200, 60, "gunicorn to answer /healthz", self.web)

    def web_workers(self) -> list[int]:
        return self.web.children() if self.web else []

    def worker_start(self) -> None:
        self.worker = Proc("celery worker", [str(VENV_BIN / "celery"), "-A", "config", "worker", "--pool=prefork",
                                             "-c", "2", "-Q", self.queue, "--loglevel=INFO", "--without-heartbeat",
                                             "--without-mingle", "--without-gossip"],
                           env=self.env, log_path=self.base / "worker.log")

    def beat_start(self) -> None:
        self.beat = Proc("celery beat", [str(VENV_BIN / "celery"), "-A", "config", "beat", "--loglevel=INFO",
                                         "-s", str(self.var_dir / "beat-schedule")],
                         env=self.env, log_path=self.base / "beat.log")

    def supervise(self) -> list[str]:
        """Restart the Celery worker or beat if it has exited, as the process supervisor
        of a deployment (systemd, a container runtime) would; what was restarted, with
        the first error lines of its log, so the test can report it."""
        restarted = []
        for name, proc, start in (("worker", self.worker, self.worker_start), ("beat", self.beat, self.beat_start)):
            if proc is not None and not proc.alive():
                proc.log_file.flush()
                text = proc.log_path.read_text(errors="replace")
                errors = [line for line in text.splitlines() if "Error" in line or "CRITICAL" in line][-6:]
                restarted.append(f"celery {name} had exited with {proc.popen.returncode}: " + " | ".join(errors)[-1500:])
                proc.stop()
                start()
        for line in restarted:
            log("RESTARTED " + line)
        return restarted

    def http(self, method: str, path: str, body=None, *, headers: dict | None = None,
             timeout: float = 10) -> tuple[int, dict]:
        """(status, JSON body); status 0 when there was no answer."""
        conn = http.client.HTTPConnection("127.0.0.1", self.web_port, timeout=timeout)
        try:
            all_headers = {"Content-Type": "application/json", **(headers or {})}
            if self.api_key:
                all_headers.setdefault("Authorization", f"Bearer {self.api_key}")
            conn.request(method, path, body=None if body is None else json.dumps(body), headers=all_headers)
            response = conn.getresponse()
            raw = response.read()
        except (OSError, http.client.HTTPException):
            return 0, {}
        finally:
            conn.close()
        try:
            return response.status, (json.loads(raw) if raw else {})
        except ValueError:
            return response.status, {"raw": raw[:2000].decode(errors="replace")}

    def api(self, method: str, route: str, body=None, ok=(200, 201)) -> dict:
        status, data = self.http(method, f"/api/v1/pay/{route}", body)
        if status not in ok:
            raise AssertionError(f"{method} {route} answered {status}: {json.dumps(data)[:500]}")
        return data

    def logs(self) -> str:
        procs = [p for p in (self.web, self.worker, self.beat, self.redis) if p is not None]
        return "\n".join(p.tail(1500) for p in procs) + "\n" + self.pg_log_tail()

    # --- the ledger audit ----------------------------------------------------------------

    def audit(self) -> str | None:
        """Run ``manage.py audit_ledger`` when it exists; its output (asserting exit 0), or None."""
        if not (ROOT / "billing" / "management" / "commands" / "audit_ledger.py").exists():
            return None
        done = self.manage("audit_ledger", check=False, timeout=120)
        assert done.returncode == 0, f"audit_ledger exited {done.returncode}:\n{done.stdout[-4000:]}{done.stderr[-2000:]}"
        return done.stdout

    # --- teardown --------------------------------------------------------------------

    def close(self) -> None:
        for proc in (self.beat, self.worker, self.web, *self.extra, self.redis):
            if proc is not None:
                try:
                    proc.stop(timeout=5)
                except Exception:  # keep stopping the others
                    pass
        try:
            self.pg_stop(mode="immediate")
        except Exception:
            pass
        if os.environ.get("FAULTS_KEEP"):  # keep the logs and data directory to look at
            log(f"kept {self.base}")
        else:
            shutil.rmtree(self.base, ignore_errors=True)


def wait_for(predicate, timeout: float, what: str, proc: Proc | None = None, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode} while waiting for {what}\n{proc.tail()}")
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}" + (f"\n{proc.tail()}" if proc else ""))


class WebhookReceiver:
    """A local endpoint for outgoing webhooks: records every POST (event id, type,
    whether it answered 2xx); answers 500 to the first POST of every fourth event so
    retries happen too, and takes ``delay`` seconds per request so that deliveries
    are in flight when the worker is killed."""

    def __init__(self, delay: float = 0.05):
        import hashlib
        import http.server
        import threading

        receiver = self
        self.delay = delay
        self.posts: list[tuple[str, str, int]] = []  # (event id, type, status answered)
        self.lock = threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    event = json.loads(body)
                    event_id, kind = event["id"], event["type"]
                except (ValueError, KeyError, TypeError):
                    event_id, kind = "?", "?"
                time.sleep(receiver.delay)
                with receiver.lock:
                    first = not any(p[0] == event_id for p in receiver.posts)
                    flaky = int(hashlib.sha256(event_id.encode()).hexdigest(), 16) % 4 == 0
                    status = 500 if first and flaky else 200
                    receiver.posts.append((event_id, kind, status))
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def delivered(self) -> set[str]:
        with self.lock:
            return {p[0] for p in self.posts if p[2] == 200}

    def count(self) -> int:
        with self.lock:
            return len(self.posts)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
