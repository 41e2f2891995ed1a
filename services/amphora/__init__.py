"""The in-amphora agent: HAProxy's lifecycle behind a small mutual-TLS HTTPS API.

Transport: HTTPS, TLS >= 1.2. The agent presents a server certificate signed by the deployment
CA (SANs: the amphora id and its addresses) and requires a client certificate signed by the same
CA with extended key usage clientAuth; anyone else is refused in the handshake. Bodies are JSON
unless stated. Every error is `{"error": str, "details": str | null}` with a 4xx/5xx status
(400 invalid input or config, 404 unknown, 409 refused by HAProxy's state, 503 HAProxy's
socket unreachable, 500 rollback failed).

    GET    /healthz                        200 {"status": "ok"} while the agent serves
    GET    /readyz                         200 ready / 503 not ready, {"status": "ready"|
                                           "not ready", "service": "amphora", "checks":
                                           {"haproxy": {"ok", "detail"}}}: HAProxy runs
                                           and answers on stats.sock, or no config was
                                           pushed yet (the agent waits for one), or the one
                                           installed takes no connections
    GET    /v1/info                        200 AgentInfo {amphora_id, lb_id, api_version,
                                               haproxy_version, haproxy_running, config_sha256,
                                               stats_socket, certs_dir}
    PUT    /v1/haproxy/config              body: the complete haproxy.cfg (text/plain)
                                           202 {"sha256"} (+ ETag) once HAProxy serves it;
                                           400 {"error", "details": haproxy's output} when
                                           HAProxy refuses it at start or reload (parse or
                                           bind errors); the previous config keeps serving and
                                           is put back. Same text = no-op. A config with no
                                           `frontend` or `listen` section is checked
                                           (`haproxy -c`) and installed, HAProxy stopped:
                                           none runs until a config takes connections.
                                           `?reload=false`: validate (`haproxy -c`) and store
                                           it for the next reload only (runtime API changes
                                           already applied). `check_later=true`: a file
                                           stored with `reload=false` is answered before
                                           `haproxy -c` and installed once it passed;
                                           whatever needs it next waits for the check, and a
                                           refusal answers the next push of a file that loads
                                           nothing with 400 (push with a reload then). A file
                                           without a proxy while HAProxy does not run is
                                           installed unchecked: nothing loads it. Flags
                                           other than true/false: 400.
    GET    /v1/haproxy/config              200 text/plain (+ ETag "<sha256>"), 404 if none
    DELETE /v1/haproxy                     204; stops HAProxy and forgets its config
    GET    /v1/haproxy/stats               200 [ {pxname, svname, scur, status, ...}, ... ]
                                           (`show stat`; integers as numbers, empty as null;
                                           [] while the installed config runs no HAProxy)
    POST   /v1/haproxy/servers/{backend}/{server}
                                           body ServerChange {weight?: 0..256,
                                               state?: "ready"|"drain"|"maint",
                                               add?: {address, port, options: [token, ...]},
                                               delete?: true}
                                           200 {backend, server, commands: [...]}
    POST   /v1/haproxy/servers             body RuntimeChanges {changes: [ServerChange with
                                               backend, server], config}: each change made
                                               in order (a refusal stops there: 404/409,
                                               the earlier ones stay made), then config
                                               stored as PUT /v1/haproxy/config with
                                               reload=false&check_later=true stores it
                                           200 {changed: [{backend, server, commands}],
                                               sha256}
    PUT    /v1/certificates/{name}.pem     body: PEM bundle; 200 {name, sha256, path} (0600)
    GET    /v1/certificates/{name}.pem     200 {name, sha256, path}, 404 if absent
    DELETE /v1/certificates/{name}.pem     204 (absent is fine)
    PUT    /v1/server-certificate          body {cert_pem, key_pem}: CA-signed, matching key;
                                           200 {serial, not_after}; new connections use it

  VIP and VRRP (amphorae started with a VIP interface; others answer GET with
  `interface: null` and the rest with 409):
    GET    /v1/vrrp                        200 VrrpStatus {interface, running, state:
                                               MASTER|BACKUP|FAULT|INIT|STOPPED,
                                               config_sha256, check_script, notify_script,
                                               notify_fifo,
                                               addresses: VIPs on the interface now}
    PUT    /v1/vrrp/config                 body {config: keepalived.conf, virtual_addresses}
                                           202 VrrpStatus once keepalived reported a state
                                           (bounded wait); 400 with keepalived's output when
                                           `keepalived -t` fails. Running: reload (SIGHUP),
                                           the VIP stays; else the VIPs are removed from the
                                           interface, then keepalived starts. Same text = no-op.
    DELETE /v1/vrrp                        204; stops keepalived, removes its VIPs and config
    PUT    /v1/vip                         body {address}: hold it (/32) and send gratuitous
                                           ARP (SINGLE); 200 VrrpStatus; 409 while keepalived
                                           runs
    DELETE /v1/vip/{address}               204 (absent is fine)

  UDP listeners (nftables table `inet fulcrum_udp` in the amphora's namespace; amphorae
  without a namespace of their own refuse a config with listeners with 409):
    PUT    /v1/udp/config                  body UdpConfig {listeners: [{id, pool_id, addresses,
                                               port, algorithm, persistence_timeout,
                                               persistence_granularity, members, monitor}]}
                                           202 {"sha256"}; 400 with nft's output if refused.
                                           Members' maps are updated live; the agent runs the
                                           monitors (UDP-CONNECT, TCP, HTTP, PING). Same = no-op.
    GET    /v1/udp                         200 UdpStatus {config_sha256, listeners: [{id,
                                               pool_id, members: {id: UP|DOWN|DRAIN|MAINT|
                                               "no check"}}]}
    DELETE /v1/udp                         204; removes the table, stops the monitors

keepalived.conf contract (as for HAProxy's stats socket): its `vrrp_script` must run
`check_script`, its `vrrp_notify_fifo_script` must be `notify_script` and its `vrrp_notify_fifo`
`notify_fifo` (paths from GET /v1/vrrp).

Stats-socket contract: the agent never edits a pushed config. Instead, every config must declare
`stats socket <stats_socket from /v1/info> mode 600 level admin` in `global` (a config without
it is refused with 400), and should reference certificates by the `path` the upload returned
(inside `certs_dir`). Runtime changes last until the next reload, so the control plane renders
the same state into the next config. For reloads that drop no request, configs should add
`expose-fd listeners` to that line (without it a reload's process binds listening sockets of
its own, and the connections waiting in the retiring process's accept queue are reset) and set
`option idle-close-on-response` and `hard-stop-after`.
"""
