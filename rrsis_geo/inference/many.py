"""Many scenes at once on Dask distributed (``rrsis-geo segment-many``).

One Dask task per scene runs :func:`rrsis_geo.inference.pipeline.segment_raster` on a worker. Each
worker process loads the model once and keeps it (a module-level cache keyed by the model spec),
and the sentence is encoded once per worker (``Segmenter.encode`` caches it). By default the work
runs on a ``LocalCluster`` of worker *processes* on this machine; ``scheduler=ADDRESS`` uses an
existing cluster instead (the inputs and the output folder must then be on a filesystem that every
worker sees under the same path).

Outputs in ``out_dir``:
    ``<stem>.gpkg``        one layer per scene, in the scene's CRS (as ``segment`` writes it);
    ``merged.gpkg``        every scene's features in one layer and one CRS (``dst_crs``, else the CRS
                           of the first scene in input order that produced an output), with a
                           ``source`` attribute (the input path as given), ordered by input order
                           then ``rank``;
    ``.rrsis-many/<stem>.json``  done-markers: the scene's run key and the output's size and mtime.
                           ``resume=True`` skips a scene whose marker matches (same input file,
                           expression, options and weights, output unchanged).

Failure handling:
    * a scene that raises one of our errors (bad raster, ...) is reported and skipped; the others
      go on. It is listed in the result's ``failed`` list with its message and exit code;
    * a scene whose worker process dies (killed, segfault, OOM-killer) is rerun on another worker by
      the scheduler (up to ``distributed.scheduler.allowed-failures`` times, default 3);
    * any other exception is retried ``retries`` times (default 1), then reported as failed.

Exit code (:func:`exit_code_for`): 0 when every scene succeeded (or was skipped as finished);
otherwise the shared exit code when *every* scene failed with the same one (e.g. 4 for unusable
weights), else 3 (bad input: some scenes could not be segmented). The outputs of the successful
scenes, including ``merged.gpkg``, are written in every case.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rrsis_geo.errors import BadInputError, UsageError
from rrsis_geo.inference.many_worker import (ModelSpec, marker_valid, run_scene, scene_key,
                                             worker_segmenter)
from rrsis_geo.inference.pipeline import SegmentOptions
from rrsis_geo.progress import Reporter

__all__ = [
    "INSTALL_HINT",
    "MERGED_NAME",
    "ModelSpec",
    "ScenePlan",
    "exit_code_for",
    "expand_inputs",
    "local_cluster",
    "merge_layers",
    "plan_scenes",
    "require_distributed",
    "segment_many",
    "worker_segmenter",
]

INSTALL_HINT = "segment-many needs Dask distributed: pip install 'rrsis_geo[distributed]'"
MERGED_NAME = "merged.gpkg"
MARKER_DIR = ".rrsis-many"
_GLOB_CHARS = set("*?[")


def require_distributed() -> None:
    """Raise a one-line ``UsageError`` (exit 2) naming the extra when Dask is not installed."""
    try:
        import dask  # noqa: F401
        import distributed  # noqa: F401
    except ImportError as exc:
        raise UsageError(INSTALL_HINT) from exc


# -- inputs ------------------------------------------------------------------------------------

def _read_list(path: Path) -> list[str]:
    """Paths listed one per line; blank lines and ``#`` comments skipped; relative to the list."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise UsageError(f"cannot read the list of inputs {path}: {exc.strerror or exc}") from exc
    out = []
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        from rrsis_geo.geo.sources import is_local

        if not is_local(line):  # a URL or /vsi… path is taken as written
            out.append(line)
            continue
        p = Path(os.path.expanduser(line))
        out.append(str(p if p.is_absolute() else path.parent / p))
    return out


