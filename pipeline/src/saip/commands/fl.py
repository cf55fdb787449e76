"""``saip fl``: federated training with Flower — SecAgg+, client-side DP, update validation.

``saip fl run --config RUN.toml [--key URI] [--name NAME] [--engine local|ray] [--json]``
validates the run configuration (see ``federated-learning/README.md``; unknown keys are rejected
by name), runs it on the Ray-free local engine (default) or Flower's Ray simulation under
``<data-dir>/fl/<name>/``, writes ``metrics.json`` there and seals the final model with the
envelope encryptor of ``--key`` (default: ``[encryption] key`` of the settings file, else the
data directory's default local key, kept outside it: see ``saip.compose.resolve_key_uri``).

Exit codes: 0 ok; 1 the run failed (protocol halted, no round accepted, any error); 3 the run
finished *degraded* (more than ``validation.max_rollback_fraction`` of rounds rolled back: a
security gate refused the model); 130 interrupted (Ctrl-C / SIGTERM: the run stops within
seconds, ``metrics.json`` says ``interrupted``, no model is written). In every non-zero case no
model is sealed.

``saip fl check --config RUN.toml`` validates a configuration, including the start-up checks
that need the data (user-level DP feasibility, the (ε, δ) guarantee), without running it.

Both refuse ``dp.insecure_noise_seed``: a fixed noise seed lets the server remove the noise; it
exists only for the test suite, which calls the library directly.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from saip import tracking
from saip.context import get_state
from saip.errors import InputError
from saip.outputs import require_input

app = typer.Typer(
    no_args_is_help=True,
    help="Federated learning with Flower: SecAgg+, differential privacy, update validation.",
)

ConfigOpt = Annotated[
    Path, typer.Option("--config", help="Run configuration (TOML or JSON; unknown keys rejected).")
]
KeyOpt = Annotated[
    str | None,
    typer.Option(
        "--key", help="Master key URI sealing the model (default: the encryption.key setting)."
    ),
]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print the metrics summary as JSON on stdout.")
]


def encryptor_for(
    uri: str | None, data_dir: Path, *, context: Mapping[str, str] | None = None
) -> Any:
    """Envelope encryptor for ``uri`` (``None``: local key under ``data_dir``, created if missing).

    Composes ``saip_encryption`` for ``saip_fl`` (which only knows its ``Encryptor`` protocol).
    """
    from saip.compose import build_encryptor, resolve_key_uri

    key = resolve_key_uri(uri, configured=None, data_dir=data_dir)
    return build_encryptor(key, context=context or {})


def _check_inputs(config: Path) -> Any:
    """Load the run configuration and check the files it names, before anything is started."""
    require_input(config, what="run configuration")
    cfg = _load(config)
    if cfg.dataset.startswith("npz:"):
        require_input(Path(cfg.dataset[4:]), what="dataset")
    return cfg


def round_line(r: Mapping[str, Any], total: int) -> str:
    """One progress line for a finished round: accuracy, ε, accepted/rejected groups."""
    acc = "-" if r.get("accuracy") is None else f"{r['accuracy']:.3f}"
    eps = "" if r.get("epsilon") is None else f", ε={r['epsilon']:.2f}"
    rejected = r.get("rejected") or {}
    line = (
        f"fl: round {r.get('round')}/{total}: accuracy {acc}{eps}, "
        f"{r.get('accepted', 0)} accepted, {len(rejected)} rejected"
    )
    if rejected:
        line += " (" + "; ".join(f"{k}: {v}" for k, v in rejected.items()) + ")"
    return line + (" [rolled back]" if r.get("rolled_back") else "")


class RoundLines:
    """Print a line per federated round as it finishes, read from the ``metrics.json`` the run
    rewrites (atomically) after every round — no hook into the Flower apps is needed."""

    def __init__(self, path: Path, console: Any, *, total: int, interval: float = 0.5) -> None:
        self._path = path
        self._console = console
        self._total = total
        self._interval = interval
        self._printed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True, name="saip-fl-rounds")

    def __enter__(self) -> RoundLines:
        self._thread.start()
        return self

    def _poll(self, *, final: bool) -> None:
        try:
            doc = json.loads(self._path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        rounds = doc.get("rounds") or []
        done = doc.get("status") != "running" or final
        for i in range(self._printed, len(rounds)):
            r = rounds[i]
            if i == len(rounds) - 1 and r.get("accuracy") is None and not done:
                break  # the last round is still being evaluated
            self._console.print(escape(round_line(r, self._total)), highlight=False, soft_wrap=True)
            self._printed = i + 1

    def _watch(self) -> None:
        while not self._stop.wait(self._interval):
            self._poll(final=False)

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self._stop.set()
        self._thread.join(5)
        if exc_type is None:
            self._poll(final=True)


def rounds_table(metrics: dict[str, Any]) -> Table:
    """Rich table of the per-round metrics."""
    table = Table(title="federated rounds")
    for col in ("round", "accuracy", "loss", "ε", "accepted", "rejected (reasons)", "seconds"):
        table.add_column(col)
    for r in metrics["rounds"]:
        eps = "-" if r.get("epsilon") is None else f"{r['epsilon']:.2f}"
        reasons = "; ".join(f"{k}: {v}" for k, v in r["rejected"].items()) or "-"
        if r.get("rolled_back"):
            reasons += " [rolled back]"
        acc = "-" if r["accuracy"] is None else f"{r['accuracy']:.3f}"
        loss = "-" if r["loss"] is None else f"{r['loss']:.3f}"
        table.add_row(
            str(r["round"]), acc, loss, eps, str(r["accepted"]), reasons, f"{r['seconds']:.2f}"
        )
    return table


@app.command("run")
def run_cmd(
    config: ConfigOpt,
    key: KeyOpt = None,
    name: Annotated[
        str | None,
        typer.Option(
            "--name", help="Run directory name under <data-dir>/fl/ (default: a timestamp)."
        ),
    ] = None,
    json_out: JsonOpt = False,
    engine: Annotated[
        str,
        typer.Option(
            "--engine", help="local: in-process engine without Ray (default); ray: Flower's."
        ),
    ] = "local",
    force: Annotated[
        bool, typer.Option("--force", help="Replace the run directory if it exists.")
    ] = False,
    mlflow: tracking.MlflowOpt = None,
) -> None:
    """Run a federated training described by a run configuration file."""
    from saip_fl.errors import RunDegradedError

    from saip.errors import GateError

    if engine not in ("local", "ray"):
        raise typer.BadParameter("--engine must be 'local' or 'ray'")
    state = get_state()
    track = tracking.wanted(mlflow)
    cfg = _check_inputs(config)
    run_name = name or time.strftime("run-%Y%m%d-%H%M%S")
    if "/" in run_name or run_name.startswith("."):
        raise ValueError(f"--name must be a plain directory name, got '{run_name}'")
    run_dir = state.data_dir / "fl" / run_name
    if run_dir.exists() and not force:
        raise InputError(f"run directory {run_dir} exists (use --force to replace it)")
    if run_dir.exists():
        shutil.rmtree(run_dir)
    from saip_fl import runner

    _privacy_note(cfg, state.console)
    state.data_dir.mkdir(parents=True, exist_ok=True)
    encryptor = encryptor_for(
        key or state.config.encryption.key, state.data_dir, context=state.config.encryption.context
    )
    with (
        state.console.status(f"federated run: {cfg.num_clients} clients, {cfg.num_rounds} rounds"),
        RoundLines(run_dir / "metrics.json", state.console, total=cfg.num_rounds),
    ):
        try:
            result = runner.run(
                cfg,
                run_dir,
                encryptor=encryptor,
                engine="ray" if engine == "ray" else "local",
            )
        except RunDegradedError as exc:
            raise GateError(f"federated run degraded, model not sealed: {exc}") from None
        except KeyboardInterrupt:
            # typer turns a KeyboardInterrupt into a *returned* 130 that saip.cli.main ignores
            state.console.print(f"[red]✗[/] interrupted; metrics at {run_dir / 'metrics.json'}")
            raise typer.Exit(130) from None
    metrics = result.metrics
    state.console.print(rounds_table(metrics))
    final = metrics["final"]
    eps = "" if final["epsilon"] is None else f", ε={final['epsilon']:.2f} at δ={final['delta']:g}"
    state.console.print(
        f"[green]✓[/] final accuracy {final['accuracy']:.3f}{eps}; model sealed at "
        f"{result.model_path}; metrics at {result.metrics_path}"
    )
    if track:
        _track_run(run_name, run_dir, metrics, result.metrics_path, result.model_path)
    if json_out:
        summary = {
            "status": metrics["status"],
            "final": final,
            "rounds": metrics["rounds"],
            "excluded_clients": metrics["excluded_clients"],
            "model": metrics["model"],
            "metrics_path": str(result.metrics_path),
            "seconds": result.seconds,
        }
        state.out.print(json.dumps(summary), soft_wrap=True)


def _track_run(
    name: str, run_dir: Path, metrics: dict[str, Any], metrics_path: Path, model_path: Path
) -> None:
    """Log the run to MLflow: config, per-round metrics, metrics.json, the HTML report (no
    training samples in it) and the sealed model's path — never the model or key material."""
    from saip.report import collect, render_html

    state = get_state()
    record = tracking.fl_record(
        metrics, name=f"fl {name}", artifacts=[metrics_path], model_path=str(model_path)
    )
    inputs = collect(run_dir, audit_keys=False)
    record.texts["report.html"] = render_html(inputs, include_samples=False)
    run_id, uri = tracking.log_run(record, data_dir=state.data_dir)
    state.console.print(f"MLflow run {run_id} in {uri}", highlight=False, markup=False)


