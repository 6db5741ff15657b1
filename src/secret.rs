//! `Secret`: a string that never prints. Its `Debug` and `Display` show a fixed placeholder, so a
//! secret that ends up in a log line or a config dump by mistake still leaks nothing.

use subtle::ConstantTimeEq;

#[derive(Clone, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// Reads a secret from the environment variable `name`. A value holding a control character
    /// is refused: it is always a mistake (most often the line break a Kubernetes Secret made
    /// with `--from-file` keeps at its end), it would sign wrongly, and sent as a header value a
    /// line break would end the request's head early and smuggle the rest to the vendor.
    pub fn from_env(name: &str) -> Result<Self, String> {
        match std::env::var(name) {
            Ok(v) if v.is_empty() => Err(format!("environment variable {name} is empty")),
            Ok(v) if v.chars().any(char::is_control) => Err(format!(
                "environment variable {name} holds a control character (a line break at its \
                 end, as a Secret made from a file keeps, for instance): remove it"
            )),
            Ok(v) => Ok(Secret(v)),
            Err(std::env::VarError::NotUnicode(_)) => {
                Err(format!("environment variable {name} is not valid UTF-8"))
            }
            Err(std::env::VarError::NotPresent) => {
                Err(format!("environment variable {name} is not set"))
            }
        }
    }

    /// The secret's value, for signing and sending. Never format it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Compares with another value in time that does not depend on where they differ.
    pub fn ct_eq(&self, other: &[u8]) -> bool {
        self.0.as_bytes().ct_eq(other).into()
    }
}

/// The value is wiped from memory when dropped: a secret read for a check or a reload leaves no
/// copy behind in freed memory for a core dump or a later allocation to show.
impl Drop for Secret {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

/// What stands in for a secret the gateway removed from text it passes on (a vendor's message) or
/// from a request's `Debug` form.
pub const REDACTED: &str = "[redacted]";

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_with_a_control_character_is_refused_without_being_shown() {
        let name = "RESET_GATEWAY_SECRET_TEST_NEWLINE";
        // The process's environment is shared by the unit tests: this name is this test's own.
        std::env::set_var(name, "hunter2\n");
        let refused = Secret::from_env(name).unwrap_err();
        assert!(refused.contains("control character"), "{refused}");
        assert!(!refused.contains("hunter2"), "{refused}");
        std::env::set_var(name, "hunter2");
        assert!(Secret::from_env(name).unwrap().ct_eq(b"hunter2"));
        std::env::remove_var(name);
    }

    #[test]
    fn never_formats_its_value() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?} {s}").contains("hunter2"));
        assert!(s.ct_eq(b"hunter2"));
        assert!(!s.ct_eq(b"hunter3"));
    }
}
