// Entry: choose the language, then the sign-in page or the desktop.
import { LANGUAGES, LANG_KEY, pickLanguage, setLanguage, type Lang } from "./i18n.ts";
import { showSignIn } from "./signin.ts";
import { startDesktop } from "./app.ts";

const TOKEN_KEY = "switchboard.token";

function initialLanguage(): Lang {
  const saved = localStorage.getItem(LANG_KEY);
  if (saved && LANGUAGES.some((l) => l.tag === saved)) return saved as Lang;
  return pickLanguage(navigator.languages?.length ? navigator.languages : [navigator.language]);
}

function signOut(message?: string): void {
  sessionStorage.removeItem(TOKEN_KEY);
  boot(message);
}

function boot(message?: string): void {
  const root = document.getElementById("app");
  if (!root) return;
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) {
    // A renewed token replaces the stored one: a reload after the first one's end
    // signs in with the new.
    startDesktop(root, token, signOut, (tok) => sessionStorage.setItem(TOKEN_KEY, tok));
  } else {
    showSignIn(root, message, (tok) => {
      // The token lives for this tab only (sessionStorage): closing the tab signs out.
      sessionStorage.setItem(TOKEN_KEY, tok);
      boot();
    });
  }
}

setLanguage(initialLanguage());
boot();
