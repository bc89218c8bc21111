"""Staff console for the ledger: every model read-only, plus a trial balance page.

Nothing here writes: entries come only from ``ledger.services``, and a posted
entry is corrected by a reversing entry, never edited.
"""

from __future__ import annotations

from datetime import datetime, time

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.template.response import TemplateResponse
from django.urls import path
from django.utils import timezone
from django.utils.dateparse import parse_date

from ledger.models import Account, Entry, Line
from ledger.selectors import trial_balance


class ReadOnlyAdminMixin:
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Account)
class AccountAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["code", "name", "type", "normal_side", "active"]
    list_filter = ["type", "normal_side", "active"]
    search_fields = ["code", "name"]
    # Adds a "Trial balance" link to the changelist's object tools.
    change_list_template = "admin/ledger/account/change_list.html"

    def get_urls(self):
        # Before the defaults, or "<path:object_id>/" would swallow it.
        # Served at /admin/ledger/account/trial-balance/.
        view = self.admin_site.admin_view(self.trial_balance_view)
        return [path("trial-balance/", view, name="ledger_trial_balance"), *super().get_urls()]

    def trial_balance_view(self, request):
        # The page shows what the lines add up to: who may not see lines may not see it.
        if not request.user.has_perm("ledger.view_line"):
            raise PermissionDenied
        raw_at = request.GET.get("at", "").strip()
        try:
            day = parse_date(raw_at) if raw_at else None
        except ValueError:  # well formed but no such day, e.g. 2025-02-30
            day = None
        error = f"Not a date (YYYY-MM-DD): {raw_at!r}. Showing all entries." if raw_at and not day else ""
        # A date means "at the end of that day", so the day's own entries count.
        at = timezone.make_aware(datetime.combine(day, time.max)) if day else None
        context = {
            **self.admin_site.each_context(request),
            "title": "Trial balance",
            "opts": self.opts,
            "balance": trial_balance(at=at),
            "at_value": day.isoformat() if day else "",
            "error": error,
        }
        return TemplateResponse(request, "admin/ledger/trial_balance.html", context)


class LineInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = Line
    fields = ["account", "side", "amount", "currency"]
    readonly_fields = fields
    extra = 0
    can_delete = False


@admin.register(Entry)
class EntryAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["id", "posted_at", "memo", "source", "reversal_of", "created_at"]
    list_filter = ["posted_at"]
    search_fields = ["=id", "memo", "source"]
    date_hierarchy = "posted_at"
    inlines = [LineInline]


@admin.register(Line)
class LineAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["id", "entry", "account", "side", "amount", "currency", "posted_at"]
    list_filter = ["account", "side", "currency", "entry__posted_at"]
    search_fields = ["=entry__id", "entry__memo", "entry__source", "account__code", "account__name"]
    list_select_related = ["entry", "account"]

    @admin.display(ordering="entry__posted_at")
    def posted_at(self, line):
        return line.entry.posted_at
