"""Record envelope and payload schemas, defined once.

Every record on the wire is one JSON object (one line in a JSONL file or one stream message)::

    {"record_id": "...", "producer_id": "...", "seq": 7, "ts": 1764100000000,
     "schema": {"name": "image-sample", "version": 1},
     "payload": {...}, "sig": {...}}

The pydantic v2 types below (``TypedDict`` models validated by pydantic-core: validation into
plain dicts is ~2.5× faster than building ``BaseModel`` instances, measured) are the single
source of truth. The same models export

* JSON Schema (``ingestion/schemas/*.schema.json``) for producers and reviewers, and
* the Avro schema ``ingestion/schemas/record.v1.avsc`` used as the Pub/Sub topic schema
  (binary encoding; :func:`avro_encode` / :func:`avro_decode` convert a record dict), so the cloud
  schema registry and the code cannot disagree: ``python -m saip_ingestion.schemas export``
  regenerates the files and ``python -m saip_ingestion.schemas check`` (run by the test suite)
  fails when a committed file is stale.

Unknown fields are rejected everywhere (``extra="forbid"``), types are strict (no ``"1"`` → 1
coercion), floats must be finite, and identifiers must match strict ASCII patterns: an identifier
that does not match is rejected, never repaired.
"""

from __future__ import annotations

import io
import json
import re
import sys
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal, NotRequired, Union

from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    TypeAdapter,
    with_config,
)
from typing_extensions import TypedDict, is_typeddict

__all__ = [
    "IMAGE_RECORD_ADAPTER",
    "MAX_LINE_BYTES",
    "PAYLOAD_ADAPTERS",
    "PAYLOAD_MODELS",
    "RECORD_ADAPTER",
    "AnyRecord",
    "ImageRecordV1",
    "ImageSampleV1",
    "Record",
    "SchemaRef",
    "Signature",
    "TabularRecordV1",
    "TabularSampleV1",
    "TextRecordV1",
    "TextSampleV1",
    "avro_decode",
    "avro_encode",
    "avro_schema",
    "canonical_json",
    "duplicate_key",
    "export_schemas",
    "json_schemas",
    "strict_json_loads",
]

#: upper bound of one serialized record (bytes); longer lines are quarantined as ``oversized``
MAX_LINE_BYTES: Final = 256 * 1024

#: ``producer_id``: lower-case ASCII, starts with a letter, 2–63 characters
PRODUCER_ID_PATTERN: Final = r"^[a-z][a-z0-9-]{1,62}$"
#: ``record_id``: ASCII letters, digits, ``_`` and ``-``; safe as an object-key component
RECORD_ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$"
#: tabular column names
FIELD_NAME_PATTERN: Final = r"^[a-z][a-z0-9_]{0,63}$"
#: Ed25519 key identifier: first 8 bytes of SHA-256(raw public key), hex
KEY_ID_PATTERN: Final = r"^[0-9a-f]{16}$"
#: canonical base64 only (RFC 4648 §3.5): the unused low bits of the last character are zero, so
#: one value has exactly one encoding (a non-canonical variant is refused, not normalised)
_B64_32: Final = r"^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$"
_B64_64: Final = r"^[A-Za-z0-9+/]{85}[AQgw]==$"

ProducerId = Annotated[str, StringConstraints(pattern=PRODUCER_ID_PATTERN)]
RecordId = Annotated[str, StringConstraints(pattern=RECORD_ID_PATTERN)]
FieldName = Annotated[str, StringConstraints(pattern=FIELD_NAME_PATTERN)]
KeyId = Annotated[str, StringConstraints(pattern=KEY_ID_PATTERN)]
Hash32B64 = Annotated[str, StringConstraints(pattern=_B64_32)]
Sig64B64 = Annotated[str, StringConstraints(pattern=_B64_64)]

