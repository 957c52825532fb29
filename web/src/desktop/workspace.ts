// The customer workspace: what the agent works on for the interaction (or reopened
// customer) it selected. Customer form (Create, or Edit then Save), request title and
// description with live character counts, the request's details behind its icon, tags,
// the conversation summary, recent requests, the journey/timeline with quick notes, the
// caution notice when someone else changed what is shown, and Close.
//
// Drafts live here, not in the inputs: every input writes its draft as the agent types,
// so a redraw never loses text. A record this workspace holds keeps its version until
// the agent loads a newer one, so a save based on an old version meets the hub's
// version_conflict, which is shown as the caution notice too.
import { HubError, type Activity, type Actor, type CustomerFields, type CustomerView, type JourneyEvent, type Lists, type RecordChange, type Request } from "../../../clients/typescript/src/index.ts";
import type { Shell } from "./app.ts";
import { charCount, fill, h, uid } from "./dom.ts";
import { icon } from "./icons.ts";
import { fmtDateTime, fmtDuration, fmtNumber, t, tCode, type Key } from "./i18n.ts";

const MAX_TEXT = 2000;
const MAX_TAG = 50;
const MAX_TAGS = 50;

interface CustomerDraft {
  name: string;
  kind: "person" | "organisation";
  emails: string;
  phones: string;
  chat: string;
  /** The record the form was opened on: a save sends what differs from it (the workspace may have loaded a newer one meanwhile). */
  base?: CustomerView["customer"];
}

interface Caution {
  kind: "customer" | "request" | "activity";
  /** The record's id: a customer has several requests, each with its own caution. */
  id: string;
  record: unknown;
  by: Actor | undefined;
  at: string | undefined;
  conflict: boolean;
  /** For a refused save: the same change again, made on the current record (`record`, at `version`). */
  retry?: (version: number, record: unknown) => Promise<void>;
  version: number;
}

interface State {
  activity: Activity | null;
  /** The activity is this agent's open interaction (not only the customer's latest). */
  own: boolean;
  view: CustomerView | null;
  requestId: string | null;
  title: string | null;
  description: string | null;
  editing: boolean;
  draft: CustomerDraft | null;
  tagText: string;
  tagError: string | null;
  notes: string | null;
  cautions: Caution[];
  journey: JourneyEvent[];
  scope: "customer" | "request";
  note: string;
  details: boolean;
  summaryTab: string;
  linkQuery: string;
  linkResults: { customer_id: string; name: string }[] | null;
  linkOpen: boolean;
  /** The saves of this workspace, one after another (`Workspace.serial`). */
  saves: Promise<void>;
  /** A quick note is being added (a second submit meanwhile would add it twice). */
  adding: boolean;
}

/** The request the workspace shows. */
const requestOf = (s: State): Request | null => s.view?.requests.find((r) => r.request_id === s.requestId) ?? null;

/** A form label without its typing hint ("Emails (one per line)" -> "Emails"), for read-only views. */
const bare = (key: Key) => t(key).replace(/\s*\([^)]*\)$/, "");
const lines = (s: string) => s.split("\n").map((x) => x.trim()).filter(Boolean);

export class Workspace {
  private s: State | null = null;
  /**
   * Counts the agent's opens: an open whose answers arrive after a newer one began (a
   * click on another Open item, an Accept meanwhile) draws nothing, so the workspace
   * always shows what was asked for last.
   */
  private opens = 0;
  /** The modal question on screen, if any: answered "cancel" when the desktop is left. */
  private asking: ((v: string | null) => void) | null = null;

  constructor(private readonly shell: Shell, private readonly root: HTMLElement) {}

  isShowing(activityId: string | null, customerId: string | undefined): boolean {
    if (!this.s) return false;
    if (activityId) return this.s.own && this.s.activity?.activity_id === activityId;
    return !this.s.own && !!customerId && this.s.view?.customer.customer_id === customerId;
  }

  /** The desktop is left (signed out, replaced): a question still on screen goes with it. */
  dispose(): void {
    this.asking?.(null);
    this.opens += 1;
    this.s = null;
  }

  private fresh(activity: Activity | null, own: boolean, view: CustomerView | null): State {
    const requestId =
      activity?.request_id ?? view?.requests.find((r) => r.state === "open")?.request_id ?? view?.requests[0]?.request_id ?? null;
    return {
      activity, own, view, requestId,
      title: null, description: null, editing: false, draft: null, tagText: "", tagError: null, notes: null, cautions: [],
      journey: [], scope: "customer", note: "", details: false, summaryTab: "", linkQuery: "", linkResults: null, linkOpen: false,
      saves: Promise.resolve(), adding: false,
    };
  }

  /** Shows this agent's interaction. */
  async openActivity(activityId: string): Promise<void> {
    const { api } = this.shell;
    const open = ++this.opens;
    try {
      const { activity } = await api.getActivity(activityId);
      const view = activity.customer_id ? await api.getCustomer(activity.customer_id) : null;
      if (open !== this.opens) return;
      const s = this.fresh(activity, true, view);
      if (!view) s.draft = this.identityDraft(activity);
      await this.loadJourney(s);
      if (open !== this.opens) return;
      this.s = s;
      this.render();
      this.shell.refreshLists();
    } catch (e) {
      if (open === this.opens) this.shell.fail(e);
    }
  }

  /** Shows a customer; `reopen` puts it on the Open list first (from Recent or Search). */
  async openCustomer(customerId: string, reopen: boolean): Promise<void> {
    const { api } = this.shell;
    const open = ++this.opens;
    try {
      const view = reopen ? await api.reopen(customerId) : await api.getCustomer(customerId);
      if (open !== this.opens) return;
      // A customer with an interaction of this agent in progress opens on that interaction.
      const item = this.shell.lists.open.find((o) => o.activity_id && o.customer?.customer_id === customerId);
      if (item?.activity_id && !reopen) return this.openActivity(item.activity_id);
      const s = this.fresh(view.activities[0] ?? null, false, view);
      await this.loadJourney(s);
      if (open !== this.opens) return;
      this.s = s;
      this.render();
      await this.shell.refreshLists();
    } catch (e) {
      if (open === this.opens) this.shell.fail(e);
    }
  }

  private identityDraft(a: Activity): CustomerDraft {
    const id = a.summary.identity ?? {};
    return { name: id.name ?? "", kind: "person", emails: id.email ?? "", phones: id.phone ?? "", chat: id.chat_handle ?? "" };
  }

