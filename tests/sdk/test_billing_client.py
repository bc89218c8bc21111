"""BillingClient against the real server (pytest-django's live_server: HTTP on a local port)."""

import socket

import pytest

from cynco_billing import BillingClient, BillingConfigurationError, BillingServiceUnavailableError, CyncoBillingError
from tests.billing.billing_helpers import assert_books_reconcile

pytestmark = pytest.mark.django_db(transaction=True)

CREDITS_PLAN = {
    "name": "Team", "slug": "team", "group": "plans",
    "prices": [{"type": "recurring", "amount": 1500, "billingInterval": "month"}],
    "features": [{"slug": "credits", "type": "metered", "allowance": 50, "resetInterval": "billing_period"},
                 {"slug": "sso", "type": "boolean"}],
}


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


class TestCustomersAndCatalog:
    def test_customers_are_made_once_read_changed_listed_and_deleted(self, billing):
        made = billing.get_or_create_customer("acme", name="Acme", email="ap@acme.test", metadata={"tier": "gold"})
        assert (made["id"], made["name"], made["metadata"]) == ("acme", "Acme", {"tier": "gold"})
        assert billing.get_or_create_customer("acme")["name"] == "Acme"
        assert billing.update_customer("acme", name="Acme Corp")["name"] == "Acme Corp"
        billing.get_or_create_customer("globex")
        page = billing.list_customers(limit=1)
        assert len(page["data"]) == 1 and page["nextCursor"]
        rest = billing.list_customers(limit=1, cursor=page["nextCursor"])
        assert {page["data"][0]["id"], rest["data"][0]["id"]} == {"acme", "globex"}
        billing.delete_customer("globex")
        with pytest.raises(CyncoBillingError) as caught:
            billing.get_customer("globex")
        assert (caught.value.status, caught.value.code) == (404, "NOT_FOUND")
        assert caught.value.details["resource"] == "customer"

    def test_products_are_created_read_listed_and_versioned(self, billing):
        product = billing.create_product(**{"is_add_on": False, **_snake(CREDITS_PLAN)})
        assert product["id"].startswith("pprod_") and product["slug"] == "team"
        assert billing.get_product("team")["slug"] == "team"
        assert [p["slug"] for p in billing.list_products()["data"]] == ["team"]
        assert len(billing.list_product_versions("team")["versions"]) == 1

    def test_bad_input_is_a_422_with_the_fields_in_details(self, billing):
        with pytest.raises(CyncoBillingError) as caught:
            billing.create_product(name="X", slug="not a slug!")
        err = caught.value
        assert (err.status, err.code) == (422, "VALIDATION_ERROR")
        assert any(d["field"] == "slug" for d in err.details)

    def test_an_idempotency_key_replays_the_first_answer(self, billing):
        first = billing.get_or_create_customer("c-idem", name="One", idempotency_key="signup-1")
        again = billing.get_or_create_customer("c-idem", name="One", idempotency_key="signup-1")
        assert again == first
        with pytest.raises(CyncoBillingError) as caught:
            billing.get_or_create_customer("c-idem", name="Two", idempotency_key="signup-1")
        assert caught.value.code == "IDEMPOTENCY_KEY_REUSED"


class TestMoneyAndEntitlements:
    def test_subscribe_check_track_lock_and_the_books(self, billing):
        billing.create_product(**_snake(CREDITS_PLAN))
        billing.get_or_create_customer("ws1")
        assert billing.attach_payment_method("ws1", "pm_card_visa")["id"]
        result = billing.subscribe(customer="ws1", product="team")
        assert result["subscription"]["status"] == "active" and result["invoice"]["status"] == "paid"
        assert billing.get_customer("ws1")["balances"]["credits"]["granted"] == 50
        assert billing.get_customer("ws1")["flags"]["sso"] is True

        check = billing.check(customer="ws1", feature="credits", required_balance=5, send_event=True)
        assert (check["allowed"], check["balance"]) == (True, 45)
        assert billing.track(customer="ws1", feature="credits", amount=3, idempotency_key="t-1")["balance"] == 42
        assert billing.track(customer="ws1", feature="credits", amount=3, idempotency_key="t-1")["balance"] == 42
        locked = billing.check(customer="ws1", feature="credits", required_balance=10, lock={"enabled": True})
        done = billing.finalize_lock(lock_id=locked["lockId"], action="confirm", override_value=4)
        assert (done["status"], done["consumed"], done["released"]) == ("consumed", 4, 6)
        billing.create_balance(customer="ws1", feature="credits", granted_balance=100)
        assert billing.check(customer="ws1", feature="credits")["balance"] == 138

        invoices = billing.list_invoices(customer="ws1")["data"]
        assert [i["total"] for i in invoices] == [1500]
        assert billing.get_invoice(invoices[0]["id"])["amountPaid"] == 1500
        tb = billing.trial_balance()
        assert tb["totalDebit"] == tb["totalCredit"] > 0
        assert billing.list_ledger_entries(limit=5)["data"]
        assert billing.list_subscriptions(status="active", customer="ws1")["data"][0]["product"] == "team"
        assert_books_reconcile()

    def test_track_batch_answers_each_event_in_order_and_records_keys_once(self, billing):
        billing.create_product(**_snake(CREDITS_PLAN))
        billing.get_or_create_customer("ws1")
        billing.attach_payment_method("ws1", "pm_card_visa")
        billing.subscribe(customer="ws1", product="team")
        events = [
            {"customer": "ws1", "feature": "credits", "amount": 4, "idempotency_key": "job-1"},
            {"customer": "ws1", "feature": "credits", "amount": 4, "idempotencyKey": "job-1"},
            {"customer": "ws1", "feature": "nope", "amount": 1},
            {"customer": "ws1", "feature": "credits", "amount": 6, "properties": {"model": "m"}},
        ]
        results = billing.track_batch(events, idempotency_key="batch-1")["results"]
        assert [(r.get("balance"), r.get("usage"), r.get("replayed")) for r in results] == [
            (46, 4, False), (46, 4, True), (None, None, None), (40, 10, False)]
        assert results[0]["eventId"].startswith("uev_") and results[1]["eventId"] == results[0]["eventId"]
        assert results[2]["error"]["code"] == "NOT_FOUND"
        assert billing.track_batch(events, idempotency_key="batch-1")["results"] == results  # the whole call replays
        assert billing.get_customer("ws1")["balances"]["credits"]["usage"] == 10
        with pytest.raises(CyncoBillingError) as caught:
            billing.track_batch([])
        assert (caught.value.status, caught.value.code) == (422, "VALIDATION_ERROR")
        assert caught.value.details == [{"field": "events", "message": "must hold 1 to 1000 events, not 0"}]

    def test_preview_and_cancel(self, billing):
        billing.create_product(**_snake(CREDITS_PLAN))
        billing.get_or_create_customer("ws1")
        billing.attach_payment_method("ws1", "pm_card_visa")
        assert billing.preview_attach(customer="ws1", product="team")["total"] == 1500
        billing.subscribe(customer="ws1", product="team")
        sub = billing.cancel(customer="ws1", product="team")["subscription"]
        assert sub["cancelAtPeriodEnd"] is True
        assert_books_reconcile()


