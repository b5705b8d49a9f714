"""A loaded model: ``Segmenter`` runs FIANet on batches of normalized tiles with a sentence encoded
once (the model contract is in docs/architecture.md, section "Model API"), and checks a model card
and its weights before use.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any

import numpy as np
import torch

from rrsis_geo.errors import BadInputError, WeightsError
from rrsis_geo.inference.device import (AUTO_BF16_MIN_AGREEMENT, CPU_BATCH_SIZE,
                                        apply_precision, auto_cpu_bf16, autocast,
                                        batch_size_from_memory, host_to_device,
                                        keep_freed_memory, resolve_device, resolve_precision)
from rrsis_geo.model.checkpoint import IMAGENET_MEAN, IMAGENET_STD

log = logging.getLogger(__name__)


def validate_model_meta(meta: dict[str, Any], source: str) -> None:
    """Refuse a model card whose values would silently give wrong results (exit 4).

    ``input_size`` a whole number of at least 32 pixels, ``gsd`` absent or a finite number of
    metres > 0, ``mean`` and ``std`` three finite numbers each with every ``std`` > 0,
    ``trained_classes`` absent, null or a list of class names (scene-level selection refuses
    the classes outside it: a wrong value would refuse everything).
    """
    def bad(what: str) -> WeightsError:
        return WeightsError(f"invalid model card of {source}: {what}")

    size = meta.get("input_size", 480)
    if isinstance(size, bool) or not isinstance(size, (int, float)) or not math.isfinite(size) \
            or size != int(size) or size < 32:
        raise bad(f"input_size must be a whole number of pixels >= 32, got {size!r}")
    gsd = meta.get("gsd")
    if gsd is not None and (isinstance(gsd, bool) or not isinstance(gsd, (int, float))
                            or not math.isfinite(gsd) or gsd <= 0):
        raise bad(f"gsd must be a positive number of metres (or absent), got {gsd!r}")
    for key, default in (("mean", IMAGENET_MEAN), ("std", IMAGENET_STD)):
        v = meta.get(key, default)
        ok = isinstance(v, (list, tuple)) and len(v) == 3 and all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
            for x in v)
        if not ok:
            raise bad(f"{key} must be three finite numbers, got {v!r}")
        if key == "std" and min(v) <= 0:
            raise bad(f"std must be > 0 for every band, got {v!r}")
    trained = meta.get("trained_classes")
    if trained is not None and not (isinstance(trained, list) and all(
            isinstance(c, str) and c.strip() for c in trained)):
        raise bad(f"trained_classes must be a list of class names (or absent), got {trained!r}")


def check_finite_weights(model: torch.nn.Module, source: str) -> None:
    """Refuse weights holding NaN or infinity (they give empty results without any error)."""
    with torch.no_grad():
        for name, t in (*model.named_parameters(), *model.named_buffers()):
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise WeightsError(f"{source} holds NaN or infinite values (in {name}); the "
                                   "weights are damaged or diverged in training")


def compiled_segment_image(model: torch.nn.Module, device: torch.device,
                           autocast_dtype: torch.dtype | None = None) -> Any:
    """``model.segment_image`` through ``torch.compile`` as ``--compile`` runs it: one static
    shape, and on a CPU an inference copy of the model with frozen weights (constants to the
    compiler, so that oneDNN pre-packs the convolutions and linears). For bf16 autocast on a
    CPU the copy holds bf16 weights (measured faster than casting fp32 constants, README
    Benchmarks). Compiles lazily, at the first call of each input shape.

    The graph is one piece with constant index maps (README Benchmarks, "compiled"): each new
    image shape first runs once uncompiled, which builds the stages' window layouts before the
    compiler traces them (traced while being built, they would be recomputed inside the graph,
    and the second call would compile again). On a CPU the copy is also prepared: the
    decoder's BatchNorms are folded into its convolutions and its window attention biases are
    gathered once (:func:`~rrsis_geo.model.swin.freeze_position_biases`).
    """
    import contextlib

    if device.type == "cpu":
        import copy

        from rrsis_geo.model.swin import freeze_position_biases

        model = copy.deepcopy(model)
        classifier = getattr(model, "classifier", None)
        if hasattr(classifier, "fold_batchnorms"):
            classifier.fold_batchnorms()  # in fp32, before any cast
        if autocast_dtype == torch.bfloat16:
            model = model.to(torch.bfloat16)
        freeze_position_biases(model)
        compiled = torch.compile(model.segment_image, dynamic=False, options={"freezing": True})

        def settings() -> Any:
            # Without prepare_freezing, dynamo hands the weights to inductor as graph inputs
            # and "freezing" has nothing to freeze (nothing is pre-packed).
            return torch._dynamo.config.patch(prepare_freezing=True)
    else:
        compiled = torch.compile(model.segment_image, dynamic=False)
        settings = contextlib.nullcontext
    seen: set[tuple[int, ...]] = set()

    def run(image: torch.Tensor, text: Any) -> torch.Tensor:
        shape = tuple(image.shape[-2:])
        if shape not in seen:
            model.segment_image(image, text)  # builds the window layouts for this shape
            seen.add(shape)
        with settings():
            return compiled(image, text)

    return run


def _text_batch(text_features: Any) -> int:
    """Number of sentences in encoded text features (a tuple or a dict of tensors)."""
    first = (text_features[0] if isinstance(text_features, tuple)
             else next(iter(text_features.values())))
    return int(first.shape[0])


class Segmenter:
    """A loaded model plus its metadata; load once, segment many rasters (also per Dask worker).

    The model contract (docs/architecture.md, section "Model API"): ``encode_text(ids, attn, obj, pos)`` once per sentence,
    ``segment_image(image, text_features) -> logits [B, 2, H, W]`` for any number of batches.
    """

    def __init__(self, weights: str | os.PathLike | None = None, device: str = "auto",
                 precision: str = "auto", model: torch.nn.Module | None = None,
                 compile: bool = False) -> None:
        self.device = resolve_device(device)
        # --compile: the tile forward through torch.compile (see _compiled_forward)
        self.compile = bool(compile)
        self._compiled: Any = None  # the compiled segment_image; False once it failed
        self._compiled_shape: tuple[int, ...] | None = None
        self.autocast_dtype = resolve_precision(precision, self.device)
        keep_freed_memory()  # no page-fault storm between batches (see its docstring)
        if model is None:
            from rrsis_geo.defaults import resolve_weights
            from rrsis_geo.model import load_fianet

            path = resolve_weights(weights)
            try:
                model = load_fianet(path)
            except WeightsError:
                raise
            except Exception as exc:  # corrupt files surface as many exception types
                raise WeightsError(f"cannot load weights {path}: {exc}") from exc
            self.weights_path: str | None = str(path)
        else:
            self.weights_path = None
        meta = dict(getattr(model, "meta", None) or {})
        source = self.weights_path or "the model"
        validate_model_meta(meta, source)
        check_finite_weights(model, source)
        self.model, _ = apply_precision(model.eval().to(self.device), precision, self.device)
        self._verify_bf16 = False
        if (precision or "auto").strip().lower() == "auto":
            self._auto_cpu_precision()
        self.meta = meta
        self.input_size = int(meta.get("input_size", 480))
        self.gsd = meta.get("gsd")
        mean = meta.get("mean", IMAGENET_MEAN)
        std = meta.get("std", IMAGENET_STD)
        self._mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._text_cache: dict[str, Any] = {}
        self._objclass: Any = None  # the object classifier, once looked for (False: none)
        self._batch_sizes: dict[int, int] = {}  # --batch-size auto per tile size (GPU)
        log.info("model %s on %s (%s), %d CPU thread(s)", source, self.device,
                 "int8" if str(precision).lower() == "int8" else
                 "bf16, checked against fp32 on the first batch" if self._verify_bf16 else
                 self.autocast_dtype or "fp32",
                 torch.get_num_threads())
        # torchgeo's datasets/samplers take ~1 s to import; do it once with the model (a
        # Segmenter serves many rasters, e.g. in a Dask worker), not inside every run
        import torchgeo.datasets  # noqa: F401
        import torchgeo.samplers  # noqa: F401

    # -- text ---------------------------------------------------------------------------------
    def encode(self, expression: str) -> Any:
        """Decouple and encode the sentence once; cached per expression and device."""
        expr = (expression or "").strip()
        if not expr:
            raise BadInputError("the expression is empty")
        key = f"{self.device}:{expr}"
        if key not in self._text_cache:
            self._encode_batch([expr])
        return self._text_cache[key]

    def _encode_batch(self, expressions: list[str]) -> None:
        """Decouple the sentences and encode them in one forward of the text encoder (the class
        check's prompts: one batch costs a fraction of one forward per prompt); cache each."""
        from rrsis_geo.model.features import index_features
        from rrsis_geo.text import decouple

        rows = [decouple(e, classes=self.meta.get("classes", "refsegrs"),
                         max_tokens=int(self.meta.get("max_tokens", 20)),
                         aligned=self.meta.get("text_mode", "upstream") == "aligned")
                for e in expressions]
        tensors = [torch.stack([getattr(d, f) for d in rows])
                   for f in ("input_ids", "attention_mask", "object_mask", "position_mask")]
        # Words no mask attends to (the padding after the longest sentence) change nothing for
        # the others, and the model only reads text features through these masks: encode the
        # used length only (~8 of 20 tokens for a class prompt) and pad the features with zeros.
        length = tensors[0].shape[1]
        used = torch.stack([t != 0 for t in tensors]).any(dim=0).any(dim=0).nonzero()
        keep = int(used.max()) + 1 if used.numel() else length
        with torch.inference_mode():
            feats = self.model.encode_text(*(t[:, :keep].to(self.device) for t in tensors))
            if keep < length and isinstance(feats, tuple):
                feats = type(feats)(*(torch.nn.functional.pad(f, (0, length - keep))
                                      for f in feats))
        for i, e in enumerate(expressions):
            self._text_cache[f"{self.device}:{e}"] = index_features(feats, slice(i, i + 1))

    # -- images -------------------------------------------------------------------------------
    def encode_many(self, expressions: list[str]) -> Any:
        """Features of several sentences along the batch axis (each encoded once, cached; the
        ones not cached yet in one batch)."""
        from rrsis_geo.model.features import cat_features

        exprs = [(e or "").strip() for e in expressions]
        if not all(exprs):
            raise BadInputError("the expression is empty")
        todo = list(dict.fromkeys(e for e in exprs if f"{self.device}:{e}" not in self._text_cache))
        if todo:
            self._encode_batch(todo)
        return cat_features([self._text_cache[f"{self.device}:{e}"] for e in exprs])

    def resolve_batch_size(self, batch_size: int | str, tile_size: int) -> int:
        """``--batch-size``: a number as given; ``auto`` = CPU_BATCH_SIZE on CPU, on a GPU
        the tiles that fit its free memory (``torch.cuda.mem_get_info``) at the memory one
        tile's forward needs (measured once per tile size: the peak of a batch-1 forward), up
        to GPU_BATCH_CAP (:func:`~rrsis_geo.inference.device.batch_size_from_memory`)."""
        if str(batch_size).lower() != "auto":
            return int(batch_size)
        if self.device.type != "cuda":
            return CPU_BATCH_SIZE
        key = int(tile_size)
        if key not in self._batch_sizes:
            torch.cuda.synchronize(self.device)
            base = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            probe = np.zeros((1, 3, int(tile_size), int(tile_size)), np.float32)
            self.predict(probe, self.encode("the object"))
            per_tile = torch.cuda.max_memory_allocated(self.device) - base
            free, _total = torch.cuda.mem_get_info(self.device)
            self._batch_sizes[key] = batch_size_from_memory(free, per_tile)
            log.info("batch size %d (auto: %.0f MiB free, %.0f MiB per %d² tile)",
                     self._batch_sizes[key], free / 2**20, per_tile / 2**20, tile_size)
        return self._batch_sizes[key]

    def _logits(self, images: np.ndarray, text_features: Any) -> torch.Tensor:
        # to the device first (pinned, non-blocking on a GPU), then normalized there
        x = host_to_device(torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)),
                           self.device)
        x = (x - self._mean) / self._std
        if self._verify_bf16:
            return self._first_bf16_logits(x, text_features)
        with torch.inference_mode(), autocast(self.device, self.autocast_dtype):
            out = self._compiled_forward(x, text_features) if self.compile else None
            if out is None:
                out = self.model.segment_image(x, text_features)
            return out.float()

    def _auto_cpu_precision(self) -> None:
        """``--precision auto`` on a CPU: bf16 for a large model on a bf16 CPU
        (:func:`~rrsis_geo.inference.device.auto_cpu_bf16`), kept only if the first batch
        agrees with fp32 (:meth:`_first_bf16_logits`)."""
        self._verify_bf16 = self.device.type == "cpu" and auto_cpu_bf16(self.model)
        if self._verify_bf16:
            self.autocast_dtype = torch.bfloat16

    def compile_for(self, shape: tuple[int, ...]) -> None:
        """With ``compile``: the batch shape ``(B, 3, tile, tile)`` to compile for (the run's
        tile batches), before the first forward."""
        if self.compile and self._compiled is None:
            self._compiled_shape = tuple(int(v) for v in shape)

    def _compiled_forward(self, x: torch.Tensor, text_features: Any) -> torch.Tensor | None:
        """``segment_image`` through ``torch.compile`` (inductor; on a CPU with frozen weights,
        which lets oneDNN pre-pack them), or None where the eager forward must run.

        The graph is compiled once, for one batch shape with one sentence: the tile batches of
        a run (declared by :meth:`compile_for`; otherwise the first batch's shape). A smaller
        batch of that tile size (the last one) is padded to it, and any other shape (class
        check windows, the overview pass, several sentences) runs eagerly, so that no shape
        costs a second compilation. A compilation that fails (no C++ compiler, an unsupported
        platform) is reported once and the run goes on uncompiled."""
        if self._compiled is False or _text_batch(text_features) != 1:
            return None
        shape = tuple(x.shape)
        if self._compiled is None:
            self._compiled = compiled_segment_image(self.model, self.device,
                                                    self.autocast_dtype)
            self._compiled_shape = self._compiled_shape or shape
            log.info("--compile: compiling the model for batches of %s (minutes the first "
                     "time; cached on disk for later runs)",
                     "×".join(map(str, self._compiled_shape)))
        full = self._compiled_shape  # set with the compiled function, above
        if shape[1:] != full[1:] or shape[0] > full[0]:
            return None
        pad = full[0] - shape[0]
        if pad:
            x = torch.cat([x, x.new_zeros((pad, *shape[1:]))])
        try:
            out = self._compiled(x, text_features)
        except Exception as exc:  # noqa: BLE001 - compiler errors come in many types
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            log.warning("--compile: the model could not be compiled (%s); running it "
                        "uncompiled", first[:200])
            self._compiled = False
            return None
        return out[:shape[0]] if pad else out

    def _first_bf16_logits(self, x: torch.Tensor, text_features: Any) -> torch.Tensor:
        """``--precision auto`` chose bf16 on this CPU: run the first batch both ways and keep
        bf16 only if its pixel argmax agrees with fp32's (:data:`AUTO_BF16_MIN_AGREEMENT`)."""
        self._verify_bf16 = False
        with torch.inference_mode():
            ref = self.model.segment_image(x, text_features).float()
            with autocast(self.device, torch.bfloat16):
                low = self.model.segment_image(x, text_features).float()
        agree = float((low.argmax(1) == ref.argmax(1)).float().mean())
        if agree >= AUTO_BF16_MIN_AGREEMENT:
            log.info("precision auto: bf16 (agrees with fp32 on %.2f %% of the first batch's "
                     "pixels)", 100 * agree)
            return low
        self.autocast_dtype = None
        log.warning("precision auto: fp32 (bf16 agreed with fp32 on only %.2f %% of the first "
                    "batch's pixels; at least %.0f %% is needed)", 100 * agree,
                    100 * AUTO_BF16_MIN_AGREEMENT)
        return ref

    def predict(self, images: np.ndarray, text_features: Any) -> np.ndarray:
        """Referent probability per pixel. ``images`` float32 [B, 3, H, W] in [0, 1] → [B, H, W]."""
        return torch.softmax(self._logits(images, text_features), dim=1)[:, 1].cpu().numpy()

    def margins(self, images: np.ndarray, text_features: Any) -> np.ndarray:
        """Referent-minus-background logit per pixel, float32 [B, H, W] (``predict`` is its
        sigmoid). ``text_features`` may hold one sentence per image (``encode_many``)."""
        logits = self._logits(images, text_features)
        return (logits[:, 1] - logits[:, 0]).cpu().numpy()

    def margins_of_one_image(self, image: np.ndarray, text_features: Any) -> np.ndarray:
        """:meth:`margins` of one image [3, H, W] for each of the B sentences of
        ``text_features`` → [B, H, W]. A model that declares ``one_image_many_texts`` (FIANet)
        runs the part of its forward that does not read the text once (measured: 16 % of a
        demo-model forward at 192²); others see the image repeated."""
        n = _text_batch(text_features)
        if getattr(self.model, "one_image_many_texts", False):
            return self.margins(image[None], text_features)
        return self.margins(np.repeat(image[None], n, axis=0), text_features)

    def predict_many(self, images: np.ndarray, text_features: Any) -> np.ndarray:
        """:meth:`predict` of each image [B, 3, H, W] for each of the S sentences of
        ``text_features`` (``encode_many``) → [S, B, H, W], in one forward. A model that
        declares ``images_times_texts`` (FIANet) runs the part of its forward that does not
        read the text once per image; others see each image once per sentence."""
        from rrsis_geo.model.features import index_features

        s, b = _text_batch(text_features), images.shape[0]
        rows = torch.arange(s).repeat(b)  # image-major: image i with sentences 0 … S-1
        if getattr(self.model, "images_times_texts", False):
            x = images
        else:
            x = np.repeat(images, s, axis=0)
        logits = self._logits(x, index_features(text_features, rows))
        prob = torch.softmax(logits, dim=1)[:, 1].cpu().numpy()
        return prob.reshape(b, s, *prob.shape[1:]).swapaxes(0, 1)

    # -- the class check's object classifier --------------------------------------------------
    def object_classifier(self) -> Any:
        """The object classifier that goes with these weights (:mod:`rrsis_geo.model.objclass`:
        ``X.objclass.safetensors`` beside ``X.safetensors``), loaded on first use; None when
        there is none (a model given in memory, official weights, your own fine-tune)."""
        if self._objclass is None:
            self._objclass = False
            if self.weights_path:
                from rrsis_geo.model.objclass import load_object_classifier, sibling_path

                path = sibling_path(self.weights_path)
                if path.is_file():
                    model, _ = load_object_classifier(path)
                    self._objclass = model.to(self.device)
                    log.info("object classifier %s (%s)", path, ", ".join(model.classes))
        return self._objclass or None

    def classify_objects(self, images: np.ndarray, masks: np.ndarray) -> np.ndarray:
        """Log-probabilities of the object classifier's classes, float [B, K], for windows
        ``images`` float32 [B, 3, S, S] in [0, 1] and candidate masks bool [B, S, S]. The
        windows are normalized as the classifier was trained (ImageNet mean and std,
        :mod:`rrsis_geo.train.objclass`), whatever the referring model's own statistics."""
        model = self.object_classifier()
        if model is None:
            raise RuntimeError("these weights have no object classifier")
        x = host_to_device(torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)),
                           self.device)
        m = host_to_device(torch.from_numpy(np.ascontiguousarray(masks, dtype=np.float32)),
                           self.device)[:, None]
        mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
        with torch.inference_mode():
            logits = model((x - mean) / std, m)
        return torch.log_softmax(logits.float(), dim=1).cpu().numpy()

    def to_cpu(self) -> None:
        """Fallback after CUDA OOM at batch size 1."""
        self.device = torch.device("cpu")
        self.autocast_dtype = resolve_precision("auto", self.device)
        self.model = self.model.to(self.device)
        self._auto_cpu_precision()
        if self.compile and self._compiled is not None:
            self._compiled = False  # compiled for the GPU: no recompiling in the middle of a run
        self._mean, self._std = self._mean.cpu(), self._std.cpu()
        self._text_cache.clear()
        self._batch_sizes.clear()
        if self._objclass:
            self._objclass = self._objclass.cpu()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
