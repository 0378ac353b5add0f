"""The command line: models, simulate, demo."""

import numpy as np
import pytest
from click.testing import CliRunner

import processtwin as pt
from processtwin.cli import main
from processtwin.models import Bioreactor


@pytest.fixture
def runner():
    return CliRunner()


def test_models_lists_units(runner):
    out = runner.invoke(main, ["models"])
    assert out.exit_code == 0, out.output
    assert "bioreactor" in out.output
    assert "mu_max" in out.output and "1/h" in out.output
    assert "[manipulated]" in out.output and "[offline]" in out.output


def test_simulate_writes_dataset(runner, tmp_path):
    path = tmp_path / "run.nc"
    out = runner.invoke(main, ["simulate", "bioreactor", "--until", "150", "--input", "F=0.01",
                               "--param", "mu_max=0.03", "--out", str(path)])
    assert out.exit_code == 0, out.output
    ds = pt.load(path)
    assert ds.sizes["time"] == 151 and ds["mu_max"].item() == 0.03
    ref = pt.simulate(Bioreactor(mu_max=0.03), None, {"F": 0.01}, np.arange(151.0))
    np.testing.assert_allclose(ds["P"].values, ref["P"], rtol=1e-12)
    assert "P " in out.output and "g/L" in out.output


def test_simulate_schedule_input(runner, tmp_path):
    out = runner.invoke(main, ["simulate", "bioreactor", "--until", "20", "--input",
                               "F=0:0,10:0.05", "--out", str(tmp_path / "s.nc")])
    assert out.exit_code == 0, out.output
    ds = pt.load(tmp_path / "s.nc")
    assert ds["F"].sel(time=5.0).item() == 0.0 and ds["F"].sel(time=15.0).item() == 0.05


def test_simulate_bad_parameter_is_a_usage_error(runner):
    out = runner.invoke(main, ["simulate", "bioreactor", "--until", "10", "--param", "mu_mx=1"])
    assert out.exit_code == 2
    assert "did you mean `mu_max`" in out.output
    out = runner.invoke(main, ["simulate", "bioreaktor", "--until", "10"])
    assert out.exit_code == 2 and "did you mean `bioreactor`" in out.output


@pytest.mark.parametrize("command", [["simulate", "bioreactor", "--until", "1"],
                                     ["schedule", "--days", "1"]])
def test_an_output_file_in_a_missing_directory_is_refused_before_any_work(runner, tmp_path,
                                                                          command):
    out = runner.invoke(main, [*command, "--out", str(tmp_path / "no" / "plan.nc")])
    assert out.exit_code == 2, out.output
    assert "cannot write" in out.output and "does not exist" in out.output
    assert "Traceback" not in out.output


def test_demo_writes_report(runner, tmp_path):
    out = runner.invoke(main, ["demo", "--out-dir", str(tmp_path), "--members", "40"])
    assert out.exit_code == 0, out.output
    for name in ("batch.nc", "ensemble.nc", "demo.png", "report.md", "estimate.nc",
                 "estimate.png", "twin.h5", "twin.ckpt"):
        assert (tmp_path / name).stat().st_size > 0, name
    ens = pt.load(tmp_path / "ensemble.nc")
    assert ens.sizes["scenario"] == 40
    assert "P10/P50/P90" in out.output and "live twin (runtime" in out.output
    # the runtime's record: every received sample accepted or quarantined, the injected
    # spike raised at its time, NMPC recommendations stored beside the estimates
    from processtwin.twin import read_historian

    h = read_historian(tmp_path / "twin.h5")
    n_good, n_bad = len(h["rows"]), h["quarantine"].sizes["sample"]
    assert f"received / accepted / quarantined  {n_good + n_bad} / {n_good} / {n_bad}" \
        in out.output
    assert sorted(h["quarantine"]["reason"].values) == ["future", "not_a_number"]
    spikes = h["flags"]["t"].values[h["flags"]["flag"].values == "spike"]
    assert spikes.size == 1 and spikes[0] == 75.0
    assert len(h["recommendations"]) == 5 and "first alarm" in out.output
    assert h["estimates"]["mu_max"].values[-1] == pytest.approx(0.024, rel=0.05)


