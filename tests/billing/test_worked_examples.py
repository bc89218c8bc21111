"""Tiered prices, worked by hand. Amounts are minor units (cents).

Tiers used throughout:
    units 1-10    : 100 each
    units 11-50   :  80 each, plus a flat 500 when the tier is reached
    units 51+     :  50 each
"""

from decimal import Decimal

import pytest

from billing.money import Money, round_minor
from billing.rating import tiered_amount

TIERS = [
    {"upTo": 10, "unitAmount": 100, "flatAmount": 0},
    {"upTo": 50, "unitAmount": 80, "flatAmount": 500},
    {"upTo": None, "unitAmount": 50, "flatAmount": 0},
]


class TestGraduatedTiers:
    def test_seven_units_stay_in_the_first_tier(self):
        # 7 × 100 = 700
        assert tiered_amount(tiers=TIERS, mode="graduated", quantity=7) == 700

    def test_exactly_ten_units_fill_the_first_tier_and_reach_no_other(self):
        # 10 × 100 = 1000 (the second tier's flat fee is not due: no unit falls in it)
        assert tiered_amount(tiers=TIERS, mode="graduated", quantity=10) == 1_000

    def test_eleven_units_reach_the_second_tier_and_its_flat_fee(self):
        # 10 × 100 + (1 × 80 + 500) = 1000 + 580 = 1580
        assert tiered_amount(tiers=TIERS, mode="graduated", quantity=11) == 1_580

    def test_sixty_units_span_all_three_tiers(self):
        # 10 × 100 = 1000; 40 × 80 + 500 = 3700; 10 × 50 = 500; total 5200
        assert tiered_amount(tiers=TIERS, mode="graduated", quantity=60) == 5_200

    def test_zero_units_cost_nothing(self):
        assert tiered_amount(tiers=TIERS, mode="graduated", quantity=0) == 0


class TestVolumeTiers:
    def test_seven_units_are_all_priced_by_the_first_tier(self):
        # 7 × 100 = 700
        assert tiered_amount(tiers=TIERS, mode="volume", quantity=7) == 700

    def test_eleven_units_are_all_priced_by_the_second_tier(self):
        # 11 × 80 + 500 = 1380 (cheaper than 10 units at 1000 + … the volume cliff)
        assert tiered_amount(tiers=TIERS, mode="volume", quantity=11) == 1_380

    def test_sixty_units_are_all_priced_by_the_open_tier(self):
        # 60 × 50 = 3000
        assert tiered_amount(tiers=TIERS, mode="volume", quantity=60) == 3_000

    def test_a_negative_quantity_is_refused(self):
        with pytest.raises(ValueError):
            tiered_amount(tiers=TIERS, mode="volume", quantity=-1)


class TestMoney:
    def test_rounding_is_named_and_done_once(self):
        # 2900 × 17 / 30 days = 1643.333… → 1643 (half up); 0.5 cases differ by mode
        assert round_minor(Decimal(2900) * 17 / 30, "half_up") == 1_643
        assert round_minor(Decimal("2.5"), "half_up") == 3
        assert round_minor(Decimal("2.5"), "half_even") == 2

    def test_money_refuses_floats_and_mixed_currencies(self):
        with pytest.raises(TypeError):
            Money(1.5, "usd")
        with pytest.raises(TypeError):
            Money(True, "usd")
        with pytest.raises(ValueError):
            Money(1, "usd") + Money(1, "eur")
        assert Money(250, "usd") + Money(-50, "usd") == Money(200, "usd")
