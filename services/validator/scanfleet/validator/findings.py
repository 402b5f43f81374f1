"""The typed record for one ``ReportItem``; it lives in ``scanfleet.common.findings`` with its store format.

The old parser kept severity as a string and invented a ``cvss_score`` field that real exports
never carry, which broke every numeric filter; here numbers are numbers and only real tags appear.
"""

from __future__ import annotations

from scanfleet.common.findings import Finding

__all__ = ["Finding"]
