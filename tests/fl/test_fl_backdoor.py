"""Backdoor defences that work on SecAgg+ group means (the server never sees one client's update).

Attacker first: a norm-bounded backdoor client hides inside a group mean that passes every
per-group check; what the server can still do is (1) tighten the bound to what an honest update
looks like now (its own root update), (2) notice across random regroupings which client keeps
dragging its groups down (group testing), and (3) drop what an excluded client already put into
the model (rewind).
"""

from __future__ import annotations

import numpy as np
import pytest
from saip_fl import validation
from saip_fl.client import SaipClient
from saip_fl.config import validate_run_config
from saip_fl.errors import FLConfigError, UpdateRejectedError
from saip_fl.model import l2_norm
from saip_fl.server import RunLog, SaipStrategy

GROUPED = {
    "enabled": True,
    "num_shares": 5,
    "reconstruction_threshold": 3,
    "groups": 4,
    "suspicion_z": 3.0,
    "suspicion_min_rounds": 3,
    "rewind_on_exclusion": True,
}


def _rounds(
    rng: np.random.Generator, clients: list[str], attackers: set[str], rounds: int, drop: float
) -> list[tuple[list[list[str]], list[float]]]:
    """Random groups of 5 each round; a group's score drops by ``drop`` per attacker in it."""
    out = []
    for _ in range(rounds):
        order = rng.permutation(len(clients))
        groups = [[clients[int(i)] for i in part] for part in np.array_split(order, 4)]
        scores = [
            0.5 - drop * sum(c in attackers for c in g) + float(rng.normal(0, 0.03)) for g in groups
        ]
        out.append((groups, scores))
    return out


def test_fl_group_testing_finds_backdoor_clients_hidden_in_group_means() -> None:
    rng = np.random.default_rng(7)
    clients = [f"c{i}" for i in range(20)]
    attackers = {"c3", "c11"}  # the server is not told how many there are
    gt = validation.GroupTesting(
        z_threshold=2.0, t_threshold=3.0, min_rounds=3, min_effect=0.15, max_excluded=9
    )
    for groups, scores in _rounds(rng, clients, attackers, 12, drop=0.1):
        live = [c for c in clients if c not in gt.excluded()]
        kept = [(g, s) for g, s in zip(groups, scores, strict=True) if set(g) <= set(live)]
        gt.record([g for g, _ in kept], [s for _, s in kept])
    assert attackers <= gt.excluded()
    assert len(gt.excluded() - attackers) <= 1
    assert "below" in gt.report()["c3"][0]


def test_fl_group_testing_keeps_every_client_of_a_clean_federation() -> None:
    rng = np.random.default_rng(3)
    clients = [f"c{i}" for i in range(20)]
    gt = validation.GroupTesting(
        z_threshold=2.0, t_threshold=3.0, min_rounds=3, min_effect=0.15, max_excluded=9
    )
    for groups, scores in _rounds(rng, clients, set(), 12, drop=0.0):
        gt.record(groups, scores)
    assert gt.excluded() == set()
    with pytest.raises(ValueError, match="one score per group"):
        gt.record([["a"], ["b"]], [0.1])
    gt.record([["a"], ["b"]], [float("nan"), 0.2])  # a NaN score says nothing: ignored
    assert "a" not in gt.effects()


