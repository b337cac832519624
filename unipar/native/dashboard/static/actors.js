/* Actors & objects (GET /actors): every actor with its state, node, process, restarts and the
 * cause of its death; the objects each node holds. From /api/cluster. */
"use strict";
(function () {
  var el = Dash.el;
  var cards = el("div", {cls: "cards", id: "object-cards"});
  var actors = el("tbody", {id: "actors"});
  var objects = el("tbody", {id: "objects"});
  var filter = el("select", {id: "actor-state", onchange: function () { tick(); }},
    ["all", "alive", "dead", "pending", "starting", "waiting"].map(function (s) {
      return el("option", {value: s === "all" ? "" : s, text: s});
    }));
  Dash.fill(Dash.main,
    el("h2", {text: "Actors"}),
    el("div", {cls: "filters"}, el("label", {}, "state ", filter),
       el("span", {cls: "muted small", id: "actor-count"})),
    el("div", {cls: "scroll"}, el("table", {},
      el("thead", {}, el("tr", {}, ["Class", "Name", "State", "Node", "PID", "Restarts",
        "Cause of death", "Actor ID"].map(function (h) {
          return el("th", {cls: h === "Restarts" || h === "PID" ? "num" : "", text: h});
        }))), actors)),
    el("h2", {text: "Objects"}), cards,
    el("div", {cls: "scroll"}, el("table", {},
      el("thead", {}, el("tr", {}, ["Node", "Objects", "Bytes", "Largest", "In the store",
        "Spilled to disk"].map(function (h, i) {
          return el("th", {cls: i ? "num" : "", text: h});
        }))), objects)));

  function card(k, v, note) {
    return el("div", {cls: "card"}, el("div", {cls: "k", text: k}),
              el("div", {cls: "v", text: v}), el("div", {cls: "muted small", text: note || ""}));
  }

  function actorRow(a) {
    return el("tr", {"data-actor": a.actor_id, "data-name": a.name || ""},
      el("td", {text: a.class_name}), el("td", {text: a.name || "\u2014"}),
      el("td", {}, Dash.badge(a.state)),
      el("td", {cls: "mono", title: a.node_id, text: Dash.short(a.node_id)}),
      el("td", {cls: "num mono", text: a.pid || "\u2014"}),
      el("td", {cls: "num", text: a.restarts || 0}),
      el("td", {cls: "wrap death " + (a.death ? "err" : "muted"), text: a.death || "\u2014"}),
      el("td", {cls: "mono muted", title: a.actor_id, text: Dash.short(a.actor_id, 16)}));
  }

  function objectRow(n) {
    var s = n.object_sizes || {count: 0, bytes: 0, largest: 0};
    var st = n.store || {used: 0, limit: 0, spilled: 0};
    return el("tr", {},
      el("td", {cls: "mono", title: n.node_id, text: Dash.short(n.node_id)}),
      el("td", {cls: "num", text: s.count}), el("td", {cls: "num", text: Dash.bytes(s.bytes)}),
      el("td", {cls: "num", text: Dash.bytes(s.largest)}),
      el("td", {cls: "num", text: Dash.bytes(st.used) + " of " + Dash.bytes(st.limit)}),
      el("td", {cls: "num", text: Dash.bytes(st.spilled)}));
  }

  var tick = Dash.refresh(function () {
    return Dash.json("/api/cluster").then(function (snap) {
      var want = filter.value;
      var shown = snap.actors.filter(function (a) { return !want || a.state === want; });
      shown.sort(function (a, b) { return (a.state === "dead") - (b.state === "dead"); });
      Dash.fill(actors, shown.length ? shown.map(actorRow) :
                el("tr", {}, el("td", {colspan: 8, cls: "muted", text: "No actors."})));
      var dead = snap.actors.filter(function (a) { return a.state === "dead"; }).length;
      Dash.fill(document.getElementById("actor-count"),
                snap.actors.length + " actors, " + dead + " dead");
      var t = snap.totals;
      Dash.fill(cards, card("Objects", String(t.objects), "in the object stores"),
                card("Bytes", Dash.bytes(t.object_bytes), "of every object the nodes know"),
                card("In the store", Dash.bytes(t.store_used), "of " + Dash.bytes(t.store_limit)),
                card("Spilled", Dash.bytes(t.store_spilled), "to disk"),
                card("Largest", Dash.bytes(t.largest_object), "one object"));
      var alive = snap.nodes.filter(function (n) { return n.alive && n.store; });
      Dash.fill(objects, alive.map(objectRow));
    });
  });
})();
