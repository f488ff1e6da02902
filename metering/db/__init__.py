from metering.db.engine import Database, create_database
from metering.db.upsert import insert_ignore

__all__ = ["Database", "create_database", "insert_ignore"]
