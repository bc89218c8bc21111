"""`make bench`: throughput and latency of the hot routes, as ratios to the framework's ceiling.

One run, start to finish:
  1. a fresh PostgreSQL database (billing_bench_<pid>), migrated, with a secret API key;
  2. seed: the Bench product, 10,000 customers each with a 1,000,000-unit balance of
     `bench-calls` (bench/seed.py, in-process through the services the API views call; timed);
  3. gunicorn (one configuration for every scenario), DEBUG off;
  4. each scenario driven by bench/load.py in its own process for BENCH_SECONDS after a
     warm-up: noop (the ceiling), check, track, track-batch, hot-send, lock, debit, check-1M;
  5. the table printed and written to bench/RESULTS.md.
gunicorn is stopped and the database dropped at the end, on failure and on Ctrl-C too.

Environment: BENCH_SECONDS (10), BENCH_WARMUP (2), BENCH_CLIENTS (16), BENCH_HOT_CLIENTS (32),
BENCH_BATCH_CLIENTS (4), BENCH_BATCH_SIZE (500), BENCH_CUSTOMERS (10000), BENCH_EVENTS (1000000),
BENCH_GUNICORN_ARGS (see GUNICORN_ARGS).
A scenario whose route is not built yet is reported as "not available".
"""

from __future__ import annotations

import ctypes
import datetime
import http.client
import json
import os
import secrets
import shlex
import signal
import statistics
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from subprocess import PIPE

import psycopg

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PY = sys.executable
GUNICORN = Path(sys.executable).parent / "gunicorn"
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS = ("127.0.0.1", 6379)
FEATURE = "bench-calls"
ALLOWANCE = 1_000_000  # each seeded customer's balance (bench/seed.py)

# Measured with the noop scenario on this 2-core machine (16 clients; app, database and load
# generator together): gthread 2x2 and 2x4 were within noise of each other (~1,000-1,300 req/s),
# sync workers (no keep-alive) and more processes were slower.
GUNICORN_ARGS = "--workers 2 --threads 2 --worker-class gthread"


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name) or default)


SECONDS = float(os.environ.get("BENCH_SECONDS") or 10)
WARMUP = float(os.environ.get("BENCH_WARMUP") or 2)
CLIENTS = env_int("BENCH_CLIENTS", 16)
HOT_CLIENTS = env_int("BENCH_HOT_CLIENTS", 32)
# track-batch: a few clients (gunicorn serves 4 requests at once), each batch of BATCH_SIZE events.
BATCH_CLIENTS = env_int("BENCH_BATCH_CLIENTS", 4)
# check, track and lock alternate with noop in this many rounds (BENCH_SECONDS split among
# them); their ratio is the median of the rounds' ratios. Two runs on a quiet machine with one
# noop before each scenario gave check 0.94 and 0.58: one pair of 10 s slices is too few.
ROUNDS = env_int("BENCH_ROUNDS", 4)
BATCH_SIZE = env_int("BENCH_BATCH_SIZE", 500)
CUSTOMERS = env_int("BENCH_CUSTOMERS", 10_000)
EVENTS = env_int("BENCH_EVENTS", 1_000_000)
GUNICORN_ARGS = os.environ.get("BENCH_GUNICORN_ARGS") or GUNICORN_ARGS

# scenario: (threshold on its ratio, target as written in the table); check-1M's ratio is p50 over check's p50
TARGETS = {
    "noop": (None, "ceiling"),
    "check": (0.7, "≥ 0.70"),
    "track": (0.5, "≥ 0.50"),
    "track-batch": (10.0, "≥ 10× track events/s"),
    "hot-send": (0.4, "≥ 0.40, no overdraft"),
    "lock": (None, "—"),
    "debit": (None, "— (nothing lost or doubled)"),
    "check-1M": (1.2, "p50 ≤ 1.2× check"),
}


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


class Unavailable(Exception):
    """A route the scenario needs is not built (or not working) yet."""


# --- processes and the database ----------------------------------------------------------


def redis_answers() -> bool:
    try:
        with socket.create_connection(REDIS, timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_checked(args: list[str], env: dict, timeout: float) -> str:
    """Run a child to completion; its stdout, or an error carrying its output."""
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(args)} exited {done.returncode}:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return done.stdout


