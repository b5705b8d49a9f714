"""``--precision auto`` on a CPU: bf16 for large models on a bf16 CPU, kept only when the first
batch agrees with fp32 (rrsis_geo.inference.device.auto_cpu_bf16, Segmenter)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from rrsis_geo.inference import device
from rrsis_geo.inference.segmenter import Segmenter
from tests.standin import RedSegmenter


class _CountingRed(RedSegmenter):
    """The red stand-in, with a parameter (so the size rule sees it) and a count of the
    forwards run under autocast; ``break_bf16`` makes its autocast output disagree."""

    def __init__(self, break_bf16: bool = False) -> None:
        super().__init__(input_size=32)
        self.scale = torch.nn.Parameter(torch.ones(()))
        self.break_bf16 = break_bf16
        self.low_calls = 0
        self.fp32_calls = 0

    def segment_image(self, image, text_features):
        logits = super().segment_image(image, text_features) * self.scale
        if torch.is_autocast_enabled("cpu"):
            self.low_calls += 1
            return -logits if self.break_bf16 else logits.to(torch.bfloat16)
        self.fp32_calls += 1
        return logits


@pytest.fixture
def bf16_cpu(monkeypatch):
    """Pretend this CPU has native bf16 and every model counts as large."""
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda *a: True)
    monkeypatch.setattr(device, "AUTO_BF16_MIN_PARAMS", 0)


def _tiles():
    img = np.zeros((2, 3, 32, 32), np.float32)
    img[:, 0, 8:20, 8:20] = 1.0  # a red square
    return img


def test_auto_keeps_bf16_when_the_first_batch_agrees(bf16_cpu, caplog):
    model = _CountingRed()
    seg = Segmenter(model=model, device="cpu", precision="auto")
    assert seg.autocast_dtype == torch.bfloat16
    with caplog.at_level(logging.INFO, logger="rrsis_geo"):
        first = seg.predict(_tiles(), seg.encode("the red roof"))
    assert model.fp32_calls == 1 and model.low_calls == 1  # the check ran both once
    assert "precision auto: bf16" in caplog.text
    assert first[:, 10, 10].min() > 0.9 and first[:, 0, 0].max() < 0.1
    seg.predict(_tiles(), seg.encode("the red roof"))
    assert model.fp32_calls == 1 and model.low_calls == 2  # afterwards bf16 only
    assert seg.autocast_dtype == torch.bfloat16


def test_auto_falls_back_to_fp32_when_bf16_disagrees(bf16_cpu, caplog):
    model = _CountingRed(break_bf16=True)
    seg = Segmenter(model=model, device="cpu", precision="auto")
    with caplog.at_level(logging.WARNING, logger="rrsis_geo"):
        first = seg.predict(_tiles(), seg.encode("the red roof"))
    assert "precision auto: fp32" in caplog.text and "at least 99 %" in caplog.text
    assert seg.autocast_dtype is None
    # the answer is fp32's, not the broken bf16 one
    assert first[:, 10, 10].min() > 0.9 and first[:, 0, 0].max() < 0.1
    seg.predict(_tiles(), seg.encode("the red roof"))
    assert model.low_calls == 1 and model.fp32_calls == 2


def test_auto_stays_fp32_for_small_models_and_explicit_precisions(monkeypatch):
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda *a: True)
    model = _CountingRed()  # 1 parameter: below AUTO_BF16_MIN_PARAMS
    seg = Segmenter(model=model, device="cpu", precision="auto")
    seg.predict(_tiles(), seg.encode("the red roof"))
    assert seg.autocast_dtype is None and model.low_calls == 0
    monkeypatch.setattr(device, "AUTO_BF16_MIN_PARAMS", 0)
    seg = Segmenter(model=_CountingRed(), device="cpu", precision="fp32")
    seg.predict(_tiles(), seg.encode("the red roof"))
    assert seg.autocast_dtype is None and seg.model.low_calls == 0
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda *a: False)
    seg = Segmenter(model=_CountingRed(), device="cpu", precision="auto")
    assert seg.autocast_dtype is None


def test_native_bf16_is_read_from_the_cpu_flags(tmp_path):
    with_flag = tmp_path / "a"
    with_flag.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16 avx512_vnni\n")
    amx = tmp_path / "b"
    amx.write_text("flags\t\t: fpu avx512f amx_bf16 amx_tile\n")
    without = tmp_path / "c"
    without.write_text("flags\t\t: fpu sse2 avx2 avx512f avx512bw\n")
    assert device.cpu_has_native_bf16(str(with_flag))
    assert device.cpu_has_native_bf16(str(amx))
    assert not device.cpu_has_native_bf16(str(without))
    assert not device.cpu_has_native_bf16(str(tmp_path / "missing"))


# -- --compile: the tile forward through torch.compile ------------------------------------------

class _SpyCompile:
    """Stands in for torch.compile: records the shapes the compiled function sees (and can
    fail like a compiler without a C++ toolchain)."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.calls: list[tuple[int, ...]] = []
        self.compiled = 0

    def __call__(self, fn, **kwargs):
        self.compiled += 1
        self.kwargs = kwargs
        self.fn = fn

        def run(x, text):
            if self.fail:
                raise RuntimeError("InductorError: no working C++ compiler found\nmore")
            self.calls.append(tuple(x.shape))
            return fn(x, text)
        return run


