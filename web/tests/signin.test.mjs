// The loopback demo's sign-in (pick a demo agent), the languages, and what the hub
// serves with the page (CSP, content types, ETags).
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { axe, integration, launch, openPage, shot, signIn, startHub, token } from "./harness.mjs";

let demo;
let browser;

before(async () => {
  demo = await startHub(null); // no configuration file, on loopback: the demo setup
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await demo?.stop();
});

test("the loopback demo lists its agents; picking one signs in", async () => {
  const { page, context, problems } = await openPage(browser, demo);
  await page.getByRole("heading", { name: "Demo agents" }).waitFor();
  const names = await page.getByRole("button", { name: /^Sign in as / }).allTextContents();
  assert.deepEqual(names, ["Alice Moreau", "João Araújo", "Elin Öberg", "Đorđe Đorđević", "Giulia Ricci", "Sam Lee"].map((n) => `Sign in as ${n}`));
  assert.deepEqual(await axe(page), []);
  await shot(page, "00-demo-sign-in");
  await page.getByRole("button", { name: "Sign in as Elin Öberg" }).click();
  await page.locator(".who", { hasText: "Elin Öberg" }).waitFor();
  await page.getByTestId("connection").filter({ hasText: "Connected" }).waitFor();
  // The demo's configured reasons reach the status control (with the desktop's
  // configuration, which may answer after the welcome).
  await page.getByTestId("status-select").locator("option", { hasText: "Not Ready: Training" }).waitFor({ state: "attached" });
  const options = await page.getByTestId("status-select").locator("option").allTextContents();
  assert.ok(options.includes("Not Ready: Training"), String(options));
  // Reload keeps the tab signed in; Sign out goes back to the picker.
  await page.reload();
  await page.getByTestId("connection").filter({ hasText: "Connected" }).waitFor();
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByRole("heading", { name: "Demo agents" }).waitFor();
  assert.deepEqual(problems, []);
  await context.close();
});

test("a refused token goes back to the sign-in page, saying why", async () => {
  const { page, context } = await openPage(browser, demo);
  await signIn(page, token("alice", "agent", -60)); // expired a minute ago
  await page.getByRole("alert").filter({ hasText: "The hub refused this token (token_expired). Sign in again." }).waitFor();
  await page.getByRole("heading", { name: "Sign in to the agent desktop" }).waitFor();
  await signIn(page, "not-a-token");
  await page.getByRole("alert").filter({ hasText: "(unauthorized)" }).waitFor();
  await context.close();
});

// The sign-in page draws itself again when the demo list arrives. A list that came late
// once wiped a token typed meanwhile, or covered the page that followed a sign-in (CI saw
// "(unauthorized)" never shown). Here the lists are held and let go in the worst order.
test("a demo list that arrives late keeps what was typed and never covers a later page", async () => {
  const context = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
  // Counts, in the page, the demo lists the page has finished handling: the app's own
  // handler runs in the microtasks after json(), so a timer queued there runs after it.
  await context.addInitScript(() => {
    const orig = window.fetch.bind(window);
    window.__demoDone = 0;
    window.fetch = (input, init) =>
      orig(input, init).then((r) => {
        if (String(input).includes("/v1/demo/agents")) {
          const json = r.json.bind(r);
          r.json = () =>
            json().then((v) => {
              setTimeout(() => (window.__demoDone += 1), 0);
              return v;
            });
        }
        return r;
      });
  });
  const page = await context.newPage();
  await page.goto(demo.base + "/");
  await page.getByRole("heading", { name: "Demo agents" }).waitFor();
  const held = [];
  const arrived = [];
  await context.route("**/v1/demo/agents", (route) => {
    held.push(route);
    arrived.shift()?.();
  });
  const nextHeld = (n) => new Promise((resolve) => (held.length >= n ? resolve() : arrived.push(resolve)));
  const handled = (n) => page.waitForFunction((k) => window.__demoDone >= k, n);

  // A refused token: a new sign-in page, its list held. Typed into meanwhile, then the
  // list arrives: the page is drawn again with the list, and the typing is still there.
  await signIn(page, token("alice", "agent", -60));
  await page.getByRole("alert").filter({ hasText: "(token_expired)" }).waitFor();
  await nextHeld(1);
  const before = await page.evaluate(() => window.__demoDone);
  await page.getByLabel("Agent token").fill("not-a-token");
  await held[0].continue();
  await handled(before + 1);
  await page.getByRole("heading", { name: "Demo agents" }).waitFor();
  assert.equal(await page.getByLabel("Agent token").inputValue(), "not-a-token");

  // Signed in with it (refused: a third page), while the page after the next refusal
  // holds its list: that list let go first, then the older page's.
  await signIn(page, token("alice", "agent", -60));
  await page.getByRole("alert").filter({ hasText: "(token_expired)" }).waitFor();
  await nextHeld(2);
  await signIn(page, "not-a-token");
  await page.getByRole("alert").filter({ hasText: "(unauthorized)" }).waitFor();
  await nextHeld(3);
  await held[2].continue();
  await handled(before + 2);
  await held[1].continue();
  await handled(before + 3);
  // The older page did not draw itself over the newer one.
  await page.getByRole("alert").filter({ hasText: "(unauthorized)" }).waitFor({ timeout: 1000 });
  assert.equal(await page.getByRole("alert").count(), 1);
  await context.close();
});

