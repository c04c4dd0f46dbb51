// Settings: preferences (default model, sampling, system prompt, memory), memories, API keys
// (a new key is shown once, with a copy button), password change and signing out everywhere.

import { html, useEffect, useState } from "../vendor/preact-htm.js";
import { api, logout } from "../lib/session.js";
import { useLoad } from "../lib/load.js";

function num(v, int) {
  const t = String(v).trim();
  if (!t) return null;
  return int ? parseInt(t, 10) : parseFloat(t);
}

function Preferences() {
  const [prefs] = useLoad("/api/me/preferences");
  const [models] = useLoad("/api/models");
  const [form, setForm] = useState(null);
  const [msg, setMsg] = useState(null);
  useEffect(() => {
    if (prefs) {
      setForm({
        model: prefs.model || "",
        temperature: prefs.temperature ?? "",
        top_p: prefs.top_p ?? "",
        max_tokens: prefs.max_tokens ?? "",
        system_prompt: prefs.system_prompt || "",
        memory: prefs.memory,
      });
    }
  }, [prefs]);
  if (!form) return html`<section><h2>Preferences</h2><p class="muted">Loading…</p></section>`;
  const set = (k) => (e) => setForm({ ...form, [k]: e.target.type === "checkbox" ? e.target.checked : e.target.value });
  async function save(e) {
    e.preventDefault();
    setMsg(null);
    try {
      await api("PUT", "/api/me/preferences", {
        model: form.model || null,
        temperature: num(form.temperature),
        top_p: num(form.top_p),
        max_tokens: num(form.max_tokens, true),
        system_prompt: form.system_prompt.trim() ? form.system_prompt : null,
        memory: form.memory,
      });
      setMsg({ ok: true, text: "Saved." });
    } catch (err) {
      setMsg({ ok: false, text: err.message });
    }
  }
  return html`<section aria-labelledby="prefs-h"><h2 id="prefs-h">Preferences</h2>
    <form onSubmit=${save} data-testid="preferences-form">
      <label for="p-model">Default model</label>
      <select id="p-model" value=${form.model} onChange=${set("model")}>
        <option value="">The server's default</option>
        ${(models ? models.data : []).map((m) => html`<option value=${m.id}>${m.id}</option>`)}
      </select>
      <div class="row">
        <div><label for="p-temp">Temperature</label><input id="p-temp" type="number" step="0.1" min="0" max="2" value=${form.temperature} onInput=${set("temperature")} /></div>
        <div><label for="p-top">Top p</label><input id="p-top" type="number" step="0.05" min="0" max="1" value=${form.top_p} onInput=${set("top_p")} /></div>
        <div><label for="p-max">Max tokens</label><input id="p-max" type="number" step="1" min="1" value=${form.max_tokens} onInput=${set("max_tokens")} /></div>
      </div>
      <label for="p-system">System prompt</label>
      <textarea id="p-system" value=${form.system_prompt} onInput=${set("system_prompt")}></textarea>
      <p><label class="inline"><input type="checkbox" checked=${form.memory} onChange=${set("memory")} /> Add my memories to conversations</label></p>
      <button class="primary" type="submit">Save preferences</button>
      ${msg && html` <span class=${msg.ok ? "muted" : "error"} role="status">${msg.text}</span>`}
    </form>
  </section>`;
}

function Memories() {
  const [list, reload] = useLoad("/api/me/memories");
  const [text, setText] = useState("");
  const [error, setError] = useState(null);
  async function add(e) {
    e.preventDefault();
    setError(null);
    try {
      await api("POST", "/api/me/memories", { content: text });
      setText("");
      reload();
    } catch (err) {
      setError(err.message);
    }
  }
  return html`<section aria-labelledby="mem-h"><h2 id="mem-h">Memories</h2>
    <p class="muted">Short notes added to every conversation that uses memories.</p>
    <ul>${(list ? list.data : []).map((m) => html`<li>${m.content}
      <button class="icon danger" type="button" aria-label="Delete memory"
        onClick=${() => api("DELETE", `/api/me/memories/${m.id}`).then(reload, (e) => setError(e.message))}>✕</button></li>`)}</ul>
    <form class="row" onSubmit=${add}>
      <label class="sr-only" for="mem-new">New memory</label>
      <input id="mem-new" class="grow" maxlength="500" placeholder="e.g. I prefer metric units" value=${text} onInput=${(e) => setText(e.target.value)} />
      <button type="submit" disabled=${!text.trim()}>Add</button>
    </form>
    ${error && html`<p class="error" role="alert">${error}</p>`}
  </section>`;
}

