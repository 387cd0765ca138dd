"""Publishing to Pub/Sub: JSON bodies from the message models, ids as attributes."""

from __future__ import annotations

# google-cloud-pubsub ships no py.typed for google.cloud.pubsub_v1: mypy sees the typed google.cloud namespace
# (firestore, tasks) without it, and refuses the `from` form; the module import is an untyped Any.
import google.cloud.pubsub_v1 as pubsub_v1  # noqa: PLR0402

from shared.errors import RetryableError
from shared.messages import Message

PUBLISH_TIMEOUT_S = 10.0


class Publisher:
    def __init__(self, client: pubsub_v1.PublisherClient, project: str) -> None:
        self._client = client
        self._project = project

    def topic_path(self, topic: str) -> str:
        return self._client.topic_path(self._project, topic)

    def publish(self, topic: str, message: Message, **attributes: str) -> str:
        """Publish and wait for the server's id; failures are retryable."""
        data = message.model_dump_json().encode()
        try:
            future = self._client.publish(self.topic_path(topic), data, **attributes)
            return str(future.result(timeout=PUBLISH_TIMEOUT_S))
        except Exception as exc:  # the client raises many transport types; all of them mean "try again"
            raise RetryableError(f"publish to {topic} failed: {exc}") from exc

    def publish_bytes(self, topic: str, data: bytes, attributes: dict[str, str], ordering_key: str = "") -> str:
        """Publish raw ``data`` (attribute names may hold dashes, e.g. ``ce-id``); failures are retryable.

        A failed publish pauses its ordering key in the client; it is resumed here, so the retry can publish.
        """
        path = self.topic_path(topic)
        try:
            future = self._client.publish(path, data, ordering_key=ordering_key, **attributes)
            return str(future.result(timeout=PUBLISH_TIMEOUT_S))
        except Exception as exc:  # the client raises many transport types; all of them mean "try again"
            if ordering_key:
                self._client.resume_publish(path, ordering_key)
            raise RetryableError(f"publish to {topic} failed: {exc}") from exc
