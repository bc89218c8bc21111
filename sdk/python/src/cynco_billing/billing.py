"""``BillingClient``: the merchant API (``/api/v1/pay/``), one method per route of API.md.

Arguments are snake_case and become the camelCase fields of the body; nested
structures (a product's ``prices`` and ``features``, a check's ``lock``) are
passed as they go on the wire. Every mutating method takes ``idempotency_key``
(sent as the Idempotency-Key header: a retry with the same key and body gets
the first answer again). Errors raise ``CyncoBillingError`` with the server's
``code``, ``status`` and ``details``; no answer at all raises
``BillingServiceUnavailableError``. No automatic retries.
"""

from __future__ import annotations

import urllib.parse
from typing import Any, cast

from ._http import DEFAULT_TIMEOUT, encode_body, error_of, exchange, query_string, quote_segment
from .errors import BillingConfigurationError, CyncoBillingError
from .types import (
    Analytics,
    ApiKey,
    CheckResult,
    Coupon,
    CouponValidation,
    Customer,
    FinalizeLockResult,
    Invoice,
    ListOf,
    Page,
    PaymentMethod,
    PortalLink,
    Preview,
    Product,
    SpendCap,
    SubscribeResult,
    Subscription,
    TrackBatchResult,
    TrackResult,
    TrialBalance,
    Webhook,
    WebhookTest,
)

BASE_PATH = "/api/v1/pay"


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _body(**fields: Any) -> dict:
    """snake_case keyword arguments as a camelCase body, leaving out those not given (None)."""
    return {_camel(k): v for k, v in fields.items() if v is not None}


def _id(value: str) -> str:
    return quote_segment(value)


