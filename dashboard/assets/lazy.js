/* Panels draw one at a time, the first screen first: a panel's "panel-visible" store turns
   true when it is its turn, and that store is the input that lets dashboard/callbacks.py render
   the panel.

   * First screen, top-down: a panel on screen is asked for only when every graph above it on
     screen has drawn. Before anything is drawn each card holds a small "loading…" placeholder,
     so seven cards look on screen at first; asked for all at once, their heatmaps were drawn
     (0.3-1 s each, and the browser draws one figure at a time) before the ones that really stay
     on the first screen, which the strip and the figures above push the others off.
   * Then the rest, in page order, the next one once the one before has drawn (or hides itself:
     nothing recorded). Asked for all at once, their figures arrived together and were drawn in
     one long task of several seconds, during which the page could not scroll or answer.
   * A panel scrolled onto the screen jumps the queue. A panel not drawn STUCK_MS after it was
     asked for (its render failed, or the server is very slow) no longer holds the others.

   Panels without a graph (health strip, header) never hold the queue. */
(function () {
  const CHECK_MS = 40, STUCK_MS = 5000;
  const asked = new Map();  // panel name -> when its store was set
  function ready() {
    return window.dash_clientside && window.dash_clientside.set_props;
  }
  function nameOf(el) { return el.id.replace(/^panel-/, ""); }
  function show(el) {
    const name = nameOf(el);
    if (asked.has(name)) { return; }
    asked.set(name, Date.now());
    window.dash_clientside.set_props({type: "panel-visible", panel: name}, {data: true});
  }
  function panels() { return [...document.querySelectorAll("section.panel")]; }
  function onScreen(el) {
    const r = el.getBoundingClientRect();
    return el.offsetParent !== null && r.bottom > 0 && r.top < window.innerHeight;
  }
  function hasGraph(p) {
    const box = p.querySelector(".dash-graph");
    return !!box && box.style.display !== "none";
  }
  function drawn(p) {
    const g = p.querySelector(".js-plotly-plot");
    return !!(g && g.layout && !((g.layout.meta || {}).placeholder === "loading…"));
  }
  /* asked for, shown with a graph, not drawn yet (and not given up on) */
  function waiting(p) {
    const since = asked.get(nameOf(p));
    return since !== undefined && p.offsetParent !== null && hasGraph(p) && !drawn(p) &&
      Date.now() - since < STUCK_MS;
  }
  /* the panels on screen, top-down, up to the first graph not drawn yet; true when every
     panel on screen has been asked for and none is waiting (the first screen is drawn) */
  function firstScreen() {
    for (const p of panels()) {
      if (!onScreen(p)) { continue; }
      show(p);
      if (waiting(p)) { return false; }
    }
    return true;
  }
  /* the rest, in page order: the next panel once none asked for is waiting */
  function background() {
    const list = panels();
    if (list.some(waiting)) { return; }
    const next = list.find(p => !asked.has(nameOf(p)));
    if (next) { show(next); }
  }
  function start() {
    if (!panels().length || !ready()) { setTimeout(start, 50); return; }
    (function later() {
      if (firstScreen()) { background(); }
      if (asked.size < panels().length) { setTimeout(later, CHECK_MS); }
    })();
  }
  start();
})();
