"""A small causal transformer language model on generated sequences: the kind of model most users
of an optimizer train, at a size a CPU meta-trains and evaluates.

Each sequence is `prompt SEP answer`; the model reads it left to right and is scored by the
next-token cross-entropy of the answer's tokens only. The sequence tasks (`SEQUENCE_TASKS`):
- "copy": the answer repeats the prompt;
- "reverse": the prompt backwards;
- "sort": the prompt's tokens in increasing order;
- "modadd": the prompt is two numbers a, b in base `vocab - 1` (most significant digit first), the
  answer (a + b) mod base**digits, digit by digit.
Every minibatch is drawn afresh from the step's key (no data set to download or overfit); the
test split is a fixed batch. The architecture is GPT-2's in miniature: learned token and position
embeddings, pre-LayerNorm blocks of causal multi-head self-attention and a GELU MLP (4x wide),
a final LayerNorm and an untied read-out.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from ._base import TaskFamily, register_task_family

SEQUENCE_TASKS = ("copy", "reverse", "sort", "modadd")
TEST_KEY = 7_000_011  # the fixed test sequences


def sequence_batch(key, task: str, size: int, digits: int, vocab: int) -> tuple[Int[Array, "size length"], int]:
    """`(tokens [size, 2 * digits + 1], answer_start)`: prompts of `digits` symbols (tokens
    0..vocab-2), the separator `vocab - 1`, then the answer of `digits` symbols."""
    base = vocab - 1
    sep = jnp.full((size, 1), base, jnp.int32)
    if task == "modadd":
        a_key, b_key = jax.random.split(key)
        half = digits // 2
        a = jax.random.randint(a_key, (size, half), 0, base)
        b = jax.random.randint(b_key, (size, digits - half), 0, base)
        prompt = jnp.concatenate([a, b], axis=1)
        answer = _add_digits(jnp.pad(a, ((0, 0), (digits - half, 0))), jnp.pad(b, ((0, 0), (half, 0))), base)
    else:
        prompt = jax.random.randint(key, (size, digits), 0, base)
        answer = {"copy": lambda p: p, "reverse": lambda p: p[:, ::-1], "sort": lambda p: jnp.sort(p, axis=1)}[task](prompt)
    return jnp.concatenate([prompt, sep, answer], axis=1).astype(jnp.int32), digits + 1


def _add_digits(a, b, base: int):
    """Digit-wise (a + b) mod base**digits of two [size, digits] numbers, most significant first."""
    def step(carry, ab):
        total = ab[0] + ab[1] + carry
        return total // base, total % base

    _, out = jax.lax.scan(step, jnp.zeros(a.shape[0], a.dtype), (a.T[::-1], b.T[::-1]))
    return out[::-1].T


def _layer_norm(x, gain, bias):
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + 1e-5) * gain + bias


def transformer_apply(params, tokens: Int[Array, "batch length"], heads: int) -> Float[Array, "batch length vocab"]:
    """The logits of the next token at every position (causal)."""
    length = tokens.shape[1]
    x = params["embed"][tokens] + params["position"][:length]
    mask = jnp.tril(jnp.ones((length, length), bool))
    for block in params["blocks"]:
        h = _layer_norm(x, block["ln1_gain"], block["ln1_bias"])
        q, k, v = jnp.split(h @ block["qkv"] + block["qkv_bias"], 3, axis=-1)
        split = lambda t: t.reshape(*t.shape[:2], heads, -1)
        q, k, v = split(q), split(k), split(v)
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1])
        scores = jnp.where(mask, scores, -1e9)
        attended = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(scores, axis=-1), v).reshape(x.shape)
        x = x + attended @ block["out"] + block["out_bias"]
        h = _layer_norm(x, block["ln2_gain"], block["ln2_bias"])
        x = x + jax.nn.gelu(h @ block["up"] + block["up_bias"]) @ block["down"] + block["down_bias"]
    x = _layer_norm(x, params["ln_gain"], params["ln_bias"])
    return x @ params["unembed"]


class SequenceLoss(eqx.Module):
    """Cross-entropy of the answer's tokens on a fresh minibatch (the test split: a fixed batch)."""

    task: str = eqx.field(static=True)
    digits: int = eqx.field(static=True)
    vocab: int = eqx.field(static=True)
    heads: int = eqx.field(static=True)
    minibatch: int = eqx.field(static=True)
    split: str = eqx.field(static=True, default="train")

    def batch(self, key):
        if self.split == "test":
            key, size = jax.random.key(TEST_KEY), 256
        elif key is None:
            raise ValueError("The sequence task's training loss needs a minibatch key.")
        else:
            size = self.minibatch
        return sequence_batch(key, self.task, size, self.digits, self.vocab)

    def answer_logits(self, params, tokens, start: int):
        """The logits predicting each answer token, and those tokens."""
        logits = transformer_apply(params, tokens[:, :-1], self.heads)
        return logits[:, start - 1:], tokens[:, start:]

    def __call__(self, params, key=None) -> Float[Array, ""]:
        tokens, start = self.batch(key)
        logits, targets = self.answer_logits(params, tokens, start)
        log_probs = jax.nn.log_softmax(logits, axis=-1)
        return -jnp.mean(jnp.take_along_axis(log_probs, targets[..., None], axis=-1))