#: limits of ``text-sample/v1`` (characters, after sanitization too)
TEXT_INSTRUCTION_MAX: Final = 8192
TEXT_RESPONSE_MAX: Final = 16384
#: largest image / tabular feature vector accepted by the schema
IMAGE_MAX_SIDE: Final = 256
TABULAR_MAX_FEATURES: Final = 1024
#: largest Merkle batch a producer may sign (inclusion proofs stay ≤ 16 hashes)
MAX_TREE_SIZE: Final = 65536


_CONFIG: Final = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


def _exact_int(value: Any) -> Any:
    """``Literal[1]`` compares with ``==`` (``true`` and ``1.0`` would pass): require an int."""
    if type(value) is not int:
        raise ValueError("must be the integer 1 (not a boolean or a float)")
    return value


#: schema major version: the JSON integer ``1`` exactly
Version1 = Annotated[Literal[1], BeforeValidator(_exact_int)]


@with_config(_CONFIG)
class ImageSampleV1(TypedDict):
    """``image-sample/v1``: a fixed-size vector of finite floats (row-major pixels) and a label.

    ``len(features) == width * height``; the value range and the class set are declared by the
    consumer's :class:`saip_ingestion.engine.ImageSpec` (for example digits: 8×8, 0–16, 0–9).
    """

    width: Annotated[int, Field(ge=1, le=IMAGE_MAX_SIDE)]
    height: Annotated[int, Field(ge=1, le=IMAGE_MAX_SIDE)]
    features: Annotated[list[float], Field(min_length=1, max_length=IMAGE_MAX_SIDE**2)]
    label: Annotated[int, Field(ge=0, le=65535)]


def _image_shape(value: ImageSampleV1) -> ImageSampleV1:
    n, w, h = len(value["features"]), value["width"], value["height"]
    if n != w * h:
        raise ValueError(f"shape mismatch: {n} features for {w}x{h}")
    return value


@with_config(_CONFIG)
class TabularSampleV1(TypedDict):
    """``tabular-sample/v1``: named finite numeric features and an optional integer label."""

    features: Annotated[
        dict[FieldName, float], Field(min_length=1, max_length=TABULAR_MAX_FEATURES)
    ]
    label: NotRequired[Annotated[int, Field(ge=0, le=65535)] | None]


@with_config(_CONFIG)
class TextSampleV1(TypedDict):
    """``text-sample/v1``: one instruction/response pair for LLM fine-tuning.

    Length limits hold before and after sanitization (characters); empty text is rejected.
    """

    instruction: Annotated[str, StringConstraints(min_length=1, max_length=TEXT_INSTRUCTION_MAX)]
    response: Annotated[str, StringConstraints(min_length=1, max_length=TEXT_RESPONSE_MAX)]


@with_config(_CONFIG)
class SchemaRef(TypedDict):
    """Which payload schema a record carries (name and major version)."""

    name: Literal["image-sample", "tabular-sample", "text-sample"]
    version: Version1


@with_config(_CONFIG)
class ImageSchemaRef(TypedDict):
    """``schema`` of an image record."""

    name: Literal["image-sample"]
    version: Version1


@with_config(_CONFIG)
class TabularSchemaRef(TypedDict):
    """``schema`` of a tabular record."""

    name: Literal["tabular-sample"]
    version: Version1


@with_config(_CONFIG)
class TextSchemaRef(TypedDict):
    """``schema`` of a text record."""

    name: Literal["text-sample"]
    version: Version1


@with_config(_CONFIG)
class Signature(TypedDict):
    """Provenance: an Ed25519 signature over a Merkle root plus this record's inclusion proof.

    See :mod:`saip_ingestion.provenance` (RFC 8032 Ed25519, RFC 6962/9162 Merkle hashing).
    ``index < tree_size`` is checked by the inclusion-proof verification.
    """

    alg: Literal["ed25519-merkle-sha256"]
    key_id: KeyId
    tree_size: Annotated[int, Field(ge=1, le=MAX_TREE_SIZE)]
    index: Annotated[int, Field(ge=0, lt=MAX_TREE_SIZE)]
    path: Annotated[list[Hash32B64], Field(max_length=16)]
    root_sig: Sig64B64


