"""Training the class check's object classifier (:mod:`rrsis_geo.model.objclass`) on generated
chips (``rrsis-geo train-objclass``).

Every object of a generated chip (:func:`rrsis_geo.data.synth.chips.make_chip`, the generator the
referring model learned its classes from) becomes one sample: a window of the chip centred on it
and its visible mask, perturbed the way a referring model's painted area differs from an object
(grown or shrunk by a pixel or two, or cut to a part of it). Each chip also gives one ``other``
sample: a blob of ground, shadow or road where no object lies, the kind of place a model paints
for "the pond" on a scene without one. Half of the chips use the generator's photographic
textures and sensor effects (``--realism all``). Training: AdamW, cosine schedule, random
quarter turns and mirror images (a class does not depend on its orientation), brightness jitter.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage
from torch.nn import functional as F

from rrsis_geo.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from rrsis_geo.geo.tiling import centred_origin
from rrsis_geo.model.objclass import OTHER, ObjectClassifier

#: an object must show this many pixels in its chip to be a sample (a sliver at the chip's
#: edge, or a car under a tree, says nothing of its class)
MIN_VISIBLE_PX = 40
#: chip side of the generated chips the samples are cut from (at the generator's 0.25 m)
CHIP_SIZE = 192


@dataclass
class ObjectSamples:
    """``images`` uint8 [N, S, S, 3], ``masks`` bool [N, S, S], ``labels`` int64 [N] (index
    into ``classes``)."""

    images: np.ndarray
    masks: np.ndarray
    labels: np.ndarray
    classes: list[str]

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def _perturb(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A referring model's painted area for this object: grown or shrunk by up to two pixels,
    and one time in five only the part on one side of a line through the object."""
    out = mask
    step = int(rng.integers(-2, 3))
    if step > 0:
        out = ndimage.binary_dilation(out, iterations=step)
    elif step < 0:
        shrunk = ndimage.binary_erosion(out, iterations=-step)
        out = shrunk if shrunk.sum() >= MIN_VISIBLE_PX // 2 else out
    if rng.random() < 0.2:
        ys, xs = np.nonzero(out)
        ang = rng.uniform(0, math.pi)
        d = (xs - xs.mean()) * math.cos(ang) + (ys - ys.mean()) * math.sin(ang)
        cut = d <= np.quantile(d, rng.uniform(0.5, 0.8))
        part = np.zeros_like(out)
        part[ys[cut], xs[cut]] = True
        if part.sum() >= MIN_VISIBLE_PX // 2:
            out = part
    return out


