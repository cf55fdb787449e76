"""Fast record decoding with msgspec, generated from the pydantic schemas (one source).

:mod:`saip_ingestion.schemas` stays the only definition of a record. This module walks those
``TypedDict`` models once, at import, and builds msgspec ``Struct`` types (one per model,
``forbid_unknown_fields``, converted to plain dicts after decoding) with the same
constraints (``msgspec.Meta``): bounds (``ge``/``le``/``lt``), lengths, identifier patterns,
literals, optional fields. Anything in a model that has no exact msgspec equivalent raises
``TypeError`` at import — a new constraint can never be silently skipped by the fast path.

The fast path may only **accept**; it never decides a rejection. :func:`FastDecoder.decode`
returns the validated record (a plain dict equal to what ``RECORD_ADAPTER`` returns) or ``None``,
and on ``None`` the caller validates with pydantic, which gives the exact quarantine reason. So
the two paths accept the same inputs and reject them with the same reason as long as the fast
path accepts nothing pydantic refuses and returns the same values (differential property test:
``tests/ingestion/test_ing_fastdecode.py``). Where the two libraries differ, the generator or the
decoder closes the gap:

* **pattern anchors** — msgspec matches with Python ``re.search``, where ``$`` also matches
  before a final ``\\n``; pydantic-core's Rust regex does not. Patterns are rewritten to end in
  ``\\Z``.
* **unknown and duplicate keys** — the generated Structs refuse unknown fields; msgspec keeps
  the last of duplicated keys. In valid JSON (msgspec parsed it) a ``:`` occurs exactly once
  after every key and otherwise only inside strings, so the number of ``:`` bytes is at least
  the number of keys in the input. The decoder accepts only when it equals the number of keys
  of the decoded record (every object of a record is one of the models): then the input has no
  unknown and no repeated key at any level. Anything else (a ``:`` inside a string included)
  goes to pydantic and to the exact duplicate-key check (RFC 8259 §4 leaves duplicates
  undefined; they are refused).
* **key order** — pydantic returns each object in the schema's key order whatever the input's,
  and the stored record is the canonical re-serialisation of that dict. A ``Struct`` has its
  fields in declaration order, so its dict (``msgspec.structs.asdict``, nested models converted,
  absent ``NotRequired`` fields left out) is in schema order too and both paths store the same
  bytes. (A ``TypedDict`` kept the input's order and needed a re-ordering step: the Struct
  decode + conversion measured 6.6 µs against 7.4 µs per 64-feature image record.)
* **non-finite floats** — JSON has no NaN/Infinity literal, but ``1e400`` overflows to ``inf``;
  float fields carry ``ge=-DBL_MAX, le=DBL_MAX`` so ``inf``, ``-inf`` and NaN are refused.
* **post-validators** (``AfterValidator``, e.g. the image shape check) run on the decoded value
  and their return value replaces it, as in pydantic; a ``ValueError`` sends the record to
  pydantic. A list of pattern-constrained strings (the Merkle
  path) is checked the same way, with one ``all(map(re.search, items))`` pass (measured ≈ 2.5×
  cheaper than msgspec's per-item pattern call).
* **identifier patterns** — the patterns of plain string fields are checked after decoding,
  with the same compiled ``re.search`` msgspec would call, once per distinct value of a batch
  (:meth:`FastDecoder.decode_many`); patterns inside lists, dict keys or unions stay in msgspec.
* **strict integers** — msgspec decodes strictly by default (no ``"1"``, ``1.0`` or ``true``
  for an ``int``; ints are accepted for ``float`` as pydantic's strict mode does); the
  ``BeforeValidator`` that enforces this on ``Literal[1]`` in pydantic is therefore redundant.
"""

from __future__ import annotations

import re
import sys
import types
import typing
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Final, Literal, NotRequired, Union

import annotated_types as at
import msgspec
from pydantic import AfterValidator, BeforeValidator
from pydantic.fields import FieldInfo
from pydantic.types import StringConstraints
from typing_extensions import is_typeddict

from saip_ingestion import schemas

