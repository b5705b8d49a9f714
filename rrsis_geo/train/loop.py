"""FIANet training loop (docs/fianet.md §Training recipe; model selection on **val**).

Recipe: AdamW with four parameter groups (backbone without weight decay for norms / position
tables, backbone with decay — FIAM and TMEM included —, classifier, text-encoder layers 0–9 unless
the text encoder is frozen), weight decay 1e-2, per-iteration poly decay
``lr · (1 − it/total)^0.9``, loss 0.9·CE([0.9, 1.1]) + 0.1·Dice(sum), batch 8, drop_last.
Unlike upstream (which selects on **test** oIoU, docs/fianet.md §Differences from upstream) we
select on the **val** split, by mIoU by default.

CPU speed: with a frozen text encoder the text features of every distinct expression are computed
once (they are deterministic) and only the image branch runs per iteration; small datasets are
held in memory as uint8; batches are built in-process.

Starting points: random weights, a whole model (``init_weights``), or pretrained parts for a new
model (``backbone_weights``: an ImageNet Swin state dict or ``timm:NAME``; ``text_weights``: a
local BERT folder), read and checked before ``out`` is created. Fine-tuning extends the model's
class list with the classes the training split names (``extend_classes``, ``add_classes``).

Outputs in ``out``:
    ``fianet_<config>.safetensors`` + ``.json``  best weights on val (:func:`save_fianet`)
    ``last.pt``         resume checkpoint (model, optimizer, epoch, iteration, best, RNG)
    ``metrics.jsonl``   one JSON object per line; events ``start``, ``iter`` (loss, lr),
                        ``budget`` (schedule refits), ``val`` (``--val-every``), ``epoch``, ``end``
    ``summary.json``    final summary (also stored in the weights' ``meta["training"]``)
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rrsis_geo.data.referring import FORMATS, ReferringDataset, collate, open_dataset
from rrsis_geo.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from rrsis_geo.errors import UsageError, WeightsError
from rrsis_geo.train.evaluation import TextFeatureCache, evaluate_model
from rrsis_geo.train.losses import fianet_loss

CONFIG_NAMES = ("tiny", "official")
SELECT_METRICS = ("mIoU", "oIoU")
NO_DECAY_KEYS = ("norm", "absolute_pos_embed", "relative_position_bias_table")
#: schedule length before a time budget has been measured (replaced after ten iterations)
UNKNOWN_TOTAL = 10**9
#: mid-epoch resume checkpoints at least this often
CHECKPOINT_EVERY_S = 300.0
#: text-encoder layers the recipe fine-tunes (BERT embeddings and layers 10–11 are not trained)
TRAINED_TEXT_LAYERS = range(10)

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


# ----------------------------------------------------------------------------------- helpers


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


def _atomic_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _atomic_torch_save(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


class _MetricsLog:
    """Appends JSON lines to ``metrics.jsonl`` (flushed per line so a crash loses nothing)."""

    def __init__(self, path: Path) -> None:
        self.fh = open(path, "a", encoding="utf-8")

    def write(self, **event: Any) -> None:
        self.fh.write(json.dumps(event, sort_keys=True) + "\n")
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()


def _progress(iterable: Any, enabled: bool, **kw: Any) -> Any:
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, file=sys.stderr, dynamic_ncols=True, **kw)


def _resolve_device(name: str) -> torch.device:
    from rrsis_geo.inference.device import resolve_device

    return resolve_device(name)


def _new_config(s: TrainSettings):
    from rrsis_geo.model import FIANetConfig

    if s.config_name == "official":
        config = FIANetConfig.official(num_tmem=1 if s.format == "refsegrs" else 3)
    else:
        config = FIANetConfig.tiny()
    if s.coord_channels is not None:
        config = replace(config, coord_channels=s.coord_channels)
    return config


def _build_model(s: TrainSettings) -> nn.Module:
    from rrsis_geo.model import FIANet, load_fianet

    if s.init_weights:
        if not Path(s.init_weights).exists():
            raise WeightsError(f"--weights file not found: {s.init_weights}")
        model = load_fianet(s.init_weights)
        # a fresh run: the init model's training history does not describe this run
        model.meta.pop("training", None)
        return model
    return FIANet(_new_config(s))


TIMM_PREFIX = "timm:"


def _fetch_timm_state(name: str) -> dict[str, torch.Tensor]:
    """Pretrained weights of a timm model by name (timm downloads them; needs a connection
    unless they are in the Hugging Face cache)."""
    try:
        import timm
    except ImportError:
        raise WeightsError(f"--backbone-weights {TIMM_PREFIX}{name} needs the timm package "
                           "(pip install timm), or pass a weights file") from None
    from huggingface_hub import constants as hub_constants
    from huggingface_hub.utils import logging as hub_logging

    verbosity, offline = hub_logging.get_verbosity(), hub_constants.HF_HUB_OFFLINE
    hub_logging.set_verbosity_error()  # offline, the hub logs a line per retry
    if not _hub_resolves(hub_constants.ENDPOINT):
        hub_constants.HF_HUB_OFFLINE = True  # the local cache only, instead of a minute of retries
    try:
        model = timm.create_model(name, pretrained=True, num_classes=0)
    except Exception as exc:  # noqa: BLE001 - unknown name, offline hub, bad download
        text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise WeightsError(f"cannot fetch {TIMM_PREFIX}{name} with timm ({text[:200]}); offline? "
                           "download the weights and pass the file") from None
    finally:
        hub_logging.set_verbosity(verbosity)
        hub_constants.HF_HUB_OFFLINE = offline
    return model.state_dict()


def _hub_resolves(endpoint: str) -> bool:
    """Whether the model hub's host name resolves (False on a machine without a network)."""
    import socket
    from urllib.parse import urlparse

    host = urlparse(endpoint).hostname
    if not host:
        return False
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return False
    return True


