"""An invoice as a PDF, drawn with fpdf2 (pure Python, pinned in requirements.txt).

The page streams are left uncompressed: the file is a few kilobytes either
way, and its text (the invoice number, the amounts) can be found in the bytes
by a plain search. Core PDF fonts carry Latin-1 only, so any other character
(an arrow in a line description, a currency symbol such as €) is written in
a Latin-1 form instead of failing the download.
"""

from __future__ import annotations

from fpdf import FPDF

from billing.models import Invoice
from billing.money import CURRENCY_SYMBOLS, money_format

_PLAIN = {"→": "->", "—": "-", "–": "-", "…": "...", "“": '"', "”": '"', "‘": "'", "’": "'", "€": "EUR "}


def _latin1(text: str) -> str:
    for char, plain in _PLAIN.items():
        text = text.replace(char, plain)
    return text.encode("latin-1", "replace").decode("latin-1")


def _money(amount: int, currency: str) -> str:
    symbol = CURRENCY_SYMBOLS.get(currency.lower(), "")
    text = money_format(amount, currency)
    if symbol and _latin1(symbol) != symbol:  # "₹20.00" reads "INR 20.00"
        text = text.replace(symbol, f"{currency.upper()} ", 1)
    return _latin1(text)


def _date(moment) -> str:
    return moment.strftime("%d %b %Y") if moment else "-"


def invoice_pdf(*, invoice: Invoice, issuer: str) -> bytes:
    """One A4 page per ~30 lines: header, bill-to, the numbered lines, totals, payments."""
    pdf = FPDF(format="A4")
    pdf.set_compression(False)
    pdf.set_title(f"Invoice {invoice.number}")
    pdf.set_author(_latin1(issuer))
    pdf.set_creation_date(invoice.created_at)
    pdf.set_auto_page_break(auto=True, margin=20)
    pdf.add_page()
    width = pdf.w - pdf.l_margin - pdf.r_margin
    cur = invoice.currency

    pdf.set_font("Helvetica", "B", 20)
    pdf.cell(width / 2, 10, "Invoice")
    pdf.set_font("Helvetica", "", 10)
    pdf.cell(width / 2, 10, _latin1(issuer), align="R", new_x="LMARGIN", new_y="NEXT")
    pdf.set_text_color(102, 112, 133)
    pdf.cell(width, 6, f"Number {invoice.number}", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)

    customer = invoice.customer
    pdf.set_text_color(29, 35, 48)
    rows = [
        ("Billed to", _latin1(customer.name or customer.external_id)),
        ("Email", _latin1(customer.email or "-")),
        ("Issued", _date(invoice.created_at)),
        ("Period", f"{_date(invoice.period_start)} to {_date(invoice.period_end)}" if invoice.period_start else "-"),
        ("Status", invoice.status.upper()),
    ]
    for label, value in rows:
        pdf.set_font("Helvetica", "B", 10)
        pdf.cell(30, 6, label)
        pdf.set_font("Helvetica", "", 10)
        pdf.cell(width - 30, 6, value, new_x="LMARGIN", new_y="NEXT")
    pdf.ln(6)

    cols = (width - 25 - 35 - 35, 25, 35, 35)
    pdf.set_font("Helvetica", "B", 10)
    pdf.set_fill_color(246, 247, 249)
    for text, w, align in zip(("Description", "Qty", "Unit", "Amount"), cols, ("L", "R", "R", "R")):
        pdf.cell(w, 8, text, align=align, fill=True)
    pdf.ln(8)
    pdf.set_font("Helvetica", "", 10)
    for line in invoice.lines.all():
        pdf.cell(cols[0], 7, _latin1(line.description)[:70])
        pdf.cell(cols[1], 7, f"{line.quantity:,}", align="R")
        pdf.cell(cols[2], 7, _money(line.unit_amount, cur), align="R")
        pdf.cell(cols[3], 7, _money(line.amount, cur), align="R", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(3)

    totals = [("Subtotal", invoice.subtotal), ("Discount", -invoice.discount), ("Total", invoice.total),
              ("Paid", invoice.amount_paid)]
    if invoice.amount_refunded:
        totals.append(("Refunded", invoice.amount_refunded))
    totals.append(("Amount due", invoice.total - invoice.amount_paid if invoice.status == "open" else 0))
    for label, amount in totals:
        pdf.set_font("Helvetica", "B" if label in ("Total", "Amount due") else "", 10)
        pdf.cell(width - 35, 7, label, align="R")
        pdf.cell(35, 7, _money(amount, cur), align="R", new_x="LMARGIN", new_y="NEXT")

    pdf.ln(8)
    pdf.set_font("Helvetica", "", 8)
    pdf.set_text_color(102, 112, 133)
    pdf.multi_cell(width, 4, f"Amounts in {cur.upper()}. Invoice {invoice.number}, id {invoice.pk}.")
    return bytes(pdf.output())