__all__ = ["FAST_DECODERS", "FastDecoder", "decode_any", "decode_any_many", "fast_type"]

_DBL_MAX: Final = sys.float_info.max
#: BeforeValidators whose check msgspec's strict decoding already makes (nothing else is allowed)
_IMPLIED_BY_STRICT: Final[frozenset[Callable[..., Any]]] = frozenset({schemas._exact_int})

#: post-validator: (path of keys from the record root, function)
#: annotated-types bounds and lengths → the msgspec.Meta argument of the same name
_BOUNDS: Final[dict[type, str]] = {
    at.Ge: "ge",
    at.Le: "le",
    at.Gt: "gt",
    at.Lt: "lt",
    at.MinLen: "min_length",
    at.MaxLen: "max_length",
}
_BOUND_TYPES: Final = tuple(_BOUNDS)

PostCheck = tuple[tuple[str, ...], Callable[[Any], Any]]
#: a string pattern checked after decoding: (path of keys from the record root, ``re`` search)
PatternCheck = tuple[tuple[str, ...], Callable[[str], Any]]


def _anchored(pattern: str) -> str:
    r"""``^…$`` with ``$`` → ``\Z``: Python's ``$`` also matches before a final newline."""
    if not (pattern.startswith("^") and pattern.endswith("$") and not pattern.endswith("\\$")):
        raise TypeError(f"pattern {pattern!r} must be anchored with ^…$")
    return pattern[:-1] + r"\Z"


def _meta_of(
    items: list[Any],
    meta: dict[str, Any],
    path: tuple[str, ...],
    post: list[PostCheck],
    deferred: list[PatternCheck] | None = None,
) -> None:
    for item in items:
        if isinstance(item, FieldInfo):
            if item.alias is not None or item.validation_alias is not None:
                raise TypeError(f"{path}: aliases have no fast-path mapping")
            _meta_of(list(item.metadata), meta, path, post, deferred)
        elif isinstance(item, _BOUND_TYPES):
            name = _BOUNDS[type(item)]
            meta[name] = getattr(item, name)
        elif isinstance(item, StringConstraints):
            if item.strip_whitespace or item.to_upper or item.to_lower or item.strict is False:
                raise TypeError(f"{path}: string transformations have no fast-path mapping")
            if item.pattern is not None and deferred is not None:
                deferred.append((path, re.compile(_anchored(str(item.pattern))).search))
            elif item.pattern is not None:
                meta["pattern"] = _anchored(str(item.pattern))
            if item.min_length is not None:
                meta["min_length"] = item.min_length
            if item.max_length is not None:
                meta["max_length"] = item.max_length
        elif isinstance(item, BeforeValidator) and item.func in _IMPLIED_BY_STRICT:
            continue
        elif isinstance(item, AfterValidator):
            post.append((path, item.func))  # type: ignore[arg-type]
        else:
            raise TypeError(f"{path}: no fast-path mapping for {item!r}")


def fast_type(
    tp: Any,
    *,
    path: tuple[str, ...] = (),
    post: list[PostCheck] | None = None,
    deferred: list[PatternCheck] | None = None,
) -> Any:
    """The msgspec type equivalent to the pydantic annotation ``tp`` (``TypeError`` if none).

    ``post`` collects the ``AfterValidator`` functions with their paths. With ``deferred``, the
    pattern of a string reached by object keys alone (not inside a list, a dict or a union) is
    collected there as ``(path, compiled search)`` instead of checked by msgspec; the caller
    must then check it (:meth:`FastDecoder.decode`, :meth:`FastDecoder.decode_many`).
    """
    post = [] if post is None else post
    if deferred is not None and any(k in ("[]", "{}", "{key}") for k in path):
        deferred = None  # only plain key paths are deferred (walked from the record root)
    meta: dict[str, Any] = {}
    while typing.get_origin(tp) is Annotated:
        args = typing.get_args(tp)
        tp = args[0]
        _meta_of(list(args[1:]), meta, path, post, deferred)
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):  # a branch's pattern stays with msgspec
        out: Any = Union[tuple(fast_type(a, path=path, post=post) for a in typing.get_args(tp))]  # noqa: UP007
    elif origin is Literal:
        out = tp
    elif origin is list:
        item = fast_type(typing.get_args(tp)[0], path=(*path, "[]"), post=post)
        pattern = _pattern_only(item)
        if pattern is not None:  # one C-level pass over the list: ~2.5x cheaper than per item
            post.append((path, _all_match(pattern)))
            item = str
        out = list[item]  # type: ignore[valid-type]
    elif origin is dict:
        key, value = typing.get_args(tp)
        out = dict[  # type: ignore[misc]
            fast_type(key, path=(*path, "{key}"), post=post),
            fast_type(value, path=(*path, "{}"), post=post),
        ]
    elif is_typeddict(tp):
        out = _fast_typeddict(tp, path, post, deferred)
    elif tp is float:
        meta.setdefault("ge", -_DBL_MAX)  # refuses inf, -inf and NaN (allow_inf_nan=False)
        meta.setdefault("le", _DBL_MAX)
        out = float
    elif tp in (int, str, type(None)):
        out = tp
    else:
        raise TypeError(f"{path}: no fast-path mapping for {tp!r}")
    return Annotated[out, msgspec.Meta(**meta)] if meta else out


