// @switchboard/client/testing: a fake hub for an app's own unit tests, without a hub.
//
//   const hub = new FakeHub();
//   const client = new SwitchboardClient({ url: "ws://hub/v1/ws", token, WebSocket: hub.WebSocket, environment: null });
//   client.connect();
//   const sock = await hub.nextConnection();      // opened and welcomed by default
//   sock.push({ type: "offer", offer: makeOffer() });
//   const req = await sock.nextRequest("accept");
//   sock.reply(req, { task: ... });                 // or sock.error(req, "offer_expired")
//   sock.goodbye("replaced");                       // goodbye + close 4001
//
// A socket whose token has role `supervisor` gets a `snapshot` instead of the welcome:
//
//   const sock = await hub.nextConnection();      // opened, with snapshot(makeSnapshot())
//   sock.push({ type: "agent_changed", agent: makeAgentSummary({ status: "ready", version: 2 }) });
//   sock.push({ type: "stats", stats: makeStats() });
//
// Events are delivered asynchronously (on a microtask), as a real socket delivers them.

import type {
  AgentSummary,
  AgentView,
  ClientFrame,
  ErrorCode,
  GoodbyeReason,
  OfferView,
  ServerError,
  ServerFrame,
  ServerSnapshot,
  ServerWelcome,
  QueueStats,
  StatsQueue,
  StatsReport,
  StatsWindow,
  Task,
} from "./protocol.js";
import type { ClientEnvironment, WebSocketLike } from "./index.js";

/** The close code the hub sends after each goodbye (protocol/README.md, "Close codes and goodbye"). */
export const GOODBYE_CLOSE_CODES: Readonly<Record<GoodbyeReason, number>> = {
  replaced: 4001,
  logged_out: 4002,
  logged_out_by_supervisor: 4002,
  slow_consumer: 4003,
  idle: 4004,
  token_expired: 4005,
  protocol_error: 1002,
  invalid_utf8: 1007,
  rate_limited: 1008,
  frame_too_large: 1009,
  store_unavailable: 1011,
  shutting_down: 1012,
  reconnect: 1012,
};

/** A frame the client sent, parsed. */
export type SentFrame = ClientFrame & { id?: string | null };

export interface FakeHubOptions {
  /** Open every new socket at once (default true); false: the test calls `socket.open()` or `socket.refuse()`. */
  autoOpen?: boolean;
  /** Send a welcome after opening (default true); a function returns the fields to change in it. */
  welcome?: boolean | ((socket: FakeSocket) => Partial<ServerWelcome>);
  /** For a supervisor's socket (its token's role), send a snapshot after opening instead (default true); a function returns its fields. */
  snapshot?: boolean | ((socket: FakeSocket) => Partial<ServerSnapshot>);
  /** Answer `ping` with the hub's clock (default true). */
  answerPings?: boolean;
  /** The hub's clock (ms since the epoch) for `server_time`; default `Date.now`. */
  now?: () => number;
  /**
   * Answers requests: return a `result` to reply with it, a `FakeError` (see `fakeError`) to
   * answer with an error, or `undefined` to leave the request to the test.
   */
  handle?: (frame: SentFrame, socket: FakeSocket) => unknown;
}

/** What `handle` returns to answer with an error. */
export interface FakeError {
  readonly fakeError: true;
  readonly code: ErrorCode;
  readonly message: string;
  readonly extra: Partial<ServerError>;
}

export function fakeError(code: ErrorCode, message = code, extra: Partial<ServerError> = {}): FakeError {
  return { fakeError: true, code, message, extra };
}

const CONNECTING = 0;
const OPEN = 1;
const CLOSING = 2;
const CLOSED = 3;

type Waiter<T> = { match: (x: T) => boolean; resolve: (x: T) => void };

/** One connection, seen from the hub's side. Also the fake WebSocket the client holds. */
export class FakeSocket implements WebSocketLike {
  static readonly CONNECTING = CONNECTING;
  static readonly OPEN = OPEN;
  static readonly CLOSING = CLOSING;
  static readonly CLOSED = CLOSED;
  readonly CONNECTING = CONNECTING;
  readonly OPEN = OPEN;
  readonly CLOSING = CLOSING;
  readonly CLOSED = CLOSED;

