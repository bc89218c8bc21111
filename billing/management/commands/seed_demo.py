"""Load the demo catalog and customers. Safe to run twice: nothing is duplicated."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.utils import timezone

from billing.models import Customer, Product, Subscription
from billing.services.api_keys import api_key_authenticate, api_key_create
from billing.services.audit import audit_record
from billing.services.catalog import product_create, product_update
from billing.services.customers import customer_get_or_create
from billing.services.payments import payment_method_attach
from billing.services.subscriptions import subscribe
from portal.tokens import portal_token_make, portal_url

PLAN_FEATURES = {
    "free": [
        {"slug": "api-calls", "name": "API calls", "type": "metered", "allowance": 1_000, "reset_interval": "month"},
        {"slug": "credits", "name": "AI credits", "type": "metered", "allowance": 100, "reset_interval": "month"},
    ],
    "pro": [
        {"slug": "api-calls", "name": "API calls", "type": "metered", "allowance": 50_000,
         "overage_allowed": True, "overage_price": 1},
        {"slug": "credits", "name": "AI credits", "type": "metered", "allowance": 5_000},
        {"slug": "seats", "name": "Seats", "type": "seats", "allowance": 5, "overage_allowed": True, "overage_price": 1_500},
        {"slug": "sso", "name": "Single sign-on", "type": "boolean"},
    ],
    "enterprise": [
        {"slug": "api-calls", "name": "API calls", "type": "metered", "allowance_type": "unlimited"},
        {"slug": "credits", "name": "AI credits", "type": "metered", "allowance": 100_000},
        {"slug": "seats", "name": "Seats", "type": "seats", "allowance": 50, "overage_allowed": True, "overage_price": 1_200},
        {"slug": "sso", "name": "Single sign-on", "type": "boolean"},
    ],
}

CATALOG = [
    {"slug": "free", "name": "Free", "group": "plans", "auto_enable": True, "prices": [],
     "features": PLAN_FEATURES["free"]},
    {"slug": "pro", "name": "Pro", "group": "plans",
     "prices": [{"type": "recurring", "amount": 2_900, "billing_interval": "month"},
                {"type": "recurring", "amount": 29_000, "billing_interval": "year"}],
     "features": PLAN_FEATURES["pro"]},
    {"slug": "enterprise", "name": "Enterprise", "group": "plans",
     "free_trial": {"days": 14, "require_payment_method": True},
     "prices": [{"type": "recurring", "amount": 49_900, "billing_interval": "month"}],
     "features": PLAN_FEATURES["enterprise"]},
    {"slug": "credit-top-up", "name": "1,000 AI credits", "is_add_on": True,
     "prices": [{"type": "one_off", "amount": 1_000}],
     "features": [{"slug": "credits", "name": "AI credits", "type": "metered", "allowance": 1_000}]},
]

CUSTOMERS = [
    {"external_id": "acme", "name": "Acme Corp", "email": "billing@acme.test"},
    {"external_id": "globex", "name": "Globex", "email": "finance@globex.test"},
    {"external_id": "initech", "name": "Initech", "email": "ap@initech.test"},
]


class Command(BaseCommand):
    help = "Load a demo catalog (free, pro, enterprise, credit top-up) and a few customers; safe to run twice."

    def add_arguments(self, parser):
        parser.add_argument(
            "--credentials-file",
            help="Also keep a demo secret key and an admin login in this JSON file (made once, reused after) and print them.",
        )

    def handle(self, *args, credentials_file=None, **options):
        now = timezone.now()
        for spec in CATALOG:
            spec = dict(spec)
            slug = spec.pop("slug")
            existing = Product.objects.filter(slug=slug).first()
            if existing is None:
                product_create(slug=slug, now=now, **spec)
                self.stdout.write(f"product {slug}: created")
            else:
                changes = {k: v for k, v in spec.items() if k in ("prices", "features", "free_trial")}
                product_update(product=existing, changes=changes, now=now)
                self.stdout.write(f"product {slug}: present")
        for spec in CUSTOMERS:
            _, created = customer_get_or_create(now=now, **spec)
            self.stdout.write(f"customer {spec['external_id']}: {'created' if created else 'present'}")
        self._paying_customer(now)
        audit_record(actor_type="system", actor_id="seed_demo", action="demo.seed", now=now)
        if credentials_file:
            self._credentials(Path(credentials_file), now)

    def _paying_customer(self, now) -> None:
        """initech pays for pro with the test gateway's success card, so the demo has
        an invoice, a payment and ledger entries (skipped if it already has a plan)."""
        customer = Customer.objects.get(external_id="initech", deleted_at__isnull=True)
        if Subscription.objects.filter(customer=customer, status__in=Subscription.LIVE_STATUSES, product__is_add_on=False,
                                       product__slug__in=["pro", "enterprise"]).exists() or settings.BILLING_GATEWAY != "test":
            self.stdout.write("initech: subscribed")
            return
        if not customer.payment_methods.exists():
            payment_method_attach(customer=customer, payment_method="pm_card_visa", now=now)
        result = subscribe(customer=customer, product=Product.objects.get(slug="pro"), quantity=1, now=now)
        self.stdout.write(f"initech: subscribed to pro ({result.subscription.status if result.subscription else 'pending'})")

    def _credentials(self, path: Path, now) -> None:
        creds = json.loads(path.read_text()) if path.exists() else {}
        if not creds.get("secretKey") or api_key_authenticate(raw_key=creds["secretKey"], now=now) is None:
            _, creds["secretKey"] = api_key_create(name="demo (make run)", type="secret", now=now)
        User = get_user_model()
        user = User.objects.filter(username="admin").first()
        if user is None or not creds.get("adminPassword") or not user.check_password(creds["adminPassword"]):
            creds["adminPassword"] = secrets.token_urlsafe(12)
            user = user or User(username="admin", email="admin@localhost")
            user.is_staff = user.is_superuser = True
            user.set_password(creds["adminPassword"])
            user.save()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(creds, indent=2))
        path.chmod(0o600)
        base = settings.PUBLIC_BASE_URL
        customer = customer_get_or_create(external_id="acme", now=now)[0]
        link = portal_url(portal_token_make(customer_pk=customer.pk))
        self.stdout.write(
            "\n".join(
                [
                    "",
                    "Demo ready (credentials kept in %s):" % path,
                    f"  secret API key : {creds['secretKey']}",
                    f"  API docs       : {base}/api/docs/",
                    f"  admin          : {base}/admin/   (user admin, password {creds['adminPassword']})",
                    f"  portal (acme)  : {link}   (valid 1 hour)",
                    f"  try            : curl -H 'Authorization: Bearer {creds['secretKey']}' {base}/api/v1/pay/products",
                    "",
                ]
            )
        )
