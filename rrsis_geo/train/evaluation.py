"""Evaluate a referring-segmentation model on a dataset split (docs/fianet.md §Metrics).

Every distinct expression is encoded once (``model.encode_text``) and its features are reused for
all images that carry it (``model.segment_image``): in eval mode the text encoder is deterministic,
so this gives the same logits as the full forward pass at a fraction of the cost.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rrsis_geo.data.referring import TEXT_KEYS, ReferringDataset, collate
from rrsis_geo.errors import UsageError
from rrsis_geo.geo.output import write_text_atomic
from rrsis_geo.model.features import cat_features, index_features
from rrsis_geo.train.metrics import MetricAccumulator, summarize

#: subset holding the samples whose expression must pick one of several same-category objects
DISAMBIGUATION_SUBSET = "needs_disambiguation"
#: baseline that predicts every object of the named category (generated data only)
UNION_BASELINE = "category_union"


class TextFeatureCache:
    """Text features of every distinct expression of a dataset, computed once without gradients.

    Valid whenever the text encoder's output cannot change: in eval mode, or in training when the
    text encoder is frozen and kept in eval mode (no dropout).

    Args:
        model: a :class:`~rrsis_geo.model.protocol.ReferringModel` module (``encode_text``).
        text: dataset text tensors, ``{key: LongTensor [U, N]}``.
        device: where the model runs.
        chunk: expressions per encoder call.
    """

    def __init__(
        self, model: nn.Module, text: dict[str, torch.Tensor], device: torch.device, chunk: int = 64
    ) -> None:
        was_training = model.training
        model.eval()
        parts = []
        n = text[TEXT_KEYS[0]].shape[0]
        with torch.no_grad():
            for s in range(0, n, chunk):
                args = [text[k][s : s + chunk].to(device) for k in TEXT_KEYS]
                parts.append(model.encode_text(*args))
        model.train(was_training)
        self.features = cat_features(parts)

    def get(self, text_index: torch.Tensor) -> Any:
        """Features for a batch of expression indices [B]."""
        return index_features(self.features, text_index.to(_first_device(self.features)))


def _first_device(features: Any) -> torch.device:
    values = features.values() if isinstance(features, dict) else features
    for v in values:
        if isinstance(v, torch.Tensor):
            return v.device
    return torch.device("cpu")


def iterate_batches(
    dataset: ReferringDataset, batch_size: int, order: Sequence[int] | None = None
) -> Iterator[dict[str, Any]]:
    """In-process batches (no worker processes: on a 2-core CPU they only add overhead)."""
    order = list(range(len(dataset))) if order is None else list(order)
    for s in range(0, len(order), batch_size):
        yield collate([dataset[i] for i in order[s : s + batch_size]])


def sample_groups(batch: dict[str, Any], j: int) -> list[str]:
    """Subset names of sample ``j`` of a batch: its expression type and the disambiguation flag."""
    groups = []
    t = batch["type"][j]
    if t:
        groups.append(str(t))
    if batch["needs_disambiguation"][j]:
        groups.append(DISAMBIGUATION_SUBSET)
    return groups


@torch.no_grad()
def evaluate_model(
    model: nn.Module,
    dataset: ReferringDataset,
    batch_size: int = 8,
    device: torch.device | str = "cpu",
    text_cache: TextFeatureCache | None = None,
    progress: bool = False,
    desc: str = "evaluate",
    autocast_dtype: torch.dtype | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Metrics of ``model`` on ``dataset`` at the dataset's input size.

    Args:
        model: FIANet-like model (``encode_text``/``segment_image``), any mode (restored after).
        dataset: a reader; its ``img_size`` is the evaluation resolution.
        batch_size: images per forward pass.
        device: where the model lives.
        text_cache: precomputed text features of ``dataset`` (computed here when None).
        progress: show a tqdm bar on stderr.
        autocast_dtype: autocast the image forward to this dtype (None: as the model is).
        desc: label of the bar.

    Returns:
        (report, per_sample). ``report`` has ``mIoU``, ``oIoU``, ``precision@0.5`` … ``0.9``,
        ``count``, ``subsets`` (expression types and ``needs_disambiguation``) and ``baselines``
        (``category_union`` on the disambiguation subset, when union masks exist).
        ``per_sample`` lists ``{id, expression, type, needs_disambiguation, iou, pred_pixels,
        target_pixels}``.
    """
    from rrsis_geo.inference.device import autocast

    device = torch.device(device)
    was_training = model.training
    model.eval()
    if text_cache is None:
        text_cache = TextFeatureCache(model, dataset.text, device)
    acc = MetricAccumulator()
    base_i: list[int] = []
    base_u: list[int] = []
    per_sample: list[dict[str, Any]] = []
    batches = iterate_batches(dataset, batch_size)
    if progress:
        from tqdm import tqdm

        batches = tqdm(batches, total=math.ceil(len(dataset) / batch_size), desc=desc, unit="batch",
                       leave=False)
    for batch in batches:
        image = batch["image"].to(device)
        feats = text_cache.get(batch["text_index"])
        with autocast(device, autocast_dtype):
            logits = model.segment_image(image, feats)
        pred = logits.float().argmax(dim=1).cpu()
        gt = batch["mask"]
        b = gt.shape[0]
        groups = [sample_groups(batch, j) for j in range(b)]
        iou = acc.update(pred, gt, groups=groups, ids=batch["id"])
        for j in range(b):
            per_sample.append(
                {
                    "id": batch["id"][j],
                    "expression": batch["expression"][j],
                    "type": batch["type"][j],
                    "needs_disambiguation": batch["needs_disambiguation"][j],
                    "iou": float(iou[j]),
                    "pred_pixels": int(pred[j].sum()),
                    "target_pixels": int(gt[j].sum()),
                }
            )
            union = batch["union_mask"][j]  # stacked tensor or list holding None
            if batch["needs_disambiguation"][j] and union is not None:
                ui = int((union.bool() & gt[j].bool()).sum())
                uu = int((union.bool() | gt[j].bool()).sum())
                base_i.append(ui)
                base_u.append(uu)
    model.train(was_training)
    report = acc.compute()
    report["baselines"] = {UNION_BASELINE: summarize(base_i, base_u)} if base_i else {}
    return report, per_sample


