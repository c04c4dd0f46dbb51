// A conversation's settings: system prompt, temperature, top_p, max tokens and whether its
// turns carry the user's memories. Empty fields mean "the preference, else the server's".

import { html, useState } from "../vendor/preact-htm.js";

const NUMBERS = [
  ["temperature", "Temperature", "0 – 2", 0.1],
  ["top_p", "Top p", "0 – 1", 0.05],
  ["max_tokens", "Max tokens", "1 – …", 1],
];

export function SettingsDrawer({ conv, prefs, onSave, onClose }) {
  const params = (conv && conv.params) || {};
  const [system, setSystem] = useState((conv && conv.system_prompt) || "");
  const [values, setValues] = useState(
    Object.fromEntries(NUMBERS.map(([k]) => [k, params[k] != null ? String(params[k]) : ""])),
  );
  const [memory, setMemory] = useState(params.memory != null ? params.memory : prefs ? prefs.memory : true);
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);

  async function save(e) {
    e.preventDefault();
    const next = { ...params };
    for (const [k] of NUMBERS) {
      const v = values[k].trim();
      if (v === "") delete next[k];
      else next[k] = k === "max_tokens" ? parseInt(v, 10) : parseFloat(v);
    }
    next.memory = memory;
    setBusy(true);
    setError(null);
    try {
      await onSave({ system_prompt: system.trim() ? system : null, params: next });
      onClose();
    } catch (err) {
      setError(err.message);
    } finally {
      setBusy(false);
    }
  }

  return html`<aside class="drawer" role="dialog" aria-label="Conversation settings" data-testid="settings-drawer">
    <form onSubmit=${save}>
      <div class="row"><h2 class="grow">Conversation settings</h2>
        <button type="button" class="icon" aria-label="Close settings" onClick=${onClose}>✕</button></div>
      <label for="cs-system">System prompt</label>
      <textarea id="cs-system" data-testid="system-prompt" placeholder=${(prefs && prefs.system_prompt) || "Your preferred system prompt, if any"}
        value=${system} onInput=${(e) => setSystem(e.target.value)}></textarea>
      ${NUMBERS.map(([k, label, hint, step]) => html`
        <label for=${`cs-${k}`}>${label} <span class="muted">(${hint}; empty: default)</span></label>
        <input id=${`cs-${k}`} type="number" step=${step} inputmode="decimal" data-testid=${`param-${k}`}
          placeholder=${prefs && prefs[k] != null ? String(prefs[k]) : "default"}
          value=${values[k]} onInput=${(e) => setValues({ ...values, [k]: e.target.value })} />`)}
      <p><label class="inline"><input type="checkbox" data-testid="param-memory" checked=${memory}
        onChange=${(e) => setMemory(e.target.checked)} /> Use my memories in this conversation</label></p>
      ${error && html`<p class="error" role="alert">${error}</p>`}
      <div class="row"><button class="primary" type="submit" disabled=${busy}>Save</button>
        <button type="button" onClick=${onClose}>Cancel</button></div>
    </form>
  </aside>`;
}
