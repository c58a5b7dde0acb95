"""`knowcache bench` (the five systems on a query stream) and `knowcache demo` (a short run of both tasks)."""

from __future__ import annotations

from pathlib import Path

import click

from knowcache.commands._params import TASK
from knowcache.commands._progress import progress_bar

# knowcache.bench.systems.SYSTEMS, LAYER_CACHE_SYSTEMS and SPLIT_SYSTEMS (kept import-free here)
SYSTEM_NAMES = ("cloud_only", "device_only", "two_stage", "cachenet", "device_full",
                "generic_gate")
LAYER_CACHE_NAMES = ("layer_cache", "layer_cache_learned", "layer_cache_entropy",
                     "layer_cache_activation")
SPLIT_NAMES = ("two_stage_split",)


def _systems(_ctx, _param, value: str | None) -> tuple[str, ...] | None:
    if not value:
        return None
    names = tuple(v.strip() for v in value.split(",") if v.strip())
    known = SYSTEM_NAMES + LAYER_CACHE_NAMES + SPLIT_NAMES
    bad = [n for n in names if n not in known]
    if bad or not names:
        raise click.BadParameter(f"unknown systems {bad}; choose from {', '.join(known)}")
    return names


def _with_layer_cache(systems: tuple[str, ...]) -> tuple[str, ...]:
    """The layer-cache systems and device_full, their baseline, added."""
    extra = [s for s in ("device_full", *LAYER_CACHE_NAMES) if s not in systems]
    return tuple(systems) + tuple(extra)


def _console():
    """Rich console; 120 columns when writing to a file or pipe (tables stay readable in logs)."""
    import sys

    from rich.console import Console
    return Console(width=None if sys.stdout.isatty() else 120)


def run_one(task: str, *, models: Path, profile: str, quick: bool, queries=None, zipf=1.0,
            repeat=None, seed=0, systems=None, layer_cache=False, split_cut=None,
            online_requests=2000,
            retrain_every=250, slots=2, local_attempts=2,
            admit_after_hints=1, device_budget_mb=None, device_threads=1, device_profile="host",
            device_emulation="scaled", rtt_ms=None, bandwidth_mbps=None,
            jitter_ms=None, loss=0.0, corrupt=0.0, cloud_stop_at=None, cloud_back_at=None,
            json_path=None, plots=None, console=None,
            data_paths=None) -> dict:
    """Runs the benchmark for one task and shows it; returns the report."""
    from knowcache.bench import device_profile as profiles
    from knowcache.bench import harness, link, report, workload
    from knowcache.bench.systems import SystemOptions

    console = console or _console()
    systems = systems or SYSTEM_NAMES
    if layer_cache:
        systems = _with_layer_cache(systems)
    if split_cut is not None:
        systems = tuple(systems) + tuple(s for s in ("two_stage", *SPLIT_NAMES)
                                         if s not in systems)
    task_dir = models / task
    if not (task_dir / "manifest.json").is_file():
        raise click.ClickException(
            f"no {task} models in {task_dir} (manifest.json missing); pass --models with a "
            f"folder holding {task}/manifest.json, or build them with `knowcache build-models "
            f"--task {task}`")
    try:
        link_profile = link.profile(profile, rtt_ms, bandwidth_mbps, jitter_ms, loss, corrupt)
        options = SystemOptions(
            slots=slots, local_attempts=local_attempts, admit_after_hints=admit_after_hints,
            split_cut=split_cut,
            device_budget_bytes=None if device_budget_mb is None else int(device_budget_mb * 2**20))
        config = harness.BenchConfig(models=models, task=task, link=link_profile,
                                     systems=tuple(systems), options=options,
                                     device_threads=device_threads,
                                     device_profile=profiles.get(device_profile),
                                     device_emulation=device_emulation,
                                     cloud_stop_at=cloud_stop_at, cloud_back_at=cloud_back_at,
                                     seed=seed)
    except ValueError as e:
        raise click.ClickException(str(e)) from e
    console.print(f"[bold]{task}[/bold]: loading the test split and building the stream...")
    with progress_bar() as update:
        try:
            stream, x, source = workload.load(task, quick=quick, queries=queries, zipf=zipf,
                                              repeat=repeat, seed=seed, progress=update,
                                              **(data_paths or {}))
        except (ValueError, FileNotFoundError, RuntimeError) as e:
            raise click.ClickException(str(e)) from e
    console.print(f"[dim]{len(stream)} queries from {source}; systems: "
                  f"{', '.join(systems)}; link {link_profile.name} via a user-space relay[/dim]")
    with progress_bar() as update:
        try:
            result = harness.run_bench(config, stream, x, progress=update,
                                       log=lambda m: console.print(f"[yellow]{m}[/yellow]"))
        except ValueError as e:
            raise click.ClickException(str(e)) from e
    result["data_source"] = source
    if layer_cache and online_requests:
        result["online"] = _online(task, task_dir, quick, online_requests, zipf, repeat, seed,
                                   retrain_every, data_paths, console)
    report.print_report(result, console)
    if json_path:
        console.print(f"JSON: {report.write_json(result, Path(json_path))}")
    if plots:
        for path in report.plot(result, Path(plots)):
            console.print(f"plot: {path}")
    return result


