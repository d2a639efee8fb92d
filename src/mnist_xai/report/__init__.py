"""The HTML report: a Jinja2 template filled from the pipeline's outputs, pictures embedded."""

from mnist_xai.report.builder import ReportInputs, build_report

__all__ = ["ReportInputs", "build_report"]
