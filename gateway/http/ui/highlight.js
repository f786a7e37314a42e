// Syntax highlighting of code blocks, with Prism's grammars and tokenizer.
//
// Prism (vendor/prism-1.30.0.min.js, MIT; vendor/README.md says where it comes from) is used
// for one thing: `Prism.tokenize(text, grammar)`, which splits text into a tree of tokens and
// touches no DOM. It runs in a Web Worker (highlight_worker.js), which sends the tree back as
// plain data; this module builds the nodes from it: spans made with createElement, whose
// class names come from the grammar's token types (never from content), holding text nodes.
// Prism's own highlighting functions, which build an HTML string for the browser to parse,
// are never called (and a worker has no DOM they could write to). Message content therefore
// never becomes markup here, the same rule as in render.js.
//
// Only the languages in LANGUAGES are highlighted; any other fence (or none) stays plain text.
// The map, not the fence, names the grammar, so a fence such as ```extend cannot reach the
// functions that live beside the grammars in `Prism.languages`.
//
// Cost: a page can hold thousands of messages. A block is highlighted only when it comes near
// the viewport (IntersectionObserver), one block at a time. Tokenizing is off the main thread
// because its cost depends on the content, which is untrusted: 20,000 characters of ordinary
// code take a few to tens of milliseconds, but some inputs make a grammar's regular
// expressions backtrack for seconds (measured: 20,000 characters of a repeated
// `'"`/*<!--${#\` line take about 10 s as bash). A block whose tokens do not come back within
// TOKENIZE_MS stays plain and the worker is replaced; a block over MAX_CHARS is never sent.
// The worker and Prism (44 KB) are loaded with the first block that needs them, so a page
// without code never loads either. Building one block's spans is the only work done on the
// main thread, in a task of its own.
//
// Highlighting replaces a block's text with spans holding the same characters, so its
// textContent (what Copy copies, what search finds) is unchanged. A CSS highlight that covered
// part of the block (the search hit that conversation.js marks) is moved onto the new nodes.

const WORKER_URL = new URL("./highlight_worker.js", import.meta.url);
// Longer blocks stay plain.
const MAX_CHARS = 20_000;
// A block whose tokens take longer stays plain, and its worker is ended.
const TOKENIZE_MS = 1500;
// After this many errors in a row (no worker script, a policy refusing it, Prism throwing),
// stop trying: every block stays plain, which is still correct. A timeout is not an error.
const MAX_ERRORS = 3;
// Blocks this far outside the viewport are highlighted ahead of being scrolled to. The margin
// is given both to the viewport (rootMargin) and to the scrolling boxes between it and the
// block (scrollMargin; the messages scroll inside one): without the latter a block clipped
// by the message list counts as unseen until it is actually visible. Browsers without
// scrollMargin ignore it and highlight blocks as they become visible.
const AHEAD = "400px 0px";

// A fence's language (lower-cased) and the Prism grammar it means.
const LANGUAGES = new Map([
  ["python", "python"], ["py", "python"], ["python3", "python"],
  ["javascript", "javascript"], ["js", "javascript"], ["mjs", "javascript"], ["cjs", "javascript"],
  ["typescript", "typescript"], ["ts", "typescript"],
  ["json", "json"],
  ["bash", "bash"], ["sh", "bash"], ["shell", "bash"], ["zsh", "bash"],
  ["sql", "sql"], ["postgresql", "sql"], ["postgres", "sql"], ["pgsql", "sql"],
  ["go", "go"], ["golang", "go"],
  ["rust", "rust"], ["rs", "rust"],
  ["java", "java"],
  ["c", "c"], ["h", "c"],
  ["cpp", "cpp"], ["c++", "cpp"], ["cc", "cpp"], ["cxx", "cpp"], ["hpp", "cpp"],
  ["yaml", "yaml"], ["yml", "yaml"],
  ["html", "markup"], ["xml", "markup"], ["svg", "markup"],
  ["css", "css"],
  ["diff", "diff"], ["patch", "diff"],
]);

// A token type or alias usable as a class name (Prism's are words and hyphens).
const TOKEN_NAME = /^[a-z][\w-]{0,40}$/i;

// Blocks waiting to be seen (code element -> grammar name), and those seen, in order.
const waiting = new WeakMap();
const queue = [];
let observer = null;
let worker = null;
let errors = 0; // errors since the last answer
let inFlight = null; // the block the worker is tokenizing: {code, text, timer}

/** Highlight the `code` element of a code block once it comes near the viewport, if its class
 * names a language this module knows (`language-python`); otherwise leave it as it is. */
