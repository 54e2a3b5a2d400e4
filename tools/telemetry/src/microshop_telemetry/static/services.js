// The services page's charts: each service's series from /api/services, drawn by uPlot (vendored,
// uPlot.iife.min.js), polled again every scrape interval. The tables are server-rendered; this adds
// only the charts.
(function () {
  "use strict";
  const script = document.currentScript;
  const api = script.dataset.api;
  const everyMs = Math.max(1, Number(script.dataset.interval) || 5) * 1000;
  const charts = new Map();  // chart holder element -> uPlot

  function options(holder) {
    return {
      width: Math.max(240, holder.clientWidth || 320),
      height: 150,
      legend: {show: false},
      cursor: {drag: {x: false, y: false}},
      scales: {
        // At least a minute wide, so the first points do not stretch the axis over years.
        x: {time: true, range: (_chart, min, max) => {
          const end = max == null ? Date.now() / 1000 : max;
          return [Math.min(min == null ? end : min, end - 60), end];
        }},
        y: {range: (_chart, _min, max) => [0, max > 0 ? max * 1.1 : 1]},
      },
      series: [{}, {label: holder.dataset.label, stroke: "#3d6bd1", fill: "rgba(61, 107, 209, 0.1)", width: 1.5,
                    spanGaps: false}],
      axes: [{}, {size: 50}],
    };
  }

  function draw(service) {
    for (const holder of document.querySelectorAll(".chart")) {
      if (holder.dataset.service !== service.service) continue;
      const data = [service.series.t, service.series[holder.dataset.figure]];
      const chart = charts.get(holder);
      if (chart) {
        chart.setData(data);
      } else {
        charts.set(holder, new uPlot(options(holder), data, holder));
      }
      holder.dataset.points = String(data[0].length);
    }
  }

  async function refresh() {
    try {
      const response = await fetch(api, {headers: {accept: "application/json"}});
      if (!response.ok) return;
      const body = await response.json();
      body.services.forEach(draw);
    } catch (error) {
      // The console restarting, say: the next round tries again.
    }
  }

  refresh();
  setInterval(refresh, everyMs);
})();
