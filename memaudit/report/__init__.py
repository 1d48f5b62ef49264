"""Self-contained HTML reports: figures are embedded as base64 PNG, so no network is needed to view one."""

from .mia import write_mia_report

__all__ = ["write_mia_report"]