@app.command("check")
def check_cmd(config: ConfigOpt) -> None:
    """Validate a run configuration (all safety guards) without running it."""
    cfg = _check_inputs(config)
    from saip_fl.server import preflight

    preflight(cfg)
    console = get_state().console
    console.print(
        f"[green]✓[/] {escape(str(config))}: valid ({cfg.num_clients} clients, "
        f"{cfg.num_rounds} rounds, aggregation={cfg.aggregation}, "
        f"secagg={'on' if cfg.secagg.enabled else 'off'}, dp={cfg.dp.mode})"
    )
    _privacy_note(cfg, console)


def _privacy_note(cfg: Any, console: Any) -> None:
    """Say so when the server sees individual updates (``grouped_plaintext`` reads like grouped
    SecAgg+; it is its benchmark baseline)."""
    if not cfg.secagg.enabled:
        console.print(
            "[yellow]![/] secagg is off: the updates are NOT private — the server sees every "
            "individual update"
            + (
                " (grouped_plaintext is a benchmark baseline)"
                if "plaintext" in cfg.aggregation
                else ""
            )
        )


def _load(config: Path) -> Any:
    """Load and validate ``config``; refuse the test-only fixed noise seed."""
    from saip_fl.config import load_run_config
    from saip_fl.errors import FLConfigError

    cfg = load_run_config(config)
    if cfg.dp.insecure_noise_seed is not None:
        raise FLConfigError(
            f"{config}: dp.insecure_noise_seed is a test-only setting (whoever knows the seed "
            "can remove the DP noise); the CLI refuses it"
        )
    return cfg


def register(root: typer.Typer) -> None:
    """Attach this command group (with ``fl deploy``) to the root app."""
    from saip.commands import fl_deploy

    fl_deploy.register(app)
    root.add_typer(app, name="fl")
