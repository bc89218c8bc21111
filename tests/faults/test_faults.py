"""Fault tests: the real service (gunicorn, a Celery worker and beat) on its own
PostgreSQL and Redis (tests/faults/stack.py), and one fault per test while clients
keep calling it: a web worker killed with SIGKILL, the Celery worker killed with
SIGKILL, Redis stopped, PostgreSQL restarted. Each asserts what must survive:
every acknowledged write there exactly once, nothing billed twice, the service
working again without a restart, and the ledger audit clean.

Run alone with ``pytest -m faults``; each scenario logs what it measured
(stderr, shown with ``-s``, and kept in the assertion messages).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
import warnings
from dataclasses import dataclass, field

import pytest

from tests.faults.stack import HMAC_SECRET, ROOT, WebhookReceiver, log, wait_for

SDK_SRC = ROOT / "sdk" / "python" / "src"
if str(SDK_SRC) not in sys.path:
    sys.path.insert(0, str(SDK_SRC))

from cynco_billing import CreditsClient  # noqa: E402
from cynco_billing.errors import BillingServiceUnavailableError, CyncoBillingError  # noqa: E402

pytestmark = [pytest.mark.faults, pytest.mark.xdist_group("faults")]

SERVICE = "faults"


# --- seeding through the real API ----------------------------------------------------------


def credits_workspace(stack, workspace: str, credits: int) -> None:
    """A customer on a free plan of its own that grants ``credits`` credits a month."""
    stack.api("POST", "products", {
        "name": f"Plan {workspace}", "slug": f"plan-{workspace}", "group": f"g-{workspace}", "prices": [],
        "features": [{"slug": "credits", "type": "metered", "allowance": credits, "resetInterval": "month"}]})
    stack.api("POST", "customers", {"customerId": workspace})
    stack.api("POST", "subscribe", {"customer": workspace, "product": f"plan-{workspace}"})


def credits_total(stack, workspace: str) -> int:
    client = CreditsClient(f"http://127.0.0.1:{stack.web_port}", secret=HMAC_SECRET, service_name=SERVICE)
    return client.get_balance(workspace).total


def debits_in_db(stack, workspace: str) -> list[tuple[str, int, str]]:
    """(job id, amount, entry id) of every debit of the workspace, as the database has them."""
    return stack.sql(
        "SELECT e.job_id, e.amount, e.id FROM credits_creditentry e JOIN billing_customer c ON c.id = e.customer_id "
        "WHERE c.external_id = %s AND e.kind = 'debit' ORDER BY e.job_id", (workspace,))


def assert_ledger_level(stack) -> None:
    """Every entry of the money ledger balances in every currency (what audit_ledger checks first)."""
    unbalanced = stack.sql(
        "SELECT entry_id, currency, SUM(CASE side WHEN 'debit' THEN amount ELSE -amount END) FROM ledger_line "
        "GROUP BY entry_id, currency HAVING SUM(CASE side WHEN 'debit' THEN amount ELSE -amount END) <> 0")
    assert unbalanced == [], f"unbalanced ledger entries: {unbalanced[:10]}"


def audit(stack) -> None:
    assert_ledger_level(stack)
    out = stack.audit()
    if out is not None:
        log("audit_ledger: exit 0")


# --- clients that keep calling ---------------------------------------------------------------


class ClientThreads:
    """``threads`` daemon threads running ``self._run(index)`` until ``finish()``."""

    join_timeout = 60.0

    def _start_threads(self) -> None:
        self.lock = threading.Lock()
        self.run_id = uuid.uuid4().hex[:6]
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(self.threads)]

    def start(self):
        for t in self._threads:
            t.start()
        return self

    def finish(self) -> None:
        self.stop.set()
        for t in self._threads:
            t.join(timeout=self.join_timeout)
        assert not any(t.is_alive() for t in self._threads), "a client thread is still running"


@dataclass
class DebitLoad(ClientThreads):
    """Client threads, each debiting jobs one after the other, every failed request
    retried with the same job (so the same idempotency key) until it is acknowledged."""

    stack: object
    workspace: str
    threads: int = 6
    retry_for: float = 90.0
    acked: list = field(default_factory=list)  # (job, amount, ledgerEntryId, replayed, attempts)
    failures: list = field(default_factory=list)  # (monotonic time, job, status, message)
    unexpected: list = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self):
        self.client = CreditsClient(f"http://127.0.0.1:{self.stack.web_port}", secret=HMAC_SECRET,
                                    service_name=SERVICE, timeout=15)
        self.join_timeout = self.retry_for + 30
        self._start_threads()

    def _run(self, index: int) -> None:
        n = 0
        while not self.stop.is_set():
            job, amount = f"{self.run_id}-{index}-{n}", 1 + n % 5
            n += 1
            attempts, give_up = 0, time.monotonic() + self.retry_for
            while True:
                attempts += 1
                try:
                    result = self.client.debit_credits(self.workspace, amount, job, source_service=SERVICE)
                except BillingServiceUnavailableError as exc:  # no answer, or a 5xx: retry the same job
                    with self.lock:
                        self.failures.append((time.monotonic(), job, exc.status, str(exc)[:200]))
                    if time.monotonic() > give_up:
                        with self.lock:
                            self.unexpected.append((job, f"gave up after {attempts} attempts: {exc!r}"))
                        return
                    time.sleep(0.05)
                    continue
                except Exception as exc:  # a refusal, or an error the SDK should have wrapped: never die unseen
                    with self.lock:
                        self.unexpected.append((job, repr(exc)))
                    return
                with self.lock:
                    self.acked.append((job, amount, result.ledger_entry_id, result.replayed, attempts))
                break

    def count(self) -> int:
        with self.lock:
            return len(self.acked)


def assert_debits_exactly_once(stack, load: DebitLoad, initial: int) -> dict:
    """Every acknowledged debit is in the database once, with the entry id the client was
    given; nothing else is there; the balance is the initial one less their sum."""
    assert load.unexpected == [], f"unexpected answers: {load.unexpected[:5]}"
    acked = {}
    for job, amount, entry_id, _replayed, _attempts in load.acked:
        assert job not in acked, f"job {job} acknowledged twice by the client"
        acked[job] = (amount, entry_id)
    rows = debits_in_db(stack, load.workspace)
    in_db = {}
    for job, amount, entry_id in rows:
        assert job not in in_db, f"job {job} debited twice"
        in_db[job] = (amount, entry_id)
    assert in_db == acked, (f"database and acknowledgements differ: only in db {sorted(set(in_db) - set(acked))[:5]}, "
                            f"only acknowledged {sorted(set(acked) - set(in_db))[:5]}")
    spent = sum(amount for amount, _ in acked.values())
    assert credits_total(stack, load.workspace) == initial - spent
    return {"acked": len(acked), "spent": spent, "failedRequests": len(load.failures),
            "retriedJobs": len({f[1] for f in load.failures}),
            "replayedAcks": sum(1 for a in load.acked if a[3])}


# --- 1. a web worker killed in the middle of a stream of debits ------------------------------


def test_debits_survive_a_web_worker_killed_mid_stream(stack):
    initial = 1_000_000
    credits_workspace(stack, "ws-kill", initial)
    load = DebitLoad(stack, "ws-kill").start()
    kills = []
    try:
        for _ in range(2):  # each of the two workers, one after the other
            seen = load.count()
            wait_for(lambda: load.count() >= seen + 60, 60, "60 more acknowledged debits", stack.web)
            workers = stack.web_workers()
            assert len(workers) == 2, workers
            victim = workers[0]
            killed_at = time.monotonic()
            os.kill(victim, signal.SIGKILL)
            replaced = wait_for(lambda: (len(w := stack.web_workers()) == 2 and victim not in w) and w, 30,
                                "gunicorn to replace the killed worker", stack.web, interval=0.02)
            kills.append({"victim": victim, "respawnSeconds": round(time.monotonic() - killed_at, 2),
                          "replacement": [p for p in replaced if p not in workers]})
        seen = load.count()
        wait_for(lambda: load.count() >= seen + 60, 60, "60 more acknowledged debits after the kills", stack.web)
    finally:
        load.finish()
    measured = assert_debits_exactly_once(stack, load, initial)
    log(f"scenario 1 (web worker SIGKILL): {measured}, kills {kills}")
    audit(stack)


# --- 2. the Celery worker killed in the middle of renewals -----------------------------------


def paid_subscribers(stack, prefix: str, count: int, amount: int = 1000) -> list[str]:
    """``count`` customers with the test card, each subscribed to a paid monthly plan; their subscription ids."""
    stack.api("POST", "products", {"name": f"Pro {prefix}", "slug": f"pro-{prefix}", "group": f"g-{prefix}",
                                   "prices": [{"type": "recurring", "amount": amount, "billingInterval": "month"}],
                                   "features": [{"slug": "seats-calls", "type": "metered", "allowance": 100}]})
    subs = []
    for i in range(count):
        customer = f"{prefix}-{i}"
        stack.api("POST", "customers", {"customerId": customer})
        stack.api("POST", f"customers/{customer}/payment-methods", {"paymentMethod": "pm_card_visa"})
        answer = stack.api("POST", "subscribe", {"customer": customer, "product": f"pro-{prefix}"})
        assert answer["subscription"]["status"] == "active", answer
        subs.append(answer["subscription"]["id"])
    return subs


def end_periods(stack, subs: list[str], days_ago: int) -> None:
    """Move the subscriptions' current period back so that it ended ``days_ago`` days ago."""
    stack.sql("UPDATE billing_subscription SET current_period_start = now() - make_interval(days => %s + 31), "
              "current_period_end = now() - make_interval(days => %s) WHERE id = ANY(%s)", (days_ago, days_ago, subs))


