"""schemathesis against the service's own OpenAPI: every operation, with a valid token.

Its example and fuzzing phases over every operation, then its stateful phase along the
document's links (token -> revocation, billing run -> invoices, settlement -> its GET).
Any 5xx fails, and so does a status the document does not list for the operation, a body
that does not match its schema or media type, or an error that is not RFC 9457 problem
details.  Bounded to a couple of minutes.
"""

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.stateful import run_state_machine_as_test
from schemathesis.checks import not_a_server_error
from schemathesis.generation.meta import TestPhase
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import ADMIN_TOKEN
from tests.process import ServerProcess

pytestmark = pytest.mark.slow
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
QUICK = settings(deadline=None, suppress_health_check=list(HealthCheck), database=None,
                 phases=[Phase.explicit, Phase.generate])


@pytest.fixture
def server(db_url, db, tmp_path):
    proc = ServerProcess({"METERING_DATABASE_URL": db_url, "METERING_ADMIN_TOKEN": ADMIN_TOKEN,
                          "METERING_SCHEDULER__ENABLED": "false",
                          "METERING_REPORTS_DIR": str(tmp_path / "reports")}, tmp_path / "server.log").start()
    yield proc
    proc.stop()


def problem_details(ctx, response, case) -> None:  # type: ignore[no-untyped-def]
    if response.status_code < 400:
        return
    assert response.headers.get("content-type", [""])[0].startswith("application/problem+json"), (
        f"{response.status_code} without problem details")
    body = response.json()
    assert body["status"] == response.status_code and body["title"] and "detail" in body
    assert isinstance(body["errors"], list)


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          problem_details]


def test_examples_and_fuzzing_of_every_operation(server):
    # schemathesis' own pytest plugin does not run under pytest 9 yet, so each operation's
    # Hypothesis strategy is driven here directly.
    api = schemathesis.openapi.from_url(f"{server.url}/schema/openapi.json")
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) >= 15

    for operation in operations:
        for phase, examples in ((TestPhase.EXAMPLES, 5), (TestPhase.FUZZING, 15)):
            @given(case=operation.as_strategy(phase=phase))
            @settings(QUICK, max_examples=examples)
            def exercise(case) -> None:  # type: ignore[no-untyped-def]
                case.call_and_validate(base_url=server.url, headers=AUTH, checks=CHECKS, timeout=30)

            exercise()


def test_stateful_along_the_links(server):
    api = schemathesis.openapi.from_url(f"{server.url}/schema/openapi.json")
    assert api.statistic.transitions.total >= 3  # the document's links

    class Scenario(api.as_state_machine()):  # type: ignore[misc]
        def get_call_kwargs(self, case):  # type: ignore[no-untyped-def]
            return {"base_url": server.url, "headers": AUTH, "timeout": 30}

        def validate_response(self, response, case, additional_checks=None, **kwargs):  # type: ignore[no-untyped-def]
            case.validate_response(response, checks=CHECKS)

    run_state_machine_as_test(Scenario, settings=settings(QUICK, max_examples=12, stateful_step_count=4))
