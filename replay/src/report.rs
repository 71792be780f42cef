//! `replay report --html`: one self-contained HTML file for people (no
//! network, no external script, style or font): a timeline with a lane per
//! agent and its claims drawn as bars from the claim to whatever ended it
//! (completion, failure, release, lease expiry; open bars run to the last
//! event shown), each budget's balance over time, the invariant breaks
//! `replay check` finds marked, and the event list with a live filter.
//! `#seq=N` links to an event. The data is embedded as JSON and drawn by
//! the page's own script into SVG.
use std::collections::BTreeMap;

use agentlog_core::schema::Body;
use agentlog_core::{Envelope, Timestamp};
use serde_json::{Value, json};

use crate::check::Report as CheckReport;
use crate::error::{Error, Result};
use crate::filter::{Filter, events};
use crate::source::History;

/// The most events one report draws: beyond it the page would not open
/// comfortably, so a larger report is refused with what to narrow.
pub const MAX_EVENTS: u64 = 50_000;

/// A claim drawn as a bar.
struct Bar {
    agent: String,
    task: String,
    from_seq: u64,
    from_ts: u64,
    to_seq: Option<u64>,
    to_ts: Option<u64>,
    end: &'static str,
}

/// Builds the report's data from the events `filter` lets through (at most
/// `max`) and the breaks `check` found.
fn data(history: &History, filter: &Filter, check: &CheckReport, max: u64) -> Result<Value> {
    let mut shown: Vec<Envelope> = Vec::new();
    let mut matched = 0u64;
    events(history, filter, &mut |event| {
        matched += 1;
        if matched <= max {
            shown.push(event.clone());
        }
        true
    })?;
    if matched > max {
        return Err(Error::BadInput {
            what: "report",
            text: format!("{matched} events"),
            reason: format!(
                "a report draws at most {max} events (a larger page does not open comfortably): narrow it with --task, --agent, --session, --budget, --type, --from-seq/--to-seq or --since/--until"
            ),
        });
    }
    let mut bars: Vec<Bar> = Vec::new();
    let mut open: BTreeMap<String, usize> = BTreeMap::new();
    let mut balances: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut rows = Vec::with_capacity(shown.len());
    for event in &shown {
        let body = event.body.as_ref();
        let mut end = |task: &str, how: &'static str, bars: &mut Vec<Bar>| {
            if let Some(i) = open.remove(task) {
                bars[i].to_seq = Some(event.seq);
                bars[i].to_ts = Some(event.ts);
                bars[i].end = how;
            }
        };
        match body {
            Some(Body::TaskClaimed(b)) => {
                end(&b.task_id, "claimed again", &mut bars);
                open.insert(b.task_id.clone(), bars.len());
                bars.push(Bar {
                    agent: b.agent_id.clone(),
                    task: b.task_id.clone(),
                    from_seq: event.seq,
                    from_ts: event.ts,
                    to_seq: None,
                    to_ts: None,
                    end: "open",
                });
            }
            Some(Body::TaskCompleted(b)) => end(&b.task_id, "completed", &mut bars),
            Some(Body::TaskFailed(b)) => end(&b.task_id, "failed", &mut bars),
            Some(Body::TaskReleased(b)) => end(&b.task_id, "released", &mut bars),
            Some(Body::TaskLeaseExpired(b)) => end(&b.task_id, "lease expired", &mut bars),
            Some(Body::BudgetAllocated(b)) => {
                balances.entry(b.budget_id.clone()).or_default().push(json!([event.ts, b.balance_after, event.seq]))
            }
            Some(Body::BudgetDebited(b)) => {
                balances.entry(b.budget_id.clone()).or_default().push(json!([event.ts, b.balance_after, event.seq]))
            }
            Some(Body::BudgetRefunded(b)) => {
                balances.entry(b.budget_id.clone()).or_default().push(json!([event.ts, b.balance_after, event.seq]))
            }
            _ => {}
        }
        let mut body_json = body.map(|b| serde_json::to_value(b).unwrap_or(Value::Null)).unwrap_or(Value::Null);
        if let Value::Object(map) = &mut body_json {
            map.remove("type");
        }
        rows.push(json!({
            "seq": event.seq,
            "ts": event.ts,
            "time": Timestamp::from_nanos(event.ts).to_string(),
            "stream": event.stream,
            "version": event.stream_version,
            "type": body.map_or("unknown", Body::type_name),
            "actor": event.actor,
            "body": body_json.to_string(),
        }));
    }
    let bars: Vec<Value> = bars
        .iter()
        .map(|b| {
            json!({
                "agent": b.agent, "task": b.task, "from_seq": b.from_seq, "from_ts": b.from_ts,
                "to_seq": b.to_seq, "to_ts": b.to_ts, "end": b.end,
            })
        })
        .collect();
    let shown_seqs: std::collections::BTreeSet<u64> = shown.iter().map(|e| e.seq).collect();
    let breaks: Vec<Value> = check
        .breaks
        .iter()
        .map(|b| {
            json!({
                "invariant": b.invariant.name(), "seq": b.seq, "detail": b.detail, "witness": b.witness,
                "shown": shown_seqs.contains(&b.seq),
            })
        })
        .collect();
    Ok(json!({
        "events": rows,
        "bars": bars,
        "balances": balances,
        "breaks": breaks,
        "checked_events": check.events,
    }))
}

