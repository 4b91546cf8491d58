"""l2lgd: learned optimizers in JAX (learning to learn by gradient descent by gradient descent).

The public face, by what a user does (each name is imported on first use, so `import l2lgd`
and the command line start without loading JAX until a command computes). Words: *the
reference* is the notebook this project reproduces; a *task* is one optimization problem,
drawn from a *task family*; "seed" is always a PRNG seed.

- use a trained optimizer: `load_optimizer` (an optax transformation, by shipped name or
  folder), `list_optimizers`, `load_learned_optimizer`, `as_optax`;
- meta-train one: `Config`, `train`, `RunOptions`, `TrainResult`;
- define what it trains on: `TaskFamily`, `register_task_family`, and the built-in families
  `Quadratics`, `PaperQuadratics`, `Digits`, `DigitsVariants`;
- evaluate: `run_optimizer`, `unroll`, `summarize`, `tune_learning_rate`, `task_keys`
  (with `TEST_SEED`, `VALIDATION_SEED`), and the reference's baselines `reference_sgd`,
  `reference_rmsprop`;
- compose the pieces: `LearnedOptimizer`, `make_optimizer`, `CoordinateLSTM`, the
  preprocessings (`Preprocessing`, the interface; `register_preprocessing`,
  `make_preprocessing`, `Identity`, `LogRescale`, `LearningRateRatio`, `PaperPreprocessing`,
  `Moments`), and the meta-training step (`init_state`, `make_meta_loss`,
  `make_meta_gradient`, `make_meta_step`, `make_train_chunk`, `make_task_batch`,
  `meta_optimizer`, `TrainState`), the objectives (`meta_objective`, `safe_log`, `log10_loss`).

Example:
    >>> import l2lgd, optax
    >>> tx = l2lgd.load_optimizer("log30")  # a shipped optimizer, as an optax transformation
    >>> isinstance(tx, optax.GradientTransformation)
    True
"""

from __future__ import annotations

import importlib

from ._version import __version__ as __version__

_EXPORTS = {
    "_baselines": ("reference_rmsprop", "reference_sgd"),
    "_checkpoint": ("load_learned_optimizer", "load_optimizer", "load_record"),
    "_config": ("Config",),
    "_errors": ("NonFiniteError", "RunLocked", "Stopped"),
    "_experiments": ("Experiment",),
    "_evaluate": ("TEST_SEED", "VALIDATION_SEED", "task_keys", "run_optimizer", "summarize", "tune_learning_rate"),
    "_lstm": ("CoordinateLSTM", "LSTMState"),
    "_meta": ("TrainState", "init_state", "make_meta_gradient", "make_meta_loss", "make_meta_step",
              "make_task_batch", "make_train_chunk", "meta_optimizer"),
    "_optax_face": ("as_optax",),
    "_optimizer": ("LearnedOptimizer", "make_optimizer"),
    "_preprocessing": ("Identity", "LearningRateRatio", "LogRescale", "Moments", "PaperPreprocessing", "Preprocessing",
                       "make_preprocessing", "register_preprocessing"),
    "_quadratic": ("Quadratic", "sample_quadratic"),
    "_shipped": ("ShippedOptimizer", "list_optimizers"),
    "_tasks": ("Digits", "DigitsVariants", "PaperQuadratics", "Quadratics", "TaskFamily", "register_task_family"),
    "_train": ("RunOptions", "TrainResult", "train"),
    "_unroll": ("log10_loss", "meta_objective", "run_steps", "safe_log", "unroll"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE) + ["__version__"]


def __getattr__(name: str):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'l2lgd' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
