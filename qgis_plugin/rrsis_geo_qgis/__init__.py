"""rrsis_geo QGIS plugin: a Processing provider that runs the ``rrsis-geo`` CLI.

QGIS calls :func:`classFactory`; everything that imports ``qgis`` is imported lazily there, so
``runner`` stays importable (and testable) without QGIS.
"""


def classFactory(iface):  # noqa: N802 - name required by QGIS
    """Entry point QGIS calls with its ``QgisInterface``."""
    from .provider import RrsisGeoPlugin

    return RrsisGeoPlugin(iface)
