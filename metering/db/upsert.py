"""Dialect-aware ``INSERT ... ON CONFLICT DO NOTHING``."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite


def insert_ignore(table: Table, dialect: str, conflict_columns: Sequence[str]):  # type: ignore[no-untyped-def]
    """An insert that skips rows whose ``conflict_columns`` already exist.

    Executed with a list of parameter dicts and ``RETURNING``, SQLAlchemy renders it
    as multi-row ``VALUES`` batches ("insertmanyvalues"), not one statement per row.
    """
    module = postgresql if dialect == "postgresql" else sqlite
    return module.insert(table).on_conflict_do_nothing(index_elements=list(conflict_columns))