@pytest.fixture(scope="module")
def plant_files(tmp_path_factory):
    from processtwin.plant import simulated_plant

    d = tmp_path_factory.mktemp("plant")
    truth = Bioreactor(mu_max=0.024)
    run = simulated_plant(truth, inputs={"F": pt.hold([0.0, 10.0], [0.0, 0.03])}, until=100.0,
                          dt=0.5, seed=4)
    pt.save(run.data, d / "plant.nc")
    run.data.to_dataframe().reset_index().to_csv(d / "plant.csv", index=False)
    return d, truth


@pytest.mark.parametrize("name", ["plant.nc", "plant.csv"])
def test_estimate_from_file(runner, plant_files, name):
    d, truth = plant_files
    out_path = d / f"est_{name}.nc"
    out = runner.invoke(main, ["estimate", "bioreactor", "--data", str(d / name),
                               "--estimate-param", "mu_max", "--out", str(out_path)])
    assert out.exit_code == 0, out.output
    est = pt.load(out_path)
    mu, sd = est["mu_max"].values[-1], est["mu_max_std"].values[-1]
    assert abs(mu - truth.mu_max) < 3 * sd and sd < 0.003
    assert est["X"].attrs["units"] == "g/L" and "OUR_flag" in est
    assert "mu_max" in out.output and "NIS per degree of freedom" in out.output


def test_estimate_options_time_column_noise_gates_alignment(runner, plant_files):
    """A historian export: time column `t_h`, the feed stamped at the end of each interval
    it acted on, per-channel noise and a lab channel that is never gated."""
    import pandas as pd

    d, truth = plant_files
    frame = pd.read_csv(d / "plant.csv")
    frame["F"] = np.r_[frame["F"].values[0], frame["F"].values[:-1]]  # end-of-interval stamps
    frame.rename(columns={"time": "t_h"}).to_csv(d / "export.csv", index=False)
    out_path = d / "est_export.nc"
    out = runner.invoke(main, ["estimate", "bioreactor", "--data", str(d / "export.csv"),
                               "--time-column", "t_h", "--inputs-apply", "previous",
                               "--noise", "OUR=0.003", "--gate", "X=inf",
                               "--estimate-param", "mu_max", "--out", str(out_path)])
    assert out.exit_code == 0, out.output
    est = pt.load(out_path)
    assert int(est["X_rejected"].sum()) == 0
    mu, sd = est["mu_max"].values[-1], est["mu_max_std"].values[-1]
    assert abs(mu - truth.mu_max) < 3 * sd
    out = runner.invoke(main, ["estimate", "bioreactor", "--data", str(d / "export.csv"),
                               "--time-column", "t_h", "--gate", "XX=3"])
    assert out.exit_code == 2 and "did you mean `X`" in out.output


def test_estimate_with_moving_horizon(runner, plant_files):
    d, truth = plant_files
    out_path = d / "est_mhe.nc"
    out = runner.invoke(main, ["estimate", "bioreactor", "--data", str(d / "plant.nc"),
                               "--method", "mhe", "--window", "8", "--estimate-param",
                               "mu_max", "--out", str(out_path)])
    assert out.exit_code == 0, out.output
    est = pt.load(out_path)
    mu, sd = est["mu_max"].values[-1], est["mu_max_std"].values[-1]
    assert abs(mu - truth.mu_max) < 3 * sd and sd < 0.003
    assert est.attrs["estimator"] == "MHE" and est["S"].values.min() >= 0.0
    assert "MHE window 8:" in out.output and "converged" in out.output
    out = runner.invoke(main, ["estimate", "bioreactor", "--data", str(d / "plant.nc"),
                               "--method", "mhe", "--smooth"])
    assert out.exit_code == 2 and "own smoother" in out.output


