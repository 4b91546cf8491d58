"""Task families: the interface that meta-training and evaluation draw their tasks from.

A `TaskFamily` samples a task `(loss_fn, params0)` with a key; the unroll `vmap`s over tasks.
`loss_fn(params, key)` is an `eqx.Module` (so a batch of tasks is a pytree); it is always called
with a key (in meta-training, validation and evaluation alike), which draws a minibatch for a
stochastic family and is ignored by a deterministic one. `params0` is any
pytree of floating arrays. Subclass `TaskFamily` for your own tasks, and register it with
`register_task_family` to name it in a `Config`. The built-in kinds are one file each beside
this one.
"""

from __future__ import annotations

import abc
import warnings
from typing import Any, Callable, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray


class TaskFamily(eqx.Module):
    """A distribution over tasks: what a learned optimizer is meta-trained on.

    Subclasses declare `stochastic` (whether `loss_fn` draws a minibatch from its key) and
    implement `sample`. A family may declare its `horizon`: how many optimizee steps its tasks
    run for (a class attribute, or a static field to make it a setting); 0, the default, means
    none, and whoever runs its tasks decides (a config's `steps_per_task`). The suite and
    `FamilyMixture` members need a positive one. A family is a pytree (an `eqx.Module`): keep
    its configuration in static fields or arrays.

    Example:
        >>> class Bowl(eqx.Module):  # a task's loss: an Equinox module of (params, key)
        ...     scale: jax.Array
        ...     def __call__(self, x, key=None):
        ...         return jnp.sum((self.scale * x) ** 2)
        >>> class Bowls(l2lgd.TaskFamily):
        ...     stochastic = False
        ...     dim: int = eqx.field(static=True, default=3)
        ...     def sample(self, key):
        ...         scale_key, x_key = jax.random.split(key)
        ...         scale = jax.random.uniform(scale_key, (self.dim,), minval=0.5, maxval=2.0)
        ...         return Bowl(scale), jax.random.normal(x_key, (self.dim,))
        >>> loss_fn, x0 = Bowls().sample(jax.random.key(0))
        >>> l2lgd.unroll(optax.sgd(0.1), loss_fn, x0, 4).shape
        (4,)

        `l2lgd.train(config, out_dir, family=Bowls())` meta-trains on it.
    """

    stochastic: ClassVar[bool] = False
    # Not annotated, so not a dataclass (pseudo-)field: a subclass's `horizon` field then keeps its
    # own place among the subclass's fields (a ClassVar here would move it first).
    horizon = 0

    @abc.abstractmethod
    def sample(self, key: PRNGKeyArray) -> tuple[Callable[..., Float[Array, ""]], Any]:
        """One task drawn with `key`: `(loss_fn, params0)`."""

    def metrics(self, loss_fn, params) -> dict[str, Float[Array, ""]]:
        """What evaluation reports of a task's params after training, beyond the loss curve
        (e.g. held-out loss and accuracy). Default: nothing."""
        return {}

    @classmethod
    def from_config(cls, config) -> "TaskFamily":
        """The family that a `Config` naming it describes (default: `cls()`)."""
        return cls()


TASK_FAMILIES: dict[str, type[TaskFamily]] = {}


# The names l2lgd registers itself (`tasks/__init__` fills it): a user family may not take one.
BUILTIN_FAMILIES: set[str] = set()


def register_task_family(name: str):
    """Class decorator: makes a `TaskFamily` subclass available as `Config(task=name)`.

    A built-in name (e.g. "quadratic") is refused; registering another class under a name a user
    family already has replaces it, with a warning."""
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"A task family's name must be an identifier, got {name!r}.")

    def register(cls):
        if not (isinstance(cls, type) and issubclass(cls, TaskFamily)):
            raise TypeError(f"register_task_family({name!r}) expects a TaskFamily subclass, got {cls!r}.")
        current = TASK_FAMILIES.get(name)
        if current is not None and current is not cls:
            if name in BUILTIN_FAMILIES:
                raise ValueError(f"{name!r} is l2lgd's built-in task family {current.__name__}; register "
                                 f"{cls.__name__} under another name.")
            warnings.warn(f"register_task_family({name!r}): {cls.__qualname__} replaces {current.__qualname__}.", stacklevel=2)
        TASK_FAMILIES[name] = cls
        return cls

    return register


def task_family(config) -> TaskFamily:
    """The family named by `config.task`, built from the config."""
    if config.task not in TASK_FAMILIES:
        raise ValueError(
            f"Config.task={config.task!r} is not a registered task family; registered: "
            f"{', '.join(map(repr, TASK_FAMILIES))} (see l2lgd.register_task_family)."
        )
    return TASK_FAMILIES[config.task].from_config(config)


def training_family(config) -> TaskFamily:
    """The family meta-training draws from: `config.train_task`'s if set, else `config.task`'s."""
    return task_family(config.replace(task=config.train_task) if config.train_task else config)


def check_family(family: TaskFamily) -> None:
    """Fails early, naming what is wrong, when `family` does not sample valid tasks: floating
    `params0` leaves and a scalar floating loss. Traces one task (nothing is computed)."""
    if not isinstance(family, TaskFamily):
        raise TypeError(f"Expected an l2lgd.TaskFamily, got {type(family).__name__}.")
    name = type(family).__name__
    loss_fn, params = eqx.filter_eval_shape(family.sample, jax.random.key(0))
    if not isinstance(loss_fn, eqx.Module):
        raise TypeError(
            f"{name}.sample returns a loss_fn of type {type(loss_fn).__name__}; expected an eqx.Module "
            "(a pytree holding the task's arrays, so that a batch of tasks can be vmapped)."
        )
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    if not leaves:
        raise ValueError(f"{name}.sample returns params0 with no array leaves; expected a pytree of floating arrays.")
    for path, leaf in leaves:
        dtype = getattr(leaf, "dtype", None)
        if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(
                f"{name}.sample returns params0 whose leaf {jax.tree_util.keystr(path) or '<root>'} has "
                f"dtype {dtype}; expected floating arrays."
            )
    key = jax.random.key(1)
    value = eqx.filter_eval_shape(lambda: (lambda task: task[0](task[1], key))(family.sample(jax.random.key(0))))
    if getattr(value, "shape", None) != () or not jnp.issubdtype(value.dtype, jnp.floating):
        raise ValueError(
            f"{name}'s loss_fn(params, key) returns {getattr(value, 'dtype', type(value))}"
            f"{list(getattr(value, 'shape', []))}; expected a floating scalar."
        )


def draw_task(family: TaskFamily, key: PRNGKeyArray):
    """`(loss_fn, params0, minibatch_key_data)` of the task drawn with `key`."""
    loss_fn, x0 = family.sample(key)
    return loss_fn, x0, jax.random.key_data(jax.random.fold_in(key, 1))


def family_name(family: TaskFamily) -> str:
    """The name a family is stored under in a config: its registered name, else its class name."""
    names = [name for name, cls in TASK_FAMILIES.items() if cls is type(family)]
    return names[0] if names else type(family).__name__
