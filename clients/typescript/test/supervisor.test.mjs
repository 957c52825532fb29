// A supervisor console's client against the FakeHub: the snapshot opens the connection,
// the board follows the version rule, statistics, the supervisor requests, a reconnect's
// new snapshot starting afresh, the clock, the token's role, and fetchStats.

import { test, afterEach } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { SwitchboardClient, HubError, fetchStats } from "../dist/index.js";
import {
  FakeHub,
  makeAgentSummary,
  makeAgentView,
  makeQueueStats,
  makeStatsQueue,
  makeStats,
  makeToken,
} from "../dist/testing.js";
import { stateWhere, kind, nextEvent } from "./helpers.mjs";

const made = [];
afterEach(() => {
  for (const c of made.splice(0)) c.close();
});

function setup(opts = {}, hubOpts = {}) {
  const hub = new FakeHub(hubOpts);
  const client = new SwitchboardClient({
    url: "ws://hub.test/v1/ws",
    token: makeToken({ sub: "sue", role: "supervisor" }),
    role: "supervisor",
    WebSocket: hub.WebSocket,
    environment: null,
    backoff: { minMs: 1, maxMs: 5 },
    ...opts,
  });
  made.push(client);
  return { hub, client };
}

test("a supervisor's connection opens on the snapshot, which fills the board", async () => {
  const stats = makeStats({ queues: [makeStatsQueue({ queue_id: "sales" })] });
  const { hub, client } = setup(
    {},
    {
      snapshot: () => ({
        agents: [makeAgentSummary({ agent_id: "ana" }), makeAgentSummary({ agent_id: "bo", status: "ready", reason: undefined, version: 4 })],
        queues: [makeQueueStats({ queue_id: "sales", waiting: 2, longest_wait_ms: 5000 })],
        stats,
      }),
    },
  );
  assert.equal(client.role, "supervisor");
  assert.equal(client.board, null);
  const boards = [];
  client.on("board", (b) => boards.push(b));
  const snapEvent = nextEvent(client, "snapshot");
  client.connect();
  const open = await stateWhere(client, kind("open"));
  assert.equal(open.snapshot.type, "snapshot");
  assert.equal(open.welcome, undefined);
  assert.equal((await snapEvent).agents.length, 2);
  const b = client.board;
  assert.deepEqual([...b.agents.keys()], ["ana", "bo"]);
  assert.equal(b.agents.get("bo").version, 4);
  assert.equal(b.queues.get("sales").waiting, 2);
  assert.deepEqual(b.stats, stats);
  assert.ok(Math.abs(b.queueSeenAt.get("sales") - client.serverNow()) < 1000);
  assert.equal(boards.length, 1);
  assert.equal(client.agent, null, "a supervisor has no agent view");
  // The heartbeat's first ping goes out right after the snapshot (it measures the clock).
  assert.ok(hub.socket.sent.some((f) => f.type === "ping"));
});

test("agent_changed follows the version rule; queue_changed and stats replace; every frame is still an event", async () => {
  const { hub, client } = setup();
  client.connect();
  await stateWhere(client, kind("open"));
  const sock = hub.socket;
  const frames = [];
  client.on("agent_changed", (f) => frames.push(f.agent.version));

  sock.push({ type: "agent_changed", agent: makeAgentSummary({ status: "ready", reason: undefined, version: 3 }) });
  await nextEvent(client, "board", (b) => b.agents.get("ana").version === 3);
  // Older and equal versions arrive late (another path): dropped from the board.
  sock.push({ type: "agent_changed", agent: makeAgentSummary({ status: "busy", version: 2 }) });
  sock.push({ type: "agent_changed", agent: makeAgentSummary({ status: "busy", version: 3 }) });
  // A new agent (a token profile logging in) joins the board.
  sock.push({ type: "agent_changed", agent: makeAgentSummary({ agent_id: "cy", version: 0 }) });
  await nextEvent(client, "board", (b) => b.agents.has("cy"));
  assert.equal(client.board.agents.get("ana").status, "ready");
  assert.deepEqual(frames, [3, 2, 3, 0]);

  sock.push({ type: "queue_changed", queue: makeQueueStats({ waiting: 7, longest_wait_ms: 1200 }) });
  await nextEvent(client, "board", (b) => b.queues.get("support").waiting === 7);
  const stats = makeStats({ queues: [makeStatsQueue({ today: { ...makeStatsQueue().today, offered: 9 } })] });
  const ev = nextEvent(client, "stats");
  sock.push({ type: "stats", stats });
  assert.equal((await ev).stats.queues[0].today.offered, 9);
  assert.equal(client.board.stats.queues[0].today.offered, 9);

  // Frames that do not fit are dropped without breaking anything.
  sock.push({ type: "agent_changed", agent: { agent_id: 5 } });
  sock.push({ type: "queue_changed", queue: null });
  sock.push({ type: "stats", stats: "nope" });
  sock.push({ type: "snapshot", agents: "x", queues: [] });
  sock.push({ type: "queue_changed", queue: makeQueueStats({ waiting: 8 }) });
  await nextEvent(client, "board", (b) => b.queues.get("support").waiting === 8);
  assert.equal(client.board.stats.queues[0].today.offered, 9);
  assert.equal(client.state.kind, "open");
});

