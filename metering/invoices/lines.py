"""Invoice lines from usage: pure functions, each line's amount rounded once.

Lines are per (deployment, template, kind).  Adjustment lines bring a finalized period up
to date: for each (deployment, template, usage kind) they carry what the period's usage
is now minus everything already billed for it, so over all invoices a period's lines
always add up to its rounded usage: nothing lost, nothing counted twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction

from metering.core.money import format_money, format_seconds, round_micro, unit_price_text
from metering.core.timeutil import format_time
from metering.usage.compute import Bucket, GroupKey

USAGE_KINDS = ("running", "extension")
LineKey = tuple[str, str | None, str | None]  # (usage kind, deployment_id, template)


@dataclass(frozen=True)
class Line:
    kind: str
    deployment_id: str | None
    template: str | None
    quantity: int  # microseconds for running time, a count for extensions
    unit_price: str | None
    amount: int  # micro-dollars
    description: str
    usage_kind: str | None = None
    original_period_start: int | None = None

    @property
    def key(self) -> LineKey:
        return (self.usage_kind or self.kind, self.deployment_id, self.template)


def _unit_price(prices: set[Fraction]) -> str | None:
    # A line priced at one rate shows it; a line across a price change has no single rate.
    return unit_price_text(next(iter(prices))) if len(prices) == 1 else None


def describe(kind: str, template: str | None, quantity: int) -> str:
    if kind == "running":
        return f"{template} running time, {format_seconds(quantity)} s"
    return f"{template} 15-minute extensions x {quantity}"


def usage_lines(buckets: Mapping[GroupKey, Bucket]) -> list[Line]:
    """Running and extension lines from usage grouped by (deployment, template)."""
    lines = []
    for key, b in buckets.items():
        fields = dict(key)
        dep, template = fields["deployment_id"], fields["template"]
        if b.running_us:
            lines.append(Line("running", dep, template, b.running_us, _unit_price(b.hourly_prices),
                              round_micro(b.running), describe("running", template, b.running_us)))
        if b.extensions:
            lines.append(Line("extension", dep, template, b.extensions, _unit_price(b.extension_prices),
                              round_micro(b.extension), describe("extension", template, b.extensions)))
    return sorted(lines, key=lambda line: (line.deployment_id or "", line.template or "", line.kind))


def adjustment_lines(period_start: int, current: Iterable[Line], billed: Iterable[Line]) -> list[Line]:
    """What period ``period_start`` owes now, less what its invoices already billed."""
    totals: dict[LineKey, list[int]] = {}
    prices: dict[LineKey, str | None] = {}
    for line in current:
        totals.setdefault(line.key, [0, 0])
        totals[line.key][0] += line.quantity
        totals[line.key][1] += line.amount
        prices[line.key] = line.unit_price
    for line in billed:
        totals.setdefault(line.key, [0, 0])
        totals[line.key][0] -= line.quantity
        totals[line.key][1] -= line.amount
    out = []
    for (usage_kind, dep, template), (quantity, amount) in sorted(totals.items(), key=lambda kv: tuple(x or "" for x in kv[0])):
        if quantity == 0 and amount == 0:
            continue
        what = describe(usage_kind, template, quantity)
        out.append(Line("adjustment", dep, template, quantity, prices.get((usage_kind, dep, template)), amount,
                        f"late usage for the period from {format_time(period_start)}: {what}",
                        usage_kind=usage_kind, original_period_start=period_start))
    return out


def settlement_lines(subtotal: int, carried: int, prepaid: int) -> list[Line]:
    """What closes an invoice: a negative subtotal is carried forward as credit (the total
    stays 0); otherwise carried credit is applied first, then prepaid credit, never past the
    subtotal."""
    if subtotal < 0:
        return [Line("carry_forward", None, None, 1, None, -subtotal,
                     f"negative subtotal carried forward as credit ({format_money(-subtotal)})")]
    out = []
    used = min(max(carried, 0), subtotal)
    if used:
        out.append(Line("carried_credit", None, None, 1, None, -used, f"carried credit applied ({format_money(used)})"))
    prepaid_line = credit_line(prepaid, subtotal - used)
    return out + [prepaid_line] if prepaid_line is not None else out


def credit_line(available: int, subtotal: int) -> Line | None:
    """Prepaid credit applied, never more than the subtotal: a total is never negative."""
    applied = min(max(available, 0), max(subtotal, 0))
    if applied == 0:
        return None
    return Line("credit", None, None, 1, None, -applied, f"prepaid credit applied ({format_money(applied)})")

