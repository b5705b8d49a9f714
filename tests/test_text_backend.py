"""The opt-in NLTK tagger backend (RRSIS_GEO_POS_TAGGER=nltk), with NLTK data made in tmp_path."""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from rrsis_geo.errors import UsageError, WeightsError
from rrsis_geo.text import analyse, decouple
from rrsis_geo.text import tagger as tagger_mod

_decouple_mod = importlib.import_module("rrsis_geo.text.decouple")


def _clear() -> None:
    for fn in (
        tagger_mod.backend,
        tagger_mod.get_tagger,
        tagger_mod._sentence_splitter,
        _decouple_mod._analyse,
    ):
        fn.cache_clear()


@pytest.fixture
def fresh_backend(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """Empty NLTK data path; caches cleared before and after so other tests see the default."""
    import nltk

    monkeypatch.setattr(nltk.data, "path", [str(tmp_path)])
    _clear()
    yield tmp_path
    monkeypatch.undo()
    _clear()


def test_default_backend_is_textblob(monkeypatch: pytest.MonkeyPatch, fresh_backend: Path) -> None:
    monkeypatch.delenv(tagger_mod.BACKEND_ENV, raising=False)
    assert tagger_mod.backend() == "textblob"


def test_unknown_backend(monkeypatch: pytest.MonkeyPatch, fresh_backend: Path) -> None:
    monkeypatch.setenv(tagger_mod.BACKEND_ENV, "spacy")
    with pytest.raises(UsageError, match="RRSIS_GEO_POS_TAGGER"):
        decouple("the car on the road")


def test_nltk_backend_without_data(monkeypatch: pytest.MonkeyPatch, fresh_backend: Path) -> None:
    monkeypatch.setenv(tagger_mod.BACKEND_ENV, "nltk")
    with pytest.raises(WeightsError, match="averaged_perceptron_tagger_eng"):
        decouple("the car on the road")


def test_nltk_backend_uses_local_model(
    monkeypatch: pytest.MonkeyPatch, fresh_backend: Path
) -> None:
    # A toy NLTK-format model: tag dictionary only, no weights -> unknown words get the
    # alphabetically last class ("VBD"), so "left" becomes VBD and no NN closes the phrase.
    folder = fresh_backend / "taggers" / "averaged_perceptron_tagger_eng"
    folder.mkdir(parents=True)
    stem = folder / "averaged_perceptron_tagger_eng"
    Path(f"{stem}.weights.json").write_text(json.dumps({}))
    tagdict = {"the": "DT", "car": "NN", "on": "IN", "road": "NN"}
    Path(f"{stem}.tagdict.json").write_text(json.dumps(tagdict))
    Path(f"{stem}.classes.json").write_text(json.dumps(["DT", "IN", "NN", "VBD"]))
    monkeypatch.setenv(tagger_mod.BACKEND_ENV, "nltk")
    assert analyse("the car on the road").tags == ("DT", "NN", "IN", "DT", "NN")
    mask = decouple("the car on the road").position_mask
    assert [i for i, v in enumerate(mask) if v] == [3, 4, 5]
    a = analyse("the car on the left")
    assert a.tags == ("DT", "NN", "IN", "DT", "VBD") and a.phrases == ()
