"""Pretrained starting points: Swin backbone files in both key layouts, BERT folders."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from rrsis_geo.errors import WeightsError
from rrsis_geo.model import FIANet, FIANetConfig
from rrsis_geo.model.pretrained import (
    check_bert_folder,
    detect_swin_layout,
    interpolate_position_table,
    load_bert_folder,
    load_swin_weights,
    map_swin_state_dict,
    read_state_dict,
    swin_target_shapes,
)
from rrsis_geo.model.swin import MultiModalSwin, window_layout

timm = pytest.importorskip("timm")
from timm.models.swin_transformer import SwinTransformer  # noqa: E402

DIMS = {"embed_dim": 32, "depths": (2, 2, 2, 2), "num_heads": (1, 2, 4, 8)}


def _timm_swin(window: int = 7, img: int = 224) -> torch.nn.Module:
    torch.manual_seed(0)
    model = SwinTransformer(img_size=img, window_size=window, num_classes=10,
                            drop_path_rate=0.0, **DIMS).eval()
    # non-trivial norms so that a misplaced LayerNorm shows
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_(1.0 if name.endswith("weight") else 0.0, 0.1)
    return model


def to_microsoft_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm (>= 0.9) keys -> the Swin authors' release: PatchMerging back to the end of the
    previous stage, ``head.fc`` -> ``head``, plus the buffers their files carry."""
    out = {}
    for k, v in state.items():
        k = re.sub(r"^layers\.(\d+)\.downsample",
                   lambda m: f"layers.{int(m.group(1)) - 1}.downsample", k)
        out[k.replace("head.fc.", "head.")] = v
    for k in list(out):
        if k.endswith("attn.relative_position_bias_table"):
            base = k[: -len("relative_position_bias_table")]
            n = int(round(out[k].shape[0] ** 0.5))
            ws = (n + 1) // 2
            out[base + "relative_position_index"] = torch.zeros(ws * ws, ws * ws, dtype=torch.long)
    out["layers.0.blocks.1.attn_mask"] = torch.zeros(4, 49, 49)
    return out


def _ours(window: int) -> MultiModalSwin:
    torch.manual_seed(1)
    return MultiModalSwin(window_size=window, patch_size=4, mlp_ratio=4.0, drop_path_rate=0.0,
                          lang_dim=384, num_tmem=1, **DIMS).eval()


