/*
 * Agent Gateway studio (SPEC §20): the web console's run timeline, event inspector, time travel
 * (fork + re-run), side-by-side comparison, live runs and usage. Plain JS, no build step, no
 * external resources; console.js builds it with window.agwStudio(host) and calls its hooks.
 *
 * Data (all through the console's authenticated fetch):
 *  - Timeline. GET /api/ap/chat?chatId=&includeRawMessages=true. The run's stored messages give
 *    one bar per model call (the response's messages share a _msgId; its first message carries
 *    _timing {startedAt, firstDeltaAt, endedAt} and _usage {promptTokens, completionTokens,
 *    modelKey}) and one per tool/action call (the role=tool result's _timing). Plan tasks and
 *    GRAPH nodes (the run's last plan in the history) are bars spanning their calls. The run's
 *    own duration is run.complete.durationMs (else its terminal event's time); its tokens and
 *    points are run.complete.usage.
 *  - Graph. A GRAPH agent (GET /api/ap/agent → graph {nodes, edges}) is drawn as SVG generated
 *    from that definition by a small layered layout (START on top, END at the bottom, edges that
 *    go back up — loops — on the right). The path the run took is highlighted: the order in
 *    which the run's plan tasks settled (plan updates in the history) gives the node visits.
 *  - Events. The exact events of a run: those this page received live (kept per run), else the
 *    gateway's replay (GET /api/ap/run/stream?after=0, while the run is retained), else the
 *    history's snapshot events. Filterable by text; deltas can be hidden.
 *  - Time travel. "Edit" on a question and "Re-run from here" on a run: POST /api/ap/chat/fork
 *    {chatId, runId, position: "before"} (a new chat holding the runs before it), the new chat
 *    is opened and the (edited) question sent there with the run's agent, references and params;
 *    the original and the re-run are then shown side by side. For a GRAPH run the timeline can
 *    re-run from a node: the fork carries {node, state} and the chat's next run starts there.
 *  - Live runs. GET /api/ap/runs (refreshed every 3 s while shown); "Open" opens the chat (which
 *    attaches to a live run), "Interrupt" is POST /api/ap/interrupt.
 *  - Usage. GET /api/ap/usage?groupBy=day|agent|model&from=&to=.
 * Accessibility: the tabs follow the WAI-ARIA tabs pattern (arrow keys, Home/End), every control
 * is a real button or form field, Escape closes the panel and returns focus.
 */
