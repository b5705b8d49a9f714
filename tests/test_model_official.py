"""Official FIANet layout: state-dict keys/shapes, parameter counts, upstream checkpoints.

The official model has 256 M parameters, so most tests build it on the 'meta' device (shapes only)
and write checkpoints whose tensors are expanded scalars (tiny files, distinct value per key).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from rrsis_geo.errors import WeightsError
from rrsis_geo.model import FIANet, FIANetConfig, load_fianet
from rrsis_geo.model.checkpoint import infer_num_tmem

# every key and shape of an official FIANet checkpoint (names/shapes only), copied from the
# project's shared specification so that the test runs on any clean checkout
KEYS_TSV = Path(__file__).resolve().parent / "data" / "fianet_state_dict_keys.tsv"


def _official_keys(num_tmem: int) -> dict[str, tuple[int, ...]]:
    """Key -> shape of an upstream checkpoint (the TSV is written for num_tmem=3)."""
    keys = {}
    for line in KEYS_TSV.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape = line.split("\t")
        keys[key] = tuple(int(s) for s in shape.strip("[]").split(",") if s.strip())
    if num_tmem == 1:
        keys = {k: v for k, v in keys.items()
                if not k.startswith(("backbone.tmem.block.1.", "backbone.tmem.block.2."))}
    return keys


@pytest.fixture(scope="module", params=[3, 1])
def meta_model(request) -> FIANet:
    with torch.device("meta"):
        return FIANet(FIANetConfig.official(request.param), load_text_weights=False)


def _scalar_state(model: FIANet) -> dict[str, torch.Tensor]:
    """State dict whose tensor i is the value i expanded to the right shape (1 element stored)."""
    state = {}
    for i, (k, v) in enumerate(model.state_dict().items()):
        state[k] = torch.tensor(i % 1000, dtype=v.dtype).expand(v.shape)
    return state


def _save_upstream(path: Path, state: dict, **extra) -> Path:
    args = argparse.Namespace(swin_type="base", dataset="rrsisd", num_tmem=3, window12=True)
    torch.save({"model": state, "args": args, "epoch": 1, **extra}, path)
    return path


def test_keys_and_shapes_match_official_tsv(meta_model):
    num_tmem = meta_model.config.num_tmem
    expected = _official_keys(num_tmem)
    got = {k: tuple(v.shape) for k, v in meta_model.state_dict().items()}
    assert len(expected) == {3: 885, 1: 853}[num_tmem]
    assert sorted(set(expected) - set(got)) == []
    assert sorted(set(got) - set(expected)) == []
    assert {k: v for k, v in got.items() if expected[k] != v} == {}


def test_parameter_count(meta_model):
    n = sum(p.numel() for p in meta_model.parameters())
    assert n == {3: 256_168_626, 1: 251_918_706}[meta_model.config.num_tmem]


def test_upstream_checkpoint_round_trip(meta_model, tmp_path):
    num_tmem = meta_model.config.num_tmem
    state = _scalar_state(meta_model)
    ckpt = _save_upstream(tmp_path / "model_best.pth", state)
    assert infer_num_tmem(state) == num_tmem
    model = load_fianet(ckpt)
    assert not model.training
    assert model.config.num_tmem == num_tmem
    assert model.meta["dataset"] == {1: "refsegrs", 3: "rrsisd"}[num_tmem]
    loaded = model.state_dict()
    assert loaded.keys() == state.keys()
    for k, v in state.items():
        assert torch.equal(loaded[k], v), k
    # Non-persistent BERT buffers exist and hold real values.
    assert model.text_encoder.embeddings.position_ids[0, :3].tolist() == [0, 1, 2]


def test_missing_key_refused(meta_model, tmp_path):
    state = _scalar_state(meta_model)
    del state["backbone.layers.2.blocks.5.attn.qkv.weight"]
    ckpt = _save_upstream(tmp_path / "m.pth", state)
    with pytest.raises(WeightsError, match=r"1 missing key.*layers\.2\.blocks\.5\.attn\.qkv"):
        load_fianet(ckpt)


def test_extra_key_refused(meta_model, tmp_path):
    state = _scalar_state(meta_model)
    state["text_encoder.pooler.dense.weight"] = torch.zeros(2, 2)
    ckpt = _save_upstream(tmp_path / "m.pth", state)
    with pytest.raises(WeightsError, match="unexpected key.*pooler") as err:
        load_fianet(ckpt)
    assert "\n" not in str(err.value)


def test_shape_mismatch_refused(meta_model, tmp_path):
    state = _scalar_state(meta_model)
    state["classifier.conv1_1.bias"] = torch.zeros(3)
    with pytest.raises(WeightsError, match="shape mismatch.*classifier.conv1_1.bias"):
        load_fianet(_save_upstream(tmp_path / "m.pth", state))


class Payload:
    """An arbitrary object a malicious or foreign pickle could carry."""


def test_pickle_with_other_objects_refused(tmp_path):
    ckpt = tmp_path / "evil.pth"
    torch.save({"model": {"a": torch.zeros(1)}, "payload": Payload()}, ckpt)
    with pytest.raises(WeightsError, match="refusing .*objects other than tensors") as err:
        load_fianet(ckpt)
    assert "\n" not in str(err.value)


def test_not_a_checkpoint_refused(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"definitely not a torch file")
    with pytest.raises(WeightsError, match="cannot read checkpoint"):
        load_fianet(junk)
    lst = tmp_path / "list.pth"
    torch.save([1, 2, 3], lst)
    with pytest.raises(WeightsError, match="not a FIANet checkpoint"):
        load_fianet(lst)
    wrong_tmem = tmp_path / "tm.pth"
    torch.save({"model": {"backbone.tmem.block.1.norm1.weight": torch.zeros(1)}}, wrong_tmem)
    with pytest.raises(WeightsError, match="2 TMEM blocks"):
        load_fianet(wrong_tmem)


def test_missing_file_refused(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        load_fianet(tmp_path / "nope.pth")


@pytest.mark.slow
def test_official_forward_small_input():
    """A real (random) official model runs on a small non-square input."""
    torch.manual_seed(0)
    model = FIANet(FIANetConfig.official(1)).eval()
    ids = torch.randint(1000, 2000, (1, 20))
    ones = torch.ones(1, 20)
    with torch.no_grad():
        out = model(torch.randn(1, 3, 96, 80), ids, ones, torch.zeros(1, 20), ones)
    assert out.shape == (1, 2, 96, 80)
    assert torch.isfinite(out).all()
