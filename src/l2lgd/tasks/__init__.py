"""Task families: the interface and registry (`_base`), then one file per kind: the reference's
and the paper's quadratics (`_quadratic`), the digits MLPs (`_mlp`), classifiers, a convnet and
an autoencoder on data sets (`_classifiers`, data in `_data`), linear and logistic regression
(`_regression`), test functions (`_functions`), a recurrent network (`_sequence`) and a causal
transformer language model on generated sequences (`_transformer`); the augmentation meta-training may apply to any of them (`_reparam`).

Importing this package registers the built-in kinds (`TASK_FAMILIES`).
"""

from ._base import (
    BUILTIN_FAMILIES as BUILTIN_FAMILIES,
    TASK_FAMILIES as TASK_FAMILIES,
    TaskFamily as TaskFamily,
    check_family as check_family,
    draw_task as draw_task,
    family_name as family_name,
    register_task_family as register_task_family,
    task_family as task_family,
    training_family as training_family,
)
from ._quadratic import PaperQuadratics as PaperQuadratics, Quadratics as Quadratics  # registered first
from ._mlp import Digits as Digits, DigitsVariants as DigitsVariants
from ._classifiers import Autoencoder as Autoencoder, ConvDigits as ConvDigits, MLPClassifier as MLPClassifier
from ._functions import ConditionedQuadratics as ConditionedQuadratics, RosenbrockFunctions as RosenbrockFunctions
from ._regression import LinearRegression as LinearRegression, LogisticRegression as LogisticRegression
from ._sequence import RNNAdding as RNNAdding
from ._transformer import TransformerLM as TransformerLM
from ._reparam import Reparameterized as Reparameterized, draw_rescaled as draw_rescaled, reparameterize as reparameterize

BUILTIN_FAMILIES.update(TASK_FAMILIES)
