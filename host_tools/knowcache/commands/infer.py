"""`knowcache infer`: classify WAV and image files with the device runtime."""

from __future__ import annotations

import json
from pathlib import Path

import click

from knowcache.commands._params import TASK


@click.command()
@click.option("--task", type=TASK, default=None,
              help="The task (default: told by each file's type, .wav kws, .png/.jpg vision).")
@click.option("--models", type=click.Path(path_type=Path), default=None,
              help="Folder with the task's manifest.json (default: the shipped models/<task>).")
@click.option("--model", default="cached", show_default=True,
              help="Program that answers locally (a partition id: cached, generic, full...).")
@click.option("--cloud", default=None,
              help="URL of `knowcache serve` for what the gate rejects (default: none; those "
                   "answers come back degraded).")
@click.option("--token", default=None, envvar="KNOWCACHE_TOKEN", help="Bearer token of the cloud.")
@click.option("--ca-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="https cloud: PEM file of the CAs its certificate must chain to "
                   "(default: the system's).")
@click.option("--local-only", is_flag=True,
              help="Never ask the cloud: what the gate rejects comes back local_only.")
@click.option("--private-share", type=click.FloatRange(0, 1), default=0.2, show_default=True,
              help="Keep a file on the device when the manifest's private classes hold more "
                   "than this share of the local answer.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per file.")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.pass_context
def infer(ctx, task, models, model, cloud, token, ca_file, local_only, private_share, as_json,
          files) -> None:
    """Classify FILES: WAVs of any rate, width and channels (its loudest second when
    longer than 1 s) and PNG/JPEG images, each converted to its task's input
    (docs/inputs.md). One line per file: label, confidence, where it was answered
    (local, cloud, or degraded: local because the cloud was missing or down; private:
    a class the manifest marks private, never uploaded; local_only: --local-only),
    time.
    A file that cannot be read is reported and the others still run; the exit
    status is then 1."""
    from knowcache.data.input_contract import InputError
    from knowcache.infer import Classifier
    from knowcache.runtime import set_compute_threads

    set_compute_threads(1)
    try:
        classifier = Classifier(task=task, models=models, cloud=cloud, token=token, model=model,
                                ca_file=ca_file, local_only=local_only,
                                private_share=private_share)
    except InputError as e:
        raise click.ClickException(str(e)) from e
    failed = 0
    width = max(len(str(f)) for f in files)
    reasons = set()
    for answer in classifier.classify_all(files):
        if not answer.ok:
            failed += 1
        if as_json:
            click.echo(json.dumps(answer.as_dict()))
            continue
        if not answer.ok:
            click.echo(f"error: {answer.error}", err=True)
            continue
        click.echo(answer.line(width))
        if answer.notice:
            click.echo(f"note: {answer.notice}", err=True)
        if answer.degraded_reason and answer.degraded_reason not in reasons:
            reasons.add(answer.degraded_reason)
            fix = "; pass --cloud with a `knowcache serve` URL" if cloud is None else ""
            click.echo(f"note: degraded: {answer.degraded_reason}{fix}", err=True)
        if answer.kept_reason and answer.source not in reasons:
            reasons.add(answer.source)  # once per kind: the reasons carry figures
            click.echo(f"note: {answer.source}: kept on the device: {answer.kept_reason}",
                       err=True)
    if failed:
        ctx.exit(1)
