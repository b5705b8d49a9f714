"""A stand-in segmenter for testing the spine without FIANet (tests only; never shipped).

It honours the model contract of docs/architecture.md §Model API (``encode_text`` once,
``segment_image`` per batch, logits ``[B, 2, H, W]``) and marks pixels of one colour: the "referent"
is whatever is close to pure red (in the un-normalized 0–1 image). Probabilities are smooth (a
logistic of the colour distance), so blending and thresholding behave like a real model's.
"""

from __future__ import annotations

import torch
from torch import nn

from rrsis_geo.model.checkpoint import IMAGENET_MEAN, IMAGENET_STD


class RedSegmenter(nn.Module):
    def __init__(self, input_size: int = 64, gsd: float | None = None,
                 target=(1.0, 0.0, 0.0)) -> None:
        super().__init__()
        self.register_buffer("target", torch.tensor(target).view(1, 3, 1, 1))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.meta = {"input_size": input_size, "gsd": gsd, "mean": list(IMAGENET_MEAN),
                     "std": list(IMAGENET_STD), "classes": "refsegrs", "max_tokens": 20}
        self.encode_calls = 0

    def encode_text(self, input_ids, attention_mask, object_mask, position_mask):
        self.encode_calls += 1
        return {"n_tokens": attention_mask.sum(-1)}

    def segment_image(self, image, text_features):
        rgb = image * self.std + self.mean
        dist = (rgb - self.target).pow(2).sum(1, keepdim=True).sqrt()  # [B,1,H,W]
        logit = (0.5 - dist) * 20.0  # > 0 near red
        return torch.cat([-logit, logit], dim=1)

    def forward(self, image, input_ids, attention_mask, object_mask, position_mask):
        return self.segment_image(image, self.encode_text(input_ids, attention_mask,
                                                          object_mask, position_mask))


def make_red_segmenter(input_size: int = 64):
    """Picklable factory (for Dask workers)."""
    return RedSegmenter(input_size=input_size)


class ColourClassSegmenter(nn.Module):
    """A stand-in with classes: "the building" finds red, "the car" orange, "the tree" green.

    Like a real model it is not sure outside its class: the building prompt also paints orange
    (p ≈ 0.95), only less than red — so a tile pass for "the building" finds orange cars too, and
    only checking the candidates against the other classes tells them apart.
    """

    # class: (colour, colour distance at which the logit is 0); the building prompt is lax
    CLASSES = {"building": ((1.0, 0.0, 0.0), 0.8), "car": ((1.0, 0.5, 0.0), 0.35),
               "tree": ((0.0, 0.6, 0.0), 0.35)}

    def __init__(self, input_size: int = 64) -> None:
        super().__init__()
        from rrsis_geo.text.tokenizer import get_tokenizer

        tok = get_tokenizer()
        # singular and plural ("the cars": the class check's prompts in --mode all)
        self.token_class = {tok.convert_tokens_to_ids(word): i
                            for i, name in enumerate(self.CLASSES)
                            for word in (name, name + "s")
                            if tok.convert_tokens_to_ids(word) != tok.unk_token_id}
        self.register_buffer("targets", torch.tensor([c for c, _ in self.CLASSES.values()]))
        self.register_buffer("tolerance", torch.tensor([t for _, t in self.CLASSES.values()]))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.meta = {"input_size": input_size, "gsd": None, "mean": list(IMAGENET_MEAN),
                     "std": list(IMAGENET_STD), "classes": list(self.CLASSES), "max_tokens": 20}

    def encode_text(self, input_ids, attention_mask, object_mask, position_mask):
        cls = [next((self.token_class[int(t)] for t in row if int(t) in self.token_class), -1)
               for row in input_ids]
        return {"cls": torch.tensor(cls)}

    def segment_image(self, image, text_features):
        rgb = image * self.std + self.mean
        cls = text_features["cls"].expand(image.shape[0])
        out = []
        for b in range(image.shape[0]):
            if cls[b] < 0:
                logit = torch.full_like(rgb[b:b + 1, :1], -10.0)
            else:
                target = self.targets[cls[b]].view(1, 3, 1, 1)
                dist = (rgb[b:b + 1] - target).pow(2).sum(1, keepdim=True).sqrt()
                # building prompt: red 8, orange 3; car prompt: orange 7, red -3
                logit = (self.tolerance[cls[b]] - dist) * (8.0 / self.tolerance[cls[b]])
            out.append(torch.cat([-logit, logit], dim=1))
        return torch.cat(out)


def run_pipeline(tmp_path, arr_or_path, seg, expr="the red roof", out="out.gpkg", **kw):
    """Segment an array (written as ``tmp_path/in.tif``) or a raster path with ``seg`` on
    64-px tiles; returns (result payload, output path)."""
    from rrsis_geo.inference.pipeline import SegmentOptions, segment_raster
    from tests.rasters import write_tif

    src = arr_or_path if isinstance(arr_or_path, str) else write_tif(tmp_path / "in.tif",
                                                                        arr_or_path)
    out = tmp_path / out
    opts = SegmentOptions(**{"tile_size": 64, "overlap": 16, "simplify": 0.0, **kw})
    res = segment_raster(str(src), expr, str(out), opts, segmenter=seg)
    return res, out
