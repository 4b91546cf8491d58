"""The suite's tasks: named task families with a kind and a split.

The splits, and what each may be used for:
- `train`: what meta-training may draw from (`training_mixture("train")`).
- `validation`: never meta-trained on; for choosing a learned optimizer's design, settings and
  snapshot (`training_mixture("validation")` gives them to a run's model selection).
- `heldout`: never used to meta-train, select, tune or design an optimizer; scored once, at the
  end, for the optimizer chosen on `validation`.
The splits differ in architecture or data, not only in seeds, and each has transformer language
models. Within a family the instances of meta-training, baseline tuning (`INSTANCE_SEEDS`'
"validation" instances, not to be confused with the validation split) and test come from disjoint
seeds. A family whose model is large (100k parameters and more) may cap its instances
(`SuiteTask.max_instances`) to fit a CPU's budget; the report says how many it used.
"""

from __future__ import annotations

import numbers
from typing import NamedTuple

import equinox as eqx
import jax
import numpy as np

from ..tasks import TaskFamily, check_family, draw_task
from ..tasks._classifiers import Autoencoder, ConvDigits, MLPClassifier
from ..tasks._functions import ConditionedQuadratics, RosenbrockFunctions
from ..tasks._mixture import FamilyMixture
from ..tasks._regression import LinearRegression, LogisticRegression
from ..tasks._sequence import RNNAdding
from ..tasks._transformer import TransformerLM

SPLITS = ("train", "validation", "heldout")
# What `select` reads as a whole selection, so no task may be named so.
SELECTIONS = (*SPLITS, "all")
# Seeds of each family's instance sets (meta-training draws from `train`; `l2lgd.train`'s own
# keys come from the run's seed, split from these).
INSTANCE_SEEDS = {"train": 11_000_003, "validation": 12_000_003, "test": 13_000_003}


class SuiteTask(NamedTuple):
    """One task family of the suite: its name, kind, split and family (which declares its
    `horizon` and reports `train_loss` and, where it has a test split, `test_loss` and
    `test_accuracy` through `metrics`); `max_instances`, where not None, caps the baselines'
    tuning instances and every optimizer's test instances on it (large models on a CPU)."""

    name: str
    kind: str
    split: str
    family: TaskFamily
    max_instances: int | None = None

    @property
    def horizon(self) -> int:
        return int(self.family.horizon)


SUITE: dict[str, SuiteTask] = {}


def register_suite_task(name: str, kind: str, split: str, family: TaskFamily, max_instances: int | None = None) -> SuiteTask:
    """Adds a family to the suite under `name`, after checking that it samples valid tasks whose
    loss, gradients and `train_loss` metric are finite at initialization (a family that is not
    is refused, naming it). `name` is an identifier other than a selection's words (heldout,
    train, all); `kind` a non-empty string; the family's `horizon` a positive integer (a Python
    or NumPy integer, not a bool); `max_instances` None or an integer of at least 2. Returns the
    `SuiteTask`."""
    if not isinstance(split, str) or split not in SPLITS:
        raise ValueError(f"A suite task's split must be one of {', '.join(map(repr, SPLITS))}, got {split!r}.")
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"A suite task's name must be an identifier, got {name!r}.")
    if name in SELECTIONS:
        raise ValueError(f"A suite task may not be named {name!r}: {', '.join(SELECTIONS)} select whole splits "
                         "(`--tasks heldout`); choose another name.")
    if not isinstance(kind, str) or not kind.strip() or "|" in kind or "\n" in kind:
        raise ValueError(f"Suite task {name!r}: its kind must be a non-empty string without '|' or line breaks (a "
                         f"table cell, e.g. 'mlp'), got {kind!r}.")
    if name in SUITE:
        raise ValueError(f"The suite already has a task named {name!r} ({SUITE[name].family!r}).")
    if max_instances is not None and (isinstance(max_instances, (bool, np.bool_))
                                      or not isinstance(max_instances, numbers.Integral) or max_instances < 2):
        raise ValueError(f"Suite task {name!r}: max_instances must be None or an integer of at least 2, got "
                         f"{max_instances!r}.")
    check_family(family)
    horizon = getattr(family, "horizon", None)
    if isinstance(horizon, (bool, np.bool_)) or not isinstance(horizon, numbers.Integral) or horizon <= 0:
        raise ValueError(f"Suite task {name!r}: its family must declare a positive integer `horizon`, got "
                         f"{horizon!r}.")
    _check_finite_at_init(name, family)
    task = SuiteTask(name, kind, split, family, None if max_instances is None else int(max_instances))
    SUITE[name] = task
    return task


