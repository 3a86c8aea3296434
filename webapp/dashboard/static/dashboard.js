// The dashboard's only script, no build step: confirm dangerous forms, keep live parts fresh
// with server-rendered fragments (the page works without it, with a slower refresh).
// Every element with data-live (and an id) is one live part: the page's own (#live) and the
// pause banner (#banner). A part with data-events fetches its fragment when its server-sent
// event stream says something changed (the job page, the job list); the others poll every
// data-every ms. data-final="true" stops either.
(function () {
  "use strict";

  document.addEventListener("submit", function (event) {
    var question = event.target.getAttribute("data-confirm");
    if (question && !window.confirm(question)) {
      event.preventDefault();
    }
  });

  // Unknown items may have been entered by the robot: they can be ticked for a resubmit only
  // once the person confirms the portal check (the server refuses them without it too).
  document.addEventListener("change", function (event) {
    if (!event.target.hasAttribute("data-unlocks-unknown")) {
      return;
    }
    var confirmed = event.target.checked;
    document.querySelectorAll("input[data-unknown]").forEach(function (box) {
      box.disabled = !confirmed;
      if (!confirmed) {
        box.checked = false;
      }
    });
  });

  // Fetch the part's fragment and swap it in; then() gets whether the part is now final.
  function refresher(part) {
    var id = part.id;
    var last = null;
    var running = false;
    var again = false;

    function refresh(done) {
      if (running) {
        again = true;  // one more fetch once this one is in: no change is missed
        return;
      }
      running = true;
      fetch(part.getAttribute("data-live"), {credentials: "same-origin", headers: {"Accept": "text/html"}})
        .then(function (response) {
          if (response.status === 401) {
            window.location.reload();  // signed out: the page leads to the login
            throw new Error("signed out");
          }
          if (!response.ok) {
            throw new Error("HTTP " + response.status);
          }
          return response.text();
        })
        .then(function (html) {
          if (html !== last) {
            var holder = document.createElement("div");
            holder.innerHTML = html;
            var fresh = holder.querySelector("#" + id);
            if (fresh) {
              part.replaceWith(fresh);
              part = fresh;
            }
            last = html;
          }
          part.classList.remove("stale");
        })
        .catch(function () {
          part.classList.add("stale");
        })
        .then(function () {
          running = false;
          if (again) {
            again = false;
            refresh(done);
            return;
          }
          if (done) {
            done(part.getAttribute("data-final") === "true");
          }
        });
    }

    return refresh;
  }

  function poll(part) {
    var every = parseInt(part.getAttribute("data-every"), 10) || 1500;
    var refresh = refresher(part);

    function tick() {
      if (document.hidden) {
        window.setTimeout(tick, every);
        return;
      }
      refresh(function (final) {
        if (!final) {
          window.setTimeout(tick, every);
        }
      });
    }

    window.setTimeout(tick, every);
  }

  function listen(part) {
    if (part.getAttribute("data-final") === "true" || !window.EventSource) {
      return;  // nothing more will change (or no EventSource: refreshed by hand)
    }
    var refresh = refresher(part);
    var source = new EventSource(part.getAttribute("data-events"));

    // The first event shows the state when the stream opened: a change since the page was
    // rendered is fetched then too.
    function changed() {
      refresh(function (final) {
        if (final) {
          source.close();
        }
      });
    }

    source.addEventListener("job", changed);
    source.addEventListener("jobs", changed);
    source.onerror = function () {
      part.classList.add("stale");  // the browser reconnects by itself
      if (source.readyState === EventSource.CLOSED) {
        refresh(null);  // refused (signed out: the fetch leads to the login)
      }
    };
  }

  Array.prototype.forEach.call(document.querySelectorAll("[data-live][id]"), function (part) {
    if (part.hasAttribute("data-events")) {
      listen(part);
    } else {
      poll(part);
    }
  });
})();
