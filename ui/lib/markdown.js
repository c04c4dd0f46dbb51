// Model output as HTML: Markdown (marked) -> sanitised (DOMPurify) -> code highlighted
// (highlight.js) once its block is closed, with a copy button per block.
//
// What the model writes is untrusted. Raw HTML in it is shown as text, never parsed; the
// sanitiser then removes anything executable that Markdown itself could produce (event
// attributes, `javascript:` and other non-web URLs). Images are never loaded (a remote image
// would tell its server who reads the answer and when): each becomes a placeholder with its
// address as a link. Links open in a new tab without a referrer.

import { Marked } from "../vendor/marked.js";
import DOMPurify from "../vendor/purify.js";
import hljs from "../vendor/hljs/core.js";
import bash from "../vendor/hljs/languages/bash.js";
import c from "../vendor/hljs/languages/c.js";
import cpp from "../vendor/hljs/languages/cpp.js";
import css from "../vendor/hljs/languages/css.js";
import diff from "../vendor/hljs/languages/diff.js";
import go from "../vendor/hljs/languages/go.js";
import java from "../vendor/hljs/languages/java.js";
import javascript from "../vendor/hljs/languages/javascript.js";
import json from "../vendor/hljs/languages/json.js";
import markdown from "../vendor/hljs/languages/markdown.js";
import python from "../vendor/hljs/languages/python.js";
import rust from "../vendor/hljs/languages/rust.js";
import sql from "../vendor/hljs/languages/sql.js";
import typescript from "../vendor/hljs/languages/typescript.js";
import xml from "../vendor/hljs/languages/xml.js";
import yaml from "../vendor/hljs/languages/yaml.js";

const languages = { bash, c, cpp, css, diff, go, java, javascript, json, markdown, python, rust, sql, typescript, xml, yaml };
for (const [name, lang] of Object.entries(languages)) hljs.registerLanguage(name, lang);
const aliases = { sh: "bash", shell: "bash", zsh: "bash", js: "javascript", ts: "typescript", py: "python", rs: "rust", html: "xml", yml: "yaml", "c++": "cpp", md: "markdown" };

export function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (ch) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[ch]);
}

/** Whether a fenced block's raw text has its closing fence (a block still streaming has not). */
function fenceClosed(raw) {
  const m = raw.match(/^ {0,3}(`{3,}|~{3,})/);
  if (!m) return true; // an indented block ends where it ends
  const lines = raw.trimEnd().split("\n");
  return lines.length >= 2 && lines[lines.length - 1].trim().startsWith(m[1]);
}

const md = new Marked({ gfm: true, breaks: false, async: false });
md.use({
  renderer: {
    html(token) {
      return escapeHtml(token.text ?? token.raw ?? "");
    },
    image(token) {
      const label = escapeHtml(token.text || "image");
      return `<a class="image-placeholder" href="${escapeHtml(token.href || "")}">[image: ${label}]</a>`;
    },
    code(token) {
      const lang = String(token.lang || "").trim().split(/\s+/)[0].toLowerCase();
      const cls = lang ? ` class="language-${escapeHtml(lang)}"` : "";
      const open = fenceClosed(token.raw || "") ? "" : ` class="hearth-open"`;
      return `<pre${open}><code${cls}>${escapeHtml(token.text)}</code></pre>`;
    },
  },
});

const SAFE_URL = /^(https?:|mailto:|#)/i;
DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A") {
    const href = node.getAttribute("href") || "";
    if (!SAFE_URL.test(href.trim())) node.removeAttribute("href");
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer nofollow");
  }
});
const PURIFY = {
  FORBID_TAGS: ["style", "img", "svg", "math", "form", "input", "button", "textarea", "select", "iframe", "object", "embed", "video", "audio", "source", "picture", "link", "meta", "base"],
  FORBID_ATTR: ["style", "srcset", "src", "action", "formaction", "background", "poster"],
  ALLOW_DATA_ATTR: false,
};

/** Markdown to sanitised HTML. */
export function toSafeHtml(text) {
  return DOMPurify.sanitize(md.parse(text || ""), PURIFY);
}

// Highlighted blocks, by language and text: a streaming answer re-renders every ~50 ms and
// must not re-highlight the blocks it already closed.
const highlighted = new Map();
const HIGHLIGHT_CACHE = 400;

function highlight(code) {
  const cls = [...code.classList].find((c) => c.startsWith("language-"));
  if (!cls) return;
  const name = aliases[cls.slice(9)] || cls.slice(9);
  if (!hljs.getLanguage(name)) return;
  const text = code.textContent;
  const key = `${name}\u0000${text}`;
  let html = highlighted.get(key);
  if (html === undefined) {
    html = hljs.highlight(text, { language: name, ignoreIllegals: true }).value;
    if (highlighted.size >= HIGHLIGHT_CACHE) highlighted.delete(highlighted.keys().next().value);
    highlighted.set(key, html);
  }
  // hljs escapes the text it wraps in its spans.
  code.innerHTML = html;
  code.classList.add("hljs");
}

/** Render `text` into `el`: sanitised HTML, closed code blocks highlighted, copy buttons. */
export function renderMarkdown(el, text) {
  el.innerHTML = toSafeHtml(text);
  for (const pre of el.querySelectorAll("pre")) {
    const code = pre.querySelector("code");
    const wrap = document.createElement("div");
    wrap.className = "code-block";
    pre.replaceWith(wrap);
    wrap.appendChild(pre);
    if (!code) continue;
    if (!pre.classList.contains("hearth-open")) highlight(code);
    const copy = document.createElement("button");
    copy.type = "button";
    copy.className = "copy";
    copy.textContent = "Copy";
    copy.setAttribute("aria-label", "Copy code");
    wrap.appendChild(copy);
  }
}

async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    const ta = document.createElement("textarea");
    ta.value = text;
    ta.setAttribute("readonly", "");
    ta.className = "sr-only";
    document.body.appendChild(ta);
    ta.select();
    const ok = document.execCommand("copy");
    ta.remove();
    return ok;
  }
}

// One listener for every copy button on the page.
document.addEventListener("click", async (e) => {
  const button = e.target.closest && e.target.closest(".code-block .copy");
  if (!button) return;
  const code = button.parentElement.querySelector("code");
  if (!code) return;
  const ok = await copyText(code.textContent);
  button.textContent = ok ? "Copied" : "Copy failed";
  setTimeout(() => (button.textContent = "Copy"), 1500);
});
