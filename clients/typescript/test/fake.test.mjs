// The client against the FakeHub: its state machine, backoff, wake-ups, timeouts and
// goodbye rules, where a real hub cannot be made to do each thing on demand.

import { test, afterEach } from "node:test";
import assert from "node:assert/strict";
import { SwitchboardClient, HubError } from "../dist/index.js";
import {
  FakeHub,
  FakeEnvironment,
  GOODBYE_CLOSE_CODES,
  makeAgentView,
  makeOffer,
  makeToken,
  fakeError,
} from "../dist/testing.js";
import { stateWhere, kind, nextEvent, record, within } from "./helpers.mjs";

// Every client a test made is closed after it, passed or failed, so that a failing test
// leaves no reconnect timer running.
const made = [];
afterEach(() => {
  for (const c of made.splice(0)) c.close();
});

function setup(opts = {}, hubOpts = {}) {
  const hub = new FakeHub(hubOpts);
  const env = new FakeEnvironment();
  const client = new SwitchboardClient({
    url: "ws://hub.test/v1/ws",
    token: makeToken(),
    WebSocket: hub.WebSocket,
    environment: env,
    ...opts,
  });
  made.push(client);
  return { hub, env, client };
}

test("idle -> connecting -> open on welcome; connect() is idempotent; close() ends for good", async () => {
  const { hub, client, env } = setup();
  assert.deepEqual(client.state, { kind: "idle" });
  const states = record(client);
  client.connect();
  client.connect();
  assert.deepEqual(client.state, { kind: "connecting", attempt: 1 });
  const sock = await hub.nextConnection();
  assert.equal(new URL(sock.url).searchParams.get("access_token"), sock.token);
  assert.deepEqual(sock.protocols, ["switchboard.v1"]);
  const open = await stateWhere(client, kind("open"));
  assert.equal(open.welcome.type, "welcome");
  assert.equal(client.agent.agent_id, "ana");
  client.connect();
  assert.equal(hub.sockets.length, 1, "connect() while open opens nothing");
  assert.equal(env.listenerCount("online"), 1);

  const pending = client.getState();
  await sock.nextRequest("get_state");
  client.close();
  assert.deepEqual(client.state, { kind: "closed", reason: "client" });
  await assert.rejects(pending, (e) => e instanceof HubError && e.code === "disconnected");
  assert.equal((await sock.whenClosed()).code, 1000);
  assert.deepEqual(sock.closedByClient, { code: 1000 });
  assert.deepEqual(
    states.map((s) => s.kind),
    ["connecting", "open", "closed"],
  );
  assert.equal(env.listenerCount("online"), 0, "listeners removed once closed");
  env.goOnline();
  assert.equal(hub.sockets.length, 1, "closed stays closed");
  await assert.rejects(client.ping(), (e) => e.code === "disconnected");
});

test("a dropped session reconnects at once and rejects pending requests with disconnected", async () => {
  const { hub, client } = setup({ backoff: { minMs: 60000, maxMs: 120000 } });
  client.connect();
  const first = await hub.nextConnection();
  await stateWhere(client, kind("open"));
  const pending = client.accept("00000000-0000-4000-8000-00000000abcd");
  await first.nextRequest("accept");
  first.drop();
  const r = await stateWhere(client, kind("reconnecting"));
  assert.equal(r.retryInMs, 0, "a broken session is retried at once");
  assert.equal(r.code, 1006);
  assert.equal(r.attempt, 1);
  await assert.rejects(pending, (e) => e instanceof HubError && e.code === "disconnected" && e.request === "accept");
  const second = await hub.nextConnection();
  assert.notEqual(second, first);
  await stateWhere(client, kind("open"));
  // Dropped again right away: a flapping hub gets the backoff, not a tight loop.
  second.drop();
  const again = await stateWhere(client, kind("reconnecting"));
  assert.ok(again.retryInMs >= 60000, `second drop within 10 s: backoff (${again.retryInMs})`);
  client.close();
});

