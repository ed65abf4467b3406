"""End to end: the real agent zipapp in the `litert` device env on a tiny real model, pointed at synthetic sysfs
trees (``--sysfs-root``) and fake ``vcgencmd``/meter commands (PATH), while ``PowerDriver`` plays the hardware
with a known true power (2.5 W while the agent computes, 0.5 W idle). Energy per inference is checked against the
driver's exact log over the windows the agent reports. Marked slow (a few seconds per run).

Permission errors: tests run as root, and root reads a chmod-000 file anyway (CAP_DAC_OVERRIDE). The agent is
started through ``setpriv --bounding-set=-dac_override,-dac_read_search --inh-caps=-all``: still uid 0 (so it can
reach the device env under /root), but without the two capabilities that bypass file permissions, the kernel's
own permission check then refuses ``energy_uj`` (mode 000) with EACCES exactly as it refuses an unprivileged user
the root-only 0400 file on a real Linux >= 5.10.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from agent_models import AgentModels, ensure_agent_models, sha256_file
from device_envs import DeviceEnv, EnvUnavailable, ensure_env
from sysfs_fixtures import PowerDriver, SysfsTree, write

from edgeopt.bench.zipapp import build_zipapp

pytestmark = pytest.mark.slow

TOL = 0.02  # measured / true energy per inference


@pytest.fixture(scope="module")
def agent_pyz(tmp_path_factory) -> Path:
    return build_zipapp(tmp_path_factory.mktemp("agent") / "agent.pyz")


@pytest.fixture(scope="module")
def models() -> AgentModels:
    return ensure_agent_models()


@pytest.fixture(scope="module")
def litert() -> DeviceEnv:
    try:
        return ensure_env("litert")
    except EnvUnavailable as exc:  # CI must have every device env: a failure there, a skip only by hand
        (pytest.fail if os.environ.get("CI") else pytest.skip)(str(exc))


@pytest.fixture
def tree(tmp_path: Path) -> SysfsTree:
    t = SysfsTree(tmp_path / "dev")
    t.cpus(max_khz=(1800000, 2400000), capacity=(512, 1024))
    t.thermal(temps_c=(45.0,))
    return t


def run_agent(env: DeviceEnv, pyz: Path, model: Path, tree: SysfsTree, *args: str, driver: PowerDriver = None,
              prefix: tuple = ()) -> tuple[int, dict]:
    environ = {k: v for k, v in os.environ.items()
               if not k.startswith("PYTHON") and k not in ("VIRTUAL_ENV", "PYTEST_CURRENT_TEST")}
    environ["PATH"] = os.pathsep.join([str(tree.bin), str(Path(env.python).parent), "/usr/bin", "/bin"])
    cmd = [*prefix, env.python, str(pyz), "run", "--model", str(model), "--sha256", sha256_file(model),
           "--sysfs-root", str(tree.root), "--threads", "1", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environ,
                            cwd=str(tree.root))
    if driver is not None:
        driver.watch(proc.pid)
    out, err = proc.communicate(timeout=300)
    try:
        return proc.returncode, json.loads(out)
    except json.JSONDecodeError:
        pytest.fail("agent stdout is not JSON (rc=%d):\n%s\n%s" % (proc.returncode, out[-2000:], err[-3000:]))


def measure(litert, agent_pyz, models, tree, *args, driver=None, prefix=()):
    driver = driver or PowerDriver(tree)
    driver.start()
    try:
        code, doc = run_agent(litert, agent_pyz, models.fp32_tflite, tree, "--runs", "50", "--max-runs", "5000000",
                              # the test machine is shared: other load is not what these tests check
                              "--max-other-load", "64", *args, driver=driver,
                              prefix=prefix)
    finally:
        driver.stop()
    return code, doc, driver


def check_energy(doc: dict, driver: PowerDriver, sensor: str) -> dict:
    """Measured energy per inference (and above idle) against the driver's true log, same windows."""
    assert "error" not in doc, doc
    e = doc["energy"]
    assert e["sensor"] == sensor and "error" not in e, e
    # a counter sensor (RAPL, a joule meter) sees the counter file as the driver last wrote it; a power sensor
    # samples the instantaneous power
    truth = driver.avg_counter_power if e["kind"] == "energy" else driver.avg_power
    loop_w = truth(*e["loop"]["window_monotonic"])
    idle_w = truth(*e["idle"]["window_monotonic"])
    assert loop_w > 2.0 and idle_w < 1.0  # the driver saw a busy loop and an idle baseline
    lat = doc["latency_ms"]
    per = lat["measure_seconds"] / lat["count"]
    assert lat["measure_seconds"] >= e["min_seconds"] and lat["min_seconds_effective"] == e["min_seconds"]
    assert e["idle"]["span_s"] == pytest.approx(lat["measure_seconds"], rel=0.5)  # baseline about as long
    # a sampling sensor averages the power at its sample instants, the truth is the time average: on a loaded
    # machine the true power flickers, and the two may differ by more than TOL, but never by more than a few of the
    # agent's own standard errors (which this also checks are honest)
    se = e["energy_per_inference_uncertainty_j"] or 0.0
    tol_j = max(TOL * loop_w * per, min(4 * se, 0.08 * loop_w * per))
    assert e["energy_per_inference_j"] == pytest.approx(loop_w * per, abs=tol_j)
    assert e["energy_per_inference_above_idle_j"] == pytest.approx((loop_w - idle_w) * per,
                                                                   abs=tol_j + TOL * idle_w * per)
    assert e["avg_power_w"] == pytest.approx(loop_w, abs=tol_j / per) and e["idle_power_w"] == pytest.approx(idle_w, abs=0.05)
    # the uncertainty (from the sample variance) is a sane fraction: on a loaded machine the true power flickers
    # between busy and idle, which widens it, but it never dwarfs the value
    assert 0 <= e["energy_per_inference_uncertainty_j"] < 0.2 * e["energy_per_inference_j"]
    assert e["loop"]["samples"] >= 5 and e["read_errors"] == 0 and e["covers"]
    assert isinstance(doc["valid"], bool) and isinstance(doc["invalid_reasons"], list)
    return e