/// Escapes JSON for a `<script type="application/json">` element: nothing
/// in it can close the element.
fn script_safe(json: &str) -> String {
    json.replace('<', "\\u003c").replace('>', "\\u003e").replace('&', "\\u0026")
}

/// The report as one HTML page.
pub fn html(history: &History, filter: &Filter, check: &CheckReport, title: &str, max: u64) -> Result<String> {
    let data = data(history, filter, check, max)?;
    let title = title.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    Ok(TEMPLATE.replace("{{TITLE}}", &title).replace("{{DATA}}", &script_safe(&data.to_string())))
}

const TEMPLATE: &str = r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{{TITLE}}</title>
<style>
  body { font: 13px/1.4 system-ui, sans-serif; margin: 16px; color: #222; }
  h1 { font-size: 18px; margin: 0 0 4px; }
  h2 { font-size: 15px; margin: 18px 0 6px; }
  .muted { color: #666; }
  svg { background: #fafafa; border: 1px solid #ddd; display: block; }
  .lane-label { font-size: 11px; fill: #333; }
  rect.claim { fill: #4a90d9; opacity: .85; }
  rect.claim.completed { fill: #3a9d5d; }
  rect.claim.failed, rect.claim.lease-expired { fill: #d9534f; }
  rect.claim.released { fill: #e0a030; }
  rect.claim.open { fill: #8a8a8a; }
  line.break { stroke: #d00; stroke-width: 2; }
  polyline.balance { fill: none; stroke-width: 1.5; }
  #breaks li { color: #a00; }
  table { border-collapse: collapse; width: 100%; font: 12px/1.3 ui-monospace, monospace; }
  td, th { border-bottom: 1px solid #eee; padding: 2px 6px; text-align: left; vertical-align: top; }
  tr.target { background: #fff3b0; }
  tr.broken td:first-child { border-left: 3px solid #d00; }
  #filter { width: 40em; padding: 3px; margin-bottom: 6px; }
  .legend span { display: inline-block; margin-right: 12px; }
  .swatch { display: inline-block; width: 10px; height: 10px; margin-right: 4px; vertical-align: middle; }
</style>
</head>
<body>
<script>
  // A script error is shown on the page (and read by the report's test).
  window.addEventListener("error", function (e) {
    var pre = document.createElement("pre");
    pre.className = "script-error";
    pre.textContent = "script error: " + e.message;
    document.body.insertBefore(pre, document.body.firstChild);
  });
</script>
<h1>{{TITLE}}</h1>
<div class="muted" id="summary"></div>
<h2>Claims, a lane per agent</h2>
<div class="legend">
  <span><i class="swatch" style="background:#3a9d5d"></i>completed</span>
  <span><i class="swatch" style="background:#d9534f"></i>failed or lease expired</span>
  <span><i class="swatch" style="background:#e0a030"></i>released</span>
  <span><i class="swatch" style="background:#8a8a8a"></i>still held</span>
  <span><i class="swatch" style="background:#d00"></i>invariant broken</span>
</div>
<svg id="timeline" width="1200" height="60"></svg>
<h2>Budgets: balance over time</h2>
<svg id="budgets" width="1200" height="160"></svg>
<h2>Invariants</h2>
<ul id="breaks"></ul>
<h2>Events</h2>
<input id="filter" placeholder="filter: any text of a line (type, stream, agent, task, …)">
<span class="muted" id="count"></span>
<table><thead><tr><th>seq</th><th>time</th><th>stream@version</th><th>type</th><th>actor</th><th>body</th></tr></thead><tbody id="events"></tbody></table>
<script type="application/json" id="data">{{DATA}}</script>
<script>
"use strict";
(function () {
  var data = JSON.parse(document.getElementById("data").textContent);
  var NS = "http://www.w3.org/2000/svg";
  var events = data.events;
  function el(name, attrs, parent, text) {
    var node = document.createElementNS(NS, name);
    for (var k in attrs) node.setAttribute(k, attrs[k]);
    if (text !== undefined) node.textContent = text;
    parent.appendChild(node);
    return node;
  }
  var t0 = events.length ? events[0].ts : 0, t1 = events.length ? events[events.length - 1].ts : 1;
  events.forEach(function (e) { if (e.ts < t0) t0 = e.ts; if (e.ts > t1) t1 = e.ts; });
  if (t1 <= t0) t1 = t0 + 1;
  var left = 140, width = 1200 - left - 20;
  function x(ts) { return left + (ts - t0) / (t1 - t0) * width; }
  var broken = {};
  data.breaks.forEach(function (b) { broken[b.seq] = b; });

  document.getElementById("summary").textContent =
    events.length + " events shown (seq " + (events.length ? events[0].seq + "–" + events[events.length - 1].seq : "none") +
    ", " + (events.length ? events[0].time + " to " + events[events.length - 1].time : "") + "); " +
    data.bars.length + " claims; invariants checked over " + data.checked_events + " events: " +
    (data.breaks.length ? data.breaks.length + " broken" : "all hold");

  // Lanes: one per agent that claimed something, in name order.
  var agents = [];
  data.bars.forEach(function (b) { if (agents.indexOf(b.agent) < 0) agents.push(b.agent); });
  agents.sort();
  var lane = 22, svg = document.getElementById("timeline");
  svg.setAttribute("height", String(Math.max(60, agents.length * lane + 30)));
  agents.forEach(function (agent, i) {
    var g = el("g", { "class": "lane", "data-agent": agent }, svg);
    el("text", { "class": "lane-label", x: 4, y: 20 + i * lane }, g, agent);
    data.bars.filter(function (b) { return b.agent === agent; }).forEach(function (b) {
      var end = b.to_ts === null ? t1 : b.to_ts;
      var r = el("rect", {
        "class": "claim " + b.end.replace(/ /g, "-"), x: x(b.from_ts), y: 8 + i * lane,
        width: Math.max(2, x(end) - x(b.from_ts)), height: lane - 6,
        "data-seq": b.from_seq, "data-task": b.task
      }, g);
      el("title", {}, r, b.task + ": claimed at seq " + b.from_seq + (b.to_seq === null ? ", still held" : ", " + b.end + " at seq " + b.to_seq));
      r.addEventListener("click", function () { location.hash = "seq=" + b.from_seq; });
    });
  });
  data.breaks.filter(function (b) { return b.shown; }).forEach(function (b) {
    var e = events.filter(function (v) { return v.seq === b.seq; })[0];
    var line = el("line", { "class": "break", x1: x(e.ts), x2: x(e.ts), y1: 0, y2: svg.getAttribute("height"), "data-seq": b.seq }, svg);
    el("title", {}, line, b.invariant + " at seq " + b.seq + ": " + b.detail);
  });

  // Budgets.
  var budgets = Object.keys(data.balances).sort(), colors = ["#4a90d9", "#3a9d5d", "#e0a030", "#8e44ad", "#d9534f", "#16a085"];
  var bsvg = document.getElementById("budgets"), top = 0;
  Object.keys(data.balances).forEach(function (k) { data.balances[k].forEach(function (p) { if (p[1] > top) top = p[1]; }); });
  if (top === 0) top = 1;
  budgets.forEach(function (id, i) {
    var points = data.balances[id].map(function (p) { return x(p[0]).toFixed(1) + "," + (150 - p[1] / top * 140).toFixed(1); });
    el("polyline", { "class": "balance", "data-budget": id, points: points.join(" "), stroke: colors[i % colors.length] }, bsvg);
    el("text", { "class": "lane-label", x: 4, y: 14 + i * 14, fill: colors[i % colors.length] }, bsvg, id);
  });

  // Invariant breaks.
  var list = document.getElementById("breaks");
  if (!data.breaks.length) {
    var li = document.createElement("li"); li.style.color = "#3a9d5d"; li.textContent = "every invariant holds"; list.appendChild(li);
  }
  data.breaks.forEach(function (b) {
    var li = document.createElement("li");
    var a = document.createElement("a"); a.href = "#seq=" + b.seq; a.textContent = b.invariant + " at seq " + b.seq;
    li.appendChild(a);
    li.appendChild(document.createTextNode(": " + b.detail + " (witnessed by seqs " + b.witness.join(", ") + ")"));
    list.appendChild(li);
  });

  // The event list, filtered as one types.
  var body = document.getElementById("events");
  events.forEach(function (e) {
    var tr = document.createElement("tr");
    tr.id = "seq-" + e.seq;
    if (broken[e.seq]) tr.className = "broken";
    [String(e.seq), e.time, e.stream + "@" + e.version, e.type, e.actor, e.body].forEach(function (text, i) {
      var td = document.createElement("td");
      if (i === 0) { var a = document.createElement("a"); a.href = "#seq=" + e.seq; a.textContent = text; td.appendChild(a); }
      else td.textContent = text;
      tr.appendChild(td);
    });
    tr.dataset.text = (e.seq + " " + e.stream + " " + e.type + " " + e.actor + " " + e.body).toLowerCase();
    body.appendChild(tr);
  });
  var count = document.getElementById("count");
  function filter() {
    var q = document.getElementById("filter").value.toLowerCase(), n = 0;
    Array.prototype.forEach.call(body.rows, function (tr) {
      var keep = !q || tr.dataset.text.indexOf(q) >= 0;
      tr.style.display = keep ? "" : "none";
      if (keep) n++;
    });
    count.textContent = n + " of " + events.length + " events";
  }
  document.getElementById("filter").addEventListener("input", filter);
  filter();
  function go() {
    var m = /^#seq=(\d+)$/.exec(location.hash);
    Array.prototype.forEach.call(document.querySelectorAll("tr.target"), function (tr) { tr.classList.remove("target"); });
    if (!m) return;
    var tr = document.getElementById("seq-" + m[1]);
    if (tr) { tr.classList.add("target"); tr.scrollIntoView({ block: "center" }); }
  }
  window.addEventListener("hashchange", go);
  go();
  document.body.setAttribute("data-rendered", "true");
})();
</script>
</body>
</html>
"##;
