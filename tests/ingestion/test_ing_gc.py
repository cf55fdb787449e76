"""Issue #12 item 4 (part): the cyclic GC is paused per batch and always restored."""

from __future__ import annotations

import gc
from typing import Any

import pytest
from saip_ingestion import engine as engine_mod

Env = Any


def _record(env: Env) -> bytes:
    p = env.producer("alpha")
    return env.line(p.sign([p.record(label=1)])[0])


def test_gc_is_restored_when_a_batch_fails(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = env.open()

    def boom(*_a: Any, **_k: Any) -> None:
        assert not gc.isenabled()
        raise OSError("disk full (test)")

    monkeypatch.setattr(engine, "_commit", boom)
    assert gc.isenabled()
    with pytest.raises(OSError, match="disk full"):
        env.ingest([_record(env)])
    assert gc.isenabled()


def test_gc_is_paused_during_a_batch_and_re_enabled_after(env: Env) -> None:
    seen: list[bool] = []
    engine = env.open()
    real = engine._commit

    def spy(*a: Any, **k: Any) -> None:
        seen.append(gc.isenabled())
        real(*a, **k)

    engine._commit = spy  # type: ignore[method-assign]
    assert env.ingest([_record(env)]) == [("accepted", None)]
    assert seen == [False]
    assert gc.isenabled()


def test_a_caller_that_disabled_gc_keeps_it_disabled(env: Env) -> None:
    gc.disable()
    try:
        with engine_mod.gc_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
