"""Batch helpers for encoded text features (the ``encode_text`` output of the model contract:
a NamedTuple such as :class:`~rrsis_geo.model.fiam.TextFeatures`, a plain tuple or a dict of
tensors whose first axis is the expression)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


def index_features(features: Any, idx: torch.Tensor | slice) -> Any:
    """Rows ``idx`` (an index tensor or a slice) of a text-features object (NamedTuple/tuple/dict
    of tensors [U, ...])."""
    if isinstance(features, dict):
        return {k: (v[idx] if isinstance(v, torch.Tensor) else v) for k, v in features.items()}
    if isinstance(features, tuple):
        rows = [(v[idx] if isinstance(v, torch.Tensor) else v) for v in features]
        return type(features)(*rows) if hasattr(features, "_fields") else tuple(rows)
    raise TypeError(f"cannot index text features of type {type(features).__name__}")


def cat_features(parts: Sequence[Any]) -> Any:
    """Concatenate text-features objects along the batch axis."""
    first = parts[0]
    if isinstance(first, dict):
        return {k: torch.cat([p[k] for p in parts]) for k in first}
    rows = [torch.cat([p[i] for p in parts]) for i in range(len(first))]
    return type(first)(*rows) if hasattr(first, "_fields") else tuple(rows)
