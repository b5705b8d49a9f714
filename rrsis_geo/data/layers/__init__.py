"""Referring datasets from GIS label layers (``rrsis-geo dataset build``)."""

from rrsis_geo.data.layers.build import BuildOptions, build_dataset, format_summary

__all__ = ["BuildOptions", "build_dataset", "format_summary"]
