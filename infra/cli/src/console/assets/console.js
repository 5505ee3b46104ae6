// inlet console: refresh the parts of the page marked data-live every few seconds, from the
// same URL (the server renders them; without JavaScript the page's own refresh link does).
(function () {
  "use strict";
  var EVERY_MS = 4000;
  function refresh() {
    if (!document.querySelector("[data-live]")) return;
    fetch(location.href, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (res) { return res.ok ? res.text() : null; })
      .then(function (text) {
        if (text === null) return;
        var fresh = new DOMParser().parseFromString(text, "text/html");
        document.querySelectorAll("[data-live]").forEach(function (el) {
          var next = el.id && fresh.getElementById(el.id);
          if (next) el.replaceWith(document.importNode(next, true));
        });
      })
      .catch(function () {})
      .then(function () { setTimeout(refresh, EVERY_MS); });
  }
  setTimeout(refresh, EVERY_MS);
})();
