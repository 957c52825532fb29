//! Load-test harness for switchboard: drives a hub over real websockets and HTTP,
//! measures it with HDR histograms, and checks the routing invariants on everything
//! it saw.
//!
//! Scenarios are functions from options to a [`Report`]; the `loadtest` binary maps
//! each to a subcommand: [`route::run_route`] (agents working offers while an
//! integration creates tasks at a fixed rate) and its short form, `smoke`;
//! [`fanout::run_fanout`] (one customer record saved at a rate, watched by many
//! agents); [`conflicts::run_conflicts`] (editors racing on one record);
//! [`expiry::run_expiry`] (an offer-expiry storm); [`reconnect::run_reconnect`]
//! (dropped desktops reconnecting and resuming their offers and tasks);
//! [`nodeloss::run_nodeloss`] (kill -9 of a node: its agents' offers reaching live agents);
//! [`restart::run_restart`] (the file store ready again after a restart with a
//! large log on disk); [`crash::run_crash`] (kill -9 rounds of a file-store hub under
//! load, every acknowledged command checked after each restart); [`idle::run_idle`] (memory and CPU of idle heartbeating connections against the
//! echo floor); and the [`echo`] floor (the
//! same websocket stack with no hub logic); [`compare::run_compare`] runs `route` on one
//! node in memory and then on several nodes sharing a Redis, and sets them side by
//! side. The building blocks: [`hubproc`] (start a
//! hub with a generated config), [`scenario`] (a run's hub, tokens, end-of-run checks),
//! [`agent`] (a simulated desktop for `route`), [`client`] (light websocket clients
//! spread over loopback source addresses), [`httpc`] (a keep-alive HTTP/1.1 client),
//! [`redisproc`] (a Redis of the run's own), [`stats`] (histograms), [`checks`] and
//! [`report`]. [`supervise::run_supervise`] runs `route` without and then with
//! supervisor consoles ([`supervisor`]: decision -> supervisor feed lag) and compares
//! the hub's CPU per task.
//!
//! Traffic goes to loopback only, and every run is bounded in tasks and time.

pub mod agent;
pub mod checks;
pub mod client;
pub mod cluster;
pub mod compare;
pub mod conflicts;
pub mod crash;
pub mod echo;
pub mod events;
pub mod expiry;
pub mod fanout;
pub mod floor;
pub mod httpc;
pub mod hubproc;
pub mod idle;
pub mod nodeloss;
pub mod reconnect;
pub mod redisproc;
pub mod report;
pub mod restart;
pub mod rng;
pub mod route;
pub mod scenario;
pub mod search;
pub mod searchers;
pub mod shared;
pub mod stats;
pub mod supervise;
pub mod supervisor;
pub mod webhook;
pub mod wire;

pub use cluster::{Target, raise_nofile_limit};
pub use report::{Failure, Report};
pub use route::{RouteOpts, run_route};