def renewal_invoices(stack, subs: list[str]) -> list[tuple]:
    """(subscription, billing key, status, total) of every renewal invoice of these subscriptions."""
    return stack.sql("SELECT subscription_id, billing_key, status, total FROM billing_invoice "
                     "WHERE reason = 'renewal' AND subscription_id = ANY(%s) ORDER BY subscription_id, billing_key", (subs,))


def renewals_done(stack, subs: list[str], per_sub: int) -> bool:
    due = stack.scalar("SELECT count(*) FROM billing_subscription WHERE id = ANY(%s) AND current_period_end <= now()", (subs,))
    paid = stack.scalar("SELECT count(*) FROM billing_invoice WHERE reason = 'renewal' AND status = 'paid' "
                        "AND subscription_id = ANY(%s)", (subs,))
    return due == 0 and paid == per_sub * len(subs)


def assert_renewed_exactly_once(stack, subs: list[str], per_sub: int, amount: int) -> None:
    rows = renewal_invoices(stack, subs)
    keys = [r[1] for r in rows]
    assert len(keys) == len(set(keys)), "a billing key twice"
    by_sub: dict[str, list] = {}
    for sub, key, status, total in rows:
        by_sub.setdefault(sub, []).append((key, status, total))
    stuck = {s: v for s, v in by_sub.items() if len(v) != per_sub or any(st != "paid" or t != amount for _, st, t in v)}
    assert not stuck and len(by_sub) == len(subs), f"subscriptions not renewed exactly {per_sub}x and paid: {list(stuck.items())[:5]}"
    payments = stack.sql("SELECT i.id, count(p.id) FROM billing_invoice i JOIN billing_payment p ON p.invoice_id = i.id "
                         "AND p.status = 'succeeded' WHERE i.reason = 'renewal' AND i.subscription_id = ANY(%s) "
                         "GROUP BY i.id HAVING count(p.id) <> 1", (subs,))
    assert payments == [], f"renewal invoices charged other than once: {payments[:5]}"


