"""`knowcache eval`: a folder of labelled files through every program of a manifest.

Each program runs in the C++ runtime, as on a device. Reported per label and
overall: the full and generic models' accuracy; the cached model's accuracy on
its own classes, how often its gate accepts, how right it is when it does, and
how often it says "other" for the classes it leaves to the cloud; the
two-stage answer (the cached model when its gate accepts, else the full
model); each CacheNet partition on its classes. With a staged program (layer
caching), each exit gate it has thresholds for runs in the C++ Engine: where
queries stopped, accuracy, agreement with the full model, and FLOPs and time
against the full program's.

Clips whose speaker the models were fitted or calibrated on (listed in the
models folder's metrics.json by `knowcache build-models --real`) are left out
and counted, so no figure is measured on data a model has seen.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from knowcache import manifest as manifest_doc
from knowcache import runtime, tta
from knowcache.build.calibration import gate_entropies
from knowcache.data import folders
from knowcache.data.dataset import model_input
from knowcache.layer_cache import goals
from knowcache.tasks import OTHER

CARD_BEGIN = "<!-- knowcache eval: begin -->"
CARD_END = "<!-- knowcache eval: end -->"


@dataclass
class Evaluation:
    task: str
    data: str
    samples: int
    speakers: int
    excluded: dict                     # clips / speakers left out (fitted or calibrated on)
    labels: list[str]
    y: np.ndarray
    programs: dict[str, dict] = field(default_factory=dict)   # id -> figures
    per_label: list[dict] = field(default_factory=list)
    full_pred: np.ndarray | None = None
    layer_cache: dict[str, dict] = field(default_factory=dict)   # exit gate -> figures

    def to_dict(self) -> dict:
        return {"task": self.task, "data": self.data, "samples": self.samples,
                "speakers": self.speakers, "excluded": self.excluded,
                "programs": self.programs, "per_label": self.per_label,
                "layer_cache": self.layer_cache}


def fitted_speakers(models_dir: Path) -> set[str]:
    """Speakers of real recordings the models in ``models_dir`` were fitted or calibrated on."""
    path = models_dir / "metrics.json"
    if not path.is_file():
        return set()
    added = json.loads(path.read_text()).get("real", {}).get("source", {}).get("added", {})
    return {s for part in ("train", "val") for s in added.get(part, {}).get("speakers", [])}


def run(models_dir: Path, data: Path, *, include_fitted: bool = False) -> Evaluation:
    doc = manifest_doc.load(models_dir)
    manifest = doc.parsed
    image_size = None
    if manifest.task != "kws":
        full = next(p for p in manifest.partitions if p.role == "full")
        image_size = tuple(full.input.image_size)
    found = folders.load_task_folder(data, tuple(manifest.labels), image_size)
    kept, dropped = folders.leave_out(found, set() if include_fitted
                                      else fitted_speakers(models_dir))
    excluded = {"clips": len(dropped), "speakers": len(set(dropped.speaker.tolist()))}
    if len(kept) == 0:
        raise ValueError(f"every clip in {data} is from a speaker the models in {models_dir} were "
                         "fitted or calibrated on; nothing is left to measure (--include-fitted "
                         "measures them anyway, but such figures are not honest)")
    x, y, speakers = model_input(manifest.task, kept.x), kept.y.astype(np.int64), kept.speaker
    labels = list(manifest.labels)
    ev = Evaluation(manifest.task, str(data), int(len(y)), len(set(speakers.tolist())), excluded,
                    labels, y)
    logits, one_view = {}, None
    for info in manifest.partitions:
        if info.role == "staged":
            continue
        program = runtime.Partition.from_file(manifest.path_of(info))
        # The full model's answers are the cloud's: over its test-time views, if any.
        views = doc.cloud_tta if info.role == "full" else "none"
        logits[info.id], plain = tta.run_rows(program.run, x, views)
        if views != "none":
            one_view = plain.argmax(1)
    infos = {p.id: p for p in manifest.partitions}
    full_pred = logits["full"].argmax(1)
    ev.full_pred = full_pred
    for pid, out in logits.items():
        ev.programs[pid] = _figures(infos[pid], out, y, labels, full_pred)
    if one_view is not None:
        ev.programs["full"].update(cloud_tta=doc.cloud_tta,
                                   accuracy_one_view=_share(one_view == y))
    ev.per_label = _per_label(ev, logits, infos)
    staged = doc.first(manifest_doc.Role.STAGED)
    if staged is not None:
        # layer caching stands against the network it caches: the program on one view
        ev.layer_cache = layer_cache_figures(manifest, staged, x, y,
                                             full_pred if one_view is None else one_view)
    return ev


TIMING_BLOCK = 50


def layer_cache_figures(manifest, staged: dict, x: np.ndarray, y: np.ndarray,
                        full_pred: np.ndarray) -> dict[str, dict]:
    """Per exit gate with thresholds in the ``staged`` manifest entry: every input
    through an Engine in staged mode (exit by exit, as a device runs it), its time
    against the full program's through an Engine (each the runtime's own
    ``local_us``). The inputs go in blocks of ``TIMING_BLOCK``, the full program
    then each gate over the same block: every program runs with its weights as
    warm as a device running it alone would have them, and all of them see the
    same drift of the machine's load."""
    exits = staged["staged"]["exits"]
    total = staged["staged"]["total_flops"]
    gates = sorted({g for e in exits for g, t in e["thresholds"].items() if t is not None})
    if not gates:
        return {}
    engines = {g: runtime.Engine.from_manifest(manifest, staged=True, exit_gate=g)
               for g in gates}
    full_id = next(p.id for p in manifest.partitions if p.role == "full")
    full = runtime.Engine.from_manifest(manifest, install=[full_id], threshold=1.0)
    full_us, results = [], {g: [] for g in gates}
    for start in range(0, len(x), TIMING_BLOCK):
        block = x[start:start + TIMING_BLOCK]
        full_us += [full.infer(row[None]).local_us for row in block]
        for g in gates:
            results[g] += [engines[g].infer(row[None]) for row in block]
    whole_us = float(np.mean(full_us))
    figures = {}
    for gate in gates:
        pred = np.array([r.index for r in results[gate]])
        stopped = np.array([r.exit_index for r in results[gate]])
        us = float(np.mean([r.local_us for r in results[gate]]))
        figures[gate] = {
            "accuracy": _share(pred == y), "full_accuracy": _share(full_pred == y),
            "agreement": _share(pred == full_pred),
            "exit_rate": [_share(stopped == i) for i in range(len(exits))],
            "whole_rate": _share(stopped < 0),
            "flops_saved": 1.0 - float(np.mean([r.flops for r in results[gate]])) / total,
            "us": us, "full_us": whole_us, "latency_saved": 1.0 - us / whole_us}
    return figures


