"""Local stand-ins start on 127.0.0.1, are recorded with their PIDs, and stop by PID."""

from __future__ import annotations

import json
import os
import socket
import urllib.request
from pathlib import Path

import pytest
from saip import devservices


def _alive(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_up_records_and_down_stops_by_pid(tmp_path: Path) -> None:
    run_dir = tmp_path / "svc"
    started = devservices.up(run_dir, ["moto"])
    moto = started["moto"]
    try:
        recorded = json.loads((run_dir / "services.json").read_text())
        assert recorded["moto"]["pid"] == moto.pid
        assert moto.url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(f"{moto.url}/moto-api/data.json", timeout=5) as resp:
            assert resp.status == 200
        # a second `up` reuses the running service instead of starting another
        again = devservices.up(run_dir, ["moto"])
        assert again["moto"].pid == moto.pid
    finally:
        stopped = devservices.down(run_dir)
    assert stopped == ["moto"]
    assert not _alive(moto.pid)
    assert not (run_dir / "services.json").exists()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", moto.port), timeout=1):
        pass


def test_unknown_service_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(devservices.ServiceError, match="unknown service 'redis'"):
        devservices.start("redis", tmp_path)


def test_moto_fixture_resets_state(moto_url: str) -> None:
    import boto3

    kms = boto3.client("kms", endpoint_url=moto_url, region_name="us-east-1")
    assert kms.list_keys()["Keys"] == []  # reset before this test
    kms.create_key()
    assert len(kms.list_keys()["Keys"]) == 1


def test_moto_iam_enforcement_can_be_switched_on(moto_iam: object) -> None:
    import boto3
    from botocore.exceptions import ClientError

    url = moto_iam.url  # type: ignore[attr-defined]
    kms = boto3.client("kms", endpoint_url=url, region_name="us-east-1")
    kms.list_keys()  # auth off during set-up
    moto_iam.enforce_after(0)  # type: ignore[attr-defined]
    with pytest.raises(ClientError) as err:
        kms.list_keys()  # the dummy credentials belong to no IAM user
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_pubsub_emulator_answers(pubsub_emulator: str) -> None:
    from google.cloud import pubsub_v1

    publisher = pubsub_v1.PublisherClient()
    topic = publisher.topic_path("saip-test", "fixture-check")
    publisher.create_topic(name=topic)
    assert any(t.name == topic for t in publisher.list_topics(project="projects/saip-test"))


def test_azurite_answers(azurite: object) -> None:
    from azure.storage.blob import BlobServiceClient

    client = BlobServiceClient.from_connection_string(azurite.connection_string)  # type: ignore[attr-defined]
    container = client.create_container("fixture-check")
    container.upload_blob("hello.txt", b"hi", overwrite=True)
    assert container.download_blob("hello.txt").readall() == b"hi"
    client.delete_container("fixture-check")
