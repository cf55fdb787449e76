"""A Ray-free local engine: Flower's own ServerApp and ClientApp joined by an in-process Grid.

Flower 1.42's simulation runtime needs Ray, whose start-up (≈ 10 s) and worker spawning (≈ 25 s
in round 1 on this class of machine) dominate a small run. :class:`LocalGrid` implements
Flower's :class:`~flwr.serverapp.Grid` directly: ``send_and_receive`` hands each message to the
destination node's :class:`~flwr.clientapp.ClientApp` (with that node's persistent
:class:`~flwr.app.Context`, which SecAgg+'s client mod keeps its protocol state in) on a thread
pool, and returns the replies as soon as they exist — no polling loop. Client errors become
Flower ``Error`` replies, exactly as the simulation runtime reports them. The ServerApp, the
workflows, SecAgg+ and the ClientApp mods are unchanged, so the same code runs here, under Ray
and in deployment.

:func:`run_local` also owns interruption: SIGINT/SIGTERM set a stop event that every pending
``send_and_receive`` checks (within 0.2 s), so the server and all group threads unwind with
:class:`~saip_fl.errors.RunInterruptedError` instead of finishing the round. Clients run on
threads of this process, so nothing can outlive the run.

Notes
-----
Threads share one interpreter: PyTorch releases the GIL inside its kernels, which gives some
parallelism to client training on small models; this is an engine for local runs, tests and
benchmarks, not a substitute for separate SuperNodes (no isolation between clients).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from types import FrameType
from typing import Any, TypeVar
from uuid import uuid4

from flwr.app import ArrayRecord, Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.proto.node_pb2 import NodeInfo
from flwr.serverapp import Grid, ServerApp
from flwr.supercore.run import Run, RunNotRunningException
from flwr.supercore.task_identity import TaskIdentity

from saip_fl.errors import RunInterruptedError

log = logging.getLogger(__name__)

_T = TypeVar("_T")

_POLL = 0.2
#: first node id; node ``i`` (partition ``i``) is ``NODE_BASE + i``
NODE_BASE = 1000


class LocalGrid(Grid):
    """In-process Grid over ``client_app`` and one persistent context per node.

    Parameters
    ----------
    client_app
        The ClientApp every node runs.
    run_config
        Flower ``run_config`` given to every node.
    num_nodes
        Number of nodes; node ``i`` gets ``node_config`` ``partition-id = i``.
    workers
        Threads running client work concurrently.
    run_id
        Run identifier written into messages.
    """

    def __init__(
        self,
        client_app: ClientApp,
        *,
        run_config: dict[str, Any],
        num_nodes: int,
        workers: int = 2,
        run_id: int = 1,
    ) -> None:
        self._app = client_app
        self._run = Run.create_empty(run_id)
        self.stop = threading.Event()
        self._closed = False
        self._contexts: dict[int, Context] = {
            NODE_BASE + i: Context(
                run_id=run_id,
                node_id=NODE_BASE + i,
                node_config={"partition-id": i, "num-partitions": num_nodes},
                state=RecordDict(),
                run_config=dict(run_config),
            )
            for i in range(num_nodes)
        }
        self._locks = {nid: threading.Lock() for nid in self._contexts}
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="fl-node")

    # -- Grid API
    def set_run(self, run: Run) -> None:
        """Set the run (kept for API compatibility)."""
        self._run = run

    @property
    def run(self) -> Run:
        """The current run."""
        return self._run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        """Build a message to ``dst_node_id`` (deprecated in Flower; kept for the ABC)."""
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        """IDs of all nodes (raises once the grid is closed, which ends Flower's poller)."""
        if self._closed:
            raise RunNotRunningException("local grid closed")
        return list(self._contexts)

    def get_nodes(self) -> Iterable[NodeInfo]:
        """Node descriptions."""
        return [NodeInfo(node_id=nid) for nid in self._contexts]

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Not supported: this grid answers synchronously through :meth:`send_and_receive`."""
        raise NotImplementedError("LocalGrid only supports send_and_receive")

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """Not supported (see :meth:`push_messages`)."""
        raise NotImplementedError("LocalGrid only supports send_and_receive")

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Run every message on its node; return the replies received within ``timeout``."""
        self._check_stop()
        futures: list[Future[Message]] = []
        for msg in messages:
            meta = msg.metadata.__dict__
            meta["_message_id"] = str(uuid4())
            meta["_run_id"] = self._run.run_id
            meta["_src_node_id"] = SUPERLINK_NODE_ID
            if msg.metadata.dst_node_id not in self._contexts:
                raise ValueError(f"unknown node {msg.metadata.dst_node_id}")
            # a node gets its own copy, as over the wire (the server may share one content
            # RecordDict between messages, and SecAgg+'s client mod consumes keys from it)
            futures.append(self._pool.submit(self._handle, copy_message(msg)))
        deadline = None if timeout is None else time.monotonic() + timeout
        pending = set(futures)
        while pending:
            self._check_stop(pending)
            left = _POLL if deadline is None else min(_POLL, deadline - time.monotonic())
            if left <= 0:
                break
            _, pending = wait(pending, timeout=left, return_when=FIRST_COMPLETED)
        for f in pending:
            f.cancel()
        return [f.result() for f in futures if f.done() and not f.cancelled()]

    # -- internals
    def _check_stop(self, pending: Iterable[Future[Message]] = ()) -> None:
        if self.stop.is_set():
            for f in pending:
                f.cancel()
            raise RunInterruptedError("the run was interrupted")

    def _handle(self, msg: Message) -> Message:
        nid = msg.metadata.dst_node_id
        with self._locks[nid]:
            ctx = self._contexts[nid]
            try:
                reply = self._app(message=msg, context=ctx)
            except Exception as exc:  # reported to the server as Flower does, never raised here
                log.debug("node %s raised %s: %s", nid, type(exc).__name__, exc)
                reply = Message(
                    Error(
                        code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION,
                        reason=f"{type(exc).__name__}:<'{exc}'>",
                    ),
                    reply_to=msg,
                )
        reply.metadata.__dict__["_message_id"] = str(uuid4())
        return reply

    def close(self) -> None:
        """Stop accepting work; cancel what has not started."""
        self._closed = True
        self.stop.set()
        self._pool.shutdown(wait=True, cancel_futures=True)


def _shallow(obj: _T) -> _T:
    new = object.__new__(type(obj))
    new.__dict__.update(obj.__dict__)
    return new


def copy_message(msg: Message) -> Message:
    """A copy of ``msg`` sharing nothing mutable with it, as a node receives it over the wire.

    The server may send one content ``RecordDict`` in several messages, and SecAgg+'s client mod
    pops keys from the records it receives. ``copy.deepcopy`` walks every record's internals
    (≈ 55 µs per SecAgg+ message); every leaf a record holds is immutable (``bytes``, ``str``,
    numbers, tuple shapes), so new containers down to the lists and ``Array`` objects are enough
    (≈ 5 µs): the message, its metadata and error, the ``RecordDict``, each record and its
    entry dict, every list value, and every ``Array``.
    """
    new = _shallow(msg)
    new.__dict__["_metadata"] = _shallow(msg.metadata)
    if msg.__dict__["_error"] is not None:
        new.__dict__["_error"] = _shallow(msg.__dict__["_error"])
    content: RecordDict | None = msg.__dict__["_content"]
    if content is not None:
        records = _shallow(content)
        records.__dict__["_data"] = {k: _copy_record(r) for k, r in content.items()}
        new.__dict__["_content"] = records
    return new


def _copy_record(record: _T) -> _T:
    new = _shallow(record)
    data = dict(record.__dict__["_data"])
    if isinstance(record, ArrayRecord):
        for key, array in data.items():
            data[key] = _shallow(array)
    else:  # ConfigRecord / MetricRecord: scalars, or lists of scalars
        for key, value in data.items():
            if type(value) is list:
                data[key] = list(value)
    new.__dict__["_data"] = data
    return new


@contextmanager
def server_identity(run_id: int) -> Iterator[None]:
    """Stamp server-created messages as the SuperLink's (as Flower's ``start_grid`` does)."""
    saved = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)
    TaskIdentity.task_id = 1
    TaskIdentity.run_id = run_id
    TaskIdentity.node_id = SUPERLINK_NODE_ID
    try:
        yield
    finally:
        TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = saved


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT/SIGTERM set ``stop`` and raise KeyboardInterrupt (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()
        raise KeyboardInterrupt(signal.Signals(signum).name)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def run_local(
    server_app: ServerApp,
    client_app: ClientApp,
    *,
    server_context: Context,
    num_nodes: int,
    workers: int = 2,
) -> None:
    """Run ``server_app`` against ``num_nodes`` in-process ``client_app`` nodes.

    Raises
    ------
    KeyboardInterrupt
        SIGINT or SIGTERM arrived; every client thread has stopped when this propagates.
    """
    grid = LocalGrid(
        client_app,
        run_config=dict(server_context.run_config),
        num_nodes=num_nodes,
        workers=workers,
        run_id=server_context.run_id or 1,
    )
    try:
        with server_identity(grid.run.run_id), _stop_on_signals(grid.stop):
            try:
                server_app(grid, server_context)
            except RunInterruptedError:
                raise KeyboardInterrupt("interrupted") from None
    finally:
        grid.close()
