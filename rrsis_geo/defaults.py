"""Where the shipped demo model lives, how a user overrides it, and remote weights.

The demo model is package data: ``rrsis_geo/weights/fianet_tiny.safetensors`` + ``.json``. In a
checkout these are symbolic links to ``sample_data/demo_model/`` (the one copy in git); building
a wheel copies the files they point to into the wheel, so an installed package carries its model.

``--weights`` also takes ``https://…`` (or ``http://…``) and ``hf://OWNER/REPO[@REVISION]/FILE``
(a Hugging Face Hub file). Such weights are downloaded once into the user cache folder
(``$RRSIS_GEO_CACHE``, else ``$XDG_CACHE_HOME/rrsis_geo``, else ``~/.cache/rrsis_geo``) and read
from there afterwards, offline included. Our ``X.safetensors`` brings its ``X.json`` card from the
same place.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from urllib.parse import quote, urlsplit

from rrsis_geo.errors import WeightsError
from rrsis_geo.safety import atomic_write

log = logging.getLogger(__name__)

#: repository root when running from a checkout (editable install): sample_data/ lives there
REPO_ROOT = Path(__file__).resolve().parent.parent
#: the demo model as package data (in a checkout: links into sample_data/demo_model/)
PACKAGE_WEIGHTS = Path(__file__).resolve().parent / "weights" / "fianet_tiny.safetensors"
#: the checkout's copy (the one in git). Preferred when present, so that a checkout whose
#: symbolic links became plain text files (git with core.symlinks=false) still works
CHECKOUT_WEIGHTS = REPO_ROOT / "sample_data" / "demo_model" / "fianet_tiny.safetensors"
DEMO_WEIGHTS = CHECKOUT_WEIGHTS if CHECKOUT_WEIGHTS.is_file() else PACKAGE_WEIGHTS

_REMOTE_SCHEMES = ("http://", "https://", "hf://")
HF_ENDPOINT_DEFAULT = "https://huggingface.co"
_CHUNK = 1 << 20


def default_weights() -> Path:
    """The weights used when ``--weights`` is not given: $RRSIS_GEO_WEIGHTS, else the demo model."""
    env = os.environ.get("RRSIS_GEO_WEIGHTS")
    if env:
        return Path(env)
    return DEMO_WEIGHTS


def is_remote(path: str | os.PathLike | None) -> bool:
    """True for ``http(s)://`` and ``hf://`` weights."""
    return isinstance(path, str) and path.lower().startswith(_REMOTE_SCHEMES)


def resolve_weights(path: str | os.PathLike | None) -> Path:
    """Resolve ``--weights`` to a local file; a clear WeightsError when nothing usable is there.

    A remote ``path`` (see :func:`is_remote`) is downloaded into the cache first (once).
    """
    if path is None or path == "":
        env = os.environ.get("RRSIS_GEO_WEIGHTS")
        if env and is_remote(env):
            return fetch_remote_weights(env)
    elif is_remote(path):
        return fetch_remote_weights(str(path))
    p = Path(path) if path else default_weights()
    if p.is_dir():
        raise WeightsError(f"{p} is a folder, not a weights file (.safetensors or .pth)")
    if not p.exists():
        if path:
            raise WeightsError(f"weights file not found: {p}")
        raise WeightsError(
            f"no default weights are installed (expected {p}); pass --weights PATH, set "
            "RRSIS_GEO_WEIGHTS, or train the demo model with `rrsis-geo train` (see README)"
        )
    return p


def cache_dir() -> Path:
    """The user cache folder for downloaded weights."""
    env = os.environ.get("RRSIS_GEO_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "rrsis_geo"


def remote_url(spec: str) -> str:
    """The download URL of ``spec``: itself for http(s), the Hub's ``resolve`` URL for ``hf://``.

    ``hf://OWNER/REPO/PATH/IN/REPO`` reads branch ``main``; ``hf://OWNER/REPO@REV/PATH`` a given
    branch, tag or commit. ``$HF_ENDPOINT`` replaces https://huggingface.co (mirrors).
    """
    if not spec.lower().startswith("hf://"):
        return spec
    parts = spec[len("hf://"):].split("/")
    if len(parts) < 3 or not all(parts):
        raise WeightsError(f"{spec}: expected hf://OWNER/REPO[@REVISION]/FILE")
    owner, repo, rest = parts[0], parts[1], parts[2:]
    revision = "main"
    if "@" in repo:
        repo, revision = repo.split("@", 1)
    endpoint = os.environ.get("HF_ENDPOINT", HF_ENDPOINT_DEFAULT).rstrip("/")
    return (f"{endpoint}/{owner}/{repo}/resolve/{quote(revision, safe='')}/"
            + "/".join(quote(p) for p in rest))


def cached_path(spec: str) -> Path:
    """Where ``spec`` is (or will be) cached: one folder per URL, the file keeps its name."""
    url = remote_url(spec)
    name = Path(urlsplit(url).path).name or "weights.safetensors"
    key = hashlib.sha256(url.encode("utf-8")).hexdigest()[:16]
    return cache_dir() / key / name


def fetch_remote_weights(spec: str) -> Path:
    """Download ``spec`` (and, for ``X.safetensors``, its ``X.json``) once; return the local file.

    Raises:
        WeightsError: offline / unreachable server, HTTP error, or a cache folder that cannot be
            written. Nothing half-downloaded is left in the cache.
    """
    url = remote_url(spec)
    target = cached_path(spec)
    wanted = [(url, target)]
    if target.suffix == ".safetensors":
        parts = urlsplit(url)
        card_url = parts._replace(path=parts.path[: -len(".safetensors")] + ".json").geturl()
        wanted.append((card_url, target.with_suffix(".json")))
    for u, dest in wanted:
        if dest.is_file():
            log.debug("weights from the cache: %s", dest)
            continue
        _download(spec, u, dest)
    return target


def _download(spec: str, url: str, dest: Path) -> None:
    import requests  # lazy: only remote weights need it

    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WeightsError(f"cannot create the weights cache folder {dest.parent}: "
                           f"{exc.strerror or exc}; set RRSIS_GEO_CACHE to a writable folder") from exc
    log.info("downloading %s into %s", url, dest.parent)
    try:
        with requests.get(url, stream=True, timeout=(10, 60)) as resp:
            if resp.status_code != 200:
                raise WeightsError(f"cannot download weights {url}: HTTP {resp.status_code}"
                                   f"{' ' + resp.reason if resp.reason else ''}")
            with atomic_write(dest) as tmp, open(tmp, "wb") as fh:
                for chunk in resp.iter_content(_CHUNK):
                    fh.write(chunk)
    except requests.exceptions.RequestException as exc:
        raise WeightsError(
            f"cannot download weights {spec}: the server cannot be reached (offline?). Download "
            f"the file on a connected machine and pass --weights PATH, or copy it to {dest}"
        ) from exc
    except OSError as exc:
        raise WeightsError(f"cannot write the downloaded weights to {dest.parent}: "
                           f"{exc.strerror or exc}") from exc
