// Routing from the desktop, in Chromium against a hub this test starts: an agent consults
// another (warm transfer), transfers a task to another agent who declines, takes a consult
// back, and transfers blind to a queue. Every assertion is on what the pages show; the
// integration's HTTP is used only to feed tasks in and, once, to confirm where a task is.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { axe, integration, launch, openPage, shot, signIn, startHub, token } from "./harness.mjs";

const CONFIG = `
[auth]
secret = "browser-test-secret-0123456789"

[routing]
offer_timeout_secs = 30
wrap_up_secs = 0

[[queues]]
id = "support"
name = "Support"
channels = ["chat", "email"]

[[queues]]
id = "backoffice"
name = "Back office"
channels = ["email"]
# The email declined below waits for its passed-over agents for the rest of the test: at
# the default 30 s, a slow machine saw it offered again where the later emails' offers
# were awaited.
reoffer_after_secs = 3600

[[agents]]
id = "alice"
name = "Alice Moreau"
skills = ["en"]
skill_levels = { en = 9 }
queues = ["support", "backoffice"]

[[agents]]
id = "bob"
name = "Bob Berg"
skills = ["en"]
queues = ["support"]

[[agents]]
id = "carla"
name = "Carla Reis"
queues = ["backoffice"]
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

async function noSeriousA11y(page, name) {
  const v = await axe(page);
  if (v.length) console.log(JSON.stringify(v, null, 1));
  assert.deepEqual(v, [], `${name}: serious or critical accessibility violations`);
}

async function ready(page) {
  await page.getByTestId("status-select").selectOption({ label: "Ready" });
  await page.getByTestId("agent-status").filter({ hasText: /^(Ready|Busy)/ }).waitFor();
}

test("consult, transfer to an agent, cancel consult, blind transfer", async () => {
  const crm = integration(hub);
  const A = await openPage(browser, hub);
  const B = await openPage(browser, hub);
  const a = A.page;
  const b = B.page;
  await signIn(a, token("alice", "agent"));
  await signIn(b, token("bob", "agent"));
  await a.getByTestId("connection").filter({ hasText: "Connected" }).waitFor();
  await b.getByTestId("connection").filter({ hasText: "Connected" }).waitFor();
  // Only A is Ready: the chat goes to A.
  await ready(a);

  const chat = await crm.createTask({
    channel: "chat",
    queue: "support",
    skill_levels: { en: 7 },
    customer: { name: "Maria Lopes", chat_handle: "maria9" },
    attributes: { survey: { topic: "delivery", order: "B-77" } },
  });
  const aOffer = a.locator(`section.offer[data-task-id="${chat.task_id}"]`);
  await aOffer.getByTestId("offer-skill-levels").filter({ hasText: "en ≥ 7" }).waitFor();
  // An ordinary offer names no asker.
  assert.equal(await aOffer.getByTestId("offer-consult").count(), 0);
  await aOffer.getByRole("button", { name: "Accept" }).click();
  const aRow = a.getByTestId("in-progress").locator(`[data-task-id="${chat.task_id}"]`);
  await aRow.waitFor();
  assert.match(await aRow.textContent(), /Skill levels: en ≥ 7/);
  await a.getByTestId("work-title").filter({ hasText: "Unknown caller" }).waitFor();
  await a.getByTestId("summary-skill-levels").filter({ hasText: "en ≥ 7" }).waitFor();
  // A makes the caller a customer, so that the context B gets is a named one.
  await a.getByTestId("customer-card").getByRole("button", { name: "Create" }).click();
  await a.getByTestId("work-title").filter({ hasText: "Maria Lopes" }).waitFor();

  // A consults B: keyboard only, from the row's button to the agent id and Consult.
  await ready(b);
  await aRow.getByRole("button", { name: "Hand over to an agent" }).focus();
  await a.keyboard.press("Enter");
  const form = a.getByRole("group", { name: "Transfer or consult an agent" });
  await form.waitFor();
  await a.waitForFunction((id) => document.activeElement?.id === id, `agent-${chat.task_id}`);
  await noSeriousA11y(a, "hand-over form");
  await shot(a, "r1-handover");
  // An empty id is not sent.
  await form.getByRole("button", { name: "Consult" }).click();
  assert.equal(await form.count(), 1);
  await a.keyboard.type("bob");
  // Enter in the field consults (the first button), it does not transfer.
  await a.keyboard.press("Enter");
  await aRow.getByTestId("consult-pending").filter({ hasText: "Consulting bob: waiting for an answer." }).waitFor();
  // The task stays A's meanwhile.
  assert.equal(await aRow.count(), 1);

  // B's offer says who asks.
  const bOffer = b.locator(`section.offer[data-task-id="${chat.task_id}"]`);
  await bOffer.getByTestId("offer-consult").filter({ hasText: "alice asks you to take over this task." }).waitFor();
  assert.equal(await bOffer.getByTestId("offer-consult-from").textContent(), "alice");
  assert.equal(await bOffer.getByTestId("offer-customer").textContent(), "Maria Lopes");
  await bOffer.getByTestId("offer-known").filter({ hasText: "Maria Lopes" }).waitFor();
  await noSeriousA11y(b, "consult offer");
  await shot(b, "r2-consult-offer");

  // B accepts: the task leaves A's In Progress and is in B's, with the same customer.
  await bOffer.getByRole("button", { name: "Accept" }).click();
  await a.getByText("bob accepted the task.").waitFor();
  await aRow.waitFor({ state: "detached" });
  await a.getByText("No tasks in progress.").waitFor();
  await b.getByTestId("in-progress").locator(`[data-task-id="${chat.task_id}"]`).waitFor();
  await b.getByTestId("work-title").filter({ hasText: "Maria Lopes" }).waitFor();
  await b.getByTestId("summary").getByRole("tabpanel").filter({ hasText: "B-77" }).waitFor();
  await b.getByTestId("journey").getByText("Task transferred").first().waitFor();
  await b.getByTestId("summary-skill-levels").filter({ hasText: "en ≥ 7" }).waitFor();
  await noSeriousA11y(a, "after consult accepted");

  // A transfers an email to B; B declines; A is told and the task is back in its queue.
  const mail = await crm.createTask({ channel: "email", queue: "backoffice", customer: { email: "ola@example.org" } });
  await a.locator(`section.offer[data-task-id="${mail.task_id}"]`).getByRole("button", { name: "Accept" }).click();
  const mailRow = a.getByTestId("in-progress").locator(`[data-task-id="${mail.task_id}"]`);
  await mailRow.getByRole("button", { name: "Hand over to an agent" }).click();
  await a.getByLabel("Agent id").fill("bob");
  await a.getByRole("group", { name: "Transfer or consult an agent" }).getByRole("button", { name: "Transfer to agent" }).click();
  // A blind transfer to an agent hands the task on at once.
  await mailRow.waitFor({ state: "detached" });
  const bMail = b.locator(`section.offer[data-task-id="${mail.task_id}"]`);
  await bMail.getByRole("heading", { name: "Incoming Email" }).waitFor();
  assert.equal(await bMail.getByTestId("offer-consult").count(), 0);
  await bMail.getByRole("button", { name: "Decline" }).click();
  await bMail.getByRole("button", { name: "Decline offer" }).click();
  await a.getByText("bob declined the transfer: the task is back in its queue.").waitFor();
  await shot(a, "r3-transfer-declined");
  // Both A (who transferred it) and B (who declined) are passed over for the re-offer time.
  const back = await fetch(`${hub.base}/v1/tasks/${mail.task_id}`, { headers: { authorization: `Bearer ${token("crm", "integration")}` } }).then((r) => r.json());
  assert.equal(back.state, "queued");
  assert.equal(back.queue, "backoffice");

  // A consults B on another email and takes it back: B is told the asker withdrew it.
  const second = await crm.createTask({ channel: "email", queue: "backoffice", customer: { email: "per@example.org" } });
  await a.locator(`section.offer[data-task-id="${second.task_id}"]`).getByRole("button", { name: "Accept" }).click();
  const secondRow = a.getByTestId("in-progress").locator(`[data-task-id="${second.task_id}"]`);
  await secondRow.getByRole("button", { name: "Hand over to an agent" }).click();
  await a.getByLabel("Agent id").fill("bob");
  await a.getByRole("group", { name: "Transfer or consult an agent" }).getByRole("button", { name: "Consult" }).click();
  await b.locator(`section.offer[data-task-id="${second.task_id}"]`).getByTestId("offer-consult-from").waitFor();
  await secondRow.getByRole("button", { name: "Cancel consult" }).click();
  await b.getByText("alice took the consult back: the offer was withdrawn.").waitFor();
  await a.getByText("You took the consult with bob back: the task stays with you.").waitFor();
  await secondRow.getByTestId("consult-pending").waitFor({ state: "detached" });
  assert.equal(await secondRow.count(), 1, "the task stays with A");
  await b.locator("section.offer").waitFor({ state: "hidden" });

  // A consult to an unknown agent is refused with the hub's error, shown on the page.
  await secondRow.getByRole("button", { name: "Hand over to an agent" }).click();
  await a.getByLabel("Agent id").fill("nobody");
  await a.getByRole("group", { name: "Transfer or consult an agent" }).getByRole("button", { name: "Consult" }).click();
  await a.locator(".notice.error").filter({ hasText: /^Error: (unknown_agent|not_available)/ }).waitFor();
  await a.getByLabel("Agent id").press("Escape");
  await a.getByRole("group", { name: "Transfer or consult an agent" }).waitFor({ state: "detached" });
  await a.waitForFunction((id) => document.activeElement?.id === id, `handover-${second.task_id}`);

  // A consult B declines leaves the task with A, which is told so.
  const third = await crm.createTask({ channel: "email", queue: "backoffice", customer: { email: "eva@example.org" } });
  await a.locator(`section.offer[data-task-id="${third.task_id}"]`).getByRole("button", { name: "Accept" }).click();
  const thirdRow = a.getByTestId("in-progress").locator(`[data-task-id="${third.task_id}"]`);
  await thirdRow.getByRole("button", { name: "Hand over to an agent" }).click();
  await a.getByLabel("Agent id").fill("bob");
  await a.getByRole("group", { name: "Transfer or consult an agent" }).getByRole("button", { name: "Consult" }).click();
  const bThird = b.locator(`section.offer[data-task-id="${third.task_id}"]`);
  await bThird.getByTestId("offer-consult-from").filter({ hasText: "alice" }).waitFor();
  await bThird.getByRole("button", { name: "Decline" }).click();
  await bThird.getByRole("button", { name: "Decline offer" }).click();
  await a.getByText("bob declined the consult: the task stays with you.").waitFor();
  await thirdRow.getByTestId("consult-pending").waitFor({ state: "detached" });
  assert.equal(await thirdRow.count(), 1, "the declined consult's task stays with A");

  // A blind transfer to a queue still works: B, in Support, is offered it.
  await secondRow.getByLabel("Transfer to queue").selectOption({ label: "Support" });
  await secondRow.getByRole("button", { name: "Transfer", exact: true }).click();
  await secondRow.waitFor({ state: "detached" });
  const bSecond = b.locator(`section.offer[data-task-id="${second.task_id}"]`);
  await bSecond.getByRole("heading", { name: "Incoming Email" }).waitFor();
  await bSecond.getByRole("button", { name: "Accept" }).click();
  await b.getByTestId("in-progress").locator(`[data-task-id="${second.task_id}"]`).waitFor();

  // An integration moves A's task away (back to its queue, which only A serves, and A is
  // passed over for it now): A is told, and the task leaves In Progress.
  const moved = await fetch(`${hub.base}/v1/tasks/${third.task_id}/transfer`, {
    method: "POST",
    headers: { authorization: `Bearer ${token("crm", "integration")}`, "content-type": "application/json" },
    body: JSON.stringify({ to_queue: "backoffice" }),
  });
  assert.equal(moved.status, 200, await moved.text());
  await a.getByText("A task was transferred away from you.").waitFor();
  await thirdRow.waitFor({ state: "detached" });

  // An offer B declines by choosing Not Ready is told in words.
  await a.getByTestId("status-select").selectOption({ label: "Not Ready: Break" });
  await a.getByTestId("agent-status").filter({ hasText: "Not Ready (Break)" }).waitFor();
  const late = await crm.createTask({ channel: "chat", queue: "support", customer: { name: "Late Caller" } });
  await b.locator(`section.offer[data-task-id="${late.task_id}"]`).waitFor();
  await b.getByTestId("status-select").selectOption({ label: "Not Ready: Break" });
  await b.getByText("The offer was declined: your status is Not Ready.").waitFor();
  await b.locator("section.offer").waitFor({ state: "hidden" });

  // The new controls follow the language: Serbian Cyrillic is made from the Latin table.
  await b.getByLabel("Language").selectOption({ label: "Português" });
  assert.equal(await b.getByTestId("in-progress").getByRole("button", { name: "Passar a um agente" }).count(), 2);
  await b.getByLabel("Idioma").selectOption({ label: "Српски (ћирилица)" });
  assert.equal(await b.getByTestId("in-progress").getByRole("button", { name: "Предај агенту" }).count(), 2);

  assert.deepEqual(A.problems, [], "no CSP violation or page error on A");
  assert.deepEqual(B.problems, [], "no CSP violation or page error on B");
  await A.context.close();
  await B.context.close();
});

// A token that ends soon: the desktop asks for a new one before its end, and the session
// goes on past it. Before, the agent landed on the sign-in page at the token's exp,
// mid-call. (Last in this file: carla stays signed in to the end.)
test("before its token ends the desktop asks for a new one, and the session goes on past the end", async () => {
  const { page, context, problems } = await openPage(browser, hub);
  const ttl = 8;
  const ends = Date.now() + ttl * 1000;
  await signIn(page, token("carla", "agent", ttl));
  await page.getByTestId("connection").filter({ hasText: "Connected" }).waitFor();
  await page.getByTestId("agent-status").filter({ hasText: /^Not Ready/ }).waitFor();
  const renew = page.getByRole("region", { name: /Your sign-in ends at/ });
  await renew.waitFor();
  // A token of another agent is refused, and said so; the box stays.
  const bobs = token("bob", "agent", 3600);
  await renew.getByLabel("New token").fill(bobs);
  await renew.getByRole("button", { name: "Stay signed in" }).click();
  await renew.getByRole("alert").filter({ hasText: "forbidden" }).waitFor();
  assert.equal(await renew.getByLabel("New token").inputValue(), bobs, "what was pasted stays");
  await renew.getByLabel("New token").fill(token("carla", "agent", 3600));
  await renew.getByRole("button", { name: "Stay signed in" }).click();
  await page.getByText(/^Signed in until /).waitFor();
  assert.equal(await renew.isHidden(), true);
  // Past the first token's end (and the hub's check of it), still here, still signed in.
  await page.waitForFunction((t) => Date.now() > t, ends + 2000, { timeout: 20_000 });
  assert.equal(await page.getByTestId("connection").textContent(), "Connected");
  await page.getByTestId("agent-status").filter({ hasText: /^Not Ready/ }).waitFor();
  // A reload signs in with the renewed token, not the one that ended.
  await page.reload();
  await page.getByTestId("connection").filter({ hasText: "Connected" }).waitFor();
  assert.equal(await renew.isHidden(), true);
  assert.deepEqual(problems, []);
  await context.close();
});
