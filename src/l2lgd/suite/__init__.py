"""The benchmark suite: any optimizer, learned or optax, on a few dozen small real training
problems it never saw, against baselines tuned per task (`python -m l2lgd suite OPT`).

- `SUITE`: the tasks by name (`SuiteTask`: kind, split, family); `register_suite_task` adds one;
  `SPLITS`: `train` (meta-training may draw from it), `validation` (choosing designs, settings
  and snapshots; never trained on), `heldout` (scored once, at the end);
  `training_mixture(split)`: a split as one `FamilyMixture` (what `general` trains and selects on);
- `run(optimizer, tasks="heldout")` -> `SuiteResult`; `Settings`, `QUICK`;
- `BASELINES`: SGD, momentum, Nesterov, RMSProp, Adam, AdamW with cosine decay;
- `TUNING_FREE`: the tuning-free rivals a run also puts on every task (untuned, cached);
- `compare(["digits", "adam:1e-3", "prodigy", ...])` -> `Comparison`: several optimizers on the
  same tasks, one table and one performance-profile figure (`python -m l2lgd suite compare`);
- `write`, `write_section`, `markdown`: what a run writes.
"""

from ..optimizers._baselines import TUNING_FREE as TUNING_FREE
from ._baselines import BASELINES as BASELINES, cache_dir as cache_dir
from ._compare import Comparison as Comparison, compare as compare
from ._report import load as load, markdown as markdown, write as write, write_section as write_section
from ._run import (
    QUICK as QUICK,
    Settings as Settings,
    SuiteResult as SuiteResult,
    TaskResult as TaskResult,
    resolve_optimizer as resolve_optimizer,
    run as run,
)
from ._tasks import (
    SPLITS as SPLITS,
    SUITE as SUITE,
    SuiteTask as SuiteTask,
    register_suite_task as register_suite_task,
    select as select,
    training_mixture as training_mixture,
)
