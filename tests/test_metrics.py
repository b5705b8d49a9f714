"""Metrics against hand-computed values (docs/fianet.md §Metrics)."""

from __future__ import annotations

import math

import pytest
import torch

from rrsis_geo.train.metrics import (
    METRIC_KEYS,
    MetricAccumulator,
    intersection_union,
    iou_from_counts,
    summarize,
)


def _m(rows: list[str]) -> torch.Tensor:
    """Tiny mask from strings of '0'/'1'."""
    return torch.tensor([[int(c) for c in r] for r in rows])


def test_intersection_union_hand_values() -> None:
    pred = torch.stack([_m(["110", "000"]), _m(["000", "000"]), _m(["111", "111"]), _m(["000", "000"])])
    gt = torch.stack([_m(["011", "000"]), _m(["100", "000"]), _m(["000", "000"]), _m(["000", "000"])])
    i, u = intersection_union(pred, gt)
    assert i.tolist() == [1, 0, 0, 0]
    assert u.tolist() == [3, 1, 6, 0]
    iou = iou_from_counts(i, u)
    # both empty -> U = 0 -> IoU 0 (upstream rule, not 1)
    assert iou.tolist() == pytest.approx([1 / 3, 0.0, 0.0, 0.0])


def test_summary_hand_computed() -> None:
    # IoUs: 1/3, 0 (empty pred), 0 (empty gt), 0 (both empty), 1, 0.8, 0.6
    inter = [1, 0, 0, 0, 5, 4, 3]
    union = [3, 1, 6, 0, 5, 5, 5]
    s = summarize(inter, union)
    ious = [1 / 3, 0, 0, 0, 1, 0.8, 0.6]
    assert s["count"] == 7
    assert s["mIoU"] == pytest.approx(sum(ious) / 7)
    assert s["oIoU"] == pytest.approx(13 / 25)
    # ">=" thresholds: 0.6 counts for precision@0.6 and 0.8 for precision@0.8
    assert s["precision@0.5"] == pytest.approx(3 / 7)
    assert s["precision@0.6"] == pytest.approx(3 / 7)
    assert s["precision@0.7"] == pytest.approx(2 / 7)
    assert s["precision@0.8"] == pytest.approx(2 / 7)
    assert s["precision@0.9"] == pytest.approx(1 / 7)
    # gIoU: the "both empty" sample (a correct "no target") counts 1, an empty target with a
    # painted prediction still 0
    assert s["gIoU"] == pytest.approx((sum(ious) + 1) / 7)
    assert list(s) == list(METRIC_KEYS)


def test_all_empty_and_no_samples() -> None:
    s = summarize([0, 0], [0, 0])
    assert s["mIoU"] == 0.0 and s["oIoU"] == 0.0 and s["precision@0.5"] == 0.0
    assert s["gIoU"] == 1.0  # nothing to find, nothing painted
    e = summarize([], [])
    assert e["count"] == 0 and e["mIoU"] == 0.0
    assert all(not math.isnan(v) for v in e.values())


def test_accumulator_subsets() -> None:
    acc = MetricAccumulator()
    pred = torch.stack([_m(["11", "00"]), _m(["11", "11"])])
    gt = torch.stack([_m(["11", "00"]), _m(["10", "00"])])
    iou = acc.update(pred, gt, groups=[["spatial"], ["spatial", "attribute"]], ids=["a", "b"])
    assert iou.tolist() == pytest.approx([1.0, 0.25])
    acc.update(_m(["00", "00"])[None], _m(["01", "00"])[None], groups=[["attribute"]], ids=["c"])
    r = acc.compute()
    assert r["count"] == 3
    assert r["mIoU"] == pytest.approx((1 + 0.25 + 0) / 3)
    assert r["oIoU"] == pytest.approx(3 / 7)
    assert r["subsets"]["spatial"]["count"] == 2
    assert r["subsets"]["spatial"]["mIoU"] == pytest.approx(0.625)
    assert r["subsets"]["spatial"]["oIoU"] == pytest.approx(3 / 6)
    assert r["subsets"]["attribute"]["mIoU"] == pytest.approx(0.125)
    assert r["subsets"]["attribute"]["precision@0.5"] == 0.0
    assert (acc.inter, acc.union) == ([2, 1, 0], [2, 4, 1])  # per sample: IoU 1, 0.25, 0
    assert acc.ids == ["a", "b", "c"]


def test_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError):
        intersection_union(torch.zeros(1, 2, 2), torch.zeros(1, 3, 3))


def test_table_reports_empty_targets() -> None:
    from rrsis_geo.train.evaluation import format_table

    report = summarize([0, 2], [0, 4])
    report["subsets"] = {"absent": summarize([0], [0])}
    report["baselines"] = {}
    per = [{"target_pixels": 0, "pred_pixels": 0}, {"target_pixels": 3, "pred_pixels": 3}]
    table = format_table(report, per)
    assert "overall" in table and "absent" in table
    assert "25.00" in table  # mIoU (0 + 0.5) / 2 ×100
    assert "empty targets: 1" in table and "predicted empty: 1" in table
