"""GPU benchmark: plain diffusers fp16 versus the worker pipeline set-up (``python -m bench.gpu``)."""
