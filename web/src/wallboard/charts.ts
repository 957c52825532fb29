// The day's charts, drawn as inline SVG (no chart library; the CSP allows no inline
// styles, so everything is attributes and classes): waiting tasks per 15-minute bucket
// as bars, the service level as a line against its target. Each chart is one image
// with a text alternative that says what it shows.
import type { StatsSeriesPoint } from "../../../clients/typescript/src/index.ts";

const NS = "http://www.w3.org/2000/svg";
const W = 380;
const H = 110;
const PAD_L = 34;
const PAD_B = 18;
const PAD_T = 8;
/** The day the charts span: its start (ms), its 15-minute buckets (96, or 92 / 100 on a DST change), and how to name an hour. */
export interface Day {
  start: number;
  buckets: number;
  hour: (ms: number) => string;
}

function el(tag: string, attrs: Record<string, string | number>, text?: string): SVGElement {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

function frame(label: string, cls: string): SVGSVGElement {
  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": label, class: `chart ${cls}`, focusable: "false" }) as SVGSVGElement;
  svg.appendChild(el("title", {}, label));
  return svg;
}

const plotW = W - PAD_L - 4;
const plotH = H - PAD_T - PAD_B;
const x = (i: number, d: Day) => PAD_L + (i / d.buckets) * plotW;
const y = (v: number, max: number) => PAD_T + plotH - (max > 0 ? (v / max) * plotH : 0);

/** Hour marks every 6 hours along the bottom, from the day's start, in the hub's timezone. */
function hours(svg: SVGSVGElement, d: Day): void {
  svg.appendChild(el("line", { x1: PAD_L, y1: PAD_T + plotH, x2: W - 4, y2: PAD_T + plotH, class: "axis" }));
  for (let i = 0; i <= d.buckets; i += 24) {
    const anchor = i === 0 ? "start" : i + 24 > d.buckets ? "end" : "middle";
    svg.appendChild(el("text", { x: x(i, d), y: H - 4, class: "tick", "text-anchor": anchor }, d.hour(d.start + i * 900_000)));
  }
}

/** Waiting tasks at each bucket's end, as bars. */
export function waitingChart(series: StatsSeriesPoint[], label: string, d: Day): SVGSVGElement {
  const svg = frame(label, "waiting");
  const max = Math.max(1, ...series.map((b) => b.waiting));
  svg.appendChild(el("text", { x: PAD_L - 4, y: PAD_T + 8, class: "tick", "text-anchor": "end" }, String(max)));
  svg.appendChild(el("text", { x: PAD_L - 4, y: PAD_T + plotH, class: "tick", "text-anchor": "end" }, "0"));
  const bw = Math.max(1, plotW / d.buckets - 1);
  series.slice(0, d.buckets).forEach((b, i) => {
    if (b.waiting <= 0) return;
    const top = y(b.waiting, max);
    svg.appendChild(el("rect", { x: x(i, d), y: top, width: bw, height: PAD_T + plotH - top, class: "bar", "data-waiting": b.waiting }));
  });
  hours(svg, d);
  return svg;
}

/** The service level of each bucket (gaps where nothing was answered or abandoned), and the target. */
export function serviceLevelChart(series: StatsSeriesPoint[], target: number, label: string, d: Day): SVGSVGElement {
  const svg = frame(label, "sl");
  svg.appendChild(el("text", { x: PAD_L - 4, y: PAD_T + 8, class: "tick", "text-anchor": "end" }, "100%"));
  svg.appendChild(el("text", { x: PAD_L - 4, y: PAD_T + plotH, class: "tick", "text-anchor": "end" }, "0%"));
  svg.appendChild(el("line", { x1: PAD_L, x2: W - 4, y1: y(target, 1), y2: y(target, 1), class: "target" }));
  let path = "";
  let pen = false;
  series.slice(0, d.buckets).forEach((b, i) => {
    const v = b.service_level;
    if (v === null || v === undefined || Number.isNaN(v)) {
      pen = false;
      return;
    }
    const px = x(i + 0.5, d).toFixed(1);
    const py = y(Math.min(1, Math.max(0, v)), 1).toFixed(1);
    path += `${pen ? "L" : "M"}${px} ${py}`;
    pen = true;
    svg.appendChild(el("circle", { cx: px, cy: py, r: 2, class: v >= target ? "dot ok" : "dot bad" }));
  });
  if (path) svg.insertBefore(el("path", { d: path, class: "line" }), svg.querySelector("circle"));
  hours(svg, d);
  return svg;
}