def test_compile_runs_the_tile_batches_and_pads_the_last_one(monkeypatch):
    spy = _SpyCompile()
    monkeypatch.setattr(torch, "compile", spy)
    model = _CountingRed()
    seg = Segmenter(model=model, device="cpu", precision="fp32", compile=True)
    eager = Segmenter(model=_CountingRed(), device="cpu", precision="fp32")
    text = seg.encode("the red roof")
    tiles = np.concatenate([_tiles(), _tiles()])  # 4 tiles
    full = seg.predict(tiles, text)
    last = seg.predict(tiles[:3], text)  # the run's last, smaller batch: padded to 4
    assert spy.compiled == 1 and spy.calls == [(4, 3, 32, 32), (4, 3, 32, 32)]
    assert spy.kwargs["dynamic"] is False and spy.kwargs["options"] == {"freezing": True}
    np.testing.assert_allclose(full, eager.predict(tiles, eager.encode("the red roof")))
    np.testing.assert_allclose(last, full[:3])
    # other shapes (class-check windows, the overview, several sentences) run eagerly
    seg.predict(np.zeros((1, 3, 16, 16), np.float32), text)
    seg.predict_many(tiles[:1], seg.encode_many(["the red roof", "the red car"]))
    assert spy.compiled == 1 and len(spy.calls) == 2


def test_compile_failure_is_reported_once_and_the_run_goes_on(monkeypatch, caplog):
    monkeypatch.setattr(torch, "compile", _SpyCompile(fail=True))
    seg = Segmenter(model=_CountingRed(), device="cpu", precision="fp32", compile=True)
    with caplog.at_level(logging.WARNING, logger="rrsis_geo"):
        a = seg.predict(_tiles(), seg.encode("the red roof"))
        b = seg.predict(_tiles(), seg.encode("the red roof"))
    warnings = [r for r in caplog.records if "--compile" in r.getMessage()]
    assert len(warnings) == 1 and "no working C++ compiler" in warnings[0].getMessage()
    assert "more" not in warnings[0].getMessage()  # its first line only
    np.testing.assert_allclose(a, b)
    assert a[:, 10, 10].min() > 0.9


def test_without_compile_nothing_is_compiled(monkeypatch):
    spy = _SpyCompile()
    monkeypatch.setattr(torch, "compile", spy)
    seg = Segmenter(model=_CountingRed(), device="cpu", precision="fp32")
    seg.predict(_tiles(), seg.encode("the red roof"))
    assert spy.compiled == 0


def test_segment_compile_flag_compiles_the_tile_batches(cli_standin, tmp_path, monkeypatch):
    """``segment --compile``: the tile batches of the run go through the compiled forward,
    the answer is the uncompiled run's."""
    import pyogrio

    from rrsis_geo.cli.main import cli
    from tests.rasters import scene, write_tif

    spy = _SpyCompile()
    monkeypatch.setattr(torch, "compile", spy)
    src = write_tif(tmp_path / "in.tif", scene(200, 200, [(10, 10, 40, 40), (120, 130, 160, 170)]))
    args = ["segment", str(src), "-e", "red", "--progress", "none", "--tile-size", "64",
            "--batch-size", "4", "--no-class-check", "--mode", "all"]
    res = cli_standin.invoke(cli, [*args, "-o", str(tmp_path / "c.gpkg"), "--compile"])
    assert res.exit_code == 0, res.output
    assert spy.compiled == 1 and spy.calls and set(spy.calls) == {(4, 3, 64, 64)}
    # the compiler's own multi-line warnings (graph breaks, toolchain lookups) are kept quiet
    from torch import _logging as torch_logging

    try:
        assert logging.getLogger("torch._dynamo").getEffectiveLevel() == logging.ERROR
        assert logging.getLogger("torch._inductor").getEffectiveLevel() == logging.ERROR
    finally:
        torch_logging.set_logs()  # torch's defaults again for the other tests
    n_compiled = len(spy.calls)
    res = cli_standin.invoke(cli, [*args, "-o", str(tmp_path / "e.gpkg")])
    assert res.exit_code == 0, res.output
    assert len(spy.calls) == n_compiled  # no --compile: nothing compiled
    a = pyogrio.read_dataframe(tmp_path / "c.gpkg")
    b = pyogrio.read_dataframe(tmp_path / "e.gpkg")
    assert len(a) == len(b) == 2
    assert sorted(a.geometry.area.round(3)) == sorted(b.geometry.area.round(3))


