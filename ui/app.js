// Hearth's web UI: the entry module. Restores the session from its cookie, then shows the
// sign-in page or the app (chat, blog, settings, admin) by the URL's hash: `#/c/<conversation
// id>`, `#/posts` (the blog's posts), `#/posts/<post id>` (the editor), `#/settings`, `#/admin`.

import { html, render, useEffect, useState } from "./vendor/preact-htm.js";
import { api, logout, onSessionChange, refresh } from "./lib/session.js";
import { connect, disconnect, onSocketState } from "./lib/socket.js";
import { initTheme, toggleTheme } from "./lib/theme.js";
import { AuthPage } from "./views/auth.js";
import { ChatPage } from "./views/chat.js";
import { PostsPage } from "./views/posts.js";
import { SettingsPage } from "./views/settings.js";
import { AdminPage } from "./views/admin.js";

initTheme();

// The composer stays above the on-screen keyboard: the app is as tall as the visual viewport.
if (window.visualViewport) {
  const fit = () => document.documentElement.style.setProperty("--vvh", `${window.visualViewport.height}px`);
  window.visualViewport.addEventListener("resize", fit);
  fit();
}

function parseRoute(hash) {
  const parts = hash.replace(/^#\/?/, "").split("/");
  if (parts[0] === "c" && parts[1]) return { page: "chat", id: decodeURIComponent(parts[1]) };
  if (parts[0] === "posts") return { page: "posts", id: parts[1] ? decodeURIComponent(parts[1]) : null };
  if (parts[0] === "settings") return { page: "settings" };
  if (parts[0] === "admin") return { page: "admin" };
  return { page: "chat", id: null };
}

function useRoute() {
  const [route, setRoute] = useState(parseRoute(location.hash));
  useEffect(() => {
    const onHash = () => setRoute(parseRoute(location.hash));
    addEventListener("hashchange", onHash);
    return () => removeEventListener("hashchange", onHash);
  }, []);
  return route;
}

function ConnectionBadge() {
  const [state, setState] = useState("offline");
  useEffect(() => onSocketState(setState), []);
  if (state === "online") return html`<span class="conn sr-only" data-testid="connection" data-state="online">Connected</span>`;
  return html`<span class="conn offline" role="status" data-testid="connection" data-state=${state}>
    ${state === "connecting" ? "Reconnecting…" : "Offline — reconnecting"}</span>`;
}

function TopBar({ me, route }) {
  const current = (page) => (route.page === page ? "page" : undefined);
  return html`<header class="topbar">
    <a class="brand" href="#/">Hearth</a>
    <nav aria-label="Main">
      <a href="#/" aria-current=${current("chat")}>Chat</a>
      <a href="#/posts" aria-current=${current("posts")} data-testid="nav-blog">Blog</a>
      <a href="#/settings" aria-current=${current("settings")}>Settings</a>
      ${me.role === "admin" && html`<a href="#/admin" aria-current=${current("admin")}>Admin</a>`}
    </nav>
    <span class="grow"></span>
    <${ConnectionBadge} />
    <button class="icon" type="button" onClick=${toggleTheme} aria-label="Toggle dark mode" title="Toggle dark mode" data-testid="theme-toggle">◐</button>
    <span class="muted hide-narrow">${me.username}</span>
    <button type="button" onClick=${() => logout(false)} data-testid="sign-out">Sign out</button>
  </header>`;
}

function App() {
  const [phase, setPhase] = useState("boot"); // boot | out | in
  const [me, setMe] = useState(null);
  const [notice, setNotice] = useState(null);
  const route = useRoute();

  useEffect(() => {
    const off = onSessionChange(async (signedIn) => {
      if (!signedIn) {
        disconnect();
        setMe(null);
        setPhase("out");
        return;
      }
      try {
        const r = await api("GET", "/api/me");
        setMe(r.user);
        setNotice(null);
        setPhase("in");
        connect();
      } catch (e) {
        setNotice(e.message);
        setPhase("out");
      }
    });
    refresh()
      .then((ok) => ok || setPhase("out"))
      .catch((e) => {
        setNotice(`Could not reach the server: ${e.message}`);
        setPhase("out");
      });
    return off;
  }, []);

  if (phase === "boot") return html`<p class="boot">Loading Hearth…</p>`;
  if (phase === "out" || !me) return html`<${AuthPage} notice=${notice} />`;
  let page;
  if (route.page === "posts") page = html`<${PostsPage} me=${me} postId=${route.id} />`;
  else if (route.page === "settings") page = html`<${SettingsPage} me=${me} />`;
  else if (route.page === "admin" && me.role === "admin") page = html`<${AdminPage} me=${me} />`;
  else page = html`<${ChatPage} me=${me} conversationId=${route.id} />`;
  return html`<${TopBar} me=${me} route=${route} />${page}`;
}

render(html`<${App} />`, document.getElementById("app"));
