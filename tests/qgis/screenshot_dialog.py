"""Render the ``rrsis_geo:segment`` dialog to a PNG (for the README).

    xvfb-run -a -s "-screen 0 1280x1280x24" /usr/bin/python3 tests/qgis/screenshot_dialog.py \
        docs/qgis_dialog.png [--advanced]

Needs a real (virtual) X display: the offscreen platform draws no native widget styling.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from checks import make_raster  # noqa: E402  (tests/qgis/checks.py)


def main() -> None:
    out = Path(sys.argv[1]).resolve()
    advanced = "--advanced" in sys.argv
    from qgis.core import QgsApplication, QgsProject, QgsRasterLayer
    from qgis.PyQt.QtCore import QSize

    app = QgsApplication([], True)
    app.initQgis()
    sys.path.append("/usr/share/qgis/python/plugins")
    sys.path.insert(0, str(HERE.parent.parent / "qgis_plugin"))
    from unittest import mock

    import qgis.utils
    from qgis.gui import QgsMapCanvas

    canvas = QgsMapCanvas()
    iface = mock.MagicMock()
    iface.mapCanvas.return_value = canvas  # the dialog asks iface for the map canvas
    iface.mainWindow.return_value = None  # parent widget of the dialog
    iface.browserModel.return_value = None
    iface.activeLayer.return_value = None
    qgis.utils.iface = iface
    from processing.core.Processing import Processing

    Processing.initialize()
    import rrsis_geo_qgis

    plugin = rrsis_geo_qgis.classFactory(iface)
    plugin.initProcessing()

    tmp = Path(tempfile.mkdtemp())
    layer = QgsRasterLayer(str(make_raster(tmp / "harbour_scene.tif", size=256)),
                           "harbour_scene")
    QgsProject.instance().addMapLayer(layer)

    import processing

    dlg = processing.createAlgorithmDialog("rrsis_geo:segment", {
        "INPUT": layer.id(),
        "EXPRESSION": "the white storage tank left of the red building",
        "MODE": 0,
    })
    dlg.resize(QSize(980, 1060 if advanced else 760))
    if advanced:  # open the collapsed "Advanced Parameters" group
        from qgis.PyQt.QtWidgets import QGroupBox, QToolButton

        # a QgsCollapsibleGroupBox that sip only knows as QGroupBox: click its collapse button
        box = dlg.findChild(QGroupBox, "grpAdvanced")
        for button in box.findChildren(QToolButton) if box is not None else []:
            button.click()
    dlg.show()
    for _ in range(20):
        app.processEvents()
    out.parent.mkdir(parents=True, exist_ok=True)
    ok = dlg.grab().save(str(out), "PNG")
    print(f"{'wrote' if ok else 'FAILED to write'} {out}")
    sys.stdout.flush()
    os._exit(0 if ok else 1)


if __name__ == "__main__":
    main()
