"""Seed the bench database in-process with Django (run by bench/run.py, DATABASE_URL set).

    python bench/seed.py --key cp_sk_... --product            # the Bench product, through the API
    python bench/seed.py --customers 5000 --first 1           # c00001..c05000, each with a balance

The product goes through the API view (``rest_framework.test.APIClient``). Customers and their
balances go through the same service calls the ``POST customers`` and ``POST balances`` views
make (``customer_get_or_create``, ``balance_create``): every invariant the services keep is kept,
without the per-request cost of auth, audit rows and rendering, which made seeding through the
views about 2.4 times slower. Prints one JSON line: what was seeded and how long it took.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django  # noqa: E402

django.setup()

from django.utils import timezone  # noqa: E402
from rest_framework.test import APIClient  # noqa: E402

from billing.services.customers import customer_get_or_create  # noqa: E402
from billing.services.grants import balance_create  # noqa: E402

FEATURE = "bench-calls"
ALLOWANCE = 1_000_000
PRODUCT = {
    "name": "Bench",
    "slug": "bench",
    "features": [{"slug": FEATURE, "type": "metered", "allowance": ALLOWANCE, "resetInterval": "month"}],
}


def customer_id(n: int) -> str:
    return f"c{n:05d}"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--key", help="secret API key, for --product")
    parser.add_argument("--product", action="store_true", help="create the Bench product through the API")
    parser.add_argument("--customers", type=int, default=0)
    parser.add_argument("--first", type=int, default=1, help="number of the first customer (1 is c00001)")
    args = parser.parse_args()
    started = time.monotonic()

    if args.product:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {args.key}")
        r = client.post("/api/v1/pay/products", PRODUCT, format="json")
        if r.status_code != 201:
            print(f"seed: POST products -> {r.status_code} {r.content[:300]!r}", file=sys.stderr)
            return 1

    for n in range(args.first, args.first + args.customers):
        now = timezone.now()
        customer, _ = customer_get_or_create(external_id=customer_id(n), now=now)
        balance_create(customer=customer, feature_slug=FEATURE, granted=ALLOWANCE, now=now)

    print(json.dumps({"customers": args.customers, "seconds": round(time.monotonic() - started, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
