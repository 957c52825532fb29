// Icons as SVG elements built in script (the CSP allows no inline markup styles and the
// machine may have no emoji font): a folder (Open), a clock (Recent), a magnifier
// (Search), a document (the request) and a warning sign (the caution notice).
const PATHS: Record<string, string> = {
  open: "M1.5 3.5h5l1.5 1.5h6.5v8.5h-13z",
  recent: "M8 1.5a6.5 6.5 0 1 0 0 13a6.5 6.5 0 1 0 0-13zM8 4.5v4l2.5 1.5",
  search: "M6.5 1.5a5 5 0 1 0 0 10a5 5 0 1 0 0-10zM10 10l4.5 4.5",
  request: "M3.5 1.5h6l3 3v10h-9zM9.5 1.5v3h3M5.5 8h5M5.5 10.5h5",
  warn: "M8 1.5l7 12.5h-14zM8 6v4M8 11.5v1",
};

export function icon(name: keyof typeof PATHS | string): SVGSVGElement {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 16 16");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("focusable", "false");
  svg.setAttribute("class", `ico ico-${name}`);
  const path = document.createElementNS(ns, "path");
  path.setAttribute("d", PATHS[name] ?? "");
  svg.appendChild(path);
  return svg;
}
