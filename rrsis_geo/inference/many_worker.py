"""The worker side of ``segment-many`` (:mod:`rrsis_geo.inference.many`): how a worker process
builds and keeps its model (:class:`ModelSpec`, :func:`worker_segmenter`), the done-markers that
``resume`` reads (:func:`scene_key`, :func:`marker_valid`), and the Dask task that segments one
scene (:func:`run_scene`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rrsis_geo.errors import BadInputError, RrsisError
from rrsis_geo.inference.pipeline import SegmentOptions

if TYPE_CHECKING:
    from rrsis_geo.inference.many import ScenePlan
    from rrsis_geo.model.protocol import ReferringModel


# -- the model on the workers --------------------------------------------------------------------

@dataclass(frozen=True)
class ModelSpec:
    """How a worker builds its ``Segmenter``; picklable, shipped with every task.

    Attributes:
        weights: weights file (None = the default weights), ignored when ``factory`` is given.
        device, precision: as for ``segment``.
        factory: zero-argument picklable callable returning a
            :class:`~rrsis_geo.model.protocol.ReferringModel` (tests and benchmarks use a
            stand-in); built on the worker itself.
        torch_threads: intra-op threads for torch on the worker (None = leave as configured).
        token: cache key; filled by :meth:`with_token`.
    """

    weights: str | None = None
    device: str = "auto"
    precision: str = "auto"
    factory: Callable[[], ReferringModel] | None = None
    torch_threads: int | None = None
    token: str = ""

    def with_token(self) -> "ModelSpec":
        """Same spec with ``token`` = a hash of what determines the loaded model."""
        if self.factory is not None:
            try:
                import cloudpickle

                ident = hashlib.sha256(cloudpickle.dumps(self.factory)).hexdigest()
            except Exception:  # an exotic factory: fall back to its repr (still per-process stable)
                ident = repr(self.factory)
        else:
            ident = _weights_ident(self.weights)
        # torch_threads is left out: it changes speed, not results (and resume must survive
        # a different --workers)
        blob = json.dumps([ident, self.device, self.precision])
        return dataclasses.replace(self, token=hashlib.sha256(blob.encode()).hexdigest()[:16])


def _weights_ident(weights: str | None) -> str:
    """Path + size + mtime of the weights that ``resolve_weights`` would load (or the bare name)."""
    try:
        from rrsis_geo.defaults import resolve_weights

        p = resolve_weights(weights)
        st = p.stat()
        return f"{p.resolve()}:{st.st_size}:{st.st_mtime_ns}"
    except (RrsisError, OSError):
        return str(weights)


# One model per worker process, shared by its threads. Keyed by ModelSpec.token; a new spec
# replaces the old model so that a long-lived worker never holds two.
_SEGMENTERS: dict[str, Any] = {}
_LOADS: Counter[str] = Counter()
# A model that failed to load fails the same way for every scene: remember the error instead of
# re-reading a bad checkpoint once per scene.
_LOAD_ERRORS: dict[str, RrsisError] = {}
_LOCK = threading.Lock()


def worker_segmenter(spec: ModelSpec, expression: str | None = None):
    """This process's ``Segmenter`` for ``spec`` (loaded on first use, then kept).

    With ``expression`` the text is encoded under the lock, so concurrent threads of one worker
    encode it once.
    """
    from rrsis_geo.inference.segmenter import Segmenter

    token = spec.token or spec.with_token().token
    with _LOCK:
        if token in _LOAD_ERRORS:
            raise _LOAD_ERRORS[token]
        seg = _SEGMENTERS.get(token)
        if seg is None:
            _SEGMENTERS.clear()
            if spec.torch_threads:
                import torch

                torch.set_num_threads(int(spec.torch_threads))
            try:
                model = spec.factory() if spec.factory is not None else None
                seg = Segmenter(spec.weights, device=spec.device, precision=spec.precision,
                                model=model)
            except RrsisError as exc:
                _LOAD_ERRORS[token] = exc
                raise
            _SEGMENTERS[token] = seg
            _LOADS[token] += 1
        if expression is not None:
            seg.encode(expression)
    return seg


# -- done-markers (resume) -----------------------------------------------------------------------

def scene_key(input_path: str, expression: str, opts: SegmentOptions, spec: ModelSpec) -> str:
    """What determines a scene's output: the input file's identity, sentence, options, model."""
    from rrsis_geo.geo.sources import is_local

    st = os.stat(input_path) if is_local(input_path) else None  # a URL: its path stands for it
    fields = {k: v for k, v in dataclasses.asdict(opts).items()
              if k not in ("resume", "prob_raster", "write_mode")}
    blob = json.dumps({"input": os.path.abspath(input_path) if st else input_path,
                       "size": st.st_size if st else None,
                       "mtime": st.st_mtime_ns if st else None, "expr": expression.strip(), "opts": fields,
                       "model": spec.token}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(json.dumps(payload, indent=1), encoding="utf-8")
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def marker_valid(plan: ScenePlan, key: str) -> bool:
    """True when the scene finished with this key and its output is still the one written."""
    try:
        data = json.loads(Path(plan.marker).read_text(encoding="utf-8"))
        st = os.stat(plan.output)
    except (OSError, ValueError):
        return False
    return (data.get("key") == key and data.get("size") == st.st_size
            and data.get("mtime_ns") == st.st_mtime_ns)


# -- the task ------------------------------------------------------------------------------------

def run_scene(plan: ScenePlan, expression: str, opts: SegmentOptions, spec: ModelSpec,
               key: str | None) -> dict[str, Any]:
    """One Dask task: segment one scene on this worker; our errors become a ``failed`` record.

    Unexpected exceptions propagate so that Dask's ``retries`` can rerun the scene.
    """
    from rrsis_geo.inference.pipeline import segment_raster

    t0 = time.perf_counter()
    record: dict[str, Any] = {"index": plan.index, "input": plan.input, "output": plan.output,
                              "worker": f"{os.uname().nodename}:{os.getpid()}"}
    with contextlib.suppress(OSError):
        os.unlink(plan.marker)  # the old output is no longer "done" until this run finishes
    try:
        from rrsis_geo.geo.sources import is_local

        if is_local(plan.path) and not os.path.isfile(plan.path):
            raise BadInputError(f"no such file: {plan.input}")
        key = key or scene_key(plan.path, expression, opts, spec)
        seg = worker_segmenter(spec, expression)
        result = segment_raster(plan.path, expression, plan.output, opts, segmenter=seg)
    except RrsisError as exc:
        return {**record, "status": "failed", "error": str(exc), "exit_code": exc.exit_code,
                "wall_seconds": round(time.perf_counter() - t0, 3)}
    st = os.stat(plan.output)
    _write_json_atomic(Path(plan.marker), {"key": key, "input": plan.path,
                                           "output": os.path.basename(plan.output),
                                           "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                                           "objects": result.get("objects", 0)})
    return {**record, "status": "ok", "objects": int(result.get("objects", 0)),
            "tiles": result.get("tiles"), "wall_seconds": round(time.perf_counter() - t0, 3),
            "model_loads": _LOADS[spec.token],
            "encode_calls": getattr(seg.model, "encode_calls", None)}
