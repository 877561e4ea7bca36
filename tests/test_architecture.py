"""The architecture's promises (docs/architecture.md), each checked on the code itself.

- no import cycle among the package's modules (function-level imports included);
- every import goes down the layers docs/architecture.md declares (or stays in its layer);
- only :mod:`merdg.run.directory` spells a run file's name;
- nothing cites a file outside the repository or an absolute path of one machine;
- results come from one pipeline: ``merdg collect`` prints the tables a bench wrote, also when
  runs are missing or failed.
"""

import ast
import csv
import io
import json
import re
import shutil
from pathlib import Path

import merdg.experiments.jobs as jobs_module
from merdg.cli import main
from merdg.run.directory import RunDir

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "merdg"


def _module_name(path: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    return ".".join(parts[:-1] if is_package else parts), is_package


def import_graph() -> dict[str, set[str]]:
    """``{module: modules of the package it imports}`` (every import statement)."""
    modules = dict(_module_name(p) for p in PACKAGE.rglob("*.py"))

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in modules}
    for path in PACKAGE.rglob("*.py"):
        module, is_package = _module_name(path)
        here = module if is_package else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = here.split(".")[: len(here.split(".")) - (node.level - 1)]
                    base = ".".join(up + ([base] if base else []))
                names = [f"{base}.{a.name}" for a in node.names] + [base]
            else:
                continue
            for name in names:
                target = resolve(name)
                # a package's __init__ re-exporting its own children is not a cycle
                if (target and target != module and target.startswith("merdg")
                        and not (modules[target] and module.startswith(target + "."))):
                    graph[module].add(target)
                # importing a submodule first runs its packages' __init__ (outside the importer's
                # own packages, which are initialized already)
                parts = (target or "").split(".")
                for k in range(2, len(parts)):
                    package = ".".join(parts[:k])
                    if (package in modules and package != module
                            and not module.startswith(package + ".")):
                        graph[module].add(package)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle():
    graph = import_graph()
    assert "merdg.run.training" in graph and graph["merdg.run.training"]  # the walker works
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles(graph) == []


def declared_layers() -> list[set[str]]:
    """The layers of docs/architecture.md, bottom first: each line of its ``layers`` block
    names the top-level packages and modules of one layer (``merdg``: the package's
    ``__init__``), top layer first."""
    text = (REPO / "docs" / "architecture.md").read_text()
    block = text.split("<!-- layers -->", 2)[1]
    lines = [line.strip() for line in block.splitlines()
             if line.strip() and not line.strip().startswith("```")]
    return [set(line.replace("/", " ").split()) for line in reversed(lines)]