def _figures(info, logits: np.ndarray, y: np.ndarray, labels: list[str],
             full_pred: np.ndarray) -> dict:
    own = [labels.index(c) for c in info.labels if c != OTHER]
    other = info.other_index
    pred = np.array(own + [-1])[logits.argmax(1)] if other >= 0 else logits.argmax(1)
    if info.role == "full":
        return {"role": "full", "accuracy": _share(pred == y)}
    ent, _, is_other = gate_entropies(logits, other)
    accepted = (~is_other) & (ent <= info.threshold)
    mine = np.isin(y, own)
    f = {"role": info.role, "classes": len(own), "threshold": info.threshold,
         "accept_rate": _share(accepted),
         "accuracy_accepted": _share(pred[accepted] == y[accepted]),
         "agreement_accepted": _share(pred[accepted] == full_pred[accepted])}
    if other >= 0:
        f["accuracy_own_classes"] = _share(pred[mine] == y[mine])
        f["other_recall"] = _share(pred[~mine] == -1)
        f["accept_rate_own_classes"] = _share(accepted[mine])
        two = np.where(accepted, pred, full_pred)
        f["two_stage_accuracy"] = _share(two == y)
        f["two_stage_local_rate"] = f["accept_rate"]
    else:
        f["accuracy"] = _share(pred == y)
    return f


def _per_label(ev: Evaluation, logits: dict[str, np.ndarray], infos: dict) -> list[dict]:
    rows = []
    cached = infos.get("cached")
    for i, label in enumerate(ev.labels):
        m = ev.y == i
        if not m.any():
            continue
        row = {"label": label, "clips": int(m.sum()),
               "full": _share(ev.full_pred[m] == i)}
        if "generic" in logits:
            row["generic"] = _share(logits["generic"][m].argmax(1) == i)
        if cached is not None:
            own = [ev.labels.index(c) for c in cached.labels if c != OTHER]
            pred = np.array(own + [-1])[logits["cached"][m].argmax(1)]
            ent, _, is_other = gate_entropies(logits["cached"][m], cached.other_index)
            accepted = (~is_other) & (ent <= cached.threshold)
            row["cached"] = _share(pred == (i if i in own else -1))
            row["cached_accepts"] = _share(accepted)
            row["two_stage"] = _share(np.where(accepted, pred, ev.full_pred[m]) == i)
        rows.append(row)
    return rows


def _share(hits: np.ndarray) -> float | None:
    return float(np.mean(hits)) if len(hits) else None


