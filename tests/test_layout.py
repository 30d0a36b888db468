"""The package's layout: imports run one way through its rooms, the previous release's module paths still work (with a
warning), and what that release saved (model folders, the code cache) loads unchanged and answers the same."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import headstart

PACKAGE = Path(headstart.__file__).parent
PREVIOUS = Path(__file__).parent / "fixtures" / "previous_release"

#: the rooms in the order data flows through them; a module may import its own room and the ones before it
ROOMS = ["foundations", "data", "codes", "heads", "training", "auditing", "strategies", "auto", "report", "deploy",
         "top", "cli"]
FOUNDATIONS = {"errors", "defaults", "disk", "results", "datasets", "__init__", "__main__"}
TOP = {"estimator", "transformer", "sklearn_contract", "artifact", "workflow"}


def room(module: str) -> str:
    """The room of a module path relative to the package (``codes.extract`` -> ``codes``)."""
    first = module.split(".")[0]
    if first in FOUNDATIONS:
        return "cli" if first == "__main__" else "foundations"
    return "top" if first in TOP else first


def imports_of(path: Path) -> list[tuple[str, int]]:
    """(imported module relative to the package, line) for every headstart import, type-only ones included."""
    tree = ast.parse(path.read_text())
    typing_only: set[int] = set()  # type-only imports count too: a cycle through them is still a cycle
    here = path.relative_to(PACKAGE).with_suffix("").parts
    package = list(here[:-1]) if here[-1] != "__init__" else list(here[:-1])
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom) or id(node) in typing_only:
            continue
        if node.level:
            base = package[:len(package) - (node.level - 1)]
            target = ".".join([*base, *([node.module] if node.module else [])])
            if not node.module:  # ``from . import x``: the modules themselves
                found += [(f"{target}.{a.name}".strip("."), node.lineno) for a in node.names]
                continue
            found.append((target, node.lineno))
        elif node.module and node.module.startswith("headstart."):
            found.append((node.module.removeprefix("headstart."), node.lineno))
    return found


def test_imports_run_one_way_through_the_rooms():
    backwards = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        for target, line in imports_of(path):
            if ROOMS.index(room(target)) > ROOMS.index(room(module)):
                backwards.append(f"{module}:{line} imports {target}")
    assert not backwards, "imports that run back up:\n" + "\n".join(backwards)


def _module_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports (a name imported from a package counts as its module when there is
    one, else as the package's ``__init__``)."""
    modules = {".".join(p.relative_to(PACKAGE).with_suffix("").parts).removesuffix(".__init__") or "__init__"
               for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE).with_suffix("").parts).removesuffix(".__init__") or "__init__"
        targets = set()
        for target, _ in imports_of(path):
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != module:
                targets.add(target)
        graph[module] = targets
    return graph


def test_no_module_imports_itself_back_through_others():
    """No import cycle between the package's modules, type-only imports included (Tarjan's strongly connected
    components: any of more than one module is a cycle)."""
    graph, index, low, stack, on, cycles = _module_graph(), {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, cycles


def test_the_torch_free_runtime_imports_no_torch():
    code = ("import sys; sys.modules['torch'] = None; sys.modules['timm'] = None; "
            "import headstart.deploy.runtime, headstart.training.options, headstart.cli.checks; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr


def test_the_readme_names_import_from_headstart():
    for name in ("TransferClassifier", "CNNCodes", "load", "advise", "audit", "fit_folder", "find_splits", "FineTuner",
                 "ImageDataModule", "HeadFirst", "FitResult", "FitInfo", "AutoEvidence", "AuditResult"):
        assert getattr(headstart, name) is not None, name
    from headstart.data import find_splits  # the README's own line

    assert find_splits is headstart.find_splits


def test_models_saved_by_the_previous_release_load_and_answer_the_same(tmp_path):
    expected = json.loads((PREVIOUS / "expected.json").read_text())
    paths = [PREVIOUS / p for p in expected["paths"]]
    for name in ("model-codes", "model-tuned"):
        model = headstart.load(PREVIOUS / name, cache_dir=tmp_path / "cache")
        np.testing.assert_allclose(model.predict_proba(paths), expected[name], atol=2e-6)
    assert headstart.load(PREVIOUS / "model-tuned").strategy_ == "fine-tune"


def test_the_code_cache_of_the_previous_release_is_read_as_it_is(tmp_path):
    from headstart.codes.backbones import PENULTIMATE
    from headstart.codes.extract import FeatureExtractor
    from headstart.data.imagestats import STATS

    cache = tmp_path / "cache"
    shutil.copytree(PREVIOUS / "cache", cache)
    before = {p.name for p in (cache / "codes").iterdir()}
    backbone = headstart.load(PREVIOUS / "model-codes").backbone_  # its saved random weights: the same digest
    stores = FeatureExtractor(backbone, [PENULTIMATE, STATS], cache)._stores()
    assert {s.folder.name for s in stores} <= before  # the same keys: no new folder
    for store in stores:
        (shard,) = store.folder.glob("*.npz")
        with np.load(shard) as npz:
            ids, codes = npz["ids"].tolist(), npz["codes"]
        found = store.lookup(ids)
        assert len(found) == len(ids) == 12
        np.testing.assert_array_equal(np.stack([found[i] for i in ids]), codes)


@pytest.mark.parametrize("limit", [400])
def test_no_module_is_over_the_limit(limit):
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines()))
            > limit}
    assert not long, long
