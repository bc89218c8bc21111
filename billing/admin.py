"""Staff console for billing: mostly read-only, every write audited.

The admin is an interface like the API: it validates input and makes one
domain call. So the only writes it allows are those a service backs:

- a customer's name, email and metadata (``customer_update``);
- creating and revoking API keys (``api_key_create``, ``api_key_revoke``);
- redelivering a webhook delivery and re-enabling a disabled webhook endpoint
  (``webhook_delivery_redeliver``, ``webhook_endpoint_enable``);
- making a pending refund due again, "Retry now" (``refund_retry_now``).

The catalog is read-only here because edits must go through the versioning
service (a product with subscribers gets a new version); deletion of a
customer is a soft delete through the API. Every admin write leaves, besides
Django's ``LogEntry``, an ``AuditEvent`` with actor ``staff:<username>``.
"""

from __future__ import annotations

import json
import re

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.options import csrf_protect_m
from django.contrib.admin.utils import quote
from django.contrib.auth import get_permission_codename
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from rest_framework import serializers

from billing.api.fields import MetadataField
from billing.api.parsers import BodyInvalid, parse_json_bytes
from billing.errors import BillingError, NotFound
from billing.models import (
    ApiKey,
    AuditEvent,
    Balance,
    BalanceBucket,
    BalanceLock,
    CheckoutSession,
    Coupon,
    CouponRedemption,
    Customer,
    Entity,
    Feature,
    GatewayEvent,
    IdempotencyKey,
    Invoice,
    InvoiceLine,
    OutboxEvent,
    OverageRecord,
    Payment,
    PaymentMethod,
    Price,
    Product,
    ProductFeature,
    ProductSpendCap,
    ProductVersion,
    SpendCap,
    Subscription,
    UsageEvent,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)
from billing.services.api_keys import api_key_create, api_key_revoke
from billing.services.audit import audit_record
from billing.services.customers import customer_update
from billing.services.grants import product_attach
from billing.services.payments import refund_retry_now
from billing.services.webhooks import webhook_delivery_redeliver, webhook_endpoint_enable
from ledger.admin import ReadOnlyAdminMixin

CATALOG_NOTE = (
    "The catalog is read-only here. Change it through the API (POST /api/v1/pay/products, "
    "PATCH /api/v1/pay/products/<id>): a product whose current version has subscribers gets a "
    "new version, and its subscribers stay on theirs."
)


# A raw API key as api_key_create makes them (prefix + token_urlsafe).
RAW_KEY_RE = re.compile(r"(cp_[sp]k_)[A-Za-z0-9_-]{20,}")


def _snake(model) -> str:
    """ApiKey -> api_key: the target type the API's audit events use too."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", model.__name__).lower()


def _json_safe(value):
    """Django's change messages may hold lazy strings; AuditEvent.data is plain JSON."""
    return json.loads(json.dumps(value, cls=DjangoJSONEncoder))


# --- mixins ----------------------------------------------------------------


class AuditedAdminMixin:
    """Writes an AuditEvent for every admin addition, change and deletion.

    ``admin_note`` is shown above the changelist and the change form (see
    ``templates/admin/billing/change_list.html`` and ``change_form.html``).
    """

    admin_note = ""

    def audit_target_id(self, obj) -> str:
        return str(obj.pk)

    def audit(self, request, obj, verb: str, data: dict) -> AuditEvent:
        return audit_record(
            actor_type=AuditEvent.ActorType.STAFF.value,
            actor_id=request.user.get_username(),
            action=f"admin.{_snake(self.model)}.{verb}",
            target_type=_snake(self.model),
            target_id=self.audit_target_id(obj),
            request_id=getattr(request, "request_id", ""),
            data=_json_safe(data),
            now=timezone.now(),
        )

    def log_addition(self, request, obj, message):
        entry = super().log_addition(request, obj, message)
        self.audit(request, obj, "add", {"message": message})
        return entry

    def log_change(self, request, obj, message, *, verb: str = "change"):
        entry = super().log_change(request, obj, message)
        self.audit(request, obj, verb, {"message": message})
        return entry

    def log_deletions(self, request, queryset):
        # Called before the deletion, so the objects can still be read.
        objects = list(queryset)
        entries = super().log_deletions(request, objects)
        for obj in objects:
            self.audit(request, obj, "delete", {"message": "Deleted.", "object": str(obj)})
        return entries


