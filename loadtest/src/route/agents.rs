//! The agents of a `route` run: logged in and Ready before the load, told to quiesce
//! after the drain, closed at the end with what each saw.

use super::Run;
use crate::agent::{self, AgentOutcome, AgentPlan, AgentSpec, Phase};
use crate::cluster::{Cluster, sign, wait_for};
use crate::report::Failure;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use switchboard::auth::Role;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

/// The queues agent `i` serves: `queues_per_agent` of them, from its own offset on.
fn agent_queues(opts: &super::RouteOpts, i: usize) -> Vec<String> {
    let n = opts.queues.len();
    let mut qs: Vec<String> = (0..opts.queues_per_agent.clamp(1, n))
        .map(|k| opts.queues[(i + k) % n].clone())
        .collect();
    qs.dedup();
    qs
}

/// Awaits every agent's task within `limit` in all, aborting the late ones.
async fn collect_agents(
    handles: Vec<JoinHandle<AgentOutcome>>,
    limit: Duration,
) -> (Vec<AgentOutcome>, Vec<String>) {
    crate::scenario::join_all_of("agent", handles, limit).await
}

/// How the login went.
#[derive(Clone, Copy)]
pub(super) struct Login {
    /// From the first spawn until every agent was Ready, seconds.
    pub(super) secs: f64,
    /// The hub's resident memory growth per agent over the login (KiB), when read.
    pub(super) rss_per_agent: Option<f64>,
}

/// How the quiesce went.
#[derive(Clone, Copy)]
pub(super) struct Quiesced {
    /// Every agent went Not Ready with nothing pending in time.
    pub(super) settled: bool,
    /// How long the agents were given.
    pub(super) limit: Duration,
}

/// The running agents: their tasks and the phase they are told to be in.
pub(super) struct Agents {
    handles: Vec<JoinHandle<AgentOutcome>>,
    phase_tx: watch::Sender<Phase>,
    /// How the login went.
    pub(super) login: Login,
}

impl Agents {
    /// Logs every agent in (agent `i` on node `i % nodes`) and waits until all are
    /// Ready; when they are not, closes them and says why.
    pub(super) async fn log_in(run: &Run<'_>, hub: &mut Cluster) -> Result<Agents, Failure> {
        let (opts, keys, ttl, total) = (run.opts, &run.keys, run.ttl, run.total);
        let (addrs, shared) = (&run.addrs, &run.shared);
        let plan = Arc::new(AgentPlan {
            accept: opts.accept,
            handle: opts.handle,
            miss_share: opts.miss_share,
            decline_share: opts.decline_share,
            capacity: opts.capacity,
            not_ready_reason: opts.not_ready_reason.clone(),
            close_interactions: opts.close_interactions,
        });
        let (phase_tx, phase_rx) = watch::channel(Phase::Run);
        let gate = Arc::new(Semaphore::new(opts.connect_concurrency.max(1)));
        let rss_before_login = hub.node_rss_kib();
        let mut handles = Vec::with_capacity(opts.agents);
        for i in 0..opts.agents {
            let id = format!("lt-agent-{i}");
            let token = sign(keys, &id, Role::Agent, ttl, Some(agent_queues(opts, i)));
            // Agent `i` on node `i % nodes`.
            let addr = addrs[i % addrs.len()];
            let spec = AgentSpec {
                idx: i as u32,
                id,
                url: format!("ws://{addr}/v1/ws?access_token={token}"),
                seed: opts.seed,
            };
            handles.push(tokio::spawn(agent::run_agent(
                spec,
                plan.clone(),
                shared.clone(),
                phase_rx.clone(),
                gate.clone(),
            )));
        }
        let c = &shared.counters;
        let n = opts.agents;
        let login_limit = Duration::from_secs(30 + n as u64 / 50);
        let login_started = Instant::now();
        let logged_in = wait_for(login_limit, hub, || {
            c.ready_agents.load(Ordering::Relaxed) + c.failed_agents.load(Ordering::Relaxed) >= n
        })
        .await;
        let ready = c.ready_agents.load(Ordering::Relaxed);
        if !matches!(logged_in, Ok(true)) || ready < n {
            let _ = phase_tx.send(Phase::Close);
            let (outs, lost) = collect_agents(handles, Duration::from_secs(10)).await;
            let mut why: Vec<String> = outs.into_iter().flat_map(|o| o.errors).take(5).collect();
            why.extend(lost.into_iter().take(5));
            return Err(match logged_in {
                Err(f) => f,
                Ok(_) => Failure::new(format!(
                    "only {ready} of {n} agents logged in and went Ready within {} s:\n  {}",
                    login_limit.as_secs(),
                    why.join("\n  ")
                )),
            });
        }
        let login_secs = login_started.elapsed().as_secs_f64();
        let rss_per_agent = rss_before_login
            .zip(hub.node_rss_kib())
            .map(|(before, after)| after.saturating_sub(before) as f64 / n.max(1) as f64);
        if opts.progress {
            eprintln!(
                "{n} agents Ready in {login_secs:.2} s; creating {total} tasks at {}/s for {} s",
                opts.rate,
                opts.duration.as_secs_f64()
            );
        }
        Ok(Agents {
            handles,
            phase_tx,
            login: Login {
                secs: login_secs,
                rss_per_agent,
            },
        })
    }

    /// Tells every agent to finish what it holds, decline what is offered and go Not
    /// Ready, and waits for them (at most 10 s and an offer timeout): the wait (`Err`
    /// when the hub died meanwhile) and how it went.
    pub(super) async fn quiesce(
        &self,
        run: &Run<'_>,
        hub: &mut Cluster,
    ) -> (Result<bool, Failure>, Quiesced) {
        let (opts, c, n) = (run.opts, &run.shared.counters, run.opts.agents);
        let _ = self.phase_tx.send(Phase::Quiesce);
        let quiesce_limit = Duration::from_secs(10) + opts.offer_timeout;
        let quiesce = wait_for(quiesce_limit, hub, || {
            c.quiesced_agents.load(Ordering::Relaxed) + c.failed_agents.load(Ordering::Relaxed) >= n
        })
        .await;
        let settled = matches!(quiesce, Ok(true)) && c.quiesced_agents.load(Ordering::Relaxed) == n;
        (
            quiesce,
            Quiesced {
                settled,
                limit: quiesce_limit,
            },
        )
    }

    /// Tells every agent to close and collects what each saw (at most `limit` in all):
    /// the outcomes, and why an agent's is missing.
    pub(super) async fn close(self, limit: Duration) -> (Vec<AgentOutcome>, Vec<String>) {
        let _ = self.phase_tx.send(Phase::Close);
        collect_agents(self.handles, limit).await
    }
}
