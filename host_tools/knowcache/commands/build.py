"""Model commands: train, specialize, partition, export, and build-models (all of them)."""

from __future__ import annotations

import functools
from pathlib import Path

import click

from knowcache.commands._params import TASK
from knowcache.commands._progress import progress_bar

HIDDEN_AUGMENT_MAX = 18      # speech_embedding's convs are 0..18


def _split_list(_ctx, _param, value: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip()) if value else ()


def build_options(f):
    """Options every model command shares; builds a BuildConfig as ``cfg``."""
    @click.option("--task", type=TASK, required=True)
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
    @click.option("--real", type=click.Path(exists=True, file_okay=False, path_type=Path),
                  default=None,
                  help="kws: a folder of real recordings, <word>/<speaker>_nohash_<n>.wav, split by "
                  "speaker: 60% fitted on, 15% calibrate the gates, 25% only measured.")
    @click.option("--real-copies", type=click.IntRange(min=0), default=8, show_default=True,
                  help="kws: perturbed takes (speed, shift, room, noise, gain) of each real "
                  "training recording added to the training set.")
    @click.option("--piper-per-word", type=click.IntRange(min=0), default=0, show_default=True,
                  help="kws: piper-tts (neural voice, joe) training clips per keyword added to "
                  "the espeak-ng ones, e.g. 80 (2 with --quick; none with --speech-commands). "
                  "Off by default: no gain measured on real voices (docs/models.md).")
    @click.option("--piper-weight", type=click.FloatRange(0.0, 1.0, max_open=True), default=0.15,
                  show_default=True, help="kws: share of the training weight the piper-tts clips "
                  "get (the real recordings get half).")
    @click.option("--spectrogram-from", type=click.Path(exists=True, dir_okay=False,
                  path_type=Path), default=None,
                  help="kws: take the full model's spectrogram ResNet branch from this program "
                  "(a previous kws full.pte) instead of training it.")
    @click.option("--hidden-augment", type=click.IntRange(0, HIDDEN_AUGMENT_MAX), default=0,
                  show_default=True, metavar="K",
                  help="kws: train the full model's heads on the trunk's activations after conv "
                  "K-1, shifted and noised there and run through the frozen convs K.. at each "
                  "step (0: on the embeddings). Off by default: no gain in a whole build "
                  "(docs/models.md).")
    @functools.wraps(f)
    def wrapper(task, work, quick, device, seed, speech_commands, fashion_mnist, cifar10, real,
                real_copies, piper_per_word, piper_weight, spectrogram_from, hidden_augment,
                **kwargs):
        from knowcache.build.pipeline import BuildConfig
        if real is not None and task != "kws":
            raise click.BadParameter("--real is for the kws task", param_hint="--real")
        if hidden_augment and task != "kws":
            raise click.BadParameter("--hidden-augment is for the kws task",
                                     param_hint="--hidden-augment")
        if real is not None and piper_per_word and piper_weight >= 0.5:
            raise click.BadParameter(f"{piper_weight} leaves nothing for the espeak-ng clips: the "
                                     "real recordings take half the training weight; give less "
                                     "than 0.5", param_hint="--piper-weight")
        work = work or Path("out/work") / (task + ("-quick" if quick else ""))
        cfg = BuildConfig(task=task, work=work, quick=quick, device=device, seed=seed,
                          speech_commands=speech_commands, fashion_mnist=fashion_mnist,
                          cifar10=cifar10, real=real, real_copies=real_copies,
                          piper_per_word=piper_per_word, piper_weight=piper_weight,
                          spectrogram_from=spectrogram_from, hidden_augment=hidden_augment)
        return f(cfg=cfg, **kwargs)
    return wrapper


def _log(msg: str) -> None:
    click.echo(msg, err=True)


def _fail(e: Exception) -> None:
    raise click.ClickException(str(e)) from e


def _data(cfg):
    from knowcache.build.pipeline import load_data
    with progress_bar() as update:
        return load_data(cfg, _log, progress=update)


@click.command()
@build_options
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Training epochs.")
def train(cfg, epochs) -> None:
    """Train the full (cloud) model of a task."""
    from knowcache.build.pipeline import train_full
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
    from knowcache.build.pipeline import run_specialize
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
    from knowcache.build.pipeline import run_partition
    cfg.k, cfg.student_epochs = k, epochs
    try:
        plan = run_partition(cfg, _data(cfg), _log)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        _fail(e)
    for i, g in enumerate(plan["groups"]):
        click.echo(f"p{i}: {', '.join(g)}")


_OTHER_RECALL = click.option(
    "--other-recall", type=click.FloatRange(0.0, 1.0, min_open=True), default=None,
    help="Share of validation inputs of the classes a student does not cache that must stay "
         "\"other\" when its \"other\" logit is lowered for its own classes' sake "
         "(default: 0.92 for kws, whose target is 90% on real voices; 0.95 otherwise).")


@click.command("export")
@build_options
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Models folder to (re)write (default models/<task>; quick: out/models-quick/<task>).")
@click.option("--staged", is_flag=True,
              help="Layer caching: add the full model as a staged program (stage_0..n, "
                   "exit_0..n-1, head) with distilled, calibrated cache heads to the models "
                   "folder's manifest.")
