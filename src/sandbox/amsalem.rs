//! The Amsalem sandbox: `api/Customers/ChangePassword` in JSON and XML, the authentication block
//! checked (API user, a salt of at least 9 digits never seen before, the digest by vendors.md's
//! recipe), and keys issued through `POST /sandbox/amsalem/reset-codes` as the vendor's e-mail
//! would. Failures carry a code in `Extra1`, as README.md lists.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::distributions::Alphanumeric;
use rand::Rng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{demo_customers, password_ok, Customer, Format, Outbox};
use crate::http::Reply;
use crate::xml;

/// The sandbox's API user and shared secret: public demo values, not secrets.
pub const DEMO_API_USERNAME: &str = "sandbox-api";
pub const DEMO_SECRET: &str = "sandbox-amsalem-secret";

const KEY_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// An `Extra1` failure code and the `Message` beside it.
type Refusal = (&'static str, Cow<'static, str>);

const SALTS_REMEMBERED: usize = 100_000;
const MAX_KEYS: usize = 10_000;

struct IssuedKey {
    customer: usize,
    expires: Instant,
}

/// How near the last request's salt a salt may not be.
const SALT_NEIGHBOURHOOD: u64 = 100;

struct State {
    customers: Vec<Customer>,
    keys: HashMap<String, IssuedKey>,
    salts: HashSet<u64>,
    salt_order: VecDeque<u64>,
    /// The salt of the last request that passed the digest and reuse checks, against which the
    /// next must not look counted.
    last_salt: Option<u64>,
}

pub struct AmsalemSandbox {
    state: Mutex<State>,
    outbox: Arc<Outbox>,
}

/// A request as Amsalem reads it, whichever format it came in.
struct Request {
    user_name: String,
    email: String,
    key: String,
    new_password: String,
    api_username: String,
    salt: Option<u64>,
    digest: String,
}

impl AmsalemSandbox {
    pub fn new(outbox: Arc<Outbox>) -> Self {
        AmsalemSandbox {
            state: Mutex::new(State {
                customers: demo_customers(),
                keys: HashMap::new(),
                salts: HashSet::new(),
                salt_order: VecDeque::new(),
                last_salt: None,
            }),
            outbox,
        }
    }

    /// Issues a key for a customer (by user name or e-mail) and "e-mails" it to the outbox.
    pub fn issue_key(&self, identifier: &str) -> Result<String, super::NotIssued> {
        let mut state = self.state.lock().expect("amsalem sandbox lock");
        let customer = state
            .customers
            .iter()
            .position(|c| c.username == identifier || c.email == identifier)
            .ok_or(super::NotIssued::NoSuchCustomer)?;
        let now = Instant::now();
        state.keys.retain(|_, k| k.expires > now);
        if state.keys.len() >= MAX_KEYS {
            return Err(super::NotIssued::Full);
        }
        let key: String = rand::thread_rng()
            .sample_iter(&Alphanumeric)
            .take(12)
            .map(char::from)
            .collect();
        state.keys.insert(
            key.clone(),
            IssuedKey {
                customer,
                expires: now + KEY_LIFETIME,
            },
        );
        self.outbox
            .push("amsalem", state.customers[customer].email, &key);
        Ok(key)
    }

    pub fn handle(&self, rest: &str, content_type: &str, body: &[u8]) -> Reply {
        if rest != "api/Customers/ChangePassword" {
            return Reply::text(404, "no such Amsalem resource\n");
        }
        let (format, request) = match Format::of(content_type) {
            Some(Format::Json) => (Format::Json, read_json(body)),
            Some(Format::Xml) => (Format::Xml, read_xml(body)),
            None => return Reply::text(415, "Amsalem takes application/json or application/xml\n"),
        };
        let outcome = match request {
            Some(req) => self.change_password(req),
            None => Err(("INVALID_REQUEST", "The request is malformed.".into())),
        };
        answer(format, outcome)
    }

