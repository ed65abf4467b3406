"""Energy sensors and their parsers, in process, on synthetic sysfs trees (tests/sysfs_fixtures.py): units,
wrap-around, vendor quirks, malformed content (a clear error, never a crash), integration. Fast."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import pytest
from sysfs_fixtures import PMIC_FIXED_W, SysfsTree, pmic_text, write

from edgeopt.agent import energy
from edgeopt.agent.energy import SensorError, SensorUnavailable
from edgeopt.agent.timing import Periodic


@pytest.fixture
def tree(tmp_path: Path) -> SysfsTree:
    return SysfsTree(tmp_path / "dev")


def feed(tree: SysfsTree, watts: float, joules: float = 0.0) -> None:
    for fn in tree.writers:
        fn(watts, joules)


# --- Raspberry Pi 5 PMIC ---------------------------------------------------------------------------------------

REAL_PI5 = """\
     3V7_WL_SW_A current(0)=0.00390372A
       3V3_SYS_A current(1)=0.05562150A
      VDD_CORE_A current(7)=1.08053000A
     3V7_WL_SW_V volt(8)=3.71486300V
       3V3_SYS_V volt(9)=3.30234800V
      VDD_CORE_V volt(15)=0.72178200V
         EXT5V_V volt(24)=5.14632000V
          BATT_V volt(25)=0.00000000V
