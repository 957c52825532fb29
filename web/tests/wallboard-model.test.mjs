// What the wallboard shows, without a hub or a browser: web/src/wallboard/model.ts (bundled
// here with esbuild) on boards made with the client library's FakeHub helpers
// (makeAgentSummary, makeQueueStats, makeStats, ...): tiles, the service level's colour at
// its edges, the oldest wait from the statistics or from the queue line, rows with the
// current task and missed offers, filters by queue and team, and every sort.
import { test } from "node:test";
import assert from "node:assert/strict";
import * as esbuild from "esbuild";
import { join } from "node:path";
import { repo } from "./harness.mjs";

async function load(entry) {
  const out = await esbuild.build({
    entryPoints: [join(repo, entry)],
    bundle: true,
    write: false,
    format: "esm",
    platform: "neutral",
    logLevel: "warning",
  });
  return import(`data:text/javascript;base64,${Buffer.from(out.outputFiles[0].contents).toString("base64")}`);
}

const M = await load("web/src/wallboard/model.ts");
const F = await load("clients/typescript/src/testing.ts");

const T0 = Date.parse("2026-11-26T09:00:00Z");
const iso = (ms) => new Date(ms).toISOString();

function board({ agents = [], queues = [], stats = null, seen = T0 } = {}) {
  return {
    agents: new Map(agents.map((a) => [a.agent_id, a])),
    queues: new Map(queues.map((q) => [q.queue_id, q])),
    queueSeenAt: new Map(queues.map((q) => [q.queue_id, seen])),
    stats,
  };
}

const agents = [
  F.makeAgentSummary({ agent_id: "ana", name: "Ana", team: "Blue", status: "ready", reason: undefined, since: iso(T0 - 60_000), queues: ["support"] }),
  F.makeAgentSummary({
    agent_id: "bo",
    name: "Bo",
    team: "Green",
    status: "busy",
    reason: undefined,
    since: iso(T0 - 5_000),
    queues: ["support", "sales"],
    in_progress: 2,
    tasks: [
      { task_id: "t1", channel: "voice", since: iso(T0 - 5_000) },
      { task_id: "t2", channel: "chat", since: iso(T0 - 1_000) },
    ],
  }),
  F.makeAgentSummary({ agent_id: "cy", name: "Cy", status: "not_ready", reason: "break", since: iso(T0 - 600_000), queues: ["sales"] }),
  F.makeAgentSummary({ agent_id: "di", name: "Di", team: "Blue", status: "wrap_up", reason: undefined, since: iso(T0 - 2_000), queues: ["sales"] }),
];

test("the service level's colour: on target, within 10 points under it, further below, none", () => {
  assert.equal(M.serviceLevelClass(0.8, 0.8), "ok");
  assert.equal(M.serviceLevelClass(0.79999, 0.8), "warn");
  assert.equal(M.serviceLevelClass(0.7, 0.8), "warn");
  assert.equal(M.serviceLevelClass(0.69999, 0.8), "bad");
  assert.equal(M.serviceLevelClass(null, 0.8), "none");
  // `?target=`: an override in percent, or none (each queue's configured target).
  assert.equal(M.parseTarget("90"), 0.9);
  assert.equal(M.parseTarget(null), null);
  assert.equal(M.parseTarget(""), null);
  assert.equal(M.parseTarget("0"), null);
  assert.equal(M.parseTarget("abc"), null);
});

test("tiles colour each queue against its configured target, unless the URL overrides it", () => {
  const queues = [
    F.makeQueueStats({ queue_id: "support", name: "Support" }),
    F.makeQueueStats({ queue_id: "sales", name: "Sales" }),
  ];
  // Both at 85 %: Support aims at 95 % (10 points short: amber), Sales at 80 % (on target).
  const stats = F.makeStats({
    queues: [
      F.makeStatsQueue({ queue_id: "support", service_level_target: 0.95, today: F.makeStatsWindow({ service_level: 0.85 }) }),
      F.makeStatsQueue({ queue_id: "sales", service_level_target: 0.8, today: F.makeStatsWindow({ service_level: 0.85 }) }),
    ],
  });
  const all = { queue: M.ALL, team: M.ALL };
  const levels = (override) => M.tiles(board({ queues, stats }), all, override).map((t) => [t.queueId, t.target, t.level]);
  assert.deepEqual(levels(), [
    ["sales", 0.8, "ok"],
    ["support", 0.95, "warn"],
  ]);
  // 0.849 against 0.95 is more than 10 points under: red.
  stats.queues[0].today.service_level = 0.849;
  assert.equal(M.tiles(board({ queues, stats }), all)[1].level, "bad");
  stats.queues[0].today.service_level = 0.85;
  // `?target=90` judges both against 90 %.
  assert.deepEqual(levels(M.parseTarget("90")), [
    ["sales", 0.9, "warn"],
    ["support", 0.9, "warn"],
  ]);
  // No statistics yet: the hub's default, and no colour.
  assert.deepEqual(M.tiles(board({ queues }), all).map((t) => [t.target, t.level]), [
    [0.8, "none"],
    [0.8, "none"],
  ]);
  assert.equal(M.queueTarget(stats.queues[0]), 0.95);
  assert.equal(M.queueTarget(undefined), 0.8);
});

