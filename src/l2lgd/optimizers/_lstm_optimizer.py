"""The first kind of learned optimizer: a coordinate-wise LSTM wrapped in a gradient
preprocessing (the reference's and the paper's), `OptimizerConfig(kind="lstm")`."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ._base import LearnedOptimizer
from ._lstm import ELEMENTWISE_MAX_HIDDEN, CoordinateLSTM, LSTMState
from ._preprocessing import Preprocessing, make_preprocessing

# Updates of more coordinates than this (all leaves together) run a small LSTM's products
# elementwise (`CoordinateLSTM.__call__`): a model-sized pytree. Smaller updates (the tasks of
# meta-training among them) keep the matrix products, so their results stay bit for bit those of
# earlier versions.
ELEMENTWISE_MIN_COORDINATES = 32_768


class LSTMOptimizer(LearnedOptimizer):
    """`update = decode(LSTM(encode(g)))` on a flat vector of coordinates.

    The arrays of `lstm` are the meta-parameters (theta); `preprocessing` holds no arrays. The
    state of a leaf is `(LSTMState, the preprocessing's state)`.
    """

    lstm: CoordinateLSTM
    preprocessing: Preprocessing

    @classmethod
    def from_config(cls, config, *, key: PRNGKeyArray) -> "LSTMOptimizer":
        """The preprocessing (`preprocessing`, `log_range`, `output_scale`) and the LSTM
        (`hidden_size`, `num_layers`) of an `OptimizerConfig`, the LSTM's weights from `key`."""
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
        return cls(preprocessing.init_network(lstm), preprocessing)

    def init_state(self, n: int, dtype=jnp.float32) -> tuple[LSTMState, Any]:
        """The optimizer's state for `n` coordinates: the LSTM's and the preprocessing's."""
        return self.lstm.init_state(n, dtype), self.preprocessing.init(n, dtype)

    def step(
        self, g: Float[Array, " n"], state: tuple[LSTMState, Any], *, total: int = 0, elementwise: bool | None = None
    ) -> tuple[Float[Array, " n"], tuple[LSTMState, Any]]:
        """One update for the gradient `g`: the reference's `g_rnn*` functions. `elementwise`
        (default: for updates of over `ELEMENTWISE_MIN_COORDINATES` in all, by a small LSTM):
        as for `CoordinateLSTM`."""
        elementwise = self.runs_elementwise(total) if elementwise is None else elementwise
        lstm_state, pre_state = state
        out, lstm_state = self.lstm(self.preprocessing.encode(g, pre_state), lstm_state, elementwise=elementwise)
        update, pre_state = self.preprocessing.decode(out, g, pre_state)
        return update, (lstm_state, pre_state)

    def runs_elementwise(self, total: int) -> bool:
        """Whether an update of `total` coordinates in all runs the LSTM's products elementwise:
        a small LSTM on a model-sized pytree."""
        return total > ELEMENTWISE_MIN_COORDINATES and self.lstm.hidden_size <= ELEMENTWISE_MAX_HIDDEN

    def coordinate_axes(self, state: tuple[LSTMState, Any], n: int) -> Any:
        """The LSTM's state has the coordinates on axis 1 ([layers, n, hidden]); the
        preprocessing's arrays of leading size `n` on axis 0, the others are shared."""
        lstm_state, pre_state = state
        pre_axes = jax.tree.map(lambda x: 0 if jnp.ndim(x) > 0 and jnp.shape(x)[0] == n else None, pre_state)
        return jax.tree.map(lambda x: 1, lstm_state), pre_axes
