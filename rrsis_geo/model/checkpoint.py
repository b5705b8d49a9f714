"""Loading and saving FIANet weights.

Two formats (docs/fianet.md §Checkpoint format):

- **official**: upstream's ``torch.save`` dict with ``model`` = state_dict (plus ``args``,
  ``optimizer`` ...). Read with ``torch.load(weights_only=True)`` allowing only
  ``argparse.Namespace`` beyond tensors and containers; ``num_tmem`` is inferred from the keys and
  the keys must match the official layout exactly.
- **ours**: ``X.safetensors`` (weights) + ``X.json`` beside it
  (``{"format": "rrsis_geo.fianet", "version": 1, "config": {...}, "meta": {...}}``). A frozen
  MiniLM text encoder is not stored: it comes from its package.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from rrsis_geo.errors import WeightsError
from rrsis_geo.model.fianet import FIANet, FIANetConfig
from rrsis_geo.model.text_encoder import build_text_encoder
from rrsis_geo.safety import atomic_write

FORMAT_NAME = "rrsis_geo.fianet"
FORMAT_VERSION = 1
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_TEXT_PREFIX = "text_encoder."
# torch < 2.14: "Unsupported global: GLOBAL posix.system was not an allowed global by default";
# torch 2.14: "Trying to load unsupported GLOBAL posix.system whose module posix is blocked."
_UNSAFE_GLOBAL = re.compile(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)")
_TMEM_BLOCK = re.compile(r"^backbone\.tmem\.block\.(\d+)\.")
# Upstream's datasets by TMEM depth (docs/fianet.md §Checkpoint format): RefSegRS 1 block /
# 20 tokens, RRSIS-D 3 / 22.
_OFFICIAL_META = {
    1: {"dataset": "refsegrs", "max_tokens": 20},
    3: {"dataset": "rrsisd", "max_tokens": 22},
}


def load_fianet(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> FIANet:
    """Load FIANet weights in either format, ready for inference (eval mode).

    Args:
        path: an official checkpoint (``.pth``/any torch pickle), or our ``X.safetensors`` /
            ``X.json`` / ``X`` (both files must sit side by side).
        map_location: device for the weights.

    Raises:
        WeightsError: missing/unreadable file, unsafe pickle, keys or shapes that do not match.
    """
    path = Path(path)
    if not path.exists() and path.with_name(path.name + ".safetensors").is_file():
        path = path.with_name(path.name + ".safetensors")  # "X" names our X.safetensors + X.json
    if path.suffix in (".safetensors", ".json"):
        model = _load_ours(path.with_suffix(".safetensors"), path.with_suffix(".json"),
                           map_location)
    else:
        if not path.is_file():
            raise WeightsError(f"weights file not found: {path}")
        model = model_from_official_state_dict(read_official_checkpoint(path, map_location))
        model.meta.update(source="official", path=str(path))
    model.to(map_location)
    return model.eval()


def safe_torch_load(path: str | os.PathLike, map_location: str | torch.device = "cpu",
                    what: str = "") -> Any:
    """``torch.load`` with the safe unpickler (tensors, containers and ``argparse.Namespace``).

    Raises:
        WeightsError: the file holds other objects (the refused global is named), or is corrupt,
            truncated or not a torch file. ``what`` names the file in the message ("checkpoint ").
    """
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = _UNSAFE_GLOBAL.search(str(exc))
        if found:
            raise WeightsError(f"refusing {path}: it holds objects other than tensors and "
                               f"argparse.Namespace ({found.group(1)})") from None
        raise WeightsError(f"cannot read {what}{path}: not a valid torch file") from None
    except Exception as exc:  # corrupt, truncated or not a torch file
        raise WeightsError(f"cannot read {what}{path}: {_first_line(str(exc))}") from None


def read_official_checkpoint(path: str | os.PathLike,
                             map_location: str | torch.device = "cpu") -> dict[str, Tensor]:
    """Read the ``model`` state_dict of an upstream checkpoint with the safe unpickler."""
    obj = safe_torch_load(path, map_location, what="checkpoint ")
    state = obj.get("model") if isinstance(obj, Mapping) else None
    if state is None and isinstance(obj, Mapping) and obj and all(
            isinstance(v, Tensor) for v in obj.values()):
        state = obj  # a bare state_dict
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise WeightsError(f"{path} is not a FIANet checkpoint: expected a dict with a 'model' "
                           "state_dict")
    state = dict(state)
    if state and all(k.startswith("module.") for k in state):  # saved from a DDP wrapper
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def infer_num_tmem(state: Mapping[str, Tensor]) -> int:
    """Number of TMEM blocks in an official state_dict (``backbone.tmem.block.{k}.*``)."""
    blocks = {int(m.group(1)) for k in state if (m := _TMEM_BLOCK.match(k))}
    return max(blocks) + 1 if blocks else 0


def model_from_official_state_dict(state: Mapping[str, Tensor]) -> FIANet:
    """Build the official layout that matches ``state`` and load it strictly."""
    num_tmem = infer_num_tmem(state)
    if num_tmem not in _OFFICIAL_META:
        raise WeightsError(f"not an official FIANet checkpoint: found {num_tmem} TMEM blocks "
                           "(expected 1 or 3)")
    config = FIANetConfig.official(num_tmem)
    config.meta.update(input_size=480, mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD),
                       **_OFFICIAL_META[num_tmem])
    return _instantiate(config, state, "official checkpoint")


def save_fianet(model: FIANet, path: str | os.PathLike,
                meta: Mapping[str, Any] | None = None) -> tuple[Path, Path]:
    """Write ``X.safetensors`` + ``X.json`` atomically (temp files, then ``os.replace``).

    Args:
        model: the model to save.
        path: ``X``, ``X.safetensors`` or ``X.json``.
        meta: extra metadata merged over ``model.meta`` (also stored into ``model.meta``).

    Returns:
        (weights path, JSON path).
    """
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix in (".safetensors", ".json"):
        path = path.with_suffix("")
    weights, card = path.with_name(path.name + ".safetensors"), path.with_name(path.name + ".json")
    if meta:
        model.meta.update(meta)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()
             if not (_text_from_package(model.config) and k.startswith(_TEXT_PREFIX))}
    config = model.config.to_dict()
    card_doc = {"format": FORMAT_NAME, "version": FORMAT_VERSION,
                "config": {k: v for k, v in config.items() if k != "meta"},
                "meta": config["meta"]}
    try:
        card_text = json.dumps(card_doc, indent=2, sort_keys=True)
    except TypeError as exc:
        raise ValueError(f"model.meta must be JSON-serializable: {exc}") from None
    weights.parent.mkdir(parents=True, exist_ok=True)
    # the weights are renamed into place first (the inner block), then the card
    with atomic_write(card) as tmp_c, atomic_write(weights) as tmp_w:
        save_file(state, str(tmp_w), metadata={"format": FORMAT_NAME})
        tmp_c.write_text(card_text + "\n", encoding="utf-8")
    return weights, card


def _load_ours(weights: Path, card: Path, map_location: str | torch.device) -> FIANet:
    from safetensors.torch import load_file

    for p in (weights, card):
        if not p.is_file():
            raise WeightsError(f"weights file not found: {p} (our format needs both "
                               f"{weights.name} and {card.name})")
    try:
        doc = json.loads(card.read_text(encoding="utf-8"))
        config = FIANetConfig.from_dict({**doc["config"], "meta": doc.get("meta", {})})
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise WeightsError(f"invalid model card {card}: {_first_line(str(exc))}") from None
    try:
        state = load_file(str(weights), device=str(map_location))
    except Exception as exc:
        raise WeightsError(f"cannot read weights {weights}: {_first_line(str(exc))}") from None
    return _instantiate(config, state, str(weights))


def _text_from_package(config: FIANetConfig) -> bool:
    """Frozen MiniLM weights come from the installed package and are not saved."""
    return config.text_encoder == "minilm-l6" and config.freeze_text_encoder


def _instantiate(config: FIANetConfig, state: Mapping[str, Tensor], source: str) -> FIANet:
    """Build ``config`` without random init (on 'meta') and adopt ``state``'s tensors strictly."""
    text_in_state = any(k.startswith(_TEXT_PREFIX) for k in state)
    with torch.device("meta"):
        model = FIANet(config, load_text_weights=False)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()
                if text_in_state or not k.startswith(_TEXT_PREFIX)}
    _check_keys(expected, state, source)
    if not text_in_state:
        if not _text_from_package(config):
            raise WeightsError(f"{source} lacks the text encoder weights ({_TEXT_PREFIX}*)")
        model.text_encoder = build_text_encoder(config.text_encoder, pretrained=True)
        if config.freeze_text_encoder:
            model.text_encoder.requires_grad_(False)
    model.load_state_dict(state, strict=text_in_state, assign=True)
    _materialize_meta_buffers(model)
    if config.freeze_text_encoder:
        model.text_encoder.requires_grad_(False)
    return model


