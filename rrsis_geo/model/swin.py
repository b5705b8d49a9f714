"""Multimodal Swin backbone: Swin stages, each followed by a FIAM, then TMEM.

Described in docs/fianet.md §Backbone.

Semantics reproduce the Swin-det variant upstream uses, for numerical parity with the official
weights: token maps that are not multiples of the window are zero-padded right/bottom after
``norm1`` (padded tokens are attended to, not masked), odd blocks use a cyclic shift of
``window // 2`` with region mask −100, and the shift is applied even when the map fits in one
window. Windows are processed as one batched tensor (no Python loop over windows): precomputed
index maps move tokens into padded/shifted windows and back in one ``index_select`` each way, and
the qkv / output projections run on real tokens only (padding's qkv is exactly the qkv bias).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rrsis_geo.model.fiam import FIAM, TextFeatures
from rrsis_geo.model.ops import module_bias, module_linear
from rrsis_geo.model.tmem import TMEM

_REGION_MASK_VALUE = -100.0


class DropPath(nn.Module):
    """Stochastic depth per sample (identity in eval mode or when ``p == 0``)."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        return x * x.new_empty(shape).bernoulli_(keep).div_(keep)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Mlp(nn.Module):
    """fc1 → GELU → fc2 (keys ``mlp.fc1``, ``mlp.fc2``)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return module_linear(self.fc2, module_linear(self.fc1, x, "gelu"))


def _relative_position_index(ws: int) -> Tensor:
    """``[ws², ws²]`` index into the ``(2ws−1)²`` bias table (standard Swin layout)."""
    coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij"))
    flat = coords.flatten(1)                                        # [2, ws²]
    rel = (flat[:, :, None] - flat[:, None, :]).permute(1, 2, 0)    # [ws², ws², 2]
    rel = rel + (ws - 1)
    return rel[..., 0] * (2 * ws - 1) + rel[..., 1]


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows with a relative position bias."""

    def __init__(self, dim: int, window_size: int, num_heads: int) -> None:
        super().__init__()
        self.window_size = window_size
        self.num_heads = num_heads
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window_size - 1) ** 2, num_heads))
        # Persistent, because the official checkpoint stores it.
        self.register_buffer("relative_position_index", _relative_position_index(window_size))
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        # Set by freeze_position_biases (inference copies only); not in the state dict.
        self.register_buffer("frozen_position_bias", None, persistent=False)

    def position_bias(self) -> Tensor:
        """``[heads, N, N]`` relative position bias, N = window².

        The index buffer is a persisted tensor (a loaded checkpoint could hold any values), so it
        is used as stored.
        """
        if self.frozen_position_bias is not None:
            return self.frozen_position_bias
        n = self.window_size ** 2
        idx = self.relative_position_index.reshape(-1)
        # contiguous: adding a permuted bias to the scores (and to the shift mask) takes
        # a slow strided path, ~10x the time of a contiguous add at [windows, heads, N, N]
        return self.relative_position_bias_table[idx].view(n, n, -1).permute(2, 0, 1).contiguous()

    def forward(self, x: Tensor, layout: WindowLayout) -> Tensor:
        """Window attention over tokens ``[B, H·W, C]`` -> ``[B, H·W, C]``.

        Equivalent to zero-padding the map, partitioning it into (shifted) windows, attending and
        cropping, but the projections run on real tokens only: a zero padding token's qkv is
        exactly the qkv bias, and the output projection of padding is cropped anyway. On the
        official layout at 480² this skips ~10 GMACs (stages 3 and 4 are padded 30→36, 15→24).
        """
        b, hw, c = x.shape
        heads = self.num_heads
        hd = c // heads
        n = self.window_size ** 2
        nw = layout.num_windows
        qkv = module_linear(self.qkv, x).view(b * hw, 3 * c)
        if layout.padded:
            qkv = torch.cat([qkv, module_bias(self.qkv).view(1, -1).to(qkv.dtype)])  # row b·hw = padding
        gather = layout.batched_gather(b)
        qkv = qkv.index_select(0, gather).view(b * nw, n, 3, heads, hd).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)                                        # [B·nW, heads, N, hd]
        bias = self.position_bias().to(q.dtype)                         # [heads, N, N]
        if layout.region_mask is not None:
            bias = bias.unsqueeze(0) + layout.region_mask.unsqueeze(1).to(q.dtype)  # [nW, heads, N, N]
        # softmax(q·kᵀ·scale + bias)·v written out: on CPU this is ~20 % faster than SDPA's math
        # path (which adds fully-masked-row checks) and keeps upstream's order of operations.
        attn = torch.matmul(q * (hd ** -0.5), k.transpose(-2, -1))
        attn.view(b, nw, heads, n, n).add_(bias)
        out = torch.matmul(attn.softmax(dim=-1), v)                    # [B·nW, heads, N, hd]
        out = out.transpose(1, 2).reshape(b * nw * n, c).index_select(0, layout.batched_scatter(b))
        return module_linear(self.proj, out).view(b, hw, c)


