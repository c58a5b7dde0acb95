"""Model commands: train, specialize, partition, export, and build-models (all of them)."""

from __future__ import annotations

import functools
from pathlib import Path

import click

from knowcache.commands._progress import progress_bar


def _split_list(_ctx, _param, value: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip()) if value else ()


def build_options(f):
    """Options every model command shares; builds a BuildConfig as ``cfg``."""
    @click.option("--task", type=click.Choice(["kws", "vision"]), required=True)
    @click.option("--work", type=click.Path(file_okay=False, path_type=Path), default=None,
                  help="Folder for trained models (default out/work/<task>[-quick]).")
    @click.option("--quick", is_flag=True, help="Small data, models and epochs (minutes on a CPU).")
    @click.option("--device", default="auto", show_default=True,
                  help="Training device: auto, cpu, cuda.")
    @click.option("--seed", default=0, show_default=True)
    @click.option("--speech-commands", type=click.Path(exists=True, file_okay=False,
                  path_type=Path), default=None, help="kws: train on a real Speech Commands v2 folder.")
    @click.option("--fashion-mnist", type=click.Path(exists=True, file_okay=False,
                  path_type=Path), default=None,
                  help="vision: folder of Fashion-MNIST idx files (default: Debian's).")
    @click.option("--cifar10", type=click.Path(exists=True, file_okay=False, path_type=Path),
                  default=None, help="vision: train on a CIFAR-10 python-pickle folder.")
    @functools.wraps(f)
    def wrapper(task, work, quick, device, seed, speech_commands, fashion_mnist, cifar10,
                **kwargs):
        from knowcache.pipeline import BuildConfig
        work = work or Path("out/work") / (task + ("-quick" if quick else ""))
        cfg = BuildConfig(task=task, work=work, quick=quick, device=device, seed=seed,
                          speech_commands=speech_commands, fashion_mnist=fashion_mnist,
                          cifar10=cifar10)
        return f(cfg=cfg, **kwargs)
    return wrapper


def _log(msg: str) -> None:
    click.echo(msg, err=True)


def _fail(e: Exception) -> None:
    raise click.ClickException(str(e)) from e


def _data(cfg):
    from knowcache.pipeline import load_data
    with progress_bar() as update:
        return load_data(cfg, _log, progress=update)


@click.command()
@build_options
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Training epochs.")
def train(cfg, epochs) -> None:
    """Train the full (cloud) model of a task."""
    from knowcache.pipeline import train_full
    cfg.full_epochs = epochs
    try:
        train_full(cfg, _data(cfg), _log)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        _fail(e)


@click.command()
@build_options
@click.option("--classes", callback=_split_list, default=None,
              help="Comma-separated classes to cache (default: the popularity profile's top).")
@click.option("--private", callback=_split_list, default=None,
              help="Comma-separated privacy-sensitive classes; always cached.")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Training epochs.")
def specialize(cfg, classes, private, epochs) -> None:
    """Knowledge caching: distil the full model into a small cached student (+ other)."""
    from knowcache.pipeline import run_specialize
    cfg.classes, cfg.private, cfg.student_epochs = classes, private, epochs
    try:
        cfg.spec().cached_classes(cfg.classes or None, cfg.private)   # fail fast on a typo
        plan = run_specialize(cfg, _data(cfg), _log)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        _fail(e)
    click.echo(f"cached classes: {', '.join(plan['cached_classes'])}")


@click.command()
@build_options
@click.option("--k", type=click.IntRange(min=1), default=None,
              help="Number of partitions (kws 4, vision 3 by default).")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Training epochs.")
def partition(cfg, k, epochs) -> None:
    """CacheNet: split the classes into K partitions and train a student for each."""
    from knowcache.pipeline import run_partition
    cfg.k, cfg.student_epochs = k, epochs
    try:
        plan = run_partition(cfg, _data(cfg), _log)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        _fail(e)
    for i, g in enumerate(plan["groups"]):
        click.echo(f"p{i}: {', '.join(g)}")


@click.command("export")
@build_options
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Models folder to (re)write (default models/<task>; quick: out/models-quick/<task>).")
def export_cmd(cfg, out) -> None:
    """Quantize, lower to .pte, calibrate gates, write manifest and model card."""
    from knowcache.publish import load_records, publish
    out = out or _default_out(cfg)
    try:
        load_records(cfg.work)          # fail fast, before loading data
        metrics = publish(cfg, out, _log, data=_data(cfg))
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        _fail(e)
    _summary(metrics, out)


@click.command("build-models")
@build_options
@click.option("--k", type=click.IntRange(min=1), default=None, help="CacheNet partitions.")
@click.option("--classes", callback=_split_list, default=None, help="Classes to cache.")
@click.option("--private", callback=_split_list, default=None, help="Private classes.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Models folder (default models/<task>; quick: out/models-quick/<task>).")
@click.option("--train-only", is_flag=True, help="Stop after training (export elsewhere).")
def build_models(cfg, k, classes, private, out, train_only) -> None:
    """The whole chain: data, full model, specialize, partition, export."""
    from knowcache.pipeline import run_partition, run_specialize, train_full
    cfg.k, cfg.classes, cfg.private = k, classes, private
    out = out or _default_out(cfg)
    try:
        cfg.spec().cached_classes(cfg.classes or None, cfg.private)
        data = _data(cfg)
        train_full(cfg, data, _log)
        run_specialize(cfg, data, _log)
        run_partition(cfg, data, _log)
        if train_only:
            click.echo(f"trained models in {cfg.work}; export them with `knowcache export`")
            return
        from knowcache.publish import publish
        metrics = publish(cfg, out, _log, data=data)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        _fail(e)
    _summary(metrics, out)


def _default_out(cfg) -> Path:
    return Path("out/models-quick") / cfg.task if cfg.quick else Path("models") / cfg.task


def _summary(metrics: dict, out: Path) -> None:
    t = metrics["targets"]
    m = metrics["models"]
    click.echo(f"{out}: full {m['full']['bytes'] / 1024:.1f} KiB, accuracy "
               f"{m['full']['accuracy']:.1%}; cached {m['cached']['bytes'] / 1024:.1f} KiB "
               f"({t['size_ratio']:.1f}x smaller), {m['cached']['accuracy_own_classes']:.1%} on its "
               f"classes vs full {m['full']['accuracy_cached_classes']:.1%}; targets: size "
               f"{'met' if t['size_met'] else 'NOT met'}, accuracy "
               f"{'met' if t['accuracy_met'] else 'NOT met'}")
