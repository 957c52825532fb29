// @switchboard/client: an agent desktop's or a supervisor console's connection to the
// switchboard hub (protocol switchboard.v1). Frame types come from protocol/v1/schema.json
// (./protocol.ts, generated); this file owns the connection: its state machine, reconnects,
// resume, requests and their answers, the clock offset, and a supervisor's board (the
// snapshot with the live changes laid over it). See README.md for the rules it follows and why.

import type {
  AgentSummary,
  AgentView,
  ClientFrame,
  CustomerFields,
  CustomersResult,
  CustomerView,
  ErrorCode,
  GoodbyeReason,
  JourneyResult,
  Lists,
  OfferView,
  ReplyActivity,
  ReplyAgent,
  ReplyEmpty,
  ReplyLists,
  ReplyNote,
  ReplyPing,
  ReplyRequest,
  ReplyResult,
  ReplyTask,
  RequestState,
  ServerAgentChanged,
  ServerError,
  ServerFrame,
  ServerGoodbye,
  ServerOfferEnded,
  ServerQueueChanged,
  ServerRecordChanged,
  ServerSnapshot,
  ServerState,
  ServerStats,
  ServerTaskCancelled,
  ServerTaskTransferred,
  ServerTransferEnded,
  ServerWelcome,
  QueueStats,
  Snapshot,
  StatsReport,
} from "./protocol.js";

export * from "./protocol.js";

/** The websocket subprotocol of this protocol version. */
export const PROTOCOL = "switchboard.v1";

/** Who the client connects as: an agent desktop (the default) or a supervisor console. */
export type Role = "agent" | "supervisor";

/** The open state: an agent's carries the `welcome`, a supervisor's the first `snapshot`. */
export type OpenState<R extends Role = "agent"> = R extends "supervisor"
  ? { kind: "open"; snapshot: ServerSnapshot }
  : { kind: "open"; welcome: ServerWelcome };

/**
 * Where the connection is. `open` means the hub's first frame arrived (an agent's
 * `welcome`, a supervisor's `snapshot`), not merely that the socket opened.
 */
export type ConnectionState<R extends Role = "agent"> =
  | { kind: "idle" }
  | { kind: "connecting"; attempt: number }
  | OpenState<R>
  | { kind: "reconnecting"; attempt: number; retryInMs: number; code?: number; reason?: string }
  | { kind: "closed"; reason: CloseReason; code?: number };

/**
 * A supervisor's picture of the floor: the last `snapshot` with every newer
 * `agent_changed` (by the version rule), `queue_changed` and `stats` laid over it. A new
 * snapshot (after a reconnect, or when the console fell behind) replaces it whole.
 */
export interface Board {
  /** Every agent's line, by agent id. */
  readonly agents: Map<string, AgentSummary>;
  /** Every queue's numbers, by queue id. */
  readonly queues: Map<string, QueueStats>;
  /**
   * When each queue's line arrived, on the hub's clock (ms since the epoch):
   * `longest_wait_ms` was measured then, so the oldest task waits since
   * `queueSeenAt - longest_wait_ms` (for hubs whose statistics lack `oldest_enqueued_at`).
   */
  readonly queueSeenAt: Map<string, number>;
  /** The latest statistics (`snapshot.stats`, then `stats` frames); null when the hub sends none. */
  stats: StatsReport | null;
}

/**
 * Why the client stopped for good (it does not reconnect on its own):
 * - `replaced`, `logged_out`, `logged_out_by_supervisor`: the hub's goodbye (close 4001 / 4002);
 * - `token_expired`: the token's `exp` has passed (read from the token before connecting);
 * - `unauthorized`: the token is not a readable JWT; `forbidden`: its role is not `agent`;
 *   for these three the page supplies a new token (`setToken`, or a token function) and calls `connect()`;
 * - `client`: `close()` was called.
 */
export type CloseReason =
  | "client"
  | "replaced"
  | "logged_out"
  | "logged_out_by_supervisor"
  | "token_expired"
  | "unauthorized"
  | "forbidden";

/** The part of the WebSocket API the client uses (a browser WebSocket, the `ws` package, or FakeHub's). */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: any) => any) | null;
  onmessage: ((ev: any) => any) | null;
  onclose: ((ev: any) => any) | null;
  onerror: ((ev: any) => any) | null;
}

export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

/** Where `online` and `visibilitychange` come from (the browser's `window` by default). */
export interface ClientEnvironment {
  addEventListener(type: string, fn: () => void): void;
  removeEventListener?(type: string, fn: () => void): void;
  document?: {
    visibilityState: string;
    addEventListener?(type: string, fn: () => void): void;
    removeEventListener?(type: string, fn: () => void): void;
  };
}

export interface ClientOptions<R extends Role = "agent"> {
  /** The hub's websocket URL, e.g. `ws://127.0.0.1:8080/v1/ws`; the token is added as `?access_token=`. */
  url: string;
  /** The agent's (or supervisor's) token, or a function asked for one before every (re)connect. */
  token: string | (() => string | Promise<string>);
  /** `supervisor` for a supervisor console (its token's role must be `supervisor`); default `agent`. */
  role?: R;
  /** The WebSocket constructor; default `globalThis.WebSocket`. */
  WebSocket?: WebSocketConstructor;
  /** Reconnect delays: default 500 .. 20000 ms, jittered (see README). */
  backoff?: { minMs?: number; maxMs?: number };
  /** How long a request waits for its answer; default 10000 ms, then it rejects with HubError `timeout`. */
  requestTimeoutMs?: number;
  /** Where `online` / `visibilitychange` come from; default `globalThis` when it has `addEventListener`; `null` for none. */
  environment?: ClientEnvironment | null;
  /** The local clock (ms since the epoch); default `Date.now`. Tests inject a skewed one. */
  now?: () => number;
  /** Random numbers in [0, 1) for the backoff jitter; default `Math.random`. */
  random?: () => number;
}

