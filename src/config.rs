//! Configuration: the raw TOML layer (strict: every table denies unknown keys, so a typo is an
//! error naming the key and its line) and the validated layer the gateway runs on.
//!
//! Secrets are never in the file: it names environment variables, read during validation. The
//! validated `Config` holds them as `Secret`, whose `Debug` redacts.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::FixedOffset;
use serde::Deserialize;

use crate::client_ip::Cidr;
use crate::limit::Quota;
use crate::redis_store::{FailurePolicy, RedisSettings};
use crate::sandbox;
use crate::secret::Secret;
use crate::signing::HexCase;
use crate::signing::{Algorithm, Encoding, Mode as SigningMode, Part, Recipe};
use crate::token::TokenKeys;
use crate::upstream::{BaseUrl, Timeouts};
use crate::vendors::amsalem::{AmsalemSettings, SaltWidth};
use crate::vendors::capillary::{CapillarySettings, Variant};
use crate::vendors::cbss::CbssSettings;
use crate::vendors::hepsiburada::HepsiburadaSettings;
use crate::vendors::WireFormat;

// ---------------------------------------------------------------------------------------------
// The raw layer: what the file says.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    tokens: RawTokens,
    #[serde(default)]
    sandbox: Option<RawSandbox>,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    connections: BTreeMap<String, RawConnection>,
    #[serde(default)]
    tenants: Vec<RawTenant>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawServer {
    api_listen: String,
    admin_listen: String,
    threads: toml::Value,
    max_body_bytes: usize,
    shutdown_grace_secs: u64,
    /// Peers whose X-Forwarded-For is believed (addresses or CIDR ranges).
    trusted_proxies: Vec<String>,
    /// How long a client may take to send a request's header (or stay idle between requests).
    header_timeout_ms: u64,
    /// How long a client may take to send a whole request body (and pause reading an answer).
    body_timeout_ms: u64,
    /// TLS on the API listener; plain HTTP when absent.
    tls: Option<RawTls>,
    /// The most client connections the API listener serves at once, over all its threads.
    max_connections: usize,
}

/// `server.threads`: a number, or `"auto"` for as many as the CPUs this process may use. Read
/// as any TOML value so that a wrong one (a fraction, another word) gets the same clear problem.
/// `"auto"` follows `std::thread::available_parallelism`, which counts the CPUs in the process's
/// affinity mask and, on Linux, its cgroup CPU quota: a container limited to 2 CPUs on a 64-core
/// node gets 2 threads, not 64 (threads beyond the quota would only be throttled).
fn resolve_threads(value: &toml::Value, problems: &mut Vec<String>) -> usize {
    match value {
        toml::Value::String(word) if word == "auto" => std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, MAX_THREADS),
        toml::Value::Integer(n) if (1..=MAX_THREADS as i64).contains(n) => *n as usize,
        _ => {
            problems.push(format!(
                "server.threads: must be \"auto\" or a number between 1 and {MAX_THREADS}"
            ));
            1
        }
    }
}

