"""Pushes a load balancer's rendered HAProxy configuration to its amphorae' agents.

Holds the provisioner's client certificate (issued by the deployment CA at start) and one agent
client per amphora. The configuration is always the whole LB, rendered by a pure function of
its state; the agent validates it and reloads HAProxy without dropping connections.

On amphorae that own a VIP interface (the agent's GET /v1/vrrp names one; the netns driver's
do) the VIP is plumbed after HAProxy runs: SINGLE amphorae plug it (with gratuitous ARP),
ACTIVE_STANDBY pairs get a keepalived.conf each (rendering/keepalived.py: the amphora's own
address as unicast source, the other amphorae as peers, priority by role) and keepalived moves
it. Elsewhere (loopback VIPs of the process driver) there is nothing to plumb.

An ACTIVE_STANDBY amphora is only ever pushed with its peer: ``push`` refuses a pair without
one (LoneAmphora) before it changes anything, so keepalived never runs a lone multicast
instance, and a survivor whose peer died keeps the config naming it (harmless unicast adverts
to a silent address) until the lifecycle pushes the pair with the replacement.
"""

from __future__ import annotations

import resource
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from libs.common.agent_contract import AgentInfo, NewServer, ServerState, VrrpState, VrrpStatus
from libs.common.domain.model import LoadBalancerState, Topology
from libs.common.errors import FulcrumError
from libs.common.pki import DeploymentCA, write_private_file
from services.provisioner.adapters.agent_client import (
    AgentRejected,
    AmphoraAgentClient,
    client_ssl_context,
)
from services.provisioner.certificates import (
    CertificateSource,
    TlsFile,
    manifest_line,
    manifest_of,
    plan_tls,
)
from services.provisioner.drivers import AmphoraHandle
from services.provisioner.domain.runtime_changes import ServerOp
from services.provisioner.rendering import (
    ListenerTlsFiles,
    PoolTlsFiles,
    RenderContext,
    compile_templates,
    maxconn_cap_for_fd_limit,
    render_haproxy,
)
from services.provisioner.rendering.keepalived import KeepalivedContext, render_keepalived
from services.provisioner.settings import VrrpSettings


class LoneAmphora(FulcrumError):
    """An ACTIVE_STANDBY push named no peer amphora; nothing was changed on the amphora."""


def vrrp_peers(handle: AmphoraHandle, pair: Sequence[AmphoraHandle]) -> tuple[str, ...]:
    """The addresses ``handle`` advertises to: the pair's other amphorae, sorted, each once."""
    own = handle.lb_network_ip
    return tuple(
        sorted({p.lb_network_ip for p in pair if p.amphora_id != handle.amphora_id} - {own})
    )


def _check_pair(
    state: LoadBalancerState, handle: AmphoraHandle, pair: Sequence[AmphoraHandle]
) -> None:
    """Raise LoneAmphora when ``handle`` is half of an ACTIVE_STANDBY pair without its peer."""
    lb = state.loadbalancer
    if lb is not None and lb.topology == Topology.ACTIVE_STANDBY and not vrrp_peers(handle, pair):
        raise LoneAmphora(
            f"amphora {handle.amphora_id} of ACTIVE_STANDBY load balancer {lb.id} was pushed "
            "without its peer (keepalived would advertise by multicast)"
        )


@dataclass(frozen=True)
class TlsContext:
    """Where the delivered TLS files are, for the render context, and their names."""

    listener_tls: Mapping[str, ListenerTlsFiles]
    pool_tls: Mapping[str, PoolTlsFiles]
    files: frozenset[str]