@with_config(_CONFIG)
class ImageRecordV1(TypedDict):
    """A record whose payload is ``image-sample/v1``."""

    record_id: RecordId
    producer_id: ProducerId
    seq: Annotated[int, Field(ge=0, le=2**63 - 1)]
    #: producer time, milliseconds since the Unix epoch (UTC)
    ts: Annotated[int, Field(ge=0, le=2**53)]
    schema: ImageSchemaRef
    sig: Signature
    payload: Annotated[ImageSampleV1, AfterValidator(_image_shape)]


@with_config(_CONFIG)
class TabularRecordV1(TypedDict):
    """A record whose payload is ``tabular-sample/v1``."""

    record_id: RecordId
    producer_id: ProducerId
    seq: Annotated[int, Field(ge=0, le=2**63 - 1)]
    ts: Annotated[int, Field(ge=0, le=2**53)]
    schema: TabularSchemaRef
    sig: Signature
    payload: TabularSampleV1


@with_config(_CONFIG)
class TextRecordV1(TypedDict):
    """A record whose payload is ``text-sample/v1``."""

    record_id: RecordId
    producer_id: ProducerId
    seq: Annotated[int, Field(ge=0, le=2**63 - 1)]
    ts: Annotated[int, Field(ge=0, le=2**53)]
    schema: TextSchemaRef
    sig: Signature
    payload: TextSampleV1


AnyRecord = ImageRecordV1 | TabularRecordV1 | TextRecordV1


def _schema_tag(value: Any) -> str | None:
    ref = value.get("schema") if isinstance(value, dict) else None
    if not isinstance(ref, dict) or type(ref.get("version")) is not int:
        return None
    return f"{ref.get('name')}/v{ref.get('version')}"


Record = Annotated[
    Union[  # noqa: UP007 - tagged members
        Annotated[ImageRecordV1, Tag("image-sample/v1")],
        Annotated[TabularRecordV1, Tag("tabular-sample/v1")],
        Annotated[TextRecordV1, Tag("text-sample/v1")],
    ],
    Discriminator(
        _schema_tag,
        custom_error_type="unknown_schema",
        custom_error_message="unknown or missing schema name/version",
    ),
]

#: validates one record: ``RECORD_ADAPTER.validate_json(line)`` returns a plain (typed) dict
RECORD_ADAPTER: TypeAdapter[AnyRecord] = TypeAdapter(Record)
#: the image branch alone: the engine's fast path (the callable discriminator costs ~6 µs per
#: record); anything it rejects is re-validated by :data:`RECORD_ADAPTER` for the exact error
IMAGE_RECORD_ADAPTER: TypeAdapter[ImageRecordV1] = TypeAdapter(ImageRecordV1)

_KEY_END: Final = re.compile(rb'"[ \t\n\r]*:')