  private get request(): Request | null {
    return this.s ? requestOf(this.s) : null;
  }

  private async loadJourney(s: State | null = this.s): Promise<void> {
    if (!s?.view) return;
    const r = await this.shell.api.journey(s.view.customer.customer_id, s.scope === "request" ? s.requestId : null);
    s.journey = r.journey;
  }

  /** Draws again if `s` is still what is shown (an answer for a workspace left meanwhile draws nothing). */
  private redraw(s: State): void {
    if (this.s === s) this.render();
  }

  /**
   * Runs the saves of one workspace one after another. Each save reads its record's
   * version and its draft when its turn comes, so a second click on Save (or a tag
   * added while the notes save) goes out on the version the first one's answer brought,
   * or finds nothing left to save, instead of meeting the hub's version_conflict with
   * the agent's own change.
   */
  private serial(s: State, save: () => Promise<void>): Promise<void> {
    const run = s.saves.then(save);
    s.saves = run.catch(() => {});
    return run;
  }

  /** A caution's "save mine": the refused change again, taking its turn with the other saves. */
  private retry(s: State, c: Caution): Promise<void> {
    return this.serial(s, () => c.retry!(c.version, c.record));
  }

  // --- dirty state (the Close prompt)
  private requestDirty(s: State): boolean {
    const r = requestOf(s);
    return (s.title !== null && s.title !== (r?.title ?? "")) || (s.description !== null && s.description !== (r?.description ?? ""));
  }

  private notesDirty(s: State): boolean {
    return !!s.activity && s.notes !== null && s.notes !== s.activity.notes;
  }

  private customerDirty(s: State): boolean {
    if (!s.draft || !s.view || !s.editing) return false;
    const c = s.view.customer;
    const d = s.draft;
    return d.name !== c.name || d.kind !== c.kind || d.emails !== c.emails.join("\n") || d.phones !== c.phones.join("\n") || d.chat !== c.chat_handles.join("\n");
  }

  private fields(d: CustomerDraft): CustomerFields {
    return { name: d.name.trim(), kind: d.kind, emails: lines(d.emails), phones: lines(d.phones), chat_handles: lines(d.chat) };
  }

  /**
   * Only what the agent changed in the form, against the record it was editing: a save
   * after a conflict makes these changes on the current record and keeps the rest of what
   * the other agent or the CRM changed (sending the whole form would put it back).
   */
  private changes(d: CustomerDraft, base: CustomerView["customer"]): CustomerFields {
    const all = this.fields(d);
    const out: CustomerFields = {};
    const same = (a: string[], b: string[]) => a.length === b.length && a.every((x, i) => x === b[i]);
    if (all.name !== base.name) out.name = all.name;
    if (all.kind !== base.kind) out.kind = all.kind;
    if (!same(all.emails ?? [], base.emails)) out.emails = all.emails;
    if (!same(all.phones ?? [], base.phones)) out.phones = all.phones;
    if (!same(all.chat_handles ?? [], base.chat_handles)) out.chat_handles = all.chat_handles;
    return out;
  }

  /**
   * After a welcome: a workspace whose interaction or reopened customer is no longer on
   * the Open list (a hub that restarted without its state, an interaction closed from
   * another desktop) is put away rather than left to fail on every save.
   */
  onWelcome(lists: Lists): void {
    const s = this.s;
    if (!s) return;
    const still = lists.open.some((o) =>
      s.own ? o.activity_id === s.activity?.activity_id : !o.activity_id && o.customer?.customer_id === s.view?.customer.customer_id,
    );
    if (!still) {
      this.s = null;
      this.render();
      return;
    }
    // What the hub pushed while the socket was down never came: the records shown are
    // read again, and one changed meanwhile gets its caution as a pushed change would.
    this.recheck(s).catch(() => {});
  }

  private async recheck(s: State): Promise<void> {
    const { api } = this.shell;
    const told = (change: RecordChange) => {
      if (this.s === s) this.onRecordChanged(change);
    };
    if (s.view) {
      const v = await api.getCustomer(s.view.customer.customer_id);
      const c = v.customer;
      told({ kind: "customer", id: c.customer_id, customer_id: c.customer_id, version: c.version, changed_by: c.updated_by, changed_at: c.updated_at, record: c });
      for (const r of v.requests) {
        // The one edited gets its caution; the others are taken as they are.
        told({ kind: "request", id: r.request_id, customer_id: c.customer_id, version: r.version, changed_by: r.updated_by, changed_at: r.updated_at, record: r });
      }
    }
    if (s.activity) {
      const a = (await api.getActivity(s.activity.activity_id)).activity;
      told({ kind: "activity", id: a.activity_id, customer_id: a.customer_id ?? null, version: a.version, changed_by: a.updated_by, changed_at: a.updated_at, record: a });
    }
  }

  // --- the hub's pushes
  onRecordChanged(change: RecordChange): void {
    const s = this.s;
    if (!s) return;
    const customerId = s.view?.customer.customer_id;
    const mine = (change.customer_id && change.customer_id === customerId) || (change.kind === "activity" && change.id === s.activity?.activity_id);
    if (!mine) return;
    if (change.kind === "note") {
      this.refreshJourney();
      return;
    }
    const held = this.heldVersion(s, change.kind, change.id);
    if (held === null) {
      // A record this workspace does not edit (another request of the customer, an older
      // activity): nothing typed for it to caution about; taken as it is.
      if (change.kind === "request" && s.view) {
        const r = change.record as unknown as Request;
        const known = s.view.requests.some((x) => x.request_id === r.request_id);
        s.view.requests = known ? s.view.requests.map((x) => (x.request_id === r.request_id ? r : x)) : [r, ...s.view.requests];
      }
    } else if (change.version > held) {
      const replaced = s.cautions.filter(
        (c) => c.kind === change.kind && c.id === change.id && (c.record as { version: number }).version <= change.version,
      );
      s.cautions = s.cautions.filter((c) => !replaced.includes(c));
      // A refused save's caution stays one, on the newer record: "save mine" then makes
      // the agent's change on it.
      const refused = replaced.find((c) => c.conflict && c.retry);
      s.cautions.push({
        kind: change.kind,
        id: change.id,
        record: change.record,
        by: change.changed_by,
        at: change.changed_at,
        conflict: refused !== undefined,
        retry: refused?.retry,
        version: change.version,
      });
    }
    this.render();
    this.refreshJourney();
  }

