"""The Runpod Serverless worker: fetch a pinned diffusers model (S3 cache or Hub), prove it, serve text-to-image jobs.

Entry point: ``python -m worker.main``. Layout: :mod:`worker.settings` (env), :mod:`worker.cache` and
:mod:`worker.model_fetch` (weights), :mod:`worker.pipeline` (load and run), :mod:`worker.schemas` (job input and
output), :mod:`worker.handler` (Runpod adapter), :mod:`worker.reporter` (phase reports).
"""