def renewed_events(stack, subs: list[str]) -> set[str]:
    """Ids of the subscription.renewed events of these subscriptions."""
    return {r[0] for r in stack.sql("SELECT id FROM billing_outboxevent WHERE type = 'subscription.renewed' "
                                    "AND data->>'subscriptionId' = ANY(%s)", (subs,))}


def test_renewals_and_webhooks_survive_the_celery_worker_killed_mid_cycle(stack):
    stack.supervise()  # a worker left dead by an earlier scenario must not fail this one
    count, amount, per_sub = 40, 1000, 2  # each period ended 40 days ago: two periods to bill, one late
    subs = paid_subscribers(stack, "ren", count, amount)
    receiver = WebhookReceiver()
    endpoint = stack.api("POST", "webhooks", {"url": receiver.url, "events": ["subscription.renewed"]})
    try:
        wait_for(lambda: stack.worker.alive() and stack.beat.alive(), 5, "the worker and beat")
        started = time.monotonic()
        end_periods(stack, subs, days_ago=40)
        # Beat asks for a cycle and a webhook sweep every second. Kill the worker (the whole
        # group, SIGKILL) once the first renewal is billed, restart it, and kill it again
        # once webhooks are being delivered.
        kills = []
        for what, ready in (("renewals", lambda: len(renewal_invoices(stack, subs))),
                            ("deliveries", lambda: receiver.count() >= 3)):
            wait_for(ready, 60, f"{what} under way", stack.worker, interval=0.02)
            stack.worker.kill9()
            killed_at = time.monotonic()
            kills.append({"during": what, "billed": len(renewal_invoices(stack, subs)),
                          "open": stack.scalar("SELECT count(*) FROM billing_invoice WHERE reason = 'renewal' "
                                               "AND status = 'open' AND subscription_id = ANY(%s)", (subs,)),
                          "delivered": len(receiver.delivered())})
            time.sleep(2)  # beat keeps queueing cycles and sweeps meanwhile
            stack.worker_start()
        try:
            wait_for(lambda: renewals_done(stack, subs, per_sub), 90, "every renewal billed and paid", stack.worker,
                     interval=0.25)
        except AssertionError:
            rows = renewal_invoices(stack, subs)
            raise AssertionError(f"renewals incomplete after the worker restart: {len(rows)} invoices, "
                                 f"not paid: {[r for r in rows if r[2] != 'paid'][:10]}\n{stack.worker.tail()}") from None
        renewed_after = time.monotonic() - killed_at
        assert_renewed_exactly_once(stack, subs, per_sub, amount)
        events = renewed_events(stack, subs)
        assert len(events) == count * per_sub  # one subscription.renewed per billed period
        wait_for(lambda: events <= receiver.delivered(), 90, "every subscription.renewed delivered", stack.worker,
                 interval=0.25)
        delivered_after = time.monotonic() - killed_at
    finally:
        receiver.close()
        stack.http("DELETE", f"/api/v1/pay/webhooks/{endpoint['id']}")
    posts = [p for p in receiver.posts if p[0] in events]
    ok = [p[0] for p in posts if p[2] == 200]
    stuck = stack.sql("SELECT d.id, d.status, d.attempts FROM billing_webhookdelivery d WHERE d.event_id = ANY(%s) "
                      "AND d.status <> 'succeeded'", (list(events),))
    assert stuck == [], f"deliveries not marked succeeded: {stuck[:5]}"
    log(f"scenario 2 (celery worker SIGKILL mid-renewals and deliveries): {count} subscriptions x {per_sub} periods; "
        f"kills {kills}; all {count * per_sub} paid exactly once {renewed_after:.1f} s after the last kill; "
        f"all {len(events)} events delivered {delivered_after:.1f} s after it: {len(posts)} POSTs, {len(posts) - len(ok)} answered 500 on purpose, "
        f"{len(ok) - len(set(ok))} duplicate successful deliveries (at-least-once); "
        f"{time.monotonic() - started:.1f} s in all")
    audit(stack)


