//! A fixed-rate load generator for the load harness's half-load phase: each of N kept-alive
//! connections sends the harness's canonical POST on its own schedule (together, RATE requests a
//! second), and a request's latency counts from when it was due, not from when it went out, so a
//! slow answer that delays the next request is charged to it (no coordinated omission).
//!
//! It runs on one thread, as wrk2 does: non-blocking sockets, one `ppoll` over the connections
//! with an answer outstanding, its timeout (nanosecond precision) the next request's due time.
//! The first version ran a blocking thread per connection; at 18,000 requests a second over 64
//! connections those threads took 0.6 of this machine's two cores in sleeps and wake-ups, CPU
//! the path under test then lacked, and its p99 showed it. oha's fixed-rate mode was tried
//! before that; it needs a cargo install of its own and half a core at these rates.
//!
//! `cargo bench --bench fixed_rate -- URL RATE CONNECTIONS SECONDS` prints one JSON line:
//! `{"rps":..,"p50_ms":..,"p90_ms":..,"p99_ms":..,"errors":..,"requests":..,"warm_up_s":..}`. Without arguments (a plain
//! `cargo bench`) it says how to use it and exits. With `FIXED_RATE_SLOW_MS=N` set it also
//! prints, on standard error, each counted request slower than N ms and when it was due: stalls
//! show up as bursts of due times. With `FIXED_RATE_LATENCIES=FILE` it also writes every counted
//! latency to FILE, in microseconds, ascending, as little-endian 32-bit integers (the harness
//! pools many short runs' latencies with it), and `FIXED_RATE_WARM_UP_MS=N` shortens the warm-up.

use nix::poll::{ppoll, PollFd, PollFlags};
use nix::sys::time::TimeSpec;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

const BODY: &str = r#"{"identifier":{"type":"email","value":"somchai@example.com"}}"#;

/// How long the target is driven at the full rate before answers are counted, unless
/// `FIXED_RATE_WARM_UP_MS` says otherwise.
const WARM_UP: Duration = Duration::from_secs(1);

/// How long answers still outstanding at the end are waited for before they count as errors.
const DRAIN: Duration = Duration::from_secs(5);

/// One kept-alive connection and its schedule.
struct Connection {
    stream: Option<TcpStream>,
    /// When its next request is due.
    next_due: Instant,
    /// When the request now awaiting its answer was due.
    awaiting: Option<Instant>,
    buf: Vec<u8>,
    filled: usize,
}

