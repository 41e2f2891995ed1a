"""Which events a tenant may see: the rule of the API's live event feed (``GET
/v2/fulcrum/events``), written out in ``docs/events.md``.

A tenant (a caller that is not an admin) sees an event only when its ``metadata.project_id``
is the caller's project and its type is a *tenant event*: a type of a category that holds a
project's own resources (load balancers with their children, their operating statuses,
security groups), except the
internal ones in ``INTERNAL_TYPES``. Amphorae, flavors, availability zones, quotas,
housekeeping and secrets (their sealed material) never reach a tenant. An admin sees every
event.
"""

from __future__ import annotations

from typing import Final

from libs.common.events._registry import Event, registry

# Where the API serves the live event feed.
FEED_PATH: Final = "/v2/fulcrum/events"
# Categories whose streams hold one project's own resources.
TENANT_CATEGORIES: Final = frozenset({"loadbalancer", "lbstatus", "securitygroup"})
# Types of those categories that only the control plane's machinery needs.
INTERNAL_TYPES: Final = frozenset({"LoadBalancerRedriveRequested"})


def tenant_event(cls: type[Event]) -> bool:
    """Whether events of type ``cls`` may reach the tenant that owns them."""
    return cls.category in TENANT_CATEGORIES and cls.event_type not in INTERNAL_TYPES


def tenant_event_types() -> frozenset[str]:
    """The stored names of every tenant event type."""
    return frozenset(name for name, cls in registry().types().items() if tenant_event(cls))
