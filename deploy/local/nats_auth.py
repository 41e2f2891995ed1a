"""Who may do what on NATS: the users of a deployment, their passwords, the nats-server
``authorization`` block granting each only what its code does, and the servers' TLS.

Every service runs the outbox relay (``libs/common/outbox.py``), and whichever process holds
the relay lock publishes every stored event: each service user may publish the event
subjects. Beyond that (allow-lists; everything else is refused by the server):

- every service: the ``FULCRUM_EVENTS`` stream's info, create and update (``ensure_stream``,
  ``/readyz``) and replies on ``_INBOX.>``; no stream delete, purge or message delete;
- the provisioner, the only service with consumers: its durable consumers (create, info,
  fetch) and their acks;
- ``events``, the operator's reader for ``fulcrum events tail``: stream info and ordered
  (ephemeral) consumers over the stream, never a publish of an event;
- ``subscriber``, the account for outside subscribers: core subscriptions to the public
  event subjects (``subjects.public_events``) only; no JetStream API, no publish at all.

TLS (``NatsTls``): the servers present a certificate of the deployment CA (``libs/common/
pki.py``) naming 127.0.0.1 on the client port and, in a cluster, on the routes, where both
ends verify each other against that CA.

Used by ``make up`` (``up.py``, one server), the cluster (``nats_cluster.py``) and the
control-plane image's ``nats`` command (``deploy/bin/fulcrum-entrypoint``).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from deploy.local.state import SERVICES
from libs.common import subjects
from libs.common.pki import CA_CERT_FILE, DeploymentCA
from libs.common.private_files import kept_secret, write_private_file

__all__ = [
    "EVENTS_READER",
    "OUTSIDE_SUBSCRIBER",
    "SERVICE_USERS",
    "USERS",
    "NatsCredentials",
    "NatsTls",
    "NatsUsers",
    "Permissions",
    "client_environment",
    "compose_config",
    "permissions_of",
    "render_authorization",
    "write_reader_files",
]

SERVICE_USERS: Final = SERVICES  # one NATS user per service, named as the service
EVENTS_READER: Final = "events"
OUTSIDE_SUBSCRIBER: Final = "subscriber"
USERS: Final = (*SERVICE_USERS, EVENTS_READER, OUTSIDE_SUBSCRIBER)
# Services with durable consumers (services/*/app.py ``ConsumerSpec``).
_CONSUMING_SERVICES: Final = frozenset({"provisioner"})
_STREAM: Final = subjects.STREAM_NAME
_EVERYTHING: Final = ">"


@dataclass(frozen=True)
class Permissions:
    """Allow-lists of one user; an empty ``publish`` denies every publish."""

    publish: tuple[str, ...]
    subscribe: tuple[str, ...]


def permissions_of(user: str) -> Permissions:
    """What ``user`` (one of ``USERS``) may publish and subscribe to; KeyError otherwise."""
    if user in SERVICE_USERS:
        publish = [
            subjects.ALL_EVENTS,
            subjects.jetstream_api("STREAM", "INFO", _STREAM),
            subjects.jetstream_api("STREAM", "CREATE", _STREAM),
            subjects.jetstream_api("STREAM", "UPDATE", _STREAM),
        ]
        if user in _CONSUMING_SERVICES:
            publish += [
                subjects.jetstream_api("CONSUMER", "DURABLE", "CREATE", _STREAM, "*"),
                subjects.jetstream_api("CONSUMER", "INFO", _STREAM, "*"),
                subjects.jetstream_api("CONSUMER", "MSG", "NEXT", _STREAM, "*"),
                subjects.jetstream_acks(_STREAM),
            ]
        return Permissions(tuple(publish), (subjects.INBOXES,))
    if user == EVENTS_READER:
        return Permissions(
            (
                subjects.jetstream_api("STREAM", "INFO", _STREAM),
                subjects.jetstream_api("CONSUMER", "CREATE", _STREAM),
                subjects.jetstream_api("CONSUMER", "CREATE", _STREAM, _EVERYTHING),
                subjects.jetstream_api("CONSUMER", "DELETE", _STREAM, "*"),
                subjects.jetstream_flow_control(_STREAM),
            ),
            (subjects.INBOXES,),
        )
    if user == OUTSIDE_SUBSCRIBER:
        return Permissions((), tuple(subjects.public_events()))
    raise KeyError(f"no NATS user {user!r}")


@dataclass(frozen=True)
class NatsCredentials:
    """A user of the deployment's NATS and its password."""

    user: str
    password: str = field(repr=False)


class NatsUsers:
    """The passwords of ``USERS`` (plus any ``extra`` user, e.g. a cluster's route user),
    one file each (``<user>.password``, 0600) under ``directory``, made at the first use and
    kept."""

    def __init__(self, directory: Path, extra: tuple[str, ...] = ()) -> None:
        self.directory = Path(directory)
        self._known = (*USERS, *extra)

    def credentials_for(self, user: str) -> NatsCredentials:
        """``user``'s credentials; KeyError for a user this deployment does not have."""
        if user not in self._known:
            raise KeyError(f"no NATS user {user!r}")
        return NatsCredentials(user, kept_secret(self.directory / f"{user}.password"))

    def authorization(self) -> str:
        """The ``authorization`` block of nats-server's configuration for ``USERS``."""
        return render_authorization([self.credentials_for(user) for user in USERS])