def die_with_parent() -> None:
    """In the gunicorn child: get SIGTERM if this runner dies without cleaning up (Linux)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class Gunicorn:
    def __init__(self, env: dict, log_path: Path):
        self.port = free_port()
        self.log_path = log_path
        bind = f"127.0.0.1:{self.port}"
        self.args = [str(GUNICORN), "config.wsgi:application", "--bind", bind, *shlex.split(GUNICORN_ARGS)]
        self.log_file = open(log_path, "wb")
        self.proc = subprocess.Popen(
            self.args, cwd=ROOT, env=env, stdout=self.log_file, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=die_with_parent,
        )

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"gunicorn did not answer /healthz within {timeout} s\n{self.log_tail()}")

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {self.proc.returncode}\n{self.log_tail()}")

    def log_tail(self) -> str:
        self.log_file.flush()
        return "gunicorn log (tail):\n" + self.log_path.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        """TERM the gunicorn process group (its own session), then KILL whatever is left."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
            except ProcessLookupError:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # stray workers, if any
        except ProcessLookupError:
            pass
        self.log_file.close()


def admin_sql(sql: str) -> None:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql)


# --- talking to the running app ----------------------------------------------------------


class Api:
    def __init__(self, port: int, key: str):
        self.port, self.key = port, key

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            headers = {"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"}
            payload = json.dumps(body) if body is not None else None
            conn.request(method, "/api/v1/pay/" + path, body=payload, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        try:
            data = json.loads(raw) if raw else {}
        except ValueError:
            data = {"raw": raw[:20000].decode(errors="replace")}
        return response.status, data

    def require(self, method: str, path: str, body: dict | None = None, ok=(200, 201)) -> dict:
        """The answer, or Unavailable saying what the route answered."""
        status, data = self.call(method, path, body)
        if status not in ok:
            # No route: the JSON 404 of the /api/ catch-all, 405, or (a POST to an unknown URL)
            # Django's HTML CSRF page, as the catch-all is a plain Django view.
            missing = (
                status == 405
                or (status == 404 and (data.get("error") or {}).get("details", {}) == {"resource": "route"})
                or (status == 403 and "CSRF" in data.get("raw", ""))
            )
            reason = "route not built yet" if missing else json.dumps(data)[:200]
            raise Unavailable(f"{method} {path} → {status} ({reason})")
        return data


def load(port: int, key: str, scenario: str, clients: int, env: dict, *, seconds: float = SECONDS,
         warmup: float = WARMUP, hot_customer: str = "hot", label: str = "") -> dict:
    args = [
        PY, str(BENCH / "load.py"), "--port", str(port), "--key", key, "--scenario", scenario,
        "--clients", str(clients), "--seconds", str(seconds), "--warmup", str(warmup), "--customers", str(CUSTOMERS),
        "--hot-customer", hot_customer,
    ]
    if scenario == "debit":
        args += ["--hmac-secret", env["SVC_HMAC_SECRETS"]]
    if scenario == "track-batch":
        args += ["--batch-size", str(BATCH_SIZE)]
    result = json.loads(run_checked(args, env, timeout=seconds + warmup + 120).strip().splitlines()[-1])
    log(
        f"{label or scenario}: {result['rps']:.0f} op/s, p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, "
        f"{result['errors']} errors ({clients} clients)"
        + (f"; {result['unfinished_clients']} clients still waiting at the end" if result["unfinished_clients"] else "")
    )
    return result


# --- the scenarios -------------------------------------------------------------------------


def seed(env: dict, key: str) -> dict:
    """Product, then customers and balances split over one process per CPU (the work is CPU-bound)."""
    started = time.monotonic()
    run_checked([PY, str(BENCH / "seed.py"), "--key", key, "--product"], env, timeout=120)
    jobs = max(1, min(os.cpu_count() or 1, CUSTOMERS))
    share, extra = divmod(CUSTOMERS, jobs)
    procs, first = [], 1
    for j in range(jobs):
        count = share + (j < extra)
        args = [PY, str(BENCH / "seed.py"), "--customers", str(count), "--first", str(first)]
        procs.append(subprocess.Popen(args, cwd=ROOT, env=env, stdout=PIPE, stderr=PIPE, text=True))
        first += count
    reports, failures = [], []
    try:
        for p in procs:
            out, err = p.communicate(timeout=1800)
            if p.returncode != 0:
                failures.append(err[-2000:])
            else:
                reports.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for p in procs:  # after a failure or Ctrl-C: none left writing to the database
            if p.poll() is None:
                p.kill()
                p.wait()
    if failures:
        raise RuntimeError("seeding failed:\n" + "\n".join(failures))
    return {"customers": sum(r["customers"] for r in reports), "seconds": time.monotonic() - started, "jobs": jobs}


def check_probe(api: Api) -> None:
    """One read-only check on the last seeded customer: the route works and the seed is what it needs."""
    answer = api.require("POST", "check", {"customer": customer_id(CUSTOMERS), "feature": FEATURE})
    if answer.get("allowed") is not True or answer.get("granted") != ALLOWANCE:
        raise Unavailable(f"check on a seeded customer answered {json.dumps(answer)[:200]}")


def customer_id(n: int) -> str:
    return f"c{n:05d}"


def batch_probe(api: Api) -> None:
    """One track/batch of two events: the route is there and applies them."""
    events = [{"customer": customer_id(CUSTOMERS), "feature": FEATURE, "amount": 1}] * 2
    results = api.require("POST", "track/batch", {"events": events}).get("results")
    if not results or not all("eventId" in r for r in results):
        raise Unavailable(f"POST track/batch answered {json.dumps(results)[:200]}")


def lock_iteration(api: Api) -> None:
    expires = int(time.time() * 1000) + 60_000
    lock = {"enabled": True, "expiresAt": expires}
    body = {"customer": customer_id(1), "feature": FEATURE, "requiredBalance": 1, "lock": lock}
    answer = api.require("POST", "check", body)
    if not answer.get("lockId"):
        raise Unavailable(f"POST check with a lock answered no lockId: {json.dumps(answer)[:200]}")
    api.require("POST", "locks/finalize", {"lockId": answer["lockId"], "action": "confirm"})


def hot_send(api: Api, port: int, key: str, env: dict) -> tuple[dict, dict]:
    """32 clients spend one balance of N units, N a bit under what they will ask for.

    A short calibration run on another customer with plenty of balance measures the rate, and
    N = 0.75 x rate x (warm-up + run): the balance runs out about three quarters of the way
    through, so "no overdraft" is exercised, unless the run is much slower than the calibration.
    (A fixed fraction of the noop rate left the balance unspent whenever hot-send was slow.)
    """
    api.require("POST", "customers", {"customerId": "hot-calibration"})
    api.require("POST", "balances", {"customer": "hot-calibration", "feature": FEATURE, "grantedBalance": 10**8})
    calibration = load(port, key, "hot-send", HOT_CLIENTS, env, seconds=min(3.0, SECONDS), warmup=1.0,
                       hot_customer="hot-calibration", label="hot-send calibration")
    granted = max(100, int(0.75 * calibration["rps"] * (WARMUP + SECONDS)))
    api.require("POST", "customers", {"customerId": "hot"})
    api.require("POST", "balances", {"customer": "hot", "feature": FEATURE, "grantedBalance": granted})
    result = load(port, key, "hot-send", HOT_CLIENTS, env)
    balance = api.require("GET", "customers/hot").get("balances", {}).get(FEATURE)
    check = {"granted": granted, "asked": result["ops_total"], "allowed": result["allowed_total"],
             "failed": result["failed_total"], "usage": None, "remaining": None, "ok": None}
    if balance is not None:
        check["usage"], check["remaining"] = balance["usage"], balance["remaining"]
        check["ok"] = (
            balance["usage"] == result["allowed_total"] and balance["remaining"] >= 0
            and balance["usage"] <= granted and result["failed_total"] == 0
        )
    return result, check


# The debit scenario: 32 clients debit 1 credit each from one wallet through the signed credits
# API. The server runs with BILLING_CREDITS_FEATURE=bench-calls, so the wallet is a balance of the
# seeded feature; it holds more than the run can spend, so every debit should succeed.
DEBIT_WALLET = "hot-wallet"
DEBIT_CREDITS = 10**9


def debit_probe(api: Api, port: int, secret: str) -> None:
    """One signed debit: the credits API is there and the wallet pays."""
    from load import CREDITS_DEBIT_PATH, credits_headers

    body = json.dumps({"workspaceId": DEBIT_WALLET, "amount": 1, "jobId": "probe", "sourceService": "bench"}).encode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"Content-Type": "application/json",
                   **credits_headers(secret, "POST", CREDITS_DEBIT_PATH, body, int(time.time()))}
        conn.request("POST", CREDITS_DEBIT_PATH, body=body, headers=headers)
        response = conn.getresponse()
        raw = response.read()
    finally:
        conn.close()
    if response.status != 201:
        missing = response.status in (404, 405) or (response.status == 403 and b"CSRF" in raw)
        raise Unavailable(f"POST credits/debit → {response.status} "
                          f"({'route not built yet' if missing else raw[:200].decode(errors='replace')})")