def _pattern_only(tp: Any) -> str | None:
    """The pattern of ``Annotated[str, Meta(pattern=...)]`` with no other constraint, else None."""
    if typing.get_origin(tp) is not Annotated:
        return None
    base, *metas = typing.get_args(tp)
    if base is not str or len(metas) != 1 or not isinstance(metas[0], msgspec.Meta):
        return None
    meta = metas[0]
    others = ("min_length", "max_length", "ge", "le", "gt", "lt", "multiple_of", "tz")
    if any(getattr(meta, name, None) is not None for name in others):
        return None
    return meta.pattern


def _all_match(pattern: str) -> Callable[[Any], Any]:
    search = re.compile(pattern).search  # the same ``re.search`` msgspec applies per item

    def check(items: Any) -> Any:
        if not all(map(search, items)):
            raise ValueError("an item does not match its pattern")
        return items

    return check


def _fast_typeddict(
    model: Any,
    path: tuple[str, ...],
    post: list[PostCheck],
    deferred: list[PatternCheck] | None = None,
) -> Any:
    config = getattr(model, "__pydantic_config__", {})
    if (
        config.get("extra") != "forbid"
        or config.get("strict") is not True
        or config.get("allow_inf_nan") is not False
    ):
        raise TypeError(f"{model.__name__}: fast path needs extra=forbid, strict, no inf/nan")
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    nested: list[tuple[str, Any]] = []  # fields that are models themselves
    optional: list[str] = []
    for name, hint in typing.get_type_hints(model, include_extras=True).items():
        is_optional = typing.get_origin(hint) is NotRequired
        if is_optional:
            hint = typing.get_args(hint)[0]
        elif name not in model.__required_keys__:
            raise TypeError(f"{model.__name__}.{name}: optional without NotRequired")
        ftype = fast_type(hint, path=(*path, name), post=post, deferred=deferred)
        if _unannotated(ftype) in _TO_DICT:
            if is_optional:
                raise TypeError(f"{model.__name__}.{name}: an optional model has no fast mapping")
            nested.append((name, _unannotated(ftype)))
        if is_optional:
            fields.append((name, ftype | msgspec.UnsetType, msgspec.UNSET))
            optional.append(name)
        else:
            fields.append((name, ftype))
    if "[]" in path or "{}" in path:  # post-checks walk dict keys only
        raise TypeError(f"{model.__name__}: a model inside a list or dict has no fast mapping")
    # a Struct keeps the schema's field order (pydantic's output order) whatever the input's;
    # keyword-only, so an optional field may come before a required one; unknown fields refused
    struct = msgspec.defstruct(
        f"Fast{model.__name__}", fields, kw_only=True, forbid_unknown_fields=True
    )
    _TO_DICT[struct] = _to_dict(nested, optional)
    return struct


def _unannotated(tp: Any) -> Any:
    while typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    return tp


