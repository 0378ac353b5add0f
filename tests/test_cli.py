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


def test_demo_writes_report(runner, tmp_path):
    out = runner.invoke(main, ["demo", "--out-dir", str(tmp_path), "--members", "40"])
    assert out.exit_code == 0, out.output
    for name in ("batch.nc", "ensemble.nc", "demo.png", "report.md", "estimate.nc",
                 "estimate.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    ens = pt.load(tmp_path / "ensemble.nc")
    assert ens.sizes["scenario"] == 40
    assert "P10/P50/P90" in out.output and "live twin: mu_max" in out.output


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
    assert "Solve_Succeeded" in out.output and "final product concentration" in out.output


def test_recommend_from_estimate(runner, plant_files):
    d, _ = plant_files
    est_path = d / "est_for_recommend.nc"
    out = runner.invoke(main, ["estimate", "bioreactor", "--data", str(d / "plant.nc"),
                               "--estimate-param", "mu_max", "--out", str(est_path)])
    assert out.exit_code == 0, out.output
    out = runner.invoke(main, ["recommend", "bioreactor", "--state", str(est_path),
                               "--horizon", "20", "--feed", "0.03",
                               "--out", str(d / "rec.nc")])
    assert out.exit_code == 0, out.output
    assert "set F = " in out.output and "L/h" in out.output
    plan = pt.load(d / "rec.nc")
    assert plan.sizes["time"] == 21 and float(plan["F"].max()) <= 0.2 + 1e-9