  /**
   * Reloads the journey after pushed changes, one request at a time: a burst of changes
   * (an integration saving in a loop) costs two requests, not one each, which keeps the
   * desktop far from the connection's rate limit.
   */
  private journeyBusy = false;
  private journeyAgain = false;
  private refreshJourney(): void {
    if (this.journeyBusy) {
      this.journeyAgain = true;
      return;
    }
    this.journeyBusy = true;
    this.loadJourney()
      .catch(() => {})
      .finally(() => {
        this.journeyBusy = false;
        if (this.journeyAgain) {
          this.journeyAgain = false;
          this.refreshJourney();
        } else this.render();
      });
  }

  private heldVersion(s: State, kind: RecordChange["kind"], id: string): number | null {
    if (kind === "customer") return s.view?.customer.customer_id === id ? s.view.customer.version : null;
    // The request the workspace edits; the customer's others are only listed.
    if (kind === "request") return id === s.requestId ? (requestOf(s)?.version ?? null) : null;
    if (kind === "activity") return s.activity?.activity_id === id ? s.activity.version : null;
    return null;
  }

  /** Load: take the other agent's version of the record, dropping the draft for it. */
  private load(c: Caution): void {
    const s = this.s!;
    if (c.kind === "customer" && s.view) {
      s.view.customer = c.record as CustomerView["customer"];
      s.editing = false;
      s.draft = null;
      void this.shell.refreshLists();
    } else if (c.kind === "request" && s.view) {
      const r = c.record as Request;
      s.view.requests = s.view.requests.map((x) => (x.request_id === r.request_id ? r : x));
      // The drafts are the edited request's: loading another's change keeps them.
      if (r.request_id === s.requestId) {
        s.title = null;
        s.description = null;
      }
    } else if (c.kind === "activity") {
      s.activity = c.record as Activity;
      s.notes = null;
    }
    s.cautions = s.cautions.filter((x) => x !== c);
    this.render();
    document.getElementById("work-h")?.focus();
  }

  /** A refused save: show the caution (on the workspace it was for), with Load and "save mine" on the current version. */
  private conflict(s: State, e: unknown, kind: Caution["kind"], id: string, retry: (version: number, record: unknown) => Promise<void>): boolean {
    if (!(e instanceof HubError) || e.code !== "version_conflict" || !e.current) return false;
    s.cautions = s.cautions.filter((c) => !(c.kind === kind && c.id === id));
    s.cautions.push({ kind, id, record: e.current, by: e.changed_by, at: e.changed_at, conflict: true, retry, version: e.version ?? 0 });
    this.redraw(s);
    return true;
  }

  // --- saving: each takes the workspace it saves (the agent may open another meanwhile)
  // and clears a draft only if it still holds what was sent (typing goes on while a save
  // is answered).
  private saveCustomer(s: State): Promise<void> {
    return this.serial(s, () => this.customerSave(s));
  }

  private async customerSave(s: State): Promise<void> {
    const { api } = this.shell;
    if (!s.draft) return;
    const draft = s.draft;
    const fields = this.fields(draft);
    const sent = JSON.stringify(draft);
    if (!s.view) {
      // An unknown caller: Create links the interaction to the new customer.
      const view = await api.createCustomer(fields, s.activity?.activity_id);
      s.view = view;
      s.draft = null;
      if (s.activity) s.activity = (await api.getActivity(s.activity.activity_id)).activity;
      s.requestId = s.activity?.request_id ?? view.requests[0]?.request_id ?? null;
      await this.requestSave(s);
      await this.loadJourney(s);
      await this.shell.refreshLists();
      this.redraw(s);
      return;
    }
    const id = s.view.customer.customer_id;
    const changes = this.changes(draft, draft.base ?? s.view.customer);
    if (Object.keys(changes).length === 0) {
      s.editing = false;
      s.draft = null;
      this.redraw(s);
      return;
    }
    const attempt = async (version: number) => {
      try {
        const view = await api.updateCustomer(id, version, changes);
        s.view = { ...view, requests: view.requests };
        if (s.draft && JSON.stringify(s.draft) === sent) {
          s.editing = false;
          s.draft = null;
        }
        s.cautions = s.cautions.filter((c) => c.kind !== "customer");
        this.shell.notify(t("saved"));
        await this.loadJourney(s);
        this.redraw(s);
        // The lists show the customer's name: ask for them again (the hub does not push them).
        await this.shell.refreshLists();
      } catch (e) {
        if (!this.conflict(s, e, "customer", id, attempt)) throw e;
      }
    };
    await attempt(s.view.customer.version);
  }

  private saveRequest(s: State): Promise<void> {
    return this.serial(s, () => this.requestSave(s));
  }

  private async requestSave(s: State): Promise<void> {
    const { api } = this.shell;
    if (!this.requestDirty(s) || !s.view) return;
    const view = s.view;
    const sentTitle = s.title;
    const sentDescription = s.description;
    const title = sentTitle ?? undefined;
    const description = sentDescription ?? undefined;
    const sent = () => {
      if (s.title === sentTitle) s.title = null;
      if (s.description === sentDescription) s.description = null;
    };
    const r = requestOf(s);
    if (!r) {
      const { request } = await api.createRequest(view.customer.customer_id, title ?? "", description ?? "");
      view.requests = [request, ...view.requests];
      s.requestId = request.request_id;
      sent();
      this.redraw(s);
      return;
    }
    const attempt = async (version: number) => {
      try {
        const { request } = await api.updateRequest(r.request_id, version, { title, description });
        view.requests = view.requests.map((x) => (x.request_id === request.request_id ? request : x));
        sent();
        s.cautions = s.cautions.filter((c) => !(c.kind === "request" && c.id === request.request_id));
        this.shell.notify(t("saved"));
        await this.loadJourney(s);
        this.redraw(s);
      } catch (e) {
        if (!this.conflict(s, e, "request", r.request_id, attempt)) throw e;
      }
    };
    await attempt(r.version);
  }

