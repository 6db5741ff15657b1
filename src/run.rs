//! Starting processes: the gateway (API, admin and optionally the sandbox listeners on one pingora
//! server) and the standalone sandbox.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server};

use crate::shutdown::DrainingShutdown;

use crate::admin::Admin;
use crate::config::{Config, LogFormat};
use crate::gateway::Gateway;
use crate::http::{bind, bind_group, HttpService};
use crate::limit::memory::MemoryLimiter;
use crate::limit::redis::RedisLimiter;
use crate::limit::Limiter;
use crate::redis_store::RedisStore;
use crate::sandbox::{Sandbox, SandboxOptions};
use crate::single_use::{MemoryUsedIds, RedisUsedIds, UsedIds};

pub fn init_logging(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

fn pingora_server(threads: usize) -> Server {
    let conf = ServerConf {
        threads,
        // One single-threaded runtime per thread: no cross-thread hand-offs on the request path.
        work_stealing: false,
        // `shutdown::DrainingShutdown` has drained every request before pingora sees SIGTERM.
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    server
}

/// File descriptors kept beyond the client and vendor connections: the admin listener's 1,024
/// clients, Redis connections, listeners, the process's own files.
const SPARE_FILES: u64 = 2048;

/// The files the process may need open at once: `server.max_connections` clients, every
/// connection's vendor connections (each thread's share, rounded up), and `SPARE_FILES`.
fn files_wanted(config: &Config) -> u64 {
    let threads = config.server.threads;
    let vendor: usize = config
        .connections
        .iter()
        .map(|c| crate::upstream::per_thread_share(c.max_connections, threads) * threads)
        .sum();
    (config.server.max_connections + vendor) as u64 + SPARE_FILES
}

/// Warns when the process may not open enough files for its client and vendor connections:
/// past the limit, accepting fails and so do calls to vendors.
fn warn_if_too_few_files(config: &Config) {
    let Some(limit) = open_files_limit() else {
        return;
    };
    let wanted = files_wanted(config);
    if limit < wanted {
        tracing::warn!(
            open_files_limit = limit,
            max_connections = config.server.max_connections,
            "the open-files limit (ulimit -n) is below server.max_connections plus every \
             connection's max_connections plus {SPARE_FILES}: raise it to {wanted}, or lower \
             those limits"
        );
    }
}

/// The soft limit on open files, from `/proc/self/limits` (Linux); `None` if unknown or unlimited.
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Runs the gateway until it is told to stop. Returns only on a start-up error.
pub fn gateway(config_path: &str) -> Result<(), String> {
    let mut config = Config::load(config_path).map_err(|problems| problems.join("\n"))?;
    init_logging(config.log.format, &config.log.level);
    crate::metrics::init();
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    if !config.token_keys.is_ephemeral() {
        tracing::info!(key_ids = ?config.token_keys.key_ids(), "token keys loaded");
    }

    let bind_named = |what: &str, addr: &str| {
        bind(addr).map_err(|e| format!("cannot listen on {addr} for the {what} listener: {e}"))
    };
    // One API socket per worker thread, each served by a single-threaded runtime.
    let api_group = bind_group(&config.server.api_listen, config.server.threads).map_err(|e| {
        let addr = &config.server.api_listen;
        format!("cannot listen on {addr} for the API listener: {e}")
    })?;
    let admin = bind_named("admin", &config.server.admin_listen)?;
    let sandbox = match &config.sandbox {
        Some(sb) => Some(bind_named("sandbox", &sb.listen)?),
        None => None,
    };
    let addr =
        |l: &std::net::TcpListener| l.local_addr().map(|a| a.to_string()).unwrap_or_default();
    let api_scheme = if config.server.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let mut announce = format!(
        "reset-gateway listening api={api_scheme}://{} admin=http://{}",
        addr(&api_group[0]),
        addr(&admin)
    );

    let grace = config.server.shutdown_grace;
    let mut server = pingora_server(config.server.threads);
    let mut in_process = None;
    if let Some(listener) = sandbox {
        announce.push_str(&format!(" sandbox=http://{}", addr(&listener)));
        let sandbox = Arc::new(Sandbox::new(SandboxOptions::default()));
        in_process = Some(sandbox.clone());
        server.add_service(HttpService::new("sandbox", listener, sandbox).serving_through_drain());
    }
    let (limiter, used, redis): (Arc<dyn Limiter>, Arc<dyn UsedIds>, _) = match &config.limits.redis
    {
        Some(settings) => {
            let store = Arc::new(RedisStore::new(settings.clone())?);
            tracing::info!(
                on_failure = settings.on_failure.as_str(),
                timeout_ms = settings.timeout.as_millis() as u64,
                "limits shared through Redis"
            );
            (
                Arc::new(RedisLimiter::new(store.clone())),
                Arc::new(RedisUsedIds::new(store.clone())),
                Some(store),
            )
        }
        None => (
            Arc::new(MemoryLimiter::new()),
            Arc::new(MemoryUsedIds::default()),
            None,
        ),
    };
    let gateway = Arc::new(Gateway::new(&mut config, limiter, used));
    let tls = config.server.tls.as_ref().map(crate::tls::acceptor);
    // Each thread's listener serves its share of the limit (the kernel spreads connections
    // evenly over the group's sockets).
    let max_connections = config.server.max_connections;
    let per_thread = crate::upstream::per_thread_share(max_connections, config.server.threads);
    warn_if_too_few_files(&config);
    for (i, listener) in api_group.into_iter().enumerate() {
        server.add_service(
            HttpService::new(&format!("api-{i}"), listener, gateway.clone())
                .with_timeouts(config.server.client_timeouts)
                .with_tls(tls.clone())
                .with_max_connections(per_thread),
        );
    }
    server.add_service(HttpService::new(
        "admin",
        admin,
        Arc::new(Admin {
            sandbox: in_process,
            redis,
        }),
    ));

    tracing::info!(
        tenants = config.tenants.len(),
        connections = config.connections.len(),
        threads = config.server.threads,
        "configuration loaded"
    );
    run_until_drained(server, grace, announce);
    Ok(())
}

/// Runs the server until SIGTERM has drained it (or SIGINT stops it). `announce` goes to stdout
/// once signals are handled.
fn run_until_drained(server: Server, grace: Duration, announce: String) {
    server.run(RunArgs {
        shutdown_signal: Box::new(DrainingShutdown { grace, announce }),
    });
    tracing::info!("stopped");
}

/// Runs only the sandbox vendors, for tests and for developing against them.
pub fn sandbox(listen: &str, options: SandboxOptions, idle: Duration) -> Result<(), String> {
    init_logging(LogFormat::Text, "info");
    let listener = bind(listen).map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    let mut server = pingora_server(1);
    let timeouts = crate::http::ClientTimeouts {
        header: idle,
        ..crate::http::ClientTimeouts::default()
    };
    server.add_service(
        HttpService::new("sandbox", listener, Arc::new(Sandbox::new(options)))
            .with_timeouts(timeouts),
    );
    let announce = format!("reset-gateway sandbox listening http://{local}");
    run_until_drained(server, Duration::from_secs(5), announce);
    Ok(())
}