# --- 3. Redis stopped under load ---------------------------------------------------------------


@dataclass
class MerchantLoad(ClientThreads):
    """Client threads calling check (with sendEvent) and track on the merchant API,
    each track once per idempotency key; every answer is kept with its time."""

    stack: object
    customer: str
    feature: str
    threads: int = 3
    answers: list = field(default_factory=list)  # (answered at, route, status, units deducted or tracked, sent at)
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self):
        self._start_threads()

    def _run(self, index: int) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            sent = time.monotonic()
            if n % 2:
                status, data = self.stack.http("POST", "/api/v1/pay/check", {
                    "customer": self.customer, "feature": self.feature, "requiredBalance": 1, "sendEvent": True})
                units = 1 if status == 200 and data.get("allowed") else 0
                route = "check"
            else:
                status, data = self.stack.http("POST", "/api/v1/pay/track", {
                    "customer": self.customer, "feature": self.feature, "amount": 2,
                    "idempotencyKey": f"{self.run_id}-{index}-{n}"})
                units = 2 if status == 200 else 0
                route = "track"
            with self.lock:
                self.answers.append((time.monotonic(), route, status, units, sent))

    def count(self) -> int:
        with self.lock:
            return len(self.answers)

    def failures_between(self, start: float, end: float) -> list:
        return [a for a in self.answers if start <= a[0] <= end and a[2] != 200]


