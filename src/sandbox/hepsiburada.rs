//! The Hepsiburada sandbox: `api/Customer/PasswordChange` in JSON and DataContract XML. Change
//! requests are issued through `POST /sandbox/hepsiburada/reset-codes` as the vendor's reset link
//! would carry them; the end user's address and user agent must come with the change, and the
//! last ones received are shown at `GET /sandbox/hepsiburada/last-request` (never the password).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use super::{demo_customers, password_ok, Customer, Outbox};
use crate::http::Reply;
use crate::xml;

const REQUEST_LIFETIME: Duration = Duration::from_secs(3600);
const MAX_REQUESTS: usize = 10_000;
const NS_RESPONSE: &str = "http://schemas.datacontract.org/2004/07/BusinessLayer.Dto.Response";
const NS_REQUEST: &str = "http://schemas.datacontract.org/2004/07/BusinessLayer.Dto.Request";

/// PasswordChangeResponseCode values the sandbox uses (9000 is the documented sample; the others
/// are the sandbox's own, as the vendor's full list is not public).
#[derive(Clone, Copy)]
enum Code {
    Success,
    PasswordUsedBefore,
    ChangeRequestNotFound,
    PasswordInvalid,
}

impl Code {
    // A success carries the enum's lowest value, as the documentation's success sample does
    // (`Code` 9000, `PasswordUsedBefore` in XML, beside `IsValid` and `Success` true): the
    // service leaves the code unset, so only `Success` and `IsValid` tell a success from a
    // reused password.
    fn number(self) -> u32 {
        match self {
            Code::Success | Code::PasswordUsedBefore => 9000,
            Code::ChangeRequestNotFound => 9001,
            Code::PasswordInvalid => 9002,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Code::Success | Code::PasswordUsedBefore => "PasswordUsedBefore",
            Code::ChangeRequestNotFound => "ChangeRequestNotFound",
            Code::PasswordInvalid => "PasswordInvalid",
        }
    }
}

struct ChangeRequest {
    customer: usize,
    expires: Instant,
}

struct State {
    customers: Vec<Customer>,
    requests: HashMap<String, ChangeRequest>,
    last: Option<serde_json::Value>,
}

pub struct HepsiburadaSandbox {
    state: Mutex<State>,
    outbox: Arc<Outbox>,
}

struct Request {
    from_identity_server: Option<bool>,
    password: String,
    change_request_id: String,
    ip_address: String,
    user_agent: String,
    permanent_session_id: String,
}

impl HepsiburadaSandbox {
    pub fn new(outbox: Arc<Outbox>) -> Self {
        HepsiburadaSandbox {
            state: Mutex::new(State {
                customers: demo_customers(),
                requests: HashMap::new(),
                last: None,
            }),
            outbox,
        }
    }

    /// Issues a change request for a customer (by e-mail or user name), as a reset link would.
    pub fn issue_change_request(&self, identifier: &str) -> Result<String, super::NotIssued> {
        let mut state = self.state.lock().expect("hepsiburada sandbox lock");
        let customer = state
            .customers
            .iter()
            .position(|c| c.email == identifier || c.username == identifier)
            .ok_or(super::NotIssued::NoSuchCustomer)?;
        let now = Instant::now();
        state.requests.retain(|_, r| r.expires > now);
        if state.requests.len() >= MAX_REQUESTS {
            return Err(super::NotIssued::Full);
        }
        let r = crate::request_id::generate();
        let id = format!(
            "{}-{}-{}-{}-{}",
            &r[..8],
            &r[8..12],
            &r[12..16],
            &r[16..20],
            &r[20..]
        );
        state.requests.insert(
            id.clone(),
            ChangeRequest {
                customer,
                expires: now + REQUEST_LIFETIME,
            },
        );
        self.outbox
            .push("hepsiburada", state.customers[customer].email, &id);
        Ok(id)
    }

    /// The address, user agent and session id of the last change received.
    pub fn last_request(&self) -> serde_json::Value {
        let state = self.state.lock().expect("hepsiburada sandbox lock");
        state.last.clone().unwrap_or(serde_json::Value::Null)
    }

    pub fn handle(&self, rest: &str, content_type: &str, body: &[u8]) -> Reply {
        if rest != "api/Customer/PasswordChange" {
            return Reply::text(404, "no such Hepsiburada resource\n");
        }
        let Some(format) = super::Format::of(content_type) else {
            return Reply::text(
                415,
                "Hepsiburada takes application/json or application/xml\n",
            );
        };
        let xml_format = format == super::Format::Xml;
        let request = if xml_format {
            read_xml(body)
        } else {
            read_json(body)
        };
        match request.and_then(|req| self.change(req)) {
            Some((code, is_valid, message, email)) => {
                answer(xml_format, code, is_valid, &message, email)
            }
            None => request_invalid(xml_format),
        }
    }

