"""``saip keys``, ``saip encrypt``, ``saip decrypt``, ``saip inspect``: envelope encryption.

``encrypt``/``decrypt`` stream in constant memory (``-`` is stdin/stdout). Output goes to a
temporary file next to the destination (mode 0600) and is renamed into place only after the
whole input was processed — for ``decrypt`` that means after every segment authenticated, so a
failed decryption leaves no output file and prints one opaque line (exit code 1).

Everything read from a header (key IDs, contexts, signer names) is attacker-controlled: it is
escaped (:func:`saip_encryption.wire.escape`) and printed as plain text, never as Rich markup.
``keys rewrap`` unwraps only with ``--from`` keys or the configured key, never with a key named
in the header.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Annotated, Any, cast

import typer
from rich.table import Table
from rich.text import Text
from saip_encryption import EnvelopeEncryptor, KeyProvider, from_uri, wire
from saip_encryption.envelope import Readable
from saip_encryption.errors import DecryptionError, EncryptionConfigError
from saip_encryption.providers import scheme_of
from saip_encryption.providers.local import create_local_key
from saip_encryption.rotation import audit, read_header, rewrap_file, split_key_version
from saip_encryption.signing import HeaderVerifier, signer_from_uri, verifier_from_spec

from saip.context import AppState, get_state
from saip.errors import HintedDecryptionError
from saip.outputs import PRIVATE_MODE, STDIO, atomic_output, require_input, require_output
from saip.progress import ByteProgress

keys_app = typer.Typer(
    no_args_is_help=True, help="Master keys: create a local key, re-wrap, audit."
)

KeyOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--key",
        help="Master key URI (local:PATH, aws-kms:ARN, azure-kv:KEY_ID, gcp-kms:...). "
        "Repeat to wrap under several keys / try several on decrypt. "
        "Default: the encryption.key setting.",
    ),
]
ContextOpt = Annotated[
    list[str] | None,
    typer.Option("--context", help="Encryption context entry KEY=VALUE (repeatable)."),
]
EndpointOpt = Annotated[
    str | None, typer.Option("--endpoint-url", help="Cloud KMS endpoint (stand-in, VPC endpoint).")
]
RegionOpt = Annotated[str | None, typer.Option("--region", help="Cloud region for KMS.")]
UnsignedOpt = Annotated[
    bool,
    typer.Option(
        "--allow-unsigned-public-key-wraps",
        help="UNSAFE: accept unsigned envelopes whose data key is wrapped with a public key "
        "(Key Vault RSA-OAEP): anyone who can read that public key can then forge them.",
    ),
]
SignOpt = Annotated[
    str | None,
    typer.Option(
        "--sign-with",
        help="Sign the header with this KMS-held EC P-256 key (aws-kms:ARN, "
        "gcp-kms:.../cryptoKeyVersions/N, azure-kv:.../keys/NAME/VERSION). "
        "Default: the encryption.sign_with setting.",
    ),
]
VerifyOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--verify-with",
        help="Require a valid header signature by SCHEME:KEY_ID=PUBLIC_KEY_PEM (repeatable). "
        "Default: the encryption.verify_with setting.",
    ),
]


def _verifiers(specs: list[str] | None) -> list[HeaderVerifier]:
    return [verifier_from_spec(s) for s in specs or get_state().config.encryption.verify_with]


def _options(endpoint_url: str | None, region: str | None) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    if endpoint_url is not None:
        opts["endpoint_url"] = endpoint_url
    if region is not None:
        opts["region"] = region
    return opts


def _provider(uri: str, options: dict[str, Any]) -> KeyProvider:
    if scheme_of(uri) == "local":
        return from_uri(uri)
    return from_uri(uri, **options)


def _providers(keys: list[str] | None, options: dict[str, Any]) -> list[KeyProvider]:
    uris = list(keys or [])
    if not uris:
        configured = get_state().config.encryption.key
        if configured is None:
            raise EncryptionConfigError(
                "no master key: pass --key URI (or set [encryption] key in the config file)"
            )
        uris = [configured]
    return [_provider(u, options) for u in uris]


def _context(entries: list[str] | None) -> dict[str, str]:
    ctx = dict(get_state().config.encryption.context)
    for entry in entries or []:
        key, sep, value = entry.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected KEY=VALUE, got {entry!r}", param_hint="--context")
        ctx[key] = value
    return ctx


class _Counted:
    """A readable that reports every chunk it reads to a :class:`ByteProgress`."""

    def __init__(self, src: Readable, progress: ByteProgress) -> None:
        self._src = src
        self._progress = progress

    def readinto(self, buf: Any) -> int | None:
        n = self._src.readinto(buf)
        if n:
            self._progress.advance(n)
        return n

    def read(self, size: int = -1) -> bytes:
        data = self._src.read(size)
        self._progress.advance(len(data))
        return data


@contextmanager
def _input(path: str, label: str) -> Iterator[Readable]:
    """Open IN (``-`` is stdin) with byte progress on stderr for large inputs."""
    console = get_state().console
    if path == "-":
        with ByteProgress(console, label, None) as progress:
            yield cast(Readable, _Counted(cast(Readable, sys.stdin.buffer), progress))
        return
    with open(path, "rb") as fh:
        st = os.fstat(fh.fileno())
        total = st.st_size if stat.S_ISREG(st.st_mode) else None
        with ByteProgress(console, label, total) as progress:
            yield cast(Readable, _Counted(fh, progress))


def _write_atomically(output: str, force: bool, produce: Callable[[IO[bytes]], int]) -> int:
    """Run ``produce(tmp)`` and rename ``tmp`` to ``output`` only if it returns normally.

    The policy (``--force``, ``0600``, nothing partial on error or signal) is
    :func:`saip.outputs.atomic_output`'s.
    """
    if output == STDIO:
        with tempfile.TemporaryFile() as spool:  # anonymous, removed even on a crash
            n = produce(spool)
            spool.seek(0)
            shutil.copyfileobj(spool, sys.stdout.buffer, 1 << 20)
            sys.stdout.buffer.flush()
        return n
    with atomic_output(output, force=force) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE)
        with os.fdopen(fd, "wb") as fh:
            n = produce(fh)
    return n


def _check_paths(input_path: str, output: str, force: bool) -> None:
    """Fail before any key provider is built (a KMS call, a key file read) or a byte is read."""
    require_input(input_path, allow_stdin=True)
    require_output(output, force=force, allow_stdout=True)


def encrypt_cmd(
    in_file: Annotated[str, typer.Argument(help="Plaintext file or - (stdin).")],
    out_file: Annotated[str, typer.Argument(help="Envelope file or - (stdout).")],
    key: KeyOpt = None,
    context: ContextOpt = None,
    endpoint_url: EndpointOpt = None,
    region: RegionOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Replace OUT_FILE if it exists.")] = False,
    allow_unsigned: UnsignedOpt = False,
    sign_with: SignOpt = None,
    verify_with: VerifyOpt = None,
) -> None:
    """Encrypt IN_FILE to OUT_FILE (streamed, constant memory) under one or more master keys."""
    state = get_state()
    _check_paths(in_file, out_file, force)
    opts = _options(endpoint_url, region)
    signer_uri = sign_with or state.config.encryption.sign_with
    enc = EnvelopeEncryptor(
        _providers(key, opts),
        cache=False,
        allow_unsigned_public_key_wraps=allow_unsigned,
        signer=signer_from_uri(signer_uri, **opts) if signer_uri else None,
        verify_with=_verifiers(verify_with),
    )
    ctx = _context(context)
    with _input(in_file, "encrypting") as src:
        n = _write_atomically(
            out_file, force, lambda dst: enc.encrypt_stream(src, dst, context=ctx)
        )
    state.console.print(
        f"encrypted {n:,} bytes → {wire.escape(out_file)} under {len(enc.providers)} key(s)",
        highlight=False,
        markup=False,
    )


def decrypt_cmd(
    in_file: Annotated[str, typer.Argument(help="Envelope file or - (stdin).")],
    out_file: Annotated[str, typer.Argument(help="Plaintext file or - (stdout).")],
    key: KeyOpt = None,
    context: ContextOpt = None,
    endpoint_url: EndpointOpt = None,
    region: RegionOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Replace OUT_FILE if it exists.")] = False,
    allow_unsigned: UnsignedOpt = False,
    verify_with: VerifyOpt = None,
) -> None:
    """Decrypt IN_FILE to OUT_FILE; OUT_FILE appears only after every segment authenticated."""
    state = get_state()
    _check_paths(in_file, out_file, force)
    enc = EnvelopeEncryptor(
        _providers(key, _options(endpoint_url, region)),
        cache=False,
        allow_unsigned_public_key_wraps=allow_unsigned,
        verify_with=_verifiers(verify_with),
    )
    ctx = _context(context)
    try:
        with _input(in_file, "decrypting") as src:
            n = _write_atomically(
                out_file, force, lambda dst: enc.decrypt_stream(src, dst, context=ctx)
            )
    except DecryptionError:
        hint = None if in_file == STDIO else decrypt_hint(Path(in_file), ctx)
        if hint is None:
            raise
        raise HintedDecryptionError(hint) from None
    state.console.print(
        f"decrypted and authenticated {n:,} bytes → {wire.escape(out_file)}",
        highlight=False,
        markup=False,
    )


def _printable(text: str, limit: int = 80) -> str:
    """Header strings are attacker-controlled: escaped (:func:`wire.escape`), length capped."""
    out = wire.escape(text)
    return out if len(out) <= limit else out[: limit - 1] + "…"


def decrypt_hint(path: Path, context: Mapping[str, str]) -> str | None:
    """Explain a failed decryption from the file's public header, or return ``None``.

    Only what anyone holding the file can read is used: context *keys* that differ from the ones
    given (values are never compared, so a wrong value stays opaque). A wrong key or tampering
    returns ``None``: the caller keeps the one opaque error. (A key file that lacks the version
    the file needs is already named by the key provider's own error.)
    """
    try:
        header = read_header(path, strict=False)
    except (wire.MalformedError, OSError):
        return None
    hints = []
    missing = sorted(set(header.context) - set(context))
    extra = sorted(set(context) - set(header.context))
    if missing:
        names = ", ".join(repr(_printable(k)) for k in missing)
        hints.append(f"context key {names} missing (pass --context KEY=VALUE)")
    if extra:
        names = ", ".join(repr(_printable(k)) for k in extra)
        hints.append(f"context key {names} is not in this file's context")
    return "; ".join(dict.fromkeys(hints)) or None


def _describe(path: Path) -> dict[str, Any]:
    """The header as JSON-able data; every string taken from the header is escaped."""
    esc = wire.escape
    try:
        header = read_header(path, strict=False)
    except wire.MalformedError as exc:
        raise EncryptionConfigError(
            f"{esc(str(path))} is not a readable SAIP envelope ({exc})"
        ) from None
    sig = header.signature
    payload = path.stat().st_size - header.payload_offset
    seg = header.segment_size + wire.TAG_LEN
    return {
        "file": str(path),
        "format": "SAIP",
        "version": header.version,
        "suite": wire.SUITE_NAMES.get(header.suite, f"unknown ({header.suite})"),
        "segment_size": header.segment_size,
        "segments": payload // seg + (1 if payload % seg else 0),
        "ciphertext_bytes": payload,
        "message_id": header.message_id.hex(),
        "context": {esc(k): esc(v) for k, v in header.context.items()},
        "signature": None
        if sig is None
        else {"scheme": esc(sig.scheme), "key_id": esc(sig.key_id), "verified": False},
        "key_slots": [
            {
                "slot": s.index,
                "generation": s.generation,
                "valid": s.valid,
                "wrapped_keys": [
                    {
                        "provider": esc(w.provider),
                        "key_id": esc(w.key_id),
                        "key": esc(split_key_version(w.provider, w.key_id)[0]),
                        "version": esc(split_key_version(w.provider, w.key_id)[1]),
                        "wrapped_bytes": len(w.ciphertext),
                    }
                    for w in s.keys
                ],
            }
            for s in header.slots
        ],
        "slot_capacity": header.slot_capacity,
        "authenticated": False,
    }


def inspect_cmd(
    file: Annotated[Path, typer.Argument(help="Envelope file.")],
    as_json: Annotated[bool, typer.Option("--json", help="JSON on stdout.")] = False,
) -> None:
    """Show an envelope's header: format, context, providers and key IDs (no decryption)."""
    state = get_state()
    info = _describe(file)
    if as_json:
        state.out.print_json(json.dumps(info))
        return
    title = f"{wire.escape(str(file))} (header only: nothing is authenticated without the key)"
    table = Table(title=Text(title))
    table.add_column("field")
    table.add_column("value", overflow="fold")
    for name in ("version", "suite", "segment_size", "segments", "ciphertext_bytes", "message_id"):
        table.add_row(name, Text(str(info[name])))
    ctx_text = ", ".join(f"{k}={v}" for k, v in info["context"].items()) or "-"
    table.add_row("context", Text(ctx_text))
    sig = info["signature"]
    table.add_row(
        "signature",
        Text("none" if sig is None else f"{sig['scheme']}: {sig['key_id']} (not verified here)"),
    )
    for slot in info["key_slots"]:
        for w in slot["wrapped_keys"]:
            table.add_row(
                f"slot {slot['slot']} gen {slot['generation']}",
                Text(f"{w['provider']}: {w['key']} (version {w['version']})"),
            )
        if not slot["valid"]:
            table.add_row(f"slot {slot['slot']}", "BROKEN (interrupted re-wrap? run keys rewrap)")
    state.out.print(table)


@keys_app.command("create-local")
def create_local_cmd(
    path: Annotated[Path, typer.Argument(help="Key file to create (mode 0600).")],
    rotate: Annotated[
        bool, typer.Option("--rotate", help="Add a new key version to an existing key file.")
    ] = False,
) -> None:
    """Create a local master key file (0600), or add a version to it with --rotate."""
    key_id = create_local_key(path, rotate=rotate)
    get_state().console.print(
        f"{'rotated' if rotate else 'created'} local key {path} (key id {key_id}); "
        f"use it as --key local:{path}",
        highlight=False,
    )


def _print_rewrap_json(state: AppState, doc: dict[str, Any]) -> None:
    """File names are untrusted: ASCII-only JSON, so none reaches a terminal raw (``\\u202e``)."""
    state.out.print_json(json.dumps(doc), ensure_ascii=True)


@keys_app.command("rewrap")
def rewrap_cmd(
    files: Annotated[list[Path], typer.Argument(help="Envelope files to re-wrap.")],
    to: Annotated[
        list[str], typer.Option("--to", help="New master key URI (repeatable: multi-provider).")
    ],
    from_: Annotated[
        list[str] | None,
        typer.Option(
            "--from",
            help="Key URI able to unwrap the current data keys (repeatable). "
            "Default: the encryption.key setting. Keys named in a header are never used.",
        ),
    ] = None,
    endpoint_url: EndpointOpt = None,
    region: RegionOpt = None,
    allow_unsigned: UnsignedOpt = False,
    verify_with: VerifyOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON on stdout.")] = False,
) -> None:
    """Re-wrap data keys under new master key(s); payloads are never decrypted or rewritten."""
    state = get_state()
    opts = _options(endpoint_url, region)
    targets = [_provider(u, opts) for u in to]
    # Only keys the operator named (or configured) unwrap: the header's key IDs are unauthenticated
    # and would make us call an attacker's key service with our credentials.
    sources: list[KeyProvider] = [_provider(u, opts) for u in (from_ or [])]
    if not from_ and state.config.encryption.key:
        sources.append(_provider(state.config.encryption.key, opts))
    if not sources:
        raise EncryptionConfigError(
            "name a key that can unwrap the current data keys with --from URI "
            "(or set [encryption] key); keys named in a header are never used"
        )
    verifiers = _verifiers(verify_with)
    results: list[dict[str, Any]] = []
    for f in files:
        try:
            result = rewrap_file(
                f,
                unwrap_with=sources,
                wrap_with=targets,
                allow_unsigned_public_key_wraps=allow_unsigned,
                verify_with=verifiers,
            )
        except Exception as exc:
            # Stop at the first failure: files already re-wrapped were reported above, later
            # ones stay untouched. The error line names the file (escaped: a file name can
            # carry terminal control characters); ``saip.cli.main`` appends "while ..." notes.
            done = len(results)
            exc.add_note(
                f"while re-wrapping {wire.escape(str(f))}: file {done + 1} of {len(files)}, "
                f"{done} re-wrapped before it, {len(files) - done - 1} not attempted"
            )
            if as_json:
                failed = {"file": str(f), "error": type(exc).__name__}
                _print_rewrap_json(state, {"rewrapped": results, "failed": failed})
            raise
        old = [wire.escape(w.key_id) for w in result.old_keys]
        new = [wire.escape(w.key_id) for w in result.new_keys]
        results.append({"file": result.path, "in_place": result.in_place, "old": old, "new": new})
        state.console.print(
            f"re-wrapped {wire.escape(str(f))} "
            f"({'header slot, in place' if result.in_place else 'header rewritten'})"
            f": {', '.join(old)} → {', '.join(new)}",
            highlight=False,
            markup=False,
        )
    if as_json:
        _print_rewrap_json(state, {"rewrapped": results})


@keys_app.command("public-key")
def public_key_cmd(
    uri: Annotated[str, typer.Argument(help="Signing key URI, as given to --sign-with.")],
    endpoint_url: EndpointOpt = None,
    region: RegionOpt = None,
) -> None:
    """Print a signing key's public key (PEM) to pin with --verify-with URI=FILE."""
    signer = signer_from_uri(uri, **_options(endpoint_url, region))
    fetch = getattr(signer, "public_key_pem", None)
    if fetch is None:
        raise EncryptionConfigError(
            f"{wire.escape(uri)}: export the public key with the service's own tools (az keyvault "
            "key download --encoding PEM)"
        )
    sys.stdout.write(fetch().decode("ascii"))


@keys_app.command("audit")
def audit_cmd(
    paths: Annotated[list[Path], typer.Argument(help="Files or directories to scan.")],
    as_json: Annotated[bool, typer.Option("--json", help="JSON on stdout.")] = False,
) -> None:
    """List, per master key and version, which artifacts depend on it (headers only)."""
    state = get_state()
    report = audit(paths)
    if as_json:
        state.out.print_json(json.dumps(report.to_dict()), highlight=False)
    else:
        table = Table(
            title=f"key dependencies: {report.envelopes} envelope(s) in {report.scanned} file(s)"
        )
        for col in ("provider", "master key", "version", "artifacts"):
            table.add_column(col, overflow="fold")
        for use in report.keys:
            table.add_row(
                Text(wire.escape(use.provider)),
                Text(wire.escape(use.key)),
                Text(wire.escape(use.version)),
                str(len(use.files)),
            )
        state.out.print(table)
    for path, problem in report.problems.items():
        line = Text("warning:", style="yellow")
        line.append(f" {wire.escape(path)}: {wire.escape(problem)}")
        state.console.print(line, highlight=False)


def register(root: typer.Typer) -> None:
    """Attach the key group and the encrypt/decrypt/inspect commands to the root app."""
    root.add_typer(keys_app, name="keys")
    root.command("encrypt")(encrypt_cmd)
    root.command("decrypt")(decrypt_cmd)
    root.command("inspect")(inspect_cmd)
