// Answers that come late, in Chromium against a hub this test starts. The page's
// websocket goes through the test (`tapSocket`), which holds the hub's answers to chosen
// requests and lets them go when the test says: the order a slow network or a busy hub
// would give them. Each test here failed on the desktop before its fix (checked).
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { agentSocket, integration, launch, openPage, signIn, startHub, tapSocket, token } from "./harness.mjs";

// One agent a test, so that no test's offers or state reach another's.
const AGENTS = [
  ["alice", "Alice Moreau"],
  ["bob", "Bob Stone"],
  ["carla", "Carla Dias"],
  ["dana", "Dana Kim"],
  ["erin", "Erin Walsh"],
  ["fay", "Fay Ross"],
  ["gus", "Gus Hale"],
]
  .map(([id, name]) => `[[agents]]\nid = "${id}"\nname = "${name}"\nqueues = ["support"]\n`)
  .join("\n");

const CONFIG = `
[auth]
secret = "browser-test-secret-0123456789"

[routing]
offer_timeout_secs = 15
wrap_up_secs = 0

[[queues]]
id = "support"
name = "Support"
channels = ["chat", "email", "voice"]

${AGENTS}
`;

let hub;
let browser;

before(async () => {
  hub = await startHub(CONFIG);
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await hub?.stop();
});

/** A signed-in, Ready agent whose websocket goes through a tap. */
async function agent(id) {
  const context = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
  const page = await context.newPage();
  const problems = [];
  page.on("pageerror", (e) => problems.push(String(e)));
  const tap = await tapSocket(page);
  await page.goto(hub.base + "/");
  await signIn(page, token(id, "agent"));
  await page.getByTestId("connection").filter({ hasText: "Connected" }).waitFor();
  await page.getByTestId("status-select").selectOption({ label: "Ready" });
  await page.getByTestId("agent-status").filter({ hasText: /^Ready/ }).waitFor();
  return { context, page, tap, problems };
}

/**
 * Waits until the page has handled every answer to what it asked so far: a search the
 * test sends now is answered after them (one socket, answered in order), and its result
 * is drawn after theirs.
 */
let settles = 0;
async function settle(a) {
  const p = a.page;
  const query = `nobody-${++settles}`;
  await p.getByRole("tab", { name: /Search/ }).click();
  await p.getByRole("searchbox", { name: "Search customers" }).fill(query);
  await p.getByRole("button", { name: "Search", exact: true }).click();
  await a.tap.answered((f) => f.request.type === "search_customers" && f.request.query === query, "the settling search");
  await p.getByText("No customers found.").waitFor();
  await p.getByRole("tab", { name: /Open/ }).click();
}

/** The place of a request among those the page sent. */
const sentAt = (a, f) => a.tap.sentFrames().indexOf(f);

/** A chat from a customer the hub knows (by email), accepted: the workspace shows it. */
async function interaction(a, crm, name, email) {
  const { customer } = await crm.createCustomer({ name, emails: [email] });
  const task = await crm.createTask({ channel: "chat", queue: "support", customer: { email } });
  await a.page.locator(`section.offer[data-task-id="${task.task_id}"]`).getByTestId("accept").click();
  await a.page.getByTestId("work-title").filter({ hasText: name }).waitFor();
  return { customer, task };
}

