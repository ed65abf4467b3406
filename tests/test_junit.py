"""JUnit XML stays well-formed whatever a device prints: colours and control characters in a message."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from types import SimpleNamespace

from edgeopt.ci.model import ERROR
from edgeopt.report.junit import aborted_junit, junit_xml

NOISE = "\x1b[31mTraceback: boom\x01 & <oops>\x1b[0m\x0b"


def test_a_device_s_control_characters_do_not_break_the_xml() -> None:
    cell = SimpleNamespace(device="pi\x1b[1m", model="m", profile="int8", format="tflite", status=ERROR,
                           message=f"agent failed: {NOISE}", checks=[],
                           current={"error": {"kind": "agent"}, "host_seconds": 1.5})
    result = SimpleNamespace(lab="lab\x01", cells=[cell], run_id="r1", baseline={"label": "none"})
    root = ET.fromstring(junit_xml(result).encode())
    error = root.find("testsuite/testcase/error")
    assert error is not None and root.get("errors") == "1"
    assert error.get("message") == "agent failed: Traceback: boom\ufffd & <oops>\ufffd"  # colours gone, & < kept
    assert root.find("testsuite").get("name") == "lab\ufffd/pi"
    aborted = ET.fromstring(aborted_junit("lab\x02", f"store lost: {NOISE}", 3).encode())
    assert aborted.find("testsuite/testcase/error").get("message") == "store lost: Traceback: boom\ufffd & <oops>\ufffd"


def test_markdown_summary_shows_html_in_names_as_text() -> None:
    """A lab, device or profile named with HTML (``<b>``) rendered as markup in a GitHub step summary."""
    from edgeopt.ci.model import Cell, CIResult
    from edgeopt.report.markdown import markdown_summary

    cell = Cell("<img src=x>", "m|1", "<b>int8</b>", "tflite", "new", "no baseline for this cell", current={})
    text = markdown_summary(CIResult("r1", "<script>lab", [cell], {"label": "none"}, True, {}, 1.0, "s"))
    assert "<img" not in text and "<b>" not in text and "<script>" not in text
    assert "&lt;img src=x&gt;" in text and "&lt;b&gt;int8&lt;/b&gt;" in text and "m\\|1" in text
