"""Randomness that privacy depends on: DP noise and DP sampling drawn from the operating system.

Differential privacy only holds if nobody but the client can predict its noise. A generator
seeded from a run setting (``seed``, the round, the partition id) is known to the server that
chose those settings, which regenerates the noise and subtracts it. :class:`NoiseSource` therefore
draws from a keystream of AES-256 in CTR mode under a fresh key from ``os.urandom`` (a
cryptographically secure generator, as NIST SP 800-90A's CTR_DRBG) and turns it into Gaussian
samples by Box–Muller. Like Opacus' ``secure_mode`` it sums ``2n = 4`` normal draws per output
and divides by 2, which defeats the floating-point attacks on the least significant bits of
Gaussian samples (Holohan & Braghin, "Secure Random Sampling in Differential Privacy",
ESORICS 2021, §5.1; Mironov, CCS 2012).

A fixed seed is available only through :meth:`NoiseSource.insecure_for_tests`; the configuration
field that selects it (``dp.insecure_noise_seed``) is refused by the ``saip fl`` CLI.
"""

from __future__ import annotations

import os
import threading

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from numpy.typing import NDArray

_U53 = float(2**53)


class NoiseSource:
    """Gaussian noise and Bernoulli sampling from a CSPRNG (or, for tests only, a fixed seed).

    Use :meth:`secure` in every real run; each instance has its own random 256-bit key.
    """

    def __init__(self, *, _key: bytes | None = None, _seed: int | None = None) -> None:
        if (_key is None) == (_seed is None):
            raise TypeError("use NoiseSource.secure() or NoiseSource.insecure_for_tests(seed)")
        self._lock = threading.Lock()
        self._seeded = np.random.default_rng(_seed) if _seed is not None else None
        if _key is not None:
            if len(_key) != 32:
                raise ValueError("the noise key must be 32 bytes")
            self._enc = Cipher(algorithms.AES(_key), modes.CTR(bytes(16))).encryptor()

    @classmethod
    def secure(cls) -> NoiseSource:
        """A source keyed by 32 fresh bytes from ``os.urandom`` (the only mode for real runs)."""
        return cls(_key=os.urandom(32))

    @classmethod
    def insecure_for_tests(cls, seed: int) -> NoiseSource:
        """A reproducible source: whoever knows ``seed`` can remove the noise. Tests only."""
        return cls(_seed=seed)

    @property
    def is_secure(self) -> bool:
        """``True`` unless this source was built from a fixed seed."""
        return self._seeded is None

    def uniform(self, n: int) -> NDArray[np.float64]:
        """``n`` independent uniforms in ``(0, 1)`` with 53 random bits each."""
        if self._seeded is not None:
            return 1.0 - self._seeded.random(n)  # (0, 1]
        with self._lock:
            raw = self._enc.update(bytes(8 * n))
        bits = np.frombuffer(raw, dtype=np.uint64) >> np.uint64(11)
        return (bits.astype(np.float64) + 0.5) / _U53

    def _normal(self, n: int) -> NDArray[np.float64]:
        half = (n + 1) // 2
        u = self.uniform(2 * half)
        r = np.sqrt(-2.0 * np.log(u[:half]))
        theta = 2.0 * np.pi * u[half:]
        return np.concatenate([r * np.cos(theta), r * np.sin(theta)])[:n]

    def gaussian(self, shape: tuple[int, ...], std: float) -> NDArray[np.float64]:
        """Samples of ``N(0, std²)``: the mean of four normals scaled back (Opacus secure mode)."""
        n = int(np.prod(shape)) if shape else 1
        if std == 0:
            return np.zeros(shape)
        draws = self._normal(4 * n).reshape(4, n).sum(axis=0) / 2.0
        out: NDArray[np.float64] = (std * draws).reshape(shape)
        return out

    def bernoulli(self, n: int, rate: float) -> NDArray[np.bool_]:
        """``n`` independent coin flips with probability ``rate`` (Poisson subsampling)."""
        return self.uniform(n) < rate