/** Every refused or unanswered request rejects with a HubError. */
export class HubError extends Error {
  /** The hub's error code, or `timeout` (no answer in time) or `disconnected` (not connected, or the socket dropped). */
  readonly code: ErrorCode | "timeout" | "disconnected";
  readonly field?: string;
  readonly limit?: number;
  /** For `version_conflict`: the record as it is now, its version, who changed it and when. */
  readonly current?: ServerError["current"];
  readonly version?: number;
  readonly changed_by?: ServerError["changed_by"];
  readonly changed_at?: string;
  /** The `error` frame, when the hub sent one. */
  readonly frame?: ServerError;
  /** The type of the request that failed. */
  readonly request?: string;

  constructor(code: HubError["code"], message: string, frame?: ServerError, request?: string) {
    super(message);
    this.name = "HubError";
    this.code = code;
    if (frame) {
      this.frame = frame;
      if (frame.field !== undefined) this.field = frame.field;
      if (frame.limit !== undefined) this.limit = frame.limit;
      if (frame.current !== undefined) this.current = frame.current;
      if (frame.version !== undefined) this.version = frame.version;
      if (frame.changed_by !== undefined) this.changed_by = frame.changed_by;
      if (frame.changed_at !== undefined) this.changed_at = frame.changed_at;
    }
    if (request !== undefined) this.request = request;
  }
}

/** Events: `client.on(name, fn)` returns the function that unsubscribes. */
export interface ClientEvents<R extends Role = "agent"> {
  /** Every change of `client.state`. */
  connection: ConnectionState<R>;
  /** After every (re)connect; `.resumed` says whether the hub kept the session (offer, In Progress). */
  welcome: ServerWelcome;
  /** Every offer frame's `offer`; also a pending offer found in a `welcome` that this client had not announced yet. */
  offer: OfferView;
  offer_ended: ServerOfferEnded;
  task_cancelled: ServerTaskCancelled;
  /** A task in the In Progress list was transferred away by a supervisor or an integration. */
  task_transferred: ServerTaskTransferred;
  /** A transfer or consult this agent made to one agent ended (accepted, or the task went back). */
  transfer_ended: ServerTransferEnded;
  /** The agent's own `state` frames, as they come. */
  state: ServerState;
  /** `client.agent` changed (welcome, a newer `state` frame, or a reply carrying a newer view): draw from this. */
  agent: AgentView;
  /** Supervisors: the whole picture (the first frame, and again after a reconnect or when the console fell behind). */
  snapshot: ServerSnapshot;
  /** Supervisors: every `agent_changed` frame as it comes (`board` applies the version rule). */
  agent_changed: ServerAgentChanged;
  queue_changed: ServerQueueChanged;
  /** Supervisors: the statistics, pushed at most every `server.stats_update_ms`. */
  stats: ServerStats;
  /** Supervisors: `client.board` changed (a snapshot, a newer agent line, queue numbers, statistics): draw from this. */
  board: Board;
  record_changed: ServerRecordChanged;
  goodbye: ServerGoodbye;
  /** An `error` frame that answers no pending request (`rate_limited`, `frame_too_large`, `store_unavailable`, ...). */
  error: ServerError;
  /** Every frame from the hub, for logging. */
  frame: ServerFrame;
}

/** A request as sent, without its `id` (the client assigns one). */
export type ClientRequest = ClientFrame extends infer F ? (F extends { id?: unknown } ? Omit<F, "id"> : never) : never;

/** Each request by its type. */
export type RequestByType = { [F in ClientRequest as F["type"]]: F };

/** The `result` of a successful reply, by request type. */
export interface ReplyByType {
  ping: ReplyPing;
  refresh_token: ReplyEmpty;
  get_state: ReplyAgent;
  set_state: ReplyAgent;
  accept: ReplyTask;
  decline: ReplyEmpty;
  complete: ReplyTask;
  logout: ReplyEmpty;
  get_snapshot: Snapshot;
  set_agent_state: ReplyAgent;
  logout_agent: ReplyEmpty;
  transfer: ReplyTask;
  consult: ReplyTask;
  cancel_consult: ReplyTask;
  get_lists: ReplyLists;
  search_customers: CustomersResult;
  get_customer: CustomerView;
  unwatch_customer: ReplyEmpty;
  get_request: ReplyRequest;
  get_activity: ReplyActivity;
  create_customer: CustomerView;
  update_customer: CustomerView;
  link_activity: ReplyActivity;
  move_activity: ReplyActivity;
  create_request: ReplyRequest;
  update_request: ReplyRequest;
  update_activity: ReplyActivity;
  add_note: ReplyNote;
  get_journey: JourneyResult;
  close_interaction: ReplyActivity;
  reopen_customer: CustomerView;
  close_customer: ReplyEmpty;
}

/** Goodbye reasons after which the hub says not to reconnect. */
const FINAL_GOODBYES: ReadonlyArray<string> = ["replaced", "logged_out", "logged_out_by_supervisor"];

type Timer = ReturnType<typeof setTimeout>;

const isObject = (x: unknown): x is Record<string, unknown> => typeof x === "object" && x !== null && !Array.isArray(x);

const isAgentView = (x: unknown): boolean =>
  isObject(x) && typeof x.agent_id === "string" && typeof x.version === "number" && (x.offer === null || isObject(x.offer));

const isSummary = (x: unknown): boolean => isObject(x) && typeof x.agent_id === "string" && typeof x.version === "number";
const isQueue = (x: unknown): boolean => isObject(x) && typeof x.queue_id === "string";

/**
 * Just what this client relies on in each frame it acts on (the rest is the app's to read,
 * typed by the schema): enough that a frame that does not fit cannot throw inside it.
 */
