"""Ingestion backends behind :class:`RecordStream` / :class:`ObjectStore`, and their factory.

Contract between the core and the backend modules
-------------------------------------------------
Each backend module ``saip_ingestion.backends.<name>`` (``local``, ``aws``, ``gcp``, ``azure``)
exposes::

    def open_backend(**options: Any) -> tuple[RecordStream, ObjectStore]: ...

* ``options`` are keyword-only settings, validated eagerly (``ValueError``/``TypeError`` naming
  the option at start-up). The CLI passes the options it was given and omits the others:
  ``data_dir`` (Path; always passed), ``endpoint_url``, ``region``, ``stream``, ``bucket``.
  A backend ignores nothing silently: an option it does not support raises ``ValueError``,
  except ``data_dir``, which every backend accepts (cloud backends may keep local state there).
* The returned stream delivers raw record bytes (one serialized record per
  :class:`StreamMessage`); ``checkpoint`` is called only after the durable write.
* The returned store's ``put`` is idempotent: putting a key that already exists with the same
  logical content is a no-op (the engine derives keys deterministically, so re-processing after a
  crash writes the same keys).
* Credentials come from the SDK's default chain, never from options.

:func:`open_backend` imports the module lazily, so the core never imports boto3, azure or google.
"""

from __future__ import annotations

import importlib
from typing import Any, Final

from saip_ingestion.backends.base import ObjectStore, RecordStream, StreamMessage

__all__ = ["BACKENDS", "ObjectStore", "RecordStream", "StreamMessage", "open_backend"]

#: the backend names ``open_backend`` accepts
BACKENDS: Final = ("local", "aws", "gcp", "azure")


def open_backend(name: str, **options: Any) -> tuple[RecordStream, ObjectStore]:
    """Open the ``name`` backend and return its stream and object store.

    Parameters
    ----------
    name:
        One of :data:`BACKENDS`.
    **options:
        Keyword-only backend settings (see the module docstring).

    Raises
    ------
    ValueError
        Unknown backend name, or a backend rejected an option.
    """
    if name not in BACKENDS:
        raise ValueError(f"unknown ingestion backend {name!r} (choose from {', '.join(BACKENDS)})")
    try:
        module = importlib.import_module(f"saip_ingestion.backends.{name}")
    except ModuleNotFoundError as exc:
        raise ValueError(f"ingestion backend {name!r} is not available: {exc}") from None
    opener = getattr(module, "open_backend", None)
    if not callable(opener):
        raise ValueError(f"ingestion backend module {module.__name__} has no open_backend()")
    stream, store = opener(**options)
    if not isinstance(stream, RecordStream) or not isinstance(store, ObjectStore):
        raise TypeError(f"backend {name!r} returned objects that do not satisfy the protocols")
    return stream, store
