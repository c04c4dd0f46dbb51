// Light or dark: follows the system until toggled; the choice is kept in localStorage.

const KEY = "hearth.theme";

function systemDark() {
  return window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches;
}

/** Apply the saved choice, if any. */
export function initTheme() {
  const saved = localStorage.getItem(KEY);
  if (saved === "light" || saved === "dark") document.documentElement.dataset.theme = saved;
}

/** Switch to the other theme and remember it. */
export function toggleTheme() {
  const now = document.documentElement.dataset.theme || (systemDark() ? "dark" : "light");
  const next = now === "dark" ? "light" : "dark";
  document.documentElement.dataset.theme = next;
  localStorage.setItem(KEY, next);
}
