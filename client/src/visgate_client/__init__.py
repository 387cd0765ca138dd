"""Python client of the Visgate Deploy API: deploy Hugging Face diffusion models to Runpod Serverless, and run jobs on
them through the API.

from visgate_client import Client
client = Client()                                    # $VISGATE_API_URL, $RUNPOD_API_KEY
deployment = client.deploy("visgate-tiny/sd-tiny").wait()
result = deployment.runsync({"prompt": "a watercolor fox", "seed": 7})
result.images[0].save("fox.png"); deployment.delete(wait=True)
"""

from visgate_client.client import Client
from visgate_client.deployment import Deployment, LogLine, Phase, Update
from visgate_client.errors import (
    ApiError,
    DeploymentDeletedError,
    DeploymentFailedError,
    JobFailedError,
    JobOutputUnavailableError,
    NotReadyError,
    RunpodError,
    VisgateError,
    WaitTimeoutError,
    WebhookVerificationError,
)
from visgate_client.inference import Job, JobResult
from visgate_client.models import DeploymentUsage, GpuPool, InvokeKey, Usage, UsageReport
from visgate_client.webhooks import verify_webhook

__all__ = [
    "ApiError",
    "Client",
    "Deployment",
    "DeploymentDeletedError",
    "DeploymentFailedError",
    "DeploymentUsage",
    "GpuPool",
    "InvokeKey",
    "Job",
    "JobFailedError",
    "JobOutputUnavailableError",
    "JobResult",
    "LogLine",
    "NotReadyError",
    "Phase",
    "RunpodError",
    "Update",
    "Usage",
    "UsageReport",
    "VisgateError",
    "WaitTimeoutError",
    "WebhookVerificationError",
    "verify_webhook",
]
