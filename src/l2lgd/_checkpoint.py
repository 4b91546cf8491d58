"""Orbax checkpoints of meta-training runs and of exported (trained) optimizers.

A run folder (e.g. `checkpoints/log30/`) holds:
- `snapshots/<step>/`: the full training state every N meta-steps, each with its config and
  metrics (`state`: StandardSave; `config`, `metrics`: JsonSave). Orbax writes a step to a
  temporary folder and renames it when complete, so a half-written snapshot is never restored.
- `final_log10.f32`: every meta-step's log10 final loss, float32, appended as training goes.
- `optimizer/<step>/`: the exported optimizer: its weights (`weights`), config and metrics,
  nothing else. This is what `load_optimizer` loads and what the repository ships.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import numpy as np
import orbax.checkpoint as ocp

from ._config import Config, stored_configs
from ._meta import TrainState, init_state
from ._optimizer import LearnedOptimizer, make_optimizer

FORMAT_VERSION = 1
SNAPSHOTS = "snapshots"
EXPORT = "optimizer"
RECORD = "final_log10.f32"
CHECKSUMS = "checksums"


def _registry() -> ocp.handlers.DefaultCheckpointHandlerRegistry:
    registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
    for item in ("state", "weights"):
        registry.add(item, ocp.args.StandardSave, ocp.StandardCheckpointHandler)
        registry.add(item, ocp.args.StandardRestore, ocp.StandardCheckpointHandler)
    for item in ("config", "metrics", CHECKSUMS):
        registry.add(item, ocp.args.JsonSave, ocp.JsonCheckpointHandler)
        registry.add(item, ocp.args.JsonRestore, ocp.JsonCheckpointHandler)
    return registry


def _processes() -> ocp.options.MultiprocessingOptions:
    """Orbax's processes: under several JAX processes only process 0 reads and writes files
    (l2lgd's driver hands it host copies of the replicated state), so Orbax synchronizes with
    no other process."""
    if jax.process_count() > 1:
        return ocp.options.MultiprocessingOptions(primary_host=0, active_processes={0})
    return ocp.options.MultiprocessingOptions()


def _manager(directory: Path) -> ocp.CheckpointManager:
    """A synchronous Orbax manager of `directory` (see `_processes`)."""
    several = jax.process_count() > 1
    if several:  # Orbax does not create the folder when only some processes take part
        directory.mkdir(parents=True, exist_ok=True)
    options = ocp.CheckpointManagerOptions(
        create=not several, enable_async_checkpointing=False, cleanup_tmp_directories=True,
        multiprocessing_options=_processes(),
    )
    return ocp.CheckpointManager(directory.absolute(), options=options, handler_registry=_registry())


def _config_json(config: Config) -> dict[str, Any]:
    return {"format_version": FORMAT_VERSION, "config": config.to_dict()}


def _parse_config(data: Any, where: Path) -> Config:
    if not isinstance(data, dict) or "config" not in data:
        raise ValueError(f"{where} is not an l2lgd config (no 'config' entry).")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{where} has checkpoint format version {version!r}, but this l2lgd reads format "
            f"version {FORMAT_VERSION}."
        )
    try:
        with stored_configs():
            return Config.from_dict(data["config"])
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where} holds an invalid config: {e}") from None


def _read_json_item(step_dir: Path, item: str) -> Any:
    """Reads a JsonSave item directly, so a corrupt file is reported by name."""
    path = step_dir / item / "metadata"  # where orbax's JsonCheckpointHandler writes
    if not path.is_file():
        raise ValueError(f"{path} is missing: {step_dir} is not a complete l2lgd checkpoint.")
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is truncated or corrupt ({e.__class__.__name__}: {e}).") from None


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    """Leaf name -> shape, with names normalised ('.a.b[0]' and "['a']['b'][0]" are both 'a.b.0')."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {
        ".".join(re.findall(r"\w+", jax.tree_util.keystr(path))): tuple(getattr(x, "shape", ()))
        for path, x in leaves
    }