def test_fl_adaptive_bound_rejects_a_group_mean_that_sits_at_the_static_bound() -> None:
    # late in training an honest update is short; the attacker clipped to the static bound is not
    root = [np.full((4, 3), 0.05, np.float32)]
    bound = validation.adaptive_norm_bound(l2_norm(root), multiplier=2.0, ceiling=3.0)
    assert bound == pytest.approx(2.0 * l2_norm(root))
    attacked = [root[0] * 0.8 + np.float32(3.0 / 5 / np.sqrt(12))]  # (4 honest + 1 at 3.0) / 5
    kw = {
        "shapes": [(4, 3)],
        "root_update": root,
        "global_weights": [np.zeros((4, 3), np.float32)],
        "holdout_loss": lambda w: 0.0,
        "base_loss": 0.0,
        "clipping_range": 8.0,
        "min_cosine": 0.0,
        "loss_tolerance": 0.0,
    }
    assert validation.score_group(0, attacked, norm_bound=3.0, **kw).accepted  # static: passes
    tight = validation.score_group(0, attacked, norm_bound=bound, **kw)
    assert not tight.accepted
    assert "norm" in tight.reason
    clean = validation.score_group(1, [r * 1.5 for r in root], norm_bound=bound, **kw)
    assert clean.accepted
    assert validation.adaptive_norm_bound(0.0, multiplier=2.0, ceiling=3.0) == 3.0
    with pytest.raises(ValueError, match="finite"):
        validation.adaptive_norm_bound(float("nan"), multiplier=2.0, ceiling=3.0)


def test_fl_client_clips_to_the_servers_tighter_bound_and_never_a_looser_one() -> None:
    cfg = validate_run_config({"num_clients": 10, "local_epochs": 2})
    client = SaipClient(cfg, 1)
    params = client.get_parameters({})
    tight, _, _ = client.fit(params, {"server-round": 1, "update-norm-bound": 0.05})
    assert l2_norm(tight) <= 0.05 * (1 + 1e-5)
    same, _, _ = client.fit(params, {"server-round": 1, "update-norm-bound": 3.0})
    assert l2_norm(same) <= cfg.validation.update_norm_bound * (1 + 1e-5)
    for bad in (0.0, -1.0, 1e9):  # a looser bound than the run's is refused, not clamped
        with pytest.raises(UpdateRejectedError, match="update-norm-bound"):
            client.fit(params, {"server-round": 1, "update-norm-bound": bad})


