"""The consumer guide of ``docs/events.md``: how to subscribe, what delivery and order promise,
how long events are kept and how their schemas evolve. Rendered by ``reference.py``."""

from __future__ import annotations

from libs.common import subjects
from libs.common.events.visibility import FEED_PATH, INTERNAL_TYPES, TENANT_CATEGORIES
from libs.common.settings import NatsSettings

EXAMPLE = "docs/examples/subscribe_feed.py"


def _names(values: frozenset[str]) -> str:
    return ", ".join(f"`{v}`" for v in sorted(values))


def consumer_guide() -> list[str]:
    """The guide's Markdown lines."""
    nats = NatsSettings()
    return f"""# Consumer guide

Every change in Fulcrum is an event appended to the event store (Postgres, insert-only) and
then published on JetStream. There are two ways to follow them:

- **The live event feed** (`GET {FEED_PATH}` on the API, Server-Sent Events): for tenants,
  dashboards and scripts outside the deployment. Authenticated like every API call; a tenant
  sees only its own project's tenant events (below); resumable from any position.
- **NATS JetStream** (stream `{subjects.STREAM_NAME}`): for services inside the deployment.
  It carries every event of every project, internal ones included.

Both carry the same envelope (the body described under *Event reference*) with the same
`event_id`, so a consumer may switch from one to the other.

## Delivery: at least once

An event is published only after its append has committed, and may be delivered more than
once: the relay republishes an event when it crashed between publishing and recording the
publication (JetStream absorbs a republished `Nats-Msg-Id` = `event_id` only within
{nats.duplicate_window:g} s), a JetStream consumer gets a message again when it did not
acknowledge it within its ack wait, and a feed client that resumes from an older position
gets the events after it again. **Deduplicate by `event_id`** (keep the ids you handled, or
per stream the highest `stream_version` you applied), and make handlers idempotent.

## Order

- `stream_version` is 1-based and has no gaps within a stream (`stream_id`: one load
  balancer with its children, one amphora, one security group ...). The live feed sends a
  stream's events in `stream_version` order; JetStream receives them in that order too, but
  a redelivered message may arrive after later events of its stream. A version higher than
  the next one you expect means you missed events; a lower or equal one that you have it.
- `global_position` orders all events of the store. Positions are unique and increase but
  may have holes (an append that rolled back). The live feed sends events in
  `global_position` order and never skips one that commits late: it waits until no open
  transaction can still commit a lower position.
- JetStream keeps each stream's order; events of different streams may arrive in any order
  relative to each other.

## Retention

- The event store keeps every event forever: the live feed can resume from any position
  (`after=0` replays all the history the caller may see).
- JetStream keeps events for {nats.max_age_days:g} days (the `nats.max_age_days` setting;
  limits retention). A consumer away for longer catches up from the live feed (or, inside
  the deployment, from the store) by `global_position`.

## Schema versions

`event_type` never changes meaning; `schema_version` counts incompatible changes of one
type's `data` (the versions below are the current ones). Fields may be added to a type
without a new version, so **ignore fields you do not know**. Stored events are never
rewritten: the services upcast older versions when they read them. The live feed sends
every event upcast to the current version documented here (during an upgrade, an event of a
type or version newer than the API replica serving the feed is sent as stored); JetStream
carries each event in the version it was published with, so a JetStream consumer handles
every version up to the documented one (or skips types and versions it does not know, and
logs them).

## The live event feed (Server-Sent Events)

`GET {FEED_PATH}` with `X-Auth-Token: <Keystone token>` answers
`Content-Type: text/event-stream`. Each event is

```
id: <global_position>
event: <event_type>
data: <the envelope as JSON, on one line>

```

and a comment line `: keepalive` comes whenever nothing else was sent for 15 s (the API's
`feed.keepalive_seconds` setting, at most 15).

- **Where it starts**: after `Last-Event-ID: <position>` (the header an SSE client sends
  when it reconnects) or `?after=<position>`; the header wins when both are given. Without
  either the feed starts after the newest event committed when it opens. `after=0` starts
  at the first event. To show live state, open the feed first, then read the resources
  through the API, and apply each event whose `stream_version` is newer than what you show.
- **Who sees what**: an admin sees every event, and may narrow to one project with
  `?project_id=<id>`. A global observer (`load-balancer_global_observer`) sees the tenant
  events of every project (or of `project_id`). Any other caller with a reader or member role
  sees the tenant events whose `metadata.project_id` is its own project (`project_id` may
  name only that project). Tenant events are the types of the categories
  {_names(TENANT_CATEGORIES)} except {_names(INTERNAL_TYPES)}; each type below says whether
  it is one. Events of a load balancer or a security group always carry the owning project
  in `metadata.project_id`, whoever caused them (an admin, the provisioner, the health
  service). Amphorae, flavors, availability zones, quotas, housekeeping and secrets never
  reach a tenant.
- **Errors**, in Octavia's fault format (`faultcode`, `faultstring`, `debuginfo`): 400 for a
  position that is not an integer from 0 to 2^63-1, an empty `project_id`, an unknown or
  repeated query argument; 401 (Keystone's body) without a valid token; 403 for a caller
  without a role or asking for another project; 406 for an `Accept` that admits neither
  `text/event-stream` nor `application/json`; 429 when the caller's project already holds
  `feed.max_per_project` open feeds (default 5).
- **Reconnecting**: the feed ends when the API stops or loses its database; reconnect with
  the last `id` you received as `Last-Event-ID` and nothing is lost or repeated. A browser's
  `EventSource` cannot send `X-Auth-Token`, so browsers read the feed with `fetch()` and a
  stream reader.

`curl -N --cacert .state/ca/ca.pem -H "X-Auth-Token: $OS_TOKEN" "https://127.0.0.1:9876{FEED_PATH}?after=0"`
shows it (`make up` serves HTTPS with a certificate of its deployment CA, `.state/ca/ca.pem`);
`{EXAMPLE}` is a complete subscriber (standard library only) that resumes with
`Last-Event-ID` and drops duplicates by `event_id`; a test runs it against a real API.

## NATS JetStream

Events are published on `{subjects.PREFIX}.<category>.<aggregate id>.<EventType>`, so a
consumer filters with subject wildcards: `{subjects.PREFIX}.loadbalancer.>` (every load
balancer event), `{subjects.PREFIX}.loadbalancer.<lb id>.>` (one load balancer),
`{subjects.PREFIX}.*.*.AmphoraFailed` (one type). Use a durable consumer with explicit
acknowledgement for a service that must not miss events (acknowledge after handling;
`Nats-Msg-Id` is the `event_id`), or an ordered ephemeral consumer to watch, as
`fulcrum events tail [--subject ...] [--from-start | --from-seq N | --last N]` does. The
stream sequence a JetStream message carries is not `global_position`: resume a JetStream
consumer by stream sequence, the live feed by position.
""".splitlines()
