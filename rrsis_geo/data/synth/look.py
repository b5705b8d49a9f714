"""The ``--realism`` switch of the synthetic generator: which realism parts a chip gets.

``none`` is the plain procedural renderer (bit-identical to generating without this module);
``textures`` adds photographic textures (:mod:`rrsis_geo.data.synth.textures`); ``sensor`` adds
acquisition geometry and sensor effects (:mod:`rrsis_geo.data.synth.sensor`); ``all`` both.

A :class:`Look` draws from its own generator, seeded from the chip's seed, so the layout, the
objects and the sentence of a chip are the same at every realism level: only pixels differ.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rrsis_geo.errors import UsageError

REALISM = ("none", "textures", "sensor", "all")
DEFAULT_REALISM = "none"
_TAG = 0x4EA1


def check_realism(value: str) -> str:
    if value not in REALISM:
        raise UsageError(f"realism must be one of {', '.join(REALISM)}, got {value!r}")
    return value


class Look:
    """Realism decisions of one chip or scene; hooks called by the renderer."""

    def __init__(self, realism: str, seed_parts: tuple[int, ...], scale: float = 1.0):
        check_realism(realism)
        self.realism = realism
        self.rng = np.random.default_rng(np.random.SeedSequence([*seed_parts, _TAG]))
        self.tex = self.acq = None
        if realism in ("textures", "all"):
            from rrsis_geo.data.synth.textures import Texturer

            self.tex = Texturer(self.rng, scale)
        if realism in ("sensor", "all"):
            from rrsis_geo.data.synth.sensor import Acquisition

            self.acq = Acquisition(self.rng)

    # renderer hooks --------------------------------------------------------------------------
    def ground(self, img: np.ndarray) -> np.ndarray:
        return self.tex.ground(img) if self.tex is not None else img

    def obj(self, img: np.ndarray, o: Any) -> None:
        if self.tex is not None:
            self.tex.obj(img, o)

    def sun(self, default: float) -> tuple[float, float, float]:
        import math

        if self.acq is None:
            return math.cos(default), math.sin(default), 0.52
        return self.acq.sun(default)

    def facades(self, img: np.ndarray, objs: list, sweep, colour_of) -> None:
        if self.acq is not None:
            self.acq.facades(img, objs, sweep, colour_of)

    def finish(self, img: np.ndarray, *, allow_pan: bool) -> tuple[np.ndarray, dict[str, Any]]:
        """Sensor effects on the finished uint8 image (none unless ``sensor``/``all``)."""
        if self.acq is None:
            return img, {}
        from rrsis_geo.data.synth.sensor import apply_sensor

        return apply_sensor(img, self.rng, allow_pan=allow_pan)


def make_look(realism: str, *seed_parts: int, scale: float = 1.0) -> Look | None:
    """A :class:`Look`, or None for ``none`` (the renderer then runs exactly as before)."""
    return None if check_realism(realism) == "none" else Look(realism, seed_parts, scale)


def names_colour(expression: str) -> bool:
    """True when a sentence uses a colour word (such chips never become panchromatic)."""
    from rrsis_geo.data.synth.vocabulary import COLOUR_WORDS

    words = set(expression.replace(",", " ").split())
    return any(w in words for ws in COLOUR_WORDS.values() for w in ws)
