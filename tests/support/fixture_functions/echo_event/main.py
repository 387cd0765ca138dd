"""A CloudEvent fixture function: records the event's attributes and data."""

import functions_framework
from cloudevents.http import CloudEvent

from tests.support.fixture_functions.sink import record


@functions_framework.cloud_event
def echo_event(event: CloudEvent) -> None:
    """Record the event (a 2xx acknowledges it)."""
    record("echo_event", {"attributes": dict(event.get_attributes()), "data": event.get_data()})
