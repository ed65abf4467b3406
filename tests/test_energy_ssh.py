"""Energy and measuring conditions end to end through `edgeopt bench` over the real loopback SSH device: the
host passes the sensor settings, the agent on the "device" reads a sysfs tree laid out as the kernel ABI
documents it while ``PowerDriver`` plays the hardware (2.5 W while the agent computes, 0.5 W idle), and the
stored result carries energy per inference matching the driver's true log."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from sysfs_fixtures import PowerDriver, SysfsTree
from test_bench import Lab, agent_cache, agent_processes, built, envs, lab  # noqa: F401 - fixtures

from edgeopt.bench import bench

pytestmark = [pytest.mark.slow, pytest.mark.ssh]


def _watch_agent(driver: PowerDriver, marker: str, stop: threading.Event) -> None:
    """Point the driver at the agent process once sshd has started it (its PID is only known on the device)."""
    while not stop.is_set():
        pids = agent_processes(marker)
        if pids:
            driver.watch(pids[0])
            return
        time.sleep(0.01)


def test_hwmon_energy_over_ssh_matches_truth(sshd, envs, lab: Lab, tmp_path: Path) -> None:  # noqa: F811
    tree = SysfsTree(tmp_path / "device-sys")
    tree.cpus(max_khz=(2400000, 2400000), capacity=(1024, 1024), governor="performance")
    tree.thermal(temps_c=(48.0,))
    tree.hwmon(0, "ina226", mode="power")
    dev = lab.device("pi-energy", sshd, envs["litert"].python)
    marker = f"{sshd.home}/wd/{lab.root.name}-pi-energy"
    driver, stop = PowerDriver(tree), threading.Event()
    watcher = threading.Thread(target=_watch_agent, args=(driver, marker, stop))
    driver.start()
    watcher.start()
    try:
        run = bench(lab.options(dev, profiles=["int8"], formats=["tflite"], max_runs=5_000_000,
                                agent_args=["--energy", "hwmon", "--sysfs-root", str(tree.root),
                                            "--energy-min-seconds", "1", "--max-other-load", "64"]))
    finally:
        stop.set()
        watcher.join()
        driver.stop()
    (doc,) = run.results
    assert run.exit_code == 0 and doc["valid"] is True, doc.get("error")
    agent = doc["agent"]
    e = agent["energy"]
    assert e["sensor"] == "hwmon" and "ina226" in e["covers"]
    loop_w = driver.avg_power(*e["loop"]["window_monotonic"])
    idle_w = driver.avg_power(*e["idle"]["window_monotonic"])
    assert idle_w < 1.0 and loop_w > idle_w + 0.5  # the driver saw an idle baseline and a busy loop
    per_call_s = agent["latency_ms"]["measure_seconds"] / agent["latency_ms"]["count"]
    assert e["energy_per_inference_j"] == pytest.approx(loop_w * per_call_s, rel=0.02)
    assert e["energy_per_inference_above_idle_j"] == pytest.approx((loop_w - idle_w) * per_call_s, rel=0.05)
    # the conditions were recorded from the same tree and judged
    assert agent["valid"] is True and agent["invalid_reasons"] == []
    assert agent["device"]["state_before"]["cpufreq"][0]["governor"] == "performance"
    assert agent["conditions"]["sysfs_root"] == str(tree.root)
    assert agent["device"]["state_before"]["thermal"][0]["temp_c"] == 48.0


def test_target_energy_setting_reaches_the_device(sshd, envs, lab: Lab, tmp_path: Path) -> None:  # noqa: F811
    """Without --energy the target's energy_sensor is used: a forced sensor the device lacks is a clear error."""
    dev = lab.device("pi-nosensor", sshd, envs["litert"].python)
    text = dev.read_text().replace('"threads": 1', '"threads": 1, "energy_sensor": "rapl"')
    dev.write_text(text)
    empty = tmp_path / "empty-sys"
    empty.mkdir()
    run = bench(lab.options(dev, profiles=["int8"], formats=["tflite"], agent_args=["--sysfs-root", str(empty)]))
    (doc,) = run.results
    assert run.exit_code == 3 and doc["valid"] is False
    assert doc["error"]["kind"] == "agent" and "rapl" in doc["error"]["message"].lower()
