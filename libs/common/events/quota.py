"""Events of the ``quota-<project_id>`` stream: one project's stored quota limits.

A limit of -1 means unlimited; null (or an absent key) means "the configured default".
"""

from __future__ import annotations

from typing import ClassVar

from libs.common.events._registry import Event


class QuotaEvent(Event):
    category: ClassVar[str] = "quota"


class QuotaUpdated(QuotaEvent, name="QuotaUpdated"):
    """The limits named in ``limits`` were set (null: back to the default); others unchanged.

    Keys are Octavia's canonical resource names: loadbalancer, listener, pool, member,
    healthmonitor, l7policy, l7rule.
    """

    project_id: str
    limits: dict[str, int | None]


class QuotaReset(QuotaEvent, name="QuotaReset"):
    """Every limit of the project is back to the configured default."""

    project_id: str
