"""The `knowcache` command line. Thin: parsing and printing; work lives in modules."""

from __future__ import annotations

import os
import shutil
import subprocess
import warnings
from pathlib import Path

import click

from knowcache import __version__

# torch.export deprecation chatter (from pickling tree specs) that says nothing to a user.
warnings.filterwarnings("ignore", message=r".*LeafSpec.*", category=FutureWarning)


@click.group()
@click.version_option(__version__, prog_name="knowcache")
def main() -> None:
    """knowcache: two-stage on-device inference (device cache + cloud fallback)."""


@main.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("out/demo"),
              show_default=True, help="Folder for the demo's models and reports.")
@click.option("--quick/--full", default=True, show_default=True,
              help="Smaller training set and stream.")
@click.option("--bench-binary", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="knowcache_overhead_bench to run on the demo's full model.")
def demo(out: Path, quick: bool, bench_binary: Path | None) -> None:
    """Runs the C++ runtime end to end on a small exported model."""
    from rich.console import Console
    from rich.table import Table

    from knowcache import demo as demo_job

    console = Console()
    report = demo_job.run(out, quick=quick, log=lambda m: console.print(f"[dim]{m}[/dim]"))
    table = Table(title="knowcache runtime on the toy task (device side, 1 slot)")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("full model size", f"{report.full_bytes / 1024:.1f} KiB")
    table.add_row("cached model size", f"{report.cached_bytes / 1024:.1f} KiB "
                  f"({report.full_bytes / report.cached_bytes:.1f}x smaller)")
    table.add_row("queries (Zipf stream)", str(report.queries))
    table.add_row("answered locally", f"{report.local_rate:.1%}")
    table.add_row("accuracy of local answers", f"{report.local_accuracy:.1%}")
    table.add_row("full model accuracy", f"{report.full_accuracy:.1%}")
    table.add_row("engine latency p50 / p99", f"{report.p50_us:.0f} / {report.p99_us:.0f} us")
    console.print(table)
    console.print(f"models and manifest: {report.models_dir}")

    binary = bench_binary or _find_bench_binary()
    if binary is None:
        console.print("[yellow]overhead benchmark not built; run `make build-cpp`[/yellow]")
    else:
        console.print("runtime overhead over a bare ExecuTorch Module (full model, 1 thread):")
        res = subprocess.run([str(binary), str(report.models_dir / "full.pte"), "--iters", "100",
                              "--rounds", "9"], capture_output=True, text=True, check=False)
        console.print(res.stdout.strip() or res.stderr.strip())
    console.print(
        "[bold]Next:[/bold] the cloud tier (`knowcache serve`) and `knowcache bench`, which "
        "compare cloud_only, device_only, two_stage and cachenet on Speech Commands-style "
        "keywords and Fashion-MNIST, replace this toy task once they land.")


def _find_bench_binary() -> Path | None:
    env = os.environ.get("KNOWCACHE_BENCH_BINARY")
    if env:
        return Path(env)
    candidate = Path("build/host/runtime_cpp/knowcache_overhead_bench")
    if candidate.exists():
        return candidate
    found = shutil.which("knowcache_overhead_bench")
    return Path(found) if found else None


def _register() -> None:
    from knowcache.commands import bench_serve, build, data, serve
    main.add_command(data.data)
    main.add_command(serve.serve)
    main.add_command(bench_serve.bench_serve)
    for command in (build.train, build.specialize, build.partition, build.export_cmd,
                    build.build_models):
        main.add_command(command)


_register()

if __name__ == "__main__":
    main()
