"""The papers' own headline comparisons, next to the same ratios measured by one
`knowcache bench` run (../shared/papers/README.md lists the papers).

Each row names the published figure, the setting it was measured in, and the
ratio computed here the same way; a row whose systems did not run is left out.
The settings differ (their devices, networks and data sets are not ours), so
a row says how close this implementation comes under the run's own link and
device profile, not that the papers' numbers are reproduced.
"""

from __future__ import annotations

from typing import Optional


def _mean(report: dict, name: str) -> Optional[float]:
    s = report["systems"].get(name)
    return None if s is None else s["latency_ms"]["mean"]


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return None if a is None or b is None or b <= 0 else a / b


def rows(report: dict) -> list[dict]:
    """[{"paper", "claim", "published", "measured", "unit"}], measured from ``report``."""
    out: list[dict] = []

    def add(paper: str, claim: str, published: float, measured: Optional[float], unit: str):
        if measured is not None:
            out.append({"paper": paper, "claim": claim, "published": published,
                        "measured": measured, "unit": unit})

    add("CacheNet", "latency: device_full / cachenet (CIFAR-10)", 3.2,
        _ratio(_mean(report, "device_full"), _mean(report, "cachenet")), "x")
    add("CacheNet", "latency: cloud_only (edge-only) / cachenet (CIFAR-10)", 1.6,
        _ratio(_mean(report, "cloud_only"), _mean(report, "cachenet")), "x")
    sizes = report.get("program_bytes", {})
    add("Knowledge caching", "size: full model / cached model (speech commands)", 17.4,
        _ratio(sizes.get("full"), sizes.get("cached")), "x")
    lc = [report["systems"][n] for n in ("layer_cache", "layer_cache_learned",
                                         "layer_cache_entropy") if n in report["systems"]]
    lc = [s for s in lc if "latency_saved" in s]
    if lc:
        best = max(lc, key=lambda s: s["latency_saved"])
        add("Automated layer caching", "FLOPs saved, best gate (up to)", 0.58,
            max(s["flops_saved"] for s in lc), "%")
        add("Automated layer caching", "latency saved, best gate (up to)", 0.46,
            best["latency_saved"], "%")
        add("GATI", "latency: whole model / layer caching (up to)", 7.69,
            1.0 / max(1e-9, 1.0 - best["latency_saved"]), "x")
        half = max(s.get("answered_within_half_flops", 0.0) for s in lc)
        add("Freeze Inference", "requests answered within the first half of the model "
            "(ResNet-18, CIFAR-10; here: half of its FLOPs)", 0.9158, half, "%")
    return out


def describe(value: float, unit: str) -> str:
    return f"{value:.1%}" if unit == "%" else f"{value:.2f}x"
