//! The agent state machine: every change of an agent's state happens in [`apply`].
//!
//! `apply` is a pure function of `(state, event, now)`: it does no IO, reads no clock
//! and knows nothing of queues. It returns the new state and the [`Effect`]s that the
//! caller (the routing book) carries out: put a task back in its queue, arm a timer,
//! close a session. A transition that is not allowed is a [`TransitionError`] and leaves
//! the state as it was.
//!
//! What an agent *shows* ([`Status`]) is derived, never stored: an agent chooses its
//! presence (Ready, Not Ready with a reason); the hub lays its work over it. A pending
//! offer shows as Reserved, a task in progress as Busy, a finished task as Wrap-up.

use crate::clock::Ts;
use crate::ids::{Channel, ConnId, OfferId, TaskId};
use serde::{Deserialize, Serialize};

/// The reason code the hub sets when an agent lets an offer expire.
pub const REASON_MISSED_OFFER: &str = "missed_offer";
/// The reason code an agent has right after logging in.
pub const REASON_LOGIN: &str = "login";
/// The reason code a supervisor's forced change carries when the supervisor gives none.
pub const REASON_SUPERVISOR: &str = "supervisor";

/// What the agent chose (or the hub chose for it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "presence", rename_all = "snake_case")]
pub enum Presence {
    /// Logged out, or gone past the reconnect grace period.
    Offline,
    /// Logged in but taking no new work.
    NotReady {
        /// A configured reason code.
        reason: String,
    },
    /// Taking new work.
    Ready,
}

/// What an agent shows to itself and to supervisors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Not logged in.
    Offline,
    /// Logged in, taking no work; see the reason.
    NotReady,
    /// Waiting for work.
    Ready,
    /// An offer is pending.
    Reserved,
    /// At least one task in progress.
    Busy,
    /// After a task, before taking new work.
    WrapUp,
}

/// An offer pending on the agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingOffer {
    /// The offer's id.
    pub offer_id: OfferId,
    /// The task offered.
    pub task_id: TaskId,
    /// The task's channel.
    pub channel: Channel,
    /// When the offer expires unless accepted.
    pub deadline: Ts,
}

/// A task the agent has accepted and not yet completed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Work {
    /// The task.
    pub task_id: TaskId,
    /// The task's channel.
    pub channel: Channel,
    /// When the agent accepted it.
    pub since: Ts,
}

/// The wrap-up period after a task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrapUp {
    /// The task just finished.
    pub task_id: TaskId,
    /// When wrap-up ends by itself.
    pub until: Ts,
}

/// The agent's link to its desktop.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Link {
    /// No session, and none expected.
    None,
    /// A desktop is connected on this connection.
    Connected(ConnId),
    /// The connection dropped; the agent's work is kept until `grace_until`.
    Away {
        /// The connection that dropped.
        conn: ConnId,
        /// When the agent goes Offline unless it reconnects.
        grace_until: Ts,
    },
}

/// Everything the hub knows of one agent's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentState {
    /// What the agent chose.
    pub presence: Presence,
    /// Its desktop connection.
    pub link: Link,
    /// The offer pending, if any. An agent has at most one at a time.
    pub offer: Option<PendingOffer>,
    /// Its In Progress list.
    pub work: Vec<Work>,
    /// Its wrap-up period, if in one.
    pub wrap_up: Option<WrapUp>,
    /// A Not Ready the agent asked for while it had work (in progress or in wrap-up):
    /// the reason code it takes when the work ends. No new offers meanwhile; a `ready`
    /// cancels it.
    #[serde(default)]
    pub pending_not_ready: Option<String>,
    /// When [`AgentState::status`] last changed.
    pub since: Ts,
    /// When the agent last became free for work: the longest-idle rule orders by this.
    pub idle_since: Ts,
    /// Counts every change, so that a reader can drop a view older than one it has
    /// (views of one agent may be delivered out of order by concurrent commands).
    pub version: u64,
}

