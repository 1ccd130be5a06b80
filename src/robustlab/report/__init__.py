"""Self-contained HTML reports built from a run directory (outcomes, summary, examples)."""

from robustlab.report.html import SECTIONS, build_report, render_report, report_context

__all__ = ["SECTIONS", "build_report", "render_report", "report_context"]