test("a second desktop of the same agent takes over; the first says so and stops", async () => {
  const one = await openPage(browser, demo);
  await one.page.locator("[data-agent=sam]").click();
  await one.page.getByTestId("connection").filter({ hasText: "Connected" }).waitFor();
  const two = await openPage(browser, demo);
  await two.page.locator("[data-agent=sam]").click();
  await two.page.getByTestId("connection").filter({ hasText: "Connected" }).waitFor();
  await one.page.getByRole("alert").filter({ hasText: "Another desktop took over this session." }).waitFor();
  await one.page.getByRole("heading", { name: "Demo agents" }).waitFor();
  // The second stays connected: the first did not fight back by reconnecting.
  await two.page.locator(".who", { hasText: "Sam Lee" }).waitFor();
  assert.equal(await two.page.getByTestId("connection").textContent(), "Connected");
  await one.context.close();
  await two.context.close();
});

test("the browser's language is the default; the switch changes it, dates and numbers follow", async () => {
  const cases = [
    ["pt-BR", "Entrar na área de trabalho do agente", "Status", "Estado"],
    ["sv-SE", "Logga in på agentens skrivbord", "Status", "Status"],
    ["it-IT", "Accedi al desktop dell'agente", "Status", "Stato"],
    ["sr-Latn-RS", "Prijava na radnu površinu agenta", "Status", "Status"],
    ["sr-RS", "Пријава на радну површину агента", "Status", "Статус"],
  ];
  for (const [locale, heading, , status] of cases) {
    const { page, context } = await openPage(browser, demo, { locale });
    await page.getByRole("heading", { name: heading }).waitFor();
    const lang = await page.evaluate(() => document.documentElement.lang);
    assert.ok(locale.startsWith(lang.split("-")[0]), `${locale} -> ${lang}`);
    // Sign in as Giulia and check the status label and a date in that locale.
    await page.locator("[data-agent=giulia]").click();
    await page.getByLabel(status, { exact: true }).waitFor();
    if (locale === "sr-RS") await shot(page, "09-serbian-cyrillic");
    await context.close();
  }
  // The switch: English page, pick Svenska.
  const { page, context } = await openPage(browser, demo, { locale: "en-US" });
  await page.getByRole("heading", { name: "Sign in to the agent desktop" }).waitFor();
  await page.getByLabel("Language").selectOption({ label: "Svenska" });
  await page.getByRole("heading", { name: "Logga in på agentens skrivbord" }).waitFor();
  await page.locator("[data-agent=alice]").click();
  await page.getByTestId("connection").filter({ hasText: "Ansluten" }).waitFor();
  // "sedan 23:05:07": Swedish time format (24 h, no AM/PM).
  const since = await page.getByTestId("agent-status").textContent();
  assert.match(since, /sedan \d{1,2}:\d{2}:\d{2}$/);
  await page.getByLabel("Språk").selectOption({ label: "Italiano" });
  await page.getByTestId("connection").filter({ hasText: "Connesso" }).waitFor();
  await context.close();
});

