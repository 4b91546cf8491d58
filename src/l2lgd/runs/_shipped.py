"""The optimizers and experiments that ship with l2lgd, found from a checkout or an install.

In a checkout (or an editable install) they are the repository's `checkpoints/` and
`experiments/`; a wheel carries copies of both inside the package (`_shipped_checkpoints`,
`_shipped_experiments`, mapped in `pyproject.toml`).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import NamedTuple

_PACKAGE = Path(__file__).resolve().parents[1]  # the l2lgd package


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
    if not card.is_file():
        return ""
    try:
        lines = [line.strip() for line in card.read_text(encoding="utf-8", errors="replace").splitlines()]
    except OSError as e:  # one unreadable card must not hide every optimizer
        return f"(model card unreadable: {card}: {e.strerror or e})"
    return next((line for line in lines[1:] if line and not line.startswith("#")), "")


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
    if not str(path):
        raise FileNotFoundError("An empty path names no checkpoint folder or shipped optimizer.")
    candidate = Path(path)
    names = {o.name: o.path for o in list_optimizers()}
    if candidate.is_dir() or (candidate.exists() and str(path) not in names):
        return candidate
    if str(path) in names:
        if candidate.exists():  # a local file of that name is not a checkpoint folder
            warnings.warn(f"{candidate.resolve()} is a file, not a checkpoint folder; loading the shipped optimizer "
                          f"{str(path)!r} ({names[str(path)]}) instead.", stacklevel=3)
        return names[str(path)]
    raise FileNotFoundError(
        f"No such checkpoint folder, and no shipped optimizer named {str(path)!r}. "
        f"Shipped optimizers: {', '.join(names) or '(none found)'}."
    )


def shipped_folder(name: str) -> Path | None:
    """The shipped run folder of experiment `name` (whether or not it holds an optimizer yet)."""
    root = shipped_dir("checkpoints")
    return None if root is None else root / name


def checkout_dir(kind: str) -> Path | None:
    """`checkpoints` or `experiments` of the checkout this l2lgd runs from (an editable install or
    the source tree), or None for an installed copy, which `--ship` must not write into."""
    checkout = _PACKAGE.parents[1]
    if (checkout / "pyproject.toml").is_file() and (checkout / kind).is_dir():
        return checkout / kind
    return None


def is_shipped(path: str | Path) -> bool:
    """Whether `path` is (inside) the shipped `checkpoints/` folder."""
    root = shipped_dir("checkpoints")
    if root is None:
        return False
    path, root = Path(path).resolve(), root.resolve()
    return path == root or root in path.parents