test("backoff: jittered between minMs and a cap doubling per attempt up to maxMs; reset by a welcome", async () => {
  const draws = [0, 0.999999, 0.5, 0.999999, 0, 0.999999, 0.999999, 0.999999, 0.999999];
  let i = 0;
  const { hub, client } = setup(
    { backoff: { minMs: 10, maxMs: 80 }, random: () => draws[i++ % draws.length] },
    { autoOpen: false },
  );
  const states = record(client);
  client.connect();
  const delays = [];
  for (let n = 0; n < 8; n++) {
    const s = await hub.nextConnection();
    s.refuse();
    const r = await stateWhere(client, (x) => x.kind === "reconnecting" && x.attempt === n + 2, `attempt ${n + 2}`);
    delays.push(r.retryInMs);
  }
  // After n failed attempts the client waits in [10, min(80, 10 * 2^n)].
  const caps = [20, 40, 80, 80, 80, 80, 80, 80];
  delays.forEach((d, n) => {
    assert.ok(d >= 10 && d <= caps[n], `delay ${d} of attempt ${n + 1} within [10, ${caps[n]}]`);
  });
  assert.equal(delays[0], 10, "random 0 gives the floor");
  assert.equal(delays[1], 40, "random ~1 gives the cap");
  assert.equal(delays[2], 45, "random 0.5 gives the middle of [10, 80]");
  assert.equal(delays[3], 80);
  assert.equal(Math.max(...delays), 80, "never above maxMs");
  assert.ok(states.every((s) => s.kind !== "open"));
  // Once welcomed, the count starts again.
  const s = await hub.nextConnection();
  s.open();
  await stateWhere(client, kind("open"));
  s.goodbye("shutting_down");
  const r = await stateWhere(client, kind("reconnecting"));
  assert.equal(r.attempt, 1);
  assert.ok(r.retryInMs >= 10 && r.retryInMs <= 20, `first delay after a welcome ${r.retryInMs}`);
  client.close();
});

test("backoff with the default random varies (jitter) and stays within 0.5 s .. 20 s", async () => {
  const { hub, client } = setup({}, { autoOpen: false });
  // Read the delays the client chooses without waiting them out: each refusal is followed
  // by `reconnecting`, and going online retries at once.
  const env = new FakeEnvironment();
  const c2 = new SwitchboardClient({ url: "ws://hub.test/v1/ws", token: makeToken(), WebSocket: hub.WebSocket, environment: env });
  made.push(c2);
  client.close();
  c2.connect();
  const delays = [];
  for (let n = 0; n < 12; n++) {
    const s = await hub.nextConnection();
    s.refuse();
    const r = await stateWhere(c2, (x) => x.kind === "reconnecting" && x.attempt === n + 2);
    delays.push(r.retryInMs);
    env.goOnline();
  }
  for (const d of delays) assert.ok(d >= 500 && d <= 20000, `${d} within 500..20000`);
  assert.ok(new Set(delays).size > 6, `delays vary: ${delays}`);
  assert.ok(Math.max(...delays.slice(6)) > 2000, `later delays grow: ${delays}`);
  c2.close();
});

test("online, the page becoming visible and reconnectNow() retry at once; hidden does not", async () => {
  const { hub, client, env } = setup({ backoff: { minMs: 60000, maxMs: 60000 } }, { autoOpen: false });
  client.connect();
  (await hub.nextConnection()).refuse();
  const r = await stateWhere(client, kind("reconnecting"));
  assert.equal(r.retryInMs, 60000);
  env.setVisibility("hidden");
  assert.equal(client.state.kind, "reconnecting", "hidden: still waiting");
  env.goOnline();
  const s2 = await within(hub.nextConnection(), "a connection after online");
  assert.equal(client.state.kind, "connecting");
  assert.equal(client.state.attempt, 2);
  s2.refuse();
  await stateWhere(client, (x) => x.kind === "reconnecting" && x.attempt === 3);
  env.setVisibility("visible");
  const s3 = await within(hub.nextConnection(), "a connection after visible");
  s3.refuse();
  await stateWhere(client, (x) => x.kind === "reconnecting" && x.attempt === 4);
  client.reconnectNow();
  assert.equal(client.state.kind, "connecting", "reconnectNow() tries at once");
  const s4 = await within(hub.nextConnection(), "a connection after reconnectNow()");
  s4.open();
  await stateWhere(client, kind("open"));
  client.reconnectNow();
  assert.equal(client.state.kind, "open", "reconnectNow() while open does nothing");
  // While open, becoming visible checks the connection with a ping.
  const before = s4.sent.filter((f) => f.type === "ping").length;
  env.setVisibility("hidden");
  env.setVisibility("visible");
  assert.equal(s4.sent.filter((f) => f.type === "ping").length, before + 1);
  assert.equal(hub.sockets.length, 4);
  client.close();
});