class Configurator:
    def __init__(
        self,
        ca: DeploymentCA,
        directory: Path,
        vrrp: VrrpSettings | None = None,
        certificates: CertificateSource | None = None,
    ) -> None:
        self._ca = ca
        self._vrrp = vrrp or VrrpSettings()
        # Resolves listeners' and pools' key manager references (None: no keys configured).
        self._certificates = certificates
        # Per amphora: TLS files known to be stored (name -> sha256), and those the installed
        # configuration lists (None: not known yet, read from the installed config).
        self._stored_files: dict[str, dict[str, str]] = {}
        self._installed_files: dict[str, set[str]] = {}
        issued = ca.issue_client_cert("fulcrum-provisioner", validity_days=365)
        self._cert = directory / "provisioner-client.pem"
        self._key = directory / "provisioner-client.key"
        write_private_file(self._cert, issued.cert_pem, mode=0o644)
        write_private_file(self._key, issued.key_pem)
        # One context for every agent client (each names its amphora as the server name).
        self._ssl = client_ssl_context(ca.cert_path, self._cert, self._key, check_hostname=True)
        self._clients: dict[str, AmphoraAgentClient] = {}
        self._infos: dict[str, AgentInfo] = {}
        self._vip_plumbing: dict[str, VrrpStatus] = {}
        compile_templates()  # here, not in the first push

    def client(self, handle: AmphoraHandle) -> AmphoraAgentClient:
        """The (cached) client of one amphora's agent; it checks the amphora id in the cert."""
        key = f"{handle.amphora_id}@{handle.agent_url}"
        client = self._clients.get(key)
        if client is None:
            client = AmphoraAgentClient(
                handle.agent_url,
                self._ca.cert_path,
                self._cert,
                self._key,
                server_name=handle.amphora_id,
                ssl_context=self._ssl,
            )
            self._clients[key] = client
        return client

    async def info(self, handle: AmphoraHandle) -> AgentInfo:
        key = f"{handle.amphora_id}@{handle.agent_url}"
        info = self._infos.get(key)
        if info is None:
            info = await self.client(handle).info()
            self._infos[key] = info
        return info

    def render(
        self, state: LoadBalancerState, info: AgentInfo, tls: TlsContext | None = None
    ) -> str:
        context = RenderContext(
            stats_socket=info.stats_socket,
            state_dir=str(Path(info.certs_dir).parent),
            maxconn_cap=maxconn_cap_for_fd_limit(resource.getrlimit(resource.RLIMIT_NOFILE)[1]),
            listener_tls=tls.listener_tls if tls else {},
            pool_tls=tls.pool_tls if tls else {},
            external_check_command=info.external_check_command,
        )
        text = render_haproxy(state, context)
        return text + manifest_line(tls.files if tls else ())

    async def _render_with_tls(
        self, state: LoadBalancerState, handle: AmphoraHandle
    ) -> tuple[str, set[str]]:
        """The config and the TLS files it uses, which are on the amphora once this returns
        (uploaded when missing or different; raises CertificateUnavailable, agent errors)."""
        info = await self.info(handle)
        plan = await plan_tls(state, self._certificates, info.certs_dir)
        await self._deliver(handle, plan.files.values())
        tls = TlsContext(plan.listener_tls, plan.pool_tls, frozenset(plan.files))
        return self.render(state, info, tls), set(plan.files)

    async def _deliver(self, handle: AmphoraHandle, files: Iterable[TlsFile]) -> None:
        key = f"{handle.amphora_id}@{handle.agent_url}"
        stored = self._stored_files.setdefault(key, {})
        client = self.client(handle)
        for item in files:
            digest = item.sha256
            if stored.get(item.name) == digest:
                continue
            present = await client.get_certificate(item.name)
            if present is None or present.sha256 != digest:
                await client.upload_certificate(item.name, item.content)
            stored[item.name] = digest

    async def push(
        self,
        state: LoadBalancerState,
        handle: AmphoraHandle,
        pair: Sequence[AmphoraHandle] = (),
    ) -> None:
        """Deliver TLS files, render and apply on one amphora, then remove the TLS files the
        previous configuration used and this one does not; raises the agent client's
        InfrastructureErrors and CertificateUnavailable.

        ``pair`` is every amphora of the LB (for ACTIVE_STANDBY peers); an ACTIVE_STANDBY
        amphora without a peer in it raises LoneAmphora before anything is changed.
        """
        _check_pair(state, handle, pair)
        key = f"{handle.amphora_id}@{handle.agent_url}"
        client = self.client(handle)
        previous = self._installed_files.get(key)
        if previous is None:
            previous = await self._installed_manifest(handle)
        text, used = await self._render_with_tls(state, handle)
        await client.apply_config(text)
        self._installed_files[key] = used
        stored = self._stored_files.setdefault(key, {})
        for name in sorted(previous - used):
            await client.delete_certificate(name)
            stored.pop(name, None)
        await self._plumb_vip(state, handle, pair)

    async def _installed_manifest(self, handle: AmphoraHandle) -> set[str]:
        """The TLS files the amphora's installed config lists. On first contact the agent's
        info (fetched now, then cached) tells whether it has a config at all: a fresh or spare
        amphora is not asked for one."""
        key = f"{handle.amphora_id}@{handle.agent_url}"
        if key not in self._infos and (await self.info(handle)).config_sha256 is None:
            return set()
        return manifest_of(await self.client(handle).get_config())

    async def vip_plumbing(self, handle: AmphoraHandle) -> VrrpStatus | None:
        """The amphora's VIP interface and keepalived script paths (cached), or None when its
        VIPs need no plumbing (no interface, or an agent without the VRRP endpoints)."""
        key = f"{handle.amphora_id}@{handle.agent_url}"
        status = self._vip_plumbing.get(key)
        if status is None and (await self.info(handle)).has_vip_interface is False:
            return None  # its info says so: no /v1/vrrp round trip
        if status is None:
            try:
                status = await self.client(handle).vrrp_status()
            except AgentRejected as exc:
                if exc.status != 404:
                    raise
                status = VrrpStatus(
                    interface=None,
                    running=False,
                    state=VrrpState.STOPPED,
                    config_sha256=None,
                    check_script=None,
                    notify_script=None,
                    addresses=[],
                )
            self._vip_plumbing[key] = status
        return status if status.interface is not None else None

    def render_vrrp(
        self,
        state: LoadBalancerState,
        handle: AmphoraHandle,
        pair: Sequence[AmphoraHandle],
        plumbing: VrrpStatus,
    ) -> str:
        """keepalived.conf of ``handle`` in the ACTIVE_STANDBY pair ``pair`` (unicast to the
        other amphorae); raises LoneAmphora when ``pair`` has no other amphora."""
        _check_pair(state, handle, pair)
        lb = state.loadbalancer
        assert lb is not None and lb.vip_address is not None
        assert plumbing.interface and plumbing.check_script and plumbing.notify_script
        options = self._vrrp
        context = KeepalivedContext(
            lb_id=lb.id,
            amphora_id=handle.amphora_id,
            role="MASTER" if handle.role == "MASTER" else "BACKUP",
            interface=plumbing.interface,
            unicast_src_ip=handle.lb_network_ip,
            unicast_peers=vrrp_peers(handle, pair),
            virtual_addresses=(lb.vip_address,),
            check_script=plumbing.check_script,
            notify_script=plumbing.notify_script,
            advert_int=options.advert_int,
            check_interval=options.check_interval,
            check_fall=options.check_fall,
            check_rise=options.check_rise,
        )
        return render_keepalived(context)

    async def _plumb_vip(
        self, state: LoadBalancerState, handle: AmphoraHandle, pair: Sequence[AmphoraHandle]
    ) -> None:
        lb = state.loadbalancer
        if lb is None or lb.vip_address is None:
            return
        plumbing = await self.vip_plumbing(handle)
        if plumbing is None:
            return
        client = self.client(handle)
        if lb.topology.value == "ACTIVE_STANDBY":
            text = self.render_vrrp(state, handle, pair, plumbing)
            await client.apply_vrrp(text, [lb.vip_address])
        else:
            await client.plug_vip(lb.vip_address)

    async def rendered(self, state: LoadBalancerState, handle: AmphoraHandle) -> str:
        """The config ``push`` would apply (its TLS files delivered), for runtime changes."""
        text, _ = await self._render_with_tls(state, handle)
        return text

    async def apply_runtime(
        self, handle: AmphoraHandle, ops: Sequence[ServerOp], rendered: str
    ) -> None:
        """Make ``ops`` through the runtime API, then store ``rendered`` for the next reload."""
        client = self.client(handle)
        for op in ops:
            if op.delete:
                await client.server_change(op.backend, op.server, delete=True)
            elif op.add_address is not None and op.add_port is not None:
                await client.server_change(
                    op.backend,
                    op.server,
                    add=NewServer(
                        address=op.add_address, port=op.add_port, options=list(op.add_options)
                    ),
                )
            else:
                await client.server_change(
                    op.backend,
                    op.server,
                    weight=op.weight,
                    state=ServerState(op.state) if op.state else None,
                )
        await client.apply_config(rendered, reload=False)

    async def forget(self, amphora_id: str) -> None:
        for key in [k for k in self._clients if k.startswith(f"{amphora_id}@")]:
            await self._clients.pop(key).close()
            self._infos.pop(key, None)
            self._vip_plumbing.pop(key, None)
            self._stored_files.pop(key, None)
            self._installed_files.pop(key, None)

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()
