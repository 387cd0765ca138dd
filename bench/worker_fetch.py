"""Benchmark: the worker's cache download (ranged parts + sha256 while downloading) vs a plain boto3 download.

    .venv/bin/python -m bench.worker_fetch [--size-mb 300] [--rounds 3] [--concurrency 16] [--part-mb 32]

Starts a moto S3 server as a subprocess (so the server does not share the client's interpreter), uploads a
model-shaped set of random safetensors files plus configs with a manifest, then downloads them alternately with
:class:`worker.cache.S3ModelCache` (which also verifies every sha256) and with boto3's own parallel transfer
manager (no verification), ``--rounds`` times each, and prints MB/s and the ratio of the best runs. Target: ours
at least 0.9x plain.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import requests
from boto3.s3.transfer import TransferConfig, create_transfer_manager
from safetensors.numpy import save_file

from shared.cache_layout import Manifest, ManifestFile
from worker.cache import S3Location, S3ModelCache, make_s3_client
from worker.cache_download import sha256_file

MB = 1024 * 1024
PLAIN = "plain boto3 (no verify)"
OURS = "worker cache (sha256)"
MODEL_ID = "bench/random-pipeline"
REVISION = "0" * 40
# Share of the bytes per component, roughly an SD 1.5 pipeline's.
LAYOUT = {"unet/diffusion_pytorch_model.safetensors": 0.70, "vae/diffusion_pytorch_model.safetensors": 0.10,
          "text_encoder/model.safetensors": 0.20}  # fmt: skip


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    """A moto S3 server subprocess and its URL, once it answers."""
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            requests.get(url, timeout=1)
            return process, url
        except requests.ConnectionError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("moto server did not start")


def build_model(folder: Path, size_mb: int) -> Manifest:
    """Random safetensors weights (plus configs) totalling about ``size_mb``; returns their manifest."""
    rng = np.random.default_rng(0)
    for path, share in LAYOUT.items():
        target = folder / path
        target.parent.mkdir(parents=True, exist_ok=True)
        count = int(size_mb * MB * share) // 2
        save_file({"weight": rng.standard_normal(count, dtype=np.float32).astype(np.float16)}, str(target))
        (target.parent / "config.json").write_text(json.dumps({"_class_name": "Random"}))
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    files = sorted(path for path in folder.rglob("*") if path.is_file())
    entries = [
        ManifestFile(path=str(path.relative_to(folder)), size=path.stat().st_size, sha256=sha256_file(path))
        for path in files
    ]
    return Manifest(model_id=MODEL_ID, revision=REVISION, files=entries)


def plain_download(client: Any, cache: S3ModelCache, manifest: Manifest, dest: Path, args: argparse.Namespace) -> None:
    """boto3's transfer manager over every object: parallel ranged GETs, no verification."""
    config = TransferConfig(
        max_concurrency=args.concurrency,
        multipart_threshold=args.part_mb * MB,
        multipart_chunksize=args.part_mb * MB,
    )
    with create_transfer_manager(client, config) as manager:
        futures = []
        for entry in manifest.files:
            target = dest / entry.path
            target.parent.mkdir(parents=True, exist_ok=True)
            key = cache.key(MODEL_ID, REVISION, entry.path)
            futures.append(manager.download(cache.location.bucket, key, str(target)))
        for future in futures:
            future.result()


def timed(work: Callable[[Path], None], scratch: Path) -> float:
    """Seconds for one download into a fresh folder (removed afterwards)."""
    dest = Path(tempfile.mkdtemp(dir=scratch))
    started = time.perf_counter()
    work(dest)
    elapsed = time.perf_counter() - started
    shutil.rmtree(dest)
    return elapsed


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--part-mb", type=int, default=32)
    args = parser.parse_args(argv)

    process, url = start_moto()
    scratch = Path(tempfile.mkdtemp(prefix="bench-fetch-"))
    try:
        client = make_s3_client(
            endpoint_url=url, access_key_id="bench", secret_access_key="bench", region=None,
            max_connections=args.concurrency,
        )  # fmt: skip
        client.create_bucket(Bucket="bench")
        cache = S3ModelCache(
            client, S3Location("bench", "models"), concurrency=args.concurrency, part_size=args.part_mb * MB
        )
        manifest = build_model(scratch / "source", args.size_mb)
        cache.upload(manifest, scratch / "source")
        total_mb = manifest.total_bytes / MB

        methods: dict[str, Callable[[Path], None]] = {
            PLAIN: lambda dest: plain_download(client, cache, manifest, dest, args),
            OURS: lambda dest: cache.download(manifest, dest),
        }
        runs: dict[str, list[float]] = {name: [] for name in methods}
        for round_index in range(args.rounds):
            # Alternate which goes first, so neither always runs right after the other's cleanup.
            order = list(methods) if round_index % 2 == 0 else list(reversed(methods))
            for name in order:
                runs[name].append(timed(methods[name], scratch))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        process.terminate()
        process.wait(timeout=10)

    best = {name: min(times) for name, times in runs.items()}
    median = {name: statistics.median(times) for name, times in runs.items()}
    print(f"model: {total_mb:.0f} MB in {len(manifest.files)} files; concurrency {args.concurrency}, "
          f"parts {args.part_mb} MB; {args.rounds} rounds, alternating; cpus {os.cpu_count()}")  # fmt: skip
    print(
        f"{'method':<26} {'best s':>7} {'median s':>9} {'best MB/s':>10} {'median MB/s':>12} {'ratio best/median':>18}"
    )
    for name in runs:
        ratios = f"{best[PLAIN] / best[name]:.2f}x / {median[PLAIN] / median[name]:.2f}x"
        print(
            f"{name:<26} {best[name]:>7.2f} {median[name]:>9.2f} {total_mb / best[name]:>10.1f} "
            f"{total_mb / median[name]:>12.1f} {ratios:>18}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
