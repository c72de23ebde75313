// The console's only script (CSP: script-src 'self'; no inline code). Progressive enhancement:
// every page works without it. It places the authority timeline bars and draws the uPlot charts.
"use strict";

function placeTimeline(root) {
  root.querySelectorAll(".timeline").forEach(function (tl) {
    var bars = Array.prototype.slice.call(tl.querySelectorAll(".tl-bar"));
    if (!bars.length) { return; }
    var now = Number(tl.dataset.now);
    var lo = Math.min(now, Math.min.apply(null, bars.map(function (b) { return Number(b.dataset.from); })));
    var hi = Math.max(now, Math.max.apply(null, bars.map(function (b) { return Number(b.dataset.to); })));
    var span = Math.max(1, hi - lo);
    bars.forEach(function (b) {
      b.style.left = (100 * (Number(b.dataset.from) - lo) / span) + "%";
      b.style.width = Math.max(1, 100 * (Number(b.dataset.to) - Number(b.dataset.from)) / span) + "%";
      var track = b.parentNode;
      if (!track.querySelector(".tl-now")) {
        var mark = document.createElement("span");
        mark.className = "tl-now";
        mark.style.left = (100 * (now - lo) / span) + "%";
        track.appendChild(mark);
      }
    });
  });
}

function drawCharts(root) {
  if (typeof uPlot === "undefined") { return; }
  root.querySelectorAll(".chart[data-src]").forEach(function (el) {
    if (el.dataset.drawn) { return; }
    el.dataset.drawn = "1";
    fetch(el.dataset.src, { credentials: "same-origin" }).then(function (r) { return r.json(); }).then(function (d) {
      var width = Math.max(280, el.clientWidth || 600);
      if (el.dataset.chart === "overview") {
        new uPlot({ width: width, height: 220, series: [{}, { label: "SVIDs issued", stroke: "#1a7f37" },
          { label: "SVIDs denied", stroke: "#b42318" }] }, [d.t, d.issued, d.denied], el);
      } else {
        var xs = d.rules.map(function (_, i) { return i; });
        new uPlot({ width: width, height: 220, scales: { x: { time: false } },
          axes: [{ values: function (u, vals) { return vals.map(function (v) { return d.rules[v] || ""; }); } }, {}],
          series: [{}, { label: "denials", stroke: "#b42318", fill: "rgba(180,35,24,.15)",
            paths: uPlot.paths && uPlot.paths.bars ? uPlot.paths.bars({ size: [0.6] }) : undefined }] },
          [xs, d.denials], el);
      }
      el.setAttribute("data-ready", "1");
    }).catch(function () { el.textContent = "chart unavailable"; });
  });
}

function enhance(root) { placeTimeline(root); drawCharts(root); }
document.addEventListener("DOMContentLoaded", function () { enhance(document); });
document.addEventListener("htmx:afterSettle", function (e) { enhance(e.target || document); });
