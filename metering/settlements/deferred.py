"""The modules that speak x402 and the chain, imported the first time a settlement is checked.

``chain``, ``payload`` and ``networks`` import web3, eth-account and x402's EVM code: ~1.5 s,
about half of what starting the service took.  Most processes never check a settlement (every
CLI command but billing, a service without x402 traffic), so they no longer pay it at start.
The service's entry points ``await load()`` first: the import then runs on a thread, and the
event loop goes on answering meanwhile instead of stalling for it.
"""

from __future__ import annotations

import asyncio
import importlib
import sys
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
        module: ModuleType = sys.modules.get(self._name) or importlib.import_module(self._name)
        return getattr(module, attr)


async def load() -> None:
    """Import the x402 and chain modules on a thread, once per process."""
    if HEAVY not in sys.modules:
        await asyncio.to_thread(importlib.import_module, HEAVY)