def confusion_plot(ev: Evaluation, path: Path) -> Path:
    """The full model's confusion matrix (rows: true label, normalized) as a PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(ev.labels)
    cm = np.zeros((n, n))
    np.add.at(cm, (ev.y, ev.full_pred), 1)
    cm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(0.28 * n + 3, 0.28 * n + 2.5))
    im = ax.imshow(cm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), ev.labels, rotation=90, fontsize=7)
    ax.set_yticks(range(n), ev.labels, fontsize=7)
    ax.set_xlabel("full model's answer")
    ax.set_ylabel("true label")
    acc = ev.programs["full"]["accuracy"]
    ax.set_title(f"{ev.task}: full model on {ev.samples} clips ({100 * acc:.1f}%)", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.04)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def card_section(ev: Evaluation, how: str) -> str:
    """The model card's "real voices" section (markdown) for this evaluation."""
    p = ev.programs
    lines = [CARD_BEGIN, "## Real voices (`knowcache eval`)", "",
             f"Written by `knowcache eval` on `{ev.data}`: {ev.samples} clips from "
             f"{ev.speakers} speakers, run through the exported programs by the C++ runtime. "
             f"{ev.excluded['clips']} clips of {ev.excluded['speakers']} speakers the models "
             "were fitted or calibrated on were left out.", "", how, "",
             "| program | role | accuracy | gate accepts | accepted correct | other for uncached |",
             "| --- | --- | ---: | ---: | ---: | ---: |"]
    for pid, f in p.items():
        acc = f.get("accuracy", f.get("accuracy_own_classes"))
        lines.append(f"| {pid} | {f['role']} | {_pct(acc)} | {_pct(f.get('accept_rate'))} | "
                     f"{_pct(f.get('accuracy_accepted'))} | {_pct(f.get('other_recall'))} |")
    if "cached" in p:
        c = p["cached"]
        lines += ["", f"Two-stage (cached model when its gate accepts, else the full model): "
                  f"{_pct(c['two_stage_accuracy'])} accuracy with {_pct(c['two_stage_local_rate'])}"
                  f" answered on the device, against {_pct(p['full']['accuracy'])} for the full "
                  "model alone."]
    if "accuracy_one_view" in p["full"]:
        lines += ["", f"The full model's answers are the cloud's: the full program's logits "
                  f"averaged over test-time views ({p['full']['cloud_tta']}, knowcache/tta.py); "
                  f"on one view, as a device runs it, it scores "
                  f"{_pct(p['full']['accuracy_one_view'])}, the reference of layer caching "
                  "below."]
    if ev.layer_cache:
        lines += ["", "Layer caching (the staged full program, exit by exit in the C++ Engine; "
                  "time against the full program on the same clips, one thread):", "",
                  "| exit gate | accuracy | agreement with full | stopped at exits | FLOPs saved "
                  "| time saved |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for gate, f in ev.layer_cache.items():
            lines.append(f"| {gate} | {_pct(f['accuracy'])} | {_pct(f['agreement'])} | "
                         f"{' / '.join(_pct(r) for r in f['exit_rate'])} | "
                         f"{_pct(f['flops_saved'])} | {_pct(f['latency_saved'])} |")
        best = max(ev.layer_cache, key=lambda g: ev.layer_cache[g]["flops_saved"])
        goal = goals.for_task(ev.task)
        lines += ["", f"Targets (>= {goal.flops_saved:.0%} fewer FLOPs, >= "
                  f"{goal.latency_saved:.0%} less time, < {goal.fidelity_loss * 100:.1f} point "
                  f"accuracy lost), best gate ({best}): "
                  + "; ".join(_layer_cache_verdicts(ev.layer_cache[best], goal)) + "."]
    worst = sorted((r for r in ev.per_label if r["clips"] >= 5), key=lambda r: r["full"])[:5]
    if worst:
        lines += ["", "Hardest words for the full model (at least 5 clips): " + ", ".join(
            f"{r['label']} {_pct(r['full'])} ({r['clips']})" for r in worst) + "."]
    lines.append(CARD_END)
    return "\n".join(lines) + "\n"


def _layer_cache_verdicts(f: dict, goal: goals.Goals) -> list[str]:
    lost = 100 * (f["full_accuracy"] - f["accuracy"])
    out = []
    for what, got, target in (("FLOPs", f["flops_saved"], goal.flops_saved),
                              ("time", f["latency_saved"], goal.latency_saved)):
        out.append(f"{what} {_pct(got)} saved, " + ("met" if got >= target else
                   f"missed by {100 * (target - got):.1f} points"))
    out.append(f"accuracy {lost:+.1f} points lost, " +
               ("met" if lost < 100 * goal.fidelity_loss else "missed"))
    return out


def update_card(card: Path, section: str) -> None:
    """Replaces the card's eval section (between markers), or appends it."""
    text = card.read_text() if card.is_file() else ""
    if CARD_BEGIN in text and CARD_END in text:
        head, rest = text.split(CARD_BEGIN, 1)
        tail = rest.split(CARD_END, 1)[1].lstrip("\n")
        text = head + section.rstrip("\n") + "\n" + ("\n" + tail if tail else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    card.write_text(text)


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"
