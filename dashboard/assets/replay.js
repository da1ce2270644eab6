/* Replay runs in the browser: the play button and the play timer move the step slider; the
   server only sees the slider's new value (one request per move, not per frame).
   Registered by dashboard/callbacks.py as ClientsideFunction("avionics", ...). */
window.dash_clientside = Object.assign({}, window.dash_clientside, {
  avionics: {
    /* play/pause; playing from the end starts again at the first step */
    toggle_play: function (n, playing, value, min, max) {
      const noUpdate = window.dash_clientside.no_update;
      if (playing) {
        return [false, noUpdate];
      }
      const restart = value === null || value === undefined || value >= max;
      return [true, restart ? min : noUpdate];
    },
    /* one timer tick: advance by speed (steps/s) x interval; stop at the last step */
    advance: function (n, value, min, max, speed, interval, playing) {
      const noUpdate = window.dash_clientside.no_update;
      if (!playing) {
        return [noUpdate, noUpdate];
      }
      const inc = Math.max(1, Math.round((speed * interval) / 1000));
      const next = (value === null || value === undefined ? min : value) + inc;
      if (next >= max) {
        return [max, false];
      }
      return [next, noUpdate];
    },
    /* slow speeds tick less often (at least one step per tick), fast ones every min_ms */
    play_interval: function (speed, min_ms) {
      return Math.max(min_ms, Math.round(1000 / Math.max(speed, 1e-9)));
    },
    /* a finding's "show" button: scroll to the panel holding its evidence (the fifth element
       of the button's index; event rows have four and stay where they are) */
    scroll_to_finding: function () {
      const noUpdate = window.dash_clientside.no_update;
      const trig = (window.dash_clientside.callback_context.triggered || [])[0];
      if (!trig || !trig.value) { return noUpdate; }
      const id = JSON.parse(trig.prop_id.slice(0, trig.prop_id.lastIndexOf(".")));
      const target = JSON.parse(id.index)[4];
      const el = target && document.getElementById("panel-" + target);
      if (!el || el.offsetParent === null) { return noUpdate; }
      el.scrollIntoView({block: "start"});
      return target;
    },
    play_state: function (playing) {
      return [!playing, playing ? "❚❚ Pause" : "▶ Play"];
    },
  },
});
