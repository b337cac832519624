/* The overview (GET /): the server renders it; every refresh swaps in a fresh rendering of
 * <main> (GET /_body, escaped by the server), so the page also reads without JavaScript. */
"use strict";
(function () {
  var first = true;
  Dash.refresh(function () {
    if (first) { first = false; return null; }   // the server just rendered it
    return fetch("/_body", {cache: "no-store"}).then(function (r) {
      if (!r.ok) { throw new Error("HTTP " + r.status); }
      return r.text();
    }).then(function (text) { Dash.main.innerHTML = text; });
  });
})();
