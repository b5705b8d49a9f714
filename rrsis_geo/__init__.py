"""rrsis_geo: find the object a sentence refers to in a large GeoTIFF and return it as GIS vectors.

Python API (imported on first use, so ``import rrsis_geo`` stays cheap)::

    import rrsis_geo
    model = rrsis_geo.Model()                               # load once
    gdf = model.segment("scene.tif", "the blue basketball court")   # a GeoDataFrame
    rrsis_geo.quicklook("scene.tif", gdf)                   # PNG, shown inline in Jupyter
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["Model", "QuickLook", "Segmenter", "SegmentOptions", "__version__", "quicklook",
           "segment"]

_LAZY = {"Model": "rrsis_geo.api", "QuickLook": "rrsis_geo.api", "quicklook": "rrsis_geo.api",
         "segment": "rrsis_geo.api", "Segmenter": "rrsis_geo.inference.segmenter",
         "SegmentOptions": "rrsis_geo.inference.pipeline"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'rrsis_geo' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
