//! `reset-gateway`: run the gateway, check a config, hash an API key, or run the sandbox vendors.
#![forbid(unsafe_code)]

use std::io::Read;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use reset_gateway::config::Config;
use reset_gateway::sandbox::capillary::CapillaryOptions;
use reset_gateway::sandbox::SandboxOptions;
use reset_gateway::signing::sha256;
use reset_gateway::token::TokenKeys;

/// mimalloc instead of glibc's malloc: the request path makes many small, short-lived
/// allocations, and glibc's allocator was a tenth of the gateway's CPU under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The fewest characters `hash-key` takes without a warning: 22 base64 characters hold 128 bits.
const STRONG_API_KEY_CHARS: usize = 22;

/// The longest the sandbox's lifetimes and windows may be set to, in seconds (a year): far past
/// any test or demo, and short of the overflow a time that far ahead would be.
const YEAR_SECS: u64 = 365 * 24 * 3600;
/// The longest the sandbox's delay and idle timeout may be set to, in milliseconds (an hour).
const HOUR_MS: u64 = 3_600_000;

/// A new API key: 32 random bytes, base64url without padding (43 characters, safe in a header and
/// a shell), from the operating system's generator through rand's thread-local generator. One in
/// 64 such keys begins with `-`, which command lines (`hash-key KEY`, curl's) take for an option:
/// those are drawn again, which leaves 255.98 bits.
fn generate_api_key() -> String {
    use base64::Engine;
    use rand::RngCore;
    loop {
        let mut raw = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut raw);
        let key = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        if !key.starts_with('-') {
            return key;
        }
    }
}

#[derive(Parser)]
#[command(
    version,
    about = "A password-reset gateway: one canonical /reset API in front of many vendors"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the default).
    Run {
        /// The configuration file.
        #[arg(long, short, default_value = "gateway.toml")]
        config: String,
    },
    /// Validate a configuration file (and the environment variables it names); list every problem.
    CheckConfig {
        #[arg(default_value = "gateway.toml")]
        config: String,
    },
    /// Print the key_sha256 of an API key for gateway.toml. Reads the key from standard input
    /// when none is given, so it stays out of the shell history.
    HashKey {
        /// The key; one beginning with `-` is taken as the key, not as an option.
        #[arg(allow_hyphen_values = true)]
        key: Option<String>,
    },
    /// Print a new random API key (256 bits) and its key_sha256: give the key to the app, put the
    /// hash in gateway.toml. The key is not kept anywhere.
    GenApiKey,
    /// Print a new token key for GATEWAY_TOKEN_KEYS, as `kid:base64key`.
    GenTokenKey {
        /// The key id.
        #[arg(default_value = "k1")]
        id: String,
    },
    /// Run only the sandbox vendors on one listener.
    Sandbox {
        #[arg(long, default_value = "127.0.0.1:9100")]
        listen: String,
        /// Delay every vendor answer by this many milliseconds (to try timeouts).
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(..=HOUR_MS))]
        delay_ms: u64,
        /// How long a CBSS one-time code lives, in seconds.
        #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=YEAR_SECS))]
        cbss_otp_lifetime_secs: u64,
        /// Capillary's requests per window (a minute) per API key.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
        capillary_rate_limit: u32,
        /// The window of Capillary's rate limit, in seconds: never more than the limit in any
        /// window this long.
        #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=YEAR_SECS))]
        capillary_rate_window_secs: u64,
        /// How long a Capillary sessionId lives, in seconds.
        #[arg(long, default_value_t = 900, value_parser = clap::value_parser!(u64).range(1..=YEAR_SECS))]
        capillary_session_secs: u64,
        /// The header Capillary reads the API key from (an operator's setup names it).
        #[arg(long, default_value = reset_gateway::sandbox::capillary::API_KEY_HEADER)]
        capillary_api_key_header: String,
        /// How long a client connection may stay idle before the sandbox closes it, as vendors'
        /// servers do (the gateway must then not use it).
        #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=HOUR_MS))]
        idle_timeout_ms: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Run {
        config: "gateway.toml".into(),
    });
    match command {
        Command::Run { config } => fail(reset_gateway::run::gateway(&config)),
        Command::CheckConfig { config } => match Config::load(&config) {
            Ok(c) => {
                println!(
                    "{config}: OK ({} tenants, {} connections)",
                    c.tenants.len(),
                    c.connections.len()
                );
                for warning in c.warnings() {
                    eprintln!("warning: {warning}");
                }
                ExitCode::SUCCESS
            }
            Err(problems) => {
                for p in &problems {
                    eprintln!("{p}");
                }
                eprintln!("{} problem(s) found", problems.len());
                ExitCode::FAILURE
            }
        },
        Command::HashKey { key } => {
            let key = match key {
                Some(k) => k,
                None => {
                    let mut s = String::new();
                    if std::io::stdin().read_to_string(&mut s).is_err() {
                        eprintln!("cannot read the key from standard input");
                        return ExitCode::FAILURE;
                    }
                    s.trim_end_matches(['\r', '\n']).to_string()
                }
            };
            if key.is_empty() {
                eprintln!("the key is empty");
                return ExitCode::FAILURE;
            }
            // key_sha256 is a plain digest, so a short key can be found from it by trying
            // candidates: the hash is still printed (existing keys must go on working), with a
            // warning on standard error.
            let length = key.chars().count();
            if length < STRONG_API_KEY_CHARS {
                eprintln!(
                    "warning: a key of {length} characters can be found from its key_sha256 by \
                     trying candidates; `reset-gateway gen-api-key` makes one of 256 bits"
                );
            }
            println!("{}", hex::encode(sha256(key.as_bytes())));
            ExitCode::SUCCESS
        }
        Command::GenApiKey => {
            let key = generate_api_key();
            println!("key: {key}");
            println!("key_sha256: {}", hex::encode(sha256(key.as_bytes())));
            ExitCode::SUCCESS
        }
        Command::GenTokenKey { id } => match TokenKeys::generate_spec(&id) {
            Ok(spec) => {
                println!("{spec}");
                ExitCode::SUCCESS
            }
            Err(why) => {
                eprintln!("{why}");
                ExitCode::FAILURE
            }
        },
        Command::Sandbox {
            listen,
            delay_ms,
            cbss_otp_lifetime_secs,
            capillary_rate_limit,
            capillary_rate_window_secs,
            capillary_session_secs,
            capillary_api_key_header,
            idle_timeout_ms,
        } => fail(reset_gateway::run::sandbox(
            &listen,
            SandboxOptions {
                delay: Duration::from_millis(delay_ms),
                cbss_otp_lifetime: Duration::from_secs(cbss_otp_lifetime_secs),
                capillary: CapillaryOptions {
                    rate_limit: capillary_rate_limit,
                    rate_window: Duration::from_secs(capillary_rate_window_secs),
                    session_ttl: Duration::from_secs(capillary_session_secs),
                    api_key_header: capillary_api_key_header,
                },
            },
            Duration::from_millis(idle_timeout_ms),
        )),
    }
}

fn fail(result: Result<(), String>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("reset-gateway: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_api_key_never_begins_like_an_option() {
        // Without the redraw, 10,000 keys would hold about 156 that begin with `-`.
        for _ in 0..10_000 {
            let key = generate_api_key();
            assert_eq!(key.len(), 43);
            assert!(!key.starts_with('-'), "{key}");
        }
    }
}