@dataclass(frozen=True)
class NatsTls:
    """TLS of the client port and of the routes: the servers present ``cert_file``/
    ``key_file`` (which must name the address clients dial) to clients and to each other, and
    verify each other's against ``ca_file``; with ``verify`` clients too must present a
    certificate signed by ``ca_file``."""

    cert_file: Path
    key_file: Path
    ca_file: Path
    verify: bool = False

    @classmethod
    def from_deployment_ca(cls, ca_dir: Path, directory: Path, *hosts: str) -> NatsTls:
        """The servers' certificate naming ``hosts`` (and ``localhost``), issued by the CA in
        ``ca_dir`` (created there when missing) into ``directory`` (``server.pem``,
        ``server.key`` 0600) at the first call and kept while that CA signed it."""
        cert, key = directory / "server.pem", directory / "server.key"
        if not (cert.exists() and key.exists() and _signed_by(cert, ca_dir / CA_CERT_FILE)):
            ca = DeploymentCA.load_or_create(ca_dir)
            issued = ca.issue_peer_cert("nats", [*hosts, "localhost"])
            write_private_file(key, issued.key_pem)
            write_private_file(cert, issued.cert_pem, mode=0o644)
        return cls(cert, key, ca_dir / CA_CERT_FILE)

    def server_block(self) -> list[str]:
        """The ``tls { ... }`` block of the client port."""
        return self._block("", self.verify)

    def route_block(self) -> list[str]:
        """The ``tls { ... }`` block inside ``cluster { ... }``: mutual TLS between nodes."""
        return self._block("  ", True)

    def _block(self, indent: str, verify: bool) -> list[str]:
        return [
            f"{indent}tls {{",
            f'{indent}  cert_file: "{self.cert_file}"',
            f'{indent}  key_file: "{self.key_file}"',
            f'{indent}  ca_file: "{self.ca_file}"',
            f"{indent}  verify: {'true' if verify else 'false'}",
            f"{indent}}}",
        ]


def _signed_by(cert: Path, ca_cert: Path) -> bool:
    issued = x509.load_pem_x509_certificate(cert.read_bytes())
    authority = x509.load_pem_x509_certificate(ca_cert.read_bytes())
    try:
        issued.verify_directly_issued_by(authority)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def client_environment(
    servers: list[str], credentials: NatsCredentials, tls: NatsTls | None
) -> dict[str, str]:
    """The ``NATS__*`` settings (to prefix with ``FULCRUM_<SVC>_``) of a client logging in as
    ``credentials`` to ``servers``, verifying them against the CA of ``tls``."""
    env = {
        "NATS__SERVERS": ",".join(servers),
        "NATS__USER": credentials.user,
        "NATS__PASSWORD": credentials.password,
    }
    if tls is not None:
        env["NATS__TLS_CA_FILE"] = str(tls.ca_file)
    return env


def write_reader_files(state: Path, reader: NatsCredentials, tls: NatsTls | None) -> None:
    """The state dir's ``nats.user``, ``nats.password`` and (with TLS) ``nats.ca`` (0600),
    where ``fulcrum events tail`` finds how to log in."""
    files = {"nats.user": reader.user, "nats.password": reader.password}
    if tls is not None:
        files["nats.ca"] = str(tls.ca_file)
    for name, value in files.items():
        write_private_file(state / name, value.encode())


def _quoted(items: tuple[str, ...]) -> str:
    return "[" + ", ".join(f'"{item}"' for item in items) + "]"


def render_authorization(users: list[NatsCredentials]) -> str:
    """nats-server's ``authorization { users: [...] }`` with each user's ``permissions_of``."""
    lines = ["authorization {", "  users: ["]
    for credentials in users:
        granted = permissions_of(credentials.user)
        publish = (
            f"{{ allow: {_quoted(granted.publish)} }}"
            if granted.publish
            else f'{{ deny: ["{_EVERYTHING}"] }}'
        )
        lines.append(
            f'    {{ user: "{credentials.user}", password: "{credentials.password}", '
            f"permissions: {{ publish: {publish}, "
            f"subscribe: {{ allow: {_quoted(granted.subscribe)} }} }} }}"
        )
    lines += ["  ]", "}"]
    return "\n".join(lines) + "\n"


def compose_config(secrets_dir: Path, cluster: bool) -> str:
    """The nats-server configuration of the control-plane image's ``nats`` command: TLS with
    the certificate ``init`` issued (``nats-tls/``), on the routes too when ``cluster``, and
    the users whose passwords ``init`` made (``nats/``)."""
    tls = NatsTls.from_deployment_ca(secrets_dir / "ca", secrets_dir / "nats-tls", *COMPOSE_HOSTS)
    lines = tls.server_block()
    if cluster:
        lines += ["cluster {", *tls.route_block(), "}"]
    return "\n".join(lines) + "\n" + NatsUsers(secrets_dir / "nats").authorization()


# The names NATS servers answer to in deploy/compose.yaml.
COMPOSE_HOSTS: Final = ("nats", "nats-1", "nats-2", "nats-3")


def main(argv: list[str]) -> int:
    """``python -m deploy.local.nats_auth SECRETS_DIR [cluster]``: print ``compose_config``
    (``init`` runs it first, making the passwords and the certificate)."""
    if len(argv) not in (1, 2) or argv[1:] not in ([], ["cluster"]):
        print("usage: python -m deploy.local.nats_auth SECRETS_DIR [cluster]", file=sys.stderr)
        return 2
    sys.stdout.write(compose_config(Path(argv[0]), cluster=argv[1:] == ["cluster"]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
