"""Weather files as inputs: typical years read onto one calendar year, irradiance on a
façade, building inputs for any span (wrapping around a typical year)."""

import numpy as np
import pytest

import processtwin as pt
from processtwin.weather import building_inputs, example_weather, irradiance_on, read_weather


@pytest.fixture(scope="module")
def weather():
    return read_weather(example_weather("sand_point"))


@pytest.mark.parametrize("name", ["sand_point", "greensboro"])
def test_typical_year_reads_every_hour_in_order(name):
    w = read_weather(example_weather(name))
    t = w["time"].values
    assert w.sizes["time"] == 8760 and w.attrs["typical_year"] == 1
    assert np.all(np.diff(t) == np.timedelta64(1, "h"))  # one calendar year, no gap
    assert -40.0 < float(w["T_out"].min()) < float(w["T_out"].max()) < 45.0
    assert w["T_out"].attrs["units"] == "degC"


def test_facade_irradiance_is_zero_at_night_and_bounded(weather):
    south = irradiance_on(weather, 90.0, 180.0).values
    ghi, dni, dhi = (weather[k].values for k in ("ghi", "dni", "dhi"))
    night = (ghi <= 0.0) & (dni <= 0.0) & (dhi <= 0.0)  # no light in the record
    assert np.all(south[night] <= 1e-9) and np.all(south >= 0.0)
    assert np.all(south <= dni + dhi + 0.2 * ghi + 1e-6)  # beam + sky + ground at most
    # a south façade gets more over the year than a north one at 47.7 N
    assert south.sum() > 1.5 * irradiance_on(weather, 90.0, 0.0).values.sum()


@pytest.mark.parametrize(("kw", "hours"), [({}, 8760), ({"start": "2030-07-01"}, 4416),
                                           ({"start": "2030-12-30", "days": 3}, 72),
                                           ({"days": 400}, 9600)])
def test_building_inputs_cover_the_span_asked_for(weather, kw, hours):
    b = building_inputs(weather, [180.0, 90.0], **kw)
    t = b["times"]
    assert t.size == hours and t[0] == 0.0 and np.all(np.diff(t) == 3600.0)
    # the data at the asked start: 1 July 00:00 is hour 4344 of the file's year
    if kw.get("start") == "2030-07-01":
        assert float(b["T_out"].values[0]) == float(weather["T_out"].values[4344])
    # wrapping: hour 8760 of a 400-day span is the file's first hour again
    if kw.get("days") == 400:
        assert float(b["T_out"].values[8760]) == float(weather["T_out"].values[0])
    assert b["I_sol"].values.shape == (2, hours)


def test_no_weather_in_an_empty_span_is_an_error(weather):
    with pytest.raises(pt.DataError, match="no weather"):
        building_inputs(weather, [180.0], days=0.0)


@pytest.mark.parametrize(("start", "hour"), [("2024-03-01", 1416), ("2024-02-29", 1392),
                                             ("1999-01-02 06:00", 30)])
def test_start_is_the_same_date_in_the_files_year(weather, start, hour):
    """Month, day and time of day, whatever the year given (a leap year's 1 March is day
    60 of a typical year, not 61; its 29 February is the 28th)."""
    b = building_inputs(weather, [180.0], start=start, days=1)
    assert float(b["T_out"].values[0]) == float(weather["T_out"].values[hour])
