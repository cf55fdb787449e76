"""secure-ai-pipelines: the ``saip`` CLI and the end-to-end pipeline composing the four capability
packages (``saip_ingestion``, ``saip_encryption``, ``saip_poisoning``, ``saip_fl``)."""

__version__ = "0.1.0"