def test_hwmon_auto_energy_per_inference_matches_truth(litert, agent_pyz, models, tree):
    tree.hwmon(0, "ina226", mode="curr_in")
    code, doc, driver = measure(litert, agent_pyz, models, tree, "--energy", "auto", "--energy-min-seconds", "1")
    e = check_energy(doc, driver, "hwmon")
    assert e["selected_by"] == "auto" and e["kind"] == "power" and list(e["tried"]) == ["command"]
    assert e["loop"]["rate_hz"] == pytest.approx(50, rel=0.3)


def test_rapl_wraps_during_the_run(litert, agent_pyz, models, tree):
    tree.rapl(max_range_uj=1_000_000, start_uj=700_000)  # 1 J range: wraps several times at 2.5 W, even loaded
    code, doc, driver = measure(litert, agent_pyz, models, tree, "--energy", "rapl", "--energy-min-seconds", "1")
    e = check_energy(doc, driver, "rapl")
    assert e["kind"] == "energy" and "wrap-around" in e["integration"] and e["details"]["wraps"] >= 2


def test_battery_with_vendor_quirks(litert, agent_pyz, models, tree):
    tree.battery(current_unit="mA", discharge_sign=1)
    code, doc, driver = measure(litert, agent_pyz, models, tree, "--energy", "power-supply",
                                "--energy-min-seconds", "1", "--energy-rate-hz", "100")
    e = check_energy(doc, driver, "power-supply")
    assert any("looks like mA" in q for q in e["quirks"]) and any("positive while discharging" in q for q in e["quirks"])
    assert e["details"]["current_unit"] == "mA"


def test_pi5_pmic_and_throttle_flags_make_the_run_invalid(litert, agent_pyz, models, tree):
    tree.vcgencmd(throttled="0x50005")
    code, doc, driver = measure(litert, agent_pyz, models, tree, "--energy", "auto")
    e = check_energy(doc, driver, "rpi5-pmic")
    assert e["min_seconds"] == 2.0 and "not wall power" in e["covers"] and "EXT5V" in e["details"]["voltage_only_rails"]
    assert doc["valid"] is False
    assert any(r.startswith("throttling before the run: vcgencmd get_throttled=0x50005 (now: under-voltage, throttled)")
               for r in doc["invalid_reasons"])
    assert doc["device"]["state_after"]["throttled_flags"]["since_boot"] == ["under-voltage", "throttled"]


def test_external_meter_in_cumulative_joules(litert, agent_pyz, models, tree):
    tree.meter(joules=True)
    code, doc, driver = measure(litert, agent_pyz, models, tree, "--energy", "command", "--energy-command",
                                "%s --port /dev/ttyUSB0" % (tree.bin / "meter"), "--energy-command-joules",
                                "--energy-rate-hz", "20", "--energy-min-seconds", "1.5")
    e = check_energy(doc, driver, "command")
    assert e["kind"] == "energy" and e["rate_hz_requested"] == 20


