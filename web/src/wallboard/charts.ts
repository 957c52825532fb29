// The day's charts, drawn as inline SVG (no chart library; the CSP allows no inline
// styles, so everything is attributes and classes): waiting tasks per 15-minute bucket
// as bars, the service level as a line against its target. Each chart is one image
// with a text alternative that says what it shows.
import type { StatsBucket } from "../../../clients/typescript/src/index.ts";

const NS = "http://www.w3.org/2000/svg";
const W = 480;
const H = 120;
const PAD_L = 34;
const PAD_B = 18;
const PAD_T = 8;
/** A day of 15-minute buckets. */
const BUCKETS = 96;

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
const x = (i: number) => PAD_L + (i / BUCKETS) * plotW;
const y = (v: number, max: number) => PAD_T + plotH - (max > 0 ? (v / max) * plotH : 0);

/** Hour marks every 6 hours along the bottom, from the day's start in the hub's timezone. */
function hours(svg: SVGSVGElement, series: StatsBucket[], fmtHour: (iso: string) => string): void {
  svg.appendChild(el("line", { x1: PAD_L, y1: PAD_T + plotH, x2: W - 4, y2: PAD_T + plotH, class: "axis" }));
  for (let i = 0; i <= BUCKETS; i += 24) {
    const b = series[i];
    const label = b ? fmtHour(b.start) : i === 0 && series[0] ? fmtHour(series[0].start) : `${(i / 4) | 0}h`;
    svg.appendChild(el("text", { x: x(i), y: H - 4, class: "tick", "text-anchor": i === 0 ? "start" : i === BUCKETS ? "end" : "middle" }, label));
  }
}

/** Waiting tasks at each bucket's end, as bars. */
export function waitingChart(series: StatsBucket[], label: string, fmtHour: (iso: string) => string): SVGSVGElement {
  const svg = frame(label, "waiting");
  const max = Math.max(1, ...series.map((b) => b.waiting));
  svg.appendChild(el("text", { x: PAD_L - 4, y: PAD_T + 8, class: "tick", "text-anchor": "end" }, String(max)));
  svg.appendChild(el("text", { x: PAD_L - 4, y: PAD_T + plotH, class: "tick", "text-anchor": "end" }, "0"));
  const bw = Math.max(1, plotW / BUCKETS - 1);
  series.slice(0, BUCKETS).forEach((b, i) => {
    if (b.waiting <= 0) return;
    const top = y(b.waiting, max);
    svg.appendChild(el("rect", { x: x(i), y: top, width: bw, height: PAD_T + plotH - top, class: "bar", "data-waiting": b.waiting }));
  });
  hours(svg, series, fmtHour);
  return svg;
}

/** The service level of each bucket (gaps where nothing was answered or abandoned), and the target. */
export function serviceLevelChart(series: StatsBucket[], target: number, label: string, fmtHour: (iso: string) => string): SVGSVGElement {
  const svg = frame(label, "sl");
  svg.appendChild(el("text", { x: PAD_L - 4, y: PAD_T + 8, class: "tick", "text-anchor": "end" }, "100%"));
  svg.appendChild(el("text", { x: PAD_L - 4, y: PAD_T + plotH, class: "tick", "text-anchor": "end" }, "0%"));
  svg.appendChild(el("line", { x1: PAD_L, x2: W - 4, y1: y(target, 1), y2: y(target, 1), class: "target" }));
  let d = "";
  let pen = false;
  series.slice(0, BUCKETS).forEach((b, i) => {
    const v = b.service_level;
    if (v === null || v === undefined || Number.isNaN(v)) {
      pen = false;
      return;
    }
    const px = x(i + 0.5).toFixed(1);
    const py = y(Math.min(1, Math.max(0, v)), 1).toFixed(1);
    d += `${pen ? "L" : "M"}${px} ${py}`;
    pen = true;
    svg.appendChild(el("circle", { cx: px, cy: py, r: 2, class: v >= target ? "dot ok" : "dot bad" }));
  });
  if (d) svg.insertBefore(el("path", { d, class: "line" }), svg.querySelector("circle"));
  hours(svg, series, fmtHour);
  return svg;
}