def _check_finite_at_init(name: str, family: TaskFamily) -> None:
    @eqx.filter_jit
    def probe(key):
        loss_fn, params, minibatch = draw_task(family, key)
        loss, grads = jax.value_and_grad(loss_fn)(params, jax.random.wrap_key_data(minibatch))
        return loss, grads, family.metrics(loss_fn, params)

    loss, grads, metrics = probe(jax.random.key(INSTANCE_SEEDS["validation"]))
    values = {"loss": loss, **{f"gradient {jax.tree_util.keystr(p)}": g for p, g in jax.tree_util.tree_flatten_with_path(grads)[0]},
              **{f"metric {k}": v for k, v in metrics.items()}}
    bad = [k for k, v in values.items() if not np.all(np.isfinite(np.asarray(v)))]
    if "train_loss" not in metrics:
        raise ValueError(f"Suite task {name!r}: {type(family).__name__}.metrics must report 'train_loss'.")
    if bad:
        raise ValueError(f"Suite task {name!r} ({family!r}) is not finite at initialization: {', '.join(bad)}.")


def select(tasks: str | list[str] | tuple[str, ...] | None = "heldout") -> list[SuiteTask]:
    """The suite's tasks named by `tasks`: a split ("heldout", "validation", "train"), "all", or
    names (a list, or one string of comma-separated names); None is the default, "heldout". An
    unknown name is an error that lists the splits and the known names."""
    if tasks is None:
        tasks = "heldout"
    if isinstance(tasks, str):
        if tasks in SPLITS:
            return [t for t in SUITE.values() if t.split == tasks]
        if tasks == "all":
            return list(SUITE.values())
        tasks = [t.strip() for t in tasks.split(",") if t.strip()]
    if not isinstance(tasks, (list, tuple)) or not all(isinstance(t, str) for t in tasks):
        raise ValueError(f"Suite tasks are named by a split ({', '.join(SPLITS)}), all, or a list of task names; "
                         f"got {tasks!r}.")
    unknown = [t for t in tasks if t not in SUITE]
    if unknown or not tasks:
        raise ValueError(f"Unknown suite task(s) {', '.join(map(repr, unknown)) or '(none given)'}; "
                         f"choose a split ({', '.join(SPLITS)}), all, or names of: {', '.join(SUITE)}.")
    return [SUITE[t] for t in tasks]


