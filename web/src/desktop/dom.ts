// A tiny element builder: the desktop needs no framework. Props starting with "on" are
// listeners; value/checked/disabled/hidden/selected are set as properties (so they
// reflect what the page shows); everything else is an attribute (aria-*, role, ...).
export type Child = Node | string | number | null | undefined | false | Child[];

type Props = Record<string, unknown>;

const PROPS = new Set(["value", "checked", "disabled", "hidden", "selected", "open", "textContent"]);

export function h<K extends keyof HTMLElementTagNameMap>(tag: K, props?: Props | null, ...children: Child[]): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  if (props) {
    for (const [k, v] of Object.entries(props)) {
      if (v === undefined || v === null || v === false) {
        if (PROPS.has(k)) (el as unknown as Record<string, unknown>)[k] = v === false ? false : (el as unknown as Record<string, unknown>)[k];
        continue;
      }
      if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v as EventListener);
      else if (PROPS.has(k)) (el as unknown as Record<string, unknown>)[k] = v;
      else if (k === "class") el.className = String(v);
      else el.setAttribute(k, v === true ? "" : String(v));
    }
  }
  append(el, children);
  return el;
}

export function append(el: Node, children: Child[]): void {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.appendChild(typeof c === "object" ? c : document.createTextNode(String(c)));
  }
}

/**
 * Replaces an element's children. A field that had the keyboard focus and is drawn
 * again (the same id) keeps it, with its caret: a redraw for a hub event must not take
 * the agent's typing away mid-word.
 */
export function fill(el: Element, ...children: Child[]): void {
  const active = document.activeElement as HTMLInputElement | null;
  const id = active && active !== el && el.contains(active) ? active.id : "";
  const caret = id && "selectionStart" in active! ? [active!.selectionStart, active!.selectionEnd] : null;
  el.replaceChildren();
  append(el, children);
  if (!id) return;
  const again = document.getElementById(id) as HTMLInputElement | null;
  if (!again || !el.contains(again)) return;
  again.focus();
  if (caret && caret[0] !== null && "setSelectionRange" in again) {
    try {
      again.setSelectionRange(caret[0], caret[1]);
    } catch {
      // Inputs of some types have no selection.
    }
  }
}

let seq = 0;
/** A page-unique id, for label/aria wiring. */
export function uid(prefix: string): string {
  seq += 1;
  return `${prefix}-${seq}`;
}

/** Characters as the hub counts them: Unicode code points, not UTF-16 units or bytes. */
export function charCount(s: string): number {
  let n = 0;
  for (const _ of s) n += 1;
  return n;
}