  private setRequestState(s: State, requestId: string, state: "open" | "closed"): Promise<void> {
    return this.serial(s, async () => {
      const r = s.view?.requests.find((x) => x.request_id === requestId);
      if (!r || r.state === state) return;
      const attempt = async (version: number) => {
        try {
          const { request } = await this.shell.api.updateRequest(r.request_id, version, { state });
          s.view!.requests = s.view!.requests.map((x) => (x.request_id === request.request_id ? request : x));
          s.cautions = s.cautions.filter((c) => !(c.kind === "request" && c.id === request.request_id));
          await this.loadJourney(s);
          this.redraw(s);
        } catch (e) {
          if (!this.conflict(s, e, "request", r.request_id, attempt)) throw e;
        }
      };
      await attempt(r.version);
    });
  }

  /**
   * Changes the interaction's tags: `change` is applied to the tags as they are when the
   * save's turn comes (two × clicked quickly remove both tags; a tag added twice is one).
   */
  private setTags(s: State, change: (tags: string[]) => string[]): Promise<void> {
    return this.serial(s, async () => {
      const a = s.activity;
      if (!a) return;
      // The change is made on the tags it is saved on: after a conflict, on the current
      // ones (the other agent's tags stay).
      // `record`: the current activity a conflict carried, when this is the retry.
      const attempt = async (version: number, current: string[], record?: Activity) => {
        const tags = change(current);
        if (tags.length === current.length && tags.every((x, i) => x === current[i])) {
          if (record) {
            // Nothing left to change on the current activity: take it as it is.
            s.activity = record;
            s.cautions = s.cautions.filter((c) => c.kind !== "activity");
            this.redraw(s);
          }
          return;
        }
        try {
          s.activity = (await this.shell.api.updateActivity(a.activity_id, version, { tags })).activity;
          s.cautions = s.cautions.filter((c) => c.kind !== "activity");
          await this.loadJourney(s);
          this.redraw(s);
        } catch (e) {
          const retry = (v: number, record: unknown) => attempt(v, (record as Activity | undefined)?.tags ?? [], record as Activity | undefined);
          if (!this.conflict(s, e, "activity", a.activity_id, retry)) throw e;
        }
      };
      await attempt(a.version, a.tags);
    });
  }

  private saveNotes(s: State): Promise<void> {
    return this.serial(s, () => this.notesSave(s));
  }

  private async notesSave(s: State): Promise<void> {
    const a = s.activity;
    if (!a || !this.notesDirty(s)) return;
    const notes = s.notes!;
    const attempt = async (version: number) => {
      try {
        s.activity = (await this.shell.api.updateActivity(a.activity_id, version, { notes })).activity;
        if (s.notes === notes) s.notes = null;
        s.cautions = s.cautions.filter((c) => c.kind !== "activity");
        this.shell.notify(t("saved"));
        await this.loadJourney(s);
        this.redraw(s);
      } catch (e) {
        if (!this.conflict(s, e, "activity", a.activity_id, attempt)) throw e;
      }
    };
    await attempt(a.version);
  }

  private addTag(): boolean {
    const s = this.s!;
    // Composed (NFC), as the hub keeps tags: an accent typed apart from its letter is
    // one character, and the same tag.
    const tag = s.tagText.trim().normalize("NFC");
    if (!tag || !s.activity) return false;
    const same = (x: string) => x.normalize("NFC").toLowerCase() === tag.toLowerCase();
    if (charCount(tag) > MAX_TAG) s.tagError = t("tagTooLong");
    else if (s.activity.tags.some(same)) s.tagError = t("tagDuplicate");
    else if (s.activity.tags.length >= MAX_TAGS) s.tagError = t("tagMany");
    else {
      s.tagError = null;
      s.tagText = "";
      this.setTags(s, (tags) => (tags.some(same) ? tags : [...tags, tag])).catch((e) => this.shell.fail(e));
      this.render();
      document.getElementById("tag-input")?.focus();
      return true;
    }
    this.render();
    document.getElementById("tag-input")?.focus();
    return true;
  }

  // --- closing
  private async close(): Promise<void> {
    const s = this.s;
    if (!s) return;
    const interaction = s.own && s.activity && !s.activity.ended_at ? s.activity : null;
    if (interaction && !s.view) {
      const choice = await this.ask(t("closeUnknownTitle"), t("closeUnknown"), [
        ["create", t("create")],
        ["discard", t("discard")],
      ]);
      if (choice === "create") {
        await this.saveCustomer(s);
        if (!s.view) return;
        // The notes typed for the interaction go with it, as a known caller's do.
        await this.saveNotes(s);
        if (this.notesDirty(s) || s.cautions.some((c) => c.conflict)) return;
        await this.shell.api.closeInteraction(interaction.activity_id);
      } else if (choice === "discard") {
        await this.shell.api.closeInteraction(interaction.activity_id, "discard");
      } else return;
    } else {
      const dirty = () => this.requestDirty(s) || this.customerDirty(s) || this.notesDirty(s);
      if (dirty()) {
        const choice = await this.ask(t("closeUnsavedTitle"), t("closeUnsaved"), [
          ["save", t("save")],
          ["discard", t("discard")],
        ]);
        if (choice === "save") {
          if (this.customerDirty(s)) await this.saveCustomer(s);
          await this.saveRequest(s);
          await this.saveNotes(s);
          if (dirty() || s.cautions.some((c) => c.conflict)) return;
        } else if (choice !== "discard") return;
      }
      if (interaction) await this.shell.api.closeInteraction(interaction.activity_id);
      else if (s.view) await this.shell.api.closeCustomer(s.view.customer.customer_id);
    }
    // What the agent opened meanwhile stays.
    if (this.s === s) this.s = null;
    await this.shell.refreshLists();
    this.render();
  }

  /** A modal question (a native dialog: focus stays inside, Escape cancels). */
  private ask(title: string, text: string, choices: [string, string][]): Promise<string | null> {
    return new Promise((resolve) => {
      const titleId = uid("dlg");
      const d = h(
        "dialog",
        { "aria-labelledby": titleId, class: "ask", "data-testid": "close-dialog" },
        h("h2", { id: titleId }, title),
        h("p", null, text),
        h(
          "div",
          { class: "actions" },
          choices.map(([v, label], i) => h("button", { type: "button", class: i === 0 ? "primary" : "", onclick: () => done(v) }, label)),
          h("button", { type: "button", onclick: () => done(null) }, t("cancel")),
        ),
      ) as HTMLDialogElement;
      const done = (v: string | null) => {
        if (this.asking === done) this.asking = null;
        d.close();
        d.remove();
        resolve(v);
      };
      this.asking?.(null);
      this.asking = done;
      d.addEventListener("cancel", (e) => {
        e.preventDefault();
        done(null);
      });
      document.body.appendChild(d);
      d.showModal();
    });
  }

