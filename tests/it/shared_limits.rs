//! Limits shared across replicas through a real Redis: two gateway processes enforce one limit;
//! Redis stopped mid-run falls back by policy within the Redis timeout; Redis back, sharing resumes.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::harness::*;

const CHEAP: &str = r#"{"reset_id":"not-a-reset","otp":"123456"}"#;

/// A config for one replica: limits of `count` per 2 s per key, on `backend`.
fn replica(sandbox: &Sandbox, count: u32, backend: &str) -> String {
    capillary_config(
        sandbox,
        &format!("[limits]\nper_key = {{ count = {count}, period_secs = 2 }}\n{backend}"),
    )
}

fn redis_backend(redis: &Redis, policy: &str) -> String {
    backend_at(&redis.url(), policy)
}

/// The Redis timeout the tests configure. Longer than the default 50 ms: the whole suite runs in
/// parallel on two cores, where a healthy Redis can take longer than 50 ms to answer, and a test
/// that saw that as an outage would fail by chance.
const REDIS_TIMEOUT_MS: u64 = 200;

fn backend_at(url: &str, policy: &str) -> String {
    // A prefix of its own, so tests sharing one Redis never share keys.
    let prefix = format!("it-{}-{}", std::process::id(), next());
    format!(
        "backend = \"redis\"\n[limits.redis]\nurl = \"{url}\"\ntimeout_ms = {REDIS_TIMEOUT_MS}\non_failure = \"{policy}\"\nreplicas = 2\nkey_prefix = \"{prefix}\"\n"
    )
}

fn next() -> usize {
    static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    SEQ.fetch_add(1, Ordering::SeqCst)
}

/// The Redis for the shared-limit test: the one `IT_REDIS_URL` names (CI points it at the
/// machine's Redis on 127.0.0.1:6379), else one of the test's own.
fn shared_redis() -> (Option<Redis>, String) {
    match std::env::var("IT_REDIS_URL") {
        Ok(url) if !url.is_empty() => (None, url),
        _ => {
            let redis = Redis::start();
            let url = redis.url();
            (Some(redis), url)
        }
    }
}

struct Load {
    accepted: u64,
    refused: u64,
    elapsed: Duration,
    slowest: Duration,
}

/// `clients` threads per gateway send cheap requests on one key for `duration`.
fn load(gateways: &[&Gateway], clients: usize, duration: Duration) -> Load {
    let accepted = AtomicU64::new(0);
    let refused = AtomicU64::new(0);
    let slowest = AtomicU64::new(0);
    let started = Instant::now();
    std::thread::scope(|s| {
        for gw in gateways {
            for _ in 0..clients {
                s.spawn(|| {
                    while started.elapsed() < duration {
                        let t = Instant::now();
                        let r = gw.post("/reset/verify", "key-web", CHEAP);
                        slowest.fetch_max(t.elapsed().as_micros() as u64, Ordering::Relaxed);
                        match r.status {
                            429 => refused.fetch_add(1, Ordering::Relaxed),
                            400 => accepted.fetch_add(1, Ordering::Relaxed),
                            other => panic!("unexpected status {other}"),
                        };
                    }
                });
            }
        }
    });
    Load {
        accepted: accepted.into_inner(),
        refused: refused.into_inner(),
        elapsed: started.elapsed(),
        slowest: Duration::from_micros(slowest.into_inner()),
    }
}

/// What GCRA allows over `elapsed` for `count` per 2 s: the burst, plus one cell per interval.
fn allowance(count: u32, elapsed: Duration) -> f64 {
    let interval = 2.0 / f64::from(count);
    f64::from(count) + (elapsed.as_secs_f64() / interval).floor()
}

