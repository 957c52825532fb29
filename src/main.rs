//! The `switchboard` binary: `switchboard` (serve), `switchboard token` (mint a token).

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use switchboard::auth::{Claims, Keys, Role, unix_now};
use switchboard::config::Config;

#[derive(Parser)]
#[command(
    version,
    about = "Real-time routing and presence hub for contact-center agent desktops"
)]
struct Cli {
    /// A TOML configuration file. Without one, the demo setup runs.
    #[arg(long, short, env = "SWITCHBOARD_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Overrides `server.listen`.
    #[arg(long, env = "SWITCHBOARD_LISTEN", global = true)]
    listen: Option<String>,
    /// Share state with other nodes through this Redis (`redis://host:port`).
    #[arg(long, env = "SWITCHBOARD_REDIS", global = true)]
    redis: Option<String>,
    /// The file store's data directory (overrides `store.data_dir`; default
    /// `./switchboard-data`).
    #[arg(long, env = "SWITCHBOARD_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// Keep the state in memory only (`store.kind = "memory"`): lost when the hub stops.
    #[arg(long, global = true)]
    in_memory: bool,
    /// This node's name (overrides `server.node_id`); must differ between nodes.
    #[arg(long, env = "SWITCHBOARD_NODE_ID", global = true)]
    node_id: Option<String>,
    /// Log as JSON lines instead of text.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the hub (the default).
    Serve,
    /// Print a signed token, for testing and for integrations.
    Token {
        /// The caller's id (an agent id for agents).
        #[arg(long)]
        sub: String,
        /// agent, supervisor or integration.
        #[arg(long, default_value = "agent")]
        role: String,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 86_400)]
        ttl: u64,
    },
    /// Copy the file store's data directory to DIR, consistently, while the hub runs
    /// (or not). Restore: stop the hub, put DIR in place of the data directory, start.
    Backup {
        /// Where the copy goes; must not exist yet.
        dir: PathBuf,
    },
}

fn load_config(cli: &Cli) -> anyhow_lite::Result<Config> {
    let mut cfg = match &cli.config {
        // Checked once, below, with what the command line and the environment add.
        Some(p) => Config::read(p)?,
        None => Config::demo(),
    };
    if let Some(l) = &cli.listen {
        cfg.server.listen = l.clone();
    }
    if let Some(r) = &cli.redis {
        cfg.store.redis = Some(r.clone());
    }
    if let Some(d) = &cli.data_dir {
        cfg.store.data_dir = d.clone();
    }
    if cli.in_memory {
        cfg.store.kind = Some(switchboard::config::StoreKind::Memory);
    }
    if let Some(n) = &cli.node_id {
        cfg.server.node_id = n.clone();
    }
    if let Ok(s) = std::env::var("SWITCHBOARD_SECRET") {
        cfg.auth.secret = Some(s);
    }
    cfg.check()?;
    Ok(cfg)
}

