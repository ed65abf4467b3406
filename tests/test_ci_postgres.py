"""`edgeopt ci` end to end on a real PostgreSQL store (tests/pg.py), as a lab with several CI runners uses it: real
`edgeopt ci` processes, `transport: local` devices (each with its own work directory and device lock), the real
agent and LiteRT measuring the example's real artifacts. No mocks.

* two runners (one per rack of devices) writing at once: both runs stored whole, tags and baselines decided per
  device (the newest `main` run may be the other runner's), `edgeopt report --compare` sees every runner's runs;
* the server killed mid-run: exit 3, one line, the password masked; after the restart no half-written run (the
  dead run never finished, never tagged, never a baseline); the connection lost while the run is being finished
  leaves it unfinished as a whole;
* the server restarted between two commands, or between two writes of one run: it just works.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pg import PgServer, pg_server_fixture  # noqa: F401  (fixture pg_server)

from edgeopt.results.store import open_store

pytestmark = [pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
EDGEOPT = str(ROOT / ".venv" / "bin" / "edgeopt")
PASSWORD = "s3cret-pw"  # trust authentication ignores it; it must never reach a message
# measurement conditions are not what these tests are about: few runs, no agent load limit (other tests and
# the other runner's agents share this machine), no latency/memory gates (statistics are tested in test_ci.py).
# The size gate stays: a 4x larger artifact is a regression on any machine, deterministically.
QUICK = {"runs": 30, "warmup": 5, "retries": 0, "max_other_load": 64.0}
GATES = {"latency": None, "peak_memory": None}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example built fp32 + int8 for `local`; ``good``/``bad`` hold the int8/fp32 build under one profile
    name, `release` (main, and a change that quadruples the artifact)."""
    from edgeopt.build import BuildRequest, build
    from edgeopt.config import load_profile, load_target

    root = tmp_path_factory.mktemp("pgci-build")
    build(BuildRequest(target=load_target("local"), profiles=[load_profile("fp32"), load_profile("int8")],
                       out=root / "out"))
    for name, profile in (("good", "int8"), ("bad", "fp32")):
        dest = root / name / "local" / "release"
        shutil.copytree(root / "out" / "local" / profile, dest)
        manifest = json.loads((dest / "manifest.json").read_text())
        manifest["profile"] = "release"
        (dest / "manifest.json").write_text(json.dumps(manifest))
    return root


def write_lab(root: Path, name: str, devices: list[str], artifacts: Path, profiles: list[str] | None = None,
              **bench: Any) -> Path:
    """A runner's lab: its own devices (local, each with its own work directory) and results directory."""
    doc = {"name": name, "devices": [{"name": d, "target": "local", "workdir": str(root / "devices" / d)}
                                     for d in devices],
           "models": [{"name": "mnist", "artifacts": str(artifacts)}], "profiles": profiles or ["release"],
           "formats": ["tflite"], "results": str(root / f"results-{name}"), "bench": {**QUICK, **bench},
           "gates": GATES, "lock": {"poll_s": 0.2}}
    path = root / f"{name}-{artifacts.name}.yaml"
    path.write_text(json.dumps(doc))
    return path


def ci_cmd(lab: Path, url: str, *args: str) -> list[str]:
    return [EDGEOPT, "ci", "--lab", str(lab), "--store", url, "--no-build", "-q", *args]


def ci(lab: Path, url: str, *args: str, cwd: Path) -> tuple[int, str, dict[str, Any]]:
    """One `edgeopt ci` process: exit code, stderr, and its --json export."""
    out = cwd / f"ci-{time.monotonic_ns()}.json"
    proc = subprocess.run(ci_cmd(lab, url, "--json", str(out), *args), capture_output=True, text=True, cwd=cwd,
                          timeout=300)
    return proc.returncode, proc.stderr, json.loads(out.read_text()) if out.exists() else {}


def concurrently(*commands: list[str], cwd: Path) -> list[tuple[int, str, str]]:
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd)
             for c in commands]
    outs = [p.communicate(timeout=300) for p in procs]
    return [(p.returncode, o, e) for p, (o, e) in zip(procs, outs)]


def sql(url: str, statement: str) -> list[tuple]:
    with psycopg.connect(url, autocommit=True) as db:
        cur = db.execute(statement)  # type: ignore[arg-type]
        return cur.fetchall() if cur.description else []


