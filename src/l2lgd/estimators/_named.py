"""The estimator a config names (`Config.estimator`)."""

from __future__ import annotations

from ._autodiff import Autodiff
from ._base import MetaGradientEstimator
from ._es import AntitheticES
from ._fused import FusedBackprop
from ._pes import PES

ESTIMATOR_KINDS = {
    "fused": lambda: FusedBackprop(),
    "fused_scan": lambda: FusedBackprop(loop="scan"),
    "autodiff": lambda: Autodiff(),
    "es": lambda: AntitheticES(),
    "pes": lambda: PES(),
}


def estimator_for(config) -> MetaGradientEstimator:
    """The estimator `config.estimator` names, with the config's settings (`perturbations`,
    `sigma`) for the evolution kinds."""
    if config.estimator not in ESTIMATOR_KINDS:
        raise ValueError(f"Config.estimator={config.estimator!r} is not one of {', '.join(map(repr, ESTIMATOR_KINDS))}.")
    return ESTIMATOR_KINDS[config.estimator]()
