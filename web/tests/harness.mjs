// What the browser tests share: a hub the test starts (its own binary, a temp config, a
// free loopback port, a fresh working directory), tokens signed with the test secret,
// the integration's HTTP calls, and Debian's Chromium driven by playwright-core.
import { spawn, spawnSync } from "node:child_process";
import { createHmac } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
export const repo = resolve(here, "..", "..");
export const results = join(repo, "web", "test-results");
mkdirSync(results, { recursive: true });

export const SECRET = "browser-test-secret-0123456789";

export function binary() {
  const bin = process.env.SWITCHBOARD_BIN || join(repo, "target", "debug", "switchboard");
  if (!existsSync(bin)) {
    const r = spawnSync("cargo", ["build", "--bin", "switchboard"], { cwd: repo, stdio: "inherit" });
    if (r.status !== 0) throw new Error("cargo build failed");
  }
  return bin;
}

let inMemoryFlag;
function supportsInMemory(bin) {
  if (inMemoryFlag === undefined) {
    const help = spawnSync(bin, ["--help"], { encoding: "utf8" });
    inMemoryFlag = /--in-memory/.test(help.stdout ?? "");
  }
  return inMemoryFlag;
}

export function freePort() {
  return new Promise((res, rej) => {
    const s = createServer();
    s.on("error", rej);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
  });
}

