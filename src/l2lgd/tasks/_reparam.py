"""Task augmentation by reparameterization: the same task in coordinates rescaled per tensor.

`Reparameterized(loss_fn, scales)` is the task `phi -> loss_fn(scales * phi)`, started from
`params0 / scales`: the same losses along the same path, but a gradient `scales` times larger and a
learning rate `1 / scales` times the one the task wanted (for Adam-like, scale-free updates). An
optimizer meta-trained on tasks rescaled by random factors cannot bake one learning rate in: it has
to find each task's (learned_optimization augments its task families the same way). Meta-training
draws the factors per tensor, log-uniform on [1/max_scale, max_scale] (`Config.reparam_scale`);
validation and evaluation draw the tasks as they are.
"""

from __future__ import annotations

import math
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from ._base import TaskFamily, draw_task


class Reparameterized(eqx.Module):
    """`loss_fn(scales * params, key)`: a task's loss in rescaled coordinates (one factor per leaf)."""

    loss_fn: Any
    scales: Any  # params' structure: a scalar per leaf

    def __call__(self, params, key=None):
        return self.loss_fn(jax.tree.map(lambda p, s: p * s, params, self.scales), key)


def reparameterize(task, key, max_scale: float):
    """`task` = `(loss_fn, params0, minibatch_key)` rescaled by factors drawn with `key` (per leaf,
    log-uniform on [1/max_scale, max_scale]); `max_scale == 1` returns `task` itself."""
    if max_scale == 1:
        return task
    loss_fn, x0, minibatch = task
    leaves, treedef = jax.tree.flatten(x0)
    keys = jax.random.split(key, len(leaves))
    bound = math.log(max_scale)
    scales = treedef.unflatten([
        jnp.exp(jax.random.uniform(k, (), minval=-bound, maxval=bound)).astype(leaf.dtype)
        for k, leaf in zip(keys, leaves)
    ])
    return Reparameterized(loss_fn, scales), jax.tree.map(lambda p, s: p / s, x0, scales), minibatch


def draw_rescaled(family: TaskFamily, key, max_scale: float):
    """`draw_task(family, key)`, rescaled as `reparameterize` does with a key folded from `key`:
    how meta-training draws its tasks (`max_scale == 1`: exactly `draw_task`)."""
    return reparameterize(draw_task(family, key), jax.random.fold_in(key, 2), max_scale)
