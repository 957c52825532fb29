// Compiled (never run) by `npm run typecheck`: the public types do what an app relies on.
// Each @ts-expect-error line must fail to compile, or tsc reports the directive unused.

import { SwitchboardClient, HubError, type ConnectionState, type OfferView, type ReplyTask, type Task } from "../src/index.js";
import { FakeHub, makeToken } from "../src/testing.js";

const hub = new FakeHub();
const client = new SwitchboardClient({ url: "ws://hub/v1/ws", token: makeToken(), WebSocket: hub.WebSocket });
// A browser's WebSocket constructor fits the option.
new SwitchboardClient({ url: "ws://hub/v1/ws", token: async () => "t", WebSocket: WebSocket });

const off: () => void = client.on("offer", (o: OfferView) => o.deadline);
off();
client.on("connection", (s: ConnectionState) => {
  if (s.kind === "closed") {
    const r: "client" | "replaced" | "logged_out" | "logged_out_by_supervisor" | "token_expired" | "unauthorized" | "forbidden" = s.reason;
    void r;
  }
  if (s.kind === "open") void s.welcome.agent.agent_id;
});
client.on("record_changed", ({ change }) => {
  if (change.kind === "customer") void change.record.emails;
  if (change.kind === "request") void change.record.title;
});
// @ts-expect-error: an offer is not a welcome
client.on("offer", (w: { session_id: string }) => w);
// @ts-expect-error: no such event
client.on("offers", () => {});

// A supervisor's client: its open state carries the snapshot, and it has a board.
const sup = new SwitchboardClient({ url: "ws://hub/v1/ws", token: makeToken({ role: "supervisor" }), role: "supervisor", WebSocket: hub.WebSocket });
sup.on("connection", (s) => {
  if (s.kind === "open") void s.snapshot.agents[0]?.tasks;
  // @ts-expect-error: a supervisor gets no welcome
  if (s.kind === "open") void s.welcome;
});
sup.on("board", (b) => void b.agents.get("ana")?.team);
sup.on("stats", (f) => void f.stats.queues[0]?.now.oldest_enqueued_at);

async function requests(): Promise<void> {
  const accepted: ReplyTask = await client.request({ type: "accept", offer_id: "x" });
  const t: Task = accepted.task;
  if (t.state === "assigned") void t.accepted_at;
  const { customers } = await client.request({ type: "search_customers", query: "joao" });
  void customers[0]?.customer_id;
  // @ts-expect-error: accept needs offer_id
  await client.request({ type: "accept" });
  // @ts-expect-error: not a client message
  await client.request({ type: "welcome" });
  // @ts-expect-error: the hub refuses unknown fields, so do the types
  await client.request({ type: "ping", extra: 1 });
  try {
    await client.setState("not_ready", "break");
  } catch (e) {
    if (e instanceof HubError && e.code === "version_conflict") void e.current;
    // @ts-expect-error: not an error code
    if (e instanceof HubError && e.code === "nope") void 0;
  }
  const ms: number = client.remainingMs("2026-11-24T09:38:00.192Z") + client.clockOffsetMs + client.serverNow();
  void ms;
}
void requests;
