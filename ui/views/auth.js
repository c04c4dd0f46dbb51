// First run, sign in and register. The page asks `/api/auth/policy` whether anyone exists yet
// (then the first account is created here and becomes admin), whether registration is open,
// and what usernames and passwords must look like.

import { html, useEffect, useState } from "../vendor/preact-htm.js";
import { login, register } from "../lib/session.js";

export function AuthPage({ notice }) {
  const [policy, setPolicy] = useState(null);
  const [mode, setMode] = useState("login");
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);

  useEffect(() => {
    fetch("/api/auth/policy")
      .then((r) => r.json())
      .then((p) => {
        setPolicy(p);
        if (p.first_run) setMode("register");
      })
      .catch(() => setPolicy(null));
  }, []);

  const canRegister = policy && (policy.first_run || policy.registration === "open");
  const registering = mode === "register" && canRegister;

  async function submit(e) {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      if (registering) await register(username, password);
      else await login(username, password);
    } catch (err) {
      if (err.status === 401) setError("Wrong username or password.");
      else if (err.status === 429) setError(`Too many attempts; try again in ${err.retryAfter || "a few"} seconds.`);
      else setError(err.message);
    } finally {
      setBusy(false);
    }
  }

  const rules = policy
    ? `Usernames: ${policy.username_min_len}–${policy.username_max_len} characters, letters, digits, “_”, “.” and “-”. ` +
      `Passwords: ${policy.password_min_len}–${policy.password_max_len} characters.`
    : "";

  return html`<main class="auth">
    <h1>${policy && policy.first_run ? "Welcome to Hearth" : registering ? "Create an account" : "Sign in to Hearth"}</h1>
    ${policy && policy.first_run && html`<p>No account exists yet. The first account you create is the administrator.</p>`}
    ${notice && html`<p class="notice warn" role="status">${notice}</p>`}
    <form onSubmit=${submit} data-testid="login-form">
      <label for="login-username">Username</label>
      <input id="login-username" data-testid="login-username" autocomplete="username" required
        value=${username} onInput=${(e) => setUsername(e.target.value)} />
      <label for="login-password">Password</label>
      <input id="login-password" data-testid="login-password" type="password" required
        autocomplete=${registering ? "new-password" : "current-password"}
        minlength=${registering && policy ? policy.password_min_len : undefined}
        value=${password} onInput=${(e) => setPassword(e.target.value)} />
      ${registering && html`<p class="rules">${rules}</p>`}
      ${error && html`<p class="error" role="alert" data-testid="login-error">${error}</p>`}
      <button class="primary" type="submit" data-testid="login-submit" disabled=${busy}>
        ${registering ? "Create account" : "Sign in"}</button>
    </form>
    ${canRegister && !(policy && policy.first_run) && html`<p class="muted">
      ${registering
        ? html`Have an account? <a href="#" onClick=${(e) => { e.preventDefault(); setMode("login"); }}>Sign in</a>`
        : html`New here? <a href="#" data-testid="show-register" onClick=${(e) => { e.preventDefault(); setMode("register"); }}>Create an account</a>`}
    </p>`}
    ${policy && !canRegister && html`<p class="muted">Registration is closed: an administrator creates accounts.</p>`}
  </main>`;
}
