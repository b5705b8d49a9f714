"""Fine-tuning: class-list extension and starting from pretrained parts (train command)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from rrsis_geo.cli.main import cli
from rrsis_geo.data.refsegrs import RefSegRSDataset
from rrsis_geo.model import load_fianet
from rrsis_geo.text import analyse, decouple
from rrsis_geo.train.loop import train

DEMO = Path(__file__).resolve().parents[1] / "sample_data" / "demo_model" / "fianet_tiny.json"

# (expression, metadata category or None): "solar panel" comes from metadata, "pool" from the
# nouns of expressions without metadata (two of them name it), "house" from one expression only
TRAIN = [
    ("the solar panel on the left", "solar panel"),
    ("the large solar panel", "solar panel"),
    ("the pool in the upper right", None),
    ("the small pools", None),
    ("the house at the bottom", None),
    ("the building on the left", "building"),
]
VAL = [("the solar panel", "solar panel"), ("the pool on the right", None)]


def _write_dataset(root: Path) -> Path:
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    meta = []
    for split, rows in (("train", TRAIN), ("val", VAL)):
        lines = []
        for i, (expr, cat) in enumerate(rows):
            rid = f"{split}{i}"
            img = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
            mask = np.zeros((64, 64), np.uint8)
            y, x = rng.integers(4, 40, 2)
            mask[y:y + 20, x:x + 20] = 255
            img[mask > 0] = (40, 40, 200)
            Image.fromarray(img).save(root / "images" / f"{rid}.png")
            Image.fromarray(mask).save(root / "masks" / f"{rid}.png")
            lines.append(f"{rid} {expr}")
            if cat:
                meta.append({"id": rid, "expression": expr, "category": cat, "split": split})
        (root / f"output_phrase_{split}.txt").write_text("\n".join(lines) + "\n")
    (root / "metadata.jsonl").write_text("".join(json.dumps(m) + "\n" for m in meta))
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_dataset(tmp_path_factory.mktemp("ft") / "data")


def test_dataset_finds_new_class_phrases(dataset: Path) -> None:
    base = ["building", "road"]
    ds = RefSegRSDataset(dataset, "train", img_size=32, classes=base, extend_classes=True,
                         add_classes=["Tennis  Court"])
    assert ds.classes == ["building", "road", "tennis court", "solar panel", "pool"]
    assert ds.added_classes == {"tennis court": "option", "solar panel": "metadata",
                                "pool": "nouns"}
    # the decoupled tensors already mark the new words
    i = ds.expressions.index("the small pools")
    assert ds.text["object_mask"][i].tolist()[:5] == [0, 0, 0, 1, 0]  # [CLS] the small POOLS
    off = RefSegRSDataset(dataset, "train", img_size=32, classes=base)
    assert off.classes == base and off.added_classes == {}
    assert not off.text["object_mask"][i].any()


def test_finetune_extends_and_records_class_list(dataset: Path, tmp_path: Path) -> None:
    before = json.loads(DEMO.read_text())["meta"]["classes"]
    assert "solar panel" not in before and "pool" not in before
    out = tmp_path / "run"
    result = train(dataset, "refsegrs", "tiny", out, epochs=1, batch_size=3, img_size=64,
                   init_weights=str(DEMO), progress=False, num_threads=1,
                   log=lambda msg: None)
    card = json.loads(result.weights.with_suffix(".json").read_text())
    classes = card["meta"]["classes"]
    assert classes[:len(before)] == before
    assert classes[len(before):] == ["solar panel", "pool"]
    assert card["meta"]["classes_added"] == {"solar panel": "metadata", "pool": "nouns"}
    # a dataset that records no resolution keeps the starting model's (segment's --gsd auto)
    assert card["meta"]["gsd"] == json.loads(DEMO.read_text())["meta"]["gsd"] is not None
    # inference decouples with the loaded model's list: the new words are object words
    model = load_fianet(result.weights)
    assert model.meta["classes"] == classes
    a = analyse("the solar panel near the pool", model.meta["classes"])
    assert set(a.matched_classes) == {"solar panel", "pool"}
    d = decouple("the solar panel near the pool", model.meta["classes"],
                 max_tokens=model.meta["max_tokens"])
    #          [CLS] the solar panel near the pool
    assert d.object_mask.tolist()[:7] == [0, 0, 1, 1, 0, 0, 1]
    assert not decouple("the solar panel near the pool", before).object_mask.any()
    # and `segment` encodes the sentence with it
    from rrsis_geo.inference.segmenter import Segmenter

    feats = Segmenter(result.weights, device="cpu").encode("the solar panel near the pool")
    assert feats.object_mask[0].tolist()[:7] == [0, 0, 1, 1, 0, 0, 1]


def test_cli_add_classes_and_log_line(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    r = CliRunner().invoke(cli, ["train", str(dataset), "--weights", str(DEMO), "--out", str(out),
                                 "--epochs", "1", "--batch-size", "3", "--img-size", "64",
                                 "--threads", "1", "--quiet", "--no-extend-classes",
                                 "--add-classes", "greenhouse, solar panel"])
    assert r.exit_code == 0, r.output
    assert "class list extended with 2 phrase(s): 'greenhouse', 'solar panel' " \
           "(from --add-classes)" in r.output
    meta = json.loads((out / "fianet_tiny.json").read_text())["meta"]
    assert meta["classes"][-2:] == ["greenhouse", "solar panel"] and "pool" not in meta["classes"]
    # "the small pools" has no category: what the model learned to find is not known
    assert meta.get("trained_classes") is None
    assert "the classes it was trained to find are not known" in r.output


# ------------------------------------------------------------------ pretrained parts on the CLI


def _one_line_error(r, code: int, text: str) -> None:
    assert r.exit_code == code, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("rrsis-geo: error: ") and text in lines[0], \
        r.output


def test_cli_refuses_bad_backbone_and_text_weights(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "never"
    junk = tmp_path / "junk.pth"
    torch.save({"model": {"fc.weight": torch.zeros(2, 2)}}, junk)
    base = ["train", str(dataset), "--config", "official", "--out", str(out), "--quiet"]
    r = CliRunner().invoke(cli, [*base, "--backbone-weights", str(junk)])
    _one_line_error(r, 4, "no Swin backbone tensors found")
    gpt = tmp_path / "gpt"
    gpt.mkdir()
    (gpt / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    r = CliRunner().invoke(cli, [*base, "--text-weights", str(gpt)])
    _one_line_error(r, 4, "is not a BERT")
    from transformers import BertConfig, BertModel

    BertModel(BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=2, intermediate_size=64)).save_pretrained(
        tmp_path / "tinybert")
    r = CliRunner().invoke(cli, [*base, "--text-weights", str(tmp_path / "tinybert")])
    _one_line_error(r, 4, "hidden_size 32 (needs 768)")
    r = CliRunner().invoke(cli, [*base, "--text-weights", str(gpt), "--weights", str(DEMO)])
    _one_line_error(r, 2, "use one or the other")
    r = CliRunner().invoke(cli, ["train", str(dataset), "--out", str(out), "--text-weights",
                                 str(gpt)])
    _one_line_error(r, 2, "--text-weights needs --config official")
    assert not out.exists()  # nothing written


def test_cli_timm_name_offline_one_line(dataset: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("timm")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # no retries against the network
    out = tmp_path / "never"
    r = CliRunner().invoke(cli, ["train", str(dataset), "--config", "official", "--out", str(out),
                                 "--quiet", "--backbone-weights",
                                 "timm:swin_base_patch4_window12_384.ms_in22k"])
    assert r.exit_code == 4, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    # a note that timm is asked, then one error line (no retry log, no traceback)
    assert len(lines) == 2 and lines[0].startswith("rrsis-geo train: fetching timm:"), r.output
    assert lines[1].startswith("rrsis-geo: error: cannot fetch "
                               "timm:swin_base_patch4_window12_384.ms_in22k with timm ("), r.output
    assert "offline? download the weights and pass the file" in lines[1]
    assert not out.exists()


def test_cli_backbone_weights_into_tiny_config(dataset: Path, tmp_path: Path) -> None:
    """The mapping is generic: a timm Swin of the tiny config's widths (window 7 -> 6)."""
    timm = pytest.importorskip("timm")
    from timm.models.swin_transformer import SwinTransformer

    torch.manual_seed(0)
    swin = SwinTransformer(img_size=224, window_size=7, embed_dim=32, depths=(2, 2, 2, 2),
                           num_heads=(1, 2, 4, 8), num_classes=5)
    assert timm  # used for the import check
    path = tmp_path / "swin.pth"
    torch.save(swin.state_dict(), path)
    out = tmp_path / "tiny"
    r = CliRunner().invoke(cli, ["train", str(dataset), "--out", str(out), "--backbone-weights",
                                 str(path), "--epochs", "1", "--batch-size", "3",
                                 "--img-size", "64", "--threads", "1", "--quiet", "--lr", "1e-9"])
    assert r.exit_code == 0, r.output
    assert ("117 tensors loaded (timm layout); 8 position tables interpolated from window 7 to 6; "
            "coordinate-plane filters of the patch embedding set to zero; 0 missing; "
            "0 unexpected; 4 ignored") in r.output
    model = load_fianet(out / "fianet_tiny.safetensors")
    # a learning rate of 1e-9 leaves the loaded tensors (almost) where they landed
    w = model.backbone.layers[1].blocks[0].attn.qkv.weight
    torch.testing.assert_close(w, swin.state_dict()["layers.1.blocks.0.attn.qkv.weight"],
                               atol=1e-6, rtol=0)
    red = model.backbone.layers[0].downsample.reduction.weight
    torch.testing.assert_close(red, swin.state_dict()["layers.1.downsample.reduction.weight"],
                               atol=1e-6, rtol=0)


