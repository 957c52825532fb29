// End to end, in Chromium, against a hub this test starts: two agents in two browser
// contexts and an integration over HTTP walk the help pages' flow. Every step waits for
// what the page shows (Playwright's locators wait for the element or text to appear).
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { axe, integration, launch, openPage, shot, signIn, startHub, token } from "./harness.mjs";

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

[[queues]]
id = "sales"
name = "Sales"
channels = ["voice", "chat"]
# Short, so the test sees an offer expire; long enough that a loaded machine still shows
# the offer before it does.
offer_timeout_secs = 5

[[queues]]
id = "backoffice"
name = "Back office"
channels = ["email"]
wrap_up_secs = 600

# Tess's alone: what the other tests leave waiting is not offered to her.
[[queues]]
id = "intake"
name = "Intake"
channels = ["email"]

[[agents]]
id = "sam"
name = "Sam Lee"
queues = ["backoffice"]

[[agents]]
id = "tess"
name = "Tess Ito"
queues = ["intake"]

[[agents]]
id = "alice"
name = "Alice Moreau"
skills = ["en", "pt"]
queues = ["support"]

[[agents]]
id = "joao"
name = "João Araújo"
skills = ["pt"]
queues = ["sales"]
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

const A11Y = [];
async function checkA11y(page, name) {
  const v = await axe(page);
  A11Y.push({ name, violations: v.length });
  if (v.length) console.log(JSON.stringify(v, null, 1));
  assert.deepEqual(v, [], `${name}: serious or critical accessibility violations`);
}