def test_estimate_bad_file(runner, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("t,V\n0,120\n")
    out = runner.invoke(main, ["estimate", "bioreactor", "--data", str(bad)])
    assert out.exit_code == 2 and "needs a `time` column" in out.output


def test_optimise_writes_plan(runner, tmp_path):
    path = tmp_path / "plan.nc"
    out = runner.invoke(main, ["optimise", "bioreactor", "--until", "60", "--intervals", "20",
                               "--objective", "product", "--out", str(path)])
    assert out.exit_code == 0, out.output
    plan = pt.load(path)
    assert plan["F"].attrs["units"] == "L/h" and plan.sizes["time"] == 21
    assert "converged (Solve_Succeeded)" in out.output
    assert "final product concentration" in out.output


def test_recommend_from_estimate(runner, plant_files):
    d, _ = plant_files
    est_path = d / "est_for_recommend.nc"
    out = runner.invoke(main, ["estimate", "bioreactor", "--data", str(d / "plant.nc"),
                               "--estimate-param", "mu_max", "--out", str(est_path)])
    assert out.exit_code == 0, out.output
    out = runner.invoke(main, ["recommend", "bioreactor", "--state", str(est_path),
                               "--horizon", "20", "--u", "F=0.03",
                               "--out", str(d / "rec.nc")])
    assert out.exit_code == 0, out.output
    assert "set F = " in out.output and "L/h" in out.output
    plan = pt.load(d / "rec.nc")
    assert plan.sizes["time"] == 21 and float(plan["F"].max()) <= 0.2 + 1e-9


# ---- models from users' code ----------------------------------------------------------------

PLANT = '''
"""A user's plant file: a scalar and a vector model, a factory and things that are not."""
from typing import ClassVar

from processtwin.model import Model, Var, dimension, param, variables

DecayState = variables("DecayState", x=Var("mol/L", "amount left", default=2.0,
                                           bounds=(0.0, None)))


class Decay(Model):
    """First-order decay dx/dt = -k x."""

    k: float = param(0.3, units="1/h", bounds=(0.0, None), doc="rate constant")
    State: ClassVar[type] = DecayState
    time_unit: ClassVar[str] = "h"

    def rhs(self, t, x, u, ops):
        return DecayState(x=-self.k * x.x)


CellState = variables("CellState", T=Var("K", "cell temperature", default=300.0,
                                         shape="n_cells"))
CellInputs = variables("CellInputs", T_amb=Var("K", "ambient temperature", default=290.0,
                                               kind="disturbance"))


CellOutputs = variables("CellOutputs", T_meas=Var("K", "cell thermometers", kind="online",
                                                  noise=0.1, shape="n_cells"))


class Cells(Model):
    """Cells relaxing to ambient, dT/dt = -k (T - T_amb)."""

    n_cells: int = dimension(4, doc="number of cells")
    k: float = param(0.5, units="1/h", bounds=(0.0, None), doc="exchange rate")
    State: ClassVar[type] = CellState
    Inputs: ClassVar[type] = CellInputs
    Outputs: ClassVar[type] = CellOutputs
    time_unit: ClassVar[str] = "h"

    def rhs(self, t, x, u, ops):
        return CellState(T=-self.k * (x.T - u.T_amb))

    def measure(self, t, x, u, ops):
        return CellOutputs(T_meas=x.T)


def wide():
    """Fifty cells."""
    return Cells(n_cells=50)


slow = Decay(k=0.03)
not_a_model = 42


def broken():
    raise RuntimeError("no plant today")
'''


_RAISE_LINE = next(i for i, ln in enumerate(PLANT.splitlines(), 1) if "raise Runtime" in ln)


@pytest.fixture
def plant(tmp_path):
    path = tmp_path / "plant.py"
    path.write_text(PLANT)
    return path


@pytest.fixture
def plant_module(tmp_path, monkeypatch):
    """The plant file as an importable module of a unique name."""
    import sys
    import uuid

    name = f"user_plant_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(PLANT)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def _final(output, name):
    """The final value printed for scalar state ``name`` by `simulate`."""
    line = next(ln for ln in output.splitlines() if ln.split()[:1] == [name])
    return float(line.split("→")[1].split()[0])


def _profile(output, t):
    """first/last/min/max printed for a vector state at time ``t``."""
    line = next(ln for ln in output.splitlines() if ln.strip().startswith(f"t = {t}:"))
    words = line.split(":", 1)[1].replace(",", " ").split()
    return dict(zip(words[::2], map(float, words[1::2]), strict=True))


def _usage_error(out, *fragments):
    assert out.exit_code == 2, out.output
    assert "Traceback" not in out.output
    for f in fragments:
        assert f in out.output, (f, out.output)


def test_simulate_user_file_matches_closed_form(runner, plant):
    out = runner.invoke(main, ["simulate", f"{plant}:Decay", "--until", "5"])
    assert out.exit_code == 0, out.output
    # x(t) = x0 exp(-k t), x0 = 2 mol/L, k = 0.3 1/h
    np.testing.assert_allclose(_final(out.output, "x"), 2.0 * np.exp(-1.5), rtol=1e-5)
    assert "mol/L" in out.output and "decay: t = 0 … 5 h" in out.output
    out = runner.invoke(main, ["simulate", "--model", f"{plant}:Decay", "--until", "5",
                               "--param", "k=0.1", "--x0", "x=3"])
    assert out.exit_code == 0, out.output
    np.testing.assert_allclose(_final(out.output, "x"), 3.0 * np.exp(-0.5), rtol=1e-5)


def test_simulate_user_instance(runner, plant):
    out = runner.invoke(main, ["simulate", f"{plant}:slow", "--until", "5"])
    assert out.exit_code == 0, out.output
    np.testing.assert_allclose(_final(out.output, "x"), 2.0 * np.exp(-0.15), rtol=1e-5)


def test_simulate_vector_user_model(runner, plant):
    out = runner.invoke(main, ["simulate", f"{plant}:Cells", "--until", "4",
                               "--x0", "T=300,310,320,330", "--input", "T_amb=280"])
    assert out.exit_code == 0, out.output
    assert "T[cell: 4]" in out.output
    # T(t) = T_amb + (T0 - T_amb) exp(-k t), k = 0.5 1/h
    expect = 280.0 + (np.array([300.0, 310.0, 320.0, 330.0]) - 280.0) * np.exp(-2.0)
    got = _profile(out.output, 4)
    np.testing.assert_allclose([got["first"], got["last"], got["min"], got["max"]],
                               [expect[0], expect[-1], expect.min(), expect.max()], rtol=1e-5)
    assert _profile(out.output, 0) == {"first": 300.0, "last": 330.0, "min": 300.0,
                                       "max": 330.0}


def test_simulate_wide_vector_prints_a_summary(runner, plant):
    out = runner.invoke(main, ["simulate", f"{plant}:wide", "--until", "2", "--x0", "T=20"])
    assert out.exit_code == 0, out.output
    assert "T[cell: 50]" in out.output and "(all 50)" in out.output
    assert len(out.output.splitlines()) < 6  # a summary, not fifty numbers
    final = float(out.output.split("t = 2:")[1].split()[0])  # "190.673 (all 50)"
    np.testing.assert_allclose(final, 290.0 - 270.0 * np.exp(-1.0), rtol=1e-5)


def test_estimate_vector_user_model(runner, plant, tmp_path):
    from processtwin.dataset import measurements
    from processtwin.registry import load_model

    x0 = {"T": np.array([300.0, 310.0, 320.0, 330.0])}
    truth = load_model(f"{plant}:Cells").replace(k=0.4)
    data = measurements(pt.simulate(truth, x0, {"T_amb": 290.0},
                                    np.arange(0.0, 6.01, 0.1)).data)
    rng = np.random.default_rng(7)
    data["T_meas"] = data["T_meas"] + rng.normal(0.0, 0.1, data["T_meas"].shape)
    pt.save(data, tmp_path / "cells.nc")
    out = runner.invoke(main, ["estimate", f"{plant}:Cells", "--data", str(tmp_path / "cells.nc"),
                               "--estimate-param", "k", "--x0", "T=300,310,320,330"])
    assert out.exit_code == 0, out.output
    assert "T[cell: 4]" in out.output and "channels T_meas" in out.output
    line = next(ln for ln in out.output.splitlines() if ln.split()[:1] == ["k"])
    k, sd = float(line.split()[1]), float(line.split()[3])
    assert abs(k - 0.4) < 3 * sd and sd < 0.02  # prior σ 0.05: 10 % of the nominal k


HEATED = '''
from typing import ClassVar

from processtwin.model import Model, Var, dimension, variables

S = variables("S", T=Var("K", "cell temperature", shape="n_cells"))
U = variables("U", q=Var("K/h", "heating rate", shape="n_cells", kind="manipulated"))


class Heated(Model):
    """dT/dt = q per cell."""

    n_cells: int = dimension(3)
    State: ClassVar[type] = S
    Inputs: ClassVar[type] = U
    time_unit: ClassVar[str] = "h"

    def rhs(self, t, x, u, ops):
        return S(T=u.q)
'''


def test_simulate_vector_input_constant(runner, tmp_path):
    (tmp_path / "heated.py").write_text(HEATED)
    out = runner.invoke(main, ["simulate", f"{tmp_path}/heated.py:Heated", "--until", "4",
                               "--input", "q=1,2,3"])
    assert out.exit_code == 0, out.output
    assert _profile(out.output, 4) == {"first": 4.0, "last": 12.0, "min": 4.0, "max": 12.0}


def test_simulate_vector_input_schedule(runner, tmp_path):
    (tmp_path / "heated.py").write_text(HEATED)
    out = runner.invoke(main, ["simulate", f"{tmp_path}/heated.py:Heated", "--until", "4",
                               "--input", "q=0:1,2:3"])
    assert out.exit_code == 0, out.output
    # T(4) = 1 K/h * 2 h + 3 K/h * 2 h in every cell
    assert out.output.split("t = 4:")[1].split()[:3] == ["8", "(all", "3)"]


def test_simulate_dotted_names(runner):
    out = runner.invoke(main, ["simulate", "fed_batch_plant", "--until", "5",
                               "--x0", "reactor.X=2", "--param", "reactor.mu_max=0.03",
                               "--input", "feed.F=0:0,2:0.01"])
    assert out.exit_code == 0, out.output
    line = next(ln for ln in out.output.splitlines() if ln.split()[:1] == ["reactor.X"])
    assert float(line.split()[1]) == 2.0
    out = runner.invoke(main, ["simulate", "fed_batch_plant", "--until", "5",
                               "--x0", "reactor.Y=2"])
    _usage_error(out, "did you mean `reactor.X`")
    out = runner.invoke(main, ["simulate", "fed_batch_plant", "--until", "5",
                               "--param", "reactor.mu_mx=1"])
    _usage_error(out, "did you mean `reactor.mu_max`")


def test_simulate_vector_values_are_checked(runner, plant):
    out = runner.invoke(main, ["simulate", f"{plant}:Cells", "--until", "1", "--x0", "T=1,2"])
    _usage_error(out, "needs 4 values over `cell`, got 2")
    out = runner.invoke(main, ["simulate", f"{plant}:Cells", "--until", "1",
                               "--input", "T_amb=1,2"])
    _usage_error(out, "input `T_amb`", "is a scalar")


def test_simulate_module_form(runner, plant_module):
    out = runner.invoke(main, ["simulate", f"{plant_module}:Decay", "--until", "5"])
    assert out.exit_code == 0, out.output
    np.testing.assert_allclose(_final(out.output, "x"), 2.0 * np.exp(-1.5), rtol=1e-5)


def test_models_describes_user_model(runner, plant):
    out = runner.invoke(main, ["models", "--model", f"{plant}:Cells"])
    assert out.exit_code == 0, out.output
    assert "T[cell: 4]" in out.output and "dimensions: cell = 4" in out.output
    assert "T_amb" in out.output and "[disturbance]" in out.output
    assert "T_meas[cell: 4]" in out.output and "noise σ 0.1" in out.output
    line = next(ln for ln in out.output.splitlines() if ln.split()[:1] == ["k"])
    assert line.split()[1:4] == ["0.5", "1/h", "[0,"] and "exchange rate" in line
    out = runner.invoke(main, ["models", f"{plant}:wide"])
    assert out.exit_code == 0 and "T[cell: 50]" in out.output


def _entry_points(monkeypatch, *eps):
    from importlib import metadata

    real = metadata.entry_points

    def fake(**kw):  # other groups (JAX looks up `jax_plugins`) as installed
        return list(eps) if kw == {"group": "processtwin.models"} else real(**kw)

    monkeypatch.setattr(metadata, "entry_points", fake)


def test_entry_point_models(runner, monkeypatch, plant_module):
    from importlib.metadata import EntryPoint

    from processtwin.registry import EntryPointModel, available_models, load_model

    _entry_points(monkeypatch,
                  EntryPoint("decay_plugin", f"{plant_module}:Decay", "processtwin.models"),
                  EntryPoint("broken_plugin", "no_such_module_4711:Thing",
                             "processtwin.models"))
    found = available_models()
    assert "bioreactor" in found and isinstance(found["decay_plugin"], EntryPointModel)
    assert load_model("decay_plugin").name == "decay"
    out = runner.invoke(main, ["models"])
    assert out.exit_code == 0, out.output
    assert "decay_plugin" in out.output and f"entry point `{plant_module}:Decay`" in out.output
    assert "broken_plugin  — could not be loaded" in out.output
    assert "ModuleNotFoundError" in out.output and "bioreactor" in out.output
    out = runner.invoke(main, ["simulate", "decay_plugin", "--until", "5"])
    assert out.exit_code == 0, out.output
    np.testing.assert_allclose(_final(out.output, "x"), 2.0 * np.exp(-1.5), rtol=1e-5)
    out = runner.invoke(main, ["simulate", "broken_plugin", "--until", "5"])
    _usage_error(out, "model `broken_plugin`", "failed to import", "no_such_module_4711")


def test_entry_point_of_an_installed_distribution(runner, tmp_path, monkeypatch, plant_module):
    # An installed distribution as importlib.metadata finds it: a dist-info folder on sys.path.
    info = tmp_path / "cell_plugin-1.2.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: cell-plugin\nVersion: 1.2\n")
    (info / "entry_points.txt").write_text(f"[processtwin.models]\ncells_plugin = "
                                           f"{plant_module}:wide\n")
    out = runner.invoke(main, ["models", "cells_plugin"])
    assert out.exit_code == 0, out.output
    assert "cells_plugin  — Fifty cells." in out.output
    assert f"entry point `{plant_module}:wide` of cell-plugin 1.2" in out.output
    assert "T[cell: 50]" in out.output