function ApiKeys() {
  const [keys, reload] = useLoad("/api/keys");
  const [name, setName] = useState("");
  const [created, setCreated] = useState(null);
  const [error, setError] = useState(null);
  const [copied, setCopied] = useState(false);
  async function create(e) {
    e.preventDefault();
    setError(null);
    try {
      setCreated(await api("POST", "/api/keys", { name }));
      setCopied(false);
      setName("");
      reload();
    } catch (err) {
      setError(err.message);
    }
  }
  const when = (t) => (t ? new Date(t * 1000).toLocaleString() : "never");
  return html`<section aria-labelledby="keys-h"><h2 id="keys-h">API keys</h2>
    <p class="muted">For OpenAI clients: <code>base_url="${location.origin}/v1"</code>, <code>api_key</code> = the key.</p>
    ${created && html`<div class="notice" data-testid="new-key">
      <p>Your new key “${created.name}”. It is shown only now:</p>
      <p class="secret" data-testid="new-key-value">${created.key}</p>
      <button type="button" onClick=${() => navigator.clipboard.writeText(created.key).then(() => setCopied(true))}>${copied ? "Copied" : "Copy"}</button>
      <button type="button" onClick=${() => setCreated(null)}>Done</button>
    </div>`}
    <table class="list"><thead><tr><th>Name</th><th>Prefix</th><th>Created</th><th>Last used</th><th>Requests</th><th></th></tr></thead>
      <tbody>${(keys ? keys.data : []).map((k) => html`<tr data-testid="api-key-row">
        <td>${k.name}</td><td><code>${k.prefix}…</code></td><td>${when(k.created_at)}</td><td>${when(k.last_used_at)}</td>
        <td>${k.usage.requests}</td>
        <td><button type="button" class="danger" onClick=${() => confirm(`Revoke “${k.name}”?`) && api("DELETE", `/api/keys/${k.id}`).then(reload, (e) => setError(e.message))}>Revoke</button></td>
      </tr>`)}</tbody></table>
    <form class="row" onSubmit=${create}>
      <label class="sr-only" for="key-name">Key name</label>
      <input id="key-name" class="grow" maxlength="64" placeholder="Key name, e.g. laptop" value=${name} onInput=${(e) => setName(e.target.value)} />
      <button type="submit" data-testid="create-key" disabled=${!name.trim()}>Create key</button>
    </form>
    ${error && html`<p class="error" role="alert">${error}</p>`}
  </section>`;
}

function Password() {
  const [current, setCurrent] = useState("");
  const [next, setNext] = useState("");
  const [keep, setKeep] = useState(false);
  const [error, setError] = useState(null);
  async function change(e) {
    e.preventDefault();
    setError(null);
    try {
      await api("POST", "/api/me/password", { current_password: current, new_password: next, keep_api_keys: keep });
      // Every session ended with the change, this one too.
      await logout(false).catch(() => {});
    } catch (err) {
      setError(err.message);
    }
  }
  return html`<section aria-labelledby="pw-h"><h2 id="pw-h">Password and sessions</h2>
    <form onSubmit=${change}>
      <label for="pw-cur">Current password</label>
      <input id="pw-cur" type="password" autocomplete="current-password" required value=${current} onInput=${(e) => setCurrent(e.target.value)} />
      <label for="pw-new">New password</label>
      <input id="pw-new" type="password" autocomplete="new-password" required value=${next} onInput=${(e) => setNext(e.target.value)} />
      <p><label class="inline"><input type="checkbox" checked=${keep} onChange=${(e) => setKeep(e.target.checked)} /> Keep my API keys working</label></p>
      <p class="muted">Changing the password signs you out everywhere${keep ? "" : " and deletes your API keys"}.</p>
      <button type="submit">Change password</button>
    </form>
    ${error && html`<p class="error" role="alert">${error}</p>`}
    <hr />
    <button type="button" class="danger" data-testid="sign-out-everywhere" onClick=${() => logout(true)}>Sign out everywhere</button>
  </section>`;
}

export function SettingsPage({ me }) {
  return html`<div class="page"><div class="inner">
    <h1>Settings <span class="muted">— ${me.username} (${me.role})</span></h1>
    <${Preferences} />
    <${Memories} />
    <${ApiKeys} />
    <${Password} />
  </div></div>`;
}