/// Something that happens to an agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A desktop connected (a login, a reconnect, or a takeover).
    Connect {
        /// The new connection.
        conn: ConnId,
    },
    /// A desktop's connection dropped.
    Disconnect {
        /// The connection that dropped.
        conn: ConnId,
        /// When the agent goes Offline unless it reconnects.
        grace_until: Ts,
        /// When a pending offer is withdrawn unless the desktop is back (an offer
        /// must not ring on a desktop that is gone while a caller waits).
        offer_until: Ts,
    },
    /// The time a pending offer may wait for a dropped desktop ran out.
    AwayOfferWithdrawn {
        /// The connection that dropped.
        conn: ConnId,
        /// The offer.
        offer_id: OfferId,
    },
    /// The grace period of a dropped connection ran out.
    GraceExpired {
        /// The connection that dropped.
        conn: ConnId,
    },
    /// The agent (or a supervisor) logs it out.
    Logout,
    /// The agent asks to be Ready; this also ends a wrap-up.
    SetReady,
    /// The agent asks to be Not Ready: a pending offer is declined, and with work in
    /// progress or in wrap-up the Not Ready waits for the work to end.
    SetNotReady {
        /// A configured reason code.
        reason: String,
    },
    /// A supervisor sets the agent Not Ready; a pending offer goes back to its queue.
    ForceNotReady {
        /// A configured reason code.
        reason: String,
    },
    /// The router offers a task.
    Offer(PendingOffer),
    /// The agent accepts its pending offer.
    Accept {
        /// The offer accepted.
        offer_id: OfferId,
    },
    /// The agent declines its pending offer.
    Decline {
        /// The offer declined.
        offer_id: OfferId,
    },
    /// The offer's deadline passed.
    OfferExpired {
        /// The offer.
        offer_id: OfferId,
    },
    /// The offered task was cancelled.
    OfferRevoked {
        /// The offer.
        offer_id: OfferId,
    },
    /// The agent completes a task in progress.
    Complete {
        /// The task.
        task_id: TaskId,
        /// When wrap-up ends; `None` for no wrap-up.
        wrap_up_until: Option<Ts>,
    },
    /// A task in progress was cancelled from outside (the caller hung up).
    TaskCancelled {
        /// The task.
        task_id: TaskId,
        /// When wrap-up ends; `None` for no wrap-up.
        wrap_up_until: Option<Ts>,
    },
    /// A task in progress was transferred away (to a queue or another agent).
    TaskTransferred {
        /// The task.
        task_id: TaskId,
        /// When wrap-up ends; `None` for no wrap-up.
        wrap_up_until: Option<Ts>,
    },
    /// The wrap-up timer ran out.
    WrapUpEnded {
        /// The task whose wrap-up it was.
        task_id: TaskId,
    },
}

/// Why a task leaves an agent and goes back to its queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReleaseReason {
    /// The agent declined the offer.
    Declined,
    /// The offer expired.
    Expired,
    /// The agent went Offline (grace ran out, or it was logged out).
    AgentOffline,
    /// A supervisor set the agent Not Ready while the offer was pending.
    Supervisor,
    /// The agent asked to be Not Ready while the offer was pending: a decline.
    NotReady,
    /// The agent's desktop was gone for longer than an offer may wait for it.
    DesktopGone,
}

/// What the caller must do after a transition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Put the task back in its queue, in the place it had. With `exclude`, it is not
    /// offered to this agent again before the queue's re-offer time (the routing book's
    /// rule).
    Release {
        /// The task.
        task_id: TaskId,
        /// The offer it was under, if it was only offered.
        offer_id: Option<OfferId>,
        /// Why.
        reason: ReleaseReason,
        /// Keep the task away from this agent from now on.
        exclude: bool,
    },
    /// The task is now the agent's: mark it assigned.
    Assigned {
        /// The task.
        task_id: TaskId,
        /// The offer accepted.
        offer_id: OfferId,
    },
    /// Arm the wrap-up timer.
    ArmWrapUp {
        /// The task.
        task_id: TaskId,
        /// When.
        until: Ts,
    },
    /// Arm the timer that withdraws a pending offer from a dropped desktop.
    ArmAwayOffer {
        /// The connection that dropped.
        conn: ConnId,
        /// The offer.
        offer_id: OfferId,
        /// When.
        until: Ts,
    },
    /// Arm the reconnect grace timer.
    ArmGrace {
        /// The connection that dropped.
        conn: ConnId,
        /// When.
        until: Ts,
    },
    /// The desktop's session, if any, must be closed.
    CloseSession,
}

/// A transition that is not allowed. The state is unchanged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    /// The agent is Offline.
    #[error("the agent is offline")]
    Offline,
    /// The request names an offer that is not the agent's pending one.
    #[error("no such offer pending on this agent")]
    NoSuchOffer,
    /// The offer's deadline has passed.
    #[error("the offer has expired")]
    OfferExpired,
    /// The request names a task not in the agent's In Progress list.
    #[error("no such task in progress on this agent")]
    NoSuchTask,
    /// The agent must accept or decline its pending offer first.
    #[error("an offer is pending: accept or decline it first")]
    OfferPending,
    /// The agent cannot take this offer (not Ready, not connected, or busy).
    #[error("the agent cannot take an offer now")]
    NotAvailable,
}

impl AgentState {
    /// A new agent, Offline.
    pub fn new(now: Ts) -> AgentState {
        AgentState {
            presence: Presence::Offline,
            link: Link::None,
            offer: None,
            work: Vec::new(),
            wrap_up: None,
            pending_not_ready: None,
            since: now,
            idle_since: now,
            version: 0,
        }
    }

