// Safe rendering of message content into DOM nodes.
//
// Message content is whatever an IDE page or a user typed: it is never parsed as HTML. Every
// piece of it reaches the DOM as a text node (append(string), textContent); elements are made
// with createElement; the only attribute taken from content is a link's href, and only after
// URL() parsed it as http(s). This module never touches innerHTML.
//
// The markdown is a small subset, on purpose: fenced code blocks, headings, bullet and
// numbered lists (nested by indentation), block quotes, rules, tables (GitHub's pipes, with
// column alignment), paragraphs (a single newline is a line break, as in chat), and inline
// `code`, **bold**, *italic*, ~~strike~~, [links](url) and bare http(s) URLs. Anything else
// shows as the text it is.

import { highlightLater } from "./highlight.js";

/** An element: h("a", {href, class, text, onclick, dataset}, ...children). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "text") el.textContent = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined && child !== false) el.append(child);
  }
  return el;
}

const ROLES = new Set(["user", "assistant", "system", "tool"]);
const ROLE_LABELS = { user: "User", assistant: "Assistant", system: "System", tool: "Tool" };

// A message longer than this (characters or lines) shows collapsed, with "Show more".
const LONG_CHARS = 3000;
const LONG_LINES = 40;

/** The `message` element for one stored message (the API's and the events' shape): its
 * code blocks get a Copy button and, once in view, syntax highlighting (highlight.js), and a
 * long one shows collapsed with "Show more". */
export function renderMessage(message) {
  const content = renderContent(message.content, message.content_type);
  for (const pre of content.querySelectorAll("pre")) {
    const code = pre.querySelector("code");
    pre.append(copyButton(code));
    highlightLater(code);
  }
  const text = String(message.content ?? "");
  const long = text.length > LONG_CHARS || text.split("\n", LONG_LINES + 1).length > LONG_LINES;
  const article = messageElement(message, content);
  if (long) {
    article.classList.add("collapsed");
    article.append(showMoreButton(article));
  }
  return article;
}

function copyButton(code) {
  const button = h("button", { type: "button", class: "secondary copy-code", text: "Copy" });
  button.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(code.textContent);
      button.textContent = "Copied";
    } catch {
      button.textContent = "Copy failed";
    }
    setTimeout(() => { button.textContent = "Copy"; }, 1500); // feedback only
  });
  return button;
}

function showMoreButton(article) {
  const button = h("button", { type: "button", class: "secondary show-more", text: "Show more", "aria-expanded": "false" });
  button.addEventListener("click", () => {
    const collapsed = article.classList.toggle("collapsed");
    button.textContent = collapsed ? "Show more" : "Show less";
    button.setAttribute("aria-expanded", String(!collapsed));
  });
  return button;
}

function messageElement(message, content) {
  const role = ROLES.has(message.role) ? message.role : "other";
  const when = message.timestamp || message.created_at;
  return h(
    "article",
    {
      class: `message role-${role}`,
      "data-testid": "message",
      "data-seq": message.seq,
      "aria-label": `${ROLE_LABELS[role] || message.role} message ${message.seq}`,
    },
    h(
      "header",
      { class: "message-meta" },
      h("span", { class: "message-role", text: ROLE_LABELS[role] || String(message.role) }),
      when ? renderTime(when) : null,
      message.source === "ide_extraction" ? h("span", { class: "tag", text: "from IDE" }) : null,
      message.edited_at ? h("span", { class: "tag", text: "edited", title: message.edited_at }) : null,
    ),
    content,
  );
}

function renderTime(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return null;
  const today = new Date().toDateString() === date.toDateString();
  const text = today
    ? date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
    : date.toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
  return h("time", { datetime: date.toISOString(), title: date.toLocaleString(), text });
}

/** Content by its type: markdown (the subset), code and json (preformatted), else text. */
export function renderContent(content, contentType) {
  const text = String(content ?? "");
  if (contentType === "markdown") {
    return h("div", { class: "content markdown" }, renderMarkdown(text));
  }
  if (contentType === "code") {
    return h("div", { class: "content" }, h("pre", {}, h("code", { text })));
  }
  if (contentType === "json") {
    let pretty = text;
    try {
      pretty = JSON.stringify(JSON.parse(text), null, 2);
    } catch {
      // not valid JSON: show it as sent
    }
    return h("div", { class: "content" }, h("pre", {}, h("code", { class: "language-json", text: pretty })));
  }
  // text: CSS `white-space: pre-wrap` keeps its line breaks and spaces.
  return h("div", { class: "content plain", text });
}

// ---- block level ------------------------------------------------------------------------

