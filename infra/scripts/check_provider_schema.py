"""Validate Azure and GCP Terraform offline against the real provider schemas.

    .venv/bin/python infra/scripts/check_provider_schema.py infra/azure infra/gcp [...]

No azurerm or google provider binary is available here, but the npm packages
``@cdktf/provider-azurerm`` and ``@cdktf/provider-google`` are generated from the providers'
own schemas (``terraform providers schema -json``) and ship them as code: for every resource and
data source, the ``*ToHclTerraform`` functions list each argument with ``isBlock``, and the
TypeScript ``*Config`` interfaces mark required arguments (no ``?``). This script reads those and
checks every ``resource``/``data`` block of the given folders (recursively, examples included):

* the resource/data type exists in the provider;
* every argument is an argument (or a block) of that type, at that nesting level;
* blocks are written as blocks and attributes as attributes (``x { }`` vs ``x = { }``);
* required arguments and required blocks are present (not checked inside ``dynamic`` blocks).

It catches typos and wrong nesting, not runtime semantics (a valid but useless setting passes).
Types of other providers (``azapi``, ``time``) are listed as unchecked. Exit 1 on any error.
"""

from __future__ import annotations

import functools
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hcl2

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {
    "azurerm": ROOT / "node_modules" / "@cdktf" / "provider-azurerm",
    "google": ROOT / "node_modules" / "@cdktf" / "provider-google",
}
META = {"count", "for_each", "depends_on", "lifecycle", "provider", "provisioner", "connection"}

_ATTR = re.compile(
    r"(\w+): \{\s*value: (.*?),\s*isBlock: (true|false),\s*type: \"(\w+)\",\s*"
    r"storageClassType: \"(\w+)\",?\s*\}",
    re.S,
)
_FUNC = re.compile(r"^function (\w+)ToHclTerraform\(struct\) \{$", re.M)
_CLASS_HCL = re.compile(r"^    synthesizeHclAttributes\(\) \{$", re.M)
_NESTED = re.compile(r"(?<![.\w])([a-z]\w*)ToHclTerraform\b")
_IFACE = re.compile(r"^export interface (\w+)(?: extends [\w.]+)? \{$(.*?)^\}", re.M | re.S)
_FIELD = re.compile(r"^    readonly (\w+)(\?)?:", re.M)


@dataclass(frozen=True)
class BlockSchema:
    """Arguments of one resource/data type or nested block."""

    attributes: frozenset[str]
    required: frozenset[str]
    blocks: dict[str, BlockSchema] = field(hash=False, compare=False)


class SchemaError(Exception):
    """The provider package is missing or does not look as expected."""


def _camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def _section(text: str, start: int) -> str:
    end = text.find("return Object.fromEntries", start)
    if end < 0:
        raise SchemaError("unexpected cdktf layout: no Object.fromEntries after attributes")
    return text[start:end]


def _required(dts: str, iface: str) -> set[str]:
    for name, body in _IFACE.findall(dts):
        if name == iface:
            return {f for f, optional in _FIELD.findall(body) if not optional}
    return set()


def _build(js: str, dts: str, body: str, iface: str, funcs: dict[str, int]) -> BlockSchema:
    attributes: set[str] = set()
    blocks: dict[str, BlockSchema] = {}
    for name, value, is_block, _kind, _storage in _ATTR.findall(body):
        if is_block == "true":
            nested = [n for n in _NESTED.findall(value) if n in funcs]
            if not nested:
                raise SchemaError(f"block {name}: nested schema function not found")
            fn = nested[0]
            blocks[name] = _build(js, dts, _section(js, funcs[fn]), fn[:1].upper() + fn[1:], funcs)
        else:
            attributes.add(name)
    camel_required = _required(dts, iface)
    required = {n for n in attributes | set(blocks) if _camel(n) in camel_required}
    return BlockSchema(frozenset(attributes), frozenset(required), blocks)


@functools.cache
def load(provider: str, tf_type: str, *, data: bool = False) -> BlockSchema | None:
    """The schema of ``tf_type`` (``data`` source if set), or None if the provider has none."""
    package = PACKAGES[provider]
    lib = package / "lib"
    if not lib.is_dir():
        raise SchemaError(f"{package} is not installed: run `make venv` (npm ci)")
    stem = tf_type.removeprefix(f"{provider}_").replace("_", "-")
    folder = lib / (f"data-{provider}-{stem}" if data else stem)
    js_path, dts_path = folder / "index.js", folder / "index.d.ts"
    if not js_path.is_file():
        return None
    js = js_path.read_text(encoding="utf-8")
    if f'.tfResourceType = "{tf_type}";' not in js:
        return None
    dts = dts_path.read_text(encoding="utf-8")
    funcs = {m.group(1): m.end() for m in _FUNC.finditer(js)}
    top = _CLASS_HCL.search(js)
    if top is None:
        raise SchemaError(f"{js_path}: no synthesizeHclAttributes")
    iface_match = re.search(r"^export interface (\w+Config) extends cdktf\.", dts, re.M)
    if iface_match is None:
        raise SchemaError(f"{dts_path}: no Config interface")
    return _build(js, dts, _section(js, top.end()), iface_match.group(1), funcs)


