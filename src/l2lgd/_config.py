"""Experiment configuration in three sections: what the optimizer is, what it is trained on, and
how it is meta-trained. Frozen and hashable (a static jit argument), stored in every checkpoint."""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import json
import math
import re
from typing import Any

from ._objectives import OBJECTIVES
from .estimators._named import ESTIMATORS, estimator_for
from .optimizers._kinds import OPTIMIZER_KINDS
from .optimizers._preprocessing import PREPROCESSINGS
from .optimizers._prodigy_controller import SCHEDULES
from .tasks import TASK_FAMILIES
from .tasks._data import DATASETS

ACTIVATIONS = ("sigmoid", "relu")
MAX_HORIZON = 2**24  # float32 holds every whole number up to here: drawn horizons stay whole truncations

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


def _positive_ints(section: Any, *fields: str) -> None:
    for field in fields:
        value = getattr(section, field)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"Config.{field} must be a positive integer, got {value!r}.")


def _positive_numbers(section: Any, *fields: str) -> None:
    for field in fields:
        value = getattr(section, field)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or not math.isfinite(value):
            raise ValueError(f"Config.{field} must be a positive number and finite, got {value!r}.")


def _booleans(section: Any, *fields: str) -> None:
    for field in fields:
        if not isinstance(getattr(section, field), bool):
            raise ValueError(f"Config.{field} must be True or False, got {getattr(section, field)!r}.")


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """What the learned optimizer is: its kind (`l2lgd.register_optimizer_kind`; "lstm": the
    coordinate-wise LSTM on a preprocessing) and the kind's settings."""

    kind: str = "lstm"
    preprocessing: str = "identity"
    # Gradients are seen on a log scale over [e^-log_range, 1]: k of log_rescale, p of the paper's.
    log_range: float = 15.0
    output_scale: float = 0.1  # the paper's preprocessing: update = output_scale * LSTM output
    hidden_size: int = 20  # the LSTM's
    num_layers: int = 2
    # The largest step size a kind that carries one may reach (AdamController's upper bound).
    max_lr: float = 1.0
    # AdamController: steps relative to the tensor's RMS (see its module).
    relative_steps: bool = False
    # ProdigyController: a fixed schedule of Prodigy's step under the learned multiplier:
    # "constant" (Prodigy's own) or "cosine" (from 1 down to 5% at the horizon; see its module).
    schedule: str = "constant"

    def __post_init__(self):
        if _CHECK_TASK.get():  # a stored config may name a kind registered only where it is used
            _check_choice("kind", self.kind, tuple(OPTIMIZER_KINDS))
        _check_choice("preprocessing", self.preprocessing, tuple(PREPROCESSINGS))
        _positive_ints(self, "hidden_size", "num_layers")
        _positive_numbers(self, "log_range", "output_scale", "max_lr")
        _booleans(self, "relative_steps")
        _check_choice("schedule", self.schedule, SCHEDULES)
        if self.schedule != "constant" and self.kind != "prodigy_controller":
            raise ValueError(f"Config.schedule={self.schedule!r} is the prodigy_controller kind's setting, "
                             f"but kind={self.kind!r}: leave schedule at 'constant' for it.")


@dataclasses.dataclass(frozen=True)
class TaskConfig:
    """What it is trained and judged on: a task family (`task`, any registered name) and the
    built-in families' settings. `horizon` is the optimizee steps per task when a task is unrolled
    in several truncations (0: one unroll of `MetaTrainingConfig.num_steps`)."""

    task: str = "quadratic"
    dim: int = 2  # the quadratics'
    horizon: int = 0
    # The optimizee MLP (task="digits"): its hidden layers (not the LSTM's, `hidden_size`).
    mlp_hidden_units: tuple[int, ...] = (20,)
    mlp_activation: str = "sigmoid"
    minibatch: int = 128
    dataset: str = "digits"  # which of scikit-learn's bundled data sets the MLP learns
    # The family meta-training draws its tasks from, when it is not `task` (which model
    # selection and evaluation use): e.g. a mixture of variants around the target task.
    train_task: str = ""

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
        _check_choice("mlp_activation", self.mlp_activation, ACTIVATIONS)
        if not isinstance(self.mlp_hidden_units, tuple) or not self.mlp_hidden_units or not all(
            isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in self.mlp_hidden_units
        ):
            raise ValueError(
                f"Config.mlp_hidden_units must be a non-empty tuple of positive integers, got {self.mlp_hidden_units!r}."
            )
        if isinstance(self.horizon, bool) or not isinstance(self.horizon, int) or self.horizon < 0:
            raise ValueError(f"Config.horizon must be 0 or a positive integer, got {self.horizon!r}.")
        _positive_ints(self, "dim", "minibatch")


