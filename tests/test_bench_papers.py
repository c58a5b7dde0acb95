"""The papers' headline comparisons in the bench report: each ratio computed from
the systems' figures as the paper defines it, a row left out when its systems did
not run."""

from __future__ import annotations

import pytest

from knowcache.bench import papers


def _system(mean_ms: float, **extra) -> dict:
    return {"latency_ms": {"mean": mean_ms}, **extra}


def test_rows_are_the_papers_ratios_of_this_run():
    report = {
        "systems": {
            "cloud_only": _system(40.0), "device_full": _system(60.0), "cachenet": _system(10.0),
            "layer_cache": _system(3.0, latency_saved=0.25, flops_saved=0.40,
                                   answered_within_half_flops=0.7),
            "layer_cache_entropy": _system(2.0, latency_saved=0.50, flops_saved=0.35,
                                           answered_within_half_flops=0.6),
        },
        "program_bytes": {"full": 2_000_000, "cached": 100_000},
    }
    got = {(r["paper"], r["claim"].split(":")[0]): (r["published"], r["measured"])
           for r in papers.rows(report)}
    rows = [r for r in papers.rows(report) if r["paper"] == "CacheNet"]
    assert [r["published"] for r in rows] == [3.2, 1.6]
    assert [r["measured"] for r in rows] == [pytest.approx(6.0), pytest.approx(4.0)]  # 60/10, 40/10
    assert got[("Knowledge caching", "size")] == (17.4, pytest.approx(20.0))
    lc = {r["claim"].split(",")[0]: r["measured"] for r in papers.rows(report)
          if r["paper"] in ("Automated layer caching", "GATI", "Freeze Inference")}
    assert lc["FLOPs saved"] == pytest.approx(0.40)             # the best gate for FLOPs
    assert lc["latency saved"] == pytest.approx(0.50)           # the best gate for latency
    assert lc["latency: whole model / layer caching (up to)"] == pytest.approx(2.0)  # 1 / 0.5
    assert lc["requests answered within the first half of the model (ResNet-18"] == \
        pytest.approx(0.7)
    assert papers.describe(0.5, "%") == "50.0%" and papers.describe(2, "x") == "2.00x"


def test_rows_whose_systems_did_not_run_are_left_out():
    report = {"systems": {"cloud_only": _system(40.0), "two_stage": _system(20.0)},
              "program_bytes": {"full": 1000}}
    assert papers.rows(report) == []
