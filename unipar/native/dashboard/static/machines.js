/* Machines (GET /machines): per node, its CPU (per core and all), memory, disks of the session
 * and spill directories, network and GPUs now, and their last five minutes as uPlot charts.
 * From /api/machines (node_info's machine and machine_history, sampled every second). */
"use strict";
(function () {
  var el = Dash.el, views = {};
  var box = el("div", {id: "machines"});
  Dash.fill(Dash.main, el("h2", {text: "Machines"}), box);

  function figure(k, v, note) {
    return el("div", {cls: "figure"}, el("div", {cls: "k", text: k}),
              el("div", {cls: "v", text: v}), note ? el("div", {cls: "muted small", text: note})
                                                   : null);
  }

  // Clock times, one line (uPlot's default adds a date row that crowds a small chart).
  var timeAxis = {space: 72, size: 32, values: function (u, splits) {
    return splits.map(function (t) {
      return new Date(t * 1000).toLocaleTimeString([], {hour: "2-digit", minute: "2-digit",
                                                         second: "2-digit", hour12: false});
    });
  }};

  function axisOf(fmt) {
    return {values: function (u, splits) { return splits.map(fmt); }, size: 84};
  }

  function lineChart(holder, title, series, yAxis, range) {
    var box = el("div", {cls: "chart-plot"});
    holder.appendChild(el("div", {cls: "chart"}, el("div", {cls: "title", text: title}), box));
    var opts = {height: 150, legend: {show: series.length <= 9, live: false}, cursor: {y: false},
                scales: {x: {time: true}, y: range ? {range: range} : {}},
                axes: [timeAxis, yAxis],
                series: [{}].concat(series.map(function (s, i) {
                  return {label: s.label, stroke: s.color || Dash.palette[i % 10],
                          width: s.width || 1.5, points: {show: false}, value: function (u, v) {
                            return v === null || v === undefined ? "\u2014" : yAxis.fmt(v); }};
                }))};
    return Dash.chart(box, opts, [[]].concat(series.map(function () { return []; })));
  }

  function makeView(node, m) {
    var cores = m ? m.cpu_count : 0, gpus = m ? m.gpus.length : 0;
    var figures = el("div", {cls: "figures"}), coreBox = el("div", {cls: "cores"});
    var charts = el("div", {cls: "charts"});
    var card = el("section", {cls: "node", id: "node-" + node.node_id, "data-node": node.node_id},
      el("div", {cls: "node-head"}, el("h3", {cls: "mono", text: Dash.short(node.node_id)}),
         el("span", {cls: "muted", text: node.host}), Dash.badge(node.alive ? "alive" : "dead")),
      figures, coreBox, charts);
    box.appendChild(card);
    var pctAxis = Object.assign(axisOf(Dash.pct), {fmt: Dash.pct});
    var cpuSeries = [{label: "all cores", color: "#1f2328", width: 2.5}];
    for (var c = 0; c < cores; c++) { cpuSeries.push({label: "core " + c}); }
    var view = {card: card, figures: figures, coreBox: coreBox, cores: cores, charts: {}};
    view.charts.cpu = lineChart(charts, "CPU %", cpuSeries, pctAxis, [0, 100]);
    view.charts.memory = lineChart(charts, "Memory used", [{label: "used", color: "#8250df"}],
                                   Object.assign(axisOf(Dash.bytes), {fmt: Dash.bytes}),
                                   function () { return [0, m.memory.total]; });
    view.charts.net = lineChart(charts, "Network", [{label: "sent"}, {label: "received"}],
                                Object.assign(axisOf(Dash.rate), {fmt: Dash.rate}),
                                function (u, lo, hi) { return [0, Math.max(1024, hi * 1.1)]; });
    if (gpus) {
      var gpuSeries = m.gpus.map(function (g) { return {label: "GPU " + g.index}; });
      var most = Math.max.apply(null, m.gpus.map(function (g) { return g.memory_total || 0; }));
      view.charts.gpu = lineChart(charts, "GPU utilisation %", gpuSeries, pctAxis, [0, 100]);
      view.charts.gpuMemory = lineChart(charts, "GPU memory used", gpuSeries,
                                        Object.assign(axisOf(Dash.bytes), {fmt: Dash.bytes}),
                                        function (u, lo, hi) { return [0, most || hi || 1]; });
    }
    return view;
  }

  function disk(label, d) {
    if (!d) { return null; }
    var f = figure(label, Dash.bytes(d.free) + " free", Dash.bytes(d.used) + " used of " +
                   Dash.bytes(d.total));
    f.appendChild(el("div", {cls: "muted small mono path", title: d.path, text: d.path}));
    return f;
  }

  function known(v, fmt) { return v === null || v === undefined ? "\u2014" : fmt(v); }

  function showNow(view, m) {
    var gpus = m.gpus.map(function (g) {   // a figure the GPU does not report is null: "—"
      var f = figure("GPU " + g.index, known(g.utilization, Dash.pct),
                     known(g.memory_used, Dash.bytes) + " of " + known(g.memory_total, Dash.bytes) +
                     " memory");
      f.classList.add("gpu");
      f.dataset.gpu = g.index;
      return f;
    });
    Dash.fill(view.figures,
      el("div", {cls: "figure", id: "cpu-" + view.card.dataset.node},
         el("div", {cls: "k", text: "CPU (" + m.cpu_count + " cores)"}),
         el("div", {cls: "v cpu-total", text: Dash.pct(m.cpu_percent)})),
      figure("Memory", Dash.bytes(m.memory.used) + " of " + Dash.bytes(m.memory.total),
             Dash.pct(m.memory.percent) + " used"),
      disk("Session disk", m.disk.session), disk("Spill disk", m.disk.spill),
      figure("Network", "\u2191 " + Dash.rate(m.network.sent_bytes_s),
             "\u2193 " + Dash.rate(m.network.recv_bytes_s)),
      gpus.length ? gpus : figure("GPUs", "none", "no NVIDIA GPU seen"));
    Dash.fill(view.coreBox, m.cpu_per_core.map(function (v, i) {
      return el("div", {cls: "core", "data-core": i}, el("span", {cls: "muted", text: "core " + i}),
                Dash.meter(v, 100), el("span", {cls: "core-value", text: Dash.pct(v)}));
    }));
  }

  function showHistory(view, h) {
    if (!h || !h.time.length) { return; }
    view.card.dataset.samples = h.time.length;
    var cpu = [h.time, h.cpu];
    for (var c = 0; c < view.cores; c++) {
      cpu.push(h.cores.map(function (row) { return row[c]; }));
    }
    view.charts.cpu.setData(cpu);
    view.charts.memory.setData([h.time, h.memory]);
    view.charts.net.setData([h.time, h.sent, h.recv]);
    if (view.charts.gpu) {
      var n = view.charts.gpu.series.length - 1, gpu = [h.time];
      for (var g = 0; g < n; g++) { gpu.push(h.gpus.map(function (row) { return row[g]; })); }
      view.charts.gpu.setData(gpu);
      var used = [h.time];
      for (var k = 0; k < n; k++) {
        used.push((h.gpu_memory || []).map(function (row) { return row[k]; }));
      }
      if (used.length > 1 && used[1].length === h.time.length) {
        view.charts.gpuMemory.setData(used);
      }
    }
  }

  Dash.refresh(function () {
    return Dash.json("/api/machines").then(function (data) {
      var seen = {};
      data.nodes.forEach(function (node) {
        seen[node.node_id] = true;
        var m = node.machine, view = views[node.node_id];
        if (!view && m) { view = views[node.node_id] = makeView(node, m); }
        if (!view) { return; }
        if (m) { showNow(view, m); showHistory(view, node.history); }
        view.card.classList.toggle("gone", !node.alive || !m);
      });
      Object.keys(views).forEach(function (id) {
        if (!seen[id]) { views[id].card.remove(); delete views[id]; }
      });
      if (!data.nodes.length) { Dash.fill(box, el("p", {cls: "empty", text: "No nodes."})); }
    });
  });
})();