export function highlightLater(code) {
  const grammar = grammarOf(code);
  if (grammar === null || code.textContent.length > MAX_CHARS) return;
  waiting.set(code, grammar);
  // A block removed before it was seen (a streamed reply re-rendered) is not kept alive by
  // the observer: Chromium holds observed elements weakly (checked with WeakRef and gc()).
  observer ??= new IntersectionObserver(seen, { rootMargin: AHEAD, scrollMargin: AHEAD });
  observer.observe(code);
}

/** The Prism grammar name for the element's `language-xxx` class, or null. */
function grammarOf(code) {
  for (const name of code.classList) {
    if (name.startsWith("language-")) return LANGUAGES.get(name.slice(9).toLowerCase()) ?? null;
  }
  return null;
}

function seen(entries) {
  for (const entry of entries) {
    if (!entry.isIntersecting) continue;
    observer.unobserve(entry.target);
    queue.push(entry.target);
  }
  next();
}

/** Send the next block still on the page to the worker, unless one is there already. */
function next() {
  while (inFlight === null && queue.length > 0 && errors < MAX_ERRORS) {
    const code = queue.shift();
    const grammar = waiting.get(code);
    waiting.delete(code);
    // Skip a block replaced or removed since it was seen (a streamed reply, another session).
    if (grammar === undefined || !code.isConnected) continue;
    const text = code.textContent;
    inFlight = { code, text, timer: setTimeout(() => giveUp(false), TOKENIZE_MS) };
    try {
      tokenizer().postMessage({ text, grammar });
    } catch {
      giveUp(true); // `new Worker` refused outright
    }
  }
}

function tokenizer() {
  if (worker === null) {
    worker = new Worker(WORKER_URL);
    worker.onmessage = (event) => {
      if (event.target !== worker || inFlight === null) return; // from a worker given up on
      errors = 0;
      const { code, text, timer } = inFlight;
      clearTimeout(timer);
      inFlight = null;
      apply(code, text, event.data);
      next();
    };
    // The worker could not load, or Prism threw: this block stays plain.
    worker.onerror = (event) => {
      event.preventDefault();
      giveUp(true);
    };
  }
  return worker;
}

/** End the worker (a runaway tokenize cannot be interrupted otherwise), leave the block in
 * flight plain, and go on with the next one in a new worker. */
function giveUp(error) {
  clearTimeout(inFlight?.timer);
  inFlight = null;
  worker?.terminate();
  worker = null;
  if (error) errors += 1;
  next();
}

/** Replace the block's text with the token spans, if it still shows that text. */
function apply(code, text, tokens) {
  if (!code.isConnected || code.textContent !== text) return;
  const fragment = document.createDocumentFragment();
  appendTokens(fragment, tokens);
  // Prism's tokens always add up to the text; if they ever did not, plain beats wrong.
  if (fragment.textContent !== text) return;
  const marked = markedRanges(code);
  code.replaceChildren(fragment);
  for (const { range, start, end } of marked) {
    range.setStart(...pointAt(code, start));
    range.setEnd(...pointAt(code, end));
  }
  code.classList.add("highlighted");
}

/** Append a token stream (a string, a token {type, alias, content}, or an array of them) as
 * nodes. */
function appendTokens(parent, stream) {
  if (typeof stream === "string") {
    parent.append(stream); // a text node
  } else if (Array.isArray(stream)) {
    for (const item of stream) appendTokens(parent, item);
  } else {
    const span = document.createElement("span");
    const aliases = stream.alias ? [].concat(stream.alias) : [];
    for (const name of [stream.type, ...aliases]) {
      if (TOKEN_NAME.test(name)) span.classList.add(`hl-${name}`);
    }
    appendTokens(span, stream.content);
    parent.append(span);
  }
}

/** The live ranges of CSS highlights that lie inside `code`, each with its start and end as
 * character offsets in the code's text. */
function markedRanges(code) {
  const marked = [];
  if (!globalThis.CSS || !CSS.highlights) return marked;
  for (const highlight of CSS.highlights.values()) {
    for (const range of highlight) {
      if (!(range instanceof Range)) continue;
      if (!code.contains(range.startContainer) || !code.contains(range.endContainer)) continue;
      marked.push({
        range,
        start: offsetOf(code, range.startContainer, range.startOffset),
        end: offsetOf(code, range.endContainer, range.endOffset),
      });
    }
  }
  return marked;
}

function offsetOf(root, node, offset) {
  const before = document.createRange();
  before.setStart(root, 0);
  before.setEnd(node, offset);
  return before.toString().length;
}

/** The [text node, offset] at character `offset` of `root`'s text. */
function pointAt(root, offset) {
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
  let left = offset;
  let last = null;
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    if (left <= node.length) return [node, left];
    left -= node.length;
    last = node;
  }
  return last ? [last, last.length] : [root, 0];
}
