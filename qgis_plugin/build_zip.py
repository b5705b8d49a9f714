"""Build the installable QGIS plugin zip: ``dist/rrsis_geo_qgis-<version>.zip``.

Usage (any Python >= 3.9, no dependencies)::

    python qgis_plugin/build_zip.py [--out-dir DIR]

The zip holds one top-level folder ``rrsis_geo_qgis/`` (what QGIS's "Install from ZIP" and
plugins.qgis.org expect) with the plugin sources, icon, metadata and the project licence. Entries
are sorted and time-stamped from the metadata version's build, so the same sources give the same
bytes.
"""

from __future__ import annotations

import argparse
import configparser
import sys
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PLUGIN_DIR = HERE / "rrsis_geo_qgis"
REPO = HERE.parent
INCLUDE_SUFFIXES = {".py", ".txt", ".svg", ".png", ".md"}
FIXED_DATE = (2024, 1, 1, 0, 0, 0)  # reproducible zips: no build-time timestamps


def plugin_version(plugin_dir: Path = PLUGIN_DIR) -> str:
    """``version`` from metadata.txt (validated: the mandatory fields must be present)."""
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read(plugin_dir / "metadata.txt", encoding="utf-8")
    general = cfg["general"]
    missing = [k for k in ("name", "qgisMinimumVersion", "description", "about", "version",
                           "author", "email", "repository") if not general.get(k)]
    if missing:
        raise SystemExit(f"metadata.txt lacks mandatory field(s): {', '.join(missing)}")
    return general["version"].strip()


def plugin_files(plugin_dir: Path = PLUGIN_DIR) -> list[Path]:
    """Files shipped in the zip (sources, metadata, icon); no caches or editor files."""
    return sorted(p for p in plugin_dir.rglob("*")
                  if p.is_file() and p.suffix in INCLUDE_SUFFIXES
                  and "__pycache__" not in p.parts and not p.name.startswith("."))


def build_zip(out_dir: Path = REPO / "dist") -> Path:
    """Write the zip and return its path."""
    version = plugin_version()
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"rrsis_geo_qgis-{version}.zip"
    tmp = target.with_suffix(".zip.tmp")
    entries = [(f, f"rrsis_geo_qgis/{f.relative_to(PLUGIN_DIR).as_posix()}")
               for f in plugin_files()]
    licence = REPO / "LICENSE"
    if licence.is_file():
        entries.append((licence, "rrsis_geo_qgis/LICENSE"))
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for src, arc in entries:
            info = zipfile.ZipInfo(arc, date_time=FIXED_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, src.read_bytes())
    tmp.replace(target)  # atomic: a half-written zip never carries the final name
    return target


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", type=Path, default=REPO / "dist",
                    help="where to write the zip (default: dist/ in the repository)")
    args = ap.parse_args(argv)
    path = build_zip(args.out_dir)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
