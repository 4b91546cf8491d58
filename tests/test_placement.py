"""Which device runs which member of a mixture (`estimators._placement`): the devices balanced by
the members' costs, a dominant member split, a small one whole; the cost estimate counts a scan's
body once a step. That the placed run gives the one-device result: tests/test_devices.py."""

import jax
import jax.numpy as jnp
import pytest
from jax import lax

import l2lgd
from l2lgd.estimators._pes import PES
from l2lgd.estimators._placement import SPLIT, jaxpr_cost, place_members, truncation_cost
from l2lgd.tasks._mixture import FamilyMixture


def loads(owners, whole, split, devices):
    busy = [sum(s for o, s in zip(owners, split) if o == SPLIT)] * devices
    for o, w in zip(owners, whole):
        if o != SPLIT:
            busy[o] += w
    return busy


def test_small_members_go_whole_and_balance_the_devices():
    whole = [5.0, 4.0, 3.0, 3.0, 2.0, 1.0]
    split = [w * 0.8 for w in whole]  # half the particles cost 0.8x: splitting does not pay
    owners = place_members(whole, split, 2)
    assert SPLIT not in owners
    assert loads(owners, whole, split, 2) == [9.0, 9.0]


def test_a_dominant_member_is_split():
    whole, split = [40.0, 4.0, 3.0, 2.0], [21.0, 3.5, 2.8, 1.9]
    owners = place_members(whole, split, 2)
    assert owners[0] == SPLIT and SPLIT not in owners[1:]
    assert max(loads(owners, whole, split, 2)) < 40.0


def test_one_device_and_bad_input():
    assert place_members([3.0, 1.0], [2.0, 0.6], 1) == (0, 0)
    with pytest.raises(ValueError, match="one split cost a member"):
        place_members([1.0], [1.0, 2.0], 2)
    with pytest.raises(ValueError, match="at least one device, got 0"):
        place_members([1.0], [1.0], 0)


def test_a_scan_body_counts_once_a_step():
    def body(c, _):
        return jnp.tanh(c) * 2.0, None

    once = jax.make_jaxpr(lambda x: body(x, None)[0])(jnp.ones(100)).jaxpr
    looped = jax.make_jaxpr(lambda x: lax.scan(body, x, None, length=7)[0])(jnp.ones(100)).jaxpr
    ops, written = jaxpr_cost(once)
    assert ops >= 2 and written >= 2 * 400
    assert jaxpr_cost(looped) == (7 * ops, 7 * written)
    whole, share, shapes = truncation_cost(lambda x: x * 3.0, jnp.ones(1000), devices=2)
    assert share < whole and shapes.shape == (1000,)


def test_member_placement_of_a_mixture():
    family = FamilyMixture((l2lgd.ConditionedQuadratics(4, 10.0, 20), l2lgd.LinearRegression(4, 3.0, 8, 20)),
                           ("quad", "linreg"))
    config = l2lgd.Config(num_steps=5, hidden_size=2, num_layers=1, estimator="pes", perturbations=2,
                          min_horizon=10, max_horizon=20)
    state, static = l2lgd.init_state(config, family)
    pes = PES.from_config(config)
    assert sorted(pes.member_placement(config, static, state.theta, family, 2)) == [0, 1]  # one member a device
    assert PES(pairs=2, balance=False).member_placement(config, static, state.theta, family, 2) == (SPLIT, SPLIT)
    with pytest.raises(ValueError, match="balance must be True or False"):
        PES(pairs=2, balance=1)
