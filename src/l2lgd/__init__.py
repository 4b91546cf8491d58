"""l2lgd: learned optimizers in JAX (learning to learn by gradient descent by gradient descent).

The public face, by what a user does (each name is imported on first use, so `import l2lgd`
and the command line start without loading JAX until a command computes). Words: *the
reference* is the notebook this project reproduces; a *task* is one optimization problem,
drawn from a *task family*; "seed" is always a PRNG seed.

- use a trained optimizer: `load_optimizer` (an optax transformation, by shipped name or
  folder), `list_optimizers`, `load_learned_optimizer`, `as_optax`;
- meta-train one: `Config` (in sections `OptimizerConfig`, `TaskConfig`,
  `MetaTrainingConfig`), `train`, `RunOptions`, `TrainResult`, `Experiment`;
- define what it trains on: `TaskFamily`, `register_task_family`, and the built-in families
  `Quadratics`, `PaperQuadratics`, `Digits`, `DigitsVariants`, and the suite's kinds
  `MLPClassifier`, `ConvDigits`, `Autoencoder`, `LinearRegression`, `LogisticRegression`,
  `ConditionedQuadratics`, `RosenbrockFunctions`, `RNNAdding`; several families at once:
  `FamilyMixture` (`l2lgd.suite.training_mixture()`: the suite's `train` split);
- judge an optimizer on problems it never saw: `l2lgd.suite` (`l2lgd.suite.run`);
- evaluate: `run_optimizer`, `unroll`, `summarize`, `tune_learning_rate`, `task_keys`
  (with `TEST_SEED`, `VALIDATION_SEED`), and the reference's baselines `reference_sgd`,
  `reference_rmsprop`;
- compose the pieces: `LearnedOptimizer`, `make_optimizer`, `CoordinateLSTM`, the
  preprocessings (`Preprocessing`, the interface; `register_preprocessing`,
  `make_preprocessing`, `Identity`, `LogRescale`, `LearningRateRatio`, `PaperPreprocessing`,
  `Moments`), the meta-gradient estimators (`MetaGradientEstimator`, the interface;
  `Backpropagation`, `FusedBackprop` (the default), `Autodiff`; evolution strategies over
  persistent particles, `Evolution`, `PES`, `AntitheticES` (`Particles`, `ParticleResult`);
  `estimator_for(config)`, the one `Config.estimator` names; their results `MetaGradient`,
  `MetaLossAux`; `make_meta_loss`), the meta-training step (`init_state` -> `Initial`,
  `make_meta_gradient`, `make_meta_step`, `make_train_chunk`, `make_task_batch`,
  `meta_optimizer`, `TrainState`), the objectives (`meta_objective`, `safe_log`, `log10_loss`).

The code is laid out by concept: `optimizers/`, `tasks/`, `estimators/`, `training/` (the
pure meta-step), `runs/` (the driver and everything on disk), and the lab apart (`lab/`).

Example:
    >>> import l2lgd, optax
    >>> tx = l2lgd.load_optimizer("log30")  # a shipped optimizer, as an optax transformation
    >>> isinstance(tx, optax.GradientTransformation)
    True
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ._version import __version__ as __version__

_EXPORTS = {
    "_config": ("Config", "MetaTrainingConfig", "OptimizerConfig", "TaskConfig"),
    "_errors": ("Mismatch", "NonFiniteError", "RunLocked", "Stopped"),
    "_evaluate": ("TEST_SEED", "VALIDATION_SEED", "run_optimizer", "summarize", "task_keys", "tune_learning_rate"),
    "_objectives": ("log10_loss", "meta_objective", "safe_log"),
    "_unroll": ("run_steps", "unroll"),
    "estimators._autodiff": ("Autodiff", "make_meta_loss"),
    "estimators._base": ("Backpropagation", "MetaGradient", "MetaGradientEstimator", "MetaLossAux"),
    "estimators._es": ("AntitheticES",),
    "estimators._evolution": ("Evolution", "ParticleResult", "Particles"),
    "estimators._fused": ("FusedBackprop",),
    "estimators._named": ("estimator_for",),
    "estimators._pes": ("PES",),
    "optimizers._baselines": ("reference_rmsprop", "reference_sgd"),
    "optimizers._learned": ("LearnedOptimizer", "make_optimizer"),
    "optimizers._lstm": ("CoordinateLSTM", "LSTMState"),
    "optimizers._optax_face": ("as_optax",),
    "optimizers._preprocessing": ("Identity", "LearningRateRatio", "LogRescale", "Moments", "AdaptiveMoments", "PaperPreprocessing", "Preprocessing", "make_preprocessing", "register_preprocessing"),
    "runs._driver": ("RunOptions", "TrainResult", "train"),
    "runs._experiments": ("Experiment",),
    "runs._exports": ("load_learned_optimizer", "load_optimizer"),
    "runs._record": ("load_record",),
    "runs._shipped": ("ShippedOptimizer", "list_optimizers"),
    "tasks._base": ("TaskFamily", "register_task_family"),
    "tasks._classifiers": ("Autoencoder", "ConvDigits", "MLPClassifier"),
    "tasks._functions": ("ConditionedQuadratics", "RosenbrockFunctions"),
    "tasks._mixture": ("FamilyMixture",),
    "tasks._mlp": ("Digits", "DigitsVariants"),
    "tasks._quadratic": ("PaperQuadratics", "Quadratic", "Quadratics", "sample_quadratic"),
    "tasks._regression": ("LinearRegression", "LogisticRegression"),
    "tasks._sequence": ("RNNAdding",),
    "training._state": ("Initial", "TrainState", "init_state", "make_task_batch", "meta_optimizer"),
    "training._step": ("make_meta_gradient", "make_meta_step", "make_train_chunk"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE) + ["__version__"]

if TYPE_CHECKING:  # what editors and type checkers see; at run time each name loads on first use
    from ._config import Config as Config, MetaTrainingConfig as MetaTrainingConfig, OptimizerConfig as OptimizerConfig, TaskConfig as TaskConfig
    from ._errors import Mismatch as Mismatch, NonFiniteError as NonFiniteError, RunLocked as RunLocked, Stopped as Stopped
    from ._evaluate import TEST_SEED as TEST_SEED, VALIDATION_SEED as VALIDATION_SEED, run_optimizer as run_optimizer, summarize as summarize, task_keys as task_keys, tune_learning_rate as tune_learning_rate
    from ._objectives import log10_loss as log10_loss, meta_objective as meta_objective, safe_log as safe_log
    from ._unroll import run_steps as run_steps, unroll as unroll
    from .estimators._autodiff import Autodiff as Autodiff, make_meta_loss as make_meta_loss
    from .estimators._base import Backpropagation as Backpropagation, MetaGradient as MetaGradient, MetaGradientEstimator as MetaGradientEstimator, MetaLossAux as MetaLossAux
    from .estimators._es import AntitheticES as AntitheticES
    from .estimators._evolution import Evolution as Evolution, ParticleResult as ParticleResult, Particles as Particles
    from .estimators._fused import FusedBackprop as FusedBackprop
    from .estimators._named import estimator_for as estimator_for
    from .estimators._pes import PES as PES
    from .optimizers._baselines import reference_rmsprop as reference_rmsprop, reference_sgd as reference_sgd
    from .optimizers._learned import LearnedOptimizer as LearnedOptimizer, make_optimizer as make_optimizer
    from .optimizers._lstm import CoordinateLSTM as CoordinateLSTM, LSTMState as LSTMState
    from .optimizers._optax_face import as_optax as as_optax
    from .optimizers._preprocessing import Identity as Identity, LearningRateRatio as LearningRateRatio, LogRescale as LogRescale, Moments as Moments, AdaptiveMoments as AdaptiveMoments, PaperPreprocessing as PaperPreprocessing, Preprocessing as Preprocessing, make_preprocessing as make_preprocessing, register_preprocessing as register_preprocessing
    from .runs._driver import RunOptions as RunOptions, TrainResult as TrainResult, train as train
    from .runs._experiments import Experiment as Experiment
    from .runs._exports import load_learned_optimizer as load_learned_optimizer, load_optimizer as load_optimizer
    from .runs._record import load_record as load_record
    from .runs._shipped import ShippedOptimizer as ShippedOptimizer, list_optimizers as list_optimizers
    from .tasks._base import TaskFamily as TaskFamily, register_task_family as register_task_family
    from .tasks._classifiers import Autoencoder as Autoencoder, ConvDigits as ConvDigits, MLPClassifier as MLPClassifier
    from .tasks._functions import ConditionedQuadratics as ConditionedQuadratics, RosenbrockFunctions as RosenbrockFunctions
    from .tasks._mixture import FamilyMixture as FamilyMixture
    from .tasks._mlp import Digits as Digits, DigitsVariants as DigitsVariants
    from .tasks._quadratic import PaperQuadratics as PaperQuadratics, Quadratic as Quadratic, Quadratics as Quadratics, sample_quadratic as sample_quadratic
    from .tasks._regression import LinearRegression as LinearRegression, LogisticRegression as LogisticRegression
    from .tasks._sequence import RNNAdding as RNNAdding
    from .training._state import Initial as Initial, TrainState as TrainState, init_state as init_state, make_task_batch as make_task_batch, meta_optimizer as meta_optimizer
    from .training._step import make_meta_gradient as make_meta_gradient, make_meta_step as make_meta_step, make_train_chunk as make_train_chunk


SUBPACKAGES = ("suite",)  # `l2lgd.suite.run(...)` without importing it first


def __getattr__(name: str):
    if name in SUBPACKAGES:
        return importlib.import_module(f".{name}", __name__)
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'l2lgd' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