def freeze_position_biases(model: nn.Module) -> None:
    """Store every window attention's ``[heads, N, N]`` bias, gathered once from its table, for
    an inference-only copy of ``model`` (later changes to the tables are not seen).

    For ``torch.compile``: the gather from the table would otherwise be fused into every
    softmax over ``[windows, heads, N, N]`` as an indirect load and recomputed per window, which
    the CPU compiler cannot vectorize (measured slower than eager on the official layout).
    """
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, WindowAttention):
                module.frozen_position_bias = None  # so that position_bias() reads the table
                module.frozen_position_bias = module.position_bias().detach()  # contiguous


class WindowLayout(NamedTuple):
    """How tokens ``[B, H·W, C]`` map to (shifted, padded) windows ``[B·nW, N, C]`` and back.

    ``gather`` lists, in window order, the source token of every window position (H·W stands for
    a padding token); ``scatter`` gives each real token its window-order position (this also
    crops the padding). One ``index_select`` each way replaces the pad + roll + partition copies.
    """

    gather: Tensor
    scatter: Tensor
    padded: bool
    num_windows: int
    region_mask: Tensor | None

    def batched_gather(self, batch: int) -> Tensor:
        """Indices into tokens flattened to ``[B·H·W (+1 padding row), C]``."""
        hw = self.scatter.numel()
        offsets = torch.arange(batch, device=self.gather.device)[:, None] * hw
        idx = self.gather[None, :] + offsets
        if self.padded:
            idx = torch.where(self.gather[None, :] == hw, batch * hw, idx)
        return idx.reshape(-1)

    def batched_scatter(self, batch: int) -> Tensor:
        """Indices into windows flattened to ``[B·nW·N, C]``, in token order ``[B·H·W]``."""
        per_image = self.gather.numel()
        offsets = torch.arange(batch, device=self.scatter.device)[:, None] * per_image
        return (self.scatter[None, :] + offsets).reshape(-1)


def window_layout(hw: tuple[int, int], window_size: int, shift_size: int,
                  device: torch.device) -> WindowLayout:
    """Index maps for a token grid ``hw`` (zero pad right/bottom, then cyclic shift by −shift)."""
    h, w = hw
    ws, s = window_size, shift_size
    hp, wp = -(-h // ws) * ws, -(-w // ws) * ws
    rows = torch.arange(hp, device=device)
    cols = torch.arange(wp, device=device)
    if s:  # torch.roll(x, -s): position p holds element (p + s) mod size
        rows = (rows + s) % hp
        cols = (cols + s) % wp
    r, c = rows[:, None], cols[None, :]
    src = torch.where((r < h) & (c < w), r * w + c, h * w)            # [Hp, Wp] source token
    nh, nw = hp // ws, wp // ws
    gather = src.view(nh, ws, nw, ws).transpose(1, 2).reshape(-1)      # windowed -> source
    # The inverse: padding positions hold the largest value (H·W), so a stable sort puts the
    # real tokens first, in source order. (Not boolean indexing, whose data-dependent shape
    # would split a torch.compile graph.)
    scatter = torch.argsort(gather, stable=True)[:h * w]
    mask = shift_region_mask(hw, ws, s, device) if s else None
    # padding tokens exist exactly when the grid was padded (known without reading a tensor,
    # so that torch.compile sees no data-dependent branch here)
    return WindowLayout(gather, scatter, hp != h or wp != w, nh * nw, mask)


class SwinBlock(nn.Module):
    """(Shifted-)window attention block with pre-norm residuals and an MLP."""

    def __init__(self, dim: int, num_heads: int, window_size: int, shift_size: int,
                 mlp_ratio: float, drop_path: float) -> None:
        super().__init__()
        self.window_size = window_size
        self.shift_size = shift_size
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window_size, num_heads)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, layout: WindowLayout) -> Tensor:
        """x ``[B, H·W, C]`` -> ``[B, H·W, C]``; ``layout`` must match this block's shift."""
        # In-place residual adds on fresh tensors (x + y == y + x exactly) save two allocations.
        x = self.drop_path(self.attn(self.norm1(x), layout)).add_(x)
        return self.drop_path(self.mlp(self.norm2(x))).add_(x)