def _online(task, task_dir, quick, requests, zipf, repeat, seed, retrain_every, data_paths,
            console) -> dict:
    from knowcache.bench import online_curve, workload
    with progress_bar() as update:
        try:
            stream, x, _ = workload.load(task, quick=quick, queries=requests, zipf=zipf,
                                         repeat=repeat, seed=seed + 1, progress=update,
                                         **(data_paths or {}))
            return online_curve.run(task_dir, x[stream.sample], retrain_every=retrain_every,
                                    log=lambda m: console.print(f"[dim]{m}[/dim]"),
                                    progress=update)
        except (ValueError, FileNotFoundError, RuntimeError) as e:
            raise click.ClickException(str(e)) from e


@click.command()
@click.option("--task", type=TASK, required=True)
@click.option("--profile", type=click.Choice(["wifi", "lte"]), default="wifi", show_default=True,
              help="Emulated access link between device and cloud.")
@click.option("--quick", is_flag=True, help="A short stream (300 queries; kws: 25 clips per class).")
@click.option("--models", type=click.Path(file_okay=False, path_type=Path), default=Path("models"),
              show_default=True, help="Folder of <task>/manifest.json (the cloud serves it too).")
@click.option("--queries", type=click.IntRange(min=1), default=None,
              help="Stream length (default 1000, 300 with --quick).")