test("the hub serves the page with a strict CSP, content types and ETags", async () => {
  const index = await fetch(demo.base + "/");
  assert.equal(index.status, 200);
  assert.equal(index.headers.get("content-type"), "text/html; charset=utf-8");
  const csp = index.headers.get("content-security-policy");
  assert.match(csp, /script-src 'self'/);
  assert.match(csp, /style-src 'self'/);
  assert.match(csp, /connect-src 'self'/);
  assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
  const html = await index.text();
  assert.doesNotMatch(html, /<script>|<style>|\sstyle=|\son\w+=/, "no inline script or style in index.html");
  for (const [path, type] of [["/assets/desktop.js", "text/javascript; charset=utf-8"], ["/assets/desktop.css", "text/css; charset=utf-8"], ["/assets/icon.svg", "image/svg+xml"]]) {
    const r = await fetch(demo.base + path);
    assert.equal(r.status, 200, path);
    assert.equal(r.headers.get("content-type"), type, path);
    assert.equal(r.headers.get("x-content-type-options"), "nosniff");
    const etag = r.headers.get("etag");
    assert.match(etag, /^"[0-9a-f]{24}"$/);
    const again = await fetch(demo.base + path, { headers: { "if-none-match": etag } });
    assert.equal(again.status, 304, `${path} revalidates`);
  }
  // The desktop settings need an agent (or supervisor) token.
  const noToken = await fetch(demo.base + "/v1/desktop/config");
  assert.equal(noToken.status, 401);
});

test("the desktop reconnects by itself when the hub restarts", async () => {
  const CONFIG = `
[auth]
secret = "browser-test-secret-0123456789"

[[queues]]
id = "support"

[[agents]]
id = "ana"
name = "Ana Araújo"
queues = ["support"]
`;
  let hub = await startHub(CONFIG);
  try {
    const { page, context, problems } = await openPage(browser, hub);
    await signIn(page, token("ana", "agent"));
    await page.getByTestId("connection").filter({ hasText: "Connected" }).waitFor();
    await page.getByTestId("status-select").selectOption({ label: "Ready" });
    await page.getByTestId("agent-status").filter({ hasText: /^Ready/ }).waitFor();
    await integration(hub).createTask({ channel: "chat", queue: "support", customer: { name: "Before restart" } });
    await page.getByTestId("accept").click();
    await page.getByTestId("work-title").filter({ hasText: "Unknown caller" }).waitFor();
    // SIGTERM: the hub says goodbye (shutting_down) and closes; the page shows it is
    // reconnecting, then is back on the new process as soon as it listens again.
    const port = hub.port;
    await hub.stop();
    await page.getByTestId("connection").filter({ hasText: /Reconnecting in \d+ s/ }).waitFor();
    await page.getByTestId("reconnect-now").waitFor();
    hub = await startHub(CONFIG, { port });
    // "Connect again" tries at once instead of waiting out the backoff.
    const again = page.getByTestId("reconnect-now");
    // The button goes when the client reconnects by itself meanwhile: a short click timeout,
    // not Playwright's 30 s, and the connection below is what is checked.
    if (await again.isVisible()) await again.click({ timeout: 2_000 }).catch(() => {});
    await page.getByTestId("connection").filter({ hasText: "Connected" }).waitFor({ timeout: 30_000 });
    // A restarted in-memory hub starts the agent afresh: Not Ready, logged in.
    await page.getByTestId("agent-status").filter({ hasText: "Not Ready (Logged in)" }).waitFor();
    // Its interaction is gone with the old process: the workspace is put away.
    await page.getByText("Accept a task, or open a customer from the Open, Recent or Search lists.").waitFor();
    await page.getByText("No tasks in progress.").waitFor();
    assert.deepEqual(problems.filter((p) => !/WebSocket/.test(p)), []);
    await context.close();
  } finally {
    await hub.stop();
  }
});
