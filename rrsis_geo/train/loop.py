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
import logging
import random
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rrsis_geo.data.referring import collate, open_dataset
from rrsis_geo.errors import WeightsError
from rrsis_geo.train.config import TrainResult, TrainSettings
from rrsis_geo.train.distill import (distill_loss, load_teachers, route,
                                     teacher_probabilities)
from rrsis_geo.train.evaluation import TextFeatureCache, evaluate_model
from rrsis_geo.train.losses import fianet_loss
from rrsis_geo.train.optim import (lr_factor, make_optimizer, param_groups, set_seed,
                                   text_encoder_frozen)
from rrsis_geo.train.outputs import (MetricsLog, atomic_json, atomic_torch_save,
                                     lineage_classes, save_fianet_with_meta)
from rrsis_geo.train.starting import (build_model, load_starting_points,
                                      prepare_starting_points)

#: schedule length before a time budget has been measured (replaced after ten iterations)
UNKNOWN_TOTAL = 10**9
#: mid-epoch resume checkpoints at least this often
CHECKPOINT_EVERY_S = 300.0


# ----------------------------------------------------------------------------------- helpers


def _progress(iterable: Any, enabled: bool, **kw: Any) -> Any:
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, file=sys.stderr, dynamic_ncols=True, **kw)


def _resolve_device(name: str) -> torch.device:
    from rrsis_geo.inference.device import resolve_device

    return resolve_device(name)


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


def _mirror_note(ds: Any) -> str:
    """", N mirrored for flips" when flips added mirrored sentences to the text list."""
    extra = len(ds.expressions) - ds.num_record_expressions
    return f" (+{extra} mirrored for --flips)" if extra else ""


def _class_note(added: dict[str, str]) -> str:
    sources = {"option": "--add-classes", "metadata": "metadata.jsonl categories",
               "dataset.json": "dataset.json", "nouns": "expression nouns"}
    groups: dict[str, list[str]] = {}
    for phrase, source in added.items():
        groups.setdefault(sources.get(source, source), []).append(repr(phrase))
    return "; ".join(f"{', '.join(v)} (from {k})" for k, v in groups.items())


# ----------------------------------------------------------------------------------- train


@dataclass
class TrainState:
    """Where a run stands: the schedule position, the best validation so far, time spent.

    Everything here changes while the run goes; :meth:`Trainer.save_last` stores what a resume
    needs in ``last.pt``.
    """

    epoch: int = 0
    iteration: int = 0
    #: first batch of the current epoch (a mid-epoch resume starts there)
    start_batch: int = 0
    #: batch being trained; an interrupt saves it so that a resume repeats it
    batch: int = 0
    #: iterations of the poly schedule: epochs × iterations per epoch, or fitted to the budget
    total_iters: int = UNKNOWN_TOTAL
    #: ``epochs × iterations per epoch`` when the epochs are given, else None
    epoch_cap: int | None = None
    best_value: float = -math.inf
    best_epoch: float | None = None
    best_metrics: dict[str, Any] | None = None
    #: seconds trained by the runs this one resumes
    elapsed_before: float = 0.0
    stopped_by_budget: bool = False
    #: seconds of the latest validation (0 before the first)
    val_seconds: float = 0.0
    #: training samples seen by this invocation
    seen: int = 0
    #: seconds of optimisation steps only (data + forward + backward), for throughput
    train_seconds: float = 0.0
    #: durations of the latest iterations, for the budget fit
    recent: list[float] = field(default_factory=list)
    #: monotonic time of the latest ``last.pt``
    last_save: float = 0.0


@dataclass
class EpochResult:
    """What :meth:`Trainer.train_epoch` did."""

    losses: list[float]
    #: batches of the epoch done (all of them when ``full``)
    done_batches: int
    #: the epoch ran to its end (no budget stop, schedule not over)
    full: bool
    seconds: float