def _check_shapes(step_dir: Path, item: str, abstract: Any, config: Config) -> None:
    """Compares the stored arrays' shapes with what `config` builds, before restoring."""
    try:
        stored = ocp.StandardCheckpointHandler().metadata((step_dir / item).absolute())
    except Exception as e:  # noqa: BLE001 - orbax raises many types; name the file instead.
        raise ValueError(f"{step_dir / item} is truncated or corrupt ({e.__class__.__name__}: {e}).") from None
    stored_tree = getattr(stored, "tree", stored)
    want, got = _shapes(abstract), _shapes(stored_tree)
    if want != got:
        raise ValueError(
            f"The config in {step_dir / 'config'} does not match the weights in {step_dir / item}: "
            f"config {config.to_dict()} builds arrays {dict(want)}, the checkpoint stores {dict(got)}."
        )


def checksums(tree: Any) -> dict[str, str]:
    """SHA-256 of every array leaf's bytes (with its dtype and shape), by leaf path."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        array = np.ascontiguousarray(np.asarray(leaf))
        digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
        out[jax.tree_util.keystr(path) or "<root>"] = digest.hexdigest()
    return out


def _verify(step_dir: Path, item: str, tree: Any) -> None:
    """Compares restored arrays with the checksums written beside them (checkpoints written
    before checksums existed have none and are not checked)."""
    if not (step_dir / CHECKSUMS).is_dir():
        return
    stored = _read_json_item(step_dir, CHECKSUMS).get(item, {})
    for path, digest in checksums(tree).items():
        if stored.get(path) != digest:
            raise ValueError(
                f"{step_dir / item} is corrupt: the array {path} does not match the checksum stored in "
                f"{step_dir / CHECKSUMS}."
            )


def _restore_item(step_dir: Path, item: str, abstract: Any):
    try:
        with ocp.StandardCheckpointer(multiprocessing_options=_processes()) as checkpointer:
            tree = checkpointer.restore((step_dir / item).absolute(), abstract)
    except Exception as e:  # noqa: BLE001 - name the file, not a frame deep inside orbax.
        message = str(e).splitlines()[0][:200] if str(e) else ""
        raise ValueError(f"{step_dir / item} is truncated or corrupt ({e.__class__.__name__}: {message}).") from None
    _verify(step_dir, item, tree)
    return tree


def _is_array_like(x: Any) -> bool:
    return isinstance(x, (jax.Array, jax.ShapeDtypeStruct))


def skeleton(config: Config) -> LearnedOptimizer:
    """The optimizer that `config` builds, to be filled with stored weights."""
    return eqx.filter_eval_shape(lambda: make_optimizer(config, key=jax.random.key(0)))


def _state_tree(state: TrainState) -> dict[str, Any]:
    """The saved form of a TrainState: a dict, without `inner` unless training is truncated
    (so snapshots of untruncated runs keep the layout they had before truncation existed)."""
    tree = state._asdict()
    if tree["inner"] == ():
        del tree["inner"]
    return tree


def _restore_state(step_dir: Path, config: Config, family=None) -> TrainState:
    """The TrainState stored in `step_dir`, checked against and rebuilt from `config` (and, for
    truncated training, the `family` of the tasks in flight: default, the config's)."""
    abstract = _state_tree(jax.eval_shape(lambda: init_state(config, family)[0]))
    _check_shapes(step_dir, "state", abstract, config)
    return TrainState(**_restore_item(step_dir, "state", abstract))


class RunCheckpoints:
    """The snapshots of one meta-training run, in `<run_dir>/snapshots`."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.directory = self.run_dir / SNAPSHOTS
        self.manager = _manager(self.directory)

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
                config=ocp.args.JsonSave(_config_json(config)),
                metrics=ocp.args.JsonSave(metrics),
                checksums=ocp.args.JsonSave({"state": checksums(_state_tree(state))}),
            ),
            force=True,
        )
        self.manager.wait_until_finished()

    def config(self, step: int) -> Config:
        step_dir = self.directory / str(step)
        return _parse_config(_read_json_item(step_dir, "config"), step_dir / "config")

    def metrics(self, step: int) -> dict[str, Any]:
        return _read_json_item(self.directory / str(step), "metrics")

    def restore(self, step: int, family=None) -> tuple[TrainState, Config]:
        """The training state at `step`, rebuilt from the config stored beside it."""
        config = self.config(step)
        return _restore_state(self.directory / str(step), config, family), config

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


def export_optimizer(run_dir: str | Path, theta: Any, config: Config, metrics: dict[str, Any]) -> Path:
    """Writes `<run_dir>/optimizer/<step>/`: weights, config, metrics and checksums of a trained
    optimizer. Atomic: the new export is complete on disk before the old one is removed."""
    directory = Path(run_dir) / EXPORT
    staging = Path(run_dir) / f".{EXPORT}.new"
    if staging.exists():
        shutil.rmtree(staging)
    manager = _manager(staging)
    manager.save(
        int(metrics["step"]),
        args=ocp.args.Composite(
            weights=ocp.args.StandardSave(theta),
            config=ocp.args.JsonSave(_config_json(config)),
            metrics=ocp.args.JsonSave(metrics),
            checksums=ocp.args.JsonSave({"weights": checksums(theta)}),
        ),
    )
    manager.wait_until_finished()
    manager.close()
    replace_folder(staging, directory)
    return directory


def copy_export(run_dir: Path, out: Path) -> None:
    """Copies `run_dir`'s exported optimizer to `out/optimizer`, atomically (`replace_folder`)."""
    staging = Path(out) / f".{EXPORT}.new"
    if staging.exists():
        shutil.rmtree(staging)
    shutil.copytree(Path(run_dir) / EXPORT, staging)
    replace_folder(staging, Path(out) / EXPORT)


def replace_folder(new: Path, target: Path) -> None:
    """Puts the complete folder `new` at `target`: the old one is moved aside first and removed
    only once `new` is in place, so a crash leaves one of them whole."""
    old = target.with_name(f".{target.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        target.rename(old)
    new.rename(target)
    if old.exists():
        shutil.rmtree(old)


def _find_steps(directory: Path) -> list[int]:
    return sorted(int(p.name) for p in directory.iterdir() if p.is_dir() and p.name.isdigit())


def load_learned_optimizer(
    path: str | Path, step: int | None = None
) -> tuple[LearnedOptimizer, Config, dict[str, Any]]:
    """Loads a trained optimizer: its module, its config and its metrics.

    Args:
        path: a run folder (e.g. `checkpoints/log30`), or its `optimizer/` folder, or the name
            of a shipped optimizer (`l2lgd.list_optimizers()`), e.g. "log30".
        step: None for the exported (best) optimizer; else the snapshot at that meta-step.

    Returns:
        `(optimizer, config, metrics)`: the `LearnedOptimizer` module, the `Config` it was
        trained with, and the snapshot's metrics ("step", "validation_log10_final", ...).

    Raises:
        FileNotFoundError: nothing is at `path`; ValueError: what is there is not an l2lgd
        checkpoint of this format, or is damaged (naming the file).

    Example:
        >>> opt, config, metrics = l2lgd.load_learned_optimizer("log30")
        >>> (config.preprocessing, config.objective, metrics["step"] > 0)
        ('log_rescale', 'end_log', True)
    """
    from ._shipped import resolve_optimizer_path

    if step is not None and (isinstance(step, bool) or not isinstance(step, (int, np.integer))):
        raise TypeError(f"step must be an integer meta-step or None, got {step!r} ({type(step).__name__}).")
    path = resolve_optimizer_path(path)
    if path.parent.name == EXPORT and path.name.isdigit() and step is None:
        path = path.parent  # a step folder of an export: the export itself
    if not path.is_dir():
        raise ValueError(f"{path} is a file; expected an l2lgd run folder such as checkpoints/log30.")
    if path.name == EXPORT and step is None:
        folder, item = path, "weights"
    elif step is None:
        folder, item = path / EXPORT, "weights"
    else:
        folder, item = path / SNAPSHOTS, "state"
    if not folder.is_dir():
        raise ValueError(
            f"{path} is not an l2lgd checkpoint: it has no {folder.name}/ folder "
            "(train one with `make train EXP=...`)."
        )
    steps = _find_steps(folder)
    if step is None:
        if not steps:
            raise ValueError(f"{folder} holds no checkpoint step folder: not an l2lgd checkpoint.")
        step = steps[-1]
    elif step not in steps:
        raise ValueError(f"{folder} has no snapshot at step {step}; it has steps {steps}.")
    step_dir = folder / str(step)
    config = _parse_config(_read_json_item(step_dir, "config"), step_dir / "config")
    metrics = _read_json_item(step_dir, "metrics")
    opt = skeleton(config)
    if item == "state":
        theta = _restore_state(step_dir, config).theta
    else:
        abstract = eqx.filter(opt, _is_array_like)
        _check_shapes(step_dir, item, abstract, config)
        theta = _restore_item(step_dir, item, abstract)
    static = eqx.filter(opt, _is_array_like, inverse=True)
    return eqx.combine(theta, static), config, metrics


def append_record(run_dir: Path, values: np.ndarray) -> None:
    with open(Path(run_dir) / RECORD, "ab") as f:
        f.write(np.asarray(values, dtype="<f4").tobytes())


def load_record(run_dir: str | Path) -> np.ndarray:
    """Every meta-step's log10 final loss of a run, in order (float32)."""
    path = Path(run_dir) / RECORD
    if not path.exists():
        raise FileNotFoundError(f"No meta-training record at {path}: train with `make train` first.")
    data = path.read_bytes()
    return np.frombuffer(data[: len(data) // 4 * 4], dtype="<f4").copy()


def truncate_record(run_dir: Path, num_steps: int) -> None:
    """Keeps the first `num_steps` entries: the ones that a restored snapshot has seen."""
    path = Path(run_dir) / RECORD
    size = path.stat().st_size if path.exists() else 0
    if size < 4 * num_steps:
        warnings.warn(
            f"{path} holds {size // 4} meta-steps but the snapshot to resume is at step {num_steps}: "
            "the missing entries are recorded as NaN (the weights are unaffected).",
            stacklevel=2,
        )
        with open(path, "ab") as f:
            f.truncate(size // 4 * 4)
            f.write(np.full(num_steps - size // 4, np.nan, dtype="<f4").tobytes())
    with open(path, "r+b") as f:
        f.truncate(4 * num_steps)


def export_best_of(run_dirs: list[Path], out: str | Path) -> Path:
    """Copies the exported optimizer with the best validation score among `run_dirs` to
    `<out>/optimizer` (model selection across seeds)."""
    scored = []
    for run_dir in run_dirs:
        folder = Path(run_dir) / EXPORT
        steps = _find_steps(folder) if folder.is_dir() else []
        if steps:
            metrics = _read_json_item(folder / str(steps[-1]), "metrics")
            scored.append((metrics["validation_log10_final"], Path(run_dir)))
    if not scored:
        raise ValueError(f"None of {[str(r) for r in run_dirs]} holds an exported optimizer.")
    _, best = min(scored)
    copy_export(best, Path(out))
    return best


def load_optimizer(path: str | Path, step: int | None = None):
    """A trained optimizer as an `optax.GradientTransformation`.

    Args:
        path: a run folder such as `checkpoints/log30` (or its `optimizer/` folder), or the
            name of a shipped optimizer (`l2lgd.list_optimizers()`), e.g. "log30".
        step: None for the exported best snapshot; else the snapshot at that meta-step.

    Returns:
        The optimizer as optax's `init`/`update` pair (see `as_optax`); its config and metrics
        come with `load_learned_optimizer`.

    Example:
        >>> tx = l2lgd.load_optimizer("log30")
        >>> params = {"w": jnp.array([0.5, -1.0])}
        >>> loss = lambda p: jnp.sum((1.3 * p["w"]) ** 2)
        >>> state = tx.init(params)
        >>> for _ in range(19):  # the horizon it was trained for
        ...     updates, state = tx.update(jax.grad(loss)(params), state)
        ...     params = optax.apply_updates(params, updates)
        >>> bool(loss(params) < 1e-10)
        True
    """
    from ._optax_face import as_optax

    opt, _, _ = load_learned_optimizer(path, step)
    return as_optax(opt)