@pytest.mark.slow
def test_official_from_swin_b_and_bert_base_files(dataset: Path, tmp_path: Path) -> None:
    """--config official from a Microsoft-layout Swin-B (window 7) and a BERT-base folder."""
    timm = pytest.importorskip("timm")
    from transformers import BertConfig, BertModel

    from tests.test_pretrained import to_microsoft_layout

    torch.manual_seed(0)
    swin = timm.create_model("swin_base_patch4_window7_224", pretrained=False).state_dict()
    torch.save({"model": to_microsoft_layout(swin)}, tmp_path / "swin_b_22k.pth")
    bert = BertModel(BertConfig())  # bert-base-uncased's architecture, random weights
    bert.save_pretrained(tmp_path / "bert")
    out = tmp_path / "official"
    r = CliRunner().invoke(cli, ["train", str(dataset), "--config", "official", "--out", str(out),
                                 "--backbone-weights", str(tmp_path / "swin_b_22k.pth"),
                                 "--text-weights", str(tmp_path / "bert"), "--epochs", "1",
                                 "--batch-size", "2", "--img-size", "64", "--lr", "1e-12",
                                 "--threads", "2", "--quiet"])
    assert r.exit_code == 0, r.output
    assert ("325 tensors loaded (microsoft layout); 24 position tables interpolated from "
            "window 7 to 12; 0 missing; 0 unexpected") in r.output
    assert "text weights" in r.output and "warning: official layout with a random" not in r.output
    model = load_fianet(out / "fianet_official.safetensors")
    sd = model.state_dict()
    close = dict(atol=1e-6, rtol=0)
    torch.testing.assert_close(sd["backbone.layers.2.blocks.17.mlp.fc1.weight"],
                               swin["layers.2.blocks.17.mlp.fc1.weight"], **close)
    torch.testing.assert_close(sd["backbone.layers.2.downsample.reduction.weight"],
                               swin["layers.3.downsample.reduction.weight"], **close)
    table = sd["backbone.layers.0.blocks.1.attn.relative_position_bias_table"]
    torch.testing.assert_close(table.view(23, 23, -1)[11, 11],
                               swin["layers.0.blocks.1.attn.relative_position_bias_table"]
                               .view(13, 13, -1)[6, 6], **close)
    bsd = bert.state_dict()
    for k in ("embeddings.word_embeddings.weight", "encoder.layer.11.output.dense.weight"):
        torch.testing.assert_close(sd[f"text_encoder.{k}"], bsd[k], **close)
    started = model.meta["training"]["started_from"]
    assert started == {"backbone_weights": "swin_b_22k.pth", "text_weights": "bert"}
