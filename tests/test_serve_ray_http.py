"""The server's HTTP tests again, unchanged, on the Ray back end (`knowcache serve
--ray`: the same app as the ingress, 2 replicas of each task's model): whatever
passes against uvicorn passes against Ray Serve. Left out: tests of the app object
or the CLI (no server), and the raw-socket 408 test, which reads uvicorn's logs in
this process."""

from __future__ import annotations

import pytest

import test_server
import test_server_fuzz
from test_server import (  # noqa: F401  (the tests and their fixtures, collected here)
    test_bad_requests_never_reach_the_model, test_bearer_scheme_is_case_insensitive_and_missing_headers_get_a_sentence,
    test_body_checks, test_device_engine_warms_its_cache_from_the_cloud,
    test_full_queue_answers_429_with_retry_after, test_health_and_readiness,
    test_infer_answers_like_the_full_model, test_kws_through_the_cloud_client,
    test_manifest_and_partitions, test_openapi_describes_every_route,
    test_request_timeout_answers_504, test_swagger_ui_is_served_without_a_cdn, url, vision_test)
from test_server_fuzz import test_generated_requests_never_get_a_server_error  # noqa: F401
from test_server_input import (  # noqa: F401
    test_a_chunked_body_of_the_wrong_length_is_refused,
    test_a_chunked_body_over_the_limit_is_refused_while_it_streams,
    test_a_declared_wrong_length_is_refused_before_the_body_is_sent,
    test_every_v1_route_is_among_the_token_cases_and_the_ops_routes_are_open,
    test_the_token_is_checked_before_anything_else)

# serial: the session's Ray cluster needs the machine to itself (Makefile, test-py)
pytestmark = [pytest.mark.slow, pytest.mark.serial]


@pytest.fixture(scope="module", autouse=True)
def on_ray(ray_serve):
    """Before the module's `url` fixture (autouse comes first): `running` deploys on Ray.
    The generated requests: 100 per operation (uvicorn: 350), the suite's time budget."""
    test_server.on_ray = ray_serve.running
    examples = test_server_fuzz.EXAMPLES_PER_OPERATION
    test_server_fuzz.EXAMPLES_PER_OPERATION = 100
    yield
    test_server.on_ray = None
    test_server_fuzz.EXAMPLES_PER_OPERATION = examples
