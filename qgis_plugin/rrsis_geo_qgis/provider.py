"""Processing provider ``rrsis_geo`` and the plugin object that registers it."""

from __future__ import annotations

import os

from qgis.core import QgsApplication, QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .algorithm import VECTOR_EXTENSIONS, SegmentAlgorithm
from .runner import SETTING_EXECUTABLE

try:  # the Processing plugin is part of every QGIS install, but keep loading without it
    from processing.core.ProcessingConfig import ProcessingConfig, Setting
except ImportError:  # pragma: no cover - e.g. a bare qgis_process without the plugin path
    ProcessingConfig = Setting = None

ICON_PATH = os.path.join(os.path.dirname(__file__), "icon.svg")
PROVIDER_ID = "rrsis_geo"


def executable_setting() -> str | None:
    """The 'rrsis-geo executable' provider setting, or None when unset/unavailable."""
    if ProcessingConfig is None:
        return None
    value = ProcessingConfig.getSetting(SETTING_EXECUTABLE)
    return str(value) if value else None


class RrsisGeoProvider(QgsProcessingProvider):
    """Holds ``rrsis_geo:segment``; loads even when the CLI is not installed (the algorithm
    explains how to install it when run)."""

    def id(self) -> str:
        return PROVIDER_ID

    def name(self) -> str:
        return "rrsis_geo"

    def longName(self) -> str:
        return "rrsis_geo: referring-expression segmentation of rasters"

    def icon(self) -> QIcon:
        return QIcon(ICON_PATH)

    def svgIconPath(self) -> str:
        return ICON_PATH

    def load(self) -> bool:
        if ProcessingConfig is not None:
            ProcessingConfig.settingIcons[self.name()] = self.icon()
            ProcessingConfig.addSetting(Setting(
                self.name(), SETTING_EXECUTABLE,
                "rrsis-geo executable (empty: $RRSIS_GEO_EXE, then PATH)", "",
                valuetype=Setting.FILE))
            ProcessingConfig.readSettings()
        self.refreshAlgorithms()
        return True

    def unload(self) -> None:
        if ProcessingConfig is not None:
            ProcessingConfig.removeSetting(SETTING_EXECUTABLE)

    def loadAlgorithms(self) -> None:
        self.addAlgorithm(SegmentAlgorithm(executable_setting))

    # rrsis-geo writes vector files (format from the extension) and GeoTIFF rasters only: no
    # memory layers or database tables as outputs, and temporary outputs get the right extension
    def supportsNonFileBasedOutput(self) -> bool:
        return False

    def supportedOutputVectorLayerExtensions(self) -> list[str]:
        return list(VECTOR_EXTENSIONS)

    def defaultVectorFileExtension(self, hasGeometry: bool = True) -> str:
        return "gpkg"

    def supportedOutputRasterLayerExtensions(self) -> list[str]:
        return ["tif"]

    def defaultRasterFileExtension(self) -> str:
        return "tif"


class RrsisGeoPlugin:
    """The QGIS plugin: registers the provider (also in headless ``qgis_process`` runs)."""

    def __init__(self, iface=None) -> None:
        self.iface = iface
        self.provider: RrsisGeoProvider | None = None

    def initProcessing(self) -> None:
        if self.provider is None:
            self.provider = RrsisGeoProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:
        self.initProcessing()

    def unload(self) -> None:
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
