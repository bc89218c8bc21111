"""Money: integer minor units and a currency, never float.

``Decimal`` appears only inside a rating calculation and is rounded once, to
minor units, with a named rounding mode (``round_minor``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal

# The largest amount one field may carry: 10^15 minor units. Sums of many
# such amounts still fit in a signed 64-bit column.
MAX_AMOUNT = 10**15

CURRENCY_RE = re.compile(r"^[a-z]{3}$")

ROUNDING_MODES = {"half_up": ROUND_HALF_UP, "half_even": ROUND_HALF_EVEN}


def round_minor(value: Decimal, mode: str = "half_up") -> int:
    """Round a Decimal amount of minor units to an integer, once, with a named mode."""
    return int(value.quantize(Decimal(1), rounding=ROUNDING_MODES[mode]))


@dataclass(frozen=True, slots=True)
class Money:
    amount: int
    currency: str

    def __post_init__(self):
        if isinstance(self.amount, bool) or not isinstance(self.amount, int):
            raise TypeError(f"Money amount must be an int of minor units, got {type(self.amount).__name__}")
        if not CURRENCY_RE.match(self.currency):
            raise ValueError(f"currency must be a lowercase ISO code, got {self.currency!r}")

    def _same(self, other: "Money") -> None:
        if not isinstance(other, Money):
            raise TypeError("can only combine Money with Money")
        if other.currency != self.currency:
            raise ValueError(f"currency mismatch: {self.currency} vs {other.currency}")

    def __add__(self, other: "Money") -> "Money":
        self._same(other)
        return Money(self.amount + other.amount, self.currency)

    def __sub__(self, other: "Money") -> "Money":
        self._same(other)
        return Money(self.amount - other.amount, self.currency)

    def __neg__(self) -> "Money":
        return Money(-self.amount, self.currency)

    @classmethod
    def zero(cls, currency: str) -> "Money":
        return cls(0, currency)


# --- display -------------------------------------------------------------------

# Currencies whose minor unit is the major unit (ISO 4217 exponent 0), and those
# with three decimals; every other currency has two.
ZERO_DECIMAL_CURRENCIES = frozenset({
    "bif", "clp", "djf", "gnf", "isk", "jpy", "kmf", "krw", "mga",
    "pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf",
})
THREE_DECIMAL_CURRENCIES = frozenset({"bhd", "iqd", "jod", "kwd", "lyd", "omr", "tnd"})
CURRENCY_SYMBOLS = {"usd": "$", "eur": "€", "gbp": "£", "jpy": "¥", "inr": "₹", "krw": "₩", "cad": "CA$", "aud": "A$"}


def currency_exponent(currency: str) -> int:
    """Decimal places of one major unit: 0 for JPY, 3 for KWD, 2 otherwise."""
    currency = currency.lower()
    if currency in ZERO_DECIMAL_CURRENCIES:
        return 0
    return 3 if currency in THREE_DECIMAL_CURRENCIES else 2


def money_format(amount: int, currency: str) -> str:
    """Minor units for people: ``money_format(2000, "usd") == "$20.00"``,
    ``money_format(1500, "jpy") == "¥1,500"``, ``money_format(999, "sek") == "SEK 9.99"``.
    Integer arithmetic only."""
    currency = currency.lower()
    exponent = currency_exponent(currency)
    sign = "-" if amount < 0 else ""
    major, minor = divmod(abs(amount), 10**exponent)
    number = f"{major:,}" + (f".{minor:0{exponent}d}" if exponent else "")
    symbol = CURRENCY_SYMBOLS.get(currency)
    return f"{sign}{symbol}{number}" if symbol else f"{sign}{currency.upper()} {number}"