"""


def test_pmic_pairs_rails_by_name_and_leaves_voltage_only_rails_out():
    rails = energy.parse_pmic_adc(REAL_PI5)
    assert rails["VDD_CORE"] == {"A": 1.08053, "V": 0.721782}
    assert rails["EXT5V"] == {"V": 5.14632} and "A" not in rails["BATT"]
    expected = 0.00390372 * 3.714863 + 0.0556215 * 3.302348 + 1.08053 * 0.721782
    assert energy.pmic_power(rails) == pytest.approx(expected, rel=1e-12)
    # the fixture's full real-format output sums to the power it was asked for
    full = energy.parse_pmic_adc(pmic_text(3.0))
    assert len([r for r in full.values() if "A" in r and "V" in r]) == 12
    assert energy.pmic_power(full) == pytest.approx(3.0, rel=1e-6) and PMIC_FIXED_W < 3.0


@pytest.mark.parametrize("text,needle", [
    ("", "no rail with both"),
    ("VDD_CORE_V volt(15)=0.72V\n", "no rail with both"),
    (REAL_PI5.replace("1.08053000A", "1.08O53000A"), "cannot parse line"),
    (REAL_PI5.replace("current(7)=1.08053000A", "current(7)=1.08053000V"), "inconsistent units"),
    ("error=1 error_msg=\"Command not registered\"\n", "no rail with both"),
])
def test_pmic_malformed_output_is_a_clear_error(text, needle):
    with pytest.raises(SensorError, match=needle):
        energy.parse_pmic_adc(text)


def test_pmic_sensor_needs_vcgencmd_on_path(tree, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(SensorUnavailable, match="vcgencmd is not on PATH"):
        energy.Rpi5Pmic()
    tree.vcgencmd()
    monkeypatch.setenv("PATH", "%s:/usr/bin:/bin" % tree.bin)
    feed(tree, 2.0)
    sensor = energy.Rpi5Pmic()
    assert sensor.read() == pytest.approx(2.0, rel=1e-6)
    assert "EXT5V" in sensor.covers and "not wall power" in sensor.covers
    write(tree.state / "pmic.txt", "garbage_A current(x)=?")
    with pytest.raises(SensorError, match="cannot parse"):
        sensor.read()


# --- hwmon -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["power", "curr_in"])
def test_hwmon_units(tree, mode):
    tree.hwmon(0, "coretemp-like-no-power", mode="power")  # first device …
    os.remove(tree.sys / "class/hwmon/hwmon0/power1_input")  # … without a power channel: skipped
    tree.writers.clear()
    tree.hwmon(1, "ina219", mode=mode)
    feed(tree, 1.25)
    sensor = energy.Hwmon(str(tree.root))
    assert sensor.details["name"] == "ina219" and sensor.details["device"] == "hwmon1"
    assert sensor.read() == pytest.approx(1.25, rel=1e-3)  # µW, or mA x mV
    if mode == "curr_in":
        assert sensor.details["channels"] == ["curr1_input*in1_input"]


def test_hwmon_malformed_and_missing(tree):
    with pytest.raises(SensorUnavailable, match="no hwmon device"):
        energy.Hwmon(str(tree.root))
    dev = tree.hwmon(0, "ina226")
    write(dev / "power1_input", "12.5 W")
    with pytest.raises(SensorUnavailable, match=r"ina226/power1_input: expected an integer \(µW\), got '12.5 W'"):
        energy.Hwmon(str(tree.root))
    write(dev / "power1_input", 1000000)
    sensor = energy.Hwmon(str(tree.root))
    write(dev / "power1_input", "")
    with pytest.raises(SensorError, match="expected an integer"):
        sensor.read()
    with pytest.raises(SensorUnavailable, match="named 'ina3221'"):
        energy.Hwmon(str(tree.root), select="ina3221")


# --- RAPL ------------------------------------------------------------------------------------------------------

def test_rapl_wraps_around_and_ignores_subzones(tree):
    max_range = 1_000_000  # 1 J, so a few readings wrap
    tree.rapl(max_range_uj=max_range, start_uj=900_000)
    sensor = energy.Rapl(str(tree.root))
    assert [z.rsplit("/", 1)[-1] for z, _ in sensor.zones] == ["intel-rapl:0"]
    assert "package" in sensor.covers and "DRAM" in sensor.covers
    total = 0.0
    for step in range(1, 8):
        feed(tree, 0.0, 0.3 * step)  # +0.3 J per step: wraps every few steps
        total = sensor.read()
    assert total == pytest.approx(2.1, abs=2e-6) and sensor.wraps == 3  # at 1.2, 2.1 and 3.0 J
    assert energy.unwrap_delta(990, 10, 1000) == 20 and energy.unwrap_delta(10, 990, 1000) == 980


def test_rapl_prefers_psys_and_reports_missing_and_malformed(tree):
    with pytest.raises(SensorUnavailable, match="no RAPL zone"):
        energy.Rapl(str(tree.root))
    zone = tree.rapl()
    psys = tree.sys / "class/powercap/intel-rapl:1"
    write(psys / "name", "psys")
    write(psys / "energy_uj", 5)
    write(psys / "max_energy_range_uj", 1000)
    assert "psys" in energy.Rapl(str(tree.root)).covers
    write(psys / "energy_uj", "n/a")
    with pytest.raises(SensorUnavailable, match="energy_uj: expected an integer"):
        energy.Rapl(str(tree.root))
    del zone


def test_rapl_permission_error_is_clear(monkeypatch, tree):
    """EACCES as an unprivileged user gets it (tests run as root, where chmod 000 does not stop a read: here the
    open() is made to fail the way the kernel fails it; the end-to-end test drops CAP_DAC_OVERRIDE instead)."""
    tree.rapl()
    real_open = open

    def denying_open(path, *args, **kwargs):
        if str(path).endswith("/energy_uj"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", denying_open)
    with pytest.raises(SensorUnavailable, match="permission denied: RAPL energy_uj is readable by root only"):
        energy.Rapl(str(tree.root))


# --- battery ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("unit,sign,vunit,quirks", [
    ("uA", -1, "uV", ["negative while discharging (kernel ABI convention)"]),
    ("mA", 1, "uV", ["looks like mA", "positive while discharging (vendor convention"]),
    ("uA", 1, "mV", ["voltage_now looks like mV", "positive while discharging"]),
])
def test_battery_units_and_sign_quirks(tree, unit, sign, vunit, quirks):
    tree.battery(current_unit=unit, discharge_sign=sign, voltage_unit=vunit)
    feed(tree, 2.0)
    sensor = energy.PowerSupply(str(tree.root))
    assert sensor.read() == pytest.approx(2.0, rel=2e-3)
    for needle in quirks:
        assert any(needle in q for q in sensor.quirks), (needle, sensor.quirks)
    assert len(sensor.quirks) == len(quirks)


def test_battery_charging_is_skipped_by_auto_and_warned_when_forced(tree):
    tree.battery(status="Charging")
    feed(tree, 1.0)
    with pytest.raises(SensorUnavailable, match="'Charging'"):
        energy.PowerSupply(str(tree.root), auto=True)
    assert "not the device's consumption" in energy.PowerSupply(str(tree.root)).warnings[0]


def test_battery_malformed(tree):
    bat = tree.battery()
    write(bat / "voltage_now", 42)
    with pytest.raises(SensorUnavailable, match="neither µV nor mV"):
        energy.PowerSupply(str(tree.root))
    write(bat / "voltage_now", "3.9V")
    with pytest.raises(SensorUnavailable, match=r"voltage_now: expected an integer \(µV\)"):
        energy.PowerSupply(str(tree.root))


# --- external meter --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,joules,value", [("2.5\n", False, 2.5), ("starting\n2.5 W\n", False, 2.5),
                                               ("123.4 J", True, 123.4), ("1e3", True, 1000.0)])
def test_meter_output(text, joules, value):
    assert energy.parse_meter_output(text, joules) == value


@pytest.mark.parametrize("text,joules,needle", [("", False, "printed nothing"), ("2,5 W", False, "expected a number"),
                                                ("12 J", False, "--energy-command-joules"), ("nan", False, "number"),
                                                ("2.5 W", True, "joules were expected")])
def test_meter_malformed(text, joules, needle):
    with pytest.raises(SensorError, match=needle):
        energy.parse_meter_output(text, joules)


def test_meter_command_runs_without_shell_and_reports_failures(tree, tmp_path):
    tree.meter()
    feed(tree, 3.5)
    sensor = energy.Command("%s --some 'quoted arg'" % (tree.bin / "meter"))
    assert sensor.read() == 3.5 and sensor.kind == "power"
    with pytest.raises(SensorUnavailable, match="not found"):
        energy.Command("no-such-meter-xyz")
    failing = tmp_path / "failing"
    failing.write_text("#!/bin/sh\necho 'device busy' >&2\nexit 3\n")
    failing.chmod(0o755)
    with pytest.raises(SensorUnavailable, match="exited 3: device busy"):
        energy.Command(str(failing))


# --- selection and integration ---------------------------------------------------------------------------------

def test_auto_order_and_none(tree, monkeypatch):
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    opts = energy.EnergyOptions(sensor="auto", root=str(tree.root))
    sensor, tried = energy.select(opts)
    assert sensor is None and set(tried) == set(energy.AUTO_ORDER)
    tree.battery()
    tree.rapl()
    feed(tree, 1.0)
    sensor, tried = energy.select(opts)
    assert sensor.name == "rapl" and list(tried) == ["command", "hwmon", "rpi5-pmic"]
    assert energy.select(energy.EnergyOptions(sensor="none", root=str(tree.root))) == (None, {})
    with pytest.raises(SensorUnavailable):
        energy.select(energy.EnergyOptions(sensor="hwmon", root=str(tree.root)))


def test_integration_trapezoid_and_counter():
    power = [(-0.5, 99.0), (0.0, 1.0), (1.0, 3.0), (3.0, 3.0)]  # area 2 + 6 = 8 over 3 s (the first: before)
    out = energy.summarize_series(power, "power")
    assert out["avg_power_w"] == pytest.approx(8 / 3) and out["samples"] == 3
    assert out["stderr_w"] == pytest.approx(math.sqrt(4 / 3 / 3))
    counter = [(0.0, 10.0), (0.5, 11.0), (2.0, 14.0)]  # 4 J over 2 s; interval powers 2, 2
    out = energy.summarize_series(counter, "energy")
    assert out["avg_power_w"] == pytest.approx(2.0) and out["stderr_w"] == 0.0
    assert energy.summarize_series([(0.0, 1.0), (1.0, 1.0)], "power")["avg_power_w"] is None
    # a bracketing reading microseconds after the last one does not blow up the spread of a quantised counter
    counter = [(i * 0.02, 0.05 * i) for i in range(11)] + [(0.20001, 0.5125)]
    out = energy.summarize_series(counter, "energy")
    assert out["stderr_w"] < 0.2 and out["avg_power_w"] == pytest.approx(0.5125 / 0.20001)


def test_periodic_sampler_brackets_and_counts_errors():
    calls = []

    def read():
        calls.append(1)
        if len(calls) == 3:
            raise SensorError("bad reading")
        return float(len(calls))

    sampler = Periodic(read, 100.0).start()
    time.sleep(0.2)
    samples = sampler.stop()
    assert 8 <= len(samples) <= 25 and sampler.errors == 1 and "bad reading" in sampler.first_error
    assert [v for _, v in samples] == sorted(v for _, v in samples)
