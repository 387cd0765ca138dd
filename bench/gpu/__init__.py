"""GPU benchmark: plain diffusers fp16 versus the worker pipeline set-up (``python -m bench.gpu``; the code is in
:mod:`bench.gpu.compare`). ``main`` is here so that ``make bench`` runs this package like every other bench."""

from bench.gpu.compare import main

__all__ = ["main"]
