"""saip_ingestion: secure ingestion of training records.

Modules (import what you need; this package root stays light so backends import fast):

* :mod:`saip_ingestion.schemas` — the one schema source (pydantic), JSON Schema / Avro export
* :mod:`saip_ingestion.provenance` — Ed25519 over RFC 6962 Merkle batches, registry, anti-replay
* :mod:`saip_ingestion.sanitize` — text sanitization with an audit trail
* :mod:`saip_ingestion.engine` — :class:`~saip_ingestion.engine.IngestEngine`, export to npz
* :mod:`saip_ingestion.quarantine` — encrypted dead-letter store and reason codes
* :mod:`saip_ingestion.health` — per-producer health (rejections, duplicates, label drift)
* :mod:`saip_ingestion.producer` — the reference producer with labelled test attacks
* :mod:`saip_ingestion.backends` — ``open_backend(name, **options)``; ``local`` built in

Format and reason codes: ``docs/ingestion-format.md``.
"""
