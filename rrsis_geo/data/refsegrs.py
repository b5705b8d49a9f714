"""RefSegRS reader: ``images/<id>.tif``, ``masks/<id>.tif``, ``output_phrase_<split>.txt``.

The layout is described in docs/fianet.md §Datasets.

Each line of the phrase file is ``<id> <expression words...>``; the mask's foreground is
value > 50 (a mask stored as 0/1 is taken as it is). Our scene generator writes the same layout
plus ``metadata.jsonl`` (expression type, category, union mask) which is joined when present.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rrsis_geo.data.referring import ReferringDataset, binary_from_band, read_band, read_rgb
from rrsis_geo.errors import BadInputError

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg")


class RefSegRSDataset(ReferringDataset):
    """RefSegRS-layout dataset; see :class:`~rrsis_geo.data.referring.ReferringDataset`."""

    format_name = "refsegrs"

    def _load_records(self) -> None:
        phrase_file = self.root / f"output_phrase_{self.split}.txt"
        if not phrase_file.is_file():
            found = sorted(p.name for p in self.root.glob("output_phrase_*.txt"))
            raise BadInputError(
                f"{phrase_file} not found (RefSegRS layout); phrase files present: "
                f"{', '.join(found) or 'none'}"
            )
        with open(phrase_file, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                parts = line.strip().split(" ", 1)
                if not parts[0]:
                    continue
                if len(parts) < 2 or not parts[1].strip():
                    raise BadInputError(f"{phrase_file}:{n}: expected '<id> <expression>'")
                self.records.append({"id": parts[0], "expression": parts[1].strip()})

    def _find(self, folder: str, rid: str) -> Any:
        for suffix in IMAGE_SUFFIXES:
            path = self.root / folder / f"{rid}{suffix}"
            if path.is_file():
                return path
        raise BadInputError(f"no {folder}/{rid}.tif in {self.root}")

    def _read_image(self, record: dict[str, Any]) -> np.ndarray:
        return read_rgb(self._find("images", record["id"]))

    def _read_mask(self, record: dict[str, Any]) -> np.ndarray:
        return binary_from_band(read_band(self._find("masks", record["id"])))