def layer_of(module: str) -> str:
    """``merdg.run.training`` -> ``run``; ``merdg`` -> ``merdg``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def upward_imports(graph: dict[str, set[str]], rank: dict[str, int]) -> list[str]:
    return sorted(f"{a} -> {b}" for a, targets in graph.items() for b in targets
                  if rank[layer_of(b)] > rank[layer_of(a)])


def test_imports_go_down_the_declared_layers():
    layers = declared_layers()
    rank = {name: k for k, layer in enumerate(layers) for name in layer}
    graph = import_graph()
    assert {layer_of(m) for m in graph} == set(rank), "every package and module has a layer"
    assert len(rank) == sum(len(layer) for layer in layers), "one layer per name"
    assert upward_imports(graph, rank) == []
    # the check catches an upward import (the pure metrics importing the run layer)
    assert upward_imports({"merdg.evaluation.metrics": {"merdg.run.training"}}, rank) == [
        "merdg.evaluation.metrics -> merdg.run.training"]


def test_the_run_config_module_needs_no_torch():
    graph = import_graph()
    # the settings declarations only, which import nothing of merdg
    assert graph["merdg.run.config"] == {"merdg.options"} and graph["merdg.options"] == set()
    for source in (PACKAGE / "run" / "config.py", PACKAGE / "options.py"):  # nor torch, numpy
        assert not re.search(r"^\s*(import|from)\s+(torch|numpy)", source.read_text(), re.M)


RUN_FILE_NAMES = {RunDir.CONFIG, RunDir.RECORDS, RunDir.SUMMARY, RunDir.CHECKPOINT, RunDir.MODEL,
                  RunDir.LAST_MODEL,
                  RunDir.JOB, RunDir.LOG, RunDir.LOCK, RunDir.PREVIOUS_CHECKPOINT,
                  RunDir.CHECKPOINT_DIGESTS, RunDir.DAMAGED_CHECKPOINT, RunDir.MODEL_DIGEST,
                  RunDir.PRETRAINING, RunDir.PRETRAINING_DIGEST}
MARKERS = {RunDir.DONE, RunDir.FAILED}  # also status words: only their use in a path is checked


def _docstring_nodes(tree: ast.AST) -> set[int]:
    nodes = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                nodes.add(id(body[0].value))
    return nodes


def run_file_mentions(path: Path) -> list[str]:
    """Code of ``path`` that spells a run file's name as a name (prose in docstrings, help
    texts and messages may mention the files)."""
    tree = ast.parse(path.read_text())
    docstrings = _docstring_nodes(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and (
                id(node) not in docstrings):
            if node.value.strip() in RUN_FILE_NAMES or re.fullmatch(
                    r"[\w./*-]*(" + "|".join(map(re.escape, RUN_FILE_NAMES)) + r")", node.value):
                found.append(f"{path.name}:{node.lineno}: {node.value!r}")
        if (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div)
                and isinstance(node.right, ast.Constant) and node.right.value in MARKERS):
            found.append(f"{path.name}:{node.lineno}: / {node.right.value!r}")
    return found


def test_only_the_run_directory_spells_run_file_names():
    owner = PACKAGE / "run" / "directory.py"
    assert run_file_mentions(owner)  # the check sees names where they are
    offenders = [hit for p in sorted(PACKAGE.rglob("*.py")) if p != owner
                 for hit in run_file_mentions(p)]
    assert offenders == []


# spelled in pieces so that this file does not match itself
NOTES = ["peers" + ".md", "mer-dg" + ".md", "style" + ".md", "environment" + ".md",
         "../" + "shared/design"]
MACHINE_PATHS = ["/" + "work/", "/" + "root/", "/" + "home/", "/" + "Users/"]
TEXT_SUFFIXES = {".py", ".md", ".sh", ".toml", ".txt", ".cfg", ".yaml", ".yml", ".json"}


def repository_text_files() -> list[Path]:
    roots = [REPO / d for d in ("src", "tests", "docs", "benchmarks", "tools", ".ci")]
    files = [REPO / "README.md", REPO / "pyproject.toml"]
    for root in roots:
        files += [p for p in root.rglob("*") if p.is_file() and (p.suffix in TEXT_SUFFIXES
                                                                  or p.parent.name == ".ci")]
    return [p for p in files if "__pycache__" not in p.parts]


def test_no_reference_to_files_outside_the_repository():
    offenders = []
    for path in repository_text_files():
        text = path.read_text(errors="replace")
        for needle in NOTES + MACHINE_PATHS:
            if needle in text:
                line = text[: text.index(needle)].count("\n") + 1
                offenders.append(f"{path.relative_to(REPO)}:{line}: {needle}")
    assert offenders == []


# --- one result pipeline -------------------------------------------------------------------

TINY = {"epochs": 1, "batch_size": 12, "proj_hidden": 16, "fusion_hidden": 16}
BENCH = ["bench", "--dataset", "synthetic", "--algorithms", "ERM", "MERDG", "--seeds", "2",
         "--targets", "d0", "d1", "--hparams", json.dumps(TINY), "--dataset-option",
         "samples_per_domain=40", "--dataset-option", "n_classes=3"]


def test_collect_prints_the_tables_a_bench_wrote_with_a_failed_run(tmp_path, capsys,
                                                                    monkeypatch):
    real_train = jobs_module.train

    def train(config, progress):
        if (config.algorithm, config.target, config.seed) == ("MERDG", "d1", 1):
            raise ValueError("unreadable sample (a stand-in failure)")
        return real_train(config, progress=progress)

    monkeypatch.setattr(jobs_module, "train", train)
    out = tmp_path / "bench"
    assert main([*BENCH, "--out", str(out)]) == 1  # one run failed: the others are reported
    bench_out = capsys.readouterr().out
    table = (out / "table.md").read_text()
    assert table in bench_out and "stand-in failure" in bench_out
    assert "| m0+m1+m2 | MERDG |" in table
    assert main(["collect", str(out), "--out", str(tmp_path / "collected")]) == 0
    assert table in capsys.readouterr().out
    assert (tmp_path / "collected" / "table.md").read_text() == table
    # the failed run's target has one seed: MERDG's avg uses the seed both targets have
    text = (tmp_path / "collected" / "cells.csv").read_text()
    cells = [row for row in csv.DictReader(io.StringIO(text))
             if (row["algorithm"], row["target"]) == ("MERDG", "avg")]
    assert len(cells) == 1 and cells[0]["n"] == "1"  # n = 1 shared replicate


def test_collect_after_a_run_was_deleted(tmp_path, capsys):
    out = tmp_path / "bench"
    assert main([*BENCH, "--out", str(out)]) == 0
    full = (out / "table.md").read_text()
    shutil.rmtree(out / "runs" / "m0+m1+m2" / "ERM" / "d0" / "seed1")
    capsys.readouterr()
    assert main(["collect", str(out)]) == 0
    printed = capsys.readouterr().out
    table = (out / "table.md").read_text()
    assert table in printed and table != full
    row = next(line for line in table.splitlines() if line.startswith("| m0+m1+m2 | ERM |"))
    assert " - |" not in row  # d0 keeps its other seed, the average its shared replicate


def test_mer_dg_is_a_pure_composition():
    """Only algorithms/mer.py knows MER-DG's hparams; the others answer neutral hooks."""
    offenders = []
    for path in sorted((PACKAGE / "algorithms").glob("*.py")):
        if path.name == "mer.py":
            continue
        tree = ast.parse(path.read_text())
        docstrings = _docstring_nodes(tree)
        offenders += [f"{path.name}:{node.lineno}: {node.value!r}" for node in ast.walk(tree)
                      if isinstance(node, ast.Constant) and isinstance(node.value, str)
                      and id(node) not in docstrings and node.value.startswith("mer_")]
    assert offenders == []
    graph = import_graph()
    assert "merdg.algorithms.mer" not in graph["merdg.algorithms.base"]


def test_every_package_directory_is_installable():
    """A non-editable install only ships directories with an __init__.py."""
    missing = [str(d.relative_to(PACKAGE.parent)) for d in PACKAGE.rglob("*")
               if d.is_dir() and "__pycache__" not in d.parts and any(d.glob("*.py"))
               and not (d / "__init__.py").exists()]
    assert missing == []
