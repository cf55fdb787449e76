"""Flower app objects: ``server_app`` and ``client_app`` (names are stable; deployment uses them).

Both read their settings from Flower's ``context.run_config``, so they run unchanged under the
simulation runtime (:func:`saip_fl.runner.run`) and under ``flwr run`` against a SuperLink.

run_config keys
---------------
Every field of :class:`saip_fl.config.RunConfig`, flattened: nested sections become dotted keys
and underscores become dashes; lists are comma-separated strings; omitted keys take the
defaults. For example (``[tool.flwr.app.config]`` in the app's ``pyproject.toml``)::

    dataset = "digits"            # "digits" | "mnist5k" | "npz:/abs/path.npz"
    num-clients = 3               # must equal the number of SuperNodes (all are awaited)
    num-rounds = 3
    partition = "iid"             # or "dirichlet" with dirichlet-alpha
    local-epochs = 1
    batch-size = 16
    learning-rate = 0.1
    seed = 0
    aggregation = "fedavg"        # krum | multikrum | median | trimmed_mean | bulyan (no SecAgg);
                                  # grouped_plaintext: benchmark baseline, server sees updates
    client-filter = "pkg.mod:fn"  # optional client-side data filter (x, y) -> keep mask
    secagg.enabled = true
    secagg.num-shares = 3         # odd, >= 3
    secagg.reconstruction-threshold = 2   # > num-shares / 2
    secagg.clipping-range = 8.0   # >= validation.update-norm-bound
    secagg.groups = 1             # k random groups per round, aggregated concurrently
    dp.mode = "none"              # "dpsgd" | "distributed" (target-epsilon, delta) | "user"
    attack.kind = "none"          # evaluation only; attack.clients = "0,3"
    validation.update-norm-bound = 3.0

Runtime keys (not part of ``RunConfig``):

* ``out-dir`` — directory where the ServerApp writes ``metrics.json`` (and, in deployment,
  ``model.npz``; seal it afterwards or let the saip layer do it);
* ``run-token`` — set by the in-process simulation runner to collect the final weights.

Clients need ``node_config["partition-id"]`` (simulation sets it; in deployment pass
``--node-config "partition-id=N num-partitions=M"`` to ``flower-supernode``).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from flwr.app import Context, Message
from flwr.client import ClientApp
from flwr.client.mod import secaggplus_mod
from flwr.clientapp.typing import ClientAppCallable
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS
from flwr.serverapp import Grid, ServerApp

from saip_fl import secagg_prg
from saip_fl.client import NodePolicy, client_fn
from saip_fl.config import RunConfig
from saip_fl.errors import FLConfigError
from saip_fl.model import Weights, weights_to_bytes
from saip_fl.server import RunLog, run_server

log = logging.getLogger(__name__)

secagg_prg.install()

#: final weights of in-process (simulation) runs, by ``run-token``
_RESULTS: dict[str, Weights] = {}
_RESULTS_LOCK = threading.Lock()


def take_result(token: str) -> Weights | None:
    """Pop the final weights a simulation run left under ``token``."""
    with _RESULTS_LOCK:
        return _RESULTS.pop(token, None)


def _secagg_when_configured(msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
    """Route SecAgg+ messages through Flower's ``secaggplus_mod``; refuse plaintext if it is on.

    A client configured for SecAgg+ never answers a plain training request: that would hand its
    individual update to a server that should only ever see masked sums. The node's own policy
    (``--node-config saip-require-secagg=true``) makes that refusal independent of the
    server-controlled ``run_config``. SecAgg+ runs only with the full-seed mask generator
    (:mod:`saip_fl.secagg_prg`).
    """
    if RECORD_KEY_CONFIGS in msg.content.config_records:
        if not secagg_prg.installed():
            raise FLConfigError("SecAgg+ mask generator is Flower's 32-bit one: refusing")
        return secaggplus_mod(msg, ctxt, call_next)
    if msg.metadata.message_type == "train":
        if str(ctxt.run_config.get("secagg.enabled", "False")) == "True":
            raise FLConfigError(
                "secagg.enabled is set but the server sent a plain training request"
            )
        if NodePolicy.from_node_config(ctxt.node_config).require_secagg:
            raise FLConfigError(
                "node policy saip-require-secagg: refusing a plain training request"
            )
    return call_next(msg, ctxt)


client_app = ClientApp(client_fn=client_fn, mods=[_secagg_when_configured])

server_app = ServerApp()


@server_app.main()
def _server_main(grid: Grid, context: Context) -> None:
    run_config = dict(context.run_config)
    cfg = RunConfig.from_flower(run_config)
    out_dir = run_config.get("out-dir")
    token = run_config.get("run-token")
    runlog = RunLog(
        config=cfg.model_dump(mode="json"),
        path=Path(str(out_dir)) / "metrics.json" if out_dir else None,
    )
    final = run_server(grid, context, cfg, runlog)
    if token:
        with _RESULTS_LOCK:
            _RESULTS[str(token)] = final
    elif out_dir:
        path = Path(str(out_dir)) / "model.npz"
        path.write_bytes(weights_to_bytes(final))
        path.chmod(0o600)
        log.warning("final model written UNENCRYPTED to %s (seal it with saip encrypt)", path)
