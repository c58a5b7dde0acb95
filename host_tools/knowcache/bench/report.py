"""Showing a `knowcache bench` report: rich tables, the JSON file, matplotlib plots."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from knowcache.atomic import replace_atomically
from knowcache.bench import papers
from knowcache.layer_cache import goals

COLORS = {"cloud_only": "#4c72b0", "device_only": "#dd8452", "two_stage": "#55a868",
          "cachenet": "#c44e52", "device_full": "#8172b3", "generic_gate": "#937860",
          "layer_cache": "#da8bc3", "layer_cache_learned": "#8c8c8c",
          "layer_cache_entropy": "#ccb974", "layer_cache_activation": "#64b5cd"}


def systems_table(report: dict) -> Table:
    link = report["link"]
    stream = report["stream"]
    t = Table(title=f"{report['task']}: {stream['queries']} queries (Zipf {stream['zipf']:g}, "
                    f"repeat {stream['repeat']:g}), link {link['profile']} "
                    f"(RTT {link['rtt_ms']:g} ms, {link['bandwidth_mbps']:g} Mbit/s); "
                    "latency in ms, accuracy/fidelity/local in %", padding=(0, 1))
    t.add_column("system", no_wrap=True, min_width=12)
    for col in ("acc", "fid", "local", "mean", "p50", "p95", "p99", "up B/q", "dl KiB",
                "mem KiB"):
        t.add_column(col, justify="right")
    for name, s in report["systems"].items():
        lat = s["latency_ms"]
        answers = s["answers"]
        note = " [yellow]*[/yellow]" if answers["degraded"] or answers["failed"] else ""
        t.add_row(name + note, f"{s['accuracy'] * 100:.1f}",
                  "-" if s["fidelity"] is None else f"{s['fidelity'] * 100:.1f}",
                  f"{s['local_rate'] * 100:.1f}", f"{lat['mean']:.1f}", f"{lat['p50']:.1f}",
                  f"{lat['p95']:.1f}", f"{lat['p99']:.1f}", f"{s['uplink_bytes_per_query']:.0f}",
                  f"{s['download_bytes'] / 1024:.0f} ({s['downloads']})" if s["downloads"]
                  else "0", f"{s['model_bytes'] / 1024:.0f}")
    for name, why in report.get("skipped", {}).items():
        t.add_row(f"{name} [dim](skipped: {why})[/dim]", *["-"] * 10)
    t.caption = ("fid: agreement with the cloud's answers (layer_cache rows: with the full "
                 "program on one view, as device_full); dl: partition downloads (count); "
                 "mem: peak resident bytes of the device's programs")
    return t


def legend_lines(report: dict) -> list[str]:
    """One line per system in the report: what it is."""
    from knowcache.bench.systems import LEGEND
    names = [*report["systems"], *report.get("skipped", {})]
    width = max(map(len, names), default=0)
    return [f"{name:<{width}}  {LEGEND.get(name, '')}" for name in names]


def targets_table(report: dict) -> Table:
    t = Table(title="targets (same stream; (<= x): the target; \\[lo, hi]: 95% interval, "
                    "a verdict inside it is marked within noise)")
    t.add_column("system", no_wrap=True, min_width=12)
    for col in ("latency / cloud_only", "latency / device_full", "acc - cloud_only",
                "acc - device_only"):
        t.add_column(col, justify="right")

    def mark(ok, row) -> str:
        if "withheld" in row:
            return " [yellow]no verdict[/yellow]"
        return "" if ok is None else (" [green]met[/green]" if ok else " [red]missed[/red]")

    def gap(v, ci, bound: float, ok, row) -> str:
        noise = " [yellow](within noise)[/yellow]" if ci[0] < bound < ci[1] and \
            "withheld" not in row else ""
        return (f"{v * 100:+.1f} pt \\[{ci[0] * 100:+.0f}, {ci[1] * 100:+.0f}] "
                f"(>= {bound * 100:+.1f}){mark(ok, row)}{noise}")
    withheld = []
    for name, row in report["targets"].items():
        target = row["target"]
        over = row.get("accuracy_over_device")
        vs_full = row.get("latency_ratio_device_full")
        t.add_row(name,
                  f"{row['latency_ratio']:.2f} (<= {target['latency_vs_cloud']:.2f})"
                  f"{mark(row['latency_met'], row)}",
                  "-" if vs_full is None else
                  f"{vs_full:.2f} (<= {target['latency_vs_device_full']:.2f})",
                  gap(row["accuracy_gap_to_cloud"], row["accuracy_gap_to_cloud_ci95"],
                      -target["accuracy_gap"], row["accuracy_met"], row),
                  "-" if over is None or target["over_device"] is None else
                  gap(over, row["accuracy_over_device_ci95"], target["over_device"],
                      row.get("device_margin_met"), row))
        if "withheld" in row:
            withheld.append(row["withheld"])
    t.caption = ("a latency verdict needs every ratio of its row within target" +
                 (f"; no verdicts: {withheld[0]}; run more queries (--queries)" if withheld
                  else ""))
    return t


def layer_cache_table(report: dict) -> Table:
    rows = report.get("layer_cache_targets", {})
    goal = goals.for_task(report["task"])
    t = Table(title="layer caching (vs running the whole model on the device, device_full): "
                    f"targets >= {goal.flops_saved:.0%} fewer FLOPs, >= {goal.latency_saved:.0%} "
                    f"lower latency, fidelity loss < {goal.fidelity_loss * 100:.1f} pt")
    t.add_column("system (gate)", no_wrap=True, min_width=12)
    for col in ("MFLOPs/q", "FLOPs saved", "latency saved", "fid loss pt", "acc", "exits",
                "lookup us/q"):
        t.add_column(col, justify="right")

    def mark(v: str, ok: bool) -> str:
        return f"{v} [green]met[/green]" if ok else f"{v} [red]missed[/red]"
    for name, row in rows.items():
        s = report["systems"][name]
        hist = "/".join(str(v) for v in s["exit_histogram"].values())
        t.add_row(name, f"{s['flops_per_query'] / 1e6:.1f}",
                  mark(f"{row['flops_saved']:.0%}", row["flops_met"]),
                  mark(f"{row['latency_saved']:.0%}", row["latency_met"]),
                  mark(f"{row['fidelity_loss'] * 100:.2f}", row["fidelity_met"]),
                  f"{s['accuracy'] * 100:.1f}", hist, f"{s['lookup_us_per_query']:.0f}")
    t.caption = "exits: queries answered at exit_0/exit_1/.../by the whole model"
    return t


def papers_table(report: dict) -> Table:
    t = Table(title="the papers' headline comparisons, measured the same way on this run "
                    "(their devices, links and data differ: see docs/benchmarks.md)")
    for col in ("paper", "comparison", "published", "this run"):
        t.add_column(col, justify="right" if col in ("published", "this run") else "left")
    for row in papers.rows(report):
        t.add_row(row["paper"], row["claim"], papers.describe(row["published"], row["unit"]),
                  papers.describe(row["measured"], row["unit"]))
    return t


def online_summary(online: dict) -> str:
    last = online["windows"][-1]
    reached = online["targets_reached_by_request"]
    return (f"online learner ({online['gate']} gate, cold start, retrain every "
            f"{online['retrain_every']}): {len(online['versions']) - 1} versions swapped in, "
            f"{online['rollbacks']} rolled back; last window fidelity {last['fidelity']:.1%}, "
            f"FLOPs saved {last['flops_saved']:.0%}, latency saved {last['latency_saved']:.0%}; "
            + (f"targets first met in the window ending at request {reached}" if reached
               else "targets not met within the run"))


def print_report(report: dict, console: Console) -> None:
    console.print(systems_table(report))
    for line in legend_lines(report):
        console.print(f"[dim]{line}[/dim]", highlight=False)
    for name, s in report["systems"].items():
        a = s["answers"]
        if a["degraded"] or a["failed"]:
            why = f" ({s['errors'][0]})" if s["errors"] else ""
            console.print(f"[yellow]* {name}: {a['degraded']} queries degraded (answered on the "
                          f"device without the cloud), {a['failed']} failed (no answer){why}"
                          "[/yellow]")
    if report["targets"]:
        console.print(targets_table(report))
    bound = report.get("bounds", {})
    if bound:
        console.print(f"[dim]cached classes carry {bound['cached_class_mass']:.1%} of this stream's "
                      f"queries: two_stage cannot answer more locally, so its mean latency is at "
                      f"least ~{bound['two_stage_latency_floor_ratio']:.2f} x cloud_only.[/dim]")
    if report.get("layer_cache_targets"):
        console.print(layer_cache_table(report))
    if report.get("online"):
        console.print(online_summary(report["online"]))
    if papers.rows(report):
        console.print(papers_table(report))
    console.print(f"[dim]link: {report['link']['emulation']}[/dim]")
    for line in profile_lines(report["device"].get("profile")):
        console.print(f"[dim]{line}[/dim]", highlight=False)


def profile_lines(profile: dict | None) -> list[str]:
    """How the device side was slowed, and by how much it measurably was."""
    if not profile or profile["method"] == "none":
        return []
    how = (f"cgroup v1 CPU quota {profile['cfs_quota_us']} us per {profile['cfs_period_us']} us"
           if profile["method"] == "cgroup" else
           f"each query's device compute time (the runtime's local_us) scaled by "
           f"{profile['nominal_slowdown']:g}")
    lines = [f"device profile {profile['profile']} ({profile['description']}): {how}"]
    for program, m in profile.get("measured", {}).items():
        lines.append(f"  {program}: {m['reference_ms']:.2f} ms on the whole core, "
                     f"{m['profiled_ms']:.2f} ms profiled ({m['measured_slowdown']:.1f}x; "
                     f"nominal {profile['nominal_slowdown']:g}x)")
    return lines


def write_json(report: dict, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=1)
    return replace_atomically(path, lambda tmp: Path(tmp).write_text(text))


LINE_STYLES = ("-", "--", "-.", ":", (0, (5, 1, 1, 1)), (0, (1, 1)), (0, (8, 2)),
               (0, (3, 1, 1, 1, 1, 1)), (0, (2, 2)), (0, (6, 1, 2, 1)))


def scene_changes(partition) -> np.ndarray:
    """Query indices where the stream's partition (scene) changes, the first query included."""
    p = np.asarray(partition)
    return np.concatenate([[0], np.flatnonzero(p[1:] != p[:-1]) + 1]).astype(int)


