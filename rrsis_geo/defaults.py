"""Where the shipped demo model lives, and how a user overrides it."""

from __future__ import annotations

import os
from pathlib import Path

from rrsis_geo.errors import WeightsError

#: repository root when running from a checkout (editable install): sample_data/ lives there
REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_WEIGHTS = REPO_ROOT / "sample_data" / "demo_model" / "fianet_tiny.safetensors"


def default_weights() -> Path:
    """The weights used when ``--weights`` is not given: $RRSIS_GEO_WEIGHTS, else the demo model."""
    env = os.environ.get("RRSIS_GEO_WEIGHTS")
    return Path(env) if env else DEMO_WEIGHTS


def resolve_weights(path: str | os.PathLike | None) -> Path:
    """Resolve ``--weights``; a clear WeightsError when nothing usable is installed."""
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
