"""Events of the ``amphora-<id>`` stream: one amphora's life, from boot to deletion."""

from __future__ import annotations

from typing import ClassVar

from libs.common.events._registry import Event


class AmphoraEvent(Event):
    category: ClassVar[str] = "amphora"


class AmphoraBooted(AmphoraEvent, name="AmphoraBooted"):
    """A driver started the amphora; its agent answers at ``agent_url``."""

    amphora_id: str
    driver: str
    compute_id: str
    agent_url: str
    lb_network_ip: str = ""
    loadbalancer_id: str | None = None
    role: str = "STANDALONE"
    vrrp_ip: str | None = None
    ha_ip: str | None = None
    cert_expiration: str | None = None
    topology: str = "SINGLE"
    # The amphora host it runs on (provisioner setting ``hosts``); "" with a single driver.
    host: str = ""


class AmphoraAllocated(AmphoraEvent, name="AmphoraAllocated"):
    """A spare (or fresh) amphora now serves ``loadbalancer_id``."""

    amphora_id: str
    loadbalancer_id: str
    role: str = "STANDALONE"


class AmphoraFailed(AmphoraEvent, name="AmphoraFailed"):
    """The amphora stopped working (silent past the timeout, or admin failover)."""

    amphora_id: str
    loadbalancer_id: str | None = None
    reason: str


class AmphoraErrored(AmphoraEvent, name="AmphoraErrored"):
    """The amphora is broken beyond automatic repair (say, a build or teardown that was given
    up): status ERROR, which an administrator may delete (``DELETE /octavia/amphorae/{id}``)."""

    amphora_id: str
    reason: str = ""


class AmphoraDeleted(AmphoraEvent, name="AmphoraDeleted"):
    amphora_id: str


class AmphoraCertificateRotated(AmphoraEvent, name="AmphoraCertificateRotated"):
    amphora_id: str
    cert_expiration: str
