"""The optimizers and experiments that ship with l2lgd, found from a checkout or an install.

In a checkout (or an editable install) they are the repository's `checkpoints/` and
`experiments/`; a wheel carries copies of both inside the package (`_shipped_checkpoints`,
`_shipped_experiments`, mapped in `pyproject.toml`).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

_PACKAGE = Path(__file__).resolve().parent


def shipped_dir(kind: str) -> Path | None:
    """`checkpoints` or `experiments` of this l2lgd: the checkout's, else the installed copy."""
    checkout = _PACKAGE.parents[1]
    if (checkout / "pyproject.toml").is_file() and (checkout / kind).is_dir():
        return checkout / kind
    installed = _PACKAGE / f"_shipped_{kind}"
    return installed if installed.is_dir() else None


class ShippedOptimizer(NamedTuple):
    """One shipped optimizer: its name, folder and the one-line summary of its model card."""

    name: str
    path: Path
    summary: str


def _summary(folder: Path) -> str:
    """The model card's first paragraph line after its title, with the held-out figure."""
    card = folder / "MODEL_CARD.md"
    text = ""
    if card.is_file():
        lines = [line.strip() for line in card.read_text().splitlines()]
        text = next((line for line in lines[1:] if line and not line.startswith("#")), "")
    return text


def list_optimizers() -> list[ShippedOptimizer]:
    """Every optimizer shipped with this l2lgd, by name, with a one-line summary (what it was
    trained on, its horizon, its held-out figure; from its `MODEL_CARD.md`).

    Example:
        >>> [o.name for o in l2lgd.list_optimizers()][:2]
        ['digits', 'end']
    """
    root = shipped_dir("checkpoints")
    if root is None:
        return []
    return [
        ShippedOptimizer(p.name, p, _summary(p))
        for p in sorted(root.iterdir())
        if (p / "optimizer").is_dir()
    ]


def resolve_optimizer_path(path: str | Path) -> Path:
    """`path` if it exists; else the shipped optimizer of that name; else an error that lists
    the shipped names."""
    candidate = Path(path)
    if candidate.exists():
        return candidate
    names = {o.name: o.path for o in list_optimizers()}
    if str(path) in names:
        return names[str(path)]
    raise FileNotFoundError(
        f"No such checkpoint folder, and no shipped optimizer named {str(path)!r}. "
        f"Shipped optimizers: {', '.join(names) or '(none found)'}."
    )


def shipped_folder(name: str) -> Path | None:
    """The shipped run folder of experiment `name` (whether or not it holds an optimizer yet)."""
    root = shipped_dir("checkpoints")
    return None if root is None else root / name


def is_shipped(path: str | Path) -> bool:
    """Whether `path` is (inside) the shipped `checkpoints/` folder."""
    root = shipped_dir("checkpoints")
    if root is None:
        return False
    path, root = Path(path).resolve(), root.resolve()
    return path == root or root in path.parents


def compare_exports(new: Path, old: Path) -> str | None:
    """None when the two exported optimizers have bit-identical weights and the same config;
    else how they differ, in words."""
    import numpy as np
    import jax

    from ._checkpoint import load_learned_optimizer

    if not (old / "optimizer").is_dir():
        return "there is no shipped optimizer yet"
    new_opt, new_config, new_metrics = load_learned_optimizer(new)
    old_opt, old_config, old_metrics = load_learned_optimizer(old)
    changed = new_config.changed_fields(old_config, ignore=())
    if changed:
        return f"its config differs in {', '.join(changed)}"
    a, b = jax.tree.leaves(new_opt), jax.tree.leaves(old_opt)
    if all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b)):
        return None
    diff = max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in zip(a, b))
    return (f"its weights differ (largest difference {diff:.3g}; exported meta-step {new_metrics['step']:,} vs "
            f"{old_metrics['step']:,}; validation {new_metrics['validation_log10_final']:.3f} vs "
            f"{old_metrics['validation_log10_final']:.3f})")


def ship(run_dir: Path, name: str) -> str:
    """Replaces the shipped optimizer `name` (and its config.json) with the run's export, unless
    they are bit-identical, in which case nothing is written. Returns what happened."""
    import shutil

    from ._checkpoint import EXPORT, copy_export

    target = shipped_folder(name)
    if target is None:
        raise FileNotFoundError("This l2lgd has no checkpoints/ folder to ship into (ship from a checkout).")
    difference = compare_exports(run_dir, target)
    if difference is None:
        return f"{run_dir} reproduces the shipped optimizer {target} bit for bit; left it untouched."
    target.mkdir(parents=True, exist_ok=True)
    copy_export(run_dir, target)
    shutil.copy(run_dir / "config.json", target / "config.json")
    return f"shipped {run_dir / EXPORT} to {target / EXPORT} ({difference})."
