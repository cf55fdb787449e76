"""Run configuration of a federated training run, validated at start-up.

One pydantic model (:class:`RunConfig`, unknown keys rejected) describes a run. It is read from a
TOML file by ``saip fl run --config FILE`` and travels to the Flower apps as Flower's flat
``run_config`` (see :meth:`RunConfig.to_flower` / :meth:`RunConfig.from_flower`): nested sections
become dotted keys and underscores become dashes, e.g. ``secagg.num-shares = 5``; lists become
comma-separated strings. Safety rules Flower does not enforce (odd ``num_shares``, a reconstruction
threshold above half the shares, honest update norms inside the SecAgg+ clipping range, no
per-client robust rule under SecAgg+, a meaningful DP guarantee) are checked here, eagerly, and a
violation raises :class:`~saip_fl.errors.FLConfigError` naming the setting.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from saip_fl.errors import FLConfigError

#: rules that look at each client's update; SecAgg+ hides those, so Flower would silently run FedAvg
PER_CLIENT_RULES = frozenset({"krum", "multikrum", "median", "trimmed_mean", "bulyan"})
#: smallest ``secagg.erase_ridge`` that still erases (dev runs on digits: 0.03 left ASR 0.03-0.15,
#: 0.05 at most 0.09; 0.01 and below 0.23-0.61)
MIN_ERASE_RIDGE = 0.03

#: run_config keys that are not part of :class:`RunConfig` (set by the runner or the deployment)
RUNTIME_KEYS = frozenset({"out-dir", "run-token"})

Aggregation = Literal[
    "fedavg", "krum", "multikrum", "median", "trimmed_mean", "bulyan", "grouped_plaintext"
]
AttackKind = Literal[
    "none",
    "label_flip",
    "sign_flip",
    "flip_sign",
    "scale",
    "backdoor",
    "nan",
    "free_rider",
    "dropout",
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SecAggConfig(_Section):
    """SecAgg+ (Bell et al., CCS 2020) inside random groups of clients.

    ``groups = 1`` is Flower's flat SecAgg+; ``groups = k`` splits the sampled clients into ``k``
    random groups each round, runs one SecAgg+ instance per group concurrently, and combines the
    group aggregates robustly (FLTrust-style scoring against the server's root data).
    """

    enabled: bool = False
    num_shares: Annotated[int, Field(ge=3)] = 3
    reconstruction_threshold: Annotated[int, Field(ge=2)] = 2
    clipping_range: Annotated[float, Field(gt=0)] = 8.0
    quantization_range: Annotated[int, Field(gt=0)] = 4194304
    groups: Annotated[int, Field(ge=1)] = 1
    #: seconds each SecAgg+ stage waits for replies (a silent client must not stall the run)
    timeout: Annotated[float, Field(gt=0)] = 120.0
    min_cosine: Annotated[float, Field(ge=-1, le=1)] = 0.0
    loss_tolerance: Annotated[float, Field(ge=0)] = 0.05
    #: exclude a client after this many consecutive rounds in a rejected group (random regrouping
    #: makes an honest client share the attacker's group with probability ≈ (m-1)/(n-1) per round)
    exclude_after: Annotated[int, Field(ge=2)] = 4
    #: adaptive norm bound (Sun et al. 2019): each round clients clip to this multiple of the
    #: norm of the server's root update (an honest update on clean data), at most
    #: ``validation.update_norm_bound``; group aggregates above it are rejected. 0 = off
    root_norm_multiplier: Annotated[float, Field(ge=0, le=100)] = 0.0
    #: group testing across random regroupings: exclude a client whose estimated effect on its
    #: groups' cosine to the root update is this many standard errors below zero (and 2 robust
    #: SDs below the median client). 0 = off
    suspicion_z: Annotated[float, Field(ge=0, le=20)] = 0.0
    #: ... and whose estimated effect is at least this far below zero, in cosine units (a
    #: relative test alone always finds someone in a federation with no attacker)
    suspicion_min_effect: Annotated[float, Field(ge=0, le=2)] = 0.15
    #: observations (rounds) a client needs before group testing may exclude it
    suspicion_min_rounds: Annotated[int, Field(ge=2, le=1000)] = 3
    #: when a client is excluded whose past updates are in the model, reset the model to the
    #: newest global model it did not contribute to (its backdoor must not outlive it)
    rewind_on_exclusion: bool = False
    #: post-training erasure (:mod:`saip_fl.erasure`): project the final model's first layer onto
    #: the clean root data's input subspace with this ridge (input-variance units); directions the
    #: clean data hardly uses, where a patch trigger lives, are shrunk away. 0 = off; above 0.5
    #: it erases the clean task too; below :data:`MIN_ERASE_RIDGE` it erases nothing (refused)
    erase_ridge: Annotated[float, Field(ge=0, le=0.5)] = 0.0
    #: the erased model is checked on the holdout: if its loss rises by more than this over the
    #: model before the erasure, the run fails (the projection erased the task, e.g. a ridge
    #: tuned on other data) instead of sealing it. Dev runs on digits (never the scored seed 0):
    #: +0.06-0.08 at ridge 0.05 (benchmark configuration, seeds 3-4, attacked and clean), +0.48
    #: at 0.5 (seed 1, accuracy 0.94 -> 0.82)
    erase_max_loss_increase: Annotated[float, Field(ge=0)] = 0.2

    @model_validator(mode="after")
    def _shares(self) -> SecAggConfig:
        if self.num_shares % 2 == 0:
            raise ValueError(
                f"secagg.num_shares={self.num_shares} is even: SecAgg+ needs an odd number of "
                "shares (an even value halts the protocol every round while Flower exits 0)"
            )
        if not self.num_shares / 2 < self.reconstruction_threshold < self.num_shares:
            raise ValueError(
                f"secagg.reconstruction_threshold={self.reconstruction_threshold} must be above "
                f"half the shares ({self.num_shares}/2) and below num_shares, otherwise a minority "
                "of colluding neighbours can rebuild a client's mask"
            )
        return self


class DPConfig(_Section):
    """Client-side differential privacy.

    ``mode = "dpsgd"``: example-level DP-SGD with Opacus in each client (Abadi et al., CCS 2016),
    noise calibrated to ``target_epsilon`` over the whole run. ``mode = "distributed"``:
    record-level DP-FedSGD inside SecAgg+ groups — each member sends one step of clipped
    per-example gradients over a Poisson sample plus a *share* of the Gaussian noise, so only the
    group sum carries the full noise (needs ``secagg.enabled``). ``mode = "user"``: user-level DP
    (McMahan et al., ICLR 2018): each client clips its update to ``update_norm_bound`` and adds its
    share of Gaussian noise so that every (group) aggregate carries ``noise_multiplier × bound``.
    ``sample_rate`` (Poisson rate per record and step) defaults to ``batch_size / smallest
    client``.
    """

    mode: Literal["none", "dpsgd", "distributed", "user"] = "none"
    sample_rate: Annotated[float, Field(gt=0, le=1)] | None = None
    target_epsilon: Annotated[float, Field(gt=0)] = 8.0
    delta: Annotated[float, Field(gt=0, lt=1)] = 1e-5
    max_grad_norm: Annotated[float, Field(gt=0)] = 1.0
    noise_multiplier: Annotated[float, Field(gt=0)] | None = None
    max_epsilon: Annotated[float, Field(gt=0)] = 10.0
    allow_weak: bool = False
    #: privacy accountant: Rényi DP (Mironov 2017) or PRV (Gopi et al., NeurIPS 2021; tighter)
    accountant: Literal["rdp", "prv"] = "rdp"
    #: heavy-ball momentum the server applies to the combined group aggregate (SecAgg+ runs):
    #: post-processing of released aggregates, free in privacy; 0 turns it off
    server_momentum: Annotated[float, Field(ge=0, lt=1)] = 0.0
    #: server learning rate η applied to the combined group aggregate (SecAgg+ runs; FedOpt,
    #: Reddi et al., ICLR 2021): post-processing like the momentum. It lets the clients keep a
    #: step whose group means stay inside the norm bound the server checks, while the server
    #: moves further; 1 = off
    server_learning_rate: Annotated[float, Field(gt=0, le=100)] = 1.0
    #: schedule of η over the rounds: ``constant``, or ``cosine`` decay from η to 0 over
    #: ``num_rounds`` (the last steps, which carry as much noise as the first, move the model
    #: less, so less of their noise stays in the final model)
    server_lr_schedule: Literal["constant", "cosine"] = "constant"
    #: TEST ONLY: draw DP noise and sampling from this fixed seed. Whoever knows it can remove the
    #: noise, so the ``saip fl`` CLI refuses any configuration that sets it.
    insecure_noise_seed: int | None = None


class AttackConfig(_Section):
    """Simulated malicious clients (evaluation only)."""

    kind: AttackKind = "none"
    clients: list[int] = Field(default_factory=list)
    scale: Annotated[float, Field(gt=0)] = 10.0
    target_label: Annotated[int, Field(ge=0)] = 0
    poison_fraction: Annotated[float, Field(gt=0, le=1)] = 0.5
    trigger_size: Annotated[int, Field(ge=1)] = 2
    #: the attacker clips its tampered update to ``validation.update_norm_bound`` (evades norms)
    norm_bounded: bool = False
    #: example count the attacker reports (0: its true count); inflated counts target weighted means
    claimed_examples: Annotated[int, Field(ge=0)] = 0

    @field_validator("clients", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [int(v) for v in value.split(",") if v.strip()]
        return value


class ValidationConfig(_Section):
    """Server-side checks on each update (without SecAgg) and client exclusion.

    ``enabled = false`` turns screening off (an *undefended* baseline for benchmarks).
    """

    enabled: bool = True
    update_norm_bound: Annotated[float, Field(gt=0)] = 3.0
    min_cosine: Annotated[float, Field(ge=-1, le=1)] = 0.0
    max_examples: Annotated[int, Field(ge=1)] = 1000
    exclude_after: Annotated[int, Field(ge=1)] = 2
    num_malicious: Annotated[int, Field(ge=0)] = 0
    trim_fraction: Annotated[float, Field(ge=0, lt=0.5)] = 0.2
    multikrum_keep: Annotated[int, Field(ge=0)] = 0
    #: the run is *degraded* (not ok) when more than this share of rounds was rolled back
    max_rollback_fraction: Annotated[float, Field(ge=0, le=1)] = 0.5


class RunConfig(_Section):
    """One federated training run (see the module docstring for the Flower key mapping)."""

    dataset: str = "digits"
    partition: Literal["iid", "dirichlet"] = "iid"
    dirichlet_alpha: Annotated[float, Field(gt=0)] = 0.5
    num_clients: Annotated[int, Field(ge=2)] = 10
    num_rounds: Annotated[int, Field(ge=1)] = 3
    fraction_fit: Annotated[float, Field(gt=0, le=1)] = 1.0
    local_epochs: Annotated[int, Field(ge=1)] = 1
    batch_size: Annotated[int, Field(ge=1)] = 16
    learning_rate: Annotated[float, Field(gt=0)] = 0.1
    hidden: Annotated[int, Field(ge=1)] = 64
    #: hidden-layer activation (:data:`saip_fl.model.ACTIVATIONS`); ``tanh`` trains better under
    #: DP (Papernot et al., AAAI 2021, tempered sigmoids)
    activation: Literal["relu", "tanh"] = "relu"
    seed: int = 0
    test_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.2
    root_size: Annotated[int, Field(ge=10)] = 100
    aggregation: Aggregation = "fedavg"
    client_filter: str | None = None
    secagg: SecAggConfig = Field(default_factory=SecAggConfig)
    dp: DPConfig = Field(default_factory=DPConfig)
    attack: AttackConfig = Field(default_factory=AttackConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)

    @field_validator("dataset")
    @classmethod
    def _dataset(cls, value: str) -> str:
        if value in ("digits", "mnist5k") or (value.startswith("npz:") and len(value) > 4):
            return value
        raise ValueError("dataset must be 'digits', 'mnist5k' or 'npz:PATH'")

    @field_validator("client_filter")
    @classmethod
    def _filter(cls, value: str | None) -> str | None:
        if value is not None and ":" not in value:
            raise ValueError("client_filter must be an import path 'module:attribute'")
        return value

    @model_validator(mode="after")
    def _cross(self) -> RunConfig:
        sa = self.secagg
        if sa.enabled:
            if self.aggregation in PER_CLIENT_RULES:
                raise ValueError(
                    f"aggregation='{self.aggregation}' cannot run with secagg.enabled: "
                    "SecAgg+ hides "
                    "individual updates, so Flower silently replaces a per-client robust rule by "
                    "FedAvg. Use aggregation='fedavg' with secagg.groups > 1 (robust combination "
                    "across group aggregates) instead"
                )
            per_round = max(2, round(self.fraction_fit * self.num_clients))
            size = per_round // sa.groups
            if size < sa.num_shares:
                raise ValueError(
                    f"secagg.groups={sa.groups} leaves groups of {size} clients, fewer than "
                    f"secagg.num_shares={sa.num_shares}: use fewer groups or fewer shares"
                )
            largest = -(-per_round // max(1, min(sa.groups, per_round // sa.num_shares)))
            if largest * sa.quantization_range >= 2**32:
                raise ValueError(
                    f"secagg.quantization_range={sa.quantization_range} × group size {largest} "
                    "reaches 2**32, SecAgg+'s modulus: the masked sum wraps around and the "
                    "aggregate is garbage. Lower secagg.quantization_range (or use more groups)"
                )
            if self.validation.update_norm_bound > sa.clipping_range:
                raise ValueError(
                    f"validation.update_norm_bound={self.validation.update_norm_bound} exceeds "
                    f"secagg.clipping_range={sa.clipping_range}: honest updates would be clipped "
                    "coordinate-wise by the SecAgg+ mod and silently distorted"
                )
        if 0 < sa.erase_ridge < MIN_ERASE_RIDGE:
            raise ValueError(
                f"secagg.erase_ridge={sa.erase_ridge:g} is too weak to erase anything (the "
                "projection is ≈ I on the trigger's pixels; digits probe runs at 1e-4..1e-2 kept "
                f"ASR 0.23-0.61): use 0 (off) or at least {MIN_ERASE_RIDGE:g}"
            )
        if sa.erase_ridge > 0 and not sa.enabled:
            raise ValueError(
                "secagg.erase_ridge is a backdoor defence of grouped SecAgg+ runs: it needs "
                "secagg.enabled (it would be ignored otherwise)"
            )
        if self.aggregation == "grouped_plaintext":
            if sa.enabled:
                raise ValueError(
                    "aggregation='grouped_plaintext' is grouped SecAgg+'s aggregation with the "
                    "group means computed in the clear (a benchmark baseline): it cannot run with "
                    "secagg.enabled"
                )
            if max(2, round(self.fraction_fit * self.num_clients)) < sa.groups:
                raise ValueError(
                    f"aggregation='grouped_plaintext' needs at least secagg.groups={sa.groups} "
                    "clients per round"
                )
        if self.dp.mode == "distributed" and not sa.enabled:
            raise ValueError(
                "dp.mode='distributed' splits the noise across SecAgg+ group members: it needs "
                "secagg.enabled (without SecAgg+ the server would see each under-noised share)"
            )
        for name, value, default in (
            ("server_momentum", self.dp.server_momentum, 0.0),
            ("server_learning_rate", self.dp.server_learning_rate, 1.0),
            ("server_lr_schedule", self.dp.server_lr_schedule, "constant"),
        ):
            if value != default and not sa.enabled:
                raise ValueError(
                    f"dp.{name} applies to the combined SecAgg+ group aggregate: it needs "
                    "secagg.enabled (it would be ignored otherwise)"
                )
        if self.dp.mode == "user" and self.dp.noise_multiplier is None:
            raise ValueError("dp.mode='user' needs dp.noise_multiplier (noise std / update bound)")
        bad = [c for c in self.attack.clients if not 0 <= c < self.num_clients]
        if bad:
            raise ValueError(f"attack.clients {bad} are outside 0..{self.num_clients - 1}")
        if not self.validation.enabled and (sa.enabled or self.aggregation != "fedavg"):
            raise ValueError("validation.enabled=false is only for the undefended FedAvg baseline")
        if self.attack.kind != "none" and not self.attack.clients:
            raise ValueError("attack.kind is set but attack.clients is empty")
        return self

    # ----------------------------------------------------------------- Flower run_config mapping
    def to_flower(self) -> dict[str, bool | int | float | str]:
        """Flatten to Flower's ``run_config`` (dotted keys, dashes, lists as comma strings)."""
        flat: dict[str, bool | int | float | str] = {}

        def walk(prefix: str, data: dict[str, Any]) -> None:
            for key, value in data.items():
                name = prefix + key.replace("_", "-")
                if isinstance(value, dict):
                    walk(name + ".", value)
                elif value is None:
                    continue
                elif isinstance(value, list):
                    flat[name] = ",".join(str(v) for v in value)
                else:
                    flat[name] = value

        walk("", self.model_dump())
        return flat

    @classmethod
    def from_flower(cls, run_config: dict[str, Any]) -> RunConfig:
        """Rebuild from Flower's flat ``run_config`` (runtime keys such as ``out-dir`` ignored)."""
        if "num-clients" not in run_config:
            raise FLConfigError(
                "run_config lacks 'num-clients': the app's [tool.flwr.app.config] was not "
                "delivered (refusing to train on silent defaults)"
            )
        nested: dict[str, Any] = {}
        for key, value in run_config.items():
            if key in RUNTIME_KEYS:
                continue
            parts = [p.replace("-", "_") for p in key.split(".")]
            node = nested
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = value
        return validate_run_config(nested, source="run_config")


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown setting '{loc}'")
        else:
            msg = str(err["msg"]).removeprefix("Value error, ")
            parts.append(f"setting '{loc}': {msg}" if loc != "<root>" else msg)
    return "; ".join(parts)


def validate_run_config(data: dict[str, Any], *, source: str = "config") -> RunConfig:
    """Validate a mapping into a :class:`RunConfig`.

    Raises
    ------
    FLConfigError
        An unknown or invalid setting (the message names it).
    """
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise FLConfigError(f"{source}: {_describe(exc)}") from None


def load_run_config(path: Path) -> RunConfig:
    """Read a TOML (or JSON, by suffix) run configuration file.

    Raises
    ------
    FLConfigError
        Missing file, unparsable file, or an unknown/invalid setting.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FLConfigError(f"run config not found: {path}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise FLConfigError(f"run config {path} cannot be parsed: {exc}") from None
    return validate_run_config(data, source=str(path))
