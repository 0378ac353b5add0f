"""Unit models must stay backend-free: models/ imports only processtwin.model."""

import ast
from pathlib import Path

import pytest

from processtwin.model import TIME_UNITS, Model, parameter_info
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


@pytest.mark.parametrize("factory", REGISTRY.values(), ids=REGISTRY.keys())
def test_model_declares_contract(factory):
    m = factory()
    assert isinstance(m, Model)
    assert m.time_unit in TIME_UNITS
    for info in parameter_info(m).values():
        assert info.units and info.doc, info.name
        assert m.get(info.name) == info.default
    lay = m.layout
    for group in (lay.states, lay.inputs, lay.outputs, lay.ports):
        for leaf in group.leaves:
            assert leaf.var.units and leaf.var.doc, leaf.name
    assert {lf.var.kind for lf in lay.inputs.leaves} <= {"manipulated", "disturbance", "port"}
    assert {lf.var.kind for lf in lay.outputs.leaves} <= {"online", "offline"}
    assert {lf.var.kind for lf in lay.ports.leaves} <= {"port"}
    units = m.units.values() if hasattr(m, "units") else [m]
    for unit in units:
        doc = type(unit).__doc__ or ""
        assert "(19" in doc or "(20" in doc, type(unit).__name__  # cites sources with years