def expand_inputs(items: Iterable[str]) -> list[str]:
    """Turn ``INPUTS...`` into a list of raster paths, in order, without duplicates.

    Each item is a file, a glob (``tiles/*.tif``, ``**`` recurses; matches sorted), ``@list.txt``
    or a ``.txt`` file holding one path per line (relative paths are relative to the list file;
    ``#`` starts a comment). A plain path that does not exist is kept, so that it is reported as a
    failed scene like any other unreadable input.

    Raises:
        UsageError: a glob matches nothing, a list file cannot be read, or nothing is left.
    """
    out: list[str] = []
    seen: set[str] = set()

    from rrsis_geo.geo.sources import is_local

    def add(p: str) -> None:
        key = os.path.abspath(p) if is_local(p) else p
        if key not in seen:
            seen.add(key)
            out.append(p)

    for item in items:
        item = str(item)
        if item.startswith("@"):
            for p in _read_list(Path(item[1:])):
                add(p)
        elif item.lower().endswith(".txt") and Path(item).is_file():
            for p in _read_list(Path(item)):
                add(p)
        elif _GLOB_CHARS & set(item) and is_local(item) and not Path(item).exists():
            matches = sorted(glob.glob(os.path.expanduser(item), recursive=True))
            matches = [m for m in matches if Path(m).is_file()]
            if not matches:
                raise UsageError(f"no file matches {item!r}")
            for m in matches:
                add(m)
        else:
            add(item)
    if not out:
        raise UsageError("no input rasters given")
    return out


# -- plan: one output and one done-marker per scene ----------------------------------------------

@dataclass(frozen=True)
class ScenePlan:
    """Where one scene's results go.

    ``index`` is its position in the input order, ``input`` the path as given (reported, and the
    ``source`` attribute), ``path`` its absolute form (what workers open: their working folder
    need not be ours), ``output``/``marker`` absolute.
    """

    index: int
    input: str
    path: str
    stem: str
    output: str
    marker: str


def plan_scenes(inputs: Sequence[str], out_dir: str | os.PathLike) -> list[ScenePlan]:
    """One ``<stem>.gpkg`` per input; clashing stems (same name in two folders, or ``merged``)
    get ``-2``, ``-3``... in input order, so the mapping is stable between runs (``--resume``)."""
    from rrsis_geo.geo.sources import gdal_path, is_local

    out_dir = Path(out_dir).absolute()
    taken = {Path(MERGED_NAME).stem.lower()}
    plans = []
    for i, inp in enumerate(inputs):
        local = is_local(inp)
        name = inp if local else inp.split("?", 1)[0].rstrip("/")  # no URL query in a stem
        base = Path(name).stem or f"scene{i}"
        stem, n = base, 1
        while stem.lower() in taken:
            n += 1
            stem = f"{base}-{n}"
        taken.add(stem.lower())
        plans.append(ScenePlan(i, inp, os.path.abspath(inp) if local else gdal_path(inp), stem,
                               str(out_dir / f"{stem}.gpkg"),
                               str(out_dir / MARKER_DIR / f"{stem}.json")))
    return plans


# -- merge ---------------------------------------------------------------------------------------

def merge_layers(items: Sequence[tuple[str, str]], output: str | os.PathLike,
                 layer: str = "referred_objects", dst_crs: Any = None) -> dict[str, Any]:
    """Merge per-scene layers into one GeoPackage layer with a ``source`` attribute.

    Args:
        items: ``(source, path)`` pairs in the order the features should appear; within a scene
            features are ordered by ``rank``.
        output: the merged GeoPackage (written atomically).
        layer: layer name to read and to write.
        dst_crs: target CRS (anything pyproj accepts); None = the first layer's CRS.

    Returns:
        ``{"path", "crs", "features", "left_out"}``; ``path`` is None when there was nothing to
        merge and no ``dst_crs`` to give an empty layer a CRS. ``left_out``: the sources whose
        layer has no CRS (images without one, their objects in pixel coordinates: no common
        frame with the others), not merged.

    Note:
        ``area_m2`` is kept as computed in the scene's own CRS (a true area), not recomputed in the
        target CRS, which may be geographic.
    """
    import pyogrio
    from pyproj import CRS

    from rrsis_geo.geo.output import DEFAULT_SCHEMA, write_layer

    target = _parse_crs(dst_crs) if dst_crs is not None else None
    records: list[dict[str, Any]] = []
    geoms: list[Any] = []
    left_out: list[str] = []
    for source, path in items:
        frame = pyogrio.read_dataframe(path, layer=layer)
        if frame.crs is None:
            left_out.append(source)
            continue
        if target is None:
            target = CRS.from_user_input(frame.crs)
        if not CRS.from_user_input(frame.crs).equals(target):
            frame = frame.to_crs(target)
        if "rank" in frame.columns and len(frame):
            frame = frame.sort_values("rank", kind="stable")
        cols = [c for c in frame.columns if c != frame.geometry.name]
        for row, geom in zip(frame[cols].to_dict("records"), frame.geometry):
            records.append({"source": source, **row})
            geoms.append(geom)
    if target is None:
        return {"path": None, "crs": None, "features": 0, "left_out": left_out}
    write_layer(output, records, geoms, target, layer=layer,
                schema={"source": str, **DEFAULT_SCHEMA})
    return {"path": str(output), "crs": target.to_string(), "features": len(records),
            "left_out": left_out}