test("a request unanswered within requestTimeoutMs rejects with timeout", async () => {
  const { hub, client } = setup({ requestTimeoutMs: 50 });
  client.connect();
  const sock = await hub.nextConnection();
  await stateWhere(client, kind("open"));
  const p = client.searchCustomers("joao");
  const req = await sock.nextRequest("search_customers");
  assert.deepEqual({ ...req, id: undefined }, { type: "search_customers", query: "joao", id: undefined });
  await assert.rejects(p, (e) => e instanceof HubError && e.code === "timeout" && e.request === "search_customers");
  // A late answer is ignored.
  sock.reply(req, { customers: [] });
  assert.equal(client.state.kind, "open");
  client.close();
});

test("an unanswered heartbeat ping drops the connection and reconnects at once", async () => {
  const { hub, client } = setup({ requestTimeoutMs: 50, backoff: { minMs: 60000, maxMs: 60000 } }, { answerPings: false });
  client.connect();
  const first = await hub.nextConnection();
  await stateWhere(client, kind("open"));
  await first.nextRequest("ping");
  const r = await stateWhere(client, kind("reconnecting"));
  assert.equal(r.retryInMs, 0);
  assert.equal((await first.whenClosed()).code, 1000, "the dead socket is closed by the client");
  const second = await hub.nextConnection();
  assert.notEqual(second, first);
  client.close();
});

for (const reason of Object.keys(GOODBYE_CLOSE_CODES)) {
  test(`goodbye ${reason}: ${["replaced", "logged_out", "logged_out_by_supervisor"].includes(reason) ? "stop" : "reconnect"}`, async () => {
    const { hub, client, env } = setup({ backoff: { minMs: 100, maxMs: 10000 } });
    client.connect();
    const sock = await hub.nextConnection();
    await stateWhere(client, kind("open"));
    const goodbye = nextEvent(client, "goodbye");
    sock.goodbye(reason);
    assert.equal((await goodbye).reason, reason);
    const code = GOODBYE_CLOSE_CODES[reason];
    const s = await stateWhere(client, (x) => x.kind === "closed" || x.kind === "reconnecting");
    if (["replaced", "logged_out", "logged_out_by_supervisor"].includes(reason)) {
      assert.deepEqual(s, { kind: "closed", reason, code });
      env.goOnline();
      env.setVisibility("visible");
      assert.equal(hub.sockets.length, 1, "no reconnect");
      assert.equal(client.state.kind, "closed");
    } else {
      assert.equal(s.code, code);
      assert.equal(s.reason, reason);
      if (reason === "reconnect") assert.equal(s.retryInMs, 0, "reconnect: at once");
      else if (reason === "rate_limited") assert.ok(s.retryInMs >= 5000 && s.retryInMs <= 10000, `slowly: ${s.retryInMs}`);
      else assert.ok(s.retryInMs >= 100 && s.retryInMs <= 200, `backoff: ${s.retryInMs}`);
      env.goOnline();
      await within(hub.nextConnection(), "a new connection");
      await stateWhere(client, kind("open"));
    }
    client.close();
  });
}

test("close codes 4001 and 4002 without a goodbye still stop", async () => {
  for (const [code, reason] of [
    [4001, "replaced"],
    [4002, "logged_out"],
  ]) {
    const { hub, client } = setup();
    client.connect();
    const sock = await hub.nextConnection();
    await stateWhere(client, kind("open"));
    sock.serverClose(code, "");
    assert.deepEqual(await stateWhere(client, kind("closed")), { kind: "closed", reason, code });
  }
});

