"""``saip fl deploy``: the federation on real processes (loopback), then the model sealed.

Runs :func:`saip_fl.deploy.run_local_deployment` — CA and server certificate, a SuperLink with TLS
and SuperNode authentication, registered SuperNodes, ``flwr run`` of the saip app, every process
group stopped — and seals the ``model.npz`` the ServerApp wrote into an envelope-encrypted
``model.saipenc`` (the plaintext file is removed once the sealed copy is written).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer

from saip.context import get_state

#: the context bound to a sealed deployment model (``saip decrypt --context`` needs the same)


def _value(text: str) -> bool | int | float | str:
    lowered = text.lower()
    if lowered in {"true", "false"}:
        return lowered == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            continue
    return text


def parse_run_config(items: list[str]) -> dict[str, bool | int | float | str]:
    """``K=V`` pairs to a Flower run-config mapping (ints, floats and booleans typed)."""
    parsed: dict[str, bool | int | float | str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"--run-config {item!r}: expected KEY=VALUE")
        parsed[key.strip()] = _value(value.strip())
    return parsed


def deploy(
    run_dir: Annotated[
        Path | None,
        typer.Option("--run-dir", help="Fresh run directory (default <data-dir>/fl-deploy)."),
    ] = None,
    num_supernodes: Annotated[int, typer.Option("--num-supernodes", min=2, max=16)] = 3,
    run_config: Annotated[
        list[str] | None,
        typer.Option("--run-config", help="App setting KEY=VALUE (repeatable)."),
    ] = None,
    run_timeout: Annotated[float, typer.Option("--run-timeout", min=10.0)] = 900.0,
    key: Annotated[
        str | None, typer.Option("--key", help="Master key URI sealing the model.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Run the federation on loopback with TLS and SuperNode authentication; seal the model."""
    from saip_fl.deploy import DEPLOY_MODEL_CONTEXT, run_local_deployment

    from saip.compose import encryptor

    state = get_state()
    target = run_dir or state.data_dir / "fl-deploy"
    result = run_local_deployment(
        run_dir=target,
        num_supernodes=num_supernodes,
        run_config=parse_run_config(run_config or []),
        run_timeout=run_timeout,
    )
    summary: dict[str, Any] = asdict(result)
    model = target / "result" / "model.npz"
    if model.exists():
        sealed = model.with_suffix(".saipenc")
        enc = encryptor(state, key)
        try:
            tmp = sealed.with_suffix(".tmp")
            tmp.write_bytes(enc.encrypt(model.read_bytes(), context=DEPLOY_MODEL_CONTEXT))
            tmp.chmod(0o600)
            tmp.replace(sealed)
        finally:
            enc.close()
        model.unlink()
        summary["sealed_model"] = str(sealed)
    if as_json:
        typer.echo(json.dumps(summary, sort_keys=True, default=str))
        return
    run = result.run or {}
    state.console.print(
        f"[green]deployment finished[/]: {len(result.supernodes)} SuperNodes, "
        f"run status {run.get('status', '?')}, rounds {run.get('rounds', '?')}, "
        f"metrics {run.get('final_metrics', {})}; "
        f"sealed model {summary.get('sealed_model', 'none written')}"
    )


def register(app: typer.Typer) -> None:
    """Attach ``deploy`` to the ``saip fl`` group."""
    app.command("deploy")(deploy)
