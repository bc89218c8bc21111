"""GET /api/v1/credits/balance/{workspaceId}, and the staff console's wallets:
freeze and unfreeze, audited."""

import pytest
from django.contrib.auth.models import Permission, User

from billing.models import AuditEvent, Customer, Subscription
from credits.models import CreditEntry, Wallet, Workspace
from tests.billing.billing_helpers import API
from tests.credits.credits_helpers import make_wallet

pytestmark = pytest.mark.django_db


def iso(moment):
    return moment.isoformat().replace("+00:00", "Z")


class TestBalance:
    def test_the_split_the_total_and_the_current_cycle(self, svc, sk_client):
        make_wallet(sk_client)
        svc.debit(amount=22)
        body = svc.balance().json()
        sub = Subscription.objects.get(customer__external_id="ws1", product__slug="team")
        assert (body["balanceSubscription"], body["balanceTopup"], body["total"]) == (0, 8, 8)
        assert (body["reserved"], body["unlimited"], body["frozen"]) == (0, False, False)
        cycle = body["cycle"]
        assert cycle["periodStart"] == iso(sub.current_period_start)
        assert cycle["periodEnd"] == iso(sub.current_period_end)
        assert cycle["planSnapshot"] == {
            "subscriptionId": sub.pk, "product": "team", "name": "Team", "version": 1, "status": "active",
            "creditsAllowance": 20, "resetInterval": "billing_period",
        }

    def test_reserved_credits_count_against_the_total(self, svc, sk_client):
        make_wallet(sk_client)
        sk_client.post(f"{API}/check", {"customer": "ws1", "feature": "credits", "requiredBalance": 4,
                                        "lock": {"enabled": True}}, format="json")
        body = svc.balance().json()
        assert (body["balanceSubscription"], body["balanceTopup"], body["reserved"], body["total"]) == (20, 10, 4, 26)

    def test_a_workspace_without_credits_has_an_empty_wallet(self, svc, sk_client):
        sk_client.post(f"{API}/customers", {"customerId": "bare"}, format="json")
        body = svc.balance("bare").json()
        assert (body["balanceSubscription"], body["balanceTopup"], body["total"]) == (0, 0, 0)
        assert body["cycle"] == {"planSnapshot": None, "periodStart": None, "periodEnd": None}

    def test_an_unknown_workspace_is_404(self, svc):
        response = svc.balance("nobody")
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "WORKSPACE_NOT_FOUND"

    def test_a_post_to_the_balance_route_is_405(self, svc):
        assert svc.post("balance/ws1", {}).status_code == 405


@pytest.fixture
def staff_client(client, db):
    user = User.objects.create_user("staffer", password="pw", is_staff=True)
    for codename in ("view_workspace", "change_wallet", "view_creditentry"):
        user.user_permissions.add(Permission.objects.get(codename=codename))
    client.force_login(user)
    return client


CHANGELIST = "/admin/credits/workspace/"


class TestAdmin:
    def test_staff_freeze_a_wallet_with_an_audited_action_and_debits_answer_423(self, svc, sk_client, staff_client):
        make_wallet(sk_client, topup=0)
        customer = Customer.objects.get(external_id="ws1")
        response = staff_client.post(CHANGELIST, {"action": "freeze_wallets", "_selected_action": [customer.pk]})
        assert response.status_code == 302
        wallet = Wallet.objects.get(customer=customer)
        assert (wallet.frozen, wallet.frozen_by) == (True, "staffer")
        event = AuditEvent.objects.get(action="admin.workspace.freeze")
        assert (event.actor, event.target_type, event.target_id) == ("staff:staffer", "workspace", "ws1")
        assert svc.debit().status_code == 423
        assert svc.balance().json()["frozen"] is True

        staff_client.post(CHANGELIST, {"action": "unfreeze_wallets", "_selected_action": [customer.pk]})
        assert Wallet.objects.get(customer=customer).frozen is False
        assert AuditEvent.objects.filter(action="admin.workspace.unfreeze", target_id="ws1").count() == 1
        assert svc.debit().status_code == 201

    def test_freezing_a_frozen_wallet_changes_and_audits_nothing(self, sk_client, staff_client):
        make_wallet(sk_client, topup=0)
        pk = Customer.objects.get(external_id="ws1").pk
        staff_client.post(CHANGELIST, {"action": "freeze_wallets", "_selected_action": [pk]})
        staff_client.post(CHANGELIST, {"action": "freeze_wallets", "_selected_action": [pk]})
        assert AuditEvent.objects.filter(action="admin.workspace.freeze").count() == 1

    def test_the_wallet_list_shows_credits_left_and_the_frozen_filter(self, svc, sk_client, staff_client):
        make_wallet(sk_client)
        svc.debit(amount=5)
        page = staff_client.get(CHANGELIST)
        assert page.status_code == 200
        assert b"ws1" in page.content and b"<td class=\"field-credits_left\">25</td>" in page.content
        assert b"Freeze the credits" in page.content
        assert staff_client.get(CHANGELIST + "?frozen=yes").status_code == 200
        pk = Workspace.objects.get(external_id="ws1").pk
        assert staff_client.get(f"{CHANGELIST}{pk}/change/").status_code == 200

    def test_the_credit_ledger_is_read_only(self, svc, sk_client, staff_client):
        make_wallet(sk_client, topup=0)
        entry_id = svc.debit().json()["ledgerEntryId"]
        assert staff_client.get("/admin/credits/creditentry/").status_code == 200
        assert staff_client.get(f"/admin/credits/creditentry/{entry_id}/change/").status_code == 200
        assert staff_client.post(f"/admin/credits/creditentry/{entry_id}/delete/", {"post": "yes"}).status_code == 403
        assert CreditEntry.objects.filter(pk=entry_id).exists()

    def test_staff_without_the_wallet_permission_get_no_freeze_action(self, client, sk_client):
        make_wallet(sk_client, topup=0)
        user = User.objects.create_user("viewer", password="pw", is_staff=True)
        user.user_permissions.add(Permission.objects.get(codename="view_workspace"))
        client.force_login(user)
        assert b"Freeze the credits" not in client.get(CHANGELIST).content
        pk = Customer.objects.get(external_id="ws1").pk
        client.post(CHANGELIST, {"action": "freeze_wallets", "_selected_action": [pk]})
        assert not Wallet.objects.filter(frozen=True).exists()
