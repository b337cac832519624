/* Work (GET /work): how many tasks run, wait (and for what) and have ended; the task stream of
 * the last minutes (one row per worker process, one bar per task, like Dask's task stream); the
 * recent tasks, filtered by name and state, with the traceback of each failure.
 * From /api/cluster (counts), /api/timeline and /api/tasks. */
"use strict";
(function () {
  var el = Dash.el, q = Dash.query();
  var BARS = 2000;                  // bars drawn at most (the newest)
  var counts = el("div", {cls: "cards", id: "counts"});
  var queued = el("tbody", {id: "queued"});
  var stream = el("div", {id: "timeline-plot"});
  var legend = el("div", {cls: "legend", id: "timeline-legend"});
  var hover = el("div", {cls: "hover", id: "timeline-hover"});
  var tasks = el("tbody", {id: "tasks"});
  var nameBox = el("input", {id: "task-name", type: "search", placeholder: "name contains\u2026",
                             value: q.name || "", oninput: function () { tick(); }});
  var stateBox = el("select", {id: "task-state", onchange: function () { tick(); }},
    ["", "running", "queued", "finished", "failed", "returned", "stopped"].map(function (s) {
      return el("option", {value: s, text: s || "any state", selected: s === (q.state || "")});
    }));
  var limitBox = el("select", {id: "task-limit", onchange: function () { tick(); }},
    [50, 200, 1000].map(function (n) { return el("option", {value: n, text: "last " + n}); }));

  function head(cols) {
    return el("thead", {}, el("tr", {}, cols.map(function (h) {
      return el("th", {cls: /^(Count|Duration|PID)$/.test(h) ? "num" : "", text: h});
    })));
  }

  Dash.fill(Dash.main, el("h2", {text: "Tasks"}), counts,
    el("h2", {text: "Task stream"}),
    el("div", {id: "timeline"}, stream, hover, legend),
    el("h2", {text: "Waiting"}),
    el("div", {cls: "scroll"}, el("table", {}, head(["Name", "Waits for", "Count", "Node"]),
                                  queued)),
    el("h2", {text: "Recent tasks"}),
    el("div", {cls: "filters"}, nameBox, stateBox, limitBox,
       el("span", {cls: "muted small", id: "task-count"})),
    el("div", {cls: "scroll"}, el("table", {}, head(["State", "Name", "Duration", "Started",
                                                     "Node", "PID", "Task ID", "Error"]),
                                  tasks)));

  // -- counts ---------------------------------------------------------------------------------
  var WHY = {worker: "for a worker", resources: "for resources", dependencies: "for arguments"};

  function card(id, k, v, note) {
    return el("div", {cls: "card"}, el("div", {cls: "k", text: k}),
              el("div", {cls: "v", id: id, text: String(v)}),
              el("div", {cls: "muted small", text: note || ""}));
  }

  function showCounts(t) {
    var by = t.tasks_queued_by || {};
    var why = Object.keys(by).filter(function (k) { return by[k]; }).map(function (k) {
      return by[k] + " " + (WHY[k] || k);
    }).join(" \u00b7 ");
    Dash.fill(counts, card("count-running", "Running", t.tasks_running, "on workers now"),
              card("count-queued", "Queued", t.tasks_waiting, why || "none waiting"),
              card("count-finished", "Finished", t.tasks_finished, "since the nodes started"),
              card("count-failed", "Failed", t.tasks_failed, "since the nodes started"));
  }

  // -- the task stream ------------------------------------------------------------------------
  var colours = {}, nextColour = 0, plot = null, shape = "", lanesNow = [], barsNow = [];

  function colourOf(key) {
    if (key === "failed") { return "#cf222e"; }
    if (!(key in colours)) { colours[key] = Dash.palette[nextColour++ % Dash.palette.length]; }
    return colours[key];
  }

  function laneOf(r) { return r.node_id + ":" + (r.pid || r.worker_id); }

  function streamData(rows, now) {
    rows = rows.slice(-BARS);
    var lanes = [], laneIx = {}, series = [], seriesIx = {}, xs = {};
    rows.forEach(function (r) {
      var lane = laneOf(r);
      if (!(lane in laneIx)) { laneIx[lane] = lanes.length; lanes.push(r); }
    });
    // One pixel of the ~1000 the plot is wide: bars are at least 2 px long, and each ends 2 px
    // early, so back-to-back tasks on one worker read as separate bars.
    var t0 = rows.length ? rows[0].start : now, px = Math.max(0.001, (now - t0) / 1000);
    var bars = rows.map(function (r) {
      var end = Math.max((r.end || now) - 2 * px, r.start + 2 * px);
      var key = r.state === "failed" ? "failed" : r.name, skey = laneOf(r) + "\u0000" + key;
      if (!(skey in seriesIx)) { seriesIx[skey] = series.length; series.push({key: key}); }
      xs[r.start] = xs[end] = xs[end + 1e-6] = true;   // the gap after a bar breaks its line
      return {row: r, start: r.start, end: end, lane: laneIx[laneOf(r)], s: seriesIx[skey]};
    });
    var x = Object.keys(xs).map(Number).sort(function (a, b) { return a - b; });
    var ys = series.map(function () { return new Array(x.length).fill(null); });
    bars.forEach(function (b) {
      var i = lowerBound(x, b.start), y = lanes.length - 1 - b.lane;   // first lane on top
      for (; i < x.length && x[i] <= b.end; i++) { ys[b.s][i] = y; }
    });
    return {lanes: lanes, series: series, bars: bars, data: [x].concat(ys)};
  }

  function lowerBound(xs, v) {
    var lo = 0, hi = xs.length;
    while (lo < hi) { var mid = (lo + hi) >> 1; if (xs[mid] < v) { lo = mid + 1; } else { hi = mid; } }
    return lo;
  }

  function laneLabel(r) { return "pid " + (r.pid || "?") + " \u00b7 " + Dash.short(r.node_id, 6); }

  function streamOpts(d) {
    var n = Math.max(1, d.lanes.length), height = Math.min(640, Math.max(130, 34 * n + 60));
    var thick = Math.max(4, Math.min(24, (height - 60) / n * 0.7));
    return {height: height, legend: {show: false}, cursor: {points: {show: false}},
      scales: {x: {time: true}, y: {range: [-0.6, n - 0.4]}},
      axes: [{}, {size: 150, splits: function () { return d.lanes.map(function (_, i) { return i; }); },
                  values: function (u, s) { return s.map(function (i) {
                    var lane = d.lanes[n - 1 - i]; return lane ? laneLabel(lane) : ""; }); }}],
      series: [{}].concat(d.series.map(function (s) {
        return {label: s.key, stroke: colourOf(s.key), width: thick, points: {show: false},
                spanGaps: false};
      })),
      hooks: {setCursor: [showHover]}};
  }

  function showHover(u) {
    var left = u.cursor.left, top = u.cursor.top;
    if (left === undefined || left < 0) { Dash.fill(hover); return; }
    var t = u.posToVal(left, "x"), y = Math.round(u.posToVal(top, "y"));
    var lane = lanesNow.length - 1 - y, hit = barsNow.filter(function (b) {
      return b.lane === lane && b.start <= t && t <= b.end;
    })[0];
    Dash.fill(hover, hit ? [el("b", {text: hit.row.name}), " \u00b7 " + hit.row.state + " \u00b7 " +
      Dash.secs(hit.row.duration === null ? Date.now() / 1000 - hit.row.start : hit.row.duration) +
      " \u00b7 pid " + hit.row.pid + " \u00b7 task " + hit.row.task_id] : []);
  }

  function showLegend(rows) {
    var by = {};
    rows.forEach(function (r) {
      var key = r.state === "failed" ? "failed" : r.name;
      var e = by[key] = by[key] || {n: 0, lanes: {}};
      e.n++; e.lanes[laneOf(r)] = true;
    });
    Dash.fill(legend, Object.keys(by).sort().map(function (key) {
      var n = by[key].n, w = Object.keys(by[key].lanes).length;
      return el("span", {cls: "legend-item", "data-name": key, "data-count": n, "data-workers": w},
        el("span", {cls: "swatch", title: key}),
        key + " \u2014 " + n + (n === 1 ? " task" : " tasks") + " on " + w +
        (w === 1 ? " worker" : " workers"));
    }));
    // a swatch's colour is set through the CSSOM (the CSP forbids style attributes)
    legend.querySelectorAll(".legend-item").forEach(function (item) {
      item.firstChild.style.background = colourOf(item.dataset.name);
    });
  }

  function showStream(rows) {
    var now = Date.now() / 1000, d = streamData(rows, now);
    lanesNow = d.lanes; barsNow = d.bars;
    var sig = d.lanes.map(laneOf).join() + "|" + d.series.map(function (s) { return s.key; }).join();
    stream.dataset.bars = d.bars.length;
    stream.dataset.rows = d.lanes.length;
    if (!rows.length) {
      if (plot) { plot.destroy(); plot = null; shape = ""; }
      Dash.fill(stream, el("p", {cls: "empty", text: "No task ran in the last five minutes."}));
    } else if (plot && sig === shape) {
      plot.setData(d.data);
    } else {
      if (plot) { plot.destroy(); }
      Dash.fill(stream);
      plot = Dash.chart(stream, streamOpts(d), d.data);
      shape = sig;
    }
    showLegend(rows.slice(-BARS));
  }

  // -- lists ----------------------------------------------------------------------------------
  function queuedRow(g) {
    return el("tr", {}, el("td", {text: g.name}), el("td", {text: WHY[g.waits_for] || g.waits_for}),
              el("td", {cls: "num", text: g.count}),
              el("td", {cls: "mono", text: Dash.short(g.node_id)}));
  }

  function taskRow(t) {
    if (t.state === "queued") {
      return el("tr", {"data-state": "queued"}, el("td", {}, Dash.badge("queued")),
                el("td", {text: t.name}), el("td", {colspan: 6, cls: "muted",
                  text: t.count + " waiting " + (WHY[t.waits_for] || t.waits_for)}));
    }
    var running = t.end === null || t.end === undefined;
    var dur = running ? Date.now() / 1000 - t.start : t.duration;
    var error = t.error ? el("details", {}, el("summary", {text: firstLine(t.error)}),
                             el("pre", {text: t.error})) : el("span", {cls: "muted", text: ""});
    return el("tr", {"data-task": t.task_id, "data-state": t.state},
      el("td", {}, Dash.badge(t.state)), el("td", {text: t.name}),
      el("td", {cls: "num", text: Dash.secs(dur) + (running ? " so far" : "")}),
      el("td", {text: Dash.clock(t.start)}),
      el("td", {cls: "mono", title: t.node_id, text: Dash.short(t.node_id)}),
      el("td", {cls: "num mono", text: t.pid || "\u2014"}),
      el("td", {cls: "mono muted small", text: t.task_id}),
      el("td", {cls: "wrap"}, error));
  }

  function firstLine(text) {
    var lines = String(text).trim().split("\n");
    return lines[lines.length - 1].slice(0, 160);   // the exception, as Python prints it last
  }

  var tick = Dash.refresh(function () {
    var params = new URLSearchParams({limit: limitBox.value, name: nameBox.value,
                                      state: stateBox.value});
    return Promise.all([Dash.json("/api/cluster"), Dash.json("/api/timeline"),
                        Dash.json("/api/tasks?state=queued"), Dash.json("/api/tasks?" + params)])
      .then(function (got) {
        showCounts(got[0].totals);
        showStream(got[1].timeline);
        Dash.fill(queued, got[2].tasks.length ? got[2].tasks.map(queuedRow) :
                  el("tr", {}, el("td", {colspan: 4, cls: "muted", text: "Nothing waits."})));
        var list = got[3].tasks;
        Dash.fill(tasks, list.length ? list.map(taskRow) :
                  el("tr", {}, el("td", {colspan: 8, cls: "muted", text: "No such task."})));
        Dash.fill(document.getElementById("task-count"), list.length + " shown");
      });
  });
})();
