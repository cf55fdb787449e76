"""Flower on real processes (saip_fl.deploy): who the TLS + SuperNode-auth SuperLink lets in.

One SuperLink (TLS with the run CA, ``--enable-supernode-auth``) is started for the module, with
node-0..2 registered through ``flwr supernode register``. Four real ``flower-supernode``
processes that must be turned away (unregistered key, plaintext, no key, other CA) start
concurrently; each refusal test checks one of them on BOTH sides: the SuperNode exits with an
error, and the SuperLink logs the refusal and gives it no node (none is online). After each
test, no process of that node is left (its process group and its children's groups are empty).
The last tests start the three registered SuperNodes and run the real app (saip_fl.apps, digits
MLP, one FedAvg round) with ``flwr run``.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from saip_fl import deploy
from saip_fl.deploy import DEFAULT_APP_DIR, LocalFederation
from saip_fl.pki import create_ca

pytestmark = pytest.mark.slow

NODES = ("node-0", "node-1", "node-2")
REFUSAL_TIMEOUT = 90.0


def _live_pids_in_groups(groups: set[int]) -> list[int]:
    return sorted(i.pid for i in deploy._all_procs() if i.pgid in groups and not i.zombie)


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFederation]:
    fed = LocalFederation(run_dir=tmp_path_factory.mktemp("fl-deploy") / "run", node_names=NODES)
    try:
        fed.start_superlink()
        fed.register_all(NODES)
        yield fed
    finally:
        left = fed.close()
        groups = set(fed.supervisor.process_groups)
        assert left == []
        assert _live_pids_in_groups(groups) == []


@contextlib.contextmanager
def _node_is_cleaned_up(fed: LocalFederation, name: str) -> Iterator[None]:
    """After the block: stop the node's tree and prove none of its process groups remains."""
    try:
        yield
    finally:
        if name in fed.supernodes:
            assert fed.stop_supernode(name) == []
            fed.supervisor.refresh()
            root = fed.supernodes[name].pid
            groups = {root} | {
                info.pgid
                for pid, info in fed.supervisor._seen.items()
                if pid in fed.supervisor._tree(root)
            }
            assert _live_pids_in_groups(groups) == []


def _plaintext_post(conn: http.client.HTTPConnection) -> None:
    conn.request("POST", "/v1/fleet/activate-node", body=b"{}")
    conn.getresponse()


@pytest.fixture(scope="module")
def refused(
    federation: LocalFederation, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[int | None, str]]:
    """Start the four SuperNodes that must be refused, concurrently (saves ~30 s), and wait for
    each to exit: name -> (exit code or None if it is still running, its log)."""
    other = create_ca(directory=tmp_path_factory.mktemp("other-ca"))
    federation.node_key("rogue")  # a valid P-384 key that is never registered
    federation.start_supernode("rogue", max_retries=1)
    federation.start_supernode("plain", insecure=True, authenticate=False, max_retries=1)
    federation.start_supernode("anonymous", authenticate=False, max_retries=1)
    federation.start_supernode(
        "pinned-elsewhere", authenticate=False, root_certificates=other.cert_path, max_retries=1
    )
    out = {}
    for name in ("rogue", "plain", "anonymous", "pinned-elsewhere"):
        code = federation.supernode_exit_code(name, timeout=REFUSAL_TIMEOUT)
        out[name] = (code, federation.supernodes[name].log.read_text(errors="replace"))
    return out


def test_unregistered_node_is_refused(
    federation: LocalFederation, refused: dict[str, tuple[int | None, str]]
) -> None:
    """Valid TLS, valid P-384 key, but the key was never registered: activation is refused."""
    with _node_is_cleaned_up(federation, "rogue"):
        code, log = refused["rogue"]
        assert code is not None, "an unregistered SuperNode must not stay connected"
        assert code != 0
        assert "Failed to activate SuperNode" in log
        superlink_log = (federation.logs / "superlink.log").read_text(errors="replace")
        assert "No SuperNode found with the given public key" in superlink_log
        assert 'activate-node HTTP/1.1" 412' in superlink_log
        nodes = federation.list_nodes()
        assert {int(n["node-id"]) for n in nodes} == set(federation.node_ids.values())
        assert all(n["status"] != "online" for n in nodes)  # nobody got in


