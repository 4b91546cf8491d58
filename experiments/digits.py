"""`digits`: a learned optimizer that beats tuned SGD, momentum, Nesterov, RMSProp and Adam on
the digits MLP (64 -> 20 sigmoid -> 10, cross-entropy, minibatches of 128, horizon 100).

    make train EXP=digits

Work in progress.
"""

from l2lgd import Config

CONFIG = Config(
    name="digits",
    task="digits",
    num_steps=20,
    horizon=100,
    hidden_units=(20,),
    activation="sigmoid",
    minibatch=128,
    preprocessing="moments",
    objective="sum_log",
    second_order=False,
    batch_size=4,
    meta_lr=1e-3,
    meta_steps=6_000,
)
CHECKPOINT_EVERY = 500
ROLLING_WINDOW = 500
EVAL_PROBLEMS = 200
VALIDATION_PROBLEMS = 64
