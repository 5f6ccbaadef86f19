"""Schemathesis against the live server's /openapi.json: generated requests for every operation
never get a 5xx, responses match the schema, and every operation but /health refuses a request
without a key. Bounded: a few examples per operation, derandomized, under a minute."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import (  # noqa: E402
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from ragtune.serve.auth import KeyStore  # noqa: E402
from tests.test_serve import bearer, live_server, make_project  # noqa: E402

pytestmark = pytest.mark.server
EXAMPLES = 12  # per operation and mode


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from ragtune.serve.app import create_app

    folder = tmp_path_factory.mktemp("schema") / "kb"
    project = make_project(folder, {"max_body_bytes": 100_000, "max_k": 20, "max_messages": 8})
    keys = KeyStore(folder, env="")
    writer, _ = keys.create(["team"], write=True, name="writer")
    with live_server(create_app(project, keys=keys)) as url:
        yield SimpleNamespace(url=url, key=writer)
    project.close()


def operations(served):
    schema = schemathesis.openapi.from_url(f"{served.url}/openapi.json")
    schema.config.generation.update(max_examples=EXAMPLES, deterministic=True, with_security_parameters=False)
    return [result.ok() for result in schema.get_all_operations()]


# One hypothesis run per operation and mode, driven here rather than by schemathesis' pytest plugin
# (its lazy-schema loader does not work with pytest 9); the checks are schemathesis' own.
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
def test_no_server_errors_and_auth_everywhere(served, mode):
    from hypothesis import given

    checked = []
    for operation in operations(served):
        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def run(case):
            response = case.call(base_url=served.url, headers=bearer(served.key), timeout=30)
            case.validate_response(response, checks=CHECKS[mode])
            anonymous = case.call(base_url=served.url, headers={"Authorization": ""}, timeout=30)
            if operation.path == "/health":
                assert anonymous.status_code == 200
            else:
                assert anonymous.status_code == 401, (operation.label, anonymous.text)
                assert anonymous.json()["error"]["type"] == "authentication_error"

        try:
            run()
        except Unsatisfiable:  # nothing to make invalid: an operation without parameters or body
            assert mode is GenerationMode.NEGATIVE
            continue
        checked.append(operation.label)
    assert len(checked) >= (12 if mode is GenerationMode.POSITIVE else 6), checked


CHECKS = {GenerationMode.POSITIVE: [not_a_server_error, status_code_conformance, content_type_conformance,
                                    response_schema_conformance],
          GenerationMode.NEGATIVE: [not_a_server_error, status_code_conformance, content_type_conformance]}
