// microshop storefront: the only script, loaded from this origin (the Content-Security-Policy
// allows no inline script). The pages work without it; it adds two things.
(function () {
  "use strict";

  // 1. A form marked data-once is sent once: a double click on "Place order" sends one request.
  //    (Even a second one would order nothing more: the form carries one Idempotency-Key.)
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form.hasAttribute || !form.hasAttribute("data-once")) return;
    if (form.getAttribute("data-sent") === "true") { event.preventDefault(); return; }
    form.setAttribute("data-sent", "true");
    var button = form.querySelector("button[type=submit]");
    if (button) {
      button.setAttribute("aria-disabled", "true");
      if (button.getAttribute("data-busy")) button.textContent = button.getAttribute("data-busy");
    }
  });
  // Back to a page from the browser's cache: its forms may be sent again (the server decides).
  window.addEventListener("pageshow", function () {
    document.querySelectorAll("form[data-sent]").forEach(function (form) { form.removeAttribute("data-sent"); });
  });

  // 2. An order whose saga is still running polls its status block until it is final (the block
  //    the server sends has no data-poll any more).
  function poll(block) {
    var url = block.getAttribute("data-poll");
    if (!url) return;
    var wait = parseInt(block.getAttribute("data-poll-ms") || "1000", 10);
    window.setTimeout(function () {
      fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (reply) {
          if (reply.status === 401 || reply.status === 404) return null;  // logged out, or gone: stop
          if (!reply.ok) throw new Error("HTTP " + reply.status);
          return reply.text();
        })
        .then(function (html) {
          if (html === null) return;
          var holder = document.createElement("div");
          holder.innerHTML = html;
          var fresh = holder.querySelector("#order-status");
          if (!fresh) throw new Error("no status block");
          block.replaceWith(fresh);
          poll(fresh);
        })
        .catch(function () { poll(block); });  // the storefront did not answer: ask again
    }, wait);
  }
  document.addEventListener("DOMContentLoaded", function () {
    var block = document.getElementById("order-status");
    if (block) poll(block);
  });
})();
