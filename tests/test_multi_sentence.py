"""Several sentences in one run share the raster reads: each tile is read (and normalized)
once, every sentence accumulates into its own mosaic, each is selected on its own — with the
same objects as running the sentences one by one."""

from __future__ import annotations

import numpy as np
import pyogrio
import pytest

import rrsis_geo.geo.tiling as tiling
from rrsis_geo.inference.pipeline import SegmentOptions, segment_raster
from rrsis_geo.inference.segmenter import Segmenter
from rrsis_geo.progress import Reporter
from tests.standin import ColourClassSegmenter
from tests.test_pipeline import scene, write_tif


class _Steps(Reporter):
    """Records every stage and progress step."""

    def __init__(self) -> None:
        super().__init__("none")
        self.steps: list[tuple[str, int, int]] = []

    def advance(self, n: int = 1) -> None:
        super().advance(n)
        self.steps.append((self._stage, self._done, self._total))


@pytest.fixture
def reads(monkeypatch):
    """Counts tile reads (geo.tiling.read_tile calls)."""
    count = {"n": 0}
    real = tiling.read_tile

    def counted(*a, **k):
        count["n"] += 1
        return real(*a, **k)

    monkeypatch.setattr(tiling, "read_tile", counted)
    return count


def _orange(arr, r0, c0, r1, c1):
    arr[0, r0:r1, c0:c1], arr[1, r0:r1, c0:c1], arr[2, r0:r1, c0:c1] = 255, 128, 0


def _rows(path):
    df = pyogrio.read_dataframe(path)
    return [(r.expression, r.score, r.area_m2, r.rank, r.geometry) for r in df.itertuples()]


def _same(a, b, tol=1e-9):
    assert len(a) == len(b), (a, b)
    for (ea, sa, aa, ra, ga), (eb, sb, ab, rb, gb) in zip(a, b):
        assert (ea, ra) == (eb, rb)
        assert sa == pytest.approx(sb, abs=tol) and aa == pytest.approx(ab, rel=tol)
        assert ga.symmetric_difference(gb).area <= tol * max(ga.area, 1.0)


def test_two_sentences_together_equal_one_by_one_with_half_the_reads(tmp_path, reads):
    arr = scene(220, 220, [(20, 20, 60, 70), (150, 30, 190, 90)])
    _orange(arr, 30, 140, 70, 200)
    _orange(arr, 160, 150, 200, 190)
    src = write_tif(tmp_path / "in.tif", arr)
    seg = Segmenter(model=ColourClassSegmenter(input_size=64), device="cpu")
    opts = dict(tile_size=64, overlap=16, simplify=0.0, mode="all")
    sentences = ["the building", "the car"]

    separate = []
    for i, s in enumerate(sentences):
        reads["n"] = 0
        res = segment_raster(str(src), s, str(tmp_path / f"one{i}.gpkg"),
                             SegmentOptions(**opts), segmenter=seg)
        separate.append((res, _rows(tmp_path / f"one{i}.gpkg"), reads["n"]))
    reads["n"] = 0
    rep = _Steps()
    res = segment_raster(str(src), sentences, str(tmp_path / "both.gpkg"),
                         SegmentOptions(**opts), segmenter=seg, reporter=rep)
    both = _rows(tmp_path / "both.gpkg")

    assert all(len(r) >= 2 for _, r, _ in separate)  # two buildings, two cars (at least)
    _same(both, separate[0][1] + separate[1][1])
    # each tile read once for both sentences, as often as one sentence alone reads it; the
    # class check's windows (read_tile too) stay per sentence
    n_tiles = res["tile_reads"]
    assert n_tiles == separate[0][0]["tile_reads"] == separate[1][0]["tile_reads"] > 0
    assert reads["n"] == separate[0][2] + separate[1][2] - n_tiles
    assert res["model_tiles"] == separate[0][0]["model_tiles"]
    assert res["expressions"] == 2 and res["objects"] == sum(len(r) for _, r, _ in separate)
    # one tiles stage covering both sentences: one step per tile, ending at the tile count
    tiles = [s for s in rep.steps if s[0] == "tiles"]
    assert {t for _, _, t in tiles} == {res["tiles"]} and tiles[-1][1] == res["tiles"]
    assert not (tmp_path / "both.gpkg.rrsis-work").exists()


