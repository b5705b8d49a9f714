"""Procedural rendering (numpy only): textured ground from a fixed noise bank, then roads,
buildings, vehicles, tanks, trees, ponds and courts with cast shadows, in z order.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from rrsis_geo.data.synth.canvas import Canvas, Obj, local
from rrsis_geo.data.synth.vocabulary import COLOURS, COURT_RED, TANK_GREY


def value_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Smooth value noise (≈ N(0, 0.5)) with feature size ``cell`` px, float32 [h, w].

    Separable smoothstep interpolation of a coarse random grid: rows first (small), then
    columns. Plain gathers, no BLAS (threaded BLAS stalls on a busy 2-core machine).
    """
    cell = max(cell, 1.0)
    oy, ox = rng.uniform(0, 1, size=2)
    g = rng.standard_normal((int(h / cell) + 3, int(w / cell) + 3), dtype=np.float32)
    y = np.arange(h, dtype=np.float32) / cell + np.float32(oy)
    x = np.arange(w, dtype=np.float32) / cell + np.float32(ox)
    iy, ix = y.astype(np.int64), x.astype(np.int64)
    fy, fx = y - iy, x - ix
    fy = fy * fy * (3 - 2 * fy)
    fx = fx * fx * (3 - 2 * fx)
    rows = g[iy] * (1 - fy)[:, None] + g[iy + 1] * fy[:, None]
    return rows[:, ix] * (1 - fx) + rows[:, ix + 1] * fx


def _fbm(rng: np.random.Generator, h: int, w: int, cell: float, octaves: int = 3) -> np.ndarray:
    out = np.zeros((h, w), np.float32)
    amp, total = 1.0, 0.0
    for _ in range(octaves):
        out += amp * value_noise(rng, h, w, cell)
        total += amp
        amp *= 0.5
        cell /= 2
    return out / total


GROUND = {
    "grass": (92, 122, 64),
    "dry grass": (138, 138, 86),
    "soil": (150, 126, 96),
    "pavement": (152, 152, 148),
}


_BANK_SIZE = 768
_BANK: dict[float, tuple[np.ndarray, np.ndarray]] = {}