function fits(f: { type: string } & Record<string, unknown>): boolean {
  switch (f.type) {
    case "welcome":
      return isAgentView(f.agent) && isObject(f.lists) && typeof f.heartbeat_ms === "number";
    case "reply":
      return (typeof f.re === "string" || f.re === null) && isObject(f.result);
    case "error":
      return (typeof f.re === "string" || f.re === null) && typeof f.code === "string";
    case "offer":
      return isObject(f.offer) && typeof f.offer.offer_id === "string";
    case "state":
      return isAgentView(f.agent);
    case "goodbye":
      return typeof f.reason === "string";
    case "snapshot":
      return Array.isArray(f.agents) && Array.isArray(f.queues) && f.agents.every(isSummary) && f.queues.every(isQueue);
    case "agent_changed":
      return isSummary(f.agent);
    case "queue_changed":
      return isQueue(f.queue);
    case "stats":
      return isObject(f.stats) && Array.isArray(f.stats.queues);
    default:
      return true;
  }
}

interface Pending {
  resolve(result: unknown): void;
  reject(err: HubError): void;
  timer: Timer;
  type: string;
  sentAt: number;
}

interface ClockSample {
  offset: number;
  rtt: number;
}

/** A broken session is reconnected at once at most once in this long (ms). */
const IMMEDIATE_AGAIN_MS = 10000;

/** How many ping samples the clock keeps; the one with the shortest round trip wins. */
const CLOCK_SAMPLES = 8;

export class SwitchboardClient<R extends Role = "agent"> {
  private readonly opts: ClientOptions<R>;
  /** `agent` or `supervisor`, from the options. */
  readonly role: R;
  private readonly WS: WebSocketConstructor | undefined;
  private readonly minMs: number;
  private readonly maxMs: number;
  private readonly timeoutMs: number;
  private readonly now: () => number;
  private readonly random: () => number;
  private readonly env: ClientEnvironment | null;
  private token: ClientOptions["token"];

  private _state: ConnectionState<R> = { kind: "idle" };
  private _agent: AgentView | null = null;
  private _board: Board | null = null;
  private _lists: Lists | null = null;
  private ws: WebSocketLike | null = null;
  /** The goodbye the current socket received, if any. */
  private goodbye: GoodbyeReason | null = null;
  /** Connection attempts since the last welcome. */
  private attempt = 0;
  /** Bumped whenever an attempt is abandoned, so a late token or socket callback of an old one is ignored. */
  private generation = 0;
  private retryTimer: Timer | null = null;
  private heartbeatTimer: Timer | null = null;
  /** Bounds the wait for a welcome (a connection attempt that hangs). */
  private connectTimer: Timer | null = null;
  private nextId = 1;
  private readonly pending = new Map<string, Pending>();
  private readonly listeners = new Map<string, Set<(payload: any) => void>>();
  private samples: ClockSample[] = [];
  private offset = 0;
  private announcedOffer: string | null = null;
  /** Whether the hub's clock was read at least once (a welcome or ping with server_time). */
  private clockMeasured = false;
  /** The current token's expiry, ms since the epoch. */
  private tokenExp: number | null = null;
  private envAttached = false;
  /** When the client last reconnected at once (local clock), so a flapping hub gets backoff instead. */
  private lastImmediate = -Infinity;

