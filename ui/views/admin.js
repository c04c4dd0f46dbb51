// Admin: users (create, disable, role), usage per user and day, the model policy (allowed
// models, default), backends with their breakers, a backup button, and a live view of the
// model thread read from `/metrics` every 2 s.

import { html, useEffect, useRef, useState } from "../vendor/preact-htm.js";
import { api, accessToken } from "../lib/session.js";
import { useLoad } from "../lib/load.js";

function Users({ me }) {
  const [users, reload] = useLoad("/api/admin/users");
  const [form, setForm] = useState({ username: "", password: "", role: "user" });
  const [error, setError] = useState(null);
  const run = (p) => p.then(reload, (e) => setError(e.message));
  async function create(e) {
    e.preventDefault();
    setError(null);
    try {
      await api("POST", "/api/admin/users", form);
      setForm({ username: "", password: "", role: "user" });
      reload();
    } catch (err) {
      setError(err.message);
    }
  }
  return html`<section aria-labelledby="users-h"><h2 id="users-h">Users</h2>
    <table class="list"><thead><tr><th>User</th><th>Role</th><th>Status</th><th>Requests</th><th>Tokens</th><th></th></tr></thead>
    <tbody>${(users ? users.data : []).map((u) => html`<tr data-testid="user-row">
      <td>${u.username}</td>
      <td><select aria-label=${`Role of ${u.username}`} value=${u.role} disabled=${u.id === me.id}
        onChange=${(e) => run(api("PATCH", `/api/admin/users/${u.id}`, { role: e.target.value }))}>
        <option value="user">user</option><option value="admin">admin</option></select></td>
      <td>${u.disabled ? html`<span class="badge err">disabled</span>` : "active"}</td>
      <td>${u.usage.requests}</td><td>${u.usage.total_tokens}</td>
      <td>${u.id !== me.id && html`<button type="button" onClick=${() => run(api("PATCH", `/api/admin/users/${u.id}`, { disabled: !u.disabled }))}>
        ${u.disabled ? "Enable" : "Disable"}</button>`}</td>
    </tr>`)}</tbody></table>
    <form class="row" onSubmit=${create}>
      <label class="sr-only" for="nu-name">Username</label>
      <input id="nu-name" placeholder="username" required value=${form.username} onInput=${(e) => setForm({ ...form, username: e.target.value })} />
      <label class="sr-only" for="nu-pass">Password</label>
      <input id="nu-pass" type="password" placeholder="password" autocomplete="new-password" required value=${form.password} onInput=${(e) => setForm({ ...form, password: e.target.value })} />
      <label class="sr-only" for="nu-role">Role</label>
      <select id="nu-role" value=${form.role} onChange=${(e) => setForm({ ...form, role: e.target.value })}>
        <option value="user">user</option><option value="admin">admin</option></select>
      <button type="submit">Create user</button>
    </form>
    ${error && html`<p class="error" role="alert">${error}</p>`}
  </section>`;
}

function Usage() {
  const [rows] = useLoad("/api/admin/usage?by=day&days=14");
  return html`<section aria-labelledby="usage-h"><h2 id="usage-h">Usage per user and day (14 days)</h2>
    <table class="list"><thead><tr><th>Day (UTC)</th><th>User</th><th>Requests</th><th>Prompt</th><th>Completion</th></tr></thead>
    <tbody>${(rows ? rows.data : []).map((r) => html`<tr><td>${r.day}</td><td>${r.username}</td>
      <td>${r.usage.requests}</td><td>${r.usage.prompt_tokens}</td><td>${r.usage.completion_tokens}</td></tr>`)}</tbody></table>
    ${rows && !rows.data.length && html`<p class="muted">No requests yet.</p>`}
  </section>`;
}

function Models() {
  const [policy, reload] = useLoad("/api/admin/models");
  const [catalog] = useLoad("/api/models");
  const [error, setError] = useState(null);
  if (!policy || !catalog) return html`<section><h2>Models</h2><p class="muted">Loading…</p></section>`;
  const ids = catalog.data.map((m) => m.id);
  const allowed = policy.allowed_models || ids;
  const save = (body) => api("PATCH", "/api/admin/models", body).then(reload, (e) => setError(e.message));
  const toggle = (id, on) => {
    const next = on ? [...new Set([...allowed, id])] : allowed.filter((x) => x !== id);
    save({ allowed_models: next.length === ids.length ? null : next });
  };
  return html`<section aria-labelledby="models-h"><h2 id="models-h">Models</h2>
    <label for="default-model">Default model</label>
    <select id="default-model" value=${policy.default_model || ""} onChange=${(e) => save({ default_model: e.target.value || null })}>
      <option value="">The loaded model</option>
      ${ids.map((id) => html`<option value=${id}>${id}</option>`)}
    </select>
    <p class="muted">Models users may choose (admins may use every model):</p>
    ${catalog.data.map((m) => html`<p><label class="inline"><input type="checkbox" checked=${allowed.includes(m.id)}
      onChange=${(e) => toggle(m.id, e.target.checked)} /> ${m.id} <span class="muted">(${m.backend}, ${m.status})</span></label></p>`)}
    ${error && html`<p class="error" role="alert">${error}</p>`}
  </section>`;
}

