// The dashboard page: login, the project's load balancers kept live by the event feed, one
// load balancer's status tree and traffic (the LB, each listener and each member), the create
// and delete forms (a delete asks for confirmation first), a pool's health monitor form, and
// (for admins) the amphorae with failover. Every API error is shown in the #error banner.

import { call, isAdmin, login, logout, session } from "./api.js";
import { followEvents } from "./feed.js";

const LBAAS = "/v2/lbaas";
const STATS_INTERVAL_MS = 1000;
const REFRESH_DELAY_MS = 50;
const EVENTS_SHOWN = 20;

const $ = (id) => document.getElementById(id);
const lbs = new Map();
const pending = new Map();
let selectedId = null;
let feed = null;
let statsTimer = null;
// The selected load balancer's listeners as [id, name] and members as [pool id, id, name],
// from its last status tree.
let listenerIds = [];
let memberIds = [];

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "onclick") node.addEventListener("click", value);
    else node.setAttribute(name, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : String(child ?? ""));
  return node;
}

function statusCell(field, value) {
  return el("td", { "data-field": field, class: `status status-${value}` }, value);
}

function showError(error) {
  const banner = $("error");
  banner.textContent = error instanceof Error ? error.message : String(error);
  banner.hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

// Runs an action; its failure goes to the banner (a user's action first clears the last
// one, background work does not). A token the API no longer accepts (401) ends the session.
async function attempt(action, { background = false } = {}) {
  if (!background) clearError();
  try {
    await action();
  } catch (error) {
    if (error.status === 401 && session()) {
      signOut();
      showError("The session has expired: log in again.");
    } else {
      showError(error);
    }
  }
}

// A Delete button: asks "Delete <what>?" and sends ``DELETE path`` only when confirmed.
function deleteButton(what, path) {
  return el(
    "button",
    {
      type: "button",
      class: "delete",
      onclick: () => {
        if (window.confirm(`Delete ${what}?`)) attempt(() => call("DELETE", path));
      },
    },
    "Delete",
  );
}

// --- load balancers ----------------------------------------------------------------------

function renderLb(lb) {
  const previous = lbs.get(lb.id);
  lbs.set(lb.id, lb);
  let row = document.querySelector(`tr[data-lb-id="${lb.id}"]`);
  const fresh = !row;
  if (fresh) {
    row = el("tr", { "data-lb-id": lb.id });
    $("lb-rows").append(row);
  }
  if (fresh || !previous || previous.provisioning_status !== lb.provisioning_status) {
    row.dataset.provisioningSince = String(Date.now());
  }
  row.dataset.provisioningStatus = lb.provisioning_status;
  row.replaceChildren(
    el("td", { "data-field": "name" }, lb.name || lb.id),
    el("td", { "data-field": "vip_address" }, lb.vip_address || ""),
    statusCell("provisioning_status", lb.provisioning_status),
    statusCell("operating_status", lb.operating_status),
    el(
      "td",
      {},
      el("button", { type: "button", class: "open", onclick: () => select(lb.id) }, "Open"),
      deleteButton(
        `load balancer ${lb.name || lb.id} and everything in it`,
        `${LBAAS}/loadbalancers/${lb.id}?cascade=true`,
      ),
    ),
  );
}

function removeLb(id) {
  lbs.delete(id);
  document.querySelector(`tr[data-lb-id="${id}"]`)?.remove();
  if (selectedId === id) select(null);
}

async function loadLbs() {
  const body = await call("GET", `${LBAAS}/loadbalancers`);
  const seen = new Set(body.loadbalancers.map((lb) => lb.id));
  for (const id of [...lbs.keys()]) if (!seen.has(id)) removeLb(id);
  for (const lb of body.loadbalancers) renderLb(lb);
}

async function refreshLb(id) {
  try {
    const body = await call("GET", `${LBAAS}/loadbalancers/${id}`);
    renderLb(body.loadbalancer);
    if (id === selectedId) await refreshTree();
  } catch (error) {
    if (error.status === 404) removeLb(id);
    else showError(error);
  }
}

// Coalesces the refreshes that a burst of events asks for.
function scheduleRefresh(key, refresh) {
  if (pending.has(key)) return;
  pending.set(
    key,
    setTimeout(() => {
      pending.delete(key);
      refresh();
    }, REFRESH_DELAY_MS),
  );
}

// --- one load balancer -------------------------------------------------------------------

function treeItem(kind, node, children = []) {
  const label = `${kind} ${node.name || node.id}`;
  const item = el(
    "li",
    {
      "data-kind": kind,
      "data-id": node.id,
      "data-provisioning-status": node.provisioning_status ?? "",
      "data-operating-status": node.operating_status ?? "",
    },
    el("span", { class: "label" }, label),
    " ",
    el("span", { class: `status status-${node.provisioning_status}` }, node.provisioning_status),
    " ",
    el("span", { class: `status status-${node.operating_status}`, "data-field": "operating_status" }, node.operating_status),
  );
  const remove = { listener: "listeners", pool: "pools", healthmonitor: "healthmonitors" }[kind];
  if (remove) {
    item.append(" ", deleteButton(label, `${LBAAS}/${remove}/${node.id}`));
  }
  if (children.length) item.append(el("ul", {}, ...children));
  return item;
}

function options(select, items) {
  const chosen = select.value;
  select.replaceChildren(...items.map(([value, text]) => el("option", { value }, text)));
  if (items.some(([value]) => value === chosen)) select.value = chosen;
}

function memberRow(pool, member) {
  return el(
    "tr",
    { "data-member-id": member.id },
    el("td", {}, pool.name || pool.id),
    el("td", {}, member.name || member.id),
    el("td", {}, `${member.address}:${member.protocol_port}`),
    statusCell("operating_status", member.operating_status),
    el(
      "td",
      {},
      deleteButton(
        `member ${member.name || member.id}`,
        `${LBAAS}/pools/${pool.id}/members/${member.id}`,
      ),
    ),
  );
}

async function refreshTree() {
  const id = selectedId;
  const body = await call("GET", `${LBAAS}/loadbalancers/${id}/status`);
  if (id !== selectedId) return;
  const root = body.statuses.loadbalancer;
  const pools = new Map();
  const listeners = (root.listeners || []).map((listener) => {
    const children = (listener.pools || []).map((pool) => {
      pools.set(pool.id, pool);
      const below = [];
      if (pool.health_monitor) below.push(treeItem("healthmonitor", pool.health_monitor));
      for (const member of pool.members || []) below.push(treeItem("member", member));
      return treeItem("pool", pool, below);
    });
    return treeItem("listener", listener, children);
  });
  for (const pool of root.pools || []) pools.set(pool.id, pool);
  $("tree").replaceChildren(treeItem("loadbalancer", root, listeners));
  $("detail-name").textContent = root.name || root.id;
  options(
    $("pool-form").elements.listener_id,
    (root.listeners || []).map((l) => [l.id, `${l.name || l.id}`]),
  );
  const poolChoices = [...pools.values()].map((p) => [p.id, `${p.name || p.id}`]);
  options($("member-form").elements.pool_id, poolChoices);
  options($("healthmonitor-form").elements.pool_id, poolChoices);
  const members = [];
  const ids = [];
  for (const pool of pools.values()) {
    for (const member of pool.members || []) {
      members.push(memberRow(pool, member));
      ids.push([pool.id, member.id, member.name || member.address || member.id]);
    }
  }
  $("member-rows").replaceChildren(...members);
  listenerIds = (root.listeners || []).map((l) => [l.id, l.name || l.id]);
  memberIds = ids;
}

function trafficRow(key, label, stats) {
  return el(
    "tr",
    { "data-stats": key },
    el("th", {}, label),
    el("td", { "data-field": "active_connections" }, stats.active_connections),
    el("td", { "data-field": "total_connections" }, stats.total_connections),
    el("td", { "data-field": "bytes_in" }, stats.bytes_in),
    el("td", { "data-field": "bytes_out" }, stats.bytes_out),
    el("td", { "data-field": "request_errors" }, stats.request_errors),
  );
}

async function refreshStats() {
  const id = selectedId;
  if (!id) return;
  const lb = await call("GET", `${LBAAS}/loadbalancers/${id}/stats`);
  const rows = [trafficRow("loadbalancer", "load balancer", lb.stats)];
  for (const [listenerId, name] of listenerIds) {
    const listener = await call("GET", `${LBAAS}/listeners/${listenerId}/stats`);
    rows.push(trafficRow(`listener-${listenerId}`, `listener ${name}`, listener.stats));
  }
  for (const [poolId, memberId, name] of memberIds) {
    const member = await call("GET", `${LBAAS}/pools/${poolId}/members/${memberId}/stats`);
    rows.push(trafficRow(`member-${memberId}`, `member ${name}`, member.stats));
  }
  if (id === selectedId) $("traffic-rows").replaceChildren(...rows);
}

function startStats() {
  clearTimeout(statsTimer);
  const tick = async () => {
    try {
      await refreshStats();
    } catch (error) {
      if (error.status !== 404) showError(error);
    }
    if (selectedId) statsTimer = setTimeout(tick, STATS_INTERVAL_MS);
  };
  tick();
}

function select(id) {
  selectedId = id;
  listenerIds = [];
  memberIds = [];
  $("detail").hidden = id === null;
  for (const row of document.querySelectorAll("tr[data-lb-id]")) {
    row.classList.toggle("selected", row.dataset.lbId === id);
  }
  if (id === null) {
    clearTimeout(statsTimer);
    return;
  }
  refreshLb(id);
  startStats();
}

// --- amphorae (admins) -------------------------------------------------------------------

// "name (id)" of a load balancer the page lists, else its id ("" for none).
function lbLabel(id) {
  const name = id && lbs.get(id)?.name;
  return name ? `${name} (${id})` : id || "";
}

async function refreshAmphorae() {
  const body = await call("GET", "/v2/octavia/amphorae");
  $("amphora-rows").replaceChildren(
    ...body.amphorae.map((amphora) =>
      el(
        "tr",
        { "data-amphora-id": amphora.id },
        el("td", {}, amphora.id),
        el("td", {}, lbLabel(amphora.loadbalancer_id)),
        el("td", {}, amphora.role || ""),
        statusCell("status", amphora.status),
        el(
          "td",
          {},
          el(
            "button",
            {
              type: "button",
              class: "failover",
              onclick: () =>
                attempt(() => call("PUT", `/v2/octavia/amphorae/${amphora.id}/failover`)),
            },
            "Failover",
          ),
        ),
      ),
    ),
  );
}

// --- the event feed ----------------------------------------------------------------------

function onEvent(envelope) {
  const item = el(
    "li",
    {},
    `${envelope.occurred_at || ""} ${envelope.event_type} ${envelope.stream_id}`,
  );
  $("events").prepend(item);
  $("feed-state").dataset.lastEventId = String(envelope.global_position);
  while ($("events").children.length > EVENTS_SHOWN) $("events").lastElementChild.remove();
  const [category, ...rest] = (envelope.stream_id || "").split("-");
  const id = rest.join("-");
  if (category === "loadbalancer" && id) {
    scheduleRefresh(`lb-${id}`, () => refreshLb(id));
  } else if (category === "amphora" && isAdmin()) {
    scheduleRefresh("amphorae", () => refreshAmphorae().catch(showError));
  }
}

function onFeedState(state) {
  const badge = $("feed-state");
  badge.dataset.state = state;
  badge.textContent = `feed: ${state}`;
  if (state === "unauthorized") {
    signOut();
    showError("The session has expired: log in again.");
  }
}

// Loads everything shown; runs at login and on each (re)connection of the feed, so that what
// it missed while down is caught up.
async function reload() {
  await attempt(loadLbs, { background: true });
  if (selectedId) await attempt(refreshTree, { background: true });
  if (isAdmin()) await attempt(refreshAmphorae, { background: true });
}

// --- forms -------------------------------------------------------------------------------

function values(form) {
  return Object.fromEntries(
    [...new FormData(form).entries()].filter(([, value]) => value !== ""),
  );
}

function onSubmit(id, action) {
  $(id).addEventListener("submit", (event) => {
    event.preventDefault();
    attempt(() => action(event.target));
  });
}

function bindForms() {
  onSubmit("login-form", async (form) => {
    const { username, password, project } = values(form);
    await login(username, password, project);
    form.reset();
    await start();
  });
  onSubmit("lb-form", async (form) => {
    const body = await call("POST", `${LBAAS}/loadbalancers`, { loadbalancer: values(form) });
    renderLb(body.loadbalancer);
    form.elements.name.value = "";
  });
  onSubmit("listener-form", async (form) => {
    const fields = values(form);
    fields.protocol_port = Number(fields.protocol_port);
    fields.loadbalancer_id = selectedId;
    await call("POST", `${LBAAS}/listeners`, { listener: fields });
  });
  onSubmit("pool-form", async (form) => {
    const fields = values(form);
    if (!fields.listener_id) fields.loadbalancer_id = selectedId;
    await call("POST", `${LBAAS}/pools`, { pool: fields });
  });
  onSubmit("member-form", async (form) => {
    const { pool_id: poolId, ...fields } = values(form);
    fields.protocol_port = Number(fields.protocol_port);
    await call("POST", `${LBAAS}/pools/${poolId}/members`, { member: fields });
  });
  onSubmit("healthmonitor-form", async (form) => {
    const fields = values(form);
    for (const name of ["delay", "timeout", "max_retries"]) fields[name] = Number(fields[name]);
    await call("POST", `${LBAAS}/healthmonitors`, { healthmonitor: fields });
  });
  $("logout").addEventListener("click", signOut);
}

// --- session -----------------------------------------------------------------------------

function signOut() {
  feed?.stop();
  feed = null;
  $("feed-state").dataset.state = "off";
  $("feed-state").textContent = "feed: off";
  select(null);
  logout();
  lbs.clear();
  $("lb-rows").replaceChildren();
  $("main-view").hidden = true;
  $("amphorae").hidden = true;
  $("logout").hidden = true;
  $("who").textContent = "";
  $("login-view").hidden = false;
}

async function start() {
  const current = session();
  if (!current) return;
  $("login-view").hidden = true;
  $("main-view").hidden = false;
  $("logout").hidden = false;
  $("who").textContent = `${current.user} @ ${current.project}`;
  $("amphorae").hidden = !isAdmin();
  const subnets = await call("GET", "/v2.0/subnets");
  options(
    $("lb-form").elements.vip_subnet_id,
    subnets.subnets.map((subnet) => [subnet.id, `${subnet.name || subnet.id} ${subnet.cidr}`]),
  );
  await reload();
  feed = followEvents({ onEvent, onState: onFeedState, onOpen: reload });
}

bindForms();
attempt(start);
