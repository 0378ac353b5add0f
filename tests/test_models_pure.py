"""Unit models must stay backend-free: models/ imports only processtwin.model."""

import ast
from pathlib import Path

import pytest

from processtwin.model import Model
from processtwin.models import REGISTRY

MODELS_DIR = Path(__file__).resolve().parents[1] / "models"
FORBIDDEN = {"jax", "jaxlib", "casadi", "pyomo", "numpy", "scipy", "equinox", "diffrax"}


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_models_import_no_backend():
    files = sorted(MODELS_DIR.rglob("*.py"))
    assert files, "no model files found"
    for path in files:
        bad = _imported_roots(path) & FORBIDDEN
        assert not bad, f"{path.name} imports {sorted(bad)}"


def test_walker_catches_a_backend_import(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("import numpy as np\nfrom jax import numpy\n")
    assert _imported_roots(f) & FORBIDDEN == {"numpy", "jax"}


@pytest.mark.parametrize("cls", REGISTRY.values(), ids=REGISTRY.keys())
def test_model_declares_contract(cls):
    assert issubclass(cls, Model)
    assert cls.time_unit in {"h", "s", "min"}
    m = cls()
    for info in cls.parameters().values():
        assert info.units and info.doc, info.name
        assert getattr(m, info.name) == info.default
    for specs in (cls.states(), cls.inputs(), cls.outputs()):
        for name, spec in specs.items():
            assert spec.units and spec.doc, name
    assert {v.kind for v in cls.inputs().values()} <= {"manipulated", "disturbance"}
    assert {v.kind for v in cls.outputs().values()} <= {"online", "offline"}
    doc = cls.__doc__ or ""
    assert "(19" in doc or "(20" in doc  # cites sources with years