  // --- drawing
  render(): void {
    // A redraw keeps the keyboard focus where it was: by id for fields, else by the
    // position among the workspace's focusable controls (a pushed change must not throw
    // a keyboard user back to the top of the page).
    const FOCUSABLE = "button, input, select, textarea, summary, [tabindex]";
    const active = document.activeElement as HTMLInputElement | null;
    const inside = !!active && this.root.contains(active);
    const focusId = inside ? active!.id : null;
    const focusIndex = inside && !focusId ? [...this.root.querySelectorAll(FOCUSABLE)].indexOf(active!) : -1;
    const sel = focusId && "selectionStart" in active! ? [active!.selectionStart, active!.selectionEnd] : null;
    const s = this.s;
    if (!s) {
      fill(this.root, h("section", { class: "card empty-work", "aria-labelledby": "work-h" }, h("h2", { id: "work-h", tabindex: -1 }, t("customer")), h("p", { class: "empty" }, t("workspaceEmpty"))));
      return;
    }
    const c = s.view?.customer;
    const heading = c ? c.name || c.emails[0] || c.phones[0] || t("customer") : t("unknownCaller");
    fill(
      this.root,
      h(
        "section",
        { class: "card head", "aria-labelledby": "work-h" },
        // Clicking the customer's name opens the customer form (Edit, or the Name field of a new one).
        h(
          "h2",
          { id: "work-h", tabindex: -1, "data-testid": "work-title" },
          h("button", { type: "button", class: "link title", onclick: () => this.openForm() }, heading),
        ),
        s.activity && s.own ? h("span", { class: "chip" }, tCode("ch_", s.activity.channel)) : null,
        h("span", { class: "spacer" }),
        h("button", { type: "button", "data-testid": "close", onclick: () => this.close().catch((e) => this.shell.fail(e)) }, t("closeInteraction")),
      ),
      s.cautions.map((x) => this.cautionBox(x)),
      h("div", { class: "grid" }, h("div", { class: "col" }, this.customerCard(), this.requestCard(), this.activityCard()), h("div", { class: "col" }, this.summaryCard(), this.recentRequests(), this.timeline())),
    );
    if (focusIndex >= 0) {
      const all = this.root.querySelectorAll<HTMLElement>(FOCUSABLE);
      all[Math.min(focusIndex, all.length - 1)]?.focus();
    }
    if (focusId) {
      const el = document.getElementById(focusId) as HTMLInputElement | null;
      if (el) {
        el.focus();
        if (sel && "setSelectionRange" in el && sel[0] !== null) {
          try {
            el.setSelectionRange(sel[0], sel[1]);
          } catch {
            // Inputs of some types have no selection.
          }
        }
      }
    }
  }

  private openForm(): void {
    const s = this.s;
    if (!s) return;
    const c = s.view?.customer;
    if (c && !s.editing) {
      s.editing = true;
      s.draft = { name: c.name, kind: c.kind, emails: c.emails.join("\n"), phones: c.phones.join("\n"), chat: c.chat_handles.join("\n"), base: c };
      this.render();
    }
    document.getElementById("cust-name")?.focus();
  }

  private cautionBox(c: Caution) {
    const who = c.by?.id ?? "?";
    const text = t(c.conflict ? "cautionConflict" : "caution", { who, record: tCode("rec_", c.kind), time: fmtDateTime(c.at) });
    return h(
      "div",
      { class: "notice warn caution", role: "alert", "data-testid": "caution", "data-version": String(c.version) },
      icon("warn"),
      h("span", null, text),
      h("button", { type: "button", class: "primary", onclick: () => this.load(c) }, t("load")),
      c.retry
        ? h(
            "button",
            {
              type: "button",
              onclick: () => {
                const s = this.s!;
                s.cautions = s.cautions.filter((x) => x !== c);
                this.retry(s, c).catch((e) => this.shell.fail(e));
              },
            },
            t("saveMine"),
          )
        : null,
    );
  }

  private customerCard() {
    const s = this.s!;
    const c = s.view?.customer;
    const unknown = !c;
    const editing = unknown || s.editing;
    const d = s.draft;
    const field = (key: keyof CustomerDraft, label: Key, multi: boolean) => {
      const id = `cust-${key}`;
      const value = d ? d[key] : "";
      return [
        h("label", { for: id }, t(label)),
        multi
          ? h("textarea", { id, rows: 2, value, oninput: (e: Event) => (s.draft![key] = (e.target as HTMLTextAreaElement).value as never) })
          : h("input", { id, value, autocomplete: "off", oninput: (e: Event) => (s.draft![key] = (e.target as HTMLInputElement).value as never) }),
      ];
    };
    return h(
      "section",
      { class: "card", "aria-labelledby": "cust-h", "data-testid": "customer-card" },
      h("h3", { id: "cust-h" }, t("customerForm")),
      editing && d
        ? h(
            "form",
            {
              class: "form",
              onsubmit: (e: Event) => {
                e.preventDefault();
                this.saveCustomer(s).catch((err) => this.shell.fail(err));
              },
            },
            field("name", "name", false),
            h("label", { for: "cust-kind" }, t("kind")),
            h(
              "select",
              { id: "cust-kind", onchange: (e: Event) => (d.kind = (e.target as HTMLSelectElement).value as CustomerDraft["kind"]) },
              (["person", "organisation"] as const).map((k) => h("option", { value: k, selected: d.kind === k }, tCode("k_", k))),
            ),
            field("emails", "emails", true),
            field("phones", "phones", true),
            field("chat", "chatHandles", true),
            h(
              "div",
              { class: "actions" },
              h("button", { type: "submit", class: "primary" }, unknown ? t("create") : t("save")),
              unknown ? null : h("button", { type: "button", onclick: () => ((s.editing = false), (s.draft = null), this.render()) }, t("cancel")),
            ),
          )
        : c
          ? [
              h(
                "dl",
                { class: "facts" },
                h("dt", null, t("name")),
                h("dd", { "data-testid": "customer-name" }, c.name || "—"),
                h("dt", null, t("kind")),
                h("dd", null, tCode("k_", c.kind)),
                c.emails.length ? [h("dt", null, bare("emails")), h("dd", null, c.emails.join(", "))] : null,
                c.phones.length ? [h("dt", null, bare("phones")), h("dd", null, c.phones.join(", "))] : null,
                c.chat_handles.length ? [h("dt", null, bare("chatHandles")), h("dd", null, c.chat_handles.join(", "))] : null,
              ),
              h(
                "button",
                {
                  type: "button",
                  onclick: () => this.openForm(),
                },
                t("edit"),
              ),
            ]
          : null,
      unknown && s.activity ? this.linkCustomer() : null,
    );
  }