test("tiles: waiting, the oldest wait (statistics first, else counted back from the queue line), agents by status, today", () => {
  const queues = [
    F.makeQueueStats({ queue_id: "support", name: "Support", waiting: 2, longest_wait_ms: 30_000 }),
    F.makeQueueStats({ queue_id: "sales", name: "Sales", waiting: 1, longest_wait_ms: 7_000 }),
  ];
  // Without statistics: the wait counted back from when each line arrived.
  let tiles = M.tiles(board({ agents, queues }), { queue: M.ALL, team: M.ALL });
  assert.deepEqual(
    tiles.map((t) => [t.queueId, t.waiting, t.oldestAt, t.ready, t.busy, t.wrapUp, t.notReady, t.level, t.offered]),
    [
      ["sales", 1, T0 - 7_000, 0, 1, 1, 1, "none", null],
      ["support", 2, T0 - 30_000, 1, 1, 0, 0, "none", null],
    ],
  );
  // With statistics: their enqueue time, today's figures and the colour.
  const stats = F.makeStats({
    queues: [
      F.makeStatsQueue({
        queue_id: "support",
        now: { ...F.makeStatsQueue().now, waiting: 2, oldest_enqueued_at: iso(T0 - 31_500) },
        today: F.makeStatsWindow({ offered: 10, answered: 8, abandoned: 1, service_level: 0.75 }),
      }),
    ],
  });
  tiles = M.tiles(board({ agents, queues, stats }), { queue: "support", team: M.ALL });
  assert.equal(tiles.length, 1);
  assert.equal(tiles[0].oldestAt, T0 - 31_500);
  assert.deepEqual([tiles[0].offered, tiles[0].answered, tiles[0].abandoned, tiles[0].serviceLevel, tiles[0].level], [10, 8, 1, 0.75, "warn"]);
  assert.equal(M.tiles(board({ agents, queues, stats }), { queue: "support", team: M.ALL }, 0.75)[0].level, "ok");
  // Nothing waits: no oldest wait, whatever the line says.
  const idle = M.tiles(board({ queues: [F.makeQueueStats({ waiting: 0, longest_wait_ms: 99 })] }), { queue: M.ALL, team: M.ALL });
  assert.equal(idle[0].oldestAt, null);
  // The team filter narrows the tiles' agent counts.
  tiles = M.tiles(board({ agents, queues }), { queue: "sales", team: "Blue" });
  assert.deepEqual([tiles[0].busy, tiles[0].wrapUp, tiles[0].notReady], [0, 1, 0]);
});

test("rows: the longest-held task and how many more, missed offers from the statistics, filters", () => {
  const stats = F.makeStats({
    agents: [{ agent_id: "cy", name: "Cy", today: { status_ms: { offline: 0, not_ready: 0, ready: 0, reserved: 0, busy: 0, wrap_up: 0 }, not_ready_ms: {}, handled: { voice: 0, chat: 0, email: 0 }, avg_handle_ms: null, offers_missed: 2, offers_declined: 0 } }],
  });
  const b = board({ agents, stats });
  const all = M.rows(b, { queue: M.ALL, team: M.ALL }, { key: "name", desc: false });
  assert.deepEqual(all.map((r) => r.agent.agent_id), ["ana", "bo", "cy", "di"]);
  const bo = all[1];
  assert.deepEqual(bo.task, { taskId: "t1", channel: "voice", since: T0 - 5_000 });
  assert.equal(bo.moreTasks, 1);
  assert.deepEqual(all.map((r) => r.missed), [0, 0, 2, 0]);
  assert.equal(M.rows(board({ agents }), { queue: M.ALL, team: M.ALL }, { key: "name", desc: false })[0].missed, null, "no statistics: unknown");
  const f = (queue, team) => M.rows(b, { queue, team }, { key: "name", desc: false }).map((r) => r.agent.agent_id);
  assert.deepEqual(f("sales", M.ALL), ["bo", "cy", "di"]);
  assert.deepEqual(f(M.ALL, "Blue"), ["ana", "di"]);
  assert.deepEqual(f(M.ALL, M.NO_TEAM), ["cy"]);
  assert.deepEqual(f("support", "Blue"), ["ana"]);
  assert.deepEqual(M.teams(b), { teams: ["Blue", "Green"], someWithout: true });
});

test("sorts: each column both ways, ties by name", () => {
  const b = board({ agents, stats: F.makeStats({ agents: [] }) });
  const by = (key, desc = false) => M.rows(b, { queue: M.ALL, team: M.ALL }, { key, desc }).map((r) => r.agent.agent_id);
  assert.deepEqual(by("name"), ["ana", "bo", "cy", "di"]);
  assert.deepEqual(by("name", true), ["di", "cy", "bo", "ana"]);
  assert.deepEqual(by("status"), ["bo", "di", "ana", "cy"]);
  assert.deepEqual(by("since"), ["cy", "ana", "bo", "di"], "longest in state first");
  assert.deepEqual(by("team"), ["ana", "di", "bo", "cy"], "no team last; ties by name");
  assert.deepEqual(by("task"), ["bo", "ana", "cy", "di"], "the oldest task first, then those without, by name");
  assert.deepEqual(by("missed"), ["ana", "bo", "cy", "di"], "all 0: by name");
});

test("clock: minutes and seconds, hours when needed, never negative", () => {
  assert.equal(M.clock(0), "0:00");
  assert.equal(M.clock(59_999), "0:59");
  assert.equal(M.clock(61_000), "1:01");
  assert.equal(M.clock(3_725_000), "1:02:05");
  assert.equal(M.clock(-5_000), "0:00");
});