/// The most worker threads `server.threads` may ask for.
const MAX_THREADS: usize = 256;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    /// PEM: the server certificate, then any intermediates.
    cert_path: String,
    /// PEM: the private key (PKCS#8, PKCS#1 or SEC1).
    key_path: String,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            api_listen: "127.0.0.1:8080".into(),
            admin_listen: "127.0.0.1:9091".into(),
            threads: toml::Value::String("auto".into()),
            max_body_bytes: 16 * 1024,
            shutdown_grace_secs: 15,
            trusted_proxies: Vec::new(),
            header_timeout_ms: 10_000,
            body_timeout_ms: 10_000,
            tls: None,
            max_connections: 8192,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLog {
    format: LogFormat,
    level: String,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawTokens {
    keys_env: String,
    lifetime_secs: u64,
}

/// The variable the reset-id keys are read from unless `tokens.keys_env` names another.
const DEFAULT_TOKEN_KEYS_ENV: &str = "GATEWAY_TOKEN_KEYS";

impl Default for RawTokens {
    fn default() -> Self {
        RawTokens {
            keys_env: DEFAULT_TOKEN_KEYS_ENV.into(),
            lifetime_secs: 600,
        }
    }
}

/// `{ count = 1000, period_secs = 60 }`
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQuota {
    count: u32,
    period_secs: u64,
}

impl RawQuota {
    const fn new(count: u32, period_secs: u64) -> Self {
        RawQuota { count, period_secs }
    }

    fn validate(self, at: &str, problems: &mut Vec<String>) -> Quota {
        if self.count == 0 || self.count > 1_000_000_000 {
            problems.push(format!("{at}.count: must be between 1 and 1000000000"));
        }
        if !(1..=86_400 * 7).contains(&self.period_secs) {
            problems.push(format!("{at}.period_secs: must be between 1 and 604800"));
        }
        Quota::new(self.count.max(1), Duration::from_secs(self.period_secs))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLimits {
    per_key: RawQuota,
    per_identifier: RawQuota,
    wrong_otps_per_reset: u32,
    /// Per-key limits by Capillary brand, for tenants on a connection with that brand.
    brands: BTreeMap<String, RawQuota>,
    /// Where limiter state lives: this process, or Redis shared by every replica.
    backend: Backend,
    redis: Option<RawRedis>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
enum Backend {
    #[default]
    Memory,
    Redis,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawRedis {
    url: String,
    cluster_nodes: Vec<String>,
    password_env: Option<String>,
    timeout_ms: u64,
    on_failure: FailurePolicy,
    replicas: u32,
    key_prefix: String,
}

impl Default for RawRedis {
    fn default() -> Self {
        RawRedis {
            url: "redis://127.0.0.1:6379".into(),
            cluster_nodes: Vec::new(),
            password_env: None,
            timeout_ms: 50,
            on_failure: FailurePolicy::Local,
            replicas: 3,
            key_prefix: "reset-gateway".into(),
        }
    }
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            per_key: RawQuota::new(1000, 60),
            per_identifier: RawQuota::new(5, 900),
            wrong_otps_per_reset: 5,
            brands: BTreeMap::new(),
            backend: Backend::Memory,
            redis: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSandbox {
    #[serde(default = "yes")]
    enabled: bool,
    listen: String,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConnection {
    base_url: String,
    #[serde(default)]
    timeouts: RawTimeouts,
    /// The most connections the gateway holds open to the vendor (`DEFAULT_MAX_CONNECTIONS`).
    max_connections: Option<usize>,
    /// The vendor's limit for this account, which the gateway's calls never pass in any window
    /// (limit/vendor_budget.rs); defaults to the vendor's own limit where it is documented
    /// (Capillary: 1000 per minute).
    outbound_limit: Option<RawQuota>,
    /// Exactly one vendor table: the vendor is whichever is present.
    #[serde(default)]
    cbss: Option<RawCbss>,
    #[serde(default)]
    capillary: Option<RawCapillary>,
    #[serde(default)]
    amsalem: Option<RawAmsalem>,
    #[serde(default)]
    hepsiburada: Option<RawHepsiburada>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAmsalem {
    #[serde(default)]
    format: WireFormat,
    api_username: Option<String>,
    secret_env: Option<String>,
    #[serde(default)]
    sandbox_credentials: bool,
    #[serde(default)]
    digest: RawRecipe,
    #[serde(default)]
    salt: SaltWidth,
}

/// Amsalem's digest recipe; the defaults are vendors.md's assumption.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawRecipe {
    parts: Vec<Part>,
    algorithm: Algorithm,
    mode: SigningMode,
    encoding: Encoding,
}

impl Default for RawRecipe {
    fn default() -> Self {
        let r = Recipe::amsalem_default();
        RawRecipe {
            parts: r.parts,
            algorithm: r.algorithm,
            mode: r.mode,
            encoding: r.encoding,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHepsiburada {
    #[serde(default)]
    format: WireFormat,
    #[serde(default = "yes")]
    request_from_identity_server: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCapillary {
    brand: String,
    #[serde(default)]
    variant: Variant,
    #[serde(default = "default_api_key_header")]
    api_key_header: String,
    api_key_env: Option<String>,
    #[serde(default)]
    sandbox_credentials: bool,
    #[serde(default = "default_capillary_session_secs")]
    session_lifetime_secs: u64,
}

fn default_api_key_header() -> String {
    "X-Api-Key".into()
}

fn default_capillary_session_secs() -> u64 {
    900
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawTimeouts {
    connect_ms: u64,
    read_ms: u64,
    write_ms: u64,
    total_ms: u64,
    idle_ms: u64,
}

impl Default for RawTimeouts {
    fn default() -> Self {
        let t = Timeouts::default();
        RawTimeouts {
            connect_ms: t.connect.as_millis() as u64,
            read_ms: t.read.as_millis() as u64,
            write_ms: t.write.as_millis() as u64,
            total_ms: t.total.as_millis() as u64,
            idle_ms: t.idle.as_millis() as u64,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCbss {
    client_code: Option<String>,
    #[serde(default)]
    format: WireFormat,
    #[serde(default)]
    signature_case: HexCase,
    #[serde(default = "default_cbss_offset")]
    utc_offset: String,
    #[serde(default = "default_session_secs")]
    session_lifetime_secs: u64,
    /// How long a CBSS one-time code lives (assumed: the excerpts do not say; the sandbox's).
    #[serde(default = "default_cbss_code_secs")]
    code_lifetime_secs: u64,
    /// Use the built-in sandbox's public demo credentials instead of secrets from the environment.
    #[serde(default)]
    sandbox_credentials: bool,
    client_key_env: Option<String>,
    login_salt_env: Option<String>,
    forgot_salt_env: Option<String>,
    /// The values CBSS's `Language` takes, the fallback first.
    languages: Option<Vec<String>>,
}

fn default_cbss_code_secs() -> u64 {
    300
}

fn default_cbss_offset() -> String {
    "+08:00".into()
}

fn default_session_secs() -> u64 {
    600
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTenant {
    name: String,
    connection: String,
    api_keys: Vec<RawApiKey>,
    #[serde(default)]
    reveal_unknown_identifiers: bool,
    #[serde(default = "yes")]
    vendor_details: bool,
    reset_lifetime_secs: Option<u64>,
    /// Overrides `limits.per_key` (and any brand's) for this tenant's keys.
    per_key_limit: Option<RawQuota>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApiKey {
    name: String,
    key_sha256: String,
    /// Overrides every other per-key limit for this key.
    limit: Option<RawQuota>,
}

// ---------------------------------------------------------------------------------------------
// The validated layer.

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub api_listen: String,
    pub admin_listen: String,
    pub threads: usize,
    pub max_body_bytes: usize,
    pub shutdown_grace: Duration,
    pub trusted_proxies: Vec<Cidr>,
    pub client_timeouts: crate::http::ClientTimeouts,
    /// The most client connections the API listener serves at once, over all its threads.
    pub max_connections: usize,
    /// TLS for the API listener, loaded and checked.
    pub tls: Option<Arc<pingora::tls::ServerConfig>>,
}

#[derive(Debug, Clone)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
}

#[derive(Debug, Clone)]
pub struct SandboxSettings {
    pub listen: String,
}

#[derive(Debug, Clone)]
pub enum VendorSettings {
    Cbss(CbssSettings),
    Capillary(CapillarySettings),
    Amsalem(AmsalemSettings),
    Hepsiburada(HepsiburadaSettings),
}

impl VendorSettings {
    /// The vendor's name, as in `vendors::NAMES`.
    pub fn name(&self) -> &'static str {
        match self {
            VendorSettings::Cbss(_) => "cbss",
            VendorSettings::Capillary(_) => "capillary",
            VendorSettings::Amsalem(_) => "amsalem",
            VendorSettings::Hepsiburada(_) => "hepsiburada",
        }
    }

    /// The vendor's own documented rate limit, used as the outbound budget by default.
    fn default_outbound(&self) -> Option<Quota> {
        match self {
            VendorSettings::Capillary(_) => Some(Quota::new(1000, Duration::from_secs(60))),
            VendorSettings::Cbss(_)
            | VendorSettings::Amsalem(_)
            | VendorSettings::Hepsiburada(_) => None,
        }
    }

    /// Whether two connections' settings name one vendor account, which the vendor counts as
    /// one (Capillary counts its limit per API key): the same vendor and the same credential.
    /// Hepsiburada has none, so its connections to one host are one account.
    pub fn same_account(&self, other: &VendorSettings) -> bool {
        match (self, other) {
            (VendorSettings::Cbss(a), VendorSettings::Cbss(b)) => {
                a.client_code == b.client_code && a.client_key.expose() == b.client_key.expose()
            }
            (VendorSettings::Capillary(a), VendorSettings::Capillary(b)) => {
                a.api_key.expose() == b.api_key.expose()
            }
            (VendorSettings::Amsalem(a), VendorSettings::Amsalem(b)) => {
                a.api_username == b.api_username
            }
            (VendorSettings::Hepsiburada(_), VendorSettings::Hepsiburada(_)) => true,
            _ => false,
        }
    }

    /// The most vendor calls one canonical step makes (Capillary's start: a token, then an
    /// OTP), all spent from the outbound budget at once. The adapters' `vendor_calls` say the
    /// same; building the gateway checks that they agree.
    pub fn most_calls_per_step(&self) -> u32 {
        match self {
            VendorSettings::Capillary(_) => 2,
            VendorSettings::Cbss(_)
            | VendorSettings::Amsalem(_)
            | VendorSettings::Hepsiburada(_) => 1,
        }
    }

    fn brand(&self) -> Option<&str> {
        match self {
            VendorSettings::Capillary(c) => Some(&c.brand),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ConnectionSettings {
    pub name: String,
    pub base_url: BaseUrl,
    pub timeouts: Timeouts,
    /// The most connections open to the vendor at once, over all worker threads (each holds its
    /// share, rounded up); a call finding them all busy waits up to `connect_ms` for one.
    pub max_connections: usize,
    /// The gateway's budget of calls to this vendor account, if any.
    pub outbound: Option<Quota>,
    pub vendor: VendorSettings,
}

impl ConnectionSettings {
    /// Whether both connections reach one vendor account: one host and port, one credential.
    pub fn same_account(&self, other: &ConnectionSettings) -> bool {
        self.base_url
            .host
            .eq_ignore_ascii_case(&other.base_url.host)
            && self.base_url.port == other.base_url.port
            && self.vendor.same_account(&other.vendor)
    }
}

#[derive(Debug, Clone)]
pub struct ApiKey {
    pub name: String,
    pub sha256: [u8; 32],
    /// This key's per-key limit, overrides resolved.
    pub quota: Quota,
}

#[derive(Debug, Clone)]
pub struct LimitSettings {
    pub per_identifier: Quota,
    /// The shared store, when `limits.backend = "redis"`.
    pub redis: Option<RedisSettings>,
}

#[derive(Debug, Clone)]
pub struct TenantSettings {
    pub name: String,
    pub connection: String,
    pub api_keys: Vec<ApiKey>,
    pub reveal_unknown_identifiers: bool,
    pub vendor_details: bool,
    pub reset_lifetime: Duration,
    /// Wrong one-time codes: `count` per reset, a cell returning only after a whole reset lifetime.
    pub wrong_otp_quota: Quota,
}

#[derive(Debug)]
pub struct Config {
    pub server: ServerSettings,
    pub log: LogSettings,
    pub token_keys: TokenKeys,
    pub token_keys_env: String,
    pub sandbox: Option<SandboxSettings>,
    pub limits: LimitSettings,
    pub connections: Vec<ConnectionSettings>,
    pub tenants: Vec<TenantSettings>,
}

impl Config {
    /// Reads and validates a config file; on failure, every problem found, one per entry.
    pub fn load(path: &str) -> Result<Config, Vec<String>> {
        let text =
            std::fs::read_to_string(path).map_err(|e| vec![format!("cannot read {path}: {e}")])?;
        Config::parse(&text).map_err(|problems| {
            problems
                .into_iter()
                .map(|p| format!("{path}: {p}"))
                .collect()
        })
    }

    pub fn parse(text: &str) -> Result<Config, Vec<String>> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| vec![describe_toml_error(&e)])?;
        validate(raw)
    }

    /// How long before its step's deadline a wait for a vendor connection gives up: room for
    /// what the step still does after a call that was never sent (giving a used reset id back
    /// takes a Redis round trip), so that it answers that 503 itself rather than be cut off as
    /// a 504. Two of the deadline sweeper's 5 ms passes beside the Redis bound, as the wait and
    /// the step may be woken on successive passes.
    pub fn connection_wait_margin(&self) -> Duration {
        self.limits
            .redis
            .as_ref()
            .map_or(Duration::ZERO, |redis| redis.timeout)
            + Duration::from_millis(10)
    }

    /// What a valid config still costs, in words for an operator: `run` logs each as a warning
    /// and `check-config` prints them.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.token_keys.is_ephemeral() {
            warnings.push(format!(
                "{} is not set: reset ids are sealed with a random key made at start-up. Resets \
                 in progress will not survive a restart and will not work across replicas. Set it \
                 to the output of `reset-gateway gen-token-key`.",
                self.token_keys_env
            ));
        }
        // On a loopback address the gateway is one process on one machine (the demo, a test); on
        // any other it may well be one of several replicas behind a Service.
        let reachable_from_elsewhere = self
            .server
            .api_listen
            .parse::<std::net::SocketAddr>()
            .is_ok_and(|address| !address.ip().is_loopback());
        // A call under way when SIGTERM arrives should end as itself: cut off by the process's
        // exit, a completion's vendor call may have changed the password while the app hears
        // nothing, and its reset id stays claimed, refusing the user's retry. (A warning, not a
        // refusal: a config an earlier release ran must still start.)
        for c in &self.connections {
            if self.server.shutdown_grace <= c.timeouts.total {
                warnings.push(format!(
                    "server.shutdown_grace_secs ({} s) is not longer than \
                     connections.{}.timeouts.total_ms ({} ms): a vendor call under way at \
                     shutdown may be cut off. Raise it above the longest total_ms.",
                    self.server.shutdown_grace.as_secs(),
                    c.name,
                    c.timeouts.total.as_millis()
                ));
            }
        }
        // Each worker thread takes its share of the limit, rounded up: fewer connections than
        // threads is one a thread, more than were asked for.
        if self.server.max_connections < self.server.threads {
            warnings.push(format!(
                "server.max_connections ({}) is below the {} worker threads (server.threads): \
                 each thread serves at least one connection, so up to {} are served at once.",
                self.server.max_connections, self.server.threads, self.server.threads
            ));
        }
        let wait_margin = self.connection_wait_margin();
        for c in &self.connections {
            // A call may wait up to `connect_ms` for a busy connection, then find none idle and
            // connect, up to `connect_ms` again, before its request goes out.
            if c.timeouts.connect * 2 >= c.timeouts.total {
                warnings.push(format!(
                    "connections.{}.timeouts.connect_ms ({} ms) is not under half its total_ms \
                     ({} ms): a step that waits for a free vendor connection and then connects \
                     (each up to connect_ms) may run out of time before it calls the vendor.",
                    c.name,
                    c.timeouts.connect.as_millis(),
                    c.timeouts.total.as_millis()
                ));
            }
            if c.timeouts.total <= wait_margin {
                warnings.push(format!(
                    "connections.{}.timeouts.total_ms ({} ms) leaves no time to wait for a busy \
                     vendor connection (a wait ends {} ms before the step's end, for the step to \
                     answer): a call that finds every connection busy is answered 503 at once.",
                    c.name,
                    c.timeouts.total.as_millis(),
                    wait_margin.as_millis()
                ));
            }
            if c.max_connections < self.server.threads {
                warnings.push(format!(
                    "connections.{}.max_connections ({}) is below the {} worker threads \
                     (server.threads): each thread holds at least one connection to the vendor, \
                     so up to {} are open at once.",
                    c.name, c.max_connections, self.server.threads, self.server.threads
                ));
            }
        }
        if self.limits.redis.is_none() && reachable_from_elsewhere {
            warnings.push(
                "limits.backend is \"memory\": each process keeps its own limits, its own counts \
                 of a reset's wrong codes and its own record of used reset ids. With more than \
                 one replica, a completed reset id can be completed again on another replica \
                 and each replica allows its own wrong codes: run one replica, or set \
                 limits.backend = \"redis\" so that the replicas share them."
                    .to_string(),
            );
        }
        warnings
    }
}

fn describe_toml_error(e: &toml::de::Error) -> String {
    // toml's message already names the key; it reports the position as a span, so add the line.
    let message = e.message().to_string();
    match e.span() {
        Some(span) => format!("{message} (at {})", line_col(e, span.start)),
        None => message,
    }
}

fn line_col(e: &toml::de::Error, _offset: usize) -> String {
    // The Display form starts with "TOML parse error at line L, column C".
    let shown = e.to_string();
    shown
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("TOML parse error at "))
        .unwrap_or("an unknown position")
        .to_string()
}

fn validate(raw: RawConfig) -> Result<Config, Vec<String>> {
    let mut problems = Vec::new();

    let s = &raw.server;
    for (key, addr) in [
        ("server.api_listen", &s.api_listen),
        ("server.admin_listen", &s.admin_listen),
    ] {
        if addr.parse::<std::net::SocketAddr>().is_err() {
            problems.push(format!(
                "{key}: `{addr}` is not an address like 127.0.0.1:8080"
            ));
        }
    }
    let threads = resolve_threads(&s.threads, &mut problems);
    if !(256..=1024 * 1024).contains(&s.max_body_bytes) {
        problems.push("server.max_body_bytes: must be between 256 and 1048576".into());
    }
    let trusted_proxies: Vec<Cidr> = s
        .trusted_proxies
        .iter()
        .filter_map(|p| {
            Cidr::parse(p)
                .map_err(|e| problems.push(format!("server.trusted_proxies: {e}")))
                .ok()
        })
        .collect();
    for (key, ms) in [
        ("server.header_timeout_ms", s.header_timeout_ms),
        ("server.body_timeout_ms", s.body_timeout_ms),
    ] {
        if !(100..=300_000).contains(&ms) {
            problems.push(format!("{key}: must be between 100 and 300000"));
        }
    }
    let tls = s.tls.as_ref().and_then(|t| {
        crate::tls::server_config(&t.cert_path, &t.key_path)
            .map_err(|e| problems.push(e))
            .ok()
    });
    if !(1..=1_000_000).contains(&s.max_connections) {
        problems.push("server.max_connections: must be between 1 and 1000000".into());
    }
    if s.shutdown_grace_secs > 300 {
        problems.push("server.shutdown_grace_secs: must be at most 300".into());
    }
    if let Err(why) = check_log_filter(&raw.log.level) {
        problems.push(format!("log.level: {why}"));
    }

    let keys_env = &raw.tokens.keys_env;
    let token_keys = match std::env::var(keys_env) {
        // Unset: a random key per process, so that the demo runs with no set-up (`warnings`
        // says what that costs). Set but empty is a Secret left unfilled: with more than one
        // replica, random keys would fail most resets at their next step.
        Err(std::env::VarError::NotPresent) if keys_env == DEFAULT_TOKEN_KEYS_ENV => {
            Some(TokenKeys::ephemeral())
        }
        // A variable of the operator's own naming that is not set is a misspelt name or a
        // Secret left out, not the demo: random keys would fail resets across replicas.
        Err(std::env::VarError::NotPresent) => {
            problems.push(format!(
                "tokens.keys_env: {keys_env} is not set: give it keys (`reset-gateway \
                 gen-token-key k1`); only the default, {DEFAULT_TOKEN_KEYS_ENV}, may be left \
                 unset for a random key per process"
            ));
            None
        }
        Err(std::env::VarError::NotUnicode(_)) => {
            problems.push(format!("tokens.keys_env: {keys_env} is not valid UTF-8"));
            None
        }
        Ok(spec) if spec.trim().is_empty() => {
            problems.push(format!(
                "tokens.keys_env: {keys_env} is set but empty: give it keys (`reset-gateway \
                 gen-token-key k1`), or leave it unset for a random key per process (one replica, \
                 resets lost on restart)"
            ));
            None
        }
        Ok(spec) => match TokenKeys::parse(&spec) {
            Ok(keys) => Some(keys),
            Err(e) => {
                problems.push(format!("tokens.keys_env ({keys_env}): {e}"));
                None
            }
        },
    };
    if !(10..=86_400).contains(&raw.tokens.lifetime_secs) {
        problems.push("tokens.lifetime_secs: must be between 10 and 86400".into());
    }

    let sandbox = match &raw.sandbox {
        Some(sb) if sb.enabled => {
            if sb.listen.parse::<std::net::SocketAddr>().is_err() {
                problems.push(format!("sandbox.listen: `{}` is not an address", sb.listen));
            }
            Some(SandboxSettings {
                listen: sb.listen.clone(),
            })
        }
        _ => None,
    };

    let l = &raw.limits;
    let default_per_key = l.per_key.validate("limits.per_key", &mut problems);
    let per_identifier = l
        .per_identifier
        .validate("limits.per_identifier", &mut problems);
    if !(1..=100).contains(&l.wrong_otps_per_reset) {
        problems.push("limits.wrong_otps_per_reset: must be between 1 and 100".into());
    }
    let redis = match (l.backend, &l.redis) {
        (Backend::Memory, Some(_)) => {
            problems.push("limits.redis: set limits.backend = \"redis\" to use it".into());
            None
        }
        (Backend::Memory, None) => None,
        (Backend::Redis, raw) => {
            let default = RawRedis::default();
            let r = raw.as_ref().unwrap_or(&default);
            if !(1..=5_000).contains(&r.timeout_ms) {
                problems.push("limits.redis.timeout_ms: must be between 1 and 5000".into());
            }
            if !(1..=10_000).contains(&r.replicas) {
                problems.push("limits.redis.replicas: must be between 1 and 10000".into());
            }
            if r.key_prefix.is_empty() || r.key_prefix.contains(['{', '}']) {
                problems.push("limits.redis.key_prefix: must be non-empty, without braces".into());
            }
            let password = r.password_env.as_deref().and_then(|name| {
                Secret::from_env(name)
                    .map_err(|e| problems.push(format!("limits.redis.password_env: {e}")))
                    .ok()
            });
            let settings = RedisSettings {
                url: r.url.clone(),
                cluster_nodes: r.cluster_nodes.clone(),
                password,
                timeout: Duration::from_millis(r.timeout_ms),
                on_failure: r.on_failure,
                replicas: r.replicas,
                key_prefix: r.key_prefix.clone(),
            };
            if let Err(e) = crate::redis_store::RedisStore::new(settings.clone()) {
                problems.push(e);
            }
            Some(settings)
        }
    };
    let brands: BTreeMap<&str, Quota> = l
        .brands
        .iter()
        .map(|(brand, q)| {
            (
                brand.as_str(),
                q.validate(&format!("limits.brands.{brand}"), &mut problems),
            )
        })
        .collect();

    // The connections that can reach no real vendor's accounts: those signing in with the
    // sandbox's public demo credentials, which only a sandbox takes, and those whose base_url is
    // the built-in sandbox (Hepsiburada's needs no credentials). Only they may take the README's
    // demo API keys.
    let on_sandbox: HashSet<&str> = raw
        .connections
        .iter()
        .filter(|(_, conn)| {
            let demo_credentials = conn.cbss.as_ref().is_some_and(|v| v.sandbox_credentials)
                || conn
                    .capillary
                    .as_ref()
                    .is_some_and(|v| v.sandbox_credentials)
                || conn.amsalem.as_ref().is_some_and(|v| v.sandbox_credentials);
            demo_credentials || points_at_sandbox(&conn.base_url, sandbox.as_ref())
        })
        .map(|(name, _)| name.as_str())
        .collect();

    let mut connections = Vec::new();
    for (name, conn) in &raw.connections {
        match validate_connection(name, conn, sandbox.is_some()) {
            Ok(c) => connections.push(c),
            Err(mut p) => problems.append(&mut p),
        }
    }

    // A step may wait for Redis twice before its vendor call (a completion's single-use claim,
    // then the outbound budget; a code's wrong-code cell, then the budget), all within the
    // connection's total_ms. Were two waits as long as the step, its deadline could pass after the
    // claim and before the vendor was asked: the id would stay claimed, and the user's retry be
    // refused as a second use of it.
    if let Some(redis) = &redis {
        for c in &connections {
            if redis.timeout * 2 >= c.timeouts.total {
                problems.push(format!(
                    "limits.redis.timeout_ms: {} ms must be under half of connections.{}.timeouts.total_ms ({} ms): a step may wait for Redis twice before it calls the vendor",
                    redis.timeout.as_millis(),
                    c.name,
                    c.timeouts.total.as_millis()
                ));
            }
        }
    }

    // A brand no connection has is a misspelt one, whose limit would silently never apply.
    // Read from the raw tables, so that a branded connection with another problem does not
    // also make its brand look unknown.
    for brand in brands.keys() {
        let branded = raw
            .connections
            .values()
            .filter_map(|c| c.capillary.as_ref())
            .any(|c| c.brand == *brand);
        if !branded {
            problems.push(format!(
                "limits.brands.{brand}: no connection has this brand (a Capillary connection's `brand`)"
            ));
        }
    }

    if raw.tenants.is_empty() {
        problems.push(
            "tenants: none configured (add a [[tenants]] entry): a gateway without tenants \
             refuses every request"
                .into(),
        );
    }
    let mut tenants = Vec::new();
    let mut tenant_names = HashSet::new();
    // Each key's digest, with the tenant that has it, so a duplicate names both.
    let mut key_hashes: std::collections::HashMap<[u8; 32], String> =
        std::collections::HashMap::new();
    for (i, t) in raw.tenants.iter().enumerate() {
        let at = format!("tenants[{i}] ({})", t.name);
        if !is_name(&t.name) {
            problems.push(format!(
                "{at}: name must be 1 to 64 letters, digits, '-' or '_'"
            ));
        }
        if !tenant_names.insert(t.name.clone()) {
            problems.push(format!("{at}: another tenant has this name"));
        }
        if !raw.connections.contains_key(&t.connection) {
            problems.push(format!(
                "{at}: connection `{}` is not defined",
                t.connection
            ));
        }
        if t.api_keys.is_empty() {
            problems.push(format!("{at}: api_keys must list at least one key"));
        }
        let brand = connections
            .iter()
            .find(|c: &&ConnectionSettings| c.name == t.connection)
            .and_then(|c| c.vendor.brand());
        let tenant_quota = match t.per_key_limit {
            Some(q) => q.validate(&format!("{at}.per_key_limit"), &mut problems),
            None => brand
                .and_then(|b| brands.get(b).copied())
                .unwrap_or(default_per_key),
        };
        let mut keys = Vec::new();
        let mut key_names = HashSet::new();
        for key in &t.api_keys {
            if !key_names.insert(key.name.as_str()) {
                problems.push(format!("{at}: two api keys are named `{}`", key.name));
            }
            let quota = match key.limit {
                Some(q) => q.validate(&format!("{at}.api_keys.{}.limit", key.name), &mut problems),
                None => tenant_quota,
            };
            match decode_sha256(&key.key_sha256) {
                Some(sha) => {
                    if !on_sandbox.contains(t.connection.as_str()) && is_public_demo_key(&sha) {
                        problems.push(format!(
                            "{at}: api key `{}` is a demo key printed in the README, which anyone \
                             may send: it is accepted only on a connection to the built-in \
                             sandbox (`reset-gateway hash-key` makes a real key's hash)",
                            key.name
                        ));
                    }
                    match key_hashes.entry(sha) {
                        std::collections::hash_map::Entry::Occupied(first) => {
                            problems.push(format!(
                                "{at}: api key `{}` is the same key as {}",
                                key.name,
                                first.get()
                            ))
                        }
                        std::collections::hash_map::Entry::Vacant(slot) => {
                            slot.insert(format!("tenant {} (key `{}`)", t.name, key.name));
                        }
                    }
                    keys.push(ApiKey {
                        name: key.name.clone(),
                        sha256: sha,
                        quota,
                    });
                }
                None => problems.push(format!(
                    "{at}: api key `{}`: key_sha256 must be 64 hex digits (see `reset-gateway hash-key`)",
                    key.name
                )),
            }
        }
        // Checked only where the tenant sets it: tokens.lifetime_secs, the default, is checked
        // once above, not blamed on every tenant that inherits it.
        let lifetime = t.reset_lifetime_secs.unwrap_or(raw.tokens.lifetime_secs);
        if t.reset_lifetime_secs.is_some() && !(1..=86_400).contains(&lifetime) {
            problems.push(format!(
                "{at}: reset_lifetime_secs must be between 1 and 86400"
            ));
        }
        // Out of range, the lifetime was refused above; kept in range here so that the quota
        // below is computed without overflow for the rest of the problems to be reported.
        let lifetime = lifetime.clamp(1, 86_400);
        tenants.push(TenantSettings {
            name: t.name.clone(),
            connection: t.connection.clone(),
            api_keys: keys,
            reveal_unknown_identifiers: t.reveal_unknown_identifiers,
            vendor_details: t.vendor_details,
            reset_lifetime: Duration::from_secs(lifetime),
            wrong_otp_quota: Quota::new(
                l.wrong_otps_per_reset.max(1),
                Duration::from_secs(lifetime) * l.wrong_otps_per_reset.max(1),
            ),
        });
    }

    if problems.is_empty() {
        Ok(Config {
            server: ServerSettings {
                api_listen: s.api_listen.clone(),
                admin_listen: s.admin_listen.clone(),
                threads,
                max_body_bytes: s.max_body_bytes,
                shutdown_grace: Duration::from_secs(s.shutdown_grace_secs),
                max_connections: s.max_connections,
                trusted_proxies,
                client_timeouts: crate::http::ClientTimeouts {
                    header: Duration::from_millis(s.header_timeout_ms),
                    body: Duration::from_millis(s.body_timeout_ms),
                },
                tls,
            },
            log: LogSettings {
                format: raw.log.format,
                level: raw.log.level.clone(),
            },
            token_keys: token_keys.expect("no problems means the keys parsed"),
            token_keys_env: raw.tokens.keys_env.clone(),
            sandbox,
            limits: LimitSettings {
                per_identifier,
                redis,
            },
            connections,
            tenants,
        })
    } else {
        Err(problems)
    }
}

fn validate_connection(
    name: &str,
    conn: &RawConnection,
    sandbox_enabled: bool,
) -> Result<ConnectionSettings, Vec<String>> {
    let at = format!("connections.{name}");
    let mut problems = Vec::new();
    if !is_name(name) {
        problems.push(format!(
            "{at}: name must be 1 to 64 letters, digits, '-' or '_'"
        ));
    }
    let base_url = BaseUrl::parse(&conn.base_url)
        .map_err(|e| problems.push(format!("{at}.base_url: {e}")))
        .ok();
    let t = &conn.timeouts;
    for (key, ms) in [
        ("connect_ms", t.connect_ms),
        ("read_ms", t.read_ms),
        ("write_ms", t.write_ms),
        ("total_ms", t.total_ms),
        ("idle_ms", t.idle_ms),
    ] {
        if !(1..=300_000).contains(&ms) {
            problems.push(format!("{at}.timeouts.{key}: must be between 1 and 300000"));
        }
    }
    let timeouts = Timeouts {
        connect: Duration::from_millis(t.connect_ms),
        read: Duration::from_millis(t.read_ms),
        write: Duration::from_millis(t.write_ms),
        total: Duration::from_millis(t.total_ms),
        idle: Duration::from_millis(t.idle_ms),
    };
    let max_connections = conn
        .max_connections
        .unwrap_or(crate::upstream::DEFAULT_MAX_CONNECTIONS);
    if !(1..=MAX_VENDOR_CONNECTIONS).contains(&max_connections) {
        problems.push(format!(
            "{at}.max_connections: must be between 1 and {MAX_VENDOR_CONNECTIONS}"
        ));
    }
    let tables = [
        conn.cbss.is_some(),
        conn.capillary.is_some(),
        conn.amsalem.is_some(),
        conn.hepsiburada.is_some(),
    ];
    let vendor = match tables.iter().filter(|t| **t).count() {
        0 => {
            problems.push(format!(
                "{at}: add one vendor's table: [{at}.cbss], [{at}.capillary], [{at}.amsalem] or [{at}.hepsiburada]"
            ));
            None
        }
        1 => {
            if let Some(raw) = &conn.cbss {
                validate_cbss(&at, raw, sandbox_enabled, &mut problems).map(VendorSettings::Cbss)
            } else if let Some(raw) = &conn.capillary {
                validate_capillary(&at, raw, sandbox_enabled, &mut problems)
                    .map(VendorSettings::Capillary)
            } else if let Some(raw) = &conn.amsalem {
                validate_amsalem(&at, raw, sandbox_enabled, &mut problems)
                    .map(VendorSettings::Amsalem)
            } else {
                conn.hepsiburada.as_ref().map(|raw| {
                    VendorSettings::Hepsiburada(HepsiburadaSettings {
                        format: raw.format,
                        request_from_identity_server: raw.request_from_identity_server,
                    })
                })
            }
        }
        _ => {
            problems.push(format!("{at}: a connection has exactly one vendor table"));
            None
        }
    };
    let outbound = conn
        .outbound_limit
        .map(|q| q.validate(&format!("{at}.outbound_limit"), &mut problems));
    if let (Some(quota), Some(vendor)) = (outbound, &vendor) {
        let most = vendor.most_calls_per_step();
        if quota.count < most && conn.outbound_limit.is_some_and(|q| q.count > 0) {
            problems.push(format!(
                "{at}.outbound_limit: count must be at least {most}: one {} step makes {most} \
                 calls, spent together, and a smaller budget would refuse it every time",
                vendor.name()
            ));
        }
    }
    match (problems.is_empty(), base_url, vendor) {
        (true, Some(base_url), Some(vendor)) => Ok(ConnectionSettings {
            name: name.to_string(),
            base_url,
            timeouts,
            max_connections,
            outbound: outbound.or_else(|| vendor.default_outbound()),
            vendor,
        }),
        _ => Err(problems),
    }
}

/// The most `connections.NAME.max_connections` may be: more than the ports one address has to
/// reach one vendor address with.
const MAX_VENDOR_CONNECTIONS: usize = 65_536;

/// The level words a tracing filter knows.
const LOG_LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// The API keys of the demo tenants in gateway.toml. The README prints them, so anyone may send
/// them: a tenant on a real vendor must never accept one.
const PUBLIC_DEMO_KEYS: [&str; 5] = [
    "demo-cbss-key",
    "demo-cbss-xml-key",
    "demo-capillary-key",
    "demo-amsalem-key",
    "demo-hepsiburada-key",
];

fn is_public_demo_key(sha: &[u8; 32]) -> bool {
    use sha2::Digest;
    PUBLIC_DEMO_KEYS
        .iter()
        .any(|key| sha2::Sha256::digest(key.as_bytes()).as_slice() == sha)
}

/// Whether a connection's base_url is the built-in sandbox: its address (a loopback one when it
/// listens on every address, `localhost` when on a loopback one) and port, over plain HTTP.
fn points_at_sandbox(base_url: &str, sandbox: Option<&SandboxSettings>) -> bool {
    let (Some(sandbox), Ok(url)) = (sandbox, BaseUrl::parse(base_url)) else {
        return false;
    };
    let Ok(listen) = sandbox.listen.parse::<std::net::SocketAddr>() else {
        return false;
    };
    let host_is_the_sandbox = match url.host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip == listen.ip() || (listen.ip().is_unspecified() && ip.is_loopback()),
        Err(_) => {
            url.host.eq_ignore_ascii_case("localhost")
                && (listen.ip().is_loopback() || listen.ip().is_unspecified())
        }
    };
    !url.tls && url.port == listen.port() && host_is_the_sandbox
}

/// Checks a tracing filter (`info`, `warn,reset_gateway=debug`). The filter reads a bare word
/// that is not a level as a module name, to log at every level with everything else silenced,
/// so a mistyped level (`warning`, `inf`) would silence the gateway. A bare directive must be a
/// level, a level's number, or look like a module path (`reset_gateway`, `a::b`, `x[span]`);
/// any other module is named with its level (`pingora=debug`).
fn check_log_filter(filter: &str) -> Result<(), String> {
    if tracing_subscriber::EnvFilter::try_new(filter).is_err() {
        return Err(format!("`{filter}` is not a log filter"));
    }
    // A filter with no directive at all reads as "off" and would silence every log line.
    if filter.split(',').all(|d| d.trim().is_empty()) {
        return Err(format!(
            "`{filter}` names no level: give one (one of {})",
            LOG_LEVELS.join(", ")
        ));
    }
    let plausible = |word: &str| {
        LOG_LEVELS.iter().any(|l| l.eq_ignore_ascii_case(word))
            || word.parse::<u8>().is_ok_and(|n| n <= 5)
            || word.contains(['_', ':', '['])
    };
    let unknown = filter
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty() && !d.contains('='))
        .find(|d| !plausible(d));
    match unknown {
        Some(word) => Err(format!(
            "`{word}` is not a level (one of {}; a module's own level is module=level)",
            LOG_LEVELS.join(", ")
        )),
        None => Ok(()),
    }
}

fn validate_cbss(
    at: &str,
    raw: &RawCbss,
    sandbox_enabled: bool,
    problems: &mut Vec<String>,
) -> Option<CbssSettings> {
    let at = format!("{at}.cbss");
    let utc_offset = parse_offset(&raw.utc_offset);
    if utc_offset.is_none() {
        problems.push(format!(
            "{at}.utc_offset: `{}` is not like +08:00",
            raw.utc_offset
        ));
    }
    if !(10..=86_400).contains(&raw.session_lifetime_secs) {
        problems.push(format!(
            "{at}.session_lifetime_secs: must be between 10 and 86400"
        ));
    }
    if !(1..=86_400).contains(&raw.code_lifetime_secs) {
        problems.push(format!(
            "{at}.code_lifetime_secs: must be between 1 and 86400"
        ));
    }
    let languages: Vec<&'static str> = match &raw.languages {
        None => crate::language::DEFAULT_SERVED.to_vec(),
        Some(list) => {
            if list.is_empty() || list.len() > 64 {
                problems.push(format!(
                    "{at}.languages: name 1 to 64 languages, the fallback first"
                ));
            }
            for lang in list {
                if !crate::language::is_vendor_form(lang) {
                    problems.push(format!(
                        "{at}.languages: `{}` is not in CBSS's form, like en_US",
                        lang.escape_debug()
                    ));
                }
            }
            if raw.sandbox_credentials && !list.iter().all(|l| sandbox::cbss::language_ok(l)) {
                problems.push(format!(
                    "{at}.languages: the sandbox's CBSS takes only {}",
                    sandbox::cbss::LANGUAGES.join(", ")
                ));
            }
            // Leaked once per config load (a process loads one, and never reloads it): a request
            // borrows its language from these for the life of the process, with no allocation.
            list.iter()
                .map(|l| &*Box::leak(l.clone().into_boxed_str()))
                .collect()
        }
    };
    let (client_code, client_key, login_salt, forgot_salt) = if raw.sandbox_credentials {
        if !sandbox_enabled {
            problems.push(format!(
                "{at}.sandbox_credentials: needs the built-in sandbox ([sandbox] enabled)"
            ));
        }
        let env_given = raw.client_key_env.is_some()
            || raw.login_salt_env.is_some()
            || raw.forgot_salt_env.is_some();
        if env_given {
            problems.push(format!(
                "{at}: sandbox_credentials and *_env secrets exclude each other"
            ));
        }
        // The sandbox checks each client's signatures in one case, as a vendor would: the demo
        // client that signs in the case this connection is set to.
        let demo = sandbox::cbss::demo_client(raw.signature_case);
        (
            raw.client_code
                .clone()
                .unwrap_or_else(|| demo.client_code.to_string()),
            Some(Secret::new(demo.client_key)),
            Some(Secret::new(demo.login_salt)),
            Some(Secret::new(demo.forgot_salt)),
        )
    } else {
        let mut secret = |key: &str, env: &Option<String>| match env {
            Some(name) => Secret::from_env(name)
                .map_err(|e| problems.push(format!("{at}.{key}: {e}")))
                .ok(),
            None => {
                problems.push(format!(
                    "{at}.{key}: name the environment variable that holds it"
                ));
                None
            }
        };
        let key = secret("client_key_env", &raw.client_key_env);
        let login = secret("login_salt_env", &raw.login_salt_env);
        let forgot = secret("forgot_salt_env", &raw.forgot_salt_env);
        let code = raw.client_code.clone().unwrap_or_default();
        if code.is_empty() {
            problems.push(format!("{at}.client_code: required"));
        }
        (code, key, login, forgot)
    };
    Some(CbssSettings {
        client_code,
        client_key: client_key?,
        login_salt: login_salt?,
        forgot_salt: forgot_salt?,
        format: raw.format,
        signature_case: raw.signature_case,
        utc_offset: utc_offset?,
        session_lifetime: Duration::from_secs(raw.session_lifetime_secs),
        code_lifetime: Duration::from_secs(raw.code_lifetime_secs),
        languages,
    })
}

fn validate_capillary(
    at: &str,
    raw: &RawCapillary,
    sandbox_enabled: bool,
    problems: &mut Vec<String>,
) -> Option<CapillarySettings> {
    let at = format!("{at}.capillary");
    if raw.brand.is_empty() || raw.brand.len() > 128 {
        problems.push(format!("{at}.brand: required, at most 128 characters"));
    }
    // A field name is an RFC 9110 token. The headers the gateway writes itself, and those that
    // frame or route the request, would carry the key where the vendor reads something else.
    const OWN_HEADERS: [&str; 10] = [
        "host",
        "content-length",
        "content-type",
        "accept",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "upgrade",
        "te",
        "x-request-id",
    ];
    let name = raw.api_key_header.as_str();
    let is_token = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !is_token {
        problems.push(format!("{at}.api_key_header: must be a header name"));
    } else if OWN_HEADERS.iter().any(|h| h.eq_ignore_ascii_case(name)) {
        problems.push(format!(
            "{at}.api_key_header: `{name}` is a header the gateway writes itself or that frames \
             the request: name the one Capillary reads the key from (X-Api-Key by default)"
        ));
    }
    if !(10..=86_400).contains(&raw.session_lifetime_secs) {
        problems.push(format!(
            "{at}.session_lifetime_secs: must be between 10 and 86400"
        ));
    }
    let api_key = match (raw.sandbox_credentials, &raw.api_key_env) {
        (true, None) => {
            if !sandbox_enabled {
                problems.push(format!(
                    "{at}.sandbox_credentials: needs the built-in sandbox ([sandbox] enabled)"
                ));
            }
            Some(Secret::new(sandbox::capillary::DEMO_API_KEY))
        }
        (true, Some(_)) => {
            problems.push(format!(
                "{at}: sandbox_credentials and api_key_env exclude each other"
            ));
            None
        }
        (false, Some(env)) => Secret::from_env(env)
            .map_err(|e| problems.push(format!("{at}.api_key_env: {e}")))
            .ok(),
        (false, None) => {
            problems.push(format!(
                "{at}.api_key_env: name the environment variable that holds it"
            ));
            None
        }
    };
    Some(CapillarySettings {
        brand: raw.brand.clone(),
        variant: raw.variant,
        api_key: api_key?,
        api_key_header: raw.api_key_header.clone(),
        session_lifetime: Duration::from_secs(raw.session_lifetime_secs),
    })
}

fn validate_amsalem(
    at: &str,
    raw: &RawAmsalem,
    sandbox_enabled: bool,
    problems: &mut Vec<String>,
) -> Option<AmsalemSettings> {
    let at = format!("{at}.amsalem");
    let recipe = Recipe {
        parts: raw.digest.parts.clone(),
        algorithm: raw.digest.algorithm,
        mode: raw.digest.mode,
        encoding: raw.digest.encoding,
    };
    if let Err(e) = recipe.validate() {
        problems.push(format!("{at}.digest: {e}"));
    }
    let (api_username, secret) = if raw.sandbox_credentials {
        if !sandbox_enabled {
            problems.push(format!(
                "{at}.sandbox_credentials: needs the built-in sandbox ([sandbox] enabled)"
            ));
        }
        if raw.secret_env.is_some() {
            problems.push(format!(
                "{at}: sandbox_credentials and secret_env exclude each other"
            ));
        }
        (
            raw.api_username
                .clone()
                .unwrap_or_else(|| sandbox::amsalem::DEMO_API_USERNAME.to_string()),
            Some(Secret::new(sandbox::amsalem::DEMO_SECRET)),
        )
    } else {
        let secret = match &raw.secret_env {
            Some(env) => Secret::from_env(env)
                .map_err(|e| problems.push(format!("{at}.secret_env: {e}")))
                .ok(),
            None => {
                problems.push(format!(
                    "{at}.secret_env: name the environment variable that holds it"
                ));
                None
            }
        };
        let user = raw.api_username.clone().unwrap_or_default();
        if user.is_empty() {
            problems.push(format!("{at}.api_username: required"));
        }
        (user, secret)
    };
    Some(AmsalemSettings {
        api_username,
        secret: secret?,
        format: raw.format,
        recipe,
        salt: raw.salt,
    })
}

fn parse_offset(s: &str) -> Option<FixedOffset> {
    let sign = match s.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let (h, m) = s[1..].split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let h: i32 = h.parse().ok()?;
    let m: i32 = m.parse().ok()?;
    if h > 14 || m > 59 {
        return None;
    }
    FixedOffset::east_opt(sign * (h * 3600 + m * 60))
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn decode_sha256(s: &str) -> Option<[u8; 32]> {
    let bytes = hex::decode(s).ok()?;
    bytes.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[sandbox]
listen = "127.0.0.1:1"

[connections.c1]
base_url = "http://127.0.0.1:1/cbss/"

[connections.c1.cbss]
sandbox_credentials = true

[[tenants]]
name = "t1"
connection = "c1"
api_keys = [{ name = "k", key_sha256 = "0000000000000000000000000000000000000000000000000000000000000000" }]
"#;

    #[test]
    fn threads_default_to_the_cpus_the_process_may_use() {
        let cpus = std::thread::available_parallelism()
            .unwrap()
            .get()
            .min(MAX_THREADS);
        assert_eq!(Config::parse(MINIMAL).unwrap().server.threads, cpus);
        let auto = Config::parse(&format!("[server]\nthreads = \"auto\"\n{MINIMAL}")).unwrap();
        assert_eq!(auto.server.threads, cpus);
        let three = Config::parse(&format!("[server]\nthreads = 3\n{MINIMAL}")).unwrap();
        assert_eq!(three.server.threads, 3);
    }

    #[test]
    fn a_thread_count_other_than_auto_or_1_to_256_is_a_clear_problem() {
        for bad in ["0", "257", "-1", "2.5", "\"many\"", "\"AUTO\"", "[2]"] {
            let problems =
                Config::parse(&format!("[server]\nthreads = {bad}\n{MINIMAL}")).unwrap_err();
            assert!(
                problems
                    .iter()
                    .any(|p| p == "server.threads: must be \"auto\" or a number between 1 and 256"),
                "threads = {bad}: {problems:?}"
            );
        }
    }

    #[test]
    fn vendor_connections_default_to_1024_and_take_1_to_65536() {
        let with = |line: &str| {
            Config::parse(
                &MINIMAL.replace("[connections.c1]\n", &format!("[connections.c1]\n{line}\n")),
            )
        };
        assert_eq!(with("").unwrap().connections[0].max_connections, 1024);
        assert_eq!(
            with("max_connections = 8").unwrap().connections[0].max_connections,
            8
        );
        for bad in ["0", "65537"] {
            let problems = with(&format!("max_connections = {bad}")).unwrap_err();
            assert_eq!(
                problems,
                ["connections.c1.max_connections: must be between 1 and 65536"],
                "{bad}"
            );
        }
        assert!(with("max_connections = -1").is_err());
        // Fewer than the threads: each thread still holds one, and the operator is told.
        let warnings = Config::parse(&format!(
            "[server]\nthreads = 4\n{}",
            MINIMAL.replace(
                "[connections.c1]\n",
                "[connections.c1]\nmax_connections = 2\n"
            )
        ))
        .unwrap()
        .warnings();
        assert!(
            warnings.iter().any(|w| w
                .starts_with("connections.c1.max_connections (2) is below the 4 worker threads")),
            "{warnings:?}"
        );
    }

    #[test]
    fn a_connect_timeout_not_under_half_the_step_is_warned_of() {
        let warnings = |connect_ms: u64| {
            Config::parse(&format!(
                "{MINIMAL}\n[connections.c1.timeouts]\nconnect_ms = {connect_ms}\ntotal_ms = 1000\n"
            ))
            .unwrap()
            .warnings()
        };
        let half = warnings(500);
        assert!(
            half.iter().any(|w| w.starts_with(
                "connections.c1.timeouts.connect_ms (500 ms) is not under half its total_ms (1000 ms)"
            )),
            "{half:?}"
        );
        assert!(!warnings(499).iter().any(|w| w.contains("connect_ms")));
        // A step no longer than the margin a wait for a vendor connection leaves it.
        let short = Config::parse(&format!(
            "{MINIMAL}\n[connections.c1.timeouts]\nconnect_ms = 5\ntotal_ms = 10\n"
        ))
        .unwrap()
        .warnings();
        assert!(
            short.iter().any(|w| w.starts_with(
                "connections.c1.timeouts.total_ms (10 ms) leaves no time to wait for a busy vendor connection"
            )),
            "{short:?}"
        );
        assert!(!warnings(499).iter().any(|w| w.contains("leaves no time")));
    }

    #[test]
    fn the_sandbox_client_signs_in_the_connections_hex_case() {
        let client = |case: &str| {
            let text = MINIMAL.replace(
                "sandbox_credentials = true",
                &format!("sandbox_credentials = true\nsignature_case = \"{case}\""),
            );
            let c = Config::parse(&text).unwrap();
            let VendorSettings::Cbss(cbss) = &c.connections[0].vendor else {
                panic!("a CBSS connection");
            };
            cbss.client_code.clone()
        };
        assert_eq!(client("lower"), "DEMO");
        assert_eq!(client("upper"), "DEMO-UPPER");
    }

    #[test]
    fn a_minimal_config_validates_with_defaults() {
        let c = Config::parse(MINIMAL).unwrap();
        assert_eq!(c.server.api_listen, "127.0.0.1:8080");
        assert_eq!(c.server.max_body_bytes, 16384);
        assert_eq!(c.tenants[0].reset_lifetime, Duration::from_secs(600));
        let VendorSettings::Cbss(cbss) = &c.connections[0].vendor else {
            panic!("a CBSS connection");
        };
        assert_eq!(cbss.client_code, "DEMO");
        assert_eq!(
            c.tenants[0].api_keys[0].quota,
            Quota::new(1000, Duration::from_secs(60))
        );
        assert_eq!(
            c.limits.per_identifier,
            Quota::new(5, Duration::from_secs(900))
        );
        assert_eq!(c.connections[0].outbound, None);
        assert!(!format!("{:?}", c.connections).contains(sandbox::cbss::DEMO_CLIENT.client_key));
    }

    #[test]
    fn redis_waits_must_leave_a_step_time_for_its_vendor_call() {
        let with = |timeout_ms: u64, total_ms: u64| {
            Config::parse(&format!(
                "[limits]\nbackend = \"redis\"\n[limits.redis]\nurl = \"redis://127.0.0.1:6379\"\n\
                 timeout_ms = {timeout_ms}\n\
                 {MINIMAL}\n[connections.c1.timeouts]\ntotal_ms = {total_ms}\n"
            ))
        };
        assert!(with(499, 1000).is_ok(), "{:?}", with(499, 1000).err());
        let problems = with(500, 1000).unwrap_err();
        assert_eq!(
            problems,
            vec![
                "limits.redis.timeout_ms: 500 ms must be under half of connections.c1.timeouts.total_ms (1000 ms): a step may wait for Redis twice before it calls the vendor"
                    .to_string()
            ]
        );
    }

    #[test]
    fn an_unknown_key_is_named_with_its_line() {
        let text = MINIMAL.replace("api_keys", "colour = 1\napi_keys");
        let err = Config::parse(&text).unwrap_err();
        assert_eq!(err.len(), 1);
        assert!(err[0].contains("unknown field `colour`"), "{}", err[0]);
        assert!(err[0].contains("line 14"), "{}", err[0]);
    }

    #[test]
    fn every_semantic_problem_is_listed() {
        let text = MINIMAL
            .replace("connection = \"c1\"", "connection = \"nope\"")
            .replace(
                "0000000000000000000000000000000000000000000000000000000000000000",
                "xyz",
            )
            .replace("http://127.0.0.1:1/cbss/", "ftp://x");
        let err = Config::parse(&text).unwrap_err();
        assert_eq!(err.len(), 3, "{err:#?}");
    }

    #[test]
    fn amsalem_salts_default_to_int64_and_take_int32() {
        let amsalem = |salt_line: &str| {
            let text = MINIMAL.replace(
                "[connections.c1.cbss]\nsandbox_credentials = true",
                &format!("[connections.c1.amsalem]\nsandbox_credentials = true\n{salt_line}"),
            );
            Config::parse(&text).map(|c| match &c.connections[0].vendor {
                VendorSettings::Amsalem(a) => a.salt,
                _ => panic!("an Amsalem connection"),
            })
        };
        assert_eq!(amsalem("").unwrap(), SaltWidth::Int64);
        assert_eq!(amsalem("salt = \"int32\"").unwrap(), SaltWidth::Int32);
        let err = amsalem("salt = \"int16\"").unwrap_err();
        assert!(err[0].contains("unknown variant `int16`"), "{err:?}");
    }

    #[test]
    fn a_problem_is_named_once_where_it_is_and_a_shared_key_names_both_tenants() {
        let second = "\n[[tenants]]\nname = \"t2\"\nconnection = \"c1\"\napi_keys = [{ name = \"k2\", key_sha256 = \"0000000000000000000000000000000000000000000000000000000000000000\" }]\n";
        let err = Config::parse(&format!("{MINIMAL}{second}")).unwrap_err();
        assert_eq!(err.len(), 1, "{err:?}");
        assert!(
            err[0].contains("`k2` is the same key as tenant t1 (key `k`)"),
            "{err:?}"
        );
        // An out-of-range default lifetime is one problem, not one per tenant inheriting it.
        let err = Config::parse(&format!("[tokens]\nlifetime_secs = 0\n{MINIMAL}")).unwrap_err();
        assert_eq!(err, ["tokens.lifetime_secs: must be between 10 and 86400"]);
        let own = MINIMAL.replace(
            "connection = \"c1\"",
            "connection = \"c1\"\nreset_lifetime_secs = 0",
        );
        let err = Config::parse(&own).unwrap_err();
        assert!(
            err[0].contains("reset_lifetime_secs must be between 1 and 86400"),
            "{err:?}"
        );
        // Past what a Duration holds once multiplied into the wrong-code quota: a problem, not
        // a panic.
        for huge in [
            format!("[tokens]\nlifetime_secs = {}\n{MINIMAL}", i64::MAX),
            MINIMAL.replace(
                "connection = \"c1\"",
                &format!("connection = \"c1\"\nreset_lifetime_secs = {}", i64::MAX),
            ),
        ] {
            let err = Config::parse(&huge).unwrap_err();
            assert!(
                err[0].contains("lifetime_secs") && err[0].contains("must be between"),
                "{err:?}"
            );
        }
    }

    #[test]
    fn the_readme_demo_keys_and_demo_credentials_work_only_on_the_sandbox() {
        let demo_key = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"demo-cbss-key"));
        let with_demo_key = MINIMAL.replace(&"0".repeat(64), &demo_key);
        assert!(Config::parse(&with_demo_key).is_ok());
        // A real vendor behind the README's key: anyone could reset its users' passwords.
        let real_vendor = with_demo_key
            .replace("http://127.0.0.1:1/cbss/", "https://cbss.example.com/api/")
            .replace(
                "sandbox_credentials = true",
                "client_code = \"ACME\"\nclient_key_env = \"K\"\nlogin_salt_env = \"L\"\nforgot_salt_env = \"F\"",
            );
        let err = Config::parse(&real_vendor).unwrap_err();
        assert!(
            err.iter().any(|e| e
                .starts_with("tenants[0] (t1): api key `k` is a demo key printed in the README")),
            "{err:?}"
        );
        // A connection on the sandbox's public credentials reaches no real account, wherever
        // it points (a sandbox process of its own, say).
        let own_sandbox = with_demo_key.replace("http://127.0.0.1:1/", "http://127.0.0.1:2/");
        assert!(Config::parse(&own_sandbox).is_ok());
        // Hepsiburada's needs no credentials: its demo key only on the built-in sandbox, at
        // its address (or localhost, when that is loopback).
        let hepsiburada = |base_url: &str| {
            let demo = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
                b"demo-hepsiburada-key",
            ));
            MINIMAL
                .replace(&"0".repeat(64), &demo)
                .replace("http://127.0.0.1:1/cbss/", base_url)
                .replace(
                    "[connections.c1.cbss]\nsandbox_credentials = true",
                    "[connections.c1.hepsiburada]",
                )
        };
        for on_it in [
            "http://127.0.0.1:1/hepsiburada/",
            "http://localhost:1/hepsiburada/",
        ] {
            assert!(Config::parse(&hepsiburada(on_it)).is_ok(), "{on_it}");
        }
        for off_it in [
            "https://api.hepsiburada.example/",
            "http://127.0.0.1:2/hepsiburada/",
            "http://127.0.0.2:1/hepsiburada/",
            "https://127.0.0.1:1/hepsiburada/",
        ] {
            let err = Config::parse(&hepsiburada(off_it)).unwrap_err();
            assert_eq!(err.len(), 1, "{off_it}: {err:?}");
            assert!(
                err[0].contains("is a demo key printed in the README"),
                "{off_it}: {err:?}"
            );
        }
    }

    #[test]
    fn the_capillary_key_header_is_a_token_and_not_one_the_gateway_writes() {
        let header_problems = |name: &str| {
            let text = MINIMAL.replace(
                "[connections.c1.cbss]\nsandbox_credentials = true",
                &format!(
                    "[connections.c1.capillary]\nbrand = \"DocDemo\"\nsandbox_credentials = true\napi_key_header = \"{name}\""
                ),
            );
            match Config::parse(&text) {
                Ok(_) => Vec::new(),
                Err(problems) => problems,
            }
        };
        for good in ["X-Api-Key", "X_Cap.Key", "x-cap-key"] {
            assert_eq!(header_problems(good), Vec::<String>::new(), "{good}");
        }
        for framing in [
            "Content-Length",
            "host",
            "Transfer-Encoding",
            "Connection",
            "X-Request-Id",
        ] {
            let problems = header_problems(framing);
            assert!(
                problems.len() == 1
                    && problems[0].contains("is a header the gateway writes itself"),
                "{framing}: {problems:?}"
            );
        }
        for malformed in ["", "X Api", "X:Key", "X-Ключ"] {
            let problems = header_problems(malformed);
            assert_eq!(
                problems,
                ["connections.c1.capillary.api_key_header: must be a header name"],
                "{malformed}"
            );
        }
    }

    #[test]
    fn limits_that_cannot_hold_are_warned_of() {
        let warnings = |server: &str| {
            Config::parse(&format!("[server]\n{server}\n{MINIMAL}"))
                .unwrap()
                .warnings()
        };
        let below = warnings("threads = 4\nmax_connections = 3");
        assert!(
            below.iter().any(|w| w.starts_with(
                "server.max_connections (3) is below the 4 worker threads (server.threads)"
            )),
            "{below:?}"
        );
        assert!(!warnings("threads = 4\nmax_connections = 4")
            .iter()
            .any(|w| w.contains("max_connections")));
        // A vendor call still under way when the grace ends would be cut off.
        let grace = |secs: u64, total_ms: u64| {
            Config::parse(&format!(
                "[server]\nshutdown_grace_secs = {secs}\n{MINIMAL}\n[connections.c1.timeouts]\ntotal_ms = {total_ms}\n"
            ))
            .unwrap()
            .warnings()
            .into_iter()
            .filter(|w| w.contains("shutdown_grace_secs"))
            .collect::<Vec<_>>()
        };
        assert_eq!(grace(11, 10_000), Vec::<String>::new());
        let cut_off = grace(10, 10_000);
        assert_eq!(cut_off.len(), 1);
        assert!(
            cut_off[0].starts_with("server.shutdown_grace_secs (10 s) is not longer than connections.c1.timeouts.total_ms (10000 ms)"),
            "{cut_off:?}"
        );
        assert_eq!(grace(0, 1).len(), 1);
    }

    #[test]
    fn a_log_filter_takes_levels_and_targets_but_no_other_word() {
        for good in [
            "info",
            "WARN",
            "warn,reset_gateway=debug",
            "off",
            "reset_gateway::flow=trace",
            "reset_gateway",
            "info,reset_gateway::flow",
        ] {
            assert_eq!(check_log_filter(good), Ok(()), "{good}");
        }
        for bad in [
            "warning",
            "inf",
            "verbose",
            "info,debugg",
            "",
            " ",
            ",",
            " , ",
        ] {
            assert!(check_log_filter(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn offsets_parse() {
        assert_eq!(parse_offset("+08:00"), FixedOffset::east_opt(8 * 3600));
        assert_eq!(
            parse_offset("-03:30"),
            FixedOffset::east_opt(-(3 * 3600 + 1800))
        );
        assert!(parse_offset("08:00").is_none());
        assert!(parse_offset("+8").is_none());
    }
}
