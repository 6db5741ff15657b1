//! Starting the real binary (gateway or sandbox) and talking HTTP/1.1 to it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_reset-gateway");

/// The sandbox CBSS customer every test resets, and its password at the start.
pub const EMAIL: &str = "somchai@example.com";
pub const MOBILE: &str = "+66812345678";
pub const OLD_PASSWORD: &str = "Old-Passw0rd";

/// A child process that is killed when the test ends.
pub struct Proc {
    child: Child,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    fn spawn(mut cmd: Command, announce: &str) -> (Proc, String) {
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        let mut child = cmd.spawn().expect("the binary starts");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let sink = stderr.clone();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        loop {
            line.clear();
            let n = out.read_line(&mut line).expect("stdout readable");
            if n == 0 {
                let _ = child.wait();
                panic!(
                    "process exited before announcing; stderr:\n{}",
                    stderr.lock().unwrap().join("\n")
                );
            }
            if line.starts_with(announce) {
                break;
            }
        }
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = out.read_to_end(&mut sink);
        });
        (Proc { child, stderr }, line.trim().to_string())
    }

    /// Everything the process wrote to stderr so far.
    pub fn logs(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (TERM, INT, ...).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Waits up to `limit` for the process to exit; its exit code, or None if it has not.
    pub fn wait_for_exit(&mut self, limit: Duration) -> Option<i32> {
        let started = std::time::Instant::now();
        while started.elapsed() < limit {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status.code().unwrap_or(-1));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn addr_after(line: &str, key: &str) -> SocketAddr {
    let start = line
        .find(key)
        .unwrap_or_else(|| panic!("no {key} in {line}"))
        + key.len();
    let rest = &line[start..];
    let end = rest.find(' ').unwrap_or(rest.len());
    rest[..end].parse().expect("an address")
}

pub struct Sandbox {
    pub proc: Proc,
    pub addr: SocketAddr,
}

impl Sandbox {
    pub fn start() -> Sandbox {
        Sandbox::start_with_delay(0)
    }

    pub fn start_with_delay(delay_ms: u64) -> Sandbox {
        Sandbox::start_with(&["--delay-ms", &delay_ms.to_string()])
    }

    /// Starts the sandbox with extra command-line flags.
    pub fn start_with(flags: &[&str]) -> Sandbox {
        Sandbox::start_on("127.0.0.1:0", flags)
    }

    /// Starts the sandbox listening on `listen`, with extra command-line flags.
    pub fn start_on(listen: &str, flags: &[&str]) -> Sandbox {
        let mut cmd = Command::new(BIN);
        cmd.args(["sandbox", "--listen", listen]).args(flags);
        let (proc, line) = Proc::spawn(cmd, "reset-gateway sandbox listening");
        let addr = addr_after(&line, "http://");
        Sandbox { proc, addr }
    }

    pub fn url(&self, vendor: &str) -> String {
        format!("http://{}/{vendor}/", self.addr)
    }

    /// The OTP entries the sandbox "sent", oldest first.
    pub fn outbox(&self) -> Vec<serde_json::Value> {
        let r = request(self.addr, "GET", "/sandbox/outbox", &[], b"");
        assert_eq!(r.status, 200);
        serde_json::from_slice::<Vec<serde_json::Value>>(&r.body).unwrap()
    }

    /// How `vendor`'s last request was sent (`content_type`, and `language` for CBSS).
    pub fn last_request(&self, vendor: &str) -> serde_json::Value {
        let path = format!("/sandbox/{vendor}/last-request");
        let r = request(self.addr, "GET", &path, &[], b"");
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        r.json()
    }

    /// How many requests each sandbox vendor has received.
    pub fn calls(&self, vendor: &str) -> u64 {
        let r = request(self.addr, "GET", "/sandbox/calls", &[], b"");
        assert_eq!(r.status, 200);
        r.json()[vendor].as_u64().unwrap_or(0)
    }

    /// Makes the sandbox answer its next vendor request with `fault` (see the README).
    pub fn set_fault(&self, fault: &str) {
        let body = format!(r#"{{"fault":"{fault}","count":1}}"#);
        let r = request(self.addr, "POST", "/sandbox/faults", &[], body.as_bytes());
        assert_eq!(r.status, 200, "{fault}");
    }

    /// Makes the sandbox's Capillary answer its next business request with `code`.
    pub fn force_capillary_status(&self, code: u32) {
        self.force_capillary_answer(code, "Forced by the sandbox");
    }

    /// Makes the sandbox's Capillary answer its next business request with `code` and
    /// `message`.
    pub fn force_capillary_answer(&self, code: u32, message: &str) {
        self.force_capillary(serde_json::json!({ "code": code, "message": message }));
    }

    /// Makes the sandbox's Capillary answer its next business request with `code` under the
    /// HTTP status `http`.
    pub fn force_capillary_status_under(&self, code: u32, http: u16) {
        self.force_capillary(serde_json::json!({ "code": code, "http": http }));
    }

    fn force_capillary(&self, asked: serde_json::Value) {
        let body = asked.to_string();
        let r = request(
            self.addr,
            "POST",
            "/sandbox/capillary/next-status",
            &[],
            body.as_bytes(),
        );
        assert_eq!(r.status, 200);
    }

    /// The newest OTP sent to `to`.
    pub fn last_otp(&self, to: &str) -> String {
        let otp = self
            .outbox()
            .iter()
            .rev()
            .find(|e| e["to"] == to)
            .and_then(|e| e["otp"].as_str())
            .unwrap_or_else(|| panic!("no OTP was sent to {to}"))
            .to_string();
        remember_secret(&otp);
        otp
    }
}

static CONFIG_SEQ: AtomicUsize = AtomicUsize::new(0);

/// Every API key, OTP and password the suite has sent or read. Each gateway's logs are checked
/// against all of them when the gateway is dropped, so no test can leak one unnoticed.
static SECRETS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn remember_secrets(secrets: &[&str]) {
    for s in secrets {
        remember_secret(s);
    }
}

pub fn remember_secret(s: &str) {
    // Values of one to three characters (a test's placeholder code "1") name no secret and would
    // match ordinary log words.
    let mut all = SECRETS.lock().unwrap();
    if s.len() >= 4 && !all.iter().any(|x| x == s) {
        all.push(s.to_string());
    }
}

/// Runs `check-config` on `toml` (written to a temporary file, with no token keys in the
/// environment): whether it passed, and what it printed on stderr.
pub fn check_config(toml: &str) -> (bool, String) {
    check_config_with_env(toml, &[])
}

/// `check_config` with `env` set for the run (the variables the config names).
pub fn check_config_with_env(toml: &str, env: &[(&str, &str)]) -> (bool, String) {
    let path = std::env::temp_dir().join(format!(
        "reset-gateway-it-check-{}-{}.toml",
        std::process::id(),
        CONFIG_SEQ.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::write(&path, toml).unwrap();
    let out = Command::new(BIN)
        .args(["check-config", path.to_str().unwrap()])
        .env_remove("GATEWAY_TOKEN_KEYS")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub struct Gateway {
    pub proc: Proc,
    pub api: SocketAddr,
    pub admin: SocketAddr,
    config_path: PathBuf,
}

impl Gateway {
    /// Starts the gateway on `config` (TOML without a [server] table: one is added with port-0
    /// listeners), with extra environment variables.
    /// `config` may begin with more `[server]` keys, before its first table.
    pub fn start(config: &str, env: &[(&str, &str)]) -> Gateway {
        let path = std::env::temp_dir().join(format!(
            "reset-gateway-it-{}-{}.toml",
            std::process::id(),
            CONFIG_SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        let full = format!(
            "[server]\napi_listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nthreads = 1\n\n{config}"
        );
        std::fs::write(&path, full).unwrap();
        let mut cmd = Command::new(BIN);
        cmd.args(["run", "--config", path.to_str().unwrap()]);
        cmd.env_remove("GATEWAY_TOKEN_KEYS");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let (proc, line) = Proc::spawn(cmd, "reset-gateway listening");
        Gateway {
            proc,
            api: if line.contains("api=https://") {
                addr_after(&line, "api=https://")
            } else {
                addr_after(&line, "api=http://")
            },
            admin: addr_after(&line, "admin=http://"),
            config_path: path,
        }
    }

    /// POSTs a JSON body with an API key.
    pub fn post(&self, path: &str, key: &str, body: &str) -> Response {
        self.post_with(path, key, body, &[])
    }

    /// `post`, with `headers` sent too.
    pub fn post_with(
        &self,
        path: &str,
        key: &str,
        body: &str,
        headers: &[(&str, &str)],
    ) -> Response {
        remember_secret(key);
        let auth = format!("Bearer {key}");
        let mut all = vec![
            ("Authorization", auth.as_str()),
            ("Content-Type", "application/json"),
        ];
        all.extend_from_slice(headers);
        request(self.api, "POST", path, &all, body.as_bytes())
    }

    /// Asserts that no line the gateway logged contains any of `secrets`, nor anything shaped
    /// like a SHA-256 hex signature.
    pub fn assert_logs_clean(&self, secrets: &[&str]) {
        remember_secrets(secrets);
        let logs = self.proc.logs();
        for s in secrets.iter().filter(|s| !s.is_empty()) {
            // Short secrets (OTPs, test passwords like "weak") are looked for as whole words, so
            // that timestamps and ordinary words do not match them by accident.
            let found = if s.len() >= 8 {
                logs.contains(s)
            } else {
                logs.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
                    .any(|w| w == *s)
            };
            assert!(!found, "a secret ({s}) appears in the logs:\n{logs}");
        }
        let hex_run = logs
            .split(|c: char| !c.is_ascii_hexdigit())
            .any(|w| w.len() >= 64);
        assert!(
            !hex_run,
            "something like a signature appears in the logs:\n{logs}"
        );
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.config_path);
        if !std::thread::panicking() {
            let secrets = SECRETS.lock().unwrap().clone();
            let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
            self.assert_logs_clean(&refs);
        }
    }
}

/// A config with one CBSS connection per format on `sandbox`, and tenants:
/// `json` (key-json), `xml` (key-xml), and any extra TOML appended.
pub fn cbss_config(sandbox: &Sandbox, extra: &str) -> String {
    cbss_config_timed(sandbox, VendorTimeouts::default(), extra)
}

/// A CBSS connection's timeouts, in milliseconds, as a test sets them: each test says which it
/// changes, and a typo is a compile error rather than a text replacement that matched nothing.
#[derive(Clone, Copy)]
pub struct VendorTimeouts {
    pub connect_ms: u64,
    pub read_ms: u64,
    pub write_ms: u64,
    pub total_ms: u64,
    pub idle_ms: u64,
}

impl Default for VendorTimeouts {
    fn default() -> Self {
        VendorTimeouts {
            connect_ms: 500,
            read_ms: 2000,
            write_ms: 2000,
            total_ms: 3000,
            idle_ms: 10000,
        }
    }
}

/// A config with one CBSS connection `c` at `base_url` (with `connection` lines, such as its
/// timeouts) for tenant `t` (key-c), signing with `CBSS_ENV`'s secrets as client `client_code`
/// and `cbss` lines more (its signature case, say).
pub fn cbss_tenant_config(
    base_url: &str,
    connection: &str,
    client_code: &str,
    cbss: &str,
) -> String {
    format!(
        "[connections.c]\nbase_url = \"{base_url}\"\n{connection}\n[connections.c.cbss]\n\
         client_code = \"{client_code}\"\nclient_key_env = \"IT_CBSS_KEY\"\n\
         login_salt_env = \"IT_CBSS_LOGIN_SALT\"\nforgot_salt_env = \"IT_CBSS_FORGOT_SALT\"\n{cbss}\n\
         [[tenants]]\nname = \"t\"\nconnection = \"c\"\n\
         api_keys = [{{ name = \"k\", key_sha256 = \"{}\" }}]\n",
        sha256_hex("key-c")
    )
}

/// `cbss_config` with the `json` connection's timeouts set to `timeouts`.
pub fn cbss_config_timed(sandbox: &Sandbox, timeouts: VendorTimeouts, extra: &str) -> String {
    let VendorTimeouts {
        connect_ms,
        read_ms,
        write_ms,
        total_ms,
        idle_ms,
    } = timeouts;
    let url = sandbox.url("cbss");
    format!(
        r#"
[connections.json]
base_url = "{url}"
timeouts = {{ connect_ms = {connect_ms}, read_ms = {read_ms}, write_ms = {write_ms}, total_ms = {total_ms}, idle_ms = {idle_ms} }}
[connections.json.cbss]
client_code = "DEMO"
client_key_env = "IT_CBSS_KEY"
login_salt_env = "IT_CBSS_LOGIN_SALT"
forgot_salt_env = "IT_CBSS_FORGOT_SALT"

[connections.xml]
base_url = "{url}"
[connections.xml.cbss]
format = "xml"
signature_case = "upper"
client_code = "DEMO-UPPER"
client_key_env = "IT_CBSS_KEY"
login_salt_env = "IT_CBSS_LOGIN_SALT"
forgot_salt_env = "IT_CBSS_FORGOT_SALT"

[[tenants]]
name = "json"
connection = "json"
api_keys = [{{ name = "k", key_sha256 = "{json}" }}]

[[tenants]]
name = "xml"
connection = "xml"
api_keys = [{{ name = "k", key_sha256 = "{xml}" }}]
{extra}
"#,
        json = sha256_hex("key-json"),
        xml = sha256_hex("key-xml"),
    )
}

/// `config` with connection `name`'s `outbound_limit` set to `count` calls per `period_secs`.
pub fn with_outbound_limit(config: &str, name: &str, count: u32, period_secs: u64) -> String {
    let limit = format!("outbound_limit = {{ count = {count}, period_secs = {period_secs} }}");
    with_connection_setting(config, name, &limit)
}

/// `config` with `setting` (one TOML line) added to connection `name`'s table.
pub fn with_connection_setting(config: &str, name: &str, setting: &str) -> String {
    let header = format!("[connections.{name}]\n");
    assert!(
        config.contains(&header),
        "the config has no connection {name}"
    );
    config.replacen(&header, &format!("{header}{setting}\n"), 1)
}

/// `config` with `setting` (one TOML line) added to tenant `name`'s table.
pub fn with_tenant_setting(config: &str, name: &str, setting: &str) -> String {
    let header = format!("[[tenants]]\nname = \"{name}\"\n");
    assert!(config.contains(&header), "the config has no tenant {name}");
    config.replacen(&header, &format!("{header}{setting}\n"), 1)
}

/// `config` with tenant `name` revealing unknown identifiers (`404 identifier_not_found`).
pub fn revealing_unknown_identifiers(config: &str, name: &str) -> String {
    with_tenant_setting(config, name, "reveal_unknown_identifiers = true")
}

/// An Amsalem connection `a` on `sandbox` for tenant `a` (key-a), the sandbox's API user, and
/// any extra TOML appended.
pub fn amsalem_config(sandbox: &Sandbox, extra: &str) -> String {
    amsalem_config_in(sandbox, "json", extra)
}

/// `amsalem_config` with the connection speaking `format` ("json" or "xml").
pub fn amsalem_config_in(sandbox: &Sandbox, format: &str, extra: &str) -> String {
    format!(
        "[connections.a]\nbase_url = \"{}\"\n[connections.a.amsalem]\nformat = \"{format}\"\n\
         api_username = \"sandbox-api\"\nsecret_env = \"IT_AMSALEM_SECRET\"\n\
         [[tenants]]\nname = \"a\"\nconnection = \"a\"\napi_keys = [{{ name = \"k\", key_sha256 = \"{}\" }}]\n{extra}",
        sandbox.url("amsalem"),
        sha256_hex("key-a")
    )
}

/// The sandbox's Amsalem secret, as a deployment would pass it.
pub const AMSALEM_ENV: &[(&str, &str)] = &[("IT_AMSALEM_SECRET", "sandbox-amsalem-secret")];

/// A config with Capillary connections on `sandbox`: tenants `web` (key-web) and `mobile`
/// (key-mobile), and any extra TOML appended.
pub fn capillary_config(sandbox: &Sandbox, extra: &str) -> String {
    let url = sandbox.url("capillary");
    format!(
        r#"
[connections.web]
base_url = "{url}"
timeouts = {{ connect_ms = 500, read_ms = 2000, write_ms = 2000, total_ms = 3000 }}
[connections.web.capillary]
brand = "DocDemo"
variant = "web"
api_key_env = "IT_CAPILLARY_KEY"

[connections.mobile]
base_url = "{url}"
[connections.mobile.capillary]
brand = "DocDemo"
variant = "mobile"
api_key_env = "IT_CAPILLARY_KEY"

[[tenants]]
name = "web"
connection = "web"
api_keys = [{{ name = "k", key_sha256 = "{web}" }}]

[[tenants]]
name = "mobile"
connection = "mobile"
api_keys = [{{ name = "k", key_sha256 = "{mobile}" }}]
{extra}
"#,
        web = sha256_hex("key-web"),
        mobile = sha256_hex("key-mobile"),
    )
}

pub const CAPILLARY_ENV: &[(&str, &str)] = &[("IT_CAPILLARY_KEY", "sandbox-capillary-key")];

/// The sandbox's public demo credentials, as a real deployment would pass them: in the environment.
pub const CBSS_ENV: &[(&str, &str)] = &[
    ("IT_CBSS_KEY", "sandbox-client-key"),
    ("IT_CBSS_LOGIN_SALT", "sandbox-login-salt"),
    ("IT_CBSS_FORGOT_SALT", "sandbox-forgot-salt"),
];

pub fn sha256_hex(s: &str) -> String {
    let out = Command::new(BIN)
        .args(["hash-key", s])
        .output()
        .expect("hash-key runs");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// Asserts a problem+json answer with this status and code, and returns its body.
    pub fn problem(&self, status: u16, code: &str) -> serde_json::Value {
        let body = self.json();
        assert_eq!(
            (self.status, body["code"].as_str()),
            (status, Some(code)),
            "unexpected answer: {body}"
        );
        assert_eq!(
            self.header("Content-Type"),
            Some("application/problem+json")
        );
        // Never cached, never read as anything but what it says it is.
        assert_eq!(self.header("Cache-Control"), Some("no-store"));
        assert_eq!(self.header("X-Content-Type-Options"), Some("nosniff"));
        assert_eq!(body["status"], status);
        assert_eq!(body["type"], format!("/problems/{code}"));
        assert!(body["request_id"].is_string());
        body
    }

    /// `problem`, less its request id: what must be the same for two requests that must look
    /// alike (a decoy's and a real reset's).
    pub fn problem_but_request_id(&self, status: u16, code: &str) -> serde_json::Value {
        let mut body = self.problem(status, code);
        body.as_object_mut().unwrap().remove("request_id");
        body
    }

    /// The names of the answer's header fields, lower case and sorted.
    pub fn header_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .headers
            .iter()
            .map(|(k, _)| k.to_ascii_lowercase())
            .collect();
        names.sort();
        names
    }
}

/// One HTTP/1.1 request on a fresh connection, read to the end.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    // Apps pass their end user's agent along, as a browser would send one.
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("User-Agent"))
    {
        head.push_str("User-Agent: Mozilla/5.0 (reset-gateway tests)\r\n");
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut wire = head.into_bytes();
    wire.extend_from_slice(body);
    raw(addr, &wire)
}

/// Sends raw bytes and parses the answer (which must carry Content-Length or close).
pub fn raw(addr: SocketAddr, wire: &[u8]) -> Response {
    let mut s = TcpStream::connect(addr).expect("connects");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    // The server may answer before reading all of an oversized body and close: ignore write errors.
    let _ = s.write_all(wire);
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    parse_response(&buf)
}

fn parse_response(buf: &[u8]) -> Response {
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete response: {:?}", String::from_utf8_lossy(buf)));
    let head = std::str::from_utf8(&buf[..split]).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = buf[split + 4..].to_vec();
    if let Some(len) = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("Content-Length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
    {
        body.truncate(len);
    }
    Response {
        status,
        headers,
        body,
    }
}

/// The repository's gateway.toml (demo tenants on the in-process sandbox) without its `[server]`
/// table, which `Gateway::start` writes, and with the sandbox moved to a free port.
pub fn default_config_on_free_ports() -> String {
    let root = env!("CARGO_MANIFEST_DIR");
    let toml = std::fs::read_to_string(format!("{root}/gateway.toml")).unwrap();
    // The sandbox has a fixed port in gateway.toml and the demo base_urls name it: move both to a
    // port the OS just handed out (the one place this suite cannot bind port 0 directly).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let toml = toml.replace("127.0.0.1:9100", &format!("127.0.0.1:{port}"));
    let (server_table, rest) = toml.split_at(toml.find("[log]").unwrap());
    assert!(server_table.contains("[server]"));
    rest.to_string()
}

/// The body of `POST /reset` for the identifier of `kind` (email, mobile, username) `value`.
pub fn start_body(kind: &str, value: &str) -> String {
    format!(r#"{{"identifier":{{"type":"{kind}","value":"{value}"}}}}"#)
}

/// A six-digit code that is surely not `otp`.
pub fn wrong_code_for(otp: &str) -> &'static str {
    if otp == "000000" {
        "111111"
    } else {
        "000000"
    }
}

/// Starts a reset for `identifier` and returns the reset_id.
pub fn start_reset(gw: &Gateway, key: &str, kind: &str, value: &str) -> String {
    let r = gw.post("/reset", key, &start_body(kind, value));
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    r.json()["reset_id"].as_str().unwrap().to_string()
}

/// Starts a reset for `email` and verifies the code the sandbox sent it: the reset id that
/// completes it.
pub fn reset_to_complete(gw: &Gateway, sandbox: &Sandbox, key: &str, email: &str) -> String {
    let reset_id = start_reset(gw, key, "email", email);
    let otp = sandbox.last_otp(email);
    let r = verify(gw, key, &reset_id, &otp);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()["reset_id"].as_str().unwrap().to_string()
}

pub fn verify(gw: &Gateway, key: &str, reset_id: &str, otp: &str) -> Response {
    remember_secret(otp);
    gw.post(
        "/reset/verify",
        key,
        &format!(r#"{{"reset_id":"{reset_id}","otp":"{otp}"}}"#),
    )
}

pub fn complete(gw: &Gateway, key: &str, reset_id: &str, password: &str) -> Response {
    remember_secret(password);
    gw.post(
        "/reset/complete",
        key,
        &format!(r#"{{"reset_id":"{reset_id}","new_password":"{password}"}}"#),
    )
}

/// A Redis server of the test's own, on a unix socket (so no TCP port is ever guessed), killed
/// when the test ends.
pub struct Redis {
    child: Option<Child>,
    pub socket: PathBuf,
    /// The password the server requires (`--requirepass`), if any.
    password: Option<String>,
}

static REDIS_SEQ: AtomicUsize = AtomicUsize::new(0);

impl Redis {
    pub fn start() -> Redis {
        Redis::start_requiring(None)
    }

    /// A server that answers only clients that authenticate with `password`.
    pub fn start_with_password(password: &str) -> Redis {
        Redis::start_requiring(Some(password.to_string()))
    }

    fn start_requiring(password: Option<String>) -> Redis {
        let socket = std::env::temp_dir().join(format!(
            "reset-gateway-it-redis-{}-{}.sock",
            std::process::id(),
            REDIS_SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        let mut redis = Redis {
            child: None,
            socket,
            password,
        };
        redis.restart();
        redis
    }

    /// The `limits.redis.url` for this server.
    pub fn url(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.socket);
    }

    /// Stops the server's process without closing anything (SIGSTOP): connections and new
    /// connects still succeed, and no command is answered until `resume`.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, name: &str) {
        let child = self.child.as_ref().expect("the server runs");
        let status = Command::new("kill")
            .args([&format!("-{name}"), &child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Starts (again) on the same socket, and waits until it answers.
    pub fn restart(&mut self) {
        self.stop();
        let mut command = Command::new("redis-server");
        command
            .args([
                "--port",
                "0",
                "--save",
                "",
                "--appendonly",
                "no",
                "--unixsocket",
            ])
            .arg(&self.socket);
        if let Some(password) = &self.password {
            command.args(["--requirepass", password]);
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs (./dev test installs it when missing)");
        self.child = Some(child);
        for _ in 0..200 {
            if let Ok(mut s) = std::os::unix::net::UnixStream::connect(&self.socket) {
                let (hello, answer): (String, &[u8]) = match &self.password {
                    Some(p) => (format!("AUTH {p}\r\nPING\r\n"), b"+OK\r\n+PONG\r\n"),
                    None => ("PING\r\n".into(), b"+PONG\r\n"),
                };
                let _ = s.write_all(hello.as_bytes());
                let mut buf = vec![0u8; answer.len()];
                if s.read_exact(&mut buf).is_ok() && buf == answer {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("redis-server did not start");
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The value of one sample in a Prometheus text exposition (0 when absent, as a counter no
/// request has touched yet is).
pub fn metric(admin: SocketAddr, sample: &str) -> f64 {
    assert_documented(sample);
    let text = String::from_utf8(request(admin, "GET", "/metrics", &[], b"").body).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(sample).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

/// Panics unless `series` (a sample's name, perhaps followed by its labels) is of a metric family
/// README's metrics table lists. A sample that is absent reads as 0, as a counter no request has
/// touched is; without this check a misspelt name would read as 0 too, and a test expecting 0
/// could not fail.
fn assert_documented(series: &str) {
    static FAMILIES: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
            .expect("README.md is readable");
        let start = readme
            .find("## Observability")
            .expect("README has its metrics");
        let end = start
            + readme[start..]
                .find("**Dashboard**")
                .expect("the table ends");
        readme[start..end].to_string()
    });
    let name = series.split(['{', ' ']).next().unwrap_or_default();
    let short = name.strip_prefix("reset_gateway_").unwrap_or(name);
    let listed = |family: &str| FAMILIES.contains(&format!("`{family}`"));
    let documented = listed(short)
        || ["_bucket", "_sum", "_count"]
            .iter()
            .any(|suffix| short.strip_suffix(suffix).is_some_and(listed));
    assert!(documented, "{name} is not a metric README documents");
}

/// The value of the sample of `name` whose labels are exactly `labels` (order free), 0 if none.
pub fn sample(admin: SocketAddr, name: &str, labels: &[(&str, &str)]) -> f64 {
    assert_documented(name);
    let text = String::from_utf8(request(admin, "GET", "/metrics", &[], b"").body).unwrap();
    let mut want: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    want.sort();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = match line.rsplit_once(' ') {
            Some(x) => x,
            None => continue,
        };
        let (metric, mut got) = match series.split_once('{') {
            Some((m, rest)) => (
                m,
                rest.trim_end_matches('}')
                    .split(',')
                    .filter(|p| !p.is_empty())
                    .map(str::to_string)
                    .collect::<Vec<_>>(),
            ),
            None => (series, Vec::new()),
        };
        got.sort();
        if metric == name && got == want {
            return value.parse().unwrap();
        }
    }
    0.0
}

/// One response read off a kept-alive connection (its body framed by Content-Length).
pub fn read_one(reader: &mut impl BufRead) -> Response {
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line).expect("a response line");
        assert!(n > 0, "the connection closed before a response");
        if line == "\r\n" {
            break;
        }
        head.push(line.trim_end().to_string());
    }
    let status = head[0].split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = head[1..]
        .iter()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let length = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("Content-Length"))
        .map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    Response {
        status,
        headers,
        body,
    }
}

/// Whether the server closed the connection (after any answer already read).
pub fn closed(reader: &mut BufReader<TcpStream>) -> bool {
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).is_ok() && rest.is_empty()
}