  constructor(opts: ClientOptions<R>) {
    this.opts = opts;
    this.role = (opts.role ?? "agent") as R;
    this.token = opts.token;
    this.WS = opts.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!this.WS) throw new Error("no WebSocket in this environment: pass ClientOptions.WebSocket (in Node before 22, the ws package)");
    this.minMs = Math.max(0, opts.backoff?.minMs ?? 500);
    this.maxMs = Math.max(this.minMs, opts.backoff?.maxMs ?? 20000);
    this.timeoutMs = opts.requestTimeoutMs ?? 10000;
    this.now = opts.now ?? Date.now;
    this.random = opts.random ?? Math.random;
    if (opts.environment !== undefined) {
      this.env = opts.environment;
    } else {
      const g = globalThis as unknown as Partial<ClientEnvironment>;
      this.env = typeof g.addEventListener === "function" ? (g as ClientEnvironment) : null;
    }
  }

  /** Where the connection is. */
  get state(): ConnectionState<R> {
    return this._state;
  }

  /** A supervisor's board (see `Board`); null before the first snapshot, and always for an agent. */
  get board(): Board | null {
    return this._board;
  }

  /** The agent's latest view (from welcome, `state` frames and replies, by the version rule); null before the first welcome. */
  get agent(): AgentView | null {
    return this._agent;
  }

  /** The Open and Recent lists from the last welcome or `get_lists` reply. */
  get lists(): Lists | null {
    return this._lists;
  }

  /** The pending offer, if any (from the agent view). */
  get offer(): OfferView | null {
    return this._agent?.offer ?? null;
  }

  /** The hub's clock minus the local clock, in ms, as measured (welcome, then ping round trips). */
  get clockOffsetMs(): number {
    return this.offset;
  }

  /** When the token expires, in ms since the epoch (its `exp`), once read; `null` before. Compare with `serverNow()`. */
  get tokenExpiresAt(): number | null {
    return this.tokenExp;
  }

  /**
   * Keep the session past the token's `exp`: send a fresher token (same `sub` and `role`,
   * a later `exp`) to the hub (`refresh_token`), then use it for any reconnect. Rejects
   * with the hub's `HubError` (a token it refuses changes nothing) or `disconnected`.
   */
  async refreshToken(token: string): Promise<void> {
    await this.request({ type: "refresh_token", token });
    // A token function keeps being asked on reconnects; a fixed token is replaced.
    if (typeof this.token === "string") this.setToken(token);
    this.tokenRefusal(token);
  }

  /** The hub's time now, in ms since the epoch: the local clock corrected by the measured offset. */
  serverNow(): number {
    return this.now() + this.offset;
  }

  /** Milliseconds left until a hub timestamp (an offer's `deadline`), on the hub's clock; 0 when past or unreadable. */
  remainingMs(deadline: string): number {
    const at = Date.parse(deadline);
    if (Number.isNaN(at)) return 0;
    return Math.max(0, at - this.serverNow());
  }

  /** Subscribe; returns the function that unsubscribes. */
  on<K extends keyof ClientEvents<R>>(type: K, fn: (payload: ClientEvents<R>[K]) => void): () => void {
    let set = this.listeners.get(type as string);
    if (!set) {
      set = new Set();
      this.listeners.set(type as string, set);
    }
    // A wrapper per subscription, so the same function subscribed twice unsubscribes once each.
    const wrapper = (p: ClientEvents<R>[K]) => fn(p);
    set.add(wrapper);
    return () => {
      set.delete(wrapper);
    };
  }

  /** Replace the token (a string, or a function asked before every connect); takes effect on the next connect. */
  setToken(token: ClientOptions["token"]): void {
    this.token = token;
  }

  /** Start connecting (from `idle` or `closed`); does nothing while connecting, open or reconnecting. */
  connect(): void {
    const k = this._state.kind;
    if (k === "connecting" || k === "open" || k === "reconnecting") return;
    this.attachEnvironment();
    this.attempt = 0;
    void this.openSocket();
  }

  /** While `reconnecting`, try now instead of waiting out the delay (a "Reconnect now" button); otherwise nothing. */
  reconnectNow(): void {
    if (this._state.kind === "reconnecting") void this.openSocket();
  }

  /** Close for good: `closed` with reason `client`, no reconnect; pending requests reject with `disconnected`. */
  close(): void {
    if (this._state.kind === "closed") return;
    this.finish("client");
  }

  /** Send a request; resolves with the reply's `result`, rejects with a HubError. */
  request<T extends ClientRequest["type"]>(frame: RequestByType[T] & { type: T }): Promise<ReplyByType[T]> {
    const ws = this.ws;
    if (!ws || this._state.kind !== "open") {
      return Promise.reject(new HubError("disconnected", `not connected (${this._state.kind})`, undefined, frame.type));
    }
    const id = `c${this.nextId++}`;
    return new Promise<ReplyByType[T]>((resolve, reject) => {
      const timer = setTimeout(() => {
        if (this.pending.delete(id)) {
          reject(new HubError("timeout", `no answer to ${frame.type} within ${this.timeoutMs} ms`, undefined, frame.type));
        }
      }, this.timeoutMs);
      this.pending.set(id, {
        resolve: resolve as (r: unknown) => void,
        reject,
        timer,
        type: frame.type,
        sentAt: this.now(),
      });
      try {
        ws.send(JSON.stringify({ ...frame, id }));
      } catch (err) {
        clearTimeout(timer);
        this.pending.delete(id);
        reject(new HubError("disconnected", `send failed: ${String(err)}`, undefined, frame.type));
      }
    });
  }

  // Typed helpers, one per request of the protocol.

  /** Heartbeat; its reply also measures the clock offset. */
  ping(): Promise<ReplyPing> {
    return this.request({ type: "ping" });
  }
  getState(): Promise<ReplyAgent> {
    return this.request({ type: "get_state" });
  }
  setState(state: "ready" | "not_ready", reason?: string): Promise<ReplyAgent> {
    return this.request(reason === undefined ? { type: "set_state", state } : { type: "set_state", state, reason });
  }
  accept(offerId: string): Promise<ReplyTask> {
    return this.request({ type: "accept", offer_id: offerId });
  }
  decline(offerId: string, reason?: string): Promise<ReplyEmpty> {
    return this.request(reason === undefined ? { type: "decline", offer_id: offerId } : { type: "decline", offer_id: offerId, reason });
  }
  complete(taskId: string, wrapUpCode?: string): Promise<ReplyTask> {
    return this.request(
      wrapUpCode === undefined ? { type: "complete", task_id: taskId } : { type: "complete", task_id: taskId, wrap_up_code: wrapUpCode },
    );
  }
  /** Log out: the hub answers, says goodbye `logged_out` and closes; the client ends `closed` / `logged_out`. */
  /** Blind transfer of a task in progress to a queue (keeping its place unless `head` or `priority` say otherwise). */
  transferToQueue(taskId: string, queue: string, opts: { priority?: number; skills?: string[]; head?: boolean } = {}): Promise<ReplyTask> {
    return this.request({ type: "transfer", task_id: taskId, to_queue: queue, ...opts });
  }
  /** Transfer a task in progress to one agent: an ordinary offer; `transfer_ended` tells how it ended. */
  transferToAgent(taskId: string, agentId: string): Promise<ReplyTask> {
    return this.request({ type: "transfer", task_id: taskId, to_agent: agentId });
  }
  /** Warm transfer: the task stays this agent's until the other accepts. */
  consult(taskId: string, agentId: string): Promise<ReplyTask> {
    return this.request({ type: "consult", task_id: taskId, to_agent: agentId });
  }
  /** Take a consult back before it was accepted. */
  cancelConsult(taskId: string): Promise<ReplyTask> {
    return this.request({ type: "cancel_consult", task_id: taskId });
  }
  logout(): Promise<ReplyEmpty> {
    return this.request({ type: "logout" });
  }
  getSnapshot(): Promise<Snapshot> {
    return this.request({ type: "get_snapshot" });
  }
  /** Supervisors: set an agent Not Ready (`reason` a configured code; default the built-in `supervisor`). */
  setAgentState(agentId: string, reason?: string): Promise<ReplyAgent> {
    const f = { type: "set_agent_state", agent_id: agentId, state: "not_ready" } as const;
    return this.request(reason === undefined ? f : { ...f, reason });
  }
  /** Supervisors: log an agent out (its desktop gets goodbye `logged_out_by_supervisor`). */
  logoutAgent(agentId: string): Promise<ReplyEmpty> {
    return this.request({ type: "logout_agent", agent_id: agentId });
  }
  /** The Open and Recent lists; also updates `client.lists`. */
  getLists(): Promise<ReplyLists> {
    return this.request({ type: "get_lists" });
  }
  searchCustomers(query: string, limit?: number): Promise<CustomersResult> {
    return this.request(limit === undefined ? { type: "search_customers", query } : { type: "search_customers", query, limit });
  }
  /** Load a customer and watch it (`record_changed`) until `unwatchCustomer`. */
  getCustomer(customerId: string): Promise<CustomerView> {
    return this.request({ type: "get_customer", customer_id: customerId });
  }
  unwatchCustomer(customerId: string): Promise<ReplyEmpty> {
    return this.request({ type: "unwatch_customer", customer_id: customerId });
  }
  getRequest(requestId: string): Promise<ReplyRequest> {
    return this.request({ type: "get_request", request_id: requestId });
  }
  getActivity(activityId: string): Promise<ReplyActivity> {
    return this.request({ type: "get_activity", activity_id: activityId });
  }
  /** Create a customer; with `activityId`, link that interaction (an unknown caller's) to it. */
  createCustomer(customer: CustomerFields, activityId?: string): Promise<CustomerView> {
    return this.request(
      activityId === undefined ? { type: "create_customer", customer } : { type: "create_customer", customer, activity_id: activityId },
    );
  }
  updateCustomer(customerId: string, baseVersion: number, changes: CustomerFields): Promise<CustomerView> {
    return this.request({ type: "update_customer", customer_id: customerId, base_version: baseVersion, changes });
  }
  linkActivity(activityId: string, customerId: string): Promise<ReplyActivity> {
    return this.request({ type: "link_activity", activity_id: activityId, customer_id: customerId });
  }
  /** Moves the agent's open interaction to another request of its customer, or to a new one when `requestId` is absent. */
  moveActivity(activityId: string, requestId?: string): Promise<ReplyActivity> {
    return this.request(
      requestId === undefined
        ? { type: "move_activity", activity_id: activityId }
        : { type: "move_activity", activity_id: activityId, request_id: requestId },
    );
  }
  createRequest(customerId: string, fields: { title?: string; description?: string } = {}): Promise<ReplyRequest> {
    return this.request({ type: "create_request", customer_id: customerId, ...fields });
  }
  updateRequest(
    requestId: string,
    baseVersion: number,
    changes: { title?: string; description?: string; state?: RequestState },
  ): Promise<ReplyRequest> {
    return this.request({ type: "update_request", request_id: requestId, base_version: baseVersion, ...changes });
  }
  updateActivity(activityId: string, baseVersion: number, changes: { notes?: string; tags?: string[] }): Promise<ReplyActivity> {
    return this.request({ type: "update_activity", activity_id: activityId, base_version: baseVersion, ...changes });
  }
  addNote(customerId: string, text: string, requestId?: string): Promise<ReplyNote> {
    return this.request(
      requestId === undefined
        ? { type: "add_note", customer_id: customerId, text }
        : { type: "add_note", customer_id: customerId, text, request_id: requestId },
    );
  }
  getJourney(customerId: string, opts: { requestId?: string; limit?: number } = {}): Promise<JourneyResult> {
    const f: ClientRequest & { type: "get_journey" } = { type: "get_journey", customer_id: customerId };
    if (opts.requestId !== undefined) f.request_id = opts.requestId;
    if (opts.limit !== undefined) f.limit = opts.limit;
    return this.request(f);
  }
  /** Close the agent's interaction; an unknown caller needs `choice` (`create` with `customer`, or `discard`). */
  closeInteraction(activityId: string, choice?: "create" | "discard", customer?: CustomerFields): Promise<ReplyActivity> {
    const f: ClientRequest & { type: "close_interaction" } = { type: "close_interaction", activity_id: activityId };
    if (choice !== undefined) f.choice = choice;
    if (customer !== undefined) f.customer = customer;
    return this.request(f);
  }
  reopenCustomer(customerId: string): Promise<CustomerView> {
    return this.request({ type: "reopen_customer", customer_id: customerId });
  }
  closeCustomer(customerId: string): Promise<ReplyEmpty> {
    return this.request({ type: "close_customer", customer_id: customerId });
  }

  // The connection.

  private moveTo(s: ConnectionState<Role>): void {
    this._state = s as ConnectionState<R>;
    this.emit("connection", s);
  }

  private emit<K extends keyof ClientEvents<Role>>(type: K, payload: ClientEvents<Role>[K]): void {
    const set = this.listeners.get(type as string);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(payload);
      } catch (err) {
        // A listener's bug must not break the connection's state machine: report it
        // outside this call stack, where the page's error handling sees it.
        setTimeout(() => {
          throw err;
        }, 0);
      }
    }
  }

  private async openSocket(): Promise<void> {
    this.clearRetry();
    this.attempt += 1;
    const gen = ++this.generation;
    this.moveTo({ kind: "connecting", attempt: this.attempt });
    let token: string;
    try {
      const t = this.token;
      token = typeof t === "function" ? await t() : t;
    } catch (err) {
      if (gen === this.generation) this.retryLater(this.backoffMs(), undefined, `token: ${String(err)}`);
      return;
    }
    if (gen !== this.generation) return;
    const refused = this.tokenRefusal(token);
    if (refused) {
      this.finish(refused);
      return;
    }
    const url = this.opts.url + (this.opts.url.includes("?") ? "&" : "?") + "access_token=" + encodeURIComponent(token);
    let ws: WebSocketLike;
    try {
      ws = new this.WS!(url, PROTOCOL);
    } catch (err) {
      this.retryLater(this.backoffMs(), undefined, String(err));
      return;
    }
    // A socket still held (an attempt overtaken by reconnectNow) is let go, not leaked.
    if (this.ws) this.detach(this.ws);
    this.ws = ws;
    this.goodbye = null;
    let opened = false;
    ws.onopen = () => {
      opened = true;
    };
    ws.onmessage = (ev: { data: unknown }) => {
      if (this.ws === ws) this.onMessage(ev.data);
    };
    // The close event follows an error and says everything the client can know.
    ws.onerror = () => {};
    ws.onclose = (ev: { code?: number; reason?: string }) => {
      if (this.ws === ws) this.onSocketClosed(ev.code ?? 1006, ev.reason ?? "", opened);
    };
    // An attempt can hang (a connect to an unreachable network may take minutes to fail):
    // no welcome within the request timeout counts as a failed attempt.
    this.connectTimer = setTimeout(() => {
      this.connectTimer = null;
      if (this.ws === ws && this._state.kind === "connecting") {
        this.detach(ws);
        this.onSocketClosed(1006, `no welcome within ${this.timeoutMs} ms`, opened);
      }
    }, this.timeoutMs);
  }

  private clearConnectTimer(): void {
    if (this.connectTimer !== null) clearTimeout(this.connectTimer);
    this.connectTimer = null;
  }

  /**
   * A browser cannot see why an upgrade was refused (it gets close 1006), so the client
   * reads what it can from the token itself (a JWT; the signature is the hub's business):
   * - not a readable JWT with a numeric `exp`: `unauthorized`, without connecting;
   * - a `role` other than `agent`: `forbidden`, without connecting;
   * - `exp` passed on the hub's clock: `token_expired`, without connecting once the clock
   *   offset is measured; before that (the local clock may be off) the client tries, and a
   *   connection that then fails before opening ends in `token_expired`.
   * A token refused for another reason (a bad signature, an unknown agent) looks like a
   * network failure: retried with backoff, asking a token function again each time.
   */
  private tokenRefusal(token: string): CloseReason | null {
    const parts = token.split(".");
    if (parts.length !== 3) return "unauthorized";
    let claims: { exp?: unknown; role?: unknown };
    try {
      const b64 = parts[1].replace(/-/g, "+").replace(/_/g, "/");
      const bin = atob(b64 + "===".slice((b64.length + 3) % 4));
      claims = JSON.parse(new TextDecoder().decode(Uint8Array.from(bin, (c) => c.charCodeAt(0))));
    } catch {
      return "unauthorized";
    }
    if (!claims || typeof claims.exp !== "number") return "unauthorized";
    if (claims.role !== undefined && claims.role !== this.role) return "forbidden";
    this.tokenExp = claims.exp * 1000;
    if (this.clockMeasured && this.tokenExpired()) return "token_expired";
    return null;
  }

  private tokenExpired(): boolean {
    return this.tokenExp !== null && this.tokenExp <= this.serverNow();
  }

  private onMessage(data: unknown): void {
    if (typeof data !== "string") return;
    let f: ServerFrame & Record<string, unknown>;
    try {
      f = JSON.parse(data);
    } catch {
      return;
    }
    if (!f || typeof f !== "object" || typeof (f as { type?: unknown }).type !== "string") return;
    // The hub's frames follow the schema; one that does not (a broken proxy, a hub bug) is
    // dropped rather than allowed to break the connection's state machine.
    if (!fits(f)) return;
    this.emit("frame", f);
    switch (f.type) {
      case "welcome":
        if (this.role === "agent") this.onWelcome(f);
        break;
      case "reply":
        this.onReply(f.re, f.result);
        break;
      case "error": {
        const p = f.re == null ? undefined : this.pending.get(f.re);
        if (p && f.re != null) {
          this.pending.delete(f.re);
          clearTimeout(p.timer);
          p.reject(new HubError(f.code, f.message, f, p.type));
        } else {
          this.emit("error", f);
        }
        break;
      }
      case "offer":
        this.announcedOffer = f.offer.offer_id;
        this.emit("offer", f.offer);
        break;
      case "offer_ended":
        this.emit("offer_ended", f);
        break;
      case "task_cancelled":
        this.emit("task_cancelled", f);
        break;
      case "task_transferred":
        this.emit("task_transferred", f);
        break;
      case "transfer_ended":
        this.emit("transfer_ended", f);
        break;
      case "state":
        this.emit("state", f);
        this.applyAgent(f.agent);
        break;
      case "snapshot":
        this.onSnapshot(f);
        break;
      case "agent_changed": {
        this.emit("agent_changed", f);
        const b = this._board;
        const held = b?.agents.get(f.agent.agent_id);
        // The version rule: a line not newer than the one held is dropped.
        if (b && !(held && f.agent.version <= held.version)) {
          b.agents.set(f.agent.agent_id, f.agent);
          this.emit("board", b);
        }
        break;
      }
      case "queue_changed": {
        this.emit("queue_changed", f);
        const b = this._board;
        if (b) {
          b.queues.set(f.queue.queue_id, f.queue);
          b.queueSeenAt.set(f.queue.queue_id, this.serverNow());
          this.emit("board", b);
        }
        break;
      }
      case "stats":
        this.emit("stats", f);
        this.statsClock(f.stats);
        if (this._board) {
          this._board.stats = f.stats;
          this.emit("board", this._board);
        }
        break;
      case "record_changed":
        this.emit("record_changed", f);
        break;
      case "goodbye":
        this.goodbye = f.reason;
        this.emit("goodbye", f);
        break;
      default:
      // A frame type this version does not know: ignored, as the protocol asks.
    }
  }

  private onWelcome(w: ServerWelcome): void {
    this.clearConnectTimer();
    this.attempt = 0;
    // A welcome starts afresh (a restarted hub counts versions from 0 again).
    this._agent = w.agent;
    this._lists = w.lists;
    this.samples = [];
    const serverTime = Date.parse((w as { server_time?: string }).server_time ?? "");
    // First estimate: the welcome left the hub at server_time and arrived now; off by one
    // network trip at most. Ping round trips refine it.
    if (!Number.isNaN(serverTime)) {
      this.offset = serverTime - this.now();
      this.clockMeasured = true;
    }
    this.moveTo({ kind: "open", welcome: w });
    if (this._state.kind !== "open") return; // a `connection` listener closed the client
    this.emit("welcome", w);
    this.emit("agent", w.agent);
    const offer = w.agent.offer;
    if (offer && offer.offer_id !== this.announcedOffer) {
      this.announcedOffer = offer.offer_id;
      this.emit("offer", offer);
    }
    this.heartbeat(w.heartbeat_ms);
  }

  /**
   * A supervisor's first frame, and any later snapshot: the board starts afresh (versions
   * as they are: a restarted hub counts from 0 again). The first one after connecting
   * opens the connection; the clock is measured by the ping that follows (a snapshot
   * carries no `server_time`) and, roughly, by the statistics' `generated_at`.
   */
  private onSnapshot(f: ServerSnapshot): void {
    const opening = this._state.kind === "connecting" && this.role === "supervisor";
    if (opening) {
      this.clearConnectTimer();
      this.attempt = 0;
      this.samples = [];
    }
    const stats = isObject(f.stats) ? f.stats : null;
    if (stats) this.statsClock(stats);
    const now = this.serverNow();
    this._board = {
      agents: new Map(f.agents.map((a) => [a.agent_id, a])),
      queues: new Map(f.queues.map((q) => [q.queue_id, q])),
      queueSeenAt: new Map(f.queues.map((q) => [q.queue_id, now])),
      stats,
    };
    if (opening) {
      this.moveTo({ kind: "open", snapshot: f });
      if (this._state.kind !== "open") return; // a `connection` listener closed the client
    }
    this.emit("snapshot", f);
    this.emit("board", this._board);
    if (opening) this.heartbeat(0);
  }

  /**
   * Before any ping has answered, the statistics' `generated_at` (stamped when they
   * left the hub) is the best estimate of the hub's clock there is; a ping replaces it.
   */
  private statsClock(stats: StatsReport): void {
    if (this.samples.length > 0) return;
    const at = Date.parse(stats.generated_at);
    if (Number.isNaN(at)) return;
    this.offset = at - this.now();
    this.clockMeasured = true;
  }

  private onReply(re: string | null, result: ReplyResult): void {
    if (re == null) return;
    const p = this.pending.get(re);
    if (!p) return;
    this.pending.delete(re);
    clearTimeout(p.timer);
    const r = result as Partial<ReplyAgent & ReplyLists & ReplyPing>;
    if (p.type === "ping" && typeof r.server_time === "string") this.clockSample(p.sentAt, r.server_time);
    if (isAgentView(r.agent) && p.type !== "set_agent_state") this.applyAgent(r.agent as AgentView);
    if (isObject(r.lists) && p.type === "get_lists") this._lists = r.lists;
    p.resolve(result);
  }

  /** The version rule: keep the view with the highest version of this agent. */
  private applyAgent(view: AgentView): void {
    const cur = this._agent;
    if (cur && cur.agent_id === view.agent_id && view.version <= cur.version) return;
    this._agent = view;
    this.emit("agent", view);
  }

  private clockSample(sentAt: number, serverTime: string): void {
    const server = Date.parse(serverTime);
    if (Number.isNaN(server)) return;
    const received = this.now();
    const sample = { offset: server - (sentAt + received) / 2, rtt: received - sentAt };
    this.samples.push(sample);
    if (this.samples.length > CLOCK_SAMPLES) this.samples.shift();
    // The shortest round trip bounds the error best (NTP's rule).
    let best = this.samples[0];
    for (const s of this.samples) if (s.rtt < best.rtt) best = s;
    this.offset = Math.round(best.offset) || 0;
    this.clockMeasured = true;
  }

  /**
   * A `ping` right after the welcome (to measure the clock) and then every `heartbeat_ms`:
   * a ping unanswered within the request timeout means the connection is dead without the
   * browser knowing (a half-open TCP connection after sleep or a network change), so the
   * client drops it and reconnects at once.
   */
  private heartbeat(intervalMs: number): void {
    this.stopHeartbeat();
    const every = Math.max(1000, intervalMs > 0 ? intervalMs : 20000);
    const ws = this.ws;
    const beat = () => {
      // Only for the connection it was started for (a listener may have closed it meanwhile).
      if (this.ws !== ws || this._state.kind !== "open") return;
      this.heartbeatTimer = setTimeout(beat, every);
      this.probe();
    };
    beat();
  }

  private probe(): void {
    const ws = this.ws;
    if (!ws || this._state.kind !== "open") return;
    this.ping().catch((err: HubError) => {
      if (err.code === "timeout" && this.ws === ws) this.abandon(ws, 1006, "no answer to ping");
    });
  }

  private stopHeartbeat(): void {
    if (this.heartbeatTimer !== null) clearTimeout(this.heartbeatTimer);
    this.heartbeatTimer = null;
  }

  /** Stop listening to a socket and treat it as closed with `code`. */
  private abandon(ws: WebSocketLike, code: number, reason: string): void {
    this.detach(ws);
    this.onSocketClosed(code, reason, true);
  }

  private detach(ws: WebSocketLike): void {
    ws.onopen = ws.onmessage = ws.onclose = null;
    ws.onerror = () => {};
    try {
      ws.close(1000);
    } catch {
      // already closed
    }
  }

  private onSocketClosed(code: number, reason: string, opened: boolean): void {
    const wasOpen = this._state.kind === "open";
    this.ws = null;
    this.stopHeartbeat();
    this.clearConnectTimer();
    this.rejectPending("the connection closed");
    const goodbye = this.goodbye;
    this.goodbye = null;
    // The close reason text repeats the goodbye; the code alone decides when neither arrived.
    const final =
      (goodbye && FINAL_GOODBYES.includes(goodbye) && goodbye) ||
      (FINAL_GOODBYES.includes(reason) && reason) ||
      (code === 4001 ? "replaced" : code === 4002 ? "logged_out" : null);
    if (final) {
      this.finish(final as CloseReason, code);
      return;
    }
    if (!opened && this.tokenExpired()) {
      // Refused before opening with a token that is past its exp: most likely the hub's 401
      // token_expired, which a browser cannot see. Retrying would not help.
      this.finish("token_expired", code);
      return;
    }
    let delay: number;
    if (goodbye === "rate_limited" || code === 1008) {
      // "Reconnect slowly": the longest delay, jittered.
      delay = this.jitter(this.maxMs / 2, this.maxMs);
    } else if (
      wasOpen &&
      opened &&
      (goodbye === "reconnect" || (goodbye === null && code === 1006)) &&
      this.now() - this.lastImmediate >= IMMEDIATE_AGAIN_MS
    ) {
      // A session that broke (network loss, a lost node): reconnect at once, within the
      // grace period. Not twice within IMMEDIATE_AGAIN_MS: a hub that welcomes and drops
      // again gets the backoff.
      this.lastImmediate = this.now();
      delay = 0;
    } else {
      delay = this.backoffMs();
    }
    this.retryLater(delay, code, reason || goodbye || undefined);
  }

  /** After n failed attempts (n >= 1; 1 for the first retry after a welcome) wait a random time in [min, min(max, min * 2^n)]. */
  private backoffMs(): number {
    const cap = Math.min(this.maxMs, this.minMs * 2 ** Math.max(1, this.attempt));
    return this.jitter(this.minMs, cap);
  }

  private jitter(lo: number, hi: number): number {
    return Math.round(lo + this.random() * Math.max(0, hi - lo));
  }

  private retryLater(delay: number, code?: number, reason?: string): void {
    this.clearRetry();
    const s: ConnectionState = { kind: "reconnecting", attempt: this.attempt + 1, retryInMs: delay };
    if (code !== undefined) s.code = code;
    if (reason) s.reason = reason;
    // The timer first, then the news: a listener that calls close() or reconnectNow() on
    // "reconnecting" clears it, where a timer set after it would open a socket anyway.
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      void this.openSocket();
    }, delay);
    this.moveTo(s);
  }

  private clearRetry(): void {
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    this.retryTimer = null;
  }

  private rejectPending(why: string): void {
    const all = [...this.pending.values()];
    this.pending.clear();
    for (const p of all) {
      clearTimeout(p.timer);
      p.reject(new HubError("disconnected", why, undefined, p.type));
    }
  }

  private finish(reason: CloseReason, code?: number): void {
    this.clearRetry();
    this.stopHeartbeat();
    this.clearConnectTimer();
    this.generation += 1;
    const ws = this.ws;
    this.ws = null;
    if (ws) this.detach(ws);
    this.rejectPending(`closed: ${reason}`);
    this.detachEnvironment();
    const s: ConnectionState = { kind: "closed", reason };
    if (code !== undefined) s.code = code;
    this.moveTo(s);
  }

  // `online` and the page becoming visible: a waiting reconnect happens now; an open
  // connection is checked with a ping (it may have died while the laptop slept).
  private readonly visible = (): void => {
    const doc = this.env?.document;
    if (!doc || doc.visibilityState === "visible") this.wake();
  };

  private readonly wake = (): void => {
    if (this._state.kind === "reconnecting") {
      void this.openSocket();
    } else if (this._state.kind === "open") {
      this.probe();
    }
  };

  private attachEnvironment(): void {
    const env = this.env;
    if (!env || this.envAttached) return;
    this.envAttached = true;
    env.addEventListener("online", this.wake);
    const doc = env.document;
    if (doc && typeof doc.addEventListener === "function") doc.addEventListener("visibilitychange", this.visible);
    else env.addEventListener("visibilitychange", this.visible);
  }

  private detachEnvironment(): void {
    const env = this.env;
    if (!env || !this.envAttached) return;
    this.envAttached = false;
    env.removeEventListener?.("online", this.wake);
    const doc = env.document;
    if (doc && typeof doc.addEventListener === "function") doc.removeEventListener?.("visibilitychange", this.visible);
    else env.removeEventListener?.("visibilitychange", this.visible);
  }
}

