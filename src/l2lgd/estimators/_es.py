"""`AntitheticES`: truncated antithetic evolution strategies (see `_evolution`)."""

from __future__ import annotations

from typing import ClassVar

from ._evolution import Evolution


class AntitheticES(Evolution):
    """Antithetic ES on each truncation alone: the estimate weights the current perturbation only,
    so it is the gradient of the truncation's objective given where the particles are (biased
    toward short horizons, like truncated backpropagation, but needing no backward pass)."""

    accumulate: ClassVar[bool] = False
