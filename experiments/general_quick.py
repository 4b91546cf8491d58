"""`general_quick`: the whole loop of `general` (the same optimizer, estimator, objective, split and
model selection) at a quarter of its meta-steps, so that a user sees it run end to end:

    make train EXP=general_quick           # meta-trains into runs/general_quick (minutes, one core)
    make suite OPT=runs/general_quick ARGS="--tasks validation"
"""

import dataclasses

from l2lgd.runs._experiments import load_experiment

GENERAL = load_experiment("general")
EXPERIMENT = dataclasses.replace(
    GENERAL,
    config=GENERAL.config.replace(name="general_quick", meta_steps=2_000),
    checkpoint_every=500,
    ablations={},
)
