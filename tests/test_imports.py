"""How pvchat's modules import each other (CONTRIBUTING.md, "Imports"): read from the source, nothing imported.

Imports sit at module top; a function-local one says why in a comment; the module-level import
graph has no cycle; the library never imports the offline world (``pvchat.offline``) except its
two clients.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pvchat

ROOT = Path(pvchat.__file__).parent
WORLD_CLIENTS = {"pvchat.eval.benchmark", "pvchat.train.pretrain"}  # module-level imports of pvchat.offline
LAZY_OFFLINE = {"pvchat.learn"}  # learn.default_pool: the offline world's people, only when no pool is passed


def _modules() -> dict[str, tuple[Path, ast.Module]]:
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = (path, ast.parse(path.read_text(encoding="utf-8")))
    return out


def _imports(tree: ast.Module, local: bool) -> list[ast.Import | ast.ImportFrom]:
    """Import statements at module level (``local`` False: outside every function) or inside functions."""
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)) and in_function == local:
                found.append(child)
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))

    visit(tree, False)
    return found


def _targets(module: str, is_package: bool, node: ast.Import | ast.ImportFrom, known: set[str]) -> set[str]:
    """The pvchat modules an import statement loads (``from pkg import submodule`` counts as the submodule)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = module if is_package else module.rpartition(".")[0]
            for _ in range(node.level - 1):
                package = package.rpartition(".")[0]
            base = f"{package}.{base}" if base else package
        subs = [f"{base}.{a.name}" for a in node.names]
        names = [s for s in subs if s in known] or [base]
    out = set()
    for name in names:
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name.startswith("pvchat") and name != module:
            out.add(name)
    return out


def test_every_function_local_import_says_why():
    missing = []
    for name, (path, tree) in _modules().items():
        lines = path.read_text(encoding="utf-8").splitlines()

        def is_import(n: int, lines: list[str] = lines) -> bool:
            return n >= 1 and lines[n - 1].strip().startswith(("import ", "from "))

        for node in _imports(tree, local=True):
            if any("#" in lines[n - 1] for n in (node.lineno, node.end_lineno)):
                continue
            k = node.lineno - 1  # the line above this block of imports (blank lines between groups included)
            while k >= 1 and (is_import(k) or (not lines[k - 1].strip() and is_import(k - 1))):
                k -= 1
            if not (k >= 1 and lines[k - 1].strip().startswith("#")):
                missing.append(f"{name}:{node.lineno}: {lines[node.lineno - 1].strip()}")
    assert not missing, "function-local imports without a comment saying why:\n" + "\n".join(missing)


def test_the_module_import_graph_has_no_cycle():
    modules = _modules()
    known = set(modules)
    graph = {name: set().union(*(_targets(name, path.name == "__init__.py", node, known)
                                 for node in _imports(tree, local=False)))
             for name, (path, tree) in modules.items()}
    state: dict[str, int] = {}  # 1 on the path, 2 done

    def walk(name: str, path: list[str]) -> list[str] | None:
        state[name] = 1
        for nxt in sorted(graph[name]):
            if state.get(nxt) == 1:
                return [*path, name, nxt]
            if nxt not in state and (cycle := walk(nxt, [*path, name])):
                return cycle
        state[name] = 2
        return None

    for name in sorted(graph):
        if name not in state:
            cycle = walk(name, [])
            assert cycle is None, "import cycle: " + " -> ".join(cycle[cycle.index(cycle[-1]):])


def test_the_library_does_not_import_the_offline_world():
    modules = _modules()
    known = set(modules)
    wrong = []
    for name, (path, tree) in modules.items():
        if name.startswith(("pvchat.offline", "pvchat.commands")):
            continue
        for local in (False, True):
            for node in _imports(tree, local=local):
                if any(t.startswith("pvchat.offline") for t in _targets(name, path.name == "__init__.py", node, known)):
                    allowed = LAZY_OFFLINE if local else WORLD_CLIENTS
                    if name not in allowed:
                        wrong.append(f"{name}:{node.lineno}")
    assert not wrong, "library modules importing pvchat.offline: " + ", ".join(wrong)
