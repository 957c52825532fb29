// The desktop shell: header (status, connection, language), the offer, the In Progress
// list and the customer management panel (Open / Recent / Search). The customer
// workspace is in workspace.ts. Every region is drawn from the state below; inputs write
// their drafts into it as the agent types, so a redraw (a hub event, a language switch)
// never loses what was typed.
import {
  HubError, SwitchboardClient,
  type AgentView, type ConnectionState, type CustomerSummary, type DesktopConfig, type Lists, type OfferView, type Task,
} from "../../../clients/typescript/src/index.ts";
import { Api } from "./api.ts";
import { fill, h, uid } from "./dom.ts";
import { fmtNumber, fmtTime, t, tCode } from "./i18n.ts";
import { icon } from "./icons.ts";
import { languageSwitch } from "./signin.ts";
import { Workspace } from "./workspace.ts";

export interface Shell {
  api: Api;
  client: SwitchboardClient;
  queueName(id: string): string;
  notify(text: string, kind?: "info" | "warn" | "error"): void;
  fail(e: unknown): void;
  refreshLists(): Promise<void>;
  lists: Lists;
  me(): string;
  /** The task in this agent's In Progress list with that id, if it is there. */
  task(id: string): Task | undefined;
}

type Tab = "open" | "recent" | "search";