/// What reading from a connection with a request outstanding found.
enum Answer {
    Whole { ok: bool },
    NotYet,
    Failed,
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
    let count: usize = connections.parse().expect("CONNECTIONS is a count");
    let seconds: f64 = seconds.parse().expect("SECONDS is a duration");
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer bench-key\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let every = Duration::from_secs_f64(count as f64 / rate);
    let mut errors = 0;
    // Connections are made before the schedule starts, and the first second's answers are not
    // counted: the figures are the target's steady state, as a long-running service sees it,
    // not its first connections or its first call to its upstream.
    let streams: Vec<Option<TcpStream>> = (0..count).map(|_| connect(&addr)).collect();
    let warm_up = std::env::var("FIXED_RATE_WARM_UP_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(WARM_UP, Duration::from_millis);
    let start = Instant::now() + Duration::from_millis(100);
    let measured_from = start + warm_up;
    let end = measured_from + Duration::from_secs_f64(seconds);
    let mut conns: Vec<Connection> = streams
        .into_iter()
        .enumerate()
        .map(|(i, stream)| Connection {
            stream,
            // Connections take turns: together they send evenly, not in bursts.
            next_due: start + every.mul_f64(i as f64 / count as f64),
            awaiting: None,
            buf: vec![0; 16 * 1024],
            filled: 0,
        })
        .collect();
    let mut latencies = Vec::with_capacity((rate * seconds) as usize + 1);
    let request = request.as_bytes();
    let slow = std::env::var("FIXED_RATE_SLOW_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis);
    loop {
        let now = Instant::now();
        // Send every request that is due on a connection that is free.
        for c in conns.iter_mut() {
            if c.awaiting.is_some() || c.next_due > now || c.next_due >= end {
                continue;
            }
            let due = c.next_due;
            c.next_due += every;
            if send(c, &addr, request) {
                c.awaiting = Some(due);
            } else {
                errors += 1;
            }
        }
        let waiting: Vec<usize> = (0..conns.len())
            .filter(|&i| conns[i].awaiting.is_some())
            .collect();
        let next_due = conns
            .iter()
            .filter(|c| c.awaiting.is_none() && c.next_due < end)
            .map(|c| c.next_due)
            .min();
        if waiting.is_empty() && next_due.is_none() {
            break;
        }
        if now >= end + DRAIN {
            errors += waiting.len();
            break;
        }
        // Wait for an answer, or until the next request is due.
        let wait = next_due
            .unwrap_or(end + DRAIN)
            .saturating_duration_since(now);
        let ready: Vec<usize> = {
            let mut fds: Vec<PollFd> = waiting
                .iter()
                .map(|&i| {
                    let stream = conns[i].stream.as_ref().expect("a request is outstanding");
                    PollFd::new(stream.as_fd(), PollFlags::POLLIN)
                })
                .collect();
            match ppoll(&mut fds, Some(TimeSpec::from_duration(wait)), None) {
                Ok(0) | Err(_) => Vec::new(),
                Ok(_) => waiting
                    .iter()
                    .zip(&fds)
                    .filter(|(_, fd)| fd.revents().is_some_and(|r| !r.is_empty()))
                    .map(|(&i, _)| i)
                    .collect(),
            }
        };
        for i in ready {
            let c = &mut conns[i];
            match read_answer(c) {
                Answer::NotYet => {}
                Answer::Whole { ok } => {
                    let due = c.awaiting.take().expect("a request is outstanding");
                    if due < measured_from {
                        continue;
                    }
                    let took = due.elapsed();
                    latencies.push(took);
                    if slow.is_some_and(|slow| took > slow) {
                        eprintln!(
                            "slow {i} due {:.3} s took {:.2} ms",
                            (due - measured_from).as_secs_f64(),
                            took.as_secs_f64() * 1000.0
                        );
                    }
                    if !ok {
                        errors += 1;
                    }
                }
                Answer::Failed => {
                    c.awaiting = None;
                    c.stream = None;
                    errors += 1;
                }
            }
        }
    }
    latencies.sort();
    if let Ok(path) = std::env::var("FIXED_RATE_LATENCIES") {
        let bytes: Vec<u8> = latencies
            .iter()
            .flat_map(|d| {
                u32::try_from(d.as_micros())
                    .unwrap_or(u32::MAX)
                    .to_le_bytes()
            })
            .collect();
        std::fs::write(&path, bytes).expect("FIXED_RATE_LATENCIES names a writable file");
    }
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        r#"{{"rps":{:.1},"p50_ms":{:.3},"p90_ms":{:.3},"p99_ms":{:.3},"errors":{},"requests":{},"warm_up_s":{}}}"#,
        latencies.len() as f64 / seconds,
        at(0.50),
        at(0.90),
        at(0.99),
        errors,
        latencies.len(),
        warm_up.as_secs_f64()
    );
}

fn split_url(url: &str) -> (String, String) {
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    match rest.find('/') {
        Some(i) => (rest[..i].to_string(), rest[i..].to_string()),
        None => (rest.to_string(), "/".to_string()),
    }
}

/// Sends one request on the connection, connecting first if it has none. The request is far
/// smaller than a socket's send buffer, so a non-blocking write takes it whole or fails.
fn send(c: &mut Connection, addr: &str, request: &[u8]) -> bool {
    if c.stream.is_none() {
        c.stream = connect(addr);
        if c.stream.is_none() {
            return false;
        }
    }
    c.filled = 0;
    let stream = c.stream.as_mut().expect("connected above");
    match stream.write(request) {
        Ok(n) if n == request.len() => true,
        _ => {
            c.stream = None;
            false
        }
    }
}

/// A connection ready for `send`: no Nagle delay, non-blocking.
fn connect(addr: &str) -> Option<TcpStream> {
    let stream = TcpStream::connect(addr).ok()?;
    stream.set_nodelay(true).ok()?;
    stream.set_nonblocking(true).ok()?;
    Some(stream)
}

/// Reads what has arrived of the outstanding request's answer. It reads again only while the
/// answer is incomplete: a read that would find nothing costs a system call for nothing.
fn read_answer(c: &mut Connection) -> Answer {
    let Some(stream) = c.stream.as_mut() else {
        return Answer::Failed;
    };
    loop {
        if c.filled == c.buf.len() {
            return Answer::Failed;
        }
        match stream.read(&mut c.buf[c.filled..]) {
            Ok(0) => return Answer::Failed,
            Ok(n) => c.filled += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Answer::NotYet,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return Answer::Failed,
        }
        match framed(&c.buf[..c.filled]) {
            Answer::NotYet => continue,
            answer => return answer,
        }
    }
}

/// Whether `buf` holds one whole answer, and whether it was a 2xx.
fn framed(buf: &[u8]) -> Answer {
    let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Answer::NotYet;
    };
    let Ok(head) = std::str::from_utf8(&buf[..head_end]) else {
        return Answer::Failed;
    };
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    match buf.len().cmp(&(head_end + 4 + length)) {
        std::cmp::Ordering::Less => Answer::NotYet,
        std::cmp::Ordering::Equal => Answer::Whole {
            ok: head.starts_with("HTTP/1.1 2"),
        },
        // Every answer here is a fixed-length keep-alive one; bytes past it would be a
        // protocol error on the target's part.
        std::cmp::Ordering::Greater => Answer::Failed,
    }
}
