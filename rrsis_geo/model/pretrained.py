"""Pretrained starting points for FIANet's parts: a Swin backbone and a BERT text encoder.

Swin backbone state dicts come in two key layouts:

- **Microsoft** (the Swin authors' released ``.pth``, e.g. ImageNet-22k Swin-B, usually wrapped in
  a ``model`` key): ``patch_embed.*``, ``layers.{i}.blocks.{j}.*`` and the PatchMerging of stage
  ``i`` at the *end* of that stage, ``layers.{i}.downsample.*`` for i = 0..2. This is our layout
  too (``backbone.layers.{i}.downsample``).
- **timm** (>= 0.9): the same tensors, but PatchMerging sits at the *start* of the next stage,
  ``layers.{i+1}.downsample.*``; the classifier is ``head.fc.*``. Both layouts concatenate the
  2×2 neighbourhood in the same channel order, so the tensors are used as they are.

The mapping drops what a segmentation backbone does not use (``relative_position_index`` and
``attn_mask`` buffers, which every model rebuilds, the classifier ``head`` and the final
``norm``), interpolates relative-position bias tables bicubically when the window differs (an
ImageNet Swin-B has window 7 at 224² or 12 at 384²; FIANet's official window is 12), and gives a
patch embedding with extra coordinate input channels (``coord_channels``) the RGB filters with
zero weights on the coordinate planes. Everything else must match in shape: a file of another
Swin width is refused. FIAM, TMEM, the per-stage output norms and the decoder are not part of an
ImageNet Swin and keep their initialisation.

A text encoder comes from a local Hugging Face BERT folder (``config.json`` + weights) whose
architecture equals the model's text encoder (BERT-base for the official layout: 768 wide, 12
layers, bert-base-uncased's 30,522-token vocabulary, which the tokenizer uses).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rrsis_geo.errors import WeightsError
from rrsis_geo.model.checkpoint import _first_line, safe_torch_load

_BLOCK_KEY = re.compile(
    r"^layers\.(\d+)\.blocks\.(\d+)\.(norm1\.(weight|bias)|norm2\.(weight|bias)|"
    r"attn\.(qkv|proj)\.(weight|bias)|attn\.relative_position_bias_table|"
    r"mlp\.(fc1|fc2)\.(weight|bias))$")
_DOWNSAMPLE_KEY = re.compile(
    r"^layers\.(\d+)\.downsample\.(reduction\.weight|norm\.(weight|bias))$")
_PATCH_EMBED_KEY = re.compile(r"^patch_embed\.(proj|norm)\.(weight|bias)$")
_BUFFER_KEY = re.compile(r"(^|\.)(relative_position_index|attn_mask)$")
_CLASSIFIER_KEY = re.compile(r"^(head\.|head$|norm\.(weight|bias)$)")
_TABLE_SUFFIX = "attn.relative_position_bias_table"
_WRAPPER_KEYS = ("model", "state_dict", "model_state", "module")
_PREFIXES = ("module.", "backbone.", "encoder.")

SWIN_LAYOUTS = ("microsoft", "timm")


@dataclass
class BackboneLoad:
    """Tensors for the Swin part of our backbone, and what happened to the file's keys.

    Attributes:
        tensors: target key (``backbone.…``) -> tensor, shaped for the target model.
        layout: ``"microsoft"`` or ``"timm"``.
        missing: Swin keys of the target that the file lacks (they keep their initialisation).
        unexpected: file keys that are no Swin backbone tensor of the target.
        dropped: file keys left out on purpose (buffers, classifier head, final norm).
        interpolated: position tables resized, as ``(key, source window, target window)``.
        coord_filters: True when the patch embedding got zero filters for coordinate planes.
    """

    tensors: dict[str, Tensor]
    layout: str
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    interpolated: list[tuple[str, int, int]] = field(default_factory=list)
    coord_filters: bool = False

    def summary(self) -> str:
        """One line for the log."""
        parts = [f"{len(self.tensors)} tensors loaded ({self.layout} layout)"]
        if self.interpolated:
            windows = sorted({(a, b) for _, a, b in self.interpolated})
            parts.append(f"{len(self.interpolated)} position tables interpolated from window "
                         + ", ".join(f"{a} to {b}" for a, b in windows))
        if self.coord_filters:
            parts.append("coordinate-plane filters of the patch embedding set to zero")
        parts.append(_count("missing", self.missing))
        parts.append(_count("unexpected", self.unexpected))
        if self.dropped:
            parts.append(f"{len(self.dropped)} ignored (position-index/mask buffers, classifier "
                         "head, final norm)")
        return "; ".join(parts)


def _count(label: str, keys: list[str]) -> str:
    if not keys:
        return f"0 {label}"
    return f"{len(keys)} {label} (e.g. {', '.join(keys[:3])})"


# ------------------------------------------------------------------------------ reading files


def read_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read a state dict from ``.safetensors`` or a torch file (safe unpickler, tensors only).

    A dict wrapping the state dict under ``model`` / ``state_dict`` (the Swin authors' releases,
    training checkpoints) is unwrapped; ``argparse.Namespace`` is the only class allowed.

    Raises:
        WeightsError: missing, unreadable, unsafe or not a state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path), device="cpu"))
        except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file
            raise WeightsError(f"cannot read {path}: {_first_line(str(exc))}") from None
    obj = safe_torch_load(path)
    state = unwrap_state_dict(obj)
    if state is None:
        raise WeightsError(f"{path} holds no state dict (a dict of tensors, possibly under "
                           "'model' or 'state_dict')")
    return state


def unwrap_state_dict(obj: object) -> dict[str, Tensor] | None:
    """The tensor dict inside ``obj`` (itself, or under a wrapper key); None when there is none."""
    for _ in range(3):
        if not isinstance(obj, Mapping):
            return None
        tensors = {k: v for k, v in obj.items() if isinstance(v, Tensor)}
        if tensors and len(tensors) >= len(obj) / 2:
            return {str(k): v for k, v in tensors.items()}
        inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            return None
        obj = inner
    return None


# ------------------------------------------------------------------------------ Swin mapping


def detect_swin_layout(keys) -> str:
    """``"microsoft"`` (PatchMerging at the end of a stage) or ``"timm"`` (at the next start).

    The Microsoft layout has ``layers.0.downsample``; timm's first stage has none. A file without
    any PatchMerging cannot be told apart and is read as the Microsoft layout.
    """
    keys = set(keys)
    if any(k.startswith("layers.0.downsample.") for k in keys):
        return "microsoft"
    if any(_DOWNSAMPLE_KEY.match(k) for k in keys):
        return "timm"
    return "microsoft"


def _strip_prefixes(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    state = dict(state)
    for prefix in _PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def swin_target_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """The Swin part of a FIANet's (or a ``MultiModalSwin``'s) state: key -> shape.

    Works on a model built on the ``meta`` device. Keys carry the ``backbone.`` prefix when
    ``model`` is a FIANet.
    """
    prefix = "backbone." if hasattr(model, "backbone") else ""
    out = {}
    for key, value in model.state_dict().items():
        if not key.startswith(prefix):
            continue
        rest = key[len(prefix):]
        if _BUFFER_KEY.search(rest):
            continue
        if _PATCH_EMBED_KEY.match(rest) or _BLOCK_KEY.match(rest) or _DOWNSAMPLE_KEY.match(rest):
            out[key] = tuple(value.shape)
    return out


def interpolate_position_table(table: Tensor, window: int) -> Tensor:
    """Resize a ``[(2w−1)², heads]`` relative-position bias table to ``window`` (bicubic).

    The table is a ``(2w−1) × (2w−1)`` grid of offsets per head; the resized grid spans the
    same offsets stretched to the new window, so the zero offset (the grid's centre) keeps its
    value.
    """
    n, heads = table.shape
    side = int(round(n ** 0.5))
    if side * side != n:
        raise WeightsError(f"relative position table of {n} rows is not a square grid")
    target = 2 * window - 1
    if side == target:
        return table
    grid = table.float().T.reshape(1, heads, side, side)
    resized = F.interpolate(grid, size=(target, target), mode="bicubic", align_corners=False)
    return resized.reshape(heads, target * target).T.contiguous().to(table.dtype)


def map_swin_state_dict(state: Mapping[str, Tensor], target: Mapping[str, tuple[int, ...]],
                        source: str = "backbone weights") -> BackboneLoad:
    """Map a Microsoft- or timm-layout Swin state dict onto ``target`` (:func:`swin_target_shapes`).

    Raises:
        WeightsError: no key of the file is a Swin backbone tensor of the target, or some
            tensors have shapes that cannot be adapted (another Swin width or depth layout).
    """
    state = _strip_prefixes(state)
    layout = detect_swin_layout(state)
    prefix = "backbone." if any(k.startswith("backbone.") for k in target) else ""
    tensors: dict[str, Tensor] = {}
    unexpected: list[str] = []
    dropped: list[str] = []
    interpolated: list[tuple[str, int, int]] = []
    wrong: list[str] = []
    coord = False
    for key, value in state.items():
        if _BUFFER_KEY.search(key) or _CLASSIFIER_KEY.match(key):
            dropped.append(key)
            continue
        name = key
        m = _DOWNSAMPLE_KEY.match(key)
        if m and layout == "timm":
            name = f"layers.{int(m.group(1)) - 1}.downsample.{m.group(2)}"
        tkey = prefix + name
        if tkey not in target or not (_PATCH_EMBED_KEY.match(name) or _BLOCK_KEY.match(name)
                                      or _DOWNSAMPLE_KEY.match(name)):
            unexpected.append(key)
            continue
        shape = target[tkey]
        if tuple(value.shape) != shape:
            if name.endswith(_TABLE_SUFFIX) and value.ndim == 2 and len(shape) == 2 \
                    and value.shape[1] == shape[1]:
                side = int(round(shape[0] ** 0.5))
                src_side = int(round(value.shape[0] ** 0.5))
                if side * side == shape[0] and src_side * src_side == value.shape[0] \
                        and side % 2 and src_side % 2:
                    value = interpolate_position_table(value, (side + 1) // 2)
                    interpolated.append((tkey, (src_side + 1) // 2, (side + 1) // 2))
            elif name == "patch_embed.proj.weight" and value.ndim == 4 and len(shape) == 4 \
                    and value.shape[0] == shape[0] and value.shape[2:] == shape[2:] \
                    and value.shape[1] < shape[1]:
                padded = value.new_zeros(shape)
                padded[:, :value.shape[1]] = value
                value, coord = padded, True
        if tuple(value.shape) != shape:
            wrong.append(f"{key} {list(value.shape)} != {list(shape)}")
            continue
        tensors[tkey] = value
    if not tensors:
        seen = ", ".join(sorted(state)[:3]) or "none"
        raise WeightsError(f"{source}: no Swin backbone tensors found (keys such as "
                           f"'layers.0.blocks.0.attn.qkv.weight' expected; the file has {seen})")
    if wrong:
        width = target.get(prefix + "patch_embed.norm.weight", (None,))[0]
        raise WeightsError(f"{source} do not fit this backbone (embed width {width}): "
                           f"{len(wrong)} shape mismatch(es), e.g. {wrong[0]}")
    missing = sorted(set(target) - set(tensors))
    return BackboneLoad(tensors, layout, missing, sorted(unexpected), sorted(dropped),
                        interpolated, coord)


def load_swin_weights(model: nn.Module, load: BackboneLoad) -> None:
    """Copy the mapped tensors into ``model`` (a FIANet or its backbone), in place."""
    params = dict(model.named_parameters())
    params.update(dict(model.named_buffers()))
    with torch.no_grad():
        for key, value in load.tensors.items():
            params[key].copy_(value)


# ------------------------------------------------------------------------------ BERT folder


def _bert_expected(encoder: nn.Module) -> dict[str, int]:
    c = encoder.config
    return {"hidden_size": c.hidden_size, "num_hidden_layers": c.num_hidden_layers,
            "num_attention_heads": c.num_attention_heads,
            "intermediate_size": c.intermediate_size, "vocab_size": c.vocab_size}


def check_bert_folder(folder: str | os.PathLike,
                      expected: Mapping[str, int] | None = None) -> dict[str, object]:
    """Read ``folder/config.json``; check it describes a BERT of the ``expected`` architecture.

    Args:
        folder: a Hugging Face model folder (``config.json`` and ``model.safetensors`` or
            ``pytorch_model.bin``).
        expected: hidden_size / num_hidden_layers / num_attention_heads / intermediate_size /
            vocab_size the model's text encoder has (None: only check it is a BERT).

    Returns:
        the parsed config.

    Raises:
        WeightsError: not a folder, no config, not a BERT, another architecture, no weights file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise WeightsError(f"--text-weights must be a Hugging Face BERT folder: {folder} is not "
                           "a folder")
    cfg_path = folder / "config.json"
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WeightsError(f"{folder} has no config.json (a Hugging Face BERT folder holds "
                           "config.json and model.safetensors)") from None
    except (OSError, ValueError) as exc:
        raise WeightsError(f"cannot read {cfg_path}: {_first_line(str(exc))}") from None
    if not isinstance(config, dict) or config.get("model_type") != "bert":
        kind = config.get("model_type") if isinstance(config, dict) else None
        raise WeightsError(f"{folder} is not a BERT (config.json model_type {kind!r}; the text "
                           "encoder needs model_type 'bert')")
    if not any((folder / n).is_file() for n in ("model.safetensors", "pytorch_model.bin",
                                                "model.safetensors.index.json",
                                                "pytorch_model.bin.index.json")):
        raise WeightsError(f"{folder} has no weights (model.safetensors or pytorch_model.bin)")
    if expected:
        diff = [f"{k} {config.get(k)} (needs {v})" for k, v in expected.items()
                if config.get(k) != v]
        if diff:
            raise WeightsError(f"{folder} is a BERT of another size than the text encoder: "
                               + ", ".join(diff))
    return config


def load_bert_folder(model: nn.Module, folder: str | os.PathLike) -> int:
    """Load a local BERT folder into ``model.text_encoder`` (a FIANet); returns tensors loaded.

    Raises:
        WeightsError: see :func:`check_bert_folder`; or the weights file lacks encoder tensors.
    """
    from transformers import BertModel

    from rrsis_geo.model.text_encoder import quiet_from_pretrained

    encoder = model.text_encoder
    check_bert_folder(folder, _bert_expected(encoder))
    try:
        loaded, info = quiet_from_pretrained(BertModel, Path(folder), output_loading_info=True)
    except Exception as exc:  # noqa: BLE001 - transformers raises many kinds
        raise WeightsError(f"cannot load BERT weights from {folder}: "
                           f"{_first_line(str(exc))}") from None
    missing = [k for k in info.get("missing_keys", []) if not k.startswith("pooler.")]
    if missing:
        raise WeightsError(f"{folder} lacks {len(missing)} BERT tensor(s), e.g. "
                           f"{', '.join(sorted(missing)[:3])}")
    state = {k: v for k, v in loaded.state_dict().items() if not k.startswith("pooler.")}
    target = encoder.state_dict()
    bad = [k for k in target if k not in state or state[k].shape != target[k].shape]
    if bad:
        raise WeightsError(f"{folder} does not fit the text encoder: {len(bad)} tensor(s) differ, "
                           f"e.g. {bad[0]}")
    with torch.no_grad():
        for k, v in state.items():
            if k in target:
                target[k].copy_(v)
    return len(target)