@dataclasses.dataclass(frozen=True)
class MetaTrainingConfig:
    """How it is meta-trained: the unroll behind one meta-gradient (`num_steps` optimizee steps),
    the meta-objective on its losses, and the meta-optimizer (Adam after clipping)."""

    num_steps: int = 20
    objective: str = "sum"
    second_order: bool = True
    meta_steps: int = 20_000
    batch_size: int = 1
    meta_lr: float = 3e-4
    clip_norm: float = 1.0
    per_task_clip: bool = False
    # How the meta-gradient is estimated: the name of an estimator (`l2lgd.estimators`; the
    # registry `estimators._named.ESTIMATORS` builds it from this section). The fields below are
    # the stored form of the estimators' settings, which each estimator reads into its own fields
    # (`from_config`): `per_task_clip` and `second_order` above for backpropagation;
    # `perturbations` (its `pairs`), `sigma`, `min_horizon`/`max_horizon` (tasks' horizons drawn
    # log-uniformly between them, 0 and 0: the family's own) and `heldout_minibatch` (each loss of
    # the meta-objective on another minibatch than its gradient's, Metz et al. 2019) for
    # evolution strategies ("es", "pes").
    estimator: str = "fused"
    perturbations: int = 8
    sigma: float = 0.01
    min_horizon: int = 0
    max_horizon: int = 0
    heldout_minibatch: bool = False
    # Task augmentation (`l2lgd.tasks.reparameterize`): every task meta-training draws is rescaled
    # per tensor by factors log-uniform on [1/reparam_scale, reparam_scale], so that no learning
    # rate can be baked in; 1: the tasks as drawn. Validation and evaluation never rescale.
    reparam_scale: float = 1.0

    def __post_init__(self):
        _check_choice("objective", self.objective, tuple(OBJECTIVES))
        known = self.estimator in ESTIMATORS
        if _CHECK_TASK.get() or known:  # a stored config may name an estimator registered elsewhere
            _check_choice("estimator", self.estimator, tuple(ESTIMATORS))
        _positive_ints(self, "num_steps", "meta_steps", "batch_size", "perturbations")
        _positive_numbers(self, "meta_lr", "clip_norm", "sigma")
        _booleans(self, "second_order", "per_task_clip", "heldout_minibatch")
        if (isinstance(self.reparam_scale, bool) or not isinstance(self.reparam_scale, (int, float))
                or not math.isfinite(self.reparam_scale) or not self.reparam_scale >= 1):
            raise ValueError(f"Config.reparam_scale must be a finite number of at least 1 (1: no rescaling), "
                             f"got {self.reparam_scale!r}.")
        for field in ("min_horizon", "max_horizon"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"Config.{field} must be 0 or a positive integer, got {value!r}.")
        if self.max_horizon > MAX_HORIZON:
            raise ValueError(f"Config.max_horizon={self.max_horizon} is beyond {MAX_HORIZON:,} optimizee steps, where "
                             "horizons drawn in float32 are no longer whole numbers of truncations.")
        if (self.min_horizon == 0) != (self.max_horizon == 0) or self.max_horizon < self.min_horizon:
            raise ValueError(
                f"Config.min_horizon={self.min_horizon} and max_horizon={self.max_horizon} must both be 0 (the "
                "family's horizon) or satisfy 0 < min_horizon <= max_horizon."
            )
        if self.min_horizon and self.min_horizon < self.num_steps:
            raise ValueError(
                f"Config.min_horizon={self.min_horizon} is shorter than one truncation (num_steps={self.num_steps}): "
                "a task must last at least one truncated unroll."
            )
        if known:
            estimator_for(self)  # the estimator checks the settings it takes and those it refuses