def _noise_bank(scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Fixed (seeded) land-cover and grain noise fields that chips crop from: ~20× faster than
    fresh noise per chip, still deterministic, and varied by random offsets and flips."""
    if scale not in _BANK:
        rng = np.random.default_rng(0xB0A7)
        n = _BANK_SIZE
        mix = _fbm(rng, n, n, 70 * scale, 2)
        grain = _fbm(rng, n, n, 6 * scale, 2) * 14 + rng.standard_normal((n, n), np.float32) * 5
        _BANK[scale] = (mix, grain)
    return _BANK[scale]


def _crop(rng: np.random.Generator, field_: np.ndarray, h: int, w: int) -> np.ndarray:
    y = int(rng.integers(0, field_.shape[0] - h + 1))
    x = int(rng.integers(0, field_.shape[1] - w + 1))
    out = field_[y:y + h, x:x + w]
    if rng.random() < 0.5:
        out = out[::-1]
    if rng.random() < 0.5:
        out = out[:, ::-1]
    return out


def _ground(rng: np.random.Generator, h: int, w: int, scale: float) -> np.ndarray:
    """Textured ground: two land covers blended by a low-frequency field, plus fine grain."""
    kinds = list(GROUND)
    a, b = rng.choice(len(kinds), size=2, replace=False)
    ca = np.array(GROUND[kinds[a]], np.float32)
    cb = np.array(GROUND[kinds[b]], np.float32)
    if h <= _BANK_SIZE and w <= _BANK_SIZE:
        mix_f, grain_f = _noise_bank(scale)
        mix, grain = _crop(rng, mix_f, h, w), _crop(rng, grain_f, h, w)
    else:
        # large scenes: land cover varies on several scales (computed at 1/4 resolution, the
        # field is smooth), grain tiled from the bank with random shifts (seams are invisible
        # in high-frequency noise)
        hq, wq = -(-h // 4), -(-w // 4)
        mix = _fbm(rng, hq, wq, 250 * scale / 4, 3) * 0.8 + value_noise(rng, hq, wq,
                                                                          70 * scale / 4) * 0.4
        mix = np.repeat(np.repeat(mix, 4, axis=0), 4, axis=1)[:h, :w]
        grain_f = _noise_bank(scale)[1]
        reps = (-(-h // _BANK_SIZE) + 1, -(-w // _BANK_SIZE) + 1)
        dy, dx = (int(v) for v in rng.integers(0, _BANK_SIZE, size=2))
        grain = np.tile(grain_f, reps)[dy:dy + h, dx:dx + w]
    # in place: whole scenes are 16+ Mpx, temporaries cost more than the arithmetic
    t = mix * np.float32(2.2)
    t += np.float32(rng.uniform(-0.6, 0.6))
    np.clip(t, -1, 1, out=t)
    t *= 0.5
    t += 0.5
    img = np.empty((h, w, 3), np.float32)
    for c in range(3):
        np.multiply(t, cb[c] - ca[c], out=img[..., c])
        img[..., c] += grain
        img[..., c] += ca[c]
    return img


def _sub(img: np.ndarray, o: Obj) -> np.ndarray:
    h, w = o.m.shape
    return img[o.y0:o.y0 + h, o.x0:o.x0 + w]


def _grid_local(o: Obj):
    h, w = o.m.shape
    ys = np.arange(o.y0, o.y0 + h, dtype=np.float32)[:, None] + 0.5
    xs = np.arange(o.x0, o.x0 + w, dtype=np.float32)[None, :] + 0.5
    return ys, xs


def _edge(m: np.ndarray, r: int = 1) -> np.ndarray:
    """Pixels of ``m`` within ``r`` px of its border (4-neighbourhood erosion)."""
    inner = m.copy()
    for _ in range(r):
        e = inner.copy()
        e[1:, :] &= inner[:-1, :]
        e[:-1, :] &= inner[1:, :]
        e[:, 1:] &= inner[:, :-1]
        e[:, :-1] &= inner[:, 1:]
        e[0, :] = e[-1, :] = False
        e[:, 0] = e[:, -1] = False
        inner = e
    return m & ~inner


def _render_road(img: np.ndarray, o: Obj, rng: np.random.Generator, s: float) -> None:
    sub = _sub(img, o)
    ys, xs = _grid_local(o)
    u, v = local(ys, xs, o.p["cx"], o.p["cy"], o.p["ang"])
    tone = rng.uniform(70, 95)
    col = np.full(o.m.shape, tone, np.float32) + rng.standard_normal(o.m.shape).astype(
        np.float32) * 4
    rgb = np.stack([col, col, col * 1.03], -1)
    sub[o.m] = rgb[o.m]
    half = o.p["W"] / 2
    edge_line = o.m & (np.abs(np.abs(v) - (half - 2.5 * s)) < 0.8 * s)
    dash = o.m & (np.abs(v) < 0.8 * s) & (np.mod(u, 24 * s) < 12 * s)
    sub[edge_line | dash] = (222, 222, 214)


def _render_building(img: np.ndarray, o: Obj, rng: np.random.Generator, s: float) -> None:
    sub = _sub(img, o)
    base = np.array(COLOURS[o.colour], np.float32)
    noise = rng.standard_normal(o.m.shape).astype(np.float32) * 0.035 + 1
    rgb = base * noise[..., None]
    ys, xs = _grid_local(o)
    u, v = local(ys, xs, o.p["cx"], o.p["cy"], o.p["ang"])
    if o.p.get("gable"):
        # two roof planes lit differently + a ridge line
        along_len = o.p["L"] >= o.p["W"]
        across = v if along_len else u
        f = np.where(across > 0, 0.86, 1.08).astype(np.float32)
        f[np.abs(across) < 0.8 * s] = 1.15
        rgb *= f[..., None]
    else:
        for du, dv in o.p.get("vents", []):
            vm = (np.abs(u - du * o.p["L"]) < 2.5 * s) & (np.abs(v - dv * o.p["W"]) < 2.5 * s)
            rgb[vm & o.m] = rgb[vm & o.m] * 0.55 + 80
    edge = _edge(o.m, max(1, int(round(1.5 * s))))
    rgb[edge] *= 0.78
    sub[o.m] = rgb[o.m]


def _render_vehicle(img: np.ndarray, o: Obj, rng: np.random.Generator, s: float) -> None:
    sub = _sub(img, o)
    base = np.array(COLOURS[o.colour], np.float32)
    ys, xs = _grid_local(o)
    u, v = local(ys, xs, o.p["cx"], o.p["cy"], o.p["ang"])
    L, W = o.p["L"], o.p["W"]
    rgb = np.broadcast_to(base, o.m.shape + (3,)).copy()
    glass = np.array((40, 46, 56), np.float32)
    if o.category == "car":
        rgb[(u > 0.12 * L) & (u < 0.3 * L)] = glass  # windscreen
        rgb[(u < -0.3 * L) & (u > -0.42 * L)] = glass  # rear window
        roof = (u >= -0.3 * L) & (u <= 0.12 * L) & (np.abs(v) < 0.38 * W)
        rgb[roof] = base * 0.92 + 8
    elif o.category == "truck":
        gap = (u > 0.24 * L) & (u < 0.28 * L)
        rgb[gap] = (30, 30, 32)
        cab = u >= 0.28 * L
        rgb[cab] = base * 0.8 + 20
        rgb[cab & (u > 0.4 * L)] = glass
    else:  # bus: roof with AC units
        ac = (np.abs(v) < 0.3 * W) & (((u > -0.1 * L) & (u < 0.05 * L)) |
                                      ((u > -0.35 * L) & (u < -0.25 * L)))
        rgb[ac] = (170, 172, 176)
        rgb[u > 0.44 * L] = glass
    rgb[_edge(o.m)] *= 0.75
    sub[o.m] = rgb[o.m]


def _render_tank(img: np.ndarray, o: Obj, rng: np.random.Generator, s: float) -> None:
    sub = _sub(img, o)
    base = np.array(TANK_GREY if o.colour == "grey" else COLOURS["white"], np.float32)
    ys, xs = _grid_local(o)
    dx, dy = xs - o.p["cx"], ys - o.p["cy"]
    r = o.p["r"]
    d = np.sqrt(dx * dx + dy * dy) / r
    f = 1 - 0.10 * (dx + dy) / (r * 1.41)  # lit from the north-west
    f = np.where(np.abs(d - 0.62) < 0.03 + 0.6 / r, f * 0.88, f)  # floating-roof seam
    f = np.where(d > 1 - 2.0 * s / r, f * 0.78, f)  # rim
    rgb = base * f[..., None]
    rgb[(d < 0.06)] *= 0.8
    sub[o.m] = rgb[o.m]


def _render_tree(img: np.ndarray, o: Obj, rng: np.random.Generator, s: float) -> None:
    sub = _sub(img, o)
    tone = o.p.get("tone", 0.0)
    base = np.array((46 + 8 * tone, 86 + 12 * tone, 40 + 4 * tone), np.float32)
    ys, xs = _grid_local(o)
    dx, dy = xs - o.p["cx"], ys - o.p["cy"]
    r = o.p["r"]
    f = 1 - 0.25 * (dx + dy) / (r * 1.41)
    clump = value_noise(rng, *o.m.shape, 2.5 * s) * 0.16
    f = f * (1 + clump) * (1 + rng.standard_normal(o.m.shape).astype(np.float32) * 0.05)
    rgb = base * f[..., None]
    rgb[_edge(o.m)] *= 0.8
    sub[o.m] = rgb[o.m]


def _render_pond(img: np.ndarray, o: Obj, rng: np.random.Generator, s: float) -> None:
    sub = _sub(img, o)
    base = np.array((34, 66, 84), np.float32) + rng.uniform(-6, 6, size=3).astype(np.float32)
    n = value_noise(rng, *o.m.shape, 12 * s) * 5
    rgb = base + n[..., None]
    shore = _edge(o.m, max(1, int(round(2 * s))))
    rgb[shore] = rgb[shore] * 0.5 + np.array((118, 116, 84), np.float32) * 0.5
    sub[o.m] = rgb[o.m]


def _render_court(img: np.ndarray, o: Obj, rng: np.random.Generator, s: float) -> None:
    sub = _sub(img, o)
    base = np.array(COURT_RED if (o.category == "tennis court" and o.colour == "red")
                    else COLOURS[o.colour], np.float32)
    ys, xs = _grid_local(o)
    u, v = local(ys, xs, o.p["cx"], o.p["cy"], o.p["ang"])
    L, W = o.p["L"], o.p["W"]
    rgb = np.broadcast_to(base, o.m.shape + (3,)).copy()
    rgb *= (1 + rng.standard_normal(o.m.shape).astype(np.float32) * 0.02)[..., None]
    au, av = np.abs(u), np.abs(v)
    lw = 0.8 * s
    inset = 5 * s
    hl, hw = L / 2 - inset, W / 2 - inset
    inside = (au <= hl + lw) & (av <= hw + lw)
    rgb[~inside] = base * 0.8  # surround
    lines = np.zeros(o.m.shape, bool)
    lines |= inside & ((np.abs(au - hl) < lw) | (np.abs(av - hw) < lw))
    if o.category == "tennis court":
        lines |= inside & (np.abs(av - hw * 0.75) < lw)
        lines |= (au < hl * 0.54 + lw) & (av < hw * 0.75) & (np.abs(au - hl * 0.54) < lw)
        lines |= (au < hl * 0.54) & (av < lw)
        rgb[inside & (au < 1.0 * s)] = (45, 45, 45)  # net
    else:
        lines |= inside & (au < lw)
        rc = np.sqrt(u * u + v * v)
        lines |= np.abs(rc - 0.11 * L) < lw
        key = (au > hl - 0.19 * L) & (av < 0.12 * W)
        rgb[key & inside] = base * 0.82
        lines |= inside & (au > hl - 0.19 * L) & (np.abs(av - 0.12 * W) < lw)
        du = hl - 0.03 * L - au
        arc = np.sqrt(du * du + v * v)
        lines |= inside & (np.abs(arc - 0.24 * L) < lw) & (du > -0.03 * L)
    rgb[lines] = (236, 236, 232)
    sub[o.m] = rgb[o.m]


_RENDERERS = {
    "building": _render_building, "car": _render_vehicle, "truck": _render_vehicle,
    "bus": _render_vehicle, "storage tank": _render_tank, "tree": _render_tree,
    "pond": _render_pond, "tennis court": _render_court, "basketball court": _render_court,
    "road": _render_road,
}
# drawing order: flat things first, shadows, then vehicles, buildings/tanks, canopies on top
_Z = {"road": 0, "pond": 1, "tennis court": 1, "basketball court": 1, "car": 3, "truck": 3,
      "bus": 3, "building": 4, "storage tank": 4, "tree": 5}


def render(cv: Canvas, rng: np.random.Generator, ground: np.ndarray | None = None,
           look: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Draw every canvas object. Returns (uint8 image [H,W,3], int32 label map of object ids).

    ``look``: a :class:`rrsis_geo.data.synth.look.Look` (realism hooks) or None (plain).
    """
    img = ground if ground is not None else _ground(rng, cv.h, cv.w, cv.scale)
    label = np.zeros((cv.h, cv.w), np.int32)
    sun = float(rng.uniform(0.35, 1.2))  # shadows fall to the south-east
    sdx, sdy, shade = math.cos(sun), math.sin(sun), 0.52
    if look is not None:
        img = look.ground(img)
        sdx, sdy, shade = look.sun(sun)
    objs = sorted(cv.objects, key=lambda o: _Z[o.category])
    for o in objs:
        if _Z[o.category] >= 3:
            break
        _RENDERERS[o.category](img, o, rng, cv.scale)
        if look is not None:
            look.obj(img, o)
        label[o.y0:o.y0 + o.m.shape[0], o.x0:o.x0 + o.m.shape[1]][o.m] = o.id
    for o in objs:  # cast shadows: the footprint swept along the sun direction
        if o.height <= 0:
            continue
        sy0, sx0, sm = _shadow(o, o.height * sdx, o.height * sdy)
        ty0, tx0 = max(0, sy0), max(0, sx0)
        ty1, tx1 = min(cv.h, sy0 + sm.shape[0]), min(cv.w, sx0 + sm.shape[1])
        if ty1 > ty0 and tx1 > tx0:
            img[ty0:ty1, tx0:tx1][sm[ty0 - sy0:ty1 - sy0, tx0 - sx0:tx1 - sx0]] *= shade
    if look is not None:  # off-nadir walls, under the roofs drawn next
        look.facades(img, objs, _shadow, lambda o: TANK_GREY if o.category == "storage tank"
                     and o.colour == "grey" else COLOURS.get(o.colour or "grey"))
    for o in objs:
        if _Z[o.category] < 3:
            continue
        _RENDERERS[o.category](img, o, rng, cv.scale)
        if look is not None:
            look.obj(img, o)
        label[o.y0:o.y0 + o.m.shape[0], o.x0:o.x0 + o.m.shape[1]][o.m] = o.id
    np.clip(img, 1, 255, out=img)  # 0 is reserved for nodata in scenes
    return img.astype(np.uint8), label


def _shadow(o: Obj, dx: float, dy: float) -> tuple[int, int, np.ndarray]:
    """Footprint of ``o`` swept by (dx, dy) px: (y0, x0, bool window) in canvas coordinates."""
    n = max(1, int(math.ceil(max(abs(dx), abs(dy)))))
    h, w = o.m.shape
    shifts = [(int(round(k * dy / n)), int(round(k * dx / n))) for k in range(1, n + 1)]
    miny, minx = min(0, *(sy for sy, _ in shifts)), min(0, *(sx for _, sx in shifts))
    maxy, maxx = max(0, *(sy for sy, _ in shifts)), max(0, *(sx for _, sx in shifts))
    out = np.zeros((h + maxy - miny, w + maxx - minx), bool)
    for sy, sx in shifts:
        out[sy - miny:sy - miny + h, sx - minx:sx - minx + w] |= o.m
    return o.y0 + miny, o.x0 + minx, out
