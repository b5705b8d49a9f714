"""FIANet behaviour on the small demo layout: shapes, text reuse, masks, our weight format."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from rrsis_geo.errors import WeightsError
from rrsis_geo.model import FIANet, FIANetConfig, TextFeatures, load_fianet, save_fianet
from rrsis_geo.model.fiam import SpatialImageLanguageAttention
from rrsis_geo.model.swin import SwinBlock, freeze_position_biases, window_layout
from rrsis_geo.model.text_encoder import encode_masked

L = 20


@pytest.fixture(scope="module")
def tiny() -> FIANet:
    torch.manual_seed(0)
    model = FIANet(FIANetConfig.tiny()).eval()
    # Random BN statistics so that the decoder and TMEM are not near-identity.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model


def _text(batch: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 5000, (batch, L), generator=g)
    ids[:, 0] = 101
    attn = torch.zeros(batch, L)
    attn[:, :12] = 1
    obj = torch.zeros(batch, L)
    obj[:, 2:4] = 1
    pos = torch.zeros(batch, L)
    pos[:, 5:8] = 1
    return ids, attn, obj, pos


def test_config_round_trip_and_validation():
    cfg = FIANetConfig.tiny()
    cfg.meta["gsd"] = 0.3
    d = cfg.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert FIANetConfig.from_dict(d) == cfg
    assert cfg.lang_dim == 384 and FIANetConfig.official().lang_dim == 768
    with pytest.raises(ValueError, match="unknown FIANetConfig fields"):
        FIANetConfig.from_dict({**d, "bogus": 1})
    with pytest.raises(ValueError, match="divisible"):
        FIANetConfig(embed_dim=30, num_heads=(4, 8, 16, 32))
    with pytest.raises(ValueError, match="text_encoder"):
        FIANetConfig(text_encoder="gpt")


@pytest.mark.parametrize("hw", [(192, 192), (100, 150), (33, 47)])
def test_output_shape_any_size(tiny, hw):
    with torch.no_grad():
        out = tiny(torch.randn(2, 3, *hw), *_text(2))
    assert out.shape == (2, 2, *hw)
    assert torch.isfinite(out).all()


def test_output_shape_480(tiny):
    with torch.no_grad():
        out = tiny(torch.randn(1, 3, 480, 480), *_text(1))
    assert out.shape == (1, 2, 480, 480)


def test_encode_once_equals_single_call(tiny):
    image = torch.randn(3, 3, 96, 72)
    ids, attn, obj, pos = _text(3, seed=1)
    with torch.no_grad():
        single = tiny(image, ids, attn, obj, pos)
        text = tiny.encode_text(ids, attn, obj, pos)
        assert isinstance(text, TextFeatures)
        assert text.context.shape == (3, 384, L) and text.context_mask.shape == (3, L)
        # Reuse the same features for several image batches.
        assert torch.equal(tiny.segment_image(image, text), single)
        assert torch.equal(tiny.segment_image(image[1:2], TextFeatures(*(t[1:2] for t in text))),
                           tiny(image[1:2], ids[1:2], attn[1:2], obj[1:2], pos[1:2]))


def test_batch1_text_broadcasts_to_image_batch(tiny):
    image = torch.randn(4, 3, 64, 64)
    ids, attn, obj, pos = _text(1, seed=2)
    with torch.no_grad():
        text = tiny.encode_text(ids, attn, obj, pos)
        shared = tiny.segment_image(image, text)
        repeated = tiny(image, *(t.expand(4, -1) for t in (ids, attn, obj, pos)))
        per_image = torch.cat([tiny.segment_image(image[i:i + 1], text) for i in range(4)])
    assert shared.shape == (4, 2, 64, 64)
    torch.testing.assert_close(shared, repeated, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(shared, per_image, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="cannot pair"):
        tiny.segment_image(image[:3], tiny.encode_text(*_text(2)))


def test_zero_masks_give_finite_output(tiny):
    ids, attn, obj, pos = _text(2)
    with torch.no_grad():
        out = tiny(torch.randn(2, 3, 64, 64), ids, attn, torch.zeros_like(obj), pos)
        out_all0 = tiny(torch.randn(2, 3, 64, 64), ids, *(torch.zeros(2, L),) * 3)
    assert torch.isfinite(out).all() and torch.isfinite(out_all0).all()


def test_text_encoder_zero_mask_is_uniform_attention(tiny):
    """Old-HF additive masking: an all-zero mask attends uniformly, i.e. like an all-one mask.

    (Not bit-equal: logits near −10000 keep only ~1e-3 absolute precision in fp32, upstream too.)
    """
    ids = _text(1)[0]
    with torch.no_grad():
        zero, one = encode_masked(tiny.text_encoder, ids, [torch.zeros(1, L), torch.ones(1, L)])
    assert torch.isfinite(zero).all()
    torch.testing.assert_close(zero, one, atol=3e-3, rtol=0)


def test_sila_with_zero_mask_outputs_zero():
    sila = SpatialImageLanguageAttention(16, 8, 16, 16, 16)
    out = sila(torch.randn(2, 30, 16), torch.randn(2, 8, L), torch.zeros(2, L))
    assert torch.allclose(out, torch.zeros_like(out), atol=1e-4)


def test_frozen_text_encoder_stays_eval_and_without_grads(tiny):
    model = FIANet(FIANetConfig.tiny())
    model.train()
    assert not model.text_encoder.training and model.backbone.training
    assert not any(p.requires_grad for p in model.text_encoder.parameters())
    text = model.encode_text(*_text(1))
    assert not text.context.requires_grad
    model.segment_image(torch.randn(2, 3, 48, 48), text).sum().backward()
    assert model.backbone.patch_embed.proj.weight.grad is not None
    model.eval()


def _reference_swin_block(blk: SwinBlock, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Literal re-statement of Swin window attention (docs/fianet.md §Backbone: window loop,
    explicit softmax) to check the fast path."""
    b, _, c = x.shape
    ws, s = blk.window_size, blk.shift_size
    y = blk.norm1(x).view(b, h, w, c)
    pad_r, pad_b = (ws - w % ws) % ws, (ws - h % ws) % ws
    y = F.pad(y, (0, 0, 0, pad_r, 0, pad_b))
    hp, wp = y.shape[1:3]
    if s:
        y = torch.roll(y, (-s, -s), (1, 2))
        region = torch.zeros(hp, wp)
        cnt = 0
        for hs in (slice(0, -ws), slice(-ws, -s), slice(-s, None)):
            for wsl in (slice(0, -ws), slice(-ws, -s), slice(-s, None)):
                region[hs, wsl] = cnt
                cnt += 1
    attn = blk.attn
    heads = attn.num_heads
    bias = attn.relative_position_bias_table[attn.relative_position_index.view(-1)]
    bias = bias.view(ws * ws, ws * ws, heads).permute(2, 0, 1)
    out = torch.zeros_like(y)
    for bi in range(b):
        for i in range(0, hp, ws):
            for j in range(0, wp, ws):
                tok = y[bi, i:i + ws, j:j + ws].reshape(ws * ws, c)
                q, k, v = attn.qkv(tok).view(ws * ws, 3, heads, c // heads).permute(1, 2, 0, 3)
                logits = (q * (c // heads) ** -0.5) @ k.transpose(-1, -2) + bias
                if s:
                    r = region[i:i + ws, j:j + ws].reshape(-1)
                    logits = logits + (r[:, None] != r[None, :]).float() * -100.0
                o = (logits.softmax(-1) @ v).transpose(0, 1).reshape(ws * ws, c)
                out[bi, i:i + ws, j:j + ws] = attn.proj(o).view(ws, ws, c)
    if s:
        out = torch.roll(out, (s, s), (1, 2))
    x = x + out[:, :h, :w].reshape(b, h * w, c)
    return x + blk.mlp(blk.norm2(x))


@pytest.mark.parametrize("shift", [0, 3])
@pytest.mark.parametrize("hw", [(12, 12), (9, 14), (5, 4), (13, 6)])
def test_swin_block_matches_reference(shift, hw):
    torch.manual_seed(0)
    blk = SwinBlock(16, 2, 6, shift, 2.0, 0.0).eval()
    torch.nn.init.normal_(blk.attn.relative_position_bias_table, std=1.0)
    h, w = hw
    x = torch.randn(2, h * w, 16)
    layout = window_layout(hw, 6, shift, x.device)
    with torch.no_grad():
        torch.testing.assert_close(blk(x, layout), _reference_swin_block(blk, x, h, w),
                                   atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("ws,shift", [(6, 0), (6, 3), (7, 3), (12, 6)])
def test_window_layout_scatter_inverts_gather(ws, shift):
    """Every real token is gathered into exactly one window position, and scatter finds it."""
    for h in range(1, 30, 3):
        for w in (1, 6, 7, 13, 24):
            lay = window_layout((h, w), ws, shift, torch.device("cpu"))
            assert lay.scatter.shape == (h * w,)
            assert torch.equal(lay.gather[lay.scatter], torch.arange(h * w))
            assert int((lay.gather < h * w).sum()) == h * w
            assert lay.padded == bool(h % ws or w % ws)


def test_stage_builds_window_layouts_once_per_grid(tiny):
    stage = tiny.backbone.layers[0]
    stage._layouts.clear()
    cpu = torch.device("cpu")
    first = stage.window_layouts((12, 16), cpu)
    assert stage.window_layouts((12, 16), cpu) is first and set(first) == {0, 3}
    assert stage.window_layouts((12, 18), cpu) is not first and len(stage._layouts) == 2
    for k in range(20):  # bounded: tile sizes of a run are few
        stage.window_layouts((k + 1, 6), cpu)
    assert len(stage._layouts) <= 8
    with torch.no_grad():  # a forward on a cached grid equals one on freshly built layouts
        image = torch.randn(1, 3, 64, 64)
        a = tiny(image, *_text(1))
        stage._layouts.clear()
        torch.testing.assert_close(tiny(image, *_text(1)), a, atol=0, rtol=0)


def test_frozen_position_biases_give_the_same_logits(tiny):
    import copy

    frozen = copy.deepcopy(tiny)
    freeze_position_biases(frozen)
    attn = frozen.backbone.layers[1].blocks[0].attn
    assert attn.frozen_position_bias is not None
    assert attn.frozen_position_bias.shape == (attn.num_heads, 36, 36)
    assert frozen.state_dict().keys() == tiny.state_dict().keys()  # not saved
    image = torch.randn(2, 3, 80, 96)
    with torch.no_grad():
        torch.testing.assert_close(frozen(image, *_text(2)), tiny(image, *_text(2)),
                                   atol=0, rtol=0)


@pytest.mark.parametrize("n_words", [1, 2])
def test_segment_image_traces_as_one_graph(tiny, n_words):
    """``--compile`` gets one graph: no data-dependent branch (the null object branch) and no
    data-dependent shape (window index maps) splits it."""
    ids, attn, obj, pos = _text(1)
    obj.zero_()
    obj[0, 2:2 + n_words] = 1
    with torch.inference_mode():
        text = tiny.encode_text(ids, attn, obj, pos)
        explained = torch._dynamo.explain(tiny.segment_image)(torch.randn(1, 3, 96, 96), text)
    assert explained.graph_break_count == 0 and explained.graph_count == 1


def test_our_format_round_trip(tiny, tmp_path):
    image = torch.randn(2, 3, 80, 64)
    text = _text(2)
    with torch.no_grad():
        before = tiny(image, *text)
    weights, card = save_fianet(tiny, tmp_path / "demo", meta={"input_size": 192, "gsd": 0.3})
    assert weights.name == "demo.safetensors" and card.name == "demo.json"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.json", "demo.safetensors"]
    doc = json.loads(card.read_text())
    assert doc["config"]["text_encoder"] == "minilm-l6" and doc["meta"]["gsd"] == 0.3
    from safetensors import safe_open
    with safe_open(str(weights), "pt") as f:
        keys = list(f.keys())
    assert keys and not any(k.startswith("text_encoder.") for k in keys)  # from the package
    for path in (weights, card, tmp_path / "demo"):
        loaded = load_fianet(path)
        assert not loaded.training
        assert loaded.config == tiny.config and loaded.meta["input_size"] == 192
        with torch.no_grad():
            assert torch.equal(loaded(image, *text), before)


def test_our_format_with_text_weights_and_errors(tmp_path):
    torch.manual_seed(1)
    cfg = FIANetConfig.tiny()
    cfg.freeze_text_encoder = False  # fine-tuned text encoder: its weights must be stored
    model = FIANet(cfg).eval()
    weights, card = save_fianet(model, tmp_path / "ft.safetensors")
    from safetensors import safe_open
    with safe_open(str(weights), "pt") as f:
        assert any(k.startswith("text_encoder.") for k in f.keys())
    loaded = load_fianet(card)
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    # Missing sibling, broken card, wrong weights.
    card.rename(tmp_path / "other.json")
    with pytest.raises(WeightsError, match="not found"):
        load_fianet(weights)
    (tmp_path / "ft.json").write_text("{not json")
    with pytest.raises(WeightsError, match="invalid model card"):
        load_fianet(weights)
    other = json.loads((tmp_path / "other.json").read_text())
    other["config"]["decoder_width"] = 32
    (tmp_path / "ft.json").write_text(json.dumps(other))
    with pytest.raises(WeightsError, match="shape mismatch"):
        load_fianet(weights)


@pytest.mark.parametrize("n_words", [0, 1])
def test_inference_skips_null_object_branch_exactly_enough(tiny, n_words):
    """With ≤1 object word the object-position term is ~0; inference skips it (docs/fianet.md
    §FIAM)."""
    image = torch.randn(1, 3, 64, 96)
    ids, attn, obj, pos = _text(1, seed=3)
    obj.zero_()
    obj[0, 3:3 + n_words] = 1
    with torch.no_grad():
        skipped = tiny(image, ids, attn, obj, pos)
    with torch.enable_grad():
        computed = tiny(image, ids, attn, obj, pos).detach()
    torch.testing.assert_close(skipped, computed, atol=1e-4, rtol=1e-4)
    # With two object words the branch matters and is always computed.
    obj[0, 3:5] = 1
    with torch.no_grad():
        assert not torch.allclose(tiny(image, ids, attn, obj, pos), skipped, atol=1e-4)


def test_coord_channels_give_position_and_round_trip(tmp_path):
    """With ``coord_channels=2`` the patch embedding sees x and y: a uniform image gives tokens
    that differ across the frame (without them, interior tokens are all equal), and the layout
    survives our weight format."""
    from rrsis_geo.model.swin import PatchEmbed

    flat = torch.full((1, 3, 32, 32), 0.3)
    with torch.no_grad():
        plain, _ = PatchEmbed(4, 3, 16)(flat)
        coord, hw = PatchEmbed(4, 3, 16, coord_channels=2)(flat)
    assert hw == (8, 8)
    assert torch.allclose(plain[0, 9], plain[0, 18])  # two interior tokens: same pixels
    assert not torch.allclose(coord[0, 9], coord[0, 18], atol=1e-4)
    with pytest.raises(ValueError, match="coord_channels"):
        FIANetConfig(coord_channels=3)
    assert FIANetConfig.tiny().coord_channels == 2 and FIANetConfig.official().coord_channels == 0
    # weights saved before the option existed have no such key: the official patch embedding
    old = FIANetConfig.tiny().to_dict()
    del old["coord_channels"]
    assert FIANetConfig.from_dict(old).coord_channels == 0

    torch.manual_seed(0)
    cfg = FIANetConfig.tiny()
    cfg.coord_channels = 2
    model = FIANet(cfg).eval()
    assert model.backbone.patch_embed.proj.weight.shape[1] == 5
    image = torch.randn(1, 3, 64, 48)
    with torch.no_grad():
        before = model(image, *_text(1))
    save_fianet(model, tmp_path / "c", meta={"input_size": 192})
    loaded = load_fianet(tmp_path / "c.safetensors")
    assert loaded.config.coord_channels == 2
    with torch.no_grad():
        assert torch.equal(loaded(image, *_text(1)), before)


def test_one_image_many_texts_equals_the_image_repeated():
    """segment_image with one image and B sentences runs the text-free part once and gives
    what the image repeated B times gives."""
    import torch

    from rrsis_geo.model import FIANet, FIANetConfig

    torch.manual_seed(0)
    cfg = FIANetConfig(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 4), window_size=4,
                       num_tmem=1, decoder_width=16, text_encoder="minilm-l6",
                       freeze_text_encoder=True)
    model = FIANet(cfg, load_text_weights=False).eval()
    ids = torch.randint(1000, 5000, (3, 8))
    masks = [torch.ones(3, 8), torch.zeros(3, 8), torch.zeros(3, 8)]
    masks[1][:, 2:4] = 1
    image = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        text = model.encode_text(ids, *masks)
        shared = model.segment_image(image, text)
        repeated = model.segment_image(image.expand(3, -1, -1, -1), text)
    assert shared.shape == (3, 2, 64, 64)
    assert torch.allclose(shared, repeated, atol=1e-5)
    assert not torch.allclose(shared[0], shared[1], atol=1e-3)  # the sentences do differ
    # two images with the three sentences each (image-major text rows): each image's text-free
    # part once, the same as each image with the sentences on its own
    images = torch.randn(2, 3, 64, 64)
    rows = torch.tensor([0, 1, 2, 0, 1, 2])
    with torch.inference_mode():
        both = model.segment_image(images, type(text)(*(t[rows] for t in text)))
        alone = torch.cat([model.segment_image(images[i:i + 1], text) for i in range(2)])
    assert both.shape == (6, 2, 64, 64)
    assert torch.allclose(both, alone, atol=1e-5)
    assert not torch.allclose(both[0], both[3], atol=1e-3)  # the images do differ


def test_fianet_and_the_stand_ins_are_referring_models(tiny):
    """FIANet and the pipeline tests' stand-ins meet the protocol the inference relies on."""
    from torch import nn

    from rrsis_geo.model import ReferringModel
    from tests.standin import ColourClassSegmenter, RedSegmenter

    assert isinstance(tiny, ReferringModel)
    assert isinstance(RedSegmenter(), ReferringModel)
    assert isinstance(ColourClassSegmenter(), ReferringModel)
    assert not isinstance(nn.Linear(2, 2), ReferringModel)  # no encode_text / segment_image


def test_folded_decoder_batchnorms_give_the_same_logits(tiny):
    import copy

    folded = copy.deepcopy(tiny)
    folded.classifier.fold_batchnorms()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.classifier.modules())
    assert folded.classifier.conv1_2.bias is not None
    image = torch.randn(2, 3, 64, 80)
    with torch.no_grad():
        torch.testing.assert_close(folded(image, *_text(2)), tiny(image, *_text(2)),
                                   atol=1e-4, rtol=1e-4)
