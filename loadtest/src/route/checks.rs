//! The invariant checks of a `route` run, in the report's order, with the notes and
//! figures that come with them.

use super::Run;
use super::load::{Creates, Drain};
use super::summary::{Measures, Seen};
use crate::agent::{AgentOutcome, Kind};
use crate::checks::OfferFindings;
use crate::cluster::Target;
use crate::events::StreamOutcome;
use crate::report::{Accounting, Check, Counts, Figure};
use crate::stats::HistSet;
use crate::supervisor::SupOutcome;
use crate::webhook::HookOutcome;
use std::sync::atomic::Ordering;

/// What the checks found: the checks in order, the notes they give, the webhook's
/// figures, and where every created task was at the end.
pub(super) struct Verdict {
    /// The checks, in the report's order.
    pub(super) checks: Vec<Check>,
    /// The notes, in the report's order (before the load's cost).
    pub(super) notes: Vec<String>,
    /// The webhook endpoint's figures.
    pub(super) figures: Vec<Figure>,
    /// Where every created task was at the end.
    pub(super) accounting: Accounting,
}

/// Every check of a finished run, in the report's order.
pub(super) fn verdict(run: &Run<'_>, seen: &Seen, m: &mut Measures) -> Verdict {
    let (opts, total, n) = (run.opts, run.total, run.opts.agents);
    let Seen {
        login,
        creates,
        drain,
        sup_outs,
        quiesced,
        lookups,
        outcomes,
        lost,
        stream,
        hook,
        ..
    } = seen;
    let (counts, created, linked) = (&m.counts, m.created, m.linked);
    let mut checks = Vec::new();
    checks.push(connection_check(outcomes, lost, n, login.secs));
    if let Some(s) = stream {
        checks.push(stream_check(s, &mut m.hists, counts));
    }
    let mut figures = Vec::new();
    if let Some(h) = hook {
        let seen = m.hists.get(crate::webhook::H_CREATE_TO_HOOK_OFFER).count();
        let offered = stream
            .as_ref()
            .filter(|s| s.matching.is_some())
            .map(|s| &s.offered);
        checks.extend(h.checks(seen, counts.first_offers, counts.completed, offered));
        figures.extend(hook_figures(h));
    }
    let hook_notes = hook.as_ref().map(|h| h.notes()).unwrap_or_default();
    checks.push(create_check(creates, counts, created, total));
    let findings = crate::checks::offer_findings(outcomes);
    checks.extend(agent_checks(run, outcomes, &findings, counts));
    let mut trace_breaches = trace_breaches(linked, counts, &findings);
    if opts.supervisors > 0 {
        checks.push(supervisor_check(run, sup_outs));
    }
    let mut notes = hook_notes;
    if matches!(opts.target, Target::External { .. }) {
        // Another client's tasks may share the queues: not a breach there.
        notes.append(&mut trace_breaches);
    }
    checks.push(Check::from_breaches(
        "every first offer traced to its create",
        format!("{linked} first offers timed from their create"),
        &trace_breaches,
    ));
    let mut settle_breaches = Vec::new();
    if !quiesced.settled {
        settle_breaches.push(format!(
            "only {} of {n} agents went Not Ready with nothing pending within {} s",
            run.shared.counters.quiesced_agents.load(Ordering::Relaxed),
            quiesced.limit.as_secs()
        ));
    }
    checks.push(Check::from_breaches(
        "every agent finished its work and went Not Ready at the end",
        format!("{n} agents"),
        &settle_breaches,
    ));
    let (drain_check, drain_note) = drain_verdict(run, drain, created);
    checks.extend(drain_check);
    notes.extend(drain_note);
    let (accounting, acc_breaches) =
        crate::checks::account(&creates.out.created, lookups, outcomes, quiesced.settled);
    checks.push(Check::from_breaches(
        "every created task accounted for (completed, cancelled, or still queued/offered)",
        format!(
            "GET /v1/tasks/{{id}} for {} tasks, compared with what the agents saw",
            accounting.looked_up
        ),
        &acc_breaches,
    ));
    Verdict {
        checks,
        notes,
        figures,
        accounting,
    }
}

/// Every agent connected, went Ready and stayed connected.
fn connection_check(
    outcomes: &[AgentOutcome],
    lost: &[String],
    n: usize,
    login_secs: f64,
) -> Check {
    let mut conn_breaches: Vec<String> = outcomes.iter().flat_map(|o| o.errors.clone()).collect();
    conn_breaches.extend(lost.iter().cloned());
    conn_breaches.extend(
        outcomes
            .iter()
            .filter(|o| !o.was_ready)
            .map(|o| format!("{} never went Ready", o.id)),
    );
    Check::from_breaches(
        "every agent connected, went Ready and stayed connected",
        format!("{n} agents, Ready in {login_secs:.2} s"),
        &conn_breaches,
    )
}

