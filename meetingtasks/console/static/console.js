// The console's only behaviour besides the charts: live parts of a page, "select all" for dead letters, and
// filters that apply when chosen.
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
  // A filter that applies as soon as it is chosen (no inline handler: the content security policy forbids them).
  document.querySelectorAll("select[data-submit-on-change]").forEach((select) => {
    select.addEventListener("change", () => select.form.submit());
  });
  const all = document.getElementById("select-all");
  if (all) {
    all.addEventListener("change", () => {
      document.querySelectorAll("input[name=letter]").forEach((box) => { box.checked = all.checked; });
    });
  }
})();