def format_table(report: dict[str, Any], per_sample: list[dict[str, Any]] | None = None) -> str:
    """Readable metrics table (values ×100, as papers report them).

    With ``per_sample``, a closing line counts empty-target samples (e.g. generated ``absent``
    chips) predicted empty: the metric (docs/fianet.md §Metrics) scores them IoU 0 whatever the
    prediction.
    """
    cols = ["mIoU", "oIoU", "precision@0.5", "precision@0.6", "precision@0.7", "precision@0.8",
            "precision@0.9"]
    heads = ["mIoU", "oIoU", "P@0.5", "P@0.6", "P@0.7", "P@0.8", "P@0.9"]
    rows = [("overall", report)]
    rows += [(f"  {k}", v) for k, v in sorted(report.get("subsets", {}).items())]
    rows += [(f"  baseline {k}", v) for k, v in sorted(report.get("baselines", {}).items())]
    width = max(len(r[0]) for r in rows) + 2
    lines = [f"{'':<{width}}{'n':>6}" + "".join(f"{h:>8}" for h in heads)]
    for name, m in rows:
        lines.append(f"{name:<{width}}{m['count']:>6}" + "".join(f"{100 * m[c]:>8.2f}" for c in cols))
    empty = [r for r in per_sample or [] if r["target_pixels"] == 0]
    if empty:
        ok = sum(r["pred_pixels"] == 0 for r in empty)
        lines.append(f"empty targets: {len(empty)} (IoU 0 by definition); predicted empty: {ok}")
    return "\n".join(lines)


def evaluate_weights(
    dataset_root: str | os.PathLike[str],
    fmt: str = "refsegrs",
    split: str = "test",
    weights: str | os.PathLike[str] | None = None,
    batch_size: int = 8,
    device: str = "auto",
    num_threads: int | None = None,
    progress: bool = False,
    precision: str = "fp32",
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Load weights (default: the shipped demo model) and evaluate them on a dataset split,
    with the forward pass in ``precision`` (as segment's ``--precision``).

    The dataset is read at the model's ``meta["input_size"]`` and decoupled with the model's
    ``classes`` / ``max_tokens`` / ``text_mode``, so evaluation sees text exactly as training did.

    Returns:
        ``(report, per_sample)`` as :func:`evaluate_model`.

    Raises:
        WeightsError: weights missing or unreadable. UsageError: bad batch size.
        BadInputError: dataset missing or malformed.
    """
    from rrsis_geo.data.referring import DEFAULT_MAX_TOKENS, open_dataset
    from rrsis_geo.defaults import resolve_weights
    from rrsis_geo.inference.device import apply_precision, resolve_device
    from rrsis_geo.model import load_fianet

    if batch_size < 1:
        raise UsageError("--batch-size must be >= 1")
    torch.set_num_threads(num_threads or os.cpu_count() or 1)
    dev = resolve_device(device)
    path = resolve_weights(weights)
    model = load_fianet(path).to(dev)
    meta = getattr(model, "meta", {}) or {}
    model, dtype = apply_precision(model.eval(), precision, dev)
    dataset = open_dataset(
        dataset_root, fmt, split,
        img_size=int(meta.get("input_size") or 480),
        classes=meta.get("classes") or None,
        max_tokens=int(meta.get("max_tokens") or DEFAULT_MAX_TOKENS[fmt]),
        aligned=meta.get("text_mode") == "aligned",
    )
    dataset.preload(progress)
    return evaluate_model(model, dataset, batch_size=batch_size, device=dev, progress=progress,
                          autocast_dtype=dtype)


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write JSON atomically (temp file in the same folder, then ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(obj, indent=2) + "\n")


def write_jsonl(path: str | os.PathLike[str], rows: list[dict[str, Any]]) -> None:
    """Write JSON lines atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))