    /// The change's outcome: its code, IsValid, message and the customer's email; `None` for a
    /// request without the members the service requires (its model is invalid).
    fn change(
        &self,
        req: Request,
    ) -> Option<(Code, bool, Cow<'static, str>, Option<&'static str>)> {
        let mut state = self.state.lock().expect("hepsiburada sandbox lock");
        state.last = Some(json!({
            "IPAddress": req.ip_address,
            "UserAgent": req.user_agent,
            "PermanentSessionId": req.permanent_session_id,
            "RequestFromIdentityServer": req.from_identity_server,
        }));
        // The end user's address: an address, and one a user can be at (not 0.0.0.0 or ::, which
        // an adapter that lost the user's address might send in its place).
        let ip_ok = req
            .ip_address
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| !ip.is_unspecified());
        if req.from_identity_server.is_none() || !ip_ok || req.user_agent.is_empty() {
            return None;
        }
        let Some(found) = state.requests.get(&req.change_request_id) else {
            return Some((
                Code::ChangeRequestNotFound,
                true,
                "Change request not found.".into(),
                None,
            ));
        };
        if found.expires <= Instant::now() {
            return Some((
                Code::ChangeRequestNotFound,
                true,
                "Change request expired.".into(),
                None,
            ));
        }
        let customer = found.customer;
        if !password_ok(&req.password) {
            // Naming the session and quoting the password, as a service's validation message
            // might: the gateway must keep both out of what it shows.
            let why = format!(
                "Password '{}' for session {} needs at least 8 characters with letters and digits.",
                req.password, req.permanent_session_id
            );
            return Some((Code::PasswordInvalid, false, why.into(), None));
        }
        if state.customers[customer].password == req.password {
            return Some((
                Code::PasswordUsedBefore,
                true,
                "The password was used before.".into(),
                None,
            ));
        }
        state.customers[customer].password = req.password;
        state.requests.remove(&req.change_request_id);
        Some((
            Code::Success,
            true,
            "".into(),
            Some(state.customers[customer].email),
        ))
    }
}

fn read_json(body: &[u8]) -> Option<Request> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let text = |name: &str| {
        v.get(name)
            .and_then(|x| x.as_str())
            .unwrap_or_default()
            .to_string()
    };
    Some(Request {
        from_identity_server: v.get("RequestFromIdentityServer").and_then(|b| b.as_bool()),
        password: text("Password"),
        change_request_id: text("ChangeRequestId"),
        ip_address: text("IPAddress"),
        user_agent: text("UserAgent"),
        permanent_session_id: text("PermanentSessionId"),
    })
}

fn read_xml(body: &[u8]) -> Option<Request> {
    let root = xml::parse(body).ok()?;
    if root.name != "PasswordChangeRequest"
        || *root.namespace != *NS_REQUEST
        || !super::datacontract_members_ok(&root, NS_REQUEST)
    {
        return None;
    }
    let text = |name: &str| root.child_value(name).unwrap_or_default().to_string();
    Some(Request {
        from_identity_server: match root.child_value("RequestFromIdentityServer") {
            Some("true") => Some(true),
            Some("false") => Some(false),
            _ => None,
        },
        password: text("Password"),
        change_request_id: text("ChangeRequestId"),
        ip_address: text("IPAddress"),
        user_agent: text("UserAgent"),
        permanent_session_id: text("PermanentSessionId"),
    })
}

/// ASP.NET Web API's answer to a body its model cannot take: HTTP 400 with a `Message`, and none
/// of the service's own members, so it can never pass for a refused password.
fn request_invalid(xml_format: bool) -> Reply {
    const MESSAGE: &str = "The request is invalid.";
    if xml_format {
        let body = format!("<Error><Message>{MESSAGE}</Message></Error>");
        Reply::new(400, "application/xml; charset=utf-8", body)
    } else {
        let body = json!({ "Message": MESSAGE });
        Reply::json(400, serde_json::to_vec(&body).expect("json"))
    }
}

