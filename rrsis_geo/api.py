"""The Python API for notebooks and scripts: a model loaded once, GeoDataFrames back.

    import rrsis_geo
    model = rrsis_geo.Model()                       # the shipped demo model, CPU or CUDA
    gdf = model.segment("scene.tif", "the blue basketball court")
    gdf = rrsis_geo.segment("scene.tif", ["the pond", "the tennis court"])  # one-off
    png = rrsis_geo.quicklook("scene.tif", gdf)     # PNG bytes (shown inline in Jupyter)

Each call runs the same pipeline as ``rrsis-geo segment`` (``inference.pipeline``) into a
temporary GeoPackage and returns its features as a ``geopandas.GeoDataFrame`` in the raster's
CRS (or ``dst_crs``), with ``expression``, ``score``, ``area_m2`` and ``rank``; ``output=``
also writes them to a file with the CLI's formats and overwrite rules.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from rrsis_geo.errors import UsageError
from rrsis_geo.progress import Reporter

__all__ = ["Model", "QuickLook", "quicklook", "segment"]

#: ``progress(stage, done, total)``; stage is "open", "normalize", "tiles", "select", "write"
ProgressCallback = Callable[[str, int, int], None]


class _CallbackReporter(Reporter):
    """A silent :class:`Reporter` that calls ``callback(stage, done, total)`` on each step."""

    def __init__(self, callback: ProgressCallback | None, prefix: str = "") -> None:
        super().__init__("none")
        self.callback = callback
        self.prefix = prefix

    def _call(self) -> None:
        if self.callback is not None and self._stage is not None:
            self.callback(self.prefix + self._stage, self._done, self._total)

    def stage(self, name: str, total: int = 0, unit: str = "it"):  # type: ignore[override]
        outer = super().stage(name, total, unit)

        class _Ctx:
            def __enter__(ctx):  # noqa: N805
                value = outer.__enter__()
                self._call()
                return value

            def __exit__(ctx, *exc):  # noqa: N805
                self._done = self._total
                self._call()
                return outer.__exit__(*exc)

        return _Ctx()

    def advance(self, n: int = 1) -> None:
        super().advance(n)
        self._call()


def _options(options: dict[str, Any]):
    from rrsis_geo.inference.pipeline import SegmentOptions

    names = {f.name for f in fields(SegmentOptions)}
    unknown = sorted(set(options) - names)
    if unknown:
        raise UsageError(f"unknown option(s) {', '.join(unknown)}; known: "
                         f"{', '.join(sorted(names))}")
    return SegmentOptions(**options)


class Model:
    """A referring-segmentation model loaded once; segment many rasters and sentences with it.

    Args:
        weights: ``.safetensors`` (+ ``.json`` card) or an official ``.pth``; None = the
            shipped demo model (or ``$RRSIS_GEO_WEIGHTS``).
        device: "auto" (CUDA when available), "cpu" or "cuda".
        precision: "auto", "fp32", "bf16" or "fp16".
    """

    def __init__(self, weights: str | os.PathLike | None = None, device: str = "auto",
                 precision: str = "auto") -> None:
        from rrsis_geo.inference.segmenter import Segmenter

        self.segmenter = Segmenter(weights, device=device, precision=precision)

    @classmethod
    def from_segmenter(cls, segmenter: Any) -> "Model":
        """Wrap an existing :class:`~rrsis_geo.inference.segmenter.Segmenter`."""
        self = cls.__new__(cls)
        self.segmenter = segmenter
        return self

    @property
    def device(self) -> str:
        return str(self.segmenter.device)

    def __repr__(self) -> str:
        return f"Model(weights={self.segmenter.weights_path!r}, device={self.device!r})"

    def segment(self, raster: str | os.PathLike, expression: str | Sequence[str], *,
                output: str | os.PathLike | None = None, overwrite: bool = False,
                append: bool = False, progress: ProgressCallback | None = None,
                reporter: Reporter | None = None, **options: Any):
        """Find what ``expression`` refers to in ``raster``; return a GeoDataFrame.

        Args:
            raster: anything GDAL opens (a path, ``/vsizip/…``, ``https://…``, ``s3://…``).
            expression: one sentence, or a list of sentences: one row set per sentence, all in
                one GeoDataFrame told apart by its ``expression`` column (one pass over the
                raster: each tile is read once and goes through the model for every sentence).
            output: also write the features here (format from the extension or ``driver=``;
                an existing file needs ``overwrite=True`` or ``append=True``).
            progress: ``callback(stage, done, total)``, e.g. to drive a notebook progress bar
                (one "tiles" stage covers all the sentences).
            reporter: a :class:`rrsis_geo.progress.Reporter` instead (the CLI's bars or JSON
                lines).
            **options: fields of ``SegmentOptions`` (the CLI's options with underscores):
                ``mode="all"``, ``min_score``, ``min_area``, ``roi``, ``bands``, ``tile_size``,
                ``dst_crs``, ``layer``, ``driver``, ... Typed values: ``bands=(4, 3, 2)``,
                ``gsd=0.5`` (or ``"auto"`` / ``"native"``), ``batch_size`` and
                ``check_budget`` ``"auto"`` or an int, ``roi=(xmin, ymin, xmax, ymax)`` in the
                raster's CRS or a vector file / WKT / GeoJSON text; the command line's text
                forms (``bands="4,3,2"``, ``gsd="0.5"``, ``roi="x0,y0,x1,y1"``) are accepted
                too. A bad value raises :class:`rrsis_geo.errors.OptionError` (a
                ``UsageError``) whose ``field`` names the option.

        Returns:
            ``geopandas.GeoDataFrame`` with ``expression``, ``score``, ``area_m2``, ``rank`` and
            the polygons (empty, with the CRS, when nothing is found).
        """
        import geopandas as gpd
        import pandas as pd
        import pyogrio

        from rrsis_geo.geo.output import DEFAULT_LAYER, check_vector_output, write_layer
        from rrsis_geo.inference.pipeline import segment_raster
        from rrsis_geo.safety import check_expression, check_outputs

        expressions = [expression] if isinstance(expression, str) else list(expression)
        if not expressions:
            raise UsageError("no expression given")
        for e in expressions:
            check_expression(e)
        if overwrite and append:
            raise UsageError("overwrite and append exclude each other")
        mode = "overwrite" if overwrite else "append" if append else "create"
        dst_crs = options.pop("dst_crs", None)
        driver = options.pop("driver", None)
        layer = options.pop("layer", DEFAULT_LAYER)
        opts = _options(options)
        opts.validate()
        if output is not None:  # before any work, as on the CLI
            check_outputs([("input", os.fspath(raster))], [("output", os.fspath(output))])
            check_vector_output(output, driver=driver, layer=layer, mode=mode)
        if len(expressions) > 1 and (opts.prob_raster or opts.resume):
            raise UsageError("--prob-raster and --resume take one expression")
        # the run's scratch (tile sums) lives beside the output when there is one: a large
        # raster's scratch may not fit the system's temporary folder
        where = os.path.dirname(os.path.abspath(output)) if output is not None else None
        with tempfile.TemporaryDirectory(prefix=".rrsis-geo-", dir=where) as tmp:
            out = Path(tmp) / "run.gpkg"
            # several sentences: one pass over the raster (each tile read once), one layer
            segment_raster(raster, expressions if len(expressions) > 1 else expressions[0],
                           out, opts, segmenter=self.segmenter,
                           reporter=reporter or _CallbackReporter(progress))
            df = pyogrio.read_dataframe(out, layer=opts.layer)
            crs = df.crs
            frames = [df]
        gdf = gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), geometry="geometry",
                               crs=crs)
        if dst_crs is not None and gdf.crs is not None:
            gdf = gdf.to_crs(dst_crs)
        if output is not None:
            cols = [c for c in gdf.columns if c != "geometry"]
            write_layer(output, gdf[cols].to_dict("records"), list(gdf.geometry), gdf.crs,
                        layer=layer, driver=driver, mode=mode)
        return gdf


def segment(raster: str | os.PathLike, expression: str | Sequence[str], *,
            weights: str | os.PathLike | None = None, device: str = "auto",
            precision: str = "auto", model: Model | None = None, **options: Any):
    """One-off :meth:`Model.segment` (loads the model; pass ``model=`` to reuse one)."""
    model = model or Model(weights, device=device, precision=precision)
    return model.segment(raster, expression, **options)


class QuickLook:
    """PNG bytes of a quick-look; shown as an image in Jupyter (``_repr_png_``)."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def _repr_png_(self) -> bytes:
        return self.data

    def save(self, path: str | os.PathLike) -> Path:
        from rrsis_geo.geo.output import write_text_atomic  # noqa: F401 - same folder rules

        p = Path(path)
        p.write_bytes(self.data)
        return p

    def __bytes__(self) -> bytes:
        return self.data


def quicklook(raster: str | os.PathLike, result: Any = None, *, expression: str | None = None,
              bands: str | Sequence[int] | None = None, zoom: bool = False,
              max_side: int = 1024) -> QuickLook:
    """A PNG of ``raster`` with ``result`` (a GeoDataFrame from :func:`segment`, or a vector
    file) outlined in yellow; ``zoom`` crops to the found objects. ``bytes(q)`` is the PNG."""
    from rrsis_geo.geo.render import render_png

    with tempfile.TemporaryDirectory(prefix="rrsis-geo-") as tmp:
        vector = None
        if result is not None and not isinstance(result, (str, os.PathLike)):
            vector = Path(tmp) / "result.gpkg"
            frame = result if result.geometry.name == "geometry" else result.rename_geometry(
                "geometry")
            import pyogrio

            pyogrio.write_dataframe(frame, vector, layer="result")
            if expression is None and "expression" in frame.columns and len(frame):
                expression = "; ".join(dict.fromkeys(str(e) for e in frame["expression"]))
        elif result is not None:
            vector = result
        png = Path(tmp) / "quicklook.png"
        render_png(raster, png, vector=vector, expression=expression, bands=bands,
                   max_side=max_side, crop_to="result" if zoom else "scene")
        return QuickLook(png.read_bytes())