test("two agents and an integration walk the help pages' flow", async () => {
  const crm = integration(hub);
  const A = await openPage(browser, hub);
  const B = await openPage(browser, hub);
  const a = A.page;
  const b = B.page;

  // Sign-in page: a pasted token (this hub has a configuration file: no demo agents).
  await a.getByRole("heading", { name: "Sign in to the agent desktop" }).waitFor();
  assert.equal(await a.getByRole("button", { name: /Sign in as/ }).count(), 0);
  await checkA11y(a, "sign-in");
  await shot(a, "01-sign-in");
  await signIn(a, token("alice", "agent"));
  await signIn(b, token("joao", "agent"));
  await a.getByTestId("connection").filter({ hasText: "Connected" }).waitFor();
  await b.getByTestId("connection").filter({ hasText: "Connected" }).waitFor();
  await a.locator(".who", { hasText: "Alice Moreau" }).waitFor();
  await a.getByTestId("agent-status").filter({ hasText: "Not Ready (Logged in)" }).waitFor();

  // Status: the configured Not Ready reasons are offered (they come with the desktop's
  // configuration, which may answer after the welcome); A goes Ready.
  await a.getByTestId("status-select").locator("option", { hasText: "Not Ready: After-call work" }).waitFor({ state: "attached" });
  const options = await a.getByTestId("status-select").locator("option").allTextContents();
  for (const r of ["Ready", "Not Ready: Break", "Not Ready: Lunch", "Not Ready: After-call work"]) assert.ok(options.includes(r), `status offers ${r}: ${options}`);
  await a.getByTestId("status-select").selectOption({ label: "Ready" });
  await a.getByTestId("agent-status").filter({ hasText: /^Ready/ }).waitFor();

  // A chat arrives for an unknown caller, with a pre-chat survey, portal navigation and visitor details.
  const chat = await crm.createTask({
    channel: "chat",
    queue: "support",
    skills: ["pt"],
    customer: { name: "João Silva", chat_handle: "joao77" },
    attributes: {
      survey: { topic: "refund", order: "A-1001" },
      portal: { pages_visited: ["/orders/A-1001", "/help/refunds"], searches: ["refund policy"], articles_viewed: [{ title: "How refunds work" }] },
      visitor: { authenticated: false, browser: "Firefox 140", location: "Lisboa" },
      campaign: "winter",
    },
  });
  const offer = a.locator("section.offer");
  await offer.getByRole("heading", { name: "Incoming Chat" }).waitFor();
  await offer.getByTestId("offer-customer").filter({ hasText: "João Silva" }).waitFor();
  assert.match(await offer.getByTestId("offer-countdown").textContent(), /^\d+ s left to accept$/);
  assert.equal(await offer.getAttribute("data-task-id"), chat.task_id);
  await checkA11y(a, "offer");
  await shot(a, "02-offer");

  // A accepts: the task is In Progress, the caller on the Open list, the workspace open on them.
  await offer.getByRole("button", { name: "Accept" }).click();
  await a.getByTestId("in-progress").locator(`[data-task-id="${chat.task_id}"]`).waitFor();
  await a.getByTestId("open-list").getByRole("button", { name: "Unknown caller" }).waitFor();
  await a.getByTestId("work-title").filter({ hasText: "Unknown caller" }).waitFor();
  assert.equal(await a.locator("section.offer").isHidden(), true);

  // The conversation summary: tabs for the survey, portal and visitor; the details below.
  const summary = a.getByTestId("summary");
  await summary.getByRole("tab", { name: "Pre-chat survey" }).waitFor();
  assert.match(await summary.getByRole("tabpanel").textContent(), /topic.*refund/);
  await summary.getByRole("tab", { name: "Portal navigation" }).click();
  const portal = await summary.getByRole("tabpanel").textContent();
  for (const s of ["/help/refunds", "refund policy", "How refunds work"]) assert.ok(portal.includes(s), `portal shows ${s}`);
  await summary.getByRole("tab", { name: "Portal navigation" }).press("ArrowRight");
  assert.match(await summary.getByRole("tabpanel").textContent(), /Lisboa/);
  await summary.getByRole("tab", { name: "Additional details" }).click();
  assert.match(await summary.getByRole("tabpanel").textContent(), /campaign.*winter/);
  const details = await summary.getByTestId("conversation-details").textContent();
  assert.match(details, /Chat/);
  assert.match(details, /Support/);
  assert.match(details, /pt/);

  // Request title and description, with a live count of characters (code points) against 2,000.
  await a.getByLabel("Request title").fill("Reembolso do pedido A-1001 💶");
  await a.locator("#req-title-count").filter({ hasText: "28 / 2,000 characters" }).waitFor();
  await a.getByLabel("Request description").fill("Charged twice for the same order.");
  await a.locator("#req-desc-count").filter({ hasText: "33 / 2,000 characters" }).waitFor();

  // Tags: Tab creates one, Enter another; a duplicate (in any case) is refused on the page.
  const tagInput = a.getByLabel("Tags", { exact: true }).and(a.locator("input"));
  await tagInput.fill("refund");
  await tagInput.press("Tab");
  await a.getByTestId("tags").getByText("refund", { exact: true }).waitFor();
  await expectFocused(a, "tag-input");
  await tagInput.fill("double charge");
  await tagInput.press("Enter");
  await a.getByTestId("tags").getByText("double charge", { exact: true }).waitFor();
  await tagInput.fill("Refund");
  await tagInput.press("Enter");
  await a.getByText("That tag is already there.").waitFor();
  await tagInput.fill("x".repeat(51));
  await tagInput.press("Enter");
  await a.getByText("A tag has at most 50 characters.").waitFor();
  // An accent typed apart from its letter (a combining mark) is one character, and the
  // same tag as the composed one: kept composed, as the hub keeps it.
  await tagInput.fill("Cafe\u0301");
  await tagInput.press("Enter");
  await a.getByTestId("tags").getByText("Café", { exact: true }).waitFor();
  await tagInput.fill("CAFÉ");
  await tagInput.press("Enter");
  await a.getByText("That tag is already there.").waitFor();
  await a.getByRole("button", { name: "Remove tag Café" }).click();
  await a.getByTestId("tags").getByText("Café", { exact: true }).waitFor({ state: "detached" });
  await tagInput.fill("e\u0301".repeat(50));
  await tagInput.press("Enter");
  await a.getByTestId("tags").getByText("é".repeat(50), { exact: true }).waitFor();
  await a.getByRole("button", { name: `Remove tag ${"é".repeat(50)}` }).click();
  await a.getByTestId("tags").getByText("é".repeat(50), { exact: true }).waitFor({ state: "detached" });
  await a.getByRole("button", { name: "Remove tag double charge" }).click();
  await a.getByTestId("tags").getByText("double charge", { exact: true }).waitFor({ state: "detached" });
  await tagInput.fill("");

  // The unknown caller becomes a customer: the form is filled from what the chat knew; Create.
  const form = a.getByTestId("customer-card");
  assert.equal(await form.getByLabel("Name").inputValue(), "João Silva");
  await form.getByLabel("Emails (one per line)").fill("joao.silva@example.com");
  await checkA11y(a, "workspace-unknown-caller");
  await shot(a, "03-workspace-unknown");
  await form.getByRole("button", { name: "Create" }).click();
  await a.getByTestId("work-title").filter({ hasText: "João Silva" }).waitFor();
  await form.getByTestId("customer-name").filter({ hasText: "João Silva" }).waitFor();
  // The request typed before the customer existed was saved with it.
  await a.getByTestId("recent-requests").getByText("Reembolso do pedido A-1001 💶").waitFor();
  await a.getByTestId("open-list").getByRole("button", { name: "João Silva" }).waitFor();
  // The request's state and dates behind its icon: hidden until it is clicked.
  assert.equal(await a.getByTestId("request-details").isVisible(), false, "the details show before the icon is clicked");
  await a.getByTestId("request-icon").click();
  await a.getByTestId("request-details").waitFor({ state: "visible" });
  const reqDetails = await a.getByTestId("request-details").textContent();
  assert.match(reqDetails, /Open/);
  assert.match(reqDetails, /2\d{3}/); // a formatted year
  // The journey shows what happened.
  await a.getByTestId("journey").getByText("Customer created").waitFor();
  await a.getByLabel("Quick note").fill("Promised a callback tomorrow.");
  await a.getByRole("button", { name: "Add note" }).click();
  await a.getByTestId("journey").getByText("Promised a callback tomorrow.").waitFor();
  // 1,500 characters that are 3,000 UTF-16 units: all of them kept (a `maxlength` of
  // 2,000 once cut such a paste to 1,000 without a word).
  // Typed (pasted), not set: a `maxlength` applies to what the user enters.
  const euros = "💶".repeat(1500);
  await a.getByLabel("Quick note").click();
  await a.keyboard.insertText(euros);
  await a.getByRole("button", { name: "Add note" }).click();
  await a.getByTestId("journey").getByText(euros, { exact: true }).waitFor();
  await checkA11y(a, "workspace-customer");
  await shot(a, "04-workspace-customer");

  // B finds the same customer: search "joao" finds "João", Reopen puts it on B's Open list.
  await b.getByRole("tab", { name: /Search/ }).click();
  await b.getByRole("searchbox", { name: "Search customers" }).fill("joao");
  await b.getByRole("button", { name: "Search", exact: true }).click();
  await b.getByTestId("search-results").getByText("João Silva").waitFor();
  await b.getByRole("button", { name: "Reopen João Silva" }).click();
  await b.getByTestId("work-title").filter({ hasText: "João Silva" }).waitFor();
  await b.getByRole("tab", { name: /Open/ }).click();
  await b.getByTestId("open-list").getByRole("button", { name: "João Silva" }).waitFor();

  // A clicks the customer's name (the form opens for editing), saves; B is told at once
  // (caution notice) and loads.
  await a.getByTestId("work-title").getByRole("button", { name: "João Silva" }).click();
  await expectFocused(a, "cust-name");
  await form.getByLabel("Name").fill("João Pedro Silva");
  await form.getByRole("button", { name: "Save" }).click();
  await form.getByTestId("customer-name").filter({ hasText: "João Pedro Silva" }).waitFor();
  const caution = b.getByTestId("caution");
  await caution.filter({ hasText: "alice changed this customer" }).waitFor();
  assert.equal(await b.getByTestId("customer-name").textContent(), "João Silva");
  await checkA11y(b, "caution");
  await shot(b, "05-caution");
  await caution.getByRole("button", { name: "Load" }).click();
  await b.getByTestId("customer-name").filter({ hasText: "João Pedro Silva" }).waitFor();
  await b.getByTestId("open-list").getByRole("button", { name: "João Pedro Silva" }).waitFor();
  await a.getByTestId("open-list").getByRole("button", { name: "João Pedro Silva" }).waitFor();
  assert.equal(await b.getByTestId("caution").count(), 0);

  // B retitles the request; A, who has it open, gets the caution for the request and loads it.
  await b.getByLabel("Request title").fill("Refund A-1001 (double charge)");
  await b.getByTestId("request-card").getByRole("button", { name: "Save" }).click();
  await a.getByTestId("caution").filter({ hasText: "joao changed this request" }).waitFor();
  assert.equal(await a.getByLabel("Request title").inputValue(), "Reembolso do pedido A-1001 💶");
  await a.getByTestId("caution").getByRole("button", { name: "Load" }).click();
  assert.equal(await a.getByLabel("Request title").inputValue(), "Refund A-1001 (double charge)");
  await a.locator("#req-title-count").filter({ hasText: "29 / 2,000 characters" }).waitFor();

  // The conflict path: the integration changes the customer while B edits an older version.
  const bForm = b.getByTestId("customer-card");
  await bForm.getByRole("button", { name: "Edit" }).click();
  await bForm.getByLabel("Phones (one per line)").fill("+351 912 345 678");
  const id = (await crm.getCustomer(await customerId(a))).customer;
  // The CRM changes what B's form also shows (the emails): B's "save mine" makes B's
  // change (the phones) on the current record and keeps the CRM's.
  const emails = ["joao.silva@example.com", "joao@trabalho.example.pt"];
  await crm.patchCustomer(id.customer_id, id.version, { fields: { segment: "gold" }, emails });
  await b.getByTestId("caution").filter({ hasText: "crm changed this customer" }).waitFor();
  await bForm.getByRole("button", { name: "Save" }).click();
  await b.getByTestId("caution").filter({ hasText: "crm saved this customer first" }).waitFor();
  // The CRM changes it once more while B reads the caution: B can still save B's change
  // on the newest record (the newer change's notice once took the button away).
  const again = (await crm.getCustomer(id.customer_id)).customer;
  await crm.patchCustomer(id.customer_id, again.version, { fields: { segment: "gold", tier: "2" } });
  await b.locator(`[data-testid=caution][data-version="${again.version + 1}"]`).waitFor();
  await b.getByRole("button", { name: "Save mine over theirs" }).click();
  await bForm.getByText("+351 912 345 678").waitFor();
  const saved = await crm.getCustomer(id.customer_id);
  assert.deepEqual(saved.customer.phones, ["+351 912 345 678"]);
  assert.equal(saved.customer.fields.segment, "gold");
  assert.equal(saved.customer.fields.tier, "2");
  assert.deepEqual(saved.customer.emails, emails);

  // A call offered to B expires after its deadline (5 s here): B is Not Ready, missed offer.
  await b.getByTestId("status-select").selectOption({ label: "Ready" });
  await b.getByTestId("agent-status").filter({ hasText: /^Ready/ }).waitFor();
  await crm.createTask({ channel: "voice", queue: "sales", customer: { phone: "+46 8 123 456" } });
  await b.locator("section.offer").getByRole("heading", { name: "Incoming Call" }).waitFor();
  await b.getByText("You missed an offer: your status is Not Ready (missed offer).").waitFor({ timeout: 15_000 });
  await b.getByTestId("agent-status").filter({ hasText: "Not Ready (Missed offer)" }).waitFor();
  assert.equal(await b.locator("section.offer").isHidden(), true);
  assert.equal(await b.getByTestId("status-select").locator("option:checked").textContent(), "Not Ready: Missed offer");
  await checkA11y(b, "missed-offer");
  await shot(b, "06-missed-offer");

  // Notes on the activity, with their own count and save.
  await a.getByLabel("Activity notes").fill("Card refund requested.");
  await a.locator("#act-notes-count").filter({ hasText: "22 / 2,000 characters" }).waitFor();
  await a.getByRole("button", { name: "Save notes" }).click();
  await a.getByTestId("journey").getByText("Interaction updated").first().waitFor();

  // Closing with unsaved changes asks Save / Discard.
  await a.getByLabel("Request description").fill("Charged twice; customer wants the refund to the card.");
  await a.getByTestId("close").click();
  const dialog = a.getByRole("dialog", { name: "Unsaved changes" });
  await dialog.waitFor();
  await checkA11y(a, "close-dialog");
  await shot(a, "07-close-unsaved");
  await dialog.getByRole("button", { name: "Discard" }).click();
  await a.getByText("No open customers.").waitFor();
  await a.getByTestId("work-title").waitFor({ state: "detached" });

  // Complete the chat with a wrap-up code.
  await a.getByTestId("in-progress").getByRole("button", { name: "Complete" }).click();
  await expectFocused(a, "wrapup-code");
  await a.getByLabel("Wrap-up code (optional)").fill("refund-issued");
  await a.getByRole("button", { name: "Complete task" }).click();
  await a.getByText("No tasks in progress.").waitFor();

  // Reopen from Recent (the tabs follow the arrow keys).
  await a.getByRole("tab", { name: /Open/ }).focus();
  await a.keyboard.press("ArrowRight");
  await expectFocused(a, "tab-recent");
  assert.equal(await a.getByRole("tab", { name: /Recent/ }).getAttribute("aria-selected"), "true");
  await a.getByTestId("recent-list").getByText("João Pedro Silva").waitFor();
  await a.getByRole("button", { name: "Reopen João Pedro Silva" }).click();
  await a.getByTestId("work-title").filter({ hasText: "João Pedro Silva" }).waitFor();
  await a.getByRole("tab", { name: /Open/ }).click();
  await a.getByTestId("open-list").getByRole("button", { name: "João Pedro Silva" }).waitFor();
  // The description change was discarded: the saved one is back.
  assert.equal(await a.getByLabel("Request description").inputValue(), "Charged twice for the same order.");
  assert.equal(await a.getByLabel("Activity notes").inputValue(), "Card refund requested.");
  // Closing the request: its state and closed date behind the request icon.
  await a.getByRole("button", { name: "Close request" }).click();
  await a.getByRole("button", { name: "Reopen request" }).waitFor();
  await a.getByTestId("request-icon").click();
  assert.equal(await a.getByTestId("request-icon").getAttribute("aria-expanded"), "true");
  const closed = await a.getByTestId("request-details").textContent();
  assert.match(closed, /StateClosed/);
  assert.match(closed, /Closed\w{3} \d{1,2}, 2\d{3}/); // "Closed" then a date
  await a.getByTestId("journey").getByText("Request closed").waitFor();
  await checkA11y(a, "reopened");
  await shot(a, "08-reopened");

  assert.deepEqual(A.problems, [], "no CSP violation or page error on A");
  assert.deepEqual(B.problems, [], "no CSP violation or page error on B");
  console.log(`# a11y: ${A11Y.map((x) => `${x.name}=${x.violations}`).join(" ")}`);
  await A.context.close();
  await B.context.close();
});

