"""Hostile values where money and usage enter: amounts of every wrong kind, odd Unicode
ids, duplicate JSON keys, huge bodies and timestamps far in the past or future, on both
APIs. Whatever comes in: never a 5xx, a refusal names the field, and a refused request
changes no row."""

import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.billing.billing_helpers import make_product, subscribe
from tests.credits.credits_helpers import SignedClient, make_wallet, new_secret
from tests.db_snapshot import row_counts

pytestmark = pytest.mark.django_db

API = "/api/v1/pay"
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# Written into the body as raw JSON text, so NaN, 1e400 and 2^63 reach the parser as sent.
HOSTILE_AMOUNTS = st.one_of(
    st.sampled_from([
        "0", "-1", "-0", "0.5", "1.5", "1.0", "1e3", "1e400", "-1e400", "NaN", "Infinity", "-Infinity",
        str(2**63), str(2**63 - 1), str(-(2**63)), str(2**64), str(10**30), "true", "false", "null",
        '"1"', '"one"', '""', '" 5"', "[]", "[1]", "{}", '{"amount": 1}', '"\\u0000"', '"١٢"',
    ]),
    st.integers(min_value=-(2**80), max_value=2**80).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.text(max_size=12).map(json.dumps),
)

ODD_IDS = st.one_of(
    st.sampled_from([
        "", " ", "\u202e", "e\u0301", "😀" * 50, "a" * 300, "ünïcödé", "../etc/passwd", "c1\u200b",
        "\ufeffc1", "C1", "c1 ", "%00", "null", "1", "🦀/🦀",
    ]),
    st.text(min_size=1, max_size=80),
)

FAR_TIMES = st.sampled_from([
    '"0001-01-01T00:00:00Z"', '"9999-12-31T23:59:59Z"', '"1970-01-01T00:00:00Z"', '"2200-01-01T00:00:00Z"',
    '"1900-02-29T00:00:00Z"', '"2026-02-30T00:00:00Z"', '"not a time"', '""', "0", "-1", str(2**63), "1e20",
    str(253402300800000), str(-62135596800001), "1.5", "null", "true", "[]",
])


def raw_body(template: dict, **raw_fields) -> str:
    """``template`` as JSON with each of ``raw_fields`` spliced in as raw JSON text."""
    body = json.dumps(template)[:-1]
    for name, raw in raw_fields.items():
        body += f', "{name}": {raw}'
    return body + "}"


def post_raw(client, path, body: str, method="post"):
    return getattr(client, method)(path, body.encode("utf-8", "surrogatepass"), content_type="application/json")


def assert_refused_cleanly(response, before, field=None):
    """A 4xx with the error body (and the field, when one is named), and no row changed."""
    assert 400 <= response.status_code < 500, (response.status_code, response.content[:300])
    error = response.json()["error"]
    assert error["code"] and error["message"]
    if field is not None and response.status_code == 422:
        fields = {d.get("field", "") for d in error["details"] or []}
        if "not valid JSON" in error["message"]:
            field = "body"  # NaN / Infinity: refused by the parser before any field is read
        assert any(f == field or f.startswith(field + ".") or f.startswith(field + "[") for f in fields), error
    assert row_counts() == before


def valid_count(raw: str):
    """The positive integer a raw JSON amount means, or None if it is not one."""
    try:
        value = json.loads(raw, parse_constant=lambda c: math.nan)
    except ValueError:
        return None
    return value if type(value) is int and value > 0 else None


@pytest.fixture
def metered(sk_client):
    make_product(sk_client, "metered", amount=0, features=[
        {"slug": "tokens", "type": "metered", "allowance": 1000, "resetInterval": "month"}])
    subscribe(sk_client, "metered", customer="c1")
    return sk_client


