"""A local anvil node that stands in for Base (chain id 8453) in tests.

``Anvil`` starts the binary installed by ``npm install`` (``@foundry-rs/anvil``),
on a free port, with ``--state <file>`` so that ``stop()`` + ``start()``
(an RPC outage) keeps the whole chain: blocks, receipts, balances, code.

Block tags on anvil: ``safe`` = head - slots_in_an_epoch (32 by default) and
``finalized`` = head - 2 * slots_in_an_epoch (64).

Everything here is synchronous and uses plain JSON-RPC (urllib) or web3's
HTTPProvider.
"""

from __future__ import annotations

import atexit
import json
import os
import weakref
import platform
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
NODE_MODULES = REPO_ROOT / "node_modules"
ANVIL_BIN = NODE_MODULES / ".bin" / "anvil"

BASE_CHAIN_ID = 8453

# anvil's default dev accounts (mnemonic "test test ... junk"), each funded
# with 10,000 ETH at genesis and unlocked for eth_sendTransaction.
DEV_KEYS = (
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
    "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a",
)


_LIVE: "weakref.WeakSet[Anvil]" = weakref.WeakSet()


@atexit.register
def _kill_leftovers() -> None:
    # Safety net for interrupted sessions (fixture teardown normally does this).
    for node in list(_LIVE):
        try:
            node.kill()
        except Exception:
            pass


class AnvilError(RuntimeError):
    pass


class AnvilNotInstalled(AnvilError):
    pass


