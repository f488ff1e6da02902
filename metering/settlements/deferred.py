"""The modules that speak x402 and the chain, imported the first time a settlement is checked.

``chain``, ``payload`` and ``networks`` import web3, eth-account and x402's EVM code: ~1.5 s,
about half of what starting the service took.  Most processes never check a settlement (the
CLI's commands, billing included; a service without x402 traffic), so they no longer pay it at
start.
The service's entry points ``await load()`` first: the import then runs on a thread, and the
event loop goes on answering meanwhile instead of stalling for it.
"""

from __future__ import annotations

import asyncio
import importlib
from types import ModuleType
from typing import Any

# chain imports the other two.
HEAVY = "metering.settlements.chain"


class Deferred:
    """Stands for a module until it is imported: each attribute is looked up on the real one
    (importing it there and then if ``load`` was not awaited, e.g. from synchronous code)."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        # import_module, not sys.modules: a module another thread is still importing is in
        # sys.modules half made; import_module waits for it.
        module: ModuleType = importlib.import_module(self._name)
        return getattr(module, attr)


_loaded = False


async def load() -> None:
    """Import the x402 and chain modules on a thread, once per process.  Callers at the same
    moment each wait on a thread of their own, which Python's import lock holds until the
    first one's import is complete."""
    global _loaded
    if not _loaded:
        await asyncio.to_thread(importlib.import_module, HEAVY)
        _loaded = True