@pytest.mark.parametrize("layout", ["timm", "microsoft"])
def test_every_tensor_lands_and_blocks_compute_like_timm(layout: str) -> None:
    ref = _timm_swin(window=7)
    state = ref.state_dict()
    if layout == "microsoft":
        state = {"model": to_microsoft_layout(state)}  # the authors wrap it in 'model'
        src = state["model"]
    else:
        src = state
    ours = _ours(window=7)
    load = map_swin_state_dict(read_dict(state), swin_target_shapes(ours))
    assert load.layout == layout
    assert not load.missing and not load.unexpected and not load.interpolated
    assert {"head.weight" if layout == "microsoft" else "head.fc.weight", "norm.weight"} <= set(
        load.dropped)
    load_swin_weights(ours, load)
    # every source tensor equals its destination
    shift = layout == "timm"
    sd = ours.state_dict()
    n = 0
    for k, v in src.items():
        if re.search(r"relative_position_index|attn_mask|^head|^norm\.", k):
            continue
        m = re.match(r"layers\.(\d+)\.downsample\.(.*)", k)
        dst = f"layers.{int(m.group(1)) - shift}.downsample.{m.group(2)}" if m else k
        assert torch.equal(sd[dst], v), k
        n += 1
    assert n == len(load.tensors) == len(swin_target_shapes(ours))
    # and they compute what timm computes: patch embedding, stage 1, PatchMerging, stage 2
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        t = ref.patch_embed(x)                                   # [B, H, W, C]
        tok, hw = ours.patch_embed(x)
        torch.testing.assert_close(tok, t.flatten(1, 2), atol=1e-5, rtol=1e-5)
        for stage in (0, 1):
            if stage:
                t = ref.layers[1].downsample(t)
                tok = ours.layers[0].downsample(tok, hw)
                hw = (hw[0] // 2, hw[1] // 2)
                torch.testing.assert_close(tok, t.flatten(1, 2), atol=1e-5, rtol=1e-5)
            for j, blk in enumerate(ours.layers[stage].blocks):
                t = ref.layers[stage].blocks[j](t)
                tok = blk(tok, window_layout(hw, 7, blk.shift_size, tok.device))
            torch.testing.assert_close(tok, t.flatten(1, 2), atol=1e-4, rtol=1e-4)


def read_dict(obj):
    from rrsis_geo.model.pretrained import unwrap_state_dict

    return unwrap_state_dict(obj)


def test_window_7_to_12_interpolates_tables() -> None:
    ref = _timm_swin(window=7)
    state = ref.state_dict()
    ours = _ours(window=12)
    load = map_swin_state_dict(state, swin_target_shapes(ours))
    tables = [k for k in swin_target_shapes(ours) if k.endswith("relative_position_bias_table")]
    assert len(load.interpolated) == len(tables) == 8
    assert {(a, b) for _, a, b in load.interpolated} == {(7, 12)}
    load_swin_weights(ours, load)
    for k in tables:
        src = state[k]                                           # [13², heads]
        dst = ours.state_dict()[k]
        assert dst.shape == (23 * 23, src.shape[1])
        # the zero offset is the centre of both grids and keeps its value exactly
        torch.testing.assert_close(dst.view(23, 23, -1)[11, 11], src.view(13, 13, -1)[6, 6])
        # a table constant per head stays constant
    const = torch.arange(3.0).expand(169, 3).clone()
    torch.testing.assert_close(interpolate_position_table(const, 12),
                               torch.arange(3.0).expand(529, 3))
    assert "7 to 12" in load.summary()


def test_swin_b_shapes_fit_the_official_layout() -> None:
    with torch.device("meta"):
        swin_b = timm.create_model("swin_base_patch4_window7_224", pretrained=False)
        fianet = FIANet(FIANetConfig.official(num_tmem=1), load_text_weights=False)
    target = swin_target_shapes(fianet)
    # the Swin part of the official FIANet key list (upstream's names and shapes)
    rows = (Path(__file__).parent / "data" / "fianet_state_dict_keys.tsv").read_text().splitlines()
    official = {k: tuple(json.loads(shape)) for k, shape in
                (r.split("\t") for r in rows if r and not r.startswith("#"))}
    swin_part = re.compile(r"^backbone\.(patch_embed|layers\.\d+\.(blocks\.\d+\.(norm|mlp|attn\."
                           r"(qkv|proj|relative_position_bias_table))|downsample))")
    assert target == {k: v for k, v in official.items() if swin_part.match(k)}
    for state, layout in ((swin_b.state_dict(), "timm"),
                          (to_microsoft_layout(swin_b.state_dict()), "microsoft")):
        load = map_swin_state_dict(state, target)
        assert load.layout == layout
        assert not load.missing and not load.unexpected
        assert len(load.tensors) == len(target) == 325
        assert len(load.interpolated) == 24  # every block: window 7 -> 12
        assert all(load.tensors[k].shape == target[k] for k in target)


def test_wrong_files_refused() -> None:
    ours = _ours(window=7)
    target = swin_target_shapes(ours)
    with pytest.raises(WeightsError, match="no Swin backbone tensors"):
        map_swin_state_dict({"encoder.weight": torch.zeros(3), "fc.bias": torch.zeros(2)}, target)
    torch.manual_seed(0)
    other = SwinTransformer(img_size=224, window_size=7, embed_dim=48, depths=(2, 2, 2, 2),
                            num_heads=(1, 2, 4, 8), num_classes=10)
    with pytest.raises(WeightsError, match=r"embed width 32.*shape mismatch"):
        map_swin_state_dict(other.state_dict(), target)


def test_partial_file_reports_missing_and_coord_filters(tmp_path: Path) -> None:
    state = _timm_swin().state_dict()
    del state["layers.3.blocks.1.mlp.fc2.bias"]
    state["something.else"] = torch.zeros(2)
    path = tmp_path / "swin.safetensors"
    from safetensors.torch import save_file

    save_file(state, str(path))
    torch.manual_seed(1)
    ours = MultiModalSwin(window_size=7, patch_size=4, mlp_ratio=4.0, drop_path_rate=0.0,
                          lang_dim=384, num_tmem=1, coord_channels=2, **DIMS)
    load = map_swin_state_dict(read_state_dict(path), swin_target_shapes(ours))
    assert load.missing == ["layers.3.blocks.1.mlp.fc2.bias"]
    assert load.unexpected == ["something.else"]
    assert load.coord_filters
    load_swin_weights(ours, load)
    w = ours.patch_embed.proj.weight
    assert torch.equal(w[:, :3], state["patch_embed.proj.weight"]) and not w[:, 3:].any()
    line = load.summary()
    assert "1 missing (e.g. layers.3.blocks.1.mlp.fc2.bias)" in line and "1 unexpected" in line
    assert "\n" not in line


def test_read_state_dict_errors(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="not found"):
        read_state_dict(tmp_path / "none.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(WeightsError, match="cannot read"):
        read_state_dict(bad)
    odd = tmp_path / "odd.pth"
    torch.save({"epoch": 3}, odd)
    with pytest.raises(WeightsError, match="no state dict"):
        read_state_dict(odd)
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"model": {"a": torch.ones(2)}}, wrapped)
    assert set(read_state_dict(wrapped)) == {"a"}
    evil = tmp_path / "evil.pth"
    torch.save({"model": _Evil()}, evil)
    with pytest.raises(WeightsError, match=r"refusing .*\(posix\.system\)"):
        read_state_dict(evil)


