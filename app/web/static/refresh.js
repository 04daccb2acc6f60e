// Keep an open page's list current (docs/page.md, Live refresh): poll the API
// with its ETag while the tab is visible; on a new generation or state, fetch
// the server's section (/fragment/listens) and update the page node by node.
// Nothing is built from data here; nothing parsed runs (DOMParser is inert).
(function () {
  "use strict";

  var section = document.querySelector("section[data-refresh]");
  var every = section ? section.dataset.refresh * 1000 : 0;
  if (!(every > 0) || !window.AbortController) {
    return;
  }
  var etag = null, delay = every, askedAt = Date.now(), saidAt = -1e9, timer = null, busy = false;
  var live = document.createElement("p");
  var notice = document.createElement("p");
  live.className = "visually-hidden";
  live.setAttribute("role", "status");
  live.setAttribute("aria-live", "polite");
  document.body.appendChild(live);
  notice.className = "status status-off";
  notice.textContent = "The latest listens can't be reached right now; this list is as it was.";

  // Rejects on a network error, a 5xx, or after 10 s.
  function get(url, headers, cache) {
    var control = new AbortController();
    var timeout = setTimeout(function () { control.abort(); }, 10000);
    return fetch(url, {headers: headers, cache: cache, signal: control.signal}).then(function (response) {
      if (response.status !== 304 && !response.ok) {
        throw new Error(response.status);
      }
      return response.text().then(function (body) {
        clearTimeout(timeout);
        return {status: response.status, etag: response.headers.get("ETag"), body: body};
      });
    });
  }

  function showNotice(on) {
    on = on && !section.querySelector(".notice-unreachable"); // the server's own
    if (on !== !!notice.parentNode) {
      return on ? section.querySelector(".listens-head").appendChild(notice) : notice.remove();
    }
  }

  // An entry is known by its member's link, another element by name and class.
  function key(node) {
    var member = node.nodeName === "LI" && node.querySelector("a.member");
    return member ? member.getAttribute("href") : node.nodeName + " " + (node.className || "");
  }

  function morph(old, fresh) {
    if (old.nodeType !== 1) {
      if (old.nodeValue !== fresh.nodeValue) {
        old.nodeValue = fresh.nodeValue;
      }
      return;
    }
    [].slice.call(old.attributes).forEach(function (attribute) {
      if (!fresh.hasAttribute(attribute.name)) {
        old.removeAttribute(attribute.name);
      }
    });
    [].forEach.call(fresh.attributes, function (attribute) {
      if (old.getAttribute(attribute.name) !== attribute.value) {
        old.setAttribute(attribute.name, attribute.value);
      }
    });
    var before = [].filter.call(old.childNodes, function (node) { return node !== notice; });
    var pool = before.slice();
    var wanted = [].map.call(fresh.childNodes, function (node) {
      for (var at = 0; at < pool.length; at += 1) {
        if (key(pool[at]) === key(node)) {
          morph(pool[at], node);
          return pool.splice(at, 1)[0];
        }
      }
      return document.importNode(node, true);
    });
    pool.forEach(function (node) { node.remove(); });
    arrange(old, before, wanted);
  }

  // Nodes in place stay, and so does the one holding focus (moving it drops
  // focus); the others are put back, laid out anew: nothing is seen to shift.
  function arrange(parent, before, wanted) {
    var focus = document.activeElement;
    var holder = focus === document.body ? -1 : wanted.findIndex(function (node) { return node.contains(focus); });
    var holderWas = before.indexOf(wanted[holder]);
    var fixed = wanted.map(function (node, index) {
      var was = before.indexOf(node);
      return index === holder || (was === index && (holder < 0 || (index < holder) === (was < holderWas)));
    });
    var next = null;
    for (var index = wanted.length - 1; index >= 0; index -= 1) {
      if (!fixed[index]) {
        parent.insertBefore(wanted[index], next);
      }
      next = wanted[index];
    }
  }

  // An unavailable or unreachable answer never replaces a shown list.
  function update(answer) {
    var listed = !!section.querySelector(".listen-list");
    var down = answer.state === "unavailable" || answer.reachable === false;
    showNotice(down && listed);
    if ((down && listed) || (String(answer.generation || "") === section.dataset.generation &&
        answer.state === section.dataset.state && String(answer.reachable !== false) === section.dataset.reachable)) {
      return null;
    }
    return get("/fragment/listens", {}, "no-cache").then(function (result) {
      var fresh = new DOMParser().parseFromString(result.body, "text/html").querySelector("section");
      if (fresh.dataset.generation < section.dataset.generation * 1 ||
          (listed && fresh.dataset.state === "unavailable")) {
        return showNotice(listed);
      }
      morph(section, fresh);
      if (Date.now() - saidAt >= 60000) {
        saidAt = Date.now();
        live.textContent = "List updated";
        // Emptied: the next update is announced too.
        setTimeout(function () { live.textContent = ""; }, 5000);
      }
    });
  }

  function wait(ms) {
    clearTimeout(timer);
    timer = document.hidden ? null : setTimeout(poll, ms);
  }

  function poll() {
    if (document.hidden || busy) {
      return;
    }
    busy = true;
    askedAt = Date.now();
    get("/api/internal/user-listens", etag ? {"If-None-Match": etag} : {}, "no-store").then(function (result) {
      return result.status === 304 ? null : Promise.resolve(update(JSON.parse(result.body))).then(function () {
        etag = result.etag;
      });
    }).then(function () {
      delay = every;
    }, function () {
      // The list stays; back off, doubling up to 10 minutes.
      delay = Math.min(delay * 2, 600000);
    }).then(function () {
      busy = false;
      askedAt = Date.now();
      wait(delay);
    });
  }

  document.addEventListener("visibilitychange", function () {
    wait(Math.max(0, delay - (Date.now() - askedAt)));
  });
  wait(every);
}());