def merchant_customer(stack, customer: str, feature: str, allowance: int) -> None:
    stack.api("POST", "products", {
        "name": f"Plan {customer}", "slug": f"plan-{customer}", "group": f"g-{customer}", "prices": [],
        "features": [{"slug": feature, "type": "metered", "allowance": allowance, "resetInterval": "month"}]})
    stack.api("POST", "customers", {"customerId": customer})
    stack.api("POST", "subscribe", {"customer": customer, "product": f"plan-{customer}"})


def usage_of(stack, customer: str, feature: str) -> int:
    return stack.api("GET", f"customers/{customer}")["balances"][feature]["usage"]


def test_check_track_and_debits_keep_working_while_redis_is_down(stack):
    stack.supervise()  # a worker left dead by an earlier scenario must not fail this one
    initial = 1_000_000
    credits_workspace(stack, "ws-redis", initial)
    merchant_customer(stack, "redis-cust", "redis-calls", 1_000_000)
    subs = paid_subscribers(stack, "rdq", 5)
    receiver = WebhookReceiver(delay=0)
    endpoint = stack.api("POST", "webhooks", {"url": receiver.url, "events": ["customer.created"]})
    debits = DebitLoad(stack, "ws-redis", threads=3).start()
    merchant = MerchantLoad(stack, "redis-cust", "redis-calls").start()
    try:
        wait_for(lambda: debits.count() >= 30 and merchant.count() >= 30, 60, "traffic before the outage", stack.web)
        down_at = time.monotonic()
        stack.redis_stop()
        # Renewals fall due while the broker is away: they must be billed once it is back.
        end_periods(stack, subs, days_ago=1)
        # New customers: their customer.created webhooks are enqueued after commit, with no broker.
        def create(i):
            sent = time.monotonic()
            return (*stack.http("POST", "/api/v1/pay/customers", {"customerId": f"rdc-{i}"}, timeout=30),
                    time.monotonic() - sent)

        with ThreadPoolExecutor(5) as pool:
            created = list(pool.map(create, range(5)))
        acked_before, answered_before = debits.count(), merchant.count()
        wait_for(lambda: debits.count() >= acked_before + 60 and merchant.count() >= answered_before + 60, 60,
                 "traffic during the outage", stack.web)
        ready_down = stack.http("GET", "/readyz")[0]
        time.sleep(1)
        up_at = time.monotonic()
        stack.redis_start()
        during = (debits.count() - acked_before, merchant.count() - answered_before)
        # Celery reconnects by itself; once (under heavy load, not reproduced since) the worker
        # exited instead, in an ack on the lost connection: it is restarted as a supervisor
        # would, and reported.
        restarted = []
        wait_for(lambda: restarted.extend(stack.supervise()) or renewals_done(stack, subs, 1), 90,
                 "the renewals due during the outage", interval=0.25)
        resumed = time.monotonic() - up_at
        ready_up = wait_for(lambda: stack.http("GET", "/readyz")[0] == 200, 30, "/readyz after the outage")
        events = {r[0] for r in stack.sql("SELECT id FROM billing_outboxevent WHERE type = 'customer.created' "
                                          "AND data->>'customerId' LIKE 'rdc-%%'")}
        wait_for(lambda: restarted.extend(stack.supervise()) or events <= receiver.delivered(), 90,
                 "the customer.created webhooks of the outage", interval=0.25)
        delivered_after = time.monotonic() - up_at
    finally:
        debits.finish()
        merchant.finish()
        receiver.close()
        stack.http("DELETE", f"/api/v1/pay/webhooks/{endpoint['id']}")
    if restarted:
        warnings.warn(f"fault tests: the Celery worker or beat exited during the Redis outage: {restarted}")
    assert [c[0] for c in created] == [201] * 5, f"creating customers while Redis was down: {created}"
    assert len(events) == 5
    outage = (down_at, up_at)
    failed = merchant.failures_between(*outage)
    debit_failures = [f for f in debits.failures if down_at <= f[0] <= up_at]
    log(f"scenario 3 (redis down {up_at - down_at:.1f} s): during it {during[0]} debits acknowledged, "
        f"{during[1]} check/track answered, {len(debit_failures)} debit and {len(failed)} check/track failures; "
        f"/readyz {ready_down} while down, 200 again; renewals due meanwhile done {resumed:.1f} s after Redis came back; "
        f"celery restarted: {restarted or 'no'}; 5 customers created during it (201, in up to "
        f"{max(c[2] for c in created):.1f} s: the after-commit enqueue waits on the broker), their customer.created "
        f"webhooks delivered {delivered_after:.1f} s after Redis came back")
    assert debit_failures == [], f"credits debits failed while Redis was down: {debit_failures[:5]}"
    assert failed == [], f"check/track failed while Redis was down: {failed[:5]}"
    assert ready_down == 503 and ready_up
    measured = assert_debits_exactly_once(stack, debits, initial)
    tracked = sum(a[3] for a in merchant.answers)
    assert usage_of(stack, "redis-cust", "redis-calls") == tracked
    assert_renewed_exactly_once(stack, subs, 1, 1000)
    log(f"scenario 3: {measured}, usage {tracked} units = what was acknowledged")
    audit(stack)


