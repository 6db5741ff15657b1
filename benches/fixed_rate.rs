//! A fixed-rate load generator for the load harness's half-load phase: each of N kept-alive
//! connections sends the harness's canonical POST on its own schedule (together, RATE requests a
//! second), and a request's latency counts from when it was due, not from when it went out, so a
//! slow answer that delays the next request is charged to it (no coordinated omission).
//!
//! oha's fixed-rate mode was tried first; it needs a cargo install of its own and half a core at
//! these rates. This is std only: blocking sockets on plain threads that sleep until each
//! request is due. (On this project's VM, both show a p99 of 10-30 ms even against nginx's bare
//! `return 200`: the hypervisor's steal, which the harness prints beside each figure.)
//!
//! `cargo bench --bench fixed_rate -- URL RATE CONNECTIONS SECONDS` prints one JSON line:
//! `{"rps":..,"p50_ms":..,"p90_ms":..,"p99_ms":..,"errors":..,"requests":..}`. Without arguments (a plain
//! `cargo bench`) it says how to use it and exits.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const BODY: &str = r#"{"identifier":{"type":"email","value":"somchai@example.com"}}"#;

struct Outcome {
    latencies: Vec<Duration>,
    errors: usize,
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let [url, rate, connections, seconds] = args.as_slice() else {
        eprintln!("usage: cargo bench --bench fixed_rate -- URL RATE CONNECTIONS SECONDS");
        return;
    };
    let (addr, path) = split_url(url);
    let rate: f64 = rate.parse().expect("RATE is requests per second");
    let connections: usize = connections.parse().expect("CONNECTIONS is a count");
    let seconds: f64 = seconds.parse().expect("SECONDS is a duration");
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer bench-key\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let every = Duration::from_secs_f64(connections as f64 / rate);
    let start = Instant::now() + Duration::from_millis(200);
    let end = start + Duration::from_secs_f64(seconds);
    let workers: Vec<_> = (0..connections)
        .map(|i| {
            let (addr, request) = (addr.clone(), request.clone());
            // Connections take turns: together they send evenly, not in bursts.
            let first = start + every.mul_f64(i as f64 / connections as f64);
            std::thread::spawn(move || run(&addr, request.as_bytes(), first, every, end))
        })
        .collect();
    let mut latencies = Vec::new();
    let mut errors = 0;
    for worker in workers {
        let outcome = worker.join().expect("a worker");
        latencies.extend(outcome.latencies);
        errors += outcome.errors;
    }
    latencies.sort();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        r#"{{"rps":{:.1},"p50_ms":{:.3},"p90_ms":{:.3},"p99_ms":{:.3},"errors":{},"requests":{}}}"#,
        latencies.len() as f64 / seconds,
        at(0.50),
        at(0.90),
        at(0.99),
        errors,
        latencies.len()
    );
}

fn split_url(url: &str) -> (String, String) {
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    match rest.find('/') {
        Some(i) => (rest[..i].to_string(), rest[i..].to_string()),
        None => (rest.to_string(), "/".to_string()),
    }
}

/// One connection's schedule: a request every `every` from `first` until `end`.
fn run(addr: &str, request: &[u8], first: Instant, every: Duration, end: Instant) -> Outcome {
    let mut outcome = Outcome {
        latencies: Vec::new(),
        errors: 0,
    };
    let mut stream: Option<TcpStream> = None;
    let mut buf = vec![0u8; 16 * 1024];
    let mut due = first;
    while due < end {
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let conn = match stream.take() {
            Some(s) => s,
            None => match TcpStream::connect(addr) {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                    s
                }
                Err(_) => {
                    outcome.errors += 1;
                    due += every;
                    continue;
                }
            },
        };
        match exchange(conn, request, &mut buf) {
            Some((conn, ok)) => {
                outcome.latencies.push(due.elapsed());
                if !ok {
                    outcome.errors += 1;
                }
                stream = Some(conn);
            }
            None => outcome.errors += 1,
        }
        due += every;
    }
    outcome
}

/// Sends one request and reads its whole answer; the connection back, and whether it was a 2xx.
fn exchange(mut conn: TcpStream, request: &[u8], buf: &mut [u8]) -> Option<(TcpStream, bool)> {
    conn.write_all(request).ok()?;
    let mut filled = 0;
    loop {
        let n = conn.read(&mut buf[filled..]).ok()?;
        if n == 0 {
            return None;
        }
        filled += n;
        let Some(head_end) = buf[..filled].windows(4).position(|w| w == b"\r\n\r\n") else {
            if filled == buf.len() {
                return None;
            }
            continue;
        };
        let head = std::str::from_utf8(&buf[..head_end]).ok()?;
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .unwrap_or(0);
        if filled >= head_end + 4 + length {
            return Some((conn, head.starts_with("HTTP/1.1 2")));
        }
        if filled == buf.len() {
            return None;
        }
    }
}
