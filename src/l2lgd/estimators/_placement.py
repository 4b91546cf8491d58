"""Which device runs which member of a mixture, for evolution strategies over several devices.

Splitting every member's antithetic pairs over the devices (each device half the particles of
every task) pays only where a member's work grows with its particles. A small member's truncation
costs about the same at any width: its time is the dispatch of its many small kernels, not their
arithmetic. On `general`'s train mixture, one core, a truncation of half the pairs costs 0.55x of
all of them for the transformer, 0.53-0.8x for the MLPs, the autoencoder, the convnet and the RNN,
and 0.73-1.0x for the regressions, the quadratic and Rosenbrock, so that two devices that split
everything ran 1.63-1.68x one.

So each member is placed: either split (its pairs shared by every device, as before) or whole on
one device (all its pairs there; the others skip it and add nothing to its sums). `place_members`
chooses the placement that balances the devices by an estimate of each member's cost
(`truncation_cost`), splitting the largest members while that shortens the busiest device.
Either way the estimate is the one-device estimate, summed in another order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax
import numpy as np

SPLIT = -1  # the placement of a member whose pairs every device shares

# What a traced operation costs beside its memory traffic, in bytes of that traffic: fitted to
# one core's times of the 13 train members' truncations (0.1 us an operation, 14 GB/s). The fit
# puts the largest members (the transformer, the sigmoid MLP, the autoencoder) within 15%, the
# small MLPs 1.4-1.7x too high, the convnet and the RNN at 0.6x and 0.75x: enough to balance.
OPERATION_BYTES = 1_500.0


def jaxpr_cost(jaxpr, times: int = 1) -> tuple[int, float]:
    """(operations, bytes written) of `jaxpr`, a scan's body counted once a step (a while loop's,
    whose trip count is unknown, and a cond's first branch once)."""
    operations, written = 0, 0.0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "scan":
            inner = [(eqn.params["jaxpr"].jaxpr, times * eqn.params["length"])]
        elif name == "while":
            inner = [(eqn.params["body_jaxpr"].jaxpr, times)]
        elif name == "cond":
            inner = [(eqn.params["branches"][0].jaxpr, times)]
        else:
            inner = [(getattr(p, "jaxpr", p), times) for p in eqn.params.values() if hasattr(p, "eqns")
                     or hasattr(getattr(p, "jaxpr", None), "eqns")]
        if inner:
            for sub, count in inner:
                ops, nbytes = jaxpr_cost(sub, count)
                operations, written = operations + ops, written + nbytes
            continue
        operations += times
        written += times * sum(math.prod(v.aval.shape) * np.dtype(v.aval.dtype).itemsize
                               for v in eqn.outvars if hasattr(v.aval, "shape") and hasattr(v.aval, "dtype")
                               and not jax.dtypes.issubdtype(v.aval.dtype, jax.dtypes.prng_key))
    return operations, written


def truncation_cost(fn: Callable, *args, devices: int = 1) -> tuple[float, float, object]:
    """(cost whole, cost of a device's share split over `devices`, output shapes) of `fn(*args)`
    (a member's truncation), in bytes of memory traffic: every traced operation costs
    `OPERATION_BYTES` whatever its width, and its traffic is shared by the devices."""
    closed, shapes = jax.make_jaxpr(fn, return_shape=True)(*args)
    operations, written = jaxpr_cost(closed.jaxpr)
    fixed = operations * OPERATION_BYTES
    return fixed + written, fixed + written / devices, shapes


def place_members(whole: Sequence[float], split: Sequence[float], devices: int) -> tuple[int, ...]:
    """Each member's device (0 .. devices - 1), or `SPLIT`, given its cost on one device
    (`whole`) and a device's cost of its share when split (`split`): the largest members are split
    while that shortens the busiest device, the others go whole to the least busy device, largest
    first (ties to the lower index)."""
    if len(whole) != len(split):
        raise ValueError(f"place_members needs one split cost a member: {len(whole)} whole, {len(split)} split.")
    if devices < 1:
        raise ValueError(f"place_members needs at least one device, got {devices}.")
    order = sorted(range(len(whole)), key=lambda m: (-whole[m], m))

    def placed(splits: set[int]) -> tuple[float, tuple[int, ...]]:
        loads = [sum(split[m] for m in splits)] * devices
        owners = [SPLIT] * len(whole)
        for m in order:
            if m not in splits:
                device = min(range(devices), key=lambda d: (loads[d], d))
                loads[device] += whole[m]
                owners[m] = device
        return max(loads), tuple(owners)

    splits: set[int] = set()
    best, owners = placed(splits)
    if devices == 1:
        return owners
    for m in order:
        busiest, candidate = placed(splits | {m})
        if busiest < best:
            splits, best, owners = splits | {m}, busiest, candidate
    return owners
