"""FAKE Firehose DirectPut client (tests only) that BUFFERS like the real service.

moto delivers each ``PutRecord`` to S3 immediately, which hides the property that matters for
idempotence: records sit in Firehose's buffer (up to the size/interval hints, or 24 h when the
destination is unavailable) and are invisible in S3 meanwhile. This fake keeps every record in
a buffer until :meth:`flush` writes them, concatenated, as one object into a real S3 bucket
(moto) under the delivery prefix — one object per flush, named in delivery order like
Firehose's ``<prefix>YYYY/MM/DD/HH/<stream>-<n>-<timestamp>-<uuid>`` objects.
"""

from __future__ import annotations

from typing import Any


class BufferingFirehoseFake:
    """A FAKE of the boto3 ``firehose`` client's ``put_record`` (buffering, manual flush)."""

    __test__ = False

    def __init__(self, *, s3: Any, bucket: str, prefix: str, stream: str) -> None:
        self.s3, self.bucket, self.prefix, self.stream = s3, bucket, prefix, stream
        self.buffer: list[bytes] = []
        self.delivered = 0

    def put_record(self, *, DeliveryStreamName: str, Record: dict[str, bytes]) -> dict[str, Any]:
        if DeliveryStreamName != self.stream:
            raise ValueError(f"unknown delivery stream {DeliveryStreamName}")
        self.buffer.append(bytes(Record["Data"]))
        return {"RecordId": f"fake-{len(self.buffer)}", "Encrypted": False}

    def flush(self) -> None:
        """Deliver the buffer as one S3 object (what Firehose does when a hint is reached)."""
        if not self.buffer:
            return
        self.delivered += 1
        name = f"{self.prefix}2026/11/29/12/{self.stream}-1-{self.delivered:06d}"
        self.s3.put_object(Bucket=self.bucket, Key=name, Body=b"".join(self.buffer))
        self.buffer = []
