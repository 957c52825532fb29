// The library in a real browser (Debian's Chromium through playwright-core, no browser
// download): the browser's own WebSocket and window events, and what a browser sees of a
// refused upgrade (only close 1006), which the token rules are built on.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import { chromium } from "playwright-core";
import { agentToken, mint, startHub, startProxy } from "./hub.mjs";

const pkg = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";

let hub;
let browser;
let bundle;

before(async () => {
  if (!existsSync(CHROMIUM)) throw new Error(`no Chromium at ${CHROMIUM} (apt-get install chromium, or set CHROMIUM_PATH)`);
  const out = await build({
    entryPoints: [resolve(pkg, "src/index.ts")],
    bundle: true,
    format: "iife",
    globalName: "Switchboard",
    target: "es2020",
    write: false,
  });
  bundle = out.outputFiles[0].text;
  hub = await startHub();
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--no-first-run", "--disable-gpu"],
  });
});

after(async () => {
  await browser?.close();
  await hub?.stop();
});

/** A blank page with the library loaded and a client made with `opts` (no WebSocket or environment given: the browser's own). */
async function pageWithClient(opts) {
  const page = await browser.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.addScriptTag({ content: bundle });
  await page.evaluate((o) => {
    const c = new window.Switchboard.SwitchboardClient(o);
    window.client = c;
    window.states = [];
    window.offers = [];
    c.on("connection", (s) => window.states.push(s));
    c.on("offer", (offer) => window.offers.push({ offer, remaining: c.remainingMs(offer.deadline) }));
    c.connect();
  }, opts);
  return { page, errors };
}

/** Waits in the page until the client's state satisfies `pred` (a function source over `s`). */
async function waitState(page, pred) {
  await page.waitForFunction(`(() => { const s = window.client.state; return ${pred}; })()`, null, { timeout: 10000 });
  return page.evaluate(() => window.client.state);
}

test("in Chromium: the browser's WebSocket, a welcome, an offer counted down, a request answered", async () => {
  const { page, errors } = await pageWithClient({ url: hub.ws, token: agentToken("ana-b1", "q1"), backoff: { minMs: 50, maxMs: 400 } });
  const open = await waitState(page, `s.kind === "open"`);
  assert.equal(open.welcome.agent.agent_id, "ana-b1");
  await page.evaluate(() => window.client.setState("ready"));
  const task = await hub.createTask({ queue: "q1", customer: { email: "browser@example.com" } });
  await page.waitForFunction(() => window.offers.length === 1, null, { timeout: 10000 });
  const { offer, remaining } = await page.evaluate(() => window.offers[0]);
  assert.equal(offer.task.task_id, task.task_id);
  // Within the clock offset's own error (the welcome's trip) of the timeout.
  assert.ok(remaining > 0 && remaining <= offer.timeout_ms + 1000, `remaining ${remaining}`);
  const accepted = await page.evaluate((id) => window.client.accept(id), offer.offer_id);
  assert.equal(accepted.task.state, "assigned");
  const refused = await page.evaluate(() =>
    window.client.setState("not_ready", "nap").then(
      () => null,
      (e) => ({ name: e.name, code: e.code, isHubError: e instanceof window.Switchboard.HubError }),
    ),
  );
  assert.deepEqual(refused, { name: "HubError", code: "unknown_reason", isHubError: true });
  await page.evaluate(() => window.client.close());
  assert.deepEqual(errors, []);
  await page.close();
});

test("in Chromium: a refused upgrade is close 1006; an expired token ends in token_expired, a forged one is retried", async () => {
  const expired = await pageWithClient({
    url: hub.ws,
    token: agentToken("ana-b2", "q2", { exp: Math.floor(Date.now() / 1000) - 30 }),
    backoff: { minMs: 50, maxMs: 400 },
  });
  const closed = await waitState(expired.page, `s.kind === "closed"`);
  assert.deepEqual(closed, { kind: "closed", reason: "token_expired", code: 1006 });
  assert.equal(await expired.page.evaluate(() => window.states.filter((s) => s.kind === "connecting").length), 1, "one try");
  await expired.page.close();

  const forged = await pageWithClient({
    url: hub.ws,
    token: mint({ sub: "ana-b2", role: "agent", queues: ["q2"] }, "not-the-hub-secret-0123"),
    backoff: { minMs: 60000, maxMs: 60000 },
  });
  const r = await waitState(forged.page, `s.kind === "reconnecting"`);
  assert.equal(r.code, 1006);
  assert.equal(r.retryInMs, 60000);
  // The browser's `online` event retries at once.
  await forged.page.evaluate(() => window.dispatchEvent(new Event("online")));
  const again = await waitState(forged.page, `s.kind === "reconnecting" && s.attempt === 3`);
  assert.equal(again.code, 1006);
  await forged.page.evaluate(() => window.client.close());
  await forged.page.close();
});

test("in Chromium: a broken connection (reset) is close 1006, reconnected at once and resumed", async () => {
  const proxy = await startProxy(hub.addr);
  try {
    const { page, errors } = await pageWithClient({ url: proxy.ws, token: agentToken("ana-b3", "q3"), backoff: { minMs: 60000, maxMs: 60000 } });
    await waitState(page, `s.kind === "open"`);
    await page.evaluate(() => window.client.setState("ready"));
    const task = await hub.createTask({ queue: "q3", customer: { email: "reset@example.com" } });
    await page.waitForFunction(() => window.offers.length === 1, null, { timeout: 10000 });
    await page.evaluate(() => window.client.accept(window.offers[0].offer.offer_id));
    proxy.cut();
    await page.waitForFunction(() => window.states.some((s) => s.kind === "reconnecting"), null, { timeout: 10000 });
    const r = await page.evaluate(() => window.states.find((s) => s.kind === "reconnecting"));
    assert.equal(r.code, 1006);
    assert.equal(r.retryInMs, 0, "at once, not the 60 s backoff");
    const open = await waitState(page, `s.kind === "open" && s.welcome.resumed`);
    assert.deepEqual(
      open.welcome.agent.in_progress.map((t) => t.task_id),
      [task.task_id],
    );
    await page.evaluate(() => window.client.close());
    assert.deepEqual(errors, []);
    await page.close();
  } finally {
    proxy.close();
  }
});
