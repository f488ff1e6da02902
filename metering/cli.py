"""The ``metering`` command line."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from metering.settings import Settings, SettingsError, load_settings

if TYPE_CHECKING:  # imported lazily at run time: each command loads only what it needs
    from metering.db import Database
    from metering.pricing.service import PriceCatalog

T = TypeVar("T")


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    from metering.api.app import create_app
    from metering.api.server import serve
    from metering.migrate import upgrade

    upgrade(settings.database_url)
    serve(create_app(settings), settings, args.host, args.port)
    return 0


def _migrate(settings: Settings, _: argparse.Namespace) -> int:
    from metering.migrate import upgrade

    upgrade(settings.database_url)
    print("database at head")
    return 0


def _with_database(settings: Settings, work: Callable[[Database], Awaitable[T]]) -> T:
    """Migrate, then run ``work`` with a database that is closed afterwards."""
    from metering.db import create_database
    from metering.migrate import upgrade

    upgrade(settings.database_url)

    async def run() -> T:
        db = create_database(settings.database_url)
        try:
            return await work(db)
        finally:
            await db.dispose()

    return asyncio.run(run())


def _times(**texts: str) -> list[int]:
    from metering.core.timeutil import TIME_RANGE, parse_bounded_time
    from metering.errors import Invalid, field_error

    try:
        return [parse_bounded_time(text) for text in texts.values()]
    except ValueError as exc:
        raise Invalid(str(exc), [field_error(f"must be an RFC 3339 time with an offset, in {TIME_RANGE}",
                                             ", ".join(texts))]) from None


def _prices(settings: Settings) -> PriceCatalog:
    from metering.pricing.service import PriceCatalog

    return PriceCatalog.from_file(settings.pricing_file)


def _tokens_create(settings: Settings, args: argparse.Namespace) -> int:
    from metering.tokens.service import create_token

    made = _with_database(settings, lambda db: create_token(db, args.name, args.scope, args.workspace))
    print(made.token)  # shown once: only its hash is stored
    return 0


def _billing_run(settings: Settings, args: argparse.Namespace) -> int:
    from metering.core.timeutil import format_time
    from metering.invoices.service import run_billing

    start, end = _times(period_start=args.period_start, period_end=args.period_end)
    result = _with_database(settings, lambda db: run_billing(db, settings, start, end, prices=_prices(settings)))
    print(f"{result.id}: {format_time(result.period_start)} .. {format_time(result.period_end)}: "
          f"{result.invoices} invoices, {result.finalized} finalized")
    return 0


def _scheduler(settings: Settings, args: argparse.Namespace) -> int:
    from metering.migrate import upgrade
    from metering.scheduler.runner import run_standalone

    upgrade(settings.database_url)
    return asyncio.run(run_standalone(settings, once=args.once, only=args.job))


def _consume(settings: Settings, _: argparse.Namespace) -> int:
    from metering.migrate import upgrade
    from metering.stream.consumer import run_standalone

    if settings.ingest.nats is None:
        print("metering: consume needs [ingest.nats] in the settings (or METERING_INGEST__NATS__URL)", file=sys.stderr)
        return 2
    upgrade(settings.database_url)
    return asyncio.run(run_standalone(settings))


def _export(settings: Settings, args: argparse.Namespace) -> int:
    from metering.exports.plan import ExportRequest
    from metering.exports.tofile import export_to_file

    start, end = _times(start=args.start, end=args.end)
    job = ExportRequest(args.dataset, start, end, args.workspace, args.format)
    # The progress bar is for people: nothing on stderr when it is not a terminal.
    progress = sys.stderr if sys.stderr.isatty() else None
    _with_database(settings, lambda db: export_to_file(db, _prices(settings), job, args.output, progress,
                                                       lifetime=settings.lifetime.policy))
    return 0


def _invoices_verify(settings: Settings, args: argparse.Namespace) -> int:
    from metering.invoices.verify import verify_invoices

    # By the ``[lifetime]`` the invoices were billed under: these settings'.
    report = _with_database(settings, lambda db: verify_invoices(db, _prices(settings), args.id,
                                                                 lifetime=settings.lifetime.policy))
    for difference in report.differences:
        print(difference)
    bad = len({d.invoice_id for d in report.differences})
    print(f"{report.checked} finalized invoices re-derived: "
          + (f"{bad} differ" if bad else "every one matches its events and prices"),
          file=sys.stderr if bad else sys.stdout)
    return 1 if bad else 0


def _audit_verify(settings: Settings, args: argparse.Namespace) -> int:
    from pathlib import Path

    from metering.audit.verify import verify_chain

    anchors = Path(args.anchors) if args.anchors else None
    verdict = _with_database(settings, lambda db: verify_chain(db, anchors))
    if verdict.ok:
        print(f"audit trail intact: {verdict.checked} entries")
        return 0
    print(f"audit trail broken at seq {verdict.bad_seq}: {verdict.problem}", file=sys.stderr)
    return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metering", description="Billing and usage metering service")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="apply migrations, then serve HTTP")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.set_defaults(func=_serve)

    sub.add_parser("migrate", help="apply database migrations").set_defaults(func=_migrate)

    tokens = sub.add_parser("tokens", help="service tokens").add_subparsers(dest="tokens_command", required=True)
    create = tokens.add_parser("create", help="create a token and print it once")
    create.add_argument("--name", required=True)
    create.add_argument("--scope", action="append", required=True, help="repeat for several scopes")
    create.add_argument("--workspace", default=None, help="bind the token to one workspace")
    create.set_defaults(func=_tokens_create)

    billing = sub.add_parser("billing", help="invoices").add_subparsers(dest="billing_command", required=True)
    run = billing.add_parser("run", help="build (and when due, finalize) the invoices of one period")
    run.add_argument("--period-start", required=True, help="RFC 3339, e.g. 2026-01-01T00:00:00Z")
    run.add_argument("--period-end", required=True)
    run.set_defaults(func=_billing_run)

    invoices = sub.add_parser("invoices", help="invoices").add_subparsers(dest="invoices_command", required=True)
    verify = invoices.add_parser("verify", help="re-derive finalized invoices from the stored events and prices; "
                                               "exit 1 naming each invoice and line that differs")
    verify.add_argument("--id", default=None, help="only this invoice")
    verify.set_defaults(func=_invoices_verify)

    audit = sub.add_parser("audit", help="the audit trail").add_subparsers(dest="audit_command", required=True)
    check = audit.add_parser("verify", help="check the hash chain; exit 1 naming the first bad seq")
    check.add_argument("--anchors", default=None,
                       help="a directory of daily anchors (<reports_dir>/@audit, or a copy) the chain must match")
    check.set_defaults(func=_audit_verify)

    scheduler = sub.add_parser("scheduler", help="run the scheduled jobs until SIGTERM/SIGINT")
    scheduler.add_argument("--once", action="store_true", help="run each job one time, then exit (cron, tests)")
    scheduler.add_argument("--job", action="append", choices=("billing", "reports", "settlements", "webhooks"),
                           help="only this job (repeatable)")
    scheduler.set_defaults(func=_scheduler)

    sub.add_parser("consume", help="store events from the NATS JetStream stream of [ingest.nats] until SIGTERM/SIGINT"
                   ).set_defaults(func=_consume)

    from metering.exports.columns import DATASETS, FORMATS

    export = sub.add_parser("export", help="write a finance export (as GET /v1/exports/{dataset}) to a file")
    export.add_argument("dataset", choices=list(DATASETS))
    export.add_argument("--start", required=True, help="RFC 3339, inclusive")
    export.add_argument("--end", required=True, help="RFC 3339, exclusive")
    export.add_argument("--workspace", default=None, help="one workspace only")
    export.add_argument("--format", choices=FORMATS, default="csv")
    export.add_argument("--output", required=True, help="file to write, or - for standard output")
    export.set_defaults(func=_export)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from metering.logging import configure_logging, get_logger

    args = build_parser().parse_args(argv)
    # Every command logs alike; "tokens create", "billing run", ... name the process in each line.
    command = " ".join(getattr(args, key) for key in ("command", "tokens_command", "billing_command")
                       if getattr(args, key, None))
    log = get_logger("metering.cli")
    try:
        settings = load_settings()
    except SettingsError as exc:
        configure_logging(command=command)
        log.error("invalid_settings", detail=str(exc))
        return 2
    configure_logging(settings.log_level, settings.log_format, command)
    from metering.errors import Problem

    try:
        return args.func(settings, args)
    except Problem as exc:
        details = "; ".join(f"{e.get('field', '')}: {e['message']}" for e in exc.errors)
        log.error("command_failed", detail=f"{exc.detail}{' (' + details + ')' if details else ''}")
        return 2
    except Exception as exc:  # a bug or an outage (database down): its traceback as one log line too
        log.error("command_crashed", error_type=type(exc).__name__, exc_info=exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
