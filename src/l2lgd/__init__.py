"""l2lgd: learned optimizers in JAX (learning to learn by gradient descent by gradient descent)."""

from ._baselines import seed_rmsprop as seed_rmsprop, seed_sgd as seed_sgd
from ._config import Config as Config
from ._lstm import CoordinateLSTM as CoordinateLSTM, LSTMState as LSTMState
from ._meta import (
    TrainState as TrainState,
    init_state as init_state,
    make_meta_gradient as make_meta_gradient,
    make_meta_loss as make_meta_loss,
    make_meta_step as make_meta_step,
    make_problem_batch as make_problem_batch,
    make_train_chunk as make_train_chunk,
    meta_optimizer as meta_optimizer,
)
from ._evaluate import (
    TEST_SEED as TEST_SEED,
    VALIDATION_SEED as VALIDATION_SEED,
    problem_keys as problem_keys,
    run_optimizer as run_optimizer,
    summarize as summarize,
    tune_learning_rate as tune_learning_rate,
)
from ._optax_face import as_optax as as_optax
from ._checkpoint import load_learned_optimizer as load_learned_optimizer, load_optimizer as load_optimizer, load_record as load_record
from ._optimizer import LearnedOptimizer as LearnedOptimizer, make_optimizer as make_optimizer
from ._preprocessing import Identity as Identity, LogRescale as LogRescale, make_preprocessing as make_preprocessing
from ._problems import Quadratic as Quadratic, sample_quadratic as sample_quadratic
from ._shipped import ShippedOptimizer as ShippedOptimizer, list_optimizers as list_optimizers
from ._tasks import (
    Digits as Digits,
    PaperQuadratics as PaperQuadratics,
    Quadratics as Quadratics,
    TaskFamily as TaskFamily,
    register_task_family as register_task_family,
)
from ._train import RunOptions as RunOptions, TrainResult as TrainResult, train as train
from ._unroll import (
    log10_loss as log10_loss,
    meta_objective as meta_objective,
    run_steps as run_steps,
    safe_log as safe_log,
    unroll as unroll,
)

__version__ = "0.1.0"
