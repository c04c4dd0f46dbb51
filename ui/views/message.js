// One message of a conversation. An assistant's text is Markdown, rendered sanitised and at
// most every ~50 ms while it streams; the element carries `data-rendered-chars` (characters
// of the answer on screen) and `aria-live` while streaming. A message re-renders only when its
// own object changes, so streaming into a long conversation touches one message. Tool calls
// and tool results (conversations with tools) are shown as plain text, never as HTML.

import { Component, html } from "../vendor/preact-htm.js";
import { renderMarkdown } from "../lib/markdown.js";

const RENDER_EVERY_MS = 50;

class Markdown extends Component {
  constructor() {
    super();
    this.el = null;
    this.last = 0;
    this.timer = 0;
    this.shown = null;
  }
  shouldComponentUpdate(next) {
    if (next.text !== this.props.text) this.schedule(next.text);
    return false;
  }
  componentDidMount() {
    this.draw(this.props.text);
  }
  componentWillUnmount() {
    clearTimeout(this.timer);
  }
  schedule(text) {
    this.pending = text;
    if (this.timer) return;
    const wait = Math.max(0, this.last + RENDER_EVERY_MS - performance.now());
    if (wait === 0) {
      this.draw(text);
      return;
    }
    this.timer = setTimeout(() => {
      this.timer = 0;
      this.draw(this.pending);
    }, wait);
  }
  draw(text) {
    if (!this.el || text === this.shown) return;
    // An empty answer (the row before its first token) does not hold the first token back.
    if (text) this.last = performance.now();
    this.shown = text;
    renderMarkdown(this.el, text);
    this.el.dataset.renderedChars = String([...text].length);
    if (this.props.onRendered) this.props.onRendered();
  }
  render() {
    return html`<div class="md" ref=${(el) => (this.el = el)}></div>`;
  }
}

function stats(m) {
  const t = m.timings || {};
  const parts = [];
  if (m.model) parts.push(m.model);
  if (m.completion_tokens != null) parts.push(`${m.completion_tokens} tokens`);
  if (t.decode_tokens_per_s) parts.push(`${t.decode_tokens_per_s.toFixed(1)} tok/s`);
  if (t.first_token_ms != null && !t.cached) parts.push(`first token ${Math.round(t.first_token_ms)} ms`);
  return parts;
}

function BranchNav({ m, onSwitch }) {
  const sib = m.siblings || [m.id];
  if (sib.length < 2) return null;
  const i = sib.indexOf(m.id);
  return html`<span class="branches" data-testid="branch-nav">
    <button class="icon" type="button" aria-label="Previous version" disabled=${i <= 0}
      onClick=${() => onSwitch(sib[i - 1])}>‹</button>
    <span data-testid="branch-position">${i + 1}/${sib.length}</span>
    <button class="icon" type="button" aria-label="Next version" disabled=${i >= sib.length - 1}
      onClick=${() => onSwitch(sib[i + 1])}>›</button>
  </span>`;
}

function ToolCalls({ calls }) {
  if (!Array.isArray(calls) || !calls.length) return null;
  return html`<ul class="tool-calls">
    ${calls.map((c) => html`<li data-testid="tool-call">
      <span class="badge">calls ${(c.function && c.function.name) || "?"}</span>
      <pre>${(c.function && c.function.arguments) || ""}</pre>
    </li>`)}
  </ul>`;
}

export class Message extends Component {
  constructor() {
    super();
    this.state = { editing: false, draft: "" };
  }
  shouldComponentUpdate(next, nextState) {
    return next.m !== this.props.m || next.last !== this.props.last || next.busy !== this.props.busy || nextState !== this.state;
  }
  render({ m, last, busy, onSwitch, onEdit, onRegenerate, onRendered }, { editing, draft }) {
    if (m.role === "tool") {
      return html`<div class="msg tool" data-testid="message-tool" data-message-id=${m.id}>
        <span class="badge">tool result</span>
        <pre class="bubble">${m.content}</pre>
      </div>`;
    }
    if (m.role === "user") {
      if (editing) {
        return html`<div class="msg user edit-box">
          <label class="sr-only" for=${`edit-${m.id}`}>Edit message</label>
          <textarea id=${`edit-${m.id}`} value=${draft} onInput=${(e) => this.setState({ draft: e.target.value })}></textarea>
          <div class="row">
            <button class="primary" type="button" data-testid="edit-save" disabled=${busy || !draft.trim()}
              onClick=${() => { this.setState({ editing: false }); onEdit(m, draft); }}>Save and send</button>
            <button type="button" onClick=${() => this.setState({ editing: false })}>Cancel</button>
          </div>
        </div>`;
      }
      return html`<div class="msg user" data-testid="message-user" data-message-id=${m.id}>
        <div class="bubble">${m.content}</div>
        <div class="meta">
          <${BranchNav} m=${m} onSwitch=${onSwitch} />
          <button class="icon" type="button" data-testid="edit" disabled=${busy}
            onClick=${() => this.setState({ editing: true, draft: m.content })}>Edit</button>
        </div>
      </div>`;
    }
    const streaming = m.status === "streaming";
    const waiting = streaming && !m.content;
    return html`<div class="msg assistant" data-testid="message-assistant" data-message-id=${m.id}
        data-status=${m.status} aria-live=${streaming ? "polite" : "off"} aria-busy=${streaming ? "true" : "false"}>
      <div class="bubble">
        ${waiting && html`<span class="typing" data-testid="typing" aria-label="Writing"><span></span><span></span><span></span></span>`}
        <${Markdown} text=${m.content} onRendered=${onRendered} />
        <${ToolCalls} calls=${m.tool_calls} />
      </div>
      <div class="meta" data-testid="message-stats">
        <${BranchNav} m=${m} onSwitch=${onSwitch} />
        ${stats(m).map((s) => html`<span>${s}</span>`)}
        ${m.timings && m.timings.cached && html`<span class="badge" data-testid="cache-hit">cached</span>`}
        ${m.status === "interrupted" && html`<span class="badge warn" data-testid="interrupted">interrupted</span>`}
        ${m.status === "error" && html`<span class="badge err">failed${m.error ? `: ${m.error}` : ""}</span>`}
        ${m.finish_reason === "length" && html`<span class="badge warn">cut at max tokens</span>`}
        ${!streaming && last && html`<button type="button" data-testid="regenerate" disabled=${busy}
          onClick=${() => onRegenerate(m)}>Regenerate</button>`}
      </div>
    </div>`;
  }
}
