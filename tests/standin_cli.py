"""The real ``rrsis-geo`` CLI with the stand-in network behind the real weight loader (tests only).

Only the step that builds FIANet from a checked model card and tensors is replaced: the card
(``X.json``) and the tensors (``X.safetensors``) are still read, parsed and validated by the
package's own code, so unreadable files, bad card values and NaN tensors fail as they would with
FIANet, while a run costs milliseconds instead of loading a transformer.

    python -m tests.standin_cli segment in.tif -e red -o out.gpkg --weights W.safetensors

``RRSIS_TEST_HOLD=FILE`` with ``RRSIS_TEST_HOLD_AFTER=N``: after N forwards, each forward waits
while FILE exists, and ``FILE.reached`` is created when it starts waiting (a test interrupts or
races the run at a known point, then lets it go).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

from tests.standin import RedSegmenter

INPUT_SIZE = 64


def write_standin_weights(path: str | os.PathLike, meta: dict | None = None,
                          tensors: dict[str, torch.Tensor] | None = None) -> Path:
    """Write ``X.safetensors`` + ``X.json`` for the stand-in; returns the ``.safetensors`` path.

    ``meta`` entries replace the card's defaults; ``tensors`` replace stand-in tensors by name
    (``target``, ``mean``, ``std``), e.g. to plant a NaN.
    """
    from safetensors.torch import save_file

    path = Path(path).with_suffix(".safetensors")
    model = RedSegmenter(INPUT_SIZE)
    state = {k: v.clone().contiguous() for k, v in model.state_dict().items()}
    state.update(tensors or {})
    save_file(state, str(path))
    card = {"format": "rrsis_geo.fianet", "config": {}, "meta": {**model.meta, **(meta or {})}}
    path.with_suffix(".json").write_text(json.dumps(card), encoding="utf-8")
    return path


def instantiate_standin(config, state, source):
    """Drop-in for ``rrsis_geo.model.checkpoint._instantiate``: the stand-in network with the
    card's meta and the file's tensors."""
    model = RedSegmenter(INPUT_SIZE)
    model.load_state_dict(dict(state), strict=True)
    model.meta = {**model.meta, **dict(config.meta or {})}
    return model


def install() -> None:
    import rrsis_geo.model.checkpoint as checkpoint

    checkpoint._instantiate = instantiate_standin
    hold = os.environ.get("RRSIS_TEST_HOLD")
    if hold:
        after = int(os.environ.get("RRSIS_TEST_HOLD_AFTER", "0") or 0)
        original = RedSegmenter.segment_image
        calls = [0]

        def held(self, image, text_features):
            calls[0] += 1
            if calls[0] > after and os.path.exists(hold):
                Path(f"{hold}.reached").touch()  # tells the test where the run waits
                while os.path.exists(hold):
                    time.sleep(0.02)
            return original(self, image, text_features)

        RedSegmenter.segment_image = held


if __name__ == "__main__":
    install()
    from rrsis_geo.cli.main import main

    main()