    fn change_password(&self, req: Request) -> Result<(), Refusal> {
        if req.api_username != DEMO_API_USERNAME {
            return Err(("UNKNOWN_API_USER", "Unknown API user.".into()));
        }
        let salt = match req.salt {
            Some(s) if s >= 100_000_000 => s,
            _ => {
                return Err((
                    "INVALID_REQUEST",
                    "Salt must be a number of at least 9 digits.".into(),
                ))
            }
        };
        let mut hasher = Sha256::new();
        for part in [
            req.api_username.as_str(),
            &salt.to_string(),
            &req.key,
            &req.new_password,
            DEMO_SECRET,
        ] {
            hasher.update(part.as_bytes());
        }
        // The recipe's encoding is lower-case hex: a digest in another case is another recipe.
        let expected = hex::encode(hasher.finalize());
        if !bool::from(expected.as_bytes().ct_eq(req.digest.as_bytes())) {
            // Quoted back as a .NET service's validation message might: the gateway must keep a
            // request's digest out of what it shows and logs.
            let message = format!("Invalid digest '{}'.", req.digest);
            return Err(("INVALID_DIGEST", message.into()));
        }
        let mut state = self.state.lock().expect("amsalem sandbox lock");
        // A salt is good once: a replayed request is refused even with a valid digest.
        if !state.salts.insert(salt) {
            return Err(("SALT_REUSED", "This salt was already used.".into()));
        }
        state.salt_order.push_back(salt);
        if state.salt_order.len() > SALTS_REMEMBERED {
            if let Some(old) = state.salt_order.pop_front() {
                state.salts.remove(&old);
            }
        }
        // A salt is a random number: one within a hundred of the last (a counter, a clock in
        // milliseconds) is refused. Two random ones of at least 9 digits land that close about
        // once in ten million.
        if state
            .last_salt
            .replace(salt)
            .is_some_and(|last| last.abs_diff(salt) <= SALT_NEIGHBOURHOOD)
        {
            return Err((
                "INVALID_REQUEST",
                "Salt must be a random number: this one is within 100 of the last request's."
                    .into(),
            ));
        }
        let Some(issued) = state.keys.get(&req.key) else {
            return Err(("INVALID_KEY", "Invalid key.".into()));
        };
        if issued.expires <= Instant::now() {
            return Err(("KEY_EXPIRED", "The key has expired.".into()));
        }
        let customer = issued.customer;
        let c = &state.customers[customer];
        let email_ok = req.email.is_empty() || req.email.eq_ignore_ascii_case(c.email);
        if c.username != req.user_name || !email_ok {
            return Err((
                "USER_MISMATCH",
                "The key does not belong to this user.".into(),
            ));
        }
        if !password_ok(&req.new_password) {
            // Quoting the password and the key, as a service's validation message might: the
            // gateway must keep both out of what it shows.
            let message = format!(
                "The password '{}' for key {} needs at least 8 characters with letters and digits.",
                req.new_password, req.key
            );
            return Err(("PASSWORD_POLICY", message.into()));
        }
        if c.password == req.new_password {
            return Err((
                "PASSWORD_REUSED",
                "The new password equals the current one.".into(),
            ));
        }
        state.customers[customer].password = req.new_password;
        state.keys.remove(&req.key);
        Ok(())
    }
}

/// The service reads `Salt` into a .NET `long`: a number past its range is no salt at all.
fn as_salt(read: i64) -> Option<u64> {
    u64::try_from(read).ok()
}

fn read_json(body: &[u8]) -> Option<Request> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let text = |v: &serde_json::Value, name: &str| {
        v.get(name)
            .and_then(|x| x.as_str())
            .unwrap_or_default()
            .to_string()
    };
    let user = v.get("User")?;
    Some(Request {
        user_name: text(user, "UserName"),
        email: text(user, "Email"),
        key: text(user, "Key"),
        new_password: text(&v, "UserNewPassword"),
        api_username: text(&v, "UserName"),
        salt: v.get("Salt").and_then(|s| s.as_i64()).and_then(as_salt),
        digest: text(&v, "Digest"),
    })
}

fn read_xml(body: &[u8]) -> Option<Request> {
    let root = xml::parse(body).ok()?;
    // XmlSerializer's document, in no namespace: an element in one is not the member it names.
    let no_namespace = |e: &xml::Element| e.namespace.is_empty();
    if root.name != "ChangePasswordRequest"
        || !no_namespace(&root)
        || !root.children.iter().all(no_namespace)
    {
        return None;
    }
    let user = root.child("User")?;
    if !user.children.iter().all(no_namespace) {
        return None;
    }
    let text = |e: &xml::Element, name: &str| e.child_value(name).unwrap_or_default().to_string();
    Some(Request {
        user_name: text(user, "UserName"),
        email: text(user, "Email"),
        key: text(user, "Key"),
        new_password: text(&root, "UserNewPassword"),
        api_username: root.attribute("UserName").unwrap_or_default().to_string(),
        salt: root
            .attribute("Salt")
            .and_then(|s| s.parse::<i64>().ok())
            .and_then(as_salt),
        digest: root.attribute("Digest").unwrap_or_default().to_string(),
    })
}

