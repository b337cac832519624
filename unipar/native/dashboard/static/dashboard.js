/* unipar dashboard: what every page shares (loaded before the page's own script).
 *
 * Dash.refresh(fn): run fn now and every data-refresh seconds (never two at once); the
 *   header's #status says when the page last updated, or that the head is unreachable.
 * Dash.json(url): GET a JSON endpoint (docs/observability.md).
 * Dash.el(tag, attrs, ...children): a DOM element; text goes in as text, never as HTML.
 * Dash.chart(box, opts, data): a uPlot chart as wide as its box, redrawn by setData.
 * Formatting: Dash.bytes, Dash.rate, Dash.secs, Dash.clock, Dash.pct.
 */
"use strict";
var Dash = (function () {
  var body = document.body;
  var every = Math.max(250, Number(body.dataset.refresh || 2) * 1000);
  var status = document.getElementById("status");

  function el(tag, attrs) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) {
      var v = attrs[key];
      if (v === null || v === undefined || v === false) { return; }
      if (key === "text") { node.textContent = String(v); }
      else if (key === "cls") { node.className = v; }
      else if (key.slice(0, 2) === "on") { node.addEventListener(key.slice(2), v); }
      else { node.setAttribute(key, v === true ? "" : String(v)); }
    });
    for (var i = 2; i < arguments.length; i++) { append(node, arguments[i]); }
    return node;
  }

  function append(node, child) {
    if (child === null || child === undefined || child === false) { return; }
    if (Array.isArray(child)) { child.forEach(function (c) { append(node, c); }); return; }
    node.appendChild(typeof child === "object" ? child : document.createTextNode(String(child)));
  }

  function fill(node) {   // replace node's children with the rest of the arguments
    node.textContent = "";
    for (var i = 1; i < arguments.length; i++) { append(node, arguments[i]); }
    return node;
  }

  function json(url) {
    return fetch(url, {cache: "no-store"}).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (data) {
        if (!r.ok) { throw new Error(data.error || ("HTTP " + r.status)); }
        return data;
      });
    });
  }

  function refresh(fn) {
    var busy = false;
    function tick() {
      if (busy) { return; }
      busy = true;
      Promise.resolve().then(fn).then(function () {
        status.textContent = "live \u00b7 updated " + new Date().toLocaleTimeString();
        status.className = "";
      }).catch(function (e) {
        status.textContent = "cannot reach the head (" + e.message + "); retrying";
        status.className = "down";
      }).then(function () { busy = false; });
    }
    tick();
    setInterval(tick, every);
    return tick;
  }

  function bytes(n) {
    var units = ["B", "KiB", "MiB", "GiB", "TiB"], i = 0;
    n = Number(n) || 0;
    while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return i === 0 ? Math.round(n) + " B" : n.toFixed(Math.abs(n) < 100 ? 1 : 0) + " " + units[i];
  }
  function rate(n) { return bytes(n) + "/s"; }
  function pct(n) { return Math.round(Number(n) || 0) + "%"; }
  function secs(s) {
    if (s === null || s === undefined) { return "\u2014"; }
    if (s < 1) { return Math.round(s * 1000) + " ms"; }
    if (s < 120) { return s.toFixed(s < 10 ? 2 : 1) + " s"; }
    return Math.floor(s / 60) + " min " + Math.round(s % 60) + " s";
  }
  function clock(t) { return t ? new Date(t * 1000).toLocaleTimeString() : "\u2014"; }
  function short(id, n) { return String(id || "").slice(0, n || 12); }

  function badge(state) { return el("span", {cls: "badge " + state, text: state}); }

  function meter(value, max) {
    return el("meter", {min: 0, max: Math.max(max, 0), value: Math.max(0, Math.min(value, max))});
  }

  // One resize handler for every chart; a chart whose box left the page is forgotten.
  var charts = [];
  function width(box) { return Math.max(200, box.clientWidth - 4); }
  window.addEventListener("resize", function () {
    charts = charts.filter(function (c) { return c.box.isConnected && c.plot.root.isConnected; });
    charts.forEach(function (c) { c.plot.setSize({width: width(c.box), height: c.height}); });
  });

  function chart(box, opts, data) {
    opts.width = width(box);
    var plot = new uPlot(opts, data, box);
    charts.push({box: box, plot: plot, height: opts.height});
    return plot;
  }

  var palette = ["#0969da", "#1a7f37", "#bf3989", "#9a6700", "#8250df", "#0a7e8c",
                 "#bc4c00", "#57606a", "#6639ba", "#116329"];

  function query() {
    var out = {};
    new URLSearchParams(location.search).forEach(function (v, k) { out[k] = v; });
    return out;
  }

  return {el: el, fill: fill, json: json, refresh: refresh, bytes: bytes, rate: rate, pct: pct,
          secs: secs, clock: clock, short: short, badge: badge, meter: meter, chart: chart,
          palette: palette, query: query, main: document.getElementById("main")};
})();