test("logout(): reply, goodbye logged_out, closed without reconnect", async () => {
  const { hub, client } = setup();
  client.connect();
  const sock = await hub.nextConnection();
  await stateWhere(client, kind("open"));
  const p = client.logout();
  const req = await sock.nextRequest("logout");
  sock.reply(req, {});
  sock.goodbye("logged_out");
  assert.deepEqual(await p, {});
  assert.deepEqual(await stateWhere(client, kind("closed")), { kind: "closed", reason: "logged_out", code: 4002 });
});

test("tokens: unreadable or not an agent's stop before connecting; the page sets a new one", async () => {
  for (const [token, reason] of [
    ["not-a-jwt", "unauthorized"],
    ["a.b.c", "unauthorized"],
    [makeToken({ exp: "soon" }), "unauthorized"],
    [makeToken({ role: "integration" }), "forbidden"],
  ]) {
    const { hub, client } = setup({ token });
    client.connect();
    assert.deepEqual(await stateWhere(client, kind("closed")), { kind: "closed", reason });
    assert.equal(hub.sockets.length, 0, `${reason}: no connection attempted`);
    client.setToken(makeToken());
    client.connect();
    await stateWhere(client, kind("open"));
    client.close();
  }
});

test("an expired token: tried once while the clock is unmeasured, then token_expired; never tried once measured", async () => {
  const now = Math.floor(Date.now() / 1000);
  {
    const { hub, client } = setup({ token: makeToken({ exp: now - 5 }) }, { autoOpen: false });
    client.connect();
    (await hub.nextConnection()).refuse();
    assert.deepEqual(await stateWhere(client, kind("closed")), { kind: "closed", reason: "token_expired", code: 1006 });
    assert.equal(hub.sockets.length, 1);
  }
  {
    // Connected (clock measured); the token expires meanwhile; the next connect is not attempted.
    const { hub, client } = setup({ backoff: { minMs: 10, maxMs: 20 } });
    client.connect();
    const sock = await hub.nextConnection();
    await stateWhere(client, kind("open"));
    client.setToken(makeToken({ exp: now - 5 }));
    sock.goodbye("shutting_down");
    assert.deepEqual(await stateWhere(client, kind("closed")), { kind: "closed", reason: "token_expired" });
    assert.equal(hub.sockets.length, 1);
  }
  {
    // A desktop whose clock runs 2 h fast holds a token valid for 1 h on the hub's clock: it connects.
    const { hub, client } = setup({ token: makeToken({ exp: now + 3600 }), now: () => Date.now() + 7_200_000 });
    client.connect();
    await hub.nextConnection();
    await stateWhere(client, kind("open"));
    assert.ok(Math.abs(client.clockOffsetMs + 7_200_000) < 1000, `offset ${client.clockOffsetMs}`);
    client.close();
  }
});

test("a token function is asked on every connect", async () => {
  let asked = 0;
  const { hub, client } = setup({
    token: async () => {
      asked += 1;
      return makeToken({ sub: `ana${asked}` });
    },
  });
  client.connect();
  const s1 = await hub.nextConnection();
  await stateWhere(client, kind("open"));
  s1.drop();
  const s2 = await hub.nextConnection();
  await stateWhere(client, kind("open"));
  assert.equal(asked, 2);
  assert.ok(s1.token !== s2.token, "the second connect used the new token");
  client.close();
});

test("typed errors carry code, field, limit and a version_conflict's current record", async () => {
  const { hub, client } = setup();
  client.connect();
  const sock = await hub.nextConnection();
  await stateWhere(client, kind("open"));
  const p1 = client.updateRequest("00000000-0000-4000-8000-000000000009", 1, { title: "x".repeat(2001) });
  sock.error(await sock.nextRequest("update_request"), "field_too_long", "too long", { field: "title", limit: 2000 });
  await assert.rejects(p1, (e) => e instanceof HubError && e.code === "field_too_long" && e.field === "title" && e.limit === 2000);
  const current = { request_id: "r", title: "theirs" };
  const p2 = client.updateRequest("00000000-0000-4000-8000-000000000009", 1, { title: "mine" });
  sock.error(await sock.nextRequest("update_request"), "version_conflict", "changed", {
    current,
    version: 2,
    changed_by: { id: "bo", role: "agent" },
    changed_at: "2026-11-24T09:38:00.192Z",
  });
  await assert.rejects(p2, (e) => e.code === "version_conflict" && e.version === 2 && e.current.title === "theirs" && e.changed_by.id === "bo" && e.frame.type === "error");
  // An error answering no request is an `error` event, and the connection stays.
  const unsolicited = nextEvent(client, "error");
  sock.error(null, "rate_limited");
  assert.equal((await unsolicited).code, "rate_limited");
  assert.equal(client.state.kind, "open");
  client.close();
});