// Block patterns are anchored and written so a failing line costs linear time (no two
// adjacent quantifiers that can trade characters).
const FENCE = /^ {0,3}(`{3,}|~{3,})[ \t]*([^\s`]*)(?:[ \t][^`]*)?$/;
const HEADING = /^ {0,3}(#{1,6})(?:[ \t]+(.*))?$/;
const RULE = /^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$/;
const BULLET = /^( {0,12})([-*+])[ \t]+(.*)$/;
const ORDERED = /^( {0,12})(\d{1,9})([.)])[ \t]+(.*)$/;
const QUOTE = /^ {0,3}>[ \t]?(.*)$/;
// One cell of a table's delimiter row (| --- | :---: | ---: |), cells split beforehand.
const TABLE_DELIMITER_CELL = /^:?-+:?$/;
// Nesting deeper than this (quotes in lists in quotes ...) is shown as text: the renderer is
// recursive and content is untrusted.
const MAX_DEPTH = 8;
// Inline formatting is regex-driven; a paragraph longer than this is shown as plain text so a
// pathological message cannot stall the page.
const INLINE_LIMIT = 5000;

/** A DocumentFragment for the markdown subset described at the top of this module. */
export function renderMarkdown(source, depth = 0) {
  const raw = source.replace(/\r\n?/g, "\n").split("\n");
  const lines = raw.map(expandTabs); // for finding blocks; code keeps its own tabs
  const out = document.createDocumentFragment();
  if (depth > MAX_DEPTH) {
    out.append(paragraph(lines, false));
    return out;
  }
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    let m;
    if (!line.trim()) {
      i += 1;
    } else if ((m = FENCE.exec(line))) {
      const fence = m[1];
      const body = [];
      i += 1;
      while (i < lines.length && !closesFence(lines[i], fence)) body.push(raw[i++]);
      i += 1; // the closing fence; an unclosed fence (a reply still streaming) runs to the end
      out.append(codeBlock(body.join("\n"), m[2]));
    } else if (startsTable(lines, i)) {
      i = table(lines, i, out);
    } else if ((m = HEADING.exec(line))) {
      const level = Math.min(m[1].length + 2, 6); // # is h3: the page owns h1 and h2
      out.append(h(`h${level}`, {}, inline(headingText(m[2] || ""))));
      i += 1;
    } else if (RULE.test(line)) {
      out.append(h("hr"));
      i += 1;
    } else if (BULLET.test(line) || ORDERED.test(line)) {
      i = list(lines, i, out, depth);
    } else if (QUOTE.test(line)) {
      const body = [];
      while (i < lines.length && (m = QUOTE.exec(lines[i]))) {
        body.push(m[1]);
        i += 1;
      }
      out.append(h("blockquote", {}, renderMarkdown(body.join("\n"), depth + 1)));
    } else {
      const body = [];
      while (i < lines.length && lines[i].trim() && (body.length === 0 || !startsBlock(lines[i]))) {
        body.push(lines[i++]);
      }
      out.append(paragraph(body, true));
    }
  }
  return out;
}

/** A heading's text without its optional closing #s ("## Title ##"). */
function headingText(text) {
  let end = text.length;
  while (end > 0 && (text[end - 1] === " " || text[end - 1] === "\t")) end -= 1;
  let hashes = end;
  while (hashes > 0 && text[hashes - 1] === "#") hashes -= 1;
  if (hashes < end && (hashes === 0 || text[hashes - 1] === " " || text[hashes - 1] === "\t")) {
    end = hashes;
  }
  return text.slice(0, end).trim();
}

function expandTabs(line) {
  const lead = /^[ \t]*/.exec(line)[0];
  return lead.includes("\t") ? lead.replace(/\t/g, "    ") + line.slice(lead.length) : line;
}

function closesFence(line, fence) {
  const trimmed = line.trim();
  return trimmed.length >= fence.length && /^ {0,3}\S/.test(line) &&
    trimmed === fence[0].repeat(trimmed.length);
}

/** A table starts here: a row with a pipe, then a delimiter row of as many columns. */
function startsTable(lines, i) {
  if (i + 1 >= lines.length || !lines[i].includes("|") || !lines[i + 1].includes("|")) return false;
  const delimiter = cells(lines[i + 1]);
  return delimiter.every((d) => TABLE_DELIMITER_CELL.test(d)) && cells(lines[i]).length === delimiter.length;
}

/** A row's cells: split at pipes that are not escaped (\|), outer pipes dropped. */
function cells(line) {
  let text = line.trim();
  if (text.startsWith("|")) text = text.slice(1);
  if (text.endsWith("|") && !text.endsWith("\\|")) text = text.slice(0, -1);
  const out = [];
  let cell = "";
  for (let k = 0; k < text.length; k++) {
    if (text[k] === "\\" && text[k + 1] === "|") {
      cell += "|";
      k += 1;
    } else if (text[k] === "|") {
      out.push(cell.trim());
      cell = "";
    } else {
      cell += text[k];
    }
  }
  out.push(cell.trim());
  return out;
}

/** The table starting at lines[i] (header, delimiter, rows until a blank line or a line
 * with no pipe); appends it to `out` and returns the index after it. */
function table(lines, i, out) {
  const header = cells(lines[i]);
  const aligns = cells(lines[i + 1]).map((d) =>
    d.startsWith(":") && d.endsWith(":") ? "center" : d.endsWith(":") ? "right" : d.startsWith(":") ? "left" : null,
  );
  const cell = (tag, text, col) =>
    h(tag, { class: aligns[col] ? `align-${aligns[col]}` : null }, text.length <= INLINE_LIMIT ? inline(text) : text);
  const head = h("thead", {}, h("tr", {}, header.map((text, col) => cell("th", text, col))));
  const body = h("tbody");
  i += 2;
  while (i < lines.length && lines[i].trim() && lines[i].includes("|")) {
    const row = cells(lines[i]);
    body.append(h("tr", {}, header.map((_, col) => cell("td", row[col] ?? "", col))));
    i += 1;
  }
  out.append(h("div", { class: "table-scroll" }, h("table", {}, head, body.children.length ? body : null)));
  return i;
}

function startsBlock(line) {
  return FENCE.test(line) || HEADING.test(line) || RULE.test(line) || QUOTE.test(line) ||
    BULLET.test(line) || ORDERED.test(line);
}

function codeBlock(code, lang) {
  const language = /^[\w+#.-]{1,32}$/.test(lang) ? lang : "";
  return h(
    "pre",
    { class: "code-block", "data-lang": language || null },
    h("code", { class: language ? `language-${language}` : null, text: code }),
  );
}

function paragraph(lines, formatted) {
  const text = lines.map((l) => l.trim()).join("\n");
  const p = h("p");
  if (formatted && text.length <= INLINE_LIMIT) p.append(inline(text));
  else appendText(p, text);
  return p;
}

function itemMatch(line) {
  let m = BULLET.exec(line);
  if (m) return { indent: m[1].length, ordered: false, marker: m[2], text: m[3], width: line.length - m[3].length };
  m = ORDERED.exec(line);
  if (m) {
    return {
      indent: m[1].length, ordered: true, marker: m[3], start: Number(m[2]), text: m[4],
      width: line.length - m[4].length,
    };
  }
  return null;
}

function indentOf(line) {
  return /^ */.exec(line)[0].length;
}

/** One list starting at lines[i]; appends it to `out` and returns the index after it. Each
 * item's lines (its first line, then its indented or lazy continuation lines, dedented) are
 * rendered as markdown themselves, which gives nested lists and code inside items. */
function list(lines, i, out, depth) {
  const first = itemMatch(lines[i]);
  const base = first.indent;
  const sameList = (m) => m && m.ordered === first.ordered && m.indent <= base + 1 &&
    (first.ordered || m.marker === first.marker);
  const items = [];
  let current = null;
  let fence = null; // inside a fenced block of the current item: its lines are never items
  let loose = false; // blank lines between or inside items: items hold paragraphs
  while (i < lines.length) {
    const line = lines[i];
    const m = fence ? null : itemMatch(line);
    if (sameList(m)) {
      current = { lines: [m.text], width: m.width };
      items.push(current);
      i += 1;
      continue;
    }
    if (!line.trim()) {
      // A blank line continues the list only if what follows belongs to it.
      let j = i + 1;
      while (j < lines.length && !lines[j].trim()) j += 1;
      const next = j < lines.length ? lines[j] : null;
      if (fence || (next !== null && (sameList(itemMatch(next)) || indentOf(next) > base + 1))) {
        for (; i < j; i += 1) current.lines.push("");
        loose = true;
        continue;
      }
      break;
    }
    const indent = indentOf(line);
    if (fence || indent > base + 1 || !startsBlock(line)) {
      // Indented: part of the item. Not indented and not a new block: a lazy continuation.
      const body = line.slice(Math.min(indent, current.width));
      if (fence) {
        if (closesFence(body, fence)) fence = null;
      } else {
        const opens = FENCE.exec(body);
        if (opens) fence = opens[1];
      }
      current.lines.push(body);
      i += 1;
      continue;
    }
    break;
  }
  const el = first.ordered
    ? h("ol", { start: first.start !== 1 ? first.start : null })
    : h("ul");
  for (const item of items) {
    const body = renderMarkdown(item.lines.join("\n"), depth + 1);
    const li = h("li");
    if (loose) {
      li.append(body);
    } else {
      // A tight list ("- a" lines with no blank line between) holds text, not paragraphs.
      for (const node of [...body.childNodes]) {
        if (node.nodeName === "P") li.append(...node.childNodes);
        else li.append(node);
      }
    }
    el.append(li);
  }
  out.append(el);
  return i;
}

// ---- inline -----------------------------------------------------------------------------

// Each span kind with a regex that finds its next occurrence. Quantifiers are bounded so a
// failed search costs at most (openers x bound): a span is at most 1000 characters (a link's
// URL 2000), longer ones show as the text they are.
const SPANS = [
  ["code", /(?<!`)(`{1,8})(?!`)([\s\S]{1,1000}?)(?<!`)\1(?!`)/g],
  ["link", /\[([^\[\]\n]{1,500})\]\((https?:\/\/[^\s()<>]{1,2000})\)/g],
  ["url", /\bhttps?:\/\/[^\s<>"'`]{1,2000}/g],
  ["strong", /\*\*(?=[^\s*])([\s\S]{0,1000}?[^\s*])\*\*|(?<![\w_])__(?=[^\s_])([\s\S]{0,1000}?[^\s_])__(?![\w_])/g],
  ["em", /(?<![\w*])\*(?=[^\s*])([^*]{0,1000}?[^\s*])\*(?![\w*])|(?<![\w_])_(?=[^\s_])([^_]{0,1000}?[^\s_])_(?![\w_])/g],
  ["del", /~~(?=[^\s~])([\s\S]{0,1000}?[^\s~])~~/g],
];
const MAX_INLINE_DEPTH = 6;

/** Inline spans of `text` as a DocumentFragment; newlines become <br>. */
export function inline(text, depth = 0) {
  const out = document.createDocumentFragment();
  // The next match of each kind at or after `pos`, recomputed only once `pos` passes it.
  const next = new Map();
  let pos = 0;
  while (pos < text.length) {
    let best = null;
    for (const [kind, re] of SPANS) {
      if (depth >= MAX_INLINE_DEPTH && kind !== "code") continue;
      let m = next.get(kind);
      if (m === undefined || (m !== null && m.index < pos)) {
        re.lastIndex = pos;
        m = re.exec(text);
        next.set(kind, m);
      }
      if (m !== null && (best === null || m.index < best.m.index)) best = { kind, m };
    }
    if (best === null) break;
    const { kind, m } = best;
    appendText(out, text.slice(pos, m.index));
    pos = m.index + span(out, kind, m, depth);
  }
  appendText(out, text.slice(pos));
  return out;
}

/** Append the span `m` of `kind`; returns how many characters of the text it used. */
function span(out, kind, m, depth) {
  switch (kind) {
    case "code": {
      // One space of padding on both sides is stripped (``  `x`  `` shows `x`).
      let code = m[2].replace(/\n/g, " ");
      if (/^ .* $/.test(code) && code.trim()) code = code.slice(1, -1);
      out.append(h("code", { text: code }));
      return m[0].length;
    }
    case "link": {
      const url = safeUrl(m[2]);
      if (url === null) {
        appendText(out, m[0]);
      } else {
        out.append(link(url, m[1]));
      }
      return m[0].length;
    }
    case "url": {
      const raw = trimUrl(m[0]);
      const url = safeUrl(raw);
      if (url === null) appendText(out, raw);
      else out.append(link(url, raw));
      return raw.length;
    }
    case "strong":
    case "em":
    case "del": {
      const inner = m[1] ?? m[2] ?? m[0].slice(1, -1);
      const tag = { strong: "strong", em: "em", del: "del" }[kind];
      out.append(h(tag, {}, inline(inner, depth + 1)));
      return m[0].length;
    }
    default:
      appendText(out, m[0]);
      return m[0].length;
  }
}

/** A bare URL without the punctuation that usually follows one in prose, and without a
 * closing parenthesis it did not open ("(see https://x.org/a)"). */
function trimUrl(raw) {
  let end = raw.length;
  let open = count(raw, "(");
  let close = count(raw, ")");
  while (end > 0) {
    const ch = raw[end - 1];
    if (".,;:!?*_~'\"".includes(ch)) {
      end -= 1;
    } else if (ch === ")" && close > open) {
      end -= 1;
      close -= 1;
    } else {
      break;
    }
  }
  return raw.slice(0, end);
}

function count(s, ch) {
  return s.split(ch).length - 1;
}

/** The URL if it parses as http(s), else null: no javascript:, data:, or anything else. */
export function safeUrl(raw) {
  try {
    const url = new URL(raw);
    return url.protocol === "http:" || url.protocol === "https:" ? url : null;
  } catch {
    return null;
  }
}

function link(url, label) {
  return h("a", { href: url.href, rel: "noopener noreferrer", target: "_blank", text: label });
}

function appendText(parent, text) {
  if (!text) return;
  const parts = text.split("\n");
  parts.forEach((part, index) => {
    if (index > 0) parent.append(h("br"));
    if (part) parent.append(part);
  });
}
