"""Model-based test of the entitlement engine: random sequences of track, check
(with and without sendEvent), lock, finalize, grant, top-up, and clock advances
(grant expiry, lock expiry, allowance reset), run against the real service and
compared, after every step, with a plain in-memory model of the documented rules.

How the service is driven
    Everything that has a route goes through the HTTP API (DRF ``APIClient``
    with a secret key): ``POST products``, ``customers``, ``subscribe`` (the free
    plan, and a free one-off top-up product), ``check``, ``track``,
    ``locks/finalize``, ``balances`` and ``GET customers/{id}``. Only the
    scheduled work has no route, so ``advance_time`` calls
    ``billing.services.cycle.billing_cycle_run(now=…)`` directly.

The clock (the choice this test makes)
    The HTTP routes run on the real clock; the model has a clock of its own,
    ``S + hours`` where ``S`` is the subscription's ``current_period_start``
    (the real moment the plan was attached, read from the ORM) and ``hours`` a
    whole number that only ``advance_time`` moves, which then runs the billing
    cycle at exactly that moment. Every expiry this test sends (grant
    ``expiresAt``, lock ``lock.expiresAt``) is ``S + (hours + d) h`` with d ≥ 1,
    as an ISO string or as epoch milliseconds, so it is in the future for the
    real clock (the examples last seconds), the model knows it exactly, and it
    can tie with the plan's reset time (``S + k days``) on purpose. Because the
    HTTP side never reaches any of these moments on its own, things only expire
    in ``billing_cycle_run``; a finalize after that is the 409 of an expired lock.
    The lock route refuses an expiry more than 7 days after the real now, so the
    model clock stops at 5 days and lock durations are under 2 days. A lock
    without ``expiresAt`` gets the service default (300 s of real time): the
    first advance (≥ 1 h) expires it.

Isolation
    A state machine runs many examples inside one pytest test (one database
    transaction, since the services open durable transactions of their own and
    cannot sit in a savepoint of ours). Each example therefore makes its own
    feature, plan, top-up product and customer, named with a counter, and only
    looks at its own rows. ``billing_cycle_run`` also touches earlier examples'
    rows; nothing here reads them.

The model (the documented rules)
    Buckets: plan allowance (resets daily), grants (may expire), top-ups.
    granted = Σ active granted; remaining = granted − usage − reserved. Usage
    fills buckets greedily in deduction order (soonest reset/expiry first, none
    last, top-ups last, ties by creation); units beyond every bucket are
    overage, so overage = max(0, usage − granted) (a new bucket takes in
    existing overage, in deduction order). A negative track gives back
    min(|n|, usage): overage first, then buckets in reverse deduction order.
    check+sendEvent deducts n iff remaining ≥ n; lock reserves n iff
    remaining ≥ n; confirm adds the override value (default n) in full, even
    past the balance; release only frees the reservation; a second finalize, or
    one after expiry, is 409. The cycle at ``now`` expires open locks with
    expires_at ≤ now, deactivates grants with expires_at ≤ now (usage −= their
    consumed), and resets the plan bucket whose reset time ≤ now (usage −=
    consumed + overage, overage → 0, next reset → end of the day-period from
    ``S`` holding now).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone as dt_timezone

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

from billing.models import Balance, BalanceBucket, BalanceLock, Subscription
from billing.services.cycle import billing_cycle_run

API = "/api/v1/pay"
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
EPOCH = datetime(1970, 1, 1, tzinfo=dt_timezone.utc)

PLAN_ALLOWANCE = 50
TOPUP_ALLOWANCE = 10
MAX_CLOCK_HOURS = 5 * 24  # lock expiries must stay within 7 days of the real now
MAX_LOCK_HOURS = 47

_example_ids = itertools.count(1)

amounts = st.integers(min_value=1, max_value=40)
# an expiry d hours after the model clock, sent as ISO or as epoch milliseconds
expiry_hours = st.integers(min_value=1, max_value=MAX_LOCK_HOURS) | st.sampled_from([24, 48])
wire_forms = st.sampled_from(["iso", "epoch_ms"])


# --- the model -----------------------------------------------------------------


@dataclass
class MBucket:
    seq: int
    kind: str  # plan | grant | topup
    granted: int
    consumed: int = 0
    next_reset_at: datetime | None = None
    expires_at: datetime | None = None
    active: bool = True

    def order_key(self):
        due = self.next_reset_at or self.expires_at
        return (self.kind == "topup", due is None, due or EPOCH, self.seq)


@dataclass
class MLock:
    amount: int
    expires_at: datetime | None  # None: the service default (300 s of real time)
    service_id: str
    status: str = "open"


@dataclass
class Model:
    anchor: datetime  # S: the plan's first period start
    buckets: list[MBucket] = field(default_factory=list)
    usage: int = 0
    reserved: int = 0
    overage: int = 0
    locks: list[MLock] = field(default_factory=list)

    @property
    def granted(self) -> int:
        return sum(b.granted for b in self.buckets if b.active)

    @property
    def remaining(self) -> int:
        return self.granted - self.usage - self.reserved

    def ordered(self) -> list[MBucket]:
        return sorted((b for b in self.buckets if b.active), key=MBucket.order_key)

    def _fill(self, n: int) -> int:
        """Put n units into buckets in deduction order; return what did not fit."""
        for bucket in self.ordered():
            take = min(n, bucket.granted - bucket.consumed)
            bucket.consumed += take
            n -= take
        return n

    def use(self, n: int) -> None:
        self.usage += n
        self.overage += self._fill(n)

    def give_back(self, n: int) -> int:
        back = min(n, self.usage)
        self.usage -= back
        from_overage = min(back, self.overage)
        self.overage -= from_overage
        left = back - from_overage
        for bucket in reversed(self.ordered()):
            give = min(left, bucket.consumed)
            bucket.consumed -= give
            left -= give
        assert left == 0, "model bug: give-back ran out of usage"
        return back

    def add_bucket(self, **kwargs) -> None:
        self.buckets.append(MBucket(seq=len(self.buckets), **kwargs))
        room = sum(b.granted - b.consumed for b in self.buckets if b.active)
        absorbed = min(self.overage, room)
        self.overage -= absorbed
        assert self._fill(absorbed) == 0

    def cycle(self, now: datetime) -> None:
        for lock in self.locks:
            if lock.status == "open" and (lock.expires_at is None or lock.expires_at <= now):
                lock.status = "expired"
                self.reserved -= lock.amount
        for bucket in self.buckets:
            if bucket.active and bucket.expires_at is not None and bucket.expires_at <= now:
                bucket.active = False
                self.usage -= bucket.consumed
        due = [b for b in self.buckets if b.active and b.next_reset_at is not None and b.next_reset_at <= now]
        if due:
            self.usage -= sum(b.consumed for b in due) + self.overage
            self.overage = 0
            for bucket in due:
                bucket.consumed = 0
                bucket.next_reset_at = self.anchor + ((now - self.anchor) // DAY + 1) * DAY

    def next_reset_at(self) -> datetime | None:
        resets = [b.next_reset_at for b in self.buckets if b.active and b.next_reset_at is not None]
        return min(resets) if resets else None


# --- the machine ---------------------------------------------------------------


def wire_time(moment: datetime, form: str):
    """``moment`` as sent, and the exact instant the service should read back."""
    if form == "iso":
        return moment.isoformat(), moment
    ms = (moment - EPOCH) // timedelta(milliseconds=1)
    return ms, EPOCH + timedelta(milliseconds=ms)


class EntitlementsModel(RuleBasedStateMachine):
    client = None  # an APIClient with a secret key, set by the test below

    locks = Bundle("locks")

    def __init__(self):
        super().__init__()
        self.model: Model | None = None
        self.hours = 0
        self._seen = None

    # --- helpers

    def post(self, route: str, body: dict, expect: int | tuple = 200):
        response = self.client.post(f"{API}/{route}", body, format="json")
        expected = expect if isinstance(expect, tuple) else (expect,)
        assert response.status_code in expected, (route, body, response.status_code, response.content)
        return response

    @property
    def now(self) -> datetime:
        return self.model.anchor + self.hours * HOUR

    def changed(self) -> None:
        self._seen = None

    def seen(self) -> dict:
        """What the service shows now: the wire balance and the ORM rows (read once per step)."""
        if self._seen is None:
            response = self.client.get(f"{API}/customers/{self.customer}")
            assert response.status_code == 200, response.content
            balance = Balance.objects.get(
                customer__external_id=self.customer, feature__slug=self.feature, entity__isnull=True
            )
            self._seen = {
                "wire": response.json()["balances"].get(self.feature),
                "row": balance,
                "buckets": list(BalanceBucket.objects.filter(balance=balance).order_by("id")),
                "locks": {lock.pk: lock for lock in BalanceLock.objects.filter(balance=balance)},
            }
        return self._seen

    def assert_answer(self, body: dict, what: str) -> None:
        m = self.model
        assert (body["balance"], body["usage"]) == (m.remaining, m.usage), (
            f"{what}: service says remaining={body['balance']} usage={body['usage']}, "
            f"model says remaining={m.remaining} usage={m.usage}"
        )

    # --- setup

    @initialize()
    def setup(self):
        n = next(_example_ids)
        self.customer, self.feature = f"model-c{n}", f"model-tokens-{n}"
        self.plan, self.topup = f"model-plan-{n}", f"model-topup-{n}"
        self.post("products", {"name": "Plan", "slug": self.plan, "features": [
            {"slug": self.feature, "type": "metered", "allowance": PLAN_ALLOWANCE, "resetInterval": "day"}]}, 201)
        self.post("products", {"name": "Top-up", "slug": self.topup, "prices": [{"type": "one_off", "amount": 0}],
                               "features": [{"slug": self.feature, "type": "metered", "allowance": TOPUP_ALLOWANCE}]},
                  201)
        self.post("customers", {"customerId": self.customer}, (200, 201))
        self.post("subscribe", {"customer": self.customer, "product": self.plan})
        subscription = Subscription.objects.get(customer__external_id=self.customer, product__slug=self.plan)
        anchor = subscription.current_period_start
        self.model = Model(anchor=anchor)
        self.model.add_bucket(kind="plan", granted=PLAN_ALLOWANCE, next_reset_at=anchor + DAY)
        self.changed()

    # --- rules

    @rule(amount=st.integers(min_value=1, max_value=100) | st.integers(min_value=-40, max_value=-1))
    def track(self, amount):
        body = self.post("track", {"customer": self.customer, "feature": self.feature, "amount": amount}).json()
        if amount > 0:
            self.model.use(amount)
        else:
            self.model.give_back(-amount)
        self.changed()
        self.assert_answer(body, f"track {amount}")

    @rule(required=amounts, send_event=st.booleans())
    def check(self, required, send_event):
        body = self.post("check", {"customer": self.customer, "feature": self.feature,
                                   "requiredBalance": required, "sendEvent": send_event}).json()
        allowed = self.model.remaining >= required
        assert (body["allowed"], body["code"]) == (allowed, "ok" if allowed else "insufficient_balance"), (
            f"check {required} (sendEvent={send_event}) with model remaining {self.model.remaining}: {body}")
        if allowed and send_event:
            self.model.use(required)
        self.changed()
        self.assert_answer(body, f"check {required} sendEvent={send_event}")
        assert body["granted"] == self.model.granted

    @rule(target=locks, required=amounts, hours=expiry_hours | st.none(), form=wire_forms)
    def lock(self, required, hours, form):
        lock = {"enabled": True}
        expires_at = None
        if hours is not None:
            lock["expiresAt"], expires_at = wire_time(self.now + hours * HOUR, form)
        body = self.post("check", {"customer": self.customer, "feature": self.feature,
                                   "requiredBalance": required, "lock": lock}).json()
        allowed = self.model.remaining >= required
        assert body["allowed"] == allowed, f"lock {required} with model remaining {self.model.remaining}: {body}"
        self.changed()
        if not allowed:
            assert body["code"] == "insufficient_balance" and "lockId" not in body, body
            self.assert_answer(body, f"refused lock {required}")
            return multiple()
        self.model.reserved += required
        self.model.locks.append(MLock(amount=required, expires_at=expires_at, service_id=body["lockId"]))
        self.assert_answer(body, f"lock {required}")
        return len(self.model.locks) - 1

    @rule(index=locks, action=st.sampled_from(["confirm", "release"]), override=st.none() | st.integers(0, 60))
    def finalize(self, index, action, override):
        lock = self.model.locks[index]
        body = {"lockId": lock.service_id, "action": action}
        if action == "confirm" and override is not None:
            body["overrideValue"] = override
        if lock.status != "open":
            response = self.post("locks/finalize", body, 409)
            assert response.json()["error"]["code"] == "CONFLICT"
            self.changed()
            return
        answer = self.post("locks/finalize", body).json()
        self.model.reserved -= lock.amount
        if action == "confirm":
            value = lock.amount if override is None else override
            self.model.use(value)
            lock.status, consumed, released = "consumed", value, max(0, lock.amount - value)
        else:
            lock.status, consumed, released = "released", 0, lock.amount
        self.changed()
        assert (answer["status"], answer["consumed"], answer["released"]) == (lock.status, consumed, released), answer
        assert answer["balance"] == self.model.remaining, (
            f"finalize {action}: service remaining {answer['balance']}, model {self.model.remaining}")

    @rule(granted=amounts, hours=st.none() | expiry_hours, form=wire_forms)
    def grant(self, granted, hours, form):
        body = {"customer": self.customer, "feature": self.feature, "grantedBalance": granted}
        expires_at = None
        if hours is not None:
            body["expiresAt"], expires_at = wire_time(self.now + hours * HOUR, form)
        answer = self.post("balances", body, 201).json()
        self.model.add_bucket(kind="grant", granted=granted, expires_at=expires_at)
        self.changed()
        assert (answer["granted"], answer["usage"], answer["reserved"], answer["remaining"]) == (
            self.model.granted, self.model.usage, self.model.reserved, self.model.remaining), answer

    @rule(quantity=st.integers(min_value=1, max_value=3))
    def buy_topup(self, quantity):
        self.post("subscribe", {"customer": self.customer, "product": self.topup, "quantity": quantity})
        self.model.add_bucket(kind="topup", granted=TOPUP_ALLOWANCE * quantity)
        self.changed()

    @precondition(lambda self: self.hours < MAX_CLOCK_HOURS)
    @rule(hours=st.integers(min_value=1, max_value=30) | st.just(24))
    def advance_time(self, hours):
        self.hours = min(MAX_CLOCK_HOURS, self.hours + hours)
        billing_cycle_run(now=self.now)
        self.model.cycle(self.now)
        self.changed()

    # --- invariants: model == service, and the bookkeeping rules

    @invariant()
    def wire_balance_matches(self):
        if self.model is None:
            return
        m, wire = self.model, self.seen()["wire"]
        assert wire is not None, "the feature vanished from GET customers/{id}"
        got = {key: wire[key] for key in ("granted", "usage", "remaining", "unlimited")}
        got["nextResetAt"] = wire["nextResetAt"] and datetime.fromisoformat(wire["nextResetAt"])
        want = {"granted": m.granted, "usage": m.usage, "remaining": m.remaining, "unlimited": False,
                "nextResetAt": m.next_reset_at()}
        assert got == want, f"GET customers/{{id}} balance\n service: {got}\n model:   {want}"

    @invariant()
    def row_matches(self):
        if self.model is None:
            return
        m, row = self.model, self.seen()["row"]
        got = (row.granted, row.usage, row.reserved, row.overage, row.remaining)
        want = (m.granted, m.usage, m.reserved, m.overage, m.remaining)
        assert got == want, (
            f"balance row (granted, usage, reserved, overage, remaining)\n service: {got}\n model:   {want}"
        )

    @invariant()
    def buckets_match(self):
        if self.model is None:
            return
        got = [(b.kind, b.granted, b.consumed, b.active, b.next_reset_at, b.expires_at) for b in self.seen()["buckets"]]
        want = [(b.kind, b.granted, b.consumed, b.active, b.next_reset_at, b.expires_at) for b in self.model.buckets]
        assert got == want, (
            f"buckets (kind, granted, consumed, active, next_reset_at, expires_at)\n service: {got}\n model:   {want}"
        )

    @invariant()
    def locks_match(self):
        if self.model is None:
            return
        rows = self.seen()["locks"]
        got = [(rows[lk.service_id].status, rows[lk.service_id].amount) for lk in self.model.locks]
        want = [(lk.status, lk.amount) for lk in self.model.locks]
        assert got == want and len(rows) == len(self.model.locks), f"locks service {got}, model {want}"
        for lk in self.model.locks:
            if lk.expires_at is not None:
                assert rows[lk.service_id].expires_at == lk.expires_at

    @invariant()
    def bookkeeping_rules_hold(self):
        if self.model is None:
            return
        seen = self.seen()
        row, buckets, locks = seen["row"], seen["buckets"], seen["locks"].values()
        active = [b for b in buckets if b.active]
        assert row.usage >= 0
        assert row.reserved == sum(lock.amount for lock in locks if lock.status == "open")
        assert sum(b.consumed for b in active) + row.overage == row.usage
        assert row.overage == max(0, row.usage - row.granted)
        assert row.granted == sum(b.granted for b in active)
        assert all(0 <= b.consumed <= b.granted for b in buckets)


MODEL_SETTINGS = settings(
    max_examples=60,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)


@pytest.mark.django_db
def test_the_entitlement_engine_follows_the_model(sk_client):
    EntitlementsModel.client = sk_client
    try:
        run_state_machine_as_test(EntitlementsModel, settings=MODEL_SETTINGS)
    finally:
        EntitlementsModel.client = None