test("the agent view follows the version rule; state frames and replies update it", async () => {
  const { hub, client } = setup({}, { handle: (f) => (f.type === "set_state" ? { agent: makeAgentView({ status: "ready", reason: undefined, version: 2 }) } : undefined) });
  client.connect();
  const sock = await hub.nextConnection();
  await stateWhere(client, kind("open"));
  const seen = [];
  const off = client.on("agent", (a) => seen.push(a.version));
  const r = await client.setState("ready");
  assert.equal(r.agent.status, "ready");
  assert.equal(client.agent.version, 2);
  const stateFrames = [];
  client.on("state", (f) => stateFrames.push(f.agent.version));
  sock.push({ type: "state", agent: makeAgentView({ status: "ready", version: 2 }) });
  sock.push({ type: "state", agent: makeAgentView({ status: "not_ready", reason: "break", version: 1 }) });
  sock.push({ type: "state", agent: makeAgentView({ status: "not_ready", reason: "lunch", version: 3 }) });
  await nextEvent(client, "agent", (a) => a.version === 3);
  assert.deepEqual(seen, [2, 3], "stale and equal versions are dropped");
  assert.deepEqual(stateFrames, [2, 1, 3], "every state frame is still reported");
  assert.equal(client.agent.reason, "lunch");
  off();
  sock.push({ type: "state", agent: makeAgentView({ version: 4 }) });
  await nextEvent(client, "agent", (a) => a.version === 4);
  assert.deepEqual(seen, [2, 3], "unsubscribed");
  // A new welcome starts afresh, even with a lower version (a restarted hub).
  sock.drop();
  await stateWhere(client, kind("reconnecting"));
  await stateWhere(client, kind("open"));
  assert.equal(client.agent.version, 1);
  client.close();
});

test("resume: a welcome with a pending offer announces it once; lists come from the welcome", async () => {
  const offer = makeOffer();
  const agent = makeAgentView({ status: "reserved", offer, version: 7 });
  const lists = { open: [{ customer: null, activity_id: null, request_id: null, task_id: null, since: "2026-11-24T09:38:00.192Z" }], recent: [] };
  const { hub, client } = setup({}, { welcome: (s) => (hub.sockets.indexOf(s) === 0 ? {} : { resumed: true, agent, lists }) });
  const offers = [];
  client.on("offer", (o) => offers.push(o.offer_id));
  client.connect();
  const first = await hub.nextConnection();
  await stateWhere(client, kind("open"));
  first.push({ type: "offer", offer });
  await nextEvent(client, "frame", (f) => f.type === "offer");
  first.drop();
  const welcome = await nextEvent(client, "welcome");
  assert.equal(welcome.resumed, true);
  assert.deepEqual(offers, [offer.offer_id], "the offer already shown is not announced again");
  assert.equal(client.offer.offer_id, offer.offer_id);
  assert.deepEqual(client.lists, lists);
  // A client that missed the offer frame (it arrived while disconnected) gets it from the welcome.
  const other = setup({}, { welcome: () => ({ resumed: true, agent, lists }) });
  const got = nextEvent(other.client, "offer");
  other.client.connect();
  assert.equal((await got).offer_id, offer.offer_id);
  other.client.close();
  client.close();
});

