"""`FamilyMixture`: several task families meta-trained on together (e.g. the suite's `train` split).

Tasks of different families have different parameter shapes, so a mixture is not sampled as one
family: each meta-step draws tasks of every member (`members`), each member's batch vmapped and
unrolled in the same compiled step. Snapshots are scored on every member at its own horizon.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx

from ._base import TaskFamily, check_family


class FamilyMixture(TaskFamily):
    """Task families trained on together, named (`names`) for records and errors.

    Each member must declare a positive integer `horizon` (its tasks' length in optimizee steps;
    `TaskFamily.horizon`).
    `sample` draws from the first member only: a mixture's members are drawn by the estimators of
    `l2lgd.estimators` that support it (`es`, `pes`), one batch per member.
    """

    members: tuple[TaskFamily, ...] = eqx.field(static=True)
    names: tuple[str, ...] = eqx.field(static=True)

    def __check_init__(self):
        if not self.members or len(self.members) != len(self.names):
            raise ValueError(
                f"FamilyMixture needs one name per member and at least one member, got {len(self.members)} "
                f"member(s) and {len(self.names)} name(s)."
            )
        for name, member in zip(self.names, self.members):
            if isinstance(member, FamilyMixture) or not isinstance(member, TaskFamily):
                raise TypeError(f"FamilyMixture member {name!r} must be a TaskFamily (not a mixture), got {type(member).__name__}.")
            horizon = member.horizon
            if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon <= 0:
                raise ValueError(f"FamilyMixture member {name!r} must declare a positive integer `horizon`, got {horizon!r}.")

    @property
    def stochastic(self) -> bool:  # type: ignore[override]
        return self.members[0].stochastic

    def sample(self, key) -> tuple[Any, Any]:
        return self.members[0].sample(key)


def members_of(family: TaskFamily) -> tuple[tuple[str, TaskFamily], ...]:
    """`(name, family)` of each member of a mixture, or of `family` alone."""
    if isinstance(family, FamilyMixture):
        return tuple(zip(family.names, family.members))
    return ((type(family).__name__, family),)


def check_members(family: TaskFamily) -> None:
    """`check_family` on every member (naming the member that fails)."""
    for name, member in members_of(family):
        try:
            check_family(member)
        except (TypeError, ValueError) as e:
            raise type(e)(f"Mixture member {name!r}: {e}") from None
