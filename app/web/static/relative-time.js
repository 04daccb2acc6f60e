// Keep the page's relative times ("3 min ago") current while it stays open.
// The server renders them; this only re-words them every 30 seconds, counting
// from the server's clock (data-now), so a wrong clock here changes nothing.
// Worded exactly like relative_time in app/web/filters.py: change both together.
(function () {
  "use strict";

  var section = document.querySelector("[data-now]");
  var serverNow = section ? Date.parse(section.getAttribute("data-now")) : NaN;
  if (isNaN(serverNow)) {
    return;
  }
  var loadedAt = Date.now();

  function ago(count, singular, plural) {
    return count + " " + (count === 1 ? singular : plural) + " ago";
  }

  function words(seconds, long) {
    if (seconds < 60) {
      return "just now";
    }
    var minutes = Math.floor(seconds / 60);
    if (minutes < 60) {
      return long ? ago(minutes, "minute", "minutes") : ago(minutes, "min", "min");
    }
    var hours = Math.floor(minutes / 60);
    if (hours < 24) {
      return ago(hours, "hour", "hours");
    }
    return ago(Math.floor(hours / 24), "day", "days");
  }

  function refresh() {
    var now = serverNow + (Date.now() - loadedAt);
    var times = document.querySelectorAll("time[datetime]");
    for (var index = 0; index < times.length; index += 1) {
      var moment = Date.parse(times[index].getAttribute("datetime"));
      if (!isNaN(moment)) {
        var text = words((now - moment) / 1000, times[index].getAttribute("data-relative") === "long");
        if (times[index].textContent !== text) {
          times[index].textContent = text;
        }
      }
    }
  }

  window.setInterval(refresh, 30000);
}());