def test_entry_point_cannot_shadow_a_builtin(monkeypatch, plant_module):
    from importlib.metadata import EntryPoint

    from processtwin.models import REGISTRY
    from processtwin.registry import available_models

    _entry_points(monkeypatch,
                  EntryPoint("bioreactor", f"{plant_module}:Decay", "processtwin.models"))
    with pytest.warns(UserWarning, match="taken by a built-in model"):
        found = available_models()
    assert found["bioreactor"] is REGISTRY["bioreactor"]


@pytest.mark.parametrize("spec, fragments", [
    ("fed_batch_plnt", ["unknown model `fed_batch_plnt`", "did you mean `fed_batch_plant`",
                        "path/to/plant.py:Name"]),
    ("{plant}:Decy", ["has no attribute `Decy`", "did you mean `Decay`"]),
    ("{plant}:not_a_model", ["`not_a_model`", "of type `int`", "not a Model subclass"]),
    ("{plant}:broken", ["factory `broken`", "RuntimeError: no plant today",
                        f"plant.py, line {_RAISE_LINE}"]),
    ("{plant}", ["exactly one concrete Model subclass", "`Decay`, `Cells`"]),
    ("{dir}/nope.py:Decay", ["nope.py` does not exist"]),
    ("no_such_module_4711:Decay", ["no module `no_such_module_4711`"]),
    ("processtwin.model:Var", ["the class `Var`, not a processtwin Model subclass"]),
])
def test_model_spec_errors(runner, plant, spec, fragments):
    spec = spec.format(plant=plant, dir=plant.parent)
    out = runner.invoke(main, ["simulate", spec, "--until", "1"])
    _usage_error(out, *fragments)


