// What the wallboard shows, computed from the supervisor's board (pure functions, no DOM):
// each queue's tile, each agent's row, the filters and the sort. Times are the hub's
// (ms since the epoch); the page ticks them with the client's clock offset.
import type { AgentSummary, Board, StatsQueue, StatsReport, Status } from "../../../clients/typescript/src/index.ts";

/**
 * The service level a queue aims at, as a fraction, when nothing says otherwise: the
 * hub's default for `[[queues]] service_level_target` (80 %). Each queue's statistics
 * carry its configured target (`service_level_target`), which the wallboard uses.
 */
export const SERVICE_LEVEL_TARGET = 0.8;

/**
 * `?target=` as a fraction: a percentage from 1 to 100 that overrides every queue's
 * configured target (a wall screen judging against a stricter objective), else null.
 */
export function parseTarget(param: string | null): number | null {
  const n = Number(param);
  return param !== null && param.trim() !== "" && Number.isFinite(n) && n >= 1 && n <= 100 ? n / 100 : null;
}

/** The target a queue's service level is coloured against: the URL's override, else its configured one. */
export function queueTarget(s: StatsQueue | undefined, override: number | null = null): number {
  return override ?? s?.service_level_target ?? SERVICE_LEVEL_TARGET;
}
/** Within this many points under the target a tile is amber, further below red. */
export const SERVICE_LEVEL_MARGIN = 0.1;

export type Level = "ok" | "warn" | "bad" | "none";

export interface Tile {
  queueId: string;
  name: string;
  waiting: number;
  /** When the oldest waiting task was enqueued (hub time), or null when none waits. */
  oldestAt: number | null;
  serviceLevel: number | null;
  thresholdMs: number | null;
  /** The target the level is judged against, as a fraction. */
  target: number;
  level: Level;
  ready: number;
  busy: number;
  wrapUp: number;
  notReady: number;
  offered: number | null;
  answered: number | null;
  abandoned: number | null;
}

export interface Row {
  agent: AgentSummary;
  /** The longest-held task in progress, and how many more. */
  task: { taskId: string; channel: string; since: number } | null;
  moreTasks: number;
  missed: number | null;
}

export type SortKey = "name" | "team" | "status" | "since" | "task" | "missed";

export interface Filters {
  queue: string;
  team: string;
}

/** Any queue, any team. */
export const ALL = "";
/** The team filter's value for agents without a team. */
export const NO_TEAM = "\u0000none";

const STATUS_ORDER: Record<Status, number> = { reserved: 0, busy: 1, wrap_up: 2, ready: 3, not_ready: 4, offline: 5 };

export function serviceLevelClass(sl: number | null, target = SERVICE_LEVEL_TARGET): Level {
  if (sl === null || Number.isNaN(sl)) return "none";
  if (sl >= target) return "ok";
  // 0.8 - 0.1 is 0.7000000000000001 in floating point: compare with a hair's tolerance.
  if (sl >= target - SERVICE_LEVEL_MARGIN - 1e-9) return "warn";
  return "bad";
}

function queueStats(stats: StatsReport | null, queueId: string): StatsQueue | undefined {
  return stats?.queues.find((q) => q.queue_id === queueId);
}