fn answer(
    xml_format: bool,
    code: Code,
    is_valid: bool,
    message: &str,
    email: Option<&str>,
) -> Reply {
    let success = matches!(code, Code::Success);
    let errors: Vec<&str> = if message.is_empty() {
        vec![]
    } else {
        vec![message]
    };
    // Every member of the documented answer, as a DataContract service writes them: the user's
    // fields for a success, their defaults otherwise (a Guid and the numbers and flags are value
    // types, never null; the strings the sandbox does not know are null).
    let user_id = email.map_or_else(
        || "00000000-0000-0000-0000-000000000000".to_string(),
        guid_of,
    );
    let user_type = u8::from(email.is_some());
    if xml_format {
        let list = errors
            .iter()
            .map(|m| format!("<d2p1:string>{}</d2p1:string>", xml::escape(m)))
            .collect::<String>();
        let arrays = "http://schemas.microsoft.com/2003/10/Serialization/Arrays";
        let email = match email {
            Some(email) => format!("<Email>{}</Email>", xml::escape(email)),
            None => "<Email i:nil=\"true\"/>".to_string(),
        };
        // In DataContract's order: by name.
        let body = format!(
            "<PasswordChangeResponse xmlns:i=\"http://www.w3.org/2001/XMLSchema-instance\" xmlns=\"{NS_RESPONSE}\">\
             <Code>{}</Code>{email}<ExceptionMessageList xmlns:d2p1=\"{arrays}\">{list}</ExceptionMessageList>\
             <FirstName i:nil=\"true\"/><Gender>0</Gender>\
             <InformationMessageList xmlns:d2p1=\"{arrays}\"/><IsLazy>false</IsLazy>\
             <IsValid>{is_valid}</IsValid><LastName i:nil=\"true\"/>\
             <RedirectionKey i:nil=\"true\"/><ReturnUrl i:nil=\"true\"/>\
             <SharedDataPermission>false</SharedDataPermission><Success>{success}</Success>\
             <Title i:nil=\"true\"/><UserId>{user_id}</UserId><UserType>{user_type}</UserType>\
             <WarningMessageList xmlns:d2p1=\"{arrays}\"/></PasswordChangeResponse>",
            code.name(),
        );
        Reply::new(200, "application/xml; charset=utf-8", body)
    } else {
        let body = json!({
            "Email": email, "UserId": user_id, "FirstName": null, "LastName": null,
            "Title": null, "IsLazy": false, "UserType": user_type,
            "SharedDataPermission": false, "Gender": 0, "Code": code.number(),
            "ExceptionMessageList": errors, "RedirectionKey": null, "ReturnUrl": null,
            "IsValid": is_valid, "Success": success,
            "InformationMessageList": [], "WarningMessageList": [],
        });
        Reply::json(200, serde_json::to_vec(&body).expect("json"))
    }
}

/// A customer's UserId: a GUID made from their e-mail address, the same on every answer.
fn guid_of(email: &str) -> String {
    use sha2::{Digest, Sha256};
    let hex = hex::encode(&Sha256::digest(email.as_bytes())[..16]);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The request's XML sample from the vendor's documentation.
    const SAMPLE: &str = r#"<PasswordChangeRequest xmlns:i="http://www.w3.org/2001/XMLSchema-instance" xmlns="http://schemas.datacontract.org/2004/07/BusinessLayer.Dto.Request">
  <ChangeRequestId>sample string 3</ChangeRequestId>
  <IPAddress>sample string 4</IPAddress>
  <Password>sample string 2</Password>
  <PermanentSessionId>sample string 6</PermanentSessionId>
  <RequestFromIdentityServer>true</RequestFromIdentityServer>
  <UserAgent>sample string 5</UserAgent>
</PasswordChangeRequest>"#;

    #[test]
    fn a_change_from_no_address_is_refused_as_invalid() {
        let sandbox = HepsiburadaSandbox::new(Arc::new(Outbox::default()));
        let from = |ip: &str| Request {
            from_identity_server: Some(true),
            password: "N3w-passw0rd".into(),
            change_request_id: "no-such-request".into(),
            ip_address: ip.into(),
            user_agent: "Mozilla/5.0".into(),
            permanent_session_id: "s1".into(),
        };
        for nobody in ["0.0.0.0", "::", "", "localhost"] {
            assert!(sandbox.change(from(nobody)).is_none(), "{nobody:?}");
        }
        for somebody in ["203.0.113.7", "2001:db8::7", "127.0.0.1"] {
            let (code, ..) = sandbox.change(from(somebody)).expect(somebody);
            assert!(matches!(code, Code::ChangeRequestNotFound), "{somebody}");
        }
    }

    #[test]
    fn the_documented_xml_sample_is_read() {
        let req = read_xml(SAMPLE.as_bytes()).unwrap();
        assert_eq!(req.change_request_id, "sample string 3");
        assert_eq!(req.ip_address, "sample string 4");
        assert_eq!(req.from_identity_server, Some(true));
    }

    #[test]
    fn xml_in_another_namespace_or_out_of_order_is_not_read() {
        let elsewhere = SAMPLE.replace("BusinessLayer.Dto.Request", "BusinessLayer.Dto.Other");
        let reordered = SAMPLE.replace(
            "<ChangeRequestId>sample string 3</ChangeRequestId>\n  <IPAddress>sample string 4</IPAddress>",
            "<IPAddress>sample string 4</IPAddress>\n  <ChangeRequestId>sample string 3</ChangeRequestId>",
        );
        let member_elsewhere = SAMPLE.replace("<Password>", "<Password xmlns=\"urn:x\">");
        for doc in [elsewhere, reordered, member_elsewhere] {
            assert_ne!(doc, SAMPLE);
            assert!(read_xml(doc.as_bytes()).is_none(), "{doc}");
        }
    }
}