test("an open answered late does not cover the one asked for after it", async () => {
  const crm = integration(hub);
  const a = await agent("alice");
  const { customer: ana } = await interaction(a, crm, "Ana Lima", "ana.lima@example.org");
  await crm.createCustomer({ name: "Bruno Reis", emails: ["bruno@example.org"] });
  // Bruno reopened from Search: the Open list has Ana's interaction and Bruno.
  const p = a.page;
  await p.getByRole("tab", { name: /Search/ }).click();
  await p.getByRole("searchbox", { name: "Search customers" }).fill("bruno");
  await p.getByRole("button", { name: "Search", exact: true }).click();
  await p.getByRole("button", { name: "Reopen Bruno Reis" }).click();
  await p.getByTestId("work-title").filter({ hasText: "Bruno Reis" }).waitFor();
  await p.getByRole("tab", { name: /Open/ }).click();

  // Ana's interaction is clicked, its first answer held; then Bruno is clicked and shown.
  a.tap.hold((f) => f.type === "get_activity");
  await p.getByTestId("open-list").getByRole("button", { name: "Ana Lima" }).click();
  await a.tap.holdingAtLeast(1);
  const before = a.tap.sentFrames().length;
  await p.getByTestId("open-list").getByRole("button", { name: "Bruno Reis" }).click();
  // Bruno's open is done when its journey is answered (the last thing it asks).
  await a.tap.answered((f) => f.request.type === "get_journey" && sentAt(a, f.request) >= before, "Bruno's journey");
  await p.getByTestId("work-title").filter({ hasText: "Bruno Reis" }).waitFor();

  // Ana's answers arrive now. What the late open asks after Ana's customer (the desktop
  // before the fix: her journey, then it drew her) goes out in the same turn as that
  // answer, before the settling search.
  a.tap.release();
  await a.tap.answered((f) => f.request.type === "get_customer" && f.request.customer_id === ana.customer_id, "Ana's customer");
  await settle(a);
  assert.equal(await p.getByTestId("work-title").textContent(), "Bruno Reis", "the workspace shows what was clicked last");
  assert.deepEqual(a.problems, []);
  await a.context.close();
});

test("a save answered late keeps what was typed meanwhile, and two tags removed quickly both go", async () => {
  const crm = integration(hub);
  const a = await agent("bob");
  await interaction(a, crm, "Célia Nunes", "celia@example.org");
  const p = a.page;
  const card = p.getByTestId("activity-card");

  // Notes saved, the answer held while the agent types on.
  await card.getByLabel("Activity notes").fill("Wants a refund");
  a.tap.hold((f) => f.type === "update_activity");
  await card.getByRole("button", { name: "Save notes" }).click();
  await a.tap.holdingAtLeast(1);
  await card.getByLabel("Activity notes").press("End");
  await card.getByLabel("Activity notes").pressSequentially(" for order A-17");
  a.tap.release();
  const saved = await a.tap.answered((f) => f.request.type === "update_activity" && f.result?.activity?.notes === "Wants a refund", "the notes saved");
  // The save draws the workspace again once the journey it asks for next is answered.
  await a.tap.sent((f) => f.type === "get_journey" && sentAt(a, f) > sentAt(a, saved.request), "the journey after the save");
  await settle(a);
  assert.equal(await card.getByLabel("Activity notes").inputValue(), "Wants a refund for order A-17", "what was typed during the save stays");

  // Two tags; both × clicked while the first removal's answer is held.
  for (const tag of ["refund", "vip"]) {
    await p.locator("#tag-input").fill(tag);
    await p.locator("#tag-input").press("Enter");
    await card.getByTestId("tags").getByText(tag, { exact: true }).waitFor();
  }
  a.tap.hold((f) => f.type === "update_activity");
  await card.getByRole("button", { name: "Remove tag refund" }).click();
  await a.tap.holdingAtLeast(1);
  await card.getByRole("button", { name: "Remove tag vip" }).click();
  a.tap.release();
  await a.tap.answered((f) => f.request.type === "update_activity" && f.type === "reply" && f.result?.activity?.tags?.length === 0, "both tags removed");
  await card.getByTestId("tags").locator("li").first().waitFor({ state: "detached" });
  assert.equal(await p.getByTestId("caution").count(), 0, "no caution about the agent's own change");
  assert.equal(await p.locator(".notice.error").count(), 0, "no error notice");
  assert.deepEqual(a.problems, []);
  await a.context.close();
});

test("a double-click on Accept accepts once, with no error", async () => {
  const crm = integration(hub);
  const a = await agent("carla");
  const task = await crm.createTask({ channel: "chat", queue: "support", customer: { name: "Duarte" } });
  const accept = a.page.locator(`section.offer[data-task-id="${task.task_id}"]`).getByTestId("accept");
  await accept.waitFor();
  // Both clicks land before the hub's answer (or its push that takes the offer away).
  await accept.dblclick();
  await a.page.getByTestId("work-title").filter({ hasText: "Unknown caller" }).waitFor();
  // The workspace opened after the accept's answer: a second accept, if sent, went before.
  assert.equal(a.tap.sentFrames().filter((f) => f.type === "accept").length, 1, "one accept sent");
  assert.equal(await a.page.locator(".notice.error").count(), 0);
  await a.context.close();
});