#[test]
fn two_replicas_on_redis_enforce_one_limit_and_on_memory_twice_it() {
    let sandbox = Sandbox::start();
    let (_own, url) = shared_redis();
    let count = 200;
    // Both replicas share one key prefix: they are one deployment.
    let backend = backend_at(&url, "deny");
    let a = Gateway::start(&replica(&sandbox, count, &backend), CAPILLARY_ENV);
    let b = Gateway::start(&replica(&sandbox, count, &backend), CAPILLARY_ENV);
    let shared = load(&[&a, &b], 4, Duration::from_secs(3));
    let expected = allowance(count, shared.elapsed);
    let error = (shared.accepted as f64 - expected).abs() / expected;
    assert!(
        shared.refused > shared.accepted,
        "the load must exceed the limit"
    );
    assert!(
        error <= 0.01,
        "shared: accepted {} of {} requests, expected {expected:.0} (error {:.2}%)",
        shared.accepted,
        shared.accepted + shared.refused,
        error * 100.0
    );
    assert_eq!(
        metric(
            a.admin,
            "reset_gateway_limiter_fallback_total{policy=\"deny\"}"
        ),
        0.0
    );

    // The same load on two replicas with in-process limits: each enforces the whole limit.
    let c = Gateway::start(&replica(&sandbox, count, ""), CAPILLARY_ENV);
    let d = Gateway::start(&replica(&sandbox, count, ""), CAPILLARY_ENV);
    let separate = load(&[&c, &d], 4, Duration::from_secs(3));
    let ratio = separate.accepted as f64 / allowance(count, separate.elapsed);
    assert!(
        (1.9..=2.05).contains(&ratio),
        "memory: accepted {} ({ratio:.2} x the limit)",
        separate.accepted
    );
    println!(
        "shared limit: redis accepted {} (expected {expected:.0}); memory accepted {} ({ratio:.2}x)",
        shared.accepted, separate.accepted
    );
}