test("an unknown caller closed with Create / Discard", async () => {
  const crm = integration(hub);
  const A = await openPage(browser, hub);
  const a = A.page;
  await signIn(a, token("sam", "agent"));
  await a.getByTestId("connection").filter({ hasText: "Connected" }).waitFor();
  await a.getByTestId("status-select").selectOption({ label: "Ready" });
  await a.getByTestId("agent-status").filter({ hasText: /^Ready/ }).waitFor();
  // An offer from a caller the hub knows (by email) names the customer before the accept.
  const karin = (await crm.createCustomer({ name: "Karin Känd", emails: ["First@Example.org"] })).customer;
  // Decline with a reason: the offer goes away, the agent stays Ready.
  const first = await crm.createTask({ channel: "email", queue: "backoffice", customer: { email: "first@example.org" } });
  const offer = a.locator(`section.offer[data-task-id="${first.task_id}"]`);
  await offer.getByTestId("offer-known").filter({ hasText: "Karin Känd" }).waitFor();
  await offer.getByRole("button", { name: "Decline" }).click();
  await expectFocused(a, await offer.getByLabel("Reason for declining (optional)").getAttribute("id"));
  await offer.getByLabel("Reason for declining (optional)").fill("Not my language");
  await offer.getByRole("button", { name: "Decline offer" }).click();
  await a.locator("section.offer").waitFor({ state: "hidden" });
  await a.getByTestId("agent-status").filter({ hasText: /^Ready/ }).waitFor();
  await crm.createTask({ channel: "email", queue: "backoffice", customer: { email: "nobody@example.org" } });
  // Keyboard only: Tab from the top of the page reaches Accept; Enter accepts.
  await a.locator("section.offer").getByRole("button", { name: "Accept" }).waitFor();
  await a.evaluate(() => document.activeElement?.blur());
  let reached = false;
  for (let i = 0; i < 30 && !reached; i++) {
    await a.keyboard.press("Tab");
    reached = await a.evaluate(() => document.activeElement?.getAttribute("data-testid") === "accept");
  }
  assert.ok(reached, "Accept is reachable with Tab");
  await a.keyboard.press("Enter");
  await a.getByTestId("work-title").filter({ hasText: "Unknown caller" }).waitFor();
  await a.getByTestId("close").click();
  const dialog = a.getByRole("dialog", { name: "No customer created" });
  await dialog.waitFor();
  assert.deepEqual(await dialog.getByRole("button").allTextContents(), ["Create", "Discard", "Cancel"]);
  await dialog.getByRole("button", { name: "Discard" }).click();
  await a.getByText("No open customers.").waitFor();
  // Completing starts the queue's wrap-up; End wrap-up makes the agent Ready at once.
  await a.getByTestId("in-progress").getByRole("button", { name: "Complete" }).click();
  await a.getByRole("button", { name: "Complete task" }).click();
  await a.getByTestId("agent-status").filter({ hasText: /^Wrap-up.*Wrap-up until/ }).waitFor();
  await a.getByTestId("end-wrap-up").click();
  await a.getByTestId("agent-status").filter({ hasText: /^Ready/ }).waitFor();
  assert.equal(await a.getByTestId("end-wrap-up").count(), 0);

  // An unknown caller linked to an existing customer found by search.
  await crm.createTask({ channel: "email", queue: "backoffice", customer: { email: "karin.other@example.org" } });
  await a.getByTestId("accept").click();
  await a.getByTestId("work-title").filter({ hasText: "Unknown caller" }).waitFor();
  await a.getByText("Link to an existing customer").click();
  await a.locator("#link-q").fill("karin");
  await a.getByTestId("customer-card").getByRole("button", { name: "Search", exact: true }).click();
  await a.getByTestId("customer-card").getByRole("button", { name: "Link" }).click();
  await a.getByTestId("work-title").filter({ hasText: "Karin Känd" }).waitFor();
  await a.getByTestId("open-list").getByRole("button", { name: "Karin Känd" }).waitFor();

  // Linking the interaction to a request: title the one it landed on, move it to a new
  // request, then back. The page shows the request the activity is on; the hub agrees.
  const rr = a.getByTestId("recent-requests");
  await a.getByLabel("Request title").fill("Fatura de março");
  await a.getByTestId("request-card").getByRole("button", { name: "Save" }).click();
  await rr.locator("li.current").filter({ hasText: "Fatura de março" }).waitFor();
  const onRequest = async () => {
    const v = await crm.getCustomer(karin.customer_id);
    const r = v.requests.find((x) => x.request_id === v.activities[0].request_id);
    return { count: v.requests.length, title: r?.title };
  };
  await rr.getByRole("button", { name: "New request" }).click();
  await rr.locator("li.current").filter({ hasText: "(untitled request)" }).waitFor();
  assert.equal(await rr.locator("li").count(), 2);
  assert.equal(await a.getByLabel("Request title").inputValue(), "");
  assert.deepEqual(await onRequest(), { count: 2, title: "" });
  await rr.getByRole("button", { name: "Work on this request: Fatura de março" }).click();
  await rr.locator("li.current").filter({ hasText: "Fatura de março" }).waitFor();
  assert.equal(await a.getByLabel("Request title").inputValue(), "Fatura de março");
  assert.deepEqual(await onRequest(), { count: 2, title: "Fatura de março" });

  // Not Ready while busy is pending until the work ends; a transfer hands the task on.
  await a.getByTestId("status-select").selectOption({ label: "Not Ready: Break" });
  await a.getByTestId("agent-status").filter({ hasText: "Not Ready after this work: Break" }).waitFor();
  await a.getByLabel("Transfer to queue").selectOption({ label: "Support" });
  await a.getByTestId("in-progress").getByRole("button", { name: "Transfer" }).click();
  await a.getByText("No tasks in progress.").waitFor();
  // The wrap-up that follows keeps the Break waiting: the menu shows it as chosen, and
  // End wrap-up (which is Ready, and would cancel it in silence) is not offered.
  await a.getByTestId("agent-status").filter({ hasText: /^Wrap-up.*Not Ready after this work: Break/ }).waitFor();
  assert.equal(await a.getByTestId("status-select").locator("option:checked").textContent(), "Not Ready: Break");
  assert.equal(await a.getByTestId("end-wrap-up").count(), 0);
  // Ready, picked in the menu, cancels it (and ends the wrap-up).
  await a.getByTestId("status-select").selectOption({ label: "Ready" });
  await a.getByTestId("agent-status").filter({ hasText: /^Ready/ }).waitFor();
  assert.deepEqual(A.problems, []);
  await A.context.close();
});

