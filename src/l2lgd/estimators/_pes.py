"""`PES`: persistent evolution strategies (Vicol, Metz and Sohl-Dickstein 2021; see `_evolution`)."""

from __future__ import annotations

from typing import ClassVar

from ._evolution import Evolution


class PES(Evolution):
    """Antithetic PES: each pair's perturbations are summed over the truncations since its task
    began, and the truncation's antithetic difference weights that sum, which makes the estimate
    unbiased for the whole horizon's objective (the sum of every truncation's) with no backward
    pass and no stored trajectory."""

    accumulate: ClassVar[bool] = True