/// Sends a request through each of `gateways` (a gateway finds Redis back on its next call) until
/// every one reports Redis answering: whether they all did within about 2.5 s.
fn back_on_redis(gateways: &[&Gateway]) -> bool {
    for _ in 0..50 {
        for gw in gateways {
            gw.post("/reset/verify", "key-web", CHEAP);
        }
        if gateways
            .iter()
            .all(|gw| metric(gw.admin, "reset_gateway_redis_up") == 1.0)
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Redis stopped mid-run under `policy`; returns what was accepted while it was down.
fn outage(policy: &str) -> (Load, Gateway, Gateway) {
    let sandbox = Sandbox::start();
    let mut redis = Redis::start();
    let backend = redis_backend(&redis, policy);
    let a = Gateway::start(&replica(&sandbox, 100, &backend), CAPILLARY_ENV);
    let b = Gateway::start(&replica(&sandbox, 100, &backend), CAPILLARY_ENV);
    // Spend the shared burst, so that a fallback that allowed more would show.
    let before = load(&[&a, &b], 2, Duration::from_millis(500));
    assert!(before.refused > 0);
    let up = request(a.admin, "GET", "/readyz", &[], b"").json();
    assert_eq!(up["redis"], "up", "{up}");

    redis.stop();
    let down = load(&[&a, &b], 2, Duration::from_secs(2));
    let ready = request(a.admin, "GET", "/readyz", &[], b"");
    assert_eq!(ready.json()["redis"], "down");
    assert_eq!(ready.status, if policy == "deny" { 503 } else { 200 });
    let fallbacks = metric(
        a.admin,
        &format!("reset_gateway_limiter_fallback_total{{policy=\"{policy}\"}}"),
    );
    assert!(fallbacks > 0.0, "fallback decisions are counted");
    assert_eq!(metric(a.admin, "reset_gateway_redis_up"), 0.0);
    // The outage is logged, once however many requests met it, with the error.
    let outage_lines = |gw: &Gateway| {
        gw.proc
            .logs()
            .lines()
            .filter(|l| l.contains("Redis is not answering"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let lines = outage_lines(&a);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("WARN") && lines[0].contains("error="),
        "{lines:?}"
    );

    // Redis back: decisions are shared again, and no longer made by the fallback.
    redis.restart();
    assert!(
        back_on_redis(&[&a, &b]),
        "the gateways went back to Redis by themselves"
    );
    let answers = a.proc.logs().matches("Redis answers").count();
    assert_eq!(answers, 2, "logged when first reached and when back");
    assert_eq!(outage_lines(&a).len(), 1);
    let counted = metric(
        a.admin,
        &format!("reset_gateway_limiter_fallback_total{{policy=\"{policy}\"}}"),
    );
    let after = load(&[&a, &b], 2, Duration::from_millis(500));
    assert!(
        after.accepted <= allowance(100, after.elapsed) as u64 + 1,
        "accepted {} once Redis was back",
        after.accepted
    );
    assert_eq!(
        metric(
            a.admin,
            &format!("reset_gateway_limiter_fallback_total{{policy=\"{policy}\"}}")
        ),
        counted,
        "no fallback once Redis is back"
    );
    // No request hung, outage or not (a bound against hangs, not a speed test: a Redis that is
    // gone refuses at once; one that stops answering is the next test's).
    for l in [&before, &down, &after] {
        assert!(
            l.slowest < Duration::from_secs(5),
            "a request took {:?}",
            l.slowest
        );
    }
    (down, a, b)
}

#[test]
fn a_redis_that_stops_answering_costs_a_request_its_timeout_not_a_hang() {
    // A Redis that takes connections and commands but answers nothing (stopped, or a network
    // that drops its answers): each request waits for the Redis timeout, then the failure
    // policy decides it. Without the timeout, every request would wait for as long as Redis did.
    let sandbox = Sandbox::start();
    let redis = Redis::start();
    let gw = Gateway::start(
        &replica(&sandbox, 100, &redis_backend(&redis, "local")),
        CAPILLARY_ENV,
    );
    let answered = gw.post("/reset/verify", "key-web", CHEAP);
    answered.problem(400, "invalid_reset_id");
    // The fallback's count is exported from the start, at 0: a series that first appears with
    // an outage's whole count shows Prometheus no increase, and the fallback alert would miss a
    // first outage short enough to fit in one scrape.
    let text = String::from_utf8(request(gw.admin, "GET", "/metrics", &[], b"").body).unwrap();
    assert!(
        text.lines()
            .any(|l| l == "reset_gateway_limiter_fallback_total{policy=\"local\"} 0"),
        "no fallback series before the first fallback"
    );
    redis.pause();
    for _ in 0..3 {
        let started = Instant::now();
        let r = gw.post("/reset/verify", "key-web", CHEAP);
        let took = started.elapsed();
        // A bound against a hang, far above the timeout (200 ms): a stopped Redis left behind
        // by a failed assertion is killed with the test's other processes.
        r.problem(400, "invalid_reset_id");
        assert!(took < Duration::from_secs(5), "a request took {took:?}");
    }
    let fallbacks = metric(
        gw.admin,
        "reset_gateway_limiter_fallback_total{policy=\"local\"}",
    );
    redis.resume();
    assert!(fallbacks > 0.0, "decided by the fallback");
}

#[test]
fn with_redis_down_deny_refuses_everything() {
    let (down, _a, _b) = outage("deny");
    assert_eq!(down.accepted, 0);
    assert!(down.refused > 0);
}

#[test]
fn with_redis_down_allow_lets_everything_through() {
    let (down, _a, _b) = outage("allow");
    assert_eq!(down.refused, 0);
    assert!(down.accepted > 0);
}

#[test]
fn with_redis_down_local_enforces_each_replicas_share() {
    let (down, _a, _b) = outage("local");
    // Two replicas, each at half of 100 per 2 s: together about the shared limit, not twice it.
    let share = 2.0 * allowance(50, down.elapsed);
    assert!(down.refused > 0);
    assert!(
        (down.accepted as f64) <= share * 1.02 + 2.0,
        "accepted {} with Redis down, shares allow {share:.0}",
        down.accepted
    );
}

#[test]
fn with_redis_down_local_a_replicas_share_refills_only_while_redis_is_away() {
    // 4 per 6 s per key over 2 replicas: each replica's share bursts 2 and refills one cell
    // every 3 s. Spent in one outage, it must not be whole again at the next only because Redis
    // answered in between: Redis's own quota refilled meanwhile, and the two together would let
    // the key (or a vendor's budget) through twice.
    let sandbox = Sandbox::start();
    let mut redis = Redis::start();
    let config = capillary_config(
        &sandbox,
        &format!(
            "[limits]\nper_key = {{ count = 4, period_secs = 6 }}\n{}",
            redis_backend(&redis, "local")
        ),
    );
    let gw = Gateway::start(&config, CAPILLARY_ENV);
    let allowed = |gw: &Gateway, tries: usize| {
        (0..tries)
            .filter(|_| {
                let r = gw.post("/reset/verify", "key-web", CHEAP);
                assert!(matches!(r.status, 400 | 429), "{}", r.status);
                r.status == 400
            })
            .count()
    };

    redis.stop();
    let spent_at = Instant::now();
    assert_eq!(allowed(&gw, 3), 2, "the share's burst, then refused");
    redis.restart();
    assert!(
        back_on_redis(&[&gw]),
        "the gateway went back to Redis by itself"
    );
    let first_outage = spent_at.elapsed();
    // Long enough for the share to refill twice by the wall clock.
    let refilled = Duration::from_millis(6_500);
    std::thread::sleep(refilled.saturating_sub(spent_at.elapsed()));
    redis.stop();
    let second = allowed(&gw, 3);
    // Redis was away for well under the 3 s a cell takes (the restart and the first outage's
    // requests), so nothing has refilled.
    assert!(
        second <= 1,
        "allowed {second} again in a second outage (the first took {first_outage:?})"
    );
}

#[test]
fn a_reset_id_completes_once_across_replicas() {
    let sandbox = Sandbox::start();
    let redis = Redis::start();
    let backend = redis_backend(&redis, "deny");
    let config = capillary_config(&sandbox, &format!("[limits]\n{backend}"));
    let env = [
        ("IT_CAPILLARY_KEY", "sandbox-capillary-key"),
        (
            "GATEWAY_TOKEN_KEYS",
            "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        ),
    ];
    let a = Gateway::start(&config, &env);
    let b = Gateway::start(&config, &env);
    let reset_id = start_reset(&a, "key-web", "email", EMAIL);
    let otp = sandbox.last_otp(EMAIL);
    // Any replica continues any reset: verify on b, complete on a, replay on b.
    let v = verify(&b, "key-web", &reset_id, &otp);
    assert_eq!(v.status, 200);
    let next = v.json()["reset_id"].as_str().unwrap().to_string();
    // A refused password leaves the id usable, so the user can choose another.
    complete(&a, "key-web", &next, "weakpw").problem(422, "password_rejected");
    assert_eq!(complete(&a, "key-web", &next, "Shared-n3w-pw").status, 200);
    let p = complete(&b, "key-web", &next, "Other-n3w-pw").problem(409, "wrong_step");
    assert!(p["detail"].as_str().unwrap().contains("already used"));
}

#[test]
fn wrong_codes_are_counted_across_replicas_and_right_ones_given_back() {
    let sandbox = Sandbox::start();
    let (_own, url) = shared_redis();
    let config = capillary_config(&sandbox, &format!("[limits]\n{}", backend_at(&url, "deny")));
    let env = [
        ("IT_CAPILLARY_KEY", "sandbox-capillary-key"),
        (
            "GATEWAY_TOKEN_KEYS",
            "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        ),
    ];
    let a = Gateway::start(&config, &env);
    let b = Gateway::start(&config, &env);
    let wrong = |otp: &str| if otp == "000000" { "111111" } else { "000000" }.to_string();
    let first = start_reset(&a, "key-web", "email", EMAIL);
    let otp = sandbox.last_otp(EMAIL);
    for gw in [&a, &b, &a, &b] {
        verify(gw, "key-web", &first, &wrong(&otp)).problem(422, "invalid_otp");
    }
    // The right code gives its cell back in Redis, so a new reset has the fifth wrong code left.
    assert_eq!(verify(&b, "key-web", &first, &otp).status, 200);
    let second = start_reset(&b, "key-web", "email", EMAIL);
    let fresh = sandbox.last_otp(EMAIL);
    verify(&a, "key-web", &second, &wrong(&fresh)).problem(422, "invalid_otp");
    let p = verify(&b, "key-web", &second, &fresh).problem(429, "attempts_exceeded");
    assert_eq!(p["limit"], "per-reset");
}

/// A three-node Redis Cluster of the test's own on loopback (TCP: cluster nodes gossip over it).
struct Cluster {
    nodes: Vec<std::process::Child>,
    ports: Vec<u16>,
    dir: std::path::PathBuf,
}

impl Cluster {
    fn start() -> Cluster {
        // Cluster nodes must listen on TCP, and the bus port is told explicitly: take ports the
        // OS hands out and release them just before Redis binds them.
        let ports: Vec<u16> = (0..6)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .collect::<Vec<_>>()
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect();
        let dir =
            std::env::temp_dir().join(format!("reset-gateway-it-cluster-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut nodes = Vec::new();
        for i in 0..3 {
            let conf = dir.join(format!("nodes-{i}.conf"));
            nodes.push(
                std::process::Command::new("redis-server")
                    .args(["--bind", "127.0.0.1", "--port", &ports[i].to_string()])
                    .args([
                        "--cluster-enabled",
                        "yes",
                        "--cluster-port",
                        &ports[i + 3].to_string(),
                    ])
                    .arg("--cluster-config-file")
                    .arg(&conf)
                    .args(["--save", "", "--appendonly", "no"])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .expect("redis-server runs"),
            );
        }
        let addrs: Vec<String> = ports[..3]
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let mut created = false;
        for _ in 0..50 {
            let out = std::process::Command::new("redis-cli")
                .arg("--cluster")
                .arg("create")
                .args(&addrs)
                .arg("--cluster-yes")
                .output()
                .expect("redis-cli runs");
            if out.status.success() {
                created = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(created, "the cluster forms");
        // Wait until every node sees the whole cluster as up.
        for p in &ports[..3] {
            for _ in 0..100 {
                let out = std::process::Command::new("redis-cli")
                    .args(["-p", &p.to_string(), "cluster", "info"])
                    .output()
                    .unwrap();
                if String::from_utf8_lossy(&out.stdout).contains("cluster_state:ok") {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Cluster { nodes, ports, dir }
    }

    fn nodes_toml(&self) -> String {
        let list: Vec<String> = self.ports[..3]
            .iter()
            .map(|p| format!("\"redis://127.0.0.1:{p}\""))
            .collect();
        list.join(", ")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            let _ = n.kill();
            let _ = n.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn two_replicas_share_limits_on_a_redis_cluster() {
    let sandbox = Sandbox::start();
    let cluster = Cluster::start();
    let backend = format!(
        "backend = \"redis\"\n[limits.redis]\ncluster_nodes = [{}]\ntimeout_ms = 200\non_failure = \"deny\"\nkey_prefix = \"it-cluster\"\n",
        cluster.nodes_toml()
    );
    let config = capillary_config(
        &sandbox,
        &format!("[limits]\nper_key = {{ count = 10, period_secs = 600 }}\n{backend}"),
    );
    let a = Gateway::start(&config, CAPILLARY_ENV);
    let b = Gateway::start(&config, CAPILLARY_ENV);
    let mut accepted = 0;
    for i in 0..20 {
        let gw = if i % 2 == 0 { &a } else { &b };
        match gw.post("/reset/verify", "key-web", CHEAP).status {
            400 => accepted += 1,
            429 => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(accepted, 10, "one limit of 10 across both replicas");
    assert_eq!(
        metric(
            a.admin,
            "reset_gateway_limiter_fallback_total{policy=\"deny\"}"
        ),
        0.0
    );
    assert_eq!(
        request(a.admin, "GET", "/readyz", &[], b"").json()["redis"],
        "up"
    );
}

#[test]
fn a_resets_codes_and_single_use_are_never_decided_without_redis() {
    let sandbox = Sandbox::start();
    let mut redis = Redis::start();
    // The most permissive policy: it lets load limits through, and still decides neither of these.
    let config = capillary_config(
        &sandbox,
        &format!("[limits]\n{}", redis_backend(&redis, "allow")),
    );
    let gw = Gateway::start(&config, CAPILLARY_ENV);
    let first = start_reset(&gw, "key-web", "email", EMAIL);
    let otp = sandbox.last_otp(EMAIL);
    let v = verify(&gw, "key-web", &first, &otp);
    assert_eq!(v.status, 200);
    let used = v.json()["reset_id"].as_str().unwrap().to_string();
    assert_eq!(complete(&gw, "key-web", &used, "Shared-n3w-pw").status, 200);
    let second = start_reset(&gw, "key-web", "email", EMAIL);
    let fresh = sandbox.last_otp(EMAIL);

    redis.stop();
    let calls = sandbox.calls("capillary");
    // A used id completed again would be a second password change: nobody can say it is unused.
    let r = complete(&gw, "key-web", &used, "Other-n3w-pw");
    let p = r.problem(503, "upstream_unavailable");
    assert!(p["detail"].as_str().unwrap().contains("unused"), "{p}");
    assert_eq!(r.header("Retry-After"), Some("1"));
    // Nor are a reset's codes checked, right or wrong, while its wrong codes cannot be counted.
    let wrong = if fresh == "000000" {
        "111111"
    } else {
        "000000"
    };
    for code in [wrong, fresh.as_str()] {
        let p = verify(&gw, "key-web", &second, code).problem(503, "upstream_unavailable");
        assert!(p["detail"].as_str().unwrap().contains("wrong codes"), "{p}");
    }
    assert_eq!(sandbox.calls("capillary"), calls, "no vendor call was made");
    // Load limits still follow the policy: a start goes through.
    start_reset(&gw, "key-web", "email", "mei@example.com");

    // Redis back: the reset goes on.
    redis.restart();
    let mut answer = verify(&gw, "key-web", &second, &fresh);
    for _ in 0..50 {
        if answer.status != 503 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        answer = verify(&gw, "key-web", &second, &fresh);
    }
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
}

#[test]
fn with_redis_down_local_a_tiny_outbound_share_still_fits_a_whole_start() {
    // Capillary at 10 calls per 2 s: the outbound budget bursts 2 cells, one start's two calls.
    // Each of two replicas' local share is half the rate, but never a burst smaller than the
    // step: a share of 1 cell would refuse every start for as long as Redis is down.
    let sandbox = Sandbox::start();
    let mut redis = Redis::start();
    let config = with_outbound_limit(
        &capillary_config(
            &sandbox,
            &format!("[limits]\n{}", redis_backend(&redis, "local")),
        ),
        "web",
        10,
        2,
    );
    let gw = Gateway::start(&config, CAPILLARY_ENV);
    redis.stop();
    start_reset(&gw, "key-web", "email", EMAIL);
    // The share is spent: the next start is refused without calling Capillary.
    let r = gw.post(
        "/reset",
        "key-web",
        r#"{"identifier":{"type":"email","value":"mei@example.com"}}"#,
    );
    let p = r.problem(503, "upstream_unavailable");
    assert_eq!(p["limit"], "outbound", "{p}");
    assert!(
        metric(
            gw.admin,
            "reset_gateway_limiter_fallback_total{policy=\"local\"}"
        ) > 0.0
    );
}

#[test]
fn a_redis_that_requires_a_password_gets_it_from_the_environment_never_the_file() {
    let sandbox = Sandbox::start();
    let redis = Redis::start_with_password("redis-pw-4f1c");
    let config = |password_env: &str| {
        let backend = format!(
            "{}password_env = \"{password_env}\"\n",
            redis_backend(&redis, "deny")
        );
        replica(&sandbox, 100, &backend)
    };
    let env = [
        ("IT_CAPILLARY_KEY", "sandbox-capillary-key"),
        ("IT_REDIS_PASSWORD", "redis-pw-4f1c"),
        ("IT_WRONG_REDIS_PASSWORD", "not-it"),
    ];
    // The right password: decisions are shared, none made by the failure policy.
    let gw = Gateway::start(&config("IT_REDIS_PASSWORD"), &env);
    assert_eq!(gw.post("/reset/verify", "key-web", CHEAP).status, 400);
    let ready = request(gw.admin, "GET", "/readyz", &[], b"");
    assert_eq!(
        (ready.status, ready.json()["redis"].as_str()),
        (200, Some("up"))
    );
    assert_eq!(
        metric(
            gw.admin,
            "reset_gateway_limiter_fallback_total{policy=\"deny\"}"
        ),
        0.0
    );
    // A wrong one is a Redis that does not answer: the policy decides, and /readyz says so.
    let wrong = Gateway::start(&config("IT_WRONG_REDIS_PASSWORD"), &env);
    assert_eq!(wrong.post("/reset/verify", "key-web", CHEAP).status, 429);
    assert_eq!(
        request(wrong.admin, "GET", "/readyz", &[], b"").json()["redis"],
        "down"
    );
    // A password written in the address is refused, and not repeated.
    let (passed, err) = check_config(
        &replica(&sandbox, 100, &redis_backend(&redis, "deny")).replace(
            &format!("url = \"{}\"", redis.url()),
            "url = \"redis://:file-pw-9d2e@127.0.0.1:6379\"",
        ),
    );
    assert!(!passed);
    assert!(err.contains("limits.redis.password_env"), "{err}");
    assert!(!err.contains("file-pw-9d2e"), "{err}");
}

#[test]
fn with_redis_down_an_amsalem_completion_waits_for_the_shared_count_of_wrong_codes() {
    // A user's wrong reset codes are a security count, as a reset's wrong OTPs are: no replica's
    // memory knows what the others counted, so while Redis does not answer it is not decided,
    // whatever the policy, and no code reaches the vendor.
    let sandbox = Sandbox::start();
    let mut redis = Redis::start();
    let config = amsalem_config(
        &sandbox,
        &format!("[limits]\n{}", redis_backend(&redis, "local")),
    );
    let gw = Gateway::start(&config, AMSALEM_ENV);
    let complete = |code: &str| {
        gw.post(
            "/reset/complete",
            "key-a",
            &format!(
                r#"{{"reset_code":"{code}","identifier":{{"type":"username","value":"somchai"}},"new_password":"Amsalem-n3w"}}"#
            ),
        )
    };
    complete("wrong-code").problem(422, "invalid_otp");
    redis.stop();
    let calls = sandbox.calls("amsalem");
    let r = complete("wrong-code");
    let p = r.problem(503, "upstream_unavailable");
    assert!(
        p["detail"].as_str().unwrap().contains("wrong reset codes"),
        "{p}"
    );
    assert_eq!(r.header("Retry-After"), Some("1"));
    assert_eq!(sandbox.calls("amsalem"), calls, "no code reached Amsalem");
}

/// A TCP relay to a Redis socket that can hold back the next command naming a reset id's claim
/// (`used:`) for a while: Redis then runs it after the gateway has stopped waiting for it, as a
/// Redis that answers late does. Each connection's bytes keep their order, as on a real link.
struct SlowClaims {
    address: std::net::SocketAddr,
    hold_next: std::sync::Arc<AtomicBool>,
    held_and_sent: std::sync::Arc<AtomicU64>,
}

impl SlowClaims {
    fn start(redis: &Redis, hold_for: Duration) -> SlowClaims {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let hold_next = std::sync::Arc::new(AtomicBool::new(false));
        let held_and_sent = std::sync::Arc::new(AtomicU64::new(0));
        let socket = redis.socket.clone();
        let (hold, held) = (hold_next.clone(), held_and_sent.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(mut client) = client else { return };
                let mut server = std::os::unix::net::UnixStream::connect(&socket).unwrap();
                let (mut client_in, mut server_out) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (hold, held) = (hold.clone(), held.clone());
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n) = client_in.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        let names_a_claim = buf[..n].windows(5).any(|w| w == b"used:");
                        let holding = names_a_claim && hold.swap(false, Ordering::SeqCst);
                        if holding {
                            std::thread::sleep(hold_for);
                        }
                        if server_out.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        if holding {
                            held.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut server, &mut client);
                });
            }
        });
        SlowClaims {
            address,
            hold_next,
            held_and_sent,
        }
    }

    fn url(&self) -> String {
        format!("redis://{}", self.address)
    }
}

#[test]
fn a_completion_whose_claim_redis_made_too_late_can_be_tried_again() {
    // The claim's answer comes after the gateway stopped waiting (503, no vendor call), yet Redis
    // made the claim: unless the gateway takes it back, the user's retry would be refused as a
    // second use of the id, though the password was never changed.
    let sandbox = Sandbox::start();
    let redis = Redis::start();
    let relay = SlowClaims::start(&redis, Duration::from_millis(3 * REDIS_TIMEOUT_MS));
    let config = capillary_config(
        &sandbox,
        &format!("[limits]\n{}", backend_at(&relay.url(), "deny")),
    );
    let gw = Gateway::start(&config, CAPILLARY_ENV);
    let reset_id = start_reset(&gw, "key-web", "email", EMAIL);
    let v = verify(&gw, "key-web", &reset_id, &sandbox.last_otp(EMAIL));
    assert_eq!(v.status, 200);
    let next = v.json()["reset_id"].as_str().unwrap().to_string();
    // A refused password: a claim and its release, so Redis knows both scripts (a held command
    // that Redis answered "no such script" would never be made, and the test could not fail).
    complete(&gw, "key-web", &next, "weakpw").problem(422, "password_rejected");

    relay.hold_next.store(true, Ordering::SeqCst);
    let calls = sandbox.calls("capillary");
    let p = complete(&gw, "key-web", &next, "Shared-n3w-pw").problem(503, "upstream_unavailable");
    assert!(p["detail"].as_str().unwrap().contains("unused"), "{p}");
    assert_eq!(sandbox.calls("capillary"), calls, "no vendor call was made");
    // Wait until the held claim has reached Redis, and a moment for what follows it.
    let waited = Instant::now();
    while relay.held_and_sent.load(Ordering::SeqCst) == 0 {
        assert!(
            waited.elapsed() < Duration::from_secs(10),
            "the claim was sent"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(REDIS_TIMEOUT_MS));

    // The user tries again: while the gateway rests after the slow call, a 503 again (no vendor
    // call), then the change. Never a 409: the late claim was taken back.
    let mut again = complete(&gw, "key-web", &next, "Shared-n3w-pw");
    while again.status == 503 && waited.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
        again = complete(&gw, "key-web", &next, "Shared-n3w-pw");
    }
    assert_eq!(
        again.status,
        200,
        "{}",
        String::from_utf8_lossy(&again.body)
    );
    complete(&gw, "key-web", &next, "Other-n3w-pw").problem(409, "wrong_step");
}

#[test]
fn a_release_whose_caller_stops_waiting_still_reaches_redis() {
    // A completion the vendor refused releases the reset id's claim, inside the step's deadline.
    // If the deadline passes during the release, the step stops waiting for it; the release must
    // go on, or the id stays claimed and the user's retry is refused as a second use though the
    // password never changed. The first release a Redis sees is the case that showed it: its
    // script is not loaded yet, and the command that loads it is sent only after Redis has said
    // so, by whoever is still polling.
    use reset_gateway::redis_store::{FailurePolicy, RedisSettings, RedisStore};
    use reset_gateway::single_use::{Claim, RedisUsedIds, UsedIds};
    use std::future::Future;
    let redis = Redis::start();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = RedisStore::new(RedisSettings {
            url: redis.url(),
            cluster_nodes: Vec::new(),
            password: None,
            timeout: Duration::from_secs(1),
            on_failure: FailurePolicy::Local,
            replicas: 1,
            key_prefix: "it".into(),
        })
        .unwrap();
        let used = RedisUsedIds::new(std::sync::Arc::new(store));
        let minute = Duration::from_secs(60);
        let Claim::Claimed(token) = used.claim("reset-1", minute).await else {
            panic!("a fresh id is claimed");
        };
        // Polled once, then dropped, as a step's deadline drops it.
        let mut release = Box::pin(used.release("reset-1", token));
        std::future::poll_fn(|cx| {
            let _ = release.as_mut().poll(cx);
            std::task::Poll::Ready(())
        })
        .await;
        drop(release);
        let given_up = Instant::now() + Duration::from_secs(3);
        loop {
            match used.claim("reset-1", minute).await {
                Claim::Claimed(_) => break,
                other => assert!(
                    Instant::now() < given_up,
                    "the claim is still held: {other:?}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
}

#[test]
fn a_code_the_vendor_accepted_is_answered_so_however_slow_redis_is_afterwards() {
    // A right code gives its wrong-code cell back in Redis after the vendor accepted it. Were
    // the step to wait for that within its deadline, a Redis that stalls just then would turn
    // the vendor's acceptance into a 504: the code spent at the vendor, and no reset id to go on.
    let sandbox = Sandbox::start_with_delay(2_000);
    let redis = Redis::start();
    let timeouts = VendorTimeouts {
        read_ms: 3_000,
        total_ms: 3_000,
        ..VendorTimeouts::default()
    };
    // Redis may take 1.2 s (under half the step), so a refund that waited would end past the
    // step's 3 s: 2 s at the vendor, then 1.2 s for Redis.
    let backend = backend_at(&redis.url(), "local").replace(
        &format!("timeout_ms = {REDIS_TIMEOUT_MS}"),
        "timeout_ms = 1200",
    );
    let gw = Gateway::start(
        &cbss_config_timed(&sandbox, timeouts, &format!("[limits]\n{backend}")),
        CBSS_ENV,
    );
    let reset_id = start_reset(&gw, "key-json", "email", EMAIL);
    let otp = sandbox.last_otp(EMAIL);
    std::thread::scope(|s| {
        let verifying = s.spawn(|| verify(&gw, "key-json", &reset_id, &otp));
        // The verification's limits are decided by now; the vendor answers in 2 s.
        std::thread::sleep(Duration::from_millis(700));
        redis.pause();
        let v = verifying.join().unwrap();
        redis.resume();
        assert_eq!(v.status, 200, "{}", String::from_utf8_lossy(&v.body));
        assert_eq!(v.json()["next"], "complete");
    });
}

#[test]
fn readiness_answers_at_once_while_redis_hangs_unless_the_policy_is_deny() {
    // A Redis that accepts connections and never answers (a route that drops packets, a node
    // stalled): with a timeout_ms longer than the readiness probe's own timeout, waiting for it
    // would fail every replica's probe at once, though under `local` they all still serve.
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("redis://{}", hung.local_addr().unwrap());
    let backend = backend_at(&url, "local").replace(
        &format!("timeout_ms = {REDIS_TIMEOUT_MS}"),
        "timeout_ms = 1400",
    );
    let sandbox = Sandbox::start();
    let gw = Gateway::start(
        &cbss_config(&sandbox, &format!("[limits]\n{backend}")),
        CBSS_ENV,
    );
    for _ in 0..2 {
        let asked = Instant::now();
        let r = request(gw.admin, "GET", "/readyz", &[], b"");
        let took = asked.elapsed();
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["redis"], "down");
        assert!(took < Duration::from_millis(1_200), "/readyz took {took:?}");
    }
    drop(hung);
}
