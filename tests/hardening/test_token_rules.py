"""CONTRACT 1, Token rules: no token creates a token wider than itself.

Every creator (the operator's token, an unbound admin, a bound admin, a bound non-admin)
asks for every kind of token (a narrow scope or admin; unbound, bound to its own workspace,
bound to another); the answer is compared with the rule written out on its own.
"""

import itertools

import pytest

from metering.errors import Forbidden
from metering.tokens.service import Principal, check_grant

CREATORS = {  # name -> (scopes, workspace) of the creating token; None: the operator's
    "operator": None,
    "unbound admin": (["admin"], None),
    "bound admin": (["admin"], "ws_a"),
    "bound non-admin": (["usage:read", "events:write"], "ws_a"),
}
REQUESTS = list(itertools.product([["usage:read"], ["events:write", "usage:read"], ["admin"]],
                                  [None, "ws_a", "ws_b"]))


def allowed(creator: str, scopes: list[str], workspace: str | None) -> bool:
    spec = CREATORS[creator]
    if spec is None:
        return True
    held, bound = spec
    if "admin" not in held:
        return False  # creating tokens is an admin operation; the scope rule cannot widen it
    return bound is None or workspace == bound


async def test_every_creator_and_requested_token(client, admin, make_token):
    headers = {"operator": admin}
    for name, spec in CREATORS.items():
        if spec is not None:
            headers[name] = await make_token(*spec[0], workspace_id=spec[1])
    for creator, (scopes, workspace) in itertools.product(CREATORS, REQUESTS):
        body = {"name": "child", "scopes": scopes, **({"workspace_id": workspace} if workspace else {})}
        resp = await client.post("/v1/tokens", json=body, headers=headers[creator])
        expected = 201 if allowed(creator, scopes, workspace) else 403
        assert resp.status_code == expected, (creator, scopes, workspace, resp.text)
        if expected == 403:
            assert resp.headers["content-type"].startswith("application/problem+json")
            continue
        child = {"Authorization": f"Bearer {resp.json()['token']}"}
        # The child is no wider than asked: another workspace stays out of its sight.
        if workspace is not None:
            other = await client.get("/v1/workspaces/ws_other/usage?start=2026-01-01T00:00:00Z"
                                     "&end=2026-01-02T00:00:00Z", headers=child)
            assert other.status_code == 404


async def test_a_bound_admin_revokes_only_its_own_workspace_tokens(client, admin, make_token):
    bound = await make_token("admin", workspace_id="ws_a")
    made = await client.post("/v1/tokens", json={"name": "x", "scopes": ["usage:read"]}, headers=admin)
    assert (await client.delete(f"/v1/tokens/{made.json()['id']}", headers=bound)).status_code == 404
    own = await client.post("/v1/tokens", json={"name": "y", "scopes": ["usage:read"], "workspace_id": "ws_a"},
                            headers=bound)
    assert (await client.delete(f"/v1/tokens/{own.json()['id']}", headers=bound)).status_code == 204


@pytest.mark.parametrize("held", [("usage:read",), ("usage:read", "events:write"), ("admin",)])
@pytest.mark.parametrize("bound", [None, "ws_a"])
def test_the_scope_rule_for_any_creator(held, bound):
    """The rule itself (no route lets a non-admin create tokens today): scopes inside its own."""
    creator = Principal("tok_c", frozenset(held), bound)
    for scopes, workspace in REQUESTS:
        wider = "admin" not in held and not set(scopes) <= set(held)
        foreign = bound is not None and workspace != bound
        if wider or foreign:
            with pytest.raises(Forbidden):
                check_grant(creator, scopes, workspace)
        else:
            check_grant(creator, scopes, workspace)


