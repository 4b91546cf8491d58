"""A shipped learned optimizer inside an ordinary optax training loop of an Equinox model.

    python examples/use_pretrained.py           # 100 steps on scikit-learn's digits
    python examples/use_pretrained.py --quick   # 10 steps (used by the tests)

`l2lgd.load_optimizer(NAME)` returns an `optax.GradientTransformation`, used exactly like
`optax.adam(...)`. `python -m l2lgd list` shows the shipped optimizers and what each is for:
the `digits` optimizer was meta-trained on small MLPs of this kind, for 100 steps.
"""

from __future__ import annotations

import argparse

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from sklearn.datasets import load_digits

import l2lgd


def main(quick: bool = False, optimizer: str = "digits") -> list[float]:
    digits = load_digits()
    x = jnp.asarray(digits.data / 16.0, jnp.float32)
    y = jnp.asarray(digits.target)
    model = eqx.nn.MLP(64, 10, width_size=20, depth=1, activation=jax.nn.sigmoid, key=jax.random.key(0))

    def loss_fn(model, xb, yb):
        logits = jax.vmap(model)(xb)
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, yb))

    tx = l2lgd.load_optimizer(optimizer)
    # Keep a NaN or Inf gradient from reaching the learned optimizer's state.
    tx = optax.apply_if_finite(tx, max_consecutive_errors=5)
    params, static = eqx.partition(model, eqx.is_inexact_array)
    state = tx.init(params)

    @jax.jit
    def step(params, state, key):
        idx = jax.random.randint(key, (128,), 0, x.shape[0])
        loss, grads = jax.value_and_grad(lambda p: loss_fn(eqx.combine(p, static), x[idx], y[idx]))(params)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    losses = []
    for t in range(10 if quick else 100):
        params, state, loss = step(params, state, jax.random.key(t))
        losses.append(float(loss))
        if t % 10 == 0 or t == (9 if quick else 99):
            print(f"step {t:3d}: minibatch loss {loss:.4f}")
    full = loss_fn(eqx.combine(params, static), x, y)
    print(f"loss on all {x.shape[0]} images after {len(losses)} steps: {full:.4f}")
    return losses


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10 steps instead of 100")
    parser.add_argument("--optimizer", default="digits", help="a shipped optimizer's name, or a run folder")
    args = parser.parse_args()
    main(args.quick, args.optimizer)