(function () {
  "use strict";

  window.agwStudio = function (host) {
    const $ = (id) => document.getElementById(id);
    const el = host.el;
    const TABS = ["timeline", "events", "compare", "runs", "usage"];
    const TERMINAL = new Set(["run.complete", "run.error", "run.cancel"]);
    const me = { tab: "timeline", run: null, compare: null, fork: null, sourceRuns: null, runsTimer: null,
                 stream: null, opener: null, agents: new Map() };
    const enc = encodeURIComponent;

    // ---- formatting ----------------------------------------------------------------------------

    function fmtMs(ms) {
      if (typeof ms !== "number" || !Number.isFinite(ms) || ms < 0) return "—";
      if (ms < 1000) return Math.round(ms) + " ms";
      return (ms / 1000).toFixed(ms < 10000 ? 2 : 1) + " s";
    }
    const fmtNum = (n) => (typeof n === "number" ? n.toLocaleString("en-US") : "—");
    const fmtPoints = (p) => (typeof p === "number" ? (Math.round(p * 1000) / 1000).toString() : "—");
    function textOf(content) {
      if (content == null) return "";
      if (typeof content === "string") return content;
      if (Array.isArray(content)) return content.map((part) => (part && typeof part.text === "string" ? part.text : "")).join("");
      return "";
    }
    const short = (text, n) => (text.length > n ? text.slice(0, n - 1) + "…" : text);
    function button(label, onClick, cls, title) {
      const node = el("button", cls || "", label);
      node.type = "button";
      if (title) { node.title = title; node.setAttribute("aria-label", title); }
      node.addEventListener("click", onClick);
      return node;
    }
    function notice(box, message) {
      box.replaceChildren(el("div", "error", message));
    }

    // ---- the panel and its tabs ----------------------------------------------------------------

    function tabButton(tab) { return $("tab-" + tab); }
    function panel(tab) { return $("studio-" + tab); }

    function openPanel(tab) {
      const box = $("studio");
      if (box.hidden) me.opener = document.activeElement;
      box.hidden = false;
      document.body.classList.add("studio-open");
      $("studio-toggle").setAttribute("aria-expanded", "true");
      selectTab(tab || me.tab, true);
    }
    function closePanel() {
      const box = $("studio");
      if (box.hidden) return;
      box.hidden = true;
      document.body.classList.remove("studio-open");
      $("studio-toggle").setAttribute("aria-expanded", "false");
      stopTimers();
      if (me.opener && document.contains(me.opener)) me.opener.focus();
      me.opener = null;
    }
    function stopTimers() {
      if (me.runsTimer) clearInterval(me.runsTimer);
      me.runsTimer = null;
      if (me.stream) me.stream.abort();
      me.stream = null;
    }
    function selectTab(tab, focus) {
      stopTimers();
      me.tab = tab;
      for (const name of TABS) {
        const on = name === tab;
        tabButton(name).setAttribute("aria-selected", String(on));
        tabButton(name).tabIndex = on ? 0 : -1;
        panel(name).hidden = !on;
      }
      if (focus) tabButton(tab).focus();
      if (tab === "timeline") showTimeline();
      else if (tab === "events") showEvents();
      else if (tab === "compare") showCompare();
      else if (tab === "runs") showRuns();
      else if (tab === "usage") showUsage();
    }

    $("studio-toggle").addEventListener("click", () => ($("studio").hidden ? openPanel() : closePanel()));
    $("studio-close").addEventListener("click", closePanel);
    for (const tab of TABS) tabButton(tab).addEventListener("click", () => selectTab(tab, false));
    $("studio-tabs").addEventListener("keydown", (event) => {
      const at = TABS.indexOf(me.tab);
      const next = { ArrowRight: at + 1, ArrowLeft: at - 1, Home: 0, End: TABS.length - 1 }[event.key];
      if (next === undefined) return;
      event.preventDefault();
      selectTab(TABS[(next + TABS.length) % TABS.length], true);
    });
    $("studio").addEventListener("keydown", (event) => {
      if (event.key === "Escape" && !event.defaultPrevented) {
        event.preventDefault();
        closePanel();
      }
    });

    // ---- reading a run -------------------------------------------------------------------------

    function splitRuns(events) {
      const runs = [];
      let run = null;
      for (const ev of events) {
        if (!run || ev.type === "request.query" || (ev.type === "run.start" && run.runId)) {
          run = { runId: null, events: [] };
          runs.push(run);
        }
        if (ev.type === "run.start") run.runId = ev.runId;
        run.events.push(ev);
      }
      return runs.filter((r) => r.runId);
    }

    async function loadChat(chatId) {
      return host.getData("/api/ap/chat?chatId=" + enc(chatId) + "&includeRawMessages=true");
    }

    // One run of a chat history: its events, stored messages, question, timings and totals.
    function readRun(history, runId) {
      const found = splitRuns(history.events || []).find((r) => r.runId === runId);
      if (!found) return null;
      const events = found.events;
      const query = events.find((e) => e.type === "request.query") || {};
      const start = events.find((e) => e.type === "run.start") || {};
      const end = events.find((e) => TERMINAL.has(e.type)) || null;
      let plan = null;
      const settled = [];
      const status = new Map();
      for (const ev of events) {
        if (ev.type !== "plan.create" && ev.type !== "plan.update") continue;
        plan = ev.plan || [];
        for (const task of plan) {
          const done = task.status === "completed" || task.status === "failed";
          if (done && !["completed", "failed"].includes(status.get(task.taskId))) settled.push(task.taskId);
          status.set(task.taskId, task.status);
        }
      }
      const raw = (history.rawMessages || []).filter((m) => m.runId === runId);
      const t0 = start.timestamp || query.timestamp || 0;
      const duration = end && typeof end.durationMs === "number" ? end.durationMs : end ? end.timestamp - t0 : null;
      const answer = events.filter((e) => e.type === "content.snapshot" && !e.taskId).map((e) => e.text).join("\n\n")
        || events.filter((e) => e.type === "content.snapshot").map((e) => e.text).slice(-1).join("");
      return {
        chatId: history.chatId, chatName: history.chatName, runId, events, raw, query, agentKey: start.agentKey || query.agentKey,
        start: t0, end: end ? t0 + (duration || 0) : null, durationMs: duration, terminal: end, plan, settled,
        usage: (end && end.usage) || null, answer, steps: stepsOf(raw),
      };
    }

    // Model calls (grouped by _msgId) and tool/action calls, in the order they were recorded.
    function stepsOf(raw) {
      const steps = [];
      const byMsg = new Map();
      const calls = new Map();  // tool_call id → {task, call}
      for (const m of raw) {
        if (m.role === "assistant") {
          const key = m._msgId || "msg" + steps.length;
          let step = byMsg.get(key);
          if (!step) {
            step = { kind: "model", start: null, end: null, ttft: null, usage: null, taskId: m._taskId || null,
                     reasoning: "", text: "", calls: [], timed: false };
            byMsg.set(key, step);
            steps.push(step);
          }
          if (m._timing) {
            step.timed = true;
            step.start = m._timing.startedAt;
            step.end = m._timing.endedAt;
            if (typeof m._timing.firstDeltaAt === "number") step.ttft = m._timing.firstDeltaAt - m._timing.startedAt;
          }
          if (m._usage) step.usage = m._usage;
          if (m.reasoning_content) step.reasoning += textOf(m.reasoning_content);
          if (m.content) step.text += textOf(m.content);
          for (const call of m.tool_calls || []) {
            const name = call && call.function ? call.function.name : "tool";
            step.calls.push(name);
            calls.set(call.id, { task: m._taskId || null, args: call.function ? call.function.arguments : "" });
          }
        } else if (m.role === "tool") {
          const call = calls.get(m.tool_call_id) || {};
          const timing = m._timing || {};
          steps.push({
            kind: m._actionId ? "action" : "tool", name: m.name || "tool", taskId: call.task || m._taskId || null,
            start: typeof timing.startedAt === "number" ? timing.startedAt : null,
            end: typeof timing.endedAt === "number" ? timing.endedAt : null,
            args: call.args || "", result: textOf(m.content), timed: !!m._timing,
          });
        }
      }
      // Messages no model call wrote (a GRAPH tool node's call, a GRAPH answer template) have no _timing;
      // files written before timings existed have none at all: there every response is a model call.
      const timed = steps.some((s) => s.kind === "model" && s.timed);
      return steps.filter((s) => s.kind !== "model" || s.timed || (!timed && (s.text || s.reasoning)));
    }

    const durationOf = (step) => (typeof step.start === "number" && typeof step.end === "number" ? step.end - step.start : null);

    // ---- the timeline --------------------------------------------------------------------------

    function showRun(chatId, runId, tab) {
      me.run = { chatId, runId };
      openPanel(tab);
    }

    async function showTimeline() {
      const box = panel("timeline");
      if (!me.run) {
        box.replaceChildren(el("p", "muted", "Pick a run: “Timeline” under any answer."));
        return;
      }
      const { chatId, runId } = me.run;
      box.replaceChildren(el("p", "muted", "loading run " + runId + "…"));
      let run;
      try {
        run = readRun(await loadChat(chatId), runId);
      } catch (err) {
        notice(box, "✗ " + err.message);
        return;
      }
      if (!run) {
        notice(box, "run " + runId + " is not in chat " + chatId);
        return;
      }
      const agent = await agentOf(run.agentKey);
      box.replaceChildren(runHeader(run));
      if (agent && agent.graph) box.append(graphSection(run, agent));
      box.append(timeline(run, agent));
      const actions = el("div", "studio-actions");
      actions.append(button("Events", () => showRun(chatId, runId, "events")),
        button("↻ Re-run from here", () => rerun(infoOf(run), run.query.message || ""), "", "Re-run from here: fork before this run and ask again"),
        button("Refresh", () => showTimeline()));
      box.prepend(actions);
    }

    function runHeader(run) {
      const head = el("div", "tl-summary");
      const title = el("h3", "", (run.agentKey || "run") + " · " + short(run.query.message || "", 60));
      const usage = run.usage || {};
      const state = run.terminal ? (run.terminal.type === "run.complete" ? "completed" : run.terminal.type === "run.cancel" ? "cancelled" : "error") : "running";
      const facts = el("dl", "facts");
      const fact = (k, v) => {
        const pair = el("div");
        pair.append(el("dt", "", k), el("dd", "", v));
        facts.append(pair);
      };
      fact("status", state + (run.terminal && run.terminal.finishReason ? " (" + run.terminal.finishReason + ")" : ""));
      fact("duration", fmtMs(run.durationMs));
      fact("tokens", usage.totalTokens != null ? fmtNum(usage.totalTokens) + " (" + fmtNum(usage.promptTokens) + " in / " + fmtNum(usage.completionTokens) + " out)" : "—");
      fact("points", fmtPoints(usage.points));
      fact("calls", run.steps.filter((s) => s.kind === "model").length + " model · " + run.steps.filter((s) => s.kind !== "model").length + " tool");
      head.append(title, el("div", "muted", "run " + run.runId + " · chat " + run.chatId), facts);
      return head;
    }

    function stepLabel(step) {
      if (step.kind === "model") {
        const model = step.usage && step.usage.modelKey ? step.usage.modelKey : "model";
        const what = step.calls.length ? " → " + step.calls.join(", ") : "";
        return "model · " + model + what;
      }
      return step.kind + " · " + step.name;
    }

    function stepDetail(step) {
      const detail = el("div", "tl-detail");
      const block = (label, text) => {
        if (!text) return;
        detail.append(el("div", "muted", label), el("pre", "", text));
      };
      if (step.kind === "model") {
        const bits = [];
        if (step.usage) bits.push(fmtNum(step.usage.promptTokens) + " prompt + " + fmtNum(step.usage.completionTokens) + " completion tokens");
        if (step.ttft != null) bits.push("first delta after " + fmtMs(step.ttft));
        if (bits.length) detail.append(el("div", "muted", bits.join(" · ")));
        block("reasoning", step.reasoning);
        block("text", step.text);
        if (step.calls.length) block("tool calls", step.calls.join(", "));
      } else {
        block("arguments", step.args);
        block("result", step.result);
      }
      return detail;
    }

    // A row: label, a bar on the run's time axis, the duration; a <details> holds the rest.
    function row(cls, label, start, end, meta, detail, axis) {
      const item = el("li", "tl-row " + cls);
      const details = el("details");
      const summary = el("summary");
      const track = el("span", "tl-track");
      track.setAttribute("aria-hidden", "true");
      if (typeof start === "number" && typeof end === "number") {
        const bar = el("span", "tl-bar");
        bar.style.left = (100 * (start - axis.t0) / axis.span).toFixed(2) + "%";
        bar.style.width = Math.max(0.6, 100 * (end - start) / axis.span).toFixed(2) + "%";
        track.append(bar);
      }
      summary.append(el("span", "tl-label", label), track,
        el("span", "tl-duration", fmtMs(typeof start === "number" && typeof end === "number" ? end - start : null)));
      if (meta) summary.append(el("span", "tl-meta", meta));
      details.append(summary);
      if (detail) details.append(detail);
      item.append(details);
      return item;
    }

    function timeline(run, agent) {
      const steps = run.steps;
      const times = steps.flatMap((s) => [s.start, s.end]).filter((t) => typeof t === "number");
      const t0 = Math.min(run.start || Infinity, ...times);
      const t1 = Math.max(run.end || 0, ...times);
      const axis = { t0: Number.isFinite(t0) ? t0 : 0, span: Math.max(1, (Number.isFinite(t1) ? t1 : 0) - (Number.isFinite(t0) ? t0 : 0)) };
      const list = el("ol", "tl-rows");
      list.setAttribute("aria-label", "Run timeline");
      list.append(row("tl-run", "run", run.start, run.end, run.usage && run.usage.totalTokens != null ? fmtNum(run.usage.totalTokens) + " tok · " + fmtPoints(run.usage.points) + " pts" : "", null, axis));
      const stepRow = (step, nested) => {
        const tokens = step.usage ? fmtNum(step.usage.promptTokens) + "→" + fmtNum(step.usage.completionTokens) + " tok" : "";
        return row("tl-" + step.kind + (nested ? " nested" : ""), stepLabel(step), step.start, step.end, tokens, stepDetail(step), axis);
      };
      // blocks in time order: a step outside any task, or a task (plan task / graph node) with its steps
      const tasks = new Map();
      for (const task of run.plan || []) tasks.set(task.taskId, { task, steps: [] });
      const blocks = [];
      for (const step of steps) {
        if (step.taskId && !tasks.has(step.taskId)) tasks.set(step.taskId, { task: { taskId: step.taskId, description: "", status: "" }, steps: [] });
        if (step.taskId) tasks.get(step.taskId).steps.push(step);
        else blocks.push({ at: step.start != null ? step.start : Infinity, step });
      }
      let order = 0;
      for (const entry of tasks.values()) {
        const starts = entry.steps.map((s) => s.start).filter((t) => typeof t === "number");
        blocks.push({ at: starts.length ? Math.min(...starts) : Infinity, entry, order: order++ });
      }
      blocks.sort((a, b) => a.at - b.at || (a.order || 0) - (b.order || 0));
      for (const block of blocks) {
        if (block.step) {
          list.append(stepRow(block.step, false));
          continue;
        }
        const { task, steps: own } = block.entry;
        const starts = own.map((s) => s.start).filter((t) => typeof t === "number");
        const ends = own.map((s) => s.end).filter((t) => typeof t === "number");
        const icon = agent && agent.mode === "GRAPH" ? "node " : "task ";
        const label = icon + task.taskId + (task.description ? " · " + short(task.description, 40) : "");
        const item = row("tl-task", label, starts.length ? Math.min(...starts) : null, ends.length ? Math.max(...ends) : null,
          task.status || "", null, axis);
        item.dataset.status = task.status || "";
        item.dataset.taskId = task.taskId;
        list.append(item);
        for (const step of own) list.append(stepRow(step, true));
      }
      return list;
    }

    async function agentOf(key) {
      if (!key) return null;
      if (!me.agents.has(key)) {
        try {
          me.agents.set(key, await host.getData("/api/ap/agent?agentKey=" + enc(key)));
        } catch (err) {
          me.agents.set(key, null);  // unknown now (removed or renamed): draw without it
        }
      }
      return me.agents.get(key);
    }

    // ---- the graph of a GRAPH agent ------------------------------------------------------------

    const SVG = "http://www.w3.org/2000/svg";
    function svg(tag, attrs, text) {
      const node = document.createElementNS(SVG, tag);
      for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
      if (text != null) node.textContent = text;
      return node;
    }

    // Layered layout of {nodes, edges}: back edges (found by a depth-first walk from START) go up
    // on the right; every other edge goes down. Returns positions and the edge kinds.
    function layout(graph) {
      const names = ["START", ...graph.nodes.map((n) => n.name), "END"];
      const out = new Map(names.map((n) => [n, []]));
      graph.edges.forEach((edge, index) => { if (out.has(edge.from) && out.has(edge.to)) out.get(edge.from).push({ ...edge, index }); });
      const back = new Set();
      const seen = new Set();
      const onStack = new Set();
      const order = [];
      const walk = (name) => {
        seen.add(name);
        onStack.add(name);
        order.push(name);
        for (const edge of out.get(name)) {
          if (onStack.has(edge.to)) back.add(edge.index);
          else if (!seen.has(edge.to)) walk(edge.to);
        }
        onStack.delete(name);
      };
      walk("START");
      for (const name of names) if (!seen.has(name)) walk(name);
      const layer = new Map(names.map((n) => [n, 0]));
      for (let pass = 0; pass < names.length; pass++) {  // longest path over the forward edges
        let changed = false;
        for (const edge of graph.edges) {
          const index = graph.edges.indexOf(edge);
          if (back.has(index) || !layer.has(edge.from) || !layer.has(edge.to) || edge.from === edge.to) continue;
          if (layer.get(edge.to) < layer.get(edge.from) + 1) { layer.set(edge.to, layer.get(edge.from) + 1); changed = true; }
        }
        if (!changed) break;
      }
      const deepest = Math.max(...[...layer.entries()].filter(([n]) => n !== "END").map(([, l]) => l));
      layer.set("END", Math.max(layer.get("END"), deepest + 1));
      const rows = [];
      for (const name of order) {
        const l = layer.get(name);
        (rows[l] = rows[l] || []).push(name);
      }
      const W = 150, H = 40, GX = 36, GY = 56;
      const widest = Math.max(...rows.map((r) => (r ? r.length : 0)));
      const width = widest * (W + GX) + 120;
      const pos = new Map();
      rows.forEach((members, l) => {
        if (!members) return;
        const rowWidth = members.length * (W + GX) - GX;
        members.forEach((name, i) => pos.set(name, { x: (width - 80 - rowWidth) / 2 + i * (W + GX), y: 16 + l * (H + GY), w: W, h: H }));
      });
      return { pos, back, width, height: rows.length * (H + GY) - GY + 32, W, H };
    }

    // Node visits in order (task ids "name" / "name#2" → name) and the edges they followed.
    function pathOf(run, graph) {
      const visits = run.settled.map((taskId) => String(taskId).replace(/#\d+$/, ""));
      const failed = new Set((run.plan || []).filter((t) => t.status === "failed").map((t) => String(t.taskId).replace(/#\d+$/, "")));
      const hops = new Set();
      const sequence = ["START", ...visits];
      if (run.terminal && run.terminal.type === "run.complete") sequence.push("END");
      for (let i = 1; i < sequence.length; i++) {
        const index = graph.edges.findIndex((e) => e.from === sequence[i - 1] && e.to === sequence[i]);
        if (index >= 0) hops.add(index);
      }
      const counts = new Map();
      for (const name of visits) counts.set(name, (counts.get(name) || 0) + 1);
      return { counts, failed, hops };
    }

    function drawGraph(graph, path, onPick) {
      const { pos, back, width, height, H } = layout(graph);
      const root = svg("svg", { class: "graph", role: "group",
                                 "aria-label": "Workflow graph: " + graph.nodes.length + " nodes, " + graph.edges.length + " edges" });
      const defs = svg("defs");
      for (const [id, cls] of [["arrow", "edge-head"], ["arrow-hot", "edge-head hot"]]) {
        const marker = svg("marker", { id: "agw-" + id, viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 9, markerHeight: 9,
                                       markerUnits: "userSpaceOnUse", orient: "auto-start-reverse" });
        marker.append(svg("path", { d: "M0,0 L10,5 L0,10 z", class: cls }));
        defs.append(marker);
      }
      root.append(defs);
      const edgesLayer = svg("g", { class: "edges" });
      const labels = svg("g", { class: "edge-labels" });
      // several edges between the same two nodes are drawn side by side
      const pairs = new Map();
      const nth = graph.edges.map((edge) => {
        const key = edge.from + ">" + edge.to;
        pairs.set(key, (pairs.get(key) || 0) + 1);
        return pairs.get(key) - 1;
      });
      let right = width;
      let left = 0;
      graph.edges.forEach((edge, index) => {
        const a = pos.get(edge.from), b = pos.get(edge.to);
        if (!a || !b) return;
        const hot = path.hops.has(index);
        const label = edge.condition ? short(edge.condition, 28) : "";
        let d, lx, ly, anchor = "start";
        if (back.has(index) || edge.from === edge.to || b.y <= a.y) {  // a loop: out of the right side and back up
          const x1 = a.x + a.w, y1 = a.y + H / 2, x2 = b.x + b.w, y2 = b.y + H / 2;
          const bend = Math.max(x1, x2) + 40 + nth[index] * 26;
          d = "M" + x1 + "," + y1 + " C" + bend + "," + y1 + " " + bend + "," + y2 + " " + x2 + "," + y2;
          lx = x1 + 0.75 * (bend - x1) + 6; ly = (y1 + y2) / 2 + 4;
        } else {
          const count = pairs.get(edge.from + ">" + edge.to);
          const off = (nth[index] - (count - 1) / 2) * 56;
          const x1 = a.x + a.w / 2 + off / 3, y1 = a.y + H, x2 = b.x + b.w / 2 + off / 3, y2 = b.y;
          const mid = (y1 + y2) / 2;
          const cx1 = a.x + a.w / 2 + off, cx2 = b.x + b.w / 2 + off;
          d = "M" + x1 + "," + y1 + " C" + cx1 + "," + mid + " " + cx2 + "," + mid + " " + x2 + "," + y2;
          lx = (x1 + x2) / 2 + 0.75 * off + (off < 0 ? -8 : 8); ly = mid + 4;
          if (off < 0) anchor = "end";  // the leftmost of several edges is labelled on its left
        }
        const extent = label.length * 5.6 + 8;
        if (anchor === "end") left = Math.min(left, lx - extent);
        else right = Math.max(right, lx + extent);
        const line = svg("path", { d, class: "edge" + (hot ? " hot" : "") + (edge.parallel ? " parallel" : ""),
                                   "marker-end": "url(#agw-" + (hot ? "arrow-hot" : "arrow") + ")" });
        line.dataset.from = edge.from;
        line.dataset.to = edge.to;
        line.append(svg("title", {}, edge.from + " → " + edge.to + (edge.condition ? " if " + edge.condition : "") + (edge.parallel ? " (parallel)" : "")));
        edgesLayer.append(line);
        if (label) labels.append(svg("text", { x: lx, y: ly, "text-anchor": anchor, class: "edge-label" + (hot ? " hot" : "") }, label));
      });
      const x0 = Math.floor(left);
      root.setAttribute("viewBox", x0 + " 0 " + Math.ceil(right - x0) + " " + height);
      root.setAttribute("width", String(Math.ceil(right - x0)));
      root.append(edgesLayer, labels);
      const nodes = svg("g", { class: "nodes" });
      const kinds = new Map(graph.nodes.map((n) => [n.name, n]));
      for (const [name, p] of pos) {
        const def = kinds.get(name);
        const visits = path.counts.get(name) || 0;
        const terminal = name === "START" || name === "END";
        const reached = terminal ? (name === "START" || path.hops.size > 0 && [...path.hops].some((i) => graph.edges[i].to === "END")) : visits > 0;
        const cls = ["node", terminal ? "terminal" : "kind-" + def.kind, reached ? "visited" : "", path.failed.has(name) ? "failed" : ""].join(" ").trim();
        const g = svg("g", { class: cls, transform: "translate(" + p.x + "," + p.y + ")" });
        g.dataset.node = name;
        g.append(svg("rect", { width: p.w, height: p.h, rx: terminal ? 20 : 8 }));
        g.append(svg("text", { x: p.w / 2, y: terminal ? 25 : 18, class: "node-name" }, short(name, 20)));
        if (!terminal) g.append(svg("text", { x: p.w / 2, y: 32, class: "node-kind" }, def.kind + (def.optional ? " · optional" : "")));
        if (visits > 1) g.append(svg("text", { x: p.w - 6, y: 12, class: "node-visits" }, "×" + visits));
        const label = name + (terminal ? "" : " (" + def.kind + ")") + (visits ? ", visited " + visits + (visits > 1 ? " times" : " time") : ", not visited")
          + (path.failed.has(name) ? ", failed" : "");
        g.append(svg("title", {}, label + (def && def.description ? " — " + def.description : "")));
        if (!terminal && visits > 0 && onPick) {
          g.setAttribute("tabindex", "0");
          g.setAttribute("role", "button");
          g.setAttribute("aria-label", label + ": re-run from here");
          g.addEventListener("click", () => onPick(name));
          g.addEventListener("keydown", (event) => {
            if (event.key === "Enter" || event.key === " ") { event.preventDefault(); onPick(name); }
          });
        }
        nodes.append(g);
      }
      root.append(nodes);
      return root;
    }

    function graphSection(run, agent) {
      const section = el("section", "graph-box");
      section.setAttribute("aria-label", "Graph of " + agent.key);
      const path = pathOf(run, agent.graph);
      section.append(el("h4", "", "Graph · the path this run took is highlighted"));
      const scroller = el("div", "graph-scroll");
      // re-run from a node: the fork restarts at the checkpoint taken before that visit (SPEC §20, §21)
      const form = el("form", "node-fork");
      const select = el("select");
      select.id = "node-fork-node";
      for (const taskId of run.settled) {
        const option = el("option", "", taskId);
        option.value = taskId;
        select.append(option);
      }
      const stateBox = el("textarea");
      stateBox.id = "node-fork-state";
      stateBox.rows = 2;
      stateBox.value = "{}";
      const nodeLabel = el("label", "", "Re-run from node ");
      nodeLabel.append(select);
      const stateLabel = el("label", "", "state overrides (JSON) ");
      stateLabel.append(stateBox);
      const submit = el("button", "", "↻ Re-run from this node");
      submit.type = "submit";
      form.append(nodeLabel, stateLabel, submit);
      form.addEventListener("submit", (event) => {
        event.preventDefault();
        let state = null;
        try {
          state = JSON.parse(stateBox.value.trim() || "{}");
        } catch (err) {
          form.append(el("div", "error", "state must be a JSON object: " + err.message));
          return;
        }
        if (!state || typeof state !== "object" || Array.isArray(state)) {
          form.append(el("div", "error", "state must be a JSON object"));
          return;
        }
        rerun(infoOf(run), run.query.message || "", { node: select.value, state: Object.keys(state).length ? state : null });
      });
      scroller.append(drawGraph(agent.graph, path, (name) => {
        const visits = [...select.options].map((o) => o.value).filter((v) => v === name || v.startsWith(name + "#"));
        if (visits.length) select.value = visits[0];
        select.focus();
      }));
      section.append(scroller);
      if (run.settled.length) section.append(form);
      return section;
    }

    // ---- the event inspector -------------------------------------------------------------------

    async function showEvents() {
      const box = panel("events");
      if (!me.run) {
        box.replaceChildren(el("p", "muted", "Pick a run: “Events” under any answer."));
        return;
      }
      const { chatId, runId } = me.run;
      const filter = el("input");
      filter.type = "search";
      filter.id = "events-filter";
      filter.placeholder = "filter: type or text";
      filter.setAttribute("aria-label", "Filter events");
      const deltas = el("input");
      deltas.type = "checkbox";
      deltas.id = "events-deltas";
      deltas.checked = true;
      const deltaLabel = el("label", "", " deltas");
      deltaLabel.prepend(deltas);
      const count = el("span", "muted events-count");
      const source = el("span", "muted events-source");
      const list = el("ol", "events-list");
      list.setAttribute("aria-label", "Events of run " + runId);
      const controls = el("div", "events-controls");
      controls.append(filter, deltaLabel, count, source);
      box.replaceChildren(el("h3", "", "Events · run " + runId), controls, list);
      const events = [];
      const matches = (ev, text) => {
        if (!deltas.checked && /\.(delta|args)$/.test(ev.type)) return false;
        return !text || ev.type.toLowerCase().includes(text) || JSON.stringify(ev).toLowerCase().includes(text);
      };
      const item = (ev) => {
        const li = el("li", "event");
        li.dataset.type = ev.type;
        const details = el("details");
        const summary = el("summary");
        const brief = ev.delta != null ? JSON.stringify(ev.delta) : ev.text != null ? JSON.stringify(short(ev.text, 60))
          : ev.toolName || ev.actionName || ev.taskId || ev.message || "";
        summary.append(el("span", "ev-seq", ev.seq != null ? "#" + ev.seq : ""), el("span", "ev-type", ev.type),
          el("span", "ev-brief", typeof brief === "string" ? short(brief, 80) : ""));
        details.append(summary, el("pre", "", JSON.stringify(ev, null, 2)));
        li.append(details);
        return li;
      };
      const apply = () => {
        const text = filter.value.trim().toLowerCase();
        let shown = 0;
        for (const li of list.children) {
          const on = matches(li.event, text);
          li.hidden = !on;
          if (on) shown++;
        }
        count.textContent = shown + " of " + events.length + " events";
      };
      const add = (ev) => {
        events.push(ev);
        const li = item(ev);
        li.event = ev;
        li.hidden = !matches(ev, filter.value.trim().toLowerCase());
        list.append(li);
      };
      filter.addEventListener("input", apply);
      deltas.addEventListener("change", apply);
      const captured = host.captured(runId);
      if (captured && captured.some((e) => TERMINAL.has(e.type))) {
        source.textContent = "· as this page received them";
        captured.forEach(add);
        apply();
        return;
      }
      const controller = new AbortController();
      me.stream = controller;
      try {  // the gateway's exact replay while it retains the run (SPEC §15), live until it ends
        const response = await host.api("/api/ap/run/stream?runId=" + enc(runId) + "&after=0",
          { headers: { Accept: "text/event-stream" }, signal: controller.signal });
        if (response.ok && response.body) {
          source.textContent = "· the gateway's replay of the run";
          await host.readSse(response.body, (ev) => { add(ev); apply(); });
          apply();
          return;
        }
      } catch (err) {
        if (controller.signal.aborted) return;
      } finally {
        if (me.stream === controller) me.stream = null;
      }
      try {
        const run = readRun(await loadChat(chatId), runId);
        source.textContent = "· from the history (snapshots: the run is no longer retained)";
        (run ? run.events : []).forEach(add);
        apply();
      } catch (err) {
        notice(list, "✗ " + err.message);
      }
    }

    // ---- comparison ----------------------------------------------------------------------------

    async function showCompare() {
      const box = panel("compare");
      if (!me.compare) {
        box.replaceChildren(el("p", "muted", "Re-run a run (“↻ Re-run from here”, or “✎ Edit” on a question) to compare the original with the re-run."));
        return;
      }
      const { original, rerun: again } = me.compare;
      box.replaceChildren(el("p", "muted", "loading…"));
      let a, b;
      try {
        const [ha, hb] = await Promise.all([loadChat(original.chatId), loadChat(again.chatId)]);
        a = readRun(ha, original.runId);
        b = readRun(hb, again.runId);
      } catch (err) {
        notice(box, "✗ " + err.message);
        return;
      }
      if (!a || !b) {
        notice(box, "one of the two runs is not in its chat any more");
        return;
      }
      const grid = el("div", "compare-grid");
      grid.append(compareColumn("Original", a), compareColumn("Re-run", b));
      const delta = (x, y, fmt) => (typeof x === "number" && typeof y === "number" ? fmt(y) + " (" + (y - x >= 0 ? "+" : "−") + fmt(Math.abs(y - x)) + ")" : fmt(y));
      const diff = el("p", "compare-diff");
      diff.textContent = (a.answer === b.answer ? "Same answer. " : "Different answers. ")
        + "Duration " + delta(a.durationMs, b.durationMs, fmtMs) + " · tokens "
        + delta(a.usage && a.usage.totalTokens, b.usage && b.usage.totalTokens, fmtNum);
      box.replaceChildren(el("h3", "", "Original and re-run, side by side"), diff, grid);
    }

    function compareColumn(title, run) {
      const col = el("section", "compare-col");
      col.setAttribute("aria-label", title);
      const head = el("div", "compare-head");
      head.append(el("h4", "", title), button("Open chat", () => host.openChat(run.chatId, run.agentKey), "link"));
      col.append(head, el("div", "muted", (run.chatName || run.chatId) + " · " + run.runId));
      col.append(el("div", "compare-question", run.query.message || ""));
      const answer = el("div", "compare-answer content");
      answer.append(host.markdownNode(run.answer || ""));
      col.append(answer);
      const steps = el("ol", "compare-steps");
      for (const step of run.steps) {
        const li = el("li", "compare-step");
        li.append(el("span", "", stepLabel(step)), el("span", "tl-duration", fmtMs(durationOf(step))));
        steps.append(li);
      }
      col.append(steps);
      const usage = run.usage || {};
      col.append(el("div", "muted compare-totals", fmtMs(run.durationMs) + " · " + fmtNum(usage.totalTokens) + " tokens · " + fmtPoints(usage.points) + " points"));
      return col;
    }

    // ---- live runs -----------------------------------------------------------------------------

    async function showRuns() {
      const box = panel("runs");
      const list = el("ul", "run-list");
      list.setAttribute("aria-label", "Runs");
      const refresh = button("Refresh", () => draw());
      const head = el("div", "studio-actions");
      head.append(refresh, el("span", "muted", "live and recently ended runs; refreshed every 3 s"));
      box.replaceChildren(el("h3", "", "Runs"), head, list);
      const draw = async () => {
        let runs;
        try {
          runs = await host.getData("/api/ap/runs");
        } catch (err) {
          notice(list, "✗ " + err.message);
          return;
        }
        if (!runs.length) {
          list.replaceChildren(el("li", "muted", "No live or recent runs."));
          return;
        }
        list.replaceChildren(...runs.map((run) => {
          const li = el("li", "run-card");
          li.dataset.runId = run.runId;
          li.dataset.status = run.status;
          const status = el("span", "badge status-" + run.status, run.status);
          const started = run.startedAt ? new Date(run.startedAt).toLocaleTimeString() : "";
          const took = run.endedAt && run.startedAt ? " · " + fmtMs(run.endedAt - run.startedAt) : "";
          li.append(status, el("span", "run-agent", run.agentKey || ""), el("span", "muted", started + took + " · " + run.lastSeq + " events"));
          const actions = el("span", "run-actions");
          actions.append(button("Open", () => host.openChat(run.chatId, run.agentKey), "", "Open the chat of run " + run.runId + " (attaches while it runs)"));
          actions.append(button("Events", () => showRun(run.chatId, run.runId, "events"), "", "Events of run " + run.runId));
          if (run.status === "running" || run.status === "waiting") {
            actions.append(button("Interrupt", async () => {
              try {
                await host.postData("/api/ap/interrupt", { runId: run.runId });
              } catch (err) {
                li.append(el("div", "error", "interrupt failed: " + err.message));
              }
              draw();
            }, "danger", "Interrupt run " + run.runId));
          }
          li.append(actions);
          return li;
        }));
      };
      await draw();
      if (me.tab === "runs" && !$("studio").hidden) me.runsTimer = setInterval(draw, 3000);
    }

    // ---- usage ---------------------------------------------------------------------------------

    async function showUsage() {
      const box = panel("usage");
      const form = el("form", "usage-form");
      const group = el("select");
      group.id = "usage-group";
      for (const value of ["day", "agent", "model"]) {
        const option = el("option", "", value);
        option.value = value;
        group.append(option);
      }
      const from = el("input");
      from.type = "date";
      from.id = "usage-from";
      const today = new Date().toISOString().slice(0, 10);
      from.value = new Date(Date.now() - 13 * 86400000).toISOString().slice(0, 10);
      const to = el("input");
      to.type = "date";
      to.id = "usage-to";
      to.value = today;
      const labelled = (text, field) => {
        const label = el("label", "", text + " ");
        label.append(field);
        return label;
      };
      const go = el("button", "", "Show");
      go.type = "submit";
      form.append(labelled("per", group), labelled("from", from), labelled("to", to), go);
      const out = el("div", "usage-out");
      box.replaceChildren(el("h3", "", "Usage"), form, out);
      const draw = async () => {
        out.replaceChildren(el("p", "muted", "loading…"));
        let data;
        try {
          const params = "groupBy=" + enc(group.value) + (from.value ? "&from=" + enc(from.value) : "") + (to.value ? "&to=" + enc(to.value) : "");
          data = await host.getData("/api/ap/usage?" + params);
        } catch (err) {
          notice(out, "✗ " + err.message);
          return;
        }
        const groups = data.groups || [];
        const most = Math.max(1, ...groups.map((g) => g.totalTokens || 0));
        const table = el("table", "usage-table");
        const head = el("tr");
        for (const h of [data.groupBy || group.value, "calls", "errors", "tokens", "points", ""]) head.append(el("th", "", h));
        table.append(el("thead"), el("tbody"));
        table.tHead.append(head);
        for (const g of groups) {
          const tr = el("tr");
          const bar = el("span", "usage-bar");
          bar.style.width = (100 * (g.totalTokens || 0) / most).toFixed(1) + "%";
          const barCell = el("td", "usage-bar-cell");
          barCell.setAttribute("aria-hidden", "true");
          barCell.append(bar);
          tr.append(el("td", "", g.key), el("td", "num", fmtNum(g.calls)), el("td", "num", fmtNum(g.errors)),
            el("td", "num", fmtNum(g.totalTokens)), el("td", "num", fmtPoints(g.points)), barCell);
          table.tBodies[0].append(tr);
        }
        const totals = data.totals || {};
        const foot = el("tfoot");
        const tr = el("tr");
        tr.append(el("th", "", "total"), el("td", "num", fmtNum(totals.calls)), el("td", "num", fmtNum(totals.errors)),
          el("td", "num", fmtNum(totals.totalTokens)), el("td", "num", fmtPoints(totals.points)), el("td"));
        foot.append(tr);
        table.append(foot);
        const wrap = el("div", "table-wrap");
        wrap.append(table);
        out.replaceChildren(el("div", "muted", data.from + " – " + data.to + (groups.length ? "" : " · no model calls")), wrap);
      };
      form.addEventListener("submit", (event) => { event.preventDefault(); draw(); });
      await draw();
    }

    // ---- time travel: fork + re-run ------------------------------------------------------------

    function infoOf(run) {
      return { chatId: run.chatId, runId: run.runId, agentKey: run.agentKey, query: run.query };
    }

    async function rerun(info, message, fromNode) {
      if (host.busy()) {
        host.showError("wait for the running run to end (or stop it) before re-running");
        return;
      }
      const text = (message || "").trim();
      if (!text) return;
      const body = { chatId: info.chatId, runId: info.runId, position: "before" };
      if (fromNode && fromNode.node) {
        body.node = fromNode.node;
        if (fromNode.state) body.state = fromNode.state;
      }
      let fork;
      try {
        fork = await host.postData("/api/ap/chat/fork", body);
      } catch (err) {
        host.showError("✗ fork failed: " + err.message);
        return;
      }
      const query = info.query || {};
      const agentKey = info.agentKey || query.agentKey;
      await host.openChat(fork.chatId, agentKey);
      const references = (query.references || []).filter((ref) => ref && typeof ref.id === "string");
      const view = await host.runQuery(text, { agentKey, references, params: query.params || undefined });
      host.loadChats();
      if (view && view.runId) {
        me.compare = { original: { chatId: info.chatId, runId: info.runId }, rerun: { chatId: fork.chatId, runId: view.runId } };
        openPanel("compare");
      }
    }

    function editor(info, userEl, tools) {
      const form = el("form", "edit-form");
      const area = el("textarea");
      area.value = (info.query && info.query.message) || userEl.firstChild.textContent || "";
      area.rows = Math.min(8, Math.max(2, area.value.split("\n").length));
      area.setAttribute("aria-label", "Edited question");
      const go = el("button", "", "↻ Re-run from here");
      go.type = "submit";
      const cancel = button("Cancel", () => { form.replaceWith(tools); tools.querySelector("button").focus(); });
      form.append(area, go, cancel);
      form.addEventListener("submit", (event) => {
        event.preventDefault();
        form.replaceWith(tools);
        rerun(info, area.value);
      });
      area.addEventListener("keydown", (event) => {
        if (event.key === "Escape") { event.preventDefault(); cancel.click(); }
        if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) { event.preventDefault(); form.requestSubmit(); }
      });
      return { form, area };
    }

    // ---- hooks called by console.js ------------------------------------------------------------

    // A run's question and answer are on screen: "✎ Edit" under the question.
    function runStarted(info, userEl) {
      if (!userEl || !info.runId) return;
      const tools = el("div", "user-tools");
      tools.dataset.runId = info.runId;
      tools.append(button("✎ Edit", () => {
        const { form, area } = editor(info, userEl, tools);
        tools.replaceWith(form);
        area.focus();
      }, "edit", "Edit this question and re-run from here"));
      userEl.after(tools);
    }

    // The run ended: its toolbar (timeline, events, re-run; compare in a fork's first new run).
    function runEnded(info, turnEl) {
      if (!turnEl || !info.runId || turnEl.querySelector(".run-tools")) return;
      const tools = el("div", "run-tools");
      tools.dataset.runId = info.runId;
      tools.append(
        button("Timeline", () => showRun(info.chatId, info.runId, "timeline"), "", "Timeline of this run"),
        button("Events", () => showRun(info.chatId, info.runId, "events"), "", "Raw events of this run"),
        button("↻ Re-run from here", () => rerun(info, (info.query && info.query.message) || ""), "", "Re-run from here: fork before this run and ask again"),
      );
      const original = originalFor(info.runId);
      if (original) {
        tools.append(button("⇄ Compare", () => {
          me.compare = { original, rerun: { chatId: info.chatId, runId: info.runId } };
          openPanel("compare");
        }, "", "Compare with the original run"));
      }
      turnEl.append(tools);
    }

    // In a fork, the first run that is not a copy (copies keep the source's run ids) compares
    // with the source's run at the fork point.
    function originalFor(runId) {
      const fork = me.fork;
      if (!fork || !me.sourceRuns || me.sourceRuns.includes(runId) || fork.compared) return null;
      fork.compared = true;
      let target = fork.runId;
      if (fork.position === "after" && !fork.node) {
        const at = me.sourceRuns.indexOf(fork.runId);
        target = at >= 0 && at + 1 < me.sourceRuns.length ? me.sourceRuns[at + 1] : null;
      }
      return target ? { chatId: fork.chatId, runId: target } : null;
    }

    // A chat is being opened: for a fork, a banner naming its source (and what to compare with).
    async function chatOpened(chatId, history) {
      me.fork = history && history.forkedFrom ? { ...history.forkedFrom } : null;
      me.sourceRuns = null;
      if (!me.fork) return null;
      const banner = el("div", "fork-banner");
      banner.setAttribute("role", "note");
      banner.append(el("span", "", "⑂ Fork of chat " + me.fork.chatId + ", " + me.fork.position + " run " + me.fork.runId
        + (me.fork.node ? " at node " + me.fork.node : "")));
      banner.append(button("Open original", () => host.openChat(me.fork.chatId, null), "link"));
      try {
        const source = await host.getData("/api/ap/chat?chatId=" + enc(me.fork.chatId));
        me.sourceRuns = splitRuns(source.events || []).map((r) => r.runId);
        if (source.chatName) banner.firstChild.textContent = "⑂ Fork of “" + source.chatName + "”, " + me.fork.position + " run " + me.fork.runId
          + (me.fork.node ? " at node " + me.fork.node : "");
      } catch (err) {
        me.sourceRuns = [];  // the source is gone or not ours any more: nothing to compare with
      }
      return banner;
    }

    function reset() {
      me.fork = null;
      me.sourceRuns = null;
    }

    return { runStarted, runEnded, chatOpened, reset, open: openPanel, close: closePanel };
  };
})();
