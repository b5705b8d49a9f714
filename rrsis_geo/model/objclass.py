"""A small CNN that names the object under a candidate's mask: the class check's second opinion.

A referring model asked for "the tennis court" on a scene without one paints the nearest
look-alike (a basketball court), and when it scores its own prompts alike on that look-alike
("the tennis court" and "the basketball court" within a fraction of a logit) the class check
cannot refuse it. :class:`ObjectClassifier` is trained for that one question, which object class
is this, on image windows centred on an object with the object's mask as a fourth input plane,
and answers with one logit per class of its list plus ``"other"`` (ground, shadow, a part of
something). The scene-level class check (:mod:`rrsis_geo.inference.scene`) turns its answer
into a margin that can only lower a candidate's score.

Input: ``image`` ``[B, 3, S, S]`` ImageNet-normalized at the referring model's ground resolution,
``mask`` ``[B, 1, S, S]`` in {0, 1}; ``S`` is :attr:`ObjectClassifier.window` (any multiple of
16 works). Output: logits ``[B, len(classes)]``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from rrsis_geo.errors import WeightsError

#: the class of anything that is none of the listed objects
OTHER = "other"


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
                         nn.GroupNorm(8, cout), nn.GELU())


class ObjectClassifier(nn.Module):
    """Window + mask → object class logits (0.42 M parameters at ``width`` 24, 11 classes).

    Args:
        classes: the class names, :data:`OTHER` last (added when missing).
        width: channels of the first stage, a multiple of 8 (doubled twice, then 16/3 of it).
        window: the window side the classifier was trained on (metadata for its caller).
        judged: the classes whose candidates the classifier is asked about (default: all of
            ``classes``). The others are still answers it can give (a storage tank found for
            "the building" is told from a building), but a candidate for them is left to the
            referring model: e.g. a classifier trained on generated chips only, for a referring
            model that also learned trees and buildings from real imagery.
    """

    def __init__(self, classes: list[str], width: int = 24, window: int = 128,
                 judged: list[str] | None = None) -> None:
        super().__init__()
        names = [str(c) for c in classes if str(c) != OTHER]
        if not names:
            raise ValueError("an object classifier needs at least one class")
        if width < 8 or width % 8:
            raise ValueError(f"width must be a multiple of 8, got {width}")
        self.classes = [*names, OTHER]
        self.judged = names if judged is None else [c for c in names if c in set(judged)]
        self.width = int(width)
        self.window = int(window)
        c = self.width
        top = -(-max(c * 4, (c * 16) // 3) // 8) * 8  # 128 at width 24
        self.features = nn.Sequential(
            _block(4, c, 2), _block(c, 2 * c, 2), _block(2 * c, 2 * c, 1),
            _block(2 * c, 4 * c, 2), _block(4 * c, 4 * c, 1), _block(4 * c, top, 2),
            _block(top, top, 1))
        self.head = nn.Linear(2 * top, len(self.classes))

    def forward(self, image: Tensor, mask: Tensor) -> Tensor:
        mask = mask.to(image.dtype)
        f = self.features(torch.cat([image, mask * 2 - 1], dim=1))
        m = F.adaptive_avg_pool2d(mask, f.shape[-2:])
        inside = (f * m).sum((2, 3)) / m.sum((2, 3)).clamp_min(1e-6)
        return self.head(torch.cat([inside, f.mean((2, 3))], dim=1))

    def config(self) -> dict:
        """What :func:`build_object_classifier` needs to rebuild this network."""
        return {"classes": self.classes, "width": self.width, "window": self.window,
                "judged": self.judged}


def build_object_classifier(config: dict) -> ObjectClassifier:
    """The network of a stored :meth:`ObjectClassifier.config` (weights not loaded)."""
    return ObjectClassifier(list(config["classes"]), int(config.get("width", 24)),
                            int(config.get("window", 128)), config.get("judged"))


#: the classifier that goes with referring-model weights ``X.safetensors`` (or ``X.pth``) is
#: ``X`` + this suffix, side by side
SIBLING_SUFFIX = ".objclass.safetensors"
_FORMAT = "rrsis_geo.objclass"


def sibling_path(weights: str | Path) -> Path:
    """Where the object classifier of the referring model ``weights`` lives."""
    p = Path(weights)
    return p.with_name(p.name.split(".")[0] + SIBLING_SUFFIX)


def save_object_classifier(model: ObjectClassifier, path: str | Path,
                           record: dict | None = None) -> None:
    """Write the weights and config (and a training record) to one safetensors file."""
    from safetensors.torch import save_file

    meta = {"format": _FORMAT, "version": "1", "config": json.dumps(model.config()),
            "record": json.dumps(record or {})}
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata=meta)


def load_object_classifier(path: str | Path) -> tuple[ObjectClassifier, dict]:
    """(classifier in eval mode, its training record) from :func:`save_object_classifier`'s
    file; :class:`~rrsis_geo.errors.WeightsError` when it is not one."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if meta.get("format") != _FORMAT:
            raise WeightsError(f"{path} is not an object classifier file")
        model = build_object_classifier(json.loads(meta["config"]))
        model.load_state_dict(load_file(str(path)))
    except WeightsError:
        raise
    except Exception as exc:  # corrupt files surface as many exception types
        raise WeightsError(f"cannot load object classifier {path}: {exc}") from exc
    return model.eval(), json.loads(meta.get("record") or "{}")
