"""Load generator: a fixed number of clients, each a thread with one keep-alive
HTTP connection, sending one scenario's requests back to back for a fixed time.

Run by bench/run.py as its own process (so the load is generated outside the
app's processes) and prints one JSON object on stdout:

    python bench/load.py --port 8123 --key cp_sk_... --scenario check \
        --clients 16 --seconds 10 --warmup 2 --customers 10000

Operations completed during the warm-up are not measured. Every loop is bounded
by the clock and by --max-ops per client; every socket has a timeout.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import http.client
import itertools
import json
import math
import random
import sys
import threading
import time

FEATURE = "bench-calls"
SCENARIOS = ("noop", "check", "track", "track-batch", "hot-send", "lock", "debit")
BATCH_BODIES = 64  # distinct track/batch bodies made up front, so the load generator spends no CPU on JSON
CREDITS_DEBIT_PATH = "/api/v1/credits/debit"


def credits_headers(secret: str, method: str, path: str, body: bytes, timestamp: int) -> dict:
    """The signed headers of a credits API request (API.md, "Service credits API")."""
    message = f"{timestamp}.{method}.{path}.{hashlib.sha256(body).hexdigest()}".encode()
    signature = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
    return {"X-Service-Name": "bench", "X-Timestamp": str(timestamp), "X-Signature": f"v1={signature}"}


def customer_id(n: int) -> str:
    return f"c{n:05d}"


class Client:
    """One keep-alive connection; ``call`` returns (status, body bytes)."""

    def __init__(self, host: str, port: int, key: str, timeout: float):
        self.conn = http.client.HTTPConnection(host, port, timeout=timeout)
        self.headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    def call(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None) -> tuple[int, bytes]:
        try:
            self.conn.request(method, path, body=body, headers={**self.headers, **headers} if headers else self.headers)
            response = self.conn.getresponse()
            return response.status, response.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()  # the next call reconnects
            return 0, b""


class Scenario:
    """``op(client, rng)`` performs one operation and returns (ok, allowed)."""

    def __init__(self, name: str, customers: int, hot_customer: str, hmac_secret: str = "", batch_size: int = 500):
        self.name = name
        self.hot_customer, self.hmac_secret = hot_customer, hmac_secret
        self.jobs = itertools.count()  # next() is atomic under the GIL: one job id per debit
        self.job_prefix = f"{random.randrange(1 << 40):x}"  # another run never repeats a job
        ids = [customer_id(n) for n in range(1, customers + 1)]
        self.check_bodies = [json.dumps({"customer": c, "feature": FEATURE}).encode() for c in ids]
        self.track_bodies = [json.dumps({"customer": c, "feature": FEATURE, "amount": 1}).encode() for c in ids]
        self.ids = ids
        if name == "track-batch":
            rng = random.Random(7)
            self.batch_bodies = [
                json.dumps({"events": [{"customer": rng.choice(ids), "feature": FEATURE, "amount": 1}
                                       for _ in range(batch_size)]}).encode()
                for _ in range(BATCH_BODIES)
            ]
        self.hot_body = json.dumps(
            {"customer": hot_customer, "feature": FEATURE, "requiredBalance": 1, "sendEvent": True}
        ).encode()
        self.op = getattr(self, "op_" + name.replace("-", "_"))

    def op_noop(self, client, rng):
        status, _ = client.call("GET", "/api/v1/pay/ping")
        return 200 <= status < 300, False

    def op_check(self, client, rng):
        status, _ = client.call("POST", "/api/v1/pay/check", rng.choice(self.check_bodies))
        return 200 <= status < 300, False

    def op_track(self, client, rng):
        status, _ = client.call("POST", "/api/v1/pay/track", rng.choice(self.track_bodies))
        return 200 <= status < 300, False

    def op_track_batch(self, client, rng):
        """One POST track/batch of --batch-size events (amount 1, random customers); ok
        when every event was applied."""
        status, body = client.call("POST", "/api/v1/pay/track/batch", rng.choice(self.batch_bodies))
        if not 200 <= status < 300:
            return False, False
        return all("eventId" in r for r in json.loads(body)["results"]), False

    def op_hot_send(self, client, rng):
        status, body = client.call("POST", "/api/v1/pay/check", self.hot_body)
        if not 200 <= status < 300:
            return False, False
        return True, json.loads(body).get("allowed") is True

    def op_lock(self, client, rng):
        """One iteration: check with a lock, then confirm it."""
        body = {
            "customer": rng.choice(self.ids),
            "feature": FEATURE,
            "requiredBalance": 1,
            "lock": {"enabled": True, "expiresAt": int(time.time() * 1000) + 60_000},
        }
        status, answer = client.call("POST", "/api/v1/pay/check", json.dumps(body).encode())
        if not 200 <= status < 300:
            return False, False
        lock_id = json.loads(answer).get("lockId")
        if not lock_id:
            return False, False
        finalize = json.dumps({"lockId": lock_id, "action": "confirm"}).encode()
        status, _ = client.call("POST", "/api/v1/pay/locks/finalize", finalize)
        return 200 <= status < 300, False

    def op_debit(self, client, rng):
        """One signed debit of 1 credit from the hot wallet, a new job each time (so a new
        signature: the same request twice would be a replay). allowed = debited (201)."""
        body = json.dumps({"workspaceId": self.hot_customer, "amount": 1, "jobId": f"{self.job_prefix}-{next(self.jobs)}",
                           "sourceService": "bench"}).encode()
        headers = credits_headers(self.hmac_secret, "POST", CREDITS_DEBIT_PATH, body, int(time.time()))
        status, _ = client.call("POST", CREDITS_DEBIT_PATH, body, headers)
        return status == 201, status == 201


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted list (0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = min(len(sorted_values), max(1, math.ceil(fraction * len(sorted_values)))) - 1
    return sorted_values[rank]


def run(args) -> dict:
    scenario = Scenario(args.scenario, args.customers, args.hot_customer, args.hmac_secret, args.batch_size)
    start = time.monotonic() + 0.2  # every client starts together
    measure_from = start + args.warmup
    stop_at = measure_from + args.seconds
    lock = threading.Lock()
    totals = {"latencies": [], "errors": 0, "ops": 0, "allowed": 0, "failed": 0}

    def client_loop(seed: int):
        rng = random.Random(seed)
        client = Client(args.host, args.port, args.key, args.timeout)
        latencies, errors, ops, allowed, failed = [], 0, 0, 0, 0
        while time.monotonic() < start:
            time.sleep(0.005)
        for _ in range(args.max_ops):
            began = time.monotonic()
            if began >= stop_at:
                break
            try:
                ok, was_allowed = scenario.op(client, rng)
            except (ValueError, TypeError, AttributeError):  # an answer that is not the JSON expected
                ok, was_allowed = False, False
            done = time.monotonic()
            ops += 1
            allowed += was_allowed
            failed += not ok
            if measure_from <= done <= stop_at:
                latencies.append(done - began)
                errors += not ok
        client.conn.close()
        with lock:
            totals["latencies"].extend(latencies)
            totals["errors"] += errors
            totals["ops"] += ops
            totals["allowed"] += allowed
            totals["failed"] += failed

    threads = [threading.Thread(target=client_loop, args=(i,), daemon=True) for i in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=max(0.0, stop_at - time.monotonic()) + args.timeout + 5)
    latencies = sorted(totals["latencies"])
    return {
        "scenario": args.scenario,
        "clients": args.clients,
        "seconds": args.seconds,
        "measured": len(latencies),
        "rps": len(latencies) / args.seconds,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "errors": totals["errors"],
        # Over the whole run, warm-up included: what the server was asked to do.
        "ops_total": totals["ops"],
        "failed_total": totals["failed"],
        "allowed_total": totals["allowed"],
        "unfinished_clients": sum(t.is_alive() for t in threads),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--scenario", choices=SCENARIOS, required=True)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--hot-customer", default="hot", help="the one customer of hot-send (and the wallet of debit)")
    parser.add_argument("--hmac-secret", default="", help="SVC_HMAC_SECRETS secret of the server (debit)")
    parser.add_argument("--batch-size", type=int, default=500, help="events per request of track-batch")
    parser.add_argument("--timeout", type=float, default=30.0, help="socket timeout per request, seconds")
    parser.add_argument("--max-ops", type=int, default=10_000_000, help="hard cap on operations per client")
    args = parser.parse_args()
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        parser.error("the load generator only talks to loopback addresses")
    print(json.dumps(run(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
