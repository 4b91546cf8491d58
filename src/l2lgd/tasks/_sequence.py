"""A recurrent network on a synthetic sequence task: the adding problem (Hochreiter and
Schmidhuber): the sum of the two marked values of a sequence of uniform values."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Array, Float

from ._base import TaskFamily, register_task_family

TEST_KEY = 7_000_003  # the fixed test sequences


def adding_batch(key, size: int, length: int):
    """`(inputs [size, length, 2], targets [size])`: values ~ U(0, 1) and a 0/1 marker on two
    positions (one in each half); the target is the sum of the two marked values."""
    v_key, a_key, b_key = jax.random.split(key, 3)
    values = jax.random.uniform(v_key, (size, length))
    first = jax.random.randint(a_key, (size,), 0, length // 2)
    second = jax.random.randint(b_key, (size,), length // 2, length)
    marks = jax.nn.one_hot(first, length) + jax.nn.one_hot(second, length)
    return jnp.stack([values, marks], axis=-1), jnp.sum(values * marks, axis=1)


def rnn_apply(params, inputs):
    """A tanh RNN over the sequence, a linear read-out of its last state."""
    def step(h, x):
        return jnp.tanh(x @ params["w_in"] + h @ params["w_rec"] + params["b"]), None

    h0 = jnp.zeros((inputs.shape[0], params["w_rec"].shape[0]), inputs.dtype)
    h, _ = lax.scan(step, h0, jnp.swapaxes(inputs, 0, 1))
    return h @ params["w_out"] + params["b_out"]


class AddingLoss(eqx.Module):
    """Mean squared error of the RNN on a fresh minibatch of sequences (the test split: fixed ones)."""

    length: int = eqx.field(static=True)
    minibatch: int = eqx.field(static=True)
    split: str = eqx.field(static=True, default="train")

    def __call__(self, params, key=None) -> Float[Array, ""]:
        if self.split == "test":
            key, size = jax.random.key(TEST_KEY), 512
        elif key is None:
            raise ValueError("The adding task's training loss needs a minibatch key.")
        else:
            size = self.minibatch
        inputs, targets = adding_batch(key, size, self.length)
        return jnp.mean(jnp.square(rnn_apply(params, inputs) - targets))


@register_task_family("rnn_adding")
class RNNAdding(TaskFamily):
    """A tanh RNN of `hidden` units on the adding problem with sequences of `length` steps."""

    stochastic = True
    length: int = eqx.field(static=True, default=10)
    hidden: int = eqx.field(static=True, default=16)
    minibatch: int = eqx.field(static=True, default=32)
    horizon: int = eqx.field(static=True, default=300)

    def sample(self, key):
        k_in, k_rec, k_out = jax.random.split(key, 3)
        h = self.hidden
        params = {
            "w_in": jax.random.normal(k_in, (2, h)) / np.sqrt(2),
            "w_rec": jax.random.normal(k_rec, (h, h)) / np.sqrt(h),
            "b": jnp.zeros(h),
            "w_out": jax.random.normal(k_out, (h,)) / np.sqrt(h),
            "b_out": jnp.zeros(()),
        }
        return AddingLoss(self.length, self.minibatch), params

    def metrics(self, loss_fn, params):
        test = AddingLoss(loss_fn.length, loss_fn.minibatch, "test")
        # A training loss over a fixed large batch of the training distribution (not the test one).
        inputs, targets = adding_batch(jax.random.key(TEST_KEY + 1), 512, loss_fn.length)
        return {"train_loss": jnp.mean(jnp.square(rnn_apply(params, inputs) - targets)), "test_loss": test(params)}
