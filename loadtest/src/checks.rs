//! The invariants that need every agent's view at once: a task's offers follow one
//! another (never two agents at once), a task is assigned once, and every created task
//! is accounted for at the end.

use crate::agent::{AgentOutcome, End, OfferRec};
use crate::report::Accounting;
use std::collections::HashMap;

/// What the hub said of one task at the end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Its state (`queued`, `offered`, `assigned`, `completed`, `cancelled`) and agent.
    Found {
        /// The state.
        state: String,
        /// The agent, for offered, assigned and completed tasks.
        agent_id: Option<String>,
    },
    /// 404.
    Missing,
    /// The lookup failed.
    Unreadable(String),
}

/// Breaches of the offer rules, across agents.
#[derive(Debug, Default)]
pub struct OfferFindings {
    /// Tasks with at least one offer.
    pub tasks: usize,
    /// Offers looked at.
    pub offers: usize,
    /// A task offered while another agent's offer of it was still live.
    pub concurrent: Vec<String>,
    /// A task assigned (accept answered with it) more than once.
    pub double_assigned: Vec<String>,
    /// Offers of tasks the run did not create (no key of this run).
    pub foreign: usize,
}

/// Checks every task's offers, in the order the hub numbered them (the task's `offers`
/// count): each offer but the last must have ended, not by an accept, before the next
/// was made. "Before" is checked where the harness can know it exactly:
/// - after a decline, the next offer arrived after the decline was sent;
/// - after an expiry, the next offer was made (hub clock, ms) no earlier than the
///   previous offer's deadline.
pub fn offer_findings(outcomes: &[AgentOutcome]) -> OfferFindings {
    let mut f = OfferFindings::default();
    let names: HashMap<u32, &str> = outcomes.iter().map(|o| (o.idx, o.id.as_str())).collect();
    let name = |i: u32| names.get(&i).copied().unwrap_or("?");
    let mut by_task: HashMap<&str, Vec<&OfferRec>> = HashMap::new();
    for o in outcomes {
        for r in &o.offers {
            f.offers += 1;
            if r.seq.is_none() {
                f.foreign += 1;
            }
            by_task.entry(r.task_id.as_str()).or_default().push(r);
        }
    }
    f.tasks = by_task.len();
    let mut accepted: HashMap<&str, Vec<u32>> = HashMap::new();
    for o in outcomes {
        for t in &o.accepted {
            accepted.entry(t.as_str()).or_default().push(o.idx);
        }
    }
    for (task, agents) in &accepted {
        if agents.len() > 1 {
            let who: Vec<&str> = agents.iter().map(|a| name(*a)).collect();
            f.double_assigned.push(format!(
                "task {task} assigned {} times: {}",
                agents.len(),
                who.join(", ")
            ));
        }
    }
    for (task, offers) in by_task.iter_mut() {
        offers.sort_by_key(|r| (r.n, r.recv_ns));
        for w in offers.windows(2) {
            let (a, b) = (w[0], w[1]);
            let (an, bn) = (name(a.agent), name(b.agent));
            if a.n == b.n {
                f.concurrent.push(format!(
                    "task {task}: two offers numbered {} ({} to {an}, {} to {bn})",
                    a.n, a.offer_id, b.offer_id
                ));
                continue;
            }
            match &a.end {
                None => f.concurrent.push(format!(
                    "task {task}: offer #{} to {bn} while offer #{} to {an} had not ended",
                    b.n, a.n
                )),
                Some(End::Accepted) => f.concurrent.push(format!(
                    "task {task}: offer #{} to {bn} after {an} accepted offer #{}",
                    b.n, a.n
                )),
                Some(End::Declined) => {
                    if let Some(sent) = a.decline_sent_ns {
                        if b.recv_ns < sent {
                            f.concurrent.push(format!(
                                "task {task}: offer #{} reached {bn} {} µs before {an} declined offer #{}",
                                b.n,
                                (sent - b.recv_ns) / 1000,
                                a.n
                            ));
                        }
                    }
                }
                Some(e) if e.by_deadline() => {
                    if let (Some(made), Some(deadline)) = (b.made_ms, a.deadline_ms) {
                        if made < deadline {
                            f.concurrent.push(format!(
                                "task {task}: offer #{} to {bn} made {} ms before offer #{} to {an} expired",
                                b.n,
                                deadline - made,
                                a.n
                            ));
                        }
                    }
                }
                Some(_) => {}
            }
        }
    }
    f.concurrent.sort();
    f.double_assigned.sort();
    f
}