    /// What the agent shows.
    pub fn status(&self) -> Status {
        if self.presence == Presence::Offline {
            Status::Offline
        } else if self.offer.is_some() {
            Status::Reserved
        } else if !self.work.is_empty() {
            Status::Busy
        } else if self.wrap_up.is_some() {
            Status::WrapUp
        } else if self.presence == Presence::Ready {
            Status::Ready
        } else {
            Status::NotReady
        }
    }

    /// The Not Ready reason, when the agent has one.
    pub fn reason(&self) -> Option<&str> {
        match &self.presence {
            Presence::NotReady { reason } => Some(reason),
            _ => None,
        }
    }

    /// Whether the router may offer this agent work at all: Ready, connected, no offer
    /// pending, not in wrap-up, no Not Ready pending, and not on a call (one call at a
    /// time, nothing else meanwhile). Per-channel capacity is the router's to check.
    pub fn open_for_work(&self) -> bool {
        self.presence == Presence::Ready
            && self.pending_not_ready.is_none()
            && matches!(self.link, Link::Connected(_))
            && self.offer.is_none()
            && self.wrap_up.is_none()
            && !self.work.iter().any(|w| w.channel == Channel::Voice)
    }

    /// How many tasks of `channel` the agent holds, in progress or offered.
    pub fn load(&self, channel: Channel) -> usize {
        self.work.iter().filter(|w| w.channel == channel).count()
            + self.offer.iter().filter(|o| o.channel == channel).count()
    }
}