  private linkCustomer() {
    const s = this.s!;
    const id = "link-q";
    return h(
      "details",
      {
        class: "link-customer",
        // Stays open across redraws (search results arrive by a redraw).
        open: s.linkOpen,
        ontoggle: (e: Event) => (s.linkOpen = (e.target as HTMLDetailsElement).open),
      },
      h("summary", null, t("linkToCustomer")),
      h(
        "form",
        {
          role: "search",
          class: "inline",
          onsubmit: (e: Event) => {
            e.preventDefault();
            if (!s.linkQuery.trim()) return;
            this.shell.api.search(s.linkQuery.trim()).then((r) => {
              s.linkResults = r.customers.map((x) => ({ customer_id: x.customer_id, name: x.name || x.emails[0] || x.customer_id }));
              this.redraw(s);
            }, this.shell.fail);
          },
        },
        h("label", { for: id, class: "sr-only" }, t("searchLabel")),
        h("input", { id, type: "search", value: s.linkQuery, oninput: (e: Event) => (s.linkQuery = (e.target as HTMLInputElement).value) }),
        h("button", { type: "submit" }, t("searchButton")),
      ),
      s.linkResults
        ? h(
            "ul",
            { class: "items" },
            s.linkResults.length === 0
              ? h("li", null, t("searchNone"))
              : s.linkResults.map((r) =>
                  h(
                    "li",
                    null,
                    h("span", { class: "name" }, r.name),
                    h(
                      "button",
                      {
                        type: "button",
                        onclick: async () => {
                          try {
                            await this.shell.api.linkActivity(s.activity!.activity_id, r.customer_id);
                            // Shown again with its customer, unless the agent went on to something else.
                            if (this.s === s) await this.openActivity(s.activity!.activity_id);
                          } catch (e) {
                            this.shell.fail(e);
                          }
                        },
                      },
                      t("link"),
                    ),
                  ),
                ),
          )
        : null,
    );
  }

  private counter(id: string, value: string) {
    const n = charCount(value);
    return h("span", { id, class: n > MAX_TEXT ? "count over" : "count", "aria-live": "polite" }, t("charCount", { n: fmtNumber(n), max: fmtNumber(MAX_TEXT) }));
  }

  private requestCard() {
    const s = this.s!;
    const r = this.request;
    const title = s.title ?? r?.title ?? "";
    const description = s.description ?? r?.description ?? "";
    const typed = (key: "title" | "description", countId: string) => (e: Event) => {
      const v = (e.target as HTMLInputElement).value;
      s[key] = v;
      const el = document.getElementById(countId);
      if (el) el.replaceWith(this.counter(countId, v));
    };
    return h(
      "section",
      { class: "card", "aria-labelledby": "req-h", "data-testid": "request-card" },
      h(
        "div",
        { class: "row" },
        h("h3", { id: "req-h" }, t("request")),
        h(
          "button",
          {
            type: "button",
            class: "icon",
            "aria-expanded": String(s.details),
            "aria-controls": "req-details",
            "aria-label": t("requestDetails"),
            title: t("requestDetails"),
            "data-testid": "request-icon",
            onclick: () => ((s.details = !s.details), this.render()),
          },
          icon("request"),
        ),
      ),
      h(
        "dl",
        { id: "req-details", class: "facts", hidden: !s.details, "data-testid": "request-details" },
        h("dt", null, t("requestState")),
        h("dd", null, r ? tCode("rs_", r.state) : t("noRequest")),
        h("dt", null, t("created")),
        h("dd", null, r ? fmtDateTime(r.created_at) : "—"),
        h("dt", null, t("closedAt")),
        h("dd", null, r?.closed_at ? fmtDateTime(r.closed_at) : t("notClosed")),
      ),
      h(
        "form",
        {
          class: "form",
          onsubmit: (e: Event) => {
            e.preventDefault();
            this.saveRequest(s).catch((err) => this.shell.fail(err));
          },
        },
        h("label", { for: "req-title" }, t("requestTitle")),
        h("input", { id: "req-title", value: title, "aria-describedby": "req-title-count", autocomplete: "off", oninput: typed("title", "req-title-count") }),
        this.counter("req-title-count", title),
        h("label", { for: "req-desc" }, t("requestDescription")),
        h("textarea", { id: "req-desc", rows: 4, value: description, "aria-describedby": "req-desc-count", oninput: typed("description", "req-desc-count") }),
        this.counter("req-desc-count", description),
        h(
          "div",
          { class: "actions" },
          h("button", { type: "submit", class: "primary", disabled: !s.view, "aria-describedby": s.view ? undefined : "req-after" }, t("save")),
          s.view ? null : h("span", { id: "req-after", class: "hint" }, t("requestAfterCreate")),
          r && s.view
            ? h(
                "button",
                {
                  type: "button",
                  onclick: () => this.setRequestState(s, r.request_id, r.state === "open" ? "closed" : "open").catch((e) => this.shell.fail(e)),
                },
                r.state === "open" ? t("closeRequest") : t("reopenRequest"),
              )
            : null,
        ),
      ),
    );
  }

