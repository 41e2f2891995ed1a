"""Events of the ``quota-<project_id>`` stream: one project's stored quota limits.

A limit of -1 means unlimited; null (or an absent key) means "the configured default".
"""

from __future__ import annotations

from typing import ClassVar

from libs.common.events._payload import Changes
from libs.common.events._registry import Event


class QuotaLimits(Changes):
    """Limits by Octavia's canonical resource name; only the limits set are stored, null
    meaning "back to the configured default"."""

    loadbalancer: int | None = None
    listener: int | None = None
    pool: int | None = None
    member: int | None = None
    healthmonitor: int | None = None
    l7policy: int | None = None
    l7rule: int | None = None


class QuotaEvent(Event):
    category: ClassVar[str] = "quota"


class QuotaUpdated(QuotaEvent, name="QuotaUpdated"):
    """The limits set in ``limits`` were set (null: back to the default); others unchanged."""

    project_id: str
    limits: QuotaLimits


class QuotaReset(QuotaEvent, name="QuotaReset"):
    """Every limit of the project is back to the configured default."""

    project_id: str
