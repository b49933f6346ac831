"""Disentanglement metrics, as disentanglement_lib defines them, in numpy and scikit-learn.

Every metric is a pure function ``compute(ground_truth_data, representation_function,
random_state, **settings) -> dict`` whose docstring module states its definition; the defaults are
the published settings (spec 6.2). The evaluation protocol gives each metric a fresh
``np.random.RandomState(0)``.

=================  ===================================  =========================================
name               module                               scores
=================  ===================================  =========================================
``beta_vae``       :mod:`disdiff.metrics.beta_vae`      train_accuracy, eval_accuracy
``factor_vae``     :mod:`disdiff.metrics.factor_vae`    train_accuracy, eval_accuracy, num_active_dims
``dci``            :mod:`disdiff.metrics.dci`           disentanglement, completeness, informativeness_*
``mig``            :mod:`disdiff.metrics.mig`           discrete_mig
``sap``            :mod:`disdiff.metrics.sap`           SAP_score
``modularity``     :mod:`disdiff.metrics.modularity`    modularity_score, explicitness_score_*
=================  ===================================  =========================================

TAD (CelebA; :mod:`disdiff.metrics.tad`) and FID (:mod:`disdiff.metrics.fid`) take other inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from disdiff.metrics import beta_vae, dci, factor_vae, mig, modularity, sap
from disdiff.metrics.utils import MetricError


@dataclass(frozen=True)
class MetricSpec:
    name: str
    compute: Callable[..., dict]
    defaults: dict
    #: The score the paper reports for this metric (a key of the returned dict).
    headline: str
    title: str


METRICS: dict[str, MetricSpec] = {
    "beta_vae": MetricSpec("beta_vae", beta_vae.compute, beta_vae.DEFAULTS, "eval_accuracy", "beta-VAE"),
    "factor_vae": MetricSpec("factor_vae", factor_vae.compute, factor_vae.DEFAULTS, "eval_accuracy", "FactorVAE"),
    "dci": MetricSpec("dci", dci.compute, dci.DEFAULTS, "disentanglement", "DCI"),
    "mig": MetricSpec("mig", mig.compute, mig.DEFAULTS, "discrete_mig", "MIG"),
    "sap": MetricSpec("sap", sap.compute, sap.DEFAULTS, "SAP_score", "SAP"),
    "modularity": MetricSpec("modularity", modularity.compute, modularity.DEFAULTS, "modularity_score", "Modularity"),
}

#: The four metrics of the paper's evaluation (spec 6.2), in the paper's table order.
PAPER_METRICS = ("factor_vae", "dci", "mig", "beta_vae")

__all__ = ["METRICS", "PAPER_METRICS", "MetricError", "MetricSpec"]
