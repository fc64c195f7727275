// The local server's pages: keep relative times current, submit filters on change,
// reload the Agents page now and then (the query string, hence the filter, is kept), and
// keep a job's or an agent's page current by fetching its changing part.
(function () {
  "use strict";
  var body = document.body;
  var serverNow = parseFloat(body.getAttribute("data-now"));
  // Times are measured against the server's clock, not the browser's.
  var skew = isNaN(serverNow) ? 0 : serverNow - Date.now() / 1000;

  function ago(seconds) {
    seconds = Math.max(0, seconds);
    if (seconds < 60) return "just now";
    var minutes = Math.floor(seconds / 60);
    if (minutes < 90) return minutes + " min ago";
    var hours = Math.floor(minutes / 60);
    if (hours < 48) return hours + " h ago";
    return Math.floor(hours / 24) + " days ago";
  }

  function refreshTimes() {
    var now = Date.now() / 1000 + skew;
    var items = document.querySelectorAll("time[data-ts]");
    for (var i = 0; i < items.length; i++) {
      var ts = parseFloat(items[i].getAttribute("data-ts"));
      if (!isNaN(ts)) items[i].textContent = ago(now - ts);
    }
  }

  var selects = document.querySelectorAll("select[data-autosubmit]");
  for (var i = 0; i < selects.length; i++) {
    selects[i].addEventListener("change", function (event) {
      event.target.form.submit();
    });
  }

  refreshTimes();
  setInterval(refreshTimes, 10000);

  var note = document.getElementById("refresh-note");
  if (note) {
    var seconds = parseInt(note.getAttribute("data-seconds"), 10) || 30;
    note.textContent = "This page refreshes itself every " + seconds + " s.";
    body.setAttribute("data-refresh", String(seconds));
    setTimeout(function () {
      // Not while the operator is choosing a filter.
      if (document.activeElement && document.activeElement.tagName === "SELECT") {
        setTimeout(function () { window.location.reload(); }, seconds * 1000);
        return;
      }
      window.location.reload();
    }, seconds * 1000);
  }
  // A job's page and an agent's page: fetch their changing part every few seconds and
  // put it in place (no reload, no flicker: nothing is touched when nothing changed).
  // A job's part says when the job is over; then the page stops asking.
  var live = document.getElementById("live");
  if (live && live.getAttribute("data-live")) {
    var liveUrl = live.getAttribute("data-live");
    var every = (parseFloat(live.getAttribute("data-every")) || 3) * 1000;
    var shown = null;
    var update = function () {
      fetch(liveUrl, { credentials: "same-origin", cache: "no-store" })
        .then(function (resp) {
          if (resp.status >= 400 && resp.status < 500) throw new Error("gone");
          if (!resp.ok) return null;
          return resp.text();
        })
        .then(function (text) {
          if (text !== null && text !== shown) {
            live.innerHTML = text;
            shown = text;
            refreshTimes();
          }
          body.setAttribute("data-updates", String((parseInt(body.getAttribute("data-updates"), 10) || 0) + 1));
          if (live.querySelector("[data-live-end]")) {
            body.setAttribute("data-live", "ended");
            return;
          }
          setTimeout(update, every);
        })
        .catch(function (err) {
          if (err && err.message === "gone") {
            body.setAttribute("data-live", "stopped");  // the job or agent is no more
          } else {
            setTimeout(update, every * 2);  // the server is away for a moment
          }
        });
    };
    body.setAttribute("data-live", "on");
    setTimeout(update, every);
  }
  body.setAttribute("data-js", "ready");
})();