test("clock offset: from the welcome, refined by ping; remainingMs counts down on the hub's clock", async () => {
  const skew = 90_000; // the hub's clock is 90 s ahead of this desktop's
  let local = Date.parse("2026-11-24T09:00:00.000Z");
  const { hub, client } = setup({ now: () => local }, { now: () => local + skew });
  client.connect();
  const sock = await hub.nextConnection();
  const open = await stateWhere(client, kind("open"));
  assert.equal(client.clockOffsetMs, skew, "welcome estimate");
  assert.equal(Date.parse(open.welcome.server_time), local + skew);
  await client.ping();
  assert.equal(client.clockOffsetMs, skew);
  const offer = makeOffer({}, { now: local + skew, timeoutMs: 15000 });
  sock.push({ type: "offer", offer });
  const o = await nextEvent(client, "offer");
  assert.equal(client.remainingMs(o.deadline), 15000);
  local += 4000;
  assert.equal(client.remainingMs(o.deadline), 11000);
  assert.equal(client.serverNow(), local + skew);
  local += 20000;
  assert.equal(client.remainingMs(o.deadline), 0);
  assert.equal(client.remainingMs("not a time"), 0);
  client.close();
});

test("the shortest ping round trip wins the clock estimate", async () => {
  let local = 1_000_000;
  // The hub answers pings by hand so the test controls each round trip.
  const { hub, client } = setup({ now: () => local }, { now: () => local + 5000, answerPings: false });
  client.connect();
  const sock = await hub.nextConnection();
  await stateWhere(client, kind("open"));
  await sock.nextRequest("ping"); // the heartbeat's own ping stays unanswered
  // A slow trip: sent at 1_000_000, answered at hub time 1_005_000 + 1000, received 2000 ms later.
  let p = client.ping();
  let req = await sock.nextRequest("ping");
  local += 2000;
  sock.reply(req, { server_time: new Date(1_000_000 + 5000 + 1000).toISOString() });
  await p;
  assert.equal(client.clockOffsetMs, 5000);
  // A fast trip with a different answer (100 ms): it wins.
  p = client.ping();
  req = await sock.nextRequest("ping");
  const sent = local;
  local += 100;
  sock.reply(req, { server_time: new Date(sent + 50 + 4990).toISOString() });
  await p;
  assert.equal(client.clockOffsetMs, 4990);
  // A later slow, wrong trip does not displace it.
  p = client.ping();
  req = await sock.nextRequest("ping");
  local += 3000;
  sock.reply(req, { server_time: new Date(local).toISOString() });
  await p;
  assert.equal(client.clockOffsetMs, 4990);
  client.close();
});

test("frames the client does not know, or that are not JSON, are ignored", async () => {
  const { hub, client } = setup();
  client.connect();
  const sock = await hub.nextConnection();
  await stateWhere(client, kind("open"));
  sock.pushRaw("{not json");
  sock.pushRaw("[1, 2]");
  sock.pushRaw("null");
  sock.push({ type: "something_new", x: 1 });
  // Frames that do not fit the schema: dropped, nothing throws, nothing changes.
  const pending = client.getState();
  const req = await sock.nextRequest("get_state");
  for (const bad of [
    { type: "offer" },
    { type: "offer", offer: null },
    { type: "state", agent: null },
    { type: "state", agent: { agent_id: "ana", version: "9" } },
    { type: "welcome", agent: {} },
    { type: "reply", re: req.id },
    { type: "reply", re: req.id, result: "x" },
    { type: "error", re: req.id },
    { type: "goodbye" },
  ]) {
    sock.push(bad);
  }
  sock.push({ type: "queue_changed", queue: { queue_id: "support" } });
  const q = await nextEvent(client, "queue_changed");
  assert.equal(q.queue.queue_id, "support");
  assert.equal(client.state.kind, "open");
  assert.equal(client.agent.version, 1);
  // The request is still pending, and a proper answer settles it.
  sock.reply(req, { agent: makeAgentView({ version: 2 }) });
  assert.equal((await pending).agent.version, 2);
  client.close();
});

test("FakeHub handle(): scripted replies and errors", async () => {
  const { hub, client } = setup({}, {
    handle: (f) => {
      if (f.type === "get_lists") return { lists: { open: [], recent: [] } };
      if (f.type === "accept") return fakeError("offer_expired", "too late");
      return undefined;
    },
  });
  client.connect();
  await hub.nextConnection();
  await stateWhere(client, kind("open"));
  assert.deepEqual(await client.getLists(), { lists: { open: [], recent: [] } });
  await assert.rejects(client.accept("00000000-0000-4000-8000-000000000001"), (e) => e.code === "offer_expired" && e.message === "too late");
  client.close();
});

