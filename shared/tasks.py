"""Cloud Tasks: delayed, named HTTP tasks to our own functions (polling is scheduling, never sleeping)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import cached_property

from google.api_core import exceptions as gexc
from google.cloud import tasks_v2
from google.protobuf import timestamp_pb2

from shared.errors import RetryableError
from shared.messages import Message
from shared.topology import function_url


class TaskScheduler:
    """Schedules named tasks; the client is built on the first one (an instance that never schedules, an intake
    serving reads, never needs Cloud Tasks credentials)."""

    def __init__(
        self,
        client: Callable[[], tasks_v2.CloudTasksClient],
        project: str,
        region: str,
        functions_base_url: str,
        service_account_email: str | None = None,
    ) -> None:
        self._new_client = client
        self._project = project
        self._region = region
        self._base = functions_base_url.rstrip("/")
        self._service_account = service_account_email

    @cached_property
    def _client(self) -> tasks_v2.CloudTasksClient:
        return self._new_client()

    def audience(self, function_path: str) -> str:
        """The OIDC audience of a task to ``function_path`` (``/job-watch/watch``): the URL of the function it calls
        (``<base>/job-watch``), never the bare base URL, which a 2nd gen function refuses with 401."""
        return function_url(self._base, function_path.strip("/").split("/", 1)[0])

    def schedule(self, queue: str, function_path: str, message: Message, name: str, delay_s: float) -> bool:
        """Create task ``name`` to POST ``message`` to the function after ``delay_s``.

        Returns False when a task with that name exists already (Cloud Tasks deduplicates by name), True when created.
        """
        parent = self._client.queue_path(self._project, self._region, queue)
        schedule_time = timestamp_pb2.Timestamp()
        schedule_time.FromDatetime(datetime.now(UTC) + timedelta(seconds=delay_s))
        http_request: dict[str, object] = {
            "http_method": tasks_v2.HttpMethod.POST,
            "url": f"{self._base}{function_path}",
            "headers": {"Content-Type": "application/json"},
            "body": message.model_dump_json().encode(),
        }
        if self._service_account:
            http_request["oidc_token"] = {
                "service_account_email": self._service_account,
                "audience": self.audience(function_path),
            }
        task = tasks_v2.Task(name=f"{parent}/tasks/{name}", http_request=http_request, schedule_time=schedule_time)
        try:
            self._client.create_task(parent=parent, task=task)
        except gexc.AlreadyExists:
            return False
        except gexc.GoogleAPICallError as exc:
            raise RetryableError(f"scheduling task {name} failed: {exc}") from exc
        return True
