"""What the events bill, kept up to date at ingest so queries never rescan events.

Intervals are stored split at UTC month boundaries: a query for any range then reads
only the pieces that start inside the months it touches (one index range), plus the
few still-open pieces.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Index, Select, Text, text
from sqlmodel import Field, SQLModel

from metering.db.base import bigint_pk


IS_OPEN = text('"end" IS NULL')


class UsageInterval(SQLModel, table=True):
    __tablename__ = "usage_intervals"
    __table_args__ = (
        Index("ix_usage_intervals_ws_start", "workspace_id", "start"),
        Index("ix_usage_intervals_start", "start"),
        # Only the intervals still running: few at any time, so this index stays small and a
        # closed interval (almost every row) costs no entry in it (migration 0008).  Same
        # columns as ws_start, so SQLite, which takes a partial index to hold fewer rows,
        # prefers it for running intervals even without statistics.
        Index("ix_usage_intervals_open", "workspace_id", "start", sqlite_where=IS_OPEN,
              postgresql_where=IS_OPEN),
    )

    id: int | None = bigint_pk()
    workspace_id: str = Field(max_length=128)
    deployment_id: str = Field(max_length=128)
    sandbox_id: str = Field(max_length=128)
    template: str = Field(max_length=128)
    start: int = Field(sa_type=BigInteger)
    end: int | None = Field(default=None, sa_type=BigInteger)  # None: still running
    # When the interval's paid lifetime ends (usage.derive); None on rows derived before 0015.
    lifetime_end: int | None = Field(default=None, sa_type=BigInteger)


class UsageExtension(SQLModel, table=True):
    __tablename__ = "usage_extensions"
    __table_args__ = (
        Index("ix_usage_extensions_ws_time", "workspace_id", "time"),
        Index("ix_usage_extensions_time", "time"),
    )

    id: int | None = bigint_pk()
    workspace_id: str = Field(max_length=128)
    deployment_id: str = Field(max_length=128)
    sandbox_id: str = Field(max_length=128)
    template: str = Field(max_length=128)
    time: int = Field(sa_type=BigInteger)
    count: int  # 15-minute extensions


class ChangedDay(SQLModel, table=True):
    """Written at ingest: the workspace's usage on this UTC day changed after the day ended.

    Billing (invoices.late) turns the days of closed periods into adjustment lines on the
    current period's draft and deletes them, unless ``version`` moved meanwhile (ingest bumps
    it on each new change): a change that lands while billing reads is kept for the next run.
    """

    __tablename__ = "usage_changed_days"

    workspace_id: str = Field(primary_key=True, max_length=128)
    day: int = Field(primary_key=True, sa_type=BigInteger)  # microseconds, a UTC midnight
    version: int = Field(default=1, sa_type=BigInteger)


class SandboxState(SQLModel, table=True):
    """Where each sandbox's billing fold stands after all of its stored lifecycle events.

    Billing is a left-to-right fold over a sandbox's events in order (time, lifecycle rank,
    source, id).  ``last_*`` is the order key of the greatest stored event; the ``open_*``
    columns describe the running interval still open (its row in ``usage_intervals`` has no
    end); ``terminated`` means later events bill nothing.  Ingest continues the fold from here
    when every new event sorts after ``last_*`` (usage.derive), so a batch costs what it adds.
    The sandbox's stored lifecycle events' fold fields (usage.derive.history_text) are its
    sealed ``sandbox_history_chunks`` (``history_chunks`` of them) then ``history`` (the last
    ``history_events``): a late event re-derives the sandbox from them, without an index of
    events by sandbox.  The part kept here stays short (usage.derive.HISTORY_CHUNK), so an
    event in order costs the same whatever the sandbox's age.
    """

    # A rowid table on SQLite (migration 0020), as are the chunks: a new sandbox's row goes to
    # the table's last pages beside the others of its commit, and only its key's small entry
    # lands among the rest.  WITHOUT ROWID each ~1 KB row went to its key's place, a few to a
    # page, and a commit wrote about a page for every sandbox it touched.
    __tablename__ = "sandbox_states"

    workspace_id: str = Field(primary_key=True, max_length=128)
    sandbox_id: str = Field(primary_key=True, max_length=128)
    last_time: int = Field(sa_type=BigInteger)
    last_rank: int
    last_source: str = Field(max_length=512)
    last_event_id: str = Field(max_length=128)
    open_start: int | None = Field(default=None, sa_type=BigInteger)
    open_template: str | None = Field(default=None, max_length=128)
    open_deployment: str | None = Field(default=None, max_length=128)
    terminated: bool = False
    history: str = Field(default="", sa_type=Text)
    open_lifetime_end: int | None = Field(default=None, sa_type=BigInteger)
    history_events: int = 0
    history_chunks: int = 0


class SandboxHistoryChunk(SQLModel, table=True):
    """A sealed stretch of a sandbox's history, in fold order (``seq`` from 0): see SandboxState."""

    # A rowid table on SQLite (migration 0018): chunks are only ever appended, so their rows
    # go to the table's last pages and only the small key entries land among the sandbox's
    # others.  WITHOUT ROWID, a ~1 KB row went in key order, a few to a page: inserting one
    # split pages all over the b-tree.
    __tablename__ = "sandbox_history_chunks"

    workspace_id: str = Field(primary_key=True, max_length=128)
    sandbox_id: str = Field(primary_key=True, max_length=128)
    seq: int = Field(primary_key=True)
    events: str = Field(sa_type=Text)



def still_running(query: Select, started_before: int) -> Select:
    """``query`` (on usage_intervals) kept to the intervals still running that started
    before ``started_before``, read through the small partial ix_usage_intervals_open.

    The bound is on ``start + 0``, an expression no index covers: as a plain range on
    ``start`` it would tempt SQLite's planner into ix_usage_intervals_start (or ws_start)
    and a walk over the whole history, as it did across all workspaces.
    """
    table = UsageInterval.__table__
    return query.where(table.c.end.is_(None), table.c.start + 0 < started_before)
