"""`knowcache flash` and `knowcache device`: a knowcache-device over a serial line,
or a phone over adb (devicelink/adb.py, docs/android.md)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from knowcache.commands._params import TASK
from knowcache.commands._progress import progress_bar

DEFAULT_BUNDLE = Path("build/android-bundle")


def _client(serial: str, baud: int):
    from knowcache.devicelink.client import DeviceClient, DeviceError
    try:
        return DeviceClient(serial, baud=baud)
    except DeviceError as e:
        raise click.ClickException(str(e)) from e


def _link(port, adb) -> None:
    if bool(port) == bool(adb):
        raise click.UsageError("pass either --serial PORT (a board) or --adb (a phone)")


@click.command()
@click.option("--serial", "port", default=None, help="Serial port of the board (/dev/ttyUSB0...).")
@click.option("--adb", is_flag=True, help="A phone over adb instead: push the android bundle "
              "and the programs to /data/local/tmp/knowcache.")
@click.option("--device", "adb_serial", default=None, help="With --adb: the phone's serial "
              "(`adb devices`), when several are connected.")
@click.option("--bundle", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_BUNDLE,
              show_default=True, help="With --adb: the folder `make android-bundle` wrote.")
@click.option("--apk", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="With --adb: install this build of the demo app (android_app/) and copy "
              "the programs into its files folder, instead of the bundle.")
@click.option("--baud", default=115200, show_default=True)
@click.option("--task", type=TASK, required=True)
@click.option("--models", type=click.Path(file_okay=False, path_type=Path), default=Path("models"),
              show_default=True, help="Folder of <task>/manifest.json.")
@click.option("--partitions", default=None,
              help="Comma-separated partition ids (default: every one but the full model).")
def flash(port, adb, adb_serial, bundle, apk, baud, task, models, partitions) -> None:
    """Upload the partitions a device lacks (by sha256): verified, resumable."""
    _link(port, adb)
    if apk and not adb:
        raise click.UsageError("--apk goes with --adb")
    task_dir = models / task
    if not (task_dir / "manifest.json").is_file():
        raise click.ClickException(f"no {task_dir}/manifest.json; pass --models")
    wanted = [p.strip() for p in partitions.split(",") if p.strip()] if partitions else None
    if adb:
        from knowcache.devicelink import adb as phone
        with progress_bar() as update:
            try:
                link = phone.Adb(adb_serial)
                result = (phone.install_app(link, apk, task_dir, wanted, update) if apk
                          else phone.flash(link, bundle, task_dir, wanted, update))
            except (phone.AdbError, FileNotFoundError, ValueError) as e:
                raise click.ClickException(str(e)) from e
        click.echo(json.dumps({"pushed": len(result["pushed"]), "up_to_date": result["up_to_date"],
                               "bytes": result["bytes"]}))
        return
    from knowcache.devicelink.client import DeviceError, flash as do_flash
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


def _adb_device(adb_serial, action, args, task, cloud) -> None:
    from knowcache.devicelink import adb as phone
    link = phone.Adb(adb_serial)
    try:
        if action == "run":
            missing = [a for a in args if not Path(a).is_file()]
            if not args or missing:
                raise click.UsageError(f"`device --adb run` needs input files; not files: {missing}")
            url = phone.reverse(link, cloud) if cloud else None
            for r in phone.run(link, [Path(a) for a in args], task, url):
                click.echo(json.dumps(r))
            return
        out = {"hello": phone.hello, "list": phone.listing, "stats": phone.stats}[action](link)
    except (phone.AdbError, ValueError) as e:
        raise click.ClickException(str(e)) from e
    click.echo(json.dumps(out))


@click.command()
@click.option("--serial", "port", default=None, help="Serial port of the board.")
@click.option("--adb", is_flag=True, help="A phone over adb (after `knowcache flash --adb`).")
@click.option("--device", "adb_serial", default=None, help="With --adb: the phone's serial.")
@click.option("--task", default=None, help="With --adb run: the task (default: the only one "
              "on the phone).")
@click.option("--cloud", default=None, help="With --adb run: a `knowcache serve` on this host "
              "(http://127.0.0.1:PORT), reached from the phone through `adb reverse`.")
@click.option("--baud", default=115200, show_default=True)
@click.argument("action", type=click.Choice(["hello", "list", "stats", "infer", "delete", "run"]))
@click.argument("args", nargs=-1)
def device(port, adb, adb_serial, task, cloud, baud, action, args) -> None:
    """Ask a device: hello | list | stats | infer FILE | delete ID (serial);
    hello | list | stats | run FILE... (--adb)."""
    _link(port, adb)
    if adb:
        if action not in ("hello", "list", "stats", "run"):
            raise click.UsageError(f"`device --adb` does hello, list, stats or run, not {action}")
        _adb_device(adb_serial, action, args, task, cloud)
        return
    from knowcache.devicelink.client import DeviceError
    from knowcache.devicelink.inputs import read_input
    if action == "run":
        raise click.UsageError("`device run` is for --adb; a serial device does `infer FILE`")
    if action in ("infer", "delete") and len(args) != 1:
        raise click.UsageError(f"`device {action}` needs one {'FILE' if action == 'infer' else 'ID'}")
    if action == "infer":   # before the serial line: a bad path needs no board to be told
        from knowcache.data.input_contract import InputError, check_file
        try:
            check_file(args[0])
        except InputError as e:
            raise click.ClickException(str(e)) from e
    with _client(port, baud) as client:
        try:
            if action == "infer":
                task = client.list()["task"]
                if not task:
                    raise click.ClickException("the device holds no partitions; `knowcache flash` first")
                prepared = read_input(task, Path(args[0]))
                if prepared.notice:
                    click.echo(prepared.notice, err=True)
                out = client.infer(prepared.x)
            elif action == "delete":
                out = client.delete(args[0])
            else:
                out = getattr(client, action)()
        except (DeviceError, ValueError, FileNotFoundError) as e:
            raise click.ClickException(str(e)) from e
    click.echo(json.dumps(out))