#: generated Struct type → its converter to the plain dict pydantic returns
_TO_DICT: Final[dict[Any, Callable[[Any], dict[str, Any]]]] = {}


def _to_dict(nested: list[tuple[str, Any]], optional: list[str]) -> Callable[[Any], Any]:
    """The plain dict of a decoded Struct: schema order, nested models converted, absent
    optional fields left out (as pydantic leaves out an absent ``NotRequired`` key)."""
    asdict = msgspec.structs.asdict
    unset = msgspec.UNSET
    inner = [(name, _TO_DICT[tp]) for name, tp in nested]
    if not optional and len(inner) == 3 and all(c is asdict for _, c in inner):
        # the record types: three flat nested models, no optional field (one Python frame)
        (n1, _), (n2, _), (n3, _) = inner

        def convert3(obj: Any) -> dict[str, Any]:
            out = asdict(obj)
            out[n1] = asdict(out[n1])
            out[n2] = asdict(out[n2])
            out[n3] = asdict(out[n3])
            return out

        return convert3
    if not optional and not inner:
        return asdict  # a flat model: msgspec's own C conversion

    def convert(obj: Any) -> dict[str, Any]:
        out = asdict(obj)
        for name, conv in inner:
            out[name] = conv(out[name])
        if optional:
            return {k: v for k, v in out.items() if v is not unset}
        return out

    return convert


def _key_count(record: Any) -> int:
    """Keys of a decoded record at every level (every object in a record is a model)."""
    n = 0
    stack = [record]
    while stack:
        obj = stack.pop()
        if isinstance(obj, dict):
            n += len(obj)
            stack.extend(v for v in obj.values() if isinstance(v, dict))
    return n


class FastDecoder:
    """Decode one record type; :meth:`decode` returns the record or ``None`` (ask pydantic).

    The identifier patterns of the record's plain fields (``record_id``, ``producer_id``,
    ``sig.key_id``, ``sig.root_sig``) are not checked inside msgspec, which calls Python's
    ``re`` once per string (measured ≈ 2.2 µs per image record for the four), but after
    decoding with the same compiled ``re.search`` on the same strings: per record in
    :meth:`decode`, once per distinct value of a whole batch in :meth:`decode_many` (one
    ``root_sig`` and one ``producer_id`` serve a Merkle batch of 256 records). Acceptance is
    unchanged: a string is accepted exactly when msgspec's pattern check would accept it
    (differential tests in ``tests/ingestion/test_ing_speed_batch.py``).

    Parameters
    ----------
    model:
        A pydantic ``TypedDict`` model of :mod:`saip_ingestion.schemas` (e.g. ``ImageRecordV1``).
    key_count:
        Number of keys of a decoded record at every level; the default walks the dicts.
    defer_patterns:
        ``False``: every pattern is checked inside msgspec (the reference the deferred checks
        are tested against).
    """

    def __init__(
        self,
        model: Any,
        *,
        key_count: Callable[[Any], int] = _key_count,
        defer_patterns: bool = True,
    ) -> None:
        self.post: list[PostCheck] = []
        self.patterns: list[PatternCheck] = []
        self.type = fast_type(
            model, post=self.post, deferred=self.patterns if defer_patterns else None
        )
        for path, _ in self.patterns:  # a post-check may replace a value: none may own a pattern
            if any(path[: len(p)] == p or p[: len(path)] == path for p, _f in self.post):
                raise TypeError(f"{path}: a pattern under a post-validated value")
        self._to_dict = _TO_DICT[self.type]
        self._decode = msgspec.json.Decoder(self.type, strict=True).decode
        self._key_count = key_count

    def _unchecked(self, data: bytes) -> Any:
        """The record if everything but the deferred patterns holds, else ``None``."""
        try:
            rec = self._to_dict(self._decode(data))
        except Exception:  # invalid, or e.g. RecursionError on deep nesting: pydantic decides
            return None
        for path, check in self.post:  # a value a check returns replaces the checked one
            # Any: the value at a path is a list or a scalar as often as a dict (the inferred
            # dict type is wrong there; a compiler that checks declared types would refuse it)
            parent: Any = None
            value: Any = rec
            for key in path:
                parent, value = value, value[key]
            try:
                new = check(value)
            except ValueError:
                return None
            if new is not value:
                if parent is None:
                    rec = new
                else:
                    parent[path[-1]] = new
        if data.count(b":") != self._key_count(rec):
            return (
                None  # unknown or repeated key somewhere (or a key-like string): pydantic decides
            )
        return rec

    def decode(self, data: bytes) -> Any:
        """The validated record (plain dicts, like pydantic's) or ``None`` if not certain."""
        rec = self._unchecked(data)
        if rec is None:
            return None
        for path, search in self.patterns:
            value = _at(rec, path)
            if value is not _ABSENT and not search(value):
                return None
        return rec

    def decode_many(self, datas: Sequence[bytes]) -> list[Any]:
        """:meth:`decode` of each item (same answers), the patterns checked per distinct value."""
        recs = [self._unchecked(d) for d in datas]
        ok = [r for r in recs if r is not None]
        for path, search in self.patterns:
            *inner, last = path  # models are never optional: only the last key may be absent
            parents = ok
            for key in inner:
                parents = [p[key] for p in parents]
            values = {p.get(last, _ABSENT) for p in parents}
            values.discard(_ABSENT)
            if all(map(search, values)):
                continue
            bad = {v for v in values if not search(v)}
            recs = [None if r is None or _at(r, path) in bad else r for r in recs]
            ok = [r for r in recs if r is not None]
        return recs