def baseline_runs(export: dict[str, Any]) -> dict[str, str | None]:
    """Cell (device) -> the run its baseline result came from (a result id is ``<run id>-<device>-<n>``)."""
    return {c["device"]: "-".join(c["baseline"].split("-")[:2]) if c["baseline"] else None
            for c in export["cells"]}


def cells(export: dict[str, Any]) -> dict[str, str]:
    return {c["device"]: c["status"] for c in export["cells"]}


def with_password(url: str) -> str:
    return url.replace(f"{PgServer.USER}@", f"{PgServer.USER}:{PASSWORD}@")


def wait_for(url: str, query: str, at_least: int, proc: subprocess.Popen[str], timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        n = int(sql(url, query)[0][0])
        if n >= at_least:
            return n
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {query}")


def test_two_runners_share_one_history(pg_server: PgServer, built: Path, tmp_path: Path):
    url = pg_server.new_database()
    labs = {(runner, art): write_lab(tmp_path, f"site-{runner}", [f"{runner}1", f"{runner}2"], built / art)
            for runner in "ab" for art in ("good", "bad")}
    main = ("--tag", "main", "--baseline", "main")

    def round_(a_artifacts: str, b_artifacts: str) -> tuple[dict[str, Any], dict[str, Any]]:
        exports = [tmp_path / f"{r}-{time.monotonic_ns()}.json" for r in "ab"]
        procs = concurrently(*(ci_cmd(labs[(r, art)], url, *main, "--json", str(out))
                               for r, art, out in zip("ab", (a_artifacts, b_artifacts), exports)), cwd=tmp_path)
        assert [code for code, _, _ in procs] == [0 if a_artifacts == "good" else 1, 0], procs
        a, b = (json.loads(out.read_text()) for out in exports)
        return a, b

    # round 1, both runners at once: both runs stored whole, both pass, both tagged main
    a1, b1 = round_("good", "good")
    with open_store(tmp_path / "r", url, create=False) as store:
        runs = {r["run_id"]: r for r in store.runs()}
        assert sorted(runs) == sorted([a1["run_id"], b1["run_id"]])
        assert all(r["status"] == "complete" and r["results"] == r["valid"] == 2 for r in runs.values())
        for export, devices in ((a1, ["a1", "a2"]), (b1, ["b1", "b2"])):
            run = store.run(export["run_id"])
            assert run["tags"] == ["main"] and run["ci"]["verdict"] == "pass" and run["targets"] == devices
            assert sorted(d["target"] for d in store.results(export["run_id"])) == devices
    assert sql(url, "SELECT count(*), count(DISTINCT result_id) FROM results") == [(4, 4)]  # none lost or doubled

    # round 2, at once: runner a's change quadruples its artifact, runner b's is main again. Each runner is
    # judged against its own devices' newest main run, whichever runner tagged main last
    a2, b2 = round_("bad", "good")
    assert set(cells(a2).values()) == {"regression"} and set(cells(b2).values()) == {"pass"}
    assert set(baseline_runs(a2).values()) == {a1["run_id"]} and set(baseline_runs(b2).values()) == {b1["run_id"]}
    assert a2["tags"] == [] and b2["tags"] == ["main"]

    # runner a again, alone: the newest main run is b's (b2, other devices); a's devices' baseline is still a1.
    # (Before baselines were resolved per device this cell was "new": the 4x artifact passed and became main.)
    for spec in ("main", "latest-passing"):
        code, err, a3 = ci(labs[("a", "bad")], url, "--tag", "main", "--baseline", spec, cwd=tmp_path)
        assert code == 1 and set(cells(a3).values()) == {"regression"}, err
        assert set(baseline_runs(a3).values()) == {a1["run_id"]}
        assert "size regressed" in err and f"run {a3['run_id']}" in err
        assert f"run {a3['run_id']} not tagged main: only a passing run is (verdict: regression)" in err
    with open_store(tmp_path / "r", url, create=False) as store:
        assert store.find_run(tag="main")["run_id"] == b2["run_id"]
        assert len(store.runs(limit=100)) == 6
    assert sql(url, "SELECT count(*), count(DISTINCT result_id) FROM results") == [(12, 12)]

    # edgeopt report sees every runner's runs, and --compare judges per device as ci did
    listed = subprocess.run([EDGEOPT, "report", "--store", url, "--list", "--json"], capture_output=True,
                            text=True, cwd=tmp_path, timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert {r["run_id"] for r in json.loads(listed.stdout)} >= {a1["run_id"], b1["run_id"], a2["run_id"],
                                                                 b2["run_id"], a3["run_id"]}
    for args in (["--compare", "main", a2["run_id"]], ["--run", a2["run_id"], "--summary", "s.md"]):
        compared = subprocess.run([EDGEOPT, "report", "--store", url, *args], capture_output=True, text=True,
                                  cwd=tmp_path, timeout=120)
        assert compared.returncode == 0, compared.stderr
        assert "REGRESSION" in compared.stdout and "0/2 passed, 2 regressed" in compared.stdout, compared.stdout
        assert a1["run_id"] in compared.stdout  # the baseline is runner a's main run, not b2


@pytest.fixture
def private_server():
    """A PostgreSQL server of the test's own, to be killed or restarted."""
    server = PgServer()
    try:
        yield server.start()
    finally:
        server.cleanup()


RUNNING = "SELECT count(*) FROM results x JOIN runs r USING (run_id) WHERE r.status = 'running'"


def test_server_killed_mid_run_is_exit_3_and_nothing_half_written(private_server: PgServer, built: Path,
                                                                  tmp_path: Path):
    server = private_server
    url = server.new_database()
    quick = write_lab(tmp_path, "rack", ["k1", "k2"], built / "out", ["fp32", "int8"])
    code, err, first = ci(quick, url, "--tag", "main", cwd=tmp_path)
    assert code == 0, err
    # a run that takes a while (2 s per cell); the server dies once it has stored its first result
    slow = write_lab(tmp_path, "rack-slow", ["k1", "k2"], built / "out", ["fp32", "int8"], min_seconds=2.0,
                     runs=100)
    proc = subprocess.Popen(ci_cmd(slow, with_password(url), "--tag", "main"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    wait_for(url, RUNNING, 1, proc)
    server.kill()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err
    errors = [line for line in err.splitlines() if line.startswith("edgeopt: error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert "lost the connection to results store postgresql://edgeopt:***@127.0.0.1" in errors[0]
    assert PASSWORD not in out + err
    server.start()  # crash recovery; then look at what the dead run left
    with open_store(tmp_path / "r", url, create=False) as store:
        dead = next(r for r in store.runs() if r["run_id"] != first["run_id"])
        run = store.run(dead["run_id"])
        assert run.get("status", "running") == "running" and run["ci"]["verdict"] == "running"  # never finished
        assert dead["status"] == "abandoned"  # and listed as such: its writer's session is gone
        assert "tags" not in run and "summary" not in run and "finished_at" not in run
        assert "--store" in run["command"] and "edgeopt:***@127.0.0.1" in run["command"]  # recorded, masked
        assert not [p for p in (tmp_path / "r").rglob("*.json") if PASSWORD in p.read_text()]
        docs = store.results(dead["run_id"])
        assert 1 <= len(docs) < 4 and all(d["valid"] and d["agent"]["latency_ms"]["count"] >= 100 for d in docs)
        assert store.find_run(tag="main")["run_id"] == first["run_id"]
    # the next run on these devices is judged against the last finished run, never the dead one (partial)
    newest = first["run_id"]
    for spec in ("latest", "main", "latest-passing"):
        code, err, again = ci(quick, url, "--baseline", spec, cwd=tmp_path)
        assert code == 0 and set(cells(again).values()) == {"pass"}, err
        assert set(baseline_runs(again).values()) == {first["run_id"] if spec == "main" else newest}
        newest = again["run_id"]


DIE_WHILE_FINISHING = """
CREATE FUNCTION die_on_verdict() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF coalesce(NEW.doc::json -> 'ci' ->> 'verdict', 'running') <> 'running' THEN
        PERFORM pg_terminate_backend(pg_backend_pid());
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER die_on_verdict BEFORE UPDATE ON runs FOR EACH ROW EXECUTE FUNCTION die_on_verdict();
"""


def test_connection_lost_while_finishing_leaves_the_run_unfinished(pg_server: PgServer, built: Path,
                                                                   tmp_path: Path):
    """The server ends the connection exactly when the run's verdict is written: its status, summary, verdict and
    tags are one transaction, so the run is left as it was (running), not "complete" without a verdict."""
    url = pg_server.new_database()
    lab = write_lab(tmp_path, "rack", ["f1"], built / "good")
    code, err, first = ci(lab, url, "--tag", "main", cwd=tmp_path)
    assert code == 0, err
    sql(url, DIE_WHILE_FINISHING)
    code, err, _ = ci(lab, url, "--tag", "main", cwd=tmp_path)
    assert code == 3 and "lost the connection to results store" in err, err
    with open_store(tmp_path / "r", url, create=False) as store:
        dead = next(r for r in store.runs() if r["run_id"] != first["run_id"])
        run = store.run(dead["run_id"])
        assert (run.get("status", "running"), run["ci"]["verdict"], dead["status"]) == ("running", "running", "abandoned"), (dead, run)
        assert "summary" not in run and "tags" not in run
        assert dead["results"] == 1  # the measured result stays, whole
        assert store.find_run(tag="main")["run_id"] == first["run_id"]


def test_server_restarted_between_commands_and_between_writes(private_server: PgServer, built: Path,
                                                              tmp_path: Path):
    server = private_server
    url = server.new_database()
    lab = write_lab(tmp_path, "rack", ["r1"], built / "good")
    code, err, first = ci(lab, url, "--tag", "main", cwd=tmp_path)
    assert code == 0, err
    server.stop()
    server.start()  # between two commands: the next one connects afresh
    code, err, second = ci(lab, url, "--tag", "main", "--baseline", "main", cwd=tmp_path)
    assert code == 0 and set(baseline_runs(second).values()) == {first["run_id"]}, err
    # between two writes of one run (4 s per cell, one device): the run reconnects and finishes whole
    slow = write_lab(tmp_path, "rack-slow", ["r1"], built / "out", ["fp32", "int8"], min_seconds=4.0, runs=100)
    out = tmp_path / "third.json"
    proc = subprocess.Popen(ci_cmd(slow, url, "--tag", "main", "--baseline", "main", "--json", str(out)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    wait_for(url, RUNNING, 1, proc)
    t0 = time.monotonic()
    server.stop()
    server.start()
    restart_s = time.monotonic() - t0
    assert restart_s < 3.0  # well inside the 4 s the second cell takes
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "reconnected (the connection was lost between two writes" in err
    third = json.loads(out.read_text())
    with open_store(tmp_path / "r", url, create=False) as store:
        run = store.run(third["run_id"])
        assert run["status"] == "complete" and run["tags"] == ["main"]
        assert len(store.results(third["run_id"])) == 2
    assert sql(url, "SELECT count(*), count(DISTINCT result_id) FROM results") == [(4, 4)]


def test_a_frozen_server_cannot_hold_a_run_interrupted_twice(private_server: PgServer, built: Path, tmp_path: Path):
    """The server's processes stopped (not gone: the kernel still acknowledges, so no TCP timeout fires) while a
    result is being written: the writer holds the store's lock and waits. Ctrl-C twice must still end the command,
    within seconds, saying why; a first Ctrl-C alone waits (it stops the devices, then finishes the run)."""
    server = private_server
    url = server.new_database()
    open_store(tmp_path / "r", url).close()  # the tables, for wait_for's query
    slow = write_lab(tmp_path, "rack-frozen", ["f1", "f2"], built / "out", ["fp32", "int8"], min_seconds=2.0,
                     runs=100)
    proc = subprocess.Popen(ci_cmd(slow, url), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path)
    wait_for(url, RUNNING, 1, proc)  # a result stored: the run is under way
    pid = server.pid()
    frozen = [pid, *(int(p) for p in subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True,
                                                     text=True).stdout.split())]
    try:
        for victim in frozen:
            os.kill(victim, signal.SIGSTOP)
        time.sleep(5.0)  # the next result (a cell every ~2 s) is now waiting on the frozen server
        proc.send_signal(signal.SIGINT)
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        t0 = time.monotonic()
        _, err = proc.communicate(timeout=60)
        waited = time.monotonic() - t0
    finally:
        for victim in frozen:
            try:
                os.kill(victim, signal.SIGCONT)
            except ProcessLookupError:
                pass
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert waited < 30 and "edgeopt: interrupted twice; still stuck 10 s later" in err, err
