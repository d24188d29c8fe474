// The overview's charts: the last hour per minute from /api/series, one uPlot per chart, a series per service.
(function () {
  "use strict";
  const colors = ["#2f6fdf", "#d9822b", "#1b7f3b", "#b3261e", "#7a4fd0", "#0f8b8d", "#6b7385"];
  const charts = {};
  const select = document.getElementById("chart-priority");
  function width(el) { return Math.max(300, el.clientWidth - 10); }
  function draw(data) {
    const note = document.getElementById("chart-note");
    note.textContent = data.recorded ? "" : "no history recorded yet: the workers record it as tasks run";
    document.querySelectorAll(".chart[data-chart]").forEach((el) => {
      const name = el.dataset.chart;
      const byService = data.charts[name];
      const services = Object.keys(byService);
      const rows = [data.minutes].concat(services.map((s) => byService[s]));
      if (charts[name] && charts[name].series.length === services.length + 1) {
        charts[name].setData(rows);
        return;
      }
      el.innerHTML = "";
      const title = document.createElement("h3");
      title.textContent = el.dataset.title;
      el.appendChild(title);
      charts[name] = new uPlot({
        width: width(el), height: 190,
        // Points as well as lines: a minute with traffic between two silent ones still shows.
        series: [{}].concat(services.map((s, i) => ({ label: s, stroke: colors[i % colors.length], width: 1.5,
                                                       fill: colors[i % colors.length] + "22",
                                                       points: { show: true, size: 6 } }))),
        axes: [{}, { size: 60 }],
        scales: { x: { time: true } },
      }, rows, el);
    });
    document.body.dataset.chartsDrawn = String(Date.now());
  }
  function load() {
    const p = select && select.value ? "?priority=" + encodeURIComponent(select.value) : "";
    fetch("/api/series" + p, { credentials: "same-origin" }).then((r) => r.json()).then(draw);
  }
  if (select) select.addEventListener("change", load);
  document.addEventListener("console:series", load);
  load();
})();
