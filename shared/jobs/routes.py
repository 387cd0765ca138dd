"""Inference through the API: jobs on a ready deployment (its invoke keys, usage and the GPU pools: account_routes;
the request and answer models: schemas).

- ``run`` / ``runsync`` validate the input with the worker's own model (:mod:`shared.job_input`) and the
  deployment's task before Runpod sees it, call the deployment's endpoint with its sealed Runpod key (or the
  caller's, the same key), and write a job record (:mod:`shared.jobs.records`) that counts the request.
- ``GET .../jobs/{job_id}`` asks Runpod while the job is not final and writes what it says back; the move to a
  final state adds the job's outcome, images, times and estimated cost to the usage counters, once.
- Inline outputs (base64 images) are returned by the answer that sees the job end (runsync, or the GET that
  observes it) and never stored; a record keeps output references (URLs) only.
- Runpod's failures have their own codes: ``runpod_unreachable`` (502), ``runpod_timeout`` (504) and
  ``runpod_auth_failed`` (502: the deployment's Runpod key was refused; the caller's own auth was fine).
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from flask import Request, Response
from pydantic import ValidationError

from shared.config import Settings
from shared.crypto import Sealer
from shared.deployments.endpoint_spec import callback_url
from shared.document import Deployment
from shared.errors import ApiError
from shared.gpu import GpuCatalog
from shared.http import json_response, read_json_body, validation_error
from shared.intake.api_routes import ROUTES
from shared.intake.auth import Caller, invoke_key_refused
from shared.intake.route_table import Callers, endpoints_for
from shared.intake.steps import owned_deployment
from shared.job_input import GenerateInput, task_problems
from shared.jobs.ends import JobEnds
from shared.jobs.invoke_keys import InvokeKeyStore
from shared.jobs.records import InputSummary, JobPricing, JobRecord, JobStore, JobView
from shared.jobs.schemas import (
    WAIT_MS_DEFAULT,
    WAIT_MS_MAX,
    WAIT_MS_MIN,
    JobAccepted,
    JobList,
    JobMetrics,
    JobResult,
    RunRequest,
)
from shared.lifecycle import Status
from shared.models import SealedCredentials
from shared.page_tokens import InvalidPageTokenError
from shared.public_urls import split_s3_url
from shared.runpod.client import Job, RunpodClient, RunpodConnector
from shared.runpod.errors import (
    RunpodAuthError,
    RunpodNotFoundError,
    RunpodRejectedError,
    RunpodTimeoutError,
    RunpodUnavailableError,
)
from shared.store import DeploymentStore, utcnow

# The routes an invoke key opens, each for its own deployment only.
INVOKE_ROUTES = endpoints_for(ROUTES, Callers.INVOKE)
DEFAULT_PAGE, MAX_PAGE = 20, 100
RUNPOD_KEEPS_RESULTS = timedelta(minutes=30)  # how long Runpod answers a /run job's result


# --- collaborators ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobDeps:
    """What the job routes use, built once per instance by the composition root (shared.wiring.intake.job_routes)."""

    settings: Settings
    store: DeploymentStore
    invoke_keys: InvokeKeyStore
    sealer: Sealer
    runpod: RunpodConnector
    ends: JobEnds

    @property
    def jobs(self) -> JobStore:
        return self.ends.jobs

    @property
    def catalog(self) -> GpuCatalog:
        return self.ends.catalog


@contextmanager
def runpod_errors() -> Iterator[None]:
    """Runpod's failures in the one error shape, each with its own code."""
    try:
        yield
    except RunpodAuthError as exc:
        raise ApiError(
            502,
            "runpod_auth_failed",
            "Runpod refused the Runpod API key this deployment was created with (your auth here was fine)",
        ) from exc
    except RunpodTimeoutError as exc:
        raise ApiError(504, "runpod_timeout", "Runpod did not answer in time", headers={"Retry-After": "5"}) from exc
    except RunpodUnavailableError as exc:
        retry = str(int(exc.retry_after_s or 5))
        raise ApiError(
            502, "runpod_unreachable", "Runpod is unreachable or unavailable now", headers={"Retry-After": retry}
        ) from exc
    except RunpodNotFoundError as exc:
        raise ApiError(
            502, "runpod_endpoint_missing", "Runpod no longer knows this deployment's endpoint or job"
        ) from exc
    except RunpodRejectedError as exc:
        raise ApiError(502, "runpod_rejected", "Runpod refused the request") from exc


