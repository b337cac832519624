/* Jobs (GET /jobs): every `unipar job submit` job, newest first, with its status, command,
 * times and exit code; /jobs?job=ID also shows the end of that job's log (its driver's output),
 * refreshed with the page. From /api/jobs and /api/jobs/{id}/log. */
"use strict";
(function () {
  var el = Dash.el, q = Dash.query();
  var TAIL = 65536;   // bytes of a log shown: its end
  var rows = el("tbody", {id: "jobs"});
  var logBox = el("pre", {id: "job-log", cls: "log"});
  var logHead = el("h2", {id: "job-log-title"});
  Dash.fill(Dash.main,
    el("h2", {text: "Jobs"}),
    el("div", {cls: "filters"}, el("span", {cls: "muted small", id: "job-count"})),
    el("div", {cls: "scroll"}, el("table", {},
      el("thead", {}, el("tr", {}, ["Job ID", "Status", "Entrypoint", "Submitted", "Started",
        "Ended", "Duration", "Exit code", "Message", "Log"].map(function (h) {
          return el("th", {cls: h === "Duration" || h === "Exit code" ? "num" : "", text: h});
        }))), rows)),
    q.job ? [logHead, logBox] : null);

  // The head's statuses, drawn with the task states' colours.
  var LOOK = {RUNNING: "running", SUCCEEDED: "finished", FAILED: "failed", STOPPED: "stopped"};

  function jobRow(j) {
    var look = LOOK[j.status] || "other";
    return el("tr", {"data-job": j.job_id, "data-status": j.status},
      el("td", {cls: "mono", text: j.job_id}),
      el("td", {}, el("span", {cls: "badge " + look, text: j.status})),
      el("td", {cls: "mono wrap", text: (j.entrypoint || []).join(" ")}),
      el("td", {text: Dash.clock(j.submitted_at)}), el("td", {text: Dash.clock(j.start_time)}),
      el("td", {text: Dash.clock(j.end_time)}),
      el("td", {cls: "num", text: Dash.secs(j.duration)}),
      el("td", {cls: "num mono exit-code",
                text: j.exit_code === null || j.exit_code === undefined ? "\u2014" : j.exit_code}),
      el("td", {cls: "wrap " + (j.status === "FAILED" ? "err" : "muted"),
                text: j.message || "\u2014"}),
      el("td", {}, el("a", {href: "/jobs?job=" + encodeURIComponent(j.job_id), text: "log"})));
  }

  function showLog() {
    var url = "/api/jobs/" + encodeURIComponent(q.job) + "/log?offset=-" + TAIL +
              "&length=" + TAIL;
    return Dash.json(url).then(function (page) {
      Dash.fill(logHead, "Log of ", el("span", {cls: "mono", text: page.job_id}),
                el("span", {cls: "muted small", text: " (" + page.status + ", " +
                            Dash.bytes(page.size) + ")"}));
      logBox.textContent = page.text || "(nothing written yet)";
    }).catch(function (e) {
      logHead.textContent = "Log";
      logBox.textContent = e.message;   // an unknown job: the 404's text names the known ones
    });
  }

  Dash.refresh(function () {
    return Dash.json("/api/jobs").then(function (data) {
      Dash.fill(rows, data.jobs.length ? data.jobs.map(jobRow) : el("tr", {},
        el("td", {cls: "empty", colspan: 10,
                  text: "No jobs. `unipar job submit -- python script.py` starts one."})));
      document.getElementById("job-count").textContent = data.jobs.length + " job(s)";
      return q.job ? showLog() : null;
    });
  });
})();
