// A real hub for the tests: the switchboard binary started with a config of our own, in a
// fresh temp directory, on a loopback port; HS256 tokens minted with its secret; a TCP proxy
// in front of it that a test can freeze and cut (a real broken connection).

import { spawn, execFileSync } from "node:child_process";
import { createHmac } from "node:crypto";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createInterface } from "node:readline";
import net from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const pkg = resolve(dirname(fileURLToPath(import.meta.url)), "..");
export const BIN = process.env.SWITCHBOARD_BIN || resolve(pkg, "../../target/debug/switchboard");
export const SECRET = "client-test-secret-0123456789";

let inMemory = null;
/**
 * `--in-memory` when this binary has it (state in memory whatever its default; the hub
 * runs in a fresh temp directory anyway), as a global option or one of `serve`.
 */
function memoryArgs() {
  if (inMemory === null) {
    const help = (args) => {
      try {
        return execFileSync(BIN, args, { encoding: "utf8" });
      } catch {
        return "";
      }
    };
    if (help(["--help"]).includes("--in-memory")) inMemory = ["--in-memory"];
    else if (help(["serve", "--help"]).includes("--in-memory")) inMemory = ["serve", "--in-memory"];
    else inMemory = [];
  }
  return inMemory;
}

const b64url = (s) => Buffer.from(s).toString("base64url");

/** A signed HS256 JWT. */
export function mint(claims, secret = SECRET) {
  const body = { exp: Math.floor(Date.now() / 1000) + 600, ...claims };
  const head = `${b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }))}.${b64url(JSON.stringify(body))}`;
  return `${head}.${createHmac("sha256", secret).update(head).digest("base64url")}`;
}

/** An agent's token; `queue` puts the agent (a token profile) in that queue. */
export const agentToken = (sub, queue, extra = {}) => mint({ sub, role: "agent", name: sub, queues: [queue], ...extra });

/** Queues q1 .. q20: each test routes in a queue of its own, with agents of its own (token profiles). */
export const QUEUES = 20;

const CONFIG = (listen) => `
[server]
listen = "${listen}"
drain_secs = 2
# The browser test's page (about:blank) sends Origin "null".
allowed_origins = ["*"]

[auth]
secret = "${SECRET}"
allow_token_profiles = true

[routing]
wrap_up_secs = 0
reconnect_grace_secs = 30
not_ready_reasons = ["break", "lunch"]
${Array.from({ length: QUEUES }, (_, i) => `\n[[queues]]\nid = "q${i + 1}"\nchannels = ["voice", "chat", "email"]\n`).join("")}
`;

/** Start a hub; `port` 0 picks a free one. Resolves once it listens. */
export async function startHub(port = 0) {
  if (!existsSync(BIN)) {
    throw new Error(`no hub binary at ${BIN}: run \`cargo build\` in the repository root, or set SWITCHBOARD_BIN`);
  }
  const dir = mkdtempSync(join(tmpdir(), "switchboard-client-test-"));
  const config = join(dir, "hub.toml");
  writeFileSync(config, CONFIG(`127.0.0.1:${port}`));
  const child = spawn(BIN, [...memoryArgs(), "--config", config], {
    cwd: dir,
    env: { ...process.env, RUST_LOG: "warn" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stderr = "";
  child.stderr.on("data", (d) => {
    stderr += d;
  });
  const exited = new Promise((res) => child.once("exit", (code, signal) => res({ code, signal })));
  const lines = createInterface({ input: child.stdout });
  let addr;
  try {
    addr = await new Promise((res, rej) => {
      const timer = setTimeout(() => rej(new Error(`the hub did not start listening within 60 s: ${stderr}`)), 60000);
      lines.once("line", (line) => {
        clearTimeout(timer);
        const m = /http:\/\/(\S+)/.exec(line);
        if (m) res(m[1]);
        else rej(new Error(`no address in ${JSON.stringify(line)}`));
      });
      exited.then(({ code, signal }) => {
        clearTimeout(timer);
        rej(new Error(`the hub exited (${code ?? signal}) before listening: ${stderr}`));
      });
    });
  } catch (err) {
    child.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  lines.on("line", () => {}); // keep reading stdout so the hub never blocks on it
  const hub = {
    addr,
    port: Number(addr.split(":").pop()),
    http: `http://${addr}`,
    ws: `ws://${addr}/v1/ws`,
    child,
    exited,
    /** Stop the hub: SIGKILL (a crash) or SIGTERM (a drain). */
    async stop(signal = "SIGKILL") {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      // A drain takes at most drain_secs (2 s); a hub still running long after is killed.
      const timer = setTimeout(() => child.kill("SIGKILL"), 30000);
      const r = await exited;
      clearTimeout(timer);
      rmSync(dir, { recursive: true, force: true });
      return r;
    },
    /** An HTTP call as an integration; resolves with the status and the JSON body. */
    async call(method, path, body) {
      const res = await fetch(`${hub.http}${path}`, {
        method,
        headers: { authorization: `Bearer ${mint({ sub: "crm", role: "integration" })}`, "content-type": "application/json" },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(10000),
      });
      return { status: res.status, body: await res.json() };
    },
    /** POST /v1/tasks as an integration. */
    async createTask(body) {
      const res = await fetch(`${hub.http}/v1/tasks`, {
        method: "POST",
        headers: { authorization: `Bearer ${mint({ sub: "crm", role: "integration" })}`, "content-type": "application/json" },
        body: JSON.stringify({ channel: "chat", ...body }),
        signal: AbortSignal.timeout(10000),
      });
      const json = await res.json();
      if (res.status !== 201 && res.status !== 200) throw new Error(`create task: ${res.status} ${JSON.stringify(json)}`);
      return json;
    },
  };
  return hub;
}

/**
 * A TCP proxy to `target` (host:port). `freeze()` stops passing the client's bytes to the
 * hub (a request then goes unanswered); `cut()` resets every connection through it (the
 * client sees close 1006, the hub a broken connection).
 */
export async function startProxy(target) {
  const [host, port] = [target.slice(0, target.lastIndexOf(":")), Number(target.slice(target.lastIndexOf(":") + 1))];
  const pairs = new Set();
  let frozen = false;
  const server = net.createServer((down) => {
    const up = net.connect(port, host);
    const pair = { down, up };
    pairs.add(pair);
    down.on("data", (d) => {
      if (!frozen) up.write(d);
    });
    up.on("data", (d) => down.write(d));
    const end = () => {
      pairs.delete(pair);
      down.destroy();
      up.destroy();
    };
    down.on("error", end).on("close", end);
    up.on("error", end).on("close", end);
  });
  await new Promise((res) => server.listen(0, "127.0.0.1", res));
  const addr = `127.0.0.1:${server.address().port}`;
  return {
    addr,
    ws: `ws://${addr}/v1/ws`,
    get connections() {
      return pairs.size;
    },
    freeze() {
      frozen = true;
    },
    cut() {
      frozen = false;
      for (const { down, up } of [...pairs]) {
        down.resetAndDestroy();
        up.resetAndDestroy();
      }
      pairs.clear();
    },
    /** Stop listening and reset every connection (not waiting for anything that lingers). */
    close() {
      server.close();
      this.cut();
    },
  };
}