class BillingClient:
    """``BillingClient("https://billing.example", api_key="cp_sk_…")``; a publishable key
    (cp_pk_…) may call the routes API.md marks pk."""

    def __init__(self, base_url: str, api_key: str, *, timeout: float = DEFAULT_TIMEOUT):
        parsed = urllib.parse.urlsplit(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise BillingConfigurationError(f"base_url must be an http(s) URL, got {base_url!r}", code="CONFIGURATION")
        if not api_key:
            raise BillingConfigurationError("api_key is required", code="CONFIGURATION")
        self._base = base_url.rstrip("/") + BASE_PATH
        self._api_key = api_key
        self.timeout = timeout

    def request(self, method: str, path: str, body: dict | None = None, *, query: dict | None = None,
                idempotency_key: str | None = None) -> Any:
        """One call to ``/api/v1/pay/<path>``; the decoded JSON answer (None for 204)."""
        headers = {"Authorization": f"Bearer {self._api_key}"}
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        url = f"{self._base}/{path}{query_string(query or {})}"
        answer = exchange(method, url, body=encode_body(body) if body is not None else None, headers=headers,
                          timeout=self.timeout)
        if 200 <= answer.status < 300:
            return answer.data
        raise error_of(answer, default=CyncoBillingError)

    # --- customers --------------------------------------------------------------------

    def get_or_create_customer(self, customer_id: str, *, name: str | None = None, email: str | None = None,
                               metadata: dict | None = None, idempotency_key: str | None = None) -> Customer:
        body = _body(customer_id=customer_id, name=name, email=email, metadata=metadata)
        return cast(Customer, self.request("POST", "customers", body, idempotency_key=idempotency_key))

    def get_customer(self, customer_id: str) -> Customer:
        return cast(Customer, self.request("GET", f"customers/{_id(customer_id)}"))

    def update_customer(self, customer_id: str, *, name: str | None = None, email: str | None = None,
                        metadata: dict | None = None, idempotency_key: str | None = None) -> Customer:
        body = _body(name=name, email=email, metadata=metadata)
        return cast(Customer, self.request("PATCH", f"customers/{_id(customer_id)}", body, idempotency_key=idempotency_key))

    def delete_customer(self, customer_id: str, *, idempotency_key: str | None = None) -> None:
        self.request("DELETE", f"customers/{_id(customer_id)}", idempotency_key=idempotency_key)

    def list_customers(self, *, limit: int | None = None, cursor: str | None = None) -> Page:
        return cast(Page, self.request("GET", "customers", query={"limit": limit, "cursor": cursor}))

    def attach_payment_method(self, customer_id: str, payment_method: str, *,
                              idempotency_key: str | None = None) -> PaymentMethod:
        return cast(PaymentMethod, self.request("POST", f"customers/{_id(customer_id)}/payment-methods",
                                                {"paymentMethod": payment_method}, idempotency_key=idempotency_key))

    # --- products and plans -----------------------------------------------------------

    def create_product(self, *, name: str, slug: str, group: str | None = None, is_add_on: bool | None = None,
                       auto_enable: bool | None = None, free_trial: dict | None = None, prices: list | None = None,
                       features: list | None = None, idempotency_key: str | None = None) -> Product:
        body = _body(name=name, slug=slug, group=group, is_add_on=is_add_on, auto_enable=auto_enable,
                     free_trial=free_trial, prices=prices, features=features)
        return cast(Product, self.request("POST", "products", body, idempotency_key=idempotency_key))

    def list_products(self) -> ListOf:
        return cast(ListOf, self.request("GET", "products"))

    def get_product(self, product_id: str) -> Product:
        return cast(Product, self.request("GET", f"products/{_id(product_id)}"))

    def update_product(self, product_id: str, *, name: str | None = None, group: str | None = None,
                       is_add_on: bool | None = None, auto_enable: bool | None = None, free_trial: dict | None = None,
                       prices: list | None = None, features: list | None = None,
                       idempotency_key: str | None = None) -> Product:
        body = _body(name=name, group=group, is_add_on=is_add_on, auto_enable=auto_enable, free_trial=free_trial,
                     prices=prices, features=features)
        return cast(Product, self.request("PATCH", f"products/{_id(product_id)}", body, idempotency_key=idempotency_key))

    def list_plans(self, *, customer: str | None = None) -> ListOf:
        return cast(ListOf, self.request("GET", "plans", query={"customer": customer}))

    def get_pricing_table(self, *, customer: str | None = None) -> ListOf:
        return cast(ListOf, self.request("GET", "pricing-table", query={"customer": customer}))

    def list_product_versions(self, product_id: str) -> dict:
        return self.request("GET", f"products/{_id(product_id)}/versions")

    def migrate_customers(self, product_id: str, *, from_version_id: str, idempotency_key: str | None = None) -> dict:
        return self.request("POST", f"products/{_id(product_id)}/migrate", {"fromVersionId": from_version_id},
                            idempotency_key=idempotency_key)

    # --- subscriptions ----------------------------------------------------------------

    def preview_attach(self, *, customer: str, product: str) -> Preview:
        return cast(Preview, self.request("POST", "preview-attach", {"customer": customer, "product": product}))

    def subscribe(self, *, customer: str | dict, product: str, success_url: str | None = None,
                  cancel_url: str | None = None, quantity: int | None = None, coupon: str | None = None,
                  carry_over_balances: dict | None = None, carry_over_usages: dict | None = None,
                  idempotency_key: str | None = None) -> SubscribeResult:
        body = _body(customer=customer, product=product, success_url=success_url, cancel_url=cancel_url,
                     quantity=quantity, coupon=coupon, carry_over_balances=carry_over_balances,
                     carry_over_usages=carry_over_usages)
        return cast(SubscribeResult, self.request("POST", "subscribe", body, idempotency_key=idempotency_key))

    def update_subscription(self, *, customer: str, product: str, cancel_action: str | None = None,
                            pause: bool | None = None, quantity: int | None = None,
                            idempotency_key: str | None = None) -> dict:
        body = _body(customer=customer, product=product, cancel_action=cancel_action, pause=pause, quantity=quantity)
        return self.request("POST", "subscriptions/update", body, idempotency_key=idempotency_key)

    def preview_update(self, *, customer: str, product: str, cancel_action: str | None = None,
                       pause: bool | None = None, quantity: int | None = None) -> Preview:
        body = _body(customer=customer, product=product, cancel_action=cancel_action, pause=pause, quantity=quantity)
        return cast(Preview, self.request("POST", "subscriptions/preview-update", body))

    def list_subscriptions(self, *, status: str | None = None, customer: str | None = None, limit: int | None = None,
                           cursor: str | None = None) -> Page:
        query = {"status": status, "customer": customer, "limit": limit, "cursor": cursor}
        return cast(Page, self.request("GET", "subscriptions", query=query))

    def cancel(self, *, customer: str, product: str | None = None, immediately: bool | None = None,
               idempotency_key: str | None = None) -> dict[str, Subscription]:
        body = _body(customer=customer, product=product, immediately=immediately)
        return self.request("POST", "cancel", body, idempotency_key=idempotency_key)

    # --- entitlements -----------------------------------------------------------------

    def check(self, *, customer: str, feature: str, required_balance: int | None = None,
              send_event: bool | None = None, entity_id: str | None = None, lock: dict | None = None,
              idempotency_key: str | None = None) -> CheckResult:
        """``lock={"enabled": True, "expiresAt": <ISO time or epoch ms>}`` reserves units."""
        body = _body(customer=customer, feature=feature, required_balance=required_balance, send_event=send_event,
                     entity_id=entity_id, lock=lock)
        return cast(CheckResult, self.request("POST", "check", body, idempotency_key=idempotency_key))

    def track(self, *, customer: str, feature: str, amount: int | None = None, entity_id: str | None = None,
              idempotency_key: str | None = None, properties: dict | None = None,
              timestamp: str | int | None = None) -> TrackResult:
        """``idempotency_key`` goes in the body here (API.md): a repeated key records once."""
        body = _body(customer=customer, feature=feature, amount=amount, entity_id=entity_id,
                     idempotency_key=idempotency_key, properties=properties, timestamp=timestamp)
        return cast(TrackResult, self.request("POST", "track", body))

    def track_batch(self, events: list[dict], *, idempotency_key: str | None = None) -> TrackBatchResult:
        """``trackBatch``: up to 1,000 track events in one call, each a dict of ``track``'s
        arguments (``{"customer": "acme", "feature": "api-calls", "amount": 3,
        "idempotency_key": "req-1"}``; camelCase keys pass through). Answers
        ``{"results": [...]}`` in input order, one per event: ``{eventId, balance,
        usage, replayed}`` or ``{error: {code, message, details}}``, so one bad event
        refuses only itself. ``idempotency_key`` here is the Idempotency-Key header of
        the whole call; each event's own ``idempotency_key`` records it once."""
        body = {"events": [_body(**event) for event in events]}
        return cast(TrackBatchResult, self.request("POST", "track/batch", body, idempotency_key=idempotency_key))

    def finalize_lock(self, *, lock_id: str, action: str, override_value: int | None = None,
                      idempotency_key: str | None = None) -> FinalizeLockResult:
        body = _body(lock_id=lock_id, action=action, override_value=override_value)
        return cast(FinalizeLockResult, self.request("POST", "locks/finalize", body, idempotency_key=idempotency_key))

    def create_balance(self, *, customer: str, feature: str, granted_balance: int, expires_at: str | int | None = None,
                       entity_id: str | None = None, idempotency_key: str | None = None) -> dict:
        body = _body(customer=customer, feature=feature, granted_balance=granted_balance, expires_at=expires_at,
                     entity_id=entity_id)
        return self.request("POST", "balances", body, idempotency_key=idempotency_key)

    def update_balance(self, *, customer: str, feature: str, usage: int | None = None, balance: int | None = None,
                       entity_id: str | None = None, idempotency_key: str | None = None) -> dict:
        body = _body(customer=customer, feature=feature, usage=usage, balance=balance, entity_id=entity_id)
        return self.request("PATCH", "balances", body, idempotency_key=idempotency_key)

    def create_entity(self, customer_id: str, *, entity_id: str, feature_id: str, name: str | None = None,
                      idempotency_key: str | None = None) -> dict:
        body = _body(entity_id=entity_id, feature_id=feature_id, name=name)
        return self.request("POST", f"customers/{_id(customer_id)}/entities", body, idempotency_key=idempotency_key)

    def delete_entity(self, customer_id: str, entity_id: str, *, idempotency_key: str | None = None) -> None:
        self.request("DELETE", f"customers/{_id(customer_id)}/entities/{_id(entity_id)}",
                     idempotency_key=idempotency_key)

    def list_entities(self, customer_id: str) -> ListOf:
        return cast(ListOf, self.request("GET", f"customers/{_id(customer_id)}/entities"))

    def get_spend_cap(self, *, customer: str, feature: str) -> SpendCap:
        return cast(SpendCap, self.request("GET", "spend-caps", query={"customer": customer, "feature": feature}))

    def set_spend_cap(self, *, customer: str, feature: str, cap: int | None,
                      idempotency_key: str | None = None) -> SpendCap:
        body = {"customer": customer, "feature": feature, "cap": cap}
        return cast(SpendCap, self.request("PUT", "spend-caps", body, idempotency_key=idempotency_key))

    def set_product_spend_cap(self, product_id: str, *, feature: str, cap: int | None,
                              idempotency_key: str | None = None) -> dict:
        return self.request("PUT", f"products/{_id(product_id)}/spend-cap", {"feature": feature, "cap": cap},
                            idempotency_key=idempotency_key)

    def aggregate_events(self, *, customer: str, feature: str, range: str | None = None,
                         group_by: str | None = None) -> dict:
        query = {"customer": customer, "feature": feature, "range": range, "groupBy": group_by}
        return self.request("GET", "events/aggregate", query=query)

    # --- portal, analytics, webhooks ----------------------------------------------------

    def portal(self, *, customer: str, return_url: str | None = None,
               idempotency_key: str | None = None) -> PortalLink:
        body = _body(customer=customer, return_url=return_url)
        return cast(PortalLink, self.request("POST", "portal", body, idempotency_key=idempotency_key))

    def analytics(self) -> Analytics:
        return cast(Analytics, self.request("GET", "analytics"))

    def revenue_timeline(self, *, months: int | None = None) -> ListOf:
        return cast(ListOf, self.request("GET", "analytics/revenue-timeline", query={"months": months}))

    def create_webhook(self, *, url: str, events: list[str], idempotency_key: str | None = None) -> Webhook:
        return cast(Webhook, self.request("POST", "webhooks", {"url": url, "events": events},
                                          idempotency_key=idempotency_key))

    def list_webhooks(self) -> ListOf:
        return cast(ListOf, self.request("GET", "webhooks"))

    def delete_webhook(self, webhook_id: str, *, idempotency_key: str | None = None) -> None:
        self.request("DELETE", f"webhooks/{_id(webhook_id)}", idempotency_key=idempotency_key)

    def test_webhook(self, webhook_id: str, *, idempotency_key: str | None = None) -> WebhookTest:
        """Send one signed ``webhook.test`` event to the endpoint now and answer what
        happened: ``{delivered, status, latencyMs, error, eventId}`` (``delivered`` false
        is an answer, not an error). Not retried, and no sequence number."""
        return cast(WebhookTest, self.request("POST", f"webhooks/{_id(webhook_id)}/test", {},
                                              idempotency_key=idempotency_key))

    # --- coupons ------------------------------------------------------------------------

    def create_coupon(self, *, code: str, type: str, value: int, duration: str, duration_months: int | None = None,
                      max_redemptions: int | None = None, expires_at: str | int | None = None,
                      name: str | None = None, idempotency_key: str | None = None) -> Coupon:
        body = _body(code=code, type=type, value=value, duration=duration, duration_months=duration_months,
                     max_redemptions=max_redemptions, expires_at=expires_at, name=name)
        return cast(Coupon, self.request("POST", "coupons", body, idempotency_key=idempotency_key))

    def list_coupons(self, *, archived: bool | None = None, limit: int | None = None,
                     cursor: str | None = None) -> Page:
        return cast(Page, self.request("GET", "coupons", query={"archived": archived, "limit": limit, "cursor": cursor}))

    def get_coupon(self, coupon_id: str) -> Coupon:
        return cast(Coupon, self.request("GET", f"coupons/{_id(coupon_id)}"))

    def update_coupon(self, coupon_id: str, *, idempotency_key: str | None = None, **changes: Any) -> Coupon:
        """``changes`` in snake_case (``max_redemptions=…``, ``expires_at=…``, ``name=…``)."""
        body = {_camel(k): v for k, v in changes.items()}
        return cast(Coupon, self.request("PATCH", f"coupons/{_id(coupon_id)}", body, idempotency_key=idempotency_key))

    def archive_coupon(self, coupon_id: str, *, idempotency_key: str | None = None) -> Coupon:
        return cast(Coupon, self.request("POST", f"coupons/{_id(coupon_id)}/archive", {},
                                         idempotency_key=idempotency_key))

    def validate_coupon(self, *, code: str, customer: str, product: str, amount: int) -> CouponValidation:
        body = {"code": code, "customer": customer, "product": product, "amount": amount}
        return cast(CouponValidation, self.request("POST", "coupons/validate", body))

    # --- API keys -----------------------------------------------------------------------

    def create_api_key(self, *, name: str, type: str, idempotency_key: str | None = None) -> ApiKey:
        return cast(ApiKey, self.request("POST", "api-keys", {"name": name, "type": type},
                                         idempotency_key=idempotency_key))

    def list_api_keys(self) -> ListOf:
        return cast(ListOf, self.request("GET", "api-keys"))

    def revoke_api_key(self, key_id: str, *, idempotency_key: str | None = None) -> None:
        self.request("DELETE", f"api-keys/{_id(key_id)}", idempotency_key=idempotency_key)

    # --- rewards and referrals ------------------------------------------------------------

    def create_reward_program(self, *, idempotency_key: str | None = None, **fields: Any) -> dict:
        return self.request("POST", "reward-programs", _body(**fields), idempotency_key=idempotency_key)

    def list_reward_programs(self) -> ListOf:
        return cast(ListOf, self.request("GET", "reward-programs"))

    def create_referral_code(self, *, idempotency_key: str | None = None, **fields: Any) -> dict:
        return self.request("POST", "referral-codes", _body(**fields), idempotency_key=idempotency_key)

    def list_referral_codes(self, *, customer: str | None = None) -> ListOf:
        return cast(ListOf, self.request("GET", "referral-codes", query={"customer": customer}))

    def redeem_referral_code(self, *, code: str, customer: str, idempotency_key: str | None = None) -> dict:
        return self.request("POST", "referral-codes/redeem", {"code": code, "customer": customer},
                            idempotency_key=idempotency_key)

    # --- audit, ledger, invoices ------------------------------------------------------------

    def list_audit_events(self, *, actor: str | None = None, action: str | None = None, since: str | int | None = None,
                          limit: int | None = None, cursor: str | None = None) -> Page:
        query = {"actor": actor, "action": action, "since": since, "limit": limit, "cursor": cursor}
        return cast(Page, self.request("GET", "audit-events", query=query))

    def trial_balance(self, *, at: str | int | None = None, currency: str | None = None) -> TrialBalance:
        return cast(TrialBalance, self.request("GET", "ledger/trial-balance", query={"at": at, "currency": currency}))

    def list_ledger_entries(self, *, since: str | int | None = None, account: str | None = None,
                            limit: int | None = None, cursor: str | None = None) -> Page:
        query = {"since": since, "account": account, "limit": limit, "cursor": cursor}
        return cast(Page, self.request("GET", "ledger/entries", query=query))

    def list_invoices(self, *, customer: str | None = None, status: str | None = None, limit: int | None = None,
                      cursor: str | None = None) -> Page:
        query = {"customer": customer, "status": status, "limit": limit, "cursor": cursor}
        return cast(Page, self.request("GET", "invoices", query=query))

    def get_invoice(self, invoice_id: str) -> Invoice:
        return cast(Invoice, self.request("GET", f"invoices/{_id(invoice_id)}"))

    def ping(self) -> dict:
        return self.request("GET", "ping")
