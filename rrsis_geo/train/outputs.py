"""What a training run writes (see :mod:`rrsis_geo.train.loop` for the folder's layout):
``metrics.jsonl`` lines, whole files written atomically (``summary.json``, ``last.pt``), and the
best weights with the model card inference reads (:func:`save_fianet_with_meta`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rrsis_geo.data.referring import ReferringDataset
from rrsis_geo.model.checkpoint import IMAGENET_MEAN, IMAGENET_STD
from rrsis_geo.safety import atomic_write
from rrsis_geo.train.config import TrainSettings
from rrsis_geo.train.starting import TIMM_PREFIX


def atomic_json(path: Path, obj: Any) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def atomic_torch_save(path: Path, obj: Any) -> None:
    with atomic_write(path) as tmp:
        torch.save(obj, tmp)


class MetricsLog:
    """Appends JSON lines to ``metrics.jsonl`` (flushed per line so a crash loses nothing)."""

    def __init__(self, path: Path) -> None:
        self.fh = open(path, "a", encoding="utf-8")

    def write(self, **event: Any) -> None:
        self.fh.write(json.dumps(event, sort_keys=True) + "\n")
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()


def lineage_classes(own: list[str] | None, parent_meta: dict[str, Any] | None
                    ) -> list[str] | None:
    """The classes a model was trained to find: this run's (``own``) and, when it started from
    a saved model (``parent_meta``), that model's. None (unknown) when either is unknown: an
    official checkpoint, or data whose sentences name no category.

    >>> lineage_classes(["tree"], {"trained_classes": ["car", "tree"]})
    ['car', 'tree']
    >>> lineage_classes(["tree"], {}) is None, lineage_classes(["tree"], None)
    (True, ['tree'])
    """
    if own is None:
        return None
    if parent_meta is None:
        return sorted(own)
    parent = parent_meta.get("trained_classes")
    return None if parent is None else sorted({*own, *parent})


def save_fianet_with_meta(model: nn.Module, stem: Path, s: TrainSettings,
                          train_ds: ReferringDataset, val_ds: ReferringDataset,
                          text_kw: dict[str, Any], training: dict[str, Any],
                          trained_classes: list[str] | None) -> None:
    """Write the weights with the metadata inference needs (input size, GSD, text settings);
    ``trained_classes``: the run's :func:`lineage_classes`."""
    from rrsis_geo.model import save_fianet

    info = train_ds.info
    meta = {
        "input_size": s.img_size,
        # the data's resolution; data that records none keeps the starting model's
        "gsd": info.get("gsd", (getattr(model, "meta", None) or {}).get("gsd")),
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "classes": train_ds.classes,
        # phrases added to the class list by this run and the runs it started from
        "classes_added": {**(model.meta.get("classes_added") or {}), **train_ds.added_classes},
        "max_tokens": train_ds.max_tokens,
        "trained_classes": trained_classes,
        "text_mode": "aligned" if text_kw.get("aligned") else "upstream",
        "dataset": s.format,
        "training": {
            "dataset_root": Path(s.dataset_root).name,
            "format": s.format, "config": s.config_name, "train_split": s.train_split,
            "val_split": s.val_split, "train_samples": len(train_ds), "val_samples": len(val_ds),
            "batch_size": s.batch_size, "lr": s.lr, "weight_decay": s.weight_decay,
            "warmup_iters": s.warmup_iters, "brightness": s.brightness, "seed": s.seed,
            "flips": s.flips, "colour_jitter": s.colour_jitter,
            "img_size": s.img_size,
            "started_from": {k: v if v.startswith(TIMM_PREFIX) else Path(v).name
                             for k, v in (("weights", s.init_weights),
                                               ("backbone_weights", s.backbone_weights),
                                               ("text_weights", s.text_weights)) if v},
            **({"distill": {"teachers": [Path(t).name for t in s.distill],
                            "ids": list(s.distill_ids), "weight": s.distill_weight}}
               if s.distill else {}),
            **training,
        },
    }
    save_fianet(model, stem, meta)
