// The local server's pages: keep relative times current, submit filters on change, and
// reload the Agents page now and then (the query string, hence the filter, is kept).
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
  body.setAttribute("data-js", "ready");
})();