class TestHostileAmounts:
    @FUZZ
    @given(amount=HOSTILE_AMOUNTS)
    def test_track_takes_only_a_non_negative_whole_amount(self, metered, amount):
        before = row_counts()
        response = post_raw(metered, f"{API}/track", raw_body({"customer": "c1", "feature": "tokens"}, amount=amount))
        assert response.status_code < 500, response.content
        if response.status_code >= 400:
            assert_refused_cleanly(response, before, field="amount")

    @FUZZ
    @given(amount=HOSTILE_AMOUNTS)
    def test_check_refuses_a_bad_required_balance_without_deducting(self, metered, amount):
        before = row_counts()
        body = raw_body({"customer": "c1", "feature": "tokens", "sendEvent": True}, requiredBalance=amount)
        response = post_raw(metered, f"{API}/check", body)
        assert response.status_code < 500, response.content
        if response.status_code >= 400:
            assert_refused_cleanly(response, before, field="requiredBalance")
        elif valid_count(amount) is None:
            # Accepted though not a positive count: then it must be one of the forms
            # the contract allows (0 or a whole number written as such), never a fraction.
            assert json.loads(amount) in (0,), (amount, response.json())

    @FUZZ
    @given(amount=HOSTILE_AMOUNTS)
    def test_a_grant_is_a_whole_non_negative_amount(self, metered, amount):
        before = row_counts()
        response = post_raw(metered, f"{API}/balances", raw_body({"customer": "c1", "feature": "tokens"}, grantedBalance=amount))
        assert response.status_code < 500, response.content
        if response.status_code >= 400:
            assert_refused_cleanly(response, before, field="grantedBalance")
        else:
            assert type(json.loads(amount)) is int and json.loads(amount) >= 0

    @FUZZ
    @given(amount=HOSTILE_AMOUNTS)
    def test_a_spend_cap_is_a_whole_amount_or_null(self, metered, amount):
        before = row_counts()
        response = post_raw(metered, f"{API}/spend-caps", raw_body({"customer": "c1", "feature": "tokens"}, cap=amount), method="put")
        assert response.status_code < 500, response.content
        if response.status_code >= 400:
            assert_refused_cleanly(response, before, field="cap")
        else:
            value = json.loads(amount)
            assert value is None or (type(value) is int and value >= 0)

    @FUZZ
    @given(value=HOSTILE_AMOUNTS)
    def test_a_fixed_coupon_value_is_a_positive_whole_amount(self, sk_client, value):
        before = row_counts()
        body = raw_body({"code": "FUZZ", "type": "fixed", "duration": "once", "currency": "usd"}, value=value)
        response = post_raw(sk_client, f"{API}/coupons", body)
        assert response.status_code < 500, response.content
        if response.status_code >= 400:
            assert_refused_cleanly(response, before, field="value")
        else:
            assert valid_count(value) is not None
            sk_client.post(f"{API}/coupons/{response.json()['id']}/archive")

    @FUZZ
    @given(quantity=HOSTILE_AMOUNTS)
    def test_subscribe_takes_only_a_positive_whole_quantity(self, sk_client, quantity):
        if sk_client.get(f"{API}/products/seats").status_code == 404:
            make_product(sk_client, "seats", amount=0, group="seats", features=[
                {"slug": "tokens", "type": "metered", "allowance": 10, "resetInterval": "month"}])
        before = row_counts()
        response = post_raw(sk_client, f"{API}/subscribe", raw_body({"customer": "q1", "product": "seats"}, quantity=quantity))
        assert response.status_code < 500, response.content
        if response.status_code >= 400 and response.status_code != 409:
            assert_refused_cleanly(response, before, field="quantity")
        elif response.status_code == 200:
            assert valid_count(quantity) is not None


class TestHostileCreditsAmounts:
    @pytest.fixture
    def svc(self, settings, sk_client):
        secret = new_secret()
        settings.SVC_HMAC_SECRETS = [secret]
        make_wallet(sk_client)
        return SignedClient(secret)

    @FUZZ
    @given(amount=HOSTILE_AMOUNTS, job=st.uuids())
    def test_a_debit_is_a_positive_whole_amount_or_a_400(self, svc, amount, job):
        before = row_counts()
        body = raw_body({"workspaceId": "ws1", "jobId": str(job), "sourceService": "summarizer"}, amount=amount)
        response = svc.post("debit", body.encode())
        assert response.status_code < 500, response.content
        if response.status_code == 201:
            assert valid_count(amount) is not None
        else:
            assert response.status_code in (400, 402), response.content
            assert response.json()["error"]["code"] in ("INVALID_REQUEST", "INSUFFICIENT_CREDITS")
            assert row_counts() == before


