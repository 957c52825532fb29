// The wallboard: a tile per queue, a row per agent, the day's charts, and the supervisor's
// actions (Not Ready with a reason, log out). Drawn from the client's board (the
// snapshot with the live changes and statistics laid over it); times tick once a second
// on the hub's clock without redrawing. Rows are kept per agent and updated in place, so
// that a focused control survives the live updates.
import {
  HubError, SwitchboardClient,
  type Board, type ConnectionState, type DesktopConfig, type StatsReport,
} from "../../../clients/typescript/src/index.ts";
import { fill, h, uid } from "../desktop/dom.ts";
import { fmtNumber, t, tCode } from "../desktop/i18n.ts";
import { languageSwitch } from "../desktop/signin.ts";
import { serviceLevelChart, waitingChart, type Day } from "./charts.ts";
import { w } from "./i18n.ts";
import {
  ALL, NO_TEAM, clock, parseTarget, queueTarget, rows, teams, tiles,
  type Filters, type Row, type SortKey, type Tile,
} from "./model.ts";

interface RowView {
  tr: HTMLTableRowElement;
  cells: Record<"name" | "team" | "status" | "reason" | "since" | "task" | "missed", HTMLTableCellElement>;
  actions: HTMLTableCellElement;
  reason: HTMLSelectElement;
  confirming: boolean;
}

const COLUMNS: { key: SortKey | null; cell: keyof RowView["cells"]; label: () => string }[] = [
  { key: "name", cell: "name", label: () => w("colAgent") },
  { key: "team", cell: "team", label: () => w("colTeam") },
  { key: "status", cell: "status", label: () => w("colStatus") },
  { key: null, cell: "reason", label: () => w("colReason") },
  { key: "since", cell: "since", label: () => w("colSince") },
  { key: "task", cell: "task", label: () => w("colTask") },
  { key: "missed", cell: "missed", label: () => w("colMissed") },
];

