"""Experiment configuration: a frozen, hashable dataclass that is stored in every checkpoint."""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import json
import math
import re
from typing import Any

from ._preprocessing import PREPROCESSINGS
from ._tasks import DATASETS, TASK_FAMILIES
from ._unroll import OBJECTIVES

ACTIVATIONS = ("sigmoid", "relu")

NAME = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]*")

# Fields that may differ between a run and the checkpoint it resumes from.
RESUMABLE_FIELDS = ("meta_steps",)

# Old field name -> its name now. Checkpoints written before l2lgd 0.3 (the shipped ones among
# them) store the old names; `from_dict` reads both.
RENAMED = {
    "hidden_units": "mlp_hidden_units",
    "activation": "mlp_activation",
    "min_log_gradient": "log_range",
    "per_problem_clip": "per_task_clip",
}


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything that determines a meta-training run's result.

    Task family (the reference's): f(x) = sum((scale * x)**2), scale ~ U(0.5, 1.5), x0 ~ U(-1, 1).
    One unroll records `num_steps` losses f(x_0) ... f(x_{T-1}), each *before* its update, as
    the reference's `learn()` does; so with T = 20 the "final loss" is f(x_19).

    Three step counts: `num_steps` optimizee steps per unroll (one meta-gradient), `horizon`
    optimizee steps per task when a task is unrolled in several truncations (`steps_per_task`
    is whichever applies), and `meta_steps` updates of the learned optimizer (the CLI's
    `--steps`).
    """

    name: str = "custom"
    # Task family.
    task: str = "quadratic"
    dim: int = 2
    num_steps: int = 20
    horizon: int = 0  # 0: one unroll of num_steps; else truncated unrolls up to this horizon
    # The optimizee MLP (task="digits"): its hidden layers (not the LSTM's, `hidden_size`).
    mlp_hidden_units: tuple[int, ...] = (20,)
    mlp_activation: str = "sigmoid"
    minibatch: int = 128
    dataset: str = "digits"  # which of scikit-learn's bundled data sets the MLP learns
    # The family meta-training draws its tasks from, when it is not `task` (which model
    # selection and evaluation use): e.g. a mixture of variants around the target task.
    train_task: str = ""
    # Learned optimizer.
    preprocessing: str = "identity"
    # Gradients are seen on a log scale over [e^-log_range, 1]: k of log_rescale, p of the paper's.
    log_range: float = 15.0
    output_scale: float = 0.1  # the paper's preprocessing: update = output_scale * LSTM output
    hidden_size: int = 20  # the LSTM's
    num_layers: int = 2
    # Meta-objective on the unroll's losses.
    objective: str = "sum"
    second_order: bool = True
    # Meta-training.
    meta_steps: int = 20_000
    batch_size: int = 1
    meta_lr: float = 3e-4
    clip_norm: float = 1.0
    per_task_clip: bool = False
    seed: int = 0

    def __post_init__(self):
        if _CHECK_TASK.get():
            _check_choice("task", self.task, tuple(TASK_FAMILIES))
        elif not isinstance(self.task, str) or not self.task:
            raise ValueError(f"Config.task must be a task family's name, got {self.task!r}.")
        _check_choice("dataset", self.dataset, DATASETS)
        if self.train_task and _CHECK_TASK.get():
            _check_choice("train_task", self.train_task, tuple(TASK_FAMILIES))
        elif not isinstance(self.train_task, str):
            raise ValueError(f"Config.train_task must be a task family's name or '', got {self.train_task!r}.")
        _check_choice("preprocessing", self.preprocessing, tuple(PREPROCESSINGS))
        _check_choice("objective", self.objective, tuple(OBJECTIVES))
        _check_choice("mlp_activation", self.mlp_activation, ACTIVATIONS)
        if not isinstance(self.mlp_hidden_units, tuple) or not self.mlp_hidden_units or not all(
            isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in self.mlp_hidden_units
        ):
            raise ValueError(
                f"Config.mlp_hidden_units must be a non-empty tuple of positive integers, got {self.mlp_hidden_units!r}."
            )
        if isinstance(self.horizon, bool) or not isinstance(self.horizon, int) or self.horizon < 0:
            raise ValueError(f"Config.horizon must be 0 or a positive integer, got {self.horizon!r}.")
        if self.horizon and self.horizon % self.num_steps:
            raise ValueError(
                f"Config.horizon={self.horizon} must be a multiple of num_steps={self.num_steps} "
                "(the length of one truncated unroll)."
            )
        for field in ("dim", "num_steps", "hidden_size", "num_layers", "meta_steps", "batch_size", "minibatch"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"Config.{field} must be a positive integer, got {value!r}.")
        for field in ("log_range", "meta_lr", "clip_norm", "output_scale"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or not math.isfinite(value):
                raise ValueError(f"Config.{field} must be a positive number and finite, got {value!r}.")
        for field in ("second_order", "per_task_clip"):
            if not isinstance(getattr(self, field), bool):
                raise ValueError(f"Config.{field} must be True or False, got {getattr(self, field)!r}.")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**32:
            # JAX keys keep 32 bits of an integer seed: larger seeds would alias smaller ones.
            raise ValueError(f"Config.seed must be an integer in [0, 2**32), got {self.seed!r}.")
        if not isinstance(self.name, str) or not NAME.fullmatch(self.name):
            raise ValueError(
                f"Config.name must be letters, digits, '_', '-' or '.' (not starting with '.'), got "
                f"{self.name!r}: it names the run's folder."
            )

    @property
    def steps_per_task(self) -> int:
        """Optimizee steps per task: the horizon of truncated training, else `num_steps`."""
        return self.horizon or self.num_steps

    @property
    def truncations(self) -> int:
        """Truncated unrolls per task (1 when not truncated)."""
        return self.steps_per_task // self.num_steps

    def replace(self, **changes: Any) -> "Config":
        """A copy with `changes` applied (and validated); unknown fields are an error."""
        _check_fields(changes)
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Config":
        """The config `to_dict` gave, also as stored before fields were renamed (`RENAMED`)."""
        data = {RENAMED.get(k, k): v for k, v in data.items()}
        _check_fields(data)
        if isinstance(data.get("mlp_hidden_units"), list):  # JSON has no tuples
            data["mlp_hidden_units"] = tuple(data["mlp_hidden_units"])
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def changed_fields(self, other: "Config", ignore: tuple[str, ...] = RESUMABLE_FIELDS) -> list[str]:
        """Names of the fields whose values differ between `self` and `other`."""
        mine, theirs = self.to_dict(), other.to_dict()
        return [k for k in mine if k not in ignore and mine[k] != theirs[k]]


# Off while reading a stored config: an exported optimizer loads without the code of the task
# family it was trained on (a user's own family need not be registered in the loading process).
_CHECK_TASK = contextvars.ContextVar("l2lgd_check_task", default=True)


@contextlib.contextmanager
def stored_configs():
    """Within this block, `Config.task` may name a family that is not registered here."""
    token = _CHECK_TASK.set(False)
    try:
        yield
    finally:
        _CHECK_TASK.reset(token)


def _check_choice(field: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"Config.{field}={value!r} is not one of {', '.join(map(repr, allowed))}.")


def _check_fields(data: dict[str, Any]) -> None:
    known = {f.name for f in dataclasses.fields(Config)}
    unknown = sorted(set(data) - known)
    renamed = [f"{k!r} is now {RENAMED[k]!r}" for k in unknown if k in RENAMED]
    if renamed:
        raise ValueError(f"Renamed Config field(s): {'; '.join(renamed)}.")
    if unknown:
        raise ValueError(
            f"Unknown Config field(s) {', '.join(map(repr, unknown))}; "
            f"known fields are {', '.join(sorted(known))}."
        )
