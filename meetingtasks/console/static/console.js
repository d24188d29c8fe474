// The console's only behaviour besides the charts: live parts of a page, and "select all" for dead letters.
// A page with <body data-live="URL"> gets server-sent events: each "html" event replaces the element it names.
(function () {
  "use strict";
  const url = document.body.dataset.live;
  if (url && window.EventSource) {
    const source = new EventSource(url);
    source.addEventListener("html", (e) => {
      const data = JSON.parse(e.data);
      const target = document.getElementById(data.target);
      if (target) { target.innerHTML = data.html; target.dataset.updated = String(Date.now()); }
    });
    source.addEventListener("series", () => document.dispatchEvent(new Event("console:series")));
    window.consoleLive = source;
  }
  const all = document.getElementById("select-all");
  if (all) {
    all.addEventListener("change", () => {
      document.querySelectorAll("input[name=letter]").forEach((box) => { box.checked = all.checked; });
    });
  }
})();
