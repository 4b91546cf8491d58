"""The registry of estimators a config may name (`Config.estimator`), each built with its settings
from the config (`from_config`). A new estimator is one file and one line here, or
`register_estimator` from anywhere."""

from __future__ import annotations

import functools
from typing import Callable

from ._autodiff import Autodiff
from ._base import MetaGradientEstimator
from ._es import AntitheticES
from ._fused import FusedBackprop
from ._pes import PES

# name -> `build(training_config) -> MetaGradientEstimator`
ESTIMATORS: dict[str, Callable[..., MetaGradientEstimator]] = {
    "fused": FusedBackprop.from_config,
    "fused_scan": functools.partial(FusedBackprop.from_config, loop="scan"),
    "autodiff": Autodiff.from_config,
    "es": AntitheticES.from_config,
    "pes": PES.from_config,
}

# The estimators `make bench` compares side by side (the others are the same estimates, slower).
BENCHMARKED = ("fused", "pes", "es")


def register_estimator(name: str, build: Callable[..., MetaGradientEstimator] | None = None):
    """Registers `build(training_config) -> estimator` (e.g. an estimator class's `from_config`) as
    `Config(estimator=name)`; as a class decorator, registers the class's `from_config`."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"An estimator's name must be a non-empty string, got {name!r}.")

    def register(target):
        if isinstance(target, type) and issubclass(target, MetaGradientEstimator):
            ESTIMATORS[name] = target.from_config
        elif callable(target):
            ESTIMATORS[name] = target
        else:
            raise TypeError(f"register_estimator({name!r}) needs a MetaGradientEstimator subclass or a builder, got {target!r}.")
        return target

    return register if build is None else register(build)


def estimator_for(config) -> MetaGradientEstimator:
    """The estimator `config.estimator` names (a `Config` or its `MetaTrainingConfig`), with its
    settings from the config; an unknown name lists the known ones."""
    name = config.estimator
    if name not in ESTIMATORS:
        raise ValueError(f"Config.estimator={name!r} is not one of {', '.join(map(repr, ESTIMATORS))}.")
    return ESTIMATORS[name](config)
