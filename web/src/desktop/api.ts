// The desktop's calls to the hub, each typed by what its reply carries. Everything goes
// through the client library's generic request(), so the desktop depends only on the
// library's frame types and on the protocol's message names.
import type {
  Activity, AgentView, CustomerFields, CustomerSummary, CustomerView, JourneyEvent, Lists, Note, Request, Task,
  SwitchboardClient,
} from "../../../clients/typescript/src/index.ts";

export class Api {
  constructor(readonly client: SwitchboardClient) {}

  private call<T>(frame: Record<string, unknown>): Promise<T> {
    // The library's request() takes any client frame without its id; the frames built
    // here follow the schema (checked by the hub, which refuses unknown fields).
    return (this.client.request as (f: unknown) => Promise<unknown>)(frame) as Promise<T>;
  }

  setState(state: "ready" | "not_ready", reason?: string) {
    return this.call<{ agent: AgentView }>(reason ? { type: "set_state", state, reason } : { type: "set_state", state });
  }
  accept(offerId: string) {
    return this.call<{ task: Task; activity: Activity }>({ type: "accept", offer_id: offerId });
  }
  decline(offerId: string, reason?: string) {
    return this.call<Record<string, never>>(reason ? { type: "decline", offer_id: offerId, reason } : { type: "decline", offer_id: offerId });
  }
  complete(taskId: string, wrapUpCode?: string) {
    return this.call<{ task: Task }>(wrapUpCode ? { type: "complete", task_id: taskId, wrap_up_code: wrapUpCode } : { type: "complete", task_id: taskId });
  }
  logout() {
    return this.call<Record<string, never>>({ type: "logout" });
  }
  getLists() {
    return this.call<{ lists: Lists }>({ type: "get_lists" });
  }
  search(query: string) {
    return this.call<{ customers: CustomerSummary[] }>({ type: "search_customers", query });
  }
  getCustomer(customerId: string) {
    return this.call<CustomerView>({ type: "get_customer", customer_id: customerId });
  }
  unwatch(customerId: string) {
    return this.call<Record<string, never>>({ type: "unwatch_customer", customer_id: customerId });
  }
  getActivity(activityId: string) {
    return this.call<{ activity: Activity }>({ type: "get_activity", activity_id: activityId });
  }
  createCustomer(customer: CustomerFields, activityId?: string | null) {
    return this.call<CustomerView>(activityId ? { type: "create_customer", customer, activity_id: activityId } : { type: "create_customer", customer });
  }
  updateCustomer(customerId: string, baseVersion: number, changes: CustomerFields) {
    return this.call<CustomerView>({ type: "update_customer", customer_id: customerId, base_version: baseVersion, changes });
  }
  linkActivity(activityId: string, customerId: string) {
    return this.call<{ activity: Activity }>({ type: "link_activity", activity_id: activityId, customer_id: customerId });
  }
  createRequest(customerId: string, title = "", description = "") {
    return this.call<{ request: Request }>({ type: "create_request", customer_id: customerId, title, description });
  }
  updateRequest(requestId: string, baseVersion: number, changes: { title?: string; description?: string; state?: "open" | "closed" }) {
    return this.call<{ request: Request }>({ type: "update_request", request_id: requestId, base_version: baseVersion, ...changes });
  }
  updateActivity(activityId: string, baseVersion: number, changes: { tags?: string[]; notes?: string }) {
    return this.call<{ activity: Activity }>({ type: "update_activity", activity_id: activityId, base_version: baseVersion, ...changes });
  }
  addNote(customerId: string, text: string, requestId?: string | null) {
    return this.call<{ note: Note }>(requestId ? { type: "add_note", customer_id: customerId, text, request_id: requestId } : { type: "add_note", customer_id: customerId, text });
  }
  journey(customerId: string, requestId?: string | null) {
    return this.call<{ journey: JourneyEvent[] }>(requestId ? { type: "get_journey", customer_id: customerId, request_id: requestId } : { type: "get_journey", customer_id: customerId });
  }
  closeInteraction(activityId: string, choice?: "create" | "discard", customer?: CustomerFields) {
    const f: Record<string, unknown> = { type: "close_interaction", activity_id: activityId };
    if (choice) f.choice = choice;
    if (customer) f.customer = customer;
    return this.call<{ activity: Activity }>(f);
  }
  reopen(customerId: string) {
    return this.call<CustomerView>({ type: "reopen_customer", customer_id: customerId });
  }
  closeCustomer(customerId: string) {
    return this.call<Record<string, never>>({ type: "close_customer", customer_id: customerId });
  }
}