test("close() while a token function is pending: the late token opens nothing", async () => {
  let give;
  const { hub, client } = setup({ token: () => new Promise((r) => (give = r)) });
  client.connect();
  assert.equal(client.state.kind, "connecting");
  client.close();
  give(makeToken());
  // Let every continuation of the token promise run.
  await new Promise((r) => setImmediate(r));
  assert.equal(hub.sockets.length, 0);
  assert.deepEqual(client.state, { kind: "closed", reason: "client" });
});

test("a listener that closes the client when it opens: closed, no welcome event, no heartbeat", async () => {
  const { hub, client } = setup();
  const welcomes = [];
  client.on("welcome", (w) => welcomes.push(w));
  client.on("connection", (s) => {
    if (s.kind === "open") client.close();
  });
  client.connect();
  const sock = await hub.nextConnection();
  await stateWhere(client, kind("closed"));
  await sock.whenClosed();
  assert.deepEqual(welcomes, []);
  assert.deepEqual(sock.sent, [], "no ping was sent");
});

test("a listener that closes the client on reconnecting: it stays closed, no socket is opened later", async () => {
  const { hub, client } = setup({ backoff: { minMs: 20, maxMs: 20 } });
  client.on("connection", (s) => {
    if (s.kind === "reconnecting") client.close();
  });
  client.connect();
  const first = await hub.nextConnection();
  await stateWhere(client, kind("open"));
  // A drop right after a welcome reconnects at once; the second drop waits the backoff.
  first.drop();
  await stateWhere(client, kind("closed"));
  // Longer than the backoff: a timer set after the news would have opened a socket by now.
  await new Promise((r) => setTimeout(r, 80));
  assert.equal(hub.sockets.length, 1, "no socket opened after close()");
  assert.deepEqual(client.state, { kind: "closed", reason: "client" });
});

test("reconnectNow() from a reconnecting listener opens one socket, not two", async () => {
  const { hub, client } = setup({ backoff: { minMs: 20, maxMs: 20 } }, { autoOpen: false, welcome: false });
  let asked = 0;
  client.on("connection", (s) => {
    if (s.kind === "reconnecting" && asked++ === 0) client.reconnectNow();
  });
  client.connect();
  const first = await hub.nextConnection();
  first.drop();
  const second = await hub.nextConnection();
  second.open();
  second.welcome();
  await stateWhere(client, kind("open"));
  // Past the backoff: the timer of the first reconnecting must not open a third.
  await new Promise((r) => setTimeout(r, 80));
  assert.equal(hub.sockets.length, 2, `sockets opened: ${hub.sockets.length}`);
  assert.equal(client.state.kind, "open");
});

test("a token function that fails is retried with backoff", async () => {
  let calls = 0;
  const { hub, client } = setup({
    backoff: { minMs: 5, maxMs: 10 },
    token: async () => {
      calls += 1;
      if (calls === 1) throw new Error("token service down");
      return makeToken();
    },
  });
  client.connect();
  const r = await stateWhere(client, kind("reconnecting"));
  assert.match(r.reason, /token service down/);
  await hub.nextConnection();
  await stateWhere(client, kind("open"));
  assert.equal(calls, 2);
  client.close();
});

test("an attempt that never gets its welcome is abandoned after requestTimeoutMs and retried", async () => {
  const { hub, client } = setup({ requestTimeoutMs: 50, backoff: { minMs: 5, maxMs: 10 } }, { autoOpen: false, welcome: false });
  client.connect();
  const hung = await hub.nextConnection(); // never opens
  const r = await stateWhere(client, kind("reconnecting"));
  assert.match(r.reason, /no welcome within 50 ms/);
  assert.ok(r.retryInMs >= 5 && r.retryInMs <= 10, "backoff, not at once");
  assert.ok(hung.closedByClient, "the hung socket is closed");
  const opened = await hub.nextConnection(); // opens, but the hub never says welcome
  opened.open();
  await stateWhere(client, (s) => s.kind === "reconnecting" && s.attempt === 3);
  assert.ok(opened.closedByClient);
  const third = await hub.nextConnection();
  third.open();
  third.welcome();
  await stateWhere(client, kind("open"));
  client.close();
});
