"""Process set-up, before JAX's first computation: single-threaded XLA pinned to a free core,
the persistent compilation cache, `jax.distributed` across processes, and XLA's CPU options.

Imported by the command line and the lab alike; it imports JAX only inside its functions, so
the command line starts without loading it.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

SINGLE_THREAD_FLAGS = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def configure_cpu(core: int | list[int] | None = None, *, cache: bool = True) -> None:
    """Single-threaded XLA pinned to one core: the fastest and reproducible set-up for these
    tiny kernels (threads only add synchronisation), and the compilation cache
    (`enable_compilation_cache`, unless `cache=False`: `bench` times compilation). Must run
    before JAX's first computation. Determinism holds for one set of flags: the same flags give
    bit-identical weights. A list of cores: one CPU device per core (XLA's forced host devices,
    each run by its own thread), the process pinned to them, so that a run splits its work over
    them (`train --devices N`)."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_multi_thread_eigen" not in flags:
        flags = f"{flags} {SINGLE_THREAD_FLAGS}".strip()
    cores = core if isinstance(core, list) else None if core is None else [core]
    if cores and len(cores) > 1 and "xla_force_host_platform_device_count" not in flags:
        # First: XLA reads no flag after SINGLE_THREAD_FLAGS' `intra_op_parallelism_threads=1`.
        flags = f"--xla_force_host_platform_device_count={len(cores)} {flags}"
    os.environ["XLA_FLAGS"] = flags
    if cores and hasattr(os, "sched_setaffinity"):
        available = machine_cores()
        os.environ[CORES_VARIABLE] = ",".join(map(str, available))  # for child processes (the bench's)
        os.sched_setaffinity(0, {available[c % len(available)] for c in cores})
    if cache:
        enable_compilation_cache()


CORES_VARIABLE = "L2LGD_CORES"  # the cores the process had before `configure_cpu` pinned it


def machine_cores() -> list[int]:
    """The cores this process may use, as they were before `configure_cpu` pinned it (or one of
    its parents): what a child that runs on several cores (the bench's devices) chooses from."""
    given = os.environ.get(CORES_VARIABLE)
    if given:
        return [int(c) for c in given.split(",")]
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))


CACHE_VARIABLE = "L2LGD_COMPILATION_CACHE"
CACHE_OFF = ("", "0", "off", "false", "no", "none")


def compilation_cache_dir() -> Path | None:
    """Where compiled programs are kept between runs: `$L2LGD_COMPILATION_CACHE`, else
    `$XDG_CACHE_HOME/l2lgd/jax` (`~/.cache/l2lgd/jax`); None (no cache) when the variable is
    set to 0, off or empty."""
    value = os.environ.get(CACHE_VARIABLE)
    if value is None:
        return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "l2lgd" / "jax"
    if value.strip().lower() in CACHE_OFF:
        return None
    return Path(value).expanduser()


def enable_compilation_cache() -> Path | None:
    """Turns on JAX's persistent compilation cache in `compilation_cache_dir()` for every
    program, however quick to compile (a warm `make train` then compiles nothing). A cached
    program is the one XLA compiled, so results are bit-identical with and without it."""
    path = compilation_cache_dir()
    if path is None:
        return None
    import jax

    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path


MULTI_HOST_VARIABLES = ("JAX_COORDINATOR_ADDRESS", "COORDINATOR_ADDRESS", "TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS")


def initialize_distributed(**kwargs) -> None:
    """`jax.distributed.initialize(**kwargs)`, with CPU collectives over gloo (so that processes
    on CPU hosts all-reduce too; GPU and TPU use their own). Before JAX's first computation."""
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**kwargs)


def maybe_initialize_distributed() -> None:
    """`initialize_distributed()` when a multi-host launcher set its usual variables (a
    coordinator address, TPU worker list, or a SLURM job of several tasks; JAX detects the
    process count and index), or `JAX_COORDINATOR_ADDRESS` with `L2LGD_NUM_PROCESSES` and
    `L2LGD_PROCESS_ID` for processes started by hand."""
    slurm = int(os.environ.get("SLURM_NTASKS", "1")) > 1
    if slurm or any(v in os.environ for v in MULTI_HOST_VARIABLES):
        kwargs = {}
        by_hand = [v for v in ("L2LGD_NUM_PROCESSES", "L2LGD_PROCESS_ID") if v in os.environ]
        if len(by_hand) == 1:
            raise ValueError(f"{by_hand[0]} is set but not {({'L2LGD_NUM_PROCESSES', 'L2LGD_PROCESS_ID'} - set(by_hand)).pop()}: "
                             "processes started by hand need both (the process count, and this process's index).")
        if by_hand:
            kwargs = {"num_processes": int(os.environ["L2LGD_NUM_PROCESSES"]), "process_id": int(os.environ["L2LGD_PROCESS_ID"])}
        initialize_distributed(**kwargs)


_CORE_CLAIM = []


def free_core() -> int | None:
    """The first core that no other l2lgd process on this machine has claimed (a lock file per
    core, held for this process's life), so concurrent trainings spread over the cores; None
    when every core is taken (then the process is not pinned)."""
    import fcntl
    import tempfile

    if not hasattr(os, "sched_getaffinity"):
        return None
    for index, _ in enumerate(sorted(os.sched_getaffinity(0))):
        handle = _open_lock(Path(tempfile.gettempdir()), index)
        if handle is None:
            continue
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        _CORE_CLAIM.append(handle)
        return index
    return None


def _open_lock(folder: Path, index: int):
    """Core `index`'s lock file, shared by every user (created readable and writable by all); one
    that another user created without write access is skipped in favour of this user's own
    (`l2lgd-core-N-<uid>.lock`). None when neither can be opened."""
    for name in (f"l2lgd-core-{index}.lock", f"l2lgd-core-{index}-{os.getuid()}.lock"):
        try:
            fd = os.open(folder / name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        except OSError:
            continue
        try:
            os.fchmod(fd, 0o666)  # the umask narrowed it; only the owner can widen it
        except OSError:
            pass
        return os.fdopen(fd, "a")
    return None


# XLA's calls into the YNNPACK library cost more than its own code for the LSTM's small matrix
# products, so the training program is compiled without them (`make bench` measures a meta-step).
# The option is experimental, so it is used only where this jaxlib accepts it.
CPU_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


@functools.cache
def cpu_compiler_options() -> dict[str, str]:
    """`CPU_COMPILER_OPTIONS` on a CPU backend whose XLA knows them, else none."""
    import jax
    import jax.numpy as jnp

    if jax.default_backend() != "cpu":
        return {}
    try:
        jax.jit(lambda x: x + 1, compiler_options=CPU_COMPILER_OPTIONS)(jnp.zeros(()))
    except Exception:  # an XLA without the option: "No such compile option"
        return {}
    return dict(CPU_COMPILER_OPTIONS)
