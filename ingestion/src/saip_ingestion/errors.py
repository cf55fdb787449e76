"""Error types of :mod:`saip_ingestion` (one per boundary)."""

from __future__ import annotations


class IngestError(Exception):
    """Ingestion could not run: bad configuration, unreadable state, a failed backend write.

    A record that is merely invalid never raises: it is quarantined with a reason code.
    """


class ProvenanceError(IngestError):
    """A producer key or the producer registry is missing, malformed or inconsistent."""


class QuarantineError(IngestError):
    """A quarantine entry is unknown or cannot be read (decryption failures included)."""


class FencedBatchError(IngestError):
    """A scale-out stream refused one batch's commit point: another consumer owns some of its
    messages now (a lapsed lease, a stolen partition, a duplicate delivery). Nothing of the
    batch was published. :meth:`IngestEngine.run <saip_ingestion.engine.IngestEngine.run>`
    rewinds to its journal and hands the batch's messages back to the stream
    (``reject``: redelivered, or dropped where another consumer now reads them)."""