SECTIONS: dict[str, type] = {"optimizer": OptimizerConfig, "tasks": TaskConfig, "training": MetaTrainingConfig}
# Each field of a section -> the section it is in (field names are unique across sections).
SECTION_OF = {f.name: section for section, cls in SECTIONS.items() for f in dataclasses.fields(cls)}
TOP_FIELDS = ("name", "seed")
# The order of the stored form (that of the flat Config before sections, so files stay the same).
STORED_ORDER = (
    "name", "task", "dim", "num_steps", "horizon", "mlp_hidden_units", "mlp_activation", "minibatch", "dataset",
    "train_task", "preprocessing", "log_range", "output_scale", "hidden_size", "num_layers", "objective",
    "second_order", "meta_steps", "batch_size", "meta_lr", "clip_norm", "per_task_clip", "seed",
    *(NEW_FIELDS := ("estimator", "perturbations", "sigma", "min_horizon", "max_horizon", "heldout_minibatch",
                      "reparam_scale", "kind", "max_lr", "relative_steps", "schedule")),
)
assert sorted(STORED_ORDER) == sorted((*TOP_FIELDS, *SECTION_OF))


@dataclasses.dataclass(frozen=True, init=False)
class Config:
    """Everything that determines a meta-training run's result, in three sections.

    - `optimizer` (`OptimizerConfig`): what the learned optimizer is;
    - `tasks` (`TaskConfig`): the task family it is trained and judged on;
    - `training` (`MetaTrainingConfig`): how it is meta-trained;
    - `name` (the run's folder) and `seed` (its initial weights and every task it draws).

    Built from the fields of any section by name (`Config(hidden_size=4, meta_steps=10)`), or
    from sections (`Config(optimizer=OptimizerConfig(...))`); every field also reads flat
    (`config.hidden_size` is `config.optimizer.hidden_size`), which is how it is stored
    (`to_dict`) and overridden (`replace`, the CLI's `--set FIELD=VALUE`).

    One unroll records `num_steps` losses f(x_0) ... f(x_{T-1}), each *before* its update, as the
    reference's `learn()` does; the "final loss" is f(x_{T-1}). Three step counts:
    `num_steps` optimizee steps per unroll (one meta-gradient), `horizon` optimizee steps per
    task when a task is unrolled in several truncations (`steps_per_task` is whichever
    applies), and `meta_steps` updates of the learned optimizer (the CLI's `--steps`).

    Example:
        >>> config = l2lgd.Config(hidden_size=4, meta_steps=10)
        >>> config.optimizer.hidden_size, config.hidden_size, config.training.meta_steps
        (4, 4, 10)
    """

    name: str
    seed: int
    optimizer: OptimizerConfig
    tasks: TaskConfig
    training: MetaTrainingConfig

    def __init__(
        self,
        name: str = "custom",
        seed: int = 0,
        optimizer: OptimizerConfig | None = None,
        tasks: TaskConfig | None = None,
        training: MetaTrainingConfig | None = None,
        **fields: Any,
    ):
        _check_fields(fields)
        given = {"optimizer": optimizer, "tasks": tasks, "training": training}
        for section, cls in SECTIONS.items():
            mine = {k: v for k, v in fields.items() if SECTION_OF[k] == section}
            base = given[section]
            if base is None:
                value = cls(**mine)
            elif not isinstance(base, cls):
                raise TypeError(f"Config.{section} must be an instance of {cls.__name__}, got {type(base).__name__}.")
            else:
                value = dataclasses.replace(base, **mine) if mine else base
            object.__setattr__(self, section, value)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "seed", seed)
        self._check()

    def _check(self) -> None:
        if self.tasks.horizon and self.tasks.horizon % self.training.num_steps:
            raise ValueError(
                f"Config.horizon={self.tasks.horizon} must be a multiple of num_steps={self.training.num_steps} "
                "(the length of one truncated unroll)."
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**32:
            # JAX keys keep 32 bits of an integer seed: larger seeds would alias smaller ones.
            raise ValueError(f"Config.seed must be an integer in [0, 2**32), got {self.seed!r}.")
        if not isinstance(self.name, str) or not NAME.fullmatch(self.name):
            raise ValueError(
                f"Config.name must be letters, digits, '_', '-' or '.' (not starting with '.'), got "
                f"{self.name!r}: it names the run's folder."
            )

    def __getattr__(self, field: str) -> Any:
        """A section's field, read flat: `config.hidden_size` is `config.optimizer.hidden_size`."""
        section = SECTION_OF.get(field)
        if section is None:
            raise AttributeError(f"'Config' object has no attribute {field!r}")
        return getattr(object.__getattribute__(self, section), field)

    @property
    def steps_per_task(self) -> int:
        """Optimizee steps per task: the horizon of truncated training, else `num_steps`."""
        return self.tasks.horizon or self.training.num_steps

    @property
    def truncations(self) -> int:
        """Truncated unrolls per task (1 when not truncated)."""
        return self.steps_per_task // self.training.num_steps

    def replace(self, **changes: Any) -> "Config":
        """A copy with `changes` (fields of any section by name, or whole sections) applied and
        validated; unknown fields are an error."""
        flat = {k: v for k, v in changes.items() if k not in SECTIONS and k not in TOP_FIELDS}
        _check_fields(flat)
        current = {k: getattr(self, k) for k in (*TOP_FIELDS, *SECTIONS)}
        return Config(**{**current, **{k: v for k, v in changes.items() if k not in flat}}, **flat)

    def to_dict(self) -> dict[str, Any]:
        """Every field by its flat name (the stored form). Fields added after 0.3 are left out
        at their defaults, so a config that does not use them is stored as before."""
        defaults = {section: cls() for section, cls in SECTIONS.items()}
        return {field: getattr(self, field) for field in STORED_ORDER
                if field not in NEW_FIELDS or getattr(self, field) != getattr(defaults[SECTION_OF[field]], field)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Config":
        """The config `to_dict` gave, also as stored before fields were renamed (`RENAMED`)."""
        data = {RENAMED.get(k, k): v for k, v in data.items()}
        _check_fields({k: v for k, v in data.items() if k not in TOP_FIELDS})
        if isinstance(data.get("mlp_hidden_units"), list):  # JSON has no tuples
            data["mlp_hidden_units"] = tuple(data["mlp_hidden_units"])
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def changed_fields(self, other: "Config", ignore: tuple[str, ...] = RESUMABLE_FIELDS) -> list[str]:
        """Names of the fields whose values differ between `self` and `other`."""
        return [k for k in STORED_ORDER if k not in ignore and getattr(self, k) != getattr(other, k)]


# Off while reading a stored config: an exported optimizer loads without the code of the task
# family it was trained on, or of its estimator (a user's own need not be registered in the
# loading process).
_CHECK_TASK = contextvars.ContextVar("l2lgd_check_task", default=True)


@contextlib.contextmanager
def stored_configs():
    """Within this block, `Config.task` may name a family, `Config.estimator` an estimator and
    `Config.kind` an optimizer kind that are not registered here."""
    token = _CHECK_TASK.set(False)
    try:
        yield
    finally:
        _CHECK_TASK.reset(token)


def _check_choice(field: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"Config.{field}={value!r} is not one of {', '.join(map(repr, allowed))}.")


def _check_fields(data: dict[str, Any]) -> None:
    known = set(SECTION_OF)
    unknown = sorted(set(data) - known)
    renamed = [f"{k!r} is now {RENAMED[k]!r}" for k in unknown if k in RENAMED]
    if renamed:
        raise ValueError(f"Renamed Config field(s): {'; '.join(renamed)}.")
    if unknown:
        raise ValueError(
            f"Unknown Config field(s) {', '.join(map(repr, unknown))}; "
            f"known fields are {', '.join(sorted(known | set(TOP_FIELDS)))}."
        )
