// The desktop's calls to the hub: the client library's typed helpers (one per message of
// the protocol, typed from the schema), under the names the desktop uses. Kept as one
// seam so the desktop reads as its own vocabulary and a test could stand in for it.
import type { CustomerFields, SwitchboardClient } from "../../../clients/typescript/src/index.ts";

export class Api {
  constructor(readonly client: SwitchboardClient) {}

  setState(state: "ready" | "not_ready", reason?: string) {
    return this.client.setState(state, reason);
  }
  accept(offerId: string) {
    return this.client.accept(offerId);
  }
  decline(offerId: string, reason?: string) {
    return this.client.decline(offerId, reason);
  }
  complete(taskId: string, wrapUpCode?: string) {
    return this.client.complete(taskId, wrapUpCode);
  }
  logout() {
    return this.client.logout();
  }
  getLists() {
    return this.client.getLists();
  }
  search(query: string) {
    return this.client.searchCustomers(query);
  }
  getCustomer(customerId: string) {
    return this.client.getCustomer(customerId);
  }
  getActivity(activityId: string) {
    return this.client.getActivity(activityId);
  }
  createCustomer(customer: CustomerFields, activityId?: string | null) {
    return this.client.createCustomer(customer, activityId ?? undefined);
  }
  updateCustomer(customerId: string, baseVersion: number, changes: CustomerFields) {
    return this.client.updateCustomer(customerId, baseVersion, changes);
  }
  linkActivity(activityId: string, customerId: string) {
    return this.client.linkActivity(activityId, customerId);
  }
  moveActivity(activityId: string, requestId?: string) {
    return this.client.moveActivity(activityId, requestId);
  }
  createRequest(customerId: string, title = "", description = "") {
    return this.client.createRequest(customerId, { title, description });
  }
  updateRequest(requestId: string, baseVersion: number, changes: { title?: string; description?: string; state?: "open" | "closed" }) {
    return this.client.updateRequest(requestId, baseVersion, changes);
  }
  updateActivity(activityId: string, baseVersion: number, changes: { tags?: string[]; notes?: string }) {
    return this.client.updateActivity(activityId, baseVersion, changes);
  }
  addNote(customerId: string, text: string, requestId?: string | null) {
    return this.client.addNote(customerId, text, requestId ?? undefined);
  }
  journey(customerId: string, requestId?: string | null) {
    return this.client.getJourney(customerId, requestId ? { requestId } : {});
  }
  closeInteraction(activityId: string, choice?: "create" | "discard", customer?: CustomerFields) {
    return this.client.closeInteraction(activityId, choice, customer);
  }
  reopen(customerId: string) {
    return this.client.reopenCustomer(customerId);
  }
  closeCustomer(customerId: string) {
    return this.client.closeCustomer(customerId);
  }
}
