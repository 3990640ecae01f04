"""Measure stoke's internal boundaries from its source: the numbers issue 17 is judged by.

- **import cycles**: strongly connected groups of ``stoke`` modules that import each other
  (every import counts, also inside functions; ``if TYPE_CHECKING:`` blocks do not);
- **private names imported across files**: ``from stoke.x import _name``;
- **private members reached through another object**: ``obj._name`` where ``obj`` is not
  ``self``/``cls`` and not a module from outside stoke (``sys._getframe`` is not ours to fix).

    python tools/import_graph.py            # summary and every hit
    python tools/import_graph.py --json     # the same as JSON
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "stoke"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of the nodes inside ``if TYPE_CHECKING:`` blocks."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", None)
            if name == "TYPE_CHECKING":
                for child in node.body:
                    skipped.update(id(n) for n in ast.walk(child))
    return skipped


def resolve(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def analyse() -> dict:
    files = sorted((ROOT / PACKAGE).rglob("*.py"))
    modules = {module_name(f): f for f in files}
    edges: dict[str, set[str]] = {m: set() for m in modules}
    private_imports: list[str] = []
    private_members: list[str] = []
    outside_members: list[str] = []
    trees = {m: ast.parse(p.read_text(), filename=str(p)) for m, p in modules.items()}
    own_private = defined_private_members(trees.values())

    def owner_of(target: str) -> str | None:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        return target or None

    for module, path in modules.items():
        tree = trees[module]
        skipped = type_checking_nodes(tree)
        outside_modules: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == PACKAGE:
                        target = owner_of(alias.name)
                        if target and target != module:
                            edges[module].add(target)
                    else:
                        outside_modules.add((alias.asname or alias.name).split(".")[0])
            elif isinstance(node, ast.ImportFrom):
                source = resolve(module, node, path.name == "__init__.py")
                if source.split(".")[0] != PACKAGE:
                    outside_modules.update(a.asname or a.name for a in node.names)
                    continue
                for alias in node.names:
                    target = owner_of(f"{source}.{alias.name}") or owner_of(source)
                    if target and target != module:
                        edges[module].add(target)
                    if is_private(alias.name):
                        private_imports.append(
                            f"{path.relative_to(ROOT)}:{node.lineno} imports {alias.name} "
                            f"from {source}")
        outside_bases = super_calls_into_outside_bases(tree, outside_modules)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and is_private(node.attr)
                    and isinstance(node.ctx, (ast.Load, ast.Store, ast.Del))):
                value = node.value
                if isinstance(value, ast.Name) and (
                        value.id in ("self", "cls") or value.id in outside_modules):
                    continue
                where = (outside_members
                         if node.attr not in own_private or id(value) in outside_bases
                         else private_members)
                where.append(f"{path.relative_to(ROOT)}:{node.lineno} .{node.attr} on "
                             f"{ast.unparse(value)}")
    return {
        "modules": len(modules),
        "cycles": strongly_connected(edges),
        "private_imports": private_imports,
        "private_members": private_members,
        "outside_private_members": outside_members,
    }


def super_calls_into_outside_bases(tree: ast.AST, outside_modules: set[str]) -> set[int]:
    """The ``super()`` calls (their node ids) inside classes whose bases all come from
    outside stoke (``class X(keras.callbacks.BackupAndRestore)``). ``super()._name`` there
    runs the other library's implementation: a stoke override of a Keras hook that calls
    Keras' own is a private member of Keras, even though stoke's override has the same name
    (which is why the name alone would count it as stoke's)."""
    calls: set[int] = set()
    for cls in ast.walk(tree):
        if not isinstance(cls, ast.ClassDef) or not cls.bases:
            continue
        roots = []
        for base in cls.bases:
            while isinstance(base, ast.Attribute):
                base = base.value
            roots.append(base.id if isinstance(base, ast.Name) else None)
        if not all(root in outside_modules for root in roots):
            continue
        for node in ast.walk(cls):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id == "super" and not node.args):
                calls.add(id(node))
    return calls


def defined_private_members(trees) -> set[str]:
    """Private names stoke's own classes define (methods, class attributes, ``self._x =``):
    reaching one of these through another object crosses one of stoke's boundaries; other
    private names belong to Keras, TensorFlow, ... (hooks into them are counted apart)."""
    names: set[str] = set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                for item in node.body:
                    if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        names.add(item.name)
                    elif isinstance(item, (ast.Assign, ast.AnnAssign)):
                        targets = item.targets if isinstance(item, ast.Assign) else [item.target]
                        names.update(t.id for t in targets if isinstance(t, ast.Name))
            elif (isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store)
                  and isinstance(node.value, ast.Name) and node.value.id == "self"):
                names.add(node.attr)
    return {name for name in names if is_private(name)}


def strongly_connected(edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm; only groups of two or more modules (real cycles)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    sys.setrecursionlimit(10_000)
    for node in sorted(edges):
        if node not in index:
            visit(node)
    return groups


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    result = analyse()
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{result['modules']} modules")
    print(f"import cycles: {len(result['cycles'])}")
    for group in result["cycles"]:
        print("  " + " <-> ".join(group))
    print(f"private names imported across files: {len(result['private_imports'])}")
    for line in result["private_imports"]:
        print("  " + line)
    print("private members of stoke's classes reached through another object: "
          f"{len(result['private_members'])}")
    for line in result["private_members"]:
        print("  " + line)
    print("private members of other libraries' objects (Keras, TF hooks): "
          f"{len(result['outside_private_members'])}")
    for line in result["outside_private_members"]:
        print("  " + line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