@register_task_family("transformer_lm")
class TransformerLM(TaskFamily):
    """A causal transformer of `depth` blocks, `width` units and `heads` heads on one of the
    `SEQUENCE_TASKS` with prompts of `digits` symbols from a vocabulary of `vocab` tokens (the
    last one the separator). Each task is a fresh initialization (GPT-2's: normal(0, 0.02), the
    residual projections scaled by 1/sqrt(2 * depth))."""

    stochastic = True
    task: str = eqx.field(static=True, default="copy")
    width: int = eqx.field(static=True, default=32)
    depth: int = eqx.field(static=True, default=2)
    heads: int = eqx.field(static=True, default=2)
    vocab: int = eqx.field(static=True, default=12)
    digits: int = eqx.field(static=True, default=6)
    minibatch: int = eqx.field(static=True, default=32)
    horizon: int = eqx.field(static=True, default=500)

    def __check_init__(self):
        if self.task not in SEQUENCE_TASKS:
            raise ValueError(f"TransformerLM.task={self.task!r} is not one of {', '.join(map(repr, SEQUENCE_TASKS))}.")
        for field in ("width", "depth", "heads", "vocab", "digits", "minibatch", "horizon"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                raise ValueError(f"TransformerLM.{field} must be a positive integer, got {value!r}.")
        if self.width % self.heads:
            raise ValueError(f"TransformerLM.width={self.width} must be a multiple of heads={self.heads}.")
        if self.vocab < 3:
            raise ValueError(f"TransformerLM.vocab={self.vocab} must be at least 3 (two symbols and the separator).")

    def num_params(self) -> int:
        return sum(x.size for x in jax.tree.leaves(jax.eval_shape(lambda: self.sample(jax.random.key(0))[1])))

    def sample(self, key):
        w, v, length = self.width, self.vocab, 2 * self.digits + 1
        keys = iter(jax.random.split(key, 3 + 4 * self.depth))
        normal = lambda shape, scale=0.02: scale * jax.random.normal(next(keys), shape)
        residual = 0.02 / math.sqrt(2 * self.depth)
        blocks = tuple(
            {
                "ln1_gain": jnp.ones(w), "ln1_bias": jnp.zeros(w),
                "qkv": normal((w, 3 * w)), "qkv_bias": jnp.zeros(3 * w),
                "out": normal((w, w), residual), "out_bias": jnp.zeros(w),
                "ln2_gain": jnp.ones(w), "ln2_bias": jnp.zeros(w),
                "up": normal((w, 4 * w)), "up_bias": jnp.zeros(4 * w),
                "down": normal((4 * w, w), residual), "down_bias": jnp.zeros(w),
            }
            for _ in range(self.depth)
        )
        params = {
            "embed": normal((v, w)), "position": normal((length, w)), "blocks": blocks,
            "ln_gain": jnp.ones(w), "ln_bias": jnp.zeros(w), "unembed": normal((w, v)),
        }
        return SequenceLoss(self.task, self.digits, self.vocab, self.heads, self.minibatch), params

    def metrics(self, loss_fn, params):
        """The test split's loss and next-token accuracy on the answers, and the training loss on
        a fixed large batch of the training distribution."""
        test = SequenceLoss(loss_fn.task, loss_fn.digits, loss_fn.vocab, loss_fn.heads, loss_fn.minibatch, "test")
        tokens, start = test.batch(None)
        logits, targets = test.answer_logits(params, tokens, start)
        train = SequenceLoss(loss_fn.task, loss_fn.digits, loss_fn.vocab, loss_fn.heads, 256)
        return {
            "train_loss": train(params, jax.random.key(TEST_KEY + 1)),
            "test_loss": test(params),
            "test_accuracy": jnp.mean(jnp.argmax(logits, axis=-1) == targets),
        }