/// The event stream read every event, in order, and saw every first offer.
fn stream_check(s: &StreamOutcome, hists: &mut HistSet, counts: &Counts) -> Check {
    let mut breaches = s.errors.clone();
    let seen = hists.get(crate::events::H_CREATE_TO_STREAM_OFFER).count();
    if seen < counts.first_offers {
        breaches.push(format!(
            "{} first offers, {seen} seen on the stream",
            counts.first_offers
        ));
    }
    Check::from_breaches(
        "the event stream read every event, in order, and every first offer",
        format!("{} events, {seen} first offers", s.events),
        &breaches,
    )
}

/// The webhook endpoint's figures.
fn hook_figures(h: &HookOutcome) -> [Figure; 8] {
    [
        Figure::new("webhook deliveries", h.deliveries as f64, ""),
        Figure::new("webhook events (distinct)", h.distinct as f64, ""),
        Figure::new("webhook repeats", h.duplicates as f64, ""),
        Figure::new("webhook connections opened", h.connections as f64, ""),
        Figure::new("webhook events missing", h.missing.0 as f64, ""),
        Figure::new(
            "webhook offers expired before sending",
            h.offers_expired() as f64,
            "",
        ),
        Figure::new("webhook order breaks", h.order.0 as f64, ""),
        Figure::new(
            "webhook catch-up after the run",
            h.catch_up.as_secs_f64() * 1e3,
            "ms",
        ),
    ]
}

/// Every create answered 201 with a task, and every one was sent.
fn create_check(creates: &Creates, counts: &Counts, created: u64, total: u64) -> Check {
    let mut create_breaches = creates.out.errors.clone();
    create_breaches.extend(creates.failures.iter().cloned());
    if counts.create_errors as usize > create_breaches.len() {
        create_breaches.push(format!("{} create errors in all", counts.create_errors));
    }
    if created + counts.create_errors < total {
        create_breaches.push(format!(
            "only {} of {total} creates were sent",
            created + counts.create_errors
        ));
    }
    Check::from_breaches(
        "every create answered 201 with a task",
        format!("{created} of {total} created"),
        &create_breaches,
    )
}

/// The routing invariants on what the agents saw: offers, assignments, calls,
/// capacity, state versions, Not Ready, completes and unexpected frames.
fn agent_checks(
    run: &Run<'_>,
    outcomes: &[AgentOutcome],
    findings: &OfferFindings,
    counts: &Counts,
) -> Vec<Check> {
    let (opts, n) = (run.opts, run.opts.agents);
    let mut checks = Vec::new();
    let kind = |k: Kind| -> Vec<String> {
        outcomes
            .iter()
            .flat_map(|o| {
                o.violations
                    .iter()
                    .filter(|(vk, _)| *vk == k)
                    .map(|(_, m)| m.clone())
            })
            .collect()
    };
    checks.push(Check::from_breaches(
        "no agent held two offers at once",
        format!("{} offers on {n} sockets", findings.offers),
        &kind(Kind::TwoOffers),
    ));
    checks.push(Check::from_breaches(
        "no task offered to two agents at once",
        format!(
            "{} tasks' {} offers in the hub's order: each ended unaccepted before the next (declines by send time, expiries by hub deadline)",
            findings.tasks, findings.offers
        ),
        &findings.concurrent,
    ));
    let mut assigned_breaches = findings.double_assigned.clone();
    assigned_breaches.extend(kind(Kind::AcceptAfterEnd));
    assigned_breaches.extend(kind(Kind::EndAfterAccept));
    checks.push(Check::from_breaches(
        "no task assigned twice",
        format!("{} accepts answered with the task", counts.accepted),
        &assigned_breaches,
    ));
    checks.push(Check::from_breaches(
        "no agent with two calls at once, nor offered work during a call",
        "every offer, accept and state frame".into(),
        &kind(Kind::Voice),
    ));
    checks.push(Check::from_breaches(
        "per-channel capacity respected",
        format!(
            "chat {}, email {}, on every offer and state frame",
            opts.capacity.chat, opts.capacity.email
        ),
        &kind(Kind::Capacity),
    ));
    checks.push(Check::from_breaches(
        "agent state versions only increase",
        "every state frame".into(),
        &kind(Kind::StateVersion),
    ));
    checks.push(Check::from_breaches(
        "no offer to an agent after it went Not Ready",
        "from each agent's not_ready reply to its close".into(),
        &kind(Kind::OfferWhileNotReady),
    ));
    checks.push(Check::from_breaches(
        "every complete of an accepted task answered",
        format!("{} completes", counts.completed),
        &kind(Kind::CompleteRefused),
    ));
    let unexpected: Vec<String> = outcomes.iter().flat_map(|o| o.unexpected.clone()).collect();
    let mut unexpected_breaches = unexpected;
    if counts.unexpected as usize > unexpected_breaches.len() {
        unexpected_breaches.push(format!("{} in all", counts.unexpected));
    }
    checks.push(Check::from_breaches(
        "no unexpected frames or errors",
        format!("{} frames", counts.frames_in),
        &unexpected_breaches,
    ));
    checks
}