  readonly url: string;
  readonly protocols: string[];
  /** The `access_token` of the URL. */
  readonly token: string | null;
  /** The `role` claim of that token (`agent` when it has none or cannot be read). */
  readonly role: string;
  readyState = CONNECTING;
  protocol = "";
  binaryType = "blob";
  bufferedAmount = 0;
  extensions = "";
  onopen: ((ev: any) => any) | null = null;
  onmessage: ((ev: any) => any) | null = null;
  onclose: ((ev: any) => any) | null = null;
  onerror: ((ev: any) => any) | null = null;

  /** Every frame the client sent on this socket, parsed. */
  readonly sent: SentFrame[] = [];
  /** The close the client asked for, if it closed this socket. */
  closedByClient: { code?: number; reason?: string } | null = null;
  /** The close code and reason delivered to the client, once closed. */
  closed: { code: number; reason: string } | null = null;

  private readonly hub: FakeHub;
  private hubClosed = false;
  private readonly waiters: Waiter<SentFrame>[] = [];
  private readonly closeWaiters: Array<(c: { code: number; reason: string }) => void> = [];

  constructor(hub: FakeHub, url: string, protocols?: string | string[]) {
    this.hub = hub;
    this.url = url;
    this.protocols = protocols === undefined ? [] : Array.isArray(protocols) ? protocols : [protocols];
    let token: string | null = null;
    try {
      token = new URL(url).searchParams.get("access_token");
    } catch {
      token = null;
    }
    this.token = token;
    let role = "agent";
    try {
      const claims = JSON.parse(atob((token ?? "").split(".")[1]!.replace(/-/g, "+").replace(/_/g, "/")));
      if (typeof claims.role === "string") role = claims.role;
    } catch {
      role = "agent";
    }
    this.role = role;
  }

  /** The hub accepts the upgrade: `open` fires (and a welcome follows when the hub is set to send one). */
  open(): void {
    if (this.readyState !== CONNECTING) return;
    this.readyState = OPEN;
    this.protocol = this.protocols.includes("switchboard.v1") ? "switchboard.v1" : "";
    this.later(() => this.onopen?.({ type: "open" }));
    if (this.role === "supervisor") {
      const s = this.hub.options.snapshot ?? true;
      if (s !== false) this.snapshot(typeof s === "function" ? s(this) : {});
      return;
    }
    const w = this.hub.options.welcome ?? true;
    if (w !== false) this.welcome(typeof w === "function" ? w(this) : {});
  }

  /** Send a supervisor's snapshot: `makeSnapshot(fields)`. */
  snapshot(fields: Partial<ServerSnapshot> = {}): ServerSnapshot {
    const frame = { type: "snapshot", ...makeSnapshot(fields) } as ServerSnapshot;
    this.push(frame);
    return frame;
  }

  /** The hub refuses the upgrade (as a browser sees it: an error, then close 1006, never open). */
  refuse(): void {
    if (this.readyState !== CONNECTING) return;
    this.readyState = CLOSED;
    this.fireClose(1006, "");
  }

  /** Send a welcome: a fresh session for `makeAgentView()` unless `fields` say otherwise. */
  welcome(fields: Partial<ServerWelcome> = {}): ServerWelcome {
    const frame: ServerWelcome = {
      type: "welcome",
      session_id: "00000000-0000-4000-8000-000000000001",
      protocol: "switchboard.v1",
      resumed: false,
      heartbeat_ms: 20000,
      server_time: new Date(this.hub.now()).toISOString(),
      agent: makeAgentView(),
      lists: { open: [], recent: [] },
      ...fields,
    } as ServerWelcome;
    this.push(frame);
    return frame;
  }

  /** Push any frame to the client. */
  push(frame: ServerFrame | Record<string, unknown>): void {
    this.pushRaw(JSON.stringify(frame));
  }

  /** Push raw text (a malformed frame, say). */
  pushRaw(text: string): void {
    if (this.readyState !== OPEN || this.hubClosed) {
      throw new Error(`push on a socket that is not open (readyState ${this.readyState})`);
    }
    this.later(() => {
      if (this.readyState === OPEN) this.onmessage?.({ type: "message", data: text });
    });
  }

  /** Answer a request (the frame, or its id) with a reply. */
  reply(to: SentFrame | string, result: unknown = {}): void {
    this.push({ type: "reply", re: typeof to === "string" ? to : to.id ?? null, result } as ServerFrame);
  }