export function startDesktop(root: HTMLElement, token: string, signOut: (message?: string) => void, renewed: (token: string) => void = () => {}): void {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const client = new SwitchboardClient({ url: `${scheme}://${location.host}/v1/ws`, token });
  const api = new Api(client);
  let config: DesktopConfig = { not_ready_reasons: [], queues: [] };
  let agent: AgentView | null = null;
  let conn: ConnectionState = client.state;
  let lists: Lists = { open: [], recent: [] };
  let tab: Tab = "open";
  let query = "";
  let results: CustomerSummary[] | null = null;
  let notices: { id: number; text: string; kind: string }[] = [];
  let noticeSeq = 0;
  let declining = false;
  let declineReason = "";
  let completing: string | null = null;
  let wrapUpCode = "";
  let announcedOffer: string | null = null;
  // Handing a task in progress over to one agent: which task's form is open, and the id typed.
  let handingOver: string | null = null;
  let agentDraft = "";
  // What this desktop asked of other agents, by task id, to word `transfer_ended`:
  // a consult leaves the task here, a transfer sent it back to its queue.
  const consults = new Map<string, string>();
  const transfers = new Map<string, string>();
  // The last offer shown, to word its `offer_ended` (a consult taken back names its asker).
  let lastOffer: OfferView | null = null;
  // What the hub already knows of an offer's caller (looked up by its email, phone or chat
  // handle, as the hub will match it on accept), by offer id: shown before accepting.
  const known = new Map<string, CustomerSummary | null>();
  let previewOpen = false;

  const shell: Shell = {
    api,
    client,
    queueName: (id) => config.queues.find((q) => q.queue_id === id)?.name ?? id,
    notify,
    fail,
    refreshLists,
    get lists() {
      return lists;
    },
    me: () => agent?.agent_id ?? "",
    task: (id) => agent?.in_progress.find((x) => x.task_id === id),
  };

  // The layout, built once; regions are redrawn by their own functions.
  const header = h("header", { class: "top" });
  const noticeBox = h("div", { class: "notices", "aria-live": "polite" });
  const renewBox = h("section", { class: "card renew", "aria-labelledby": "renew-h", hidden: true });
  const offerBox = h("section", { class: "offer", "aria-labelledby": "offer-h", hidden: true });
  const announcer = h("div", { class: "sr-only", role: "status", "aria-live": "assertive" });
  const progressBox = h("section", { class: "card", "aria-labelledby": "inprogress-h" });
  const listsBox = h("section", { class: "card lists", "aria-labelledby": "lists-h" });
  const workBox = h("div", { class: "work", id: "workspace", tabindex: -1 });
  const work = new Workspace(shell, workBox);

  /** Leaves the desktop for the sign-in page: nothing of this one (a question on screen) stays over it. */
  let left = false;
  function leave(message?: string) {
    left = true;
    work.dispose();
    signOut(message);
  }

  // Actions under way, by what they act on (an offer, a task): a second click while the
  // hub answers the first (a double-click on Accept) is not sent again, where it would
  // only come back as an error for an action that worked.
  const underWay = new Set<string>();
  function once(key: string, act: () => Promise<unknown>): void {
    if (underWay.has(key)) return;
    underWay.add(key);
    act()
      .catch(fail)
      .finally(() => underWay.delete(key));
  }

  function layout() {
    fill(
      root,
      h("a", { class: "skip", href: "#workspace" }, t("skipToWork")),
      header,
      h("main", { class: "layout", id: "main" }, h("div", { class: "left" }, renewBox, noticeBox, offerBox, progressBox, listsBox), workBox),
      announcer,
    );
    renderAll();
  }

  function renderAll() {
    renderHeader();
    renderNotices();
    renderOffer();
    renderProgress();
    renderLists();
    work.render();
  }

  function notify(text: string, kind: "info" | "warn" | "error" = "info") {
    noticeSeq += 1;
    // The same message again replaces the older one instead of piling up.
    notices = [...notices.filter((n) => n.text !== text).slice(-3), { id: noticeSeq, text, kind }];
    renderNotices();
  }

  function fail(e: unknown) {
    const message = e instanceof HubError ? `${e.code}: ${e.message}` : String(e);
    notify(t("error", { message }), "error");
  }

  async function refreshLists() {
    try {
      lists = (await api.getLists()).lists;
      renderLists();
    } catch (e) {
      fail(e);
    }
  }

  // --- header: who, status, connection, language, sign out
  function statusText(a: AgentView): string {
    const st = tCode("st_", a.status);
    return a.reason && a.status === "not_ready" ? `${st} (${tCode("r_", a.reason)})` : a.reason ? `${st} · ${t("notReady")} (${tCode("r_", a.reason)})` : st;
  }

  function renderHeader() {
    const statusId = uid("status");
    // What the agent chose: a Not Ready still pending (it waits for the work to end) is
    // shown as chosen, so that picking Ready, which cancels it, is a change the menu sends.
    const chosen = agent ? (agent.reason ?? agent.pending_not_ready ?? null) : null;
    const presence = agent ? (chosen === null ? "ready" : `nr:${chosen}`) : "";
    const builtIn = chosen && !config.not_ready_reasons.includes(chosen) ? chosen : null;
    const connText =
      conn.kind === "reconnecting"
        ? t("conn_reconnecting", { s: fmtNumber(Math.ceil(conn.retryInMs / 1000)) })
        : t(`conn_${conn.kind}` as "conn_open");
    fill(
      header,
      h("span", { class: "brand" }, t("appName")),
      agent ? h("span", { class: "who" }, agent.name) : null,
      h(
        "div",
        { class: "status" },
        h("label", { for: statusId }, t("status")),
        h(
          "select",
          {
            id: statusId,
            "data-testid": "status-select",
            disabled: !agent || conn.kind !== "open",
            onchange: (e: Event) => {
              const v = (e.target as HTMLSelectElement).value;
              const p = v === "ready" ? api.setState("ready") : api.setState("not_ready", v.slice(3));
              p.catch((err) => {
                fail(err);
                renderHeader();
              });
            },
          },
          h("option", { value: "ready", selected: presence === "ready" }, t("ready")),
          builtIn ? h("option", { value: `nr:${builtIn}`, selected: true, disabled: true }, t("notReadyReason", { reason: tCode("r_", builtIn) })) : null,
          config.not_ready_reasons.map((r) => h("option", { value: `nr:${r}`, selected: presence === `nr:${r}` }, t("notReadyReason", { reason: tCode("r_", r) }))),
        ),
        agent
          ? h(
              "span",
              { class: `badge st-${agent.status}`, role: "status", "data-testid": "agent-status" },
              statusText(agent),
              " ",
              h("small", null, agent.wrap_up ? t("wrapUpUntil", { time: fmtTime(agent.wrap_up.until) }) : t("since", { time: fmtTime(agent.since) })),
              agent.pending_not_ready ? [" · ", t("pendingNotReady", { reason: tCode("r_", agent.pending_not_ready) })] : null,
            )
          : null,
      ),
      // Ending a wrap-up early is `set_state ready`, which also cancels a Not Ready the
      // agent asked for meanwhile: not offered then (picking Ready in the menu does both).
      agent?.status === "wrap_up" && !agent.pending_not_ready
        ? h("button", { type: "button", "data-testid": "end-wrap-up", onclick: () => api.setState("ready").catch(fail) }, t("endWrapUp"))
        : null,
      h("span", { class: `conn conn-${conn.kind}`, role: "status", "data-testid": "connection" }, connText),
      conn.kind === "reconnecting" ? h("button", { type: "button", "data-testid": "reconnect-now", onclick: () => client.reconnectNow() }, t("reconnectNow")) : null,
      h("span", { class: "spacer" }),
      languageSwitch(() => layout()),
      h(
        "button",
        {
          type: "button",
          onclick: async () => {
            try {
              if (client.state.kind === "open") await api.logout();
            } catch {
              // Signing out locally is what matters; the hub logs the agent out when the socket closes.
            }
            client.close();
            leave();
          },
        },
        t("signOut"),
      ),
    );
  }

  function renderNotices() {
    fill(
      noticeBox,
      notices.map((n) =>
        h(
          "div",
          { class: `notice ${n.kind}`, role: n.kind === "info" ? "status" : "alert" },
          h("span", null, n.text),
          h(
            "button",
            {
              type: "button",
              class: "icon",
              "aria-label": t("dismiss"),
              onclick: () => {
                notices = notices.filter((x) => x.id !== n.id);
                renderNotices();
              },
            },
            "×",
          ),
        ),
      ),
    );
  }

  // --- the offer
  let countdownEls: { text: HTMLElement; bar: HTMLProgressElement; offer: OfferView } | null = null;

  function who(task: Task): string {
    const c = task.customer ?? {};
    return c.name || c.email || c.phone || c.chat_handle || t("unknownCaller");
  }

  function renderOffer() {
    const offer = agent?.offer ?? null;
    countdownEls = null;
    if (!offer) {
      offerBox.hidden = true;
      offerBox.removeAttribute("data-offer-id");
      fill(offerBox);
      declining = false;
      declineReason = "";
      return;
    }
    const task = offer.task;
    const c = task.customer ?? {};
    const channel = tCode("ch_", task.channel);
    lastOffer = offer;
    if (announcedOffer !== offer.offer_id) {
      announcedOffer = offer.offer_id;
      announcer.textContent = offer.consult_from
        ? t("consultAnnounce", { agent: offer.consult_from, channel, who: who(task) })
        : t("offerAnnounce", { channel, who: who(task) });
      lookUp(offer);
    }
    const match = known.get(offer.offer_id);
    const text = h("p", { class: "countdown", "data-testid": "offer-countdown" });
    const bar = h("progress", { max: offer.timeout_ms, "aria-label": t("offerCountdown", { s: "" }).trim() }) as HTMLProgressElement;
    const reasonId = "decline-reason";
    offerBox.hidden = false;
    offerBox.setAttribute("data-offer-id", offer.offer_id);
    offerBox.setAttribute("data-task-id", task.task_id);
    fill(
      offerBox,
      h("h2", { id: "offer-h" }, t("offerTitle", { channel })),
      offer.consult_from ? h("p", { class: "consult", "data-testid": "offer-consult" }, t("consultAsk", { agent: offer.consult_from })) : null,
      h(
        "dl",
        { class: "facts" },
        h("dt", null, t("customer")),
        h("dd", { "data-testid": "offer-customer" }, c.name ?? t("unknownCaller")),
        match ? [h("dt", null, t("knownCustomer")), h("dd", { "data-testid": "offer-known" }, match.name || match.emails[0] || match.phones[0] || match.customer_id)] : null,
        c.email ? [h("dt", null, t("ch_email")), h("dd", null, c.email)] : null,
        c.phone ? [h("dt", null, t("phone")), h("dd", null, c.phone)] : null,
        c.chat_handle ? [h("dt", null, t("ch_chat")), h("dd", null, c.chat_handle)] : null,
        h("dt", null, t("queue")),
        h("dd", null, shell.queueName(task.queue)),
        task.skills.length ? [h("dt", null, t("skills")), h("dd", null, task.skills.join(", "))] : null,
        levels(task) ? [h("dt", null, t("skillLevels")), h("dd", { "data-testid": "offer-skill-levels" }, levels(task))] : null,
        offer.consult_from ? [h("dt", null, t("consultFrom")), h("dd", { "data-testid": "offer-consult-from" }, offer.consult_from)] : null,
      ),
      surveyPreview(task),
      text,
      bar,
      declining
        ? h(
            "form",
            {
              class: "inline",
              onsubmit: (e: Event) => {
                e.preventDefault();
                once(`offer:${offer.offer_id}`, () =>
                  api.decline(offer.offer_id, declineReason.trim() || undefined).then(() => {
                    declining = false;
                    declineReason = "";
                  }),
                );
              },
            },
            h("label", { for: reasonId }, t("declineReason")),
            h("input", { id: reasonId, value: declineReason, oninput: (e: Event) => (declineReason = (e.target as HTMLInputElement).value) }),
            h("button", { type: "submit" }, t("declineConfirm")),
            h("button", { type: "button", onclick: () => ((declining = false), renderOffer()) }, t("cancel")),
          )
        : h(
            "div",
            { class: "actions" },
            h(
              "button",
              {
                type: "button",
                class: "primary",
                "data-testid": "accept",
                onclick: () =>
                  once(`offer:${offer.offer_id}`, () =>
                    api.accept(offer.offer_id).then(async (r) => {
                      await refreshLists();
                      // The accept's reply carries the activity the task became.
                      if (r.activity) await work.openActivity(r.activity.activity_id);
                    }),
                  ),
              },
              t("accept"),
            ),
            h(
              "button",
              {
                type: "button",
                onclick: () => {
                  declining = true;
                  renderOffer();
                  document.getElementById(reasonId)?.focus();
                },
              },
              t("decline"),
            ),
          ),
    );
    countdownEls = { text, bar, offer };
    tick();
  }

  // A task's least skill levels ("en ≥ 7, pt ≥ 3"), or null when it asks for none.
  function levels(task: Task): string | null {
    const l = Object.entries(task.skill_levels ?? {});
    return l.length ? l.map(([k, v]) => `${k} ≥ ${fmtNumber(v)}`).join(", ") : null;
  }

  function lookUp(offer: OfferView) {
    const c = offer.task.customer ?? {};
    const digits = (x: string) => x.replace(/\D/g, "");
    if (known.size > 50) known.clear();
    // In the order the hub attaches the accepted task to a customer: the phone (by its
    // digits), then the email, then the chat handle.
    const tries: [string, (x: CustomerSummary, all: CustomerSummary[]) => boolean][] = [];
    const phone = c.phone ? digits(c.phone) : "";
    if (phone) tries.push([c.phone!, (x) => x.phones.some((p) => digits(p) === phone)]);
    const email = c.email?.trim().toLowerCase();
    if (email) tries.push([c.email!, (x) => x.emails.some((e) => e.trim().toLowerCase() === email)]);
    // A chat handle is not in search results: the one result of a search for it is
    // taken as the match, for a caller with no phone or email only (a search also finds
    // names that contain the handle; with a phone or an email the hub goes by those).
    if (c.chat_handle?.trim() && !tries.length) tries.push([c.chat_handle, (_, all) => all.length === 1]);
    if (!tries.length) return;
    const find = async (): Promise<CustomerSummary | null> => {
      for (const [query, matches] of tries) {
        const all = (await api.search(query)).customers;
        const hit = all.find((x) => matches(x, all));
        if (hit) return hit;
      }
      return null;
    };
    find().then(
      (hit) => {
        known.set(offer.offer_id, hit);
        if (agent?.offer?.offer_id === offer.offer_id && hit) renderOffer();
      },
      () => {},
    );
  }

  // What the customer answered before the chat, to read before accepting.
  function surveyPreview(task: Task) {
    const a = (task.attributes ?? {}) as Record<string, unknown>;
    const survey = a.survey ?? a.pre_chat ?? a.prechat;
    if (!survey || typeof survey !== "object" || Array.isArray(survey)) return null;
    return h(
      "details",
      { class: "preview", open: previewOpen, ontoggle: (e: Event) => (previewOpen = (e.target as HTMLDetailsElement).open) },
      h("summary", null, t("preChat")),
      h("dl", { class: "facts" }, Object.entries(survey as Record<string, unknown>).map(([k, v]) => [h("dt", null, k), h("dd", null, typeof v === "object" ? JSON.stringify(v) : String(v))])),
    );
  }

  // --- the token's end: a few minutes before it, the agent is asked for a new one, which
  // the hub takes for this session (`refresh_token`); without it the session would end at
  // the token's `exp` and the agent land on the sign-in page, mid-call.
  const RENEW_BEFORE_MS = 5 * 60_000;
  let renewShownFor: number | null = null;
  let renewError: string | null = null;
  // What the agent pasted: a refusal draws the box again and keeps it.
  let renewTyped = "";
  function checkRenew() {
    const exp = client.tokenExpiresAt;
    const due = exp !== null && exp - client.serverNow() < RENEW_BEFORE_MS;
    if (!due) {
      if (renewShownFor !== null) {
        renewShownFor = null;
        renewBox.hidden = true;
      }
      return;
    }
    if (renewShownFor === exp) return;
    renewShownFor = exp;
    renewError = null;
    renderRenew();
  }
  function renderRenew() {
    const exp = client.tokenExpiresAt;
    if (exp === null) return;
    renewBox.hidden = false;
    fill(
      renewBox,
      h("h2", { id: "renew-h" }, t("renewTitle", { time: fmtTime(new Date(exp).toISOString()) })),
      h("p", null, t("renewHint")),
      h(
        "form",
        {
          class: "form",
          onsubmit: (e: Event) => {
            e.preventDefault();
            const v = (document.getElementById("renew-token") as HTMLTextAreaElement | null)?.value.trim();
            if (!v) return;
            renewTyped = v;
            client.refreshToken(v).then(
              () => {
                renewed(v);
                renewTyped = "";
                renewShownFor = null;
                renewBox.hidden = true;
                const until = client.tokenExpiresAt;
                if (until !== null) notify(t("renewed", { time: fmtTime(new Date(until).toISOString()) }));
              },
              (err: unknown) => {
                renewError = err instanceof HubError ? `${err.code}: ${err.message}` : String(err);
                renderRenew();
              },
            );
          },
        },
        h("label", { for: "renew-token" }, t("renewLabel")),
        h("textarea", { id: "renew-token", rows: 3, spellcheck: "false", autocomplete: "off", required: true, value: renewTyped }),
        renewError ? h("p", { class: "notice error", role: "alert" }, t("error", { message: renewError })) : null,
        h("button", { type: "submit", class: "primary" }, t("renewButton")),
      ),
    );
  }

  function tick() {
    checkRenew();
    if (!countdownEls) return;
    const ms = client.remainingMs(countdownEls.offer.deadline);
    countdownEls.text.textContent = t("offerCountdown", { s: fmtNumber(Math.ceil(ms / 1000)) });
    countdownEls.bar.value = ms;
  }
  const ticker = setInterval(tick, 250);

  // --- In Progress
  function renderProgress() {
    const tasks = agent?.in_progress ?? [];
    const codeId = "wrapup-code";
    fill(
      progressBox,
      h("h2", { id: "inprogress-h" }, t("inProgress")),
      tasks.length === 0
        ? h("p", { class: "empty" }, t("inProgressEmpty"))
        : h(
            "ul",
            { class: "items", "data-testid": "in-progress" },
            tasks.map((task) => {
              const item = lists.open.find((o) => o.task_id === task.task_id);
              return h(
                "li",
                { "data-task-id": task.task_id },
                h(
                  "button",
                  {
                    type: "button",
                    class: "link",
                    disabled: !item?.activity_id,
                    onclick: () => item?.activity_id && work.openActivity(item.activity_id),
                  },
                  `${tCode("ch_", task.channel)} · ${item?.customer?.name || who(task)}`,
                ),
                h("small", null, ` ${shell.queueName(task.queue)} · ${fmtTime((task as { accepted_at?: string }).accepted_at)}`),
                levels(task) ? h("small", null, ` · ${t("skillLevels")}: ${levels(task)}`) : null,
                consults.has(task.task_id)
                  ? h(
                      "div",
                      { class: "inline", "data-testid": "consult-pending" },
                      h("span", { role: "status" }, t("consulting", { agent: consults.get(task.task_id)! })),
                      h(
                        "button",
                        {
                          type: "button",
                          // The hub answers the one who cancels with the reply only (no
                          // `transfer_ended`): the reply ends the consult here.
                          onclick: () =>
                            once(`task:${task.task_id}`, () =>
                              client.cancelConsult(task.task_id).then(() => {
                                const to = consults.get(task.task_id);
                                consults.delete(task.task_id);
                                if (to) notify(t("consultCancelled", { agent: to }));
                                renderProgress();
                              }),
                            ),
                        },
                        t("cancelConsult"),
                      ),
                    )
                  : null,
                completing === task.task_id
                  ? h(
                      "form",
                      {
                        class: "inline",
                        onsubmit: (e: Event) => {
                          e.preventDefault();
                          once(`task:${task.task_id}`, () =>
                            api.complete(task.task_id, wrapUpCode.trim() || undefined).then(() => {
                              completing = null;
                              wrapUpCode = "";
                              renderProgress();
                            }),
                          );
                        },
                      },
                      h("label", { for: codeId }, t("wrapUpCode")),
                      h("input", { id: codeId, value: wrapUpCode, oninput: (e: Event) => (wrapUpCode = (e.target as HTMLInputElement).value) }),
                      h("button", { type: "submit", class: "primary" }, t("completeConfirm")),
                      h("button", { type: "button", onclick: () => ((completing = null), renderProgress()) }, t("cancel")),
                    )
                  : handingOver === task.task_id
                    ? handOverForm(task)
                    : [
                    transferControl(task),
                    consults.has(task.task_id)
                      ? null
                      : h(
                          "button",
                          {
                            type: "button",
                            id: `handover-${task.task_id}`,
                            onclick: () => {
                              handingOver = task.task_id;
                              completing = null;
                              renderProgress();
                              document.getElementById(`agent-${task.task_id}`)?.focus();
                            },
                          },
                          t("handOverTitle"),
                        ),
                    h(
                      "button",
                      {
                        type: "button",
                        onclick: () => {
                          completing = task.task_id;
                          wrapUpCode = "";
                          renderProgress();
                          document.getElementById(codeId)?.focus();
                        },
                      },
                      t("complete"),
                    ),
                  ],
              );
            }),
          ),
    );
  }

  // Transfer a task in progress to another queue (the hub offers it there).
  function transferControl(task: Task) {
    const others = config.queues.filter((q) => q.queue_id !== task.queue);
    if (!others.length) return null;
    const id = `transfer-${task.task_id}`;
    return h(
      "form",
      {
        class: "inline",
        onsubmit: (e: Event) => {
          e.preventDefault();
          const queue = (document.getElementById(id) as HTMLSelectElement).value;
          once(`task:${task.task_id}`, () => client.transferToQueue(task.task_id, queue));
        },
      },
      h("label", { for: id, class: "sr-only" }, t("transferTo")),
      h("select", { id }, others.map((q) => h("option", { value: q.queue_id }, q.name))),
      h("button", { type: "submit" }, t("transfer")),
    );
  }

  // Transfer a task in progress to one agent, or consult one (the task stays here until
  // the other accepts). The agent is named by its id: the hub gives the desktop no list
  // of agents.
  function handOverForm(task: Task) {
    const id = `agent-${task.task_id}`;
    const legendId = `handover-h-${task.task_id}`;
    // Closing the form puts the keyboard back on the button that opened it.
    const close = () => {
      handingOver = null;
      renderProgress();
      document.getElementById(`handover-${task.task_id}`)?.focus();
    };
    const send = (how: "transfer" | "consult") => {
      const to = agentDraft.trim();
      const input = document.getElementById(id) as HTMLInputElement | null;
      if (!to) {
        input?.reportValidity();
        input?.focus();
        return;
      }
      once(`task:${task.task_id}`, () =>
        (how === "consult" ? client.consult(task.task_id, to) : client.transferToAgent(task.task_id, to)).then(() => {
          (how === "consult" ? consults : transfers).set(task.task_id, to);
          handingOver = null;
          agentDraft = "";
          renderProgress();
        }),
      );
    };
    return h(
      "form",
      {
        class: "inline handover",
        role: "group",
        "aria-labelledby": legendId,
        "data-testid": "handover",
        onsubmit: (e: Event) => {
          e.preventDefault();
          const submitter = (e as SubmitEvent).submitter as HTMLButtonElement | null;
          send(submitter?.value === "consult" ? "consult" : "transfer");
        },
        onkeydown: (e: KeyboardEvent) => {
          if (e.key === "Escape") close();
        },
      },
      h("strong", { id: legendId }, t("handOver")),
      h("label", { for: id }, t("agentId")),
      h("input", { id, value: agentDraft, required: true, maxlength: 100, autocomplete: "off", oninput: (e: Event) => (agentDraft = (e.target as HTMLInputElement).value) }),
      // Consult first: Enter in the field asks (the task stays here) rather than sends it away.
      h("button", { type: "submit", value: "consult", class: "primary" }, t("consult")),
      h("button", { type: "submit", value: "transfer" }, t("transferToAgent")),
      h("button", { type: "button", onclick: close }, t("cancel")),
    );
  }

  // --- Customer management: Open / Recent / Search
  function renderLists() {
    // In Progress links to the Open list's interactions: draw it with the lists.
    renderProgress();
    const tabs: Tab[] = ["open", "recent", "search"];
    const label: Record<Tab, string> = { open: t("tabOpen"), recent: t("tabRecent"), search: t("tabSearch") };
    const count: Record<Tab, number | null> = { open: lists.open.length, recent: lists.recent.length, search: null };
    const focusTab = (x: Tab) => {
      tab = x;
      renderLists();
      document.getElementById(`tab-${x}`)?.focus();
    };
    const searchId = uid("search");
    fill(
      listsBox,
      h("h2", { id: "lists-h" }, t("customers")),
      h(
        "div",
        { role: "tablist", "aria-label": t("customers"), class: "tabs" },
        tabs.map((x, i) =>
          h(
            "button",
            {
              type: "button",
              role: "tab",
              id: `tab-${x}`,
              "aria-selected": String(tab === x),
              "aria-controls": `panel-${x}`,
              tabindex: tab === x ? 0 : -1,
              onclick: () => focusTab(x),
              onkeydown: (e: KeyboardEvent) => {
                if (e.key === "ArrowRight") focusTab(tabs[(i + 1) % tabs.length]!);
                if (e.key === "ArrowLeft") focusTab(tabs[(i + tabs.length - 1) % tabs.length]!);
              },
            },
            icon(x),
            label[x],
            count[x] !== null ? h("span", { class: "n" }, ` (${fmtNumber(count[x]!)})`) : null,
          ),
        ),
      ),
      h(
        "div",
        { role: "tabpanel", id: `panel-${tab}`, "aria-labelledby": `tab-${tab}`, class: "panel" },
        tab === "open"
          ? lists.open.length === 0
            ? h("p", { class: "empty" }, t("openEmpty"))
            : h(
                "ul",
                { class: "items", "data-testid": "open-list" },
                lists.open.map((o) =>
                  h(
                    "li",
                    { class: work.isShowing(o.activity_id, o.customer?.customer_id) ? "current" : "" },
                    h(
                      "button",
                      {
                        type: "button",
                        class: "link",
                        "aria-current": work.isShowing(o.activity_id, o.customer?.customer_id) ? "true" : undefined,
                        onclick: () => (o.activity_id ? work.openActivity(o.activity_id) : o.customer && work.openCustomer(o.customer.customer_id, false)),
                      },
                      o.customer?.name || o.customer?.emails[0] || o.customer?.phones[0] || t("unknownCaller"),
                    ),
                    h("small", null, ` ${t("since", { time: fmtTime(o.since) })}`),
                  ),
                ),
              )
          : tab === "recent"
            ? lists.recent.length === 0
              ? h("p", { class: "empty" }, t("recentEmpty"))
              : h("ul", { class: "items", "data-testid": "recent-list" }, lists.recent.map((c) => customerRow(c)))
            : [
                h(
                  "form",
                  {
                    role: "search",
                    class: "inline",
                    onsubmit: (e: Event) => {
                      e.preventDefault();
                      if (!query.trim()) return;
                      api.search(query.trim()).then((r) => {
                        results = r.customers;
                        renderLists();
                      }, fail);
                    },
                  },
                  h("label", { for: searchId, class: "sr-only" }, t("searchLabel")),
                  h("input", { id: searchId, type: "search", value: query, placeholder: t("searchLabel"), oninput: (e: Event) => (query = (e.target as HTMLInputElement).value) }),
                  h("button", { type: "submit" }, t("searchButton")),
                ),
                results === null
                  ? null
                  : results.length === 0
                    ? h("p", { class: "empty", role: "status" }, t("searchNone"))
                    : h("ul", { class: "items", "data-testid": "search-results" }, results.map((c) => customerRow(c))),
              ],
      ),
    );
  }

  function customerRow(c: CustomerSummary) {
    const name = c.name || c.emails[0] || c.phones[0] || c.customer_id;
    return h(
      "li",
      null,
      h("span", { class: "name" }, name),
      c.emails[0] && c.name ? h("small", null, ` ${c.emails[0]}`) : null,
      h(
        "button",
        {
          type: "button",
          "aria-label": t("reopenNamed", { name }),
          onclick: () => work.openCustomer(c.customer_id, true),
        },
        t("reopen"),
      ),
    );
  }

  // --- the hub's events
  client.on("connection", (s) => {
    conn = s;
    if (s.kind === "closed") {
      clearInterval(ticker);
      const reason = s.reason;
      if (reason === "token_expired" || reason === "unauthorized" || reason === "forbidden") {
        leave(t("tokenRejected", { reason }));
        return;
      }
      if (reason === "logged_out") return;
      if (reason === "replaced" || reason === "logged_out_by_supervisor") {
        leave(reason === "replaced" ? t("replaced") : t("loggedOutBySupervisor"));
        return;
      }
    }
    renderHeader();
  });
  client.on("welcome", (w) => {
    lists = w.lists;
    work.onWelcome(w.lists);
    renderLists();
    renderProgress();
  });
  client.on("agent", (a) => {
    const offerChanged = (agent?.offer?.offer_id ?? null) !== (a.offer?.offer_id ?? null);
    const progressChanged = (agent?.in_progress ?? []).map((x) => x.task_id).join() !== a.in_progress.map((x) => x.task_id).join();
    agent = a;
    // Whatever left the In Progress list has no consult or hand-over form any more.
    const here = new Set(a.in_progress.map((x) => x.task_id));
    for (const id of consults.keys()) if (!here.has(id)) consults.delete(id);
    if (handingOver && !here.has(handingOver)) handingOver = null;
    renderHeader();
    if (offerChanged) renderOffer();
    if (progressChanged) {
      renderProgress();
      work.render();
    }
  });
  client.on("offer_ended", (e) => {
    const asker = lastOffer?.offer_id === e.offer_id ? lastOffer.consult_from : undefined;
    if (e.reason === "expired") notify(t("offerMissed"), "warn");
    else if (e.reason === "declined") notify(t("offerDeclined"), "info");
    else if (asker) notify(t("consultWithdrawn", { agent: asker }), "info");
    else notify(t("offerWithdrawn"), "info");
  });
  client.on("transfer_ended", (e) => {
    // A consult leaves the task with this agent; a transfer sent it back to its queue.
    // Without a record here (a reload meanwhile), a task still in progress was a consult.
    const consult = consults.has(e.task_id) || (!transfers.has(e.task_id) && !!agent?.in_progress.some((x) => x.task_id === e.task_id));
    consults.delete(e.task_id);
    transfers.delete(e.task_id);
    const key = e.result === "accepted" ? "te_accepted" : (`te_${consult ? "c" : "t"}_${e.result}` as const);
    notify(t(key, { agent: e.agent_id }), e.result === "accepted" ? "info" : "warn");
    renderProgress();
  });
  client.on("task_transferred", () => notify(t("taskTransferred"), "warn"));
  client.on("task_cancelled", () => notify(t("taskCancelled"), "warn"));
  client.on("record_changed", (f) => work.onRecordChanged(f.change));
  // An error the hub sent for no request of this desktop (`rate_limited`,
  // `store_unavailable` with no `re`): said, not left to a request's timeout.
  client.on("error", (f) => notify(t("error", { message: `${f.code}: ${f.message}` }), "error"));

  layout();
  // The reasons, the queues' names, transfer targets: asked again until it comes (a
  // desktop without it offers no Not Ready reason), and a failure is said once.
  let told = false;
  const loadConfig = (wait: number) =>
    fetch("/v1/desktop/config", { headers: { authorization: `Bearer ${token}` } })
      .then((r) => (r.ok ? (r.json() as Promise<DesktopConfig>) : Promise.reject(new Error(`GET /v1/desktop/config: ${r.status}`))))
      .then((c) => {
        config = c;
        renderAll();
      })
      .catch((e) => {
        if (left) return;
        if (!told) fail(e);
        told = true;
        setTimeout(() => loadConfig(Math.min(wait * 2, 30_000)), wait);
      });
  void loadConfig(1_000);
  client.connect();
}
