import pytest
from django.contrib.auth.models import Permission, User

from ledger import accounts
from ledger.services import credit, debit, entry_post

TRIAL_BALANCE_URL = "/admin/ledger/account/trial-balance/"


@pytest.mark.django_db
class TestLedgerAdmin:
    @pytest.fixture
    def posted(self, now):
        return entry_post(
            lines=[debit(accounts.RECEIVABLE, 2900, "usd"), credit(accounts.REVENUE, 2900, "usd")],
            memo="Invoice 2025-0001",
            posted_at=now,
        )

    @pytest.mark.parametrize("url", ["/admin/ledger/account/", "/admin/ledger/entry/", "/admin/ledger/line/"])
    def test_the_changelists_render(self, admin_client, posted, url):
        assert admin_client.get(url).status_code == 200

    def test_an_entry_renders_read_only_with_its_lines(self, admin_client, posted):
        page = admin_client.get(f"/admin/ledger/entry/{posted.pk}/change/").content.decode()
        assert "Invoice 2025-0001" in page
        assert "2900" in page
        assert 'name="_save"' not in page

    def test_nothing_can_be_added_changed_or_deleted(self, admin_client, posted):
        assert admin_client.get("/admin/ledger/entry/add/").status_code == 403
        assert admin_client.post(f"/admin/ledger/entry/{posted.pk}/delete/", {"post": "yes"}).status_code == 403
        assert admin_client.get("/admin/ledger/account/add/").status_code == 403

    def test_the_account_changelist_links_to_the_trial_balance(self, admin_client):
        assert TRIAL_BALANCE_URL in admin_client.get("/admin/ledger/account/").content.decode()

    def test_the_trial_balance_page_shows_rows_and_totals(self, admin_client, posted):
        response = admin_client.get(TRIAL_BALANCE_URL)
        assert response.status_code == 200
        rows = response.context["balance"].accounts
        assert [(row.code, row.balance) for row in rows] == [("1200", 2900), ("4001", 2900)]
        assert "Accounts Receivable" in response.content.decode()

    def test_the_trial_balance_at_a_date_leaves_out_later_entries(self, admin_client, posted):
        assert admin_client.get(TRIAL_BALANCE_URL, {"at": "2025-02-28"}).context["balance"].accounts == []
        # A date means the end of that day: the entry posted at noon counts.
        assert len(admin_client.get(TRIAL_BALANCE_URL, {"at": "2025-03-01"}).context["balance"].accounts) == 2

    @pytest.mark.parametrize("at", ["yesterday", "2025-02-30"])
    def test_a_bad_date_is_reported_not_a_server_error(self, admin_client, posted, at):
        response = admin_client.get(TRIAL_BALANCE_URL, {"at": at})
        assert response.status_code == 200
        assert "Not a date" in response.content.decode()
        assert len(response.context["balance"].accounts) == 2

    def test_staff_without_the_view_permission_are_refused(self, client):
        user = User.objects.create_user("clerk", password="pw", is_staff=True)
        client.force_login(user)
        assert client.get(TRIAL_BALANCE_URL).status_code == 403
        user.user_permissions.add(Permission.objects.get(codename="view_line"))
        assert client.get(TRIAL_BALANCE_URL).status_code == 200

    def test_anonymous_users_are_sent_to_the_login_page(self, client):
        response = client.get(TRIAL_BALANCE_URL)
        assert response.status_code == 302 and "/admin/login/" in response["Location"]