def test_model_file_that_fails_to_import(runner, tmp_path):
    path = tmp_path / "bad.py"
    path.write_text("from typing import ClassVar\n"
                    "from processtwin.model import Model, Var, variables\n"
                    "S = variables('S', x=Var('m'))\n"
                    "class NoRhs(Model):\n"
                    "    State: ClassVar[type] = S\n"
                    "    time_unit: ClassVar[str] = 's'\n")
    out = runner.invoke(main, ["models", f"{path}:NoRhs"])
    _usage_error(out, "importing", "bad.py, line 4", "ModelError", "missing `rhs (or step)`")


def test_model_given_twice_or_not_at_all(runner, plant):
    out = runner.invoke(main, ["simulate", "bioreactor", "--model", f"{plant}:Decay",
                               "--until", "1"])
    _usage_error(out, "MODEL given twice")
    out = runner.invoke(main, ["simulate", "--until", "1"])
    _usage_error(out, "missing MODEL")


def test_optimise_any_model_with_an_objective_expression(runner, tmp_path):
    """A model with no declared objective: the tank cascade filled as fast as possible
    with a vector limit, from the command line alone."""
    path = tmp_path / "fill.nc"
    out = runner.invoke(main, ["optimise", "tank_cascade", "--until", "20", "--intervals",
                               "20", "--objective", "min integral((q - 2)**2)",
                               "--limit", "0<=q<=2", "--limit", "c<=6", "--out", str(path)])
    assert out.exit_code == 0, out.output
    assert "converged" in out.output and "q [" in out.output
    plan = pt.load(path)
    assert float(plan["c"].max()) <= 6.0 + 1e-6 and float(plan["q"].max()) <= 2.0 + 1e-9


