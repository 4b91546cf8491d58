import chex
import jax
import jax.numpy as jnp
import numpy as np

import l2lgd


def _numpy_tf1_step(lstm, x, c, h):
    """The TF1 stack of the seed, written out in numpy: InputProjection -> 2 x LSTMCell -> OutputProjection."""
    sig = lambda z: 1 / (1 + np.exp(-z))
    inp = x @ np.asarray(lstm.in_kernel) + np.asarray(lstm.in_bias)
    cs, hs = [], []
    for layer, (kernel, bias) in enumerate(zip(lstm.kernels, lstm.biases)):
        z = np.concatenate([inp, h[layer]], -1) @ np.asarray(kernel) + np.asarray(bias)
        i, j, f, o = np.split(z, 4, -1)
        c_new = sig(f + 1.0) * c[layer] + sig(i) * np.tanh(j)
        inp = sig(o) * np.tanh(c_new)
        cs.append(c_new)
        hs.append(inp)
    return inp @ np.asarray(lstm.out_kernel) + np.asarray(lstm.out_bias), np.stack(cs), np.stack(hs)


def test_matches_tf1_lstm_semantics(key):
    lstm = l2lgd.CoordinateLSTM(20, 2, key=key)
    # Non-zero biases, so gate order and forget bias are really exercised.
    lstm = jax.tree.map(lambda w: w + 0.1 * jnp.arange(w.size).reshape(w.shape) / w.size, lstm)
    x = np.array([[0.3], [-0.7], [1.2]], np.float32)
    state = lstm.init_state(3)
    out = None
    c, h = np.zeros((2, 3, 20), np.float32), np.zeros((2, 3, 20), np.float32)
    for _ in range(3):
        out, state = lstm(jnp.asarray(x), state)
        ref, c, h = _numpy_tf1_step(lstm, x, c, h)
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state.c, c, rtol=1e-5, atol=1e-6)


def test_init_is_glorot_uniform_with_zero_biases(key):
    lstm = l2lgd.CoordinateLSTM(20, 2, key=key)
    assert all(float(jnp.abs(b).max()) == 0.0 for b in (*lstm.biases, lstm.in_bias, lstm.out_bias))
    limit = np.sqrt(6 / (40 + 80))
    assert float(jnp.abs(lstm.kernels[0]).max()) <= limit
    assert float(jnp.abs(lstm.kernels[0]).max()) > 0.9 * limit
    chex.assert_shape(lstm.kernels, [(40, 80), (40, 80)])


def test_coordinate_wise_permutation_equivariance(key):
    opt = l2lgd.make_optimizer(l2lgd.Config(preprocessing="log_rescale"), key=key)
    g = jax.random.normal(jax.random.key(1), (7,))
    perm = jax.random.permutation(jax.random.key(2), 7)
    state = opt.init_state(7)
    u1, s1 = opt.step(g, state)
    u2, s2 = opt.step(g[perm], state)
    u1b, _ = opt.step(g * 0.5, s1)
    u2b, _ = opt.step(g[perm] * 0.5, s2)
    np.testing.assert_allclose(u1[perm], u2, rtol=1e-6)
    np.testing.assert_allclose(u1b[perm], u2b, rtol=1e-6)


class JitAgreement(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_jit_and_eager_agree(self):
        opt = l2lgd.make_optimizer(l2lgd.Config(preprocessing="log_rescale"), key=jax.random.key(0))
        g = jnp.array([0.5, -1e-3, 2e-7])
        step = self.variant(lambda g, s: opt.step(g, s))
        u, s = step(g, opt.init_state(3))
        ref_u, ref_s = opt.step(g, opt.init_state(3))
        chex.assert_trees_all_close((u, s), (ref_u, ref_s), rtol=1e-6, atol=1e-7)
        chex.assert_tree_all_finite((u, s))
