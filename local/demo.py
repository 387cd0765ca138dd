"""The main job of ``make run``: use the running local stack the way a user would.

Today: create a deployment of the demo model through the intake API, read it back, and show how to call the API.
"""

from __future__ import annotations

import json
import logging
import shlex
from collections.abc import Mapping

import requests

logger = logging.getLogger(__name__)

DEMO_API_KEY = "rp_local_demo_key"  # the Runpod simulator registers it at start
DEMO_MODEL = "visgate-tiny/sd-tiny"


def main(env: Mapping[str, str]) -> int:
    """Run the demo against the stack whose environment is ``env``; the process exit status."""
    api = env["PUBLIC_API_BASE_URL"]
    headers = {"Authorization": f"Bearer {DEMO_API_KEY}"}
    body = {"hf_model_id": DEMO_MODEL}
    try:
        created = requests.post(f"{api}/v1/deployments", json=body, headers=headers, timeout=30)
    except requests.RequestException as exc:
        logger.error("intake is not reachable at %s: %s", api, exc)
        return 1
    if created.status_code != 202:
        logger.error("POST %s/v1/deployments answered %s: %s", api, created.status_code, created.text[:500])
        return 1
    deployment = created.json()
    logger.info("created deployment %s (status %s)", deployment["deployment_id"], deployment["status"])
    fetched = requests.get(f"{api}/v1/deployments/{deployment['deployment_id']}", headers=headers, timeout=30)
    logger.info("GET it back -> %s: %s", fetched.status_code, json.dumps(fetched.json(), indent=2))
    curl = shlex.join(
        [
            "curl",
            "-sS",
            "-X",
            "POST",
            f"{api}/v1/deployments",
            "-H",
            f"Authorization: Bearer {DEMO_API_KEY}",
            "-H",
            "Content-Type: application/json",
            "-d",
            json.dumps(body),
        ]
    )
    logger.info("the API is at %s; try:\n  %s", api, curl)
    return 0 if fetched.ok else 1
