/* What dcc.Graph hands to Plotly.react, made cheap to diff. plotly.js redraws a figure from
   scratch (recomputes and repaints every heatmap: 150-300 ms per heatmap panel, measured) when it
   thinks its data changed, and it compares arrays by identity. Two things made every slider move
   look like new data although the server only moved the cursor lines:

   * Heatmaps travel as typed-array specs ({dtype, bdata, shape}: base64, about a third of the
     bytes of JSON text; see dashboard/downsample.py typed_array). plotly.js decodes a spec at
     every Plotly.react and counts the trace as new even when it is the object it drew last
     time. Each spec is decoded here once, into typed arrays cached per spec object, so a heatmap
     the server did not resend keeps the identity of its arrays.
   * dcc.Graph passes a fresh copy of the layout at every update, so its arrays (the layer names
     in an axis's tickvals/ticktext, the layout's meta) are new objects each time. An array equal
     to the one plotly drew last time is replaced by that one.

   A cursor move is then a shape redraw (~10 ms). dcc.Graph draws through window.Plotly.react,
   which is wrapped as soon as plotly loads. */
(function () {
  const TYPES = {f4: Float32Array, f8: Float64Array, i1: Int8Array, u1: Uint8Array,
                 i2: Int16Array, u2: Uint16Array, i4: Int32Array, u4: Uint32Array};
  const KEYS = ["x", "y", "z"];
  const cache = new WeakMap();

  function isSpec(v) {
    return v !== null && typeof v === "object" && !Array.isArray(v) &&
      typeof v.bdata === "string" && typeof v.dtype === "string" && v.dtype in TYPES;
  }
  function decode(spec) {
    let out = cache.get(spec);
    if (out !== undefined) { return out; }
    const text = atob(spec.bdata);
    const bytes = new Uint8Array(text.length);
    for (let i = 0; i < text.length; i++) { bytes[i] = text.charCodeAt(i); }
    const flat = new TYPES[spec.dtype](bytes.buffer);
    const shape = String(spec.shape || "").split(",").map(Number).filter(n => n > 0);
    if (shape.length === 2) {  // rows of a 2-D array: views into the one buffer
      out = [];
      for (let r = 0; r < shape[0]; r++) { out.push(flat.subarray(r * shape[1], (r + 1) * shape[1])); }
    } else {
      out = flat;
    }
    cache.set(spec, out);
    return out;
  }
  function trace(t) {
    if (!t || typeof t !== "object" || !KEYS.some(k => isSpec(t[k]))) { return t; }
    const copy = Object.assign({}, t);
    KEYS.forEach(k => { if (isSpec(t[k])) { copy[k] = decode(t[k]); } });
    return copy;
  }
  function figure(fig) {
    if (!fig || !Array.isArray(fig.data) || !fig.data.some(t => t && KEYS.some(k => isSpec(t[k])))) {
      return fig;
    }
    return Object.assign({}, fig, {data: fig.data.map(trace)});
  }
  function sameArray(a, b) {
    if (!Array.isArray(a) || !Array.isArray(b) || a.length !== b.length) { return false; }
    for (let i = 0; i < a.length; i++) { if (a[i] !== b[i]) { return false; } }
    return true;
  }
  function plain(v) { return v !== null && typeof v === "object" && !Array.isArray(v); }
  /* ``obj`` with every array equal (element by element) to the same key's array in ``old``
     replaced by ``old``'s; ``obj`` itself when there is none (never modified in place) */
  function reuseArrays(obj, old) {
    let out = obj;
    for (const k of Object.keys(obj)) {
      if (obj[k] !== old[k] && sameArray(obj[k], old[k])) {
        if (out === obj) { out = Object.assign({}, obj); }
        out[k] = old[k];
      }
    }
    return out;
  }
  function stableLayout(layout, old) {
    if (!plain(layout) || !plain(old)) { return layout; }
    let out = reuseArrays(layout, old);
    for (const k of Object.keys(out)) {
      const v = out[k], o = old[k];
      let kept = v;
      if (k === "meta" && v !== o && JSON.stringify(v) === JSON.stringify(o)) {
        kept = o;
      } else if (plain(v) && plain(o)) {  // an axis: tickvals, ticktext, range
        kept = reuseArrays(v, o);
      }
      if (kept !== v) {
        if (out === layout) { out = Object.assign({}, layout); }
        out[k] = kept;
      }
    }
    return out;
  }
  function wrap(plotly) {
    if (!plotly || !plotly.react || plotly.react.avionicsTyped) { return plotly; }
    const react = plotly.react;
    const wrapped = function (gd, data, layout, config) {
      const el = typeof gd === "string" ? document.getElementById(gd) : gd;
      const old = el && el.layout;
      if (Array.isArray(data)) {
        return react.call(this, gd, data.map(trace), stableLayout(layout, old), config);
      }
      const fig = figure(data);
      const fixed = fig && plain(fig.layout) ? stableLayout(fig.layout, old) : undefined;
      return react.call(this, gd, fixed === undefined || fixed === fig.layout ? fig :
        Object.assign({}, fig, {layout: fixed}), layout, config);
    };
    wrapped.avionicsTyped = true;
    plotly.react = wrapped;
    return plotly;
  }
  if (window.Plotly) {
    wrap(window.Plotly);
    return;
  }
  let plotly;
  Object.defineProperty(window, "Plotly", {
    configurable: true, enumerable: true,
    get: function () { return plotly; },
    set: function (value) { plotly = wrap(value); },
  });
})();
