"""JUnit XML for ``edgeopt ci``: one ``<testcase>`` per cell (device × model × profile × format).

``classname`` = ``edgeopt.<lab>.<device>``, ``name`` = ``<model>/<profile>/<format>``. A regression is a
``<failure>`` whose message says what regressed by how much; an infrastructure error or an invalid measurement is
an ``<error>``; a cell without a baseline passes (``<system-out>`` says so). One ``<testsuite>`` per device,
inside ``<testsuites>``; every count attribute is computed from the cases written.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

from edgeopt.ci.gate import REGRESSION
from edgeopt.ci.model import ERROR, INVALID

# a device's stderr (colours, a crash's garbage) in a message: ANSI sequences go, other characters XML 1.0 cannot
# hold become U+FFFD (ElementTree writes them raw, and the file no longer parses)
ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-_]")
NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def document(root: ET.Element) -> str:
    """The XML file's text: declaration, indented elements, and nothing XML 1.0 cannot hold."""
    ET.indent(root)
    text = '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
    return NOT_XML.sub("\ufffd", ANSI.sub("", text))


def _seconds(cell: Any) -> float:
    doc = cell.current or {}
    return float(doc.get("host_seconds") or 0.0)


def junit_xml(result: Any) -> str:
    root = ET.Element("testsuites", name=f"edgeopt ci {result.lab}")
    by_device: dict[str, list[Any]] = {}
    for cell in result.cells:
        by_device.setdefault(cell.device, []).append(cell)
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    total_time = 0.0
    for device, cells in sorted(by_device.items()):
        suite = ET.SubElement(root, "testsuite", name=f"{result.lab}/{device}")
        counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
        suite_time = 0.0
        props = ET.SubElement(suite, "properties")
        ET.SubElement(props, "property", name="run_id", value=str(result.run_id))
        ET.SubElement(props, "property", name="baseline", value=str(result.baseline.get("label")))
        for cell in cells:
            seconds = _seconds(cell)
            suite_time += seconds
            case = ET.SubElement(suite, "testcase", classname=f"edgeopt.{result.lab}.{device}",
                                 name=f"{cell.model}/{cell.profile or '-'}/{cell.format}", time=f"{seconds:.3f}")
            counts["tests"] += 1
            if cell.status == REGRESSION:
                counts["failures"] += 1
                el = ET.SubElement(case, "failure", message=cell.message, type="regression")
                el.text = "\n".join(f"{c.gate}: {c.status}: {c.message}" for c in cell.checks)
            elif cell.status in (ERROR, INVALID):
                counts["errors"] += 1
                kind = ((cell.current or {}).get("error") or {}).get("kind", "invalid") if cell.status == ERROR \
                    else "invalid-measurement"
                el = ET.SubElement(case, "error", message=cell.message, type=str(kind))
                el.text = cell.message
            out = ET.SubElement(case, "system-out")
            out.text = "\n".join([cell.message] + [f"{c.gate}: {c.status}: {c.message}" for c in cell.checks])
        for key, value in counts.items():
            suite.set(key, str(value))
            totals[key] += value
        suite.set("time", f"{suite_time:.3f}")
        total_time += suite_time
    for key, value in totals.items():
        root.set(key, str(value))
    root.set("time", f"{total_time:.3f}")
    return document(root)


def aborted_junit(lab: str, message: str, exit_code: int) -> str:
    """The JUnit XML of a run that could not be judged at all (the results store unreachable, the lab invalid,
    the run interrupted): one ``<error>`` case saying why, so a CI dashboard shows the reason, not a missing file."""
    root = ET.Element("testsuites", name=f"edgeopt ci {lab}", tests="1", failures="0", errors="1", skipped="0",
                      time="0.000")
    suite = ET.SubElement(root, "testsuite", name=f"{lab}/run", tests="1", failures="0", errors="1", skipped="0",
                          time="0.000")
    case = ET.SubElement(suite, "testcase", classname=f"edgeopt.{lab}", name="run", time="0.000")
    el = ET.SubElement(case, "error", message=message, type=f"exit-{exit_code}")
    el.text = message
    return document(root)
