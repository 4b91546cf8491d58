"""How l2lgd stores arrays and configs with Orbax: the handler registry, a synchronous manager,
the config's stored form, checksums of every array, and reads that name the damaged file.
Shared by run snapshots (`_snapshots`) and exported optimizers (`_exports`)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from .._config import Config, stored_configs
from .._errors import Mismatch

FORMAT_VERSION = 1
CHECKSUMS = "checksums"


def registry() -> ocp.handlers.DefaultCheckpointHandlerRegistry:
    registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
    for item in ("state", "weights"):
        registry.add(item, ocp.args.StandardSave, ocp.StandardCheckpointHandler)
        registry.add(item, ocp.args.StandardRestore, ocp.StandardCheckpointHandler)
    for item in ("config", "metrics", CHECKSUMS):
        registry.add(item, ocp.args.JsonSave, ocp.JsonCheckpointHandler)
        registry.add(item, ocp.args.JsonRestore, ocp.JsonCheckpointHandler)
    return registry


def processes() -> ocp.options.MultiprocessingOptions:
    """Orbax's processes: under several JAX processes only process 0 reads and writes files
    (l2lgd's driver hands it host copies of the replicated state), so Orbax synchronizes with
    no other process."""
    if jax.process_count() > 1:
        return ocp.options.MultiprocessingOptions(primary_host=0, active_processes={0})
    return ocp.options.MultiprocessingOptions()


def manager(directory: Path) -> ocp.CheckpointManager:
    """A synchronous Orbax manager of `directory` (see `processes`)."""
    several = jax.process_count() > 1
    if several:  # Orbax does not create the folder when only some processes take part
        directory.mkdir(parents=True, exist_ok=True)
    options = ocp.CheckpointManagerOptions(
        create=not several, enable_async_checkpointing=False, cleanup_tmp_directories=True,
        multiprocessing_options=processes(),
    )
    made = ocp.CheckpointManager(directory.absolute(), options=options, handler_registry=registry())
    # Orbax cleans up unfinished temporary folders in a background thread that `close()` does not
    # wait for: a process that exits at once (a refused resume, a damaged snapshot) then printed
    # that thread's tracebacks at interpreter shutdown. Wait for it here: it is a folder listing.
    cleanup = getattr(made, "_cleanup_tmp_directory_future", None)
    if cleanup is not None:
        cleanup.result()
    return made


def config_json(config: Config) -> dict[str, Any]:
    return {"format_version": FORMAT_VERSION, "config": config.to_dict()}


def parse_config(data: Any, where: Path) -> Config:
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


def read_json_item(step_dir: Path, item: str) -> Any:
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
    return {name: tuple(getattr(x, "shape", ())) for name, x in _leaves(tree).items()}


def check_shapes(step_dir: Path, item: str, abstract: Any, config: Config) -> None:
    """Compares the stored arrays' shapes with what `config` builds, before restoring."""
    try:
        stored = ocp.StandardCheckpointHandler().metadata((step_dir / item).absolute())
    except Exception as e:  # noqa: BLE001 - orbax raises many types; name the file instead.
        raise ValueError(f"{step_dir / item} is truncated or corrupt ({e.__class__.__name__}: {e}).") from None
    stored_tree = getattr(stored, "tree", stored)
    want, got = _shapes(abstract), _shapes(stored_tree)
    if want != got:
        raise Mismatch(
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


def verify(step_dir: Path, item: str, tree: Any) -> None:
    """Compares restored arrays with the checksums written beside them (checkpoints written
    before checksums existed have none and are not checked)."""
    if not (step_dir / CHECKSUMS).is_dir():
        return
    stored = read_json_item(step_dir, CHECKSUMS).get(item, {})
    for path, digest in checksums(tree).items():
        if stored.get(path) != digest:
            raise ValueError(
                f"{step_dir / item} is corrupt: the array {path} does not match the checksum stored in "
                f"{step_dir / CHECKSUMS}."
            )


def _stored_dtypes(step_dir: Path, item: str, abstract: Any) -> Any:
    """`abstract` with each leaf's dtype the stored one (under `jax_enable_x64` the abstract
    target of float32 weights says float64; they are restored as what was written)."""
    try:
        stored = ocp.StandardCheckpointHandler().metadata((step_dir / item).absolute())
    except Exception:  # noqa: BLE001 - the restore below names the damaged file
        return abstract
    dtypes = {k: getattr(v, "dtype", None) for k, v in _leaves(getattr(stored, "tree", stored)).items()}

    def with_stored(path, leaf):
        dtype = dtypes.get(_name(path))
        if dtype is None or not is_array_like(leaf):
            return leaf
        return jax.ShapeDtypeStruct(leaf.shape, dtype, sharding=getattr(leaf, "sharding", None))

    return jax.tree_util.tree_map_with_path(with_stored, abstract)


def _name(path) -> str:
    return ".".join(re.findall(r"\w+", jax.tree_util.keystr(path)))


def _leaves(tree: Any) -> dict[str, Any]:
    return {_name(path): x for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def restore_item(step_dir: Path, item: str, abstract: Any):
    if jax.config.jax_enable_x64:
        abstract = _stored_dtypes(step_dir, item, abstract)
    try:
        with ocp.StandardCheckpointer(multiprocessing_options=processes()) as checkpointer:
            tree = checkpointer.restore((step_dir / item).absolute(), abstract)
    except Exception as e:  # noqa: BLE001 - name the file, not a frame deep inside orbax.
        message = str(e).splitlines()[0][:200] if str(e) else ""
        raise ValueError(f"{step_dir / item} is truncated or corrupt ({e.__class__.__name__}: {message}).") from None
    verify(step_dir, item, tree)
    return jax.tree.map(_uncommitted, tree)


def _uncommitted(x: Any) -> Any:
    """`x` as freshly made arrays are: not committed to a device. Orbax restores committed
    arrays, which jit lowers with their device placement, so a resumed run's programs missed the
    persistent cache that the uninterrupted run filled (`general`: minutes of recompiling)."""
    if not isinstance(x, jax.Array):
        return x
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
        return jax.random.wrap_key_data(jnp.asarray(np.asarray(jax.random.key_data(x))), impl=jax.random.key_impl(x))
    return jnp.asarray(np.asarray(x))


def is_array_like(x: Any) -> bool:
    return isinstance(x, (jax.Array, jax.ShapeDtypeStruct))


def find_steps(directory: Path) -> list[int]:
    """The step folders of an Orbax-managed folder, in order."""
    return sorted(int(p.name) for p in directory.iterdir() if p.is_dir() and p.name.isdigit())
