"""The Runpod Serverless worker: fetch a pinned diffusers model (S3 cache or Hub), prove it, serve its task's jobs.

The task (``WORKER_TASK``) is text-to-image, image-to-image or inpainting, with LoRA adapters fused in.
Entry point: ``python -m worker.main``. Layout:

- settings and start-up: :mod:`worker.settings` (env), :mod:`worker.main` (the phases), :mod:`worker.reporter`
  (phase reports), :mod:`worker.logs`, :mod:`worker.errors` (reason codes);
- weights: :mod:`worker.model_fetch` (local copy, cache or Hub) over :mod:`worker.fetch_plan` (which files),
  :mod:`worker.hub_client` (the Hub), :mod:`worker.local_copy` (the verified copy on disk), :mod:`worker.variants`
  (the target dtype); the caches :mod:`worker.cache` (S3, manifest), :mod:`worker.cache_grant` (shared scope) and
  :mod:`worker.cache_download` (their one verified ranged download); :mod:`worker.populate_cache` and
  :mod:`worker.bake` (operator commands);
- the pipeline: :mod:`worker.pipeline_load` (load) over :mod:`worker.devices` (device, dtype, out of memory),
  :mod:`worker.pipeline_options` (what a load is asked for and reports), :mod:`worker.task_pipeline` (LoRA and the
  task's pipeline), :mod:`worker.speed_settings` (CUDA speed), :mod:`worker.model_family` (per-family defaults);
  :mod:`worker.loaded_model` (generation and warm-up);
- jobs: :mod:`worker.handler` (Runpod adapter), :mod:`worker.schemas` (job input and output), :mod:`worker.images`
  (input images), :mod:`worker.output` (encoding, output bucket).
"""