/// Applies `event` to `state` at `now`.
pub fn apply(
    state: &AgentState,
    event: Event,
    now: Ts,
) -> Result<(AgentState, Vec<Effect>), TransitionError> {
    let mut s = state.clone();
    let mut fx = Vec::new();
    match event {
        Event::Connect { conn } => {
            if s.presence == Presence::Offline {
                s.presence = Presence::NotReady {
                    reason: REASON_LOGIN.to_owned(),
                };
            }
            s.link = Link::Connected(conn);
        }
        Event::Disconnect {
            conn,
            grace_until,
            offer_until,
        } => {
            // Only the agent's own connection counts: the close of a connection that
            // was taken over, or of one that is already gone, changes nothing.
            if s.link == Link::Connected(conn) {
                s.link = Link::Away { conn, grace_until };
                fx.push(Effect::ArmGrace {
                    conn,
                    until: grace_until,
                });
                if let Some(o) = &s.offer {
                    fx.push(Effect::ArmAwayOffer {
                        conn,
                        offer_id: o.offer_id,
                        until: offer_until,
                    });
                }
            }
        }
        Event::AwayOfferWithdrawn { conn, offer_id } => {
            // Only while that very connection is still away: a desktop that came back
            // (a new connection) keeps its offer.
            let away = matches!(s.link, Link::Away { conn: c, .. } if c == conn);
            if away && s.offer.as_ref().is_some_and(|o| o.offer_id == offer_id) {
                let o = take_offer(&mut s, offer_id)?;
                // Not a refusal: the task may come back to this agent as to any other.
                fx.push(Effect::Release {
                    task_id: o.task_id,
                    offer_id: Some(offer_id),
                    reason: ReleaseReason::DesktopGone,
                    exclude: false,
                });
            }
        }
        Event::GraceExpired { conn } => {
            if matches!(s.link, Link::Away { conn: c, .. } if c == conn) {
                go_offline(&mut s, &mut fx);
            }
        }
        Event::Logout => {
            if s.presence == Presence::Offline && s.link == Link::None {
                return Err(TransitionError::Offline);
            }
            go_offline(&mut s, &mut fx);
            fx.push(Effect::CloseSession);
        }
        Event::SetReady => {
            require_online(&s)?;
            let ended_wrap_up = s.wrap_up.take().is_some();
            if s.presence != Presence::Ready || (ended_wrap_up && s.work.is_empty()) {
                // Became free for work just now: the back of the longest-idle line.
                s.idle_since = now;
            }
            s.presence = Presence::Ready;
            // Cancels a pending Not Ready.
            s.pending_not_ready = None;
        }
        Event::SetNotReady { reason } => {
            require_online(&s)?;
            // One step: the offer is declined (and the reason is the Not Ready's).
            if let Some(o) = s.offer.take() {
                fx.push(Effect::Release {
                    task_id: o.task_id,
                    offer_id: Some(o.offer_id),
                    reason: ReleaseReason::NotReady,
                    exclude: true,
                });
            }
            if s.presence == Presence::Ready && (!s.work.is_empty() || s.wrap_up.is_some()) {
                // Finishing its work first: Not Ready when the work ends.
                s.pending_not_ready = Some(reason);
            } else {
                s.pending_not_ready = None;
                s.presence = Presence::NotReady { reason };
            }
        }
        Event::ForceNotReady { reason } => {
            require_online(&s)?;
            s.pending_not_ready = None;
            if let Some(o) = s.offer.take() {
                fx.push(Effect::Release {
                    task_id: o.task_id,
                    offer_id: Some(o.offer_id),
                    reason: ReleaseReason::Supervisor,
                    exclude: false,
                });
            }
            s.presence = Presence::NotReady { reason };
        }
        Event::Offer(offer) => {
            if !s.open_for_work() {
                return Err(TransitionError::NotAvailable);
            }
            // The place in the longest-idle line is kept while the offer rings: an
            // offer declined, withdrawn or moved leaves the agent as before it. Only an
            // accept (below) sends the agent to the back.
            s.offer = Some(offer);
        }
        Event::Accept { offer_id } => {
            let o = take_offer(&mut s, offer_id)?;
            if now >= o.deadline {
                return Err(TransitionError::OfferExpired);
            }
            s.work.push(Work {
                task_id: o.task_id,
                channel: o.channel,
                since: now,
            });
            // Got work: the back of the longest-idle line (a chat agent with room for
            // more waits behind the agents with none).
            s.idle_since = now;
            fx.push(Effect::Assigned {
                task_id: o.task_id,
                offer_id,
            });
        }
        Event::Decline { offer_id } => {
            let o = take_offer(&mut s, offer_id)?;
            fx.push(Effect::Release {
                task_id: o.task_id,
                offer_id: Some(offer_id),
                reason: ReleaseReason::Declined,
                exclude: true,
            });
        }
        Event::OfferExpired { offer_id } => {
            let o = take_offer(&mut s, offer_id)?;
            s.presence = Presence::NotReady {
                reason: REASON_MISSED_OFFER.to_owned(),
            };
            fx.push(Effect::Release {
                task_id: o.task_id,
                offer_id: Some(offer_id),
                reason: ReleaseReason::Expired,
                exclude: true,
            });
        }
        Event::OfferRevoked { offer_id } => {
            take_offer(&mut s, offer_id)?;
        }
        Event::Complete {
            task_id,
            wrap_up_until,
        }
        | Event::TaskCancelled {
            task_id,
            wrap_up_until,
        }
        | Event::TaskTransferred {
            task_id,
            wrap_up_until,
        } => {
            let i = s
                .work
                .iter()
                .position(|w| w.task_id == task_id)
                .ok_or(TransitionError::NoSuchTask)?;
            s.work.remove(i);
            match wrap_up_until {
                Some(until) if until > now => {
                    s.wrap_up = Some(WrapUp { task_id, until });
                    fx.push(Effect::ArmWrapUp { task_id, until });
                }
                _ => {
                    if s.work.is_empty() {
                        s.idle_since = now;
                    }
                }
            }
        }
        Event::WrapUpEnded { task_id } => {
            // Only the wrap-up it was armed for: a timer left from an earlier wrap-up of
            // the same task (ended early by a Ready, then the task came back in a
            // consult) must not cut the later one short.
            if s.wrap_up
                .as_ref()
                .is_some_and(|w| w.task_id == task_id && w.until <= now)
            {
                s.wrap_up = None;
                if s.work.is_empty() {
                    s.idle_since = now;
                }
            }
        }
    }
    // The work ended: a pending Not Ready takes effect.
    if s.offer.is_none() && s.work.is_empty() && s.wrap_up.is_none() {
        if let Some(reason) = s.pending_not_ready.take() {
            if s.presence != Presence::Offline {
                s.presence = Presence::NotReady { reason };
            }
        }
    }
    if s.status() != state.status() || s.reason() != state.reason() {
        s.since = now;
    }
    if s != *state {
        s.version = state.version + 1;
    }
    Ok((s, fx))
}

fn require_online(s: &AgentState) -> Result<(), TransitionError> {
    if s.presence == Presence::Offline {
        Err(TransitionError::Offline)
    } else {
        Ok(())
    }
}

fn take_offer(s: &mut AgentState, offer_id: OfferId) -> Result<PendingOffer, TransitionError> {
    match &s.offer {
        Some(o) if o.offer_id == offer_id => s.offer.take().ok_or(TransitionError::NoSuchOffer),
        _ => Err(TransitionError::NoSuchOffer),
    }
}

