// The playground page: an editor whose every edit runs layerdsl (under Pyodide, in this page)
// and shows its diagnostics, summary, diagram and generated source. The model text lives in the
// address (#code=...), so a link reproduces it.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { analyze: null, result: null, tab: "model", timer: null, examples: {} };
const CODE_NOTES = {
  keras: "Keras 3 source: a standalone module that needs only keras.",
  torch: "PyTorch source: a standalone module that needs only torch.",
  numpy: "NumPy source: a standalone module that needs only numpy.",
  run: "Running a model needs Python: NumPy is not available inside this page. This runs it:",
};

function escapeHtml(text) {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

function textFromHash() {
  const match = /^#code=(.*)$/s.exec(location.hash);
  if (!match) return null;
  try { return decodeURIComponent(match[1]); } catch (e) { return null; }
}

function keepInHash(text) {
  history.replaceState(null, "", "#code=" + encodeURIComponent(text));
}

// Character offset of (line, column), both from 1, as layerdsl counts them: lines end at "\n",
// columns count code points (a JavaScript string index counts UTF-16 units).
function offsetOf(text, line, column) {
  let offset = 0;
  for (let l = 1; l < line; l++) {
    const next = text.indexOf("\n", offset);
    if (next < 0) return text.length;
    offset = next + 1;
  }
  for (let c = 1; c < column && offset < text.length && text[offset] !== "\n"; c++) {
    offset += text.codePointAt(offset) > 0xffff ? 2 : 1;
  }
  return offset;
}

function renderEditor(text, diagnostics) {
  const lines = text.split("\n");
  const marked = new Map(diagnostics.map((d) => [d.line, d.severity]));
  $("gutter").innerHTML = lines
    .map((_, i) => (marked.has(i + 1) ? `<span class="${marked.get(i + 1)}" data-line="${i + 1}">${i + 1}</span>` : `${i + 1}`))
    .join("\n");
  const spans = diagnostics
    .map((d) => ({ d, start: offsetOf(text, d.line, d.column), end: offsetOf(text, d.end_line, d.end_column) }))
    .sort((a, b) => a.start - b.start);
  let html = "", at = 0;
  for (const { d, start, end } of spans) {
    if (start < at) continue; // overlapping marks: the first one wins
    const stop = Math.max(end, start + 1);
    html += escapeHtml(text.slice(at, start));
    html += `<mark class="${d.severity}" data-line="${d.line}" data-column="${d.column}">${escapeHtml(text.slice(start, stop) || " ")}</mark>`;
    at = stop;
  }
  $("backdrop").innerHTML = html + escapeHtml(text.slice(at)) + "\n";
  syncScroll();
}

function syncScroll() {
  $("backdrop").scrollTop = $("source").scrollTop;
  $("backdrop").scrollLeft = $("source").scrollLeft;
  $("gutter").scrollTop = $("source").scrollTop;
}

function renderDiagnostics(diagnostics) {
  const list = $("diagnostics");
  list.innerHTML = "";
  if (!diagnostics.length) {
    list.innerHTML = '<li class="ok">no errors</li>';
    return;
  }
  for (const d of diagnostics) {
    const item = document.createElement("li");
    item.className = d.severity;
    item.dataset.line = d.line;
    item.dataset.column = d.column;
    const extra = [...d.notes.map((n) => `note: ${n}`), ...(d.hint ? [`hint: ${d.hint}`] : [])];
    item.textContent = [`model.layers:${d.line}:${d.column}: ${d.severity}: ${d.message}`, ...extra].join("\n");
    item.addEventListener("click", () => {
      const source = $("source");
      const start = offsetOf(source.value, d.line, d.column);
      source.focus();
      source.setSelectionRange(start, offsetOf(source.value, d.end_line, d.end_column));
    });
    list.appendChild(item);
  }
}

function renderOutputs() {
  const result = state.result;
  if (!result) return;
  const ok = result.summary !== null;
  if (ok) {
    $("summary").textContent = result.summary;
    $("diagram").innerHTML = result.svg; // SVG written by layerdsl.graph, every text escaped there
  }
  $("pane-model").classList.toggle("stale", !ok);
  const code = state.tab === "run" ? result.run : result.sources[state.tab];
  if (state.tab !== "model" && code) $("code").textContent = code;
  $("code-note").textContent = CODE_NOTES[state.tab] || "";
}

function update() {
  const text = $("source").value;
  keepInHash(text);
  if (!state.analyze) return;
  const started = performance.now();
  state.result = JSON.parse(state.analyze(text));
  renderEditor(text, state.result.diagnostics);
  renderDiagnostics(state.result.diagnostics);
  renderOutputs();
  const errors = state.result.diagnostics.length;
  $("status").textContent = errors
    ? `${errors} error${errors > 1 ? "s" : ""}`
    : `${state.result.total.toLocaleString("en-US")} parameters · checked in ${Math.round(performance.now() - started)} ms`;
}

function scheduleUpdate() {
  clearTimeout(state.timer);
  state.timer = setTimeout(update, 150);
}

function showTab(tab) {
  state.tab = tab;
  for (const button of document.querySelectorAll("#tabs button")) {
    button.classList.toggle("active", button.dataset.tab === tab);
  }
  $("pane-model").hidden = tab !== "model";
  $("pane-code").hidden = tab === "model";
  $("copy").textContent = "Copy";
  renderOutputs();
}

async function copyCode() {
  const text = $("code").textContent;
  try {
    await navigator.clipboard.writeText(text);
  } catch (e) { // no clipboard permission: the old way, through a selected textarea
    const scratch = document.createElement("textarea");
    scratch.value = text;
    document.body.appendChild(scratch);
    scratch.select();
    document.execCommand("copy");
    scratch.remove();
  }
  $("copy").textContent = "Copied";
}

function setText(text) {
  $("source").value = text;
  update();
}

async function main() {
  const manifest = await (await fetch("manifest.json")).json();
  state.examples = manifest.examples;
  for (const name of Object.keys(manifest.examples)) {
    const option = document.createElement("option");
    option.value = option.textContent = name;
    $("examples").appendChild(option);
  }
  $("source").value = textFromHash() ?? manifest.examples.mnist_convnet ?? "input 28x28x1\nconv2d 8 3 | relu\nflatten\ndense 10 | softmax\n";
  $("source").addEventListener("input", scheduleUpdate);
  $("source").addEventListener("scroll", syncScroll);
  $("examples").addEventListener("change", (e) => e.target.value && setText(state.examples[e.target.value]));
  for (const button of document.querySelectorAll("#tabs button")) {
    button.addEventListener("click", () => showTab(button.dataset.tab));
  }
  $("copy").addEventListener("click", copyCode);
  $("share").addEventListener("click", () => navigator.clipboard && navigator.clipboard.writeText(location.href));
  window.addEventListener("hashchange", () => {
    const text = textFromHash();
    if (text !== null && text !== $("source").value) setText(text);
  });
  renderEditor($("source").value, []);

  $("status").textContent = "Loading Python (Pyodide)…";
  const pyodide = await loadPyodide({ indexURL: new URL("pyodide/", location.href).href });
  $("status").textContent = "Loading lark and layerdsl…";
  await pyodide.loadPackage(manifest.wheels.map((wheel) => new URL(wheel, location.href).href));
  pyodide.runPython(await (await fetch("glue.py")).text());
  state.analyze = pyodide.globals.get("analyze");
  document.body.dataset.ready = "1";
  update();
}

main().catch((error) => {
  $("status").textContent = "Failed: " + error;
  document.body.dataset.failed = String(error);
  console.error(error);
});
