"""Progress reporting: tqdm bars on stderr for people, JSON lines on stdout for programs.

``--progress jsonl`` (contract, used by the QGIS plugin): one JSON object per line on stdout::

    {"event": "progress", "stage": "tiles", "done": 12, "total": 81}
    {"event": "message", "level": "warning", "text": "..."}
    {"event": "result", "outputs": {...}, "objects": 1, "timings": {...}, "peak_rss_mb": 812.4}
"""

from __future__ import annotations

import json
import resource
import sys
import time
from contextlib import contextmanager
from collections.abc import Iterator
from typing import Any, Literal

Mode = Literal["bar", "jsonl", "none"]

#: set by ``rrsis-geo -q``: mode "bar" behaves like "none" (warnings only; jsonl is unchanged)
QUIET = False


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class Reporter:
    """Reports stages, progress and messages in one of three modes; also times each stage."""

    def __init__(self, mode: Mode = "bar", stream=None) -> None:
        self.mode: Mode = "none" if QUIET and mode == "bar" else mode
        self.stream = stream if stream is not None else sys.stdout
        self.timings: dict[str, float] = {}
        self._bar = None
        self._stage: str | None = None
        self._done = 0
        self._total = 0
        self._last_emit = 0.0
        self._inner_s: list[float] = []  # seconds of nested stages, per open stage
        self._unit = "it"

    # -- low level -------------------------------------------------------------------------
    def _emit(self, obj: dict[str, Any]) -> None:
        self.stream.write(json.dumps(obj) + "\n")
        self.stream.flush()

    # -- stages --------------------------------------------------------------------------
    @contextmanager
    def stage(self, name: str, total: int = 0, unit: str = "it") -> Iterator["Reporter"]:
        """Context for one stage: ``with rep.stage("tiles", total=81): rep.advance()``.

        Stages may nest (the class check runs inside selection): the inner stage reports as
        its own, the outer one resumes after it, and the outer stage's timing leaves out the
        inner one's.
        """
        t0 = time.perf_counter()
        outer = (self._stage, self._done, self._total, self._bar)
        self._bar = None
        self._inner_s.append(0.0)
        self._stage, self._done, self._total = name, 0, int(total)
        self._unit = unit
        if self.mode == "bar" and total:  # stages without a count get no bar (stderr stays clean)
            self._open_bar()
        elif self.mode == "jsonl":
            self._emit({"event": "progress", "stage": name, "done": 0, "total": self._total})
        try:
            yield self
        finally:
            if self._bar is not None:
                self._bar.close()
                self._bar = None
            elif self.mode == "jsonl" and self._done != self._total:
                self._emit({"event": "progress", "stage": name, "done": self._total,
                            "total": self._total})
            took = time.perf_counter() - t0
            own = took - self._inner_s.pop()
            if self._inner_s:
                self._inner_s[-1] += took
            self.timings[name] = self.timings.get(name, 0.0) + own
            self._stage, self._done, self._total, self._bar = outer

    def _open_bar(self) -> None:
        from tqdm import tqdm

        self._bar = tqdm(total=self._total or None, desc=self._stage, unit=self._unit,
                         file=sys.stderr, dynamic_ncols=True, leave=False)

    def set_total(self, total: int) -> None:
        """Set or change the current stage's total (a stage whose size is known once it has
        started, or that ends before its estimate)."""
        self._total = int(total)
        if self._bar is None and self.mode == "bar" and self._stage is not None and total:
            self._open_bar()
        elif self._bar is not None:
            self._bar.total = total
            self._bar.refresh()
        elif self.mode == "jsonl" and self._stage is not None:
            self._emit({"event": "progress", "stage": self._stage, "done": self._done,
                        "total": self._total})

    def advance(self, n: int = 1) -> None:
        self._done += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.mode == "jsonl":
            now = time.perf_counter()
            # throttle to ~10 lines/s, but always report the last step
            if self._done >= self._total or now - self._last_emit > 0.1:
                self._last_emit = now
                self._emit({"event": "progress", "stage": self._stage, "done": self._done,
                            "total": self._total})

    def message(self, text: str, level: str = "info") -> None:
        if self.mode == "jsonl":
            self._emit({"event": "message", "level": level, "text": text})
        elif self.mode == "bar" or level == "warning":
            writer = self._bar.write if self._bar is not None else None
            line = f"rrsis-geo: {level}: {text}" if level == "warning" else text
            if writer:
                writer(line, file=sys.stderr)
            else:
                print(line, file=sys.stderr)

    def warn(self, text: str) -> None:
        self.message(text, level="warning")

    def result(self, payload: dict[str, Any]) -> None:
        """Final line. In jsonl mode a ``result`` event; otherwise a short summary on stderr."""
        payload = {"event": "result", **payload, "timings": {k: round(v, 3) for k, v in
                                                             self.timings.items()},
                   "peak_rss_mb": round(peak_rss_mb(), 1)}
        if self.mode == "jsonl":
            self._emit(payload)
        elif self.mode == "bar":
            outs = ", ".join(str(v) for v in payload.get("outputs", {}).values() if v)
            print(f"{payload.get('objects', 0)} object(s) -> {outs}", file=sys.stderr)
