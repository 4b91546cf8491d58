"""The coordinate-wise two-layer LSTM of the paper and the reference notebook.

Every coordinate of the optimizee is one row of a batch: the weights are shared by all
coordinates and no information crosses rows. Semantics follow TF1's stack in the reference,
`OutputProjectionWrapper(InputProjectionWrapper(MultiRNNCell([LSTMCell(20)] * 2), 20), 1)`:
gate order (i, j, f, o), forget bias +1.0, Glorot-uniform kernels, zero biases, zero state.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray


class LSTMState(NamedTuple):
    """Cell and hidden states of every layer, each `[num_layers, n, hidden_size]`."""

    c: Float[Array, "layers n hidden"]
    h: Float[Array, "layers n hidden"]


def glorot_uniform(key: PRNGKeyArray, fan_in: int, fan_out: int) -> Float[Array, "fan_in fan_out"]:
    """TF's default `glorot_uniform_initializer` for a `[fan_in, fan_out]` kernel."""
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return jax.random.uniform(key, (fan_in, fan_out), minval=-limit, maxval=limit)


def gate_activations(gates: Float[Array, "n 4hidden"], forget_bias: float) -> Float[Array, "n 4hidden"]:
    """(sigmoid(i), tanh(j), sigmoid(f + forget_bias), sigmoid(o)) of the gates (i, j, f, o), in one
    elementwise pass: sigmoid(x) = (1 + tanh(x / 2)) / 2, so every gate costs one tanh, and the
    result is one array (on CPU one kernel instead of four)."""
    hidden = gates.shape[-1] // 4
    is_tanh = np.repeat(np.array([0.0, 1.0, 0.0, 0.0]), hidden)
    scale = 0.5 + 0.5 * is_tanh  # input and output scale: 1/2 for the sigmoids, 1 for tanh
    shift = np.repeat(np.array([0.0, 0.0, 0.5 * forget_bias, 0.0]), hidden)
    dtype = gates.dtype
    inner = jnp.tanh(gates * scale.astype(dtype) + shift.astype(dtype))
    return inner * scale.astype(dtype) + (0.5 - 0.5 * is_tanh).astype(dtype)


class CoordinateLSTM(eqx.Module):
    """Input projection -> `num_layers` LSTM cells -> output projection, applied row-wise.

    Kernels are stored TF-style, `[in, out]`, and applied as `x @ kernel + bias`.
    """

    in_kernel: Float[Array, "features hidden"]
    in_bias: Float[Array, " hidden"]
    kernels: tuple[Float[Array, "2hidden 4hidden"], ...]
    biases: tuple[Float[Array, " 4hidden"], ...]
    out_kernel: Float[Array, "hidden outputs"]
    out_bias: Float[Array, " outputs"]
    forget_bias: float = eqx.field(static=True)

    def __init__(
        self,
        hidden_size: int = 20,
        num_layers: int = 2,
        *,
        num_features: int = 1,
        num_outputs: int = 1,
        forget_bias: float = 1.0,
        key: PRNGKeyArray,
    ):
        in_key, out_key, *cell_keys = jax.random.split(key, num_layers + 2)
        self.in_kernel = glorot_uniform(in_key, num_features, hidden_size)
        self.in_bias = jnp.zeros(hidden_size)
        self.kernels = tuple(glorot_uniform(k, 2 * hidden_size, 4 * hidden_size) for k in cell_keys)
        self.biases = tuple(jnp.zeros(4 * hidden_size) for _ in cell_keys)
        self.out_kernel = glorot_uniform(out_key, hidden_size, num_outputs)
        self.out_bias = jnp.zeros(num_outputs)
        self.forget_bias = float(forget_bias)

    @property
    def hidden_size(self) -> int:
        return self.in_bias.shape[-1]

    @property
    def num_layers(self) -> int:
        return len(self.kernels)

    def init_state(self, n: int, dtype=jnp.float32) -> LSTMState:
        """The zero state for `n` coordinates."""
        zeros = jnp.zeros((self.num_layers, n, self.hidden_size), dtype)
        return LSTMState(zeros, zeros)

    def __call__(
        self, features: Float[Array, "n features"], state: LSTMState, *, elementwise: bool = False
    ) -> tuple[Float[Array, "n outputs"], LSTMState]:
        """One step of every row. `elementwise` writes each small matrix product as a sum of
        broadcast multiply-adds (`products`): the same numbers up to float rounding, and on CPU
        one fused pass instead of a matrix kernel per product, faster for small hidden sizes
        (`ELEMENTWISE_MAX_HIDDEN`) on many rows."""
        x = products(features, self.in_kernel, elementwise) + self.in_bias
        cs, hs = [], []
        for layer, (kernel, bias) in enumerate(zip(self.kernels, self.biases)):
            gates = products(jnp.concatenate([x, state.h[layer]], axis=-1), kernel, elementwise) + bias
            i, j, f, o = jnp.split(gate_activations(gates, self.forget_bias), 4, axis=-1)
            c = f * state.c[layer] + i * j
            x = o * jnp.tanh(c)
            cs.append(c)
            hs.append(x)
        out = products(x, self.out_kernel, elementwise) + self.out_bias
        return out, LSTMState(jnp.stack(cs), jnp.stack(hs))


# The largest hidden size for which `elementwise` products beat the matrix kernels on CPU on a
# model-sized update (`python -m l2lgd.lab.bench_face` measures both; the README has the figures).
ELEMENTWISE_MAX_HIDDEN = 8


def products(x: Float[Array, "n k"], kernel: Float[Array, "k m"], elementwise: bool) -> Float[Array, "n m"]:
    """`x @ kernel`, or with `elementwise` the same as k broadcast multiply-adds of `x`'s columns
    and `kernel`'s rows (which XLA fuses with the elementwise work around them)."""
    if not elementwise:
        return x @ kernel
    total = x[..., 0:1] * kernel[0]
    for k in range(1, kernel.shape[0]):
        total = total + x[..., k : k + 1] * kernel[k]
    return total
