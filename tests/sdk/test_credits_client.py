"""CreditsClient against the real server (live_server: HTTP on a local port), and
verify_webhook."""

import hashlib
import json
import socket
import threading
import time

import pytest
from django.utils import timezone

from billing.models import Customer
from credits.models import CreditEntry
from credits.services import wallet_freeze
from cynco_billing import (
    BillingClient,
    BillingConfigurationError,
    BillingServiceUnavailableError,
    CreditBalance,
    CreditsClient,
    DebitNotFoundError,
    DebitResult,
    DuplicateRequestError,
    InsufficientCreditsError,
    InvalidDebitRequestError,
    WalletLockedError,
    WebhookVerificationError,
    WorkspaceNotFoundError,
    idempotency_key_for,
    verify_webhook,
    webhook_signature,
)
from tests.billing.billing_helpers import assert_books_reconcile
from tests.credits.credits_helpers import new_secret
from tests.sdk.test_billing_client import closed_port_url

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def hmac_secret(settings):
    value = new_secret()
    settings.SVC_HMAC_SECRETS = [value]
    return value


@pytest.fixture
def wallet(billing: BillingClient):
    """ws1: 20 plan credits a month and a bought top-up of 10, set up with the BillingClient."""
    billing.create_product(name="Team", slug="team", group="plans",
                           prices=[{"type": "recurring", "amount": 1000, "billingInterval": "month"}],
                           features=[{"slug": "credits", "type": "metered", "allowance": 20,
                                      "resetInterval": "billing_period"}])
    billing.create_product(name="Credits", slug="pack", prices=[{"type": "one_off", "amount": 500}],
                           features=[{"slug": "credits", "type": "metered", "allowance": 10}])
    billing.get_or_create_customer("ws1")
    billing.attach_payment_method("ws1", "pm_card_visa")
    billing.subscribe(customer="ws1", product="team")
    billing.subscribe(customer="ws1", product="pack")
    yield "ws1"
    assert_books_reconcile()


@pytest.fixture
def credits(live_server, hmac_secret, wallet):
    return CreditsClient(live_server.url, secret=hmac_secret, service_name="summarizer")


class TestDebitAndRefund:
    def test_a_debit_is_typed_and_a_retry_of_the_job_returns_the_first_result(self, credits):
        first = credits.debit_credits("ws1", 22, "meeting-1", actor_user_id="u1", metadata={"minutes": 44})
        assert isinstance(first, DebitResult)
        assert (first.amount, first.balance_subscription_after, first.balance_topup_after, first.total_balance_after) \
            == (22, 0, 8, 8)
        assert first.ledger_entry_id.startswith("cle_") and first.replayed is False
        again = credits.debit_credits("ws1", 22, "meeting-1")
        assert again.replayed is True and again.ledger_entry_id == first.ledger_entry_id
        entry = CreditEntry.objects.get()
        assert entry.idempotency_key == idempotency_key_for("meeting-1", "summarizer")
        assert entry.idempotency_key == hashlib.sha256(b"meeting-1summarizer").hexdigest()

    def test_insufficient_credits_say_required_and_available(self, credits):
        credits.debit_credits("ws1", 25, "big")
        with pytest.raises(InsufficientCreditsError) as caught:
            credits.debit_credits("ws1", 6, "next")
        err = caught.value
        assert (err.status, err.code, err.required, err.available) == (402, "INSUFFICIENT_CREDITS", 6, 5)

    def test_unknown_workspace_duplicate_and_frozen_wallet_raise_their_errors(self, credits):
        with pytest.raises(WorkspaceNotFoundError) as caught:
            credits.debit_credits("nobody", 1, "j")
        assert caught.value.status == 404
        first = credits.debit_credits("ws1", 1, "j")
        with pytest.raises(DuplicateRequestError) as caught:
            credits.debit_credits("ws1", 1, "j", idempotency_key="another")
        assert caught.value.prior_entry["ledgerEntryId"] == first.ledger_entry_id
        wallet_freeze(customer=Customer.objects.get(external_id="ws1"), frozen=True, actor="admin", now=timezone.now())
        with pytest.raises(WalletLockedError) as caught:
            credits.debit_credits("ws1", 1, "k")
        assert (caught.value.status, caught.value.code) == (423, "WALLET_LOCKED")

    def test_a_refund_returns_credits_and_repeating_it_replays(self, credits):
        credits.debit_credits("ws1", 25, "job")
        refund = credits.refund_credits("ws1", "job", "transcription failed", amount=5)
        assert (refund.refunded_amount, refund.returned_amount, refund.total_balance_after) == (5, 5, 10)
        again = credits.refund_credits("ws1", "job", "transcription failed", amount=5)
        assert again.replayed and again.ledger_entry_id == refund.ledger_entry_id
        with pytest.raises(InvalidDebitRequestError) as caught:
            credits.refund_credits("ws1", "job", "too much", amount=21, idempotency_key="x")
        assert caught.value.details[0]["refundable"] == 20
        with pytest.raises(DebitNotFoundError):
            credits.refund_credits("ws1", "no-such-job", "oops")

    def test_the_balance_has_the_split_and_the_cycle(self, credits):
        credits.debit_credits("ws1", 3, "j")
        balance = credits.get_balance("ws1")
        assert isinstance(balance, CreditBalance)
        assert (balance.balance_subscription, balance.balance_topup, balance.total) == (17, 10, 27)
        assert balance.cycle.plan_snapshot["product"] == "team"
        assert balance.cycle.period_start and balance.cycle.period_end

    def test_a_workspace_id_that_needs_escaping_in_the_path_signs_and_routes(self, credits, billing):
        billing.get_or_create_customer("team ü+1")
        assert credits.get_balance("team ü+1").total == 0