export function startWallboard(root: HTMLElement, token: string, signOut: (message?: string) => void): void {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const client = new SwitchboardClient({ url: `${scheme}://${location.host}/v1/ws`, token, role: "supervisor" });
  const params = new URLSearchParams(location.search);
  let tv = params.get("tv") === "1";
  // Each queue's target comes from the hub's configuration; `?target=` overrides them all.
  const targetOverride = parseTarget(params.get("target"));
  let config: DesktopConfig = { not_ready_reasons: [], queues: [] };
  let conn: ConnectionState<"supervisor"> = client.state;
  const filters: Filters = { queue: params.get("queue") ?? ALL, team: params.get("team") ?? ALL };
  let sort: { key: SortKey; desc: boolean } = { key: "status", desc: false };
  let notices: { id: number; text: string; kind: string }[] = [];
  let noticeSeq = 0;
  let chartsFor: StatsReport | null = null;
  const views = new Map<string, RowView>();
  let order: string[] = [];

  const header = h("header", { class: "top" });
  const controls = h("div", { class: "controls", role: "group", "aria-label": w("filters") });
  const noticeBox = h("div", { class: "notices", "aria-live": "polite" });
  const tileBox = h("div", { class: "tiles", "data-testid": "tiles" });
  const chartBox = h("section", { class: "charts", "aria-labelledby": "charts-h" });
  const thead = h("thead");
  const tbody = h("tbody");
  const table = h("table", { class: "agents", "data-testid": "agents" }, h("caption", { id: "agents-h" }), thead, tbody);
  const announcer = h("div", { class: "sr-only", role: "status", "aria-live": "polite" });

  function layout() {
    document.documentElement.classList.toggle("tv", tv);
    // Headings, rows and controls are rebuilt in the new language or mode.
    views.clear();
    order = [];
    thead.replaceChildren();
    tbody.replaceChildren();
    document.title = w("title");
    fill(
      root,
      h("a", { class: "skip", href: "#agents-h" }, w("skipToAgents")),
      header,
      h(
        "main",
        { id: "main", class: "wall" },
        tv ? null : controls,
        tv ? null : noticeBox,
        h("section", { "aria-labelledby": "queues-h" }, h("h2", { id: "queues-h", class: "sr-only" }, w("queues")), tileBox),
        h("section", { class: "card table-card" }, table),
        chartBox,
      ),
      announcer,
    );
    chartsFor = null;
    renderAll();
  }

  function renderAll() {
    renderHeader();
    renderControls();
    renderNotices();
    renderBoard();
  }

  function notify(text: string, kind: "info" | "warn" | "error" = "info") {
    noticeSeq += 1;
    notices = [...notices.filter((n) => n.text !== text).slice(-2), { id: noticeSeq, text, kind }];
    renderNotices();
  }

  function fail(e: unknown) {
    const message = e instanceof HubError ? `${e.code}: ${e.message}` : String(e);
    notify(t("error", { message }), "error");
  }

  function setTv(on: boolean) {
    tv = on;
    const url = new URL(location.href);
    if (on) url.searchParams.set("tv", "1");
    else url.searchParams.delete("tv");
    history.replaceState(null, "", url);
    layout();
    if (!on) (document.querySelector("[data-testid=tv-toggle]") as HTMLElement | null)?.focus();
  }

  // --- header: title, connection, TV mode, language, sign out
  function renderHeader() {
    const connText =
      conn.kind === "reconnecting"
        ? t("conn_reconnecting", { s: fmtNumber(Math.ceil(conn.retryInMs / 1000)) })
        : t(`conn_${conn.kind}` as "conn_open");
    fill(
      header,
      h("h1", { class: "brand" }, w("title")),
      h("span", { class: `conn conn-${conn.kind}`, role: "status", "data-testid": "connection" }, connText),
      h("span", { class: "spacer" }),
      h("span", { class: "hub-clock", "data-tick": "clock", "aria-hidden": "true" }),
      tv
        ? null
        : [
            h("button", { type: "button", "data-testid": "tv-toggle", onclick: () => setTv(true) }, w("tvMode")),
            languageSwitch(() => layout()),
            h(
              "button",
              {
                type: "button",
                onclick: () => {
                  client.close();
                  signOut();
                },
              },
              t("signOut"),
            ),
          ],
    );
    tick();
  }

  // --- filters: queue and team
  function renderControls() {
    const board = client.board;
    const qId = uid("fq");
    const tId = uid("ft");
    const { teams: list, someWithout } = board ? teams(board) : { teams: [], someWithout: false };
    const queues = board ? [...board.queues.values()].sort((a, b) => a.queue_id.localeCompare(b.queue_id)) : [];
    fill(
      controls,
      h(
        "div",
        { class: "field" },
        h("label", { for: qId }, w("filterQueue")),
        h(
          "select",
          {
            id: qId,
            "data-testid": "filter-queue",
            onchange: (e: Event) => {
              filters.queue = (e.target as HTMLSelectElement).value;
              keepInUrl();
              chartsFor = null;
              renderBoard();
            },
          },
          h("option", { value: ALL, selected: filters.queue === ALL }, w("allQueues")),
          queues.map((q) => h("option", { value: q.queue_id, selected: filters.queue === q.queue_id }, q.name)),
        ),
      ),
      h(
        "div",
        { class: "field" },
        h("label", { for: tId }, w("filterTeam")),
        h(
          "select",
          {
            id: tId,
            "data-testid": "filter-team",
            onchange: (e: Event) => {
              filters.team = (e.target as HTMLSelectElement).value;
              keepInUrl();
              chartsFor = null;
              renderBoard();
            },
          },
          h("option", { value: ALL, selected: filters.team === ALL }, w("allTeams")),
          list.map((x) => h("option", { value: x, selected: filters.team === x }, x)),
          someWithout ? h("option", { value: NO_TEAM, selected: filters.team === NO_TEAM }, w("noTeam")) : null,
        ),
      ),
    );
  }

  function keepInUrl() {
    const url = new URL(location.href);
    for (const k of ["queue", "team"] as const) {
      if (filters[k] === ALL || filters[k] === NO_TEAM) url.searchParams.delete(k);
      else url.searchParams.set(k, filters[k]);
    }
    history.replaceState(null, "", url);
  }

  function renderNotices() {
    fill(
      noticeBox,
      notices.map((n) =>
        h(
          "div",
          { class: `notice ${n.kind}`, role: n.kind === "error" ? "alert" : null },
          h("span", null, n.text),
          h("button", { type: "button", class: "icon", "aria-label": t("dismiss"), onclick: () => ((notices = notices.filter((x) => x.id !== n.id)), renderNotices()) }, "×"),
        ),
      ),
    );
  }

  // --- the board: tiles, rows, charts
  let pending = false;
  function scheduleBoard() {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      renderBoard();
    });
  }

  function renderBoard() {
    const board = client.board;
    if (!board) {
      fill(tileBox, h("p", { class: "empty" }, t(`conn_${conn.kind}` as "conn_open")));
      return;
    }
    renderTiles(tiles(board, filters, targetOverride));
    renderTable(rows(board, filters, sort));
    renderCharts(board);
    tick();
  }

  function renderTiles(list: Tile[]) {
    fill(
      tileBox,
      list.length ? null : h("p", { class: "empty" }, w("noQueues")),
      list.map((q) => {
        const hid = uid("tile");
        const sl = q.serviceLevel === null ? "—" : pct(q.serviceLevel);
        const slWords = q.level === "none" ? w("slNone") : w(q.level === "ok" ? "slOnTarget" : q.level === "warn" ? "slNearTarget" : "slBelowTarget");
        return h(
          "section",
          { class: `tile sl-${q.level}`, "aria-labelledby": hid, "data-queue": q.queueId },
          h("h3", { id: hid }, q.name),
          h(
            "dl",
            { class: "big" },
            h("div", null, h("dt", null, w("waiting")), h("dd", { "data-testid": "waiting" }, fmtNumber(q.waiting))),
            h(
              "div",
              null,
              h("dt", null, w("oldestWait")),
              h("dd", { "data-testid": "oldest", "data-tick": "since", "data-at": q.oldestAt === null ? "" : String(q.oldestAt) }, "—"),
            ),
            h(
              "div",
              { class: "sl" },
              h("dt", null, w("serviceLevel")),
              h("dd", { "data-testid": "service-level" }, sl, " ", h("small", null, slWords)),
            ),
          ),
          h(
            "p",
            { class: "target" },
            w("slTarget", { pct: pct(q.target), s: fmtNumber(Math.round((q.thresholdMs ?? 20000) / 1000)) }),
          ),
          h(
            "dl",
            { class: "counts" },
            count("ready", tCode("st_", "ready"), q.ready),
            count("busy", tCode("st_", "busy"), q.busy),
            count("wrap_up", tCode("st_", "wrap_up"), q.wrapUp),
            count("not_ready", tCode("st_", "not_ready"), q.notReady),
          ),
          q.offered === null
            ? null
            : h(
                "dl",
                { class: "counts today" },
                count("offered", w("offeredToday"), q.offered),
                count("answered", w("answeredToday"), q.answered ?? 0),
                count("abandoned", w("abandonedToday"), q.abandoned ?? 0),
              ),
        );
      }),
    );
  }

  function count(key: string, label: string, n: number) {
    return h("div", { class: `c-${key}` }, h("dt", null, label), h("dd", { "data-testid": `count-${key}` }, fmtNumber(n)));
  }

  function renderHead() {
    fill(
      thead,
      h(
        "tr",
        null,
        COLUMNS.map((c) =>
          h(
            "th",
            { scope: "col", "aria-sort": c.key && sort.key === c.key ? (sort.desc ? "descending" : "ascending") : null },
            c.key && !tv
              ? h(
                  "button",
                  {
                    type: "button",
                    class: "sort",
                    "data-sort": c.key,
                    onclick: () => {
                      sort = { key: c.key!, desc: sort.key === c.key ? !sort.desc : false };
                      renderHead();
                      renderBoard();
                      (thead.querySelector(`[data-sort="${c.key}"]`) as HTMLElement | null)?.focus();
                    },
                  },
                  c.label(),
                  h("span", { class: "arrow", "aria-hidden": "true" }, sort.key === c.key ? (sort.desc ? " ▼" : " ▲") : ""),
                )
              : c.label(),
          ),
        ),
        tv ? null : h("th", { scope: "col" }, w("colActions")),
      ),
    );
  }

  function renderTable(list: Row[]) {
    table.querySelector("caption")!.textContent = w("agentsCaption", { n: fmtNumber(list.length) });
    if (!thead.firstChild) renderHead();
    const seen = new Set<string>();
    for (const r of list) {
      seen.add(r.agent.agent_id);
      let v = views.get(r.agent.agent_id);
      if (!v) {
        v = makeRow(r.agent.agent_id);
        views.set(r.agent.agent_id, v);
      }
      updateRow(v, r);
    }
    for (const [id, v] of views) {
      if (!seen.has(id)) {
        v.tr.remove();
        views.delete(id);
      }
    }
    const next = list.map((r) => r.agent.agent_id);
    if (next.join("\n") !== order.join("\n")) {
      // Moving a row takes the focus off a control inside it: put it back.
      const focused = document.activeElement;
      for (const id of next) tbody.appendChild(views.get(id)!.tr);
      if (focused instanceof HTMLElement && tbody.contains(focused) && document.activeElement !== focused) focused.focus();
      order = next;
    }
  }

  function makeRow(agentId: string): RowView {
    const cells = {} as RowView["cells"];
    const tr = h("tr", { "data-agent": agentId });
    for (const c of COLUMNS) {
      const cell = c.cell === "name" ? h("th", { scope: "row" }) : h("td", { class: `col-${c.cell}` });
      cells[c.cell] = cell as HTMLTableCellElement;
      tr.appendChild(cell);
    }
    const actions = h("td", { class: "actions-cell" });
    const reason = h("select", { "data-testid": "reason" });
    if (!tv) tr.appendChild(actions);
    const v: RowView = { tr, cells, actions, reason, confirming: false };
    return v;
  }

  function updateRow(v: RowView, r: Row) {
    const a = r.agent;
    v.tr.dataset.status = a.status;
    text(v.cells.name, a.name);
    text(v.cells.team, a.team ?? "—");
    const st = tCode("st_", a.status);
    fill(v.cells.status, h("span", { class: `badge st-${a.status}` }, st), a.connected || a.status === "offline" ? null : h("small", null, " ", w("away")));
    text(v.cells.reason, a.reason ? tCode("r_", a.reason) + (a.pending_not_ready ? ` → ${tCode("r_", a.pending_not_ready)}` : "") : a.pending_not_ready ? `→ ${tCode("r_", a.pending_not_ready)}` : "—");
    v.cells.since.dataset.tick = "since";
    v.cells.since.dataset.at = String(Date.parse(a.since));
    if (r.task) {
      const key = `${r.task.taskId}:${r.moreTasks}`;
      if (v.cells.task.dataset.key !== key) {
        v.cells.task.dataset.key = key;
        fill(
          v.cells.task,
          h("span", { class: "chip", title: r.task.taskId }, tCode("ch_", r.task.channel)),
          " ",
          h("span", { "data-tick": "since", "data-at": String(r.task.since) }),
          r.moreTasks ? h("small", null, " ", w("moreTasks", { n: fmtNumber(r.moreTasks) })) : null,
        );
      }
    } else if (v.cells.task.dataset.key !== "") {
      v.cells.task.dataset.key = "";
      v.cells.task.replaceChildren(a.offered_task ? w("offerPending") : "—");
    } else if (a.offered_task && v.cells.task.textContent !== w("offerPending")) {
      v.cells.task.textContent = w("offerPending");
    } else if (!a.offered_task && v.cells.task.textContent !== "—") {
      v.cells.task.textContent = "—";
    }
    text(v.cells.missed, r.missed === null ? "—" : fmtNumber(r.missed));
    if (!tv) renderActions(v, r);
  }

  function text(el: HTMLElement, s: string) {
    if (el.textContent !== s) el.textContent = s;
  }

  /** The row's controls: built once (and again only when their inputs change), so that focus and a chosen reason survive updates. */
  function renderActions(v: RowView, r: Row) {
    const a = r.agent;
    const offline = a.status === "offline";
    const key = `${offline}:${v.confirming}:${config.not_ready_reasons.join()}:${a.name}`;
    if (v.actions.dataset.key === key) return;
    v.actions.dataset.key = key;
    const focusedInside = v.actions.contains(document.activeElement);
    if (offline) {
      // A question left unanswered goes with the agent: it must not come back, and take
      // the focus, when the agent returns.
      v.confirming = false;
      v.actions.replaceChildren(h("span", { class: "muted" }, "—"));
      return;
    }
    if (v.confirming) {
      const yes = h(
        "button",
        {
          type: "button",
          class: "danger",
          "data-testid": "confirm-logout",
          onclick: () => {
            v.confirming = false;
            client
              .logoutAgent(a.agent_id)
              .then(() => announce(w("loggedOutAgent", { name: a.name })))
              .catch(fail)
              .finally(() => scheduleBoard());
            v.actions.dataset.key = "";
            renderActions(v, r);
          },
        },
        w("confirmLogout", { name: a.name }),
      );
      const no = h(
        "button",
        {
          type: "button",
          onclick: () => {
            v.confirming = false;
            v.actions.dataset.key = "";
            renderActions(v, r);
            (v.actions.querySelector("[data-testid=logout]") as HTMLElement | null)?.focus();
          },
        },
        t("cancel"),
      );
      v.actions.replaceChildren(h("div", { class: "row-actions" }, yes, no));
      // Drawn again for a change of the row (a new name): the focus stays where the
      // supervisor is working, and moves here only if it was in this row.
      if (focusedInside) yes.focus();
      return;
    }
    const chosen = v.reason.value;
    const rid = uid("reason");
    v.reason = h(
      "select",
      { id: rid, "data-testid": "reason", "aria-label": w("reasonFor", { name: a.name }) },
      config.not_ready_reasons.map((c) => h("option", { value: c, selected: c === chosen }, tCode("r_", c))),
    );
    const set = h(
      "button",
      {
        type: "button",
        "data-testid": "set-not-ready",
        // The visible words first, then whose row: the name contains what the button shows.
        "aria-label": `${w("setNotReady")}: ${a.name}`,
        disabled: config.not_ready_reasons.length === 0,
        onclick: () => {
          const reason = v.reason.value;
          client
            .setAgentState(a.agent_id, reason)
            .then(() => announce(w("forcedNotReady", { name: a.name, reason: tCode("r_", reason) })))
            .catch(fail);
        },
      },
      w("setNotReady"),
    );
    const out = h(
      "button",
      {
        type: "button",
        "data-testid": "logout",
        "aria-label": `${w("logout")}: ${a.name}`,
        onclick: () => {
          v.confirming = true;
          renderActions(v, r);
          (v.actions.querySelector("[data-testid=confirm-logout]") as HTMLElement | null)?.focus();
        },
      },
      w("logout"),
    );
    v.actions.replaceChildren(h("div", { class: "row-actions" }, v.reason, set, out));
    if (focusedInside) set.focus();
  }

  function announce(s: string) {
    announcer.textContent = s;
    notify(s);
  }

  function renderCharts(board: Board) {
    const stats = board.stats;
    if (stats === chartsFor && chartBox.firstChild) return;
    chartsFor = stats;
    if (!stats) {
      fill(chartBox, h("h2", { id: "charts-h" }, w("charts")), h("p", { class: "empty" }, w("noStats")));
      return;
    }
    const tz = stats.timezone;
    const start = Date.parse(stats.day_start);
    const end = Date.parse(stats.day_end);
    const day: Day = {
      start,
      buckets: Number.isFinite(end - start) && end > start ? Math.round((end - start) / 900_000) : 96,
      hour: (ms) => {
        try {
          return new Intl.DateTimeFormat(document.documentElement.lang || "en", { hour: "2-digit", minute: "2-digit", timeZone: tz }).format(new Date(ms));
        } catch {
          return new Date(ms).toISOString().slice(11, 16);
        }
      },
    };
    const shown = stats.queues
      .filter((q) => filters.queue === ALL || q.queue_id === filters.queue)
      .sort((a, b) => a.queue_id.localeCompare(b.queue_id));
    fill(
      chartBox,
      h("h2", { id: "charts-h" }, w("charts")),
      h(
        "div",
        { class: "chart-grid" },
        shown.map((q) => {
          const name = board.queues.get(q.queue_id)?.name ?? q.queue_id;
          const last = [...q.series].reverse().find((b) => b.service_level !== null);
          const target = queueTarget(q, targetOverride);
          return h(
            "figure",
            { class: "card chart-card", "data-queue": q.queue_id },
            h("figcaption", null, name),
            waitingChart(q.series, w("chartWaiting", { queue: name, n: fmtNumber(Math.max(0, ...q.series.map((b) => b.waiting))) }), day),
            serviceLevelChart(
              q.series,
              target,
              w("chartSl", { queue: name, target: pct(target), last: last?.service_level != null ? pct(last.service_level) : "—" }),
              day,
            ),
          );
        }),
      ),
    );
  }

  function pct(x: number) {
    return new Intl.NumberFormat(document.documentElement.lang || "en", { style: "percent", maximumFractionDigits: 0 }).format(x);
  }

  // --- ticking: times in state, waits and task ages, on the hub's clock
  function tick() {
    const now = client.serverNow();
    for (const el of root.querySelectorAll<HTMLElement>("[data-tick=since]")) {
      const at = Number(el.dataset.at);
      const s = el.dataset.at === "" || !Number.isFinite(at) ? "—" : clock(now - at);
      if (el.textContent !== s) el.textContent = s;
    }
    const c = root.querySelector<HTMLElement>("[data-tick=clock]");
    if (c) c.textContent = new Intl.DateTimeFormat(document.documentElement.lang || "en", { timeStyle: "medium" }).format(new Date(now));
  }
  const ticker = setInterval(tick, 1000);

  // TV mode entered with the toggle leaves with Escape (a wall display opened with ?tv=1 has no keyboard to speak of).
  const onKey = (e: KeyboardEvent) => {
    if (e.key === "Escape" && tv) setTv(false);
  };
  document.addEventListener("keydown", onKey);

  // --- the hub's events
  client.on("connection", (s) => {
    conn = s;
    if (s.kind === "closed") {
      // This wallboard is over (signed out, or a refused token): nothing of it may draw again.
      clearInterval(ticker);
      document.removeEventListener("keydown", onKey);
      const reason = s.reason;
      if (reason === "token_expired" || reason === "unauthorized" || reason === "forbidden") {
        signOut(w("tokenRejected", { reason }));
        return;
      }
    }
    renderHeader();
  });
  client.on("snapshot", () => {
    // A new picture: the team list and queues may have changed.
    renderControls();
  });
  client.on("board", () => scheduleBoard());

  layout();
  fetch("/v1/desktop/config", { headers: { authorization: `Bearer ${token}` } })
    .then((r) => (r.ok ? r.json() : null))
    .then((c: DesktopConfig | null) => {
      if (c) {
        config = c;
        renderBoard();
      }
    })
    .catch(() => {});
  client.connect();
}
