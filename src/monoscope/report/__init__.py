"""The HTML report: one self-contained static page per analysis."""

from .html import open_in_browser, render_report

__all__ = ["open_in_browser", "render_report"]
