// Keep an open page's list current (docs/page.md, Live refresh). While the tab
// is visible, ask the API every data-refresh seconds with its ETag (an
// unchanged list costs a 304); when the generation or the state changed, fetch
// the server-rendered section (/fragment/listens) and update the page in place:
// nodes that stay are kept (covers, focus), attributes and text are set one by
// one. No markup is built here and nothing parsed runs: DOMParser is inert.
(function () {
  "use strict";

  var section = document.querySelector("section.listens[data-refresh]");
  var every = section ? Number(section.getAttribute("data-refresh")) * 1000 : 0;
  if (!(every > 0) || !window.fetch || !window.DOMParser || !window.AbortController) {
    return;
  }
  var etag = null;
  var delay = every;
  var askedAt = Date.now();
  var saidAt = -Infinity;
  var timer = null;
  var busy = false;
  var live = document.createElement("p");
  live.className = "visually-hidden";
  live.setAttribute("role", "status");
  live.setAttribute("aria-live", "polite");
  document.body.appendChild(live);
  var notice = document.createElement("p");
  notice.className = "status status-off";
  notice.setAttribute("data-js", "");
  notice.textContent = "We can't reach the latest listens right now; this list is kept as it was.";

  // A request that fails, answers 5xx or takes over 10 s (body included) rejects.
  function get(url, headers, cache) {
    var control = new AbortController();
    var timeout = window.setTimeout(function () { control.abort(); }, 10000);
    var options = {headers: headers, cache: cache, credentials: "same-origin", signal: control.signal};
    return window.fetch(url, options).then(function (response) {
      if (response.status !== 304 && !response.ok) {
        throw new Error(url + " answered " + response.status);
      }
      return response.text().then(function (body) {
        return {status: response.status, etag: response.headers.get("ETag"), body: body};
      });
    }).then(function (result) {
      window.clearTimeout(timeout);
      return result;
    }, function (error) {
      window.clearTimeout(timeout);
      throw error;
    });
  }

  function showNotice(on) {
    var head = section.querySelector(".listens-head");
    if (on && !notice.parentNode && head) {
      head.appendChild(notice);
    } else if (!on && notice.parentNode) {
      notice.parentNode.removeChild(notice);
    }
  }

  function ours(node) {
    return node.nodeType === 1 && node.hasAttribute("data-js");
  }

  // Which old node a new one updates: an entry by its member's link, any other
  // element by name and class, text by position among text.
  function key(node) {
    if (node.nodeName === "LI") {
      var member = node.querySelector("a.member");
      return "LI " + (member ? member.getAttribute("href") : "");
    }
    return node.nodeType === 1 ? node.nodeName + " " + node.className : "#" + node.nodeType;
  }

  function morph(old, fresh) {
    if (old.nodeType !== 1) {
      if (old.nodeValue !== fresh.nodeValue) {
        old.nodeValue = fresh.nodeValue;
      }
      return;
    }
    var index;
    var name;
    for (index = old.attributes.length - 1; index >= 0; index -= 1) {
      name = old.attributes[index].name;
      if (!fresh.hasAttribute(name)) {
        old.removeAttribute(name);
      }
    }
    for (index = 0; index < fresh.attributes.length; index += 1) {
      name = fresh.attributes[index].name;
      if (old.getAttribute(name) !== fresh.attributes[index].value) {
        old.setAttribute(name, fresh.attributes[index].value);
      }
    }
    var before = Array.prototype.filter.call(old.childNodes, function (node) { return !ours(node); });
    var pool = before.slice();
    var wanted = Array.prototype.map.call(fresh.childNodes, function (node) {
      for (var at = 0; at < pool.length; at += 1) {
        if (key(pool[at]) === key(node)) {
          var match = pool.splice(at, 1)[0];
          morph(match, node);
          return match;
        }
      }
      return document.importNode(node, true);
    });
    pool.forEach(function (node) { old.removeChild(node); });
    arrange(old, before, wanted);
  }

  // Put wanted in order. A node keeps its place when its position is the same
  // as before, and so does the one holding focus (moving it would drop focus);
  // every other one is taken out and put back where it belongs.
  function arrange(parent, before, wanted) {
    var holder = -1;
    wanted.forEach(function (node, index) {
      if (node.contains(document.activeElement) && node !== document.body) {
        holder = index;
      }
    });
    var holderWas = holder < 0 ? -1 : before.indexOf(wanted[holder]);
    var fixed = wanted.map(function (node, index) {
      var was = before.indexOf(node);
      if (index === holder) {
        return true;
      }
      return was === index && (holder < 0 || (index < holder) === (was < holderWas));
    });
    wanted.forEach(function (node, index) {
      if (!fixed[index] && node.parentNode === parent) {
        parent.removeChild(node);
      }
    });
    var next = null;
    for (var index = wanted.length - 1; index >= 0; index -= 1) {
      if (!fixed[index]) {
        parent.insertBefore(wanted[index], next);
      }
      next = wanted[index];
    }
  }

  function update(answer) {
    var listed = section.querySelector(".listen-list") !== null;
    var down = answer.state === "unavailable" || answer.reachable === false;
    showNotice(down && listed);
    var generation = answer.generation === null ? "" : String(answer.generation);
    if ((down && listed) || (generation === section.getAttribute("data-generation") &&
        answer.state === section.getAttribute("data-state"))) {
      return null;
    }
    return get("/fragment/listens", {}, "no-cache").then(function (result) {
      var fresh = new DOMParser().parseFromString(result.body, "text/html").querySelector("section.listens");
      if (!fresh) {
        throw new Error("the fragment has no list section");
      }
      var older = Number(fresh.getAttribute("data-generation")) < Number(section.getAttribute("data-generation"));
      if (older || (listed && fresh.getAttribute("data-state") === "unavailable")) {
        showNotice(listed);
        return;
      }
      morph(section, fresh);
      if (Date.now() - saidAt >= 60000) {
        saidAt = Date.now();
        live.textContent = "List updated";
        // Cleared, so that the next update is a change a screen reader announces.
        window.setTimeout(function () { live.textContent = ""; }, 5000);
      }
    });
  }

  function wait(ms) {
    window.clearTimeout(timer);
    timer = document.hidden ? null : window.setTimeout(poll, ms);
  }

  function poll() {
    timer = null;
    if (document.hidden || busy) {
      return;
    }
    busy = true;
    askedAt = Date.now();
    get("/api/internal/user-listens", etag ? {"If-None-Match": etag} : {}, "no-store").then(function (result) {
      if (result.status !== 304) {
        return Promise.resolve(update(JSON.parse(result.body))).then(function () { etag = result.etag; });
      }
      return null;
    }).then(function () {
      delay = every;
    }, function () {
      // Failed or slow: the list stays as it is; ask less often, up to every 10 minutes.
      delay = Math.min(delay * 2, 600000);
    }).then(function () {
      busy = false;
      wait(delay);
    });
  }

  document.addEventListener("visibilitychange", function () {
    if (document.hidden) {
      wait(0);
    } else if (!busy) {
      wait(Math.max(0, delay - (Date.now() - askedAt)));
    }
  });
  wait(every);
}());