function Backends() {
  const [list, reload] = useLoad("/api/admin/backends");
  const [backup, setBackup] = useState(null);
  useEffect(() => {
    const t = setInterval(reload, 5000);
    return () => clearInterval(t);
  }, []);
  return html`<section aria-labelledby="backends-h"><h2 id="backends-h">Backends</h2>
    <table class="list"><thead><tr><th>Backend</th><th>Kind</th><th>Breaker</th><th>Models</th><th>Failover</th></tr></thead>
    <tbody>${(list ? list.data : []).map((b) => html`<tr data-testid="backend-row">
      <td>${b.name}</td><td>${b.local ? "local" : "remote"}</td>
      <td><span class=${`badge ${b.breaker === "closed" ? "" : "err"}`}>${b.breaker.replace("_", "-")}</span></td>
      <td>${b.models.join(", ")}</td><td>${b.failover.join(" → ") || "—"}</td></tr>`)}</tbody></table>
    <h2>Backup</h2>
    <button type="button" data-testid="backup" onClick=${() => api("POST", "/api/admin/backup").then(
      (r) => setBackup(`Saved ${r.path} (${(r.bytes / 1024).toFixed(0)} KiB)`), (e) => setBackup(`Failed: ${e.message}`))}>Back up the database now</button>
    ${backup && html` <span role="status">${backup}</span>`}
  </section>`;
}

/** Sum of every sample of `name` in Prometheus text. */
function metric(text, name) {
  let sum = null;
  for (const line of text.split("\n")) {
    if (!line.startsWith(name)) continue;
    const rest = line.slice(name.length);
    if (rest[0] !== " " && rest[0] !== "{") continue;
    const v = parseFloat(line.slice(line.lastIndexOf(" ") + 1));
    if (!Number.isNaN(v)) sum = (sum || 0) + v;
  }
  return sum;
}

function Live() {
  const [now, setNow] = useState(null);
  const [error, setError] = useState(null);
  const prev = useRef(null);
  useEffect(() => {
    let stopped = false;
    async function poll() {
      try {
        const r = await fetch("/metrics", { headers: { authorization: `Bearer ${accessToken()}` } });
        if (!r.ok) throw new Error(`/metrics answered ${r.status}`);
        const text = await r.text();
        const at = performance.now();
        const tokens = metric(text, "hearth_completion_tokens_total");
        const p = prev.current;
        const rate = p && tokens != null ? ((tokens - p.tokens) * 1000) / (at - p.at) : null;
        prev.current = { at, tokens };
        if (!stopped) {
          setNow({
            queue: metric(text, "hearth_queue_depth"),
            capacity: metric(text, "hearth_queue_capacity"),
            active: metric(text, "hearth_active_sequences"),
            maxActive: metric(text, "hearth_max_active_sequences"),
            rate,
          });
          setError(null);
        }
      } catch (e) {
        if (!stopped) setError(e.message);
      }
    }
    poll();
    const t = setInterval(poll, 2000);
    return () => {
      stopped = true;
      clearInterval(t);
    };
  }, []);
  const show = (v) => (v == null ? "—" : Math.round(v * 10) / 10);
  return html`<section aria-labelledby="live-h"><h2 id="live-h">Live</h2>
    ${now && html`<div class="stats" data-testid="live-metrics">
      <div><strong data-testid="queue-depth">${show(now.queue)}</strong>queued (of ${show(now.capacity)})</div>
      <div><strong data-testid="active-sequences">${show(now.active)}</strong>active sequences (of ${show(now.maxActive)})</div>
      <div><strong data-testid="tokens-per-second">${show(now.rate)}</strong>tokens/s generated</div>
    </div>`}
    ${error && html`<p class="error">${error}</p>`}
  </section>`;
}

export function AdminPage({ me }) {
  return html`<div class="page"><div class="inner">
    <h1>Admin</h1>
    <${Live} />
    <${Users} me=${me} />
    <${Usage} />
    <${Models} />
    <${Backends} />
  </div></div>`;
}
