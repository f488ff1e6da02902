"""web3 and x402 are imported when the first settlement is checked, not when the service starts."""

import json
import subprocess
import sys

from tests.process import ROOT


def _python(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_service_starts_without_web3_or_x402():
    loaded = _python("import json, sys, metering.api.app, metering.cli\n"
                     "print(json.dumps([m for m in ('web3', 'eth_account', 'x402.mechanisms.evm') if m in sys.modules]))")
    assert loaded == []


def test_first_settlements_at_once_each_wait_for_one_import_and_the_loop_keeps_answering():
    """Five reports arriving together, right after start: none sees a half-imported module,
    and the event loop goes on running while the import is on its thread."""
    out = _python("""
import asyncio, json
from metering.settlements import deferred
from metering.settlements.service import chain, payload

async def main():
    ticks = 0
    async def ticker():
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.005)
    async def first_check():
        await deferred.load()
        return [payload.caip2("base"), chain.Verdict("pending").status]
    beat = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    answers = await asyncio.gather(*(first_check() for _ in range(5)))
    beat.cancel()
    print(json.dumps({"answers": answers, "ticks": ticks}))

asyncio.run(main())
""")
    assert out["answers"] == [["eip155:8453", "pending"]] * 5
    assert out["ticks"] >= 10  # a loop blocked by the import would have ticked once or twice
