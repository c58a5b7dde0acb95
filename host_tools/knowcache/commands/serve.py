"""`knowcache serve`: the cloud tier on uvicorn."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.option("--models", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=Path("models"), show_default=True, help="Folder of <task>/manifest.json.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--token", default=None, help="Require this bearer token (or set KNOWCACHE_TOKEN).")
@click.option("--tls-cert", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Serve HTTPS with this PEM certificate (chain); needs --tls-key.")
@click.option("--tls-key", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The PEM private key of --tls-cert (unencrypted).")
@click.option("--batching/--no-batching", default=True, show_default=True,
              help="Run concurrent infer requests together.")
@click.option("--max-batch", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--max-wait-ms", type=click.FloatRange(min=0), default=2.0, show_default=True,
              help="How long a batch waits for more requests.")
@click.option("--queue-limit", type=click.IntRange(min=1), default=256, show_default=True,
              help="Queued infer requests before answering 429.")
@click.option("--timeout-s", type=click.FloatRange(min=0.001), default=10.0, show_default=True,
              help="Per-request timeout (504 after).")
@click.option("--learn-exits", is_flag=True,
              help="Layer caching: answer with the staged program and retrain its exit heads "
                   "from live traffic (self-distillation), swapping in verified versions. With "
                   "--ray: one learner per task on the head node, fed by every replica.")
@click.option("--retrain-every", type=click.IntRange(min=20), default=250, show_default=True,
              help="Requests between exit retrains (with --learn-exits).")
@click.option("--exit-target", type=click.FloatRange(0, 1, min_open=True), default=None,
              help="Agreement with the full model the exits are calibrated for "
                   "(with --learn-exits; default 0.998).")
@click.option("--fidelity-floor", type=click.FloatRange(0, 1, min_open=True), default=None,
              help="A retrained version must agree with the full model at least this often on "
                   "held-out requests, or as often as the serving one (default 0.995).")
@click.option("--savings-slack", type=click.FloatRange(0, 1), default=None,
              help="A retrained version may save at most this fraction of the FLOPs less than "
                   "the serving one (default 0.05).")
@click.option("--min-gain", type=click.FloatRange(-1, 1), default=None,
              help="A verified version is published only if it saves this fraction of the "
                   "FLOPs more than the serving one, or is more faithful (default 0.01; "
                   "negative: publish every verified version).")
@click.option("--signing-key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="With --learn-exits: sign each new manifest version with this "
              "Ed25519 private key (`knowcache keys generate`), for devices that require "
              "signed manifests.")
@click.option("--ray", "ray_address", is_flag=False, flag_value="local", default=None,
              metavar="[ADDRESS|local]",
              help="Serve on Ray Serve (pip install 'knowcache[ray]'): join the Ray cluster at "
                   "ADDRESS, or start one here (local, the default). docs/server.md: scaling out.")
@click.option("--min-replicas", type=click.IntRange(min=1), default=None,
              help="With --ray: model replicas per task at least (default 1).")
@click.option("--max-replicas", type=click.IntRange(min=1), default=None,
              help="With --ray: model replicas per task at most, autoscaled on ongoing "
                   "requests (default 2; equal bounds: a fixed count).")
@click.option("--replica-cpus", type=click.FloatRange(min=0, min_open=True), default=None,
              help="With --ray: CPUs per model replica, its kernel threads (default 1, or the "
                   "cluster's free CPUs shared among every task's minimum replicas when fewer).")
@click.option("--ingress-replicas", type=click.IntRange(min=1), default=None,
              help="With --ray: replicas of the HTTP app in front of the models (default 1).")
@click.option("--ray-cpus", type=click.IntRange(min=1), default=None,
              help="With --ray local: CPUs of the Ray cluster started here (default: all).")
@click.option("--serve-config", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="With --ray: also write the Serve config file of this deployment here "
                   "(`serve deploy FILE` accepts it).")
@click.option("--log-level", default="info", show_default=True)
def serve(models, host, port, token, tls_cert, tls_key, batching, max_batch, max_wait_ms,
          queue_limit, timeout_s, learn_exits, retrain_every, exit_target, fidelity_floor,
          savings_slack, min_gain, signing_key, ray_address, min_replicas, max_replicas,
          replica_cpus, ingress_replicas, ray_cpus, serve_config, log_level) -> None:
    """Serve full models, partition hints and partition downloads over HTTP.

    Every task under MODELS is loaded and its programs verified (sha256) before the
    server listens; each task loaded or refused is logged with the reason, the
    healthy ones are served, and the command fails when none loads. With --tls-cert and
    --tls-key it speaks HTTPS only (devices verify the certificate: --ca-file on their
    side); the pair is checked before anything loads. Tokens are never logged."""
    import uvicorn

    from knowcache.server import ServeConfig, create_app
    from knowcache.server import registry, tls
    try:
        pair = tls.check_pair(tls_cert, tls_key)
    except ValueError as e:
        raise click.ClickException(str(e)) from e
    # OnlineConfig field -> (option, value), for the options given.
    given = (("target", "--exit-target", exit_target),
             ("fidelity_floor", "--fidelity-floor", fidelity_floor),
             ("savings_slack", "--savings-slack", savings_slack),
             ("min_gain", "--min-gain", min_gain),
             ("signing_key", "--signing-key", signing_key))
    bars = {field: (option, value) for field, option, value in given if value is not None}
    if bars and not learn_exits:
        raise click.ClickException(f"{', '.join(o for o, _ in bars.values())} only apply "
                                   "to the exit learner; add --learn-exits")
    try:
        online = None
        if signing_key is not None:
            from knowcache import signing
            signing.load_private(signing_key)     # fail now, not at the first retrain
        if learn_exits:
            from knowcache.layer_cache.online import OnlineConfig
            online = OnlineConfig(retrain_every=retrain_every,
                                  **{field: value for field, (_, value) in bars.items()})
        config = ServeConfig(models=models, token=token, batching=batching, max_batch=max_batch,
                             max_wait_ms=max_wait_ms, queue_limit=queue_limit,
                             request_timeout_s=timeout_s, learn_exits=learn_exits, online=online)
    except ValueError as e:
        raise click.ClickException(str(e)) from e
    say = lambda m: click.echo(f"knowcache serve: {m}", err=True)  # noqa: E731
    if tls.token_in_clear(host, config.token, pair is not None):
        say(f"warning: the bearer token crosses the network in clear text on {host}; "
            "serve HTTPS with --tls-cert and --tls-key")
    ray_given = {"--min-replicas": min_replicas, "--max-replicas": max_replicas,
                 "--replica-cpus": replica_cpus, "--ingress-replicas": ingress_replicas,
                 "--ray-cpus": ray_cpus, "--serve-config": serve_config}
    ray_given = {option: value for option, value in ray_given.items() if value is not None}
    if ray_given and ray_address is None:
        raise click.ClickException(f"{', '.join(ray_given)} only apply to the Ray back end; "
                                   "add --ray")
    if ray_address is not None:
        return _serve_on_ray(config, ray_address, host, port, pair, min_replicas, max_replicas,
                             replica_cpus, ingress_replicas, ray_cpus, serve_config, say)
    report = registry.load_all(config.models, learn_exits, online, log=say, warn=say)
    if not report.tasks:
        raise click.ClickException("nothing to serve; fix what is refused above")
    ssl = {"ssl_certfile": pair[0], "ssl_keyfile": pair[1]} if pair else {}
    uvicorn.run(create_app(config, report=report), host=host, port=port, log_level=log_level,
                **ssl)


def _serve_on_ray(config, address, host, port, tls, min_replicas, max_replicas, replica_cpus,
                  ingress_replicas, ray_cpus, serve_config, say) -> None:
    """`serve --ray`: checks the models here, deploys, serves until interrupted."""
    try:
        from knowcache.server import ray_backend
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] != "ray":
            raise
        raise click.ClickException("--ray needs Ray Serve: pip install 'knowcache[ray]'") from e
    from knowcache.server import registry
    if not registry.load_all(config.models, log=say, warn=say).tasks:
        raise click.ClickException("nothing to serve; fix what is refused above")
    given = {"min_replicas": min_replicas, "max_replicas": max_replicas,
             "replica_cpus": replica_cpus, "ingress_replicas": ingress_replicas}
    try:
        scale = ray_backend.ScaleConfig(**{k: v for k, v in given.items() if v is not None})
    except ValueError as e:
        raise click.ClickException(str(e)) from e
    if serve_config is not None:
        ray_backend.write_serve_config(serve_config, config, scale, host, port, tls)
        say(f"wrote the Serve config file {serve_config} (`serve deploy {serve_config}`)")
    try:
        ray_backend.run(config, scale, address, ray_cpus, host, port, tls, say,
                        replica_cpus_chosen=replica_cpus is not None)
    except ValueError as e:
        raise click.ClickException(str(e)) from e