class TestKeysAndAudit:
    def test_api_keys_are_made_listed_revoked_and_a_revoked_key_is_refused(self, billing, live_server):
        made = billing.create_api_key(name="web", type="publishable")
        assert made["rawKey"].startswith("cp_pk_")
        assert any(k["id"] == made["id"] for k in billing.list_api_keys()["data"])
        secret = billing.create_api_key(name="second", type="secret")
        other = BillingClient(live_server.url, api_key=secret["rawKey"])
        assert other.ping()
        billing.revoke_api_key(secret["id"])
        with pytest.raises(CyncoBillingError) as caught:
            other.ping()
        assert (caught.value.status, caught.value.code) == (401, "UNAUTHORIZED")
        assert billing.list_audit_events(action="api_key.create")["data"]

    def test_a_publishable_key_is_refused_on_secret_routes_with_403(self, billing, live_server):
        pk = billing.create_api_key(name="web", type="publishable")["rawKey"]
        with pytest.raises(CyncoBillingError) as caught:
            BillingClient(live_server.url, api_key=pk).list_customers()
        assert (caught.value.status, caught.value.code) == (403, "FORBIDDEN")


class TestWebhooks:
    def test_test_webhook_sends_one_signed_test_event_and_answers_what_happened(self, billing):
        from cynco_billing import verify_webhook
        from tests.billing.test_webhooks import Receiver

        receiver = Receiver()
        receiver.thread.start()
        try:
            made = billing.create_webhook(url=receiver.url, events=[])
            result = billing.test_webhook(made["id"])
            assert (result["delivered"], result["status"], result["error"]) == (True, 200, None)
            [request] = receiver.requests
            event = verify_webhook(request["body"], request["headers"]["X-Cynco-Signature"], made["secret"])
            assert (event["id"], event["type"], event["data"]["webhookId"]) == (result["eventId"], "webhook.test", made["id"])
            receiver.statuses = [503]
            assert billing.test_webhook(made["id"])["status"] == 503
        finally:
            receiver.server.shutdown()
            receiver.server.server_close()
        billing.delete_webhook(made["id"])
        with pytest.raises(CyncoBillingError) as caught:
            billing.test_webhook(made["id"])
        assert (caught.value.status, caught.value.code) == (404, "NOT_FOUND")


class TestTransport:
    def test_no_server_is_billing_service_unavailable(self):
        with pytest.raises(BillingServiceUnavailableError) as caught:
            BillingClient(closed_port_url(), api_key="cp_sk_x", timeout=2).ping()
        assert caught.value.status == 0

    def test_a_route_not_built_is_a_404_error_not_a_crash(self, billing):
        with pytest.raises(CyncoBillingError) as caught:
            billing.request("GET", "no-such-route")
        assert caught.value.status == 404

    def test_the_default_timeout_is_10_seconds(self, live_server):
        assert BillingClient(live_server.url, api_key="cp_sk_x").timeout == 10

    def test_a_bad_base_url_is_a_configuration_error(self):
        with pytest.raises(BillingConfigurationError):
            BillingClient("billing.example", api_key="cp_sk_x")


def _snake(spec: dict) -> dict:
    names = {"isAddOn": "is_add_on", "autoEnable": "auto_enable", "freeTrial": "free_trial"}
    return {names.get(k, k): v for k, v in spec.items()}