_ABSENT: Final = object()


def _at(rec: Any, path: tuple[str, ...]) -> Any:
    """The value at ``path`` of a decoded record (:data:`_ABSENT` for an absent optional key,
    which msgspec would not check either)."""
    for key in path:
        rec = rec.get(key, _ABSENT)
        if rec is _ABSENT:
            return rec
    return rec


def _image_keys(rec: Any) -> int:
    return len(rec) + len(rec["schema"]) + len(rec["sig"]) + len(rec["payload"])


#: decoders by ``"<name>/v<version>"``
FAST_DECODERS: Final[dict[str, FastDecoder]] = {
    "image-sample/v1": FastDecoder(schemas.ImageRecordV1, key_count=_image_keys),
    "tabular-sample/v1": FastDecoder(schemas.TabularRecordV1),
    "text-sample/v1": FastDecoder(schemas.TextRecordV1),
}

_DECODE_IMAGE: Final = FAST_DECODERS["image-sample/v1"].decode
_DECODE_TABULAR: Final = FAST_DECODERS["tabular-sample/v1"].decode
_DECODE_TEXT: Final = FAST_DECODERS["text-sample/v1"].decode
_DECODE_IMAGE_MANY: Final = FAST_DECODERS["image-sample/v1"].decode_many


def decode_any_many(datas: Sequence[bytes]) -> list[Any]:
    """:func:`decode_any` of each line of a batch (the same answers; image records' identifier
    patterns checked once per distinct value of the batch, :meth:`FastDecoder.decode_many`)."""
    recs = _DECODE_IMAGE_MANY(datas)
    for i, rec in enumerate(recs):
        if rec is None:
            recs[i] = _decode_other(datas[i])
    return recs


def _decode_other(data: bytes) -> Any:
    rec = None
    if b'"tabular-sample"' in data:
        rec = _DECODE_TABULAR(data)
    if rec is None and b'"text-sample"' in data:
        rec = _DECODE_TEXT(data)
    return rec


def decode_any(data: bytes) -> Any:
    """A record of any schema if its generated decoder accepts ``data``, else ``None``.

    Image first (the common case); the tabular or text decoder is tried only when its schema
    name occurs in the line. Only one decoder can accept a given line (``schema.name`` is a
    literal of each record type), and each accepts only what pydantic's tagged union accepts,
    with the same value; ``None`` leaves every decision, and its reason, to pydantic. The
    name test is a byte search, so a value may spell another schema's name (a text record
    whose instruction is ``tabular-sample``): a decoder that refuses passes on to the next.
    """
    rec = _DECODE_IMAGE(data)
    return rec if rec is not None else _decode_other(data)
