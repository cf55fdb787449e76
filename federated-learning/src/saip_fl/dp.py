"""Differential-privacy accounting and the "is this a meaningful guarantee?" check.

Two modes (see :class:`saip_fl.config.DPConfig`):

* **dpsgd** — example-level DP-SGD in each client (Abadi et al., CCS 2016). The noise multiplier
  is calibrated once for the whole run (``num_rounds × local_epochs`` epochs at Poisson sample rate
  ``batch_size / n_client``) with Opacus' RDP accountant (Mironov, CSF 2017), and ε is reported
  after every round for the steps spent so far.
* **user** — user-level DP (McMahan et al., ICLR 2018, DP-FedAvg): every client clips its update
  to norm ``C``. Under SecAgg+ each client adds a *share* ``N(0, σ²C²/t)`` where ``t`` is the
  reconstruction threshold, so the sum over any ``≥ t`` surviving members of a group carries at
  least ``N(0, σ²C²)`` (distributed noise, Kairouz et al., ICML 2021 "The Distributed Discrete
  Gaussian Mechanism"); without SecAgg+ the server sees each update, so each client adds the full
  ``N(0, σ²C²)``. Each client is in exactly one group per round (parallel composition), so the
  round is one subsampled Gaussian mechanism with rate ``fraction_fit``. :func:`user_level_plan`
  refuses, at start-up, settings whose aggregate noise would drown the signal (the run could not
  train) or push honest coordinates outside the SecAgg+ clipping range.

Noise and sampling come from :class:`saip_fl.noise.NoiseSource` (OS randomness): a seed chosen by
the server would let it regenerate and subtract the noise.

Notes
-----
The guarantee assumes SecAgg+ holds (fewer than ``t`` colluding members per group) and an
honest-but-curious server; a malicious member of a group can skip its noise share, which lowers
the group's noise to ``σC·sqrt((m-a)/t)`` for ``a`` such members of ``m``.
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
    *,
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    accountant: str = "rdp",
) -> float:
    """Smallest noise multiplier reaching ``target_epsilon`` after ``steps`` (Opacus)."""
    from opacus.accountants.utils import get_noise_multiplier

    return float(
        get_noise_multiplier(
            target_epsilon=target_epsilon,
            target_delta=delta,
            sample_rate=sample_rate,
            steps=steps,
            accountant=accountant,
        )
    )


def epsilon(
    *,
    noise_multiplier: float,
    sample_rate: float,
    steps: int,
    delta: float,
    accountant: str = "rdp",
) -> float:
    """ε of ``steps`` compositions of the subsampled Gaussian mechanism.

    ``accountant`` is ``"rdp"`` (Mironov, CSF 2017) or ``"prv"`` (privacy random variables, Gopi
    et al., NeurIPS 2021: numerically tight, typically a lower ε for the same mechanism).
    """
    if steps <= 0:
        return 0.0
    from opacus.accountants import PRVAccountant, RDPAccountant

    acc = PRVAccountant() if accountant == "prv" else RDPAccountant()
    acc.history = [(noise_multiplier, sample_rate, steps)]
    return float(acc.get_epsilon(delta=delta))


@dataclass(frozen=True)
class UserLevelPlan:
    """How user-level noise is split and what the server should expect in an aggregate."""

    share_std: float
    aggregate_noise_norm: float
    noise_peak: float


def user_level_plan(
    *,
    noise_multiplier: float,
    norm_bound: float,
    num_params: int,
    group_size: int,
    threshold: int | None,
    clipping_range: float | None,
) -> UserLevelPlan:
    """Per-client noise share and the expected noise of a (group) mean; refuse what cannot work.

    ``threshold`` is the SecAgg+ reconstruction threshold (``None`` without SecAgg+: each client
    then adds the full noise, the server seeing each update). The expected noise norm of a mean
    over ``group_size`` clients is ``share·sqrt(num_params/group_size)``; when it exceeds the
    update norm bound ``C`` (the largest signal an honest mean can carry), no round can pass the
    server's checks and the model would not train.

    Raises
    ------
    PrivacyGuaranteeError
        The aggregate noise exceeds the signal, or honest noisy coordinates would leave the
        SecAgg+ clipping range (SecAgg+ would clip them silently).
    """
    share = (
        noise_multiplier * norm_bound / math.sqrt(threshold)
        if threshold
        else (noise_multiplier * norm_bound)
    )
    agg_norm = share * math.sqrt(num_params / group_size)
    peak = share * math.sqrt(2 * math.log(2 * num_params * 1e6))  # P(any |z| > peak) < 1e-6
    if agg_norm > norm_bound:
        raise PrivacyGuaranteeError(
            f"dp.mode='user' cannot train here: each aggregate of {group_size} clients carries "
            f"noise of norm ≈ {agg_norm:.3g} over {num_params} parameters, above the update norm "
            f"bound {norm_bound:g} (the signal). User-level DP needs far more clients per "
            "aggregate (or a smaller model); use dp.mode='dpsgd' instead"
        )
    if clipping_range is not None and peak + norm_bound > clipping_range:
        raise PrivacyGuaranteeError(
            f"dp.mode='user': noisy coordinates reach ≈ {peak + norm_bound:.3g}, outside "
            f"secagg.clipping_range={clipping_range:g}; raise secagg.clipping_range"
        )
    return UserLevelPlan(share, agg_norm, peak)


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
    accountant: str = "rdp"
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
            accountant=self.accountant,
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
