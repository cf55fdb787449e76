"""``saip config from-terraform``: turn a Terraform module's ``saip_config`` output into a
``--config`` TOML file.

::

    terraform output -json saip_config | saip config from-terraform > saip.toml
    terraform output -json | saip config from-terraform -o saip.toml

The input is validated by the same model ``--config`` uses (:class:`saip.config.SaipConfig`), so
a value the CLI would reject is rejected here, naming the setting. ``null`` values are dropped
(TOML has no null). With ``--check`` (the default) the ingestion backend is then built from the
values exactly as ``saip ingest`` builds it, without any network call (SDK clients are created
lazily; for GCP, whose clients look for credentials when created, the options are validated and
placeholder clients are passed), so a wrong name or endpoint fails here and not at the first
record. The key URI must belong to the backend's cloud.

Exit codes: 0 written; 1 invalid input (nothing is written); 2 usage.
"""

from __future__ import annotations

import json
import math
import re
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from saip.config import SaipConfig, describe_validation_error
from saip.errors import ConfigError

app = typer.Typer(no_args_is_help=True, help="Settings files: generate and check --config TOML.")

#: Largest input accepted (a saip_config output is a few hundred bytes).
MAX_INPUT_BYTES = 1 << 20

_KEY_SCHEMES = {"aws": "aws-kms:", "azure": "azure-kv:", "gcp": "gcp-kms:"}
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value if v is not None]
    return value


def extract_saip_config(doc: Any) -> dict[str, Any]:
    """The ``saip_config`` value from ``terraform output -json [saip_config]`` output.

    Accepts the bare value, ``{"value": ..., "type": ..., "sensitive": ...}``, or the map of all
    outputs holding ``saip_config``.

    Raises
    ------
    ConfigError
        The document holds no ``saip_config`` value.
    """
    if isinstance(doc, dict) and "saip_config" in doc:
        doc = doc["saip_config"]
    if isinstance(doc, dict) and "value" in doc and set(doc) <= {"value", "type", "sensitive"}:
        doc = doc["value"]
    if not isinstance(doc, dict) or not ({"ingest", "encryption"} & set(doc)):
        raise ConfigError(
            "input is not a saip_config output: expected an object with 'ingest'/'encryption' "
            "(from `terraform output -json saip_config`)"
        )
    return dict(doc)


def config_from_terraform(doc: Any) -> SaipConfig:
    """Validate a ``saip_config`` output as saip settings (nulls dropped).

    Raises
    ------
    ConfigError
        Naming the setting that the model rejects, or a key URI of another cloud.
    """
    raw = _drop_nulls(extract_saip_config(doc))
    try:
        cfg = SaipConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"saip_config: {describe_validation_error(exc)}") from None
    scheme = _KEY_SCHEMES.get(cfg.ingest.backend)
    key = cfg.encryption.key
    if scheme is not None and key is not None and not key.startswith(scheme):
        raise ConfigError(
            f"setting 'encryption.key': backend {cfg.ingest.backend} needs a {scheme} key URI, "
            f"got {key.split(':', 1)[0]!r}"
        )
    return cfg


def dry_run_backend(cfg: SaipConfig, *, data_dir: Path) -> None:
    """Build the configured ingestion backend as ``saip ingest`` does, without network I/O.

    Raises
    ------
    ConfigError
        The backend rejected an option (its message names it).
    """
    from saip_ingestion.backends import open_backend

    from saip.compose import backend_options

    ingest = cfg.ingest
    name = ingest.backend
    generic = {
        "endpoint_url": ingest.endpoint_url,
        "region": ingest.region,
        "stream": ingest.stream,
        "bucket": ingest.bucket,
    }
    options: dict[str, Any] = {
        **ingest.backend_options(name),
        **{k: v for k, v in generic.items() if v is not None},
    }
    if name == "gcp":
        # Google clients resolve credentials when they are created: validate every option with
        # placeholder clients instead (open_backend checks names before touching a client).
        placeholder = object()
        options |= {"publisher": placeholder, "subscriber": placeholder}
        options |= {"bigquery_client": placeholder}
    try:
        stream, _store = open_backend(name, data_dir=data_dir, **options, **backend_options(name))
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"saip_config: backend {name}: {exc}") from None
    close = getattr(stream, "close", None)
    if name != "gcp" and callable(close):
        close()


def _toml_string(value: str) -> str:
    out = ['"']
    for ch in value:
        code = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04X}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _toml_string(key)


def _toml_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"cannot write non-finite number {value!r} to TOML")
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, dict):
        inner = ", ".join(f"{_toml_key(k)} = {_toml_scalar(v)}" for k, v in value.items())
        return "{" + inner + "}" if inner else "{}"
    raise ConfigError(f"cannot write {type(value).__name__} to TOML")


def to_toml(doc: dict[str, Any], *, _table: tuple[str, ...] = ()) -> str:
    """A TOML document for nested dicts of strings, numbers, booleans (no arrays needed here).

    Dicts whose values are all scalars become tables; ``encryption.context`` (string map) is a
    table too. Keys that are not bare are quoted and escaped.
    """
    scalars = {k: v for k, v in doc.items() if not isinstance(v, dict)}
    tables = {k: v for k, v in doc.items() if isinstance(v, dict)}
    lines: list[str] = []
    if _table and (scalars or not tables):
        lines.append("[" + ".".join(_toml_key(k) for k in _table) + "]")
    lines.extend(f"{_toml_key(k)} = {_toml_scalar(v)}" for k, v in scalars.items())
    chunks = ["\n".join(lines)] if lines else []
    chunks.extend(to_toml(v, _table=(*_table, k)).rstrip("\n") for k, v in tables.items())
    return "\n\n".join(c for c in chunks if c) + "\n"


def render(cfg: SaipConfig) -> str:
    """The TOML text of ``cfg``'s non-default settings, with a provenance comment."""
    doc = cfg.model_dump(mode="json", exclude_defaults=True, exclude_none=True)
    body = to_toml(doc)
    header = "# Generated by `saip config from-terraform` from the module's saip_config output.\n"
    return header + "\n" + body


@app.command("from-terraform")
def from_terraform_cmd(
    source: Annotated[
        str,
        typer.Argument(help="JSON file from `terraform output -json [saip_config]`; - = stdin."),
    ] = "-",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here (default: stdout).")
    ] = None,
    check: Annotated[
        bool,
        typer.Option(
            "--check/--no-check",
            help="Also build the ingestion backend from the values (no network I/O).",
        ),
    ] = True,
) -> None:
    """Convert a Terraform ``saip_config`` output into a ``--config`` TOML file."""
    if source == "-":
        text = sys.stdin.read(MAX_INPUT_BYTES + 1)
    else:
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"input file not found: {path}")
        text = path.read_text(encoding="utf-8", errors="strict")[: MAX_INPUT_BYTES + 1]
    if len(text) > MAX_INPUT_BYTES:
        raise ConfigError(f"input is larger than {MAX_INPUT_BYTES} bytes")
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"input is not JSON: {exc}") from None
    cfg = config_from_terraform(doc)
    if check:
        with tempfile.TemporaryDirectory(prefix="saip-config-check-") as tmp:
            dry_run_backend(cfg, data_dir=Path(tmp))
    text_out = render(cfg)
    if output is None:
        typer.echo(text_out, nl=False)
        return
    tmp_path = output.with_name(output.name + ".tmp")
    tmp_path.write_text(text_out, encoding="utf-8")
    tmp_path.replace(output)


def register(root: typer.Typer) -> None:
    """Attach this command group to the root app (as ``saip config``)."""
    root.add_typer(app, name="config")
