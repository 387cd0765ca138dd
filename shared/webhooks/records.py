"""One Firestore record per webhook delivery (``webhook_deliveries/{delivery_id}``, server-only).

The record is created if absent, under an id derived from the event id: that is the dedupe (a redelivered Pub/Sub
event finds it and makes no second delivery). Cloud Tasks also get a deterministic name per attempt, but the Cloud
Tasks emulator does not dedupe names, so a task may arrive twice: an attempt runs only after claiming it
(``claimed`` goes from n to n+1 under an ``update_time`` precondition), so a duplicate task sends nothing.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore

from shared.store import utcnow

WEBHOOK_DELIVERIES = "webhook_deliveries"
MAX_LISTED = 200


class DeliveryState(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"
    STOPPED = "stopped"


def delivery_id_for(event_id: str) -> str:
    """The delivery of one event: the same event always maps to the same delivery (and webhook-id)."""
    return "dlv_" + hashlib.sha256(event_id.encode()).hexdigest()[:32]


def webhook_id_for(event_id: str) -> str:
    """The Standard Webhooks message id of one event: stable across retries and redeliveries."""
    return "msg_" + hashlib.sha256(event_id.encode()).hexdigest()[:32]


def fresh_delivery_id() -> str:
    return "dlv_" + uuid.uuid4().hex


@dataclass(frozen=True)
class Delivery:
    data: dict[str, Any]
    update_time: datetime

    @property
    def state(self) -> DeliveryState:
        return DeliveryState(self.data["state"])

    @property
    def claimed(self) -> int:
        return int(self.data.get("claimed", 0))

    @property
    def attempts(self) -> list[dict[str, Any]]:
        return list(self.data.get("attempts") or [])


class DeliveryRecords:
    def __init__(self, db: firestore.Client) -> None:
        self._db = db

    def _ref(self, delivery_id: str) -> Any:
        return self._db.collection(WEBHOOK_DELIVERIES).document(delivery_id)

    def create(self, record: dict[str, Any]) -> bool:
        """Create the record unless one with its id exists; True when created."""
        now = utcnow()
        try:
            self._ref(record["delivery_id"]).create(
                {**record, "state": DeliveryState.PENDING.value, "claimed": 0, "attempts": [], "created_at": now}
            )
        except gexc.AlreadyExists:
            return False
        return True

    def get(self, delivery_id: str) -> Delivery | None:
        snap = self._ref(delivery_id).get()
        return Delivery(snap.to_dict() or {}, snap.update_time) if snap.exists else None

    def claim(self, delivery: Delivery, attempt: int) -> bool:
        """Mark attempt ``attempt`` as taken, if nobody changed the record since it was read."""
        option = self._db.write_option(last_update_time=delivery.update_time)
        try:
            self._ref(delivery.data["delivery_id"]).update(
                {"claimed": attempt + 1, "claimed_at": utcnow()}, option=option
            )
        except (gexc.FailedPrecondition, gexc.Aborted, gexc.NotFound):
            return False
        return True

    def release(self, delivery_id: str, attempt: int) -> None:
        """Give attempt ``attempt`` back (it failed before anything was sent), so the task's retry can take it."""
        self._ref(delivery_id).update({"claimed": attempt, "claimed_at": None})

    def record_attempt(self, delivery_id: str, attempt: dict[str, Any], state: DeliveryState) -> None:
        """Append one attempt and set the state (only the claimant of the attempt writes here)."""
        self._ref(delivery_id).update(
            {"attempts": firestore.ArrayUnion([attempt]), "state": state.value, "updated_at": utcnow()}
        )

    def for_deployment(self, deployment_id: str) -> list[dict[str, Any]]:
        """The deliveries of one deployment, oldest first."""
        query = (
            self._db.collection(WEBHOOK_DELIVERIES)
            .where(filter=firestore.FieldFilter("deployment_id", "==", deployment_id))
            .limit(MAX_LISTED)
        )
        records = [snap.to_dict() or {} for snap in query.stream()]
        return sorted(records, key=lambda r: (r["created_at"], r["delivery_id"]))