/// Compares where the hub says each created task is with what the agents saw.
/// `settled` says every agent ended Not Ready with nothing pending, so no task may
/// still be offered or assigned.
pub fn account(
    created: &[(u64, String)],
    lookups: &HashMap<String, Lookup>,
    outcomes: &[AgentOutcome],
    settled: bool,
) -> (Accounting, Vec<String>) {
    let mut a = Accounting::default();
    let mut breaches = Vec::new();
    let mut completed_by: HashMap<&str, &str> = HashMap::new();
    for o in outcomes {
        for c in &o.completed {
            completed_by.insert(c.task_id.as_str(), o.id.as_str());
        }
    }
    for (seq, task) in created {
        a.looked_up += 1;
        let seen = completed_by.get(task.as_str()).copied();
        match lookups.get(task) {
            None => {
                a.unreadable += 1;
                breaches.push(format!("task {task} (#{seq}) was not looked up"));
            }
            Some(Lookup::Missing) => {
                a.missing += 1;
                breaches.push(format!("task {task} (#{seq}) is unknown to the hub"));
            }
            Some(Lookup::Unreadable(e)) => {
                a.unreadable += 1;
                breaches.push(format!("task {task} (#{seq}): lookup failed: {e}"));
            }
            Some(Lookup::Found { state, agent_id }) => {
                let mut mismatch =
                    |why: String| breaches.push(format!("task {task} (#{seq}): {why}"));
                match state.as_str() {
                    "completed" => {
                        a.completed += 1;
                        match seen {
                            Some(who) if agent_id.as_deref() == Some(who) => {}
                            Some(who) => mismatch(format!(
                                "{who} completed it but the hub says {agent_id:?} did"
                            )),
                            None => mismatch(format!(
                                "the hub says {agent_id:?} completed it but no agent saw its complete answered"
                            )),
                        }
                    }
                    other => {
                        match other {
                            "cancelled" => a.cancelled += 1,
                            "queued" => a.queued += 1,
                            "offered" => a.offered += 1,
                            "assigned" => a.assigned += 1,
                            _ => {}
                        }
                        if let Some(who) = seen {
                            mismatch(format!("{who} completed it but the hub says {other}"));
                        } else if settled && matches!(other, "offered" | "assigned") {
                            mismatch(format!(
                                "still {other} to {agent_id:?} after every agent went Not Ready with nothing pending"
                            ));
                        } else if !matches!(other, "cancelled" | "queued" | "offered" | "assigned")
                        {
                            mismatch(format!("unknown state {other:?}"));
                        }
                    }
                }
            }
        }
    }
    a.mismatched = breaches
        .len()
        .saturating_sub((a.missing + a.unreadable) as usize) as u64;
    (a, breaches)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Channel;

    fn rec(task: &str, agent: u32, n: u32, end: Option<End>) -> OfferRec {
        OfferRec {
            task_id: task.into(),
            seq: Some(1),
            offer_id: format!("{task}-{n}"),
            agent,
            n,
            channel: Channel::Chat,
            recv_ns: u64::from(n) * 1000,
            made_ms: Some(i64::from(n) * 100),
            deadline_ms: Some(i64::from(n) * 100 + 50),
            end,
            decline_sent_ns: None,
        }
    }

    fn agent(idx: u32, offers: Vec<OfferRec>, accepted: &[&str]) -> AgentOutcome {
        AgentOutcome {
            idx,
            id: format!("a{idx}"),
            offers,
            accepted: accepted.iter().map(|s| s.to_string()).collect(),
            ..AgentOutcome::default()
        }
    }

    #[test]
    fn sequential_offers_pass() {
        let out = vec![
            agent(0, vec![rec("t", 0, 1, Some(End::Expired))], &[]),
            agent(1, vec![rec("t", 1, 2, Some(End::Accepted))], &["t"]),
        ];
        let f = offer_findings(&out);
        assert!(f.concurrent.is_empty(), "{:?}", f.concurrent);
        assert!(f.double_assigned.is_empty());
        assert_eq!((f.tasks, f.offers), (1, 2));
    }

    #[test]
    fn overlapping_and_double_assignments_are_caught() {
        let mut early = rec("u", 1, 2, Some(End::Accepted));
        early.made_ms = Some(120); // before the first offer's deadline of 150
        let out = vec![
            agent(
                0,
                vec![
                    rec("t", 0, 1, None),
                    rec("u", 0, 1, Some(End::Expired)),
                    rec("v", 0, 1, Some(End::Accepted)),
                ],
                &["v"],
            ),
            agent(
                1,
                vec![
                    rec("t", 1, 2, Some(End::Accepted)),
                    early,
                    rec("v", 1, 2, Some(End::Accepted)),
                ],
                &["t", "u", "v"],
            ),
        ];
        let f = offer_findings(&out);
        assert_eq!(f.concurrent.len(), 3, "{:?}", f.concurrent);
        assert_eq!(f.double_assigned.len(), 1, "{:?}", f.double_assigned);
    }

    #[test]
    fn accounting_agrees_with_the_agents() {
        let mut a0 = agent(0, vec![], &["t1"]);
        a0.completed.push(crate::agent::CompleteRec {
            task_id: "t1".into(),
            agent: 0,
        });
        let created = vec![
            (0, "t1".to_owned()),
            (1, "t2".to_owned()),
            (2, "t3".to_owned()),
        ];
        let mut l = HashMap::new();
        l.insert(
            "t1".to_owned(),
            Lookup::Found {
                state: "completed".into(),
                agent_id: Some("a0".into()),
            },
        );
        l.insert(
            "t2".to_owned(),
            Lookup::Found {
                state: "queued".into(),
                agent_id: None,
            },
        );
        l.insert("t3".to_owned(), Lookup::Missing);
        let (acc, breaches) = account(&created, &l, &[a0], true);
        assert_eq!((acc.completed, acc.queued, acc.missing), (1, 1, 1));
        assert_eq!(breaches.len(), 1, "{breaches:?}");
        assert_eq!(acc.mismatched, 0);
    }
}
