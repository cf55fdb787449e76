"""Small structural interfaces the federated-learning package needs from other packages.

:mod:`saip_fl` does not import the encryption or poisoning packages; the ``saip`` layer composes
them through these protocols (structurally identical to ``saip_ingestion.protocols.Encryptor``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray


@runtime_checkable
class Encryptor(Protocol):
    """Envelope encryption of one object with ``context`` bound as additional authenticated data."""

    def encrypt(self, plaintext: bytes, *, context: Mapping[str, str]) -> bytes:
        """Return the envelope ciphertext of ``plaintext`` under ``context``."""
        ...


#: client-side data filter (e.g. a poisoning scan): ``(x, y) -> keep mask`` (bool, len(x))
ClientDataFilter = Callable[[NDArray[np.float32], NDArray[np.int64]], NDArray[np.bool_]]
