//! A hub that is exiting does not free its customer context: a million customers are
//! tens of millions of allocations, and freeing them one by one held a stopping hub
//! past the 10 s a supervisor gives it (`loadtest route --customers 1000000`, BENCHMARKS
//! tenth pass). `main` marks the process as ending when the drain begins
//! (`state::process_exiting`); a state dropped after that leaves its context to the
//! kernel. Counted with an allocator that counts frees, in a test binary of its own:
//! the mark is process-wide.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use switchboard::auth::Role;
use switchboard::clock::Ts;
use switchboard::config::Config;
use switchboard::context::record::{Actor, CustomerFields};
use switchboard::context::{ContextCommand, ContextEffects, ContextReply};
use switchboard::state::State;

struct Counting;

static FREES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed to the system allocator unchanged; only a counter is
// added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's layout, as given.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        FREES.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's pointer and layout, as given.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const CFG: &str = r#"
[[queues]]
id = "support"

[[agents]]
id = "a1"
queues = ["support"]
"#;

const T0: Ts = Ts(1_800_000_000_000_000);

/// A state holding `n` customers, each with a request, searchable.
fn state_with(n: usize) -> State {
    let rules = Arc::new(Config::parse(CFG).expect("config").rules());
    let mut s = State::new(rules, T0);
    let by = Actor {
        id: "test".into(),
        role: Role::Integration,
    };
    for i in 0..n {
        let mut fx = ContextEffects::default();
        let made = s.context.execute(
            ContextCommand::CreateCustomer {
                by: by.clone(),
                fields: CustomerFields {
                    name: Some(format!("Ana Đorđević {i}")),
                    emails: Some(vec![format!("c{i}@example.rs")]),
                    phones: Some(vec![format!("+381 11 {i:07}")]),
                    ..Default::default()
                },
                activity_id: None,
            },
            T0,
            &mut fx,
        );
        let Ok(ContextReply::Customer(v)) = made else {
            panic!("customer {i} refused: {made:?}");
        };
        let mut fx = ContextEffects::default();
        let opened = s.context.execute(
            ContextCommand::CreateRequest {
                by: by.clone(),
                customer_id: v.customer.customer_id,
                title: "Fatura".into(),
                description: String::new(),
            },
            T0,
            &mut fx,
        );
        assert!(opened.is_ok(), "request {i}: {opened:?}");
    }
    s.context.settle_search();
    s
}

fn frees_while(f: impl FnOnce()) -> usize {
    let before = FREES.load(Ordering::Relaxed);
    f();
    FREES.load(Ordering::Relaxed) - before
}

#[test]
fn a_state_dropped_once_the_process_is_exiting_leaves_its_customers_to_the_kernel() {
    const N: usize = 2_000;
    let (running, exiting) = (state_with(N), state_with(N));
    // Before the mark, a state is freed as usual: many allocations a customer.
    let freed = frees_while(|| drop(running));
    assert!(freed > 5 * N, "only {freed} frees for {N} customers");
    switchboard::state::process_exiting();
    let left = frees_while(|| drop(exiting));
    assert!(
        left * 100 < freed,
        "{left} frees while exiting against {freed} before"
    );
}