  /** Answer a request (the frame, or its id, or null) with an error frame. */
  error(to: SentFrame | string | null, code: ErrorCode, message: string = code, extra: Partial<ServerError> = {}): void {
    const re = to === null ? null : typeof to === "string" ? to : to.id ?? null;
    this.push({ type: "error", re, code, message, ...extra } as ServerError);
  }

  /** Say goodbye and close with the reason's close code, as the hub does. */
  goodbye(reason: GoodbyeReason): void {
    this.push({ type: "goodbye", reason });
    this.serverClose(GOODBYE_CLOSE_CODES[reason], reason);
  }

  /** Close from the hub's side with a code (and no goodbye). Frames pushed before it are delivered first. */
  serverClose(code: number, reason = ""): void {
    if (this.readyState === CLOSED || this.hubClosed) return;
    this.hubClosed = true;
    this.later(() => {
      this.readyState = CLOSED;
      this.fireClose(code, reason);
    });
  }

  /** The connection breaks without a close frame: close 1006. */
  drop(): void {
    this.serverClose(1006, "");
  }

  /** The next frame the client sends (of `type`, when given), or one it already sent and nobody took yet. */
  nextFrame<T extends SentFrame["type"]>(type?: T): Promise<Extract<SentFrame, { type: T }>> {
    const match = (f: SentFrame) => type === undefined || f.type === type;
    const taken = this.hub.taken;
    const found = this.sent.find((f) => match(f) && !taken.has(f));
    if (found) {
      taken.add(found);
      return Promise.resolve(found as Extract<SentFrame, { type: T }>);
    }
    return new Promise((resolve) => this.waiters.push({ match, resolve: resolve as (f: SentFrame) => void }));
  }

  /** Same as nextFrame: a request the test answers with `reply` or `error`. */
  nextRequest<T extends SentFrame["type"]>(type?: T): Promise<Extract<SentFrame, { type: T }>> {
    return this.nextFrame(type);
  }

  /** Resolves when the socket is closed (by either side). */
  whenClosed(): Promise<{ code: number; reason: string }> {
    if (this.closed) return Promise.resolve(this.closed);
    return new Promise((resolve) => this.closeWaiters.push(resolve));
  }

  // The WebSocket API, called by the client.

  send(data: string): void {
    if (this.readyState !== OPEN) throw new Error("InvalidStateError: the socket is not open");
    let frame: SentFrame;
    try {
      frame = JSON.parse(data);
    } catch {
      throw new Error(`the client sent text that is not JSON: ${data}`);
    }
    this.sent.push(frame);
    this.hub.onFrame(frame, this);
    const i = this.waiters.findIndex((w) => w.match(frame));
    if (i >= 0 && !this.hub.taken.has(frame)) {
      const [w] = this.waiters.splice(i, 1);
      this.hub.taken.add(frame);
      w.resolve(frame);
    }
  }

  close(code?: number, reason?: string): void {
    if (this.readyState === CLOSING || this.readyState === CLOSED) return;
    const c: { code?: number; reason?: string } = {};
    if (code !== undefined) c.code = code;
    if (reason !== undefined) c.reason = reason;
    this.closedByClient = c;
    this.readyState = CLOSING;
    this.later(() => {
      this.readyState = CLOSED;
      this.fireClose(code ?? 1005, reason ?? "");
    });
  }

  private fireClose(code: number, reason: string): void {
    const c = { code, reason };
    this.closed = c;
    this.later(() => {
      if (code === 1006) this.onerror?.({ type: "error" });
      this.onclose?.({ type: "close", code, reason, wasClean: code !== 1006 });
      for (const w of this.closeWaiters.splice(0)) w(c);
    });
  }

  private later(fn: () => void): void {
    queueMicrotask(fn);
  }
}

/** A scripted hub: pass `hub.WebSocket` as `ClientOptions.WebSocket`. */
export class FakeHub {
  readonly options: FakeHubOptions;
  /** Every socket a client opened, oldest first. */
  readonly sockets: FakeSocket[] = [];
  /** The WebSocket constructor to give the client. */
  readonly WebSocket: new (url: string, protocols?: string | string[]) => FakeSocket;
  /** @internal frames already handed to a test by nextFrame */
  readonly taken = new WeakSet<object>();
  private readonly connWaiters: Array<(s: FakeSocket) => void> = [];
  private unclaimed: FakeSocket[] = [];

