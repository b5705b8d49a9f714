"""Training settings: :class:`TrainSettings` (what defines a run, validated by ``resolve``), the
per-config defaults and :class:`TrainResult` (what :func:`rrsis_geo.train.loop.train` returns).

The defaults of the official config are the paper's (docs/fianet.md §Training recipe); the tiny
ones were tuned on CPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rrsis_geo.data.referring import FORMATS
from rrsis_geo.errors import UsageError
from rrsis_geo.train.distill import check_distill_settings

CONFIG_NAMES = ("tiny", "official")
SELECT_METRICS = ("mIoU", "oIoU", "gIoU")

# defaults per config: the official numbers are the paper's; tiny ones were tuned on CPU
DEFAULTS: dict[str, dict[str, Any]] = {
    "official": {"img_size": 480, "epochs": {"refsegrs": 60, "rrsisd": 40},
                 "lr": {"refsegrs": 5e-5, "rrsisd": 3e-5}, "brightness": 0.0, "warmup_iters": 0},
    "tiny": {"img_size": 192, "epochs": {"refsegrs": 30, "rrsisd": 30},
             "lr": {"refsegrs": 3e-4, "rrsisd": 3e-4}, "brightness": 0.1, "warmup_iters": 50},
}


@dataclass
class TrainSettings:
    """Everything that defines a run (stored in the checkpoint and the summary)."""

    dataset_root: str
    format: str = "refsegrs"
    config_name: str = "tiny"
    out: str = "runs/fianet"
    epochs: int | None = None
    batch_size: int = 8
    lr: float | None = None
    weight_decay: float = 1e-2
    img_size: int | None = None
    seed: int = 2401
    max_minutes: float | None = None
    train_split: str = "train"
    val_split: str = "val"
    select_metric: str = "mIoU"
    brightness: float | None = None
    flips: bool = False  # random flips, the sentence's direction words mirrored with them
    colour_jitter: float = 0.0  # colour_jitter amount for sentences without colour words
    warmup_iters: int | None = None
    eval_batch_size: int | None = None
    init_weights: str | None = None
    device: str = "auto"
    num_threads: int | None = None
    aligned: bool | None = None
    fit_schedule_to_budget: bool = True
    val_every: int | None = None
    coord_channels: int | None = None  # None: the config's own (tiny 2, official 0)
    backbone_weights: str | None = None  # Swin state dict (Microsoft or timm layout) or timm:NAME
    text_weights: str | None = None  # local Hugging Face BERT folder
    extend_classes: bool | None = None  # None: on when fine-tuning (--weights)
    add_classes: list[str] = field(default_factory=list)
    distill: list[str] = field(default_factory=list)  # teacher weights (train/distill.py)
    distill_ids: list[str] = field(default_factory=list)  # per teacher: id globs, "a*,b*"
    distill_weight: float = 1.0  # weight of the teacher term added to the supervised loss

    def resolve(self) -> TrainSettings:
        """Fill config-dependent defaults and validate values (UsageError on nonsense)."""
        if self.format not in FORMATS:
            raise UsageError(f"--format must be one of {', '.join(FORMATS)}")
        if self.config_name not in CONFIG_NAMES:
            raise UsageError(f"--config must be one of {', '.join(CONFIG_NAMES)}")
        if self.select_metric not in SELECT_METRICS:
            raise UsageError(f"select_metric must be one of {', '.join(SELECT_METRICS)}")
        d = DEFAULTS[self.config_name]
        if self.img_size is None:
            self.img_size = d["img_size"]
        if self.lr is None:
            self.lr = d["lr"][self.format]
        if self.brightness is None:
            self.brightness = d["brightness"]
        if self.warmup_iters is None:
            self.warmup_iters = d["warmup_iters"]
        if self.epochs is None and self.max_minutes is None:
            self.epochs = d["epochs"][self.format]
        if self.eval_batch_size is None:
            self.eval_batch_size = max(self.batch_size, 8)
        if not 0.0 <= self.colour_jitter <= 1.0:
            raise UsageError(f"--colour-jitter must be in [0, 1], got {self.colour_jitter}")
        for name in ("batch_size", "img_size", "eval_batch_size"):
            if int(getattr(self, name)) < 1:
                raise UsageError(f"{name.replace('_', '-')} must be >= 1")
        if self.epochs is not None and self.epochs < 1:
            raise UsageError("--epochs must be >= 1")
        if self.val_every is not None and self.val_every < 1:
            raise UsageError("--val-every must be >= 1")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise UsageError("--max-minutes must be > 0")
        if self.lr <= 0:
            raise UsageError("--lr must be > 0")
        if self.img_size % 32:
            raise UsageError("--img-size must be a multiple of 32 (patch 4 × three 2× merges)")
        if self.coord_channels not in (None, 0, 2):
            raise UsageError("--coord-channels must be 0 or 2")
        if self.coord_channels is None and not self.init_weights:  # --weights: their layout
            self.coord_channels = 2 if self.config_name == "tiny" else 0
        if self.init_weights and (self.backbone_weights or self.text_weights):
            raise UsageError("--weights starts from a whole model; --backbone-weights and "
                             "--text-weights start a new one (use one or the other)")
        if self.text_weights and self.config_name != "official":
            raise UsageError("--text-weights needs --config official (the tiny config's MiniLM "
                             "text encoder comes from its package and stays frozen)")
        if self.extend_classes is None:
            self.extend_classes = bool(self.init_weights)
        self.add_classes = [c.strip() for c in self.add_classes if c and c.strip()]
        check_distill_settings(self.distill, self.distill_ids, self.distill_weight)
        return self


@dataclass
class TrainResult:
    """What :func:`train` returns."""

    weights: Path | None
    best_epoch: int | None
    best_metrics: dict[str, Any] | None
    epochs_done: int
    iterations: int
    stopped_by_budget: bool
    out: Path
    summary: dict[str, Any] = field(default_factory=dict)
    #: the classes the saved model records it was trained to find; None: not known
    trained_classes: list[str] | None = None
