"""Subscribing, changing and cancelling: quotes, invoices and their collection.

Every use case here runs under ``customer_billing_lock`` (one billing
operation per customer at a time, across processes) and in this order: a
durable transaction that decides and issues the invoice, the gateway call
outside any transaction, then a durable transaction that records the
outcome and applies it. ``quote_attach``/``quote_update`` are pure, and both
the previews and the real calls bill exactly the lines they return.

Proration (an upgrade, a quantity change, an immediate cancel) is computed
to the second and rounded once, half up:

    credit = round(old price × seconds left in the period / seconds in the period)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from django.db import IntegrityError, transaction

from billing.errors import Conflict, ValidationFailed
from billing.locks import customer_billing_lock, lock_customer, lock_invoice, lock_subscription
from billing.models import Coupon, CouponRedemption, Customer, InvoiceLine, Product, ProductVersion, Subscription
from billing.money import round_minor
from billing.periods import add_interval
from billing.rating import tiered_amount
from billing.services.coupons import (
    coupon_cycles_after_first,
    coupon_discount,
    coupon_redeem,
    coupon_redemptions_release,
    coupon_usable,
)
from billing.services.fulfilment import (
    buckets_deactivate,
    invoice_paid_apply,
    buckets_reactivate,
    plan_quantity_set,
    subscription_activate,
    subscription_end,
    subscription_event_data,
    subscription_new,
)
from billing.services.events import event_emit
from billing.services.grants import product_attach, subscription_slot
from billing.services.invoices import LineDraft, invoice_issue, invoice_void, totals
from billing.services.payments import (
    Collection,
    checkout_create,
    checkout_url,
    invoice_collect,
    invoice_refund_due,
    refund_send,
    payment_method_default,
)

MONTHLY_FACTOR = {"week": Decimal(52) / Decimal(12), "month": Decimal(1), "year": Decimal(1) / Decimal(12)}


@dataclass
class Quote:
    """What attaching a product would do and bill."""

    scenario: str  # new | upgrade | downgrade | topup | free
    product: Product
    version: ProductVersion
    quantity: int
    currency: str
    lines: list[LineDraft] = field(default_factory=list)
    period: tuple[datetime | None, datetime | None] = (None, None)
    replaces: Subscription | None = None
    coupon: Coupon | None = None
    trial_days: int | None = None

    @property
    def total(self) -> int:
        return totals(self.lines)[2]

    @property
    def due_now(self) -> int:
        return 0 if self.scenario == "downgrade" else self.total

    @property
    def next_cycle_at(self) -> datetime | None:
        """When the next billing happens: the end of the period this quote starts,
        or for a downgrade the moment it takes effect (the current period's end)."""
        return self.period[0] if self.scenario == "downgrade" else self.period[1]


@dataclass
class AttachResult:
    subscription: Subscription | None = None
    invoice: object | None = None
    url: str | None = None
    required_action: dict | None = None


def _recurring_price(version: ProductVersion):
    return version.prices.filter(type="recurring").order_by("position").first()


def period_amount(version: ProductVersion, quantity: int) -> int:
    """One period's price of ``quantity`` units: flat × quantity, or the tiers."""
    price = _recurring_price(version) or version.prices.order_by("position").first()
    if price is None:
        return 0
    if price.tiers:
        return tiered_amount(tiers=price.tiers, mode=price.tiers_mode, quantity=quantity)
    return price.amount * quantity


def monthly_value(version: ProductVersion, quantity: int) -> Decimal:
    price = _recurring_price(version)
    if price is None:
        return Decimal(0)
    return Decimal(period_amount(version, quantity)) * MONTHLY_FACTOR[price.billing_interval]


def unused_fraction(sub: Subscription, now: datetime) -> tuple[int, int]:
    """(seconds left, seconds in the period) of the subscription's current period."""
    start, end = sub.current_period_start, sub.current_period_end
    if not start or not end or end <= now:
        return 0, 1
    whole = int((end - start).total_seconds())
    left = int((end - max(now, start)).total_seconds())
    return left, max(whole, 1)


def prorate(amount: int, left: int, whole: int) -> int:
    """amount × left / whole, rounded once (half up)."""
    return round_minor(Decimal(amount) * Decimal(left) / Decimal(whole))


def _paid_period_amount(sub: Subscription) -> int:
    """What the current period was billed for (0 while trialing or free)."""
    if sub.status == Subscription.Status.TRIALING:
        return 0
    return period_amount(sub.version, sub.quantity)


def _discount_lines(coupon: Coupon | None, lines: list[LineDraft]) -> list[LineDraft]:
    if coupon is None:
        return []
    discount = coupon_discount(coupon=coupon, subtotal=totals(lines)[0])
    if not discount:
        return []
    return [LineDraft(kind=InvoiceLine.Kind.DISCOUNT, description=f"Coupon {coupon.code}", amount=-discount)]


def _live_in_slot(customer: Customer, product: Product) -> Subscription | None:
    return (
        Subscription.objects.filter(customer=customer, slot=subscription_slot(product), status__in=Subscription.LIVE_STATUSES)
        .select_related("product", "version")
        .first()
    )


def _had_trial(customer: Customer, product: Product) -> bool:
    return Subscription.objects.filter(customer=customer, product=product, trial_end__isnull=False).exists()


def quote_attach(*, customer: Customer, product: Product, quantity: int, now: datetime,
                 coupon_code: str | None = None) -> Quote:
    """Price attaching ``product``. Raises Conflict (already subscribed), CouponInvalid."""
    version = product.current_version
    price = version.prices.order_by("position").first()
    currency = price.currency if price else "usd"
    coupon = coupon_usable(code=coupon_code, now=now, currency=currency) if coupon_code else None
    amount = period_amount(version, quantity)
    if price is not None and price.type == "one_off":
        lines = [LineDraft(kind=InvoiceLine.Kind.TOPUP, description=f"{product.name} × {quantity}", quantity=quantity,
                           unit_amount=price.amount, amount=amount)]
        return Quote("topup", product, version, quantity, currency, lines + _discount_lines(coupon, lines), coupon=coupon)
    current = _live_in_slot(customer, product)
    if current is not None and current.product_id == product.pk:
        raise Conflict("The customer already has this product.", details={"product": product.slug, "subscription": current.pk})
    interval = price.billing_interval if price else ""
    if current is None:
        trial = version.free_trial_days or 0
        if coupon is not None and coupon.type == Coupon.Type.TRIAL_EXTENSION:
            trial += coupon.value
        if trial and not _had_trial(customer, product):
            return Quote("new", product, version, quantity, currency, [], (now, add_interval(now, "day", trial)),
                         coupon=coupon, trial_days=trial)
        end = add_interval(now, interval) if interval else None
        if amount == 0:
            return Quote("free", product, version, quantity, currency, [], (now, end), coupon=coupon)
        lines = [LineDraft(kind=InvoiceLine.Kind.PLAN, description=f"{product.name} ({interval}ly)", quantity=quantity,
                           unit_amount=price.amount if not price.tiers else amount, amount=amount)]
        return Quote("new", product, version, quantity, currency, lines + _discount_lines(coupon, lines), (now, end), coupon=coupon)
    # Another main plan of the group: an upgrade now, or a downgrade at the period end.
    if monthly_value(version, quantity) < monthly_value(current.version, current.quantity):
        return Quote("downgrade", product, version, quantity, currency, [], (current.current_period_end, None),
                     replaces=current, coupon=coupon)
    end = add_interval(now, interval) if interval else None
    lines = []
    if amount:
        lines.append(LineDraft(kind=InvoiceLine.Kind.PLAN, description=f"{product.name} ({interval}ly)", quantity=quantity,
                               unit_amount=price.amount if not price.tiers else amount, amount=amount))
    left, whole = unused_fraction(current, now)
    credit = min(prorate(_paid_period_amount(current), left, whole), amount)
    if credit:
        lines.append(LineDraft(kind=InvoiceLine.Kind.PRORATION, description=f"Unused time on {current.product.name}",
                               amount=-credit))
    return Quote("upgrade", product, version, quantity, currency, lines + _discount_lines(coupon, lines), (now, end),
                 replaces=current, coupon=coupon)


def subscribe(*, customer: Customer, product: Product, quantity: int, now: datetime, coupon_code: str | None = None,
              success_url: str = "", cancel_url: str = "", carry_over_balances: bool = False,
              carry_over_usages: bool = False, carry_over_features: list[str] | None = None,
              checkout_only: bool = False) -> AttachResult:
    """Attach a product: free at once; paid charged to the default card (or a
    checkout url without one); a trial starts without charge; an upgrade is
    charged now with proration; a downgrade waits for the period end.

    Raises Conflict (already subscribed, slot taken), CouponInvalid, NotFound.
    A declined card or 3-D Secure is not an error: ``required_action`` says it
    and nothing is activated. ``checkout_only`` (a publishable key) never
    charges a saved card: the answer is a checkout url.
    """
    with customer_billing_lock(customer_id=customer.pk):
        with transaction.atomic(durable=True):
            lock_customer(pk=customer.pk)
            quote = quote_attach(customer=customer, product=product, quantity=quantity, now=now, coupon_code=coupon_code)
            if quote.scenario == "free":
                return AttachResult(subscription=_attach_free(customer, product, quantity, now))
            if quote.scenario == "downgrade":
                return AttachResult(subscription=_schedule_downgrade(quote.replaces, product, now))
            if quote.scenario == "new" and quote.trial_days:
                return _start_trial(customer, quote, now, success_url, cancel_url)
            invoice, sub = _issue_for_quote(customer, quote, now, carry_over_balances, carry_over_usages, carry_over_features)
        if invoice.status == "paid":  # nothing to charge (a 100 % coupon, a full credit)
            with transaction.atomic(durable=True):
                sub = invoice_paid_apply(invoice=invoice, now=now) or sub
            return AttachResult(subscription=sub, invoice=invoice)
        result = Collection(status="no_payment_method") if checkout_only else invoice_collect(invoice=invoice, now=now)
        return _after_collection(customer, invoice, sub, result, now, success_url, cancel_url)


def _attach_free(customer, product, quantity, now) -> Subscription | None:
    try:
        with transaction.atomic():
            return product_attach(customer=customer, product=product, quantity=quantity, now=now)
    except IntegrityError:
        raise Conflict("The customer already has a plan in this slot.", details={"product": product.slug}) from None


def _schedule_downgrade(current: Subscription, product: Product, now: datetime) -> Subscription:
    sub = lock_subscription(pk=current.pk)
    sub.scheduled_product = product
    sub.updated_at = now
    sub.save(update_fields=["scheduled_product", "updated_at"])
    event_emit(type="subscription.updated", customer_id=sub.customer_id,
               data={**subscription_event_data(sub), "scheduledProduct": product.slug}, now=now)
    return sub


def _start_trial(customer, quote: Quote, now, success_url, cancel_url) -> AttachResult:
    sub = subscription_new(customer=customer, product=quote.product, version=quote.version, quantity=quote.quantity,
                           status=Subscription.Status.INCOMPLETE, now=now, coupon=_money_coupon(quote.coupon),
                           coupon_cycles_left=None)
    if quote.coupon is not None:
        coupon_redeem(coupon=quote.coupon, customer=customer, subscription=sub, now=now)
        if sub.coupon_id:  # the first paid invoice (the trial's end) is a renewal: it counts
            after_first = coupon_cycles_after_first(quote.coupon)
            sub.coupon_cycles_left = None if after_first is None else after_first + 1
            sub.save(update_fields=["coupon_cycles_left"])
    if quote.version.free_trial_requires_payment_method and payment_method_default(customer) is None:
        session = checkout_create(customer=customer, subscription=sub, success_url=success_url, cancel_url=cancel_url, now=now)
        return AttachResult(subscription=sub, url=checkout_url(session))
    _activate_or_conflict(sub, now, trial_days=quote.trial_days)
    return AttachResult(subscription=sub)


def _money_coupon(coupon: Coupon | None) -> Coupon | None:
    return coupon if coupon is not None and coupon.type != Coupon.Type.TRIAL_EXTENSION else None


def _activate_or_conflict(sub: Subscription, now: datetime, trial_days: int | None = None) -> None:
    try:
        with transaction.atomic():
            subscription_activate(sub=sub, now=now, trial_days=trial_days)
    except IntegrityError:
        raise Conflict("The customer already has a plan in this slot.", details={"product": sub.product.slug}) from None


def _issue_for_quote(customer, quote: Quote, now, carry_balances, carry_usages, carry_features):
    sub = None
    coupon = quote.coupon
    if quote.scenario == "topup":
        action = {"type": "topup", "product": quote.product.pk, "version": quote.version.pk, "quantity": quote.quantity}
        key = f"topup:{customer.pk}:{now.isoformat()}:{quote.product.pk}"
    elif quote.scenario == "upgrade":
        # The new plan keeps the coupon the old one had, unless this upgrade brings its own.
        carried, cycles = quote.replaces.coupon, quote.replaces.coupon_cycles_left
        if _money_coupon(coupon):
            carried, cycles = coupon, coupon_cycles_after_first(coupon)
        action = {"type": "switch", "from": quote.replaces.pk, "product": quote.product.pk, "version": quote.version.pk,
                  "quantity": quote.quantity, "carryOverBalances": carry_balances, "carryOverUsages": carry_usages,
                  "featureIds": carry_features, "coupon": carried.pk if carried else None,
                  "couponCyclesLeft": cycles if carried else None}
        key = f"upgrade:{quote.replaces.pk}:{now.isoformat()}"
    else:
        cycles = coupon_cycles_after_first(coupon) if _money_coupon(coupon) else None
        sub = subscription_new(customer=customer, product=quote.product, version=quote.version, quantity=quote.quantity,
                               status=Subscription.Status.INCOMPLETE, now=now, coupon=_money_coupon(coupon),
                               coupon_cycles_left=cycles if _money_coupon(coupon) else None)
        action = {"type": "activate", "subscription": sub.pk}
        key = f"subscribe:{sub.pk}"
    if coupon is not None:  # given back if the invoice is voided unpaid (invoice_void_unpaid)
        redemption = coupon_redeem(coupon=coupon, customer=customer, subscription=sub or quote.replaces, now=now)
        action["redeemedCoupon"], action["couponRedemption"] = coupon.pk, redemption.pk
    invoice = invoice_issue(customer=customer, subscription=sub or quote.replaces, billing_key=key, reason=quote.scenario,
                            currency=quote.currency, lines=quote.lines, period=quote.period, pending_action=action, now=now)
    return invoice, sub


def _after_collection(customer, invoice, sub, result: Collection, now, success_url, cancel_url) -> AttachResult:
    invoice.refresh_from_db()
    if result.status == "succeeded":
        if result.subscription is not None:
            result.subscription.refresh_from_db()
        return AttachResult(subscription=result.subscription or sub, invoice=invoice)
    with transaction.atomic(durable=True):
        session = checkout_create(customer=customer, invoice=invoice, subscription=sub, now=now, success_url=success_url,
                                  cancel_url=cancel_url,
                                  payment=result.payment if result.status == "requires_action" else None)
    url = checkout_url(session)
    if result.status == "no_payment_method":
        return AttachResult(subscription=sub, invoice=invoice, url=url)
    if result.status == "requires_action":
        action = {"code": "3ds_required", "reason": "The card needs 3-D Secure authentication; open the url to complete it."}
    else:
        action = {"code": "payment_failed", "reason": f"The card was declined ({result.failure_code or 'unknown'}); open the url to pay with another card."}
    return AttachResult(subscription=sub, invoice=invoice, url=url, required_action=action)


# --- updateSubscription / cancel ---------------------------------------------------


@dataclass
class UpdateQuote:
    lines: list[LineDraft]
    action: str  # cancel_end_of_cycle | uncancel | cancel_immediately | pause | resume | quantity | none
    refund: int = 0
    quantity: int | None = None

    @property
    def total(self) -> int:
        return totals(self.lines)[2] if self.lines else -self.refund


def live_subscription(customer: Customer, product: Product) -> Subscription:
    sub = (
        Subscription.objects.filter(customer=customer, product=product, status__in=Subscription.LIVE_STATUSES)
        .select_related("product", "version", "customer")
        .first()
    )
    if sub is None:
        raise Conflict("The customer has no live subscription to this product.", details={"product": product.slug})
    return sub


def quote_update(*, sub: Subscription, now: datetime, cancel_action: str | None = None, pause: bool | None = None,
                 quantity: int | None = None) -> UpdateQuote:
    """Price an update. Only one kind of change per call. Raises ValidationFailed, Conflict."""
    asked = [x for x in (cancel_action, pause, quantity) if x is not None]
    if len(asked) != 1:
        raise ValidationFailed("cancelAction", "give exactly one of cancelAction, pause or quantity")
    left, whole = unused_fraction(sub, now)
    if cancel_action == "cancel_immediately":
        refund = min(prorate(_paid_period_amount(sub), left, whole), _refundable(sub))
        return UpdateQuote([], cancel_action, refund=refund)
    if cancel_action in ("cancel_end_of_cycle", "uncancel"):
        return UpdateQuote([], cancel_action)
    if pause is not None:
        if pause and sub.status == Subscription.Status.PAUSED or not pause and sub.status != Subscription.Status.PAUSED:
            raise Conflict(f"The subscription is {'already' if pause else 'not'} paused.", details={"status": sub.status})
        if pause:
            return UpdateQuote([], "pause")
        lines = []
        if sub.current_period_end and sub.current_period_end <= now:
            amount = period_amount(sub.version, sub.quantity)
            if amount:
                lines = [LineDraft(kind=InvoiceLine.Kind.PLAN, description=f"{sub.product.name} (resumed)",
                                   quantity=sub.quantity, unit_amount=amount // sub.quantity, amount=amount)]
        return UpdateQuote(lines, "resume")
    if quantity == sub.quantity:
        return UpdateQuote([], "none", quantity=quantity)
    old_amount = period_amount(sub.version, sub.quantity) if sub.status != Subscription.Status.TRIALING else 0
    new_amount = period_amount(sub.version, quantity) if sub.status != Subscription.Status.TRIALING else 0
    if quantity > sub.quantity:
        charge = prorate(new_amount - old_amount, left, whole)
        lines = [LineDraft(kind=InvoiceLine.Kind.PRORATION, description=f"{sub.product.name}: {sub.quantity} → {quantity} for the rest of the period",
                           quantity=quantity - sub.quantity, unit_amount=charge, amount=charge)] if charge else []
        return UpdateQuote(lines, "quantity", quantity=quantity)
    refund = min(prorate(old_amount - new_amount, left, whole), _refundable(sub))
    return UpdateQuote([], "quantity", refund=refund, quantity=quantity)


def _refundable(sub: Subscription) -> int:
    """What of the period's payment is not refunded yet, nor due to be (pending refunds count)."""
    invoice = _period_invoice(sub)
    if invoice is None:
        return 0
    pending = sum(invoice.payments.filter(kind="refund", status="pending", unapplied=False).values_list("amount", flat=True))
    return invoice.amount_paid - invoice.amount_refunded - pending


def _period_invoice(sub: Subscription):
    """The latest paid invoice of the subscription (what a refund goes back against)."""
    return sub.invoices.filter(status="paid", amount_paid__gt=0).order_by("-created_at", "-id").first()


@dataclass
class UpdateResult:
    subscription: Subscription
    invoice: object | None = None
    refund: int = 0
    required_action: dict | None = None
    url: str | None = None


def subscription_update(*, customer: Customer, product: Product, now: datetime, cancel_action: str | None = None,
                        pause: bool | None = None, quantity: int | None = None) -> UpdateResult:
    """Cancel at period end, uncancel, cancel now (prorated refund), pause,
    resume, or change the quantity (an increase charged prorated now, a
    decrease refunded prorated). Raises Conflict, ValidationFailed."""
    with customer_billing_lock(customer_id=customer.pk):
        with transaction.atomic(durable=True):
            sub = lock_subscription(pk=live_subscription(customer, product).pk)
            q = quote_update(sub=sub, now=now, cancel_action=cancel_action, pause=pause, quantity=quantity)
            invoice = None
            if q.action == "cancel_end_of_cycle":
                sub.cancel_at_period_end = True
                sub.canceled_at = now
            elif q.action == "uncancel":
                sub.cancel_at_period_end = False
                sub.canceled_at = None
                sub.scheduled_product = None
            elif q.action == "cancel_immediately":
                subscription_end(sub=sub, status=Subscription.Status.CANCELED, now=now)
            elif q.action == "pause":
                sub.status = Subscription.Status.PAUSED
                sub.paused_at = now
                buckets_deactivate(sub=sub, now=now)
            elif q.action == "resume":
                sub.status = Subscription.Status.ACTIVE
                sub.paused_at = None
                if q.lines:
                    sub.current_period_start = now
                    sub.current_period_end = add_interval(now, sub.billing_interval)
                    invoice = invoice_issue(customer=customer, subscription=sub, billing_key=f"resume:{sub.pk}:{now.isoformat()}",
                                            reason="renewal", currency=sub.currency, lines=q.lines,
                                            period=(sub.current_period_start, sub.current_period_end),
                                            pending_action={"type": "renewal", "subscription": sub.pk}, now=now)
                    sub.status = Subscription.Status.PAST_DUE if invoice.status == "open" else Subscription.Status.ACTIVE
                sub.save()
                buckets_reactivate(sub=sub, now=now)
            elif q.action == "quantity" and q.lines:
                invoice = invoice_issue(customer=customer, subscription=sub, billing_key=f"quantity:{sub.pk}:{now.isoformat()}",
                                        reason="quantity", currency=sub.currency, lines=q.lines,
                                        period=(now, sub.current_period_end),
                                        pending_action={"type": "quantity", "subscription": sub.pk, "quantity": q.quantity}, now=now)
            elif q.action == "quantity":
                plan_quantity_set(sub=sub, quantity=q.quantity, now=now)
            if q.action in ("cancel_end_of_cycle", "uncancel", "pause"):
                sub.updated_at = now
                sub.save()
                event_emit(type="subscription.updated", customer_id=sub.customer_id, data=subscription_event_data(sub), now=now)
            # The refund is recorded with the change (pending) and sent after the commit;
            # if the gateway fails then, the billing cycle sends it again.
            refund_invoice = _period_invoice(sub) if q.refund else None
            refund = (invoice_refund_due(invoice=refund_invoice, amount=q.refund, now=now, reason=q.action)
                      if refund_invoice is not None else None)
        if refund is not None:
            refund_send(refund=refund, now=now)
        result = UpdateResult(subscription=sub, invoice=invoice, refund=q.refund)
        if invoice is not None and invoice.status == "open":
            collection = invoice_collect(invoice=invoice, now=now)
            if collection.status != "succeeded":
                if q.action == "quantity":
                    with transaction.atomic(durable=True):
                        invoice_void(invoice=lock_invoice(pk=invoice.pk), now=now)
                    result.required_action = {"code": "3ds_required" if collection.status == "requires_action" else "payment_failed",
                                              "reason": "The quantity was not changed: the card could not be charged."}
            invoice.refresh_from_db()
        sub.refresh_from_db()
        return result


def cancel(*, customer: Customer, product: Product | None, immediately: bool, now: datetime) -> Subscription:
    """Cancel the customer's subscription to ``product`` (or their only main
    plan): now with a prorated refund, or at the period end."""
    if product is None:
        subs = list(Subscription.objects.filter(customer=customer, status__in=Subscription.LIVE_STATUSES, product__is_add_on=False)[:2])
        if len(subs) != 1:
            raise ValidationFailed("product", "the customer has several subscriptions; name one" if subs else "the customer has no live subscription")
        product = subs[0].product
    return subscription_update(customer=customer, product=product, now=now,
                               cancel_action="cancel_immediately" if immediately else "cancel_end_of_cycle").subscription


def invoice_void_unpaid(*, invoice, now: datetime) -> None:
    """Void an abandoned invoice (a checkout never paid) and undo the coupon
    redemption made with it: the row is removed and the count given back, so a
    coupon with ``maxRedemptions`` can be used again."""
    invoice_void(invoice=invoice, now=now)
    action = invoice.pending_action or {}
    if action.get("couponRedemption"):
        redemptions = CouponRedemption.objects.filter(pk=action["couponRedemption"])
    elif action.get("redeemedCoupon"):  # issued before the redemption's id was recorded: redeemed with it
        redemptions = CouponRedemption.objects.filter(coupon_id=action["redeemedCoupon"], customer_id=invoice.customer_id,
                                                      subscription_id=invoice.subscription_id, created_at=invoice.created_at)[:1]
        redemptions = CouponRedemption.objects.filter(pk__in=list(redemptions.values_list("pk", flat=True)))
    else:
        return
    coupon_redemptions_release(redemptions=redemptions, now=now)


def incomplete_subscription_abandon(*, sub_id: str, now: datetime) -> bool:
    """An incomplete subscription whose checkout was abandoned never starts: it
    expires, and the coupon redeemed to start it (a trial's, which has no
    invoice to void) is given back. False if it was not incomplete any more."""
    expired = Subscription.objects.filter(pk=sub_id, status=Subscription.Status.INCOMPLETE).update(
        status=Subscription.Status.EXPIRED, ended_at=now, updated_at=now)
    if expired:
        coupon_redemptions_release(redemptions=CouponRedemption.objects.filter(subscription_id=sub_id), now=now)
    return bool(expired)
