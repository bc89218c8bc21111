"""The period-end work on subscriptions and invoices, as of a given moment:
renewals (with scheduled downgrades, cancellations and trial ends), overage
invoices, dunning retries, abandoned checkouts and refunds still pending.

Exactly once: every invoice made here has a ``billing_key`` naming its
period ("renewal:<subscription>:<period end>"), the due row is re-read under
``customer_billing_lock`` and its row lock before anything is billed, and a
charge attempt is claimed by a conditional UPDATE. A second run for the same
moment, or two workers at once, find nothing left to do.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction

from billing.locks import customer_billing_lock, lock_invoice, lock_subscription
from billing.models import CheckoutSession, Invoice, InvoiceLine, OverageRecord, Payment, Subscription
from billing.periods import add_interval
from billing.services.coupons import coupon_discount
from billing.services.events import event_emit
from billing.services.fulfilment import plan_switch, subscription_end, subscription_event_data
from billing.services.invoices import AlreadyBilled, LineDraft, invoice_issue, invoice_write_off, totals
from billing.services.payments import invoice_collect, payment_method_default, refund_send
from billing.services.subscriptions import incomplete_subscription_abandon, invoice_void_unpaid, period_amount

MAX_CATCH_UP = 1000  # periods one run renews for one subscription (a safety stop)


def subscriptions_renew_due(*, now: datetime) -> dict[str, int]:
    """Renew, switch, end or convert every subscription whose period ended by ``now``."""
    done = {"renewed": 0, "ended": 0, "trialsEnded": 0, "switched": 0}
    due = Subscription.objects.filter(status__in=("trialing", "active"), current_period_end__lte=now)
    for sub_id, customer_id in list(due.values_list("id", "customer_id")):
        for _ in range(MAX_CATCH_UP):
            outcome, sub_id = subscription_renew(subscription_id=sub_id, customer_id=customer_id, now=now)
            if outcome is None:
                break
            done[outcome] += 1
            if outcome == "ended":
                break
    return done


def subscription_renew(*, subscription_id: str, customer_id: int, now: datetime) -> tuple[str | None, str]:
    """One period end of one subscription. Returns (what happened or None, the
    subscription that continues)."""
    with customer_billing_lock(customer_id=customer_id):
        with transaction.atomic(durable=True):
            sub = lock_subscription(pk=subscription_id)
            end = sub.current_period_end
            if sub.status not in ("trialing", "active") or end is None or end > now:
                return None, subscription_id
            if sub.cancel_at_period_end:
                subscription_end(sub=sub, status=Subscription.Status.CANCELED, now=end)
                return "ended", sub.pk
            if sub.status == Subscription.Status.TRIALING and payment_method_default(sub.customer) is None:
                subscription_end(sub=sub, status=Subscription.Status.EXPIRED, now=end)
                return "ended", sub.pk
            outcome = "trialsEnded" if sub.status == Subscription.Status.TRIALING else "renewed"
            if sub.scheduled_product_id:
                target = sub.scheduled_product
                sub = plan_switch(old=sub, product=target, version=target.current_version, quantity=sub.quantity,
                                  now=now, period_start=end, coupon=sub.coupon, coupon_cycles_left=sub.coupon_cycles_left)
                outcome = "switched"
                invoice = _issue_period(sub=sub, start=end, end=sub.current_period_end, now=now)
            else:
                new_end = add_interval(end, sub.billing_interval)
                invoice = _issue_period(sub=sub, start=end, end=new_end, now=now)
                sub.status = Subscription.Status.ACTIVE
                sub.current_period_start, sub.current_period_end = end, new_end
                sub.updated_at = now
                sub.save()
            event_emit(type="subscription.renewed", customer_id=sub.customer_id, data=subscription_event_data(sub), now=now)
        if invoice is not None and invoice.status == Invoice.Status.OPEN:
            _collect_or_dun(invoice=invoice, now=now)
        return outcome, sub.pk


def _issue_period(*, sub: Subscription, start: datetime, end: datetime, now: datetime) -> Invoice | None:
    amount = period_amount(sub.version, sub.quantity)
    if amount == 0:
        return None
    lines = [LineDraft(kind=InvoiceLine.Kind.PLAN, description=f"{sub.product.name} ({sub.billing_interval}ly)",
                       quantity=sub.quantity, unit_amount=amount // sub.quantity if amount % sub.quantity == 0 else amount,
                       amount=amount)]
    if sub.coupon_id and (sub.coupon_cycles_left is None or sub.coupon_cycles_left > 0):
        discount = coupon_discount(coupon=sub.coupon, subtotal=amount)
        if discount:
            lines.append(LineDraft(kind=InvoiceLine.Kind.DISCOUNT, description=f"Coupon {sub.coupon.code}", amount=-discount))
        if sub.coupon_cycles_left is not None:
            sub.coupon_cycles_left -= 1
            Subscription.objects.filter(pk=sub.pk).update(coupon_cycles_left=sub.coupon_cycles_left)
    try:
        with transaction.atomic():
            invoice = invoice_issue(customer=sub.customer, subscription=sub, billing_key=f"renewal:{sub.pk}:{start.isoformat()}",
                                    reason="renewal", currency=sub.currency, lines=lines, period=(start, end),
                                    pending_action={"type": "renewal", "subscription": sub.pk}, now=now)
    except AlreadyBilled:
        return None
    _due_now(invoice, now)
    return invoice


def _due_now(invoice: Invoice, now: datetime) -> None:
    """An open invoice issued here is due for collection at once, in the transaction that
    issues it: the charge runs after the commit, and if the process dies before it
    does (a worker killed), the next cycle's dunning sweep charges it instead of
    leaving it open for ever. The customer's billing lock, held from issuing to
    charging, keeps the sweep from racing the first charge."""
    if invoice.status == Invoice.Status.OPEN:
        Invoice.objects.filter(pk=invoice.pk).update(next_attempt_at=now)
        invoice.next_attempt_at = now


def _collect_or_dun(*, invoice: Invoice, now: datetime) -> None:
    """Charge a renewal or overage invoice; on failure the subscription is past
    due and the invoice waits for its first retry."""
    result = invoice_collect(invoice=invoice, now=now)
    if result.status in ("succeeded", "not_due"):
        return
    with transaction.atomic(durable=True):
        locked = lock_invoice(pk=invoice.pk)
        if locked.status != Invoice.Status.OPEN:
            return
        _schedule_retry_or_lapse(invoice=locked, now=now)


def _schedule_retry_or_lapse(*, invoice: Invoice, now: datetime) -> None:
    days = settings.BILLING_DUNNING_RETRY_DAYS
    retries_done = max(0, invoice.attempts - 1)
    if retries_done < len(days):
        invoice.next_attempt_at = invoice.created_at + timedelta(days=days[retries_done])
        invoice.save(update_fields=["next_attempt_at"])
        if invoice.subscription_id and invoice.reason == "renewal":
            sub = lock_subscription(pk=invoice.subscription_id)
            if sub.status == Subscription.Status.ACTIVE:
                sub.status = Subscription.Status.PAST_DUE
                sub.updated_at = now
                sub.save(update_fields=["status", "updated_at"])
                event_emit(type="subscription.updated", customer_id=sub.customer_id, data=subscription_event_data(sub), now=now)
        return
    invoice_write_off(invoice=invoice, now=now)
    if invoice.subscription_id and invoice.reason == "renewal":
        sub = lock_subscription(pk=invoice.subscription_id)
        if sub.status in Subscription.LIVE_STATUSES:
            subscription_end(sub=sub, status=Subscription.Status.EXPIRED, now=now)


def invoices_retry_due(*, now: datetime) -> int:
    """Dunning: retry every open invoice whose next attempt is due."""
    done = 0
    due = Invoice.objects.filter(status=Invoice.Status.OPEN, next_attempt_at__lte=now)
    for invoice_id, customer_id in list(due.values_list("id", "customer_id")):
        with customer_billing_lock(customer_id=customer_id):
            invoice = Invoice.objects.select_related("customer").get(pk=invoice_id)
            if invoice.status != Invoice.Status.OPEN or invoice.next_attempt_at is None or invoice.next_attempt_at > now:
                continue
            result = invoice_collect(invoice=invoice, now=now)
            done += 1
            if result.status in ("succeeded", "not_due"):
                continue
            with transaction.atomic(durable=True):
                locked = lock_invoice(pk=invoice_id)
                if locked.status == Invoice.Status.OPEN:
                    _schedule_retry_or_lapse(invoice=locked, now=now)
    return done


def overage_bill_due(*, now: datetime) -> int:
    """One invoice per customer and closed period for the overage recorded at
    its reset (usage beyond the allowance × the overage price)."""
    done = 0
    groups = OverageRecord.objects.filter(billed=False, period_end__lte=now).values_list("balance__customer_id", "period_end").distinct()
    for customer_id, period_end in sorted(set(groups)):
        with customer_billing_lock(customer_id=customer_id):
            with transaction.atomic(durable=True):
                records = list(
                    OverageRecord.objects.select_for_update()
                    .filter(billed=False, balance__customer_id=customer_id, period_end=period_end)
                    .select_related("balance__feature", "balance__customer")
                    .order_by("pk")
                )
                if not records:
                    continue
                lines = [
                    LineDraft(kind=InvoiceLine.Kind.OVERAGE, description=f"Overage: {r.balance.feature.name}",
                              quantity=r.units, unit_amount=r.unit_price, amount=r.amount)
                    for r in records if r.amount > 0
                ]
                OverageRecord.objects.filter(pk__in=[r.pk for r in records]).update(billed=True)
                invoice = None
                if lines and totals(lines)[2] > 0:
                    customer = records[0].balance.customer
                    invoice = invoice_issue(customer=customer, subscription=None,
                                            billing_key=f"overage:{customer_id}:{period_end.isoformat()}", reason="overage",
                                            currency=records[0].currency, lines=lines,
                                            period=(min((r.period_start for r in records if r.period_start), default=None), period_end),
                                            now=now)
                    _due_now(invoice, now)
                    done += 1
            if invoice is not None and invoice.status == Invoice.Status.OPEN:
                _collect_or_dun(invoice=invoice, now=now)
    return done


def checkouts_expire_due(*, now: datetime) -> int:
    """Close checkouts nobody finished: their invoice is voided and the
    subscription they would have started never starts; a coupon redeemed for
    either is given back."""
    done = 0
    for session in list(CheckoutSession.objects.filter(status=CheckoutSession.Status.OPEN, expires_at__lte=now)):
        with customer_billing_lock(customer_id=session.customer_id):
            with transaction.atomic(durable=True):
                claimed = CheckoutSession.objects.filter(pk=session.pk, status=CheckoutSession.Status.OPEN).update(
                    status=CheckoutSession.Status.CANCELED
                )
                if not claimed:
                    continue
                if session.invoice_id:
                    invoice = lock_invoice(pk=session.invoice_id)
                    if invoice.status == Invoice.Status.OPEN and invoice.amount_paid == 0 and invoice.reason != "renewal":
                        invoice_void_unpaid(invoice=invoice, now=now)
                if session.subscription_id:
                    incomplete_subscription_abandon(sub_id=session.subscription_id, now=now)
                done += 1
    return done



def refunds_retry_due(*, now: datetime) -> int:
    """Send again each pending refund whose next attempt is due (its gateway call
    failed, or the process died before making it), longest due first, with the
    refund's own idempotency key, so the gateway makes each refund once. A
    refund that fails again waits longer (REFUND_RETRY_DELAYS_SECONDS); one
    whose REFUND_MAX_ATTEMPTS calls failed is no longer due (``refund_send``).
    Returns how many the gateway made now."""
    done = 0
    due = (Payment.objects.filter(kind=Payment.Kind.REFUND, status=Payment.Status.PENDING, next_attempt_at__lte=now)
           .order_by("next_attempt_at", "id"))
    for refund_id, customer_id in list(due.values_list("id", "customer_id")):
        with customer_billing_lock(customer_id=customer_id):
            refund = due.filter(pk=refund_id).first()
            if refund is None:
                continue  # sent meanwhile, or no longer due
            if refund_send(refund=refund, now=now).status == Payment.Status.SUCCEEDED:
                done += 1
    return done
