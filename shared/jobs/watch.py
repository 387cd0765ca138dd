"""The jobs function's step: one check of an inference job its answer did not see end (Cloud Tasks ``job-watch``).

A check asks Runpod for the job with the deployment's sealed key and folds the answer into the job record
(shared.jobs.ends): an end is counted and announced; a job still running is checked again after the next delay of
``JOB_WATCH_SCHEDULE_S``, as a new named task (polling as scheduled retries), until ``JOB_WATCH_MAX_S`` after its
submission. Runpod unreachable or slow is one more check later, not a failed task. The following stops when Runpod
no longer knows the job or the key (its deployment was deleted): the record keeps what was last seen, never a state
Runpod did not report.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.crypto import Sealer
from shared.deployments.credentials import open_credentials
from shared.document import Deployment
from shared.envelopes import TaskDelivery
from shared.jobs.ends import JobEnds
from shared.jobs.records import JobRecord, utcnow
from shared.messages import JobCheck
from shared.runpod.client import Job, RunpodClient, RunpodConnector
from shared.runpod.errors import RunpodAuthError, RunpodNotFoundError, RunpodTimeoutError, RunpodUnavailableError
from shared.store import DeploymentStore


@dataclass(frozen=True)
class JobWatchDeps:
    store: DeploymentStore
    sealer: Sealer
    runpod: RunpodConnector
    ends: JobEnds


def watch_job(task: TaskDelivery[JobCheck], deps: JobWatchDeps) -> str:
    """One check of one job."""
    message = task.message
    record = deps.ends.jobs.get(message.deployment_id, message.job_id)
    if record is None or record.final:
        return _settled(message, record, deps)
    asked = _ask_runpod(message, deps)
    if isinstance(asked, str):
        return asked
    client, doc, job = asked
    if job is not None:
        record = deps.ends.observe(client, doc, record, job, retry_budget=True)
        if record.final:
            return f"the job ended {record.status}"
    seen = record.status if job is not None else "unknown (Runpod unreachable)"
    if message.nudge:
        return f"the job is {seen}; the schedule goes on"
    if (utcnow() - record.created_at).total_seconds() > deps.ends.settings.job_watch_max_s:
        return f"the job is still {seen} after JOB_WATCH_MAX_S: stopped following it"
    deps.ends.follow(record, message.check + 1)
    return f"the job is {seen}; checked again later"


def _settled(message: JobCheck, record: JobRecord | None, deps: JobWatchDeps) -> str:
    """A job whose end is recorded: its record is gone, or it ended (seen by another observer, whose webhook may
    have stopped short of being made: then its output comes from Runpod, while Runpod keeps it)."""
    if record is None:
        return "no such job record (expired, or not written yet when Runpod's call came)"

    def output() -> Any:
        asked = _ask_runpod(message, deps)
        return None if isinstance(asked, str) or asked[2] is None else asked[2].output

    announced = deps.ends.announce(record, output)
    _check_budget(message, deps)  # a retried check whose budget stop failed the first time
    return f"the job is {record.status} already; " + announced


def _check_budget(message: JobCheck, deps: JobWatchDeps) -> None:
    doc = deps.store.get(message.deployment_id)
    if doc is None or doc.max_cost_usd is None:
        return
    credentials = open_credentials(deps.store, deps.sealer, message.deployment_id)
    if credentials is not None:
        deps.ends.check_budget(deps.runpod.client(credentials.runpod_api_key), doc)


def _ask_runpod(message: JobCheck, deps: JobWatchDeps) -> tuple[RunpodClient, Deployment, Job | None] | str:
    """What Runpod says of the job (None: unreachable or slow), or why the following stops."""
    doc = deps.store.get(message.deployment_id)
    credentials = open_credentials(deps.store, deps.sealer, message.deployment_id)
    if doc is None or not doc.runpod.endpoint_id or credentials is None:
        return "the deployment is gone: stopped following the job"
    client = deps.runpod.client(credentials.runpod_api_key)
    try:
        return client, doc, client.job_status(doc.runpod.endpoint_id, message.job_id)
    except (RunpodNotFoundError, RunpodAuthError) as exc:
        return f"Runpod no longer knows the job or the key ({type(exc).__name__}): stopped following it"
    except (RunpodUnavailableError, RunpodTimeoutError):
        return client, doc, None
