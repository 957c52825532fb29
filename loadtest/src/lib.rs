//! Load-test harness for switchboard: drives a hub over real websockets and HTTP,
//! measures it with HDR histograms, and checks the routing invariants on everything
//! it saw.
//!
//! Scenarios are functions from options to a [`Report`]; the `loadtest` binary maps
//! each to a subcommand. Today: [`route::run_route`] (agents working offers while an
//! integration creates tasks at a fixed rate) and its short form, `smoke`; and the
//! [`echo`] floor (the same websocket stack with no hub logic). The building blocks a
//! new scenario reuses: [`hubproc`] (start a hub with a generated config),
//! [`agent`] (a simulated desktop), [`httpc`] (a keep-alive HTTP/1.1 client),
//! [`stats`] (histograms), [`checks`] and [`report`].
//!
//! Traffic goes to loopback only, and every run is bounded in tasks and time.

pub mod agent;
pub mod checks;
pub mod echo;
pub mod httpc;
pub mod hubproc;
pub mod report;
pub mod rng;
pub mod route;
pub mod shared;
pub mod stats;
pub mod wire;

pub use report::{Failure, Report};
pub use route::{RouteOpts, Target, raise_nofile_limit, run_route};
