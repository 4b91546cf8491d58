"""The transformer language model family: its sequence tasks, causality, size and a few steps of
training (tiny settings)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import l2lgd
from l2lgd.tasks._transformer import sequence_batch, transformer_apply


def test_sequence_tasks_answer_their_prompts():
    for task in ("copy", "reverse", "sort"):
        tokens, start = sequence_batch(jax.random.key(0), task, 16, 5, 9)
        tokens = np.asarray(tokens)
        prompt, sep, answer = tokens[:, :5], tokens[:, 5], tokens[:, start:]
        np.testing.assert_array_equal(sep, 8)
        expected = {"copy": prompt, "reverse": prompt[:, ::-1], "sort": np.sort(prompt, axis=1)}[task]
        np.testing.assert_array_equal(answer, expected)
    tokens, start = np.asarray(sequence_batch(jax.random.key(1), "modadd", 16, 6, 11)[0]), 7
    number = lambda digits: sum(int(d) * 10**i for i, d in enumerate(digits[::-1]))
    for row in tokens:
        a, b, answer = number(row[:3]), number(row[3:6]), number(row[7:])
        assert answer == (a + b) % 10**6  # base 10 (vocab 11), six answer digits


def test_the_model_is_causal_and_sized_as_declared():
    family = l2lgd.TransformerLM(task="sort", width=16, depth=1, heads=2, vocab=7, digits=3)
    _, params = family.sample(jax.random.key(0))
    tokens = jnp.array([[1, 2, 3, 6, 1, 2, 3]])
    changed = tokens.at[0, 5].set(0)
    a, b = transformer_apply(params, tokens, 2), transformer_apply(params, changed, 2)
    np.testing.assert_array_equal(a[0, :5], b[0, :5])  # nothing before position 5 sees it
    assert not np.allclose(a[0, 5:], b[0, 5:])
    assert family.num_params() == sum(x.size for x in jax.tree.leaves(params))
    assert l2lgd.TransformerLM(width=64, depth=2).num_params() >= 100_000


def test_adam_learns_to_copy_and_the_metrics_see_it():
    family = l2lgd.TransformerLM(task="copy", width=16, depth=1, heads=2, vocab=6, digits=3, minibatch=16)
    loss_fn, params = family.sample(jax.random.key(0))
    tx = optax.adam(1e-2)

    def step(carry, key):
        p, s = carry
        g = jax.grad(loss_fn)(p, key)
        u, s = tx.update(g, s, p)
        return (optax.apply_updates(p, u), s), None

    before = family.metrics(loss_fn, params)
    (trained, _), _ = jax.jit(lambda p: jax.lax.scan(step, (p, tx.init(p)), jax.random.split(jax.random.key(1), 150)))(params)
    after = family.metrics(loss_fn, trained)
    assert float(after["test_loss"]) < 0.5 * float(before["test_loss"])
    assert float(after["test_accuracy"]) > float(before["test_accuracy"])
    assert set(after) == {"train_loss", "test_loss", "test_accuracy"}


def test_bad_settings_are_refused_by_name():
    with pytest.raises(ValueError, match="task='parse' is not one of"):
        l2lgd.TransformerLM(task="parse")
    with pytest.raises(ValueError, match="width=30 must be a multiple of heads=4"):
        l2lgd.TransformerLM(width=30, heads=4)
    with pytest.raises(ValueError, match="digits must be a positive integer"):
        l2lgd.TransformerLM(digits=0)
