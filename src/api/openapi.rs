//! The OpenAPI 3.1 document served at `GET /openapi.json`. It describes what the API listener
//! serves: its operations, the bodies each takes and the answers each gives (a path it does not
//! serve is `404 not_found`, a method it does not take `405 method_not_allowed`, as the document's
//! description says); integration tests hold the two together.

use serde_json::{json, Value};

use super::ErrorCode;

fn problem_ref() -> Value {
    json!({"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}})
}

/// The problem responses an operation can give, by status, with the codes each carries.
fn problems(codes: &[ErrorCode]) -> serde_json::Map<String, Value> {
    let mut by_status: std::collections::BTreeMap<u16, Vec<&str>> = Default::default();
    for code in codes {
        by_status
            .entry(code.status())
            .or_default()
            .push(code.as_str());
    }
    by_status
        .into_iter()
        .map(|(status, names)| {
            // A refused API key has no per-key limit to report.
            let mut headers = if status == 401 {
                unauthenticated_headers()
            } else {
                common_headers()
            };
            if matches!(status, 429 | 503) {
                headers.insert(
                    "Retry-After".into(),
                    json!({"description": "Seconds to wait before trying again: on every refusal by a gateway limit (a problem with a `limit` member), every 503, and a vendor's limit on codes for one person (an upper bound: the vendor does not say when); absent on a vendor's `attempts_exceeded`, whose reset is spent", "schema": {"type": "integer"}}),
                );
            }
            (
                status.to_string(),
                json!({
                    "description": format!("Problem: {}", names.join(", ")),
                    "headers": headers,
                    "content": problem_ref(),
                }),
            )
        })
        .collect()
}

/// String-valued response headers, by name and description.
fn string_headers(headers: &[(&str, &str)]) -> serde_json::Map<String, Value> {
    headers
        .iter()
        .map(|(name, description)| {
            let header = json!({"description": description, "schema": {"type": "string"}});
            (name.to_string(), header)
        })
        .collect()
}

const REQUEST_ID: (&str, &str) = (
    "X-Request-Id",
    "The caller's request id when sane, else a new one",
);

/// Headers on an answer to a request without a known API key.
fn unauthenticated_headers() -> serde_json::Map<String, Value> {
    string_headers(&[REQUEST_ID, ("WWW-Authenticate", "Bearer")])
}

/// Headers on every answer to an authenticated request.
fn common_headers() -> serde_json::Map<String, Value> {
    string_headers(&[
        REQUEST_ID,
        ("RateLimit-Policy", "The API key's quota, as \"per-key\";q=1000;w=60, then the limit that refused, if another"),
        ("RateLimit", "What is left, as \"per-key\";r=999;t=1 (t: seconds until whole again, or until the next request is allowed)"),
    ])
}

/// The problems every POST step can give, whatever the vendor.
const COMMON: &[ErrorCode] = &[
    ErrorCode::InvalidRequest,
    ErrorCode::Unauthenticated,
    ErrorCode::PayloadTooLarge,
    ErrorCode::UnsupportedMediaType,
    ErrorCode::AttemptsExceeded,
    ErrorCode::UnsupportedStep,
    ErrorCode::UpstreamError,
    ErrorCode::UpstreamUnavailable,
    ErrorCode::UpstreamTimeout,
    ErrorCode::Internal,
];

fn operation(
    summary: &str,
    schema: &str,
    ok_status: &str,
    ok_schema: &str,
    extra: &[ErrorCode],
) -> Value {
    let mut codes = COMMON.to_vec();
    codes.extend_from_slice(extra);
    let mut responses = problems(&codes);
    responses.insert(
        ok_status.to_string(),
        json!({
            "description": "Success",
            "headers": common_headers(),
            "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{ok_schema}")}}}
        }),
    );
    json!({
        "summary": summary,
        "security": [{"apiKey": []}],
        "parameters": [
            {"name": "X-Request-Id", "in": "header", "required": false,
             "schema": {"type": "string", "maxLength": 128, "pattern": "^[A-Za-z0-9._:-]+$"}},
            {"name": "Accept-Language", "in": "header", "required": false, "schema": {"type": "string"}}
        ],
        "requestBody": {
            "required": true,
            "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}
        },
        "responses": responses,
    })
}

