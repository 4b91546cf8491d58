"""Meta-train a learned optimizer on your own family of tasks, then compare it with tuned Adam.

    python examples/custom_task.py           # about a minute of meta-training on 2 cores
    python examples/custom_task.py --quick   # a few seconds, same code path (used by the tests)

The family here is logistic regression on synthetic data: each task draws a true weight vector,
inputs and noisy labels; the optimizee starts at w = 0. Any `TaskFamily` works the same way:
`sample(key) -> (loss_fn, params0)`, with `loss_fn(params, key)` an `eqx.Module`.
"""

from __future__ import annotations

import argparse
import tempfile

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float

import l2lgd


class LogisticLoss(eqx.Module):
    """Mean logistic loss of a linear classifier on one task's data."""

    x: Float[Array, "samples dim"]
    y: Float[Array, " samples"]  # labels in {-1, +1}

    def __call__(self, w: Float[Array, " dim"], key=None) -> Float[Array, ""]:
        return jnp.mean(jax.nn.softplus(-self.y * (self.x @ w)))


class LogisticRegression(l2lgd.TaskFamily):
    """Synthetic logistic regression: w_true ~ N(0, I), x ~ N(0, I), y = sign(x.w_true + noise)."""

    stochastic = False  # the loss uses all of the task's data: no minibatch key needed
    dim: int = eqx.field(static=True, default=10)
    samples: int = eqx.field(static=True, default=100)

    def sample(self, key):
        w_key, x_key, noise_key = jax.random.split(key, 3)
        w_true = jax.random.normal(w_key, (self.dim,))
        x = jax.random.normal(x_key, (self.samples, self.dim))
        y = jnp.sign(x @ w_true + 0.5 * jax.random.normal(noise_key, (self.samples,)))
        return LogisticLoss(x, y), jnp.zeros(self.dim)


def main(quick: bool = False, out: str | None = None) -> dict[str, float]:
    family = LogisticRegression()
    config = l2lgd.Config(
        name="logistic",
        num_steps=5 if quick else 20,  # each task: 20 optimizer steps, every loss counted (sum of log losses)
        preprocessing="moments",  # Adam's statistics in, a direction and a step size out
        objective="sum",  # the sum of the losses over the unroll: what the comparison below measures
        second_order=False,
        batch_size=8,
        meta_lr=3e-3,
        meta_steps=20 if quick else 3_000,
    )
    options = l2lgd.RunOptions(checkpoint_every=10 if quick else 500, validation_tasks=8 if quick else 64, progress=not quick)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = out or f"{tmp}/logistic"
        result = l2lgd.train(config, run_dir, options, family=family)
        learned = l2lgd.load_optimizer(run_dir)  # loads without this file's code
        print(f"meta-trained {int(result.state.step)} meta-steps in {result.wall_time:.0f} s; exported step {result.best_step}")

        tasks = 16 if quick else 500
        test = l2lgd.task_keys(l2lgd.TEST_SEED, tasks)  # tasks never seen in meta-training
        validation = l2lgd.task_keys(l2lgd.VALIDATION_SEED, 8 if quick else 64)
        # Adam's learning rate: the one with the lowest mean final loss on validation tasks.
        lr, _ = l2lgd.tune_learning_rate(
            optax.adam, np.logspace(-3, 2, 6 if quick else 21), config, validation, family=family, progress=False, score="loss"
        )
        finals = {
            "learned": l2lgd.run_optimizer(learned, config, test, family=family)[:, -1],
            f"adam (lr {lr:.3g}, tuned)": l2lgd.run_optimizer(optax.adam(lr), config, test, family=family)[:, -1],
        }
    summary = {}
    for name, losses in finals.items():
        s = l2lgd.summarize(losses)
        summary[name] = s["loss_mean"]
        print(f"{name:>24}: mean final loss {s['loss_mean']:.4f} ± {s['loss_ci95']:.4f} over {tasks} held-out tasks")
    return summary


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a few seconds of work, same code path")
    parser.add_argument("--out", help="keep the run folder here (default: a temporary folder)")
    args = parser.parse_args()
    main(args.quick, args.out)