test("set_agent_state and logout_agent: typed requests, typed errors", async () => {
  const { hub, client } = setup();
  client.connect();
  await stateWhere(client, kind("open"));
  const sock = hub.socket;

  const p = client.setAgentState("ana", "break");
  const req = await sock.nextRequest("set_agent_state");
  assert.deepEqual({ ...req, id: undefined }, { type: "set_agent_state", agent_id: "ana", state: "not_ready", reason: "break", id: undefined });
  sock.reply(req, { agent: makeAgentView({ reason: "break", version: 9 }) });
  assert.equal((await p).agent.reason, "break");
  assert.equal(client.agent, null, "the reply's view is the agent's, not the supervisor's");

  const q = client.setAgentState("ana");
  const req2 = await sock.nextRequest("set_agent_state");
  assert.equal(req2.reason, undefined, "no reason: the hub's default (supervisor)");
  sock.error(req2, "agent_offline");
  await assert.rejects(q, (e) => e instanceof HubError && e.code === "agent_offline" && e.request === "set_agent_state");

  const l = client.logoutAgent("bo");
  const req3 = await sock.nextRequest("logout_agent");
  assert.equal(req3.agent_id, "bo");
  sock.error(req3, "unknown_agent");
  await assert.rejects(l, (e) => e instanceof HubError && e.code === "unknown_agent");
});

test("a reconnect gets a new snapshot, which starts the board afresh (versions as they are)", async () => {
  let n = 0;
  const { hub, client } = setup(
    {},
    {
      snapshot: () => {
        n += 1;
        return n === 1
          ? { agents: [makeAgentSummary({ version: 40 }), makeAgentSummary({ agent_id: "gone", version: 1 })] }
          : { agents: [makeAgentSummary({ version: 2, status: "offline", reason: undefined })] };
      },
    },
  );
  client.connect();
  await stateWhere(client, kind("open"));
  assert.equal(client.board.agents.get("ana").version, 40);
  const first = client.board;
  hub.socket.drop(); // a restarted hub: versions count from 0 again
  await stateWhere(client, (s) => s.kind === "reconnecting");
  await stateWhere(client, kind("open"));
  assert.notEqual(client.board, first);
  assert.equal(client.board.agents.get("ana").version, 2);
  assert.equal(client.board.agents.has("gone"), false);
  // A line newer than the new snapshot's applies, though older than the old board's.
  hub.socket.push({ type: "agent_changed", agent: makeAgentSummary({ version: 3, status: "ready", reason: undefined }) });
  await nextEvent(client, "board", (b) => b.agents.get("ana").version === 3);
  // A snapshot while open (the console fell behind) also starts afresh, and stays open.
  hub.socket.snapshot({ agents: [] });
  await nextEvent(client, "board", (b) => b.agents.size === 0);
  assert.equal(client.state.kind, "open");
  assert.equal(hub.sockets.length, 2);
});

test("the clock: the stats' generated_at until a ping answers, then the ping", async () => {
  let local = 1_000_000;
  const skew = 45_000;
  const { hub, client } = setup(
    { now: () => local },
    { answerPings: false, now: () => local + skew, snapshot: () => ({ stats: makeStats({}, { now: local + skew - 300 }) }) },
  );
  client.connect();
  await stateWhere(client, kind("open"));
  assert.equal(client.clockOffsetMs, skew - 300, "from generated_at");
  const ping = await hub.socket.nextFrame("ping");
  local += 40;
  hub.socket.reply(ping, { server_time: new Date(local + skew).toISOString() });
  await within(() => client.clockOffsetMs === skew + 20);
  // Later statistics do not move a clock measured by pings.
  hub.socket.push({ type: "stats", stats: makeStats({}, { now: local + skew + 5000 }) });
  await nextEvent(client, "stats");
  assert.equal(client.clockOffsetMs, skew + 20);
});

test("a supervisor client refuses an agent's token, and an agent client a supervisor's, before connecting", async () => {
  const { hub, client } = setup({ token: makeToken({ role: "agent" }) });
  client.connect();
  await stateWhere(client, kind("closed"));
  assert.equal(client.state.reason, "forbidden");
  const agent = new SwitchboardClient({ url: "ws://hub.test/v1/ws", token: makeToken({ role: "supervisor" }), WebSocket: hub.WebSocket, environment: null });
  made.push(agent);
  agent.connect();
  await stateWhere(agent, kind("closed"));
  assert.equal(agent.state.reason, "forbidden");
  assert.equal(hub.sockets.length, 0);
});

test("a supervisor client ignores a welcome; the snapshot opens it", async () => {
  const { hub, client } = setup({}, { snapshot: false });
  client.connect();
  const sock = await hub.nextConnection();
  sock.welcome();
  sock.snapshot();
  await stateWhere(client, kind("open"));
  assert.ok(client.state.snapshot);
});

test("fetchStats: GET /v1/stats with the token and the filters; errors as HubError", async () => {
  const seen = [];
  const body = makeStats();
  const server = createServer((req, res) => {
    seen.push({ url: req.url, auth: req.headers.authorization });
    if (req.headers.authorization !== "Bearer good") {
      res.writeHead(403, { "content-type": "application/json" });
      res.end(JSON.stringify({ error: { code: "forbidden", message: "not for agents" } }));
      return;
    }
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify(body));
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  const base = `http://127.0.0.1:${server.address().port}`;
  try {
    assert.deepEqual(await fetchStats(base, "good", { queues: ["a", "b"], agents: ["x"] }), body);
    assert.equal(seen[0].url, "/v1/stats?queue=a%2Cb&agent=x");
    assert.equal(seen[0].auth, "Bearer good");
    await assert.rejects(fetchStats(base, "bad"), (e) => e instanceof HubError && e.code === "forbidden" && e.request === "stats");
  } finally {
    server.close();
  }
  await assert.rejects(fetchStats(base, "good"), (e) => e instanceof HubError && e.code === "disconnected");
});

/** Waits (on microtasks and timers) until `pred()` holds, up to 2 s. */
async function within(pred) {
  const end = Date.now() + 2000;
  while (!pred()) {
    if (Date.now() > end) throw new Error("condition not met within 2 s");
    await new Promise((r) => setTimeout(r, 1));
  }
}
