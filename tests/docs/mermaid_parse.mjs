// Parse Mermaid sources with the real Mermaid library (node_modules/mermaid, pinned in
// package.json). Input on stdin: a JSON array of {"name", "source"}; output on stdout: a JSON
// array of {"name", "ok", "type", "error"}. Mermaid sanitises labels with DOMPurify, which needs a
// DOM: jsdom provides one (Mermaid's parse does not render, so no layout engine is needed).
import { JSDOM } from 'jsdom';

const dom = new JSDOM('<!doctype html><html><body></body></html>');
globalThis.window = dom.window;
globalThis.document = dom.window.document;
const { default: mermaid } = await import('mermaid');
mermaid.initialize({ startOnLoad: false, securityLevel: 'strict' });

let input = '';
for await (const chunk of process.stdin) input += chunk;
const results = [];
for (const { name, source } of JSON.parse(input)) {
  try {
    const parsed = await mermaid.parse(source);
    results.push({ name, ok: true, type: parsed.diagramType, error: null });
  } catch (err) {
    results.push({ name, ok: false, type: null, error: String(err.message ?? err).split('\n').slice(0, 4).join('\n') });
  }
}
process.stdout.write(JSON.stringify(results));
