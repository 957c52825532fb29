// The sign-in page: paste a token, or, on the loopback demo, pick a demo agent
// (`GET /v1/demo/agents` answers 404 anywhere else).
import type { DemoAgents } from "../../../clients/typescript/src/index.ts";
import { fill, h, uid } from "./dom.ts";
import { LANGUAGES, changeLanguage, lang, t, type Lang } from "./i18n.ts";

type DemoAgent = DemoAgents["agents"][number];

export function languageSwitch(onChange: () => void): HTMLElement {
  const id = uid("lang");
  return h(
    "div",
    { class: "lang" },
    h("label", { for: id }, t("language")),
    h(
      "select",
      {
        id,
        onchange: (e: Event) => {
          changeLanguage((e.target as HTMLSelectElement).value as Lang);
          onChange();
        },
      },
      LANGUAGES.map((l) => h("option", { value: l.tag, selected: l.tag === lang(), lang: l.tag }, l.label)),
    ),
  );
}

export function showSignIn(root: HTMLElement, message: string | undefined, done: (token: string) => void): void {
  let demo: DemoAgent[] = [];
  // The token field of the page as last drawn: a redraw keeps what was typed in it, and
  // once it is gone (signed in, or another sign-in page drawn) this page draws no more.
  let tokenId = "";
  const field = () => (tokenId ? (document.getElementById(tokenId) as HTMLTextAreaElement | null) : null);
  const render = () => {
    const old = field();
    const typed = old?.value ?? "";
    // Focus and caret go with the text (the agent may be typing when the list arrives).
    const caret = old && document.activeElement === old ? [old.selectionStart, old.selectionEnd] : null;
    tokenId = uid("token");
    const hintId = uid("hint");
    fill(
      root,
      h(
        "header",
        { class: "top" },
        h("span", { class: "brand" }, t("appName")),
        h("span", { class: "spacer" }),
        languageSwitch(render),
      ),
      h(
        "main",
        { class: "signin", id: "main" },
        h("h1", null, t("signInTitle")),
        message ? h("p", { class: "notice warn", role: "alert" }, message) : null,
        demo.length
          ? h(
              "section",
              { "aria-labelledby": "demo-h", class: "card" },
              h("h2", { id: "demo-h" }, t("signInDemo")),
              h("p", null, t("signInDemoHint")),
              h(
                "ul",
                { class: "demo-agents" },
                demo.map((a) =>
                  h("li", null, h("button", { type: "button", class: "primary", "data-agent": a.agent_id, onclick: () => done(a.token) }, t("signInAs", { name: a.name }))),
                ),
              ),
            )
          : null,
        h(
          "form",
          {
            class: "card",
            onsubmit: (e: Event) => {
              e.preventDefault();
              const v = (document.getElementById(tokenId) as HTMLTextAreaElement).value.trim();
              if (v) done(v);
            },
          },
          h("label", { for: tokenId }, t("signInToken")),
          h("textarea", { id: tokenId, rows: 4, required: true, "aria-describedby": hintId, spellcheck: "false", autocomplete: "off" }),
          h("p", { id: hintId, class: "hint" }, t("signInTokenHint")),
          h("button", { type: "submit", class: "primary" }, t("signIn")),
        ),
      ),
    );
    const f = field();
    if (f && typed) f.value = typed;
    if (f && caret) {
      f.focus();
      f.setSelectionRange(caret[0], caret[1]);
    }
  };
  render();
  fetch("/v1/demo/agents")
    .then((r) => (r.ok ? r.json() : null))
    .then((body: DemoAgents | null) => {
      // The list came after the page was left (a sign-in, then perhaps a refusal's new
      // sign-in page): drawing this one again would cover what followed it.
      if (!field()) return;
      if (body?.agents?.length) {
        demo = body.agents;
        render();
      }
    })
    .catch(() => {});
}