def test_plaintext_connection_fails(
    federation: LocalFederation, refused: dict[str, tuple[int | None, str]]
) -> None:
    """A SuperNode with ``--insecure`` (plaintext HTTP) cannot talk to the TLS SuperLink."""
    with _node_is_cleaned_up(federation, "plain"):
        code, log = refused["plain"]
        assert code is not None
        assert code != 0
        assert "Starting insecure channel" in log
        assert "could not establish a connection to the SuperLink" in log
    # the same at the wire: a plaintext HTTP request gets no HTTP answer from the TLS port
    conn = http.client.HTTPConnection("127.0.0.1", federation.port, timeout=10)
    try:
        with pytest.raises((http.client.HTTPException, ConnectionError)):
            _plaintext_post(conn)
    finally:
        conn.close()


def test_node_without_auth_key_is_refused(
    federation: LocalFederation, refused: dict[str, tuple[int | None, str]]
) -> None:
    """TLS is fine but the node signs nothing: SuperNode authentication turns it away."""
    with _node_is_cleaned_up(federation, "anonymous"):
        code, log = refused["anonymous"]
        assert code is not None
        assert code != 0
        assert "All SuperNodes must be registered via the CLI" in log
        superlink_log = (federation.logs / "superlink.log").read_text(errors="replace")
        assert 'register-node HTTP/1.1" 412' in superlink_log


def test_node_trusting_another_ca_refuses_the_superlink(
    federation: LocalFederation, refused: dict[str, tuple[int | None, str]]
) -> None:
    """Server authentication: a node pinned to another CA does not accept our SuperLink."""
    with _node_is_cleaned_up(federation, "pinned-elsewhere"):
        code, log = refused["pinned-elsewhere"]
        assert code is not None
        assert code != 0
        assert "CERTIFICATE_VERIFY_FAILED" in log


@pytest.fixture(scope="module")
def online(federation: LocalFederation) -> LocalFederation:
    for i, name in enumerate(NODES):
        federation.start_supernode(name, partition_id=i, num_partitions=len(NODES))
    federation.wait_online(NODES)
    return federation


def test_registered_nodes_connect(online: LocalFederation) -> None:
    # exactly the three registered nodes are online; none of the refused ones ever was
    assert online.online_node_ids() == set(online.node_ids.values())
    for name in NODES:
        assert online.supervisor.returncode(f"supernode-{name}") is None
        # the SuperNode's Runtime API (SuperExec/ClientApp side) is TLS with the run certificate
        assert deploy._tls_ready(online.supernodes[name].runtime_port, online.pki.ca.cert_path)


def test_full_run_on_three_supernodes(online: LocalFederation, tmp_path: Path) -> None:
    """``flwr run`` of the real app: one FedAvg round over the three authenticated SuperNodes."""
    run = online.run_app(
        DEFAULT_APP_DIR,
        {"num-rounds": 1, "secagg.enabled": False},
        run_timeout=300,
        out_dir=tmp_path / "result",
    )
    assert run.status == "finished:completed"
    assert run.app_status == "ok"
    assert run.rounds_completed == 1
    metrics = json.loads((tmp_path / "result" / "metrics.json").read_text())
    assert metrics["rounds"][0]["accepted"] == len(NODES)  # every SuperNode's update arrived
    assert metrics["final"]["accuracy"] > 0.5  # 10 classes: chance is 0.1
    assert (tmp_path / "result" / "model.npz").stat().st_size > 0
    run_log = Path(str(run.log)).read_text(errors="replace")
    assert "Successfully installed saip-fl-deploy" in run_log


def test_sigterm_stops_every_process_group(tmp_path: Path) -> None:
    """``python -m saip_fl.deploy`` killed mid-start: exit 1, no process left behind."""
    env = dict(os.environ)
    proc = subprocess.Popen(
        [sys.executable, "-m", "saip_fl.deploy", "--run-dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    try:
        state: dict[str, object] = {}
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            files = list(tmp_path.glob("run-*/processes.json"))
            if files:
                with contextlib.suppress(ValueError, OSError):
                    state = json.loads(files[0].read_text())
                if len(state.get("process_groups", [])) >= 2:  # type: ignore[arg-type]
                    break  # SuperLink and its detached SuperExec are up
            time.sleep(0.2)
        assert proc.poll() is None, "deployment ended before it could be interrupted"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 1
    assert b"interrupted by SIGTERM" in err
    final = json.loads(next(tmp_path.glob("run-*/processes.json")).read_text())
    assert final["stopped"] is True
    assert _live_pids_in_groups(set(final["process_groups"])) == []