class PatchMerging(nn.Module):
    """2×2 neighbourhood concat → LayerNorm(4C) → Linear 4C→2C (odd sizes zero-padded)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: Tensor, hw: tuple[int, int]) -> Tensor:
        """``[B, H·W, C]`` -> ``[B, ⌈H/2⌉·⌈W/2⌉, 2C]``."""
        b, _, c = x.shape
        h, w = hw
        x = x.view(b, h, w, c)
        if h % 2 or w % 2:
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        # Channel order (0,0), (1,0), (0,1), (1,1) as in Swin.
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return module_linear(self.reduction, self.norm(x.view(b, -1, 4 * c)))


class PatchEmbed(nn.Module):
    """Conv patchify (input zero-padded right/bottom to a patch multiple) + LayerNorm."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int,
                 coord_channels: int = 0) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.coord_channels = coord_channels
        self.proj = nn.Conv2d(in_chans + coord_channels, embed_dim, patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """``[B, 3, H, W]`` -> tokens ``[B, h·w, C]`` and the grid (h, w)."""
        p = self.patch_size
        h, w = x.shape[-2:]
        if self.coord_channels:
            # x then y, each from -1 (left / top) to 1 (right / bottom) over the image frame
            ys = torch.linspace(-1.0, 1.0, h, device=x.device, dtype=x.dtype)
            xs = torch.linspace(-1.0, 1.0, w, device=x.device, dtype=x.dtype)
            coords = torch.stack([xs.expand(h, w), ys[:, None].expand(h, w)])
            x = torch.cat([x, coords.expand(x.shape[0], 2, h, w)], dim=1)
        if h % p or w % p:
            x = F.pad(x, (0, (p - w % p) % p, 0, (p - h % p) % p))
        x = self.proj(x)
        hw = (x.shape[2], x.shape[3])
        return self.norm(x.flatten(2).transpose(1, 2)), hw


def shift_region_mask(hw: tuple[int, int], window_size: int, shift_size: int,
                      device: torch.device) -> Tensor:
    """Additive mask ``[nW, N, N]`` that keeps shifted windows from mixing wrapped regions.

    The padded map (Hp, Wp) is cut at ``−window`` and ``−shift`` along each axis into 3×3 regions;
    token pairs from different regions get −100.
    """
    ws, s = window_size, shift_size
    hp = -(-hw[0] // ws) * ws
    wp = -(-hw[1] // ws) * ws

    def region(n: int) -> Tensor:
        r = torch.zeros(n, dtype=torch.long, device=device)
        r[max(n - ws, 0):] = 1   # slice(-ws, -s)
        r[max(n - s, 0):] = 2    # slice(-s, None)
        return r

    ids = region(hp)[:, None] * 3 + region(wp)[None, :]               # [Hp, Wp]
    win = ids.view(hp // ws, ws, wp // ws, ws).transpose(1, 2).reshape(-1, ws * ws)
    diff = win.unsqueeze(1) != win.unsqueeze(2)                        # [nW, N, N]
    return diff.float() * _REGION_MASK_VALUE


class MultiModalStage(FIAM):
    """Swin blocks followed by the FIAM fusion and an optional PatchMerging.

    Subclasses :class:`FIAM` so that its parameters keep their official names (``layers.i.fc1``).
    """

    def __init__(self, dim: int, depth: int, num_heads: int, window_size: int, mlp_ratio: float,
                 drop_path: Sequence[float], lang_dim: int, downsample: bool) -> None:
        super().__init__(dim, lang_dim)
        self.window_size = window_size
        self.shift_size = window_size // 2
        self.blocks = nn.ModuleList([
            SwinBlock(dim, num_heads, window_size, 0 if i % 2 == 0 else window_size // 2,
                      mlp_ratio, drop_path[i])
            for i in range(depth)])
        self.downsample = PatchMerging(dim) if downsample else None
        # (grid, device) -> {shift: WindowLayout}: index maps depend on the shape only
        self._layouts: dict[tuple, dict[int, WindowLayout]] = {}

    def window_layouts(self, hw: tuple[int, int], device: torch.device) -> dict[int, WindowLayout]:
        """This stage's window layouts for a token grid, built once per grid and device.

        Kept also because ``torch.compile`` then sees them as constant tensors: built inside a
        compiled graph, their index arithmetic is fused into the gathers and recomputed at every
        load.
        """
        key = (hw, device)
        layouts = self._layouts.get(key)
        if layouts is None:
            layouts = {s: window_layout(hw, self.window_size, s, device)
                       for s in sorted({blk.shift_size for blk in self.blocks})}
            if len(self._layouts) >= 8:  # tile sizes of a run are few; keep the memory bounded
                self._layouts.clear()
            self._layouts[key] = layouts
        return layouts

    def forward(self, x: Tensor, hw: tuple[int, int],
                text: TextFeatures) -> tuple[Tensor, Tensor, tuple[int, int]]:
        """Returns (F_ctx ``[B, H·W, C]``, next-stage tokens, next-stage grid).

        ``x`` may hold one image for B sentences (``[1, N, C]``, text of batch B), or B images
        for B·S sentences (image-major: text rows ``i·S … i·S+S-1`` go with image i): the Swin
        blocks, which do not read the text, then run once per image and their output is shared.
        """
        layouts = self.window_layouts(hw, x.device)
        for blk in self.blocks:
            x = blk(x, layouts[blk.shift_size])
        if x.shape[0] != text.batch_size:
            x = (x.expand(text.batch_size, -1, -1) if x.shape[0] == 1
                 else x.repeat_interleave(text.batch_size // x.shape[0], dim=0))
        x, f_ctx = self.fuse(x, hw, text)
        if self.downsample is not None:
            x = self.downsample(x, hw)
            hw = ((hw[0] + 1) // 2, (hw[1] + 1) // 2)
        return f_ctx, x, hw


class MultiModalSwin(nn.Module):
    """Patch embedding, 4 multimodal stages, per-stage output LayerNorms, TMEM.

    ``forward`` returns the 4 enhanced feature maps ``[B, C_i, H_i, W_i]`` (C_i = embed·2^i).
    """

    def __init__(self, embed_dim: int, depths: Sequence[int], num_heads: Sequence[int],
                 window_size: int, patch_size: int, mlp_ratio: float, drop_path_rate: float,
                 lang_dim: int, num_tmem: int, coord_channels: int = 0) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(patch_size, 3, embed_dim, coord_channels)
        total = sum(depths)
        # Linear stochastic-depth rule, computed in Python so the model can be built on 'meta'.
        dpr = [drop_path_rate * i / (total - 1) if total > 1 else 0.0 for i in range(total)]
        self.num_features = [embed_dim * 2 ** i for i in range(len(depths))]
        self.layers = nn.ModuleList()
        for i, depth in enumerate(depths):
            start = sum(depths[:i])
            self.layers.append(MultiModalStage(
                self.num_features[i], depth, num_heads[i], window_size, mlp_ratio,
                dpr[start:start + depth], lang_dim, downsample=i < len(depths) - 1))
        for i, c in enumerate(self.num_features):
            self.add_module(f"norm{i}", nn.LayerNorm(c))
        self.tmem = TMEM(self.num_features, lang_dim, num_tmem)
        self.apply(_init_weights)

    def forward(self, image: Tensor, text: TextFeatures) -> list[Tensor]:
        """``[B, 3, H, W]`` -> 4 maps ``[B, C_i, H_i, W_i]``."""
        x, hw = self.patch_embed(image)
        outs = []
        for i, layer in enumerate(self.layers):
            f_ctx, x, next_hw = layer(x, hw, text)
            f_ctx = getattr(self, f"norm{i}")(f_ctx)
            outs.append(f_ctx.transpose(1, 2).reshape(f_ctx.shape[0], -1, hw[0], hw[1]))
            hw = next_hw
        return self.tmem(outs, text.context, text.context_mask)


def _init_weights(m: nn.Module) -> None:
    """Upstream backbone init: Linear trunc-normal(.02)/0, LayerNorm 1/0; convs keep defaults."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
