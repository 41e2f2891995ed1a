// The API client of the dashboard: the Keystone login, the session in sessionStorage and
// requests carrying X-Auth-Token. Every error of the API becomes an ApiError whose message is
// the API's own (Octavia's faultstring, pecan's description or Keystone's error message).

const SESSION_KEY = "fulcrum.session";

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export function session() {
  const raw = sessionStorage.getItem(SESSION_KEY);
  return raw ? JSON.parse(raw) : null;
}

export function logout() {
  sessionStorage.removeItem(SESSION_KEY);
}

async function errorOf(response) {
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    message =
      body.faultstring ||
      body.description ||
      (body.error && body.error.message) ||
      (body.NeutronError && body.NeutronError.message) ||
      (body.errors && body.errors[0] && body.errors[0].detail) ||
      message;
  } catch {
    // not JSON: keep the status line
  }
  return new ApiError(response.status, message);
}

// Keystone v3 password authentication scoped to a project (Default domain). Stores the token,
// the project and the roles; returns the session.
export async function login(username, password, project) {
  const body = {
    auth: {
      identity: {
        methods: ["password"],
        password: { user: { name: username, domain: { name: "Default" }, password } },
      },
      scope: { project: { name: project, domain: { name: "Default" } } },
    },
  };
  const response = await fetch("/v3/auth/tokens", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  if (!response.ok) throw await errorOf(response);
  const token = (await response.json()).token;
  const current = {
    token: response.headers.get("X-Subject-Token"),
    user: token.user.name,
    project: token.project ? token.project.name : project,
    projectId: token.project ? token.project.id : null,
    roles: (token.roles || []).map((role) => role.name),
    expiresAt: token.expires_at,
  };
  sessionStorage.setItem(SESSION_KEY, JSON.stringify(current));
  return current;
}

export function isAdmin() {
  const current = session();
  return Boolean(current && current.roles.includes("admin"));
}

export function authHeaders() {
  const current = session();
  return current ? { "X-Auth-Token": current.token } : {};
}

// One API call; resolves to the parsed JSON body (null for an empty one), rejects with ApiError.
export async function call(method, path, body) {
  const headers = { ...authHeaders() };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!response.ok) throw await errorOf(response);
  const text = await response.text();
  return text ? JSON.parse(text) : null;
}
