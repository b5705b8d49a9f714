"""Referring-segmentation metrics exactly as upstream's test.py (LAVT/RMSIN formulas;
docs/fianet.md §Metrics).

Per sample, at the evaluation resolution: I = |pred ∧ gt|, U = |pred ∨ gt|, IoU = I/U and
IoU = 0 when U = 0 (so an empty prediction on an empty target scores 0, as upstream).
mIoU = mean IoU; oIoU = ΣI / ΣU; precision@t = fraction of samples with IoU ≥ t.
Values are fractions in [0, 1] (papers report ×100).

gIoU (generalized referring segmentation's mean IoU, not upstream's) is mIoU with IoU = 1 where
U = 0: a sentence that names nothing in the chip ("absent", empty target) scores 1 when nothing
is painted and 0 otherwise, so it rewards answering "no target". ``rrsis-geo train --select
gIoU`` selects on it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

THRESHOLDS: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9)
METRIC_KEYS: tuple[str, ...] = (
    "mIoU",
    "oIoU",
    *(f"precision@{t}" for t in THRESHOLDS),
    "gIoU",
    "count",
)


def intersection_union(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample intersection and union pixel counts.

    Args:
        pred: binary predictions [B, H, W] (bool or {0, 1}).
        target: binary ground truth [B, H, W].

    Returns:
        (I, U), each int64 [B].
    """
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} != target {tuple(target.shape)}")
    p = pred.bool().flatten(1)
    t = target.bool().flatten(1)
    return (p & t).sum(1), (p | t).sum(1)


def iou_from_counts(inter: torch.Tensor, union: torch.Tensor) -> torch.Tensor:
    """IoU per sample, float64 [B]; 0 where U = 0."""
    inter = inter.to(torch.float64)
    union = union.to(torch.float64)
    return torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(union))


def summarize(inter: Sequence[float], union: Sequence[float]) -> dict[str, float | int]:
    """Metrics of a set of samples from their I and U counts.

    Returns:
        ``{"mIoU", "oIoU", "precision@0.5" … "precision@0.9", "count"}``; an empty set gives
        zeros and count 0.
    """
    i = torch.as_tensor(list(inter), dtype=torch.float64)
    u = torch.as_tensor(list(union), dtype=torch.float64)
    n = int(i.numel())
    out: dict[str, float | int] = {}
    if n == 0:
        out.update({k: 0.0 for k in METRIC_KEYS if k != "count"})
        out["count"] = 0
        return out
    iou = iou_from_counts(i, u)
    out["mIoU"] = float(iou.mean())
    total_u = float(u.sum())
    out["oIoU"] = float(i.sum()) / total_u if total_u > 0 else 0.0
    for t in THRESHOLDS:
        out[f"precision@{t}"] = float((iou >= t).to(torch.float64).mean())
    out["gIoU"] = float(torch.where(u > 0, iou, torch.ones_like(iou)).mean())
    out["count"] = n
    return out


@dataclass
class MetricAccumulator:
    """Collects per-sample I/U and group labels; ``compute()`` gives overall and per-subset metrics.

    Example:
        >>> acc = MetricAccumulator()
        >>> acc.update(pred, gt, groups=[["spatial"], ["attribute", "needs_disambiguation"]])
        >>> acc.compute()["subsets"]["spatial"]["mIoU"]
    """

    inter: list[int] = field(default_factory=list)
    union: list[int] = field(default_factory=list)
    ids: list[Any] = field(default_factory=list)
    groups: list[tuple[str, ...]] = field(default_factory=list)

    def update(
        self,
        pred: torch.Tensor,
        target: torch.Tensor,
        groups: Iterable[Iterable[str]] | None = None,
        ids: Iterable[Any] | None = None,
    ) -> torch.Tensor:
        """Add a batch.

        Args:
            pred: binary predictions [B, H, W].
            target: binary ground truth [B, H, W].
            groups: per sample, the subset names it belongs to (may be empty).
            ids: per sample, an identifier kept for per-sample reports.

        Returns:
            IoU per sample, float64 [B].
        """
        i, u = intersection_union(pred, target)
        b = i.numel()
        self.inter.extend(int(v) for v in i)
        self.union.extend(int(v) for v in u)
        glist = [tuple(g) for g in groups] if groups is not None else [()] * b
        if len(glist) != b:
            raise ValueError(f"{len(glist)} group lists for a batch of {b}")
        self.groups.extend(glist)
        self.ids.extend(list(ids) if ids is not None else [None] * b)
        return iou_from_counts(i, u)

    def __len__(self) -> int:
        return len(self.inter)

    def compute(self) -> dict[str, Any]:
        """Overall metrics plus ``subsets``: group name → metrics of the samples in that group."""
        out: dict[str, Any] = summarize(self.inter, self.union)
        names = sorted({g for gs in self.groups for g in gs})
        out["subsets"] = {
            name: summarize(
                [i for i, gs in zip(self.inter, self.groups) if name in gs],
                [u for u, gs in zip(self.union, self.groups) if name in gs],
            )
            for name in names
        }
        return out
