/* Logs (GET /logs, ?node=ID&file=NAME to open one): every node's log files (the daemon's and one
 * per worker or actor process) and one of them, read a page at a time through its node and
 * followed live. From /api/logs and /api/logs/{node}/{name}?offset=&length=. */
"use strict";
(function () {
  var el = Dash.el, q = Dash.query();
  var PAGE = 64 * 1024, KEEP = 2 * 1024 * 1024;   // bytes per read; characters kept on screen
  var files = el("div", {cls: "files", id: "log-files"});
  var title = el("div", {id: "log-title", cls: "mono"});
  var info = el("span", {cls: "muted small", id: "log-info"});
  var follow = el("input", {type: "checkbox", id: "log-follow", checked: true});
  var earlier = el("button", {id: "log-earlier", text: "load earlier", disabled: true,
                              onclick: function () { loadEarlier(); }});
  var text = el("pre", {id: "log-text"});
  var open = q.node && q.file ? {node: q.node, name: q.file, start: 0, next: 0} : null;

  Dash.fill(Dash.main, el("h2", {text: "Logs"}), el("div", {cls: "logs"}, files,
    el("div", {cls: "viewer"},
       el("div", {cls: "bar-line"}, title, el("label", {}, follow, " follow"), earlier, info),
       text)));
  if (!open) { text.textContent = "Choose a log file."; }

  function fileLink(node, f) {
    var who = f.role === "node" ? "the node daemon" :
      (f.class_name ? "actor " + f.class_name + (f.actor_name ? " \u201c" + f.actor_name + "\u201d" : "")
                    : f.role || "file");
    var href = "/logs?" + new URLSearchParams({node: node.node_id, file: f.name});
    var here = open && open.node === node.node_id && open.name === f.name;
    return el("a", {href: href, cls: here ? "here" : "", "data-file": f.name},
      el("div", {cls: "mono", text: f.name}),
      el("div", {cls: "muted small", text: who + (f.pid ? " \u00b7 pid " + f.pid : "") +
                 " \u00b7 " + Dash.bytes(f.size)}));
  }

  function showFiles(data) {
    Dash.fill(files, data.nodes.map(function (n) {
      return [el("div", {cls: "node-title mono", text: "node " + Dash.short(n.node_id)}),
              n.files.map(function (f) { return fileLink(n, f); })];
    }), Object.keys(data.errors || {}).map(function (id) {
      return el("div", {cls: "err", text: Dash.short(id) + ": " + data.errors[id]});
    }));
  }

  function url(offset, length) {
    return "/api/logs/" + encodeURIComponent(open.node) + "/" + encodeURIComponent(open.name) +
           "?" + new URLSearchParams({offset: offset, length: length});
  }

  function atBottom() { return text.scrollHeight - text.scrollTop - text.clientHeight < 40; }

  function add(chunk, before) {
    var stick = atBottom();
    text.textContent = before ? chunk + text.textContent : text.textContent + chunk;
    if (text.textContent.length > KEEP) {   // keep the newest on screen, not the whole file
      text.textContent = text.textContent.slice(-KEEP);
      open.start = -1;                        // what was dropped is no longer "earlier"
    }
    if (stick && !before) { text.scrollTop = text.scrollHeight; }
  }

  function show(page) {
    Dash.fill(info, Dash.bytes(page.size) + (open.start > 0 ? " \u00b7 from byte " + open.start : ""));
    earlier.disabled = !(open.start > 0);
  }

  function first() {
    return Dash.json(url(-PAGE, PAGE)).then(function (page) {
      open.start = page.offset; open.next = page.next; open.opened = true;
      text.textContent = "";
      add(page.text);
      text.scrollTop = text.scrollHeight;
      show(page);
    });
  }

  function more(rounds) {   // what was appended since, a page at a time
    return Dash.json(url(open.next, PAGE)).then(function (page) {
      if (page.size < open.next) {   // rotated: the file started again
        add("\n\u2014 the file was rotated; its new start follows \u2014\n");
        open.next = 0;
        return more(rounds - 1);
      }
      if (page.text) { add(page.text); }
      open.next = page.next;
      show(page);
      if (page.next < page.size && rounds > 1) { return more(rounds - 1); }
      return null;
    });
  }

  function loadEarlier() {
    var from = Math.max(0, open.start - PAGE);
    Dash.json(url(from, open.start - from)).then(function (page) {
      add(page.text, true);
      open.start = from;
      show(page);
    });
  }

  Dash.refresh(function () {
    var work = [Dash.json("/api/logs").then(showFiles)];
    if (open) {
      Dash.fill(title, open.name + " \u00b7 node " + Dash.short(open.node));
      var reading = !open.opened ? first() : follow.checked ? more(4) : null;
      work.push(reading && reading.catch(function (e) {   // this file, not the head, failed
        if (!open.opened) { text.textContent = "Cannot read this log: " + e.message; }
        else { Dash.fill(info, "cannot read on: " + e.message); }
      }));
    }
    return Promise.all(work);
  });
})();
