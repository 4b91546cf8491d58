"""The registry of learned-optimizer kinds (`OptimizerConfig.kind` names one) and `make_optimizer`,
which builds the kind a config names: for a fresh run and, by its shapes, as the skeleton a stored
optimizer is restored into."""

from __future__ import annotations

from typing import Callable

from jaxtyping import PRNGKeyArray

from ._adam_controller import AdamController
from ._base import LearnedOptimizer
from ._lstm_optimizer import LSTMOptimizer
from ._mlp_step import MLPStep
from ._prodigy_controller import ProdigyController

OPTIMIZER_KINDS: dict[str, type[LearnedOptimizer]] = {
    "lstm": LSTMOptimizer,
    "adam_controller": AdamController,
    "mlp_step": MLPStep,
    "prodigy_controller": ProdigyController,
}


def register_optimizer_kind(name: str) -> Callable[[type], type]:
    """Class decorator: registers a `LearnedOptimizer` subclass as `OptimizerConfig(kind=name)`,
    so that runs of it meta-train, snapshot, export and load by path like the built-in kind."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"An optimizer kind's name must be a non-empty string, got {name!r}.")

    def register(cls: type) -> type:
        if not (isinstance(cls, type) and issubclass(cls, LearnedOptimizer)):
            raise TypeError(f"register_optimizer_kind({name!r}) needs a LearnedOptimizer subclass, got {cls!r}.")
        current = OPTIMIZER_KINDS.get(name)
        if current is not None and current.__qualname__ != cls.__qualname__:
            raise ValueError(f"The optimizer kind {name!r} is already registered to {current.__qualname__}.")
        OPTIMIZER_KINDS[name] = cls
        return cls

    return register


def make_optimizer(config, *, key: PRNGKeyArray) -> LearnedOptimizer:
    """A freshly initialised learned optimizer of the kind `config.kind` names.

    Args:
        config: an `OptimizerConfig`, or a `Config` (its `optimizer` section): the kind and its
            settings (for "lstm": the preprocessing and the LSTM's size).
        key: draws the initial weights.

    Returns:
        A `LearnedOptimizer` (an Equinox module; `as_optax` makes it an optax transformation).
    """
    config = getattr(config, "optimizer", config)
    kind = getattr(config, "kind", "lstm")
    if kind not in OPTIMIZER_KINDS:
        raise ValueError(f"OptimizerConfig.kind={kind!r} is not one of {', '.join(map(repr, OPTIMIZER_KINDS))} "
                         "(register yours with l2lgd.register_optimizer_kind).")
    return OPTIMIZER_KINDS[kind].from_config(config, key=key)
