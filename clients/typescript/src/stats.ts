// The hub's statistics (`GET /v1/stats`, `snapshot.stats`, the `stats` frame), as the
// team's contract for issue 15 describes them, until the schema defines them.

/** A count, a duration in milliseconds, or null when there is nothing to average. */
type Ms = number | null;

/** A window's figures (today since local midnight, the last 15 or 30 minutes). */
export interface StatsWindow {
  offered: number;
  answered: number;
  abandoned: number;
  abandoned_short: number;
  answered_within_threshold: number;
  /** 0..1, or null when nothing counts yet. */
  service_level: number | null;
  service_level_threshold_ms: number;
  avg_speed_of_answer_ms: Ms;
  max_speed_of_answer_ms: Ms;
  avg_handle_ms: Ms;
  avg_wrap_up_ms: Ms;
  offers_accepted: number;
  offers_declined: number;
  offers_expired: number;
  requeued: number;
  transfers_in: number;
  transfers_out: number;
}

/** One 15-minute bucket of the day. */
export interface StatsBucket {
  start: string;
  waiting: number;
  offered: number;
  answered: number;
  service_level: number | null;
}

export interface QueueNow {
  waiting: number;
  waiting_by_channel: Record<string, number>;
  waiting_by_priority: Record<string, number>;
  /** The oldest waiting task's enqueue time (tick its wait on the hub's clock), or null. */
  oldest_enqueued_at: string | null;
  agents: Record<"offline" | "not_ready" | "ready" | "reserved" | "busy" | "wrap_up", number>;
  not_ready_reasons: Record<string, number>;
  eligible_ready: number;
  offers_pending: number;
}

export interface QueueStatistics {
  queue_id: string;
  now: QueueNow;
  today: StatsWindow;
  last_15m: StatsWindow;
  last_30m: StatsWindow;
  series: StatsBucket[];
}

export interface AgentStatistics {
  agent_id: string;
  name: string;
  today: {
    status_ms: Record<string, number>;
    not_ready_ms: Record<string, number>;
    handled: Record<string, number>;
    avg_handle_ms: Ms;
    offers_missed: number;
    offers_declined: number;
  };
}

/** The whole answer of `GET /v1/stats`, also `snapshot.stats` and the `stats` frame's `stats`. */
export interface StatsReport {
  generated_at: string;
  timezone: string;
  day_start: string;
  queues: QueueStatistics[];
  agents: AgentStatistics[];
}

/** Supervisors: `{"type": "stats", "stats": ...}`, pushed at most every `server.stats_update_ms`. */
export interface ServerStats {
  type: "stats";
  stats: StatsReport;
}