class ReadOnlyInline(ReadOnlyAdminMixin, admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = True

    def get_readonly_fields(self, request, obj=None):
        return self.fields


class ReadOnlyAdmin(AuditedAdminMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    pass


class LiveFilter(admin.SimpleListFilter):
    """Live or soft-deleted (customers) / active or revoked (API keys)."""

    title = "status"
    parameter_name = "status"
    field = "deleted_at"
    labels = (("live", "Live"), ("deleted", "Deleted"))

    def lookups(self, request, model_admin):
        return self.labels

    def queryset(self, request, queryset):
        value = self.value()
        if value == self.labels[0][0]:
            return queryset.filter(**{f"{self.field}__isnull": True})
        if value == self.labels[1][0]:
            return queryset.filter(**{f"{self.field}__isnull": False})
        return queryset


class RevokedFilter(LiveFilter):
    field = "revoked_at"
    labels = (("active", "Active"), ("revoked", "Revoked"))


# --- catalog (read-only) ---------------------------------------------------


def act_on_each(model_admin, request, queryset, act, *, verb: str, done: str) -> None:
    """An admin action's loop: ``act(pk, now)`` on each selected row returns the object
    and the change message to log (audited under ``verb``); a BillingError is that
    row's error message and the others go on; ``done`` (with ``{n}``) sums up."""
    now = timezone.now()
    n = 0
    for pk in queryset.values_list("pk", flat=True):
        try:
            obj, message = act(pk, now)
        except BillingError as exc:
            model_admin.message_user(request, f"{pk}: {exc.message}", messages.ERROR)
            continue
        model_admin.log_change(request, obj, message, verb=verb)
        n += 1
    if n:
        model_admin.message_user(request, done.format(n=n), messages.SUCCESS)


@admin.register(Feature)
class FeatureAdmin(ReadOnlyAdmin):
    admin_note = CATALOG_NOTE
    list_display = ["slug", "name", "type", "created_at"]
    list_filter = ["type"]
    search_fields = ["slug", "name"]
    readonly_fields = ["created_at"]


class ProductVersionInline(ReadOnlyInline):
    model = ProductVersion
    fk_name = "product"
    fields = ["version", "free_trial_days", "free_trial_requires_payment_method", "created_at"]
    ordering = ["-version"]


@admin.register(Product)
class ProductAdmin(ReadOnlyAdmin):
    admin_note = CATALOG_NOTE
    list_display = ["slug", "name", "id", "group", "is_add_on", "auto_enable", "current_version", "updated_at"]
    list_filter = ["is_add_on", "auto_enable", "group", "created_at"]
    search_fields = ["slug", "name", "=id", "group"]
    list_select_related = ["current_version"]
    date_hierarchy = "created_at"
    fields = ["id", "slug", "name", "group", "is_add_on", "auto_enable", "current_version", "created_at", "updated_at"]
    readonly_fields = ["id", "created_at", "updated_at"]
    inlines = [ProductVersionInline]


class PriceInline(ReadOnlyInline):
    model = Price
    fields = ["position", "type", "amount", "currency", "billing_interval", "tiers_mode", "tiers"]
    show_change_link = False


# What a product version grants of a feature, as shown in both product-feature views.
PRODUCT_FEATURE_TERMS = ["allowance_type", "allowance", "reset_interval", "overage_allowed", "overage_price", "per_entity"]


class ProductFeatureInline(ReadOnlyInline):
    model = ProductFeature
    fields = ["position", "feature", *PRODUCT_FEATURE_TERMS]
    show_change_link = False


@admin.register(ProductVersion)
class ProductVersionAdmin(ReadOnlyAdmin):
    admin_note = CATALOG_NOTE
    list_display = ["id", "product", "version", "free_trial_days", "free_trial_requires_payment_method", "created_at"]
    list_filter = ["free_trial_requires_payment_method", "created_at"]
    search_fields = ["=id", "product__slug", "=product__id"]
    list_select_related = ["product"]
    fields = ["id", "product", "version", "free_trial_days", "free_trial_requires_payment_method", "created_at"]
    readonly_fields = ["id", "created_at"]
    inlines = [PriceInline, ProductFeatureInline]


@admin.register(Price)
class PriceAdmin(ReadOnlyAdmin):
    admin_note = CATALOG_NOTE
    list_display = ["id", "version", "position", "type", "amount", "currency", "billing_interval", "tiers_mode"]
    list_filter = ["type", "currency", "billing_interval", "tiers_mode"]
    search_fields = ["=version__id", "version__product__slug"]
    list_select_related = ["version"]


@admin.register(ProductFeature)
class ProductFeatureAdmin(ReadOnlyAdmin):
    admin_note = CATALOG_NOTE
    list_display = ["id", "version", "feature", *PRODUCT_FEATURE_TERMS]
    list_filter = ["allowance_type", "reset_interval", "overage_allowed", "per_entity", "feature"]
    search_fields = ["=version__id", "version__product__slug", "feature__slug"]
    list_select_related = ["version", "feature"]


# --- customers and subscriptions -------------------------------------------


class MetadataFormField(forms.JSONField):
    """The API's rules for metadata: strict JSON (no duplicate keys, NUL or lone
    surrogates), a JSON object, at most 50 keys and 16 KiB."""

    def to_python(self, value):
        if self.disabled:
            return value
        if value in self.empty_values:
            return {}
        if not isinstance(value, str):  # already parsed (initial data)
            value = json.dumps(value)
        try:
            data = parse_json_bytes(value.encode("utf-8", "surrogatepass"))
        except BodyInvalid as exc:
            raise ValidationError(f"{exc.field}: {exc.detail}" if exc.field != "body" else str(exc.detail)) from None
        try:
            return MetadataField().to_internal_value(data)
        except serializers.ValidationError as exc:
            raise ValidationError(exc.detail) from None


class CustomerForm(forms.ModelForm):
    email = forms.EmailField(label="Email", max_length=320, required=False)
    metadata = MetadataFormField(label="Metadata", required=False, help_text="A JSON object: at most 50 keys, 16 KiB.")

    class Meta:
        model = Customer
        fields = ["name", "email", "metadata"]


class SubscriptionInline(ReadOnlyInline):
    model = Subscription
    fields = ["id", "product", "version", "status", "quantity", "current_period_end", "trial_end", "created_at"]
    ordering = ["-created_at"]


class AttachProductForm(forms.Form):
    note = "Free products only: paid products are attached when payment succeeds (POST /api/v1/pay/subscribe)."
    product = forms.ModelChoiceField(queryset=Product.objects.none())

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        free = Product.objects.exclude(current_version__prices__amount__gt=0).exclude(current_version__prices__tiers__isnull=False)
        self.fields["product"].queryset = free.order_by("name")
        self.fields["product"].label_from_instance = lambda p: f"{p.name} ({p.slug})"


@admin.register(Customer)
class CustomerAdmin(AuditedAdminMixin, admin.ModelAdmin):
    admin_note = (
        "Only name, email and metadata can be changed here. Customers are created and (soft) "
        "deleted through the API (POST /api/v1/pay/customers, DELETE /api/v1/pay/customers/<id>)."
    )
    form = CustomerForm
    list_display = ["external_id", "name", "email", "created_at", "updated_at", "is_live"]
    list_filter = [LiveFilter, "created_at"]
    search_fields = ["external_id", "name", "email"]
    search_help_text = "External id, name or email (contains)."
    date_hierarchy = "created_at"
    fields = ["external_id", "name", "email", "metadata", "created_at", "updated_at", "deleted_at", "attach_link"]
    readonly_fields = ["external_id", "created_at", "updated_at", "deleted_at", "attach_link"]
    inlines = [SubscriptionInline]

    @admin.display(description="products")
    def attach_link(self, customer):
        if customer.pk is None or customer.deleted_at is not None:
            return "—"
        url = reverse("admin:billing_customer_attach", args=[quote(customer.pk)])
        return format_html('<a href="{}">Attach a free product…</a>', url)

    def get_urls(self):
        from django.urls import path

        extra = [path("<path:object_id>/attach/", self.admin_site.admin_view(self.attach_view), name="billing_customer_attach")]
        return extra + super().get_urls()

    def attach_view(self, request, object_id):
        """Give the customer a free product through the same service as POST subscribe."""
        customer = self.get_object(request, object_id)
        if customer is None or customer.deleted_at is not None or not self.has_change_permission(request, customer):
            raise PermissionDenied
        form = AttachProductForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            product = form.cleaned_data["product"]
            try:
                with transaction.atomic(durable=True):
                    product_attach(customer=customer, product=product, now=timezone.now())
            except BillingError as exc:
                form.add_error("product", exc.message)
            else:
                self.audit(request, customer, "attach", {"message": f"Attached {product.slug}.", "product": product.slug})
                self.message_user(request, f"{product.name} attached to {customer.external_id}.", messages.SUCCESS)
                return HttpResponseRedirect(reverse("admin:billing_customer_change", args=[quote(customer.pk)]))
        context = {**self.admin_site.each_context(request), "opts": self.model._meta, "form": form,
                   "title": f"Attach a free product to {customer.external_id}", "admin_note": AttachProductForm.note}
        return TemplateResponse(request, "admin/billing/simple_form.html", context)

    @admin.display(boolean=True, description="live", ordering="deleted_at")
    def is_live(self, customer):
        return customer.deleted_at is None

    def audit_target_id(self, obj) -> str:
        return obj.external_id  # as the API's audit events name customers

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        # A soft-deleted customer is history: viewable, not editable.
        if obj is not None and obj.deleted_at is not None:
            return False
        return super().has_change_permission(request, obj)

    @csrf_protect_m
    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        # Django wraps this view in transaction.atomic(); customer_update owns a
        # durable transaction of its own (and locks the row), so it must not run
        # nested. The audit rows follow its commit, as they do in the API.
        try:
            return self._changeform_view(request, object_id, form_url, extra_context)
        except NotFound:
            self.message_user(
                request, "The customer was deleted in the meantime; nothing was changed.", messages.ERROR
            )
            return HttpResponseRedirect(reverse("admin:billing_customer_changelist"))

    def save_model(self, request, obj, form, change):
        # Only what the form changed: a concurrent API update of another field survives.
        changes = {name: form.cleaned_data[name] for name in form.changed_data}
        if not changes:
            return
        saved = customer_update(customer=obj, **changes, now=timezone.now())
        obj.updated_at = saved.updated_at


@admin.register(Subscription)
class SubscriptionAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "customer",
        "product",
        "version",
        "status",
        "quantity",
        "current_period_end",
        "cancel_at_period_end",
        "created_at",
    ]
    list_filter = ["status", "cancel_at_period_end", "created_at", "product"]
    search_fields = ["=id", "customer__external_id", "customer__email", "product__slug"]
    list_select_related = ["customer", "product", "version"]
    date_hierarchy = "created_at"


# --- API keys --------------------------------------------------------------


class ApiKeyCreateForm(forms.Form):
    name = forms.CharField(max_length=200)
    type = forms.ChoiceField(choices=ApiKey.Type.choices, initial=ApiKey.Type.SECRET)


@admin.register(ApiKey)
class ApiKeyAdmin(AuditedAdminMixin, admin.ModelAdmin):
    """Keys are shown masked; ``key_hash`` never leaves the database.

    "Add" is a small form of its own that calls ``api_key_create`` and shows
    the raw key once; the key itself is never edited, only revoked.
    """

    admin_note = (
        "Only a hash of each key is stored: the raw key is shown once, when the key is created "
        "(here or with POST /api/v1/pay/api-keys). Keys are never edited or deleted; revoke them "
        "with the \u201cRevoke selected keys\u201d action."
    )
    list_display = ["name", "masked_key", "type", "id", "created_at", "last_used_at", "revoked_at", "active"]
    list_filter = ["type", RevokedFilter, "created_at"]
    search_fields = ["name", "=id", "masked_key"]
    fields = ["id", "name", "type", "masked_key", "created_at", "last_used_at", "revoked_at"]
    readonly_fields = fields
    actions = ["revoke_keys"]

    @admin.display(boolean=True, ordering="revoked_at")
    def active(self, key):
        return key.is_active

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_revoke_permission(self, request):
        return request.user.has_perm(f"{self.opts.app_label}.{get_permission_codename('change', self.opts)}")

    @admin.action(description="Revoke selected keys", permissions=["revoke"])
    def revoke_keys(self, request, queryset):
        now = timezone.now()
        revoked = skipped = 0
        for key_id in queryset.values_list("pk", flat=True):
            try:
                key = api_key_revoke(key_id=key_id, now=now)
            except NotFound:
                continue
            if key.revoked_at != now:  # revoked before: nothing happened, nothing to log
                skipped += 1
                continue
            self.log_change(request, key, "Revoked.", verb="revoke")
            revoked += 1
        self.message_user(request, f"Revoked {revoked} key(s).", messages.SUCCESS)
        if skipped:
            self.message_user(request, f"{skipped} key(s) were already revoked.", messages.WARNING)

    def add_view(self, request, form_url="", extra_context=None):
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = ApiKeyCreateForm(request.POST if request.method == "POST" else None)
        if form.is_bound and form.is_valid():
            with transaction.atomic():
                key, raw_key = api_key_create(**form.cleaned_data, now=timezone.now())
                self.log_addition(request, key, [{"added": {}}])
            messages.success(
                request,
                format_html(
                    "Created the key \u201c{}\u201d. Copy it now, it will not be shown again: <code>{}</code>",
                    key.name,
                    raw_key,
                ),
            )
            return HttpResponseRedirect(reverse("admin:billing_apikey_change", args=[quote(key.pk)]))
        context = {
            **self.admin_site.each_context(request),
            "title": "Add API key",
            "opts": self.opts,
            "form": form,
            "admin_note": self.admin_note,
            **(extra_context or {}),
        }
        return TemplateResponse(request, "admin/billing/apikey/add_form.html", context)


# --- the trail and the idempotency cache (read-only) -----------------------


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ["id", "created_at", "actor_type", "actor_id", "action", "target_type", "target_id", "request_id"]
    list_filter = ["actor_type", "target_type", "created_at"]
    search_fields = ["action", "=actor_id", "=target_id", "=request_id"]
    search_help_text = "Action (contains), or an exact actor id, target id or request id."
    date_hierarchy = "created_at"
    show_full_result_count = False  # the trail only grows; skip the second COUNT(*)


@admin.register(IdempotencyKey)
class IdempotencyKeyAdmin(ReadOnlyAdmin):
    list_display = ["key", "api_key", "method", "path", "state", "response_status", "created_at", "expires_at"]
    list_filter = ["state", "method", "response_status", "created_at"]
    search_fields = ["=key", "=api_key__id", "path"]
    list_select_related = ["api_key"]
    date_hierarchy = "created_at"
    show_full_result_count = False
    fields = [
        "api_key",
        "key",
        "method",
        "path",
        "request_hash",
        "state",
        "response_status",
        "response",
        "created_at",
        "expires_at",
    ]
    readonly_fields = fields

    @admin.display(description="response body")
    def response(self, record):
        """The stored body with raw API keys hidden: the answer to POST /api-keys carries one."""
        return RAW_KEY_RE.sub(r"\1[hidden]", record.response_body)


# --- the entitlement engine: read-only, its rows change only through services ----

ENGINE_NOTE = (
    "Balances, buckets, locks and usage change only through the API (check, track, balances, "
    "locks/finalize) and the billing cycle, which keep their totals exact; this page is for looking."
)


class BalanceBucketInline(ReadOnlyInline):
    model = BalanceBucket
    fields = ("kind", "granted", "consumed", "unlimited", "reset_interval", "next_reset_at", "expires_at", "active")


@admin.register(Balance)
class BalanceAdmin(ReadOnlyAdmin):
    admin_note = ENGINE_NOTE
    list_display = ("customer", "feature", "entity", "granted", "usage", "reserved", "overage", "unlimited", "spend_cap")
    list_filter = ("unlimited", "included", "overage_allowed", "feature")
    search_fields = ("customer__external_id", "feature__slug", "entity__external_id")
    list_select_related = ("customer", "feature", "entity")
    inlines = [BalanceBucketInline]


@admin.register(BalanceLock)
class BalanceLockAdmin(ReadOnlyAdmin):
    admin_note = ENGINE_NOTE
    list_display = ("id", "balance", "amount", "status", "consumed", "released", "expires_at", "created_at")
    list_filter = ("status",)
    search_fields = ("id", "balance__customer__external_id")
    date_hierarchy = "created_at"


@admin.register(UsageEvent)
class UsageEventAdmin(ReadOnlyAdmin):
    admin_note = ENGINE_NOTE
    list_display = ("id", "customer", "feature", "entity", "amount", "idempotency_key", "timestamp")
    list_filter = ("feature",)
    search_fields = ("customer__external_id", "idempotency_key")
    list_select_related = ("customer", "feature", "entity")
    date_hierarchy = "timestamp"


@admin.register(Entity)
class EntityAdmin(ReadOnlyAdmin):
    list_display = ("external_id", "customer", "feature", "name", "created_at", "deleted_at")
    search_fields = ("external_id", "name", "customer__external_id")
    list_filter = ("feature",)


@admin.register(SpendCap)
class SpendCapAdmin(ReadOnlyAdmin):
    list_display = ("customer", "feature", "cap", "updated_at")
    search_fields = ("customer__external_id", "feature__slug")


@admin.register(ProductSpendCap)
class ProductSpendCapAdmin(ReadOnlyAdmin):
    list_display = ("product", "feature", "cap", "updated_at")


@admin.register(OverageRecord)
class OverageRecordAdmin(ReadOnlyAdmin):
    list_display = ("balance", "period_start", "period_end", "units", "unit_price", "amount", "currency", "billed")
    list_filter = ("billed", "currency")


@admin.register(OutboxEvent)
class OutboxEventAdmin(ReadOnlyAdmin):
    list_display = ("id", "type", "customer", "created_at", "dispatched_at")
    list_filter = ("type",)
    search_fields = ("id", "customer__external_id")
    date_hierarchy = "created_at"


# --- invoices, payments and coupons: read-only, written only by the billing services ----

MONEY_NOTE = (
    "Invoices, payments, checkouts and gateway events change only through the API (subscribe, "
    "subscriptions/update, cancel) and the billing cycle, which post every money movement to the "
    "ledger in the same transaction; invoice lines are immutable. This page is for looking."
)
COUPON_NOTE = "Coupons are created, changed and archived through the API (POST/PATCH /api/v1/pay/coupons)."


class CustomerIdFilter(admin.SimpleListFilter):
    """``?customer=<external id>``: the rows of one customer (a list of every
    customer would not fit the sidebar); shown while it is in use."""

    title = "customer"
    parameter_name = "customer"

    def lookups(self, request, model_admin):
        value = self.value()
        return [(value, value)] if value else []

    def queryset(self, request, queryset):
        value = self.value()
        return queryset.filter(customer__external_id=value) if value else queryset


class InvoiceLineInline(ReadOnlyInline):
    model = InvoiceLine
    fields = ["number", "kind", "description", "quantity", "unit_amount", "amount"]
    ordering = ["number"]
    show_change_link = False


class PaymentInline(ReadOnlyInline):
    model = Payment
    fk_name = "invoice"
    fields = ["id", "kind", "status", "amount", "currency", "gateway", "failure_code", "created_at"]
    ordering = ["created_at"]


@admin.register(Invoice)
class InvoiceAdmin(ReadOnlyAdmin):
    admin_note = MONEY_NOTE
    list_display = [
        "number", "customer", "reason", "status", "currency", "subtotal", "discount", "total",
        "amount_paid", "amount_refunded", "created_at", "paid_at",
    ]
    list_filter = ["status", "reason", "currency", "created_at", CustomerIdFilter]
    search_fields = ["number", "=id", "customer__external_id", "customer__email", "=subscription__id"]
    search_help_text = "Invoice number, exact invoice or subscription id, or customer id or email."
    list_select_related = ["customer"]
    date_hierarchy = "created_at"
    inlines = [InvoiceLineInline, PaymentInline]


REFUND_NOTE = (
    " A pending refund is money still owed to the customer: the billing cycle sends it again "
    "after a growing wait (REFUND_RETRY_DELAYS_SECONDS); after REFUND_MAX_ATTEMPTS failed attempts "
    "it is no longer sent and shows under “Refund retries: Needs attention” (failure_code "
    "says the gateway's last reason). “Retry now” makes it due again: the next cycle run sends it "
    "once; if that fails too it is flagged again."
)


class RefundRetryFilter(admin.SimpleListFilter):
    """Pending refunds by their retry schedule (the partial index payment_refund_retry_due)."""

    title = "refund retries"
    parameter_name = "refund_retry"

    def lookups(self, request, model_admin):
        return (("attention", "Needs attention"), ("scheduled", "Scheduled"))

    def queryset(self, request, queryset):
        pending = queryset.filter(kind=Payment.Kind.REFUND, status=Payment.Status.PENDING)
        if self.value() == "attention":
            return pending.filter(next_attempt_at__isnull=True)
        if self.value() == "scheduled":
            return pending.filter(next_attempt_at__isnull=False)
        return queryset


@admin.register(Payment)
class PaymentAdmin(ReadOnlyAdmin):
    admin_note = MONEY_NOTE + REFUND_NOTE
    list_display = [
        "id", "invoice", "customer", "kind", "status", "amount", "currency", "gateway", "failure_code",
        "attempts", "next_attempt_at", "needs_attention", "created_at",
    ]
    list_filter = [RefundRetryFilter, "kind", "status", "gateway", "currency", "created_at", CustomerIdFilter]
    search_fields = ["=id", "invoice__number", "customer__external_id", "=gateway_ref"]
    list_select_related = ["invoice", "customer"]
    date_hierarchy = "created_at"
    actions = ["retry_now"]

    @admin.display(boolean=True, description="needs attention")
    def needs_attention(self, payment):
        """A pending refund whose retries ran out."""
        return (payment.kind == Payment.Kind.REFUND and payment.status == Payment.Status.PENDING
                and payment.next_attempt_at is None)

    def has_refund_retry_permission(self, request):
        return request.user.has_perm(f"{self.opts.app_label}.{get_permission_codename('change', self.opts)}")

    @admin.action(description="Retry now (selected pending refunds)", permissions=["refund_retry"])
    def retry_now(self, request, queryset):
        def act(payment_id, now):
            refund = refund_retry_now(refund_id=payment_id, now=now)
            return refund, (f"Retry now: due again after {refund.attempts} attempt(s), "
                            f"last failure {refund.failure_code or '-'}.")
        act_on_each(self, request, queryset, act, verb="retry",
                    done="{n} refund(s) due again; the next billing cycle run sends them.")


@admin.register(PaymentMethod)
class PaymentMethodAdmin(ReadOnlyAdmin):
    admin_note = MONEY_NOTE
    list_display = ["id", "customer", "gateway", "brand", "last4", "is_default", "created_at"]
    list_filter = ["gateway", "brand", "is_default", CustomerIdFilter]
    search_fields = ["=id", "customer__external_id", "=gateway_id"]
    list_select_related = ["customer"]


@admin.register(CheckoutSession)
class CheckoutSessionAdmin(ReadOnlyAdmin):
    admin_note = MONEY_NOTE
    list_display = ["id", "customer", "invoice", "subscription", "status", "expires_at", "created_at"]
    list_filter = ["status", "created_at", CustomerIdFilter]
    search_fields = ["=id", "customer__external_id", "invoice__number", "=subscription__id"]
    list_select_related = ["customer", "invoice", "subscription"]
    date_hierarchy = "created_at"
    readonly_fields = ["success_url", "cancel_url"]  # shown as text; no URL form field is built


@admin.register(GatewayEvent)
class GatewayEventAdmin(ReadOnlyAdmin):
    admin_note = MONEY_NOTE
    list_display = ["event_id", "gateway", "type", "received_at"]
    list_filter = ["gateway", "type"]
    search_fields = ["=event_id", "type"]
    date_hierarchy = "received_at"
    show_full_result_count = False


class CouponRedemptionInline(ReadOnlyInline):
    model = CouponRedemption
    fields = ["customer", "subscription", "created_at"]
    ordering = ["-created_at"]


@admin.register(Coupon)
class CouponAdmin(ReadOnlyAdmin):
    admin_note = COUPON_NOTE
    list_display = [
        "code", "name", "type", "value", "currency", "duration", "duration_months",
        "times_redeemed", "max_redemptions", "expires_at", "archived",
    ]
    list_filter = ["type", "duration", "archived"]
    search_fields = ["code", "name", "=id"]
    inlines = [CouponRedemptionInline]


@admin.register(CouponRedemption)
class CouponRedemptionAdmin(ReadOnlyAdmin):
    admin_note = COUPON_NOTE
    list_display = ["id", "coupon", "customer", "subscription", "created_at"]
    list_filter = ["created_at", CustomerIdFilter]
    search_fields = ["coupon__code", "customer__external_id", "=subscription__id"]
    list_select_related = ["coupon", "customer", "subscription"]
    date_hierarchy = "created_at"


# --- outgoing webhooks: read-only, two audited actions ---------------------

WEBHOOK_NOTE = (
    "Endpoints are created and deleted through the API (POST/DELETE /api/v1/pay/webhooks); their "
    "signing secret is shown only in the answer to the create. An endpoint whose deliveries failed "
    "for WEBHOOK_DISABLE_AFTER_SECONDS is disabled: fix the receiver, then use \u201cRe-enable\u201d; "
    "the deliveries that waited are sent again. \u201cRedeliver\u201d on a delivery sends it once more now. "
    "Deleting an endpoint fails its pending deliveries; their last attempt row says so."
)


class WebhookPermissionMixin:
    def has_webhook_write_permission(self, request):
        return request.user.has_perm(f"{self.opts.app_label}.{get_permission_codename('change', self.opts)}")


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(WebhookPermissionMixin, ReadOnlyAdmin):
    admin_note = WEBHOOK_NOTE
    list_display = ["url", "id", "status", "failing_since", "disabled_reason", "events", "created_at", "live"]
    list_filter = ["status", ("deleted_at", admin.EmptyFieldListFilter), "created_at"]
    search_fields = ["=id", "url"]
    fields = ["id", "url", "events", "status", "disabled_reason", "disabled_at", "failing_since", "next_sequence",
              "created_at", "updated_at", "deleted_at"]  # never the secret
    readonly_fields = fields
    actions = ["reenable"]

    @admin.display(boolean=True, ordering="deleted_at")
    def live(self, endpoint):
        return endpoint.deleted_at is None

    def lookup_allowed(self, lookup, value, request=None):
        # The admin applies any local-field lookup from the query string, so
        # ?secret__startswith=… would reveal the signing secret a character at a time.
        if lookup.split("__")[0] == "secret":
            return False
        return super().lookup_allowed(lookup, value, request)

    @admin.action(description="Re-enable endpoint (and send what waited)", permissions=["webhook_write"])
    def reenable(self, request, queryset):
        def act(endpoint_id, now):
            endpoint, waiting = webhook_endpoint_enable(endpoint_id=endpoint_id, now=now)
            return endpoint, f"Re-enabled; {len(waiting)} waiting deliveries due."
        act_on_each(self, request, queryset, act, verb="enable", done="Re-enabled {n} endpoint(s).")


class WebhookAttemptInline(ReadOnlyInline):
    model = WebhookAttempt
    fields = ["number", "attempted_at", "succeeded", "status_code", "latency_ms", "error", "response_excerpt"]
    ordering = ["number"]
    show_change_link = False


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(WebhookPermissionMixin, ReadOnlyAdmin):
    admin_note = WEBHOOK_NOTE
    list_display = ["id", "endpoint", "sequence", "event_type", "status", "attempts", "last_attempt_at",
                    "next_attempt_at", "created_at"]
    list_filter = ["status", "event__type", "created_at"]
    search_fields = ["=id", "=event__id", "=endpoint__id", "endpoint__url"]
    list_select_related = ["endpoint", "event"]
    fields = ["id", "endpoint", "event", "event_type", "sequence", "status", "attempts", "last_attempt_at",
              "next_attempt_at", "succeeded_at", "created_at"]
    readonly_fields = fields
    inlines = [WebhookAttemptInline]
    actions = ["redeliver"]

    @admin.display(description="type", ordering="event__type")
    def event_type(self, delivery):
        return delivery.event.type

    @admin.action(description="Redeliver selected deliveries now", permissions=["webhook_write"])
    def redeliver(self, request, queryset):
        def act(delivery_id, now):
            return webhook_delivery_redeliver(delivery_id=delivery_id, now=now), "Queued for redelivery."
        act_on_each(self, request, queryset, act, verb="redeliver", done="Queued {n} delivery(ies) for redelivery.")
