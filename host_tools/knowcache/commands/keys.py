"""`knowcache keys`: Ed25519 keys that sign manifests (docs/security.md)."""

from __future__ import annotations

from pathlib import Path

import click


@click.group()
def keys() -> None:
    """Signing keys for manifests: generate a key pair, sign and verify a models folder."""


@keys.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for NAME.key (private, mode 0600) and NAME.pub (trusted by devices).")
@click.option("--name", default="signing", show_default=True, help="File name of the pair.")
def generate(out, name) -> None:
    """Generate an Ed25519 key pair; prints its key id.

    Keep NAME.key secret (it is written 0600 and never overwritten); give NAME.pub to
    devices as a trusted key (`knowcache-device --trusted-key`, `trusted_keys=[...]`)."""
    from knowcache import signing
    try:
        made = signing.generate(out, name)
    except (FileExistsError, OSError) as e:
        raise click.ClickException(str(e)) from e
    click.echo(f"key id {made.key_id}: private {made.private} (keep secret), "
               f"public {made.public}")


@keys.command()
@click.argument("models", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--key", "key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              required=True, help="The private key (NAME.key).")
def sign(models, key) -> None:
    """Sign MODELS/manifest.json as it is (writes MODELS/manifest.sig)."""
    from knowcache import manifest, signing
    try:
        manifest.load(models)             # only a manifest the runtime accepts is signed
        path = signing.sign_manifest(models, key)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        raise click.ClickException(str(e)) from e
    click.echo(f"signed {models / 'manifest.json'}: {path}")


@keys.command()
@click.argument("models", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--trusted", "trusted", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              multiple=True, required=True, help="A trusted public key (NAME.pub); repeatable.")
def verify(models, trusted) -> None:
    """Check MODELS/manifest.sig against trusted public keys (what devices will do)."""
    from knowcache import manifest, signing
    try:
        data = manifest.path_of(models).read_bytes()
        kid = signing.verify(data, signing.read_signature(models),
                             [signing.load_public(p) for p in trusted])
    except (ValueError, OSError) as e:
        raise click.ClickException(str(e)) from e
    click.echo(f"{models / 'manifest.json'}: signed by trusted key {kid}")