def debit_scenario(api: Api, port: int, key: str, env: dict) -> tuple[dict, dict]:
    api.require("POST", "customers", {"customerId": DEBIT_WALLET})
    api.require("POST", "balances", {"customer": DEBIT_WALLET, "feature": FEATURE, "grantedBalance": DEBIT_CREDITS})
    debit_probe(api, port, env["SVC_HMAC_SECRETS"])
    result = load(port, key, "debit", HOT_CLIENTS, env, hot_customer=DEBIT_WALLET)
    balance = api.require("GET", f"customers/{DEBIT_WALLET}").get("balances", {}).get(FEATURE)
    check = {"asked": result["ops_total"], "debited": result["allowed_total"], "failed": result["failed_total"],
             "usage": None, "ok": None}
    if balance is not None:
        check["usage"] = balance["usage"]
        # + 1: the probe's debit
        check["ok"] = balance["usage"] == result["allowed_total"] + 1 and result["failed_total"] == 0
    return result, check


def insert_usage_events(db_url: str) -> float:
    """EVENTS usage events for the seeded customers (spread evenly), all inside the current period."""
    started = time.monotonic()
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            """
            INSERT INTO billing_usageevent
                (customer_id, feature_id, entity_id, amount, idempotency_key, properties, timestamp, created_at)
            SELECT c.ids[1 + mod(g, cardinality(c.ids))], f.id, NULL, 1, NULL, '{}'::jsonb,
                   now() - mod(g, 1000000) * interval '1 microsecond', now()
            FROM generate_series(0, %(n)s - 1) AS g,
                 (SELECT array_agg(id ORDER BY id) AS ids FROM billing_customer
                   WHERE external_id ~ '^c[0-9]{5}$' AND deleted_at IS NULL) AS c,
                 (SELECT id FROM billing_feature WHERE slug = %(feature)s) AS f
            """,
            {"n": EVENTS, "feature": FEATURE},
        )
        conn.execute("VACUUM ANALYZE billing_usageevent")
    return time.monotonic() - started


