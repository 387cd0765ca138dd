"""Image build step: bake one model into the image (``docker build --build-arg BAKE_MODEL_ID=... ``).

Fetches the model from the Hub exactly as a worker start does, into ``<model dir>/<org--name>/<revision>`` with
its local manifest, so a worker started from the image finds it verified on disk and downloads nothing. The Hub
token, for gated models, comes from ``HF_TOKEN`` (a BuildKit secret, never a build argument).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from worker.hub_client import HubClient
from worker.logs import configure_logging
from worker.model_fetch import FetchRequest, fetch_model
from worker.populate_cache import VARIANT_DTYPES

logger = logging.getLogger("worker.bake")


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: ``python -m worker.bake --model ORG/NAME --revision SHA --model-dir DIR``."""
    parser = argparse.ArgumentParser(prog="python -m worker.bake", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--revision", required=True)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--hf-endpoint", default="https://huggingface.co")
    parser.add_argument("--variant", choices=sorted(VARIANT_DTYPES), default="fp16")
    args = parser.parse_args(argv)
    configure_logging("image-build")
    request = FetchRequest(
        model_id=args.model,
        revision=args.revision,
        model_dir=args.model_dir,
        device="cuda",
        dtype=VARIANT_DTYPES[args.variant],
    )
    result = fetch_model(request, HubClient(args.hf_endpoint, None), cache=None)
    logger.info("baked", extra={"path": str(result.path), "bytes": result.manifest.total_bytes})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
