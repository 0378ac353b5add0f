"""The live twin runtime: validation at the door, the crash-safe historian, checkpoint and
restore, replay — against the in-process filter and against kill -9."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from processtwin.errors import ConfigError
from processtwin.models import Bioreactor, TankCascade
from processtwin.plant import simulated_plant
from processtwin.signals import hold
from processtwin.twin import Batch, Sample, Twin, Validator, read_historian
from processtwin.twin.h5clear import clear_status_flags, lookup3
from processtwin.twin.sources import plant_batches, replay

FEED = {0.0: {"F": 0.0}, 10.0: {"F": 0.02}, 40.0: {"F": 0.04}}


@pytest.fixture(scope="module")
def plant():
    truth = Bioreactor(mu_max=0.022)
    return simulated_plant(truth, inputs={"F": hold([0.0, 10.0, 40.0], [0.0, 0.02, 0.04])},
                           until=40.0, seed=1)


def _twin(**kw) -> Twin:
    return Twin(Bioreactor(), estimate=("mu_max",), inputs={"F": 0.0}, threaded=False, **kw)


def test_validator_names_every_reason_and_counts_add_up() -> None:
    v = Validator(Bioreactor(), ranges={"V": (0.0, 200.0)}, max_future=10.0)
    batch = [Sample(1.0, "V", 120.0), Sample(1.0, "OUR", 0.02, unit="g/(L h)"),
             Sample(1.0, "pH", 7.0), Sample(2.0, "V", "abc"), Sample(2.0, "OUR", math.nan),
             Sample(2.0, "X", math.inf), Sample(2.0, "V", -5.0), Sample(2.0, "OUR", 0.1,
                                                                       unit="mg/(L h)"),
             Sample(1.0, "V", 121.0), Sample(0.5, "OUR", 0.02), Sample(500.0, "V", 120.0),
             Sample("noon", "V", 120.0), Sample(3.0, "V", True)]
    good, bad = v.check(batch)
    assert [s.channel for s in good] == ["V", "OUR"]
    assert [why for _, why in bad] == ["unknown_channel", "not_a_number", "not_finite",
                                       "not_finite", "out_of_range", "wrong_unit",
                                       "duplicate", "not_increasing", "future", "bad_time",
                                       "not_a_number"]
    c = v.counters
    assert c["received"] == 13 == c["accepted"] + c["quarantined"]
    with pytest.raises(ConfigError, match="not an output"):
        Validator(Bioreactor(), channels=["pH"])


def test_lookup3_matches_the_published_test_vector() -> None:
    # Bob Jenkins' lookup3.c driver: hashlittle("Four score and seven years ago", 30, 0)
    assert lookup3(b"Four score and seven years ago") == 0x17770551
    assert lookup3(b"") == 0xDEADBEEF


def test_twin_equals_the_in_process_filter_and_keeps_every_rejected_sample(plant, tmp_path
                                                                          ) -> None:
    batches = list(plant_batches(plant, inputs=FEED))
    # faults at the door: garbage, a unit mix-up, a clock jump, an unknown channel
    junk = [Sample(5.1, "OUR", "n/a"), Sample(5.1, "V", 120.0, unit="mL"),
            Sample(9e9, "V", 120.0), Sample(5.1, "pH", 7.0)]
    batches[20] = Batch(batches[20].samples + junk, batches[20].inputs)
    tw = _twin(historian=tmp_path / "h.h5", max_future=50.0)
    for b in batches:
        tw.advance(b)
    c = tw.validator.counters
    n = sum(len(b.samples) for b in batches)
    assert c["received"] == n == c["accepted"] + c["quarantined"] and c["quarantined"] == 4
    # the same accepted samples straight into a live filter, no runtime in between
    ref = tw.ekf.live(0.0, u={"F": 0.0}, history=2000)
    for b in batches:
        by_t: dict = {}
        for s in b.samples:
            if s in junk:
                continue
            by_t.setdefault(s.t, {})[s.channel] = s.value
        for t in sorted(by_t):
            ref.step(t, by_t[t])
        if b.inputs:
            ref.set_inputs({"F": 0.0, **b.inputs})
    np.testing.assert_allclose(tw.filter.z, ref.z, rtol=1e-12, atol=1e-14)
    tw.close()
    h = read_historian(tmp_path / "h.h5")
    assert h["rows"].shape[0] == c["accepted"]
    assert sorted(h["quarantine"]["reason"].values) == ["future", "not_a_number",
                                                        "unknown_channel", "wrong_unit"]
    assert "n/a" in " ".join(h["quarantine"]["raw"].values)
    np.testing.assert_allclose(h["estimates"]["mu_max"].values[-1], ref.z[4], rtol=1e-12)
    # replaying the historian through a fresh twin gives the same estimate
    again = _twin()
    for b in replay(tmp_path / "h.h5", Bioreactor()):
        again.advance(b)
    np.testing.assert_allclose(again.filter.z, ref.z, rtol=1e-12, atol=1e-14)


def test_checkpoint_and_restore_continue_exactly(plant, tmp_path) -> None:
    batches = list(plant_batches(plant, inputs=FEED))
    whole = _twin()
    for b in batches:
        whole.advance(b)
    first = _twin(historian=tmp_path / "h.h5")
    for b in batches[:60]:
        first.advance(b)
    first.checkpoint(tmp_path / "twin.ckpt")
    for b in batches[60:75]:      # stored after the checkpoint, then a "crash"
        first.advance(b)
    first.historian.f.close()
    second = _twin(historian=tmp_path / "h.h5")
    second.restore(tmp_path / "twin.ckpt")
    assert second.next_batch == 75      # caught up from the historian
    for b in batches[75:]:
        second.advance(b)
    np.testing.assert_array_equal(second.filter.z, whole.filter.z)
    np.testing.assert_array_equal(second.filter.sd, whole.filter.sd)
    assert second.validator.counters == whole.validator.counters
    second.close()
    h = read_historian(tmp_path / "h.h5")
    assert h["rows"].shape[0] == whole.validator.accepted          # appended, no duplicate
    with pytest.raises(ConfigError, match="model"):
        Twin(TankCascade(), threaded=False).restore(tmp_path / "twin.ckpt")


WRITER = r"""
import pickle
import sys
import processtwin as pt
pt.configure()
from processtwin.models import Bioreactor, TankCascade
from processtwin.twin import Twin
path, ckpt, source = sys.argv[1], sys.argv[2], sys.argv[3]
with open(source, "rb") as fh:
    batches = pickle.load(fh)
