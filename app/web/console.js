/*
 * Agent Gateway web console: the demo page served at GET / (no build step, no external resources).
 *
 * Protocol handling (SPEC §3.5, §4, §6, §15):
 *  - Streaming. POST /api/ap/query answers text/event-stream. The body is read with a
 *    ReadableStream reader and decoded incrementally; readSse() applies the SSE line rules
 *    (LF / CRLF / CR line ends, "field: value" lines, "data" lines joined with "\n", a blank line
 *    dispatches the event, lines starting with ":" such as the heartbeat are comments). Each
 *    event's data is one JSON object, rendered the moment its blank line arrives: no buffering.
 *  - Rendering. render(event, live) draws live events (*.start / *.delta / *.end) and the
 *    snapshot events of GET /api/ap/chat (*.snapshot) with the same code.
 *  - Markdown. The answer text is Markdown, rendered by the vendored markdown-it
 *    (vendor/markdown-it.min.js) with raw HTML OFF: any HTML in the model's text is escaped and
 *    shown as text, never parsed. Links are kept only for http(s) and mailto URLs and open in a
 *    new tab (rel="noopener noreferrer"); images are NOT loaded (a remote image would be fetched
 *    the moment it is drawn, which lets a prompt-injected answer send data to any host): they
 *    are drawn as links. While deltas arrive, a message's accumulated text is re-rendered at
 *    most once per animation frame (paintSoon); its end, a snapshot or the run's end paint at once.
 *  - Reasoning is a <details> open while it streams; it closes when the reasoning ends (or the
 *    answer starts, or the run ends) and can be opened again.
 *  - Runs outlive the page (§15). Queries are sent with onDisconnect: "continue", so a reload or
 *    a broken connection does not cancel the run. Every event of a run goes through follow() /
 *    apply(), which keep the run's "view": its runId and the last seq drawn. An event whose seq
 *    was already drawn is skipped, so a replay never draws anything twice. The view is mirrored
 *    in sessionStorage per chat ("agw.console.run.<chatId>" = {runId, lastSeq}) together with
 *    the chat on screen ("agw.console.chat").
 *  - Re-attaching. When the query stream breaks before the run's terminal event, attach() shows
 *    "reconnecting…" and reads GET /api/ap/run/stream?runId=&after=<last seq drawn> (retrying
 *    with a back-off while the gateway is unreachable); a 404 means the run expired: an error is
 *    shown. After a reload, the chat on screen is reopened by openChat(), which draws
 *    the history in two parts (the simple correct approach: no merging of history seqs with run
 *    seqs): (1) GET /api/ap/chat, split into runs; every run that has ended is drawn from the
 *    history; (2) every run still open — a history run without a terminal event (the gateway
 *    leaves those open only for runs it still runs), a running/waiting run of
 *    GET /api/ap/runs?chatId=, or the run remembered in sessionStorage when the history does not
 *    show it ended — is NOT drawn from the history but attached from seq 0 and drawn fully
 *    from its own event log, live events included. A remembered run the gateway no longer
 *    knows (404) is reported as expired.
 *  - Frontend tools. tool.start with a toolType → GET /api/ap/viewport → the html in a sandboxed
 *    iframe (sandbox="allow-scripts", srcdoc). Once the iframe has loaded AND tool.end has
 *    completed the arguments, the page posts {type:"tool_init", data:{runId, toolId, toolKey,
 *    toolType, toolTimeout, params}}. A {type:"frontend_submit", params} message from THAT iframe
 *    (checked with event.source) becomes POST /api/ap/submit; the run's stream then continues.
 *    A replayed tool.start without its tool.result re-opens the viewport, so after a reload the
 *    user can still answer; a tool whose result arrived before its viewport loaded gets none.
 *  - Stop. POST /api/ap/interrupt {runId}; the stream then ends with run.cancel.
 *  - Viewport blocks in the answer (```viewport\ntype=html, key=K\n{json}\n```) become iframes of
 *    viewport K, posted {type:"viewport_init", data:<json>} once loaded.
 *  - Viewport heights. Every viewport iframe (frontend tool or block) fits its content: the page
 *    appends a small script to the viewport's html that posts {type:"viewport_height", height}
 *    (CSS px of its document) to the parent whenever its size changes; a viewport may also post
 *    that message itself. Size changes are seen by a ResizeObserver and, for a change to the DOM,
 *    by a MutationObserver too: Chromium runs no ResizeObserver in a cross-origin (sandboxed)
 *    frame that is scrolled out of sight, so a viewport growing there would keep its old height.
 *    The message is taken only from one of our viewport iframes (checked with event.source);
 *    the height is capped by the CSS max-height, beyond which it scrolls.
 *  - Actions. switch_theme toggles <html class="dark|light">; other actions are only shown.
 *  - Files (SPEC §23). The 📎 button or a drop of files anywhere on the page uploads each file at
 *    once with POST /api/ap/upload (multipart: file, chatId of the chat on screen), one after the
 *    other, so an upload that creates the chat is followed by the others into the same chat. The
 *    pending files show above the composer; Send waits for uploads still running and sends the
 *    ready ones as references: [{id}]. The question's bubble lists its files (live and from the
 *    history's request.query.references). artifact.publish draws a download card; its link is
 *    fetched with the bearer token (a plain link cannot carry it) and saved from a blob URL.
 *  - Auth. A 401 from /api/** shows a token field; the token is kept in sessionStorage and sent
 *    as "Authorization: Bearer <token>".
 *  - Studio (SPEC §20, studio.js). The page keeps the exact events of every run it followed
 *    (per runId) and tells the studio when a run starts (its question gets "✎ Edit") and ends
 *    (its answer gets Timeline / Events / Re-run). runQuery() is the one way a question is sent,
 *    by the composer and by the studio's re-runs (in the forked chat, with the run's agent,
 *    references and params).
 */
