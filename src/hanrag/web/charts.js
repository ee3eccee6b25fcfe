// Inline SVG charts (bar and line), built element by element; labels go in as text nodes.

import { h, s } from "./dom.js";
import { formatNumber } from "./i18n.js";

const COLORS = ["#2563eb", "#f97316", "#16a34a", "#9333ea", "#dc2626", "#0891b2"];
const WIDTH = 560;
const HEIGHT = 280;
const PAD = { top: 18, right: 30, bottom: 52, left: 64 };

/** Counts: a maximum that 4 ticks divide into whole numbers. */
function integerMax(value) {
  const nice = niceMax(value);
  return Math.max(4, Math.ceil(nice / 4) * 4);
}

function niceMax(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) {
    if (value <= step * power) return step * power;
  }
  return 10 * power;
}

function shorten(label, max = 12) {
  const value = String(label ?? "");
  return value.length > max ? `${value.slice(0, max - 1)}…` : value;
}

function axes(svg, max, labels, plotW, plotH, xOf) {
  const ticks = 4;
  for (let t = 0; t <= ticks; t += 1) {
    const value = (max / ticks) * t;
    const y = PAD.top + plotH - (plotH * t) / ticks;
    svg.appendChild(s("line", { x1: PAD.left, x2: PAD.left + plotW, y1: y, y2: y, class: "chart-grid" }));
    svg.appendChild(s("text", { x: PAD.left - 8, y: y + 5, "text-anchor": "end", class: "chart-tick" }, formatNumber(value)));
  }
  const every = Math.max(1, Math.ceil(labels.length / 7));
  labels.forEach((label, index) => {
    if (index % every !== 0 && index !== labels.length - 1) return;
    svg.appendChild(
      s("text", { x: xOf(index), y: PAD.top + plotH + 24, "text-anchor": "middle", class: "chart-tick" }, shorten(label)),
    );
  });
}

function legend(series) {
  if (series.length < 2) return null;
  return h(
    "ul",
    { class: "chart-legend" },
    series.map((serie, index) =>
      h("li", null, h("span", { class: "swatch", style: null, dataset: { color: String(index % COLORS.length) } }), serie.name),
    ),
  );
}

/**
 * A chart: {type: "bar"|"line", title, labels: [...], series: [{name, values: [...]}]}.
 * Returns a <figure> with the SVG (role=img, described by its title) and a legend.
 */
export function chart({ type, title, labels, series, unit = "" }) {
  const plotW = WIDTH - PAD.left - PAD.right;
  const plotH = HEIGHT - PAD.top - PAD.bottom;
  const values = series.flatMap((serie) => serie.values.map(Number).filter((v) => Number.isFinite(v)));
  const integers = values.every((v) => Number.isInteger(v));
  const max = integers ? integerMax(Math.max(0, ...values)) : niceMax(Math.max(0, ...values));
  const titleId = `chart-${Math.random().toString(36).slice(2, 9)}`;
  const svg = s("svg", {
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
    class: "chart",
    role: "img",
    "aria-labelledby": titleId,
    preserveAspectRatio: "xMidYMid meet",
  });
  const summary = series
    .map((serie) => `${serie.name}: ${labels.map((l, i) => `${l} ${formatNumber(serie.values[i])}${unit}`).join(", ")}`)
    .join("; ");
  svg.appendChild(s("title", { id: titleId }, `${title}. ${summary}`));
  const n = Math.max(1, labels.length);
  const yOf = (v) => PAD.top + plotH - (plotH * Math.max(0, Number(v) || 0)) / max;
  if (type === "line") {
    const xOf = (i) => PAD.left + (n === 1 ? plotW / 2 : (plotW * i) / (n - 1));
    axes(svg, max, labels, plotW, plotH, xOf);
    series.forEach((serie, k) => {
      const color = COLORS[k % COLORS.length];
      const points = serie.values.map((v, i) => `${xOf(i).toFixed(1)},${yOf(v).toFixed(1)}`).join(" ");
      svg.appendChild(s("polyline", { points, fill: "none", stroke: color, "stroke-width": 2.5, class: "chart-line" }));
      serie.values.forEach((v, i) => {
        const dot = s("circle", { cx: xOf(i), cy: yOf(v), r: 3.5, fill: color });
        dot.appendChild(s("title", null, `${labels[i]}: ${formatNumber(v)}${unit}`));
        svg.appendChild(dot);
      });
    });
  } else {
    const band = plotW / n;
    const xOf = (i) => PAD.left + band * i + band / 2;
    axes(svg, max, labels, plotW, plotH, xOf);
    const inner = Math.min(48, (band * 0.8) / Math.max(1, series.length));
    series.forEach((serie, k) => {
      const color = COLORS[k % COLORS.length];
      serie.values.forEach((v, i) => {
        const x = xOf(i) - (inner * series.length) / 2 + inner * k;
        const y = yOf(v);
        const bar = s("rect", { x, y, width: Math.max(1, inner - 2), height: PAD.top + plotH - y, fill: color, rx: 2 });
        bar.appendChild(s("title", null, `${labels[i]} · ${serie.name}: ${formatNumber(v)}${unit}`));
        svg.appendChild(bar);
      });
    });
  }
  return h("figure", { class: "chart-figure" }, svg, legend(series), h("figcaption", null, title));
}

/** The table route's chart ({type, title, x, y}) over its columns and rows, or null. */
export function tableChart(table) {
  const spec = table && table.chart;
  if (!spec || !["bar", "line"].includes(spec.type) || !Array.isArray(spec.y) || !spec.y.length) return null;
  const columns = table.columns || [];
  const rows = (table.rows || []).slice(0, 60);
  const xIndex = spec.x ? columns.indexOf(spec.x) : -1;
  const labels = rows.map((row, i) => (xIndex >= 0 ? row[xIndex] : String(i + 1)));
  const series = spec.y
    .map((name) => ({ name, index: columns.indexOf(name) }))
    .filter((serie) => serie.index >= 0)
    .map((serie) => ({ name: serie.name, values: rows.map((row) => Number(row[serie.index]) || 0) }));
  if (!series.length) return null;
  return chart({ type: spec.type, title: spec.title || table.title || "", labels, series });
}
