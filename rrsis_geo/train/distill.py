"""Distillation from teacher models during training (``rrsis-geo train --distill``).

A teacher is a frozen model whose per-pixel probabilities the student is pulled towards, on the
training samples the teacher is given (all of them, or those whose ``id`` matches one of its
glob patterns). The loss of a step becomes::

    supervised loss + weight · mean over the teacher's samples and pixels of KL(teacher ‖ student)

Two uses:

- *Keep what the starting model knew* while fine-tuning on your own imagery: ``--weights BASE
  --distill BASE``. The labels teach the new area, the teacher term holds the model's answers on
  the rest of the data close to those it gave before (the "learning without forgetting" idea).
- *Merge two models in function space*: a student started from one model, taught by another on
  the samples where that one is better (``--distill A --distill-ids 'p0_*' --distill B``). A
  weight average of two fine-tuned models is another way to merge them; for the shipped model it
  lost real-image behaviour (sample_data/demo_model/MODEL_CARD.md, "Tried, not adopted").

A sample goes to the *first* teacher whose patterns match its id; a teacher without patterns
takes every sample not taken before it. Teachers must read text as the student does (same frozen
text encoder, class list, token budget and text mode), because they are given the student's
text features.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rrsis_geo.errors import UsageError, WeightsError

#: meta keys that decide how a model reads text; a teacher must agree with the student on them
TEXT_META_KEYS = ("text_mode", "max_tokens", "classes")
#: config keys that decide the text features a model is given
TEXT_CONFIG_KEYS = ("text_encoder", "freeze_text_encoder")


@dataclass
class Teacher:
    """A frozen model and the sample ids it teaches (no patterns: every sample)."""

    path: str
    model: nn.Module
    patterns: tuple[str, ...] = ()

    def takes(self, sample_id: str) -> bool:
        return not self.patterns or any(fnmatch.fnmatchcase(sample_id, p) for p in self.patterns)


def parse_patterns(spec: str) -> tuple[str, ...]:
    """``"p0_*,p2_*"`` -> ``("p0_*", "p2_*")``; ``"*"`` or empty: every sample (``()``)."""
    parts = tuple(p.strip() for p in spec.split(",") if p.strip())
    return () if parts in ((), ("*",)) else parts


def check_distill_settings(paths: Sequence[str], ids: Sequence[str], weight: float) -> None:
    """UsageError on a --distill-ids count that does not pair with --distill, or a bad weight."""
    if ids and not paths:
        raise UsageError("--distill-ids needs --distill (the teacher weights)")
    if ids and len(ids) != len(paths):
        raise UsageError(f"--distill-ids must be given once per --distill, in the same order "
                         f"({len(paths)} teacher(s), {len(ids)} --distill-ids)")
    if paths and not (math.isfinite(weight) and weight > 0):
        raise UsageError(f"--distill-weight must be > 0 and finite, got {weight}")


def check_teacher_files(paths: Sequence[str]) -> None:
    """WeightsError naming the first --distill file that does not exist (``X`` may name
    ``X.safetensors``, as for ``--weights``)."""
    for path in paths:
        if not Path(path).exists() and not Path(str(path) + ".safetensors").is_file():
            raise WeightsError(f"--distill file not found: {path}")


def _text_signature(model: nn.Module) -> dict[str, Any]:
    meta = getattr(model, "meta", {}) or {}
    config = getattr(model, "config", None)
    sig = {k: meta.get(k) for k in TEXT_META_KEYS}
    sig.update({k: getattr(config, k, None) for k in TEXT_CONFIG_KEYS})
    return sig


def load_teachers(paths: Sequence[str], ids: Sequence[str], student: nn.Module,
                  text: dict[str, Any], device: torch.device,
                  say: Callable[[str], None]) -> list[Teacher]:
    """Load each teacher (eval mode, no gradients) and check that it reads text as the student.

    ``text`` holds how the training data decouples sentences for the student: ``classes``,
    ``max_tokens``, ``text_mode`` (any may be missing).

    Raises:
        WeightsError: a teacher file that cannot be read, or that reads text differently.
    """
    from rrsis_geo.model import load_fianet

    want = _text_signature(student)
    want.update({k: text[k] for k in TEXT_META_KEYS if text.get(k) is not None})
    teachers = []
    check_teacher_files(paths)
    for i, path in enumerate(paths):
        model = load_fianet(path).to(device).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        got = _text_signature(model)
        differ = [k for k in want if want[k] is not None and got[k] is not None
                  and _norm(k, got[k]) != _norm(k, want[k])]
        if differ:
            raise WeightsError(f"--distill {path} reads text differently from the model being "
                               f"trained ({', '.join(differ)} differ); a teacher must share its "
                               "text encoder, class list and token budget")
        patterns = parse_patterns(ids[i]) if ids else ()
        teachers.append(Teacher(str(path), model, patterns))
        say(f"teacher {path}: "
            + (f"samples whose id matches {', '.join(patterns)}" if patterns
               else "every sample not taken by a teacher before it"))
    return teachers


def _norm(key: str, v: Any) -> Any:
    """A value comparable across cards: class lists resolved ("refsegrs" names a list)."""
    if key == "classes":
        from rrsis_geo.text.classes import resolve_classes

        return list(resolve_classes(v))
    return v


def route(teachers: Sequence[Teacher], sample_ids: Sequence[str]) -> list[int | None]:
    """Index of the teacher of each sample (the first that takes it), None for no teacher."""
    out: list[int | None] = []
    for sid in sample_ids:
        out.append(next((i for i, t in enumerate(teachers) if t.takes(sid)), None))
    return out


def teacher_probabilities(teachers: Sequence[Teacher], routes: Sequence[int | None],
                          run: Callable[[nn.Module, list[int]], torch.Tensor],
                          ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Referent probabilities of the taught samples.

    ``run(model, rows)`` returns a model's logits ``[len(rows), 2, H, W]`` for those rows of
    the batch. Returns ``(rows, probs)``: the batch rows with a teacher (LongTensor) and their
    teachers' softmax probabilities ``[R, 2, H, W]``, or None when no sample has a teacher.
    """
    rows_all: list[int] = []
    parts: list[torch.Tensor] = []
    with torch.no_grad():
        for ti, teacher in enumerate(teachers):
            rows = [r for r, t in enumerate(routes) if t == ti]
            if not rows:
                continue
            parts.append(run(teacher.model, rows).float().softmax(dim=1))
            rows_all.extend(rows)
    if not rows_all:
        return None
    return torch.tensor(rows_all, dtype=torch.long), torch.cat(parts)


def distill_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor) -> torch.Tensor:
    """Mean over samples and pixels of KL(teacher ‖ student) over the two classes.

    Args:
        student_logits: ``[R, 2, H, W]``.
        teacher_probs: ``[R, 2, H, W]`` probabilities (rows sum to 1 over dim 1).

    Returns:
        scalar tensor, 0 when the student's softmax equals the teacher's.
    """
    if student_logits.shape != teacher_probs.shape:
        raise ValueError(f"student {tuple(student_logits.shape)} and teacher "
                         f"{tuple(teacher_probs.shape)} differ in shape")
    log_s = F.log_softmax(student_logits.float(), dim=1)
    log_t = teacher_probs.clamp_min(1e-8).log()
    return (teacher_probs * (log_t - log_s)).sum(dim=1).mean()