test("a question on screen goes when the desktop is left", async () => {
  const crm = integration(hub);
  const a = await agent("dana");
  await interaction(a, crm, "Edgar Lopes", "edgar@example.org");
  const p = a.page;
  await p.getByTestId("activity-card").getByLabel("Activity notes").fill("unsaved");
  await p.getByTestId("close").click();
  await p.getByRole("dialog", { name: "Unsaved changes" }).waitFor();
  // The same agent signs in elsewhere: this desktop is replaced and goes to sign-in.
  const other = await openPage(browser, hub);
  await signIn(other.page, token("dana", "agent"));
  await p.getByRole("heading", { name: "Sign in to the agent desktop" }).waitFor();
  assert.equal(await p.locator("dialog[open]").count(), 0, "no dialog over the sign-in page");
  // The sign-in page is usable: its field takes a token.
  await p.getByLabel("Agent token").fill("x");
  await other.context.close();
  await a.context.close();
});

// A change pushed while the desktop's socket was down never arrives: after the reconnect
// the desktop reads what it shows again, and the agent gets the caution as for a pushed
// change. Before, nothing showed until a save was refused.
test("a change made while the desktop was disconnected gets its caution after the reconnect", async () => {
  const a = await agent("erin");
  const crm = integration(hub);
  const { customer } = await interaction(a, crm, "Íris Lund", "iris@example.se");
  a.tap.drop((f) => f.type === "record_changed");
  await crm.patchCustomer(customer.customer_id, customer.version, { name: "Íris Lund Berg" });
  await a.tap.dropped((f) => f.type === "record_changed" && f.change.id === customer.customer_id, "the change, lost");
  a.tap.drop(null);
  a.tap.closePage();
  await a.page.getByTestId("caution").filter({ hasText: "crm changed this customer" }).waitFor();
  await a.page.getByTestId("connection").filter({ hasText: "Connected" }).waitFor();
  assert.equal(await a.page.getByTestId("customer-name").textContent(), "Íris Lund", "the form keeps what the agent saw");
  await a.page.getByTestId("caution").getByRole("button", { name: "Load" }).click();
  await a.page.getByTestId("customer-name").filter({ hasText: "Íris Lund Berg" }).waitFor();
  assert.deepEqual(a.problems, []);
  await a.context.close();
});

test("another agent's change to another request of the customer keeps what is typed for the shown one", async () => {
  const crm = integration(hub);
  const { customer } = await crm.createCustomer({ name: "Ana Sousa", emails: ["ana.sousa@example.pt"] });
  // Gus (his own desktop, never Ready) files an older request on Ana, and closes it.
  const gus = await agentSocket(browser, hub, token("gus", "agent"));
  await gus.request({ type: "reopen_customer", customer_id: customer.customer_id });
  const { request: old } = await gus.request({ type: "create_request", customer_id: customer.customer_id, title: "Old matter" });
  const { request: closed } = await gus.request({ type: "update_request", request_id: old.request_id, base_version: old.version, state: "closed" });
  // Fay accepts Ana's chat: it goes on a new request, whose title she starts typing.
  const a = await agent("fay");
  const task = await crm.createTask({ channel: "chat", queue: "support", customer: { email: "ana.sousa@example.pt" } });
  await a.page.locator(`section.offer[data-task-id="${task.task_id}"]`).getByTestId("accept").click();
  await a.page.getByTestId("work-title").filter({ hasText: "Ana Sousa" }).waitFor();
  await a.page.getByLabel("Request title").fill("Refund");
  // Gus renames the old request.
  await gus.request({ type: "update_request", request_id: old.request_id, base_version: closed.version, title: "Old matter, renamed" });
  await a.tap.received((f) => f.type === "record_changed" && f.change.id === old.request_id, "the change to the old request");
  await settle(a);
  // Nothing typed was for it: no caution, the draft stays, and the list shows the new title.
  assert.equal(await a.page.getByTestId("caution").count(), 0, "a caution for a request the agent is not editing");
  assert.equal(await a.page.getByLabel("Request title").inputValue(), "Refund");
  await a.page.getByTestId("recent-requests").getByText("Old matter, renamed").waitFor();
  assert.deepEqual(a.problems, []);
  await gus.close();
  await a.context.close();
});
