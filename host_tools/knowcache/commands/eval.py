"""`knowcache eval`: classify a folder of labelled files with every program of a manifest."""

from __future__ import annotations

import json
from pathlib import Path

import click

from knowcache.commands._params import TASK


@click.command("eval")
@click.option("--task", type=TASK, required=True)
@click.option("--models", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="Folder with the task's manifest.json (default models/<task>).")
@click.option("--data", type=click.Path(exists=True, file_okay=False, path_type=Path),
              required=True, help="Folder of <label>/*.wav (kws) or <label>/*.png|jpg (vision).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("out/eval"),
              show_default=True, help="Where the confusion-matrix plot and JSON go.")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@click.option("--card", is_flag=True,
              help="Write the figures into the models folder's README.md (its real-voices section).")
@click.option("--include-fitted", is_flag=True,
              help="Also measure clips of speakers the models were fitted or calibrated on "
              "(left out by default: such figures flatter the models).")
def eval_cmd(task, models, data, out, as_json, card, include_fitted) -> None:
    """Accuracy per label of every program in a manifest on a folder of labelled files,
    the cached model's accept rate, and the two-stage result; saves a confusion plot."""
    from knowcache import evaluate
    from knowcache.runtime import KnowcacheError
    models = models or Path("models") / task
    if not (models / "manifest.json").is_file():
        raise click.ClickException(f"no manifest.json in {models}; pass --models with a folder "
                                   f"written by `knowcache export` (e.g. models/{task})")
    try:
        ev = evaluate.run(models, data, include_fitted=include_fitted)
    except (ValueError, FileNotFoundError, KnowcacheError) as e:
        raise click.ClickException(str(e)) from e
    if ev.task != task:
        raise click.ClickException(f"{models} holds {ev.task} models, not {task}")
    out.mkdir(parents=True, exist_ok=True)
    plot = evaluate.confusion_plot(ev, out / f"{task}-confusion.png")
    doc = ev.to_dict()
    (out / f"{task}-eval.json").write_text(json.dumps(doc, indent=2) + "\n")
    if card:
        how = ("The build split its real recordings by speaker (see Real recordings above); "
               "these are the speakers it neither fitted nor calibrated on."
               if evaluate.fitted_speakers(models) else
               "These models were built without real recordings: every clip here is new to them.")
        evaluate.update_card(models / "README.md", evaluate.card_section(ev, how))
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return
    _print(ev, plot)


def _print(ev, plot: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    pct = lambda v: "-" if v is None else f"{100 * v:.1f}%"  # noqa: E731
    console = Console()
    console.print(f"{ev.samples} files from {ev.speakers} speakers in {ev.data}"
                  + (f" ({ev.excluded['clips']} clips of {ev.excluded['speakers']} speakers the "
                     "models were fitted or calibrated on left out)" if ev.excluded["clips"] else ""))
    t = Table(title="per label")
    cols = ["label", "files", "full", "generic", "cached", "cached accepts", "two-stage"]
    keys = ["label", "clips", "full", "generic", "cached", "cached_accepts", "two_stage"]
    for c in cols:
        t.add_column(c, justify="left" if c == "label" else "right")
    for row in ev.per_label:
        t.add_row(*[str(row[k]) if k in ("label", "clips") else pct(row.get(k)) for k in keys])
    console.print(t)
    s = Table(title="programs")
    for c in ("program", "role", "accuracy", "gate accepts", "accepted correct",
              "other for uncached", "two-stage"):
        s.add_column(c, justify="left" if c in ("program", "role") else "right")
    for pid, f in ev.programs.items():
        s.add_row(pid, f["role"], pct(f.get("accuracy", f.get("accuracy_own_classes"))),
                  pct(f.get("accept_rate")), pct(f.get("accuracy_accepted")),
                  pct(f.get("other_recall")), pct(f.get("two_stage_accuracy")))
    console.print(s)
    if ev.layer_cache:
        lc = Table(title="layer caching (staged program, C++ Engine)")
        for c in ("exit gate", "accuracy", "agreement with full", "stopped at exits",
                  "FLOPs saved", "time saved"):
            lc.add_column(c, justify="left" if c == "exit gate" else "right")
        for gate, f in ev.layer_cache.items():
            lc.add_row(gate, pct(f["accuracy"]), pct(f["agreement"]),
                       " / ".join(pct(r) for r in f["exit_rate"]), pct(f["flops_saved"]),
                       pct(f["latency_saved"]))
        console.print(lc)
        console.print("stopped at exits: share of inputs answered at exit 0, 1, ...; the rest ran "
                      "the whole program. Time saved: the staged Engine's mean against the full "
                      "program's on the same inputs.")
    full = ev.programs["full"]
    if "accuracy_one_view" in full:
        console.print(f"full: the cloud's answers, averaged over {full['cloud_tta']} test-time "
                      f"views; the program on one view (device_full, layer caching's "
                      f"reference): {pct(full['accuracy_one_view'])}")
    console.print("accuracy: full and generic over all labels; cached and partitions on their "
                  "own classes. two-stage: the cached model where its gate accepts, else the "
                  f"full model. Confusion matrix: {plot}")
