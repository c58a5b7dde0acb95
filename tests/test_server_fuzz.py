"""Property-based fuzzing of `knowcache serve` from its own OpenAPI document
(schemathesis generates the requests, hypothesis drives them): whatever it
sends, the server answers without a 5xx and keeps answering."""

from __future__ import annotations

import httpx
import schemathesis
from hypothesis import HealthCheck, given, settings

from knowcache.server import ServeConfig
from test_server import SERVED, running

# Operations with no parameters yield one request each. tests/test_serve_ray_http.py runs
# the same test on Ray with fewer (the app is the same; Ray adds the transport).
EXAMPLES_PER_OPERATION = 350


def test_generated_requests_never_get_a_server_error():
    with running(ServeConfig(models=SERVED)) as url:
        schema = schemathesis.openapi.from_url(url + "/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        # infer, manifest, manifest.sig, partitions, layer-cache, 3 ops routes
        assert len(operations) == 8
        sent: dict[str, int] = {}
        statuses: set[int] = set()
        for operation in operations:
            @given(case=operation.as_strategy())
            @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))
            def check(case):
                response = case.call(base_url=url, timeout=30)
                sent[operation.label] = sent.get(operation.label, 0) + 1
                statuses.add(response.status_code)
                assert response.status_code < 500, (
                    f"{case.method} {case.formatted_path} -> {response.status_code}: "
                    f"{response.text[:300]}")
            check()
        assert sum(sent.values()) >= 3 * EXAMPLES_PER_OPERATION, sent
        assert {200, 400, 404} <= statuses    # requests the server accepted and refused
        assert httpx.get(url + "/readyz").status_code == 200
