"""Settlements: report a payment, re-check it until the chain is sure, and query totals.

The effect of a settlement on invoices and credit is derived from its status by the
invoices domain (only ``confirmed`` counts), so a reorg reverses it by the status change.
No database transaction is held open while the chain is asked.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec
from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from metering.audit import models as audit
from metering.audit.service import record
from metering.core.money import format_money, parse_money
from metering.db import Database
from metering.db.base import now_us, rows_in
from metering.db.paging import decode_cursor, encode_cursor
from metering.errors import Conflict, Invalid, NotFound, field_error
from metering.events.schemas import ID_PATTERN
from metering.logging import get_logger
from metering.settings import Settings
from metering.settlements import deferred
from metering.settlements.models import Reason, Settlement, Status
from metering.tokens.service import Principal

if TYPE_CHECKING:
    from metering.settlements import chain, networks, payload
    from metering.settlements.networks import Network
    from metering.settlements.payload import Payment
else:  # web3 and x402: imported when the first settlement is checked (settlements.deferred)
    chain, networks, payload = (deferred.Deferred(f"metering.settlements.{m}") for m in ("chain", "networks", "payload"))

log = get_logger(__name__)

SECOND_US = 1_000_000
MAX_BACKOFF_US = 300 * SECOND_US
# A confirmed settlement is watched for reorgs until its block is ``finalized``, or at
# most this long (an RPC that never reports ``finalized`` must not be polled forever).
REORG_WATCH_US = 24 * 3600 * SECOND_US
BIGINT_MAX = 2**63 - 1
TX_HASH = re.compile(r"0x[0-9a-fA-F]{64}")
TIER = re.compile(r"\$?[0-9]+(?:\.[0-9]{1,6})?")
PURPOSE_FIELDS = {
    "run": ({"run_id", "tier"}, {"workspace_id"}),
    "invoice": ({"invoice_id"}, {"workspace_id"}),
    "credit": ({"workspace_id"}, set()),
}

# Wired by the invoices domain: the invoice's workspace, or NotFound / Conflict when the
# invoice cannot be paid (unknown, not finalized, already paid or void).
InvoiceCheck = Callable[[AsyncSession, str], Awaitable[str]]
# Called in the same transaction as a stored status change (new settlement, or pending ->
# confirmed/rejected, confirmed -> reorged), e.g. to mark an invoice paid or unpaid.
OnChange = Callable[[AsyncSession, Settlement], Awaitable[None]]

_canonical = msgspec.json.Encoder(order="sorted")


AUDITED = {Status.CONFIRMED: audit.SETTLEMENT_CONFIRMED, Status.REJECTED: audit.SETTLEMENT_REJECTED,
           Status.REORGED: audit.SETTLEMENT_REORGED}


class _KeyClash(Exception):
    """A unique index on settlements refused a row (an error from ``on_change`` is not one)."""


async def _flush_or_clash(session: AsyncSession) -> None:
    try:
        await session.flush()
    except IntegrityError as exc:
        raise _KeyClash from exc


@dataclass(frozen=True)
class Purpose:
    kind: str
    doc: dict[str, str]  # as stored and returned
    workspace_id: str | None
    invoice_id: str | None
    run_id: str | None
    tier_micro: int | None

    @property
    def json(self) -> str:
        return _canonical.encode(self.doc).decode()


@dataclass(frozen=True)
class ReportOutcome:
    settlement: Settlement
    created: bool  # False: an earlier report of the same payment (HTTP 200)


# ------------------------------------------------------------------ validation


def read_purpose(raw: Any, run_tiers: Sequence[int]) -> Purpose:
    if not isinstance(raw, dict):
        raise _invalid("purpose", "must be an object with a kind: run, invoice or credit")
    kind = raw.get("kind")
    if not isinstance(kind, str) or kind not in PURPOSE_FIELDS:
        raise _invalid("purpose.kind", "must be one of run, invoice, credit")
    required, optional = PURPOSE_FIELDS[kind]
    known = {"kind", *required, *optional}
    errors = [field_error("is not a field of this purpose", f"purpose.{k}") for k in raw if k not in known]
    errors += [field_error("is required", f"purpose.{k}") for k in sorted(required) if raw.get(k) is None]
    for key in sorted((required | optional) - {"tier"}):
        value = raw.get(key)
        if value is not None and (not isinstance(value, str) or not ID_PATTERN.fullmatch(value)):
            errors.append(field_error("must be 1 to 128 characters of A-Z a-z 0-9 _ . : -", f"purpose.{key}"))
    tier_micro = None
    if kind == "run" and raw.get("tier") is not None:
        tier = raw["tier"]
        tier_micro = parse_money(tier.lstrip("$")) if isinstance(tier, str) and TIER.fullmatch(tier) else None
        if tier_micro is None or tier_micro not in run_tiers:
            names = ", ".join(f"${m // 1_000_000}.{m % 1_000_000 // 10_000:02d}" for m in run_tiers)
            errors.append(field_error(f"must be a run tier of the price book: {names}", "purpose.tier"))
    if errors:
        raise Invalid("the purpose is invalid", errors)
    doc = {k: v for k, v in raw.items() if v is not None}
    return Purpose(kind, doc, doc.get("workspace_id"), doc.get("invoice_id"), doc.get("run_id"), tier_micro)


def read_transaction(value: Any) -> str:
    if not isinstance(value, str) or not TX_HASH.fullmatch(value):
        raise _invalid("transaction", "must be a transaction hash: 0x and 32 bytes of hex")
    return value.lower()


def _network_reason(net: Network | None, payment: Payment) -> str | None:
    if net is None:
        return Reason.NETWORK_NOT_CONFIGURED
    if payment.asset is not None and payment.asset != net.usdc:
        return Reason.ASSET_MISMATCH
    return None


def _terms_reason(net: Network, payment: Payment, purpose: Purpose) -> str | None:
    if payment.pay_to not in net.receivers:
        return Reason.PAY_TO_NOT_ACCEPTED
    if payment.amount_required is not None and payment.amount_required != payment.value:
        return Reason.AMOUNT_MISMATCH
    if purpose.tier_micro is not None and purpose.tier_micro != payment.value:
        return Reason.AMOUNT_MISMATCH
    return None


async def check_report(
    net: Network | None, payment: Payment, purpose: Purpose, transaction: str
) -> tuple[chain.Verdict, bool]:
    """Every check of one report, in order, with this report's own values only (never a
    stored settlement's): the verdict, and whether the chain was asked.

    Network and asset, then the signature (offline when it is the payer's ECDSA one, else
    on chain as x402 verifies a smart wallet's), then receiver and amount, then the
    transaction on chain."""
    reason = _network_reason(net, payment)
    if reason is not None:
        return chain.Verdict(Status.REJECTED, reason), False
    assert net is not None
    asked = False
    signature = chain.signature_offline(net, payment)
    if signature is None:
        verdict = await chain.check_signature(net, payment)
        if verdict is not None:
            return verdict, True
        asked = True
    elif not signature:
        return chain.Verdict(Status.REJECTED, Reason.INVALID_SIGNATURE), False
    reason = _terms_reason(net, payment, purpose)
    if reason is not None:
        return chain.Verdict(Status.REJECTED, reason), asked
    return await chain.check_payment(net, _expected(payment), transaction), True


# ---------------------------------------------------------------------- report


async def report(
    db: Database,
    settings: Settings,
    *,
    transaction: Any,
    purpose: Any,
    run_tiers: Sequence[int],
    network: Any = None,
    payment_payload: Any = None,
    payment_header: Any = None,
    principal: Principal | None = None,
    invoice_check: InvoiceCheck | None = None,
    on_change: OnChange | None = None,
    now: int | None = None,
) -> ReportOutcome:
    """Check a reported payment and store it (also when rejected, with its reason).

    The same report again (same payload, transaction and purpose) returns the settlement
    already stored, asking the chain again if it was reorged or rejected for the
    operator's fault; a report of the same payment that differs in any of them is a 409
    while a live (pending or confirmed) settlement holds the payment, else it is checked
    on its own.
    """
    now = now_us() if now is None else now
    await deferred.load()
    payment = payload.read_payment(payment_payload, payment_header)
    tx = read_transaction(transaction)
    if network is not None:
        named = payload.caip2(network) if isinstance(network, str) else None
        if named is None:
            raise _invalid("network", "must be an EVM network: eip155:<chain id>, base or base-sepolia")
        if named != payment.network:
            raise _invalid("network", f"differs from the payment payload's network {payment.network}")
    intent = read_purpose(purpose, run_tiers)
    row = _new_row(payment, tx, intent, None, now)

    # A repeat is answered before the invoice is looked at: by then this very payment
    # may have made the invoice paid.
    earlier = await _earlier_report(db, row, principal)
    if earlier is not None:
        return ReportOutcome(await _report_again(db, settings, earlier, payment, intent, on_change), created=False)

    row.workspace_id = await _workspace_of(db, intent, principal, invoice_check)
    net = networks.network_for(settings, payment.network)
    verdict, asked = await check_report(net, payment, intent, tx)
    _apply(row, verdict, now, net, settings, asked_chain=asked)
    outcome = await _insert(db, row, principal, on_change)
    if outcome.created:
        _log_check(row)
    return outcome


async def _workspace_of(
    db: Database, intent: Purpose, principal: Principal | None, invoice_check: InvoiceCheck | None
) -> str | None:
    workspace_id = intent.workspace_id
    if intent.kind == "invoice" and invoice_check is not None:
        assert intent.invoice_id is not None
        async with db.read() as session:
            owner = await invoice_check(session, intent.invoice_id)
        if principal is not None and not principal.sees(owner):
            raise NotFound(f"no invoice {intent.invoice_id!r}")
        if workspace_id is not None and workspace_id != owner:
            raise _invalid("purpose.workspace_id", "is not the workspace of the invoice")
        workspace_id = owner
    if workspace_id is None and principal is not None:
        workspace_id = principal.workspace_id
    if principal is not None and not principal.sees(workspace_id):
        raise NotFound(f"no workspace {workspace_id!r}")
    return workspace_id


def _new_row(payment: Payment, tx: str, intent: Purpose, workspace_id: str | None, now: int) -> Settlement:
    return Settlement(
        id=f"stl_{secrets.token_hex(12)}",
        network=payment.network,
        chain_id=payment.chain_id,
        transaction=tx,
        payer=payment.payer,
        pay_to=payment.pay_to,
        amount=payment.value,
        nonce=payment.nonce,
        valid_before=min(payment.valid_before, BIGINT_MAX),
        x402_version=payment.x402_version,
        payload_hash=payment.fingerprint,
        purpose_kind=intent.kind,
        purpose=intent.json,
        workspace_id=workspace_id,
        invoice_id=intent.invoice_id,
        run_id=intent.run_id,
        status=Status.PENDING,
        attempts=0,
        created_at=now,
        updated_at=now,
    )


def _same_report(stored: Settlement, new: Settlement) -> bool:
    """The same payload, transaction and purpose.  A row stored before payloads were
    fingerprinted is compared by the payment columns it has."""
    if stored.transaction != new.transaction or stored.purpose != new.purpose:
        return False
    if stored.payload_hash is not None:
        return stored.payload_hash == new.payload_hash
    return (stored.pay_to, stored.amount, stored.valid_before, stored.x402_version) == (
        new.pay_to, new.amount, new.valid_before, new.x402_version)


async def _earlier_report(db: Database, row: Settlement, principal: Principal | None) -> Settlement | None:
    """The stored settlement this report repeats, or a 409 if it claims the same payment
    differently.  Only live settlements hold a payment; a rejected or reorged one is
    returned only for an identical report (a changed one is checked on its own)."""
    async with db.read() as session:
        stored = (
            await session.execute(
                select(Settlement)
                .where(
                    Settlement.chain_id == row.chain_id, Settlement.payer == row.payer, Settlement.nonce == row.nonce
                )
                .order_by(Settlement.created_at.desc())  # type: ignore[attr-defined]
            )
        ).scalars().all()
    live = next((s for s in stored if s.status in Status.LIVE), None)
    if live is not None and not _same_report(live, row):
        raise _payment_conflict(live, principal)
    def visible(s: Settlement) -> bool:
        return principal is None or principal.sees(s.workspace_id)

    if live is not None:
        if not visible(live):
            raise _payment_conflict(live, principal)  # held by another workspace's report
        return live
    return next((s for s in stored if _same_report(s, row) and visible(s)), None)


def _payment_conflict(existing: Settlement, principal: Principal | None) -> Conflict:
    # Name the settlement only to a caller allowed to see it.
    which = existing.id if principal is None or principal.sees(existing.workspace_id) else "another workspace's"
    return Conflict(
        f"this payment (payer, nonce) is already reported, as settlement {which}, "
        "with another transaction or purpose",
        [field_error("already settles another purpose or transaction", "payment_payload.payload.authorization.nonce")],
    )


async def _insert(
    db: Database, row: Settlement, principal: Principal | None, on_change: OnChange | None
) -> ReportOutcome:
    try:
        async with db.write() as session:
            session.add(row)
            await _flush_or_clash(session)
            await _status_changed(session, row, None, on_change)
        return ReportOutcome(row, created=True)
    except _KeyClash:
        pass
    # Lost a race with a concurrent report of the same payment, or the transfer is
    # already claimed by another payment: the unique indexes decided, now explain.
    earlier = await _earlier_report(db, row, principal)
    if earlier is not None:
        return ReportOutcome(earlier, created=False)
    raise Conflict(
        "this transaction's transfer already settles another payment",
        [field_error("already settles another payment", "transaction")],
    )


async def _report_again(
    db: Database, settings: Settings, earlier: Settlement, payment: Payment, intent: Purpose,
    on_change: OnChange | None,
) -> Settlement:
    """The same report again.  What it settled stands, except: a rejection that was the
    operator's fault (network missing or off, RPC on another chain) is checked again, and
    so is a reorged settlement (its transaction may be back on the chain)."""
    net = networks.network_for(settings, earlier.network)
    if earlier.status == Status.REORGED and net is not None:
        return await _follow_reorged(db, settings, net, earlier, on_change) or earlier
    if earlier.status == Status.REJECTED and earlier.reason in Reason.OPERATOR_SIDE:
        # The report is identical, so its own values are the stored ones.
        verdict, asked = await check_report(net, payment, intent, earlier.transaction)
        return await _save_check(db, earlier, verdict, net, settings, asked, on_change=on_change) or earlier
    return earlier


# --------------------------------------------------------------------- re-check


async def recheck_pending(
    db: Database, settings: Settings, now_us: int, limit: int = 100, *, on_change: OnChange | None = None
) -> int:
    """Check the due settlements again: pending ones until the chain decides, confirmed
    ones for reorgs until their block is final.  Returns how many were checked.

    Safe to run from several instances at once: each update only applies to the row
    as it was read (status and attempts unchanged), so a stale answer never wins.
    """
    async with db.read() as session:
        due = (
            await session.execute(
                select(Settlement)
                .where(
                    Settlement.status.in_(Status.WATCHED),  # type: ignore[attr-defined]
                    Settlement.next_check_at.is_not(None),  # type: ignore[union-attr]
                    Settlement.next_check_at <= now_us,  # type: ignore[operator]
                )
                .order_by(Settlement.next_check_at)
                .limit(limit)
            )
        ).scalars().all()
    if due:
        await deferred.load()
    for row in due:
        net = networks.network_for(settings, row.network)
        if net is None:
            # Configuration may come back; an operator's mistake never rejects a payment.
            verdict = chain.Verdict(row.status, row.reason, error=f"network {row.network} is not configured")
            await _save_check(db, row, verdict, None, settings, asked_chain=True, on_change=on_change)
        elif row.status == Status.PENDING:
            verdict = await chain.check_payment(net, _expected_of(row), row.transaction)
            await _save_check(db, row, verdict, net, settings, asked_chain=True, on_change=on_change)
        elif row.status == Status.CONFIRMED:
            await _watch_confirmed(db, settings, net, row, on_change)
        else:
            await _follow_reorged(db, settings, net, row, on_change)
    return len(due)


async def _watch_confirmed(
    db: Database, settings: Settings, net: Network, row: Settlement, on_change: OnChange | None
) -> None:
    assert row.block_number is not None and row.block_hash is not None
    found = await chain.check_block(net, row.block_number, row.block_hash)
    keep = {"block_number": row.block_number, "block_hash": row.block_hash, "log_index": row.log_index}
    if found.state == "reorged":
        verdict = chain.Verdict(Status.REORGED, Reason.BLOCK_NOT_CANONICAL, **keep)
    else:
        verdict = chain.Verdict(Status.CONFIRMED, error=found.error, **keep)
    saved = await _save_check(
        db, row, verdict, net, settings, asked_chain=True, final=found.state == "final", on_change=on_change
    )
    if saved is not None and saved.status == Status.REORGED:
        log.warning("settlement_reorged", settlement_id=row.id, block_number=row.block_number)


async def _follow_reorged(
    db: Database, settings: Settings, net: Network, row: Settlement, on_change: OnChange | None
) -> Settlement | None:
    """A reorg followed to its end: the transaction is looked up again, with the
    settlement's own values.  Mined again (same height or later) and final: ``confirmed``
    at its new block, so its effect comes back.  Not (yet) there: still ``reorged``, and
    watched until it can no longer be mined (``validBefore`` passed).  Mined again but
    failing or not paying, in a block that is final: ``rejected`` with that reason; while
    that block is not final it is no verdict (another reorg may replace it, and the same
    transaction pay in its place), so the settlement stays ``reorged`` and watched."""
    found = await chain.check_payment(net, _expected_of(row), row.transaction)
    keep = {"block_number": row.block_number, "block_hash": row.block_hash, "log_index": row.log_index}
    gone = found.status == Status.REJECTED and found.reason == Reason.EXPIRED
    undecided = found.status == Status.REJECTED and found.block_number is not None and not found.block_final
    if found.status == Status.PENDING or gone or undecided or found.reason in Reason.OPERATOR_SIDE:
        error = found.error or ("the RPC serves another chain id" if found.reason == Reason.CHAIN_ID_MISMATCH else None)
        # The old block stays on show until the chain names a new final one.
        verdict = chain.Verdict(Status.REORGED, Reason.BLOCK_NOT_CANONICAL, error=error)
        return await _save_check(
            db, row, verdict, net, settings, asked_chain=True, final=gone, on_change=on_change, keep=keep
        )
    return await _save_check(db, row, found, net, settings, asked_chain=True, on_change=on_change)


async def _save_check(
    db: Database,
    row: Settlement,
    verdict: chain.Verdict,
    net: Network | None,
    settings: Settings,
    asked_chain: bool,
    final: bool = False,
    on_change: OnChange | None = None,
    keep: dict[str, Any] | None = None,
) -> Settlement | None:
    """Write a check's outcome if the row is still as it was read; the updated row or None.

    ``keep``: block fields to keep although the verdict carries none."""
    before = (row.status, row.attempts)
    updated = Settlement(**row.model_dump())
    _apply(updated, verdict, now_us(), net, settings, asked_chain=asked_chain, final=final)
    if keep is not None:
        for name, value in keep.items():
            setattr(updated, name, value)
    values = updated.model_dump(exclude={"id", "created_at"})
    guard = and_(Settlement.id == row.id, Settlement.status == before[0], Settlement.attempts == before[1])
    try:
        async with db.write() as session:
            try:
                result = await session.execute(update(Settlement).where(guard).values(**values))
            except IntegrityError as exc:
                raise _KeyClash from exc
            if result.rowcount and updated.status != before[0]:
                await _status_changed(session, updated, before[0], on_change)
    except _KeyClash:
        if before[0] == Status.REJECTED:
            return None  # a re-checked rejection lost to a newer report of the payment
        # A pending (or reorged, mined again) settlement's payment or transfer is held by
        # another live one, reported meanwhile.
        verdict = chain.Verdict(Status.REJECTED, Reason.TRANSFER_ALREADY_SETTLED)
        return await _save_check(db, row, verdict, net, settings, asked_chain, final, on_change)
    if result.rowcount == 0:
        return None  # another instance checked it meanwhile; its answer stands
    _log_check(updated)
    return updated


def _apply(
    row: Settlement,
    verdict: chain.Verdict,
    now: int,
    net: Network | None,
    settings: Settings,
    *,
    asked_chain: bool,
    final: bool = False,
) -> None:
    # Confirmed anew (first time, or back after a reorg): counted from now.
    if verdict.status == Status.CONFIRMED and (row.confirmed_at is None or row.status != Status.CONFIRMED):
        row.confirmed_at = now
    row.status = verdict.status
    row.reason = verdict.reason
    row.last_error = verdict.error
    if verdict.error is None:  # an answer from the chain replaces what was known
        row.block_number, row.block_hash, row.log_index = verdict.block_number, verdict.block_hash, verdict.log_index
    if asked_chain:
        row.attempts += 1
    row.next_check_at = _next_check(row, now, net, settings, final)
    row.updated_at = now


def _next_check(row: Settlement, now: int, net: Network | None, settings: Settings, final: bool) -> int | None:
    # A confirmed settlement is watched for a reorg, and a reorged one for its transaction
    # coming back, until final, or REORG_WATCH_US after its confirmation (then reporting
    # it again asks the chain again).
    watch_over = row.confirmed_at is not None and now - row.confirmed_at > REORG_WATCH_US
    if row.status == Status.CONFIRMED:
        watching = net is None or net.watches_reorgs
        if final or not watching or watch_over:
            return None
    elif row.status == Status.REORGED:
        if final or watch_over:
            return None
    elif row.status != Status.PENDING:
        return None
    base = max(settings.scheduler.settlement_recheck_seconds, 1) * SECOND_US
    return now + min(base << min(max(row.attempts - 1, 0), 20), MAX_BACKOFF_US)


def _expected(payment: Payment) -> chain.Expected:
    return chain.Expected(payment.payer, payment.pay_to, payment.value, payment.nonce, payment.valid_before)


def _expected_of(row: Settlement) -> chain.Expected:
    """What a stored settlement's own report said (its row holds that report's values)."""
    return chain.Expected(row.payer, row.pay_to, row.amount, row.nonce, row.valid_before)


async def _status_changed(
    session: AsyncSession, row: Settlement, before: str | None, on_change: OnChange | None
) -> None:
    """Every status a settlement takes passes here, in the transaction that stores it:
    a new report (``before`` None) and each change (pending -> confirmed | rejected,
    confirmed -> reorged, reorged -> confirmed | rejected, rejected -> re-checked)."""
    if on_change is not None:
        await on_change(session, row)
    if row.status in AUDITED:
        await record(session, AUDITED[row.status], row.id, {
            "network": row.network, "transaction": row.transaction, "block_number": row.block_number,
            "payer": row.payer, "pay_to": row.pay_to, "amount": format_money(row.amount),
            "purpose": msgspec.json.decode(row.purpose), "reason": row.reason})


def _log_check(row: Settlement) -> None:
    log.info(
        "settlement_checked",
        settlement_id=row.id,
        status=row.status,
        reason=row.reason,
        block_number=row.block_number,
        attempts=row.attempts,
        last_error=row.last_error,  # already stripped of the RPC URL
    )


# ---------------------------------------------------------------------- queries


async def get_settlement(session: AsyncSession, settlement_id: str) -> Settlement | None:
    return await session.get(Settlement, settlement_id)


async def confirmed_amount_for_invoice(session: AsyncSession, invoice_id: str) -> int:
    """Micro-dollars confirmed on chain for an invoice (partial payments add up)."""
    return (await confirmed_amounts_for_invoices(session, [invoice_id])).get(invoice_id, 0)


async def confirmed_amounts_for_invoices(session: AsyncSession, invoice_ids: Sequence[str]) -> dict[str, int]:
    """Micro-dollars confirmed on chain per invoice; invoices with nothing confirmed are left out."""
    return await _confirmed_sums(session, Settlement.invoice_id, invoice_ids, Settlement.purpose_kind == "invoice")


async def confirmed_credit_total(
    session: AsyncSession, workspace_id: str, *, confirmed_before: int | None = None
) -> int:
    """Micro-dollars of prepaid credit confirmed for a workspace (optionally only what was
    confirmed before a time, e.g. a period end)."""
    totals = await confirmed_credit_totals(session, [workspace_id], confirmed_before=confirmed_before)
    return totals.get(workspace_id, 0)


async def confirmed_credit_totals(
    session: AsyncSession, workspace_ids: Sequence[str], *, confirmed_before: int | None = None
) -> dict[str, int]:
    """Prepaid credit confirmed per workspace; workspaces without any are left out."""
    condition = Settlement.purpose_kind == "credit"
    if confirmed_before is not None:
        condition = condition & (Settlement.confirmed_at < confirmed_before)  # type: ignore[operator]
    return await _confirmed_sums(session, Settlement.workspace_id, workspace_ids, condition)


async def _confirmed_sums(session: AsyncSession, key, keys: Sequence[str], condition) -> dict[str, int]:  # type: ignore[no-untyped-def]
    query = select(key, func.sum(Settlement.amount)).where(condition, Settlement.status == Status.CONFIRMED)
    # PostgreSQL sums BIGINT as NUMERIC (a Decimal): exact, no float.
    return {k: int(total) for k, total in await rows_in(session, query.group_by(key), key, keys)}


async def list_settlements(
    session: AsyncSession,
    *,
    workspace_id: str | None = None,
    status: str | None = None,
    payer: str | None = None,
    invoice_id: str | None = None,
    purpose_kind: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[list[Settlement], str | None]:
    """Newest first, keyset-paginated; returns the page and the next cursor (or None)."""
    query = select(Settlement)
    for column, value in (
        (Settlement.workspace_id, workspace_id),
        (Settlement.status, status),
        (Settlement.payer, payer.lower() if payer else None),
        (Settlement.invoice_id, invoice_id),
        (Settlement.purpose_kind, purpose_kind),
    ):
        if value is not None:
            query = query.where(column == value)
    position = decode_cursor(cursor)
    if position is not None:
        created, last_id = position
        query = query.where(
            or_(
                Settlement.created_at < created,  # type: ignore[operator]
                and_(Settlement.created_at == created, Settlement.id < last_id),  # type: ignore[operator]
            )
        )
    newest_first = (Settlement.created_at.desc(), Settlement.id.desc())  # type: ignore[attr-defined]
    query = query.order_by(*newest_first).limit(limit + 1)
    rows = list((await session.execute(query)).scalars().all())
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, encode_cursor(rows[-1].created_at, rows[-1].id)


def _invalid(field: str, message: str) -> Invalid:
    return Invalid(f"{field} {message}", [field_error(message, field)])