class _Evil:
    """A pickle that would run a shell command when loaded unsafely."""

    def __reduce__(self):
        import os

        return (os.system, ("true",))


def test_layout_detection() -> None:
    assert detect_swin_layout(["layers.0.downsample.reduction.weight"]) == "microsoft"
    assert detect_swin_layout(["layers.1.downsample.reduction.weight"]) == "timm"


# ------------------------------------------------------------------------------ BERT folders


def _minilm_shaped_model() -> FIANet:
    cfg = FIANetConfig(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1), window_size=4,
                       num_tmem=1, decoder_width=16, text_encoder="minilm-l6",
                       freeze_text_encoder=False)
    return FIANet(cfg, load_text_weights=False)


def test_bert_folder_loads_into_text_encoder(tmp_path: Path) -> None:
    from transformers import BertConfig, BertModel

    model = _minilm_shaped_model()
    c = model.text_encoder.config
    torch.manual_seed(5)
    bert = BertModel(BertConfig(vocab_size=c.vocab_size, hidden_size=c.hidden_size,
                                num_hidden_layers=c.num_hidden_layers,
                                num_attention_heads=c.num_attention_heads,
                                intermediate_size=c.intermediate_size))
    bert.save_pretrained(tmp_path / "bert")
    n = load_bert_folder(model, tmp_path / "bert")
    assert n == len(model.text_encoder.state_dict())
    ours = model.text_encoder.state_dict()
    for k, v in bert.state_dict().items():
        if not k.startswith("pooler."):
            assert torch.equal(ours[k], v), k


def test_bert_folder_errors(tmp_path: Path) -> None:
    from transformers import BertConfig, BertModel

    with pytest.raises(WeightsError, match="not a folder"):
        check_bert_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsError, match="no config.json"):
        check_bert_folder(tmp_path / "empty")
    gpt = tmp_path / "gpt"
    gpt.mkdir()
    (gpt / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(WeightsError, match="not a BERT.*gpt2"):
        check_bert_folder(gpt)
    small = tmp_path / "small"
    BertModel(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=2, intermediate_size=64)).save_pretrained(small)
    with pytest.raises(WeightsError, match="another size.*hidden_size 32 \\(needs 768\\)"):
        check_bert_folder(small, {"hidden_size": 768, "num_hidden_layers": 12})
    (small / "model.safetensors").unlink()
    with pytest.raises(WeightsError, match="no weights"):
        check_bert_folder(small)