/// First offers that could not be traced to a create of this run, and offers of tasks
/// it did not create.
fn trace_breaches(linked: u64, counts: &Counts, findings: &OfferFindings) -> Vec<String> {
    let mut trace_breaches = Vec::new();
    if linked < counts.first_offers {
        trace_breaches.push(format!(
            "{} first offers could not be traced to a create of this run",
            counts.first_offers - linked
        ));
    }
    if findings.foreign > 0 {
        trace_breaches.push(format!(
            "{} offers of tasks this run did not create",
            findings.foreign
        ));
    }
    trace_breaches
}

/// Every supervisor console stayed connected and got stats.
fn supervisor_check(run: &Run<'_>, sup_outs: &[SupOutcome]) -> Check {
    let opts = run.opts;
    let breaches: Vec<String> = sup_outs
        .iter()
        .enumerate()
        .flat_map(|(i, o)| {
            let mut b = Vec::new();
            if let Some(e) = &o.error {
                b.push(format!("supervisor {i}: {e}"));
            }
            if !o.snapshot_had_stats {
                b.push(format!("supervisor {i}: its snapshot had no stats"));
            }
            if o.stats_msgs == 0 {
                b.push(format!("supervisor {i}: no stats message"));
            }
            b
        })
        .collect();
    let frames: u64 = sup_outs.iter().map(|o| o.frames).sum();
    let stats_msgs: u64 = sup_outs.iter().map(|o| o.stats_msgs).sum();
    let catch_ups: u64 = sup_outs.iter().map(|o| o.catch_ups).sum();
    Check::from_breaches(
        "every supervisor stayed connected and got stats",
        format!(
            "{} supervisors: {frames} frames, {stats_msgs} stats messages, {catch_ups} catch-up snapshots",
            opts.supervisors
        ),
        &breaches,
    )
}

/// How the drain ended: the check that no task was left waiting while the agents were
/// idle (only without misses and declines, which may leave a task queued), and a note
/// when not every task completed.
fn drain_verdict(run: &Run<'_>, drain: &Drain, created: u64) -> (Option<Check>, Option<String>) {
    let opts = run.opts;
    let Drain {
        stall,
        last_change,
        drained,
        secs: drain_secs,
        held: held_at_drain,
        offered: offered_at_drain,
        completed: completed_at_drain,
    } = *drain;
    let mut check = None;
    let mut note = None;
    // Tasks neither completed nor in an agent's hands when the drain ended: waiting in
    // a queue although the agents had stopped completing anything.
    let waiting = created.saturating_sub(completed_at_drain + held_at_drain + offered_at_drain);
    let drain_note = format!(
        "drain: {completed_at_drain} of {created} completed {drain_secs:.1} s after the last create ({held_at_drain} held, {offered_at_drain} offered, {waiting} waiting)"
    );
    if opts.miss_share == 0.0 && opts.decline_share == 0.0 {
        let b = if drained || waiting == 0 {
            Vec::new()
        } else if last_change.elapsed() >= stall {
            vec![format!(
                "{waiting} tasks still waiting after no task completed for {:.1} s; {drain_note}",
                stall.as_secs_f64()
            )]
        } else {
            vec![format!(
                "the drain hit its cap of {:.0} s while tasks still completed; {drain_note}",
                opts.drain_cap().as_secs_f64()
            )]
        };
        check = Some(Check::from_breaches(
            "no task left waiting while agents were idle (no misses or declines in this run)",
            if drained {
                format!("all {created} completed {drain_secs:.1} s after the last create")
            } else {
                drain_note.clone()
            },
            &b,
        ));
    }
    if !drained {
        note = Some(format!(
            "{drain_note}; the agents completed what they held when the run ended{}",
            if opts.miss_share + opts.decline_share > 0.0 {
                "; with misses and declines, a task refused by every agent of its queue stays queued"
            } else {
                ""
            }
        ));
    }
    (check, note)
}