def _other_mask(label: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
    """A blob where no object lies (label 0: ground, shadow, road), of an object's size."""
    h, w = label.shape
    free = np.argwhere(label == 0)
    if len(free) == 0:
        return None
    cy, cx = free[int(rng.integers(len(free)))]
    a, b = rng.uniform(4, 30), rng.uniform(4, 30)
    ang = rng.uniform(0, math.pi)
    yy, xx = np.mgrid[0:h, 0:w]
    u = (xx - cx) * math.cos(ang) + (yy - cy) * math.sin(ang)
    v = -(xx - cx) * math.sin(ang) + (yy - cy) * math.cos(ang)
    blob = ((u / a) ** 2 + (v / b) ** 2 <= 1) & (label == 0)
    lab, _ = ndimage.label(blob)
    blob = lab == lab[cy, cx]
    return blob if blob.sum() >= MIN_VISIBLE_PX else None


def chip_samples(seed: int, window: int, classes: list[str], realism: str,
                 rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """The samples of one generated chip: (window image, window mask, class index) for each
    object of a class in ``classes`` that shows enough of itself, and one ``other`` blob."""
    from rrsis_geo.data.synth.chips import make_chip

    chip, label, objects = make_chip(seed, CHIP_SIZE, realism=realism)
    index = {c: i for i, c in enumerate(classes)}
    out = []
    masks = []
    for o in objects:
        if o.category not in index:
            continue
        visible = label == o.id
        if visible.sum() >= MIN_VISIBLE_PX:
            masks.append((_perturb(visible, rng), index[o.category]))
    other = _other_mask(label, rng)
    if other is not None:
        masks.append((other, index[OTHER]))
    for mask, cls in masks:
        ys, xs = np.nonzero(mask)
        # placed as the class check places its window around a candidate
        r0 = centred_origin(round((ys.min() + ys.max()) / 2), window, CHIP_SIZE)
        c0 = centred_origin(round((xs.min() + xs.max()) / 2), window, CHIP_SIZE)
        sl = (slice(r0, r0 + window), slice(c0, c0 + window))
        out.append((chip.image[sl], mask[sl], cls))
    return out


def make_samples(classes: list[str], chips: int, seed: int, window: int = 128,
                 say: Callable[[str], None] | None = None) -> ObjectSamples:
    """Samples from ``chips`` generated chips (seeds ``seed`` … ``seed + chips - 1``; every
    second one with ``--realism all``)."""
    if window > CHIP_SIZE or window % 16:
        raise ValueError(f"window must be a multiple of 16 up to {CHIP_SIZE}, got {window}")
    classes = [*[c for c in classes if c != OTHER], OTHER]
    rng = np.random.default_rng(seed)
    images, masks, labels = [], [], []
    t0 = time.perf_counter()
    for k in range(chips):
        realism = "all" if k % 2 else "none"
        for img, mask, cls in chip_samples(seed + k, window, classes, realism, rng):
            images.append(img)
            masks.append(mask)
            labels.append(cls)
        if say is not None and (k + 1) % 500 == 0:
            say(f"{k + 1}/{chips} chips, {len(labels)} samples, "
                f"{time.perf_counter() - t0:.0f} s")
    return ObjectSamples(np.stack(images), np.stack(masks), np.asarray(labels, np.int64),
                         classes)


def _batch(samples: ObjectSamples, idx: np.ndarray, rng: np.random.Generator | None
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    img = torch.from_numpy(samples.images[idx]).permute(0, 3, 1, 2).float() / 255.0
    mask = torch.from_numpy(samples.masks[idx]).unsqueeze(1).float()
    if rng is not None:
        k = int(rng.integers(4))
        img, mask = torch.rot90(img, k, (2, 3)), torch.rot90(mask, k, (2, 3))
        if rng.random() < 0.5:
            img, mask = img.flip(3), mask.flip(3)
        img = (img * torch.from_numpy(rng.uniform(0.85, 1.15, (len(idx), 1, 1, 1))).float()
               ).clamp(0, 1)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (img - mean) / std, mask, torch.from_numpy(samples.labels[idx])


def evaluate(model: ObjectClassifier, samples: ObjectSamples, batch: int = 128) -> dict:
    """Accuracy and the confusion matrix (rows: truth, columns: answer) on ``samples``."""
    model.eval()
    k = len(samples.classes)
    conf = np.zeros((k, k), np.int64)
    with torch.inference_mode():
        for s in range(0, len(samples), batch):
            idx = np.arange(s, min(len(samples), s + batch))
            img, mask, y = _batch(samples, idx, None)
            pred = model(img, mask).argmax(1)
            np.add.at(conf, (y.numpy(), pred.numpy()), 1)
    return {"accuracy": float(np.trace(conf) / max(1, conf.sum())), "confusion": conf.tolist(),
            "classes": samples.classes}


def train_object_classifier(train: ObjectSamples, *, max_minutes: float, seed: int = 0,
                            batch: int = 64, lr: float = 2e-3, width: int = 24,
                            say: Callable[[str], None] | None = None
                            ) -> tuple[ObjectClassifier, dict]:
    """Train a classifier on ``train`` within ``max_minutes`` (the cosine schedule is fitted
    to the budget after the first 20 steps). Returns the model (eval mode) and a record."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    window = int(train.images.shape[1])
    model = ObjectClassifier(train.classes, width=width, window=window)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-2)
    # classes weighted by the inverse square root of their frequency (cars and buildings are
    # many, courts few)
    counts = np.bincount(train.labels, minlength=len(train.classes)).astype(np.float64)
    cw = torch.tensor(1 / np.sqrt(np.maximum(counts, 1)), dtype=torch.float32)
    cw = cw / cw.mean()
    budget = max_minutes * 60.0
    t0 = time.perf_counter()
    step, total, order, pos, losses = 0, None, rng.permutation(len(train)), 0, []
    model.train()
    while True:
        elapsed = time.perf_counter() - t0
        if step == 20:
            total = max(40, int(budget / (elapsed / 20)))
        if elapsed >= budget or (total is not None and step >= total):
            break
        if pos + batch > len(order):
            order, pos = rng.permutation(len(train)), 0
        idx = order[pos:pos + batch]
        pos += batch
        img, mask, y = _batch(train, idx, rng)
        frac = step / total if total else 0.0
        for g in opt.param_groups:
            g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))
        loss = F.cross_entropy(model(img, mask), y, weight=cw, label_smoothing=0.05)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        step += 1
        if say is not None and step % 100 == 0:
            say(f"step {step}/{total}: loss {np.mean(losses[-100:]):.3f}, "
                f"{time.perf_counter() - t0:.0f} s")
    model.eval()
    record = {"steps": step, "batch": batch, "lr": lr, "seed": seed, "width": width,
              "samples": len(train), "seconds": round(time.perf_counter() - t0, 1),
              "final_loss": float(np.mean(losses[-100:])) if losses else None}
    return model, record
