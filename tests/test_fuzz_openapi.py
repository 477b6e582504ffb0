"""Schemathesis over Depot's own /openapi.json: generated requests for every documented operation, a bounded
number of examples each, and no answer may be a 5xx or disagree with the document (status, media type, body)."""
import os

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import (content_type_conformance, response_schema_conformance,
                                               status_code_conformance)
from schemathesis.checks import not_a_server_error

EXAMPLES = int(os.environ.get("DEPOT_FUZZ_EXAMPLES", "25"))
# CI runs the same examples every time (a failure reproduces); DEPOT_FUZZ_RANDOM=1 explores new ones
RANDOM = os.environ.get("DEPOT_FUZZ_RANDOM") == "1"


@pytest.fixture
def fuzzed_depot(make_depot, project_schema):
    depot = make_depot(project_schema)
    for version in ("1.0.0", "1.1.0"):
        assert depot.publish("acme", "tool", version, "linux", b"bytes of " + version.encode()).status_code == 201
    return depot


@pytest.fixture
def depot_api(fuzzed_depot):
    return schemathesis.openapi.from_wsgi("/openapi.json", fuzzed_depot.app)


schema = schemathesis.pytest.from_fixture("depot_api")


@pytest.mark.attack
@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=not RANDOM)
def test_no_generated_request_gets_a_5xx_or_an_undocumented_answer(case, fuzzed_depot):
    case.call_and_validate(headers={"Authorization": "Bearer " + fuzzed_depot.token(["admin"], "fuzzer")},
                           checks=[not_a_server_error, status_code_conformance, content_type_conformance,
                                   response_schema_conformance])