def provider_version(provider: str) -> str:
    """The provider version the package was generated from (e.g. ``4.55.0``)."""
    js = (PACKAGES[provider] / "lib" / "provider" / "index.js").read_text(encoding="utf-8")
    m = re.search(r"providerVersion: '([^']+)'", js)
    if m is None:
        raise SchemaError(f"no providerVersion in the {provider} package")
    return m.group(1)


def _unquote(key: str) -> str:
    return key[1:-1] if len(key) >= 2 and key[0] == key[-1] == '"' else key


def _is_block(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(v, dict) and v.get("__is_block__") for v in value)
    )


def check_body(body: dict[str, Any], schema: BlockSchema, where: str) -> list[str]:
    """Errors of one block body against its schema (recursively)."""
    errors: list[str] = []
    present: set[str] = set()
    dynamic: set[str] = set()
    for raw_key, value in body.items():
        key = _unquote(raw_key)
        if key in META or key in ("__is_block__", "__comments__"):
            continue
        if key == "dynamic":
            for entry in value:
                for raw_name, dyn in entry.items():
                    name = _unquote(raw_name)
                    if name in ("__is_block__", "__comments__"):
                        continue
                    dynamic.add(name)
                    if name not in schema.blocks:
                        errors.append(f"{where}: dynamic '{name}' is not a block of this type")
                        continue
                    for content in dyn.get("content", []):
                        sub = check_body(content, schema.blocks[name], f"{where}.{name}")
                        errors.extend(e for e in sub if "missing required" not in e)
            continue
        present.add(key)
        if key in schema.blocks:
            if not _is_block(value):
                errors.append(f"{where}: '{key}' is a block; write `{key} {{ ... }}`")
                continue
            for i, item in enumerate(value):
                errors.extend(check_body(item, schema.blocks[key], f"{where}.{key}[{i}]"))
        elif key in schema.attributes:
            if _is_block(value):
                errors.append(f"{where}: '{key}' is an attribute; write `{key} = ...`")
        else:
            errors.append(f"{where}: unknown argument '{key}'")
    for name in sorted(schema.required - present - dynamic):
        errors.append(f"{where}: missing required argument '{name}'")
    return errors


@dataclass
class Report:
    """Result of a check: errors, and the types that were not checked (other providers)."""

    errors: list[str] = field(default_factory=list)
    checked: set[str] = field(default_factory=set)
    unchecked: set[str] = field(default_factory=set)


def check_paths(paths: list[Path]) -> Report:
    """Check every ``*.tf`` under ``paths`` (``.terraform`` folders skipped)."""
    report = Report()
    files: list[Path] = []
    for path in paths:
        files.extend([path] if path.is_file() else sorted(path.rglob("*.tf")))
    for tf_file in files:
        if ".terraform" in tf_file.parts:
            continue
        with tf_file.open(encoding="utf-8") as fh:
            doc = hcl2.load(fh)
        rel = tf_file.relative_to(ROOT) if tf_file.is_relative_to(ROOT) else tf_file
        for kind in ("resource", "data"):
            for entry in doc.get(kind, []):
                for raw_type, named in entry.items():
                    tf_type = _unquote(raw_type)
                    provider = tf_type.split("_", 1)[0]
                    if provider not in PACKAGES:
                        report.unchecked.add(tf_type)
                        continue
                    schema = load(provider, tf_type, data=kind == "data")
                    for raw_name, body in named.items():
                        name = _unquote(raw_name)
                        where = f"{rel}: {kind}.{tf_type}.{name}"
                        if schema is None:
                            report.errors.append(f"{where}: no such {kind} type in {provider}")
                            continue
                        report.checked.add(tf_type)
                        report.errors.extend(check_body(body, schema, where))
    return report


def main(argv: list[str]) -> int:
    """CLI entry point: print errors, return 1 if any."""
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        report = check_paths([Path(a).resolve() for a in argv])
    except SchemaError as exc:
        print(f"check_provider_schema: {exc}", file=sys.stderr)
        return 1
    for error in report.errors:
        print(error)
    versions = ", ".join(f"{p} {provider_version(p)}" for p in PACKAGES)
    print(
        f"checked {len(report.checked)} types against {versions}; "
        f"not checked (no schema offline): {', '.join(sorted(report.unchecked)) or '-'}; "
        f"{len(report.errors)} error(s)"
    )
    return 1 if report.errors else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
