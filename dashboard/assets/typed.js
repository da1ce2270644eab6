/* Heatmaps travel as plotly typed-array specs ({dtype, bdata, shape}: base64, about a third of
   the bytes of JSON text; see dashboard/downsample.py typed_array). plotly.js decodes such a spec
   at every Plotly.react and then counts the trace as new data, even when the spec is the very
   object it drew last time: every cursor move recomputed and redrew every heatmap of the panel
   (150-300 ms per panel, measured). Here each spec is decoded once, into typed arrays cached per
   spec object, before plotly sees it: a heatmap the server did not resend keeps the identity of
   its arrays, and Plotly.react skips it (a cursor move is then a shape redraw, ~10 ms).
   dcc.Graph draws through window.Plotly.react, which is wrapped as soon as plotly loads. */
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
  function wrap(plotly) {
    if (!plotly || !plotly.react || plotly.react.avionicsTyped) { return plotly; }
    const react = plotly.react;
    const wrapped = function (gd, data, layout, config) {
      if (Array.isArray(data)) { return react.call(this, gd, data.map(trace), layout, config); }
      return react.call(this, gd, figure(data), layout, config);
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