test("Close, then Create, for an unknown caller keeps the notes typed for the interaction", async () => {
  const crm = integration(hub);
  const T = await openPage(browser, hub);
  const a = T.page;
  await signIn(a, token("tess", "agent"));
  await a.getByTestId("connection").filter({ hasText: "Connected" }).waitFor();
  await a.getByTestId("status-select").selectOption({ label: "Ready" });
  await a.getByTestId("agent-status").filter({ hasText: /^Ready/ }).waitFor();
  await crm.createTask({ channel: "email", queue: "intake", customer: { email: "nina.nova@example.org", name: "Nina Nova" } });
  await a.getByTestId("accept").click();
  await a.getByTestId("customer-card").getByRole("button", { name: "Create" }).waitFor();
  await a.locator("#act-notes").fill("Wants a refund for order 77");
  assert.equal(await a.getByTestId("customer-card").getByLabel("Name").inputValue(), "Nina Nova");
  await a.getByTestId("close").click();
  await a.getByRole("dialog", { name: "No customer created" }).getByRole("button", { name: "Create" }).click();
  await a.getByText("No open customers.").waitFor();
  const r = await fetch(`${hub.base}/v1/customers?q=${encodeURIComponent("nina nova")}`, { headers: { authorization: `Bearer ${token("crm", "integration")}` } });
  const found = (await r.json()).customers;
  assert.equal(found.length, 1, JSON.stringify(found));
  const v = await crm.getCustomer(found[0].customer_id);
  assert.equal(v.activities[0].notes, "Wants a refund for order 77");
  assert.deepEqual(T.problems, []);
  await T.context.close();
});

async function expectFocused(page, id) {
  await page.waitForFunction((x) => document.activeElement?.id === x, id);
}

async function customerId(page) {
  // The Open list's button is the customer's; the hub's search gives its id.
  const r = await fetch(`${hub.base}/v1/customers?q=${encodeURIComponent("joao")}`, { headers: { authorization: `Bearer ${token("crm", "integration")}` } });
  const body = await r.json();
  assert.equal(body.customers.length, 1, `one João: ${JSON.stringify(body)}`);
  void page;
  return body.customers[0].customer_id;
}
