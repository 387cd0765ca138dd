"""Builders of tiny random-weight diffusers models, one module per family, for scripts/build_tiny_models.py.

``parts``: what the families share (the in-memory CLIP and T5 tokenizers, the text encoders, the VAE);
``stable_diffusion``: SD 1.x and SD 2.x-style (v-prediction) pipelines, their LoRA adapter, the fp16 variant and the
bare text encoder; ``sdxl``, ``sd3`` and ``flux``: one pipeline each. Every builder is seeded: the same seed gives
byte-identical files.
"""