# --- the report ----------------------------------------------------------------------------


def machine() -> str:
    mem_kb = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal:"))
    return f"{os.cpu_count()} CPUs, {mem_kb / 1024 / 1024:.1f} GiB memory"


def report(rows: dict, context: dict) -> str:
    noop = rows.get("noop")
    check = rows.get("check")
    lines = [
        "| scenario | clients | req/s | p50 ms | p99 ms | errors | ratio to noop | target | met? |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for name, (threshold, target) in TARGETS.items():
        r = rows.get(name)
        if r is None or "unavailable" in r:
            clients = HOT_CLIENTS if name in ("hot-send", "debit") else BATCH_CLIENTS if name == "track-batch" else CLIENTS
            lines.append(f"| {name} | {clients} | — | — | — | — | — | {target} | not available |")
            continue
        if name == "check-1M":
            # Like for like: each one's p50 over the p50 of the noop just before it (median of
            # the rounds), so the machine's load at the two moments does not enter the ratio.
            ratio = (r["p50_over_noop"] / check["p50_over_noop"]
                     if check and check.get("p50_over_noop") and r.get("p50_over_noop") else None)
            ratio_text = f"p50 {ratio:.2f}× check" if ratio is not None else "—"
            met = ratio is not None and ratio <= threshold
        elif name == "track-batch":  # events/s in the req/s column, as a ratio to single track's req/s
            track = rows.get("track")
            events = r["rps"] * BATCH_SIZE
            ratio = events / track["rps"] if track and track.get("rps") else None
            ratio_text = f"{ratio:.1f}× track" if ratio is not None else "—"
            met = ratio is not None and ratio >= threshold
            lines.append(
                f"| {name} | {r['clients']} | {events:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['errors']} "
                f"| {ratio_text} | {target} | {'yes' if met and r['errors'] == 0 else 'no'} |"
            )
            continue
        else:
            base = r.get("noop_rps") or (noop or {}).get("rps")
            ratio = r.get("ratio") or (r["rps"] / base if base else None)
            ratio_text = f"{ratio:.2f}" if ratio is not None else "—"
            if r.get("ratios"):
                ratio_text += " (rounds " + " ".join(f"{x:.2f}" for x in r["ratios"]) + ")"
            elif r.get("noop_rps"):
                ratio_text += f" (noop {r['noop_rps']:.0f})"
            met = threshold is not None and ratio is not None and ratio >= threshold
            if name == "hot-send":
                met = met and context["hot"]["ok"] is True
        met_text = "—" if threshold is None else ("yes" if met and r["errors"] == 0 else "no")
        if name == "debit":  # no speed target: "met" says whether every credit is accounted for
            met_text = {True: "yes", False: "no", None: "—"}[(context.get("debit") or {}).get("ok")]
        lines.append(
            f"| {name} | {r['clients']} | {r['rps']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['errors']} "
            f"| {ratio_text} | {target} | {met_text} |"
        )
    notes = [f"- {name}: not available — {r['unavailable']}" for name, r in rows.items() if "unavailable" in r]
    hot = context.get("hot")
    if hot:
        unverified = f"could not verify (GET customers/hot shows no {FEATURE} balance)"
        verdict = {True: "correct", False: "WRONG", None: unverified}[hot["ok"]]
        notes.insert(0, (
            f"- hot-send correctness: {verdict}. Granted {hot['granted']}; {hot['asked']} checks with sendEvent "
            f"(warm-up included), {hot['allowed']} answered allowed:true, {hot['failed']} failed; balance afterwards: "
            f"usage {hot['usage']}, remaining {hot['remaining']} (want usage == allowed, remaining ≥ 0)."
        ))
        if hot["remaining"]:
            notes.insert(1, "- hot-send: the balance was not used up, so running out under contention went untested.")
    debit = context.get("debit")
    if debit:
        verdict = {True: "correct", False: "WRONG", None: f"could not verify (no {FEATURE} balance shown)"}[debit["ok"]]
        notes.append(
            f"- debit correctness: {verdict}. {debit['asked']} signed debits of 1 credit from one wallet by "
            f"{HOT_CLIENTS} clients (warm-up included), {debit['debited']} answered 201, {debit['failed']} failed; "
            f"the wallet's usage afterwards: {debit['usage']} (want 201s + 1 for the probe)."
        )
    if "noop_end" in context:
        end = context["noop_end"]
        drift = f" ({end['rps'] / noop['rps']:.0%} of the first)" if noop and noop.get("rps") else ""
        notes.append(
            f"- noop again at the end: {end['rps']:.0f} req/s{drift}. A large difference means the machine's load "
            "changed during the run and the ratios are less trustworthy."
        )
    if "events_seconds" in context:
        notes.append(
            f"- check-1M: {EVENTS:,} usage events inserted in {context['events_seconds']:.1f} s, "
            "then the check scenario again."
        )
    seed_info = context["seed"]
    head = [
        "# Benchmark results",
        "",
        f"Written by `make bench` (bench/run.py) on {context['date']}; every run overwrites this file.",
        "",
        f"- Machine: {machine()}; the app, PostgreSQL {context['pg']} and the load generator share it.",
        f"- Server: gunicorn `{GUNICORN_ARGS}`, DEBUG off, a fresh database, "
        f"Redis {'on' if context['redis'] else 'off'}.",
        f"- Load: bench/load.py, one keep-alive connection per client; {SECONDS:g} s per scenario "
        f"after a {WARMUP:g} s warm-up.",
        f"- Seed: {seed_info['customers']:,} customers with {ALLOWANCE:,} {FEATURE} each in "
        f"{seed_info['seconds']:.1f} s ({seed_info['jobs']} processes calling the customer and balance services).",
        "- req/s for lock is lock+confirm iterations per second (two requests each); latency is per iteration.",
        f"- req/s for track-batch is events per second ({BATCH_SIZE} events of amount 1 on random customers per "
        "request); latency is per request; its ratio is to single track's req/s of this run.",
        "- check-1M's ratio compares check after and before the 1,000,000 events like for like: each one's p50 "
        "over the p50 of the noop just before it, median of the rounds.",
        f"- check, track, check-1M and lock alternate with noop in {ROUNDS} rounds of {SECONDS / ROUNDS:g} s (after a 1 s "
        "warm-up each); their ratio is the median of the rounds' ratios (listed), req/s the mean, p50 the median, "
        "p99 the worst. hot-send and debit have their ratio to a noop measured just before them (in brackets). "
        "So load that comes and goes on the shared machine moves both sides of a ratio alike.",
        "- A benchmark, not a test: numbers move with whatever else runs on the machine.",
        "",
    ]
    tail = ["", *notes, "", f"Full run: {context['total_seconds']:.0f} s.", ""]
    return "\n".join(head + lines + tail)


# --- the run ----------------------------------------------------------------------------------


def interrupted(signum, frame):
    raise KeyboardInterrupt


def main() -> int:
    began = time.monotonic()
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, interrupted)  # also when started with SIGINT ignored (a background job)
    db = f"billing_bench_{os.getpid()}"
    db_url = f"postgresql://postgres@127.0.0.1:5432/{db}"
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "DEBUG")}
    env.update(DATABASE_URL=db_url, DEBUG="0", DJANGO_SETTINGS_MODULE="config.settings")
    # The credits API (debit scenario): a secret of this run, and the seeded feature as the credits.
    env.update(SVC_HMAC_SECRETS=secrets.token_urlsafe(48), BILLING_CREDITS_FEATURE=FEATURE)
    # The rate limiter runs (its cost is part of every request) but never refuses: at the
    # default 1,000/s per key, noop on a quiet machine was cut short with 429s.
    env.update(RATE_LIMIT_PER_SECOND="1000000", RATE_LIMIT_BURST="1000000",
               CREDITS_RATE_LIMIT_PER_SECOND="1000000", CREDITS_RATE_LIMIT_BURST="1000000")
    redis = redis_answers()
    if redis:
        env["REDIS_URL"] = "redis://127.0.0.1:6379/0"
    workdir = Path(tempfile.mkdtemp(prefix="billing-bench-"))
    server = None
    rows: dict[str, dict] = {}
    context = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "redis": redis}
    try:
        admin_sql(f'CREATE DATABASE "{db}"')
        log(f"database {db} created (Redis {'on' if redis else 'off'}); migrating")
        run_checked([PY, "manage.py", "migrate", "--noinput"], env, timeout=300)
        out = run_checked([PY, "manage.py", "createapikey", "--name", "bench", "--type", "secret"], env, timeout=60)
        key = out.strip().splitlines()[-1]
        with psycopg.connect(db_url) as conn:
            context["pg"] = conn.execute("SHOW server_version").fetchone()[0].split()[0]

        log(f"seeding {CUSTOMERS:,} customers with a balance of {FEATURE}")
        context["seed"] = seed_info = seed(env, key)
        log(f"seeded {seed_info['customers']:,} customers in {seed_info['seconds']:.1f} s")

        server = Gunicorn(env, workdir / "gunicorn.log")
        server.wait_ready()
        log(f"gunicorn {GUNICORN_ARGS} on 127.0.0.1:{server.port}")
        api = Api(server.port, key)

        def noop_before(name: str) -> float:
            """noop again right before a scenario: its ratio is to this, so load that comes
            and goes on the shared machine moves both sides of the ratio alike."""
            result = load(server.port, key, "noop", CLIENTS, env, label=f"noop before {name}")
            if result["errors"]:
                raise RuntimeError(f"noop before {name} had {result['errors']} errors: the baseline is not one")
            return result["rps"]

        def alternated(name: str, clients: int) -> dict:
            """ROUNDS rounds of (noop, scenario); the scenario's numbers with the median ratio."""
            slice_s, runs, ratios, noops, p50_ratios = SECONDS / ROUNDS, [], [], [], []
            for n in range(ROUNDS):
                noop_run = _noop_slice(name, n, slice_s)
                noops.append(noop_run["rps"])
                runs.append(load(server.port, key, name.removesuffix("-1M"), clients, env, seconds=slice_s, warmup=1,
                                 label=f"{name} (round {n + 1})"))
                ratios.append(runs[-1]["rps"] / noops[-1])
                p50_ratios.append(runs[-1]["p50_ms"] / noop_run["p50_ms"])
            return {
                "clients": clients, "rps": statistics.mean(r["rps"] for r in runs),
                "p50_ms": statistics.median(r["p50_ms"] for r in runs), "p99_ms": max(r["p99_ms"] for r in runs),
                "errors": sum(r["errors"] for r in runs), "noop_rps": statistics.mean(noops),
                "ratio": statistics.median(ratios), "ratios": ratios,
                # p50 over the p50 of the noop just before it: latency with the machine's load taken out
                "p50_over_noop": statistics.median(p50_ratios),
            }

        def _noop_slice(name: str, n: int, slice_s: float) -> float:
            result = load(server.port, key, "noop", CLIENTS, env, seconds=slice_s, warmup=1,
                          label=f"noop before {name} (round {n + 1})")
            if result["errors"]:
                raise RuntimeError(f"noop before {name} had {result['errors']} errors: the baseline is not one")
            return result

        def scenario(name: str, clients: int, probe, bracket: bool = True) -> None:
            """Probe the routes once, then drive the scenario; Unavailable marks it not available."""
            server.check_alive()
            try:
                probe()
                if bracket:
                    rows[name] = alternated(name, clients)
                else:
                    rows[name] = load(server.port, key, name.removesuffix("-1M"), clients, env, label=name)
            except Unavailable as exc:
                log(f"{name}: not available — {exc}")
                rows[name] = {"unavailable": str(exc)}

        scenario("noop", CLIENTS, lambda: api.require("GET", "ping"), bracket=False)
        scenario("check", CLIENTS, lambda: check_probe(api))
        track_body = {"customer": customer_id(CUSTOMERS), "feature": FEATURE, "amount": 1}
        scenario("track", CLIENTS, lambda: api.require("POST", "track", track_body))
        scenario("track-batch", BATCH_CLIENTS, lambda: batch_probe(api), bracket=False)  # its ratio is to track

        server.check_alive()
        try:
            check_probe(api)
            baseline = noop_before("hot-send")
            rows["hot-send"], context["hot"] = hot_send(api, server.port, key, env)
            rows["hot-send"]["noop_rps"] = baseline
        except Unavailable as exc:
            log(f"hot-send: not available — {exc}")
            rows["hot-send"] = {"unavailable": str(exc)}

        scenario("lock", CLIENTS, lambda: lock_iteration(api))

        server.check_alive()
        try:
            baseline = noop_before("debit")
            rows["debit"], context["debit"] = debit_scenario(api, server.port, key, env)
            rows["debit"]["noop_rps"] = baseline
        except Unavailable as exc:
            log(f"debit: not available — {exc}")
            rows["debit"] = {"unavailable": str(exc)}

        if "unavailable" in rows["check"]:
            rows["check-1M"] = {"unavailable": "the check scenario is not available"}
        else:
            try:
                context["events_seconds"] = insert_usage_events(db_url)
                log(f"inserted {EVENTS:,} usage events in {context['events_seconds']:.1f} s")
                scenario("check-1M", CLIENTS, lambda: check_probe(api))  # alternated like check, compared with it
            except psycopg.Error as exc:
                rows["check-1M"] = {"unavailable": f"inserting usage events failed: {str(exc).strip()[:200]}"}

        server.check_alive()
        context["noop_end"] = load(server.port, key, "noop", CLIENTS, env, label="noop again")

        context["total_seconds"] = time.monotonic() - began
        text = report(rows, context)
        (BENCH / "RESULTS.md").write_text(text)
        print("\n" + text)
        log("written to bench/RESULTS.md")
        return 0
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        return 130
    except Exception:
        if server is not None and server.proc.poll() is None:
            print(server.log_tail(), file=sys.stderr)
        raise
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the cleanup short
        if server is not None:
            server.stop()
        try:
            admin_sql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            log(f"database {db} dropped")
        except psycopg.Error as exc:
            log(f"could not drop database {db}: {exc}")
        for path in workdir.iterdir():
            path.unlink()
        workdir.rmdir()


if __name__ == "__main__":
    sys.exit(main())
