/* Off-screen panels draw later, so the first screen gets the server first: a panel's
   "panel-visible" store turns true once the panel enters the viewport, and every panel's once
   the panels on the first screen have drawn (or after LATE_MS at the latest). The store is the
   input that lets dashboard/callbacks.py render a panel. */
(function () {
  const LATE_MS = 8000, CHECK_MS = 250;
  const seen = new Set();
  function ready() {
    return window.dash_clientside && window.dash_clientside.set_props;
  }
  function show(el) {
    const name = el.id.replace(/^panel-/, "");
    if (seen.has(name)) { return; }
    seen.add(name);
    window.dash_clientside.set_props({type: "panel-visible", panel: name}, {data: true});
  }
  function all() { document.querySelectorAll("section.panel").forEach(show); }
  function onScreen(el) {
    const r = el.getBoundingClientRect();
    return el.offsetParent !== null && r.bottom > 0 && r.top < window.innerHeight;
  }
  function firstScreenDrawn() {
    return [...document.querySelectorAll("section.panel")].filter(onScreen).every(p => {
      const g = p.querySelector(".js-plotly-plot");
      const graphBox = p.querySelector(".dash-graph");
      const hidden = !graphBox || graphBox.style.display === "none";
      return hidden || (g && g.layout && !((g.layout.meta || {}).placeholder === "loading…"));
    });
  }
  function start() {
    const panels = document.querySelectorAll("section.panel");
    if (!panels.length || !ready()) { setTimeout(start, 100); return; }
    const io = new IntersectionObserver(entries => entries.forEach(e => {
      if (e.isIntersecting) { show(e.target); }
    }));
    panels.forEach(p => io.observe(p));
    const began = Date.now();
    (function later() {
      if (Date.now() - began > LATE_MS || (Date.now() - began > 500 && firstScreenDrawn())) {
        all();
        return;
      }
      setTimeout(later, CHECK_MS);
    })();
  }
  start();
})();
