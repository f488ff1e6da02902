"""The columns of every dataset, in their documented, stable order.

Finance loads these files by position as often as by name: a column is only ever added at
the end of its dataset, never moved, renamed or removed.

A column's ``kind`` says what a row holds for it and how each format writes it:

=========  ======================  ====================  =======================
kind       value in a row          CSV / NDJSON          Parquet
=========  ======================  ====================  =======================
TEXT       str                     as is                 string
INT        int                     digits / number       int64
MICROS     int millionths          "12.345600"           decimal128(38, 6)
DECIMAL    exact decimal str       as is (a string)      decimal128(38, scale)
TIME       int us since epoch      RFC 3339 UTC "...Z"   timestamp[us, tz=UTC]
=========  ======================  ====================  =======================

MICROS carries money (micro-dollars) and durations (microseconds shown as seconds): both
print with exactly six decimals. ``None`` is an empty CSV field, a JSON null, a Parquet null.
"""

from __future__ import annotations

from dataclasses import dataclass

TEXT, INT, MICROS, DECIMAL, TIME = "text", "int", "micros", "decimal", "time"


@dataclass(frozen=True)
class Column:
    name: str
    kind: str
    scale: int = 6  # DECIMAL only: the Parquet scale; a value needing more digits is refused


# Unit prices come from the price book and may be finer than a micro-dollar.
PRICE_SCALE = 12


def _cols(*specs: tuple[str, str] | tuple[str, str, int]) -> tuple[Column, ...]:
    return tuple(Column(*spec) for spec in specs)


USAGE = _cols(
    ("kind", TEXT),  # running | extension
    ("workspace_id", TEXT),
    ("deployment_id", TEXT),
    ("sandbox_id", TEXT),
    ("template", TEXT),
    ("start", TIME),  # running: piece start; extension: the extension's time
    ("end", TIME),  # running: piece end; extension: empty
    ("seconds", MICROS),  # running: piece duration; extension: empty
    ("extensions", INT),  # extension: number of 15-minute extensions; running: empty
    ("unit_price", DECIMAL, PRICE_SCALE),  # per hour (running) or per extension
    ("amount", MICROS),  # this row's exact charge, rounded once, half to even
)

INVOICES = _cols(
    ("id", TEXT),
    ("number", TEXT),  # empty while draft
    ("workspace_id", TEXT),
    ("period_start", TIME),
    ("period_end", TIME),
    ("status", TEXT),  # draft | finalized | paid | void
    ("subtotal", MICROS),
    ("credits", MICROS),
    ("total", MICROS),  # = subtotal - credits + carried_forward = the sum of the invoice's lines
    ("amount_paid", MICROS),
    ("amount_due", MICROS),
    ("created_at", TIME),
    ("finalized_at", TIME),
    ("paid_at", TIME),
    ("voided_at", TIME),
    ("carried_credit", MICROS),  # the part of credits that was credit carried forward (not prepaid)
    ("carried_forward", MICROS),  # a negative subtotal moved to the workspace's carried credit
)

INVOICE_LINES = _cols(
    ("invoice_id", TEXT),
    ("invoice_number", TEXT),
    ("workspace_id", TEXT),
    ("period_start", TIME),
    ("period_end", TIME),
    ("invoice_status", TEXT),
    ("position", INT),  # order of the line on its invoice, from 0
    ("kind", TEXT),  # running | extension | adjustment | carried_credit | credit | carry_forward
    ("usage_kind", TEXT),  # adjustment lines: running | extension
    ("deployment_id", TEXT),
    ("template", TEXT),
    ("quantity", DECIMAL, 6),  # seconds (running) or a count
    ("unit_price", DECIMAL, PRICE_SCALE),  # empty when the line spans a price change
    ("amount", MICROS),
    ("description", TEXT),
    ("original_period_start", TIME),  # adjustment lines: the period adjusted
)

SETTLEMENTS = _cols(
    ("id", TEXT),
    ("created_at", TIME),
    ("confirmed_at", TIME),
    ("status", TEXT),  # pending | confirmed | rejected | reorged
    ("reason", TEXT),
    ("network", TEXT),  # CAIP-2, e.g. eip155:8453
    ("transaction", TEXT),
    ("log_index", INT),
    ("block_number", INT),
    ("block_hash", TEXT),
    ("payer", TEXT),
    ("pay_to", TEXT),
    ("amount", MICROS),
    ("nonce", TEXT),
    ("purpose_kind", TEXT),  # run | invoice | credit
    ("workspace_id", TEXT),
    ("invoice_id", TEXT),
    ("run_id", TEXT),
)

# The lifetime guard: per interval that ran more than the tolerance past its lifetime end,
# its time past that end inside the range, the running charge of it, and what of it is billed.
OVERRUNS = _cols(
    ("workspace_id", TEXT),
    ("deployment_id", TEXT),
    ("sandbox_id", TEXT),
    ("template", TEXT),
    ("started", TIME),  # the interval's start (a piece's, for one crossing a UTC month)
    ("lifetime_end", TIME),
    ("start", TIME),
    ("end", TIME),
    ("seconds", MICROS),
    ("amount", MICROS),
    ("billed_amount", MICROS),  # all of it, or what [lifetime] bill_beyond = false leaves
)

FORMATS = ("csv", "ndjson", "parquet")

DATASETS: dict[str, tuple[Column, ...]] = {
    "usage": USAGE,
    "invoices": INVOICES,
    "invoice_lines": INVOICE_LINES,
    "settlements": SETTLEMENTS,
    "overruns": OVERRUNS,
}
