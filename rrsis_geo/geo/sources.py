"""Raster input paths: local files, GDAL virtual file systems and URLs.

Every raster input goes through :func:`gdal_path`, which maps the URL forms GIS users paste to
the GDAL virtual file system that reads them (range requests, so a Cloud-Optimized GeoTIFF is
read block by block, never downloaded whole):

    ``http://…``, ``https://…``  → ``/vsicurl/http…``
    ``s3://bucket/key``          → ``/vsis3/bucket/key``
    ``gs://bucket/key``          → ``/vsigs/bucket/key``
    ``az://container/key``       → ``/vsiaz/container/key``
    ``file:///path``             → ``/path``

``/vsi…`` paths (``/vsizip/``, ``/vsitar/``, ``/vsicurl/``, ``/vsis3/`` …) pass unchanged. Only
local paths are checked with ``os`` functions; the others are left to GDAL, and its network
errors become one line (:func:`network_error`). GDAL's configuration (``GDAL_HTTP_*``,
``AWS_*``, ``CPL_VSIL_CURL_*`` environment variables) applies as for ``gdalinfo``.

No heavy imports here (the CLI's output checks use this before GDAL is loaded).
"""

from __future__ import annotations

import os
import re

__all__ = ["gdal_path", "is_local", "is_remote", "local_container", "network_error"]

_SCHEMES = {"http": "/vsicurl/", "https": "/vsicurl/", "s3": "/vsis3/", "gs": "/vsigs/",
            "az": "/vsiaz/"}
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
#: virtual file systems whose data come over the network
_REMOTE_VSI = ("/vsicurl", "/vsis3", "/vsigs", "/vsiaz", "/vsiadls", "/vsioss", "/vsiswift",
               "/vsiwebhdfs", "/vsihdfs")
#: archive / compression file systems whose first component is the container file
_CONTAINER_VSI = ("/vsizip/", "/vsitar/", "/vsigzip/", "/vsi7z/", "/vsirar/")


def gdal_path(path: str | os.PathLike[str]) -> str:
    """The path GDAL opens for ``path`` (see the module docstring); others unchanged."""
    p = os.fspath(path)
    m = _URL.match(p)
    if not m:
        return p
    scheme = m.group(1).lower()
    if scheme == "file":
        return p[len("file://"):]
    if scheme in _SCHEMES:
        if scheme in ("http", "https"):
            return _SCHEMES[scheme] + p
        return _SCHEMES[scheme] + p[m.end():]
    return p  # an unknown scheme: GDAL reports it


def is_local(path: str | os.PathLike[str]) -> bool:
    """True for a plain file path (``os`` functions apply); False for URLs and ``/vsi…``."""
    p = gdal_path(path)
    return not (p.startswith("/vsi") or _URL.match(p))


def is_remote(path: str | os.PathLike[str]) -> bool:
    """True when GDAL reads ``path`` over the network."""
    p = gdal_path(path)
    # /vsizip//vsicurl/… is remote too
    return any(f"{v}/" in p or p.startswith(f"{v}_streaming/") for v in _REMOTE_VSI)


def local_container(path: str | os.PathLike[str]) -> str | None:
    """The local file an archive path reads from (``/vsizip/data/a.zip/x.tif`` → ``data/a.zip``),
    else None. Used so that an output never overwrites the archive an input lives in."""
    p = gdal_path(path)
    for prefix in _CONTAINER_VSI:
        if not p.startswith(prefix):
            continue
        rest = p[len(prefix):]
        if rest.startswith("{"):  # /vsizip/{/path/a.zip}/x.tif
            end = rest.find("}")
            return rest[1:end] if end > 0 else None
        if rest.startswith("/vsi"):
            return local_container(rest)
        # the longest prefix that is an existing file (archives may sit in folders named .zip)
        parts = rest.split("/")
        for i in range(len(parts), 0, -1):
            cand = "/".join(parts[:i])
            if cand and os.path.isfile(cand):
                return cand
        return None
    return None


_NET_HINTS = (("404", "not found on the server (HTTP 404)"),
              ("403", "access denied (HTTP 403): check the credentials (AWS_*, GDAL_HTTP_*)"),
              ("401", "authentication required (HTTP 401): check the credentials"),
              ("resolve host", "the host name cannot be resolved (offline or a wrong URL?)"),
              ("could not resolve", "the host name cannot be resolved (offline or a wrong URL?)"),
              ("connection refused", "the connection was refused"),
              ("failed to connect", "the server cannot be reached"),
              ("timed out", "the connection timed out (GDAL_HTTP_TIMEOUT sets the limit)"),
              ("timeout", "the connection timed out (GDAL_HTTP_TIMEOUT sets the limit)"),
              ("ssl", "the TLS connection failed"),
              ("credentials", "no credentials found (set AWS_* variables or "
                              "AWS_NO_SIGN_REQUEST=YES for a public bucket)"))


def network_error(path: str, message: str) -> str:
    """One line for a failed network read of ``path`` given GDAL's ``message``."""
    low = message.lower()
    for needle, text in _NET_HINTS:
        if needle in low:
            return f"{path}: cannot read over the network: {text}"
    return (f"{path}: cannot read over the network (server unreachable, file missing, or not a "
            "raster; GDAL_HTTP_* / AWS_* variables configure access)")
