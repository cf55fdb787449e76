"""Differential-privacy accounting and the "is this a meaningful guarantee?" check.

Two modes (see :class:`saip_fl.config.DPConfig`):

* **dpsgd** — example-level DP-SGD in each client (Abadi et al., CCS 2016). The noise multiplier
  is calibrated once for the whole run (``num_rounds × local_epochs`` epochs at Poisson sample rate
  ``batch_size / n_client``) with Opacus' RDP accountant (Mironov, CSF 2017), and ε is reported
  after every round for the steps spent so far.
* **user** — user-level DP (McMahan et al., ICLR 2018, DP-FedAvg): every client clips its update
  to norm ``C`` and adds ``N(0, σ²C²/m)`` noise so that a sum over ``m`` honest clients carries
  ``N(0, σ²C²)`` — the same guarantee as central noise, but compatible with SecAgg+ because no
  party ever sees an un-noised sum. Each client is in exactly one group per round (parallel
  composition), so the round is one subsampled Gaussian mechanism with rate ``fraction_fit``.

Notes
-----
The guarantee assumes the clients follow the protocol: a malicious member of a group can skip
its noise share, which lowers the group's noise to ``σC·sqrt((m-a)/m)`` for ``a`` such members.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from saip_fl.errors import PrivacyGuaranteeError

log = logging.getLogger(__name__)


def dpsgd_steps(n_examples: int, *, batch_size: int, epochs: int) -> tuple[float, int]:
    """Poisson sample rate and expected steps of DP-SGD for one client per round."""
    q = min(1.0, batch_size / max(n_examples, 1))
    return q, epochs * max(1, math.ceil(1 / q))


def dpsgd_noise_multiplier(
    *, target_epsilon: float, delta: float, sample_rate: float, steps: int
) -> float:
    """Smallest noise multiplier reaching ``target_epsilon`` after ``steps`` (Opacus RDP)."""
    from opacus.accountants.utils import get_noise_multiplier

    return float(
        get_noise_multiplier(
            target_epsilon=target_epsilon,
            target_delta=delta,
            sample_rate=sample_rate,
            steps=steps,
            accountant="rdp",
        )
    )


def epsilon(*, noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> float:
    """ε of ``steps`` compositions of the subsampled Gaussian mechanism (Opacus RDP accountant)."""
    if steps <= 0:
        return 0.0
    from opacus.accountants import RDPAccountant

    acc = RDPAccountant()
    acc.history = [(noise_multiplier, sample_rate, steps)]
    return float(acc.get_epsilon(delta=delta))


@dataclass
class PrivacyLedger:
    """Per-round (ε, δ) of a run, from one mechanism description.

    Parameters
    ----------
    noise_multiplier, sample_rate, steps_per_round, delta
        The subsampled Gaussian mechanism applied each round (worst-case client).
    """

    noise_multiplier: float
    sample_rate: float
    steps_per_round: int
    delta: float
    rounds: int = 0

    def step_round(self) -> float:
        """Account one more round; return ε so far."""
        self.rounds += 1
        return self.epsilon

    @property
    def epsilon(self) -> float:
        """ε after the rounds accounted so far."""
        return epsilon(
            noise_multiplier=self.noise_multiplier,
            sample_rate=self.sample_rate,
            steps=self.steps_per_round * self.rounds,
            delta=self.delta,
        )


def check_guarantee(
    *,
    epsilon_total: float,
    delta: float,
    num_records: int,
    max_epsilon: float,
    allow_weak: bool,
) -> str | None:
    """Refuse (or, with ``allow_weak``, warn loudly about) a guarantee that means nothing.

    A guarantee is meaningless when ε exceeds ``max_epsilon`` (e^10 ≈ 22,000× likelihood ratio)
    or δ ≥ 1/num_records (a mechanism that publishes one record outright satisfies it).

    Returns
    -------
    str or None
        The warning text when ``allow_weak`` let a weak guarantee through.

    Raises
    ------
    PrivacyGuaranteeError
        The guarantee is weak and ``allow_weak`` is false.
    """
    problems = []
    if not math.isfinite(epsilon_total) or epsilon_total > max_epsilon:
        problems.append(f"ε={epsilon_total:.3g} exceeds dp.max_epsilon={max_epsilon}")
    if delta >= 1.0 / max(num_records, 1):
        problems.append(f"δ={delta:g} is not below 1/n = 1/{num_records}")
    if not problems:
        return None
    text = (
        "differential privacy gives no meaningful guarantee: "
        + "; ".join(problems)
        + " (raise dp.noise_multiplier / lower rounds, or set dp.allow_weak=true to run anyway)"
    )
    if not allow_weak:
        raise PrivacyGuaranteeError(text)
    log.warning("!!! %s — running anyway because dp.allow_weak=true", text)
    return text
