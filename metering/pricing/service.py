"""The price book in force: the versions in ``config/pricing.toml`` plus those added by API.

Added versions live in the database, so they survive a restart and every instance sees
them.  Each instance keeps the book in memory and reloads it when the newest stored
version id changes (one indexed lookup), so a version added elsewhere is seen at once.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
from sqlalchemy import Connection, func, select
from sqlalchemy.exc import IntegrityError

from metering.core.pricing import (
    PriceBook,
    PriceVersion,
    price_book_from_toml,
    price_version_from_doc,
    price_version_to_doc,
)
from metering.audit import models as audit
from metering.audit.service import record
from metering.db import Database
from metering.db.base import now_us
from metering.errors import Conflict, Invalid, field_error
from metering.pricing.models import PriceVersionRow


class PriceCatalog:
    def __init__(self, file_book: PriceBook) -> None:
        self.file_book = file_book
        self.book = file_book
        self._loaded_id: int | None = None

    @classmethod
    def from_file(cls, path: str | Path) -> PriceCatalog:
        return cls(price_book_from_toml(Path(path).read_text()))

    def knows(self, template: str, us: int) -> bool:
        return self.book.knows(template, us)

    async def refresh(self, db: Database) -> PriceBook:
        """The current book, reloaded only if a version was added since the last look."""
        loaded = self._loaded_id

        def read(conn: Connection) -> tuple[int | None, list[str] | None]:
            newest = conn.execute(select(func.max(PriceVersionRow.id))).scalar()
            if newest == loaded:
                return newest, None
            return newest, list(conn.execute(select(PriceVersionRow.document)).scalars())

        # Every usage query asks: one hand-off, usually one statement. Versions are only ever
        # added, so the two statements need not agree: a newer one is loaded next time.
        newest, docs = await db.run_read(read, snapshot=False)
        if docs is not None:
            book = self.file_book
            for doc in docs:
                book = book.with_version(price_version_from_doc(msgspec.json.decode(doc)))
            self.book, self._loaded_id = book, newest
        return self.book

    async def read_version(self, db: Database, doc: dict) -> tuple[PriceVersion, PriceBook]:
        """A version from its document and the book it would join (422 if it is invalid)."""
        try:
            version = price_version_from_doc(doc, self.file_book.versions[-1].run_tiers)
        except ValueError as exc:
            raise Invalid("the price version is invalid", [field_error(str(exc))]) from None
        book = await self.refresh(db)
        existing = book.at(version.effective_from)
        # Intervals running across the change are priced piecewise, so every template
        # the previous version prices must stay priced.
        missing = sorted(set(existing.prices) - set(version.prices)) if existing else []
        if missing:
            raise Invalid("a new version must keep pricing every template",
                          [field_error(f"missing {t}", f"prices.{t}") for t in missing])
        return version, book

    async def add_version(self, db: Database, doc: dict) -> PriceVersion:
        """Store a new version; only a future ``effective_from``, never a change to one."""
        version, book = await self.read_version(db, doc)
        if version.effective_from <= now_us():
            raise Invalid(
                "a new price version must take effect in the future",
                [field_error("must be in the future", "effective_from")],
            )
        existing = book.at(version.effective_from)
        if existing is not None and existing.effective_from == version.effective_from:
            raise _taken()
        doc = price_version_to_doc(version)
        row = PriceVersionRow(effective_from=version.effective_from, document=msgspec.json.encode(doc).decode(),
                              created_at=now_us())
        try:
            async with db.write() as session:
                session.add(row)
                await session.flush()  # a taken effective_from fails here, before the audit entry
                await record(session, audit.PRICE_VERSION_ADDED, doc["effective_from"], doc)
        except IntegrityError:  # another instance stored the same effective_from first
            raise _taken() from None
        await self.refresh(db)
        return version


def _taken() -> Conflict:
    return Conflict(
        "a price version with this effective_from exists, and versions are never changed",
        [field_error("already used", "effective_from")],
    )