  private activityCard() {
    const s = this.s!;
    const a = s.activity;
    if (!a) return null;
    return h(
      "section",
      { class: "card", "aria-labelledby": "act-h", "data-testid": "activity-card" },
      h("h3", { id: "act-h" }, t("activity"), " ", h("small", null, `${tCode("ch_", a.channel)} · ${fmtDateTime(a.started_at)}`)),
      h("label", { for: "tag-input" }, t("tags")),
      h(
        "ul",
        { class: "tags", "aria-label": t("tags"), "data-testid": "tags" },
        a.tags.map((tag) =>
          h(
            "li",
            { class: "tag" },
            h("span", null, tag),
            h(
              "button",
              {
                type: "button",
                class: "icon",
                "aria-label": t("removeTag", { tag }),
                onclick: () => this.setTags(s, (tags) => tags.filter((x) => x !== tag)).catch((e) => this.shell.fail(e)),
              },
              "×",
            ),
          ),
        ),
      ),
      h("input", {
        id: "tag-input",
        value: s.tagText,
        autocomplete: "off",
        "aria-describedby": "tag-hint tag-error",
        "aria-invalid": s.tagError ? "true" : "false",
        oninput: (e: Event) => {
          s.tagText = (e.target as HTMLInputElement).value;
          if (s.tagError) {
            s.tagError = null;
            const err = document.getElementById("tag-error");
            if (err) err.textContent = "";
          }
        },
        onkeydown: (e: KeyboardEvent) => {
          // Tab or Enter makes a tag; Tab on an empty field moves on as usual.
          if ((e.key === "Enter" || (e.key === "Tab" && !e.shiftKey)) && s.tagText.trim()) {
            e.preventDefault();
            this.addTag();
          }
        },
      }),
      h("p", { id: "tag-hint", class: "hint" }, t("tagsHint")),
      h("p", { id: "tag-error", class: "error", role: "alert" }, s.tagError ?? ""),
      h(
        "form",
        {
          class: "form",
          onsubmit: (e: Event) => {
            e.preventDefault();
            this.saveNotes(s).catch((err) => this.shell.fail(err));
          },
        },
        h("label", { for: "act-notes" }, t("activityNotes")),
        h("textarea", {
          id: "act-notes",
          rows: 3,
          value: s.notes ?? a.notes,
          "aria-describedby": "act-notes-count",
          oninput: (e: Event) => {
            const v = (e.target as HTMLTextAreaElement).value;
            s.notes = v;
            document.getElementById("act-notes-count")?.replaceWith(this.counter("act-notes-count", v));
          },
        }),
        this.counter("act-notes-count", s.notes ?? a.notes),
        h("div", { class: "actions" }, h("button", { type: "submit" }, t("saveNotes"))),
      ),
    );
  }

  private summaryCard() {
    const s = this.s!;
    const a = s.activity;
    if (!a) return null;
    const sum = a.summary;
    const lv = Object.entries(this.shell.task(a.task_id)?.skill_levels ?? {});
    const levels = lv.length ? lv.map(([k, v]) => `${k} ≥ ${fmtNumber(v)}`).join(", ") : null;
    const attrs = (sum.attributes ?? {}) as Record<string, unknown>;
    const obj = (v: unknown) => (v && typeof v === "object" && !Array.isArray(v) ? (v as Record<string, unknown>) : null);
    const survey = obj(attrs.survey) ?? obj(attrs.pre_chat) ?? obj(attrs.prechat);
    const portal = obj(attrs.portal);
    const visitor = obj(attrs.visitor);
    const known = new Set(["survey", "pre_chat", "prechat", "portal", "visitor"]);
    const other = Object.fromEntries(Object.entries(attrs).filter(([k]) => !known.has(k)));
    const list = (v: unknown) => (Array.isArray(v) ? v : []);
    const text = (v: unknown): string =>
      v === null || v === undefined ? "—" : typeof v === "object" ? (Array.isArray(v) ? v.map(text).join(", ") : Object.entries(v as object).map(([k, x]) => `${k}: ${text(x)}`).join("; ")) : String(v);
    const pairs = (o: Record<string, unknown>) =>
      Object.keys(o).length ? h("dl", { class: "facts" }, Object.entries(o).map(([k, v]) => [h("dt", null, k), h("dd", null, text(v))])) : h("p", { class: "empty" }, t("nothingHere"));
    const item = (v: unknown) => {
      const o = obj(v);
      if (!o) return h("li", null, text(v));
      const label = String(o.title ?? o.url ?? o.phrase ?? o.query ?? text(o));
      return h("li", null, label, o.at ? h("small", null, ` ${fmtDateTime(String(o.at))}`) : null);
    };
    const group = (label: Key, v: unknown) => [h("h4", null, t(label)), list(v).length ? h("ul", { class: "plain" }, list(v).map(item)) : h("p", { class: "empty" }, t("nothingHere"))];
    const tabs: [string, Key, () => unknown][] = [];
    if (survey) tabs.push(["survey", "preChat", () => pairs(survey)]);
    if (portal)
      tabs.push([
        "portal",
        "portal",
        () => [group("pagesVisited", portal.pages_visited ?? portal.pages), group("phrasesSearched", portal.searches ?? portal.phrases_searched), group("articlesViewed", portal.articles_viewed ?? portal.articles)],
      ]);
    if (visitor) tabs.push(["visitor", "visitor", () => pairs(visitor)]);
    if (Object.keys(other).length) tabs.push(["additional", "additional", () => pairs(other)]);
    const current = tabs.find((x) => x[0] === s.summaryTab) ?? tabs[0];
    const pick = (k: string) => {
      s.summaryTab = k;
      this.render();
      document.getElementById(`sum-tab-${k}`)?.focus();
    };
    return h(
      "section",
      { class: "card", "aria-labelledby": "sum-h", "data-testid": "summary" },
      h("h3", { id: "sum-h" }, t("summary")),
      tabs.length
        ? [
            h(
              "div",
              { role: "tablist", class: "tabs", "aria-label": t("summary") },
              tabs.map(([k, label], i) =>
                h(
                  "button",
                  {
                    type: "button",
                    role: "tab",
                    id: `sum-tab-${k}`,
                    "aria-selected": String(current?.[0] === k),
                    "aria-controls": "sum-panel",
                    tabindex: current?.[0] === k ? 0 : -1,
                    onclick: () => pick(k),
                    onkeydown: (e: KeyboardEvent) => {
                      if (e.key === "ArrowRight") pick(tabs[(i + 1) % tabs.length]![0]);
                      if (e.key === "ArrowLeft") pick(tabs[(i + tabs.length - 1) % tabs.length]![0]);
                    },
                  },
                  t(label),
                ),
              ),
            ),
            h("div", { role: "tabpanel", id: "sum-panel", "aria-labelledby": `sum-tab-${current![0]}`, class: "panel", tabindex: 0 }, current![2]() as Node),
          ]
        : null,
      h("h4", null, t("conversationDetails")),
      h(
        "dl",
        { class: "facts", "data-testid": "conversation-details" },
        h("dt", null, t("channel")),
        h("dd", null, tCode("ch_", sum.channel)),
        h("dt", null, t("waitTime")),
        h("dd", null, fmtDuration(sum.wait_ms)),
        h("dt", null, t("skills")),
        h("dd", null, sum.skills.length ? sum.skills.join(", ") : t("none")),
        // The least levels come with the task (the activity's summary does not keep
        // them): shown while the task is in this agent's In Progress list.
        levels ? [h("dt", null, t("skillLevels")), h("dd", { "data-testid": "summary-skill-levels" }, levels)] : null,
        h("dt", null, t("queue")),
        h("dd", null, this.shell.queueName(sum.queue)),
        h("dt", null, t("startTime")),
        h("dd", null, fmtDateTime(sum.started_at)),
      ),
    );
  }

