//! switchboard: a real-time websocket routing and presence hub for contact-center
//! agent desktops.
//!
//! Module map (see ARCHITECTURE.md for the invariants and the path of a task):
//! - [`agent`]: the agent state machine, a pure `apply(state, event, now)`.
//! - [`routing`]: the routing book: queues, offers, timers, and the routing decision.
//! - [`task`]: what a task is, and its validation.
//! - [`context`]: customers, requests, activities, the journey, and who watches what.
//! - [`state`]: the replicated state (book and context together) and what one
//!   decision produces ([`state::Outcome`]).
//! - [`stats`]: contact-center statistics folded from every decision's events, in
//!   the replicated state; their report and their metrics.
//! - [`log`]: the command log's entry, its encoding and its replay (`step`), shared by
//!   the file and Redis stores.
//! - [`store`]: where the routing state lives ([`store::memory`] by default).
//! - [`hub`]: this node's sessions, the delivery of notices, the timer loop.
//! - [`ws`]: the websocket upgrade and the session on each connection.
//! - [`http`]: the task API and the operator endpoints.
//! - [`protocol`]: the JSON frames of wire protocol v1.
//! - [`webhooks`]: signed pushes of the events to HTTP endpoints (Standard Webhooks).
//! - [`conn`]: connections before they are authenticated: caps, timeouts, HTTP errors.
//! - [`config`], [`auth`], [`clock`], [`metrics`], [`error`], [`ids`], [`server`].

#![warn(missing_docs)]

pub mod agent;
pub mod auth;
pub mod clock;
pub mod config;
pub mod conn;
pub mod context;
pub mod error;
pub mod events;
pub mod growing;
pub mod http;
pub mod hub;
pub mod ids;
pub mod log;
pub mod metrics;
pub mod protocol;
pub mod routing;
pub mod server;
pub mod state;
pub mod stats;
pub mod store;
pub mod task;
pub mod web;
pub mod webhooks;
pub mod ws;