def _builtin() -> None:
    for name, kind, split, family in (
        # What meta-training may draw from.
        ("mlp_tanh_mixture8", "mlp", "train", MLPClassifier("mixture8", (32,), "tanh", 64, 300)),
        ("mlp_sigmoid_digits", "mlp", "train", MLPClassifier("digits", (32,), "sigmoid", 128, 200)),
        ("mlp_relu_spirals", "mlp", "train", MLPClassifier("spirals", (32, 32), "relu", 64, 500)),
        ("mlp_relu_teacher", "mlp", "train", MLPClassifier("teacher", (16,), "relu", 32, 300)),
        ("mlp_gelu_wine", "mlp", "train", MLPClassifier("wine", (16,), "gelu", 16, 200)),
        ("conv_digits_c4", "conv", "train", ConvDigits(4, "relu", 32, 200)),
        ("autoencoder_sigmoid", "autoencoder", "train", Autoencoder((16,), "sigmoid", 64, 300)),
        ("linreg_cond10", "linear", "train", LinearRegression(20, 10.0, 32, 200)),
        ("logreg_cond1e3", "logistic", "train", LogisticRegression(20, 1e3, 64, 300)),
        ("quadratic_cond100", "quadratic", "train", ConditionedQuadratics(20, 100.0, 200)),
        ("rosenbrock_2d", "function", "train", RosenbrockFunctions(2, 1000)),
        ("rnn_adding_10", "rnn", "train", RNNAdding(10, 16, 32, 300)),
        ("transformer_copy_w16", "transformer", "train", TransformerLM("copy", 16, 1, 2, 8, 4, 16, 300)),
        # Validation: for choosing designs, settings and snapshots; never meta-trained on.
        ("mlp_relu_wine_2x32", "mlp", "validation", MLPClassifier("wine", (32, 32), "relu", 32, 300)),
        ("mlp_tanh_mixture16_64", "mlp", "validation", MLPClassifier("mixture16", (64,), "tanh", 128, 300)),
        ("mlp_gelu_teacher_3x16", "mlp", "validation", MLPClassifier("teacher", (16, 16, 16), "gelu", 64, 400)),
        ("conv_digits_c6_gelu", "conv", "validation", ConvDigits(6, "gelu", 32, 300)),
        ("autoencoder_tanh_32", "autoencoder", "validation", Autoencoder((32,), "tanh", 64, 300)),
        ("linreg_cond1e3_d40", "linear", "validation", LinearRegression(40, 1e3, 64, 400)),
        ("logreg_cond100_d30", "logistic", "validation", LogisticRegression(30, 100.0, 64, 300)),
        ("quadratic_cond1e3", "quadratic", "validation", ConditionedQuadratics(25, 1e3, 400)),
        ("rosenbrock_5d", "function", "validation", RosenbrockFunctions(5, 1500)),
        ("rnn_adding_15", "rnn", "validation", RNNAdding(15, 20, 48, 400)),
        # Held out: other architectures, activations, depths, widths or data.
        ("mlp_relu_digits_2x16", "mlp", "heldout", MLPClassifier("digits", (16, 16), "relu", 64, 500)),
        ("mlp_gelu_breast_cancer", "mlp", "heldout", MLPClassifier("breast_cancer", (32,), "gelu", 32, 300)),
        ("mlp_tanh_parity", "mlp", "heldout", MLPClassifier("parity", (32,), "tanh", 64, 1000)),
        ("mlp_sigmoid_iris_3x8", "mlp", "heldout", MLPClassifier("iris", (8, 8, 8), "sigmoid", 16, 500)),
        ("mlp_relu_mixture16_128", "mlp", "heldout", MLPClassifier("mixture16", (128,), "relu", 256, 200)),
        ("conv_digits_c8_tanh", "conv", "heldout", ConvDigits(8, "tanh", 64, 300)),
        ("autoencoder_relu", "autoencoder", "heldout", Autoencoder((16,), "relu", 128, 200)),
        ("linreg_cond1e4", "linear", "heldout", LinearRegression(30, 1e4, 64, 500)),
        ("logreg_cond10_d50", "logistic", "heldout", LogisticRegression(50, 10.0, 128, 200)),
        ("quadratic_cond1e4", "quadratic", "heldout", ConditionedQuadratics(30, 1e4, 500)),
        ("rosenbrock_10d", "function", "heldout", RosenbrockFunctions(10, 2000)),
        ("rnn_adding_20", "rnn", "heldout", RNNAdding(20, 24, 64, 500)),
    ):
        SUITE[name] = SuiteTask(name, kind, split, family)  # checked by the tests, not at every import
    # On fewer instances (a CPU's budget): the validation split's transformer, and the held-out
    # families added before any optimizer was judged on them, models of 100k parameters and more.
    for name, kind, split, family in (
        ("transformer_reverse_w32", "transformer", "validation", TransformerLM("reverse", 32, 2, 2, 10, 5, 32, 400)),
        ("transformer_sort_w64", "transformer", "heldout", TransformerLM("sort", 64, 2, 4, 12, 6, 32, 500)),
        ("mlp_relu_digits_512x256", "mlp", "heldout", MLPClassifier("digits", (512, 256), "relu", 128, 300)),
        ("mlp_gelu_mixture16_2x384", "mlp", "heldout", MLPClassifier("mixture16", (384, 384), "gelu", 128, 300)),
    ):
        SUITE[name] = SuiteTask(name, kind, split, family, max_instances=8)


_builtin()


def training_mixture(split: str = "train") -> FamilyMixture:
    """The suite's families of `split` as one `FamilyMixture` (what `general` meta-trains on:
    the `train` split; its snapshots are chosen on the `validation` split; the held-out split is
    for judging only)."""
    tasks = [t for t in SUITE.values() if t.split == split]
    if not tasks:
        raise ValueError(f"The suite has no tasks in split {split!r}; splits: {', '.join(SPLITS)}.")
    return FamilyMixture(tuple(t.family for t in tasks), tuple(t.name for t in tasks))
