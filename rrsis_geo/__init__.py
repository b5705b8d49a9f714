"""rrsis_geo: find the object a sentence refers to in a large GeoTIFF and return it as GIS vectors."""

__version__ = "0.1.0"
