"""What the tiny model families share: the CLIP and T5 tokenizers (built in memory, no network), the CLIP and T5
text encoders and the two-block VAE, all with seeded random weights; and a bare text-encoder repo (not a pipeline)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL
from tokenizers import Tokenizer, decoders, pre_tokenizers, processors
from tokenizers import models as tokenizer_models
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    T5Config,
    T5EncoderModel,
)
from transformers.models.t5.tokenization_t5 import T5Tokenizer

# Channel widths of the UNet and VAE blocks: two blocks keep the VAE scale factor at 2, so a UNet sample size of 32
# gives the 64x64 native size the tests generate at.
BLOCK_CHANNELS = (32, 64)
TEXT_HIDDEN = 32
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def _byte_alphabet() -> list[str]:
    """The 256 printable stand-ins that byte-level BPE uses for raw bytes (GPT-2's table)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars: list[str] = []
    extra = 0
    for byte in range(256):
        if byte in printable:
            chars.append(chr(byte))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def build_tokenizer() -> CLIPTokenizer:
    """A CLIP tokenizer over a byte-level vocabulary (every byte, alone and word-final) plus a few merges."""
    alphabet = _byte_alphabet()
    tokens = [BOS, EOS, *alphabet, *(f"{char}</w>" for char in alphabet)]
    # A handful of merges so that common words become single tokens, as they do with a real CLIP vocabulary.
    merges: list[tuple[str, str]] = []
    for word in ("a", "photo", "of", "cat", "the"):
        pieces = [*word[:-1], f"{word[-1]}</w>"]
        while len(pieces) > 1:
            pair = (pieces[0], pieces[1])
            merged = pair[0] + pair[1]
            if pair not in merges:
                merges.append(pair)
            if merged not in tokens:
                tokens.append(merged)
            pieces = [merged, *pieces[2:]]
    vocab = {token: index for index, token in enumerate(tokens)}
    # The hint says list[str], but the tokenizers BPE model it feeds takes (left, right) pairs.
    return CLIPTokenizer(
        vocab=vocab,
        merges=merges,  # type: ignore[arg-type]
        bos_token=BOS,
        eos_token=EOS,
        pad_token=EOS,
        model_max_length=77,
    )


def build_t5_tokenizer() -> T5Tokenizer:
    """A T5 tokenizer over a unigram vocabulary of printable ASCII plus a few words (no sentencepiece file)."""
    words = [(f"\u2581{word}", -1.5) for word in ("a", "photo", "of", "cat", "the")]
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -1.0)]
    pieces += [(chr(code), -2.0) for code in range(32, 127)] + words
    backend = Tokenizer(tokenizer_models.Unigram(pieces, unk_id=2))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    backend.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    backend.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    return T5Tokenizer(
        tokenizer_object=backend, eos_token="</s>", pad_token="<pad>", unk_token="<unk>", extra_ids=0,
        model_max_length=512,
    )  # fmt: skip


def build_t5_encoder(vocab_size: int, seed: int) -> T5EncoderModel:
    """A 2-layer T5 encoder (d_model 32) with random weights."""
    torch.manual_seed(seed)
    config = T5Config(
        vocab_size=vocab_size, d_model=TEXT_HIDDEN, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1,
    )  # fmt: skip
    return T5EncoderModel(config).eval()


def build_text_encoder(vocab_size: int, seed: int, *, projection: bool = False) -> CLIPTextModel:
    """A 2-layer CLIP text encoder with random weights (with a text projection, as SDXL's second and SD3's)."""
    torch.manual_seed(seed)
    config = CLIPTextConfig(
        projection_dim=TEXT_HIDDEN,
        vocab_size=vocab_size,
        hidden_size=TEXT_HIDDEN,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    if projection:
        return CLIPTextModelWithProjection(config).eval()
    return CLIPTextModel(config).eval()


def build_vae(seed: int, latent_channels: int = 4, **extra: Any) -> AutoencoderKL:
    """A two-block VAE (scale factor 2) with random weights."""
    torch.manual_seed(seed)
    return AutoencoderKL(
        block_out_channels=list(BLOCK_CHANNELS),
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        latent_channels=latent_channels,
        sample_size=64,
        **extra,
    )


def build_text_encoder_only(dest: Path, seed: int = 0) -> Path:
    """Save a bare CLIP text encoder (config.json + model.safetensors, no model_index.json) into ``dest``."""
    text_encoder = build_text_encoder(len(build_tokenizer()), seed)
    dest.mkdir(parents=True, exist_ok=True)
    text_encoder.save_pretrained(dest, safe_serialization=True)
    return dest