class TestValidationBeforeSending:
    @pytest.mark.parametrize("amount", [1.5, 0.1, 1.0, 0, -3, "2", True, None, 2**53])
    def test_a_bad_amount_is_refused_without_a_request(self, hmac_secret, amount):
        client = CreditsClient(closed_port_url(), secret=hmac_secret, service_name="svc")  # nothing listens there
        with pytest.raises(InvalidDebitRequestError) as caught:
            client.debit_credits("ws1", amount, "j")
        assert caught.value.code == "INVALID_REQUEST"

    def test_the_server_refuses_what_the_client_lets_through_with_400(self, credits):
        with pytest.raises(InvalidDebitRequestError) as caught:
            credits.debit_credits("ws1", 1, "j" * 300)
        assert (caught.value.status, caught.value.details[0]["field"]) == (400, "jobId")


class TestConfiguration:
    def test_a_secret_under_32_characters_is_refused_at_construction(self, live_server):
        with pytest.raises(BillingConfigurationError):
            CreditsClient(live_server.url, secret="short", service_name="svc")

    def test_a_wrong_secret_is_a_configuration_error(self, live_server, hmac_secret, wallet):
        client = CreditsClient(live_server.url, secret=new_secret(), service_name="svc")
        with pytest.raises(BillingConfigurationError) as caught:
            client.get_balance("ws1")
        assert (caught.value.status, caught.value.code) == (401, "UNAUTHORIZED")

    def test_a_clock_off_by_more_than_300_seconds_is_a_configuration_error(self, live_server, hmac_secret, wallet):
        client = CreditsClient(live_server.url, secret=hmac_secret, service_name="svc", clock=lambda: time.time() - 900)
        with pytest.raises(BillingConfigurationError):
            client.get_balance("ws1")

    def test_no_server_is_unavailable_and_the_default_timeout_is_10_seconds(self, hmac_secret):
        client = CreditsClient(closed_port_url(), secret=hmac_secret, service_name="svc")
        assert client.timeout == 10
        with pytest.raises(BillingServiceUnavailableError):
            client.get_balance("ws1")

    @pytest.mark.parametrize("answer", [
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 400\r\n\r\n{\"ledgerEntryId\":",
        b"HTTP/1.1 2",
    ], ids=["body-cut-short", "status-line-cut-short"])
    def test_an_answer_cut_short_is_unavailable_so_the_caller_retries(self, hmac_secret, answer):
        """A worker killed mid-answer leaves the client a truncated body or status line.
        The fault test found the SDK raising http.client's IncompleteRead there, which is no
        error the caller is told to retry, so a debit that had been made went unacknowledged."""
        listener = socket.create_server(("127.0.0.1", 0))

        def serve_once():
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(answer)
        server = threading.Thread(target=serve_once, daemon=True)
        server.start()
        client = CreditsClient(f"http://127.0.0.1:{listener.getsockname()[1]}", secret=hmac_secret,
                               service_name="svc", timeout=5)
        try:
            with pytest.raises(BillingServiceUnavailableError) as caught:
                client.debit_credits("ws1", 1, "job-1")
        finally:
            server.join(5)
            listener.close()
        assert caught.value.code == "UNAVAILABLE"

    def test_the_same_request_twice_in_one_second_is_signed_twice_differently(self, hmac_secret):
        client = CreditsClient("http://127.0.0.1:1", secret=hmac_secret, service_name="svc", clock=lambda: 1_000)
        one = client.signed_headers("GET", "/api/v1/credits/balance/ws1", b"")
        two = client.signed_headers("GET", "/api/v1/credits/balance/ws1", b"")
        assert one["X-Signature"] != two["X-Signature"]
        assert (one["X-Timestamp"], two["X-Timestamp"]) == ("1000", "1001")


class TestWebhooks:
    SECRET = "whsec_" + "x" * 32

    def event(self):
        return json.dumps({"id": "evt_1", "type": "invoice.paid", "createdAt": "2026-01-01T00:00:00Z",
                           "data": {"invoiceId": "pinv_1"}}).encode()

    def test_a_signed_webhook_verifies_and_gives_the_event(self):
        payload = self.event()
        header = webhook_signature(payload, self.SECRET, int(time.time()))
        assert verify_webhook(payload, header, self.SECRET)["type"] == "invoice.paid"
        assert verify_webhook(payload.decode(), header, self.SECRET)["id"] == "evt_1"

    def test_one_matching_v1_of_several_is_enough(self):
        payload, now = self.event(), int(time.time())
        header = webhook_signature(payload, self.SECRET, now)
        assert verify_webhook(payload, f"t={now},v1={'0' * 64},{header.split(',')[1]}", self.SECRET)

    @pytest.mark.parametrize("case", ["tampered", "wrong secret", "old", "missing", "malformed", "future"])
    def test_bad_webhooks_are_refused(self, case):
        payload, now = self.event(), int(time.time())
        header = webhook_signature(payload, self.SECRET, now)
        secret = self.SECRET
        if case == "tampered":
            payload = payload.replace(b"pinv_1", b"pinv_2")
        elif case == "wrong secret":
            secret = "whsec_" + "y" * 32
        elif case == "old":
            header = webhook_signature(payload, self.SECRET, now - 301)
        elif case == "future":
            header = webhook_signature(payload, self.SECRET, now + 301)
        elif case == "missing":
            header = None
        else:
            header = "v1=abc"
        with pytest.raises(WebhookVerificationError):
            verify_webhook(payload, header, secret)