class Trainer:
    """One training run: :meth:`setup` builds it, then :meth:`train_epoch`,
    :meth:`validate_and_select` and :meth:`save_last` drive it (see :func:`train`)."""

    def __init__(self, s: TrainSettings, out: Path, say: Callable[[str], None], progress: bool,
                 t_start: float) -> None:
        self.s = s
        self.out = out
        self.say = say
        self.progress = progress
        self.t_start = t_start
        self.last_path = out / "last.pt"
        self.weights_stem = out / f"fianet_{s.config_name}"
        self.budget_s = s.max_minutes * 60.0 if s.max_minutes else math.inf
        self.fit_budget = s.fit_schedule_to_budget and math.isfinite(self.budget_s)
        self.state = TrainState()
        self.teachers: list[Any] = []
        #: the teacher term of the latest step (logged with its loss)
        self.last_distill = 0.0

    # ------------------------------------------------------------------------------ setup
    @classmethod
    def setup(cls, dataset_root: str | os.PathLike[str], *, format: str, config_name: str,
              out: str | os.PathLike[str], epochs: int | None, batch_size: int,
              lr: float | None, img_size: int | None, seed: int, resume: bool,
              max_minutes: float | None, val_split: str, progress: bool,
              log: Callable[[str], None] | None, **kwargs: Any) -> Trainer:
        """Settings, model, data, optimizer and (with ``resume``) the saved state; writes the
        ``start`` event. Pretrained parts are read and checked before ``out`` is created."""
        t_start = time.monotonic()
        # the library logs; the command line passes its own line printer (cli/train.py)
        say = log or logging.getLogger(__name__).info
        out = Path(out)
        last_path = out / "last.pt"

        ckpt: dict[str, Any] | None = None
        if resume:
            if last_path.is_file():
                ckpt = torch.load(last_path, map_location="cpu", weights_only=False)
                # runs started before --coord-channels existed used the official patch embedding
                s = TrainSettings(**{"coord_channels": 0, **ckpt["settings"]})
                s.max_minutes = max_minutes
                say(f"resuming from {last_path} at epoch {ckpt['epoch']}, iteration "
                    f"{ckpt['iteration']}")
            else:
                say(f"--resume: no {last_path} yet, starting a new run")
        if ckpt is None:
            s = TrainSettings(dataset_root=str(dataset_root), format=format,
                              config_name=config_name, out=str(out), epochs=epochs,
                              batch_size=batch_size, lr=lr, img_size=img_size, seed=seed,
                              max_minutes=max_minutes, val_split=val_split, **kwargs).resolve()
        # pretrained parts are read and checked first
        prepared = prepare_starting_points(s, say) if ckpt is None else {}
        tr = cls(s, out, say, progress, t_start)

        torch.set_num_threads(s.num_threads or os.cpu_count() or 1)
        set_seed(s.seed)
        tr.device = _resolve_device(s.device)
        tr._setup_model(prepared, ckpt)
        del prepared
        tr._setup_data()
        if s.distill:
            text = {"classes": tr.train_ds.classes, "max_tokens": tr.train_ds.max_tokens,
                    "text_mode": "aligned" if tr.text_kw.get("aligned") else "upstream"}
            tr.teachers = load_teachers(s.distill, s.distill_ids, tr.model, text, tr.device, say)
        tr.groups = param_groups(tr.model, s.lr, s.weight_decay)
        tr.optimizer = make_optimizer(tr.groups, s.lr, s.weight_decay)
        drop_last = len(tr.train_ds) >= s.batch_size
        tr.iters_per_epoch = (len(tr.train_ds) // s.batch_size if drop_last
                              else math.ceil(len(tr.train_ds) / s.batch_size))
        st = tr.state
        st.epoch_cap = s.epochs * tr.iters_per_epoch if s.epochs else None
        st.total_iters = st.epoch_cap or UNKNOWN_TOTAL
        if ckpt is not None:
            tr._restore(ckpt, epochs)
        # the first write: weights, data and teachers that cannot be used leave no folder behind
        out.mkdir(parents=True, exist_ok=True)
        tr.metrics_log = MetricsLog(out / "metrics.jsonl")
        tr.metrics_log.write(
            event="start", settings=asdict(s), iters_per_epoch=tr.iters_per_epoch,
            resumed=ckpt is not None, epoch=st.epoch, iteration=st.iteration,
            total_iters=st.total_iters, frozen_text_encoder=tr.frozen_text,
            groups={g["name"]: sum(p.numel() for p in g["params"]) for g in tr.groups})
        return tr

    def _setup_model(self, prepared: dict[str, Any], ckpt: dict[str, Any] | None) -> None:
        s, say = self.s, self.say
        model = build_model(s)
        load_starting_points(model, s, prepared, say)
        if ckpt is not None:
            missing = model.load_state_dict(ckpt["model"], strict=False)
            bad = [k for k in missing.missing_keys if not k.startswith("text_encoder.")]
            if bad or missing.unexpected_keys:
                raise WeightsError(f"{self.last_path} does not match the model ({len(bad)} "
                                   f"missing, {len(missing.unexpected_keys)} unexpected keys)")
        model.to(self.device)
        self.model = model
        self.frozen_text = text_encoder_frozen(model)
        if s.config_name == "official" and not s.init_weights and ckpt is None:
            random_parts = [p for p, given in (("Swin-B backbone", s.backbone_weights),
                                               ("BERT text encoder", s.text_weights)) if not given]
            if random_parts:
                say(f"warning: official layout with a random {' and '.join(random_parts)}; the "
                    "paper starts from ImageNet-22K Swin-B and bert-base-uncased (pass "
                    "--backbone-weights / --text-weights, or a whole checkpoint with --weights)")
        if s.config_name == "official" and self.device.type == "cpu":
            say("warning: the official layout on a CPU takes many seconds per image; use a GPU")

    def _setup_data(self) -> None:
        s, say, progress = self.s, self.say, self.progress
        self.text_kw = text_kw = _text_settings(s, self.model)
        train_ds = open_dataset(s.dataset_root, s.format, s.train_split, img_size=s.img_size,
                                brightness=s.brightness, flips=s.flips,
                                colour=s.colour_jitter, seed=s.seed,
                                extend_classes=bool(s.extend_classes),
                                add_classes=s.add_classes, **text_kw)
        if train_ds.added_classes:
            say(f"class list extended with {len(train_ds.added_classes)} phrase(s): "
                f"{_class_note(train_ds.added_classes)}; the saved model records them")
        # val decouples with the training class list and token budget, whatever its own
        # categories
        val_ds = open_dataset(s.dataset_root, s.format, s.val_split, img_size=s.img_size,
                              **{**text_kw, "classes": train_ds.classes,
                                 "max_tokens": train_ds.max_tokens})
        say(f"{len(train_ds)} {s.train_split} / {len(val_ds)} {s.val_split} samples, "
            f"{train_ds.num_record_expressions} distinct training expressions"
            f"{_mirror_note(train_ds)}, {s.img_size}² input, "
            f"device {self.device}, {torch.get_num_threads()} threads")
        train_ds.preload(progress)
        val_ds.preload(progress)
        self.train_ds, self.val_ds = train_ds, val_ds
        # once, from the starting model's card as loaded (saving updates model.meta)
        self.trained_classes = lineage_classes(train_ds.trained_classes(),
                                               self.model.meta if s.init_weights else None)
        self.train_cache = (TextFeatureCache(self.model, train_ds.text, self.device)
                            if self.frozen_text else None)
        # eval mode: always valid
        self.val_cache = TextFeatureCache(self.model, val_ds.text, self.device)

    def _restore(self, ckpt: dict[str, Any], epochs: int | None) -> None:
        """Optimizer, schedule position, best so far and RNG states from ``last.pt``."""
        st, s = self.state, self.s
        self.optimizer.load_state_dict(ckpt["optimizer"])
        st.epoch, st.iteration = ckpt["epoch"], ckpt["iteration"]
        st.start_batch = ckpt.get("batch_in_epoch", 0)
        st.total_iters = ckpt.get("total_iters", st.total_iters)
        if epochs is not None:  # resuming with --epochs re-plans the schedule's length
            s.epochs = max(int(epochs), st.epoch)
            st.epoch_cap = st.total_iters = max(s.epochs * self.iters_per_epoch, st.iteration)
        st.best_value = ckpt.get("best_value", st.best_value)
        st.best_epoch, st.best_metrics = ckpt.get("best_epoch"), ckpt.get("best_metrics")
        st.elapsed_before = ckpt.get("elapsed_s", 0.0)
        torch.set_rng_state(ckpt["rng"]["torch"])
        random.setstate(ckpt["rng"]["python"])
        self.train_ds.set_augment_rng_state(ckpt["rng"]["augment"])

    # ------------------------------------------------------------------------------ time
    def elapsed_s(self) -> float:
        """Seconds trained, this run and the runs it resumes."""
        return self.state.elapsed_before + time.monotonic() - self.t_start

    def budget_left_s(self) -> float:
        return self.budget_s - (time.monotonic() - self.t_start)

    def planned_epochs(self) -> int:
        return math.ceil(self.state.total_iters / self.iters_per_epoch)

    def val_estimate_s(self) -> float:
        """Seconds one validation takes (estimated from training speed before the first)."""
        st = self.state
        if st.val_seconds:
            return st.val_seconds
        per_sample = st.train_seconds / st.seen if st.seen else 0.0
        # a forward pass costs about a third of forward + backward; keep a margin
        return len(self.val_ds) * per_sample * 0.5

    def reserve_s(self) -> float:
        """Time kept in hand for the closing validation."""
        return max(self.val_estimate_s() * 1.2, 5.0)

    def fit_schedule(self) -> None:
        """Set ``total_iters`` so the poly decay ends when the budget does (after validations)."""
        st, ipe = self.state, self.iters_per_epoch
        per_iter = sum(st.recent) / len(st.recent)
        left = self.budget_left_s() - self.reserve_s()
        n = int(left // per_iter)
        # validations at the epoch ends that fall inside the remaining iterations
        ends = (st.iteration + n) // ipe - st.iteration // ipe
        if self.s.val_every:
            ends += (st.iteration + n) // self.s.val_every - st.iteration // self.s.val_every
        n = max(0, int((left - ends * self.val_estimate_s()) // per_iter))
        fitted = st.iteration + n
        new_total = min(fitted, st.epoch_cap) if st.epoch_cap else fitted
        if new_total != st.total_iters:
            if (st.total_iters == UNKNOWN_TOTAL
                    or abs(new_total - st.total_iters) > 0.02 * st.total_iters):
                self.metrics_log.write(event="budget", iteration=st.iteration,
                                       total_iters=new_total, seconds_per_iter=round(per_iter, 4))
            if st.total_iters == UNKNOWN_TOTAL:
                self.say(f"budget: schedule fitted to {new_total} iterations "
                         f"(~{new_total / ipe:.1f} epochs at {per_iter:.2f} s/iteration)")
            st.total_iters = new_total

    # ------------------------------------------------------------------------------ steps
    def set_lr(self) -> None:
        f = lr_factor(self.state.iteration, self.state.total_iters, self.s.warmup_iters or 0)
        for g in self.optimizer.param_groups:
            g["lr"] = g["initial_lr"] * f

    def train_step(self, idx: list[int]) -> float:
        """One optimisation step on the samples ``idx``; returns the loss."""
        batch = collate([self.train_ds[i] for i in idx])
        image = batch["image"].to(self.device, non_blocking=True)
        target = batch["mask"].to(self.device, non_blocking=True)
        self.set_lr()
        if self.train_cache is not None:
            logits = self.model.segment_image(image, self.train_cache.get(batch["text_index"]))
        else:
            logits = self.model(image, *(batch[k].to(self.device) for k in
                                         ("input_ids", "attention_mask", "object_mask",
                                          "position_mask")))
        loss = fianet_loss(logits, target)
        if self.teachers:
            loss = loss + self.s.distill_weight * self._distill_term(batch, image, logits)
        if not torch.isfinite(loss):
            raise RuntimeError(f"loss became {loss.item()} at iteration "
                               f"{self.state.iteration}; lower --lr")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.item()

    def _distill_term(self, batch: dict[str, Any], image: torch.Tensor,
                      logits: torch.Tensor) -> torch.Tensor:
        """KL(teacher ‖ student) on the batch rows that have a teacher (0 when none has)."""
        routes = route(self.teachers, batch["id"])

        def run(model: nn.Module, rows: list[int]) -> torch.Tensor:
            if self.train_cache is not None:
                text = self.train_cache.get(batch["text_index"][rows])
                return model.segment_image(image[rows], text)
            return model(image[rows], *(batch[k][rows].to(self.device) for k in
                                        ("input_ids", "attention_mask", "object_mask",
                                         "position_mask")))

        taught = teacher_probabilities(self.teachers, routes, run)
        if taught is None:
            self.last_distill = 0.0
            return logits.new_zeros(())
        rows, probs = taught
        term = distill_loss(logits[rows.to(logits.device)], probs)
        self.last_distill = term.item()
        return term

    def train_epoch(self) -> EpochResult:
        """Train from ``state.start_batch`` to the end of the epoch, the end of the schedule or
        the budget, with the mid-epoch validations of ``--val-every``."""
        s, st, ipe = self.s, self.state, self.iters_per_epoch
        t_epoch = time.monotonic()
        g = torch.Generator().manual_seed(s.seed * 1000 + st.epoch)  # reproducible on resume
        order = torch.randperm(len(self.train_ds), generator=g).tolist()
        batches = range(st.start_batch, ipe)
        bar = _progress(batches, self.progress, unit="it", desc=f"epoch {st.epoch + 1}/"
                        f"{self.planned_epochs() if st.total_iters != UNKNOWN_TOTAL else '?'}")
        losses: list[float] = []
        st.batch = st.start_batch
        schedule_done = False
        for b in bar:
            st.batch = b
            if st.iteration >= st.total_iters:
                schedule_done = True
                break
            if self.budget_left_s() < self.reserve_s():
                st.stopped_by_budget = True
                break
            t_it = time.monotonic()
            idx = order[b * s.batch_size:(b + 1) * s.batch_size]
            loss = self.train_step(idx)
            st.iteration += 1
            st.seen += len(idx)
            dt = time.monotonic() - t_it
            st.train_seconds += dt
            st.recent.append(dt)
            del st.recent[:-100]
            losses.append(loss)
            extra = {"distill": round(self.last_distill, 6)} if self.teachers else {}
            self.metrics_log.write(event="iter", epoch=st.epoch, iteration=st.iteration,
                                   loss=round(losses[-1], 6),
                                   lr=self.optimizer.param_groups[0]["lr"], **extra)
            if self.progress and hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}")
            if self.fit_budget and len(st.recent) >= 10 and len(st.recent) % 10 == 0:
                self.fit_schedule()
            if (s.val_every and st.iteration % s.val_every == 0 and b + 1 < ipe
                    and st.iteration < st.total_iters):
                self._validate_inside_epoch(st.epoch + (b + 1) / ipe)
            if time.monotonic() - st.last_save > CHECKPOINT_EVERY_S:
                self.save_last(b + 1)  # mid-epoch: a crash loses at most a few minutes
                st.last_save = time.monotonic()
        if self.progress and hasattr(bar, "close"):
            bar.close()
        full = not (st.stopped_by_budget or schedule_done)
        return EpochResult(losses=losses, done_batches=ipe if full else st.batch, full=full,
                           seconds=time.monotonic() - t_epoch)

    def _validate_inside_epoch(self, epoch_label: float) -> None:
        """Extra validation inside long epochs (large datasets, slow machines)."""
        st = self.state
        v = self.validate_and_select(epoch_label)
        st.val_seconds = v["seconds"]
        rep = v["report"]
        self.metrics_log.write(
            event="val", epoch=epoch_label, iteration=st.iteration,
            val={k: rep[k] for k in rep if k not in ("subsets", "baselines")},
            improved=v["improved"], best_epoch=st.best_epoch, best_value=st.best_value,
            val_seconds=round(st.val_seconds, 2))
        self.model.train()

    def validate_and_select(self, epoch_label: float) -> dict[str, Any]:
        """Evaluate on val; keep (and save) the weights when the selection metric improves."""
        s, st = self.s, self.state
        t0 = time.monotonic()
        report, _ = evaluate_model(self.model, self.val_ds, batch_size=s.eval_batch_size,
                                   device=self.device, text_cache=self.val_cache,
                                   progress=self.progress, desc="validate")
        value = report[s.select_metric]
        improved = value > st.best_value
        if improved:
            st.best_value, st.best_epoch = value, round(epoch_label, 3)
            st.best_metrics = {k: v for k, v in report.items()}
            self.save_best()
        return {"report": report, "improved": improved, "seconds": time.monotonic() - t0}

    def end_epoch(self, ep: EpochResult) -> None:
        """Validate after (part of) an epoch and log it."""
        s, st = self.s, self.state
        v = self.validate_and_select(st.epoch + ep.done_batches / self.iters_per_epoch)
        st.val_seconds = v["seconds"]
        rep = v["report"]
        losses = ep.losses
        self.metrics_log.write(
            event="epoch", epoch=st.epoch + 1, partial=not ep.full, iteration=st.iteration,
            train_loss=sum(losses) / len(losses),
            val={k: rep[k] for k in rep if k not in ("subsets", "baselines")},
            val_subsets=rep.get("subsets", {}), val_baselines=rep.get("baselines", {}),
            improved=v["improved"], best_epoch=st.best_epoch, best_value=st.best_value,
            train_seconds=round(ep.seconds, 2), val_seconds=round(st.val_seconds, 2),
            samples_per_s=round(len(losses) * s.batch_size / max(ep.seconds, 1e-9), 2),
            lr=self.optimizer.param_groups[0]["lr"],
            elapsed_s=round(self.elapsed_s(), 1),
        )
        self.say(f"epoch {st.epoch + 1}{'' if ep.full else ' (partial)'}: loss "
                 f"{sum(losses) / len(losses):.4f}, val {s.select_metric} "
                 f"{rep[s.select_metric]:.4f}{' (best)' if v['improved'] else ''}, "
                 f"{ep.seconds:.0f}s train + {st.val_seconds:.0f}s val")

    # ------------------------------------------------------------------------------ save
    def save_best(self) -> None:
        """The weights with the metadata inference needs (called when val improves)."""
        st = self.state
        save_fianet_with_meta(self.model, self.weights_stem, self.s, self.train_ds, self.val_ds,
                              self.text_kw, {
                                  "best_epoch": st.best_epoch,
                                  "select_metric": self.s.select_metric,
                                  "val_metrics": st.best_metrics, "iterations": st.iteration,
                                  "train_seconds": round(self.elapsed_s(), 1),
                              }, self.trained_classes)

    def save_last(self, batch_in_epoch: int) -> None:
        """``last.pt``: what ``--resume`` needs to continue at ``batch_in_epoch``."""
        st = self.state
        atomic_torch_save(self.last_path, {
            "model": {k: v for k, v in self.model.state_dict().items()
                      if not (self.frozen_text and k.startswith("text_encoder."))},
            "optimizer": self.optimizer.state_dict(), "epoch": st.epoch,
            "iteration": st.iteration, "batch_in_epoch": batch_in_epoch,
            "total_iters": st.total_iters, "best_value": st.best_value,
            "best_epoch": st.best_epoch, "best_metrics": st.best_metrics,
            "settings": asdict(self.s), "elapsed_s": self.elapsed_s(),
            "rng": {"torch": torch.get_rng_state(), "python": random.getstate(),
                    "augment": self.train_ds.augment_rng_state()},
        })

    def summary(self) -> dict[str, Any]:
        s, st = self.s, self.state
        return {
            "settings": asdict(s), "epochs_done": st.epoch, "iterations": st.iteration,
            "total_iters": st.total_iters, "best_epoch": st.best_epoch,
            "select_metric": s.select_metric, "best_val": st.best_metrics,
            "stopped_by_budget": st.stopped_by_budget,
            "seconds_this_run": round(time.monotonic() - self.t_start, 1),
            "seconds_total": round(self.elapsed_s(), 1),
            "samples_per_s": round(st.seen / max(st.train_seconds, 1e-9), 2),
            "img_size": s.img_size, "batch_size": s.batch_size,
            "weights": str(self.weights_stem.with_suffix(".safetensors"))
            if st.best_epoch is not None else None,
        }


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
        log: callable for one-line status messages (default: this module's logger, INFO).
        **kwargs: further :class:`TrainSettings` fields (``weight_decay``, ``select_metric``,
            ``brightness``, ``flips``, ``colour_jitter``, ``warmup_iters``, ``eval_batch_size``,
            ``init_weights``, ``device``, ``num_threads``, ``aligned``, ``train_split``, ``fit_schedule_to_budget``,
            ``val_every`` (also validate every N iterations inside epochs)).

    Returns:
        :class:`TrainResult`.
    """
    tr = Trainer.setup(dataset_root, format=format, config_name=config_name, out=out,
                       epochs=epochs, batch_size=batch_size, lr=lr, img_size=img_size, seed=seed,
                       resume=resume, max_minutes=max_minutes, val_split=val_split,
                       progress=progress, log=log, **kwargs)
    st = tr.state
    tr.model.train()
    st.last_save = time.monotonic()
    try:
        while st.iteration < st.total_iters:
            ep = tr.train_epoch()
            if not ep.losses:
                tr.save_last(ep.done_batches)  # nothing new since the last validation
                break
            tr.end_epoch(ep)
            if not ep.full:
                tr.save_last(ep.done_batches)
                break
            st.epoch += 1
            st.start_batch = 0
            st.batch = 0
            tr.save_last(0)
            st.last_save = time.monotonic()
            if tr.budget_left_s() < tr.reserve_s() and st.iteration < st.total_iters:
                st.stopped_by_budget = True
                break
    except KeyboardInterrupt:
        tr.save_last(st.batch)  # resumable from the interrupted batch
        tr.say(f"interrupted; resume with --resume (state saved to {tr.last_path})")
        raise
    finally:
        summary = tr.summary()
        tr.metrics_log.write(event="end", **{k: v for k, v in summary.items() if k != "settings"})
        tr.metrics_log.close()
        atomic_json(tr.out / "summary.json", summary)
    weights = tr.weights_stem.with_name(tr.weights_stem.name + ".safetensors")
    return TrainResult(weights=weights if weights.exists() else None, best_epoch=st.best_epoch,
                       best_metrics=st.best_metrics, epochs_done=st.epoch,
                       iterations=st.iteration, stopped_by_budget=st.stopped_by_budget,
                       out=tr.out, summary=summary, trained_classes=tr.trained_classes)
