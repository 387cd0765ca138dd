"""Create what the topology declares in the local stand-ins: topics, push subscriptions, queues, the S3 bucket.

Idempotent: anything that exists already is left as it is, so ``up`` can run it again on a running stack.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

import boto3
import grpc
from google.api_core.exceptions import AlreadyExists
from google.cloud import tasks_v2
from google.cloud.pubsub_v1 import PublisherClient, SubscriberClient
from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport
from google.protobuf import duration_pb2

from shared.topology import Function, PushSubscription, Queue, Schedule

logger = logging.getLogger(__name__)

MODEL_CACHE_BUCKET = "visgate-model-cache"
S3_REGION = "us-east-1"
# moto checks no credentials; these are what the local stack hands to every S3 client.
S3_ACCESS_KEY_ID = "visgate-local"
S3_SECRET_ACCESS_KEY = "visgate-local-secret"


class Topology(Protocol):
    """What the bootstrap reads from a topology module (``shared.topology``, or a test's own)."""

    @property
    def FUNCTIONS(self) -> Sequence[Function]: ...  # module constants

    @property
    def TOPICS(self) -> Sequence[str]: ...

    @property
    def SUBSCRIPTIONS(self) -> Sequence[PushSubscription]: ...

    @property
    def QUEUES(self) -> Sequence[Queue]: ...

    @property
    def SCHEDULES(self) -> Sequence[Schedule]: ...


def tasks_client(emulator_host: str) -> tasks_v2.CloudTasksClient:
    """A Cloud Tasks client talking plain gRPC to the emulator at ``host:port``."""
    return tasks_v2.CloudTasksClient(transport=CloudTasksGrpcTransport(channel=grpc.insecure_channel(emulator_host)))


def create_pubsub(topology: Topology, project: str, functions_base_url: str, dead_letter_topic: str | None) -> None:
    """Topics and push subscriptions (to the functions host), with retry policy and dead-letter topic.

    The clients read ``PUBSUB_EMULATOR_HOST`` from the environment, as the functions do.
    """
    publisher = PublisherClient()
    subscriber = SubscriberClient()
    for topic in topology.TOPICS:
        try:
            publisher.create_topic(name=publisher.topic_path(project, topic))
            logger.info("created topic %s", topic)
        except AlreadyExists:
            logger.debug("topic %s exists", topic)
    for subscription in topology.SUBSCRIPTIONS:
        request: dict[str, object] = {
            "name": subscriber.subscription_path(project, subscription.name),
            "topic": publisher.topic_path(project, subscription.topic),
            "push_config": {"push_endpoint": functions_base_url.rstrip("/") + subscription.push_path},
            "ack_deadline_seconds": subscription.ack_deadline_s,
            "retry_policy": {
                "minimum_backoff": f"{subscription.min_backoff_s}s",
                "maximum_backoff": f"{subscription.max_backoff_s}s",
            },
        }
        # The emulator honours both (measured: backoff grows, delivery stops after max attempts).
        if dead_letter_topic is not None:
            request["dead_letter_policy"] = {
                "dead_letter_topic": publisher.topic_path(project, dead_letter_topic),
                "max_delivery_attempts": subscription.max_delivery_attempts,
            }
        try:
            subscriber.create_subscription(request=request)
            logger.info("created push subscription %s -> %s", subscription.name, request["push_config"])
        except AlreadyExists:
            logger.debug("subscription %s exists", subscription.name)


def create_queues(topology: Topology, project: str, region: str, tasks_emulator_host: str) -> None:
    """Cloud Tasks queues with their retry config (the emulator stores but does not apply it)."""
    client = tasks_client(tasks_emulator_host)
    parent = f"projects/{project}/locations/{region}"
    for queue in topology.QUEUES:
        retry = tasks_v2.RetryConfig(
            max_attempts=queue.max_attempts,
            min_backoff=duration_pb2.Duration(seconds=int(queue.min_backoff_s)),
            max_backoff=duration_pb2.Duration(seconds=int(queue.max_backoff_s)),
        )
        try:
            client.create_queue(
                parent=parent, queue=tasks_v2.Queue(name=f"{parent}/queues/{queue.name}", retry_config=retry)
            )
            logger.info("created queue %s", queue.name)
        except AlreadyExists:
            logger.debug("queue %s exists", queue.name)


def create_bucket(s3_endpoint_url: str, bucket: str = MODEL_CACHE_BUCKET) -> None:
    """The model-cache bucket in the S3 server."""
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_endpoint_url,
        region_name=S3_REGION,
        aws_access_key_id=S3_ACCESS_KEY_ID,
        aws_secret_access_key=S3_SECRET_ACCESS_KEY,
    )
    existing = {entry["Name"] for entry in s3.list_buckets().get("Buckets", [])}
    if bucket not in existing:
        s3.create_bucket(Bucket=bucket)
        logger.info("created bucket %s", bucket)


def dead_letter_topic_of(topology: Topology) -> str | None:
    """The topology's dead-letter topic, when it declares one (``TOPIC_DEAD_LETTER``)."""
    topic = getattr(topology, "TOPIC_DEAD_LETTER", None)
    return topic if isinstance(topic, str) and topic in topology.TOPICS else None