def _prepare_starting_points(s: TrainSettings, say: Callable[[str], None]) -> dict[str, Any]:
    """Read and check --backbone-weights / --text-weights before anything is built or written.

    The target shapes come from the model built on the ``meta`` device (no memory, no init).
    """
    if not (s.backbone_weights or s.text_weights):
        return {}
    from rrsis_geo.model import FIANet
    from rrsis_geo.model.pretrained import (check_bert_folder, map_swin_state_dict,
                                            read_state_dict, swin_target_shapes)

    with torch.device("meta"):
        skeleton = FIANet(_new_config(s), load_text_weights=False)
    prepared: dict[str, Any] = {}
    if s.text_weights:
        c = skeleton.text_encoder.config
        check_bert_folder(s.text_weights, {
            "hidden_size": c.hidden_size, "num_hidden_layers": c.num_hidden_layers,
            "num_attention_heads": c.num_attention_heads,
            "intermediate_size": c.intermediate_size, "vocab_size": c.vocab_size})
    if s.backbone_weights:
        spec = s.backbone_weights
        if spec.startswith(TIMM_PREFIX):
            say(f"fetching {spec} with timm (a download the first time; set HF_HUB_OFFLINE=1 "
                "to use only the local cache)")
            state = _fetch_timm_state(spec[len(TIMM_PREFIX):])
        else:
            state = read_state_dict(spec)
        prepared["backbone"] = map_swin_state_dict(state, swin_target_shapes(skeleton),
                                                   source=f"--backbone-weights {spec}")
    return prepared


def _load_starting_points(model: nn.Module, s: TrainSettings, prepared: dict[str, Any],
                          say: Callable[[str], None]) -> None:
    from rrsis_geo.model.pretrained import load_bert_folder, load_swin_weights

    if "backbone" in prepared:
        load_swin_weights(model, prepared["backbone"])
        say(f"backbone weights {s.backbone_weights}: {prepared['backbone'].summary()}")
    if s.text_weights:
        n = load_bert_folder(model, s.text_weights)
        say(f"text weights {s.text_weights}: {n} tensors loaded into the BERT text encoder")


def _text_settings(s: TrainSettings, model: nn.Module) -> dict[str, Any]:
    """classes / max_tokens / aligned: from init weights' meta when fine-tuning, else dataset."""
    meta = getattr(model, "meta", {}) or {}
    aligned = s.aligned
    if aligned is None:
        aligned = meta.get("text_mode") == "aligned"
    out: dict[str, Any] = {"aligned": bool(aligned)}
    if s.init_weights:
        if meta.get("classes"):
            out["classes"] = meta["classes"]
        if meta.get("max_tokens"):
            out["max_tokens"] = int(meta["max_tokens"])
    return out