pub fn document(max_body_bytes: usize) -> Vec<u8> {
    let identifier = json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["type", "value"],
        "properties": {
            "type": {"type": "string", "enum": ["email", "mobile", "username"]},
            "value": {"type": "string", "minLength": 1, "maxLength": 254,
                "description": "By `type`: an email address (local@domain.tld) of at most 254 bytes, no spaces or control characters; a mobile number in international form, an optional `+` and 6 to 15 digits; a username of 1 to 128 characters, no control characters"}
        }
    });
    let doc = json!({
        "openapi": "3.1.0",
        "info": {
            "title": "reset-gateway canonical /reset API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": format!(
                "One password-reset API in front of many vendors. Bodies are JSON of at most {max_body_bytes} bytes; unknown fields are refused. Every error is application/problem+json (RFC 9457) with a stable `code`. A path not listed here is `404 not_found`; a listed path with a method it does not list is `405 method_not_allowed`, with `Allow`."
            )
        },
        "paths": {
            "/reset": {"post": operation(
                "Start an OTP reset: the vendor sends a one-time code",
                "StartRequest", "202", "Progress",
                &[ErrorCode::IdentifierNotFound, ErrorCode::RateLimited])},
            "/reset/verify": {"post": operation(
                "Verify the one-time code",
                "VerifyRequest", "200", "Progress",
                &[ErrorCode::InvalidResetId, ErrorCode::WrongStep, ErrorCode::ResetExpired,
                  ErrorCode::InvalidOtp, ErrorCode::IdentifierNotFound, ErrorCode::RateLimited])},
            "/reset/complete": {"post": operation(
                "Set the new password, with a verified reset_id or a vendor-issued reset_code",
                "CompleteRequest", "200", "Completed",
                &[ErrorCode::InvalidResetId, ErrorCode::WrongStep, ErrorCode::ResetExpired,
                  ErrorCode::InvalidOtp, ErrorCode::PasswordRejected, ErrorCode::PasswordReused,
                  ErrorCode::IdentifierNotFound, ErrorCode::RateLimited])},
            "/openapi.json": {"get": {
                "summary": "This document",
                "responses": {"200": {"description": "The OpenAPI document",
                    "content": {"application/json": {"schema": {"type": "object"}}}}}
            }}
        },
        "components": {
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Identifier": identifier,
                "StartRequest": {
                    "type": "object", "additionalProperties": false, "required": ["identifier"],
                    "properties": {
                        "identifier": {"$ref": "#/components/schemas/Identifier"},
                        "device_id": {"type": "string", "minLength": 1, "maxLength": 128, "pattern": "^[A-Za-z0-9._:-]+$"}
                    }
                },
                "VerifyRequest": {
                    "type": "object", "additionalProperties": false, "required": ["reset_id", "otp"],
                    "properties": {
                        "reset_id": {"type": "string", "minLength": 1},
                        "otp": {"type": "string", "minLength": 1, "maxLength": 16, "pattern": "^[A-Za-z0-9]+$"}
                    }
                },
                "CompleteRequest": {
                    "oneOf": [
                        {"type": "object", "additionalProperties": false,
                         "required": ["reset_id", "new_password"],
                         "properties": {
                            "reset_id": {"type": "string", "minLength": 1},
                            "new_password": {"type": "string", "minLength": 1, "maxLength": 256,
                                "description": "No control characters"}
                         }},
                        {"type": "object", "additionalProperties": false,
                         "required": ["reset_code", "new_password"],
                         "properties": {
                            "reset_code": {"type": "string", "minLength": 1, "maxLength": 512,
                                "description": "At most 512 bytes, no control characters"},
                            "identifier": {"$ref": "#/components/schemas/Identifier"},
                            "email": {"type": "string", "format": "email", "maxLength": 254},
                            "session_id": {"type": "string", "minLength": 1, "maxLength": 256, "pattern": "^[A-Za-z0-9._:-]+$"},
                            "new_password": {"type": "string", "minLength": 1, "maxLength": 256,
                                "description": "No control characters"}
                         }}
                    ]
                },
                "Progress": {
                    "type": "object", "required": ["reset_id", "next", "expires_at"],
                    "properties": {
                        "reset_id": {"type": "string", "description": "Opaque and sealed; pass it to the next step."},
                        "next": {"type": "string", "enum": ["verify", "complete"]},
                        "expires_at": {"type": "string", "format": "date-time"}
                    }
                },
                "Completed": {
                    "type": "object", "required": ["status"],
                    "properties": {"status": {"type": "string", "const": "completed"}}
                },
                "Problem": {
                    "type": "object", "required": ["type", "title", "status", "code", "detail", "request_id"],
                    "properties": {
                        "type": {"type": "string"},
                        "title": {"type": "string"},
                        "status": {"type": "integer"},
                        "code": {"type": "string", "enum": ErrorCode::ALL.iter().map(|c| c.as_str()).collect::<Vec<_>>()},
                        "detail": {"type": "string"},
                        "request_id": {"type": "string"},
                        "limit": {"type": "string"},
                        "vendor": {"type": "object", "properties": {
                            "name": {"type": "string"}, "status": {"type": "integer"},
                            "code": {"type": "string"}, "message": {"type": "string"}
                        }}
                    }
                }
            }
        }
    });
    serde_json::to_vec_pretty(&doc).expect("the document serializes")
}