fn answer(format: Format, outcome: Result<(), Refusal>) -> Reply {
    let (success, message, extra1) = match outcome {
        Ok(()) => (true, Cow::Borrowed("The password was changed."), None),
        Err((code, message)) => (false, message, Some(code)),
    };
    match format {
        Format::Json => {
            let body = serde_json::json!({
                "Success": success, "Message": message, "Extra1": extra1,
                "Extra2": null, "Extra3": null,
            });
            Reply::json(200, serde_json::to_vec(&body).expect("json"))
        }
        Format::Xml => {
            let extra1 = match extra1 {
                Some(code) => format!("<Extra1>{code}</Extra1>"),
                None => "<Extra1 xsi:nil=\"true\" />".to_string(),
            };
            let body = format!(
                "<ChangePasswordResponse xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\" \
                 xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\"><Success>{success}</Success>\
                 <Message>{}</Message>{extra1}<Extra2 xsi:nil=\"true\" /><Extra3 xsi:nil=\"true\" />\
                 </ChangePasswordResponse>",
                xml::escape(&message)
            );
            Reply::new(200, "application/xml; charset=utf-8", body)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The request's XML sample from the vendor's documentation.
    const SAMPLE: &str = r#"<ChangePasswordRequest xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" UserName="sample string 2" Salt="3" Digest="sample string 4">
  <User>
    <UserName>sample string 1</UserName>
    <Email>sample string 2</Email>
    <Key>sample string 3</Key>
  </User>
  <UserNewPassword>sample string 1</UserNewPassword>
</ChangePasswordRequest>"#;

    #[test]
    fn a_full_key_store_is_told_from_an_unknown_customer() {
        let sandbox = AmsalemSandbox::new(Arc::new(Outbox::default()));
        assert_eq!(
            sandbox.issue_key("nobody"),
            Err(crate::sandbox::NotIssued::NoSuchCustomer)
        );
        assert!(sandbox.issue_key("somchai").is_ok());
        {
            let mut state = sandbox.state.lock().unwrap();
            let expires = Instant::now() + KEY_LIFETIME;
            for n in state.keys.len()..MAX_KEYS {
                state.keys.insert(
                    format!("filler-{n}"),
                    IssuedKey {
                        customer: 0,
                        expires,
                    },
                );
            }
        }
        assert_eq!(
            sandbox.issue_key("somchai"),
            Err(crate::sandbox::NotIssued::Full)
        );
    }

    #[test]
    fn the_documented_xml_sample_is_read() {
        let req = read_xml(SAMPLE.as_bytes()).unwrap();
        assert_eq!(req.key, "sample string 3");
        assert_eq!(req.api_username, "sample string 2");
        assert_eq!(req.salt, Some(3));
    }

    #[test]
    fn a_salt_past_a_long_is_no_salt() {
        let past = SAMPLE.replace("Salt=\"3\"", "Salt=\"9223372036854775808\"");
        assert_eq!(read_xml(past.as_bytes()).unwrap().salt, None);
        let last = SAMPLE.replace("Salt=\"3\"", "Salt=\"9223372036854775807\"");
        assert_eq!(
            read_xml(last.as_bytes()).unwrap().salt,
            Some(i64::MAX as u64)
        );
    }

    #[test]
    fn xml_in_a_namespace_is_not_read() {
        let root_in_one = SAMPLE.replace(
            "<ChangePasswordRequest ",
            "<ChangePasswordRequest xmlns=\"urn:x\" ",
        );
        let member_in_one = SAMPLE.replace("<Key>", "<Key xmlns=\"urn:x\">");
        for doc in [root_in_one, member_in_one] {
            assert!(read_xml(doc.as_bytes()).is_none(), "{doc}");
        }
    }

    #[test]
    fn the_authentication_attributes_are_read_unqualified_only() {
        // XmlSerializer reads `Salt`, not `xsi:Salt`: an adapter writing the attributes in a
        // namespace sends a request with none, which the vendor refuses.
        let qualified = SAMPLE
            .replace(" UserName=", " xsi:UserName=")
            .replace(" Salt=", " xsi:Salt=")
            .replace(" Digest=", " xsi:Digest=");
        let req = read_xml(qualified.as_bytes()).unwrap();
        assert_eq!(req.api_username, "");
        assert_eq!(req.salt, None);
        assert_eq!(req.digest, "");
        // A member under a prefix declared nowhere is no XML at all to the vendor.
        let undeclared = SAMPLE.replace("<Key>sample string 3</Key>", "<a:Key>k</a:Key>");
        assert!(read_xml(undeclared.as_bytes()).is_none());
    }
}
