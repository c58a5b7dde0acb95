"""`knowcache listen`: live voice commands from the host microphone."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command()
@click.option("--device", default=None, help="Input device: a name (substring) or an index.")
@click.option("--list-devices", is_flag=True, help="List the input devices and exit.")
@click.option("--cloud", default=None, help="URL of `knowcache serve` for what the gate rejects.")
@click.option("--token", default=None, envvar="KNOWCACHE_TOKEN", help="Bearer token of the cloud.")
@click.option("--ca-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="https cloud: PEM file of the CAs its certificate must chain to "
                   "(default: the system's).")
@click.option("--local-only", is_flag=True,
              help="Never ask the cloud: what the gate rejects is answered locally, flagged.")
@click.option("--models", type=click.Path(file_okay=False, path_type=Path),
              default=Path("models/kws"), show_default=True, help="Folder with the kws manifest.json.")
@click.option("--model", default="cached", show_default=True,
              help="Program the device runs (a partition id of the manifest: cached, generic, full...).")
@click.option("--threshold", type=click.FloatRange(0, 1), default=None,
              help="Gate threshold (default: the model's calibrated one).")
@click.option("--record", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Save each utterance as <time>_<word>.wav here.")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Stop after this many seconds of audio (default: until Ctrl-C).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines instead of text.")
def listen(device, list_devices, cloud, token, ca_file, local_only, models, model, threshold,
           record, duration, as_json) -> None:
    """Recognize spoken commands live: local answers from the cache, the rest from the cloud."""
    from knowcache.listen import microphone
    from knowcache.listen.recognizer import Recognizer
    from knowcache.runtime import Engine, KnowcacheError, set_compute_threads

    try:
        if list_devices:
            click.echo(microphone.describe_devices())
            return
        mic = microphone.Microphone(device)
    except microphone.MicrophoneError as e:
        raise click.ClickException(str(e)) from e
    if not (models / "manifest.json").is_file():
        raise click.ClickException(f"no manifest.json in {models}; pass --models with the kws "
                                   "models folder (shipped in models/kws)")
    try:
        set_compute_threads(1)
        engine = Engine.from_models_dir(models, install=[model], cloud_url=cloud, token=token,
                                        threshold=threshold, fetch_hints=False,
                                        ca_file=ca_file, local_only=local_only)
    except (KnowcacheError, ValueError, LookupError) as e:
        raise click.ClickException(f"cannot load {model!r} from {models}: {e}") from e
    if engine.manifest.task != "kws":
        raise click.ClickException(f"{models} holds {engine.manifest.task!r} models; "
                                   "listen needs the kws ones")

    rec = Recognizer(engine, record=record)
    err = click.get_text_stream("stderr")
    if not as_json:
        err.write(f"listening on {mic.device['name']!r} ({mic.rate} Hz"
                  f"{', resampled to 16000' if mic.rate != 16000 else ''}); model {model}, "
                  f"cloud {cloud or 'none'}; Ctrl-C to stop\n")
    try:
        with mic:
            for r in rec.run(mic.blocks(), duration):
                if as_json:
                    click.echo(json.dumps(r.as_dict()))
                else:
                    click.echo(f"{r.word:<10} {r.confidence:6.1%}  {r.source:<8} "
                               f"{r.latency_ms:6.0f} ms" + (f"  {r.wav}" if r.wav else ""))
    except KeyboardInterrupt:
        pass
    except microphone.MicrophoneError as e:
        raise click.ClickException(str(e)) from e
    summary = rec.summary.as_dict()
    if as_json:
        click.echo(json.dumps({"summary": summary}))
    else:
        kept = "".join(f", {summary[k]} {k.replace('_', '-')}"
                       for k in ("private", "local_only") if summary.get(k))
        err.write(f"{summary['utterances']} commands: {summary['local']} local, "
                  f"{summary['cloud']} cloud, {summary['degraded']} degraded{kept} "
                  f"(local rate {summary['local_rate']:.0%}); median latency "
                  f"{summary['latency_ms_median']:.0f} ms; real-time factor "
                  f"{summary['real_time_factor']:.3f} on one thread; "
                  f"{summary['dropped_as_noise']} noise bursts ignored\n")
