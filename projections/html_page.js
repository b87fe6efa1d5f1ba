// The HTML trace page's script (projections/html.py embeds it). It builds the page from
// the JSON in #trace-data with DOM calls only (textContent, never innerHTML): everything
// in that JSON came from the log, sources and outputs included, and must stay text.
// A cell's row is built at once; its body only when it is first opened, which keeps a
// page of thousands of cells quick to open.
"use strict";
(function () {
  const data = JSON.parse(document.getElementById("trace-data").textContent);
  const session = { from: 0, span: Math.max(data.end, 0.001) };  // the axis of the rows

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function ms(value) {
    if (value === null || value === undefined) return "-";
    if (value < 10) return value.toFixed(1) + " ms";
    if (value < 1000) return Math.round(value) + " ms";
    return (value / 1000).toFixed(value < 100000 ? 2 : 1) + " s";
  }

  const at = (t) => (t === null || t === undefined ? "-" : "+" + ms(t));
  const fraction = (t, axis) => Math.min(1, Math.max(0, (t - axis.from) / axis.span));
  const pct = (t, axis) => fraction(t, axis) * 100 + "%";
  const json = (value) => (value === undefined ? "(none)" : JSON.stringify(value, null, 2));

  function facts(pairs) {
    const list = el("dl", "facts");
    for (const [name, value] of pairs) {
      if (value === null || value === undefined || value === "") continue;
      list.append(el("dt", "", name), el("dd", "", value));
    }
    return list;
  }

  // -- the header ---------------------------------------------------------------------

  function shutdownText() {
    if (data.shutdown_finished !== null) return "shut down at " + at(data.shutdown_finished);
    if (data.shutdown_begun !== null) return "shutting down since " + at(data.shutdown_begun);
    return "open (not shut down)";
  }

  function header() {
    const counts = { ok: 0, failed: 0, terminated: 0, running: 0 };
    for (const cell of data.cells) counts[cell.state] += 1;
    const parts = Object.entries(counts).filter(([, n]) => n > 0);
    const detail = parts.map(([state, n]) => n + " " + state).join(", ");
    const top = el("header", "summary");
    const title = el("h1", "", "Session ");
    title.append(el("code", "session-id", data.session));
    const started = data.events ? new Date(data.origin_ms).toISOString() : null;
    const events = data.events + (data.repeats ? " (" + data.repeats + " repeated, skipped)" : "");
    top.append(
      title,
      facts([
        ["cells", data.cells.length + (detail ? " (" + detail + ")" : "")],
        ["first event", started],
        ["time span", ms(data.end)],
        ["shutdown", shutdownText()],
        ["max yield time", data.max_yield_time_ms === null ? null : data.max_yield_time_ms + " ms"],
        ["events", events],
      ]),
    );
    return top;
  }

  function controls(list) {
    const bar = el("div", "controls");
    const label = el("label", "", "show ");
    const select = el("select", "");
    select.id = "filter";
    for (const state of ["all", "failed", "terminated", "running", "ok"]) {
      select.append(el("option", "", state));
    }
    select.addEventListener("change", () => {
      list.dataset.filter = select.value;
    });
    label.append(select);
    const legend = el("span", "legend");
    const keys = [
      ["seg life", "alive"],
      ["seg waiting", "waiting on a tool or timer"],
      ["seg yielded", "yielded: the model had an answer"],
      ["mark tool", "tool call"],
      ["mark timer", "timer"],
      ["mark note", "notification"],
    ];
    for (const [className, text] of keys) {
      const key = el("span", "key");
      key.append(el("span", className), document.createTextNode(" " + text));
      legend.append(key);
    }
    bar.append(label, legend);
    return bar;
  }

  function axis() {
    const row = el("div", "axis");
    row.append(el("span", ""), el("span", "id", "cell"), el("span", "badge", "state"));
    row.append(el("span", "label", "source"));
    const track = el("span", "track");
    ticks(track, session, true);
    for (const mark of data.marks) track.append(marker("mark session", mark.t, mark.what, session));
    row.append(track, el("span", "dur", "time"));
    return row;
  }

  // Five labels under `axis`: times from the session's start, or (`fromStart` false)
  // from the axis's own start.
  function ticks(track, axis, fromStart) {
    for (let i = 0; i <= 4; i += 1) {
      const offset = (axis.span * i) / 4;
      const tick = el("span", "tick", fromStart ? at(axis.from + offset) : ms(offset));
      tick.style.left = i * 25 + "%";
      track.append(tick);
    }
  }

  // -- a cell's row -------------------------------------------------------------------

  function segment(className, from, to, title, axis) {
    const seg = el("span", "seg " + className);
    seg.style.left = pct(from, axis);
    seg.style.width = (fraction(to, axis) - fraction(from, axis)) * 100 + "%";
    seg.title = title;
    return seg;
  }

  function marker(className, t, title, axis) {
    const mark = el("span", className);
    mark.style.left = pct(t, axis);
    mark.title = at(t) + " " + title;
    return mark;
  }

  const endOf = (cell) => (cell.t1 === null ? data.end : cell.t1);

  // The cell's bar on `axis`: the session's in its row, its own life in its body.
  function track(cell, axis) {
    const bar = el("span", "track");
    const end = endOf(cell);
    bar.append(segment("life", cell.t0, end, "cell " + cell.id + ": " + ms(end - cell.t0), axis));
    for (const [from, to] of cell.waiting) {
      bar.append(segment("waiting", from, to, "waiting " + at(from) + " to " + at(to), axis));
    }
    for (const [from, to] of cell.yielded) {
      bar.append(segment("yielded", from, to, "yielded " + at(from) + " to " + at(to), axis));
    }
    for (const call of cell.calls) {
      const title = call.id + " " + call.name + ": " + call.outcome;
      bar.append(marker("mark tool", call.t0, title, axis));
    }
    for (const timer of cell.timers) {
      const title = "timer " + timer.id + " set, " + timer.delay + " ms";
      bar.append(marker("mark timer", timer.t0, title, axis));
    }
    for (const note of cell.notes) {
      bar.append(marker("mark note", note.t, "notify: " + note.text, axis));
    }
    return bar;
  }

  function zoomed(cell) {
    const axis = { from: cell.t0, span: Math.max(endOf(cell) - cell.t0, 0.001) };
    const box = el("div", "zoom");
    const scale = el("div", "track scale");
    ticks(scale, axis, false);
    box.append(track(cell, axis), scale);
    return box;
  }

  function row(cell) {
    const details = el("details", "cell state-" + cell.state);
    details.id = "cell-" + cell.id;
    details.dataset.cell = cell.id;
    const summary = el("summary", "");
    const firstLine = cell.source.split("\n", 1)[0];
    summary.append(
      el("span", "id", cell.id),
      el("span", "badge " + cell.state, cell.state),
      el("span", "label", firstLine),
      track(cell, session),
      el("span", "dur", ms(endOf(cell) - cell.t0) + (cell.t1 === null ? "+" : "")),
    );
    details.append(summary);
    details.addEventListener("toggle", () => {
      if (details.open && details.childElementCount === 1) details.append(body(cell));
    });
    return details;
  }

  // -- a cell's body (built when it is first opened) ----------------------------------

  function section(title, content) {
    const part = el("section", "part");
    part.append(el("h3", "", title), content);
    return part;
  }

  function ending(cell) {
    if (cell.state === "running") return "still running at the end of the log";
    if (cell.state === "terminated") return "terminated (" + cell.reason + ") at " + at(cell.t1);
    return (cell.state === "failed" ? "failed at " : "completed at ") + at(cell.t1);
  }

  function source(text) {
    const lines = el("ol", "source");
    for (const line of text.split("\n")) lines.append(el("li", "", line));
    return lines;
  }

  function output(item) {
    const entry = el("li", "output");
    entry.append(el("span", "time", at(item.t)));
    if (item.type === "input_text") {
      entry.append(el("pre", "text", item.text));
      return entry;
    }
    const url = String(item.image_url || item.audio_url || "");
    if (item.type === "input_image" && /^data:image\//i.test(url)) {
      const image = el("img", "image");
      image.alt = "image output";
      image.src = url;  // a data: URL; the page's policy would refuse any other
      entry.append(image);
      return entry;
    }
    const shown = url.length > 300 ? url.slice(0, 300) + "... (" + url.length + " characters)" : url;
    const what = item.type === "input_image" ? "image (not a data: URL, not loaded)" : item.type;
    entry.append(el("span", "kind", what + ": "), el("code", "url", shown));
    return entry;
  }

  function toolCall(call) {
    const box = el("div", "call outcome-" + call.outcome);
    const took = call.t1 === null ? "" : " in " + ms(call.t1 - call.t0);
    const title = el("div", "call-title");
    title.append(
      el("code", "call-name", call.name),
      document.createTextNode(" " + call.id + " (" + call.kind + ") at " + at(call.t0) + ": "),
      el("span", "call-outcome", call.outcome + took),
    );
    box.append(title, el("div", "caption", "input"));
    const input = call.kind === "freeform" && typeof call.input === "string" ? call.input : json(call.input);
    box.append(el("pre", "call-input", input));
    if (call.outcome === "completed") {
      box.append(el("div", "caption", "result"), el("pre", "call-result", json(call.result)));
    } else if (call.outcome === "failed") {
      box.append(el("div", "caption", "error"), el("pre", "call-error", call.error));
    }
    for (const attempt of call.attempts) {
      const text = "attempt " + attempt.attempt + " failed at " + at(attempt.t) + ": " + attempt.error;
      box.append(el("div", "attempt", text));
    }
    return box;
  }

  function timerText(timer) {
    const set = "timer " + timer.id + " (" + timer.delay + " ms) set at " + at(timer.t0);
    if (timer.end === "pending") return set + ", dropped with its cell";
    return set + ", " + timer.end + " at " + at(timer.t1);
  }

  function list(items, text) {
    const entries = el("ul", "plain");
    for (const item of items) entries.append(el("li", "", text(item)));
    return entries;
  }

  function writes(stored) {
    const table = el("table", "writes");
    for (const [key, value] of Object.entries(stored)) {
      const line = el("tr", "");
      line.append(el("td", "key", key), el("td", "", ""));
      line.lastChild.append(el("pre", "", value));
      table.append(line);
    }
    return table;
  }

  function body(cell) {
    const box = el("div", "body");
    const end = cell.t1 === null ? null : ms(cell.t1 - cell.t0);
    box.append(
      facts([
        ["exec call", cell.call],
        ["admitted", at(cell.t0)],
        ["ended", ending(cell)],
        ["ran for", end],
        ["closed", cell.closed === null ? null : at(cell.closed)],
        ["yield time", cell.yield_time_ms === null ? null : cell.yield_time_ms + " ms"],
        ["tools", cell.tools.join(", ") || "none"],
      ]),
    );
    if (cell.error !== null) box.append(section("error", el("pre", "error", cell.error)));
    box.append(section("timeline of this cell, from its admission", zoomed(cell)));
    box.append(section("source", source(cell.source)));
    const outputs = el("ol", "outputs");
    for (const item of cell.outputs) outputs.append(output(item));
    box.append(section("outputs", cell.outputs.length ? outputs : el("p", "none", "no output")));
    if (cell.calls.length) {
      const calls = el("div", "calls");
      for (const call of cell.calls) calls.append(toolCall(call));
      box.append(section("tool calls", calls));
    }
    if (cell.timers.length) box.append(section("timers", list(cell.timers, timerText)));
    if (cell.notes.length) {
      const noteText = (n) => at(n.t) + " #" + n.id + " (" + n.state + "): " + n.text;
      box.append(section("notifications", list(cell.notes, noteText)));
    }
    const answers = cell.observations.map((o) => [o.t, o.kind + ", " + o.outputs + " outputs seen"]);
    for (const t of cell.yield_requests) answers.push([t, "yield_control()"]);
    answers.sort((a, b) => a[0] - b[0]);
    const answerText = ([t, text]) => at(t) + " " + text;
    if (answers.length) box.append(section("answers and yields", list(answers, answerText)));
    if (Object.keys(cell.writes).length) box.append(section("stored writes", writes(cell.writes)));
    return box;
  }

  // -- the page -------------------------------------------------------------------------

  const app = document.getElementById("app");
  const rows = el("div", "cells");
  rows.id = "cells";
  rows.dataset.filter = "all";
  const fragment = document.createDocumentFragment();
  for (const cell of data.cells) fragment.append(row(cell));
  rows.append(fragment);
  app.append(header(), controls(rows), axis(), rows);
  // A link to a cell (`page.html#cell-12`) opens it.
  function openLinked() {
    const wanted = document.getElementById(decodeURIComponent(location.hash.slice(1)));
    if (!(wanted instanceof HTMLDetailsElement)) return;
    wanted.open = true;
    wanted.scrollIntoView();
  }
  window.addEventListener("hashchange", openLinked);
  if (location.hash) openLinked();
  document.documentElement.dataset.builtMs = performance.now().toFixed(1);
})();
