import math

import chex
import hypothesis.strategies as st
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings

import l2lgd

K_VALUES = (15.0, 30.0)


@pytest.mark.parametrize("k", K_VALUES)
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_log_rescale_round_trip_and_sign(k, data):
    # |g| in [e^-k, 1], both signs; a fixed shape so nothing recompiles per example.
    logs = data.draw(st.lists(st.floats(-k, 0.0), min_size=8, max_size=8))
    signs = data.draw(st.lists(st.sampled_from([-1.0, 1.0]), min_size=8, max_size=8))
    g = jnp.asarray(np.array(signs) * np.exp(logs), jnp.float32)
    t = l2lgd.LogRescale(k)
    features = t.encode(g)
    chex.assert_shape(features, (8, 1))
    # Sign preserved, and [e^-k, 1] lands in [0, 1].
    np.testing.assert_array_equal(np.sign(features[:, 0]), np.sign(g))
    assert np.all(np.abs(features) <= 1.0 + 1e-6)
    # decode inverts encode up to the e^(-k-5) offset, a relative error of at most e^-5.
    back, _ = t.decode(features)
    np.testing.assert_allclose(back, g, rtol=math.exp(-5) + 1e-4)


def test_log_rescale_matches_the_seed_formula():
    k = 15.0
    g = jnp.array([0.3, -1e-4, 2.0, 0.0])
    expected = np.sign(g) * (np.log(np.abs(g) + np.exp(-k - 5)) + k) / k
    np.testing.assert_allclose(l2lgd.LogRescale(k).encode(g)[:, 0], expected, rtol=1e-6)
    u = jnp.array([[0.5], [-0.25], [0.0]])
    np.testing.assert_allclose(
        l2lgd.LogRescale(k).decode(u)[0], np.sign(u[:, 0]) * np.exp(np.abs(u[:, 0]) * k - k), rtol=1e-6
    )


def test_smallest_step_is_e_to_minus_k():
    # The floor the reference notebook discusses: an output of (almost) 0 still steps by e^-k.
    step, _ = l2lgd.LogRescale(30.0).decode(jnp.array([[1e-9]]))
    np.testing.assert_allclose(step, [math.exp(-30.0)], rtol=1e-6)


def test_identity_round_trip():
    g = jnp.array([1.5, -2e-9, 0.0])
    t = l2lgd.Identity()
    np.testing.assert_array_equal(t.decode(t.encode(g))[0], g)


def test_make_preprocessing_rejects_unknown():
    with pytest.raises(ValueError, match="'nope'"):
        l2lgd.make_preprocessing("nope")


def test_paper_preprocessing_two_branches():
    p = 10.0
    t = l2lgd.make_preprocessing("paper", log_range=p, output_scale=0.1)
    big, small = 0.5, -1e-6  # |g| >= e^-p, and |g| < e^-p = 4.5e-5
    features = t.encode(jnp.array([big, -big, small, 0.0]))
    np.testing.assert_allclose(features[0], [np.log(big) / p, 1.0], rtol=1e-6)
    np.testing.assert_allclose(features[1], [np.log(big) / p, -1.0], rtol=1e-6)
    np.testing.assert_allclose(features[2], [-1.0, np.exp(p) * small], rtol=1e-5)
    np.testing.assert_allclose(features[3], [-1.0, 0.0])
    update, _ = t.decode(jnp.array([[2.0], [-0.5]]))
    np.testing.assert_allclose(update, [0.2, -0.05], rtol=1e-6)