def test_conditions_pin_governor_cooldown_and_clock_drop(litert, agent_pyz, models, tree):
    """cpu1 is the big core: pinned there; performance governor set and restored; a cool-down from 60 °C;
    the driver drops cpu1's clock after 0.3 s of work: the run is invalid with that reason."""
    tree.hwmon(0)
    write(tree.sys / "class/thermal/thermal_zone0/temp", 60000)
    cur = tree.sys / "devices/system/cpu/cpu1/cpufreq/scaling_cur_freq"
    temp = tree.sys / "class/thermal/thermal_zone0/temp"
    driver = PowerDriver(tree)
    seen = {"cooled": False}

    def physics(t, busy_s):
        if not seen["cooled"] and driver.pid and len(driver.log_t) > 60:
            write(temp, 42000)  # cools down about 0.3 s after the start
            seen["cooled"] = True
        if busy_s > 0.3 and seen["cooled"]:
            write(cur, 1500000)

    driver.hooks.append(physics)
    code, doc, driver = measure(litert, agent_pyz, models, tree, "--energy", "hwmon", "--energy-min-seconds", "1",
                                "--pin", "fastest", "--governor", "performance", "--cooldown-below", "50",
                                "--cooldown-timeout", "30", driver=driver)
    assert code == 0, doc
    cond = doc["conditions"]
    assert cond["pin"]["cpus"] == [1] and cond["pin"]["by"] == "cpu_capacity" and doc["runtime"]["affinity"] == [1]
    assert cond["governor"]["applied"] and cond["governor"]["previous"] == {"1": "ondemand"} and cond["governor"]["restored"]
    assert (tree.sys / "devices/system/cpu/cpu1/cpufreq/scaling_governor").read_text().strip() == "ondemand"
    assert doc["device"]["state_before"]["cpufreq"][1]["governor"] == "performance"
    assert cond["cooldown"]["reached"] and cond["cooldown"]["start_c"] == 60.0 and cond["cooldown"]["waited_s"] > 0
    assert doc["valid"] is False
    assert any("CPU clock dropped during the run on CPUs [1]: 2400000 -> 1500000 kHz" in r
               for r in doc["invalid_reasons"]), doc["invalid_reasons"]
    assert doc["device"]["state_before"]["thermal"][0]["temp_c"] < 50


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
def test_rapl_permission_denied_falls_through_and_governor_not_permitted(litert, agent_pyz, models, tree):
    zone = tree.rapl()
    tree.battery()
    os.chmod(zone / "energy_uj", 0)
    gov = tree.sys / "devices/system/cpu/cpu0/cpufreq/scaling_governor"
    os.chmod(gov, 0o444)
    drop = ("setpriv", "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search")
    code, doc, driver = measure(litert, agent_pyz, models, tree, "--energy", "auto", "--energy-min-seconds", "1",
                                "--energy-rate-hz", "50", "--governor", "performance", prefix=drop)
    e = check_energy(doc, driver, "power-supply")  # RAPL refused: auto fell through to the next sensor
    assert "permission denied: RAPL energy_uj is readable by root only" in e["tried"]["rapl"]
    code, doc, driver = measure(litert, agent_pyz, models, tree, "--energy", "rapl", prefix=drop)
    assert code == 1 and doc["error"]["type"] == "energy_unavailable"
    assert "permission denied: RAPL energy_uj is readable by root only" in doc["error"]["message"]
    # auto with only RAPL: falls through to none, says why, fakes nothing
    shutil.rmtree(tree.sys / "class/power_supply")
    tree.writers[:] = tree.writers[:2]  # RAPL only
    code, doc, driver = measure(litert, agent_pyz, models, tree, "--energy", "auto", "--governor", "performance",
                                prefix=drop)
    assert code == 0 and doc["energy"]["sensor"] == "none" and "energy_per_inference_j" not in doc["energy"]
    assert "permission denied" in doc["energy"]["tried"]["rapl"]
    g = doc["conditions"]["governor"]
    assert not g["applied"] and "Permission denied" in g["error"] and "not permitted" in g["error"]
    assert any("--governor performance" in w for w in doc["warnings"])
    del e


def test_energy_none_is_the_default_and_said(litert, agent_pyz, models, tree):
    code, doc = run_agent(litert, agent_pyz, models.fp32_tflite, tree, "--runs", "5")
    assert code == 0 and doc["energy"] == {"sensor": "none", "reason": "not requested (--energy none)"}
    assert doc["latency_ms"]["min_seconds_effective"] == 0.0 and doc["schema"] == 1
    assert doc["device"]["state_before"]["thermal"][0]["temp_c"] == 45.0
