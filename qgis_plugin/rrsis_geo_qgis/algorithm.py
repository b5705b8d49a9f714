"""Processing algorithm ``rrsis_geo:segment``: runs ``rrsis-geo segment`` on a raster layer.

The heavy lifting (PyTorch, the model, tiling, vectorization) happens in the CLI's own Python
environment; this module only turns parameters into an argument list and feedback back into
QGIS (see runner.py).
"""

from __future__ import annotations

import os
import uuid
from typing import Any

from qgis.core import (
    Qgis,
    QgsFeatureRequest,
    QgsGeometry,
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBand,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorDestination,
    QgsProcessingUtils,
)
from qgis.PyQt.QtCore import QCoreApplication

from .runner import (
    CliError,
    build_segment_command,
    find_executable,
    missing_executable_message,
    run_cli,
)

# Enums moved to ``Qgis`` in QGIS 3.36 and the old spellings are gone in QGIS 4 (Qt6): pick
# whichever this QGIS has, so one plugin file serves 3.22 … 4.x.
_PST = getattr(Qgis, "ProcessingSourceType", None)
_NUM = getattr(Qgis, "ProcessingNumberParameterType", None)
_FLAG = getattr(Qgis, "ProcessingParameterFlag", None)
_FILE = getattr(Qgis, "ProcessingFileParameterBehavior", None)
TYPE_POLYGON = _PST.VectorPolygon if _PST else QgsProcessing.TypeVectorPolygon
NUM_DOUBLE = _NUM.Double if _NUM else QgsProcessingParameterNumber.Double
NUM_INTEGER = _NUM.Integer if _NUM else QgsProcessingParameterNumber.Integer
FLAG_ADVANCED = _FLAG.Advanced if _FLAG else QgsProcessingParameterDefinition.FlagAdvanced
FILE_BEHAVIOR = _FILE.File if _FILE else QgsProcessingParameterFile.File

DEVICES = ["auto", "cpu", "cuda"]
MODES = ["single", "all"]
PRECISIONS = ["auto", "fp32", "bf16", "fp16"]
#: vector formats offered for the output; rrsis-geo picks the format from the file extension
VECTOR_EXTENSIONS = ("gpkg", "geojson", "fgb", "shp", "kml", "json")


def tr(text: str) -> str:
    return QCoreApplication.translate("RrsisGeo", text)


