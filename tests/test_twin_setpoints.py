"""The setpoint guard between recommendations and the plant's actuators."""

from __future__ import annotations

import pytest

from processtwin.errors import ConfigError
from processtwin.models import Bioreactor
from processtwin.twin.setpoints import SetpointGuard, setpoints_of


def test_disabled_guard_refuses_and_counts() -> None:
    g = SetpointGuard(Bioreactor())
    assert g.check(1.0, {"F": 0.03}) == {}
    assert g.counters == {"written": 0, "refused": 1, "clipped": 0}
    assert "disabled" in g.log[-1]


def test_enabled_guard_clips_to_envelope_and_rate() -> None:
    m = Bioreactor()
    lo, hi = m.inputs()["F"].bounds
    g = SetpointGuard(m, enabled=True, envelope={"F": (0.0, 0.05)}, rate={"F": 0.01})
    assert g.check(0.0, {"F": 0.2}) == {"F": 0.05}           # envelope
    assert g.check(1.0, {"F": 0.0}) == {"F": pytest.approx(0.04)}   # 0.01 per h
    assert g.check(3.0, {"F": 0.03}) == {"F": 0.03}          # within the rate
    assert g.counters == {"written": 3, "refused": 0, "clipped": 2}
    assert "envelope" in g.log[0] and "rate limit" in g.log[1]
    if lo is not None:
        g2 = SetpointGuard(m, enabled=True)
        assert g2.check(0.0, {"F": lo - 1.0}) == {"F": lo}


def test_guard_errors_name_the_input() -> None:
    m = Bioreactor()
    with pytest.raises(ConfigError, match="not a scalar manipulated input.*F"):
        SetpointGuard(m, enabled=True).check(0.0, {"S_in": 100.0})
    with pytest.raises(ConfigError, match="envelope of `F`.*empty"):
        SetpointGuard(m, envelope={"F": (0.5, 0.1)})
    with pytest.raises(ConfigError, match="rate limit of `F`.*L/h/h"):
        SetpointGuard(m, rate={"F": -1.0})
    with pytest.raises(ConfigError, match="finite"):
        SetpointGuard(m, enabled=True).check(0.0, {"F": float("nan")})


def test_setpoints_of_reads_recommendations_and_skips_fallbacks() -> None:
    assert setpoints_of({"setpoints": {"F": (0.03, "L/h")}}) == {"F": 0.03}
    assert setpoints_of({"setpoints": {"F": 0.03}, "fallback": True}) == {}
    assert setpoints_of({"t": 1.0}) == {}


def test_certs_command_writes_a_pair_and_refuses_to_overwrite(tmp_path) -> None:
    from click.testing import CliRunner
    from cryptography import x509

    from processtwin.cli import main

    r = CliRunner().invoke(main, ["certs", str(tmp_path), "--days", "30",
                                  "--hostname", "plant.local"])
    assert r.exit_code == 0, r.output
    cert = x509.load_der_x509_certificate((tmp_path / "server_cert.der").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "urn:processtwin:server" in san.get_values_for_type(
        x509.UniformResourceIdentifier)
    assert "plant.local" in san.get_values_for_type(x509.DNSName)
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days in (29, 30, 31)
    again = CliRunner().invoke(main, ["certs", str(tmp_path)])
    assert again.exit_code == 2 and "overwrite" in again.output