/**
 * `GET /v1/stats` (supervisor and integration tokens): the statistics over HTTP, for a page
 * that wants them without a websocket. `baseUrl` is the hub's HTTP origin
 * (`https://hub.example.com`); `queues` / `agents` filter. Rejects with a HubError carrying
 * the hub's error code, or `disconnected` when the hub could not be reached.
 */
export async function fetchStats(
  baseUrl: string,
  token: string,
  opts: { queues?: string[]; agents?: string[]; fetch?: typeof fetch } = {},
): Promise<StatsReport> {
  const url = new URL("/v1/stats", baseUrl);
  if (opts.queues?.length) url.searchParams.set("queue", opts.queues.join(","));
  if (opts.agents?.length) url.searchParams.set("agent", opts.agents.join(","));
  const f = opts.fetch ?? fetch;
  let res: Response;
  try {
    res = await f(url.toString(), { headers: { authorization: `Bearer ${token}` } });
  } catch (err) {
    throw new HubError("disconnected", `GET /v1/stats: ${String(err)}`, undefined, "stats");
  }
  let body: unknown = null;
  try {
    body = await res.json();
  } catch {
    body = null;
  }
  if (!res.ok) {
    const e = isObject(body) && isObject(body.error) ? body.error : {};
    const code = typeof e.code === "string" ? (e.code as ErrorCode) : "internal";
    const frame = { type: "error", re: null, code, message: String(e.message ?? res.statusText), ...e } as ServerError;
    throw new HubError(code, `GET /v1/stats: ${res.status} ${frame.message}`, frame, "stats");
  }
  if (!isObject(body) || !Array.isArray(body.queues)) {
    throw new HubError("internal", "GET /v1/stats: the answer is not statistics", undefined, "stats");
  }
  return body as unknown as StatsReport;
}
