"""FedProx (Li et al., MLSys 2020): FedAvg on the server; the proximal term is in silo training.

Each silo minimises its loss + μ/2·‖w − w_global‖² (the square, and a copy of the global weights
taken before training — two bugs other code bases have). μ (``proximal_mu``) runs in the silo, so it
lives only in the signed bundle, where the orchestrator cannot change it; this strategy has no
server options and declares ``requires_silo_config``, which the run's edge checks against the bundle
(a FedProx run whose bundle has no μ > 0 is refused). Updates are aggregated exactly as FedAvg.
Works under secure aggregation.
"""
from __future__ import annotations

from fedfunc.aggregation.fedavg import FedAvg


class FedProx(FedAvg):
    name = "fedprox"
    requires_silo_config = frozenset({"proximal_mu"})