/// Offline: the pending offer and the tasks in progress go back to their queues (the
/// desktop that held them is gone); wrap-up ends.
fn go_offline(s: &mut AgentState, fx: &mut Vec<Effect>) {
    s.presence = Presence::Offline;
    s.pending_not_ready = None;
    s.link = Link::None;
    s.wrap_up = None;
    if let Some(o) = s.offer.take() {
        fx.push(Effect::Release {
            task_id: o.task_id,
            offer_id: Some(o.offer_id),
            reason: ReleaseReason::AgentOffline,
            exclude: false,
        });
    }
    for w in s.work.drain(..) {
        fx.push(Effect::Release {
            task_id: w.task_id,
            offer_id: None,
            reason: ReleaseReason::AgentOffline,
            exclude: false,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Ts = Ts(1_000_000_000);

    fn at(secs: u64) -> Ts {
        Ts(T0.0 + secs * 1_000_000)
    }

    fn ready(conn: ConnId) -> AgentState {
        let s = AgentState::new(T0);
        let (s, _) = apply(&s, Event::Connect { conn }, T0).expect("connect");
        let (s, _) = apply(&s, Event::SetReady, T0).expect("ready");
        s
    }

    fn offer(channel: Channel, deadline: Ts) -> PendingOffer {
        PendingOffer {
            offer_id: OfferId::new(),
            task_id: TaskId::new(),
            channel,
            deadline,
        }
    }

    fn offered(conn: ConnId, o: &PendingOffer) -> AgentState {
        let (s, _) = apply(&ready(conn), Event::Offer(o.clone()), at(1)).expect("offer");
        s
    }

    #[test]
    fn login_is_not_ready_then_ready() {
        let s = AgentState::new(T0);
        assert_eq!(s.status(), Status::Offline);
        let (s, fx) = apply(
            &s,
            Event::Connect {
                conn: ConnId::new(),
            },
            T0,
        )
        .expect("connect");
        assert!(fx.is_empty());
        assert_eq!(s.status(), Status::NotReady);
        assert_eq!(s.reason(), Some(REASON_LOGIN));
        let (s, _) = apply(&s, Event::SetReady, at(2)).expect("ready");
        assert_eq!(s.status(), Status::Ready);
        assert_eq!(s.since, at(2));
        assert!(s.open_for_work());
    }

    #[test]
    fn offline_agent_refuses_everything_but_connect() {
        let s = AgentState::new(T0);
        let o = offer(Channel::Chat, at(15));
        for e in [
            Event::SetReady,
            Event::SetNotReady { reason: "x".into() },
            Event::ForceNotReady { reason: "x".into() },
            Event::Logout,
        ] {
            assert_eq!(apply(&s, e, T0).err(), Some(TransitionError::Offline));
        }
        assert_eq!(
            apply(&s, Event::Offer(o.clone()), T0).err(),
            Some(TransitionError::NotAvailable)
        );
        assert_eq!(
            apply(
                &s,
                Event::Accept {
                    offer_id: o.offer_id
                },
                T0
            )
            .err(),
            Some(TransitionError::NoSuchOffer)
        );
    }

    #[test]
    fn offer_makes_reserved_and_accept_makes_busy() {
        let conn = ConnId::new();
        let o = offer(Channel::Voice, at(16));
        let s = offered(conn, &o);
        assert_eq!(s.status(), Status::Reserved);
        assert!(!s.open_for_work());
        let (s, fx) = apply(
            &s,
            Event::Accept {
                offer_id: o.offer_id,
            },
            at(5),
        )
        .expect("accept");
        assert_eq!(s.status(), Status::Busy);
        assert_eq!(
            fx,
            vec![Effect::Assigned {
                task_id: o.task_id,
                offer_id: o.offer_id
            }]
        );
        // On a call: nothing else.
        assert!(!s.open_for_work());
    }

    #[test]
    fn chat_in_progress_leaves_agent_open() {
        let conn = ConnId::new();
        let o = offer(Channel::Chat, at(16));
        let (s, _) = apply(
            &offered(conn, &o),
            Event::Accept {
                offer_id: o.offer_id,
            },
            at(2),
        )
        .expect("accept");
        assert!(s.open_for_work());
        assert_eq!(s.load(Channel::Chat), 1);
    }

    #[test]
    fn accept_at_or_after_deadline_is_expired() {
        let o = offer(Channel::Chat, at(16));
        let s = offered(ConnId::new(), &o);
        assert_eq!(
            apply(
                &s,
                Event::Accept {
                    offer_id: o.offer_id
                },
                at(16)
            )
            .err(),
            Some(TransitionError::OfferExpired)
        );
    }

    #[test]
    fn accept_of_another_offer_is_refused() {
        let o = offer(Channel::Chat, at(16));
        let s = offered(ConnId::new(), &o);
        assert_eq!(
            apply(
                &s,
                Event::Accept {
                    offer_id: OfferId::new()
                },
                at(2)
            )
            .err(),
            Some(TransitionError::NoSuchOffer)
        );
    }

    #[test]
    fn expiry_sets_not_ready_missed_offer_and_releases_excluding() {
        let o = offer(Channel::Email, at(16));
        let s = offered(ConnId::new(), &o);
        let (s, fx) = apply(
            &s,
            Event::OfferExpired {
                offer_id: o.offer_id,
            },
            at(16),
        )
        .expect("exp");
        assert_eq!(s.status(), Status::NotReady);
        assert_eq!(s.reason(), Some(REASON_MISSED_OFFER));
        assert_eq!(
            fx,
            vec![Effect::Release {
                task_id: o.task_id,
                offer_id: Some(o.offer_id),
                reason: ReleaseReason::Expired,
                exclude: true
            }]
        );
        // A second expiry of the same offer is refused: an offer never expires twice.
        assert_eq!(
            apply(
                &s,
                Event::OfferExpired {
                    offer_id: o.offer_id
                },
                at(17)
            )
            .err(),
            Some(TransitionError::NoSuchOffer)
        );
    }

    #[test]
    fn decline_keeps_ready_and_excludes() {
        let o = offer(Channel::Chat, at(16));
        let (s, fx) = apply(
            &offered(ConnId::new(), &o),
            Event::Decline {
                offer_id: o.offer_id,
            },
            at(3),
        )
        .expect("decline");
        assert_eq!(s.status(), Status::Ready);
        assert!(matches!(
            fx.as_slice(),
            [Effect::Release {
                exclude: true,
                reason: ReleaseReason::Declined,
                ..
            }]
        ));
    }

    #[test]
    fn not_ready_while_reserved_declines_in_one_step_and_supervisor_withdraws() {
        let o = offer(Channel::Chat, at(16));
        let s = offered(ConnId::new(), &o);
        let (s2, fx) = apply(
            &s,
            Event::SetNotReady {
                reason: "break".into(),
            },
            at(2),
        )
        .expect("not ready declines");
        assert_eq!(s2.status(), Status::NotReady);
        assert_eq!(s2.reason(), Some("break"));
        assert_eq!(s2.pending_not_ready, None);
        assert_eq!(
            fx,
            vec![Effect::Release {
                task_id: o.task_id,
                offer_id: Some(o.offer_id),
                reason: ReleaseReason::NotReady,
                exclude: true,
            }]
        );
        let (s, fx) = apply(
            &s,
            Event::ForceNotReady {
                reason: "break".into(),
            },
            at(2),
        )
        .expect("force");
        assert_eq!(s.status(), Status::NotReady);
        assert!(matches!(
            fx.as_slice(),
            [Effect::Release {
                exclude: false,
                reason: ReleaseReason::Supervisor,
                ..
            }]
        ));
    }

    /// An agent with a chat in progress (capacity left for more), Ready.
    fn busy_on_chat() -> (AgentState, TaskId) {
        let o = offer(Channel::Chat, at(16));
        let (s, _) = apply(
            &offered(ConnId::new(), &o),
            Event::Accept {
                offer_id: o.offer_id,
            },
            at(2),
        )
        .expect("accept");
        (s, o.task_id)
    }

    fn not_ready(reason: &str) -> Event {
        Event::SetNotReady {
            reason: reason.into(),
        }
    }

    #[test]
    fn pending_not_ready_table() {
        struct Case {
            name: &'static str,
            /// Events after the agent is busy on a chat (a task id placeholder `T`
            /// stands for that chat).
            events: Vec<fn(TaskId) -> Event>,
            status: Status,
            reason: Option<&'static str>,
            pending: Option<&'static str>,
            open: bool,
        }
        let cases = vec![
            Case {
                name: "not_ready while busy is pending; no new work meanwhile",
                events: vec![|_| not_ready("lunch")],
                status: Status::Busy,
                reason: None,
                pending: Some("lunch"),
                open: false,
            },
            Case {
                name: "a second not_ready changes the pending reason",
                events: vec![|_| not_ready("lunch"), |_| not_ready("break")],
                status: Status::Busy,
                reason: None,
                pending: Some("break"),
                open: false,
            },
            Case {
                name: "ready cancels it",
                events: vec![|_| not_ready("lunch"), |_| Event::SetReady],
                status: Status::Busy,
                reason: None,
                pending: None,
                open: true,
            },
            Case {
                name: "it applies when the work ends without wrap-up",
                events: vec![|_| not_ready("lunch"), |t| Event::Complete {
                    task_id: t,
                    wrap_up_until: None,
                }],
                status: Status::NotReady,
                reason: Some("lunch"),
                pending: None,
                open: false,
            },
            Case {
                name: "it waits for the wrap-up",
                events: vec![|_| not_ready("lunch"), |t| Event::Complete {
                    task_id: t,
                    wrap_up_until: Some(at(60)),
                }],
                status: Status::WrapUp,
                reason: None,
                pending: Some("lunch"),
                open: false,
            },
            Case {
                name: "and applies when the wrap-up ends",
                events: vec![
                    |_| not_ready("lunch"),
                    |t| Event::Complete {
                        task_id: t,
                        wrap_up_until: Some(at(60)),
                    },
                    |t| Event::WrapUpEnded { task_id: t },
                ],
                status: Status::NotReady,
                reason: Some("lunch"),
                pending: None,
                open: false,
            },
            Case {
                name: "asked during the wrap-up, it applies when it ends",
                events: vec![
                    |t| Event::Complete {
                        task_id: t,
                        wrap_up_until: Some(at(60)),
                    },
                    |_| not_ready("meeting"),
                    |t| Event::WrapUpEnded { task_id: t },
                ],
                status: Status::NotReady,
                reason: Some("meeting"),
                pending: None,
                open: false,
            },
            Case {
                name: "a cancelled task ends the work too",
                events: vec![|_| not_ready("lunch"), |t| Event::TaskCancelled {
                    task_id: t,
                    wrap_up_until: None,
                }],
                status: Status::NotReady,
                reason: Some("lunch"),
                pending: None,
                open: false,
            },
            Case {
                name: "a supervisor's Not Ready replaces it at once",
                events: vec![|_| not_ready("lunch"), |_| Event::ForceNotReady {
                    reason: "supervisor".into(),
                }],
                status: Status::Busy,
                reason: Some("supervisor"),
                pending: None,
                open: false,
            },
            Case {
                name: "logging out forgets it",
                events: vec![|_| not_ready("lunch"), |_| Event::Logout],
                status: Status::Offline,
                reason: None,
                pending: None,
                open: false,
            },
        ];
        for c in cases {
            let (mut s, task) = busy_on_chat();
            assert!(s.open_for_work(), "{}: a chat leaves room", c.name);
            for (i, e) in c.events.iter().enumerate() {
                let before = s.version;
                let event = e(task);
                // A wrap-up's timer fires when it ends (the cases' wrap-ups end at 60).
                let now = match event {
                    Event::WrapUpEnded { .. } => at(60),
                    _ => at(3 + i as u64),
                };
                s = apply(&s, event, now).expect(c.name).0;
                assert!(
                    s.version > before,
                    "{}: every change is a new version",
                    c.name
                );
            }
            assert_eq!(s.status(), c.status, "{}", c.name);
            assert_eq!(s.reason(), c.reason, "{}", c.name);
            assert_eq!(s.pending_not_ready.as_deref(), c.pending, "{}", c.name);
            assert_eq!(s.open_for_work(), c.open, "{}", c.name);
        }
    }

    #[test]
    fn not_ready_while_busy_with_an_offer_declines_it_and_is_pending() {
        let (s, _) = busy_on_chat();
        let o = offer(Channel::Chat, at(30));
        let (s, _) = apply(&s, Event::Offer(o.clone()), at(3)).expect("second chat");
        let (s, fx) = apply(&s, not_ready("lunch"), at(4)).expect("not ready");
        assert_eq!(s.offer, None);
        assert_eq!(s.status(), Status::Busy);
        assert_eq!(s.pending_not_ready.as_deref(), Some("lunch"));
        assert!(matches!(
            fx.as_slice(),
            [Effect::Release {
                reason: ReleaseReason::NotReady,
                exclude: true,
                ..
            }]
        ));
    }

    #[test]
    fn complete_goes_to_wrap_up_then_ready() {
        let o = offer(Channel::Voice, at(16));
        let (s, _) = apply(
            &offered(ConnId::new(), &o),
            Event::Accept {
                offer_id: o.offer_id,
            },
            at(2),
        )
        .expect("accept");
        let (s, fx) = apply(
            &s,
            Event::Complete {
                task_id: o.task_id,
                wrap_up_until: Some(at(40)),
            },
            at(10),
        )
        .expect("complete");
        assert_eq!(s.status(), Status::WrapUp);
        assert_eq!(
            fx,
            vec![Effect::ArmWrapUp {
                task_id: o.task_id,
                until: at(40)
            }]
        );
        assert!(!s.open_for_work());
        let (s, _) = apply(&s, Event::WrapUpEnded { task_id: o.task_id }, at(40)).expect("end");
        assert_eq!(s.status(), Status::Ready);
        assert_eq!(s.idle_since, at(40));
        assert!(s.open_for_work());
    }

    #[test]
    fn ready_ends_wrap_up_early() {
        let o = offer(Channel::Chat, at(16));
        let (s, _) = apply(
            &offered(ConnId::new(), &o),
            Event::Accept {
                offer_id: o.offer_id,
            },
            at(2),
        )
        .expect("accept");
        let (s, _) = apply(
            &s,
            Event::Complete {
                task_id: o.task_id,
                wrap_up_until: Some(at(40)),
            },
            at(10),
        )
        .expect("complete");
        let (s, _) = apply(&s, Event::SetReady, at(12)).expect("ready");
        assert_eq!(s.status(), Status::Ready);
        // The late wrap-up timer is a no-op.
        let (s2, fx) = apply(&s, Event::WrapUpEnded { task_id: o.task_id }, at(40)).expect("late");
        assert_eq!(s2, s);
        assert!(fx.is_empty());
    }

    #[test]
    fn complete_of_unknown_task_is_refused() {
        let s = ready(ConnId::new());
        assert_eq!(
            apply(
                &s,
                Event::Complete {
                    task_id: TaskId::new(),
                    wrap_up_until: None
                },
                at(1)
            )
            .err(),
            Some(TransitionError::NoSuchTask)
        );
    }

    #[test]
    fn disconnect_keeps_work_until_grace_then_offline_releases() {
        let conn = ConnId::new();
        let o = offer(Channel::Chat, at(16));
        let s = offered(conn, &o);
        let (s, fx) = apply(
            &s,
            Event::Disconnect {
                conn,
                grace_until: at(30),
                offer_until: at(6),
            },
            at(3),
        )
        .expect("disc");
        assert_eq!(
            fx,
            vec![
                Effect::ArmGrace {
                    conn,
                    until: at(30)
                },
                Effect::ArmAwayOffer {
                    conn,
                    offer_id: o.offer_id,
                    until: at(6)
                }
            ]
        );
        assert_eq!(s.status(), Status::Reserved);
        assert!(!s.open_for_work());
        // Reconnecting resumes with the offer intact.
        let conn2 = ConnId::new();
        let (resumed, _) = apply(&s, Event::Connect { conn: conn2 }, at(4)).expect("resume");
        assert_eq!(resumed.offer, s.offer);
        // The old grace and away-offer timers are then no-ops.
        let (r2, fx) = apply(&resumed, Event::GraceExpired { conn }, at(30)).expect("noop");
        assert_eq!(r2, resumed);
        assert!(fx.is_empty());
        let (r2, fx) = apply(
            &resumed,
            Event::AwayOfferWithdrawn {
                conn,
                offer_id: o.offer_id,
            },
            at(6),
        )
        .expect("noop");
        assert_eq!(r2, resumed);
        assert!(fx.is_empty());
        // Without a reconnect, grace expiry goes Offline and releases the offer.
        let (gone, fx) = apply(&s, Event::GraceExpired { conn }, at(30)).expect("expire");
        assert_eq!(gone.status(), Status::Offline);
        assert!(matches!(
            fx.as_slice(),
            [Effect::Release {
                reason: ReleaseReason::AgentOffline,
                exclude: false,
                ..
            }]
        ));
    }

    #[test]
    fn a_dropped_desktop_loses_its_offer_after_the_away_time_but_keeps_its_work() {
        let conn = ConnId::new();
        let (s, task) = {
            let o = offer(Channel::Chat, at(16));
            let (s, _) = apply(
                &offered(conn, &o),
                Event::Accept {
                    offer_id: o.offer_id,
                },
                at(2),
            )
            .expect("accept");
            (s, o.task_id)
        };
        let o = offer(Channel::Chat, at(40));
        let (s, _) = apply(&s, Event::Offer(o.clone()), at(3)).expect("second chat");
        let (s, _) = apply(
            &s,
            Event::Disconnect {
                conn,
                grace_until: at(60),
                offer_until: at(7),
            },
            at(4),
        )
        .expect("drop");
        let (s, fx) = apply(
            &s,
            Event::AwayOfferWithdrawn {
                conn,
                offer_id: o.offer_id,
            },
            at(7),
        )
        .expect("withdraw");
        assert_eq!(
            fx,
            vec![Effect::Release {
                task_id: o.task_id,
                offer_id: Some(o.offer_id),
                reason: ReleaseReason::DesktopGone,
                exclude: false,
            }]
        );
        assert_eq!(s.offer, None);
        assert_eq!(s.status(), Status::Busy, "the chat in progress is kept");
        assert_eq!(s.work.first().map(|w| w.task_id), Some(task));
        assert!(matches!(s.link, Link::Away { .. }));
        assert_eq!(s.presence, Presence::Ready);
    }

    #[test]
    fn disconnect_of_a_taken_over_connection_changes_nothing() {
        let old = ConnId::new();
        let s = ready(old);
        let (s, _) = apply(
            &s,
            Event::Connect {
                conn: ConnId::new(),
            },
            at(1),
        )
        .expect("takeover");
        let (s2, fx) = apply(
            &s,
            Event::Disconnect {
                conn: old,
                grace_until: at(30),
                offer_until: at(5),
            },
            at(2),
        )
        .expect("old close");
        assert_eq!(s2, s);
        assert!(fx.is_empty());
    }

    #[test]
    fn logout_releases_work_and_closes() {
        let conn = ConnId::new();
        let o = offer(Channel::Chat, at(16));
        let (s, _) = apply(
            &offered(conn, &o),
            Event::Accept {
                offer_id: o.offer_id,
            },
            at(2),
        )
        .expect("accept");
        let (s, fx) = apply(&s, Event::Logout, at(3)).expect("logout");
        assert_eq!(s.status(), Status::Offline);
        assert_eq!(fx.len(), 2);
        assert_eq!(fx[1], Effect::CloseSession);
    }
}
