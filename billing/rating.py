"""Rating: what a quantity costs under a tiered price. Integer minor units in and out.

Tiers are ``[{"upTo": int | None, "unitAmount": int, "flatAmount": int}]``,
ascending, the last one open (``upTo`` None).

* graduated: each unit is priced by the tier it falls in; every tier reached
  adds its flat amount.
* volume: every unit is priced by the one tier the total falls in, plus that
  tier's flat amount.
"""

from __future__ import annotations


def tiered_amount(*, tiers: list[dict], mode: str, quantity: int) -> int:
    if quantity < 0:
        raise ValueError("quantity must not be negative")
    if quantity == 0:
        return 0
    if mode == "volume":
        for tier in tiers:
            if tier["upTo"] is None or quantity <= tier["upTo"]:
                return quantity * tier["unitAmount"] + tier.get("flatAmount", 0)
        raise ValueError("tiers must end with an open tier")
    if mode != "graduated":
        raise ValueError(f"unknown tiers mode {mode!r}")
    total, floor = 0, 0
    for tier in tiers:
        ceiling = tier["upTo"]
        in_tier = quantity - floor if ceiling is None else min(quantity, ceiling) - floor
        if in_tier <= 0:
            break
        total += in_tier * tier["unitAmount"] + tier.get("flatAmount", 0)
        if ceiling is None or quantity <= ceiling:
            break
        floor = ceiling
    return total
