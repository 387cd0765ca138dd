"""An HTTP fixture function: records method, path, the Cloud Tasks / Scheduler headers and the body."""

import flask
import functions_framework

from tests.support.fixture_functions.sink import record


@functions_framework.http
def echo_http(request: flask.Request) -> tuple[str, int]:
    """Record the call and answer 200."""
    headers = {key: value for key, value in request.headers.items() if key.lower().startswith("x-")}
    record(
        "echo_http",
        {"method": request.method, "path": request.path, "headers": headers, "body": request.get_data(as_text=True)},
    )
    return "recorded", 200
