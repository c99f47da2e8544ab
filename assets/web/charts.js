// Small canvas charts: time series with gaps, and a heat strip for many
// series (one row per CPU core). Colours come from the page's CSS
// variables, so the theme lives in style.css alone.

function css(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

/** Sizes the canvas backing store to its box and the screen's pixel ratio. */
function prepare(canvas) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth;
  const height = canvas.clientHeight;
  if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
  }
  const context = canvas.getContext("2d");
  context.setTransform(ratio, 0, 0, ratio, 0, 0);
  context.clearRect(0, 0, width, height);
  return { context, width, height };
}

const PAD = { left: 34, right: 4, top: 7, bottom: 14 };

function clock(seconds) {
  const date = new Date(seconds * 1000);
  return date.toTimeString().slice(0, 5);
}

/**
 * Draws `series` ([{values, colour}], values aligned with `times`, null for
 * a gap) over [from, to] seconds, 0 to `max` on the y axis.
 */
export function lineChart(canvas, times, series, { from, to, max = 100, unit = "%" }) {
  const { context: g, width, height } = prepare(canvas);
  const plotW = width - PAD.left - PAD.right;
  const plotH = height - PAD.top - PAD.bottom;
  const x = (t) => PAD.left + ((t - from) / Math.max(1, to - from)) * plotW;
  const y = (v) => PAD.top + plotH - (Math.min(v, max) / max) * plotH;
  g.font = "10px system-ui, sans-serif";
  g.strokeStyle = css("--grid");
  g.fillStyle = css("--muted");
  g.lineWidth = 1;
  g.textBaseline = "middle";
  for (const fraction of [0, 0.5, 1]) {
    const yy = Math.round(y(max * fraction)) + 0.5;
    g.beginPath();
    g.moveTo(PAD.left, yy);
    g.lineTo(width - PAD.right, yy);
    g.stroke();
    g.textAlign = "right";
    g.fillText(Math.round(max * fraction) + unit, PAD.left - 3, yy);
  }
  g.textAlign = "left";
  g.textBaseline = "alphabetic";
  g.fillText(clock(from), PAD.left, height - 2);
  g.textAlign = "right";
  g.fillText(clock(to), width - PAD.right, height - 2);
  for (const { values, colour, fill } of series) {
    g.strokeStyle = colour;
    g.lineWidth = 1.5;
    g.beginPath();
    let drawing = false;
    let first = null;
    let last = null;
    for (let i = 0; i < times.length; i++) {
      const v = values[i];
      const t = times[i];
      // A missing sample, or a hole of more than 5 s, is a gap.
      const gap = v == null || (i > 0 && t - times[i - 1] > 5);
      if (v == null) {
        drawing = false;
        continue;
      }
      if (t < from) continue;
      if (!drawing || gap) {
        g.moveTo(x(t), y(v));
        drawing = true;
        if (first == null) first = t;
      } else {
        g.lineTo(x(t), y(v));
      }
      last = t;
    }
    g.stroke();
    if (fill && first != null && times.length > 1) {
      g.globalAlpha = 0.15;
      g.fillStyle = colour;
      g.beginPath();
      let started = false;
      for (let i = 0; i < times.length; i++) {
        const v = values[i];
        if (v == null || times[i] < from) continue;
        if (!started) {
          g.moveTo(x(times[i]), y(0));
          started = true;
        }
        g.lineTo(x(times[i]), y(v));
      }
      g.lineTo(x(last), y(0));
      g.closePath();
      g.fill();
      g.globalAlpha = 1;
    }
  }
}

/** Draws one row per series (e.g. per core), shaded by value 0-100. */
export function heatStrip(canvas, times, rows, { from, to }) {
  const { context: g, width, height } = prepare(canvas);
  const plotW = width - PAD.left - PAD.right;
  const plotH = height - PAD.top - PAD.bottom;
  if (!rows.length) return;
  const rowH = plotH / rows.length;
  const x = (t) => PAD.left + ((t - from) / Math.max(1, to - from)) * plotW;
  const hot = css("--accent");
  g.fillStyle = css("--grid");
  g.fillRect(PAD.left, PAD.top, plotW, plotH);
  for (let i = 0; i < times.length; i++) {
    const t = times[i];
    if (t < from) continue;
    const next = i + 1 < times.length ? Math.min(times[i + 1], t + 5) : t + 1;
    const x0 = x(t);
    const w = Math.max(1, x(next) - x0);
    rows.forEach((values, r) => {
      const v = values[i];
      if (v == null) return;
      g.globalAlpha = Math.max(0.04, Math.min(1, v / 100));
      g.fillStyle = hot;
      g.fillRect(x0, PAD.top + r * rowH, w, Math.max(1, rowH - (rowH > 3 ? 1 : 0)));
    });
  }
  g.globalAlpha = 1;
  g.font = "10px system-ui, sans-serif";
  g.fillStyle = css("--muted");
  g.textAlign = "right";
  g.textBaseline = "middle";
  g.fillText("0", PAD.left - 3, PAD.top + rowH / 2);
  if (rows.length > 1) g.fillText(String(rows.length - 1), PAD.left - 3, PAD.top + plotH - rowH / 2);
  g.textAlign = "left";
  g.textBaseline = "alphabetic";
  g.fillText(clock(from), PAD.left, height - 2);
  g.textAlign = "right";
  g.fillText(clock(to), width - PAD.right, height - 2);
}