def _check_keys(expected: Mapping[str, tuple[int, ...]], state: Mapping[str, Tensor],
                source: str) -> None:
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    wrong = sorted(k for k in expected if k in state and tuple(state[k].shape) != expected[k])
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s) e.g. {', '.join(missing[:3])}")
    if extra:
        problems.append(f"{len(extra)} unexpected key(s) e.g. {', '.join(extra[:3])}")
    if wrong:
        k = wrong[0]
        problems.append(f"{len(wrong)} shape mismatch(es) e.g. {k} "
                        f"{list(state[k].shape)} != {list(expected[k])}")
    if problems:
        raise WeightsError(f"{source} does not match the FIANet layout: {'; '.join(problems)}")


def _materialize_meta_buffers(model: torch.nn.Module) -> None:
    """Recreate non-persistent buffers left on 'meta' (BERT's position / token-type ids)."""
    for module in model.modules():
        for name, buf in list(module.named_buffers(recurse=False)):
            if not buf.is_meta:
                continue
            if name == "position_ids":
                value = torch.arange(buf.shape[-1]).expand(buf.shape)
            elif name == "token_type_ids":
                value = torch.zeros(buf.shape, dtype=buf.dtype)
            else:  # pragma: no cover - would mean a new transformers buffer we do not know
                raise WeightsError(f"cannot initialise buffer {name} of {type(module).__name__}")
            module.register_buffer(name, value.to(buf.dtype), persistent=False)


def _first_line(text: str) -> str:
    text = text.strip()
    return text.splitlines()[0] if text else "unknown error"