def test_after_a_gpu_fallback_the_compiled_graph_is_not_reused(monkeypatch):
    """A graph compiled for the GPU is dropped when an out-of-memory fallback moves the run to
    the CPU: the rest of the run is eager, nothing recompiles mid-run."""
    spy = _SpyCompile()
    monkeypatch.setattr(torch, "compile", spy)
    seg = Segmenter(model=_CountingRed(), device="cpu", precision="fp32", compile=True)
    seg.predict(_tiles(), seg.encode("the red roof"))
    assert spy.compiled == 1 and len(spy.calls) == 1
    seg.to_cpu()  # what the pipeline calls after CUDA OOM at batch size 1
    out = seg.predict(_tiles(), seg.encode("the red roof"))
    assert spy.compiled == 1 and len(spy.calls) == 1
    assert out[:, 10, 10].min() > 0.9


def test_compile_in_bf16_on_a_cpu_holds_a_bf16_copy_of_the_weights(monkeypatch):
    spy = _SpyCompile()
    monkeypatch.setattr(torch, "compile", spy)
    seg = Segmenter(model=_CountingRed(), device="cpu", precision="bf16", compile=True)
    out = seg.predict(_tiles(), seg.encode("the red roof"))
    compiled_model = spy.fn.__self__
    assert compiled_model is not seg.model and compiled_model.scale.dtype == torch.bfloat16
    assert seg.model.scale.dtype == torch.float32  # the eager model keeps fp32 weights
    assert out[:, 10, 10].min() > 0.9 and out[:, 0, 0].max() < 0.1


def test_cpu_compile_freezes_a_prepared_copy_and_runs_each_shape_once_uncompiled(monkeypatch):
    """On a CPU the compiled copy has its window attention biases gathered once, each new image
    shape first runs uncompiled (building the window layouts the tracer then sees as
    constants), and the compiled call runs with dynamo's prepare_freezing (without it the
    weights reach inductor as inputs and nothing is frozen)."""
    from rrsis_geo.inference.segmenter import compiled_segment_image
    from rrsis_geo.model import FIANet, FIANetConfig

    seen_flags, eager_shapes = [], []
    spy = _SpyCompile()

    def spy_compile(fn, **kwargs):
        run = spy(fn, **kwargs)

        def flagged(x, text):
            seen_flags.append(torch._dynamo.config.prepare_freezing)
            return run(x, text)
        return flagged

    monkeypatch.setattr(torch, "compile", spy_compile)
    torch.manual_seed(0)
    model = FIANet(FIANetConfig.tiny()).eval()
    fn = compiled_segment_image(model, torch.device("cpu"))
    copy_ = spy.fn.__self__
    assert copy_ is not model
    assert copy_.backbone.layers[0].blocks[0].attn.frozen_position_bias is not None
    assert model.backbone.layers[0].blocks[0].attn.frozen_position_bias is None
    real = copy_.segment_image
    monkeypatch.setattr(copy_, "segment_image",
                        lambda x, t: (eager_shapes.append(tuple(x.shape)), real(x, t))[1])
    ids = torch.randint(1000, 5000, (1, 20))
    mask = torch.ones(1, 20)
    with torch.inference_mode():
        text = model.encode_text(ids, mask, mask, mask)
        out = fn(torch.randn(2, 3, 64, 64), text)
        fn(torch.randn(2, 3, 64, 64), text)
        fn(torch.randn(1, 3, 96, 96), text)
    assert eager_shapes == [(2, 3, 64, 64), (1, 3, 96, 96)]  # once per new image shape
    assert spy.calls == [(2, 3, 64, 64), (2, 3, 64, 64), (1, 3, 96, 96)]
    assert seen_flags == [True, True, True] and not torch._dynamo.config.prepare_freezing
    assert out.shape == (2, 2, 64, 64)


@pytest.mark.parametrize("device_type", ["cpu", "cuda"])
def test_compiled_forward_is_traced_once_per_shape(monkeypatch, device_type):
    """Real dynamo tracing (its cheap "eager" backend): the wrapper's uncompiled first run of
    each shape builds the window layouts, so the graph sees them as constants and a second
    call does not trace again (without it: two graphs). The CUDA branch is exercised with CPU
    tensors: it differs only in what it prepares."""
    from torch._dynamo.utils import counters

    from rrsis_geo.inference.segmenter import compiled_segment_image
    from rrsis_geo.model import FIANet, FIANetConfig

    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: real_compile(
        fn, backend="eager", dynamic=False))
    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    model = FIANet(FIANetConfig.tiny()).eval()
    fn = compiled_segment_image(model, torch.device(device_type))
    ids = torch.randint(1000, 5000, (1, 20))
    mask = torch.ones(1, 20)
    image = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        text = model.encode_text(ids, mask, mask, mask)
        outs = [fn(image, text) for _ in range(3)]
        eager = model.segment_image(image, text)
    assert counters["stats"]["unique_graphs"] == 1
    torch.testing.assert_close(outs[2], eager, atol=1e-4, rtol=1e-4)
    torch._dynamo.reset()