# --- 4. PostgreSQL restarted under load ------------------------------------------------------


def test_the_service_recovers_from_a_postgres_restart_without_being_restarted(stack):
    stack.supervise()  # a worker left dead by an earlier scenario must not fail this one
    initial = 1_000_000
    credits_workspace(stack, "ws-pg", initial)
    merchant_customer(stack, "pg-cust", "pg-calls", 1_000_000)
    subs = paid_subscribers(stack, "pgr", 3)
    web_workers = stack.web_workers()
    debits = DebitLoad(stack, "ws-pg", threads=3).start()
    merchant = MerchantLoad(stack, "pg-cust", "pg-calls").start()
    try:
        wait_for(lambda: debits.count() >= 30 and merchant.count() >= 30, 60, "traffic before the restart", stack.web)
        down_at = time.monotonic()
        stack.pg_restart()  # -m fast: every connection is cut
        up_at = time.monotonic()
        answered = merchant.count()
        first_ok = wait_for(lambda: next((a[0] for a in merchant.answers[answered:] if a[2] == 200 and a[4] >= up_at), None),
                            60, "a check/track answered after the restart", stack.web, interval=0.02)
        acked = debits.count()
        wait_for(lambda: debits.count() >= acked + 60 and merchant.count() >= answered + 60, 60,
                 "traffic after the restart", stack.web)
        # The worker and beat reconnect too: a renewal that falls due now is billed.
        end_periods(stack, subs, days_ago=1)
        wait_for(lambda: renewals_done(stack, subs, 1), 90, "a renewal after the restart", stack.worker, interval=0.25)
        renewed_after = time.monotonic() - up_at
    finally:
        debits.finish()
        merchant.finish()
    assert stack.web_workers() == web_workers, "gunicorn's workers were replaced"
    during = [a for a in merchant.answers if a[2] != 200]
    late = [a for a in during if a[4] >= up_at]  # sent once PostgreSQL was back
    debit_failures = [f for f in debits.failures]
    log(f"scenario 4 (postgres restart -m fast, {up_at - down_at:.1f} s): {len(during)} check/track and "
        f"{len(debit_failures)} debit requests failed (statuses {sorted({a[2] for a in during})}), "
        f"first success {first_ok - up_at:.2f} s after PostgreSQL was back, none failed after; "
        f"renewal billed {renewed_after:.1f} s after the restart")
    assert late == [], f"requests sent after PostgreSQL was back failed: {late[:5]}"
    assert all(down_at <= f[0] <= up_at + 5 for f in debit_failures), f"debits failed after the restart: {debit_failures[:5]}"
    measured = assert_debits_exactly_once(stack, debits, initial)
    acknowledged = sum(a[3] for a in merchant.answers)
    # A request cut while committing may have committed without an answer: never less than acknowledged.
    unanswered = sum(1 if a[1] == "check" else 2 for a in during)
    usage = usage_of(stack, "pg-cust", "pg-calls")
    assert acknowledged <= usage <= acknowledged + unanswered, (usage, acknowledged, unanswered)
    assert_renewed_exactly_once(stack, subs, 1, 1000)
    log(f"scenario 4: {measured}, usage {usage} units, acknowledged {acknowledged}")
    audit(stack)
