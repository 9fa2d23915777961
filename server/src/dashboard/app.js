// Tidemark's live dashboard: lists the websocket outputs of this server
// (/api/v1/live), subscribes to one over /ws with a PromQL selector, and
// draws its series with uPlot as values arrive. Protocol: docs/sinks/websocket.md.
//
// Later layers (anomaly scores, alerts, incidents) draw on the same chart:
// push a function to `tidemark.overlays`; it is called on every redraw as
// f(u, ctx, view) with the uPlot instance, its canvas context and the view
// (series, watermark) after the lines are drawn. u.valToPos(value, "x" | "y",
// true) turns times (epoch milliseconds) and values into canvas pixels.
"use strict";

(function () {
  const MAX_POINTS = 1000; // kept per series
  const MAX_CHARTED = 10; // lines on the chart at once
  const MAX_ROWS = 500; // rows in the series table
  const SCORED = /:(anomaly_score|anomaly|expected|lower|upper)$/; // a score transform's outputs
  const COLORS = ["#1f6feb", "#e8590c", "#2f9e44", "#c2255c", "#7048e8",
    "#0c8599", "#f08c00", "#5c940d", "#862e9c", "#495057"];

  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.search);
  // A token in the address (the one `tidemark run` prints) is kept for
  // this origin, so that the page still works once it is reloaded without it.
  if (params.get("token")) localStorage.setItem("tidemark.token", params.get("token"));

  const view = {
    pipeline: params.get("pipeline") || "",
    output: params.get("output") || "",
    match: params.get("match") || "",
    token: params.get("token") || localStorage.getItem("tidemark.token") || "",
    series: new Map(), // key -> {key, name, labels, points: [[t, v]], charted, color}
    watermark: 0,
    received: 0,
    skipped: 0,
    published: null, // [count, ms] of the last progress message
  };
  let socket = null;
  let chart = null;
  let redrawTimer = null;
  let reconnectTimer = null;
  let reconnectDelay = 1000;

  const tidemark = { view, overlays: [], chart: () => chart, drawnPoints: () => Number($("chart").dataset.points) };
  window.tidemark = tidemark;

  function say(text) { $("message").textContent = text || ""; }

  function withToken(path) {
    if (!view.token) return path;
    return path + (path.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(view.token);
  }

  function formatTime(ms) {
    if (!ms) return "–";
    return new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z").replace(/Z$/, " UTC");
  }

  function formatValue(v) {
    if (v === null || v === undefined) return "–";
    if (typeof v === "string") return v; // NaN, +Inf, -Inf
    const a = Math.abs(v);
    if (a !== 0 && (a >= 1e6 || a < 1e-3)) return v.toExponential(3);
    return Number.isInteger(v) ? String(v) : v.toFixed(3);
  }

  function rate(n) {
    if (n >= 1e6) return (n / 1e6).toFixed(2) + " M/s";
    if (n >= 1e3) return (n / 1e3).toFixed(1) + " K/s";
    return n.toFixed(0) + " /s";
  }

  function seriesKey(s) {
    const labels = Object.keys(s.labels || {}).sort().map((k) => k + "=" + JSON.stringify(s.labels[k]));
    return s.name + "{" + labels.join(",") + "}";
  }

  // ---- outputs ---------------------------------------------------------

  async function loadOutputs() {
    let response;
    try {
      response = await fetch(withToken("/api/v1/live"));
    } catch (e) {
      say("Cannot reach the server: " + e.message);
      return;
    }
    if (response.status === 401) {
      $("token-field").hidden = false;
      say("This server needs a token: enter it and press Watch.");
      return;
    }
    if (!response.ok) {
      say("The server answered " + response.status + " to /api/v1/live.");
      return;
    }
    const { outputs } = await response.json();
    const select = $("output");
    const current = view.pipeline ? view.pipeline + "/" + view.output : select.value;
    select.replaceChildren(...outputs.map((o) => {
      const option = document.createElement("option");
      option.value = o.pipeline + "/" + o.output;
      option.textContent = o.pipeline + " / " + o.output;
      return option;
    }));
    if (outputs.length === 0) {
      say("No pipeline here has a websocket sink yet: add one (docs/sinks/websocket.md).");
      return;
    }
    const found = outputs.find((o) => o.pipeline + "/" + o.output === current)
      || outputs.find((o) => o.pipeline === view.pipeline) || outputs[0];
    select.value = found.pipeline + "/" + found.output;
    if (!socket) {
      view.pipeline = found.pipeline;
      view.output = found.output;
      connect();
    }
  }

  // ---- the subscription ------------------------------------------------

  function connect() {
    clearTimeout(reconnectTimer);
    if (socket) {
      socket.onclose = null;
      socket.close();
    }
    const url = new URL("/ws", location.href);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    url.searchParams.set("pipeline", view.pipeline);
    if (view.output) url.searchParams.set("output", view.output);
    if (view.match) url.searchParams.set("match", view.match);
    if (view.token) url.searchParams.set("token", view.token);
    const shown = new URL(location.href);
    for (const [k, v] of [["pipeline", view.pipeline], ["output", view.output], ["match", view.match]]) {
      if (v) shown.searchParams.set(k, v); else shown.searchParams.delete(k);
    }
    shown.searchParams.delete("token");
    history.replaceState(null, "", shown);

    $("connection").textContent = "connecting";
    const ws = new WebSocket(url);
    socket = ws;
    ws.onopen = () => {
      $("connection").textContent = "live";
      reconnectDelay = 1000;
      say("");
    };
    ws.onmessage = (event) => receive(JSON.parse(event.data));
    ws.onclose = (event) => {
      if (socket !== ws) return;
      socket = null;
      $("connection").textContent = "closed";
      // 1008: too slow (the queue filled) or a policy reason; 1006: the
      // server went away or refused the upgrade (see the list below).
      say(event.reason ? "Closed by the server: " + event.reason + ". Reconnecting." : "Disconnected. Reconnecting.");
      reconnectTimer = setTimeout(() => { loadOutputs(); connect(); }, reconnectDelay);
      reconnectDelay = Math.min(reconnectDelay * 2, 15000);
    };
  }

  function receive(m) {
    if (m.type === "snapshot") {
      view.series.clear();
      view.received = 0;
      view.skipped = 0;
      add(m.samples);
    } else if (m.type === "samples") {
      add(m.samples);
      if (m.skipped) {
        view.skipped += m.skipped;
        $("skipped-field").hidden = false;
        $("skipped").textContent = String(view.skipped);
      }
    } else if (m.type === "progress") {
      const now = performance.now();
      if (view.published) {
        const seconds = (now - view.published[1]) / 1000;
        if (seconds > 0) $("throughput").textContent = rate((m.published - view.published[0]) / seconds);
      }
      view.published = [m.published, now];
    }
    if (m.watermark !== undefined && m.watermark > view.watermark) {
      view.watermark = m.watermark;
      $("watermark").textContent = formatTime(m.watermark);
    }
    scheduleRedraw();
  }

  // New series are drawn while there is room, if they share the metric
  // name of the first one drawn (one y axis: counts and averages of the
  // same output differ by orders of magnitude); a click on a row in the
  // table adds or removes any series.
  function add(samples) {
    let charted = 0;
    let name = null;
    for (const s of view.series.values()) {
      if (s.charted) { charted++; name = name || s.name; }
    }
    for (const sample of samples) {
      const key = seriesKey(sample);
      let s = view.series.get(key);
      if (!s) {
        // What a `score` transform says of a metric (`m:lower`, ...) gives
        // way to the metric itself when it comes: the metric is charted,
        // its band and flags drawn over it (see scoreOverlay).
        if (name !== null && name.startsWith(sample.name + ":") && SCORED.test(name)) {
          for (const other of view.series.values()) other.charted = false;
          charted = 0;
          name = null;
        }
        const draw = charted < MAX_CHARTED && (name === null || name === sample.name);
        s = { key, name: sample.name, labels: sample.labels || {}, points: [], charted: draw };
        if (draw) { charted++; name = name || sample.name; }
        view.series.set(key, s);
      }
      const v = typeof sample.value === "number" ? sample.value : null; // NaN and infinities are not drawn
      s.points.push([sample.timestamp, v, sample.value]);
      if (s.points.length > MAX_POINTS) s.points.splice(0, s.points.length - MAX_POINTS);
    }
    view.received += samples.length;
  }

  // ---- drawing ---------------------------------------------------------

  function scheduleRedraw() {
    if (redrawTimer) return;
    redrawTimer = setTimeout(() => { redrawTimer = null; redraw(); }, 200);
  }

  function chartedSeries() {
    return [...view.series.values()].filter((s) => s.charted).sort((a, b) => a.key.localeCompare(b.key));
  }

  // uPlot wants one x array and one y array per line, aligned (null where a
  // line has no value at that time).
  function aligned(lines) {
    const times = new Set();
    for (const s of lines) for (const p of s.points) times.add(p[0]);
    const xs = [...times].sort((a, b) => a - b);
    const index = new Map(xs.map((t, i) => [t, i]));
    const ys = lines.map((s) => {
      const y = new Array(xs.length).fill(null);
      for (const p of s.points) y[index.get(p[0])] = p[1];
      return y;
    });
    return [xs, ...ys];
  }

  function redraw() {
    $("received").textContent = String(view.received);
    $("series-count").textContent = String(view.series.size);
    const lines = chartedSeries();
    lines.forEach((s, i) => { s.color = COLORS[i % COLORS.length]; });
    // Quantiles repeat values to the last digit (DDSketch bins): say so
    // when one is on the chart or in the table.
    $("quantile-note").hidden = ![...view.series.values()].some((s) => /_p\d+(\.\d+)?$/.test(s.name));
    const data = aligned(lines);
    const signature = lines.map((s) => s.key).join("\n");
    const el = $("chart");
    if (!chart || chart.signature !== signature) {
      if (chart) chart.destroy();
      chart = new uPlot({
        width: el.clientWidth || 800,
        height: 320,
        ms: 1, // x values are epoch milliseconds, as in the samples
        tzDate: (ts) => uPlot.tzDate(new Date(ts), "Etc/UTC"), // times in UTC, like the rest of the page
        scales: { x: { time: true } },
        series: [{}, ...lines.map((s) => ({ label: s.key, stroke: s.color, width: 1.5, spanGaps: true, points: { size: 4 } }))],
        axes: [{}, { size: 70 }],
        legend: { show: lines.length <= 4 }, // the table's swatches say the rest
        hooks: {
          draw: [(u) => {
            let n = 0;
            for (let i = 1; i < u.data.length; i++) for (const v of u.data[i]) if (v !== null) n++;
            el.dataset.points = String(n);
            for (const overlay of tidemark.overlays) overlay(u, u.ctx, view);
          }],
        },
      }, data, el);
      chart.signature = signature;
    } else {
      chart.setData(data);
    }
    renderTable();
  }

  function renderTable() {
    const rows = [...view.series.values()].sort((a, b) => a.key.localeCompare(b.key)).slice(0, MAX_ROWS);
    const body = $("series").tBodies[0];
    body.replaceChildren(...rows.map((s) => {
      const tr = document.createElement("tr");
      const last = s.points[s.points.length - 1];
      tr.className = s.charted ? "charted" : "";
      tr.title = s.charted ? "Click to take it off the chart" : "Click to draw it";
      const swatch = document.createElement("span");
      if (s.charted) swatch.style.background = s.color;
      const cells = [swatch, s.key, formatValue(last && last[2]), formatTime(last && last[0])];
      const classes = ["", "name", "value", "at"];
      cells.forEach((c, i) => {
        const td = document.createElement("td");
        td.className = classes[i];
        if (typeof c === "string") td.textContent = c; else td.append(c);
        tr.append(td);
      });
      tr.onclick = () => {
        const charted = chartedSeries().length;
        if (!s.charted && charted >= MAX_CHARTED) {
          say("At most " + MAX_CHARTED + " lines at once: take one off first.");
          return;
        }
        s.charted = !s.charted;
        redraw();
      };
      return tr;
    }));
  }

  // ---- anomaly scores ----------------------------------------------------

  // A charted series `m{...}` scored by a `score` transform with
  // `explain: true` has `m:lower{...}` and `m:upper{...}` in the same
  // output: the band the detector expected is shaded behind the line, and
  // the points where `m:anomaly{...}` is 1 are ringed in red. (The score,
  // `m:anomaly_score`, is a series of its own: click its row to draw it.)
  function scoreOverlay(u, ctx) {
    let bands = 0;
    let marks = 0;
    ctx.save();
    ctx.beginPath();
    ctx.rect(u.bbox.left, u.bbox.top, u.bbox.width, u.bbox.height);
    ctx.clip();
    for (const s of view.series.values()) {
      if (!s.charted) continue;
      const other = (suffix) => view.series.get(seriesKey({ name: s.name + suffix, labels: s.labels }));
      const lower = other(":lower");
      const upper = other(":upper");
      const flags = other(":anomaly");
      if (lower && upper) {
        const up = new Map(upper.points.filter((p) => p[1] !== null).map((p) => [p[0], p[1]]));
        const pts = lower.points.filter((p) => p[1] !== null && up.has(p[0]));
        if (pts.length > 1) {
          const at = (t, v) => [u.valToPos(t, "x", true), u.valToPos(v, "y", true)];
          ctx.fillStyle = "rgba(31, 111, 235, 0.12)";
          ctx.beginPath();
          pts.forEach((p, i) => {
            const [x, y] = at(p[0], up.get(p[0]));
            if (i) ctx.lineTo(x, y); else ctx.moveTo(x, y);
          });
          for (let i = pts.length - 1; i >= 0; i--) ctx.lineTo(...at(pts[i][0], pts[i][1]));
          ctx.closePath();
          ctx.fill();
          bands++;
        }
      }
      if (flags) {
        const values = new Map(s.points.filter((p) => p[1] !== null).map((p) => [p[0], p[1]]));
        ctx.strokeStyle = "#e03131";
        ctx.lineWidth = 2;
        for (const p of flags.points) {
          if (p[1] !== 1 || !values.has(p[0])) continue;
          ctx.beginPath();
          ctx.arc(u.valToPos(p[0], "x", true), u.valToPos(values.get(p[0]), "y", true), 6, 0, 2 * Math.PI);
          ctx.stroke();
          marks++;
        }
      }
    }
    ctx.restore();
    $("chart").dataset.bands = String(bands);
    $("chart").dataset.anomalies = String(marks);
  }
  tidemark.overlays.push(scoreOverlay);

  // ---- alerts ------------------------------------------------------------

  // The pending and firing alerts of the server's `alert` transforms
  // (/api/v1/alerts, Prometheus's shape), listed above the chart and
  // polled every 2 s. A charted series is involved in an alert when they
  // share a label (other than the metric name) and agree on every label
  // both have: the time since the alert became active is shaded on the
  // chart, orange while pending, red once firing. `tidemark run` has no
  // alerts API; the section then stays hidden.
  view.alerts = [];

  // The `data` of a JSON answer of the server's API (with the page's
  // token), or null when there is none (`tidemark run`, an error, the
  // server away): polling tries again.
  async function apiData(path) {
    try {
      const headers = view.token ? { Authorization: "Bearer " + view.token } : {};
      const response = await fetch(path, { headers });
      if (!response.ok) return null;
      const body = await response.json();
      return body.data || null;
    } catch (e) {
      return null;
    }
  }

  async function loadAlerts() {
    const data = await apiData("/api/v1/alerts");
    if (!data) return;
    view.alerts = data.alerts || [];
    renderAlerts();
    scheduleRedraw();
  }

  function renderAlerts() {
    const rank = (a) => (a.state === "firing" ? 0 : 1);
    const alerts = [...view.alerts].sort((a, b) => rank(a) - rank(b)
      || a.labels.alertname.localeCompare(b.labels.alertname) || a.activeAt.localeCompare(b.activeAt));
    $("alerts").hidden = alerts.length === 0;
    const firing = alerts.filter((a) => a.state === "firing").length;
    $("alert-count").textContent = "(" + firing + " firing, " + (alerts.length - firing) + " pending)";
    $("alert-table").tBodies[0].replaceChildren(...alerts.slice(0, MAX_ROWS).map((a) => {
      const tr = document.createElement("tr");
      tr.className = a.state;
      const labels = Object.keys(a.labels).filter((k) => k !== "alertname").sort()
        .map((k) => k + "=" + JSON.stringify(a.labels[k])).join(", ");
      const cells = [a.state, a.labels.alertname, labels, a.activeAt.replace("T", " ").replace(/\.\d+Z$/, " UTC"),
        a.value, (a.annotations && (a.annotations.summary || a.annotations.description)) || ""];
      for (const c of cells) {
        const td = document.createElement("td");
        td.textContent = c;
        tr.append(td);
      }
      return tr;
    }));
  }

  function involved(alert, s) {
    let shared = 0;
    for (const [k, v] of Object.entries(alert.labels)) {
      if (k === "alertname" || k === "__name__" || !(k in s.labels)) continue;
      if (s.labels[k] !== v) return false;
      shared++;
    }
    return shared > 0;
  }

  function alertOverlay(u, ctx) {
    let marked = 0;
    ctx.save();
    ctx.beginPath();
    ctx.rect(u.bbox.left, u.bbox.top, u.bbox.width, u.bbox.height);
    ctx.clip();
    for (const s of view.series.values()) {
      if (!s.charted) continue;
      const alerts = view.alerts.filter((a) => involved(a, s));
      if (alerts.length === 0) continue;
      const firing = alerts.some((a) => a.state === "firing");
      const since = Math.min(...alerts.map((a) => Date.parse(a.activeAt)));
      const x0 = Math.max(u.bbox.left, u.valToPos(since, "x", true));
      ctx.fillStyle = firing ? "rgba(224, 49, 49, 0.10)" : "rgba(240, 140, 0, 0.10)";
      ctx.fillRect(x0, u.bbox.top, u.bbox.left + u.bbox.width - x0, u.bbox.height);
      ctx.strokeStyle = firing ? "#e03131" : "#f08c00";
      ctx.lineWidth = 2;
      ctx.beginPath();
      ctx.moveTo(x0, u.bbox.top);
      ctx.lineTo(x0, u.bbox.top + u.bbox.height);
      ctx.stroke();
      marked++;
    }
    ctx.restore();
    $("chart").dataset.alerts = String(marked);
  }
  tidemark.overlays.push(alertOverlay);

  // ---- notifications -----------------------------------------------------

  // The latest deliveries of the server's `notify` sinks
  // (/api/v1/notifications, newest first), polled with the alerts; a
  // refused or abandoned one is shown in red. Hidden when there are none.
  async function loadNotifications() {
    const data = await apiData("/api/v1/notifications");
    if (!data) return;
    const list = data.notifications || [];
    $("notifications").hidden = list.length === 0;
    $("notification-table").tBodies[0].replaceChildren(...list.slice(0, MAX_ROWS).map((n) => {
      const tr = document.createElement("tr");
      tr.className = n.outcome;
      const cells = [n.doneAt.replace("T", " ").replace(/\.\d+Z$/, " UTC"), n.target, n.status, n.title, n.outcome];
      for (const c of cells) {
        const td = document.createElement("td");
        td.textContent = c;
        tr.append(td);
      }
      return tr;
    }));
  }

  // ---- incidents -------------------------------------------------------

  // The incidents of the server's `correlate` transforms
  // (/api/v1/incidents: open ones first, the latest change first), polled
  // with the alerts. The selected one (at first the first listed) is
  // drawn: its members as nodes, one per entity (or alert, when it is on
  // none), joined where a member's strongest tie is (`tiedTo`), the
  // probable root outlined; a timeline of when each member fired; and why
  // each belongs. Hidden when there are none.
  let selectedIncident = null;
  const SVG = "http://www.w3.org/2000/svg";

  function svg(tag, attrs, text) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // An alert as `Name{a="x", b="y"}`; `compact` leaves out the spaces,
  // as the incident's `root` names an alert.
  function alertText(labels, compact) {
    const rest = Object.keys(labels).filter((k) => k !== "alertname").sort()
      .map((k) => k + "=" + JSON.stringify(labels[k])).join(compact ? "," : ", ");
    return (labels.alertname || "") + "{" + rest + "}";
  }

  async function loadIncidents() {
    const data = await apiData("/api/v1/incidents");
    if (!data) return;
    const list = data.incidents || [];
    const key = (i) => i.pipeline + "/" + i.transform + "/" + i.id;
    if (!list.some((i) => key(i) === selectedIncident)) {
      selectedIncident = list.length ? key(list[0]) : null;
    }
    $("incidents").hidden = list.length === 0;
    const open = list.filter((i) => i.status !== "resolved").length;
    $("incident-count").textContent = "(" + open + " open, " + (list.length - open) + " resolved)";
    $("incident-table").tBodies[0].replaceChildren(...list.slice(0, MAX_ROWS).map((i) => {
      const tr = document.createElement("tr");
      tr.className = i.status === "resolved" ? "resolved" : "open";
      if (key(i) === selectedIncident) tr.classList.add("selected");
      tr.dataset.id = i.id;
      for (const c of [i.status, i.id, formatTime(i.openedAt), String(i.members.length), i.root]) {
        const td = document.createElement("td");
        td.textContent = c;
        tr.append(td);
      }
      tr.onclick = () => { selectedIncident = key(i); loadIncidents(); };
      return tr;
    }));
    const shown = list.find((i) => key(i) === selectedIncident);
    $("incident-detail").hidden = !shown;
    if (shown) drawIncident(shown);
  }

  function drawIncident(i) {
    $("incident-title").textContent = "Incident " + i.id + " (" + i.pipeline + " / " + i.transform + ")";
    $("incident-summary").textContent = i.summary;
    const members = i.members;
    // Nodes: one per entity, or per alert on none, named by the labels
    // that tell the members apart.
    const varying = [...new Set(members.flatMap((m) => Object.keys(m.labels)))].sort()
      .filter((k) => new Set(members.map((m) => m.labels[k])).size > 1);
    const short = (m) => varying.map((k) => m.labels[k]).filter((v) => v !== undefined).join(" ")
      || m.labels.alertname || alertText(m.labels);
    const nodeOf = members.map((m) => m.entity || alertText(m.labels, true));
    const nameOf = new Map(members.map((m, k) => [nodeOf[k], m.entity || short(m)]));
    const names = [...new Set(nodeOf)];
    const ended = (name) => members.every((m, k) => nodeOf[k] !== name || m.endsAt !== null);
    const edges = new Set();
    members.forEach((m, k) => {
      if (m.tiedTo === undefined || m.tiedTo === null) return;
      const [a, b] = [nodeOf[k], nodeOf[m.tiedTo]].sort();
      if (a !== b) edges.add(JSON.stringify([a, b]));
    });
    const graph = $("incident-graph");
    const [w, h] = [360, 240];
    const r = names.length > 1 ? Math.min(w, h) / 2 - 40 : 0;
    const at = (name) => {
      const k = names.indexOf(name);
      const angle = (2 * Math.PI * k) / names.length - Math.PI / 2;
      return [w / 2 + r * Math.cos(angle), h / 2 + r * Math.sin(angle)];
    };
    const parts = [];
    for (const e of edges) {
      const [a, b] = JSON.parse(e).map(at);
      parts.push(svg("line", { x1: a[0], y1: a[1], x2: b[0], y2: b[1] }));
    }
    for (const name of names) {
      const [x, y] = at(name);
      const classes = [ended(name) ? "ended" : "", name === i.root ? "root" : ""].join(" ").trim();
      const node = svg("circle", { cx: x, cy: y, r: 8, class: classes });
      node.append(svg("title", {}, name));
      parts.push(node);
      const text = nameOf.get(name);
      const label = text.length > 24 ? text.slice(0, 23) + "…" : text;
      parts.push(svg("text", { x: x, y: y + 20, "text-anchor": "middle" }, label));
    }
    graph.replaceChildren(...parts);
    graph.dataset.nodes = String(names.length);
    graph.dataset.edges = String(edges.size);
    // The timeline: a bar per member, from when it started firing to when
    // it stopped; one still firing runs to the right edge. The axis spans
    // the first start to the incident's latest change (at least a minute).
    const timeline = $("incident-timeline");
    const row = 18, left = 130, width = 480;
    const start = Math.min(...members.map((m) => m.startsAt));
    const end = Math.max(i.at, start + 60000, ...members.map((m) => m.endsAt || 0));
    const x = (t) => left + ((t - start) / (end - start)) * (width - left - 10);
    const bars = [];
    members.forEach((m, k) => {
      const y = 6 + k * row;
      bars.push(svg("text", { x: 4, y: y + 11 }, short(m).slice(0, 22)));
      const x0 = x(m.startsAt), x1 = m.endsAt === null ? width - 4 : x(m.endsAt);
      const bar = svg("rect", { x: x0, y: y, width: Math.max(x1 - x0, 2), height: row - 6,
        class: m.endsAt === null ? "" : "ended" });
      bar.append(svg("title", {}, alertText(m.labels) + " since " + formatTime(m.startsAt)));
      bars.push(bar);
    });
    const axis = 10 + members.length * row;
    bars.push(svg("text", { x: left, y: axis + 10 }, formatTime(start)));
    bars.push(svg("text", { x: width - 4, y: axis + 10, "text-anchor": "end" }, formatTime(end)));
    timeline.setAttribute("height", String(axis + 16));
    timeline.replaceChildren(...bars);
    timeline.dataset.bars = String(members.length);
    $("incident-members").replaceChildren(...members.map((m) => {
      const li = document.createElement("li");
      li.textContent = alertText(m.labels) + " since " + formatTime(m.startsAt)
        + (m.endsAt === null ? "" : " (resolved)") + ": " + (m.tiedBy || "its first alert");
      return li;
    }));
  }

  // ---- controls --------------------------------------------------------

  $("match").value = view.match;
  $("token").value = view.token;
  $("controls").onsubmit = (event) => {
    event.preventDefault();
    const [pipeline, ...rest] = ($("output").value || "").split("/");
    view.token = $("token").value;
    if (view.token) localStorage.setItem("tidemark.token", view.token);
    view.match = $("match").value.trim();
    if (!pipeline) { loadOutputs(); return; }
    view.pipeline = pipeline;
    view.output = rest.join("/");
    view.series.clear();
    connect();
  };
  $("output").onchange = () => $("controls").requestSubmit();
  window.addEventListener("resize", () => { if (chart) chart.setSize({ width: $("chart").clientWidth, height: 320 }); });

  loadOutputs();
  setInterval(() => { if (!socket) loadOutputs(); }, 5000);
  loadAlerts();
  setInterval(loadAlerts, 2000);
  loadNotifications();
  setInterval(loadNotifications, 2000);
  loadIncidents();
  setInterval(loadIncidents, 2000);
})();