  constructor(options: FakeHubOptions = {}) {
    this.options = options;
    const hub = this;
    this.WebSocket = class extends FakeSocket {
      constructor(url: string, protocols?: string | string[]) {
        super(hub, url, protocols);
        hub.onConnection(this);
      }
    };
  }

  /** The hub's clock. */
  now(): number {
    return (this.options.now ?? Date.now)();
  }

  /** The most recent socket. */
  get socket(): FakeSocket | undefined {
    return this.sockets[this.sockets.length - 1];
  }

  /** The next socket a client opens (or one opened already that no test took yet). */
  nextConnection(): Promise<FakeSocket> {
    const s = this.unclaimed.shift();
    if (s) return Promise.resolve(s);
    return new Promise((resolve) => this.connWaiters.push(resolve));
  }

  /** @internal */
  onConnection(s: FakeSocket): void {
    this.sockets.push(s);
    if (this.options.autoOpen ?? true) queueMicrotask(() => s.open());
    const w = this.connWaiters.shift();
    if (w) w(s);
    else this.unclaimed.push(s);
  }

  /** @internal */
  onFrame(f: SentFrame, s: FakeSocket): void {
    if (f.type === "ping" && (this.options.answerPings ?? true)) {
      s.reply(f, { server_time: new Date(this.now()).toISOString() });
      this.taken.add(f);
      return;
    }
    const handle = this.options.handle;
    if (!handle) return;
    const out = handle(f, s);
    if (out === undefined) return;
    this.taken.add(f);
    if (out && typeof out === "object" && (out as FakeError).fakeError === true) {
      const e = out as FakeError;
      s.error(f, e.code, e.message, e.extra);
    } else {
      s.reply(f, out);
    }
  }
}

/** A valid AgentView (logged in, Not Ready `login`), with `fields` changed. */
export function makeAgentView(fields: Partial<AgentView> = {}): AgentView {
  return {
    agent_id: "ana",
    name: "Ana",
    status: "not_ready",
    reason: "login",
    since: new Date(0).toISOString(),
    connected: true,
    offer: null,
    in_progress: [],
    wrap_up: null,
    version: 1,
    ...fields,
  };
}

/** A valid AgentSummary (a supervisor's line: Ana, logged in, Not Ready `login`), with `fields` changed. */
export function makeAgentSummary(fields: Partial<AgentSummary> = {}): AgentSummary {
  return {
    agent_id: "ana",
    name: "Ana",
    status: "not_ready",
    reason: "login",
    since: new Date(0).toISOString(),
    connected: true,
    queues: ["support"],
    in_progress: 0,
    tasks: [],
    version: 1,
    ...fields,
  };
}

/** A valid QueueStats (queue `support`, nothing waiting), with `fields` changed. */
export function makeQueueStats(fields: Partial<QueueStats> = {}): QueueStats {
  return {
    queue_id: "support",
    name: "Support",
    waiting: 0,
    longest_wait_ms: 0,
    offers_pending: 0,
    agents_open: 0,
    ...fields,
  };
}

/** A snapshot's body: one agent (`makeAgentSummary()`) and one queue (`makeQueueStats()`) unless `fields` say otherwise. */
export function makeSnapshot(fields: Partial<ServerSnapshot> = {}): Omit<ServerSnapshot, "type"> {
  const { type: _type, ...rest } = { type: "snapshot", ...fields };
  void _type;
  return { agents: [makeAgentSummary()], queues: [makeQueueStats()], ...rest };
}

/** A window of statistics with nothing counted yet, with `fields` changed. */
export function makeStatsWindow(fields: Partial<StatsWindow> = {}): StatsWindow {
  return {
    window_start: new Date(0).toISOString(),
    offered: 0,
    answered: 0,
    abandoned: 0,
    abandoned_short: 0,
    answered_within_threshold: 0,
    service_level: null,
    service_level_threshold_ms: 20000,
    avg_speed_of_answer_ms: null,
    max_speed_of_answer_ms: null,
    avg_handle_ms: null,
    avg_wrap_up_ms: null,
    offers_accepted: 0,
    offers_declined: 0,
    offers_expired: 0,
    requeued: 0,
    transfers_in: 0,
    transfers_out: 0,
    ...fields,
  };
}