class _DuplicateKeyError(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                raise _DuplicateKeyError(k)
            seen.add(k)
    return out


def _key_count(record: Any) -> int:
    """Keys of a validated record: the objects are the record, ``schema``, ``sig``, ``payload``
    and (tabular) ``payload.features`` — nothing else in the schemas is an object."""
    payload = record["payload"]
    features = payload.get("features")
    n = len(record) + len(record["schema"]) + len(record["sig"]) + len(payload)
    return n + len(features) if isinstance(features, dict) else n


def duplicate_key(data: bytes, validated: Any) -> str | None:
    """The first key that occurs twice in one object of ``data`` (any level), else ``None``.

    JSON parsers disagree on duplicates (pydantic-core keeps the last, others the first; RFC 8259
    §4 leaves it undefined), so a signature over the last values says nothing about what another
    reader sees: duplicates are refused. Fast path: every key is a string followed by optional
    whitespace and ``:``, and quotes inside strings only add matches, so when the number of
    ``"<ws>:`` sequences equals the number of keys of the validated record (``extra="forbid"``:
    its keys are exactly the distinct keys of the input) there is no duplicate; otherwise an
    exact parse decides.
    """
    if len(_KEY_END.findall(data)) == _key_count(validated):
        return None
    try:
        json.loads(data, object_pairs_hook=_no_duplicates)
    except _DuplicateKeyError as exc:
        return str(exc)
    except ValueError:
        return None
    return None


def strict_json_loads(data: bytes | str) -> Any:
    """``json.loads`` that refuses duplicate keys at every level (``ValueError``)."""
    try:
        return json.loads(data, object_pairs_hook=_no_duplicates)
    except _DuplicateKeyError as exc:
        raise ValueError(f"duplicate key {str(exc)[:40]!r} in one object") from None


def canonical_json(record: Any) -> bytes:
    """The stored form of a validated record: pydantic-core compact JSON, fields in schema order.

    Floats are written in their shortest round-trip form, text as UTF-8 (never the producer's
    bytes: whitespace, escapes, key order and duplicates of the input are not kept). Validating
    it with :data:`RECORD_ADAPTER` gives the same record back.
    """
    name = record.get("schema", {}).get("name") if isinstance(record, dict) else None
    adapter: TypeAdapter[Any] = IMAGE_RECORD_ADAPTER if name == "image-sample" else RECORD_ADAPTER
    out: bytes = adapter.serializer.to_json(record)  # the core serializer, without the wrapper
    return out


#: payload type by ``"<name>/v<version>"``
PAYLOAD_MODELS: Final[Mapping[str, Any]] = {
    "image-sample/v1": ImageSampleV1,
    "tabular-sample/v1": TabularSampleV1,
    "text-sample/v1": TextSampleV1,
}

#: payload validators by ``"<name>/v<version>"`` (used by producers to build signing input)
PAYLOAD_ADAPTERS: Final[Mapping[str, TypeAdapter[Any]]] = {
    "image-sample/v1": TypeAdapter(Annotated[ImageSampleV1, AfterValidator(_image_shape)]),
    "tabular-sample/v1": TypeAdapter(TabularSampleV1),
    "text-sample/v1": TypeAdapter(TextSampleV1),
}


# --------------------------------------------------------------------------- JSON Schema / Avro

_NAMESPACE: Final = "saip.ingest.v1"


def json_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schemas by file name: one per payload schema plus the record envelope."""
    out: dict[str, dict[str, Any]] = {}
    for tag, model in PAYLOAD_MODELS.items():
        name, version = tag.split("/")
        schema = TypeAdapter(model).json_schema()
        schema["$id"] = f"https://saip.example/schemas/{name}.{version}.schema.json"
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        out[f"{name}.{version}.schema.json"] = schema
    record = TypeAdapter(Record).json_schema()
    record["$id"] = "https://saip.example/schemas/record.v1.schema.json"
    record["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    record["title"] = "saip ingestion record v1"
    out["record.v1.schema.json"] = record
    return out


def _unwrap(tp: Any) -> Any:
    while typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _avro_type(tp: Any, named: dict[str, Any]) -> Any:
    tp = _unwrap(tp)
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return ["null", _avro_type(args[0], named)]
        raise TypeError(f"unsupported union {tp!r}")
    if origin is Literal:
        values = typing.get_args(tp)
        if all(isinstance(v, str) for v in values):
            return "string"
        if all(isinstance(v, int) for v in values):
            return "int"
        raise TypeError(f"unsupported literal {tp!r}")
    if origin is list:
        return {"type": "array", "items": _avro_type(typing.get_args(tp)[0], named)}
    if origin is dict:
        return {"type": "map", "values": _avro_type(typing.get_args(tp)[1], named)}
    if is_typeddict(tp):
        return _avro_record(tp, named)
    simple = {str: "string", int: "long", float: "double", bool: "boolean", bytes: "bytes"}
    if tp in simple:
        return simple[tp]
    raise TypeError(f"no Avro mapping for {tp!r}")


def _avro_record(model: Any, named: dict[str, Any], *, name: str | None = None) -> Any:
    rec_name = name or model.__name__
    if rec_name in named:
        return f"{_NAMESPACE}.{rec_name}"
    named[rec_name] = True
    hints = typing.get_type_hints(model, include_extras=True)
    fields = []
    for attr, hint in hints.items():
        field: dict[str, Any] = {"name": attr}
        optional = attr not in model.__required_keys__
        if typing.get_origin(hint) is NotRequired:  # __required_keys__ misses it under PEP 563
            optional = True
            hint = typing.get_args(hint)[0]
        if attr == "payload" and name == "Record":
            field["type"] = [_avro_record(m, named) for m in PAYLOAD_MODELS.values()]
        elif attr == "schema" and name == "Record":
            field["type"] = _avro_record(SchemaRef, named)
        else:
            field["type"] = _avro_type(hint, named)
        if optional:
            field["default"] = None
        fields.append(field)
    doc = (model.__doc__ or "").strip().splitlines()
    out: dict[str, Any] = {"type": "record", "name": rec_name, "namespace": _NAMESPACE}
    if doc and name is None:
        out["doc"] = doc[0]
    out["fields"] = fields
    return out


def avro_schema() -> dict[str, Any]:
    """The Avro schema of one record (``record.v1.avsc``); ``payload`` is a union of payloads."""
    schema = _avro_record(ImageRecordV1, {}, name="Record")
    assert isinstance(schema, dict)
    schema["doc"] = (
        "saip ingestion record v1 (generated from saip_ingestion.schemas; do not edit by hand)"
    )
    return schema


_PARSED_AVRO: Any = None


def _parsed_avro() -> Any:
    global _PARSED_AVRO
    if _PARSED_AVRO is None:
        import fastavro

        _PARSED_AVRO = fastavro.parse_schema(avro_schema())
    return _PARSED_AVRO


def avro_encode(record: Mapping[str, Any]) -> bytes:
    """Encode a record dict (the JSON form) as Avro binary for a schema-bound Pub/Sub topic.

    The provenance signature covers a transport-independent encoding
    (:func:`saip_ingestion.provenance.leaf_data`), so it survives the Avro round trip.
    """
    import fastavro

    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, _parsed_avro(), dict(record))
    return buf.getvalue()


def avro_decode(data: bytes) -> dict[str, Any]:
    """Decode Avro binary back to the record dict (JSON form); raises ``ValueError`` on garbage."""
    import fastavro

    try:
        out = fastavro.schemaless_reader(io.BytesIO(data), _parsed_avro(), None)
    except Exception as exc:
        raise ValueError(f"not an Avro record v1: {type(exc).__name__}") from None
    if not isinstance(out, dict):
        raise ValueError("not an Avro record v1")
    return out


def _rendered() -> dict[str, str]:
    files = {
        name: json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        for name, schema in json_schemas().items()
    }
    files["record.v1.avsc"] = json.dumps(avro_schema(), indent=2, ensure_ascii=False) + "\n"
    return files


def default_schema_dir() -> Path:
    """``ingestion/schemas`` in a source checkout."""
    return Path(__file__).resolve().parents[2] / "schemas"


def export_schemas(directory: Path, *, check: bool = False) -> list[str]:
    """Write the JSON Schema and Avro files to ``directory``; with ``check``, compare only.

    Returns
    -------
    list[str]
        With ``check=False`` the files written; with ``check=True`` the stale or missing files
        (empty when everything is current).
    """
    stale: list[str] = []
    for name, text in _rendered().items():
        path = directory / name
        if check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
            continue
        directory.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        stale.append(name)
    return stale


def _main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("export", "check"):
        print("usage: python -m saip_ingestion.schemas export|check [DIR]", file=sys.stderr)
        return 2
    directory = Path(argv[1]) if len(argv) > 1 else default_schema_dir()
    names = export_schemas(directory, check=argv[0] == "check")
    if argv[0] == "check":
        if names:
            print(f"stale schema files in {directory}: {', '.join(names)}", file=sys.stderr)
            return 1
        return 0
    for name in names:
        print(directory / name)
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