def _class_note(added: dict[str, str]) -> str:
    sources = {"option": "--add-classes", "metadata": "metadata.jsonl categories",
               "dataset.json": "dataset.json", "nouns": "expression nouns"}
    groups: dict[str, list[str]] = {}
    for phrase, source in added.items():
        groups.setdefault(sources.get(source, source), []).append(repr(phrase))
    return "; ".join(f"{', '.join(v)} (from {k})" for k, v in groups.items())


# ----------------------------------------------------------------------------------- train


def train(
    dataset_root: str | os.PathLike[str],
    format: str = "refsegrs",
    config_name: str = "tiny",
    out: str | os.PathLike[str] = "runs/fianet",
    epochs: int | None = None,
    batch_size: int = 8,
    lr: float | None = None,
    img_size: int | None = None,
    seed: int = 2401,
    resume: bool = False,
    max_minutes: float | None = None,
    val_split: str = "val",
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    **kwargs: Any,
) -> TrainResult:
    """Train FIANet on a RefSegRS- or RRSIS-D-layout dataset; keep the best weights on val.

    Args:
        dataset_root: dataset folder.
        format: ``refsegrs`` or ``rrsisd``.
        config_name: ``tiny`` (CPU demo: small Swin, frozen MiniLM-L6, 192²) or ``official``
            (Swin-B + BERT-base, 480²; needs a GPU and pretrained weights via ``init_weights``).
        out: output folder (created).
        epochs: epochs of the poly schedule (default: 30 tiny, 60/40 official); with
            ``max_minutes`` and no ``epochs`` the schedule is fitted to the budget.
        batch_size: training batch (recipe: 8).
        lr: base learning rate (default: tiny 3e-4; official 5e-5 RefSegRS / 3e-5 RRSIS-D).
        img_size: input side (default 192 tiny, 480 official); multiple of 32.
        seed: RNG seed (recipe: 2401).
        resume: continue from ``out/last.pt`` (settings are taken from the checkpoint, except
            ``max_minutes``, a budget for this invocation, and ``epochs`` when given, which
            re-plans the schedule's length).
        max_minutes: wall-clock budget of this invocation; training stops cleanly before it (the
            last partial epoch is validated too) and the best weights are kept. After each epoch
            the remaining schedule is shortened when it would not fit, so the learning rate still
            decays to zero inside the budget (``fit_schedule_to_budget``).
        val_split: split used for model selection.
        progress: tqdm bars on stderr.
        log: callable for one-line status messages (default: print to stderr).
        **kwargs: further :class:`TrainSettings` fields (``weight_decay``, ``select_metric``,
            ``brightness``, ``warmup_iters``, ``eval_batch_size``, ``init_weights``, ``device``,
            ``num_threads``, ``aligned``, ``train_split``, ``fit_schedule_to_budget``,
            ``val_every`` (also validate every N iterations inside epochs)).

    Returns:
        :class:`TrainResult`.
    """
    t_start = time.monotonic()
    say = log or (lambda msg: print(f"rrsis-geo train: {msg}", file=sys.stderr, flush=True))
    out = Path(out)
    last_path = out / "last.pt"

    ckpt: dict[str, Any] | None = None
    if resume:
        if last_path.is_file():
            ckpt = torch.load(last_path, map_location="cpu", weights_only=False)
            # runs started before --coord-channels existed used the official patch embedding
            s = TrainSettings(**{"coord_channels": 0, **ckpt["settings"]})
            s.max_minutes = max_minutes
            say(f"resuming from {last_path} at epoch {ckpt['epoch']}, iteration {ckpt['iteration']}")
        else:
            say(f"--resume: no {last_path} yet, starting a new run")
    if ckpt is None:
        s = TrainSettings(dataset_root=str(dataset_root), format=format, config_name=config_name,
                          out=str(out), epochs=epochs, batch_size=batch_size, lr=lr,
                          img_size=img_size, seed=seed, max_minutes=max_minutes,
                          val_split=val_split, **kwargs).resolve()
    # pretrained parts are read and checked before anything is written
    prepared = _prepare_starting_points(s, say) if ckpt is None else {}
    out.mkdir(parents=True, exist_ok=True)
    budget_s = s.max_minutes * 60.0 if s.max_minutes else math.inf

    torch.set_num_threads(s.num_threads or os.cpu_count() or 1)
    set_seed(s.seed)
    device = _resolve_device(s.device)

    # ---------------------------------------------------------------- model
    model = _build_model(s)
    _load_starting_points(model, s, prepared, say)
    del prepared
    if ckpt is not None:
        missing = model.load_state_dict(ckpt["model"], strict=False)
        bad = [k for k in missing.missing_keys if not k.startswith("text_encoder.")]
        if bad or missing.unexpected_keys:
            raise WeightsError(f"{last_path} does not match the model ({len(bad)} missing, "
                               f"{len(missing.unexpected_keys)} unexpected keys)")
    model.to(device)
    frozen_text = text_encoder_frozen(model)
    if s.config_name == "official" and not s.init_weights and ckpt is None:
        random_parts = [p for p, given in (("Swin-B backbone", s.backbone_weights),
                                           ("BERT text encoder", s.text_weights)) if not given]
        if random_parts:
            say(f"warning: official layout with a random {' and '.join(random_parts)}; the "
                "paper starts from ImageNet-22K Swin-B and bert-base-uncased (pass "
                "--backbone-weights / --text-weights, or a whole checkpoint with --weights)")
    if s.config_name == "official" and device.type == "cpu":
        say("warning: the official layout on a CPU takes many seconds per image; use a GPU")

    # ---------------------------------------------------------------- data
    text_kw = _text_settings(s, model)
    train_ds = open_dataset(s.dataset_root, s.format, s.train_split, img_size=s.img_size,
                            brightness=s.brightness, seed=s.seed,
                            extend_classes=bool(s.extend_classes), add_classes=s.add_classes,
                            **text_kw)
    if train_ds.added_classes:
        say(f"class list extended with {len(train_ds.added_classes)} phrase(s): "
            f"{_class_note(train_ds.added_classes)}; the saved model records them")
    # val decouples with the training class list and token budget, whatever its own categories
    val_ds = open_dataset(s.dataset_root, s.format, s.val_split, img_size=s.img_size,
                          **{**text_kw, "classes": train_ds.classes,
                             "max_tokens": train_ds.max_tokens})
    say(f"{len(train_ds)} {s.train_split} / {len(val_ds)} {s.val_split} samples, "
        f"{len(train_ds.expressions)} distinct training expressions, {s.img_size}² input, "
        f"device {device}, {torch.get_num_threads()} threads")
    train_ds.preload(progress)
    val_ds.preload(progress)
    train_cache = TextFeatureCache(model, train_ds.text, device) if frozen_text else None
    val_cache = TextFeatureCache(model, val_ds.text, device)  # eval mode: always valid

    # ---------------------------------------------------------------- optimizer / schedule
    groups = param_groups(model, s.lr, s.weight_decay)
    optimizer = make_optimizer(groups, s.lr, s.weight_decay)
    drop_last = len(train_ds) >= s.batch_size
    iters_per_epoch = (len(train_ds) // s.batch_size if drop_last
                       else math.ceil(len(train_ds) / s.batch_size))
    epoch, iteration, start_batch = 0, 0, 0
    # iterations of the poly schedule: epochs × iters/epoch, or fitted to the time budget
    epoch_cap = s.epochs * iters_per_epoch if s.epochs else None
    total_iters = epoch_cap or UNKNOWN_TOTAL
    best_value, best_epoch, best_metrics = -math.inf, None, None
    elapsed_before = 0.0
    if ckpt is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
        epoch, iteration = ckpt["epoch"], ckpt["iteration"]
        start_batch = ckpt.get("batch_in_epoch", 0)
        total_iters = ckpt.get("total_iters", total_iters)
        if epochs is not None:  # resuming with --epochs re-plans the schedule's length
            s.epochs = max(int(epochs), epoch)
            epoch_cap = total_iters = max(s.epochs * iters_per_epoch, iteration)
        best_value = ckpt.get("best_value", best_value)
        best_epoch, best_metrics = ckpt.get("best_epoch"), ckpt.get("best_metrics")
        elapsed_before = ckpt.get("elapsed_s", 0.0)
        torch.set_rng_state(ckpt["rng"]["torch"])
        random.setstate(ckpt["rng"]["python"])
        train_ds._rng.set_state(ckpt["rng"]["augment"])

    weights_stem = out / f"fianet_{s.config_name}"
    metrics_log = _MetricsLog(out / "metrics.jsonl")
    metrics_log.write(event="start", settings=asdict(s), iters_per_epoch=iters_per_epoch,
                      resumed=ckpt is not None, epoch=epoch, iteration=iteration,
                      total_iters=total_iters, frozen_text_encoder=frozen_text,
                      groups={g["name"]: sum(p.numel() for p in g["params"]) for g in groups})

    def set_lr() -> None:
        f = lr_factor(iteration, total_iters, s.warmup_iters or 0)
        for g in optimizer.param_groups:
            g["lr"] = g["initial_lr"] * f

    def run_budget_left() -> float:
        return budget_s - (time.monotonic() - t_start)

    def planned_epochs() -> int:
        return math.ceil(total_iters / iters_per_epoch)

    def save_last(batch_in_epoch: int) -> None:
        _atomic_torch_save(last_path, {
            "model": {k: v for k, v in model.state_dict().items()
                      if not (frozen_text and k.startswith("text_encoder."))},
            "optimizer": optimizer.state_dict(), "epoch": epoch, "iteration": iteration,
            "batch_in_epoch": batch_in_epoch, "total_iters": total_iters,
            "best_value": best_value, "best_epoch": best_epoch, "best_metrics": best_metrics,
            "settings": asdict(s), "elapsed_s": elapsed_before + time.monotonic() - t_start,
            "rng": {"torch": torch.get_rng_state(), "python": random.getstate(),
                    "augment": train_ds._rng.get_state()},
        })

    def validate_and_select(epoch_label: float) -> dict[str, Any]:
        nonlocal best_value, best_epoch, best_metrics
        t0 = time.monotonic()
        report, _ = evaluate_model(model, val_ds, batch_size=s.eval_batch_size, device=device,
                                   text_cache=val_cache, progress=progress, desc="validate")
        value = report[s.select_metric]
        improved = value > best_value
        if improved:
            best_value, best_epoch = value, round(epoch_label, 3)
            best_metrics = {k: v for k, v in report.items()}
            save_fianet_with_meta(model, weights_stem, s, train_ds, val_ds, text_kw, {
                "best_epoch": best_epoch, "select_metric": s.select_metric,
                "val_metrics": best_metrics, "iterations": iteration,
                "train_seconds": round(elapsed_before + time.monotonic() - t_start, 1),
            })
        return {"report": report, "improved": improved, "seconds": time.monotonic() - t0}

    # ---------------------------------------------------------------- loop
    model.train()
    stopped_by_budget = False
    val_seconds = 0.0
    seen = 0
    train_seconds = 0.0  # optimisation steps only (data + forward + backward), for throughput
    recent: list[float] = []  # durations of the latest iterations, for the budget fit
    b = start_batch
    fit_budget = s.fit_schedule_to_budget and math.isfinite(budget_s)

    def val_estimate() -> float:
        """Seconds one validation takes (estimated from training speed before the first)."""
        if val_seconds:
            return val_seconds
        per_sample = train_seconds / seen if seen else 0.0
        # a forward pass costs about a third of forward + backward; keep a margin
        return len(val_ds) * per_sample * 0.5

    def reserve_s() -> float:
        """Time kept in hand for the closing validation."""
        return max(val_estimate() * 1.2, 5.0)

    def fit_schedule() -> None:
        """Set ``total_iters`` so the poly decay ends when the budget does (after validations)."""
        nonlocal total_iters
        per_iter = sum(recent) / len(recent)
        left = run_budget_left() - reserve_s()
        n = int(left // per_iter)
        # validations at the epoch ends that fall inside the remaining iterations
        ends = (iteration + n) // iters_per_epoch - iteration // iters_per_epoch
        if s.val_every:
            ends += (iteration + n) // s.val_every - iteration // s.val_every
        n = max(0, int((left - ends * val_estimate()) // per_iter))
        fitted = iteration + n
        new_total = min(fitted, epoch_cap) if epoch_cap else fitted
        if new_total != total_iters:
            if total_iters == UNKNOWN_TOTAL or abs(new_total - total_iters) > 0.02 * total_iters:
                metrics_log.write(event="budget", iteration=iteration, total_iters=new_total,
                                  seconds_per_iter=round(per_iter, 4))
            if total_iters == UNKNOWN_TOTAL:
                say(f"budget: schedule fitted to {new_total} iterations "
                    f"(~{new_total / iters_per_epoch:.1f} epochs at {per_iter:.2f} s/iteration)")
            total_iters = new_total

    last_save = time.monotonic()
    try:
        while iteration < total_iters:
            t_epoch = time.monotonic()
            g = torch.Generator().manual_seed(s.seed * 1000 + epoch)  # reproducible on resume
            order = torch.randperm(len(train_ds), generator=g).tolist()
            batches = range(start_batch, iters_per_epoch)
            bar = _progress(batches, progress, unit="it", desc=f"epoch {epoch + 1}/"
                            f"{planned_epochs() if total_iters != UNKNOWN_TOTAL else '?'}")
            losses: list[float] = []
            b = start_batch
            schedule_done = False
            for b in bar:
                if iteration >= total_iters:
                    schedule_done = True
                    break
                if run_budget_left() < reserve_s():
                    stopped_by_budget = True
                    break
                t_it = time.monotonic()
                idx = order[b * s.batch_size:(b + 1) * s.batch_size]
                batch = collate([train_ds[i] for i in idx])
                image = batch["image"].to(device, non_blocking=True)
                target = batch["mask"].to(device, non_blocking=True)
                set_lr()
                if train_cache is not None:
                    logits = model.segment_image(image, train_cache.get(batch["text_index"]))
                else:
                    logits = model(image, *(batch[k].to(device) for k in
                                            ("input_ids", "attention_mask", "object_mask",
                                             "position_mask")))
                loss = fianet_loss(logits, target)
                if not torch.isfinite(loss):
                    raise RuntimeError(f"loss became {loss.item()} at iteration {iteration}; "
                                       "lower --lr")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                iteration += 1
                seen += len(idx)
                dt = time.monotonic() - t_it
                train_seconds += dt
                recent.append(dt)
                del recent[:-100]
                losses.append(loss.item())
                metrics_log.write(event="iter", epoch=epoch, iteration=iteration,
                                  loss=round(losses[-1], 6),
                                  lr=optimizer.param_groups[0]["lr"])
                if progress and hasattr(bar, "set_postfix"):
                    bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}")
                if fit_budget and len(recent) >= 10 and len(recent) % 10 == 0:
                    fit_schedule()
                if (s.val_every and iteration % s.val_every == 0 and b + 1 < iters_per_epoch
                        and iteration < total_iters):
                    # extra validation inside long epochs (large datasets, slow machines)
                    v = validate_and_select(epoch + (b + 1) / iters_per_epoch)
                    val_seconds = v["seconds"]
                    rep = v["report"]
                    metrics_log.write(
                        event="val", epoch=epoch + (b + 1) / iters_per_epoch, iteration=iteration,
                        val={k: rep[k] for k in rep if k not in ("subsets", "baselines")},
                        improved=v["improved"], best_epoch=best_epoch, best_value=best_value,
                        val_seconds=round(val_seconds, 2))
                    model.train()
                if time.monotonic() - last_save > CHECKPOINT_EVERY_S:
                    save_last(b + 1)  # mid-epoch: a crash loses at most a few minutes
                    last_save = time.monotonic()
            if progress and hasattr(bar, "close"):
                bar.close()
            full = not (stopped_by_budget or schedule_done)
            done_batches = iters_per_epoch if full else b
            train_s = time.monotonic() - t_epoch
            if not losses:
                save_last(done_batches)  # nothing new since the last validation
                break
            v = validate_and_select(epoch + done_batches / iters_per_epoch)
            val_seconds = v["seconds"]
            rep = v["report"]
            metrics_log.write(
                event="epoch", epoch=epoch + 1, partial=not full, iteration=iteration,
                train_loss=sum(losses) / len(losses),
                val={k: rep[k] for k in rep if k not in ("subsets", "baselines")},
                val_subsets=rep.get("subsets", {}), val_baselines=rep.get("baselines", {}),
                improved=v["improved"], best_epoch=best_epoch, best_value=best_value,
                train_seconds=round(train_s, 2), val_seconds=round(val_seconds, 2),
                samples_per_s=round(len(losses) * s.batch_size / max(train_s, 1e-9), 2),
                lr=optimizer.param_groups[0]["lr"],
                elapsed_s=round(elapsed_before + time.monotonic() - t_start, 1),
            )
            say(f"epoch {epoch + 1}{'' if full else ' (partial)'}: loss "
                f"{sum(losses) / len(losses):.4f}, val {s.select_metric} "
                f"{rep[s.select_metric]:.4f}{' (best)' if v['improved'] else ''}, "
                f"{train_s:.0f}s train + {val_seconds:.0f}s val")
            if not full:
                save_last(done_batches)
                break
            epoch += 1
            start_batch = 0
            b = 0
            save_last(0)
            last_save = time.monotonic()
            if run_budget_left() < reserve_s() and iteration < total_iters:
                stopped_by_budget = True
                break
    except KeyboardInterrupt:
        save_last(b)  # resumable from the interrupted batch
        say(f"interrupted; resume with --resume (state saved to {last_path})")
        raise
    finally:
        summary = {
            "settings": asdict(s), "epochs_done": epoch, "iterations": iteration,
            "total_iters": total_iters, "best_epoch": best_epoch,
            "select_metric": s.select_metric, "best_val": best_metrics,
            "stopped_by_budget": stopped_by_budget,
            "seconds_this_run": round(time.monotonic() - t_start, 1),
            "seconds_total": round(elapsed_before + time.monotonic() - t_start, 1),
            "samples_per_s": round(seen / max(train_seconds, 1e-9), 2),
            "img_size": s.img_size, "batch_size": s.batch_size,
            "weights": str(weights_stem.with_suffix(".safetensors")) if best_epoch is not None
            else None,
        }
        metrics_log.write(event="end", **{k: v for k, v in summary.items() if k != "settings"})
        metrics_log.close()
        _atomic_json(out / "summary.json", summary)
    weights = weights_stem.with_name(weights_stem.name + ".safetensors")
    return TrainResult(weights=weights if weights.exists() else None, best_epoch=best_epoch,
                       best_metrics=best_metrics, epochs_done=epoch, iterations=iteration,
                       stopped_by_budget=stopped_by_budget, out=out, summary=summary)


def save_fianet_with_meta(model: nn.Module, stem: Path, s: TrainSettings,
                          train_ds: ReferringDataset, val_ds: ReferringDataset,
                          text_kw: dict[str, Any], training: dict[str, Any]) -> None:
    """Write the weights with the metadata inference needs (input size, GSD, text settings)."""
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
        "text_mode": "aligned" if text_kw.get("aligned") else "upstream",
        "dataset": s.format,
        "training": {
            "dataset_root": Path(s.dataset_root).name,
            "format": s.format, "config": s.config_name, "train_split": s.train_split,
            "val_split": s.val_split, "train_samples": len(train_ds), "val_samples": len(val_ds),
            "batch_size": s.batch_size, "lr": s.lr, "weight_decay": s.weight_decay,
            "warmup_iters": s.warmup_iters, "brightness": s.brightness, "seed": s.seed,
            "img_size": s.img_size,
            "started_from": {k: v if v.startswith(TIMM_PREFIX) else Path(v).name
                             for k, v in (("weights", s.init_weights),
                                               ("backbone_weights", s.backbone_weights),
                                               ("text_weights", s.text_weights)) if v},
            **training,
        },
    }
    save_fianet(model, stem, meta)