  /** The interaction shown is this agent's and still open: choosing a request links it there. */
  private movable(): boolean {
    const s = this.s;
    return !!s && s.own && !!s.activity && !s.activity.ended_at && !!s.view;
  }

  /** Links the interaction to `requestId` (absent: a new request), then shows the request it is on. */
  private async moveTo(requestId: string | undefined): Promise<void> {
    const s = this.s!;
    const { api } = this.shell;
    const { activity } = await api.moveActivity(s.activity!.activity_id, requestId);
    // The customer view again: a new request, or a closed one the move reopened.
    const view = await api.getCustomer(activity.customer_id!);
    if (this.s !== s) return;
    s.activity = activity;
    s.view = view;
    s.requestId = activity.request_id;
    s.title = s.description = null;
    await this.loadJourney(s);
    this.redraw(s);
  }

  private recentRequests() {
    const s = this.s!;
    if (!s.view) return null;
    const v = s.view;
    return h(
      "section",
      { class: "card", "aria-labelledby": "rr-h", "data-testid": "recent-requests" },
      h("div", { class: "row" }, h("h3", { id: "rr-h" }, t("recentRequests")), h("span", { class: "spacer" }), h(
        "button",
        {
          type: "button",
          onclick: () =>
            (this.movable()
              ? this.moveTo(undefined)
              : this.shell.api.createRequest(v.customer.customer_id).then(({ request }) => {
                  v.requests = [request, ...v.requests];
                  s.requestId = request.request_id;
                  s.title = s.description = null;
                  this.redraw(s);
                })
            ).then(() => this.s === s && document.getElementById("req-title")?.focus(), this.shell.fail),
        },
        t("newRequest"),
      )),
      v.requests.length === 0
        ? h("p", { class: "empty" }, t("noRequest"))
        : h(
            "ul",
            { class: "items" },
            v.requests.slice(0, 10).map((r) =>
              h(
                "li",
                { class: r.request_id === s.requestId ? "current" : "" },
                h("span", { class: "name" }, r.title || t("untitled")),
                h("small", null, ` ${tCode("rs_", r.state)} · ${fmtDateTime(r.created_at)}`),
                r.request_id === s.requestId
                  ? h("span", { class: "chip" }, t("current"))
                  : h(
                      "button",
                      {
                        type: "button",
                        "aria-label": `${t("workOnRequest")}: ${r.title || t("untitled")}`,
                        onclick: () => {
                          if (this.movable()) {
                            this.moveTo(r.request_id).catch(this.shell.fail);
                            return;
                          }
                          s.requestId = r.request_id;
                          s.title = s.description = null;
                          this.render();
                          // A timeline of the request shows the new one's events.
                          if (s.scope === "request") this.loadJourney(s).then(() => this.redraw(s), this.shell.fail);
                        },
                      },
                      t("workOnRequest"),
                    ),
              ),
            ),
          ),
    );
  }

  private timeline() {
    const s = this.s!;
    if (!s.view) return null;
    const v = s.view;
    const scopeId = "tl-scope";
    return h(
      "section",
      { class: "card", "aria-labelledby": "tl-h", "data-testid": "timeline" },
      h("h3", { id: "tl-h" }, t("timeline"), " · ", t("journey")),
      h("label", { for: scopeId }, t("linkedRecord")),
      h(
        "select",
        {
          id: scopeId,
          onchange: (e: Event) => {
            s.scope = (e.target as HTMLSelectElement).value as State["scope"];
            this.loadJourney(s).then(() => this.redraw(s), this.shell.fail);
          },
        },
        h("option", { value: "customer", selected: s.scope === "customer" }, `${t("customer")}: ${v.customer.name || "—"}`),
        s.requestId ? h("option", { value: "request", selected: s.scope === "request" }, `${t("request")}: ${this.request?.title || t("untitled")}`) : null,
      ),
      h(
        "form",
        {
          class: "form",
          onsubmit: (e: Event) => {
            e.preventDefault();
            const typed = s.note;
            const text = typed.trim();
            // A second submit while the first is answered would add the note twice.
            if (!text || s.adding || charCount(text) > MAX_TEXT) return;
            s.adding = true;
            this.shell.api
              .addNote(v.customer.customer_id, text, s.scope === "request" ? s.requestId : null)
              .then(async () => {
                if (s.note === typed) s.note = "";
                this.redraw(s);
                // Added: a timeline that fails to load now is said, not left unhandled.
                await this.loadJourney(s);
                this.redraw(s);
              })
              .catch(this.shell.fail)
              .finally(() => (s.adding = false));
          },
        },
        h("label", { for: "note" }, t("quickNote")),
        // No `maxlength`: browsers count it in UTF-16 units (an emoji is 2) and cut a
        // paste short in silence; the hub counts characters, and so does the counter.
        h("textarea", {
          id: "note",
          rows: 2,
          value: s.note,
          "aria-describedby": "note-count",
          oninput: (e: Event) => {
            const v = (e.target as HTMLTextAreaElement).value;
            s.note = v;
            document.getElementById("note-count")?.replaceWith(this.counter("note-count", v));
          },
        }),
        this.counter("note-count", s.note),
        h("button", { type: "submit" }, t("addNote")),
      ),
      s.journey.length === 0
        ? h("p", { class: "empty" }, t("journeyEmpty"))
        : h(
            "ol",
            { class: "timeline", "data-testid": "journey" },
            [...s.journey].reverse().map((ev) =>
              h(
                "li",
                { class: `j-${ev.kind}` },
                h("time", { datetime: ev.at }, fmtDateTime(ev.at)),
                " ",
                h("strong", null, tCode("j_", ev.kind)),
                " ",
                h("small", null, t("by", { who: ev.by.id })),
                ev.text ? h("p", null, ev.text) : null,
              ),
            ),
          ),
    );
  }
}
