"""The tree stays the pipeline: no source file over 600 lines, no import circle between soundmond's modules, no
function-level import of soundmond's own modules (only of optional heavy libraries), and `soundmond run` on the
shipped config imports no workbench module and none of the workbench's libraries."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "soundmond"
MAX_LINES = 600
# Libraries a function may import where it needs them: optional, heavy, or absent on a sensor (and the optional
# workbench itself, which `soundmond bench` imports only for its full run).
OPTIONAL_LIBRARIES = {"sounddevice", "sklearn", "skops", "onnx", "jsonschema", "torch", "transformers",
                      "ai_edge_litert", "matplotlib", "tqdm", "httpx", "scipy", "tensorflow", "optimum", "pyarrow"}
WORKBENCH_LIBRARIES = ("sklearn", "skops", "scipy", "matplotlib", "httpx", "torch", "tensorflow", "onnx", "tqdm")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _module_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                found.append(node)
            elif isinstance(node, ast.If) and not _is_type_checking(node):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)

    visit(tree.body)
    return found


def _targets(node: ast.Import | ast.ImportFrom) -> list[str]:
    """soundmond modules an import statement loads (a `from pkg import mod` names the submodule)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "soundmond"]
    if node.module is None or node.module.split(".")[0] != "soundmond":
        return []
    out = [node.module]
    out += [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in MODULES]
    return out


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        edges: set[str] = set()
        for node in _module_level_imports(ast.parse(path.read_text())):
            for target in _targets(node):
                if target in MODULES and target != name:
                    edges.add(target)
                    parent = target.rsplit(".", 1)[0]
                    while parent != "soundmond" and parent in MODULES:  # importing a.b.c runs a/__init__, a/b/__init__
                        if parent != name and not name.startswith(parent + "."):
                            edges.add(parent)
                        parent = parent.rsplit(".", 1)[0]
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_source_file_is_longer_than_600_lines() -> None:
    long = {str(p.relative_to(REPO)): n for p in MODULES.values() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"split these by job (at most {MAX_LINES} lines each): {long}"


def test_no_import_circle() -> None:
    graph = import_graph()
    assert graph["soundmond.pipeline"], "the graph must see the pipeline's imports"
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_the_cycle_finder_finds_a_circle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a"}}) is None


def test_functions_import_only_optional_libraries() -> None:
    bad = []
    for path in MODULES.values():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for sub in ast.walk(node):
                if isinstance(sub, ast.Import):
                    names = [a.name for a in sub.names]
                elif isinstance(sub, ast.ImportFrom):
                    names = [sub.module or ""]
                else:
                    continue
                bad += [f"{path.relative_to(REPO)}:{sub.lineno} imports {n}" for n in names
                        if n.split(".")[0] not in OPTIONAL_LIBRARIES and not n.startswith("soundmond.workbench")]
    assert not bad, "import these at the top of the module: " + "; ".join(bad)


def test_the_daemon_side_never_imports_the_workbench() -> None:
    bad = []
    for name, path in MODULES.items():
        if name.startswith("soundmond.workbench"):
            continue
        for node in _module_level_imports(ast.parse(path.read_text())):
            bad += [f"{name} imports {t}" for t in _targets(node) if t.startswith("soundmond.workbench")]
    assert not bad, bad


@pytest.mark.slow
def test_run_on_the_shipped_config_imports_no_workbench(tmp_path: Path) -> None:
    models = Path(os.environ.get("SOUNDMOND_TEST_MODELS", REPO / "models"))
    if not (models / "yamnet" / "model.json").is_file():
        pytest.skip(f"no exported models in {models} (bash scripts/setup.sh makes them)")
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg["source"]["path"] = str(REPO / "tests" / "fixtures" / "audio")
    cfg["models"]["tagger"]["path"] = str(models / "yamnet")
    cfg["models"]["birds"]["path"] = str(models / "birdnet")
    cfg["store"]["path"] = str(tmp_path / "soundmond.db")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    code = ("import json, sys\nfrom soundmond.cli import main\nrc = main(['run', '--config', sys.argv[1]])\n"
            "print(json.dumps({'rc': rc, 'modules': sorted(sys.modules)}))")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "config.yaml")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["rc"] == 0
    loaded = set(out["modules"])
    assert "soundmond.pipeline" in loaded and "onnxruntime" in loaded  # it really ran the daemon
    assert not sorted(m for m in loaded if m.startswith("soundmond.workbench"))
    assert not sorted(m for m in loaded if m.split(".")[0] in WORKBENCH_LIBRARIES)