def test_shared_text_free_forward_with_the_demo_model(tmp_path, reads):
    """FIANet runs a batch of tiles with all the sentences in one forward (the text-free stage
    once per tile): the objects match one-by-one runs within float round-off."""
    import torch

    torch.set_num_threads(1)
    seg = Segmenter(None, device="cpu")  # the shipped demo model
    assert getattr(seg.model, "one_image_many_texts", False)
    rng = np.random.default_rng(3)
    arr = (rng.random((3, 300, 300)) * 60 + 80).astype(np.uint8)
    arr[:, 40:90, 40:140] = np.array([40, 40, 45], np.uint8)[:, None, None]  # a dark slab
    arr[:, 180:260, 170:250] = np.array([60, 120, 200], np.uint8)[:, None, None]  # blue
    src = write_tif(tmp_path / "in.tif", arr, res=0.25)
    opts = dict(tile_size=192, overlap=48, mode="all", min_score=0.0, threshold=0.3,
                class_check=False, global_pass=False)
    sentences = ["the road", "the blue building"]
    one = []
    for i, s in enumerate(sentences):
        segment_raster(str(src), s, str(tmp_path / f"o{i}.gpkg"), SegmentOptions(**opts),
                       segmenter=seg)
        one += _rows(tmp_path / f"o{i}.gpkg")
    reads["n"] = 0
    res = segment_raster(str(src), sentences, str(tmp_path / "both.gpkg"),
                         SegmentOptions(**opts), segmenter=seg)
    assert reads["n"] == res["tile_reads"] == res["tiles"]
    _same(_rows(tmp_path / "both.gpkg"), one, tol=1e-4)


def test_several_sentences_refuse_prob_raster(tmp_path):
    from rrsis_geo.errors import UsageError

    src = write_tif(tmp_path / "in.tif", scene(64, 64, []))
    seg = Segmenter(model=ColourClassSegmenter(input_size=64), device="cpu")
    with pytest.raises(UsageError, match="one expression"):
        segment_raster(str(src), ["the car", "the tree"], str(tmp_path / "o.gpkg"),
                       SegmentOptions(prob_raster=str(tmp_path / "p.tif")), segmenter=seg)
    assert not (tmp_path / "o.gpkg").exists()


def test_several_sentences_resume_from_their_tiles_on_disk(tmp_path):
    from rrsis_geo.inference.pipeline import work_dir_for
    from tests.standin import RedSegmenter

    write_tif(tmp_path / "in.tif", scene(300, 300, [(100, 100, 140, 140)]))

    class Boom(RedSegmenter):
        calls = 0

        def segment_image(self, image, text):
            Boom.calls += 1
            if Boom.calls == 4:  # 1 tile per batch, one forward for both sentences
                raise KeyboardInterrupt
            return super().segment_image(image, text)

    out = tmp_path / "r.gpkg"
    opts = SegmentOptions(tile_size=64, overlap=16, batch_size=1)
    with pytest.raises(KeyboardInterrupt):
        segment_raster(str(tmp_path / "in.tif"), ["red", "the red roof"], str(out), opts,
                       segmenter=Segmenter(model=Boom(64), device="cpu"))
    assert not out.exists() and (work_dir_for(out) / "expr1").is_dir()
    opts.resume = True
    res = segment_raster(str(tmp_path / "in.tif"), ["red", "the red roof"], str(out), opts,
                         segmenter=Segmenter(model=RedSegmenter(64), device="cpu"))
    assert res["model_tiles"] == res["tiles"] - 3
    df = pyogrio.read_dataframe(out)
    assert list(df["expression"]) == ["red", "the red roof"]
    assert np.allclose(df["area_m2"], 400.0, rtol=0.02)
    assert not work_dir_for(out).exists()


def test_sentences_the_tiles_read_alike_share_their_forward(tmp_path):
    """ "the largest red roof" and "the red roof": the tiles read "the red roof" for both (the
    superlative is judged on the whole scene), so each tile goes through the model once."""
    from tests.standin import RedSegmenter

    class Counting(RedSegmenter):
        images = 0

        def segment_image(self, image, text):
            Counting.images += image.shape[0]
            return super().segment_image(image, text)

    src = write_tif(tmp_path / "in.tif", scene(300, 300, [(20, 20, 50, 50), (150, 150, 230, 230)]))
    seg = Segmenter(model=Counting(64), device="cpu")
    opts = SegmentOptions(tile_size=64, overlap=16, global_pass=False, class_check=False)
    res = segment_raster(str(src), ["the red roof", "the largest red roof"],
                         str(tmp_path / "o.gpkg"), opts, segmenter=seg)
    assert Counting.images == res["model_tiles"] == res["tile_reads"]
    df = pyogrio.read_dataframe(tmp_path / "o.gpkg")
    assert list(df["expression"]) == ["the red roof", "the largest red roof"]
    assert df["area_m2"].iloc[1] == pytest.approx(1600.0, rel=0.05)  # the large one (80² px)
