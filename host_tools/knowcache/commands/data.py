"""`knowcache data speech|images`: make and cache the data sets."""

from __future__ import annotations

from pathlib import Path

import click

from knowcache.commands._progress import progress_bar


@click.group()
def data() -> None:
    """Create the data sets (cached under $KNOWCACHE_DATA_DIR, default ~/.cache/knowcache)."""


@data.command()
@click.option("--seed", default=0, show_default=True, help="Everything derives from this seed.")
@click.option("--quick", is_flag=True, help="A small set (12/4/4 clips per class) for tests.")
@click.option("--per-word", nargs=3, type=click.IntRange(min=1), default=None,
              help="Clips per class in train, val and test (default 400 60 100).")
@click.option("--speech-commands", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="Import a real Speech Commands v2 folder instead.")
@click.option("--refresh", is_flag=True, help="Regenerate even if cached.")
@click.option("--add", "add", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="Fold recordings in DIR/<word>/*.wav (e.g. from `knowcache "
                                 "listen --record`, sorted by word) into the training split.")
def speech(seed: int, quick: bool, per_word, speech_commands: Path | None, refresh: bool,
           add: Path | None) -> None:
    """Keywords: the 35 Speech Commands words spoken by espeak-ng voices, split by voice."""
    from knowcache.data import store
    per_word = tuple(per_word) if per_word else None
    if add is not None:     # the recordings are checked before minutes of synthesis
        from knowcache import tasks
        from knowcache.data import folders
        try:
            folders.load(add, tasks.KWS.labels)
        except (ValueError, FileNotFoundError) as e:
            raise click.ClickException(str(e)) from e
    try:
        with progress_bar() as update:
            if add is not None:
                if speech_commands is not None:
                    raise ValueError("--add folds recordings into the synthesized set; "
                                     "drop --speech-commands")
                ds, added = store.add_recordings(add, seed=seed, quick=quick, per_word=per_word,
                                                 progress=update)
                click.echo(f"added {added} new recordings from {add}")
            else:
                ds = store.speech(seed=seed, quick=quick, per_word=per_word,
                                  speech_commands=speech_commands, progress=update,
                                  refresh=refresh)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        raise click.ClickException(str(e)) from e
    click.echo(ds.summary())


@data.command()
@click.option("--seed", default=0, show_default=True, help="Seed of the validation split.")
@click.option("--path", "fashion_mnist", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="Folder with Fashion-MNIST idx files (default: Debian's).")
@click.option("--cifar10", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="Use a CIFAR-10 python-pickle folder instead.")
@click.option("--refresh", is_flag=True, help="Re-read the source files even if cached.")
@click.option("--folder", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None,
              help="Your own image task: DIR/train/<class>/*.png|jpg, DIR/test/<class>/..., "
                   "optional DIR/val/ (needs --task NAME). See docs/image-tasks.md.")
@click.option("--task", "task_name", default=None,
              help="With --folder: the new task's name (then `--task NAME` everywhere).")
@click.option("--task-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="With --folder: JSON with image_size, popularity, cached, "
                                 "private, partitions (each optional).")
def images(seed: int, fashion_mnist: Path | None, cifar10: Path | None, refresh: bool,
           folder: Path | None, task_name: str | None, task_file: Path | None) -> None:
    """Images: Fashion-MNIST from Debian's dataset-fashion-mnist (or CIFAR-10), or your
    own image task from a folder (--folder DIR --task NAME)."""
    from knowcache.data import store
    if (task_name or task_file) and folder is None:
        raise click.UsageError("--task and --task-file go with --folder DIR")
    if folder is not None and (fashion_mnist or cifar10):
        raise click.UsageError("--folder defines a new task; drop --path and --cifar10")
    try:
        if folder is not None:
            if not task_name:
                raise click.UsageError("--folder needs --task NAME: the name later commands "
                                       "use (e.g. --task flowers)")
            from knowcache.data import image_tasks
            spec, ds = image_tasks.ingest(folder, task_name, task_file, seed=seed)
            click.echo(ds.summary())
            click.echo(f"task {spec.name}: {len(spec.labels)} classes, input "
                       f"{'x'.join(map(str, spec.image_size))}, cached "
                       f"{', '.join(spec.popularity[:spec.cached_count])}, "
                       f"{spec.partitions} partitions; saved in {image_tasks.task_dir(spec.name)}")
            click.echo(f"next: knowcache build-models --task {spec.name}")
            return
        ds = store.images(seed=seed, fashion_mnist=fashion_mnist, cifar10=cifar10,
                          refresh=refresh)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        raise click.ClickException(str(e)) from e
    click.echo(ds.summary())
