"""The snapshots of a meta-training run: `<run_dir>/snapshots/<step>/` holds the full training
state every N meta-steps, with its config and metrics (`state`: StandardSave; `config`,
`metrics`: JsonSave). Orbax writes a step to a temporary folder and renames it when complete,
so a half-written snapshot is never restored."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from .._config import Config
from ..training._state import TrainState, init_state
from ._storage import checksums, check_shapes, config_json, manager, parse_config, read_json_item, restore_item

SNAPSHOTS = "snapshots"


def _state_tree(state: TrainState) -> dict[str, Any]:
    """The saved form of a TrainState: a dict, without `inner` unless training is truncated
    (so snapshots of untruncated runs keep the layout they had before truncation existed)."""
    tree = state._asdict()
    if tree["inner"] == ():
        del tree["inner"]
    return tree


def _abstract_state(step_dir: Path, config: Config, family=None) -> dict[str, Any]:
    abstract = _state_tree(jax.eval_shape(lambda: init_state(config, family)[0]))
    check_shapes(step_dir, "state", abstract, config)
    return abstract


def restore_state(step_dir: Path, config: Config, family=None) -> TrainState:
    """The TrainState stored in `step_dir`, checked against and rebuilt from `config` (and, for
    truncated training, the `family` of the tasks in flight: default, the config's)."""
    return TrainState(**restore_item(step_dir, "state", _abstract_state(step_dir, config, family)))


class RunCheckpoints:
    """The snapshots of one meta-training run, in `<run_dir>/snapshots`."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.directory = self.run_dir / SNAPSHOTS
        self.manager = manager(self.directory)

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, state: TrainState, config: Config, metrics: dict[str, Any]) -> None:
        step = int(state.step)
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(_state_tree(state)),
                config=ocp.args.JsonSave(config_json(config)),
                metrics=ocp.args.JsonSave(metrics),
                checksums=ocp.args.JsonSave({"state": checksums(_state_tree(state))}),
            ),
            force=True,
        )
        self.manager.wait_until_finished()

    def config(self, step: int) -> Config:
        step_dir = self.directory / str(step)
        return parse_config(read_json_item(step_dir, "config"), step_dir / "config")

    def metrics(self, step: int) -> dict[str, Any]:
        return read_json_item(self.directory / str(step), "metrics")

    def restore(self, step: int, family=None) -> tuple[TrainState, Config]:
        """The training state at `step`, rebuilt from the config stored beside it."""
        config = self.config(step)
        return restore_state(self.directory / str(step), config, family), config

    def check(self, step: int, family=None) -> None:
        """Raises `Mismatch` when the snapshot at `step` does not hold the arrays that its config
        and `family` build (without reading them)."""
        _abstract_state(self.directory / str(step), self.config(step), family)

    def set_aside(self, step: int) -> Path:
        """Moves the (damaged) snapshot `step` to `<run_dir>/damaged/<step>`, out of the run."""
        target = self.run_dir / "damaged" / str(step)
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(exist_ok=True)
        (self.directory / str(step)).rename(target)
        self.manager.reload()
        return target

    def close(self) -> None:
        self.manager.close()
