"""`knowcache bench-serve`: load benchmark of the cloud tier (locust on loopback)."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command("bench-serve")
@click.option("--models", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=Path("models"), show_default=True)
@click.option("--task", default="vision", show_default=True,
              help="A task of the models folder (kws, vision, or an image task of your own).")
@click.option("--clients", default="1,8,64", show_default=True,
              help="Comma-separated concurrent client counts.")
@click.option("--seconds", type=click.FloatRange(min=1), default=10.0, show_default=True,
              help="Duration per client count.")
@click.option("--max-requests", type=click.IntRange(min=1), default=5000, show_default=True,
              help="Request cap per client count.")
@click.option("--queue-limit", type=click.IntRange(min=1), default=None,
              help="The server's queue limit (overload runs: a small one shows the 429s).")
@click.option("--ray", is_flag=True,
              help="Compare the uvicorn back end with Ray Serve (`serve --ray local`, one "
                   "replica per task), both batching; needs knowcache[ray].")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the figures here.")
def bench_serve(models, task, clients, seconds, max_requests, queue_limit, ray, json_out) -> None:
    """Throughput and p50/p99 latency, batching on and off (or, with --ray, the uvicorn
    and Ray Serve back ends)."""
    from rich.console import Console
    from rich.table import Table

    from knowcache.bench import serve_load
    try:
        counts = [int(c) for c in clients.split(",") if c.strip()]
    except ValueError:
        raise click.BadParameter("--clients takes comma-separated integers") from None
    if not counts or min(counts) < 1:
        raise click.BadParameter("--clients needs positive integers")
    from knowcache.server import registry
    served = registry.task_names(models)
    if task not in served:
        raise click.BadParameter(f"{models} has no {task}/manifest.json; its tasks: "
                                 f"{', '.join(served) or 'none'}", param_hint="--task")
    try:
        server_args = ["--queue-limit", str(queue_limit)] if queue_limit else []
        rows = serve_load.run(models, task, counts, seconds, max_requests, server_args,
                              log=lambda m: click.echo(m, err=True), ray=ray)
    except RuntimeError as e:
        raise click.ClickException(str(e)) from e
    table = Table(title=f"knowcache serve, task {task}, loopback (locust)")
    for col in ("back end", "batching", "clients", "requests", "failures", "429s", "req/s", "p50 ms",
                "p99 ms", "server MiB"):
        table.add_column(col, justify="right")
    for r in rows:
        rss = r.get("server_peak_rss_mb")
        table.add_row(r["backend"], "on" if r["batching"] else "off", str(r["users"]), str(r["requests"]),
                      str(r["failures"]), str(r["errors"].get("HTTP 429", 0)),
                      f"{r['throughput_rps']:.1f}", str(r["p50_ms"]), str(r["p99_ms"]),
                      "-" if rss is None else f"{rss:.0f}")
    for r in rows:
        if not r.get("server_alive", True):
            click.echo(f"the server died during the {r['users']}-client run", err=True)
    Console().print(table)
    rate = {(r["backend"], r["batching"], r["users"]): r["throughput_rps"] for r in rows}
    for n in counts:
        plain = rate.get(("uvicorn", True, n))
        if rate.get(("uvicorn", False, n)):
            click.echo(f"{n} clients: batching gives {plain / rate['uvicorn', False, n]:.2f}x "
                       "the throughput")
        if plain and ("ray", True, n) in rate:
            click.echo(f"{n} clients: Ray Serve gives {rate['ray', True, n] / plain:.2f}x the "
                       "throughput of uvicorn")
    if json_out:
        json_out.write_text(json.dumps({"task": task, "rows": rows}, indent=2) + "\n")
