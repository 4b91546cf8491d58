"""l2lgd: learned optimizers in JAX (learning to learn by gradient descent by gradient descent).

The public face, by what a user does (each name is imported on first use, so `import l2lgd`
and the command line start without loading JAX until a command computes). Words: *the
reference* is the notebook this project reproduces; a *task* is one optimization problem,
drawn from a *task family*; "seed" is always a PRNG seed.

- use a trained optimizer: `load_optimizer` (an optax transformation, by shipped name or
  folder), `list_optimizers`, `load_learned_optimizer`, `as_optax` (and `fill_horizon`, for a
  kind that needs the steps you will run);
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
- compose the pieces: the learned optimizers (`LearnedOptimizer`, the interface a kind
  implements; `register_optimizer_kind`, `make_optimizer`; the first kind `LSTMOptimizer`, a
  `CoordinateLSTM` on a preprocessing: `Preprocessing`, `register_preprocessing` and the
  built-in ones; `AdamController`; `MLPStep`, which uses the training fraction;
  `ProdigyController`, Prodigy's tuning-free step times a learned multiplier), the
  meta-gradient estimators (`MetaGradientEstimator`, the protocol: `bind` -> `Estimation` with
  `init` and `estimate`; `register_estimator`, `estimator_for(config)`;
  `Backpropagation` with `FusedBackprop` (the default) and `Autodiff`; evolution strategies over
  persistent particles, `Evolution` with `PES` and `AntitheticES`), the meta-training step
  (`init_state`, `make_meta_gradient`, `make_meta_step`, `make_train_chunk`,
  `meta_optimizer`), the objectives (`meta_objective`, `safe_log`, `log10_loss`).

The code is laid out by concept: `optimizers/`, `tasks/`, `estimators/`, `training/` (the
pure meta-step), `runs/` (the driver and everything on disk), and the lab apart (`lab/`).

Example:
    >>> import l2lgd, optax
    >>> tx = l2lgd.load_optimizer("log30")  # a shipped optimizer, as an optax transformation
    >>> isinstance(tx, optax.GradientTransformation)
    True
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path
from typing import TYPE_CHECKING

from ._version import __version__ as __version__


def _exports() -> dict[str, str]:
    """name -> module, read from the `if TYPE_CHECKING:` block below: the one place each public
    name is written (what editors see is what `__getattr__` loads)."""
    tree = ast.parse(Path(__file__).read_text(encoding="utf-8"))
    block = next(n for n in tree.body if isinstance(n, ast.If) and getattr(n.test, "id", "") == "TYPE_CHECKING")
    return {alias.asname or alias.name: node.module for node in block.body for alias in node.names}


_WHERE = _exports()

__all__ = sorted(_WHERE) + ["__version__"]

if TYPE_CHECKING:  # what editors and type checkers see; at run time each name loads on first use
    from ._config import Config as Config, MetaTrainingConfig as MetaTrainingConfig, OptimizerConfig as OptimizerConfig, TaskConfig as TaskConfig
    from ._errors import Mismatch as Mismatch, NonFiniteError as NonFiniteError, RunLocked as RunLocked, Stopped as Stopped
    from ._evaluate import TEST_SEED as TEST_SEED, VALIDATION_SEED as VALIDATION_SEED, run_optimizer as run_optimizer, summarize as summarize, task_keys as task_keys, tune_learning_rate as tune_learning_rate
    from ._objectives import log10_loss as log10_loss, meta_objective as meta_objective, safe_log as safe_log
    from ._unroll import run_steps as run_steps, unroll as unroll
    from .estimators._autodiff import Autodiff as Autodiff, make_meta_loss as make_meta_loss
    from .estimators._backprop import Backpropagation as Backpropagation, Inner as Inner, make_task_batch as make_task_batch
    from .estimators._base import Estimate as Estimate, Estimation as Estimation, MetaGradient as MetaGradient, MetaGradientEstimator as MetaGradientEstimator, MetaLossAux as MetaLossAux
    from .estimators._es import AntitheticES as AntitheticES
    from .estimators._evolution import Evolution as Evolution, ParticleResult as ParticleResult, Particles as Particles
    from .estimators._fused import FusedBackprop as FusedBackprop
    from .estimators._named import estimator_for as estimator_for, register_estimator as register_estimator
    from .estimators._pes import PES as PES
    from .optimizers._baselines import reference_rmsprop as reference_rmsprop, reference_sgd as reference_sgd
    from .optimizers._base import LearnedOptimizer as LearnedOptimizer
    from .optimizers._kinds import make_optimizer as make_optimizer, register_optimizer_kind as register_optimizer_kind
    from .optimizers._lstm_optimizer import LSTMOptimizer as LSTMOptimizer
    from .optimizers._adam_controller import AdamController as AdamController
    from .optimizers._mlp_step import MLPStep as MLPStep
    from .optimizers._prodigy_controller import ProdigyController as ProdigyController
    from .optimizers._lstm import CoordinateLSTM as CoordinateLSTM, LSTMState as LSTMState
    from .optimizers._optax_face import as_optax as as_optax, fill_horizon as fill_horizon
    from .optimizers._preprocessing import Identity as Identity, LearningRateRatio as LearningRateRatio, LogRescale as LogRescale, Moments as Moments, AdaptiveMoments as AdaptiveMoments, PaperPreprocessing as PaperPreprocessing, Preprocessing as Preprocessing, make_preprocessing as make_preprocessing, register_preprocessing as register_preprocessing
    from .runs._driver import RunOptions as RunOptions, TrainResult as TrainResult, train as train
    from .runs._experiments import Experiment as Experiment
    from .runs._loading import load_learned_optimizer as load_learned_optimizer, load_optimizer as load_optimizer
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
    from .tasks._transformer import TransformerLM as TransformerLM
    from .training._state import Initial as Initial, TrainState as TrainState, init_state as init_state, meta_optimizer as meta_optimizer
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