def warmup_curve(local: np.ndarray, changes: np.ndarray, horizon: int = 12
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(local rate at each offset after a scene change, how many changes reach that offset):
    offset k averages the k-th query of every scene that lasts more than k queries."""
    ends = np.append(changes[1:], len(local))
    rates, counts = [], []
    for k in range(horizon):
        hits = [bool(local[c + k]) for c, e in zip(changes, ends) if c + k < e]
        if not hits:
            break
        rates.append(np.mean(hits))
        counts.append(len(hits))
    return np.asarray(rates, float), np.asarray(counts, int)


def plot(report: dict, folder: Path) -> list[Path]:
    """Latency CDF, gate-threshold sweep and cachenet warm-up; returns the PNG paths."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    task, profile = report["task"], report["link"]["profile"]
    out = []

    def save(fig, name: str) -> None:
        path = folder / f"{task}-{profile}-{name}.png"
        fig.tight_layout()
        replace_atomically(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png",
                                                         bbox_inches="tight"))
        plt.close(fig)
        out.append(path)

    fig, ax = plt.subplots(figsize=(8.4, 4.2))
    for k, (name, trace) in enumerate(report["traces"].items()):
        lat = np.sort(np.asarray(trace["latency_ms"]))
        ax.plot(lat, np.arange(1, len(lat) + 1) / len(lat), label=name,
                color=COLORS.get(name), drawstyle="steps-post", lw=1.6,
                ls=LINE_STYLES[k % len(LINE_STYLES)])
    ax.set_xscale("log")
    ax.set_xlabel("latency per query (ms, log scale)")
    ax.set_ylabel("fraction of queries")
    ax.set_title(f"{task} on {profile}: latency CDF")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    save(fig, "latency-cdf")

    if report["sweep"]:
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        names = {"cached": "specialized cache (two_stage)", "generic": "generic student + gate"}
        for role, curve in report["sweep"].items():
            line, = ax.plot(np.asarray(curve["local_rate"]) * 100,
                            np.asarray(curve["accuracy"]) * 100, marker=".",
                            label=names.get(role, role))
            cal = curve["calibrated"]
            ax.scatter([cal["local_rate"] * 100], [cal["accuracy"] * 100], s=80,
                       color=line.get_color(), edgecolor="black", zorder=3,
                       label=f"calibrated threshold {cal['threshold']:.2f}")
        # Baselines as labelled lines; equal ones share a line and a label, not a hidden overlap.
        levels: dict[float, list[str]] = {}
        for name in ("cloud_only", "device_only", "device_full"):
            sysrep = report["systems"].get(name)
            if sysrep:
                levels.setdefault(round(sysrep["accuracy"] * 100, 1), []).append(name)
        for k, (level, same) in enumerate(sorted(levels.items())):
            ax.axhline(level, ls=("--", ":", "-.")[k % 3], lw=1.2, color=COLORS[same[0]],
                       label=f"{' = '.join(same)}: {level:.1f}%")
            ax.annotate(" = ".join(same), (1.0, level), xycoords=("axes fraction", "data"),
                        xytext=(-4, 3 if k % 2 == 0 else -10), textcoords="offset points",
                        ha="right", fontsize=7, color=COLORS[same[0]])
        ax.set_xlabel("answered on the device (%)")
        ax.set_ylabel("accuracy (%)")
        ax.set_title(f"{task}: accuracy vs local rate as the gate threshold sweeps")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        fig.set_size_inches(8.8, 4.2)
        save(fig, "gate-sweep")

    if "cachenet" in report["traces"]:
        changes = scene_changes(report["traces"]["cachenet"]["partition"])
        fig, ax = plt.subplots(figsize=(8.4, 3.8))
        for name, style in (("cachenet", "-"), ("two_stage", "--")):
            if name not in report["traces"]:
                continue
            local = np.asarray(report["traces"][name]["source"]) == "local"
            curve, _ = warmup_curve(local, changes)
            ax.plot(np.arange(len(curve)), curve * 100, ls=style, marker="o", ms=3,
                    color=COLORS[name], label=name)
        ax.set_ylim(-2, 102)
        ax.set_xlabel(f"queries since the stream moved to another partition's classes "
                      f"(mean over {len(changes)} changes; 0: the first query after one)")
        ax.set_ylabel("answered locally (%)")
        ax.set_title(f"{task}: cachenet cache warm-up after a change of scene "
                     f"({report['device']['cachenet']['slots']} slots)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        save(fig, "cachenet-warmup")

    if report.get("layer_cache_targets"):
        names = list(report["layer_cache_targets"])
        fig, ax = plt.subplots(figsize=(6.4, 3.6))
        for k, name in enumerate(names):
            hist = report["systems"][name]["exit_histogram"]
            total = sum(hist.values())
            ax.bar(np.arange(len(hist)) + (k - len(names) / 2 + 0.5) * 0.8 / len(names),
                   np.array(list(hist.values())) / total * 100, width=0.8 / len(names),
                   color=COLORS.get(name), label=name)
            ax.set_xticks(np.arange(len(hist)), list(hist))
        ax.set_ylabel("queries answered (%)")
        ax.set_title(f"{task}: where queries leave the model, per exit gate")
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=8)
        save(fig, "layer-cache-exits")

    if report.get("online"):
        online = report["online"]
        w = online["windows"]
        req = [x["requests"] for x in w]
        fig, ax = plt.subplots(figsize=(6.4, 3.8))
        ax.plot(req, [x["fidelity"] * 100 for x in w], marker="o", label="fidelity (%)")
        ax.plot(req, [x["flops_saved"] * 100 for x in w], marker="s", label="FLOPs saved (%)")
        ax.plot(req, [x["latency_saved"] * 100 for x in w], marker="^", label="latency saved (%)")
        ax.axhline(99.5, ls="--", color="grey", lw=0.8)
        ax.axhline(50, ls=":", color="grey", lw=0.8)
        for at, _v in online["versions"][1:]:
            ax.axvline(at, color="grey", alpha=0.15)
        ax.set_xlabel(f"requests (windows of {online['window']}; grey: new version swapped in)")
        ax.set_ylabel("%")
        ax.set_title(f"{task}: online layer caching from cold start ({online['gate']} gate)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        save(fig, "layer-cache-online")
    return out