(function () {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const TOKEN_KEY = "agw.console.token";
  const CHAT_KEY = "agw.console.chat";
  const RUN_KEY = "agw.console.run.";   // + chatId → {runId, lastSeq}
  const TERMINAL = new Set(["run.complete", "run.error", "run.cancel"]);
  const ATTACH_ATTEMPTS = 6;            // re-attach tries after a break (back-off 1, 2, 4, 8, 8 s)
  const VIEWPORT_BLOCK = /```viewport[ \t]*\r?\n([^\n]*)\n([\s\S]*?)```/g;
  const state = { chatId: null, busy: false, view: null, resumed: false, stick: true, uploading: false,
                  lastUser: null, query: null };
  const CAPTURED_RUNS = 50;     // runs whose events the page keeps for the studio's inspector
  const captured = new Map();  // runId → the events of that run as this page received them
  const runInfo = new Map();   // runId → {runId, chatId, agentKey, query} of the runs on screen
  let parts = new Map();       // reasoningId / contentId / toolId / actionId / planId → its DOM state
  let turn = null;             // the assistant turn being drawn
  const frontends = new Map(); // toolId → a frontend tool waiting for its iframe's answer
  const viewports = new Map(); // viewportKey → Promise<html>
  const markdown = makeMarkdown();
  // appended to every viewport's html: reports the document's height to this page (see the top)
  const HEIGHT_REPORTER = "<script>(function () { var last = -1; function post() {"
    + " var h = Math.ceil(document.documentElement.getBoundingClientRect().height);"
    + " if (h !== last) { last = h; parent.postMessage({ type: \"viewport_height\", height: h }, \"*\"); } }"
    + " if (typeof ResizeObserver === \"function\") new ResizeObserver(post).observe(document.documentElement);"
    + " if (typeof MutationObserver === \"function\") new MutationObserver(post).observe(document.documentElement,"
    + " { subtree: true, childList: true, attributes: true, characterData: true });"
    + " addEventListener(\"load\", post); post(); })();<\/script>";

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text != null) node.textContent = String(text);
    return node;
  }
  const show = (value) => (typeof value === "string" ? value : JSON.stringify(value, null, 1));
  function parseJson(text) {
    try { return JSON.parse(text); } catch (e) { return null; }
  }
  const delay = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  // markdown-it configured for untrusted text (see "Markdown" at the top); null if it failed to load
  function makeMarkdown() {
    if (typeof window.markdownit !== "function") return null;
    const md = window.markdownit({ html: false, linkify: true });
    const escape = md.utils.escapeHtml;
    md.validateLink = (url) => /^(https?:|mailto:)/i.test(url.trim());
    const linkOpen = md.renderer.rules.link_open || ((tokens, i, options, env, self) => self.renderToken(tokens, i, options));
    md.renderer.rules.link_open = (tokens, i, options, env, self) => {
      tokens[i].attrSet("target", "_blank");
      tokens[i].attrSet("rel", "noopener noreferrer");
      return linkOpen(tokens, i, options, env, self);
    };
    md.renderer.rules.image = (tokens, i, options, env, self) => {
      const token = tokens[i];
      const alt = self.renderInlineAsText(token.children || [], options, env) || "image";
      return '<a class="image-link" href="' + escape(token.attrGet("src") || "") + '" target="_blank" rel="noopener noreferrer">🖼 '
        + escape(alt) + "</a>";
    };
    return md;
  }

  // ---- HTTP ------------------------------------------------------------------------------------

  class AuthRequired extends Error {}

  async function api(path, options) {
    const headers = Object.assign({}, options && options.headers);
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = "Bearer " + token;
    const response = await fetch(path, Object.assign({}, options, { headers }));
    if (response.status === 401) {
      $("auth").hidden = false;
      throw new AuthRequired("this gateway needs a bearer token: paste one above");
    }
    return response;
  }

  async function envelope(response) {
    const body = await response.json().catch(() => ({}));
    if (!response.ok || body.code !== 0) throw new Error(body.msg || "HTTP " + response.status);
    return body.data;
  }
  const getData = async (path) => envelope(await api(path));
  const postData = async (path, payload) => envelope(await api(path, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(payload),
  }));

  function loadViewport(key) {
    if (!viewports.has(key)) {
      const loading = getData("/api/ap/viewport?viewportKey=" + encodeURIComponent(key)).then((data) => data.html);
      loading.catch(() => viewports.delete(key));
      viewports.set(key, loading);
    }
    return viewports.get(key);
  }

  // ---- SSE -------------------------------------------------------------------------------------

  async function readSse(stream, onEvent) {
    const reader = stream.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let data = [];
    for (;;) {
      const { value, done } = await reader.read();
      buffer += done ? decoder.decode() : decoder.decode(value, { stream: true });
      // complete lines only; a trailing "\r" may be the first half of a "\r\n" still in flight
      const lines = buffer.split(/\r\n|\n|\r(?!$)/);
      buffer = lines.pop();
      for (const line of lines) {
        if (line === "") {                       // blank line: dispatch
          if (data.length) {
            const event = parseJson(data.join("\n"));
            data = [];
            if (event && event.type) onEvent(event);
          }
          continue;
        }
        if (line[0] === ":") continue;           // comment, e.g. ": heartbeat"
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? "" : line.slice(colon + 1);
        if (value[0] === " ") value = value.slice(1);
        if (field === "data") data.push(value);  // "event" is always "message"; "id" repeats seq
      }
      if (done) return;                          // an unterminated last event is dropped (SSE rule)
    }
  }

  // ---- rendering -------------------------------------------------------------------------------

  function addUser(text, references) {
    const bubble = el("div", "msg user", text);
    if (Array.isArray(references) && references.length) {
      const list = el("div", "refs");
      for (const ref of references) list.append(el("span", "ref", "📎 " + ((ref && (ref.name || ref.id)) || "file")));
      bubble.append(list);
    }
    $("log").append(bubble);
    state.lastUser = bubble;
    turn = null;
    state.stick = true;
    scroll();
  }

  // ---- runs on screen: what the studio needs to know about them --------------------------------

  function noteQuery(ev) {
    state.query = { message: ev.message, agentKey: ev.agentKey, references: ev.references, params: ev.params };
  }
  function tagRun(ev) {
    const info = { runId: ev.runId, chatId: ev.chatId || state.chatId, agentKey: ev.agentKey || (state.query && state.query.agentKey) || null,
                   query: state.query || {} };
    state.query = null;
    runInfo.set(ev.runId, info);
    const turnEl = currentTurn();
    turnEl.dataset.runId = ev.runId;
    const userEl = state.lastUser && !state.lastUser.dataset.runId ? state.lastUser : null;
    if (userEl) userEl.dataset.runId = ev.runId;
    if (studio) studio.runStarted(info, userEl, turnEl);
  }
  function endRun(ev) {
    const info = runInfo.get(ev.runId) || { runId: ev.runId, chatId: state.chatId, agentKey: null, query: {} };
    if (studio) studio.runEnded(info, currentTurn(), ev);
  }
  function capture(view, ev) {
    if (!view.runId) return;
    if (!captured.has(view.runId)) {
      captured.set(view.runId, view.events);
      if (captured.size > CAPTURED_RUNS) captured.delete(captured.keys().next().value);
    }
  }
  function currentTurn() {
    if (!turn) {
      turn = el("div", "msg assistant");
      $("log").append(turn);
    }
    return turn;
  }
  // Follow the end of the log while the reader is there; a reader who scrolled up stays put.
  function scroll() {
    const log = $("log");
    if (state.stick) log.scrollTop = log.scrollHeight;
  }
  function showError(message) {
    currentTurn().append(el("div", "error", message));
    scroll();
  }

  function makeFrame(html, onLoad) {
    const frame = document.createElement("iframe");
    frame.className = "viewport";
    frame.setAttribute("sandbox", "allow-scripts");
    frame.addEventListener("load", onLoad, { once: true });
    frame.srcdoc = html + HEIGHT_REPORTER;
    return frame;
  }

  function viewportBlock(header, body) {
    const opts = {};
    header.split(",").forEach((pair) => {
      const at = pair.indexOf("=");
      if (at > 0) opts[pair.slice(0, at).trim()] = pair.slice(at + 1).trim();
    });
    const box = el("div", "viewport-block");
    if (opts.type !== "html" || !opts.key) {
      box.append(el("pre", "", body));
      return box;
    }
    const data = parseJson(body.trim());
    loadViewport(opts.key).then((html) => {
      const frame = makeFrame(html, () => frame.contentWindow.postMessage({ type: "viewport_init", data }, "*"));
      box.append(frame);
    }).catch((err) => box.append(el("div", "error", "viewport " + opts.key + ": " + err.message)));
    return box;
  }

  // Answer text with viewport blocks: Markdown segments and blocks in order, one child each.
  // Text only grows, so a block's node (and its iframe) is created once; a segment is re-rendered
  // only when its text changed. The last segment is trimmed so the text ends where the answer does.
  function paintContent(part) {
    part.pending = false;
    const pieces = [];
    let last = 0;
    let match;
    VIEWPORT_BLOCK.lastIndex = 0;
    while ((match = VIEWPORT_BLOCK.exec(part.text))) {
      pieces.push(part.text.slice(last, match.index), match);
      last = match.index + match[0].length;
    }
    pieces.push(part.text.slice(last));
    const nodes = part.el.children;
    pieces.forEach((piece, i) => {
      const isText = typeof piece === "string";
      let node = nodes[i];
      if (node && node.classList.contains("md") !== isText) {  // defensive: never expected, text only grows
        while (part.el.children.length > i) part.el.lastElementChild.remove();
        node = null;
      }
      if (!isText) {
        if (!node) part.el.append(viewportBlock(piece[1], piece[2]));
        return;
      }
      if (!node) {
        node = el("div", markdown ? "md" : "md plain");
        part.el.append(node);
      }
      const source = i === pieces.length - 1 ? piece : piece + "\n";
      if (node.mdSource === source) return;
      node.mdSource = source;
      if (markdown) node.innerHTML = markdown.render(source).replace(/\s+$/, i === pieces.length - 1 ? "" : "\n");
      else node.textContent = source.replace(/\s+$/, "");
    });
    while (part.el.children.length > pieces.length) part.el.lastElementChild.remove();
  }

  // Live deltas: paint once per animation frame (or after 100 ms where frames are paused: a
  // background tab), so a fast stream does not re-render the whole text for every delta.
  function paintSoon(part) {
    if (part.pending) return;
    part.pending = true;
    const paint = () => {
      if (!part.pending) return;
      paintContent(part);
      scroll();
    };
    requestAnimationFrame(paint);
    setTimeout(paint, 100);
  }
  function paintPending() {
    for (const part of parts.values()) if (part.pending) paintContent(part);
  }

  function partFor(id, create) {
    if (!parts.has(id)) {
      const part = create();
      parts.set(id, part);
      currentTurn().append(part.box);
    }
    return parts.get(id);
  }
  const reasoning = (id) => partFor(id, () => {
    const box = el("details", "reasoning streaming");
    box.open = true;  // visible while it streams
    const body = el("div", "reasoning-text");
    box.append(el("summary", "", "Thinking…"), body);
    return { box, body, streaming: true };
  });
  // The reasoning is over (its end, the answer's start or the run's end): fold it, openable again.
  function endReasoning(part) {
    if (!part.streaming) return;
    part.streaming = false;
    part.box.open = false;
    part.box.classList.remove("streaming");
    part.box.querySelector("summary").textContent = "Reasoning";
  }
  function endAllReasoning() {
    for (const part of parts.values()) if (part.streaming) endReasoning(part);
  }
  const content = (id) => partFor(id, () => {
    const box = el("div", "content");
    return { box, el: box, text: "", pending: false };
  });
  const tool = (ev) => partFor(ev.toolId, () => {
    const box = el("div", "tool");
    box.dataset.toolId = ev.toolId;
    const args = el("pre", "args");
    const result = el("pre", "result");
    box.append(el("div", "name", "🔧 " + (ev.toolName || ev.toolKey || "tool")), args, result);
    return { box, args, result, text: "" };
  });
  const action = (ev) => partFor(ev.actionId, () => {
    const box = el("div", "action");
    const args = el("pre", "args");
    const result = el("pre", "result");
    box.append(el("div", "name", "⚡ " + (ev.actionName || "action")), args, result);
    return { box, args, result, text: "", name: ev.actionName, param: null, done: false };
  });

  function setTheme(theme) {
    document.documentElement.classList.remove("dark", "light");
    document.documentElement.classList.add(theme);
  }
  function perform(part) {
    if (part.done) return;
    part.done = true;
    const param = part.param || parseJson(part.text) || {};
    if (part.name === "switch_theme") {
      const dark = param.theme ? param.theme === "dark" : !document.documentElement.classList.contains("dark");
      setTheme(dark ? "dark" : "light");
    }
  }

  function plan(ev) {
    const part = partFor(ev.planId, () => {
      const box = el("div", "plan");
      const list = el("ol");
      box.append(el("div", "name", "📋 Plan"), list);
      return { box, list };
    });
    part.list.replaceChildren(...(ev.plan || []).map((task) => {
      const item = el("li", "", task.description);
      item.dataset.taskId = task.taskId;
      item.dataset.status = task.status === "in_progress" ? "init" : task.status;
      return item;
    }));
  }
  function taskStatus(taskId, status) {
    const item = document.querySelector('.plan li[data-task-id="' + CSS.escape(String(taskId)) + '"]');
    if (item) item.dataset.status = status;
  }

  // ---- frontend tools --------------------------------------------------------------------------

  function startFrontend(part, ev) {
    if (frontends.has(ev.toolId)) return;
    const fe = {
      runId: ev.runId, toolId: ev.toolId, toolKey: ev.toolKey || ev.toolName, toolType: ev.toolType,
      toolTimeout: ev.toolTimeout, params: null, frame: null, loaded: false, sent: false, submitted: false, part,
    };
    frontends.set(ev.toolId, fe);
    if (ev.toolType !== "html") {  // no renderer for this viewport type here: answer with raw JSON
      const area = el("textarea");
      area.value = "{}";
      const button = el("button", "", "Submit JSON");
      button.type = "button";
      button.addEventListener("click", () => submitFrontend(fe, parseJson(area.value)));
      part.box.append(el("div", "muted", "viewport type " + ev.toolType + " is not rendered by this console"), area, button);
      return;
    }
    loadViewport(fe.toolKey).then((html) => {
      if (frontends.get(fe.toolId) !== fe) return;  // answered (e.g. earlier in a replay): nothing to show
      fe.frame = makeFrame(html, () => { fe.loaded = true; toolInit(fe); });
      fe.frame.classList.add("frontend");
      part.box.append(fe.frame);
      scroll();
    }).catch((err) => part.box.append(el("div", "error", "viewport " + fe.toolKey + ": " + err.message)));
  }

  function toolInit(fe) {
    if (fe.sent || !fe.loaded || fe.params === null) return;  // wait for both the iframe and tool.end
    fe.sent = true;
    const { runId, toolId, toolKey, toolType, toolTimeout, params } = fe;
    fe.frame.contentWindow.postMessage({ type: "tool_init", data: { runId, toolId, toolKey, toolType, toolTimeout, params } }, "*");
  }

  async function submitFrontend(fe, params) {
    if (fe.submitted) return;
    fe.submitted = true;
    try {
      const data = await postData("/api/ap/submit", { runId: fe.runId, toolId: fe.toolId, params: params == null ? null : params });
      if (!data.accepted) fe.part.box.append(el("div", "error", "answer not accepted (" + data.status + "): " + data.detail));
    } catch (err) {
      fe.submitted = false;
      fe.part.box.append(el("div", "error", "submit failed: " + err.message));
    }
  }

  // {type:"viewport_height", height} from one of our viewport iframes: fit the iframe to it
  function fitFrame(event, height) {
    if (typeof height !== "number" || !Number.isFinite(height) || height < 0) return;
    for (const frame of document.querySelectorAll("iframe.viewport")) {
      if (frame.contentWindow === event.source) {
        frame.style.height = Math.ceil(height) + "px";  // CSS max-height caps it; beyond, it scrolls
        scroll();
        return;
      }
    }
  }

  window.addEventListener("message", (event) => {
    const msg = event.data;
    if (msg && msg.type === "viewport_height") fitFrame(event, msg.height);
    if (!msg || msg.type !== "frontend_submit") return;
    for (const fe of frontends.values()) {
      if (fe.frame && event.source === fe.frame.contentWindow) {
        submitFrontend(fe, msg.params);
        return;
      }
    }
  });

  // ---- files: attachments and artifacts (SPEC §23) ---------------------------------------------

  const attachments = [];            // files above the composer: {name, status, reference, el}
  let uploads = Promise.resolve();   // uploads run one after the other (see "Files" at the top)

  function formatSize(bytes) {
    if (typeof bytes !== "number") return "";
    if (bytes < 1024) return bytes + " B";
    if (bytes < 1024 * 1024) return (bytes / 1024).toFixed(1) + " KB";
    return (bytes / 1024 / 1024).toFixed(1) + " MB";
  }

  function drawAttachments() {
    const list = $("attachments");
    list.replaceChildren(...attachments.map((item) => item.el));
    list.hidden = attachments.length === 0;
  }
  function clearAttachments() {
    attachments.length = 0;
    drawAttachments();
  }
  // The references to send with the next question; the list is emptied.
  function takeAttachments() {
    const ready = attachments.filter((item) => item.status === "ready").map((item) => item.reference);
    clearAttachments();
    return ready;
  }

  async function uploadFile(file) {
    const form = new FormData();
    if (state.chatId) form.append("chatId", state.chatId);
    form.append("file", file, file.name);
    const data = await envelope(await api("/api/ap/upload", { method: "POST", body: form }));
    if (data.chatId !== state.chatId) {  // the upload started a new chat: the question goes there
      setChat(data.chatId);
      loadChats().catch(() => {});
    }
    return data.reference;
  }

  function attachFiles(files) {
    for (const file of files) {
      const item = { name: file.name, status: "uploading", reference: null, el: el("li", "attachment uploading") };
      const status = el("span", "muted status", "uploading…");
      const remove = el("button", "remove", "✕");
      remove.type = "button";
      remove.title = "Remove " + file.name;
      remove.addEventListener("click", () => {
        const at = attachments.indexOf(item);
        if (at >= 0) attachments.splice(at, 1);
        drawAttachments();
      });
      item.el.append(el("span", "name", "📎 " + file.name), status, remove);
      attachments.push(item);
      uploads = uploads.then(async () => {
        state.uploading = true;
        try {
          item.reference = await uploadFile(file);
          item.status = "ready";
          item.el.dataset.referenceId = item.reference.id;
          status.textContent = formatSize(item.reference.sizeBytes);
        } catch (err) {
          item.status = "failed";
          status.textContent = "✗ " + err.message;
        } finally {
          state.uploading = false;
          item.el.classList.remove("uploading");
          item.el.classList.add(item.status);
        }
      });
    }
    drawAttachments();
  }

  // A download link of ours (GET /api/ap/artifact) fetched with the token, saved from a blob URL.
  async function download(url, name, card) {
    try {
      const response = await api(url);
      if (!response.ok) await envelope(response);  // throws with the gateway's msg
      const href = URL.createObjectURL(await response.blob());
      const save = el("a");
      save.href = href;
      save.download = name || "download";
      document.body.append(save);
      save.click();
      save.remove();
      setTimeout(() => URL.revokeObjectURL(href), 60000);
    } catch (err) {
      card.append(el("div", "error", "download failed: " + err.message));
    }
  }

  function artifactCard(ev) {
    const artifact = ev.artifact || {};
    const card = el("div", "artifact");
    card.dataset.artifactId = ev.artifactId;
    card.append(el("span", "name", (artifact.type === "image" ? "🖼 " : "📄 ") + (artifact.name || ev.artifactId)));
    card.append(el("span", "muted", [formatSize(artifact.sizeBytes), artifact.mimeType].filter(Boolean).join(" · ")));
    if (artifact.description) card.append(el("div", "muted description", artifact.description));
    if (typeof artifact.url === "string" && artifact.url.startsWith("/api/ap/artifact?")) {  // only our own links
      const link = el("a", "download", "Download");
      link.href = artifact.url;
      link.download = artifact.name || "";
      link.addEventListener("click", (event) => {
        event.preventDefault();
        download(artifact.url, artifact.name, card);
      });
      card.append(link);
    }
    return card;
  }

  const draggingFiles = (event) => !!event.dataTransfer && [...event.dataTransfer.types].includes("Files");
  let dragDepth = 0;
  document.addEventListener("dragenter", (event) => {
    if (!draggingFiles(event)) return;
    dragDepth += 1;
    document.body.classList.add("dragging");
  });
  document.addEventListener("dragleave", (event) => {
    if (!draggingFiles(event)) return;
    dragDepth = Math.max(0, dragDepth - 1);
    if (!dragDepth) document.body.classList.remove("dragging");
  });
  document.addEventListener("dragover", (event) => {
    if (draggingFiles(event)) event.preventDefault();  // allows the drop
  });
  document.addEventListener("drop", (event) => {
    if (!draggingFiles(event)) return;
    event.preventDefault();  // never navigate to the dropped file
    dragDepth = 0;
    document.body.classList.remove("dragging");
    attachFiles(event.dataTransfer.files);
  });

  // ---- the event renderer (live and history) ---------------------------------------------------

  function render(ev, live) {
    let part;
    switch (ev.type) {
      case "request.query":
        if (!live) addUser(ev.message, ev.references);
        noteQuery(ev);
        break;
      case "chat.start":
        if (ev.chatId) setChat(ev.chatId);
        break;
      case "run.start":
        if (ev.chatId) setChat(ev.chatId);
        tagRun(ev);
        break;
      case "reasoning.start":
        reasoning(ev.reasoningId);
        break;
      case "reasoning.delta":
        reasoning(ev.reasoningId).body.append(ev.delta);
        break;
      case "reasoning.end":
      case "reasoning.snapshot":
        part = reasoning(ev.reasoningId);
        if (ev.text != null) part.body.textContent = ev.text;
        endReasoning(part);
        break;
      case "content.start":
        endAllReasoning();
        content(ev.contentId);
        break;
      case "content.delta":
        part = content(ev.contentId);
        part.text += ev.delta;
        if (live) paintSoon(part); else paintContent(part);
        break;
      case "content.snapshot":
        endAllReasoning();
        part = content(ev.contentId);
        part.text = ev.text;
        paintContent(part);
        break;
      case "content.end":
        part = content(ev.contentId);
        if (part.pending) paintContent(part);
        break;
      case "tool.start":
      case "tool.snapshot":
        part = tool(ev);
        if (ev.arguments != null) part.args.textContent = part.text = show(ev.arguments);
        if (live && ev.toolType) startFrontend(part, ev);
        break;
      case "tool.args":
        part = tool(ev);
        part.text += ev.delta;
        part.args.textContent = part.text;
        break;
      case "tool.end":
        part = tool(ev);
        if (frontends.has(ev.toolId)) {
          const fe = frontends.get(ev.toolId);
          fe.params = parseJson(part.text) || {};
          toolInit(fe);
        }
        break;
      case "request.submit":
        if (frontends.has(ev.toolId)) frontends.get(ev.toolId).submitted = true;  // answered (maybe in another tab)
        if (parts.has(ev.toolId)) parts.get(ev.toolId).box.append(el("div", "muted", "submitted: " + show(ev.payload)));
        break;
      case "tool.result":
        tool(ev).result.textContent = "→ " + show(ev.result);
        frontends.delete(ev.toolId);
        break;
      case "action.start":
      case "action.snapshot":
        part = action(ev);
        if (ev.arguments != null) part.args.textContent = part.text = show(ev.arguments);
        break;
      case "action.args":
        part = action(ev);
        part.text += ev.delta;
        part.args.textContent = part.text;
        break;
      case "action.param":
        part = action(ev);
        part.param = ev.param;
        if (live) perform(part);
        break;
      case "action.end":
        if (live) perform(action(ev));
        break;
      case "action.result":
        action(ev).result.textContent = "→ " + show(ev.result);
        break;
      case "plan.create":
      case "plan.update":
        plan(ev);
        break;
      case "task.start": taskStatus(ev.taskId, "running"); break;
      case "task.complete": taskStatus(ev.taskId, "completed"); break;
      case "task.fail": taskStatus(ev.taskId, "failed"); break;
      case "task.cancel": taskStatus(ev.taskId, "canceled"); break;
      case "source.snapshot":
        if (/^https?:\/\//i.test(ev.url || "")) {
          const link = el("a", "source", ev.title || ev.url);
          link.href = ev.url;
          link.target = "_blank";
          link.rel = "noopener noreferrer";
          currentTurn().append(link);
        }
        break;
      case "run.complete": {
        paintPending();
        endAllReasoning();
        const usage = ev.usage || {};
        const bits = ["✓ " + (ev.finishReason || "done")];
        if (usage.totalTokens != null) bits.push(usage.totalTokens + " tokens (" + usage.promptTokens + " in / " + usage.completionTokens + " out)");
        if (usage.points != null) bits.push(usage.points + " points");
        if (ev.durationMs != null) bits.push(formatMs(ev.durationMs));
        currentTurn().append(el("div", "done", bits.join(" · ")));
        endRun(ev);
        break;
      }
      case "run.error": {
        paintPending();
        endAllReasoning();
        const error = ev.error || {};
        showError("✗ run failed" + (error.code != null ? " [" + error.code + "]" : "") + ": " + (error.message || "unknown error"));
        endRun(ev);
        break;
      }
      case "run.cancel":
        paintPending();
        endAllReasoning();
        currentTurn().append(el("div", "done", "cancelled"));
        endRun(ev);
        break;
      case "artifact.publish":
        currentTurn().append(artifactCard(ev));
        break;
      default:
        break;  // other events (request.upload, …) have nothing to draw
    }
    scroll();
  }

  // ---- runs: following, remembering, re-attaching (SPEC §15) -----------------------------------

  // A run as this page draws it. lastSeq is the highest seq drawn: every stream of the run
  // (the query's own, each re-attach) goes through apply(), which skips what was drawn already.
  function newView(chatId, runId) {
    return { chatId: chatId || null, runId: runId || null, lastSeq: 0, userShown: false, terminal: false, stopAsked: false,
             events: [] };
  }

  function remembered(chatId) {
    const record = parseJson(sessionStorage.getItem(RUN_KEY + chatId) || "null");
    return record && typeof record.runId === "string" ? record : null;
  }
  function remember(view) {
    if (!view.chatId || !view.runId) return;
    if (view.terminal) sessionStorage.removeItem(RUN_KEY + view.chatId);
    else sessionStorage.setItem(RUN_KEY + view.chatId, JSON.stringify({ runId: view.runId, lastSeq: view.lastSeq }));
  }
  function forget(chatId, runId) {
    const record = remembered(chatId);
    if (record && record.runId === runId) sessionStorage.removeItem(RUN_KEY + chatId);
  }

  function apply(view, ev) {
    if (typeof ev.seq === "number") {
      if (ev.seq <= view.lastSeq) return;  // drawn already (a replay overlapping what we have)
      view.lastSeq = ev.seq;
    }
    if (ev.chatId) view.chatId = ev.chatId;
    if (!view.runId && ev.runId) {
      view.runId = ev.runId;
      if (view.stopAsked) interrupt(view);
    }
    view.events.push(ev);
    capture(view, ev);
    if (ev.type === "request.query") {
      if (!view.userShown) addUser(ev.message, ev.references);  // a re-attached run draws its own question
      view.userShown = true;
      noteQuery(ev);
    } else {
      render(ev, true);
    }
    if (TERMINAL.has(ev.type)) view.terminal = true;
    remember(view);
  }

  const follow = (view, body) => readSse(body, (ev) => apply(view, ev));

  function setReconnecting(on) {
    $("reconnecting").hidden = !on;
  }

  // One attempt: "ended" (terminal event seen), "broken" (the stream stopped early) or "gone"
  // (4xx: the gateway will not serve this run; the error is drawn).
  async function streamRun(view) {
    const response = await api("/api/ap/run/stream?runId=" + encodeURIComponent(view.runId) + "&after=" + view.lastSeq,
      { headers: { Accept: "text/event-stream" } });
    if (response.status >= 400 && response.status < 500 && response.status !== 408 && response.status !== 429) {
      const body = await response.json().catch(() => ({}));
      const why = body.msg || "HTTP " + response.status;
      showError(response.status === 404
        ? "✗ run " + view.runId + " has expired or is unknown to the gateway; it can no longer be followed (" + why + ")"
        : "✗ cannot follow run " + view.runId + ": " + why);
      return "gone";
    }
    if (!response.ok || !response.body) await envelope(response);  // throws with the gateway's msg
    setReconnecting(false);
    await follow(view, response.body);
    return view.terminal ? "ended" : "broken";
  }

  // Re-attach to view's run after its last drawn seq until the run ends, shown as "reconnecting…".
  async function attach(view) {
    let lastError = null;
    for (let attempt = 0; attempt < ATTACH_ATTEMPTS && !view.terminal; attempt++) {
      if (attempt > 0) await delay(Math.min(1000 * 2 ** (attempt - 1), 8000));
      setReconnecting(true);
      try {
        const outcome = await streamRun(view);
        if (outcome === "gone") {
          forget(view.chatId, view.runId);
          break;
        }
      } catch (err) {
        if (err instanceof AuthRequired) {
          setReconnecting(false);
          showError(err.message);
          return;
        }
        lastError = err;
      }
    }
    setReconnecting(false);
    if (!view.terminal && lastError) {
      showError("✗ lost the connection to run " + view.runId + " (" + lastError.message + "); reload the page to try again");
    }
  }

  async function interrupt(view) {
    try {
      await postData("/api/ap/interrupt", { runId: view.runId });
    } catch (err) {
      showError("stop failed: " + err.message);
    }
  }

  // History split into runs: each starts at its request.query (or a run.start of its own).
  function historyRuns(events) {
    const runs = [];
    let run = null;
    for (const ev of events) {
      if (!run || ev.type === "request.query" || (ev.type === "run.start" && run.runId)) {
        run = { runId: null, ended: false, events: [] };
        runs.push(run);
      }
      if (ev.type === "run.start") run.runId = ev.runId;
      if (TERMINAL.has(ev.type)) run.ended = true;
      run.events.push(ev);
    }
    return runs;
  }

  async function liveRuns(chatId) {
    try {
      const runs = await getData("/api/ap/runs?chatId=" + encodeURIComponent(chatId));
      return runs.filter((run) => run.status === "running" || run.status === "waiting").reverse();  // oldest first
    } catch (err) {
      if (err instanceof AuthRequired) throw err;
      return [];  // an older gateway without §15: nothing to attach to
    }
  }

  // ---- chats, agents, sending ------------------------------------------------------------------

  function setChat(chatId) {
    if (chatId !== state.chatId && !state.uploading) clearAttachments();  // they belong to the chat left
    state.chatId = chatId;
    if (chatId) sessionStorage.setItem(CHAT_KEY, chatId);
    else sessionStorage.removeItem(CHAT_KEY);
    $("chat-id").textContent = chatId ? "chat " + chatId : "";
    for (const item of $("chats").children) {
      item.classList.toggle("active", item.dataset.chatId === chatId);
      if (item.dataset.chatId === chatId) item.setAttribute("aria-current", "true");
      else item.removeAttribute("aria-current");
    }
  }

  function resetLog() {
    $("log").replaceChildren();
    parts = new Map();
    frontends.clear();
    turn = null;
    state.stick = true;
    state.lastUser = null;
    state.query = null;
    if (studio) studio.reset();
  }

  async function loadAgents() {
    const agents = await getData("/api/ap/agents");
    const select = $("agent");
    const previous = select.value;
    select.replaceChildren(...agents.map((agent) => {
      const icon = typeof agent.icon === "string" && agent.icon.startsWith("emoji:") ? agent.icon.slice(6) + " " : "";
      const option = el("option", "", icon + (agent.name || agent.key) + " (" + agent.key + ")");
      option.value = agent.key;
      return option;
    }));
    if (previous) select.value = previous;
  }

  async function loadChats() {
    const chats = await getData("/api/ap/chats");
    $("chats").replaceChildren(...chats.map((chat) => {
      const item = el("li", "", chat.chatName || chat.chatId);
      item.title = chat.chatId + (chat.updatedAt ? " · " + new Date(chat.updatedAt).toLocaleString() : "");
      item.dataset.chatId = chat.chatId;
      item.dataset.agentKey = chat.firstAgentKey || "";
      if (chat.forkedFrom) {  // SPEC §20: a fork (time travel) of another chat
        item.classList.add("fork");
        item.title = "fork of " + chat.forkedFrom.chatId + " · " + item.title;
      }
      item.classList.toggle("active", chat.chatId === state.chatId);
      item.tabIndex = 0;  // keyboard: Tab to a chat, Enter or Space opens it
      item.addEventListener("click", () => openChat(chat.chatId, chat.firstAgentKey));
      item.addEventListener("keydown", (event) => {
        if (event.key !== "Enter" && event.key !== " ") return;
        event.preventDefault();
        setSidebar(false);
        openChat(chat.chatId, chat.firstAgentKey);
      });
      return item;
    }));
  }

  // Show a chat: its ended runs from the history, then each open run attached from seq 0
  // (see "Re-attaching" at the top).
  async function openChat(chatId, agentKey) {
    if (state.busy) return;
    resetLog();
    setChat(chatId);
    if (agentKey && [...$("agent").options].some((o) => o.value === agentKey)) $("agent").value = agentKey;
    setBusy(true, null);
    const open = [];
    try {
      const data = await getData("/api/ap/chat?chatId=" + encodeURIComponent(chatId));
      const banner = studio ? await studio.chatOpened(chatId, data) : null;
      if (banner) $("log").prepend(banner);
      const runs = historyRuns(data.events || []);
      const ended = new Set();
      for (const run of runs) {
        if (run.runId && !run.ended) open.push(run.runId);
        if (run.runId && run.ended) ended.add(run.runId);
      }
      for (const run of await liveRuns(chatId)) if (!open.includes(run.runId)) open.push(run.runId);
      const record = remembered(chatId);
      if (record && ended.has(record.runId)) forget(chatId, record.runId);
      else if (record && !open.includes(record.runId)) open.push(record.runId);
      for (const run of runs) {
        if (open.includes(run.runId)) continue;
        run.events.forEach((ev) => render(ev, false));
        turn = null;
      }
      for (const runId of open) {
        const view = newView(chatId, runId);
        state.view = view;  // Stop interrupts it
        await attach(view);
        turn = null;
      }
    } catch (err) {
      showError(err.message);
    } finally {
      turn = null;
      setBusy(false, null);
      if (open.length) loadChats().catch(() => {});
    }
  }

  function setBusy(busy, view) {
    state.busy = busy;
    state.view = view;
    $("send").textContent = busy ? "Stop" : "Send";
  }

  async function send() {
    const message = $("message").value.trim();
    if (!message) return;
    if (attachments.some((item) => item.status === "uploading")) {  // send what the user sees attached
      setBusy(true, null);
      await uploads;
      setBusy(false, null);
    }
    const references = takeAttachments();
    $("message").value = "";
    await runQuery(message, { agentKey: $("agent").value || undefined, references });
  }

  // Send one question to the chat on screen (a new chat when none) and follow its run to the end.
  // options: {agentKey, references: [{id, name?}], params}. Resolves to the run's view.
  async function runQuery(message, options) {
    const references = options.references || [];
    if (options.agentKey && [...$("agent").options].some((o) => o.value === options.agentKey)) $("agent").value = options.agentKey;
    addUser(message, references);
    const body = {
      message, agentKey: options.agentKey || undefined, chatId: state.chatId || undefined, onDisconnect: "continue",
    };
    if (references.length) body.references = references.map((ref) => ({ id: ref.id }));
    if (options.params && typeof options.params === "object") body.params = options.params;
    const view = newView(state.chatId, null);
    view.userShown = true;
    setBusy(true, view);
    let failure = null;
    try {
      const response = await api("/api/ap/query", {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
        body: JSON.stringify(body),
      });
      if (!response.ok || !response.body) await envelope(response);  // throws with the gateway's msg
      await follow(view, response.body);
    } catch (err) {
      failure = err;
    }
    try {
      if (view.runId && !view.terminal) await attach(view);  // the stream broke before the run ended
      else if (!view.runId) showError(failure ? failure.message : "the stream ended before the run started");
    } finally {
      turn = null;
      setBusy(false, null);
      loadChats().catch(() => {});
    }
    return view;
  }

  function stop() {
    const view = state.view;
    if (!view || view.terminal) return;
    if (view.runId) interrupt(view);
    else view.stopAsked = true;  // interrupted as soon as its run.start tells the runId
  }

  // After a reload: reopen the chat that was on screen (and re-attach to its open run).
  function resume() {
    if (state.resumed) return;
    state.resumed = true;
    const chatId = sessionStorage.getItem(CHAT_KEY);
    if (!chatId) return;
    const item = [...$("chats").children].find((li) => li.dataset.chatId === chatId);
    openChat(chatId, item ? item.dataset.agentKey : null);
  }

  function init() {
    Promise.all([loadAgents(), loadChats()]).then(resume, (err) => {
      if (!(err instanceof AuthRequired)) showError(err.message);
    });
  }

  $("log").addEventListener("scroll", () => {
    const log = $("log");
    state.stick = log.scrollHeight - log.scrollTop - log.clientHeight < 48;
  });
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    if (state.busy) stop(); else send();
  });
  $("message").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      if (!state.busy) $("composer").requestSubmit();
    }
  });
  $("attach").addEventListener("click", () => $("attach-input").click());
  $("attach-input").addEventListener("change", () => {
    attachFiles($("attach-input").files);
    $("attach-input").value = "";  // the same file may be attached again
  });
  $("new-chat").addEventListener("click", () => {
    if (state.busy) return;
    resetLog();
    setChat(null);
    setSidebar(false);
    $("message").focus();
  });
  // Narrow screens: the sidebar is a drawer behind the ☰ toggle (the CSS decides when).
  function setSidebar(open) {
    document.body.classList.toggle("sidebar-open", open);
    $("sidebar-toggle").setAttribute("aria-expanded", String(open));
    $("backdrop").hidden = !open;
  }
  $("sidebar-toggle").addEventListener("click", () => setSidebar(!document.body.classList.contains("sidebar-open")));
  $("backdrop").addEventListener("click", () => setSidebar(false));
  $("chats").addEventListener("click", () => setSidebar(false));
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape") setSidebar(false);
  });
  $("auth").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("token").value.trim();
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
    $("token").value = "";
    $("auth").hidden = true;
    init();
  });

  // ---- the studio (studio.js) ------------------------------------------------------------------

  function formatMs(ms) {
    return ms < 1000 ? Math.round(ms) + " ms" : (ms / 1000).toFixed(ms < 10000 ? 2 : 1) + " s";
  }
  // Markdown of untrusted text, rendered like an answer (see "Markdown" at the top).
  function markdownNode(text) {
    const node = el("div", markdown ? "md" : "md plain");
    if (markdown) node.innerHTML = markdown.render(text || "");
    else node.textContent = text || "";
    return node;
  }
  const studio = typeof window.agwStudio === "function" ? window.agwStudio({
    el, api, getData, postData, readSse, markdownNode, runQuery,
    busy: () => state.busy,
    openChat: (chatId, agentKey) => {
      setSidebar(false);
      return openChat(chatId, agentKey);
    },
    loadChats: () => loadChats().catch(() => {}),
    captured: (runId) => captured.get(runId) || null,
    showError: (message) => showError(message),
  }) : null;

  init();
})();
