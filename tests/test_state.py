"""Measuring conditions in process: record (sysfs tree), throttle decoding, fastest cores, governor with restore,
cool-down, frequency drops, validity. Fast."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from sysfs_fixtures import SysfsTree, write

from edgeopt.agent import state, sysinfo


@pytest.fixture
def tree(tmp_path: Path) -> SysfsTree:
    t = SysfsTree(tmp_path / "dev")
    t.cpus(max_khz=(1800000, 1800000, 2400000, 2400000), capacity=(446, 446, 1024, 1024))
    t.thermal(temps_c=(47.5, 61.25), types=("cpu-thermal", "gpu-thermal"))
    return t


def test_record_reads_the_tree_in_kernel_units(tree, monkeypatch):
    tree.vcgencmd(throttled="0x50005")
    monkeypatch.setenv("PATH", "%s:/usr/bin:/bin" % tree.bin)
    st = sysinfo.device_state(str(tree.root))
    assert [r["cpu"] for r in st["cpufreq"]] == [0, 1, 2, 3]
    assert st["cpufreq"][2] == {"cpu": 2, "governor": "ondemand", "cur_khz": 2400000, "max_khz": 2400000,
                                "scaling_max_khz": 2400000, "capacity": 1024}
    assert st["thermal"][1] == {"zone": "thermal_zone1", "type": "gpu-thermal", "temp_mc": 61250, "temp_c": 61.25}
    assert st["throttled"] == "0x50005"
    assert st["throttled_flags"] == {"value": 0x50005, "now": ["under-voltage", "throttled"],
                                     "since_boot": ["under-voltage", "throttled"], "unknown_bits": []}
    assert sysinfo.hottest_c(str(tree.root)) == 61.25
    assert sysinfo.decode_throttled("garbage") is None and sysinfo.decode_throttled("0x0")["now"] == []


def test_fastest_cores_from_capacity_then_max_freq(tree):
    cpus, info = state.fastest_cpus(str(tree.root), None)
    assert cpus == [2, 3] and info["by"] == "cpu_capacity" and info["big_little"]
    for cpu in range(4):
        (tree.sys / ("devices/system/cpu/cpu%d/cpu_capacity" % cpu)).unlink()
    cpus, info = state.fastest_cpus(str(tree.root), [0, 1, 2])
    assert cpus == [2] and info["by"] == "cpuinfo_max_freq"


def test_governor_set_and_restored_or_reported(tree):
    gov = state.Governor(str(tree.root), [2, 3], "performance")
    path = tree.sys / "devices/system/cpu/cpu2/cpufreq/scaling_governor"
    assert gov.info["applied"] and path.read_text().strip() == "performance"
    assert (tree.sys / "devices/system/cpu/cpu0/cpufreq/scaling_governor").read_text().strip() == "ondemand"
    gov.restore()
    assert gov.info["restored"] and path.read_text().strip() == "ondemand"
    write(tree.sys / "devices/system/cpu/cpu2/cpufreq/scaling_available_governors", "ondemand powersave")
    gov = state.Governor(str(tree.root), [2], "performance")
    assert not gov.info["applied"] and "not in scaling_available_governors" in gov.info["error"]


def test_cooldown_waits_until_below_and_is_bounded(tree):
    zone = tree.sys / "class/thermal/thermal_zone1/temp"

    def cool():
        for t in (58000, 52000, 49000):
            time.sleep(0.15)
            write(zone, t)

    threading.Thread(target=cool, daemon=True).start()
    info = state.cooldown(str(tree.root), 50.0, timeout_s=10, poll_s=0.05)
    assert info["reached"] and info["start_c"] == 61.25 and info["end_c"] == 49.0 and 0.3 < info["waited_s"] < 5
    info = state.cooldown(str(tree.root), 40.0, timeout_s=0.3, poll_s=0.05)
    assert info["reached"] is False and 0.3 <= info["waited_s"] < 1.0
    reasons, _ = state.judge({}, {}, None, {}, 0.5, info)
    assert reasons and "cool-down to below 40.0 °C not reached" in reasons[0]


def test_freq_drop_and_validity_rules():
    assert state.freq_drop([600000, 1800000, 1800000]) is None  # ramping up is not a drop
    assert state.freq_drop([1800000, 1790000, 1500000, 1800000]) == (1800000, 1500000)
    clean = {"throttled": "0x0", "throttled_flags": sysinfo.decode_throttled("0x0")}
    assert state.judge(clean, clean, {"drop": None}, {"timed loop": 0.1}, 0.5, None) == ([], [])
    old = {"throttled": "0x50000", "throttled_flags": sysinfo.decode_throttled("0x50000")}
    reasons, notes = state.judge(old, old, None, {}, 0.5, None)
    assert reasons == [] and "cannot be seen" in notes[0]  # sticky bits from before the run: a note only
    new = {"throttled": "0x40000", "throttled_flags": sysinfo.decode_throttled("0x40000")}
    reasons, _ = state.judge(clean, new, {"cpus": [2], "drop": {"from_khz": 2400000, "to_khz": 1500000}},
                             {"timed loop": 1.3, "idle baseline": None}, 0.5, None)
    assert reasons[0].startswith("throttled occurred during the run")
    assert "CPU clock dropped during the run on CPUs [2]: 2400000 -> 1500000 kHz" in reasons[1]
    assert "1.30 CPUs on average during the timed loop" in reasons[2] and len(reasons) == 3


def test_other_load_counts_other_processes_not_this_one(monkeypatch):
    """Machine busy ticks minus this process's ticks (the machine here is shared, so synthetic /proc values)."""
    ticks = iter([(1000, 50), (1000 + 150, 50 + 100)])  # 150 busy ticks, 100 of them ours, over ~0.5 s
    monkeypatch.setattr(state, "cpu_ticks", lambda: next(ticks))
    monkeypatch.setattr(state.os, "sysconf", lambda name: 100)
    load = state.OtherLoad().start()
    load.t0 -= 0.5
    assert load.stop(0.1) == pytest.approx(50 / 100 / 0.5, rel=0.01)
    monkeypatch.undo()
    assert state.OtherLoad().start().stop(0.5) is None  # too short to count 10 ms ticks
    assert state.cpu_ticks()[0] > 0  # the real /proc parses