@click.option("--zipf", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Zipf exponent of class popularity (0: uniform).")
@click.option("--repeat", type=click.FloatRange(0, 1, max_open=True), default=None,
              help="Probability a query repeats the last class (default: vision 0.8, kws 0.5).")
@click.option("--seed", default=0, show_default=True)
@click.option("--systems", callback=_systems, default=None,
              help=f"Comma-separated subset of {','.join(SYSTEM_NAMES)} (default all of them) "
                   f"and {','.join(LAYER_CACHE_NAMES)}.")
@click.option("--layer-cache", is_flag=True,
              help="Add layer caching: the staged full model with each exit gate (needs "
                   "`knowcache export --staged`), device_full as its baseline, and the online "
                   "learner from cold start.")
@click.option("--split-cut", type=click.IntRange(min=1), default=None,
              help="Add split computing: two_stage_split uploads the staged program's int8 "
                   "activation at this stage instead of the raw input (needs `knowcache export "
                   "--staged`; refused before a stage that reads the raw input), with two_stage "
                   "as its raw baseline.")
@click.option("--online-requests", type=click.IntRange(min=0), default=2000, show_default=True,
              help="With --layer-cache: requests the online learner runs from cold start (0: skip).")
@click.option("--retrain-every", type=click.IntRange(min=20), default=250, show_default=True,
              help="With --layer-cache: requests between the online learner's retrains.")
@click.option("--slots", type=click.IntRange(min=1), default=2, show_default=True,
              help="cachenet: LRU slots on the device.")
@click.option("--local-attempts", type=click.IntRange(min=1), default=2, show_default=True,
              help="cachenet: cached partitions tried before asking the cloud (1: CacheNet's "
                   "active-partition-only policy).")
@click.option("--admit-after-hints", type=click.IntRange(1, 8), default=1, show_default=True,
              help="cachenet: download a hinted partition once hinted this many times in the "
                   "cloud's last 8 hints (1: at the first hint, as in CacheNet).")
@click.option("--device-budget-mb", type=click.FloatRange(min=0, min_open=True), default=None,
              help="device_full runs only if the full model fits (default: no limit).")
@click.option("--device-threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="ExecuTorch threads on the device side.")
@click.option("--device-profile", type=click.Choice(["host", "phone", "board"]), default="host",
              show_default=True,
              help="Run the device side at a fraction of one core: phone 1/4, board 1/10. See "
                   "docs/benchmarks.md.")
@click.option("--device-emulation", type=click.Choice(["scaled", "cgroup"]), default="scaled",
              show_default=True,
              help="How a profile slows the device: scale its measured compute time, or a cgroup "
                   "v1 CPU quota (root; under-slows short computations after idle waits).")
@click.option("--rtt-ms", type=click.FloatRange(min=0), default=None, help="Override the profile's RTT.")
@click.option("--bandwidth-mbps", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Override the profile's bandwidth.")
@click.option("--jitter-ms", type=click.FloatRange(min=0), default=None,
              help="Override the profile's jitter.")
@click.option("--loss", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Link fault: probability that a relayed chunk (<= 16 KiB) resets its "
                   "connection.")
@click.option("--corrupt", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Link fault: probability that a relayed chunk gets one byte flipped.")
@click.option("--cloud-stop-at", type=click.IntRange(min=0), default=None,
              help="Stop each system's cloud before this query (resilience check).")
@click.option("--cloud-back-at", type=click.IntRange(min=1), default=None,
              help="Start it again before this query (after --cloud-stop-at).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the report as JSON here.")
@click.option("--plots", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Save the plots (PNG) in this folder.")
@click.option("--speech-commands", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="kws: stream from a real Speech Commands v2 folder.")
@click.option("--fashion-mnist", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="vision: folder of Fashion-MNIST idx files (default: Debian's).")
@click.option("--cifar10", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="vision: stream from a CIFAR-10 python-pickle folder.")
@click.option("--data", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None,
              help="Stream from a folder of <label>/*.wav (kws) or <label>/*.png|jpg, e.g. real "
                   "voices; speakers the models were fitted or calibrated on are left out.")
def bench(task, speech_commands, fashion_mnist, cifar10, data, **options) -> None:
    """Compare cloud_only, device_only, two_stage, cachenet and device_full on one stream."""
    from knowcache.evaluate import fitted_speakers
    exclude = frozenset(fitted_speakers(options["models"] / task)) if data else frozenset()
    run_one(task, data_paths={"speech_commands": speech_commands, "fashion_mnist": fashion_mnist,
                              "cifar10": cifar10, "data": data, "exclude_speakers": exclude},
            **options)


def _has_staged(task_dir: Path) -> bool:
    from knowcache import manifest
    return manifest.exists(task_dir) and manifest.load(task_dir).first(manifest.Role.STAGED) is not None


@click.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("out/demo"),
              show_default=True, help="Folder for the reports and plots.")
@click.option("--models", type=click.Path(file_okay=False, path_type=Path), default=Path("models"),
              show_default=True, help="Folder of shipped <task>/manifest.json.")
@click.option("--profile", type=click.Choice(["wifi", "lte"]), default="wifi", show_default=True)
@click.option("--queries", type=click.IntRange(min=1), default=None,
              help="Stream length per task (default 300).")
def demo(out: Path, models: Path, profile: str, queries) -> None:
    """A short `knowcache bench` of every shipped task (with layer caching when the
    models have a staged program; the online learner is left to `knowcache bench
    --layer-cache`). CIFAR-10 streams the sample images in samples/cifar10 on the
    `phone` device profile (a device slower than the cloud, as in CacheNet)."""
    console = _console()
    for task, data, device in DEMO_TASKS:
        if not (models / task / "manifest.json").is_file() and task not in ("kws", "vision"):
            console.print(f"[yellow]{task}: no models in {models / task}; skipped[/yellow]")
            continue
        if data is not None and not data.is_dir():
            raise click.ClickException(f"{data}: the {task} sample images are missing; run "
                                       "the demo from the repository's root folder")
        run_one(task, models=models, profile=profile, quick=True, queries=queries,
                layer_cache=_has_staged(models / task), online_requests=0,
                device_profile=device, data_paths={"data": data},
                json_path=out / f"{task}-{profile}.json", plots=out, console=console)
    console.print(f"[bold]Reports and plots are in {out.resolve()}[/bold] "
                  f"(`knowcache bench --task kws|vision|cifar10` runs the full-length version).")


# (task, sample folder streamed instead of the task's test split, device profile)
DEMO_TASKS = (("kws", None, "host"), ("vision", None, "host"),
              ("cifar10", Path("samples/cifar10"), "phone"))
