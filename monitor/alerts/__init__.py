"""Alerts: what is raised, where it goes, and the one place that routes it."""

from monitor.alerts.model import Alert

__all__ = ["Alert"]