class JobRoutes:
    """The handlers of the inference routes, registered into the intake API's handler table."""

    def __init__(self, deps: JobDeps) -> None:
        self._deps = deps

    @property
    def deps(self) -> JobDeps:
        return self._deps

    def handlers(self) -> dict[str, Callable[..., Response]]:
        return {
            "runsync_job": self.runsync,
            "run_job": self.run,
            "get_job": self.get_job,
            "list_jobs": self.list_jobs,
            "cancel_job": self.cancel_job,
        }

    # --- auth ---------------------------------------------------------------------------------------------------

    def invoke_caller(
        self, key: str, endpoint: str, args: dict[str, Any], refused: Callable[[ApiError], None] = lambda _e: None
    ) -> Caller:
        """The caller an invoke key stands for, on one of :data:`INVOKE_ROUTES` of its own deployment; ``refused``
        hears of a key that is no live key (it may raise instead, e.g. the refused-key limiter's 429).

        Raises:
            ApiError: 401 for another route or a key that is unknown or revoked, 404 for another deployment (a
                deployment being deleted is refused by :func:`~shared.intake.steps.owned_deployment`, which every
                route reads it with).
        """
        unauthorized = invoke_key_refused()
        if endpoint not in INVOKE_ROUTES:
            raise unauthorized
        stored = self._deps.invoke_keys.resolve(key)
        if stored is None:
            refused(unauthorized)  # counted as a refused key of the caller's address (429 past the limit)
            raise unauthorized
        deployment_id = str(args.get("deployment_id", ""))
        if not hmac.compare_digest(stored.deployment_id, deployment_id):
            raise ApiError(404, "deployment_not_found", f"no deployment {deployment_id!r}")
        return Caller(tenant=stored.owner, api_key="", deployment_id=stored.deployment_id, invoke_key_id=stored.key_id)

    # --- jobs ---------------------------------------------------------------------------------------------------

    def runsync(self, request: Request, caller: Caller, deployment_id: str) -> Response:
        wait_ms = _wait_ms(request.args.get("wait"))
        doc, body, summary = self._accept(request, caller, deployment_id)
        client, s3_config = self._client(caller, doc), self._output_bucket(doc)
        with runpod_errors():
            job = client.runsync(
                _endpoint_id(doc), body.input, wait_ms, s3_config=s3_config, webhook=self._job_ended_url(doc)
            )
        record = self._submitted(caller, client, doc, job, summary=summary, body=body)
        status_url = self._status_url(deployment_id, job.id)
        if not job.final:
            return json_response(JobAccepted(job_id=job.id, status=job.status, status_url=status_url), 202)
        metrics = JobMetrics(
            delay_ms=record.delay_ms,
            execution_ms=record.execution_ms,
            estimated_cost_usd=record.estimated_cost_usd,
            pool=record.pool,
        )
        result = JobResult(
            job_id=job.id,
            status=job.status,
            output=job.output,
            error=record.error,
            metrics=metrics,
            status_url=status_url,
        )
        return json_response(result)

    def run(self, request: Request, caller: Caller, deployment_id: str) -> Response:
        doc, body, summary = self._accept(request, caller, deployment_id)
        client, s3_config = self._client(caller, doc), self._output_bucket(doc)
        with runpod_errors():
            job = client.run(_endpoint_id(doc), body.input, s3_config=s3_config, webhook=self._job_ended_url(doc))
        self._submitted(caller, client, doc, job, summary=summary, body=body)
        status_url = self._status_url(deployment_id, job.id)
        return json_response(JobAccepted(job_id=job.id, status=job.status, status_url=status_url), 202)

    def get_job(self, _request: Request, caller: Caller, deployment_id: str, job_id: str) -> Response:
        doc = owned_deployment(self._deps.store, caller, deployment_id)
        record = self._record(caller, deployment_id, job_id)
        if record.final:
            return json_response(JobView.of(record, self._kept_output(caller, doc, record)))
        client = self._client(caller, doc)
        try:
            with runpod_errors():
                job = client.job_status(_endpoint_id(doc), job_id)
        except ApiError as exc:
            if exc.code != "runpod_endpoint_missing":
                raise
            return json_response(JobView.of(record))  # Runpod forgot it (endpoint deleted): the record stands
        return json_response(self._observe(client, doc, record, job))

    def cancel_job(self, _request: Request, caller: Caller, deployment_id: str, job_id: str) -> Response:
        doc = owned_deployment(self._deps.store, caller, deployment_id)
        record = self._record(caller, deployment_id, job_id)
        if record.final:
            return json_response(JobView.of(record))
        client = self._client(caller, doc)
        endpoint_id = _endpoint_id(doc)
        with runpod_errors():
            job = client.cancel_job(endpoint_id, job_id)
            try:  # the cancel answer has no times; the status has what ran (Runpod bills it)
                job = client.job_status(endpoint_id, job_id)
            except RunpodNotFoundError:
                pass
        return json_response(self._observe(client, doc, record, job))

    def list_jobs(self, request: Request, caller: Caller, deployment_id: str) -> Response:
        owned_deployment(self._deps.store, caller, deployment_id)
        size = _page_size(request.args.get("limit"))
        try:
            records, token = self._deps.jobs.list(
                deployment_id, size, request.args.get("page_token"), submitted_by=caller.invoke_key_id
            )
        except InvalidPageTokenError as exc:
            raise ApiError(400, "invalid_page_token", "page_token was not issued by this API") from exc
        return json_response(JobList(jobs=[JobView.of(r) for r in records], next_page_token=token))

    # --- helpers ------------------------------------------------------------------------------------------------

    def _accept(
        self, request: Request, caller: Caller, deployment_id: str
    ) -> tuple[Deployment, RunRequest, InputSummary]:
        """The ready deployment and the validated input; a refusal here never reaches Runpod."""
        doc = owned_deployment(self._deps.store, caller, deployment_id)
        if doc.status is not Status.READY or not doc.runpod.endpoint_id:
            raise ApiError(
                409,
                "deployment_not_ready",
                f"the deployment is {doc.status.value}, not ready",
                {"status": doc.status.value},
            )
        raw = read_json_body(request, self._deps.settings.max_body_bytes)
        try:
            allow = self._deps.settings.allow_http_loopback_webhooks
            body = RunRequest.model_validate_json(raw, context={"allow_http_loopback": allow})
        except ValidationError as exc:
            raise validation_error(exc) from exc
        try:
            generate = GenerateInput.model_validate(body.input)
        except ValidationError as exc:
            error = validation_error(exc)
            for item in error.details or []:  # the fields sit under "input" in the body
                item["field"] = "input" if item["field"] == "body" else f"input.{item['field']}"
            raise error from exc
        problems = task_problems(generate, doc.task)
        if problems:
            details = [
                {"field": f"input.{p.split(':', 1)[0]}", "problem": p.split(":", 1)[1].strip()} for p in problems
            ]
            raise ApiError(400, "invalid_request", "the job input does not fit the deployment's task", details)
        return doc, body, InputSummary.of(generate)

    def _client(self, caller: Caller, doc: Deployment) -> RunpodClient:
        """A Runpod client with the deployment's key: the caller's own (the same key), or the sealed one."""
        if caller.api_key:
            return self._deps.runpod.client(caller.api_key)
        return self._deps.runpod.client(self._credentials(doc).runpod_api_key)

    def _credentials(self, doc: Deployment) -> SealedCredentials:
        secrets = self._deps.store.secrets(doc.deployment_id)
        if not secrets:
            raise ApiError(409, "deployment_not_ready", "the deployment's credentials are gone", {"status": "deleted"})
        return self._deps.sealer.open(doc.deployment_id, secrets["sealed"])

    def _output_bucket(self, doc: Deployment) -> dict[str, str] | None:
        """Runpod's ``s3Config`` for a deployment created with an ``output_s3_url``: the worker uploads each image
        there and returns a presigned GET URL instead of the bytes."""
        if not doc.output_s3_url:
            return None
        credentials = self._credentials(doc)
        if not credentials.user_aws_access_key_id or not credentials.user_aws_secret_access_key:
            return None  # refused at create; a document written otherwise gets inline images
        region = doc.user_aws_region or "us-east-1"
        return {
            "accessId": credentials.user_aws_access_key_id,
            "accessSecret": credentials.user_aws_secret_access_key,
            # s3Config has no key prefix: the worker has the URL's own from its env (shared.deployments.endpoint_spec).
            "bucketName": split_s3_url(doc.output_s3_url)[0],
            "endpointUrl": doc.user_aws_endpoint_url or f"https://s3.{region}.amazonaws.com",
        }

    def _submitted(
        self,
        caller: Caller,
        client: RunpodClient,
        doc: Deployment,
        job: Job,
        *,
        summary: InputSummary,
        body: RunRequest,
    ) -> JobRecord:
        """The record of a job Runpod accepted (its request counted), then its end announced or its checks begun."""
        pricing = self._deps.ends.pricing(client, doc) if job.final else JobPricing()
        record = self._deps.jobs.record_submitted(
            doc.deployment_id,
            doc.owner,
            job,
            summary,
            pricing,
            webhook_url=body.webhook_url,
            submitted_by=caller.submitter,
        )
        self._deps.ends.after_submit(record, job, client, doc)
        return record

    def _observe(self, client: RunpodClient, doc: Deployment, record: JobRecord, job: Job) -> JobView:
        updated = self._deps.ends.observe(client, doc, record, job)
        return JobView.of(updated, job.output if job.final else None)

    def _kept_output(self, caller: Caller, doc: Deployment, record: JobRecord) -> Any:
        """The output of a completed job while Runpod keeps it (a ``/run`` result for 30 minutes, a runsync one for a
        minute): whoever saw the end first (the job watch, say), the user's GET still gets it. Never stored here."""
        if record.status != "COMPLETED" or not doc.runpod.endpoint_id or record.finished_at is None:
            return None
        if utcnow() - record.finished_at > RUNPOD_KEEPS_RESULTS:
            return None
        try:
            return self._client(caller, doc).job_status(doc.runpod.endpoint_id, record.job_id).output
        except (RunpodNotFoundError, RunpodUnavailableError, RunpodAuthError, RunpodRejectedError, ApiError):
            return None  # the record stands; the output was the extra

    def _record(self, caller: Caller, deployment_id: str, job_id: str) -> JobRecord:
        """The job, if the caller may see it: the owner sees every job, an invoke key only its own (another's is
        a 404, as a missing one: its existence is not revealed)."""
        record = self._deps.jobs.get(deployment_id, job_id)
        if record is None or (caller.invoke_key_id is not None and record.submitted_by != caller.invoke_key_id):
            raise ApiError(404, "job_not_found", f"no job {job_id!r} on this deployment")
        return record

    def _job_ended_url(self, doc: Deployment) -> str:
        """Where Runpod tells us a job ended (the callback function): a nudge to check it now, ahead of the job
        watch's schedule (shared.jobs.ends)."""
        token = self._deps.sealer.job_ended_token(doc.deployment_id)
        return f"{callback_url(self._deps.settings, doc.deployment_id, 'job-ended')}?token={token}"

    def _status_url(self, deployment_id: str, job_id: str) -> str:
        base = self._deps.settings.public_api_base_url.rstrip("/")
        return f"{base}/v1/deployments/{deployment_id}/jobs/{job_id}"


def _endpoint_id(doc: Deployment) -> str:
    if not doc.runpod.endpoint_id:
        raise ApiError(409, "deployment_not_ready", "the deployment has no endpoint", {"status": doc.status.value})
    return doc.runpod.endpoint_id


def _wait_ms(value: str | None) -> int:
    if value is None:
        return WAIT_MS_DEFAULT
    if not re.fullmatch("[0-9]{1,6}", value) or not WAIT_MS_MIN <= int(value) <= WAIT_MS_MAX:
        raise ApiError(400, "invalid_wait", f"wait must be an integer from {WAIT_MS_MIN} to {WAIT_MS_MAX} (ms)")
    return int(value)


def _page_size(limit: str | None) -> int:
    if limit is None:
        return DEFAULT_PAGE
    if not re.fullmatch("[0-9]{1,3}", limit) or not 1 <= int(limit) <= MAX_PAGE:
        raise ApiError(400, "invalid_limit", f"limit must be an integer from 1 to {MAX_PAGE}")
    return int(limit)