/** Starts a hub; `config` is TOML without `[server] listen` (added here), or null for the demo setup. */
export async function startHub(config, { port: fixedPort } = {}) {
  const bin = binary();
  const port = fixedPort ?? (await freePort());
  const dir = mkdtempSync(join(tmpdir(), "switchboard-web-"));
  const args = [];
  if (config !== null) {
    const path = join(dir, "config.toml");
    writeFileSync(path, `[server]\nlisten = "127.0.0.1:${port}"\n\n${config}`);
    args.push("--config", path);
  } else {
    args.push("--listen", `127.0.0.1:${port}`);
  }
  if (supportsInMemory(bin)) args.push("--in-memory");
  const env = { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "warn" };
  delete env.SWITCHBOARD_SECRET;
  delete env.SWITCHBOARD_CONFIG;
  delete env.SWITCHBOARD_LISTEN;
  delete env.SWITCHBOARD_REDIS;
  const proc = spawn(bin, args, { cwd: dir, env, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  proc.stdout.on("data", (d) => (out += d));
  proc.stderr.on("data", (d) => (out += d));
  const base = `http://127.0.0.1:${port}`;
  // Ready when it says so (the first line it prints once listening), or fail with its output.
  await new Promise((res, rej) => {
    const onData = () => {
      if (out.includes("listening on")) {
        proc.stdout.off("data", onData);
        res();
      }
    };
    proc.stdout.on("data", onData);
    proc.once("exit", (code) => rej(new Error(`hub exited (${code}):\n${out}`)));
  });
  return {
    base,
    port,
    dir,
    proc,
    output: () => out,
    async stop() {
      if (proc.exitCode !== null) return;
      const exited = new Promise((r) => proc.once("exit", r));
      proc.kill("SIGTERM");
      await exited;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

const b64 = (x) => Buffer.from(typeof x === "string" ? x : JSON.stringify(x)).toString("base64url");

/** An HS256 token as the hub signs them. */
export function token(sub, role, ttlSecs = 3600) {
  const head = b64({ alg: "HS256", typ: "JWT" });
  const body = b64({ sub, role, exp: Math.floor(Date.now() / 1000) + ttlSecs });
  const sig = createHmac("sha256", SECRET).update(`${head}.${body}`).digest("base64url");
  return `${head}.${body}.${sig}`;
}

/** The integration's side, over HTTP. */
export function integration(hub) {
  const auth = { authorization: `Bearer ${token("crm", "integration")}`, "content-type": "application/json" };
  const call = async (method, path, body) => {
    const r = await fetch(hub.base + path, { method, headers: auth, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await r.text();
    const json = text ? JSON.parse(text) : null;
    if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${text}`);
    return json;
  };
  return {
    createTask: (task) => call("POST", "/v1/tasks", task),
    cancelTask: (id) => call("POST", `/v1/tasks/${id}/cancel`, {}),
    createCustomer: (c) => call("POST", "/v1/customers", c),
    patchCustomer: (id, base, changes) => call("PATCH", `/v1/customers/${id}`, { base_version: base, changes }),
    getCustomer: (id) => call("GET", `/v1/customers/${id}`),
  };
}

export const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";

export async function launch() {
  if (!existsSync(CHROMIUM)) throw new Error(`no Chromium at ${CHROMIUM} (apt-get install chromium)`);
  // launch() gives the browser a fresh temporary profile (--user-data-dir) of its own.
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--no-first-run", "--disable-gpu"],
  });
}

/** A page that fails the test on a CSP violation or an uncaught error; `path` is the page's (`/` the desktop, `/wallboard`). */
export async function openPage(browser, hub, { locale = "en-US", path = "/" } = {}) {
  const context = await browser.newContext({ locale, viewport: { width: 1400, height: 1000 } });
  const page = await context.newPage();
  const problems = [];
  page.on("console", (m) => {
    if (m.type() === "error" && !/Failed to load resource/.test(m.text())) problems.push(m.text());
  });
  page.on("pageerror", (e) => problems.push(String(e)));
  await page.goto(hub.base + path);
  return { context, page, problems };
}

/**
 * An agent's websocket driven by the test, opened inside a browser page on the hub's own
 * origin (Node 20 has no WebSocket, and this package no `ws`): `request(frame)` resolves
 * with the reply (or rejects with the error), `next(pred)` with the first frame received
 * that satisfies `pred` (older ones included), `close()` ends it.
 */
export async function agentSocket(browser, hub, tok) {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(hub.base + "/healthz");
  await page.evaluate(
    ([url]) =>
      new Promise((resolve, reject) => {
        const ws = new WebSocket(url, "switchboard.v1");
        window.__frames = [];
        window.__ws = ws;
        ws.onmessage = (e) => {
          const f = JSON.parse(e.data);
          window.__frames.push(f);
          if (f.type === "welcome") resolve();
        };
        ws.onclose = (e) => {
          window.__closed = { code: e.code, reason: e.reason };
          reject(new Error(`closed ${e.code}`));
        };
      }),
    [`${hub.base.replace("http", "ws")}/v1/ws?access_token=${encodeURIComponent(tok)}`],
  );
  let seq = 0;
  const frames = () => page.evaluate(() => window.__frames);
  const next = async (pred, what = "a frame") => {
    const deadline = Date.now() + 15000;
    for (;;) {
      const found = (await frames()).find(pred);
      if (found) return found;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      // Wait for the next frame (or the socket closing) before looking again.
      const n = (await frames()).length;
      await page
        .waitForFunction((count) => window.__frames.length > count || window.__closed, n, { timeout: Math.max(1, deadline - Date.now()) })
        .catch(() => {});
    }
  };
  return {
    page,
    next,
    frames,
    closed: () => page.evaluate(() => window.__closed ?? null),
    async request(frame) {
      const id = `t${++seq}`;
      await page.evaluate((f) => window.__ws.send(JSON.stringify(f)), { ...frame, id });
      const r = await next((f) => f.re === id, `the answer to ${frame.type}`);
      if (r.type === "error") throw new Error(`${frame.type}: ${r.code} ${r.message}`);
      return r.result;
    },
    async close() {
      await context.close();
    },
  };
}

/**
 * The page's websocket to the hub, passed through the test (call before the page
 * connects): every frame each way is recorded, and the hub's answers to chosen requests
 * can be held back and let go later, to put two answers in the order a slow network
 * would. `hold(pred)`: the answers to requests matching `pred` (sent from now on) are
 * held; `release()`: the held answers go to the page, in order, and holding stops.
 * `sent(pred)` / `answered(pred)`: resolve with the first request the page sent, or the
 * first answer it was given (a reply or an error, with its request), matching `pred`.
 */
export async function tapSocket(page) {
  const sent = [];
  const got = [];
  const answered = [];
  const lost = [];
  const held = [];
  const heldIds = new Set();
  const waiters = [];
  let holding = null;
  let dropping = null;
  let pageSide = null;
  let toPage = null;
  const wake = () => {
    for (const w of waiters.splice(0)) w();
  };
  await page.routeWebSocket(/\/v1\/ws/, (ws) => {
    pageSide = ws;
    const server = ws.connectToServer();
    const requests = new Map();
    toPage = (m) => {
      const f = JSON.parse(m);
      ws.send(m);
      if (f.re != null && requests.has(f.re)) answered.push({ ...f, request: requests.get(f.re) });
      wake();
    };
    ws.onMessage((m) => {
      const f = JSON.parse(String(m));
      sent.push(f);
      if (f.id != null) requests.set(f.id, f);
      if (holding?.(f) && f.id != null) heldIds.add(f.id);
      server.send(m);
      wake();
    });
    server.onMessage((m) => {
      const f = JSON.parse(String(m));
      got.push(f);
      // Lost on the way, as on a network that dropped while the hub pushed it.
      if (dropping?.(f)) {
        lost.push(f);
        wake();
        return;
      }
      if (f.re != null && heldIds.has(f.re)) {
        held.push(String(m));
        wake();
        return;
      }
      toPage(String(m));
    });
    ws.onClose((code, reason) => server.close({ code, reason }));
    server.onClose((code, reason) => ws.close({ code, reason }));
  });
  const until = async (list, pred, what) => {
    const deadline = Date.now() + 15000;
    for (;;) {
      const found = list.find(pred);
      if (found !== undefined) return found;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => {
        waiters.push(r);
        setTimeout(r, Math.max(1, deadline - Date.now()));
      });
    }
  };
  return {
    sentFrames: () => sent,
    hold(pred) {
      holding = pred;
    },
    /** Frames from the hub matching `pred` never reach the page (null: none dropped). */
    drop(pred) {
      dropping = pred;
    },
    /** Closes the page's socket as a network failure would show it: the desktop reconnects. */
    closePage() {
      pageSide?.close({ code: 1012, reason: "" });
    },
    /** How many answers are held now. */
    heldCount: () => held.length,
    /** Waits until `n` answers are held. */
    async holdingAtLeast(n) {
      await until([true], () => held.length >= n, `${n} held answers`);
    },
    release() {
      holding = null;
      heldIds.clear();
      for (const m of held.splice(0)) toPage(m);
    },
    sent: (pred, what = "a request") => until(sent, pred, what),
    /** Resolves with the first frame dropped (`drop`) that matches `pred`. */
    dropped: (pred, what = "a dropped frame") => until(lost, pred, what),
    answered: (pred, what = "an answer") => until(answered, pred, what),
    /** Resolves with the first frame from the hub (to the page or not) matching `pred`. */
    received: (pred, what = "a frame") => until(got, pred, what),
  };
}

export async function signIn(page, tok) {
  await page.getByLabel("Agent token").fill(tok);
  await page.getByRole("button", { name: "Sign in", exact: true }).click();
}

const axeSource = readFileSync(join(repo, "web", "node_modules", "axe-core", "axe.min.js"), "utf8");

/** axe-core's serious and critical violations on the page as it is now. */
export async function axe(page) {
  // Evaluated through the debugging protocol, which the page's CSP does not govern.
  await page.evaluate(axeSource);
  const r = await page.evaluate(async () => {
    // eslint-disable-next-line no-undef
    const res = await window.axe.run(document, { resultTypes: ["violations"] });
    return res.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map((n) => n.target.join(" ")).slice(0, 5) }));
  });
  return r.filter((v) => v.impact === "serious" || v.impact === "critical");
}

export async function shot(page, name) {
  await page.screenshot({ path: join(results, `${name}.png`), fullPage: true });
}
