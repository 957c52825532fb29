//! The delivery sink: where a store hands each decision's node-wide notices.
//!
//! A store is given its [`Sink`] when it is built, before the hub exists (the stores
//! are built first: the hub is built over one). The other half, the [`Binding`], goes
//! to [`Hub::new`](crate::hub::Hub::new), which binds it to itself once; it is
//! consumed by that, so nothing can redirect a store's deliveries later. What a store
//! delivers before its hub is bound (a replay at start, a Redis node catching up, the
//! file store's `NodeLost` at open) goes nowhere: no session can be connected yet.
//!
//! The rule "each decision's notices are delivered exactly once per node, in decision
//! order, apart from the caller's reply" is kept here and by each store's one call
//! site: [`Sink::deliver`] takes the notices out of the outcome (the reply and the
//! counts stay, for the caller), and every store calls it in exactly one place, for
//! every decision it applies, on the one thread that applies decisions and under its
//! replica's lock (memory: `MemoryStore::decide`; file: the applier, `file::apply`;
//! Redis: the log reader, `Shared::apply`, for every node's entries). One delivery is
//! no decision's: a Redis node that was serving and loads a snapshot jumps over entries
//! it never delivered, and `Shared::load_snapshot` tells the desktops the loaded state
//! no longer has connected there to reconnect (on the same thread, under the same lock,
//! in order with the decisions around it).

use crate::state::Outcome;
use std::sync::{Arc, OnceLock, Weak};

/// What a sink delivers to: the hub.
pub trait Dispatch: Send + Sync {
    /// Delivers an outcome's notices to this node's sessions.
    fn deliver(&self, o: Outcome);
}

type Slot = Arc<OnceLock<Weak<dyn Dispatch>>>;

/// A store's end: delivers notices to whatever the [`Binding`] was bound to.
#[derive(Clone)]
pub struct Sink(Slot);

/// The hub's end: binds the sink, once (it is consumed).
pub struct Binding(Slot);

/// A sink for a store and its binding for the hub.
pub fn sink() -> (Sink, Binding) {
    let slot: Slot = Arc::new(OnceLock::new());
    (Sink(slot.clone()), Binding(slot))
}

impl Sink {
    /// A sink bound to nothing, for a store used without a hub (tests, tools):
    /// notices are dropped.
    pub fn detached() -> Sink {
        sink().0
    }

    /// Takes the decision's notices (with its numbered events, changed queues and
    /// timer) out of `o` and delivers them; the reply and the counts stay in `o` for
    /// the caller. The caller must be the store's one applying thread, under its
    /// replica's lock (see the module documentation).
    pub fn deliver(&self, o: &mut Outcome) {
        let notices = o.take_notices();
        if let Some(d) = self.0.get().and_then(Weak::upgrade) {
            d.deliver(notices);
        }
    }
}

impl Binding {
    /// Binds the sink to `to` (held weakly: a store never keeps its hub alive).
    pub fn bind(self, to: Weak<dyn Dispatch>) {
        // A fresh slot, and the binding is consumed: it cannot be set already.
        let _ = self.0.set(to);
    }
}
