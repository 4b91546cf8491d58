"""The package's layout: imports run one way, in the order of the README's "How the pieces fit"."""

import ast
from pathlib import Path

import l2lgd

PACKAGE = Path(l2lgd.__file__).parent

# Every module of the package, lowest first: a module may import only modules before it.
# (Subpackage `__init__`s that import nothing go first; `tasks` registers its kinds.)
ORDER = [
    "l2lgd._version", "l2lgd._errors", "l2lgd._process", "l2lgd._objectives", "l2lgd._unroll",
    "l2lgd.optimizers", "l2lgd.estimators", "l2lgd.training", "l2lgd.runs", "l2lgd.lab",
    "l2lgd.tasks._base", "l2lgd.tasks._data", "l2lgd.tasks._quadratic", "l2lgd.tasks._mlp", "l2lgd.tasks._classifiers",
    "l2lgd.tasks._regression", "l2lgd.tasks._functions", "l2lgd.tasks._sequence", "l2lgd.tasks._transformer", "l2lgd.tasks._reparam", "l2lgd.tasks._mixture", "l2lgd.tasks",
    "l2lgd.optimizers._preprocessing", "l2lgd.optimizers._lstm", "l2lgd.optimizers._base",
    "l2lgd.optimizers._lstm_optimizer", "l2lgd.optimizers._adam_controller", "l2lgd.optimizers._mlp_step", "l2lgd.optimizers._prodigy_controller", "l2lgd.optimizers._kinds", "l2lgd.optimizers._optax_face",
    "l2lgd.optimizers._baselines",
    "l2lgd.estimators._base", "l2lgd.estimators._placement", "l2lgd.estimators._backprop", "l2lgd.estimators._autodiff", "l2lgd.estimators._fused",
    "l2lgd.estimators._evolution", "l2lgd.estimators._es", "l2lgd.estimators._pes", "l2lgd.estimators._named",
    "l2lgd._config",
    "l2lgd._evaluate",
    "l2lgd.training._state", "l2lgd.training._step",
    "l2lgd.runs._storage", "l2lgd.runs._snapshots", "l2lgd.runs._record", "l2lgd.runs._shipped",
    "l2lgd.runs._experiments", "l2lgd.runs._exports", "l2lgd.runs._loading", "l2lgd.runs._selection", "l2lgd.runs._ship",
    "l2lgd.runs._control", "l2lgd.runs._driver",
    "l2lgd.suite._tasks", "l2lgd.suite._baselines", "l2lgd.suite._profiles", "l2lgd.suite._run", "l2lgd.suite._report", "l2lgd.suite._compare", "l2lgd.suite",
    "l2lgd.lab.compare", "l2lgd.lab.figures", "l2lgd.lab.paper", "l2lgd.lab.report",
    "l2lgd.lab.bench_face", "l2lgd.lab.bench_estimators", "l2lgd.lab.bench_devices", "l2lgd.lab.bench",
    "l2lgd.cli", "l2lgd.__main__", "l2lgd",
]


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(name: str, path: Path, modules) -> set[str]:
    """The package's modules that `name` imports anywhere in its file (function bodies too)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            target = ".".join(base + ([node.module] if node.module else []))
        else:
            target = node.module or ""
        candidates = [target] + [f"{target}.{a.name}" for a in node.names]
        found |= {c for c in candidates if c in modules}
        # Importing a.b.c runs a.b's __init__ too.
        parts = target.split(".")
        found |= {".".join(parts[:i]) for i in range(2, len(parts)) if ".".join(parts[:i]) in modules}
    return found - {name}


def test_every_module_is_in_the_order():
    assert sorted(_modules()) == sorted(ORDER)


def test_imports_run_one_way():
    modules = _modules()
    rank = {name: i for i, name in enumerate(ORDER)}
    upward = [
        f"{name} imports {dep}"
        for name, path in modules.items()
        for dep in sorted(_imports(name, path, modules))
        if rank[dep] > rank[name] and not name.startswith(dep + ".")
    ]
    assert upward == []


def test_the_type_checking_block_names_every_export():
    """Editors and type checkers see the lazy namespace: each exported name is imported under
    `if TYPE_CHECKING:` from the module `__getattr__` loads it from."""
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    block = next(n for n in tree.body if isinstance(n, ast.If) and getattr(n.test, "id", "") == "TYPE_CHECKING")
    seen = {(node.module, alias.asname) for node in block.body for alias in node.names}
    assert seen == {(module, name) for name, module in l2lgd._WHERE.items()}
