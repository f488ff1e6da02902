"""``last_error`` (and the logs, which carry it) name the network, never the RPC's host or port."""

import pytest

from metering.settlements.chain import check_block, describe_error
from metering.settlements.networks import Network
from tests.chain.anvil import free_port


def network(rpc_url: str) -> Network:
    return Network(caip2="eip155:8453", chain_id=8453, rpc_url=rpc_url, usdc="0x" + "1" * 40, eip712_name="USD Coin",
                   eip712_version="2", receivers=frozenset(), finality="safe", timeout_seconds=2)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_a_refused_connection_names_the_network_only(host):
    port = free_port()  # nothing listens there: aiohttp says "Cannot connect to host ...:port"
    net = network(f"http://{host}:{port}/v2/KEY")
    found = await check_block(net, 1, "0x" + "0" * 64)
    assert found.state == "unknown"
    assert found.error.startswith("the RPC of eip155:8453: ")
    for leak in (host, str(port), "KEY", "/v2"):
        assert leak not in found.error, found.error


def test_host_and_port_in_any_form_are_blanked():
    net = network("https://rpc.example.net:8545/key")
    error = describe_error(OSError("Connect call failed ('rpc.example.net', 8545) to rpc.example.net:8545 "
                                   "block 18545"), net)
    assert "rpc.example.net" not in error and "8545)" not in error and ":8545" not in error
    assert "18545" in error  # a number that only contains the port stays
