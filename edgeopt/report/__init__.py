"""Reports over stored results. ``table``: the terminal table and its JSON twin (``edgeopt report``)."""

from edgeopt.report.table import render_runs, render_table, result_row, rows_json

__all__ = ["render_runs", "render_table", "result_row", "rows_json"]