/** One queue's statistics (`support`, nothing waiting, no series), with `fields` changed. */
export function makeStatsQueue(fields: Partial<StatsQueue> = {}): StatsQueue {
  return {
    queue_id: "support",
    name: "Support",
    service_level_target: 0.8,
    now: {
      waiting: 0,
      waiting_by_channel: { voice: 0, chat: 0, email: 0 },
      waiting_by_priority: {},
      oldest_enqueued_at: null,
      agents: { offline: 0, not_ready: 1, ready: 0, reserved: 0, busy: 0, wrap_up: 0 },
      not_ready_reasons: { login: 1 },
      eligible_ready: 0,
      offers_pending: 0,
    },
    today: makeStatsWindow(),
    last_15m: makeStatsWindow(),
    last_30m: makeStatsWindow(),
    series: [],
    ...fields,
  };
}

/** Statistics as `GET /v1/stats` answers them: one queue (`makeStatsQueue()`), no agents, unless `fields` say otherwise. */
export function makeStats(fields: Partial<StatsReport> = {}, opts: { now?: number } = {}): StatsReport {
  const now = opts.now ?? Date.now();
  const day = new Date(now);
  day.setUTCHours(0, 0, 0, 0);
  return {
    generated_at: new Date(now).toISOString(),
    timezone: "UTC",
    day_start: day.toISOString(),
    day_end: new Date(day.getTime() + 86_400_000).toISOString(),
    queues: [makeStatsQueue()],
    agents: [],
    ...fields,
  };
}

let seq = 0;
function uuid(): string {
  seq += 1;
  return `00000000-0000-4000-8000-${seq.toString(16).padStart(12, "0")}`;
}

/** A valid Task, queued, with `fields` changed. */
export function makeTask(fields: Partial<Task> = {}): Task {
  return {
    task_id: uuid(),
    channel: "chat",
    queue: "support",
    priority: 0,
    skills: [],
    customer: {},
    attributes: {},
    created_at: new Date(0).toISOString(),
    offers: 0,
    state: "queued",
    ...fields,
  } as Task;
}

/** A valid OfferView expiring `timeoutMs` after `now` (on the clock given, default Date.now). */
export function makeOffer(fields: Partial<OfferView> = {}, opts: { timeoutMs?: number; now?: number } = {}): OfferView {
  const timeout = opts.timeoutMs ?? 15000;
  const deadline = new Date((opts.now ?? Date.now()) + timeout).toISOString();
  const offerId = fields.offer_id ?? uuid();
  return {
    offer_id: offerId,
    deadline,
    timeout_ms: timeout,
    task: makeTask({ state: "offered", offer_id: offerId, agent_id: "ana", deadline, offers: 1 } as Partial<Task>),
    ...fields,
  };
}

/** An unsigned JWT-shaped token (the fake hub does not check signatures) with these claims. */
export function makeToken(claims: { sub?: string; role?: string; exp?: number } = {}): string {
  const b64 = (o: object) =>
    btoa(String.fromCharCode(...new TextEncoder().encode(JSON.stringify(o))))
      .replace(/=+$/, "")
      .replace(/\+/g, "-")
      .replace(/\//g, "_");
  const body = { sub: "ana", role: "agent", exp: Math.floor(Date.now() / 1000) + 3600, ...claims };
  return `${b64({ alg: "HS256", typ: "JWT" })}.${b64(body)}.fake-signature`;
}

/** A stand-in for `window`: fire `online` and visibility changes from a test. */
export class FakeEnvironment implements ClientEnvironment {
  readonly document: { visibilityState: string };
  private readonly fns = new Map<string, Set<() => void>>();

  constructor(visibilityState = "visible") {
    this.document = { visibilityState };
  }

  addEventListener(type: string, fn: () => void): void {
    let s = this.fns.get(type);
    if (!s) this.fns.set(type, (s = new Set()));
    s.add(fn);
  }

  removeEventListener(type: string, fn: () => void): void {
    this.fns.get(type)?.delete(fn);
  }

  /** How many listeners are registered for `type`. */
  listenerCount(type: string): number {
    return this.fns.get(type)?.size ?? 0;
  }

  /** The browser is back online. */
  goOnline(): void {
    this.fire("online");
  }

  /** The page becomes `visible` or `hidden`. */
  setVisibility(state: "visible" | "hidden"): void {
    this.document.visibilityState = state;
    this.fire("visibilitychange");
  }

  private fire(type: string): void {
    for (const fn of [...(this.fns.get(type) ?? [])]) fn();
  }
}
