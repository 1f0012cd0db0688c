"""The house rules that code review would otherwise have to catch."""

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RANK = {"data": 0, "models": 1, "inference": 2, "bayesmtl": 3}


def _imports(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


@pytest.mark.parametrize("room", ["data", "models", "inference"])
def test_imports_only_run_downward(room):
    """data -> nothing of ours; models -> data; inference -> models, data."""
    bad = []
    for path in sorted((ROOT / room).glob("*.py")):
        for mod in _imports(path):
            parts = mod.split(".")
            if parts[0] == "bayesmtl" and len(parts) > 1 and parts[1] in RANK:
                if RANK[parts[1]] > RANK[room]:
                    bad.append(f"{path.relative_to(ROOT)} imports {mod}")
            elif parts[0] in ("models", "data", "inference"):
                bad.append(f"{path.relative_to(ROOT)} imports bare {mod}")
    assert not bad, bad


def test_subpackages_map_to_top_level_folders():
    import bayesmtl.data
    import bayesmtl.inference
    import bayesmtl.models

    for name, mod in [("data", bayesmtl.data), ("models", bayesmtl.models),
                      ("inference", bayesmtl.inference)]:
        assert Path(mod.__file__).parent == ROOT / name


def test_nothing_bare_is_importable_outside_the_repo(tmp_path):
    """Only `bayesmtl` is installed: `models`, `data`, `inference` do not leak into site-packages."""
    code = ("import importlib.util, sys; "
            "print([m for m in ('models', 'data', 'inference') if importlib.util.find_spec(m)])")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == "[]"
    assert importlib.util.find_spec("bayesmtl") is not None


def test_every_module_declares_all():
    missing = [str(p.relative_to(ROOT)) for room in ("data", "models", "inference", "bayesmtl")
               for p in (ROOT / room).glob("*.py")
               if p.name not in ("__main__.py",) and "__all__" not in p.read_text()]
    assert not missing, missing
