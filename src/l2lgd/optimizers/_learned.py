"""The learned optimizer: a coordinate-wise LSTM wrapped in a gradient preprocessing."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .._config import OptimizerConfig
from ._lstm import CoordinateLSTM, LSTMState
from ._preprocessing import Preprocessing, make_preprocessing


class LearnedOptimizer(eqx.Module):
    """`update = decode(LSTM(encode(g)))` on a flat vector of coordinates.

    The arrays of `lstm` are the meta-parameters (theta); `preprocessing` holds no arrays.
    """

    lstm: CoordinateLSTM
    preprocessing: Preprocessing

    def init_state(self, n: int, dtype=jnp.float32) -> tuple[LSTMState, Any]:
        """The optimizer's state for `n` coordinates: the LSTM's and the preprocessing's."""
        return self.lstm.init_state(n, dtype), self.preprocessing.init(n, dtype)

    def step(
        self, g: Float[Array, " n"], state: tuple[LSTMState, Any], *, elementwise: bool = False
    ) -> tuple[Float[Array, " n"], tuple[LSTMState, Any]]:
        """One update for the gradient `g`: the reference's `g_rnn*` functions (`elementwise`:
        as for `CoordinateLSTM`)."""
        lstm_state, pre_state = state
        out, lstm_state = self.lstm(self.preprocessing.encode(g, pre_state), lstm_state, elementwise=elementwise)
        update, pre_state = self.preprocessing.decode(out, g, pre_state)
        return update, (lstm_state, pre_state)


def make_optimizer(config, *, key: PRNGKeyArray) -> LearnedOptimizer:
    """A freshly initialised learned optimizer.

    Args:
        config: an `OptimizerConfig`, or a `Config` (its `optimizer` section): the
            preprocessing (`preprocessing`, `log_range`, `output_scale`) and the LSTM
            (`hidden_size`, `num_layers`).
        key: draws the LSTM's initial weights.

    Returns:
        A `LearnedOptimizer` (an Equinox module; `as_optax` makes it an optax transformation).
    """
    config = config if isinstance(config, OptimizerConfig) else config.optimizer
    preprocessing = make_preprocessing(
        config.preprocessing, log_range=config.log_range, output_scale=config.output_scale
    )
    lstm = CoordinateLSTM(
        config.hidden_size,
        config.num_layers,
        num_features=preprocessing.num_features,
        num_outputs=preprocessing.num_outputs,
        key=key,
    )
    return LearnedOptimizer(preprocessing.init_network(lstm), preprocessing)


def cast_optimizer(opt: LearnedOptimizer, dtype) -> LearnedOptimizer:
    """`opt` with its floating arrays cast to `dtype` (a no-op when they already are)."""
    return jax.tree.map(lambda w: w.astype(dtype) if eqx.is_inexact_array(w) else w, opt)
