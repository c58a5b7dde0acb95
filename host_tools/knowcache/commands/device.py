"""`knowcache flash` and `knowcache device`: a knowcache-device over a serial line."""

from __future__ import annotations

import json
from pathlib import Path

import click

from knowcache.commands._progress import progress_bar


def _client(serial: str, baud: int):
    from knowcache.devicelink.client import DeviceClient, DeviceError
    try:
        return DeviceClient(serial, baud=baud)
    except DeviceError as e:
        raise click.ClickException(str(e)) from e


@click.command()
@click.option("--serial", "port", required=True, help="Serial port of the board (/dev/ttyUSB0...).")
@click.option("--baud", default=115200, show_default=True)
@click.option("--task", type=click.Choice(["kws", "vision"]), required=True)
@click.option("--models", type=click.Path(file_okay=False, path_type=Path), default=Path("models"),
              show_default=True, help="Folder of <task>/manifest.json.")
@click.option("--partitions", default=None,
              help="Comma-separated partition ids (default: every one but the full model).")
def flash(port, baud, task, models, partitions) -> None:
    """Upload the partitions a device lacks (by sha256), verified, resumable."""
    from knowcache.devicelink.client import DeviceError, flash as do_flash
    task_dir = models / task
    if not (task_dir / "manifest.json").is_file():
        raise click.ClickException(f"no {task_dir}/manifest.json; pass --models")
    wanted = [p.strip() for p in partitions.split(",") if p.strip()] if partitions else None
    with _client(port, baud) as client, progress_bar() as update:
        try:
            hello = client.hello()
            click.echo(f"{port}: {hello['program']} {hello['version']}, store "
                       f"{hello['store_bytes']} bytes used, {hello['store_free']} free", err=True)
            result = do_flash(client, task_dir, wanted, progress=update,
                              log=lambda m: click.echo(m, err=True))
        except (DeviceError, ValueError) as e:
            raise click.ClickException(f"{e} (run the same command again to resume)") from e
    click.echo(json.dumps({k: result[k] for k in ("flashed", "up_to_date", "retries")}))


@click.command()
@click.option("--serial", "port", required=True, help="Serial port of the board.")
@click.option("--baud", default=115200, show_default=True)
@click.argument("action", type=click.Choice(["hello", "list", "stats", "infer", "delete"]))
@click.argument("arg", required=False)
def device(port, baud, action, arg) -> None:
    """Ask a device: hello | list | stats | infer FILE | delete ID."""
    from knowcache.devicelink.client import DeviceError
    from knowcache.devicelink.inputs import read_input
    if action in ("infer", "delete") and not arg:
        raise click.UsageError(f"`device {action}` needs a {'FILE' if action == 'infer' else 'ID'}")
    with _client(port, baud) as client:
        try:
            if action == "infer":
                task = client.list()["task"]
                if not task:
                    raise click.ClickException("the device holds no partitions; `knowcache flash` first")
                out = client.infer(read_input(task, Path(arg)))
            elif action == "delete":
                out = client.delete(arg)
            else:
                out = getattr(client, action)()
        except (DeviceError, ValueError, FileNotFoundError) as e:
            raise click.ClickException(str(e)) from e
    click.echo(json.dumps(out))