/// A tiny stand-in for anyhow: the binary only prints errors.
mod anyhow_lite {
    pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logs(cli.log_json);
    let cfg = match load_config(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("switchboard: configuration error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match &cli.command {
        Some(Cmd::Token { sub, role, ttl }) => {
            let role = match role.as_str() {
                "agent" => Role::Agent,
                "supervisor" => Role::Supervisor,
                "integration" => Role::Integration,
                other => {
                    eprintln!(
                        "switchboard: unknown role {other:?}: agent, supervisor or integration"
                    );
                    return std::process::ExitCode::from(2);
                }
            };
            let Some(secret) = cfg.auth.secret.clone() else {
                eprintln!("switchboard: token needs auth.secret or SWITCHBOARD_SECRET");
                return std::process::ExitCode::from(2);
            };
            let claims = Claims {
                sub: sub.clone(),
                role,
                exp: unix_now().saturating_add(*ttl),
                name: None,
                skills: None,
                queues: None,
            };
            println!("{}", Keys::new(secret.as_bytes()).sign(&claims));
            std::process::ExitCode::SUCCESS
        }
        Some(Cmd::Backup { dir }) => {
            match switchboard::store::file::backup::copy(
                &cfg.store.data_dir,
                dir,
                std::sync::Arc::new(cfg.rules()),
            ) {
                Ok(b) => {
                    let again = match b.attempts {
                        1 => String::new(),
                        n => format!(" (taken {n} times: the earlier copies had a gap)"),
                    };
                    println!(
                        "backed up {} to {}: {} files, {} bytes, up to record {}{again}",
                        cfg.store.data_dir.display(),
                        dir.display(),
                        b.files,
                        b.bytes,
                        b.position
                    );
                    std::process::ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("switchboard: backup failed: {e}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
        None | Some(Cmd::Serve) => {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("switchboard: cannot start the runtime: {e}");
                    return std::process::ExitCode::FAILURE;
                }
            };
            match rt.block_on(serve(cfg, cli.config.is_none())) {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("switchboard: {e}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
    }
}

fn init_logs(json: bool) {
    use tracing_subscriber::filter::Targets;
    let filter: Targets = std::env::var("RUST_LOG")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO));
    use std::io::IsTerminal;
    use tracing_subscriber::prelude::*;
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none());
    if json {
        tracing_subscriber::registry()
            .with(fmt.json().with_filter(filter))
            .init();
    } else {
        tracing_subscriber::registry()
            .with(fmt.with_filter(filter))
            .init();
    }
}

async fn serve(mut cfg: Config, demo: bool) -> anyhow_lite::Result<()> {
    let secret = match &cfg.auth.secret {
        Some(s) => s.clone().into_bytes(),
        None => {
            // Loopback only (the config check refuses otherwise): a fresh secret per
            // start, so the printed tokens are the only ones that work.
            let s = format!(
                "{}{}",
                uuid::Uuid::new_v4().simple(),
                uuid::Uuid::new_v4().simple()
            );
            cfg.auth.secret = Some(s.clone());
            s.into_bytes()
        }
    };
    let printed = cfg.clone();
    let running = switchboard::server::start(cfg, &secret).await?;
    let store = running.hub.store().describe();
    print_welcome(&printed, running.addr, &secret, demo, &store);
    wait_for_signal().await;
    tracing::info!("signal received: draining");
    // Whichever task lets the state go last, it is not freed: the process ends next.
    switchboard::state::process_exiting();
    running.shutdown().await;
    tracing::info!("drained; bye");
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn print_welcome(cfg: &Config, addr: std::net::SocketAddr, secret: &[u8], demo: bool, store: &str) {
    // Written with errors ignored: a closed stdout (a supervisor that stopped reading)
    // must not take the hub down.
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let keys = Keys::new(secret);
    let exp = unix_now() + cfg.auth.demo_token_secs;
    let token = |sub: &str, role: Role| {
        keys.sign(&Claims {
            sub: sub.into(),
            role,
            exp,
            name: None,
            skills: None,
            queues: None,
        })
    };
    let _ = writeln!(
        out,
        "switchboard listening on http://{addr} (websocket: ws://{addr}/v1/ws)"
    );
    let _ = writeln!(out, "store: {store}");
    let _ = writeln!(out, "agent desktop:         http://{addr}/");
    if demo {
        let _ = writeln!(
            out,
            "demo setup: queues sales, support, billing; agents alice, joao, elin, dorde, giulia, sam"
        );
    }
    if cfg.server.listen.starts_with("127.") || cfg.server.listen.starts_with("[::1]") || demo {
        let agent = cfg.agents.first().map(|a| a.id.as_str()).unwrap_or("agent");
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "agent token ({agent}):   {}",
            token(agent, Role::Agent)
        );
        let _ = writeln!(
            out,
            "supervisor token:      {}",
            token("supervisor", Role::Supervisor)
        );
        let _ = writeln!(
            out,
            "integration token:     {}",
            token("integration", Role::Integration)
        );
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "connect an agent:   websocat 'ws://{addr}/v1/ws?access_token=<agent token>'"
        );
        let _ = writeln!(
            out,
            "                    then send {{\"id\":\"1\",\"type\":\"set_state\",\"state\":\"ready\"}}"
        );
        let _ = writeln!(
            out,
            "create a task:      curl -s -H 'Authorization: Bearer <integration token>' -H 'content-type: application/json' \\\n                      -d '{{\"channel\":\"chat\",\"queue\":\"support\",\"customer\":{{\"email\":\"ana@example.com\"}}}}' http://{addr}/v1/tasks"
        );
        let _ = writeln!(
            out,
            "more tokens:        SWITCHBOARD_SECRET=<secret> switchboard token --sub joao --role agent"
        );
    }
}
