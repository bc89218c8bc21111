"""Staff console for the credits API: wallets (freeze / unfreeze, audited) and
the credit ledger (read-only)."""

from __future__ import annotations

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.auth import get_permission_codename
from django.db.models import Exists, OuterRef, Subquery
from django.utils import timezone

from billing.admin import ReadOnlyAdmin
from billing.models import Balance
from credits.models import CreditEntry, Wallet, Workspace
from credits.services import wallet_freeze


class FrozenFilter(admin.SimpleListFilter):
    title = "wallet"
    parameter_name = "frozen"

    def lookups(self, request, model_admin):
        return (("yes", "Frozen"), ("no", "Not frozen"))

    def queryset(self, request, queryset):
        if self.value() in ("yes", "no"):
            return queryset.filter(_frozen=self.value() == "yes")
        return queryset


@admin.register(Workspace)
class WorkspaceAdmin(ReadOnlyAdmin):
    """Every live customer as a credit wallet. The only write is freezing: a
    frozen wallet answers debits with 423 WALLET_LOCKED (refunds still go in)."""

    admin_note = (
        "A workspace's credits are its balance of the credit feature (BILLING_CREDITS_FEATURE), spent by "
        "internal services through the signed credits API. Freeze a wallet to stop its debits (they answer "
        "423 WALLET_LOCKED); every freeze and unfreeze is audited."
    )
    change_list_template = "admin/billing/change_list.html"
    list_display = ["external_id", "name", "credits_left", "frozen"]
    list_filter = [FrozenFilter]
    search_fields = ["external_id", "name", "email"]
    fields = ["external_id", "name", "email", "credits_left", "frozen"]
    readonly_fields = fields
    actions = ["freeze_wallets", "unfreeze_wallets"]

    def get_queryset(self, request):
        credits = Balance.objects.filter(
            customer=OuterRef("pk"), feature__slug=settings.BILLING_CREDITS_FEATURE, entity__isnull=True, included=True
        )
        return (
            super().get_queryset(request)
            .filter(deleted_at__isnull=True)
            .annotate(
                _frozen=Exists(Wallet.objects.filter(customer=OuterRef("pk"), frozen=True)),
                _granted=Subquery(credits.values("granted")[:1]),
                _usage=Subquery(credits.values("usage")[:1]),
                _reserved=Subquery(credits.values("reserved")[:1]),
            )
        )

    def audit_target_id(self, obj) -> str:
        return obj.external_id

    @admin.display(description="credits left")
    def credits_left(self, obj):
        if obj._granted is None:
            return 0
        return obj._granted - obj._usage - obj._reserved

    @admin.display(boolean=True, ordering="_frozen")
    def frozen(self, obj):
        return obj._frozen

    def has_freeze_permission(self, request):
        opts = Wallet._meta
        return request.user.has_perm(f"{opts.app_label}.{get_permission_codename('change', opts)}")

    @admin.action(description="Freeze the credits of the selected workspaces", permissions=["freeze"])
    def freeze_wallets(self, request, queryset):
        self._set_frozen(request, queryset, frozen=True)

    @admin.action(description="Unfreeze the credits of the selected workspaces", permissions=["freeze"])
    def unfreeze_wallets(self, request, queryset):
        self._set_frozen(request, queryset, frozen=False)

    def _set_frozen(self, request, queryset, *, frozen: bool) -> None:
        now = timezone.now()
        verb = "freeze" if frozen else "unfreeze"
        changed = unchanged = 0
        for workspace in queryset:
            if wallet_freeze(customer=workspace, frozen=frozen, actor=request.user.get_username(), now=now):
                self.log_change(request, workspace, "Froze the credits." if frozen else "Unfroze the credits.", verb=verb)
                changed += 1
            else:
                unchanged += 1
        state = "frozen" if frozen else "unfrozen"
        self.message_user(request, f"{changed} wallet(s) {state}" + (f"; {unchanged} already were." if unchanged else "."),
                          messages.SUCCESS)


@admin.register(CreditEntry)
class CreditEntryAdmin(ReadOnlyAdmin):
    admin_note = (
        "The credit ledger: one row per debit and refund made through the credits API, in credits (no money "
        "moves). Entries are never changed; a refund is an entry of its own pointing at its debit."
    )
    change_list_template = "admin/billing/change_list.html"
    list_display = ["id", "kind", "customer", "amount", "returned", "source_service", "job_id", "total_after", "created_at"]
    list_filter = ["kind", "source_service", "created_at"]
    search_fields = ["=id", "customer__external_id", "job_id", "=idempotency_key"]
    date_hierarchy = "created_at"
    list_select_related = ["customer"]