def _parse_crs(value: Any):
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    try:
        return CRS.from_user_input(value)
    except CRSError as exc:
        raise UsageError(f"--dst-crs: not a CRS: {value!r}") from exc


# -- orchestration -------------------------------------------------------------------------------

def exit_code_for(result: dict[str, Any]) -> int:
    """0 all ok; the shared code when every scene failed with the same one; else 3."""
    failed = result.get("failed") or []
    if not failed:
        return 0
    codes = {int(f.get("exit_code") or 1) for f in failed}
    if len(failed) == result.get("scenes") and len(codes) == 1:
        return codes.pop()
    return BadInputError.exit_code


def _error_text(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    name = type(exc).__name__
    if name == "KilledWorker":
        return "its worker died repeatedly while running it (" + (text or name) + ")"
    return f"{name}: {text}" if text else name


def local_cluster(workers: int = 2, threads_per_worker: int = 1):
    """A ``LocalCluster`` of worker processes for model inference (quiet, no dashboard).

    Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which also freezes glibc's
    mmap threshold at 128 KiB, so every large tensor would cost an mmap/munmap and fresh page
    faults (one worker ran the tiny FIANet ~2x slower). Nothing needs doing about it here: each
    worker's :class:`~rrsis_geo.inference.segmenter.Segmenter` calls
    :func:`~rrsis_geo.inference.device.keep_freed_memory`, which sets both thresholds itself
    (measured with that variable set: 434 k -> 864 minor faults and 1.81 -> 0.80 s for 8 batches
    of 4 tiles), also on the workers of a remote ``--scheduler`` that this function never starts.
    """
    from distributed import LocalCluster

    return LocalCluster(n_workers=workers, threads_per_worker=threads_per_worker,
                        processes=True, dashboard_address=None, silence_logs=logging.ERROR)


@contextlib.contextmanager
def _client(client, scheduler: str | None, workers: int, threads_per_worker: int):
    """Yield a Dask client: the given one, one connected to ``scheduler``, or a LocalCluster's."""
    if client is not None:
        yield client
        return
    from distributed import Client

    if scheduler:
        try:
            c = Client(scheduler, timeout="30s")
        except (OSError, TimeoutError, ValueError) as exc:
            raise UsageError(f"cannot connect to the Dask scheduler {scheduler}: {exc}") from exc
        try:
            yield c
        finally:
            c.close()
        return
    cluster = local_cluster(workers, threads_per_worker)
    c = Client(cluster)
    try:
        yield c
    finally:
        c.close()
        cluster.close()


def segment_many(inputs: Sequence[str], expression: str, out_dir: str | os.PathLike,
                 opts: SegmentOptions | None = None, *, weights: str | None = None,
                 device: str = "auto", precision: str = "auto", workers: int = 2,
                 threads_per_worker: int = 1, scheduler: str | None = None, client: Any = None,
                 dst_crs: Any = None, prob_rasters: bool = False,
                 reporter: Reporter | None = None, model_factory: Callable[[], Any] | None = None,
                 retries: int = 1, torch_threads: int | None = None) -> dict[str, Any]:
    """Segment every scene of ``inputs`` with one sentence on Dask; merge the results.

    Args:
        inputs: raster paths (see :func:`expand_inputs` for globs and list files).
        expression: the referring sentence, applied to every scene.
        out_dir: output folder (created when missing).
        opts: segment options; ``opts.resume`` skips finished scenes (and lets an interrupted
            scene continue from its tiles); ``opts.prob_raster`` is ignored (see ``prob_rasters``).
        weights, device, precision: the model, as for ``segment``.
        workers, threads_per_worker: size of the LocalCluster (ignored with scheduler/client).
        scheduler: address of an existing Dask scheduler, e.g. ``tcp://10.0.0.5:8786``.
        client: an existing ``distributed.Client`` to use (left open).
        dst_crs: CRS of ``merged.gpkg``; None = the first finished scene's CRS (input order).
        prob_rasters: also write ``<stem>.prob.tif`` per scene.
        reporter: progress over scenes (one ``scenes`` stage, then ``merge``).
        model_factory: build the model from this picklable zero-argument callable on each worker
            instead of loading ``weights`` (stand-ins, custom models).
        retries: reruns of a scene that raised an unexpected exception.
        torch_threads: torch intra-op threads per worker. None: this machine's cores split
            between the local workers; with ``client``/``scheduler`` the workers' own setting
            (Dask's nanny starts workers with ``OMP_NUM_THREADS=1``).

    Returns:
        The result payload: ``outputs`` (merged file, out_dir), ``objects``, ``scenes``,
        ``succeeded``, ``skipped``, ``failed`` (``[{input, error, exit_code}]``), per-scene
        records under ``scene_results`` (input order), ``crs`` and ``wall_seconds``.

    Raises:
        UsageError: Dask missing, bad options, unreachable scheduler.
        WeightsError: the weights cannot be found (checked before any worker starts).
    """
    require_distributed()
    t_start = time.perf_counter()
    rep = reporter or Reporter("none")
    # the scenes' layers in --out-dir are this command's own: a rerun replaces them
    opts = dataclasses.replace(opts or SegmentOptions(), prob_raster=None,
                               write_mode="overwrite")
    opts.validate()
    from rrsis_geo.safety import check_expression

    check_expression(expression)
    if workers < 1 or threads_per_worker < 1:
        raise UsageError("--workers and --threads-per-worker must be at least 1")
    if retries < 0:
        raise UsageError("--retries must not be negative")
    if dst_crs is not None:
        _parse_crs(dst_crs)
    local = client is None and not scheduler
    if model_factory is None and local:
        from rrsis_geo.defaults import resolve_weights

        weights = str(resolve_weights(weights))  # fail fast, before any worker starts
    out = Path(out_dir)
    plans = plan_scenes(list(inputs), out)
    _check_many_outputs(plans, out, weights if model_factory is None else None, prob_rasters)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create the output folder {out}: {exc.strerror or exc}") from exc
    from rrsis_geo.safety import exclusive_lock

    with exclusive_lock(out / MARKER_DIR, f"to the folder {out}"):
        return _segment_many_locked(
            plans, expression, out, opts, weights=weights, device=device, precision=precision,
            workers=workers, threads_per_worker=threads_per_worker, scheduler=scheduler,
            client=client, dst_crs=dst_crs, prob_rasters=prob_rasters, rep=rep,
            model_factory=model_factory, retries=retries, torch_threads=torch_threads,
            local=local, t_start=t_start)


def _check_many_outputs(plans: Sequence[ScenePlan], out: Path, weights: str | None,
                        prob_rasters: bool) -> None:
    """Before any worker starts: no scene's output (layer, probability raster, merged.gpkg) is
    an input of the run or another output, and the output folder can be written."""
    from rrsis_geo.safety import check_folder_writable, check_outputs

    if out.exists() and not out.is_dir():
        raise UsageError(f"--out-dir {out} is a file, not a folder")
    if not out.exists():  # nothing inside it can be an input; its parent must take a folder
        parent = out.absolute().parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        check_folder_writable(parent, "--out-dir's parent")
        return
    inputs: list[Any] = [("input", p.path) for p in plans]
    if weights:
        inputs += [("weights", weights), ("model card", str(Path(weights).with_suffix(".json")))]
    outputs: list[Any] = [("output", p.output) for p in plans]
    if prob_rasters:
        outputs += [("probability raster", str(Path(p.output).with_suffix(".prob.tif")))
                    for p in plans]
    outputs.append(("merged layer", str(out / MERGED_NAME)))
    check_outputs(inputs, outputs)


def _segment_many_locked(plans, expression, out, opts, *, weights, device, precision, workers,
                         threads_per_worker, scheduler, client, dst_crs, prob_rasters, rep,
                         model_factory, retries, torch_threads, local, t_start) -> dict[str, Any]:
    """:func:`segment_many` once the outputs are checked and ``out`` is locked for this run."""
    # Torch's intra-op pool per worker: split this machine's cores between the local workers
    # (Dask's nanny sets OMP_NUM_THREADS=1 otherwise). Remote workers keep their own setting.
    threads = torch_threads
    if threads is None and local:
        threads = max(1, (os.cpu_count() or 1) // workers)
    spec = ModelSpec(weights=weights, device=device, precision=precision,
                     factory=model_factory, torch_threads=threads).with_token()

    records: dict[int, dict[str, Any]] = {}
    todo: list[tuple[ScenePlan, str | None]] = []
    for plan in plans:
        key = None
        with contextlib.suppress(OSError):
            key = scene_key(plan.path, expression, opts, spec)
        if opts.resume and key and marker_valid(plan, key):
            records[plan.index] = {"index": plan.index, "input": plan.input,
                                   "output": plan.output, "status": "skipped"}
        else:
            todo.append((plan, key))

    with rep.stage("scenes", total=len(plans), unit="scene"):
        if records:
            rep.message(f"resuming: {len(records)} of {len(plans)} scenes already done")
            rep.advance(len(records))
        if todo:
            with _client(client, scheduler, workers, threads_per_worker) as c:
                _run_all(c, todo, expression, opts, spec, prob_rasters, retries, records, rep)

    ordered = [records[p.index] for p in plans]
    done = [r for r in ordered if r["status"] in ("ok", "skipped")]
    merged: dict[str, Any] = {"path": None, "crs": None, "features": 0, "left_out": []}
    if done or dst_crs is not None:
        with rep.stage("merge", total=len(done), unit="layer"):
            merged = merge_layers([(r["input"], r["output"]) for r in done], out / MERGED_NAME,
                                  layer=opts.layer, dst_crs=dst_crs)
            rep.advance(len(done))
    if merged["left_out"]:
        rep.warn(f"{len(merged['left_out'])} scene(s) without a CRS left out of merged.gpkg "
                 "(their objects are in pixel coordinates, in their own layers): "
                 + ", ".join(os.path.basename(s) for s in merged["left_out"]))
    if merged["path"] is None:
        rep.warn("no scene with a CRS produced an output; merged.gpkg was not written"
                 if merged["left_out"] else
                 "no scene produced an output; merged.gpkg was not written")

    failed = [{"input": r["input"], "error": r["error"], "exit_code": r["exit_code"]}
              for r in ordered if r["status"] == "failed"]
    return {
        "outputs": {"merged": merged["path"], "out_dir": str(out)},
        "objects": merged["features"],
        "scenes": len(plans),
        "succeeded": sum(r["status"] == "ok" for r in ordered),
        "skipped": sum(r["status"] == "skipped" for r in ordered),
        "failed": failed,
        "crs": merged["crs"],
        "scene_results": ordered,
        "wall_seconds": round(time.perf_counter() - t_start, 3),
    }


def _run_all(client, todo, expression, opts, spec, prob_rasters, retries, records, rep) -> None:
    """Submit one task per scene (input order) and collect them as they complete."""
    from distributed import as_completed

    futures = {}
    for plan, key in todo:
        scene_opts = opts
        if prob_rasters:
            scene_opts = dataclasses.replace(
                opts, prob_raster=str(Path(plan.output).with_suffix(".prob.tif")))
        fut = client.submit(run_scene, plan, expression, scene_opts, spec, key,
                            key=f"rrsis-scene-{plan.index}-{uuid.uuid4().hex[:8]}",
                            retries=retries, pure=False)
        futures[fut] = plan
    try:
        for fut in as_completed(list(futures)):
            plan = futures[fut]
            if fut.status == "finished":
                rec = fut.result()
            else:
                exc = fut.exception() if fut.status == "error" else None
                rec = {"index": plan.index, "input": plan.input, "output": plan.output,
                       "status": "failed", "exit_code": 1,
                       "error": _error_text(exc) if exc is not None else fut.status}
            records[plan.index] = rec
            if rec["status"] == "failed":
                rep.warn(f"{plan.input}: {rec['error']} (skipped)")
            else:
                rep.message(f"{plan.input}: {rec['objects']} object(s) -> {rec['output']}")
            rep.advance(1)
            fut.release()
    except BaseException:
        client.cancel(list(futures))  # Ctrl-C or a lost scheduler: stop the queued scenes
        raise