class TestOddIdsAndBodies:
    @FUZZ
    @given(customer=ODD_IDS, feature=ODD_IDS)
    def test_odd_unicode_ids_never_reach_a_5xx_and_change_nothing(self, metered, customer, feature):
        for route, extra in (("track", {}), ("check", {"sendEvent": True}), ("balances", {"grantedBalance": 5})):
            before = row_counts()
            try:
                body = json.dumps({"customer": customer, "feature": feature, **extra})
            except ValueError:
                continue
            response = post_raw(metered, f"{API}/{route}", body)
            assert response.status_code < 500, (route, response.content)
            if response.status_code >= 400:
                assert_refused_cleanly(response, before)

    @pytest.mark.parametrize("route, body, field", [
        ("track", '{"customer": "c1", "feature": "tokens", "amount": 1, "amount": 900}', "amount"),
        ("check", '{"customer": "c1", "customer": "c2", "feature": "tokens", "sendEvent": true}', "customer"),
        ("balances", '{"customer": "c1", "feature": "tokens", "grantedBalance": 1, "grantedBalance": 10000}', "grantedBalance"),
    ])
    def test_duplicate_json_keys_are_refused_naming_the_key(self, metered, route, body, field):
        before = row_counts()
        assert_refused_cleanly(post_raw(metered, f"{API}/{route}", body), before, field=field)

    def test_a_huge_body_is_refused_before_it_is_parsed(self, metered, settings):
        before = row_counts()
        huge = json.dumps({"customer": "c1", "feature": "tokens", "properties": {"blob": "x" * (settings.API_MAX_BODY_BYTES + 1)}})
        response = post_raw(metered, f"{API}/track", huge)
        assert response.status_code in (413, 422), response.status_code
        assert row_counts() == before

    def test_deep_json_is_refused(self, metered):
        before = row_counts()
        deep = '{"customer": "c1", "feature": "tokens", "properties": ' + "[" * 200 + "]" * 200 + "}"
        assert_refused_cleanly(post_raw(metered, f"{API}/track", deep), before, field="properties")

    def test_a_huge_credits_body_is_refused(self, settings, sk_client):
        secret = new_secret()
        settings.SVC_HMAC_SECRETS = [secret]
        before = row_counts()
        huge = json.dumps({"workspaceId": "ws1", "jobId": "j", "sourceService": "s", "amount": 1,
                           "metadata": {"blob": "x" * (settings.API_MAX_BODY_BYTES + 1)}}).encode()
        response = SignedClient(secret).post("debit", huge)
        assert 400 <= response.status_code < 500
        assert row_counts() == before


class TestFarTimestamps:
    @FUZZ
    @given(when=FAR_TIMES)
    def test_track_timestamps_far_away_are_refused_or_kept_exactly(self, metered, when):
        before = row_counts()
        response = post_raw(metered, f"{API}/track", raw_body({"customer": "c1", "feature": "tokens", "amount": 1}, timestamp=when))
        assert response.status_code < 500, response.content
        if response.status_code >= 400:
            assert_refused_cleanly(response, before, field="timestamp")

    @FUZZ
    @given(when=FAR_TIMES)
    def test_grant_and_lock_expiries_far_away_are_refused_or_in_the_future(self, metered, when):
        before = row_counts()
        response = post_raw(metered, f"{API}/balances", raw_body({"customer": "c1", "feature": "tokens", "grantedBalance": 3}, expiresAt=when))
        assert response.status_code < 500, response.content
        if response.status_code >= 400:
            assert_refused_cleanly(response, before, field="expiresAt")
        before = row_counts()
        lock = '{"enabled": true, "expiresAt": ' + when + "}"
        response = post_raw(metered, f"{API}/check", raw_body({"customer": "c1", "feature": "tokens", "requiredBalance": 1}, lock=lock))
        assert response.status_code < 500, response.content
        if response.status_code >= 400:
            assert_refused_cleanly(response, before, field="lock")
