"""The `knowcache` command line. Thin: parsing and printing; work lives in modules."""

from __future__ import annotations

import warnings

import click

from knowcache import __version__

# torch.export deprecation chatter (from pickling tree specs) that says nothing to a user.
warnings.filterwarnings("ignore", message=r".*LeafSpec.*", category=FutureWarning)


@click.group()
@click.version_option(__version__, prog_name="knowcache")
def main() -> None:
    """knowcache: two-stage on-device inference (device cache + cloud fallback)."""


def _register() -> None:
    from knowcache.commands import (bench, bench_serve, build, data, device, eval as eval_,
                                    infer, keys, listen, serve)
    main.add_command(data.data)
    main.add_command(bench.bench)
    main.add_command(bench.demo)
    main.add_command(serve.serve)
    main.add_command(listen.listen)
    main.add_command(device.flash)
    main.add_command(device.device)
    main.add_command(bench_serve.bench_serve)
    main.add_command(eval_.eval_cmd)
    main.add_command(infer.infer)
    main.add_command(keys.keys)
    for command in (build.train, build.specialize, build.partition, build.export_cmd,
                    build.build_models):
        main.add_command(command)


_register()

if __name__ == "__main__":
    main()
