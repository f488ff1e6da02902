"""Functions the ingest writer's process is sent in tests (pickled by name: they must live in an
importable module, which pytest's test modules are not)."""

import os
import time

from metering.errors import Conflict


def pid(conn) -> int:  # type: ignore[no-untyped-def]
    return os.getpid()


def die(conn) -> None:  # type: ignore[no-untyped-def]
    os._exit(3)  # the writer process dies half way through a transaction


def refuse(conn) -> None:  # type: ignore[no-untyped-def]
    raise Conflict("refused", [{"message": "kept", "index": 4}])


def insert_then_fail(conn) -> None:  # type: ignore[no-untyped-def]
    conn.exec_driver_sql("INSERT INTO api_tokens (id, name, token_hash, scopes, created_at) "
                         "VALUES ('tok_x', 'x', 'h', 'admin', 0)")
    raise RuntimeError("after the insert")


def insert_token(conn, name: str) -> str:  # type: ignore[no-untyped-def]
    conn.exec_driver_sql("INSERT INTO api_tokens (id, name, token_hash, scopes, created_at) "
                         f"VALUES ('tok_{name}', '{name}', 'h_{name}', 'admin', 0)")
    return name


def names(conn, staged: list[str]) -> list[str]:  # type: ignore[no-untyped-def]
    return staged


def sleep(conn, seconds: float) -> None:  # type: ignore[no-untyped-def]
    time.sleep(seconds)


def length(conn, padding: bytes) -> int:  # type: ignore[no-untyped-def]
    return len(padding)