class SegmentAlgorithm(QgsProcessingAlgorithm):
    """Segment the object a referring expression describes; output GeoPackage polygons."""

    INPUT = "INPUT"
    EXPRESSION = "EXPRESSION"
    WEIGHTS = "WEIGHTS"
    DEVICE = "DEVICE"
    MODE = "MODE"
    THRESHOLD = "THRESHOLD"
    MIN_AREA = "MIN_AREA"
    SIMPLIFY = "SIMPLIFY"
    TILE_SIZE = "TILE_SIZE"
    OVERLAP = "OVERLAP"
    BATCH_SIZE = "BATCH_SIZE"
    RED_BAND = "RED_BAND"
    GREEN_BAND = "GREEN_BAND"
    BLUE_BAND = "BLUE_BAND"
    CLASS_CHECK = "CLASS_CHECK"
    PRECISION = "PRECISION"
    MASK = "MASK"
    GSD = "GSD"
    PIXEL_SIZE = "PIXEL_SIZE"
    MIN_SCORE = "MIN_SCORE"
    MAX_OBJECTS = "MAX_OBJECTS"
    OUTPUT = "OUTPUT"
    PROB_RASTER = "PROB_RASTER"
    EXTENT = "EXTENT"
    OBJECTS = "OBJECTS"

    def __init__(self, executable_setting=None) -> None:
        """Args: executable_setting: callable returning the provider setting (or None)."""
        super().__init__()
        self._executable_setting = executable_setting
        self._temp_files: list[str] = []  # written for the run (the region), removed after it

    # -- identity ------------------------------------------------------------------------
    def name(self) -> str:
        return "segment"

    def displayName(self) -> str:
        return tr("Segment referred object")

    def group(self) -> str:
        return ""

    def groupId(self) -> str:
        return ""

    def tags(self) -> list[str]:
        return ["rrsis", "referring", "segmentation", "text", "prompt", "fianet", "deep learning",
                "object", "sentence"]

    def shortHelpString(self) -> str:
        return tr(
            "Finds the object a sentence refers to in a georeferenced raster (for example "
            "<i>the red building in the upper left</i>) and writes it as polygons with the "
            "fields expression, score, area_m2 and rank, in the raster's CRS.<br><br>"
            "The work is done by the <b>rrsis-geo</b> command-line tool in its own Python "
            "environment (PyTorch is never loaded into QGIS). Set its location in Settings ▸ "
            "Options ▸ Processing ▸ Providers ▸ rrsis_geo, or with the environment variable "
            "RRSIS_GEO_EXE. "
            "The log shows the equivalent command line, so the same job can run on a server."
            "<br><br><b>Mode</b>: <i>single</i> keeps the one best object; <i>all</i> keeps "
            "every object above the minimum score (plural sentences such as <i>the cars on the "
            "road</i>). An empty layer means no object matched.<br>"
            "<b>Model weights</b>: empty = the demo model shipped with rrsis_geo.<br>"
            "<b>Region</b>: an extent and/or a polygon layer (its selected features when "
            "\"Selected features only\" is ticked). The polygons are a mask: outside them is "
            "treated as nodata (not processed, no objects), and objects are clipped to them; "
            "with an extent too, the polygons within it.<br>"
            "<b>Output</b>: the file extension chooses the format (.gpkg, .geojson, .shp, ...).")

    def helpUrl(self) -> str:
        return ""

    def createInstance(self) -> "SegmentAlgorithm":
        return SegmentAlgorithm(self._executable_setting)

    # -- parameters ----------------------------------------------------------------------
    def initAlgorithm(self, config: dict | None = None) -> None:
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, tr("Input raster")))
        self.addParameter(QgsProcessingParameterString(
            self.EXPRESSION, tr("Referring expression (e.g. the large building in the north)")))
        self.addParameter(QgsProcessingParameterFile(
            self.WEIGHTS, tr("Model weights (empty = shipped demo model)"),
            behavior=FILE_BEHAVIOR, optional=True,
            fileFilter=tr("Model weights (*.safetensors *.pth *.pt);;All files (*.*)")))
        self.addParameter(QgsProcessingParameterEnum(
            self.DEVICE, tr("Device"), options=DEVICES, defaultValue=0))
        self.addParameter(QgsProcessingParameterEnum(
            self.MODE, tr("Objects to keep"),
            options=[tr("single: the one referred object"),
                     tr("all: every matching object (plural sentences)")], defaultValue=0))
        self.addParameter(QgsProcessingParameterNumber(
            self.THRESHOLD, tr("Probability threshold"), type=NUM_DOUBLE, defaultValue=0.5,
            minValue=0.0, maxValue=1.0))
        self.addParameter(QgsProcessingParameterNumber(
            self.MIN_AREA, tr("Minimum object area (m²)"), type=NUM_DOUBLE, defaultValue=0.0,
            minValue=0.0))
        self.addParameter(QgsProcessingParameterNumber(
            self.SIMPLIFY, tr("Simplification (pixels, 0 = exact pixel edges)"),
            type=NUM_DOUBLE, defaultValue=1.0, minValue=0.0))
        self.addParameter(QgsProcessingParameterExtent(
            self.EXTENT, tr("Region of interest (not set = the whole raster)"), optional=True))
        self.addParameter(QgsProcessingParameterFeatureSource(
            self.MASK, tr("Region mask from a polygon layer (outside it: nodata)"),
            types=[TYPE_POLYGON], optional=True))

        advanced = [
            QgsProcessingParameterNumber(
                self.TILE_SIZE, tr("Tile size (pixels; not set = model input size)"),
                type=NUM_INTEGER, optional=True, minValue=32, maxValue=8192),
            QgsProcessingParameterNumber(
                self.OVERLAP, tr("Tile overlap (pixels; not set = tile / 4)"),
                type=NUM_INTEGER, optional=True, minValue=0, maxValue=4096),
            QgsProcessingParameterString(
                self.GSD, tr("Ground resolution seen by the model (auto, native or m/pixel)"),
                defaultValue="auto", optional=True),
            QgsProcessingParameterNumber(
                self.PIXEL_SIZE,
                tr("Pixel size in metres, for a raster without a CRS (not set = unknown)"),
                type=NUM_DOUBLE, optional=True, minValue=0.0),
            QgsProcessingParameterNumber(
                self.BATCH_SIZE, tr("Tiles per batch"), type=NUM_INTEGER, defaultValue=4,
                minValue=1, maxValue=256),
            QgsProcessingParameterBand(
                self.RED_BAND, tr("Band shown to the model as red (not set = automatic)"),
                parentLayerParameterName=self.INPUT, optional=True),
            QgsProcessingParameterBand(
                self.GREEN_BAND, tr("Band shown as green"),
                parentLayerParameterName=self.INPUT, optional=True),
            QgsProcessingParameterBand(
                self.BLUE_BAND, tr("Band shown as blue"),
                parentLayerParameterName=self.INPUT, optional=True),
            QgsProcessingParameterBoolean(
                self.CLASS_CHECK, tr("Check candidates against the model's other classes"),
                defaultValue=True),
            QgsProcessingParameterEnum(
                self.PRECISION,
                tr("Precision (auto: bf16 where it is faster and agrees with fp32, else fp32)"),
                options=PRECISIONS, defaultValue=0),
            QgsProcessingParameterNumber(
                self.MIN_SCORE, tr("Minimum object score"), type=NUM_DOUBLE, defaultValue=0.5,
                minValue=0.0, maxValue=1.0),
            QgsProcessingParameterNumber(
                self.MAX_OBJECTS, tr("Maximum objects (not set = no limit)"),
                type=NUM_INTEGER, optional=True, minValue=1),
        ]
        for p in advanced:
            p.setFlags(p.flags() | FLAG_ADVANCED)
            self.addParameter(p)
        for name, decimals in ((self.THRESHOLD, 2), (self.MIN_SCORE, 2), (self.MIN_AREA, 1),
                               (self.SIMPLIFY, 1)):
            # show 0.50, not 0.500000, in the dialog
            self.parameterDefinition(name).setMetadata({"widget_wrapper": {"decimals": decimals}})

        self.addParameter(QgsProcessingParameterVectorDestination(
            self.OUTPUT, tr("Referred objects"), type=TYPE_POLYGON))
        self.addParameter(QgsProcessingParameterRasterDestination(
            self.PROB_RASTER, tr("Probability raster"), optional=True, createByDefault=False))
        self.addOutput(QgsProcessingOutputNumber(self.OBJECTS, tr("Number of objects found")))

    # -- running -------------------------------------------------------------------------
    def _pixel_size(self, parameters: dict, context: QgsProcessingContext, layer):
        """``--pixel-size`` for a raster without a CRS (the CLI reads it in pixel coordinates);
        a georeferenced raster's CRS gives its pixel size, so the value is not passed then."""
        value = parameters.get(self.PIXEL_SIZE)
        if value is None or value == "" or (layer is not None and layer.crs().isValid()):
            return None
        size = self.parameterAsDouble(parameters, self.PIXEL_SIZE, context)
        return size if size > 0 else None

    def _optional_int(self, parameters: dict, name: str, context: QgsProcessingContext):
        value = parameters.get(name)
        if value is None or value == "":
            return None
        return self.parameterAsInt(parameters, name, context)

    def _roi(self, parameters: dict, context: QgsProcessingContext, layer) -> str | None:
        """``--roi`` for the extent and/or the polygon layer, in the raster's CRS.

        An extent alone gives bounds ``XMIN,YMIN,XMAX,YMAX``. A polygon layer (its selected
        features when "selected features only" is ticked) is the real polygon, not its extent:
        its features' union, cut to the extent when one is set, is written to a temporary
        GeoPackage (:meth:`_write_region`) whose path is passed; the CLI treats the outside as
        nodata and clips the objects to it.
        """
        rect = None
        value = parameters.get(self.EXTENT)
        if value is not None and value != "":
            r = self.parameterAsExtent(parameters, self.EXTENT, context, layer.crs())
            if not (r.isNull() or r.isEmpty()):
                rect = r
        if parameters.get(self.MASK) not in (None, ""):
            source = self.parameterAsSource(parameters, self.MASK, context)
            if source is not None:
                req = QgsFeatureRequest().setDestinationCrs(layer.crs(),
                                                            context.transformContext())
                parts = [f.geometry() for f in source.getFeatures(req)
                         if f.geometry() is not None and not f.geometry().isEmpty()]
                if not parts:
                    raise QgsProcessingException(tr(
                        "The region polygon layer has no features (or none selected)."))
                region = QgsGeometry.unaryUnion(parts)
                if rect is not None:
                    region = region.intersection(QgsGeometry.fromRect(rect))
                    if region.isEmpty() or region.area() <= 0:
                        raise QgsProcessingException(tr(
                            "The region extent and the region polygon layer do not overlap."))
                if region.isEmpty() or region.area() <= 0:
                    raise QgsProcessingException(tr(
                        "The region polygons have no area."))
                return self._write_region(region, layer.crs())
        if rect is None:
            return None
        return ",".join(repr(v) for v in (rect.xMinimum(), rect.yMinimum(), rect.xMaximum(),
                                          rect.yMaximum()))

    def _write_region(self, geometry: "QgsGeometry", crs) -> str:
        """Write the region polygon to a new GeoPackage in QGIS's processing temp folder (the
        run removes it when done); returns its path."""
        from osgeo import ogr, osr

        path = os.path.join(QgsProcessingUtils.tempFolder(),
                            f"rrsis_region_{uuid.uuid4().hex[:12]}.gpkg")
        srs = osr.SpatialReference()
        srs.ImportFromWkt(crs.toWkt())
        ds = ogr.GetDriverByName("GPKG").CreateDataSource(path)
        if ds is None:
            raise QgsProcessingException(tr("Cannot write the region to {}.").format(path))
        lyr = ds.CreateLayer("region", srs, ogr.wkbMultiPolygon)
        feat = ogr.Feature(lyr.GetLayerDefn())
        geom = ogr.CreateGeometryFromWkb(bytes(geometry.asWkb()))
        feat.SetGeometry(ogr.ForceToMultiPolygon(geom))
        lyr.CreateFeature(feat)
        feat = lyr = ds = None  # closes the file
        self._temp_files.append(path)
        return path

    def _bands(self, parameters: dict, context: QgsProcessingContext) -> str | None:
        """``--bands R,G,B`` from the three band pickers (none set = the CLI's automatic)."""
        picked = []
        for name in (self.RED_BAND, self.GREEN_BAND, self.BLUE_BAND):
            value = parameters.get(name)
            band = None if value in (None, "") else self.parameterAsInt(parameters, name,
                                                                            context)
            picked.append(band if band and band > 0 else None)
        if all(b is None for b in picked):
            return None
        if any(b is None for b in picked):
            raise QgsProcessingException(tr(
                "Choose all three bands (red, green and blue) or none of them."))
        return ",".join(str(b) for b in picked)

    def build_command(self, parameters: dict[str, Any], context: QgsProcessingContext,
                      exe: str) -> tuple[list[str], str, str]:
        """The CLI argument list for these parameters; also returns (output, prob_raster)."""
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        if layer is None:
            raise QgsProcessingException(tr("The input raster layer could not be loaded."))
        if layer.providerType() != "gdal":
            raise QgsProcessingException(tr(
                "The input raster must be a file read by GDAL (e.g. a GeoTIFF); layers from the "
                "'{}' provider (web services, databases) cannot be passed to rrsis-geo. Export "
                "it first (Raster ▸ Conversion ▸ Translate).").format(layer.providerType()))
        source = layer.source()
        expression = self.parameterAsString(parameters, self.EXPRESSION, context).strip()
        if not expression:
            raise QgsProcessingException(tr("The referring expression is empty."))
        output = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        ext = os.path.splitext(output)[1].lower().lstrip(".")
        if ext not in VECTOR_EXTENSIONS:
            # rrsis-geo picks the format from the extension: refuse what it cannot know
            raise QgsProcessingException(tr(
                "Choose an output file ending in one of: {} (got {}).").format(
                    ", ".join("." + e for e in VECTOR_EXTENSIONS), output))
        prob = self.parameterAsOutputLayer(parameters, self.PROB_RASTER, context) or ""
        if prob and not prob.lower().endswith((".tif", ".tiff")):
            raise QgsProcessingException(tr(
                "The probability raster is written as GeoTIFF; choose a file ending in .tif "
                "(got {}).").format(prob))
        options: dict[str, Any] = {
            "weights": self.parameterAsFile(parameters, self.WEIGHTS, context) or None,
            "device": DEVICES[self.parameterAsEnum(parameters, self.DEVICE, context)],
            "precision": PRECISIONS[self.parameterAsEnum(parameters, self.PRECISION, context)],
            "mode": MODES[self.parameterAsEnum(parameters, self.MODE, context)],
            "threshold": self.parameterAsDouble(parameters, self.THRESHOLD, context),
            "min-area": self.parameterAsDouble(parameters, self.MIN_AREA, context),
            "simplify": self.parameterAsDouble(parameters, self.SIMPLIFY, context),
            "tile-size": self._optional_int(parameters, self.TILE_SIZE, context),
            "overlap": self._optional_int(parameters, self.OVERLAP, context),
            "gsd": self.parameterAsString(parameters, self.GSD, context).strip() or None,
            "pixel-size": self._pixel_size(parameters, context, layer),
            "batch-size": self.parameterAsInt(parameters, self.BATCH_SIZE, context),
            "bands": self._bands(parameters, context),
            "min-score": self.parameterAsDouble(parameters, self.MIN_SCORE, context),
            "max-objects": self._optional_int(parameters, self.MAX_OBJECTS, context),
            "no-class-check": not self.parameterAsBoolean(parameters, self.CLASS_CHECK, context),
            "prob-raster": prob or None,
            "roi": self._roi(parameters, context, layer),
        }
        return build_segment_command(exe, source, expression, output, options), output, prob

    def processAlgorithm(self, parameters: dict[str, Any], context: QgsProcessingContext,
                         feedback: QgsProcessingFeedback) -> dict[str, Any]:
        setting = self._executable_setting() if self._executable_setting else None
        exe, how = find_executable(setting)
        if exe is None:
            raise QgsProcessingException(missing_executable_message(how))
        try:
            argv, output, prob = self.build_command(parameters, context, exe)
            feedback.pushInfo(tr("Using {} (from {})").format(exe, how))
            result = run_cli(argv, feedback, outputs=[output, prob])
        except CliError as exc:  # also CliCanceled: one clear line, no traceback
            raise QgsProcessingException(str(exc)) from None
        finally:
            while self._temp_files:
                try:
                    os.remove(self._temp_files.pop())
                except OSError:
                    pass
        if not os.path.isfile(output):
            raise QgsProcessingException(tr(
                "rrsis-geo finished but did not write {}.").format(output))
        n = int(result.get("objects", -1)) if result else -1
        if n == 0:
            feedback.pushWarning(tr("No object matched the expression; the output layer is "
                                    "empty."))
        elif n > 0:
            feedback.pushInfo(tr("{} object(s) found.").format(n))
        timings = result.get("timings") if result else None
        if timings:
            feedback.pushInfo(tr("Timings (s): {}").format(
                ", ".join(f"{k} {v}" for k, v in timings.items())))
        if result and result.get("peak_rss_mb") is not None:
            feedback.pushInfo(tr("Peak memory of rrsis-geo: {} MB").format(result["peak_rss_mb"]))
        return {self.OUTPUT: output, self.PROB_RASTER: prob or None,
                self.OBJECTS: n if n >= 0 else None}
