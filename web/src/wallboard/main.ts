// The wallboard's entry: choose the language (the desktop's choice, shared), then the
// sign-in form or the board.
import { fill, h, uid } from "../desktop/dom.ts";
import { LANGUAGES, LANG_KEY, pickLanguage, setLanguage, t, type Lang } from "../desktop/i18n.ts";
import { languageSwitch } from "../desktop/signin.ts";
import { startWallboard } from "./app.ts";
import { w } from "./i18n.ts";

const TOKEN_KEY = "switchboard.supervisorToken";

function initialLanguage(): Lang {
  const saved = localStorage.getItem(LANG_KEY);
  if (saved && LANGUAGES.some((l) => l.tag === saved)) return saved as Lang;
  return pickLanguage(navigator.languages?.length ? navigator.languages : [navigator.language]);
}

function signOut(message?: string): void {
  sessionStorage.removeItem(TOKEN_KEY);
  boot(message);
}

function showSignIn(root: HTMLElement, message: string | undefined, done: (token: string) => void): void {
  const render = () => {
    document.title = w("title");
    const tokenId = uid("token");
    const hintId = uid("hint");
    fill(
      root,
      h("header", { class: "top" }, h("span", { class: "brand" }, w("title")), h("span", { class: "spacer" }), languageSwitch(render)),
      h(
        "main",
        { class: "signin", id: "main" },
        h("h1", null, w("signInTitle")),
        message ? h("p", { class: "notice warn", role: "alert" }, message) : null,
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
          h("label", { for: tokenId }, w("signInToken")),
          h("textarea", { id: tokenId, rows: 4, required: true, "aria-describedby": hintId, spellcheck: "false", autocomplete: "off" }),
          h("p", { id: hintId, class: "hint" }, w("signInTokenHint")),
          h("button", { type: "submit", class: "primary" }, t("signIn")),
        ),
      ),
    );
  };
  render();
}

function boot(message?: string): void {
  const root = document.getElementById("app");
  if (!root) return;
  document.documentElement.classList.remove("tv");
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) {
    startWallboard(root, token, signOut);
  } else {
    showSignIn(root, message, (tok) => {
      // This tab only (sessionStorage), as the desktop keeps its token.
      sessionStorage.setItem(TOKEN_KEY, tok);
      boot();
    });
  }
}

setLanguage(initialLanguage());
boot();
