// The dashboard's only script, no build step: confirm dangerous forms, keep live parts fresh
// by polling server-rendered fragments (the page works without it, with a slower refresh).
// Every element with data-live (and an id) is one live part: the page's own (#live) and the
// pause banner (#banner); data-every sets its interval, data-final="true" stops it.
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

  function follow(part) {
    var id = part.id;
    var every = parseInt(part.getAttribute("data-every"), 10) || 1500;
    var last = null;

    function schedule() {
      window.setTimeout(tick, every);
    }

    function tick() {
      if (part.getAttribute("data-final") === "true") {
        return;
      }
      if (document.hidden) {
        schedule();
        return;
      }
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
          schedule();
        })
        .catch(function () {
          part.classList.add("stale");
          schedule();
        });
    }

    schedule();
  }

  Array.prototype.forEach.call(document.querySelectorAll("[data-live][id]"), follow);
})();
