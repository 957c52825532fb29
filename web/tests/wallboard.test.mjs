// The wallboard, in Chromium against a hub this test starts: a supervisor watches the
// queues while an integration creates tasks (HTTP) and agents work them (websockets the
// test drives); the tiles and rows show the expected numbers, the day's statistics and
// charts; filters, sorting with the keyboard, forcing Not Ready and logging out from the
// wallboard, TV mode, a language, and no serious accessibility violations (axe-core).
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { agentSocket, axe, integration, launch, openPage, shot, startHub, token } from "./harness.mjs";

const CONFIG = `
[auth]
secret = "browser-test-secret-0123456789"

[routing]
offer_timeout_secs = 30
wrap_up_secs = 0
not_ready_reasons = ["break", "lunch"]

[[queues]]
id = "support"
name = "Support"
channels = ["chat", "email", "voice"]
service_level_target = 90
# Long enough that a loaded machine's path from create to accept stays within it (CI once
# saw Support below 100 %): the figure under test is the board's, not the machine's speed.
service_level_secs = 60

[[queues]]
id = "sales"
name = "Sales"
channels = ["chat", "voice"]

[[queues]]
id = "callback"
name = "Callback"
channels = ["chat"]
offer_timeout_secs = 1

[[agents]]
id = "alice"
name = "Alice Moreau"
team = "Blue"
queues = ["support"]

[[agents]]
id = "joao"
name = "João Araújo"
team = "Green"
queues = ["support", "sales"]

[[agents]]
id = "sam"
name = "Sam Lee"
queues = ["callback"]
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

const tile = (page, queue) => page.locator(`section.tile[data-queue="${queue}"]`);
const row = (page, agent) => page.locator(`tr[data-agent="${agent}"]`);
const names = (page) => page.locator("table.agents tbody tr th").allTextContents();

async function signInWallboard(page, tok) {
  await page.getByLabel("Supervisor token").fill(tok);
  await page.getByRole("button", { name: "Sign in", exact: true }).click();
  await page.getByTestId("connection").filter({ hasText: "Connected" }).waitFor();
}

test("a supervisor watches the queues while tasks arrive and agents work them; forces Not Ready and logs an agent out", async () => {
  const crm = integration(hub);
  const { page, context, problems } = await openPage(browser, hub, { path: "/wallboard" });

  // Sign-in with a supervisor token; an agent's token is refused with a reason.
  await page.getByRole("heading", { name: "Sign in to the wallboard" }).waitFor();
  await noSeriousA11y(page, "wallboard sign-in");
  await page.getByLabel("Supervisor token").fill(token("alice", "agent"));
  await page.getByRole("button", { name: "Sign in", exact: true }).click();
  await page.getByRole("alert").filter({ hasText: "(forbidden)" }).waitFor();
  await signInWallboard(page, token("lead", "supervisor"));

  // Every queue's tile and every agent's row, from the snapshot.
  await tile(page, "support").getByRole("heading", { name: "Support" }).waitFor();
  await tile(page, "sales").getByRole("heading", { name: "Sales" }).waitFor();
  for (const id of ["alice", "joao", "sam"]) await row(page, id).filter({ hasText: "Offline" }).waitFor();
  assert.equal(await row(page, "alice").locator(".col-team").textContent(), "Blue");
  assert.equal(await row(page, "sam").locator(".col-team").textContent(), "—");

  // Two agents log in and go Ready: their rows and the tiles' counts follow.
  const alice = await agentSocket(browser, hub, token("alice", "agent"));
  const joao = await agentSocket(browser, hub, token("joao", "agent"));
  await alice.request({ type: "set_state", state: "ready" });
  await joao.request({ type: "set_state", state: "ready" });
  await row(page, "alice").filter({ hasText: "Ready" }).waitFor();
  await row(page, "joao").filter({ hasText: "Ready" }).waitFor();
  await tile(page, "support").getByTestId("count-ready").filter({ hasText: /^2$/ }).waitFor();
  await tile(page, "sales").getByTestId("count-ready").filter({ hasText: /^1$/ }).waitFor();
  await noSeriousA11y(page, "wallboard");

  // Sales: João goes on a break, nobody else is Ready there; two chats wait, the oldest ticks.
  await joao.request({ type: "set_state", state: "not_ready", reason: "break" });
  await row(page, "joao").filter({ hasText: "Break" }).waitFor();
  const waitingChat = await crm.createTask({ channel: "chat", queue: "sales", customer: { chat_handle: "w1" } });
  await crm.createTask({ channel: "voice", queue: "sales", customer: { phone: "+351210000001" } });
  const sales = tile(page, "sales");
  await sales.getByTestId("waiting").filter({ hasText: /^2$/ }).waitFor();
  await sales.getByTestId("count-not_ready").filter({ hasText: /^1$/ }).waitFor();
  const oldest = sales.getByTestId("oldest");
  const first = await oldest.textContent();
  assert.match(first, /^\d+:\d\d$/);
  await page.waitForFunction(
    ([sel, before]) => document.querySelector(sel)?.textContent !== before,
    [`section.tile[data-queue="sales"] [data-testid=oldest]`, first],
  );

  // Support: a chat is offered to Alice, who accepts it: Busy, the task and its age.
  const chat = await crm.createTask({ channel: "chat", queue: "support", customer: { chat_handle: "w2" } });
  const offer = await alice.next((f) => f.type === "offer" && f.offer.task.task_id === chat.task_id, "Alice's offer");
  await row(page, "alice").filter({ hasText: "Offer pending" }).waitFor();
  await alice.request({ type: "accept", offer_id: offer.offer.offer_id });
  await row(page, "alice").filter({ hasText: "Busy" }).waitFor();
  const task = row(page, "alice").locator(".col-task");
  await task.filter({ hasText: /^Chat \d+:\d\d$/ }).waitFor();
  assert.equal(await task.locator(".chip").getAttribute("title"), chat.task_id);
  await tile(page, "support").getByTestId("count-busy").filter({ hasText: /^1$/ }).waitFor();
  await tile(page, "support").getByTestId("waiting").filter({ hasText: /^0$/ }).waitFor();

  // The day's statistics: Support answered its chat at once (within its 60 s): 100 %, on
  // its configured 90 % target; Sales has the hub's default 80/20.
  const support = tile(page, "support");
  await support.locator(".target").filter({ hasText: /^Target 90% answered within 60 s$/ }).waitFor();
  await sales.locator(".target").filter({ hasText: /^Target 80% answered within 20 s$/ }).waitFor();
  await support.getByTestId("count-offered").filter({ hasText: /^1$/ }).waitFor();
  await support.getByTestId("count-answered").filter({ hasText: /^1$/ }).waitFor();
  await support
    .getByTestId("service-level")
    .filter({ hasText: /^100%/ })
    .waitFor()
    .catch(async (e) => {
      // Seen once in CI (26 Nov: answered 1, the service level not 100 %), not reproduced
      // since: say what the tile and the hub's statistics held, to find out why next time.
      const r = await fetch(`${hub.base}/v1/stats`, { headers: { authorization: `Bearer ${token("lead", "supervisor")}` } });
      throw new Error(`${e.message}\ntile: ${await support.innerText()}\nGET /v1/stats: ${r.status} ${await r.text()}`);
    });
  assert.match(await support.getAttribute("class"), /\bsl-ok\b/);
  await sales.getByTestId("count-offered").filter({ hasText: /^2$/ }).waitFor();
  await sales.getByTestId("count-answered").filter({ hasText: /^0$/ }).waitFor();

  // Sam misses an offer (Callback rings for 1 s): Not Ready (Missed offer), one missed today.
  const sam = await agentSocket(browser, hub, token("sam", "agent"));
  await sam.request({ type: "set_state", state: "ready" });
  await crm.createTask({ channel: "chat", queue: "callback", customer: { chat_handle: "w3" } });
  await sam.next((f) => f.type === "offer_ended" && f.reason === "expired", "Sam's offer expiring");
  await row(page, "sam").filter({ hasText: "Missed offer" }).waitFor();
  await row(page, "sam").locator(".col-missed").filter({ hasText: /^1$/ }).waitFor();
  assert.equal(await row(page, "alice").locator(".col-missed").textContent(), "0");
  await tile(page, "callback").getByTestId("waiting").filter({ hasText: /^1$/ }).waitFor();

  // The charts: Sales had two waiting in this quarter hour; Support's service level point.
  await page.locator('figure[data-queue="sales"] svg.waiting rect[data-waiting="2"]').waitFor();
  await page.locator('figure[data-queue="support"] svg.sl circle.dot.ok').waitFor();
  assert.match(await page.locator('figure[data-queue="support"] svg.sl').getAttribute("aria-label"), /^Service level in Support .* against the 90% target; latest 100%$/);
  await shot(page, "wallboard-01-floor");

  // Filters: by team, then by queue (rows and tiles).
  await page.getByTestId("filter-team").selectOption({ label: "Blue" });
  await page.waitForFunction(() => document.querySelectorAll("table.agents tbody tr").length === 1);
  assert.deepEqual(await names(page), ["Alice Moreau"]);
  await page.getByTestId("filter-team").selectOption({ label: "No team" });
  await page.waitForFunction(() => document.querySelector("table.agents tbody tr th")?.textContent === "Sam Lee");
  await page.getByTestId("filter-team").selectOption({ label: "All teams" });
  await page.getByTestId("filter-queue").selectOption({ label: "Sales" });
  await page.waitForFunction(() => document.querySelectorAll("table.agents tbody tr").length === 1);
  assert.deepEqual(await names(page), ["João Araújo"]);
  assert.equal(await page.locator("section.tile").count(), 1);
  assert.equal(await page.locator("figure.chart-card").count(), 1);
  assert.match(page.url(), /queue=sales/);
  await page.getByTestId("filter-queue").selectOption({ label: "All queues" });
  await page.waitForFunction(() => document.querySelectorAll("table.agents tbody tr").length === 3);

  // Sorting with the keyboard: by agent name, then the other way.
  await page.locator("button.sort[data-sort=name]").focus();
  await page.keyboard.press("Enter");
  await page.waitForFunction(() => document.querySelector("table.agents tbody tr th")?.textContent === "Alice Moreau");
  assert.deepEqual(await names(page), ["Alice Moreau", "João Araújo", "Sam Lee"]);
  assert.equal(await page.locator("th:has(button[data-sort=name])").getAttribute("aria-sort"), "ascending");
  await page.keyboard.press("Enter");
  await page.waitForFunction(() => document.querySelector("table.agents tbody tr th")?.textContent === "Sam Lee");
  assert.deepEqual(await names(page), ["Sam Lee", "João Araújo", "Alice Moreau"]);

  // Forcing Not Ready from the wallboard: João, Ready again, is offered a Sales chat; the
  // supervisor sends him to lunch: the offer is withdrawn and goes back to the queue.
  await joao.request({ type: "set_state", state: "ready" });
  await row(page, "joao").filter({ hasText: "Offer pending" }).waitFor();
  await sales.getByTestId("waiting").filter({ hasText: /^1$/ }).waitFor();
  const jrow = row(page, "joao");
  await jrow.getByTestId("reason").selectOption({ label: "Lunch" });
  await jrow.getByRole("button", { name: "Set Not Ready: João Araújo" }).click();
  await joao.next((f) => f.type === "state" && f.agent.status === "not_ready" && f.agent.reason === "lunch", "João's forced Not Ready");
  await joao.next((f) => f.type === "offer_ended" && f.reason === "withdrawn", "João's offer withdrawn");
  await jrow.filter({ hasText: "Lunch" }).filter({ hasText: "Not Ready" }).waitFor();
  await page.getByRole("status").filter({ hasText: "João Araújo is set Not Ready (Lunch)." }).waitFor();
  // The offer went back: Sales waits for two again.
  await sales.getByTestId("waiting").filter({ hasText: /^2$/ }).waitFor();

  // Logging an agent out takes a confirmation, with the keyboard.
  await jrow.getByRole("button", { name: "Log out: João Araújo" }).focus();
  await page.keyboard.press("Enter");
  const confirm = jrow.getByTestId("confirm-logout");
  await confirm.waitFor();
  assert.equal(await page.evaluate(() => document.activeElement?.dataset.testid), "confirm-logout");
  await page.keyboard.press("Enter");
  await joao.next((f) => f.type === "goodbye" && f.reason === "logged_out_by_supervisor", "João's goodbye");
  await jrow.filter({ hasText: "Offline" }).waitFor();
  await noSeriousA11y(page, "wallboard after actions");
  await shot(page, "wallboard-02-actions");

  // A caller gives up: one abandon in Sales, one fewer waiting.
  await crm.cancelTask(waitingChat.task_id);
  await sales.getByTestId("count-abandoned").filter({ hasText: /^1$/ }).waitFor();
  await sales.getByTestId("waiting").filter({ hasText: /^1$/ }).waitFor();

  // TV mode: large type, no controls; Escape leaves it.
  await page.getByTestId("tv-toggle").click();
  await page.locator("html.tv").waitFor();
  assert.match(page.url(), /tv=1/);
  assert.ok(parseFloat(await page.evaluate(() => getComputedStyle(document.documentElement).fontSize)) >= 20, "large type");
  assert.equal(await page.locator("main select, main button, main input").count(), 0, "no controls in TV mode");
  await tile(page, "sales").getByTestId("waiting").filter({ hasText: /^1$/ }).waitFor();
  await noSeriousA11y(page, "TV mode");
  await shot(page, "wallboard-03-tv");
  await page.keyboard.press("Escape");
  await page.getByTestId("tv-toggle").waitFor();
  assert.equal(await page.evaluate(() => document.activeElement?.dataset.testid), "tv-toggle");

  // A language: Portuguese words, the desktop's statuses.
  await page.getByLabel("Language").selectOption("pt");
  await page.getByRole("heading", { name: "Painel de supervisão" }).waitFor();
  await row(page, "alice").filter({ hasText: "Ocupado" }).waitFor();
  await page.getByRole("columnheader", { name: "Tempo no estado" }).waitFor();
  await noSeriousA11y(page, "wallboard in Portuguese");

  // A wallboard opened as ?tv=1 starts in TV mode (a wall display); ?target=100 overrides
  // Support's configured 90 %.
  const wall = await openPage(browser, hub, { path: "/wallboard?tv=1&queue=support&target=100" });
  const tvPage = wall.page;
  await signInWallboard(tvPage, token("lead", "supervisor"));
  await tvPage.locator("html.tv").waitFor();
  await tile(tvPage, "support").waitFor();
  assert.equal(await tvPage.locator("section.tile").count(), 1);
  await tile(tvPage, "support").locator(".target").filter({ hasText: /^Target 100% answered within 60 s$/ }).waitFor();
  assert.deepEqual(wall.problems, []);
  await wall.context.close();

  await alice.close();
  await joao.close();
  await sam.close();
  assert.deepEqual(problems, []);
  await context.close();
});

// A logout question left unanswered once stayed with the row: when the agent went
// offline and came back, it was drawn again and took the keyboard focus from wherever the
// supervisor was working (one Enter from logging the agent out).
test("a logout question left unanswered goes when the agent does, and never takes the focus back", async () => {
  const { page, context, problems } = await openPage(browser, hub, { path: "/wallboard" });
  await signInWallboard(page, token("lead2", "supervisor"));
  let sam = await agentSocket(browser, hub, token("sam", "agent"));
  const srow = row(page, "sam");
  await srow.filter({ hasText: "Not Ready" }).waitFor();
  await srow.getByRole("button", { name: "Log out: Sam Lee" }).click();
  await srow.getByTestId("confirm-logout").waitFor();
  // The supervisor leaves the question and works elsewhere; Sam logs out by himself.
  await page.getByLabel("Language").focus();
  await sam.request({ type: "logout" });
  await srow.filter({ hasText: "Offline" }).waitFor();
  await sam.close();
  sam = await agentSocket(browser, hub, token("sam", "agent"));
  await srow.filter({ hasText: "Not Ready" }).waitFor();
  await srow.getByTestId("logout").waitFor();
  assert.equal(await srow.getByTestId("confirm-logout").count(), 0, "the question went with the agent");
  assert.equal(await page.evaluate(() => document.activeElement?.id), await page.getByLabel("Language").getAttribute("id"), "the focus stayed");
  await sam.close();
  assert.deepEqual(problems, []);
  await context.close();
});
