"""The image build's guards, without a container engine (these run in ``make test``).

``containers/ctr.py`` decides which wheels enter the images: only the versions of the tested
``.venv``, never a CUDA/NVIDIA wheel, the saip wheel in its own layer; and it decides whether
the SuperLink refused plaintext. Fake wheel files (empty files with wheel names) stand in for
pip's output here; the real build is exercised by ``test_containers_deploy.py``.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from tests.containers._ctr import ROOT, load

ctr = load()

PINS = {"flwr": "1.42.0", "torch": "2.13.0+cpu", "numpy": "2.4.0", "ray": "2.55.1"}
GOOD = [
    "flwr-1.42.0-py3-none-any.whl",
    "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl",
    "numpy-2.4.0-cp311-cp311-manylinux_2_28_x86_64.whl",
    "ray-2.55.1-cp311-cp311-manylinux2014_x86_64.whl",
    "secure_ai_pipelines-0.1.0-py3-none-any.whl",
]


def _wheels(tmp_path: Path, names: list[str]) -> list[Path]:
    out = []
    for name in names:
        path = tmp_path / "wheelhouse" / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(name.encode())
        out.append(path)
    return out


@pytest.mark.parametrize(
    "bad",
    [
        "nvidia_cublas_cu12-12.8.4.1-py3-none-manylinux_2_27_x86_64.whl",
        "triton-3.5.0-cp311-cp311-manylinux_2_27_x86_64.whl",
        "torch-2.13.0-cp311-cp311-manylinux_2_28_x86_64.whl",  # PyPI's default torch is CUDA
    ],
)
def test_gpu_wheels_are_refused(tmp_path: Path, bad: str) -> None:
    wheels = _wheels(tmp_path, [bad, *GOOD])
    pins = {**PINS, "nvidia-cublas-cu12": "12.8.4.1", "triton": "3.5.0", "torch": "2.13.0"}
    with pytest.raises(ctr.ContainerError, match="GPU/CUDA"):
        ctr.select_wheels(wheels, pins=pins, context=tmp_path / "ctx")


def test_a_version_other_than_the_venvs_is_refused(tmp_path: Path) -> None:
    names = [n.replace("numpy-2.4.0", "numpy-2.4.1") for n in GOOD]
    with pytest.raises(ctr.ContainerError, match=r"numpy-2\.4\.1.*not the \.venv's \(2\.4\.0\)"):
        ctr.select_wheels(_wheels(tmp_path, names), pins=PINS, context=tmp_path / "ctx")


def test_an_unpinned_wheel_is_refused(tmp_path: Path) -> None:
    wheels = _wheels(tmp_path, [*GOOD, "evil-1.0-py3-none-any.whl"])
    with pytest.raises(ctr.ContainerError, match=r"evil-1\.0"):
        ctr.select_wheels(wheels, pins=PINS, context=tmp_path / "ctx")


def test_no_project_wheel_is_refused(tmp_path: Path) -> None:
    wheels = _wheels(tmp_path, GOOD[:-1])
    with pytest.raises(ctr.ContainerError, match="no secure_ai_pipelines wheel"):
        ctr.select_wheels(wheels, pins=PINS, context=tmp_path / "ctx")


def test_context_holds_only_wheels_and_hash_locks(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "stale.key").write_text("left from an earlier run")  # must not survive
    ctr.select_wheels(_wheels(tmp_path, GOOD), pins=PINS, context=ctx)
    digest = {d: ctr._write_lock(ctx / d) for d in ("deps", "project")}
    files = sorted(str(p.relative_to(ctx)) for p in ctx.rglob("*") if p.is_file())
    assert all(f.endswith((".whl", "requirements.lock")) for f in files), files
    assert not any(f.startswith(("deps/ray-", "project/ray-")) for f in files)  # EXCLUDED
    assert "project/secure_ai_pipelines-0.1.0-py3-none-any.whl" in files
    lock = (ctx / "deps" / "requirements.lock").read_text().splitlines()
    expected = hashlib.sha256(GOOD[1].encode()).hexdigest()
    assert f"torch==2.13.0+cpu --hash=sha256:{expected}" in lock
    assert all(re.fullmatch(r"[a-z0-9-]+==\S+ --hash=sha256:[0-9a-f]{64}", line) for line in lock)
    assert (
        digest["deps"] == hashlib.sha256((ctx / "deps/requirements.lock").read_bytes()).hexdigest()
    )


@pytest.mark.parametrize(
    ("line", "ok"),
    [
        ("tls_http_status=200 plaintext_http_status=RemoteDisconnected", True),
        ("tls_http_status=404 plaintext_http_status=ConnectionResetError", True),
        # a plaintext HTTP answer, even an error page, means the port speaks plaintext
        ("tls_http_status=200 plaintext_http_status=400", False),
        # TLS failing too proves nothing about plaintext (the probe could not reach it at all)
        (
            "tls_http_status=SSLCertVerificationError plaintext_http_status=RemoteDisconnected",
            False,
        ),
        ("", False),
    ],
)
def test_plaintext_probe_verdict(line: str, ok: bool) -> None:
    assert ctr._probe_ok(line) is ok


def test_containerfiles_have_no_syntax_line_no_copy_and_a_non_root_user() -> None:
    files = sorted((ROOT / "containers").glob("*/Containerfile"))
    assert {f.parent.name for f in files} == {"runtime", "superlink", "supernode", "ingest"}
    for path in files:
        text = path.read_text()
        assert not re.search(r"^#\s*syntax\s*=", text, re.M | re.I), path  # pulls a frontend
        assert not re.search(r"^\s*(COPY|ADD)\b", text, re.M), path  # nothing copied into layers
        assert re.search(r"^USER 10001:10001$", text, re.M), path


# --------------------------------------------------------------------------------------------
# compose.yaml: the same deployment for users with a registry
# --------------------------------------------------------------------------------------------


def _compose() -> dict:
    import yaml

    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def test_compose_services_are_hardened_and_offline() -> None:
    compose = _compose()
    assert compose["networks"]["fl"]["internal"] is True
    for name, svc in compose["services"].items():
        assert svc["read_only"] is True, name
        assert svc["user"] == "10001:10001", name
        assert svc["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in svc["security_opt"], name
        assert "ports" not in svc, name  # nothing published on the host
        for volume in svc.get("volumes", []):
            if volume.endswith(":rw"):
                assert volume.endswith(":/var/lib/saip/sealed:rw"), (name, volume)
            else:
                assert volume.endswith(":ro"), (name, volume)


def test_compose_gives_each_node_only_its_own_key_and_a_distinct_partition() -> None:
    services = _compose()["services"]
    nodes = sorted(n for n in services if n.startswith("node-"))
    assert nodes == [f"node-{i}" for i in range(6)]
    for i, name in enumerate(nodes):
        keys = [v for v in services[name]["volumes"] if ".key:" in v]
        assert all(f"node-{i}" in v for v in keys), keys
        assert f"partition-id={i} num-partitions=6" in services[name]["command"]
    assert not any(
        "server.key" in v and "superlink" in v for n in nodes for v in services[n]["volumes"]
    )
    assert "--insecure" not in json.dumps(services)


def test_compose_pki_writes_every_file_compose_mounts(tmp_path: Path) -> None:
    out = tmp_path / "compose"
    ctr.compose_pki(out)
    for name, svc in _compose()["services"].items():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./.run/compose/"):
                assert (out / source.removeprefix("./.run/compose/")).exists(), (name, source)
    config = (out / "cli" / "config.toml").read_text()
    assert "insecure" not in config
    assert 'root-certificates = "/run/saip/cli/ca.pem"' in config
    with pytest.raises(ctr.ContainerError, match="not empty"):
        ctr.compose_pki(out)  # never overwrites keys