tw = Twin(Bioreactor(), estimate=("mu_max",), inputs={"F": 0.0}, threaded=False,
          historian=path)
import os
if os.path.exists(ckpt):
    tw.restore(ckpt)
print("ready", flush=True)
for k in range(tw.next_batch, len(batches)):
    tw.advance(batches[k])
    if k % 7 == 0:
        tw.checkpoint(ckpt)
    if len(sys.argv) < 5:
        import time; time.sleep(0.002)
tw.close()
print("done", tw.filter.z.tolist(), flush=True)
"""


def test_kill_minus_9_during_historian_writes(plant, tmp_path) -> None:
    import pickle

    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    path, ckpt, source = tmp_path / "h.h5", tmp_path / "twin.ckpt", tmp_path / "batches.pkl"
    with open(source, "wb") as fh:
        pickle.dump(list(plant_batches(plant, inputs=FEED)), fh)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    reference = [s for b in plant_batches(plant, inputs=FEED) for s in b.samples]
    rng = np.random.default_rng(7)
    kills = 0
    last_rows = 0
    while kills < 20:
        with subprocess.Popen([sys.executable, str(script), str(path), str(ckpt),
                               str(source)], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, env=env, text=True) as p:
            assert p.stdout.readline().strip() == "ready"
            time.sleep(rng.uniform(0.0, 0.25))
            finished = p.poll() is not None
            p.send_signal(signal.SIGKILL)
            p.wait()
        if finished:                 # it ended before the kill: start over
            path.unlink()
            ckpt.unlink(missing_ok=True)
            last_rows = 0
            continue
        kills += 1
        # the file opens every time and holds a gap-free prefix of the stream
        with h5py.File(path, "r", libver="latest", swmr=True, locking=False) as f:
            rows = f["samples"][:]
        assert len(rows) >= last_rows            # nothing flushed is ever lost
        last_rows = len(rows)
        want = reference[:len(rows)]
        assert [(s.t, s.value) for s in want] == list(zip(rows["t"], rows["value"],
                                                          strict=True))
        assert np.all(np.diff(rows["batch"]) >= 0)
    # a restart appends to the same file and ends exactly where an uninterrupted run does
    done = subprocess.run([sys.executable, str(script), str(path), str(ckpt), str(source),
                           "fast"],
                          capture_output=True, text=True, env=env, check=True)
    z = np.array(eval(done.stdout.strip().splitlines()[-1].split("done ", 1)[1]))
    whole = _twin()
    for b in plant_batches(plant, inputs=FEED):
        whole.advance(b)
    np.testing.assert_array_equal(z, whole.filter.z)
    h = read_historian(path)
    assert h["rows"].shape[0] == len(reference)
    assert not clear_status_flags(path)        # the clean close left no flags behind