def free_port() -> int:
    """A TCP port that was free a moment ago (bind to port 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_anvil() -> list[str]:
    """The command that runs anvil.

    ``$ANVIL_BIN`` wins if set.  Otherwise ``node_modules/.bin/anvil`` must
    exist; we exec the native binary it wraps directly when we can find it
    (so signals reach anvil itself, not a node wrapper), else the wrapper.
    """
    override = os.environ.get("ANVIL_BIN")
    if override:
        return [override]
    if not ANVIL_BIN.exists():
        raise AnvilNotInstalled(
            f"anvil is not installed: {ANVIL_BIN} is missing. "
            f"Run `npm install` in {REPO_ROOT} (installs @foundry-rs/anvil and solc from package-lock.json)."
        )
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
        platform.machine().lower(), platform.machine().lower()
    )
    system = {"linux": "linux", "darwin": "darwin"}.get(platform.system().lower())
    if system:
        native = NODE_MODULES / "@foundry-rs" / f"anvil-{system}-{arch}" / "bin" / "anvil"
        if native.exists() and os.access(native, os.X_OK):
            return [str(native)]
    return [str(ANVIL_BIN)]


def _jsonrpc(url: str, method: str, params: list[Any] | None = None, timeout: float = 10.0) -> Any:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}).encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        reply = json.loads(resp.read())
    if "error" in reply:
        raise AnvilError(f"{method} failed: {reply['error']}")
    return reply.get("result")


class Anvil:
    """One anvil process; restartable on the same port with its state kept.

    Attributes: ``rpc_url``, ``port``, ``chain_id``, ``state_path``.
    """

    def __init__(
        self,
        *,
        chain_id: int = BASE_CHAIN_ID,
        port: int | None = None,
        state_dir: str | os.PathLike[str] | None = None,
        slots_in_an_epoch: int | None = None,
        extra_args: tuple[str, ...] | list[str] = (),
        startup_timeout: float = 30.0,
    ) -> None:
        self.chain_id = chain_id
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.rpc_url = f"http://{self.host}:{self.port}"
        self._own_dir = state_dir is None
        self.state_dir = Path(state_dir or tempfile.mkdtemp(prefix="anvil-"))
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.state_path = self.state_dir / "state.json"
        self.log_path = self.state_dir / "anvil.log"
        self.slots_in_an_epoch = slots_in_an_epoch
        self.extra_args = list(extra_args)
        self.startup_timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = None
        self._w3 = None
        self.starts = 0

    # ---------------------------------------------------------------- process

    def command(self) -> list[str]:
        cmd = find_anvil() + [
            "--chain-id", str(self.chain_id),
            "--host", self.host,
            "--port", str(self.port),
            "--silent",
            # load this file if it exists, dump the chain into it on SIGTERM/SIGINT
            "--state", str(self.state_path),
            # keep per-block states across a restart (eth_call/getBalance at old blocks)
            "--preserve-historical-states",
            # Per-block states stay in memory, never in anvil's on-disk state cache.  Once
            # anvil has stored 500 states it shrinks the in-memory window, one a block, down
            # to 10 and moves older states to that cache; an anvil_reorg deeper than the
            # window then rebuilds the chain on a state read back from it WITHOUT contract
            # code (anvil 1.7.1: after ~1000 blocks, eth_getCode(USDC) is 0x and a
            # transferWithAuthorization "succeeds" with no logs).  In memory only, the
            # window stays at 500 states.
            "--max-persisted-states", "0",
        ]
        if self.slots_in_an_epoch is not None:
            cmd += ["--slots-in-an-epoch", str(self.slots_in_an_epoch)]
        return cmd + self.extra_args

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> "Anvil":
        """Start (or restart, on the same port, from the dumped state)."""
        if self.running:
            return self
        cmd = self.command()
        self._log = open(self.log_path, "ab")
        self._proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.state_dir,
            start_new_session=True,  # a ^C in pytest must not kill it before teardown
        )
        _LIVE.add(self)
        deadline = time.monotonic() + self.startup_timeout
        last_exc: Exception | None = None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise AnvilError(
                    f"anvil exited with {self._proc.returncode} on start: {' '.join(cmd)}\n"
                    + self._tail_log()
                )
            try:
                got = int(_jsonrpc(self.rpc_url, "eth_chainId", timeout=1.0), 16)
            except (OSError, urllib.error.URLError, AnvilError, ValueError) as exc:
                last_exc = exc
                time.sleep(0.05)
                continue
            if got != self.chain_id:
                self.kill()
                raise AnvilError(f"anvil answered chain id {got}, expected {self.chain_id}")
            self.starts += 1
            return self
        self.kill()
        raise AnvilError(
            f"anvil did not answer eth_chainId on {self.rpc_url} within "
            f"{self.startup_timeout}s ({last_exc})\n" + self._tail_log()
        )

    def stop(self, timeout: float = 20.0) -> None:
        """Graceful stop (SIGTERM): anvil dumps its state to ``state_path``,
        and the port refuses connections until ``start()``."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._reap()

    def kill(self) -> None:
        """Hard stop (SIGKILL, a crash): nothing is dumped, so a later
        ``start()`` resumes from the last graceful dump (or an empty chain)."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        self._reap()

    def restart(self) -> "Anvil":
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop for good and remove the temporary state directory we created."""
        self.kill()
        if self._own_dir:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def _reap(self) -> None:
        self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def _tail_log(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_bytes()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> "Anvil":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -------------------------------------------------------------------- RPC

    def rpc(self, method: str, *params: Any) -> Any:
        """Raw JSON-RPC call; raises AnvilError on an error reply."""
        return _jsonrpc(self.rpc_url, method, list(params))

    @property
    def w3(self):
        """A synchronous web3 (HTTPProvider) bound to this node's URL."""
        if self._w3 is None:
            self._w3 = make_web3(self.rpc_url)
        return self._w3

    def mine(self, n: int = 1, interval: int | None = None) -> int:
        """Mine ``n`` blocks (optionally ``interval`` seconds apart); returns the new head."""
        if interval is None:
            self.rpc("anvil_mine", hex(n))
        else:
            self.rpc("anvil_mine", hex(n), hex(interval))
        return self.block_number()

    def block_number(self, tag: str = "latest") -> int:
        if tag == "latest":
            return int(self.rpc("eth_blockNumber"), 16)
        block = self.rpc("eth_getBlockByNumber", tag, False)
        return int(block["number"], 16)

    def snapshot(self) -> str:
        """evm_snapshot; ids do NOT survive a restart."""
        return self.rpc("evm_snapshot")

    def revert(self, snapshot_id: str) -> bool:
        """evm_revert to ``snapshot_id`` (which is consumed)."""
        return bool(self.rpc("evm_revert", snapshot_id))

    def increase_time(self, seconds: int) -> None:
        self.rpc("evm_increaseTime", hex(seconds))

    def set_next_block_timestamp(self, ts: int) -> None:
        self.rpc("evm_setNextBlockTimestamp", hex(ts))

    def set_balance(self, address: str, wei: int) -> None:
        self.rpc("anvil_setBalance", address, hex(wei))

    def set_automine(self, enabled: bool) -> None:
        self.rpc("evm_setAutomine", enabled)

    def reorg(self, depth: int, tx_block_pairs: list | None = None) -> None:
        """anvil_reorg: replace the last ``depth`` blocks (new hashes)."""
        self.rpc("anvil_reorg", depth, tx_block_pairs or [])


def make_web3(rpc_url: str, timeout: float = 10.0):
    from web3 import Web3

    return Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": timeout}))


# ----------------------------------------------------------- web3-level helpers


def mine(w3, n: int = 1, interval: int | None = None) -> int:
    """Mine ``n`` blocks on the anvil behind ``w3``; returns the new head."""
    params = [hex(n)] if interval is None else [hex(n), hex(interval)]
    w3.provider.make_request("anvil_mine", params)
    return w3.eth.block_number


def snapshot(w3) -> str:
    resp = w3.provider.make_request("evm_snapshot", [])
    return resp["result"]


def revert(w3, snapshot_id: str) -> bool:
    resp = w3.provider.make_request("evm_revert", [snapshot_id])
    return bool(resp.get("result"))