@pytest.mark.parametrize(("args", "message"), [
    (["--intervals", "0"], "`intervals` must be a whole number ≥ 1"),
    (["--intervals", "-3"], "`intervals` must be a whole number ≥ 1"),
    (["--until", "-5"], "--until must be a time > 0"),
    (["--limit", "F=0.3:0.1"], "lower bound 0.3 > upper bound 0.1"),
    (["--limit", "Fe<=1"], "unknown variable `Fe`"),
    (["--objective", "profit"], "unknown objective `profit`"),
    (["--objective", "max P*Q"], "unknown name `Q`"),
    (["--objective", "max __import__('os')"], "only + - * /"),
])
def test_optimise_bad_input_is_a_clear_error(runner, args, message):
    base = ["optimise", "bioreactor", "--until", "20", "--intervals", "5"]
    out = runner.invoke(main, base + args)
    _usage_error(out, message)


def test_optimise_failure_exits_nonzero_and_prints_no_recipe(runner):
    out = runner.invoke(main, ["optimise", "bioreactor", "--until", "50", "--intervals", "10",
                               "--limit", "X<=2", "--limit", "X>=3 at end"])
    assert out.exit_code != 0
    assert "infeasible" in out.output and "F [L/h]" not in out.output


def test_recommend_refuses_files_that_are_not_estimates(runner, plant_files, tmp_path):
    d, _ = plant_files
    text = tmp_path / "notes.txt"
    text.write_text("not a dataset\n")
    for path, message in ((d / "plant.nc", "it looks like a plan, a simulation"),
                          (text, "not a readable estimate file")):
        out = runner.invoke(main, ["recommend", "bioreactor", "--state", str(path)])
        _usage_error(out, message)


def test_load_model_python_api(plant, tmp_path):
    from processtwin.errors import ConfigError
    from processtwin.registry import load_model

    assert isinstance(load_model("bioreactor"), Bioreactor)
    assert load_model(f"{plant}:Cells").layout.states.leaf("T").shape == (4,)
    assert load_model(f"{plant}:wide").n_cells == 50
    assert load_model(f"{plant}:slow").k == 0.03
    single = tmp_path / "single.py"
    single.write_text(PLANT.split("CellState")[0])
    assert load_model(str(single)).name == "decay"
    with pytest.raises(ConfigError, match="did you mean `Decay`"):
        load_model(f"{plant}:decay")
