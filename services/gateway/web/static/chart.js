// Small SVG charts drawn here (no library): lines over time, optionally stacked areas.
// A null value is a gap: nothing was measured then.

import { h, s } from "./dom.js";

const W = 360;
const H = 170;
const PAD = { left: 34, right: 8, top: 8, bottom: 20 };

function niceMax(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) if (step * power >= value) return step * power;
  return 10 * power;
}

function label(value) {
  if (value >= 1000) return `${(value / 1000).toFixed(value >= 10000 ? 0 : 1)}k`;
  if (Number.isInteger(value)) return String(value);
  return value >= 10 ? value.toFixed(0) : String(Number(value.toPrecision(2)));
}

function millis(at) {
  // The series gives unix seconds; an ISO string is taken too.
  return typeof at === "number" ? at * 1000 : Date.parse(at);
}

function clock(when, long) {
  const at = new Date(millis(when));
  if (Number.isNaN(at.getTime())) return "";
  const hh = String(at.getHours()).padStart(2, "0");
  const mm = String(at.getMinutes()).padStart(2, "0");
  return long ? `${at.getDate()}/${at.getMonth() + 1} ${hh}:${mm}` : `${hh}:${mm}`;
}

/**
 * A chart of `points` (oldest first). `series`: [{key, label, cls}]; `stacked`: areas summed
 * bottom-up; `unit` is written after the axis' top value.
 */
export function chart({ title, points, series, stacked = false, unit = "", id }) {
  const n = points.length;
  const x = (i) => PAD.left + (n <= 1 ? 0 : (i * (W - PAD.left - PAD.right)) / (n - 1));
  const values = points.map((p) => series.map((se) => (typeof p[se.key] === "number" ? p[se.key] : null)));
  let top = 0;
  for (const row of values) {
    const total = stacked ? row.reduce((a, v) => a + (v ?? 0), 0) : Math.max(0, ...row.map((v) => v ?? 0));
    top = Math.max(top, total);
  }
  top = niceMax(top);
  const y = (v) => H - PAD.bottom - (v / top) * (H - PAD.top - PAD.bottom);
  const svg = s("svg", {
    viewBox: `0 0 ${W} ${H}`,
    class: "chart",
    role: "img",
    "aria-label": title,
  });
  for (const fraction of [0, 0.5, 1]) {
    const at = y(top * fraction);
    svg.append(
      s("line", { x1: PAD.left, x2: W - PAD.right, y1: at, y2: at, class: "grid" }),
      s("text", { x: PAD.left - 6, y: at + 4, class: "axis", "text-anchor": "end" }, label(top * fraction)),
    );
  }
  if (n > 1) {
    const long = millis(points[n - 1].at) - millis(points[0].at) > 6 * 3600 * 1000;
    for (const i of [0, Math.floor((n - 1) / 2), n - 1]) {
      svg.append(
        s("text", { x: x(i), y: H - 6, class: "axis", "text-anchor": i === 0 ? "start" : i === n - 1 ? "end" : "middle" }, clock(points[i].at, long)),
      );
    }
  }
  const base = new Array(n).fill(0);
  series.forEach((se, k) => {
    // Split into runs of measured points: a gap in the data is a gap in the line.
    let run = [];
    const runs = [];
    values.forEach((row, i) => {
      if (row[k] === null) {
        if (run.length) runs.push(run);
        run = [];
      } else run.push(i);
    });
    if (run.length) runs.push(run);
    for (const indexes of runs) {
      if (stacked && indexes.length === 1) {
        // One measured step has no width as an area: a bar of its height shows it.
        const i = indexes[0];
        const top = y(base[i] + values[i][k]);
        const height = Math.max(0, y(base[i]) - top);
        svg.append(s("rect", { x: x(i) - 2, y: top, width: 4, height, class: `area ${se.cls}` }));
      } else if (stacked) {
        const upper = indexes.map((i) => [x(i), y(base[i] + values[i][k])]);
        const lower = indexes.map((i) => [x(i), y(base[i])]).reverse();
        const d = [...upper, ...lower].map(([px, py], j) => `${j ? "L" : "M"}${px.toFixed(1)},${py.toFixed(1)}`).join("");
        svg.append(s("path", { d: `${d}Z`, class: `area ${se.cls}` }));
      } else if (indexes.length === 1) {
        const i = indexes[0];
        svg.append(s("circle", { cx: x(i), cy: y(values[i][k]), r: 2.5, class: `dot ${se.cls}` }));
      } else {
        const d = indexes.map((i, j) => `${j ? "L" : "M"}${x(i).toFixed(1)},${y(values[i][k]).toFixed(1)}`).join("");
        svg.append(s("path", { d, class: `line ${se.cls}` }));
      }
    }
    if (stacked) values.forEach((row, i) => (base[i] += row[k] ?? 0));
  });
  const legend = h(
    "p",
    { class: "legend" },
    series.map((se) => h("span", { class: `key ${se.cls}` }, se.label)),
    unit ? h("span", { class: "muted" }, `(${unit})`) : null,
  );
  return h("figure", { class: "chart-box", id }, h("figcaption", {}, title), svg, legend);
}
