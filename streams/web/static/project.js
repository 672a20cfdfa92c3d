// Cumulative execution of the project against its expected progress curve (uPlot).
(function () {
  "use strict";
  var holder = document.getElementById("chart");
  var source = document.getElementById("chart-data");
  if (!holder || !source || typeof uPlot === "undefined") { return; }
  var data = JSON.parse(source.textContent);
  var pct = function (u, v) { return v == null ? "—" : (v * 100).toFixed(1) + "%"; };
  var opts = {
    width: Math.max(holder.clientWidth, 600),
    height: 320,
    scales: { y: { range: [0, 1] } },
    series: [
      { label: "日期", value: "{YYYY}-{MM}-{DD}" },
      { label: "累计执行率", stroke: "#1565c0", width: 2, fill: "rgba(21,101,192,0.08)", value: pct },
      { label: "计划进度", stroke: "#e08a00", width: 2, dash: [6, 4], value: pct }
    ],
    axes: [
      { values: "{M}月" },
      { values: function (u, vals) { return vals.map(function (v) { return (v * 100).toFixed(0) + "%"; }); } }
    ]
  };
  holder.dataset.ready = "1";
  new uPlot(opts, [data.x, data.actual, data.expected], holder);
})();
