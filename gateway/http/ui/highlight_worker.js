// The tokenizer of highlight.js, in a Web Worker so that no code block can hold up the page.
//
// A classic worker script: it loads Prism with importScripts and answers each message
// {text, grammar} with Prism.tokenize's tree for it, which reaches the page as plain data
// (strings, arrays, and {type, alias, content} objects). It builds no HTML and has no DOM.
// highlight.js names the grammar from its own list; a name that is not a grammar here (not
// an own property of Prism.languages holding an object) gets the text back as one string.

// Read by Prism as it starts: in a worker, Prism otherwise answers messages itself, with HTML.
self.Prism = { disableWorkerMessageHandler: true };
importScripts("vendor/prism-1.30.0.min.js");

self.onmessage = (event) => {
  const { text, grammar } = event.data;
  const languages = self.Prism.languages;
  const language = Object.hasOwn(languages, grammar) ? languages[grammar] : null;
  const isGrammar = language !== null && typeof language === "object";
  self.postMessage(isGrammar ? self.Prism.tokenize(text, language) : [text]);
};
