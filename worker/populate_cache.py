"""Operator command: put one model into an S3 model cache (typically the platform's shared cache).

Usage::

    python -m worker.populate_cache --model stabilityai/sd-turbo --revision <40-hex sha> \\
        --s3-url s3://visgate-models/cache [--endpoint-url https://...] [--variant auto|fp16|bf16|default] [--force]

Fetches the files a diffusers pipeline loads from the Hub (as the worker does: safetensors, configs, tokenizer
files, never pickles), verifies them against the Hub's sizes and sha256, uploads them, and writes the manifest
last, so workers never see a half-populated model. Access to a gated model is not decided by the cache: the
callback function grants the shared cache only to deployments that provisioning granted it, which happens only
after the Hub check passed with the deployment's own token (a gated repo's files are served only to tokens granted
access) and for models on the allowlist. The manifest's ``gated`` flag is information for operators, never read
for access.

Credentials come from the usual places and never from the command line: the Hub token from ``HF_TOKEN`` (or
``hf auth login``), S3 keys from boto3's chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, a profile, or an
instance role). Add the model to the platform's ``MODEL_CACHE_SHARED_ALLOWLIST`` afterwards (provisioning grants
the shared cache to deployments of allowlisted models).
"""

from __future__ import annotations

import argparse
import logging
import re
import shutil
import tempfile
import time
from pathlib import Path

from shared.hub_rules import DtypeName
from worker.cache import S3Location, S3ModelCache, make_s3_client
from worker.errors import WorkerError
from worker.hub_client import HubClient
from worker.logs import configure_logging
from worker.model_fetch import FetchRequest, fetch_from_hub

logger = logging.getLogger("worker.populate_cache")

DEFAULT_HF_ENDPOINT = "https://huggingface.co"
VARIANT_DTYPES: dict[str, DtypeName | None] = {
    "auto": None,
    "fp16": "float16",
    "bf16": "bfloat16",
    "default": "float32",
}


def build_parser() -> argparse.ArgumentParser:
    """The command-line arguments."""
    parser = argparse.ArgumentParser(prog="python -m worker.populate_cache", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="Hub repo id, org/name")
    parser.add_argument("--revision", required=True, help="the 40-hex commit sha to cache")
    parser.add_argument("--s3-url", required=True, help="s3://bucket/prefix of the cache")
    parser.add_argument("--endpoint-url", help="S3 API endpoint (R2, MinIO, GCS interoperability)")
    parser.add_argument("--region", help="S3 region")
    parser.add_argument("--hf-endpoint", default=DEFAULT_HF_ENDPOINT, help="Hub base URL")
    parser.add_argument(
        "--variant",
        choices=sorted(VARIANT_DTYPES),
        default="auto",
        help="the weights of the dtype a GPU worker loads (auto: the model's preference, fp16, bf16) or default: "
        "plain weights (float32); see shared.hub_rules.choose_variant",
    )
    parser.add_argument("--work-dir", type=Path, help="scratch folder for the download (default: a temp dir)")
    parser.add_argument("--concurrency", type=int, default=16, help="parallel transfers")
    parser.add_argument("--force", action="store_true", help="replace an existing cached copy")
    return parser


def populate(args: argparse.Namespace) -> int:
    """Run the command; returns the exit status."""
    if not re.fullmatch(r"[0-9a-f]{40}", args.revision):
        logger.error("--revision must be a 40-hex commit sha, not a branch or tag")
        return 2
    client = make_s3_client(
        endpoint_url=args.endpoint_url,
        access_key_id=None,
        secret_access_key=None,
        region=args.region,
        max_connections=args.concurrency,
    )
    cache = S3ModelCache(client, S3Location.parse(args.s3_url), concurrency=args.concurrency)
    existing = cache.read_manifest(args.model, args.revision)
    if existing is not None and not args.force:
        logger.info("already cached", extra={"model": args.model, "files": len(existing.files)})
        return 0
    work_dir = Path(args.work_dir or tempfile.mkdtemp(prefix="visgate-populate-"))
    # What a GPU worker loads: "auto" lets the model's configs pick float16 or bfloat16, as the worker does.
    request = FetchRequest(
        model_id=args.model,
        revision=args.revision,
        model_dir=work_dir,
        device="cuda",
        dtype=VARIANT_DTYPES[args.variant],
    )
    started = time.perf_counter()
    try:
        # The token is None on purpose: huggingface_hub then reads HF_TOKEN or the stored login itself.
        manifest = fetch_from_hub(request, HubClient(args.hf_endpoint, None, concurrency=8), None)
        fetched_s = time.perf_counter() - started
        if existing is not None:
            # Readers must not pair the old manifest with new files while they upload.
            cache.invalidate(args.model, args.revision)
        cache.upload(manifest, request.final_dir)
    except WorkerError as exc:
        logger.error("populate failed", extra={"reason": exc.reason, "error": str(exc)})
        return 1
    finally:
        if args.work_dir is None:
            shutil.rmtree(work_dir, ignore_errors=True)
    logger.info(
        "cached",
        extra={
            "model": args.model,
            "revision": args.revision,
            "gated": manifest.gated,
            "files": len(manifest.files),
            "bytes": manifest.total_bytes,
            "fetch_s": round(fetched_s, 2),
            "total_s": round(time.perf_counter() - started, 2),
            "manifest": cache.key(args.model, args.revision, "manifest.json"),
        },
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    args = build_parser().parse_args(argv)
    configure_logging("populate-cache")
    return populate(args)


if __name__ == "__main__":
    raise SystemExit(main())
