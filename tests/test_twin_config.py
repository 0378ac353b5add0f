"""A twin from its TOML file: specific configuration errors, a fault run whose counts add
up, and a stopped run that continues from its checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from processtwin.cli import main
from processtwin.errors import ConfigError
from processtwin.twin import read_historian
from processtwin.twin.config import load_config
from processtwin.twin.run import run_twin

BASE = """
[model]
name = "bioreactor"

[estimator]
estimate = ["mu_max"]
max_future = 10.0

[source]
kind = "simulated"
until = 30.0
truth = { mu_max = 0.024 }
inputs = { F = [[0.0, 0.0], [10.0, 0.02]] }
seed = 2
faults = [{ kind = "spike", channel = "OUR", at = 12.0, size = 8.0 },
          { kind = "clock_jump", channel = "V", at = 14.0 },
          { kind = "malformed", channel = "OUR", at = 16.0 },
          { kind = "dropout", channel = "V", at = 18.0, duration = 2.0 },
          { kind = "stuck", channel = "OUR", at = 22.0, duration = 3.0 }]

[historian]
path = "twin.h5"
checkpoint = "twin.ckpt"
checkpoint_every = 10
"""


@pytest.mark.parametrize(("edit", "message"), [
    (("[model]", "[modle]"), r"unknown table \[modle\]"),
    (('name = "bioreactor"', 'name = 3'), r"\[model\] name: expected a string, got 3"),
    (("until = 30.0", "until = -1.0"), r"\[source\] until: expected a time > 0, got -1.0"),
    (('kind = "simulated"', 'kind = "plc"'), r"\[source\] kind: expected one of 'simulated'"),
    (('kind = "simulated"', 'kind = "mqtt"'), r"\[source\] host is required with kind = 'mqtt'"),
    (('kind = "simulated"', 'kind = "mqtt"\nhost = "h"\nport = 70000'),
     r"\[source\] port: expected a TCP port 1-65535, got 70000"),
    (('kind = "simulated"', 'kind = "opcua"\nurl = "opc.tcp://127.0.0.1:4840"'),
     r"\[security\] certificate is required with an OPC UA source.*processtwin certs"),
    (("[historian]", "[security]\npassword_env = \"X\"\n[historian]"),
     "password_env needs a username"),
    (("[historian]", "[security]\nenvelope = { F = [0.0] }\n[historian]"),
     r"\[security\] envelope.F: expected \[low, high\], got \[0.0\]"),
    (("[historian]", "[security]\nrate = { F = -1 }\n[historian]"),
     r"\[security\] rate.F: expected a number > 0, got -1"),
    (("max_future = 10.0", "max_futur = 10.0"), "unknown key `max_futur`; keys are"),
    (('kind = "spike"', 'kind = "gremlin"'), r"faults\[0\]: expected a table with kind"),
    (("checkpoint_every = 10", "checkpoint_every = 0"), "checkpoint_every: expected a whole"),
    (("inputs = { F = [[0.0, 0.0], [10.0, 0.02]] }", "inputs = { F = [0.0, 0.02] }"),
     r"inputs.F: expected an array of \[time, value\] pairs"),
    (("until = 30.0", "until = 30.0 x"), "not valid TOML"),
])
def test_malformed_configuration_names_key_expected_and_received(tmp_path, edit, message
                                                                 ) -> None:
    f = tmp_path / "twin.toml"
    f.write_text(BASE.replace(*edit))
    with pytest.raises(ConfigError, match=message):
        load_config(f)


def test_fault_run_counts_add_up_and_a_stopped_run_continues_exactly(tmp_path) -> None:
    f = tmp_path / "twin.toml"
    f.write_text(BASE)
    whole = run_twin(f, echo=lambda s: None, live=False)
    c = whole["counters"]
    assert c["received"] == c["accepted"] + c["quarantined"]
    assert c["by_reason"]["future"] == 1 and c["by_reason"]["not_a_number"] == 1
    assert whole["flags"]["spike"] >= 1 and whole["flags"]["stuck"] >= 1
    h = read_historian(tmp_path / "twin.h5")
    assert h["rows"].shape[0] == c["accepted"]
    assert len(h["quarantine"]["reason"]) == c["quarantined"]
    # the same run stopped half-way (between checkpoints) and continued
    other = tmp_path / "b"
    other.mkdir()
    (other / "twin.toml").write_text(BASE)
    first = run_twin(other / "twin.toml", echo=lambda s: None, live=False, max_batches=57)
    assert not first["restarted"] and first["batches"] == 57
    second = run_twin(other / "twin.toml", echo=lambda s: None, live=False)
    assert second["restarted"] and second["batches"] == whole["batches"]
    for k, (v, sd) in whole["estimate"].items():
        assert second["estimate"][k][0] == pytest.approx(v, rel=1e-12, abs=1e-15), k
        assert second["estimate"][k][1] == pytest.approx(sd, rel=1e-12, abs=1e-15), k
    assert second["counters"] == c
    rows = read_historian(other / "twin.h5")["rows"]
    assert rows.shape[0] == c["accepted"] and np.all(np.diff(rows["batch"]) >= 0)


def test_run_command_prints_counts_and_refuses_a_bad_file(tmp_path) -> None:
    f = tmp_path / "twin.toml"
    f.write_text(BASE.replace("until = 30.0", "until = 8.0").replace(
        'path = "twin.h5"', 'path = "h.h5"'))
    r = CliRunner().invoke(main, ["run", str(f), "--quiet"])
    assert r.exit_code == 0, r.output
    assert "finished:" in r.output and "accepted" in r.output
    bad = tmp_path / "bad.toml"
    bad.write_text(BASE.replace("[source]", "[sauce]"))
    r = CliRunner().invoke(main, ["run", str(bad)])
    assert r.exit_code == 2 and "unknown table [sauce]" in r.output