def test_fl_excluded_backdoor_client_is_rewound_out_of_the_model() -> None:
    cfg = validate_run_config(
        {"num_clients": 20, "secagg": {**GROUPED, "root_norm_multiplier": 3.0}}
    )
    strategy = SaipStrategy(cfg, RunLog(config={}, path=None))
    rng = np.random.default_rng(11)
    clients = [str(1000 + i) for i in range(20)]
    attackers = {"1000", "1001"}
    start = strategy.global_weights
    glob = start
    backdoor = [rng.normal(size=w.shape).astype(np.float32) for w in glob]
    rewound = None
    for rnd in range(1, 13):
        strategy._global = glob
        assert 0 < float(strategy._fit_config(rnd)["update-norm-bound"]) <= 3.0
        root, bound = strategy.round_root(glob, rnd)
        live = [c for c in clients if c not in strategy.excluded_clients()]
        order = rng.permutation(len(live))
        members = {
            g: [live[int(i)] for i in part]
            for g, part in enumerate(np.array_split(order, len(live) // 5))
        }
        means = {}
        for g, m in members.items():
            honest = [0.5 * r + 0.003 * rng.normal(size=r.shape).astype(np.float32) for r in root]
            bad = sum(c in attackers for c in m)
            # each attacker's update: the backdoor direction clipped to this round's bound
            scale = bound / l2_norm(backdoor) * bad / len(m)
            means[g] = [h + scale * b for h, b in zip(honest, backdoor, strict=True)]
        new = strategy.combine_groups(rnd, glob, means, members, {})
        rec = strategy.runlog.rounds[-1]
        if rec.rewound_to is not None and rewound is None:
            rewound = rec.rewound_to
            assert new is not None
            assert all(np.array_equal(a, b) for a, b in zip(new, start, strict=True))
        glob = new if new is not None else glob
    assert attackers <= strategy.excluded_clients()
    assert len(strategy.excluded_clients() - attackers) <= 1
    assert rewound == 1  # the attackers took part from round 1: nothing before it is clean
    assert set(strategy.runlog.excluded_clients) >= attackers


def test_fl_clean_group_means_are_kept_without_exclusion_or_rewind() -> None:
    cfg = validate_run_config({"num_clients": 20, "secagg": GROUPED})
    strategy = SaipStrategy(cfg, RunLog(config={}, path=None))
    rng = np.random.default_rng(5)
    clients = [str(1000 + i) for i in range(20)]
    glob = strategy.global_weights
    for rnd in range(1, 7):
        root, _ = strategy.round_root(glob, rnd)
        order = rng.permutation(20)
        members = {g: [clients[int(i)] for i in p] for g, p in enumerate(np.array_split(order, 4))}
        means = {
            g: [0.5 * r + 0.02 * rng.normal(size=r.shape).astype(np.float32) for r in root]
            for g in members
        }
        new = strategy.combine_groups(rnd, glob, means, members, {})
        assert new is not None
        assert strategy.runlog.rounds[-1].rewound_to is None
        glob = new
    assert strategy.excluded_clients() == set()


@pytest.mark.parametrize(
    "secagg",
    [
        {"suspicion_z": -1.0},
        {"suspicion_min_rounds": 1},
        {"suspicion_min_effect": -0.1},
        {"root_norm_multiplier": -0.5},
        {"rewind_on_exclusion": "sometimes"},
    ],
)
def test_fl_backdoor_defence_settings_are_validated_by_name(secagg: dict[str, object]) -> None:
    with pytest.raises(FLConfigError, match=f"secagg.{next(iter(secagg))}"):
        validate_run_config({"num_clients": 20, "secagg": {**GROUPED, **secagg}})


def test_fl_exclusions_from_streaks_and_group_testing_share_one_cap() -> None:
    """Attackers can land honest clients in rejected groups: neither exclusion mechanism may
    push the total past the cap (else too few clients remain to form a SecAgg+ group)."""
    cfg = validate_run_config(
        {"num_clients": 20, "secagg": {**GROUPED, "rewind_on_exclusion": False}}
    )
    strategy = SaipStrategy(cfg, RunLog(config={}, path=None))
    cap = strategy.exclusion_cap
    assert cap > 0
    # group testing has already used the whole cap
    strategy.group_testing.banned = {f"t{i}": ["test"] for i in range(cap)}
    glob = strategy.global_weights
    members = {0: [f"a{i}" for i in range(5)], 1: [f"r{i}" for i in range(5)]}
    for rnd in range(1, cfg.secagg.exclude_after + 2):
        root, _ = strategy.round_root(glob, rnd)
        means = {0: [0.5 * r for r in root], 1: [100.0 * r for r in root]}  # group 1 rejected
        strategy.combine_groups(rnd, glob, means, members, {})
    assert not strategy.runlog.rounds[-1].groups[1]["accepted"]
    assert len(strategy.excluded_clients()) <= cap


def test_fl_rewind_resets_server_momentum_and_history_stays_bounded() -> None:
    """Rewind keeps one model copy per distinct contributor set, not one per round, and drops
    the server momentum (it carries the excluded client's steps)."""
    cfg = validate_run_config(
        {"num_clients": 20, "secagg": GROUPED, "dp": {"server_momentum": 0.5}}
    )
    strategy = SaipStrategy(cfg, RunLog(config={}, path=None))
    start = strategy.global_weights
    glob = start
    members = {0: ["bad", "h1", "h2", "h3", "h4"], 1: [f"g{i}" for i in range(5)]}
    for rnd in range(1, 9):
        root, _ = strategy.round_root(glob, rnd)
        new = strategy.combine_groups(
            rnd, glob, {g: [0.5 * r for r in root] for g in members}, members, {}
        )
        assert new is not None
        assert strategy.velocity is not None
        glob = new
    # round 1 (nobody contributed yet) and the newest start of each later contributor set
    assert len(strategy._history) <= 2
    strategy.group_testing.banned["bad"] = ["caught"]
    root, _ = strategy.round_root(glob, 9)
    new = strategy.combine_groups(
        9, glob, {g: [0.5 * r for r in root] for g in members}, members, {}
    )
    assert strategy.runlog.rounds[-1].rewound_to == 1
    assert new is not None
    assert all(np.array_equal(a, b) for a, b in zip(new, start, strict=True))
    assert strategy.velocity is None