@click.option("--cold", is_flag=True,
              help="With --staged: untrained heads and no thresholds, for `knowcache serve "
                   "--learn-exits` to learn from traffic.")
@click.option("--target", type=click.FloatRange(0.5, 1.0), default=0.998, show_default=True,
              help="With --staged: agreement with the full model that all answers together "
                   "must reach on validation data (Wilson lower bound; every exit's own "
                   "answers agree >= 99%).")
@click.option("--train-samples", type=click.IntRange(min=100), default=None,
              help="With --staged: training inputs the heads are distilled on (labels unused; "
                   "default: kws 20,000; image tasks all of them, plus one augmented copy of "
                   "each).")
@click.option("--sign", "sign_key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Sign the manifest with this Ed25519 private key "
              "(`knowcache keys generate`); writes manifest.sig.")
@_OTHER_RECALL
def export_cmd(cfg, out, staged, cold, target, train_samples, sign_key, other_recall) -> None:
    """Quantize, lower to .pte, calibrate gates, write manifest and model card."""
    from knowcache.build.publish import load_records, publish
    cfg.other_recall = other_recall
    out = out or _default_out(cfg)
    _check_key(sign_key)
    if staged:
        _export_staged(cfg, out, cold, target, train_samples)
        _sign(out, sign_key)
        return
    try:
        load_records(cfg.work)          # fail fast, before loading data
        metrics = publish(cfg, out, _log, data=_data(cfg), signing_key=sign_key)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        _fail(e)
    _summary(metrics, out)


def _check_key(sign_key: Path | None) -> None:
    """Fails before hours of work when the signing key cannot be used."""
    if sign_key is None:
        return
    from knowcache import signing
    try:
        signing.load_private(sign_key)
    except ValueError as e:
        _fail(e)


def _sign(out: Path, sign_key: Path | None) -> None:
    if sign_key is None:
        return
    from knowcache import signing
    try:
        path = signing.sign_manifest(out, sign_key)
    except (ValueError, OSError) as e:
        _fail(e)
    _log(f"signed {out}/manifest.json: {path}")


def _export_staged(cfg, out: Path, cold: bool, target: float,
                   train_samples: int | None) -> None:
    from knowcache import manifest
    from knowcache.layer_cache import build as staged_build
    from knowcache.models import ModelRecord
    from knowcache.models.from_program import RecoveryError, recover
    if not manifest.exists(out):
        raise click.ClickException(f"{manifest.path_of(out)} does not exist: export the models "
                                   "first (`knowcache export` or `knowcache build-models`)")
    doc = manifest.load(out)
    full = doc.first(manifest.Role.FULL)
    if full is None:
        raise click.ClickException(f"{doc.path} lists no full model to stage")
    try:
        data = _data(cfg)
        from knowcache.data.dataset import model_input
        check = model_input(cfg.task, data.test.x[:16])
        if (cfg.work / "full.pt").is_file():
            record = ModelRecord.load(cfg.work / "full.pt")
        else:
            _log(f"no {cfg.work}/full.pt: rebuilding the full model from {out / full['file']}")
            record = recover(doc.file_of(full), cfg.task, doc.labels, check)
        entry = staged_build.run(record, data, out, input_shape=full["input"]["shape"],
                                 input_extra=doc.input_extra(), target=target, cold=cold,
                                 train_samples=train_samples, seed=cfg.seed, log=_log)
    except (ValueError, FileNotFoundError, RuntimeError, RecoveryError) as e:
        _fail(e)
    st = entry["staged"]
    click.echo(f"{out}/{entry['file']}: {len(st['stages'])} stages, {len(st['exits'])} exits, "
               f"{st['total_flops'] / 1e6:.1f} MFLOPs whole")


@click.command("build-models")
@build_options
@click.option("--k", type=click.IntRange(min=1), default=None, help="CacheNet partitions.")
@click.option("--classes", callback=_split_list, default=None, help="Classes to cache.")
@click.option("--private", callback=_split_list, default=None, help="Private classes.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Models folder (default models/<task>; quick: out/models-quick/<task>).")
@click.option("--train-only", is_flag=True, help="Stop after training (export elsewhere).")
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="The full model's training epochs (default: the task's recipe).")
@click.option("--student-epochs", type=click.IntRange(min=1), default=None,
              help="Each student's training epochs (default: the task's recipe).")
@click.option("--sign", "sign_key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Sign the manifest with this Ed25519 private key "
              "(`knowcache keys generate`); writes manifest.sig.")
@_OTHER_RECALL
def build_models(cfg, k, classes, private, out, train_only, epochs, student_epochs,
                 sign_key, other_recall) -> None:
    """The whole chain: data, full model, specialize, partition, export."""
    from knowcache.build.pipeline import train_models
    cfg.k, cfg.classes, cfg.private = k, classes, private
    cfg.other_recall = other_recall
    cfg.full_epochs, cfg.student_epochs = epochs, student_epochs
    out = out or _default_out(cfg)
    _check_key(sign_key)
    try:
        cfg.spec().cached_classes(cfg.classes or None, cfg.private)
        data = _data(cfg)
        train_models(cfg, data, _log)
        if train_only:
            click.echo(f"trained models in {cfg.work}; export them with `knowcache export`")
            return
        from knowcache.build.publish import publish
        metrics = publish(cfg, out, _log, data=data, signing_key=sign_key)
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
