"""The repository's layout: first-party modules import each other without circles, the benchmark commands run
from where the docs say, and the served Bento leaves the dev tooling out."""

from __future__ import annotations

import ast
import fnmatch
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import ROOT

def first_party_modules(root: Path) -> dict[str, Path]:
    """Every module of every top-level package (a folder with ``__init__.py``) and every top-level module."""
    modules = {}
    for package in sorted(p for p in root.iterdir() if (p / "__init__.py").is_file() and not p.name.startswith(".")):
        for path in package.rglob("*.py"):
            parts = path.relative_to(root).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    modules.update({path.stem: path for path in root.glob("*.py")})
    return modules


def import_graph(modules: dict[str, Path]) -> dict[str, dict[str, int]]:
    """module -> {first-party module it imports: line}. Imports inside functions count too (a lazy import only
    postpones a circle: the old scripts/benchmark.py <-> bench_history.py one was made of them); imports under
    ``if TYPE_CHECKING:`` do not, as they never run."""

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, dict[str, int]] = {}
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        edges: dict[str, int] = {}
        stack: list[ast.AST] = [ast.parse(path.read_text(), str(path))]
        while stack:
            for node in ast.iter_child_nodes(stack.pop()):
                if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                    continue
                targets: list[str | None] = []
                if isinstance(node, ast.Import):
                    targets = [resolve(alias.name) for alias in node.names]
                elif isinstance(node, ast.ImportFrom):
                    base = node.module or ""
                    if node.level:
                        anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                        base = ".".join([*anchor, base] if base else anchor)
                    targets = [resolve(f"{base}.{alias.name}") if f"{base}.{alias.name}" in modules else resolve(base)
                               for alias in node.names]
                else:
                    stack.append(node)
                for target in targets:
                    if target and target != module:
                        edges.setdefault(target, node.lineno)
        graph[module] = edges
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(graph[start]))]
        index[start] = low[start] = len(index)
        stack.append(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    work.append((child, iter(graph[child])))
                elif child in stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(component)
    return found


def describe(component: set[str], graph: dict[str, dict[str, int]], modules: dict[str, Path]) -> str:
    return "\n".join(f"  {modules[a].relative_to(ROOT)}:{line} imports {b}"
                     for a in sorted(component) for b, line in sorted(graph[a].items()) if b in component)


def test_first_party_modules_import_each_other_without_circles() -> None:
    modules = first_party_modules(ROOT)
    assert {"bench", "bench.load", "bench.run", "serving", "tests.support.local_server", "catalog", "engines",
            "engines.torch.clip", "model_store.entry", "jobs.sqlite", "capabilities.fes.rest"} <= set(modules)
    graph = import_graph(modules)
    new = cycles(graph)
    assert not new, "import circles:\n" + "\n\n".join(describe(c, graph, modules) for c in new)


def test_the_import_graph_sees_lazy_and_relative_imports(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from . import b\n")
    (package / "b.py").write_text("def f():\n    from pkg.a import g\n")
    (package / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.a\n")
    graph = import_graph(first_party_modules(tmp_path))
    assert cycles(graph) == [{"pkg.a", "pkg.b"}]
    assert graph["pkg.c"] == {}


def test_the_benchmark_runs_as_documented_and_as_a_package() -> None:
    shim = subprocess.run([sys.executable, str(ROOT / "scripts" / "benchmark.py"), "--help"], cwd="/",
                          capture_output=True, text=True, timeout=120)
    package = subprocess.run([sys.executable, "-m", "bench", "--help"], cwd=ROOT, capture_output=True, text=True,
                             timeout=120)
    for done, prog in ((shim, "python scripts/benchmark.py"), (package, "python -m bench")):
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"usage: {prog} ")
        assert all(flag in done.stdout for flag in ("--serve", "--jobs-only", "--bulk-only", "--history"))


def test_the_bento_leaves_out_the_benchmarks_and_tests() -> None:
    include = yaml.safe_load((ROOT / "bentofile.yaml").read_text())["include"]
    files = [str(p.relative_to(ROOT)) for folder in ("bench", "tests") for p in (ROOT / folder).rglob("*.py")]
    assert "bench/run.py" in files and "tests/support/local_server.py" in files
    assert not [f for f in files if any(fnmatch.fnmatch(f, pattern) for pattern in include)]