export function tiles(board: Board, filters: Filters, targetOverride: number | null = null): Tile[] {
  const out: Tile[] = [];
  const agents = [...board.agents.values()].filter((a) => teamMatches(a, filters.team));
  for (const q of [...board.queues.values()].sort((a, b) => a.queue_id.localeCompare(b.queue_id))) {
    if (filters.queue !== ALL && q.queue_id !== filters.queue) continue;
    const s = queueStats(board.stats, q.queue_id);
    let oldestAt: number | null = null;
    if (q.waiting > 0) {
      const fromStats = s?.now.oldest_enqueued_at ? Date.parse(s.now.oldest_enqueued_at) : NaN;
      // The statistics' enqueue time when they have one; otherwise the queue line's wait
      // counted back from when it arrived.
      const seen = board.queueSeenAt.get(q.queue_id);
      oldestAt = !Number.isNaN(fromStats) ? fromStats : seen !== undefined && Number.isFinite(q.longest_wait_ms) ? seen - q.longest_wait_ms : null;
    }
    const serving = agents.filter((a) => a.queues.includes(q.queue_id));
    const count = (...st: Status[]) => serving.filter((a) => st.includes(a.status)).length;
    const sl = s?.today.service_level ?? null;
    const target = queueTarget(s, targetOverride);
    out.push({
      queueId: q.queue_id,
      name: q.name,
      waiting: q.waiting,
      oldestAt,
      serviceLevel: sl,
      thresholdMs: s?.today.service_level_threshold_ms ?? null,
      target,
      level: serviceLevelClass(sl, target),
      ready: count("ready"),
      busy: count("busy", "reserved"),
      wrapUp: count("wrap_up"),
      notReady: count("not_ready"),
      offered: s ? s.today.offered : null,
      answered: s ? s.today.answered : null,
      abandoned: s ? s.today.abandoned : null,
    });
  }
  return out;
}

function teamMatches(a: AgentSummary, team: string): boolean {
  if (team === ALL) return true;
  if (team === NO_TEAM) return !a.team;
  return a.team === team;
}

export function rows(board: Board, filters: Filters, sort: { key: SortKey; desc: boolean }): Row[] {
  const missed = new Map<string, number>();
  for (const a of board.stats?.agents ?? []) missed.set(a.agent_id, a.today.offers_missed);
  const list: Row[] = [];
  for (const a of board.agents.values()) {
    if (filters.queue !== ALL && !a.queues.includes(filters.queue)) continue;
    if (!teamMatches(a, filters.team)) continue;
    const tasks = Array.isArray(a.tasks) ? a.tasks : [];
    const first = tasks[0];
    list.push({
      agent: a,
      task: first ? { taskId: first.task_id, channel: first.channel, since: Date.parse(first.since) } : null,
      moreTasks: Math.max(0, (a.in_progress ?? tasks.length) - 1),
      missed: board.stats ? (missed.get(a.agent_id) ?? 0) : null,
    });
  }
  const cmp = comparator(sort.key);
  list.sort((x, y) => {
    const c = cmp(x, y);
    // Ties keep a stable order by name, whatever the direction.
    const r = sort.desc ? -c : c;
    return r !== 0 ? r : x.agent.name.localeCompare(y.agent.name) || x.agent.agent_id.localeCompare(y.agent.agent_id);
  });
  return list;
}

function comparator(key: SortKey): (x: Row, y: Row) => number {
  switch (key) {
    case "name":
      return (x, y) => x.agent.name.localeCompare(y.agent.name);
    case "team":
      return (x, y) => (x.agent.team ?? "\uffff").localeCompare(y.agent.team ?? "\uffff");
    case "status":
      return (x, y) => STATUS_ORDER[x.agent.status] - STATUS_ORDER[y.agent.status];
    case "since":
      // Longest in state first.
      return (x, y) => Date.parse(x.agent.since) - Date.parse(y.agent.since);
    case "task":
      return (x, y) => (x.task?.since ?? Infinity) - (y.task?.since ?? Infinity);
    case "missed":
      return (x, y) => (y.missed ?? -1) - (x.missed ?? -1);
  }
}

/** The teams on the board, sorted; whether some agent has none. */
export function teams(board: Board): { teams: string[]; someWithout: boolean } {
  const set = new Set<string>();
  let someWithout = false;
  for (const a of board.agents.values()) {
    if (a.team) set.add(a.team);
    else someWithout = true;
  }
  return { teams: [...set].sort((a, b) => a.localeCompare(b)), someWithout };
}

/** Hours, minutes and seconds of a duration (never negative): `4:07`, `1:02:09`. */
export function clock(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = String(s % 60).padStart(2, "0");
  return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${sec}` : `${m}:${sec}`;
}
