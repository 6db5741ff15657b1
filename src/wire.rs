//! HTTP/1.1 message framing, both ways: a request head as the API listeners receive it, a
//! response head as vendors send it, and chunked bodies. Pure functions over byte slices, so the
//! server and the vendor client share them and the fuzzers can reach them directly.
//!
//! Parsing is `httparse`'s (no allocation; a head is only accepted whole). What this module adds
//! is the framing rules that keep a connection safe to reuse (RFC 9112 section 6): a request with
//! both `Transfer-Encoding` and `Content-Length`, with two different lengths, or with a transfer
//! coding other than `chunked` is refused, because a proxy in front of the gateway could read its
//! body boundary differently and smuggle a second request inside the first.

use std::ops::Range;

/// The largest request head the API listeners accept, request line and headers together.
pub const MAX_REQUEST_HEAD: usize = 16 * 1024;
/// The most header fields a request may carry.
pub const MAX_REQUEST_HEADERS: usize = 64;
/// The most header fields a vendor's answer may carry.
pub const MAX_RESPONSE_HEADERS: usize = 96;
/// The first read of a message, a client's request or a vendor's answer: either is a few hundred
/// bytes (head and body), and a buffer of at most 1 KiB is one of mimalloc's small sizes (its
/// fast path; bigger ones go through its page queues) and a quarter of the memory per message in
/// flight. A bigger message grows its buffer by `READ_CHUNK` per read.
pub const FIRST_READ: usize = 1024;
/// How much a read buffer grows by for each further read.
pub const READ_CHUNK: usize = 4096;

/// How a message's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Exactly this many bytes (zero for a request without a body).
    Length(u64),
    Chunked,
    /// Until the connection closes: only an answer can be framed so.
    UntilClose,
}

/// Why a head was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// Longer than the limit before it was complete.
    TooLarge,
    /// Not HTTP/1.x, or framing that cannot be trusted. The words are fixed: they never quote
    /// the input, which may hold a secret.
    Malformed(&'static str),
}

/// A parsed request head; its strings are ranges into the buffer it was parsed from.
#[derive(Debug, Clone)]
pub struct RequestHead {
    /// Bytes the head takes, its final empty line included: the body (if any) starts here.
    pub len: usize,
    pub method: Range<usize>,
    pub path: Range<usize>,
    pub query: Option<Range<usize>>,
    /// `(name, value)` of each field, in order.
    pub headers: Vec<(Range<usize>, Range<usize>)>,
    pub framing: Framing,
    /// HTTP/1.1 (else 1.0).
    pub http11: bool,
    /// Whether the client lets the connection carry another request after this one.
    pub keep_alive: bool,
    pub expects_continue: bool,
}

impl RequestHead {
    /// The first field named `name` (ASCII case-insensitive), from the buffer the head came from.
    pub fn header<'b>(&self, buf: &'b [u8], name: &str) -> Option<&'b [u8]> {
        self.headers
            .iter()
            .find(|(n, _)| is_field(&buf[n.clone()], name))
            .map(|(_, v)| &buf[v.clone()])
    }

    /// Every field named `name`, in the order they came.
    pub fn fields<'b>(
        &'b self,
        buf: &'b [u8],
        name: &'b str,
    ) -> impl DoubleEndedIterator<Item = &'b [u8]> + 'b {
        self.headers
            .iter()
            .filter(move |(n, _)| is_field(&buf[n.clone()], name))
            .map(move |(_, v)| &buf[v.clone()])
    }
}

/// Whether a field's `name` is `canonical` (ASCII case-insensitive, as HTTP has it). Names
/// usually arrive in the canonical case, which a plain compare confirms at once; only a name of
/// the same length in another case is compared a byte at a time, folded.
pub fn is_field(name: &[u8], canonical: &str) -> bool {
    name.len() == canonical.len()
        && (name == canonical.as_bytes() || name.eq_ignore_ascii_case(canonical.as_bytes()))
}

/// Where `part` (a subslice of `base`) sits in `base`.
fn range_in(base: &[u8], part: &[u8]) -> Range<usize> {
    let start = part.as_ptr() as usize - base.as_ptr() as usize;
    start..start + part.len()
}

/// The body framing and connection options that the headers `fields` declare. `request` says
/// which rules apply: a request without a length has no body, an answer without one runs until
/// the connection closes.
fn framing_of(
    fields: &[httparse::Header<'_>],
    http11: bool,
    request: bool,
) -> Result<(Framing, bool, bool), HeadError> {
    let mut length: Option<(u64, &[u8])> = None;
    let mut chunked = false;
    let (mut said_close, mut said_keep_alive) = (false, false);
    let mut expects_continue = false;
    let mut hosts = 0usize;
    for field in fields {
        // Trimmed only for the fields read here: most (Host, Authorization, ...) are not.
        let value = || field.value.trim_ascii();
        if is_field(field.name.as_bytes(), "Content-Length") {
            let value = value();
            let n = parse_length(value).ok_or(HeadError::Malformed("bad Content-Length"))?;
            // A repeated length must be the same text: `0` and `00` agree as numbers, but a
            // stricter reader in front of the gateway could refuse one and pass the other.
            if length.is_some_and(|(_, seen)| seen != value) {
                return Err(HeadError::Malformed("conflicting Content-Length fields"));
            }
            length = Some((n, value));
        } else if is_field(field.name.as_bytes(), "Transfer-Encoding") {
            let value = value();
            // Only `chunked` alone is understood; anything else could hide the body's end.
            if chunked || !value.eq_ignore_ascii_case(b"chunked") {
                return Err(HeadError::Malformed("unsupported Transfer-Encoding"));
            }
            chunked = true;
        } else if is_field(field.name.as_bytes(), "Connection") {
            for option in value().split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                if option.eq_ignore_ascii_case(b"close") {
                    said_close = true;
                } else if option.eq_ignore_ascii_case(b"keep-alive") {
                    said_keep_alive = true;
                }
            }
        } else if request && is_field(field.name.as_bytes(), "Expect") {
            expects_continue = value().eq_ignore_ascii_case(b"100-continue");
        } else if request && is_field(field.name.as_bytes(), "Host") {
            hosts += 1;
        }
    }
    // RFC 9112 section 3.2: an HTTP/1.1 request names its host once, and no request twice. Two
    // could route one way in a proxy in front and another here.
    if request && (hosts > 1 || (http11 && hosts == 0)) {
        return Err(HeadError::Malformed(
            "a request needs exactly one Host field (HTTP/1.1) and never two",
        ));
    }
    let framing = match (chunked, length) {
        (true, Some(_)) => {
            return Err(HeadError::Malformed(
                "both Transfer-Encoding and Content-Length",
            ))
        }
        (true, None) if !http11 => {
            return Err(HeadError::Malformed("Transfer-Encoding in HTTP/1.0"));
        }
        (true, None) => Framing::Chunked,
        (false, Some((n, _))) => Framing::Length(n),
        (false, None) if request => Framing::Length(0),
        (false, None) => Framing::UntilClose,
    };
    // `close` in any option ends the connection, whatever else is said (RFC 9112 section 9.6);
    // HTTP/1.0 keeps it open only when asked to.
    let keep_alive = !said_close && (http11 || said_keep_alive);
    Ok((framing, keep_alive, expects_continue))
}

/// How many bytes at the start of `buf` are line ends (CR or LF): the empty lines that may come
/// before a request line, which start no request.
pub fn leading_line_ends(buf: &[u8]) -> usize {
    buf.iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len())
}

/// A Content-Length value: digits only, no sign, no overflow.
fn parse_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 19 {
        return None;
    }
    // Nineteen digits at most always fit a u64; the checked arithmetic costs nothing here.
    value.iter().try_fold(0u64, |n, &b| {
        b.is_ascii_digit()
            .then(|| n.checked_mul(10)?.checked_add(u64::from(b - b'0')))
            .flatten()
    })
}

/// Parses the request head at the start of `buf`: `Ok(None)` while it is incomplete.
pub fn parse_request(buf: &[u8]) -> Result<Option<RequestHead>, HeadError> {
    // Left uninitialized: httparse writes the fields it finds, and a head rarely has more than
    // ten of the 64 slots (initializing them all was a 2 KiB store per request).
    let mut fields = [const { std::mem::MaybeUninit::uninit() }; MAX_REQUEST_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut fields) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_REQUEST_HEAD => {
            return Err(HeadError::TooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(_) => return Err(HeadError::Malformed("not an HTTP/1 request head")),
    };
    if len > MAX_REQUEST_HEAD {
        return Err(HeadError::TooLarge);
    }
    // httparse takes a bare LF for a line end, as RFC 9112 lets a recipient. A proxy in front
    // that does not (keeping `a\nContent-Length: 40` as one field's value) would frame the
    // request otherwise than the gateway: a desync, so such a head is refused, as a chunk line
    // ending in a bare LF is. The empty lines httparse skips before the request line are not
    // part of the head.
    let start = leading_line_ends(&buf[..len]);
    if memchr::memchr_iter(b'\n', &buf[start..len]).any(|at| buf[start + at - 1] != b'\r') {
        return Err(HeadError::Malformed("a line ends in a bare LF, not CRLF"));
    }
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(HeadError::Malformed("incomplete request line"));
    };
    let http11 = version == 1;
    // The absolute form (`http://host/path`) is accepted as RFC 9112 asks; the authority is
    // ignored, as the gateway serves one origin.
    let origin = match target.split_once("://") {
        Some((scheme, rest))
            if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https") =>
        {
            &rest[rest.find(['/', '?']).unwrap_or(rest.len())..]
        }
        _ if target.starts_with('/') => target,
        // `*` (OPTIONS) and anything else: kept as it is, so no route matches it.
        _ => target,
    };
    let (path, query) = match origin.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (origin, None),
    };
    let (framing, keep_alive, expects_continue) = framing_of(req.headers, http11, true)?;
    Ok(Some(RequestHead {
        len,
        method: range_in(buf, method.as_bytes()),
        path: range_in(buf, path.as_bytes()),
        query: query.map(|q| range_in(buf, q.as_bytes())),
        headers: req
            .headers
            .iter()
            .map(|h| (range_in(buf, h.name.as_bytes()), range_in(buf, h.value)))
            .collect(),
        framing,
        http11,
        keep_alive,
        expects_continue: expects_continue && http11,
    }))
}

/// A vendor's answer head, with the few fields the gateway reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub len: usize,
    pub status: u16,
    pub content_type: MediaType,
    pub retry_after: Option<u64>,
    pub framing: Framing,
    pub keep_alive: bool,
}

/// What an answer's `Content-Type` says its body is. Vendors answer in JSON or XML; telling
/// that apart here, on the bytes of the head, keeps a copy of the field off every vendor call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaType {
    /// No `Content-Type`, or one that is not text.
    Unstated,
    /// A JSON or XML type: `application/json`, `text/json`, `application/xml`, `text/xml`, or
    /// any `+json` or `+xml` type, in any letter case, parameters aside.
    JsonOrXml,
    /// Anything else: the media type lower-cased, printable characters only, at most 60 of them
    /// (it goes into an error message).
    Other(String),
}

impl MediaType {
    pub fn of(value: &str) -> MediaType {
        let essence = value.split(';').next().unwrap_or("").trim();
        let is = |name: &str| essence.eq_ignore_ascii_case(name);
        let ends_with = |suffix: &str| {
            essence.len() >= suffix.len()
                && essence.as_bytes()[essence.len() - suffix.len()..]
                    .eq_ignore_ascii_case(suffix.as_bytes())
        };
        let readable = is("application/json")
            || is("text/json")
            || is("application/xml")
            || is("text/xml")
            || ends_with("+json")
            || ends_with("+xml");
        if readable {
            return MediaType::JsonOrXml;
        }
        let shown = essence
            .chars()
            .filter(char::is_ascii_graphic)
            .take(60)
            .map(|c| c.to_ascii_lowercase())
            .collect();
        MediaType::Other(shown)
    }
}

/// Parses the answer head at the start of `buf`: `Ok(None)` while it is incomplete. `limit`
/// bounds the head's size.
pub fn parse_response(buf: &[u8], limit: usize) -> Result<Option<ResponseHead>, HeadError> {
    if buf.is_empty() {
        return Ok(None);
    }
    // Uninitialized, as for requests: 96 slots are a 3 KiB store, most of them never used.
    let mut fields = [const { std::mem::MaybeUninit::uninit() }; MAX_RESPONSE_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        buf,
        &mut fields,
    ) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > limit => return Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(_) => return Err(HeadError::Malformed("not an HTTP/1 response head")),
    };
    let (Some(status), Some(version)) = (resp.code, resp.version) else {
        return Err(HeadError::Malformed("incomplete status line"));
    };
    let (mut framing, keep_alive, _) = framing_of(resp.headers, version == 1, false)?;
    // These statuses never carry a body, whatever the fields say (RFC 9112 section 6.3).
    if status == 204 || status == 304 || (100..200).contains(&status) {
        framing = Framing::Length(0);
    }
    let field = |name: &str| {
        resp.headers
            .iter()
            .find(|h| is_field(h.name.as_bytes(), name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .map(str::trim)
    };
    Ok(Some(ResponseHead {
        len,
        status,
        content_type: field("Content-Type").map_or(MediaType::Unstated, MediaType::of),
        retry_after: field("Retry-After").and_then(retry_after_secs),
        keep_alive: keep_alive && framing != Framing::UntilClose,
        framing,
    }))
}

/// A vendor's `Retry-After` in seconds from now: delay-seconds, or an HTTP-date (RFC 9110
/// section 10.2.3; a date already past is 0). Anything else is ignored, as if absent.
fn retry_after_secs(value: &str) -> Option<u64> {
    match value.parse() {
        Ok(secs) => Some(secs),
        Err(_) => retry_after_date(value, std::time::SystemTime::now()),
    }
}

fn retry_after_date(value: &str, now: std::time::SystemTime) -> Option<u64> {
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).map_or(0, |left| {
        left.as_secs() + u64::from(left.subsec_nanos() > 0)
    }))
}

/// Why a chunked body could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkedError {
    /// More payload than the limit.
    TooLarge,
    Malformed,
}

/// What decoding a chunked body found so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunked {
    /// The whole body: the payload, and how many raw bytes it took (trailers included).
    Complete { payload: Vec<u8>, consumed: usize },
    /// More raw bytes are needed.
    Incomplete,
}

/// The longest line allowed in chunked framing: a size with its extensions, or a trailer field.
const MAX_CHUNK_LINE: usize = 4096;

/// How far a chunked body has been decoded: the payload of its whole chunks so far, and where
/// the next chunk (or trailer line) starts. Kept between reads, so each read's bytes are decoded
/// once: decoding from the start on every read would let a client trickling bytes make the
/// gateway's work grow with the square of the body.
#[derive(Debug, Default)]
pub struct ChunkedProgress {
    payload: Vec<u8>,
    at: usize,
    in_trailers: bool,
}

/// Decodes the chunked body at the start of `raw`, refusing it once its payload passes `limit`
/// (as soon as a chunk's declared size says so, before its bytes arrive).
pub fn decode_chunked(raw: &[u8], limit: usize) -> Result<Chunked, ChunkedError> {
    decode_chunked_from(raw, limit, &mut ChunkedProgress::default())
}

/// Like `decode_chunked`, going on from `progress` (what earlier calls on a shorter prefix of
/// the same `raw` decoded).
pub fn decode_chunked_from(
    raw: &[u8],
    limit: usize,
    progress: &mut ChunkedProgress,
) -> Result<Chunked, ChunkedError> {
    loop {
        if progress.in_trailers {
            // Trailer fields, each on its own line, until an empty one. They are not used.
            let Some(trailer) = line_at(raw, progress.at)? else {
                return Ok(Chunked::Incomplete);
            };
            if !trailer.is_empty() && !is_field_line(trailer) {
                return Err(ChunkedError::Malformed);
            }
            progress.at += trailer.len() + 2;
            if trailer.is_empty() {
                return Ok(Chunked::Complete {
                    payload: std::mem::take(&mut progress.payload),
                    consumed: progress.at,
                });
            }
            continue;
        }
        let Some(line) = line_at(raw, progress.at)? else {
            return Ok(Chunked::Incomplete);
        };
        // `chunk-size [ chunk-ext ]` (RFC 9112 section 7.1): hex digits from the line's first
        // byte, then nothing or `BWS ";" ...` with no control character. Read more loosely (a
        // size with spaces around it, a CR inside), a line could mean one thing here and another
        // to a proxy in front: the stuff request smuggling is made of.
        let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        let (size_text, extension) = line.split_at(digits);
        if size_text.is_empty() || size_text.len() > 15 || !is_chunk_extension(extension) {
            return Err(ChunkedError::Malformed);
        }
        let size = std::str::from_utf8(size_text)
            .ok()
            .and_then(|s| usize::from_str_radix(s, 16).ok())
            .ok_or(ChunkedError::Malformed)?;
        let data = progress.at + line.len() + 2;
        if size == 0 {
            progress.at = data;
            progress.in_trailers = true;
            continue;
        }
        if progress.payload.len() + size > limit {
            return Err(ChunkedError::TooLarge);
        }
        if raw.len() < data + size + 2 {
            return Ok(Chunked::Incomplete);
        }
        if &raw[data + size..data + size + 2] != b"\r\n" {
            return Err(ChunkedError::Malformed);
        }
        progress.payload.extend_from_slice(&raw[data..data + size]);
        progress.at = data + size + 2;
    }
}

/// Whether `tail` (the bytes read since the last look, with the three before them) may end a
/// head: it holds an empty line. Until one arrives there is no point in parsing the head.
pub fn may_end_head(tail: &[u8]) -> bool {
    // From line end to line end (a head has a dozen), found by memchr's vector search rather
    // than a byte at a time: a whole request usually arrives in one read and is looked at
    // once, head and body (about 0.5k instructions per request the byte loop took).
    memchr::memchr_iter(b'\n', tail)
        .any(|at| matches!(&tail[at + 1..], [b'\n', ..] | [b'\r', b'\n', ..]))
}

/// Whether `rest` (what follows a chunk size on its line) is empty or a chunk extension: optional
/// spaces or tabs, `;`, then no control character but tab.
fn is_chunk_extension(rest: &[u8]) -> bool {
    let after_space = rest
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .map_or(&[][..], |i| &rest[i..]);
    match after_space.first() {
        None => rest.is_empty(),
        Some(b';') => !after_space.iter().any(|&b| is_control(b)),
        Some(_) => false,
    }
}

/// Whether `line` is a header field line, as a trailer must be: a token, `:`, and a value with no
/// control character but tab.
fn is_field_line(line: &[u8]) -> bool {
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return false;
    };
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    !name.is_empty()
        && name.iter().all(|&b| is_token_byte(b))
        && !value.iter().any(|&b| is_control(b))
}

/// A control character other than horizontal tab: never in a field value or chunk extension.
pub fn is_control(b: u8) -> bool {
    b.is_ascii_control() && b != b'\t'
}

/// A `tchar` of RFC 9110 section 5.6.2.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The line starting at `at` without its CRLF; `None` until its CRLF has arrived.
fn line_at(raw: &[u8], at: usize) -> Result<Option<&[u8]>, ChunkedError> {
    let rest = &raw[at.min(raw.len())..];
    match rest.iter().position(|&b| b == b'\n') {
        Some(end) if end > MAX_CHUNK_LINE => Err(ChunkedError::Malformed),
        Some(end) if end == 0 || rest[end - 1] != b'\r' => Err(ChunkedError::Malformed),
        Some(end) => Ok(Some(&rest[..end - 1])),
        None if rest.len() > MAX_CHUNK_LINE => Err(ChunkedError::Malformed),
        None => Ok(None),
    }
}

/// The reason phrase sent with a status code.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Content",
        423 => "Locked",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_are_one_to_nineteen_digits_and_nothing_else() {
        for (text, expected) in [
            ("0", Some(0)),
            ("00", Some(0)),
            ("17", Some(17)),
            ("9999999999999999999", Some(9_999_999_999_999_999_999)),
            ("10000000000000000000", None),
            ("", None),
            ("+3", None),
            ("-3", None),
            ("3 ", None),
            ("0x10", None),
            ("1_000", None),
            ("١٢", None),
        ] {
            assert_eq!(parse_length(text.as_bytes()), expected, "{text:?}");
        }
    }

    fn head(wire: &str) -> RequestHead {
        parse_request(wire.as_bytes()).unwrap().unwrap()
    }

    #[test]
    fn a_request_head_gives_its_parts() {
        let wire = "POST /reset/verify?a=1 HTTP/1.1\r\nHost: x\r\ncontent-length: 5\r\nX-A: 1\r\nx-a: 2\r\n\r\nhello";
        let h = head(wire);
        let buf = wire.as_bytes();
        assert_eq!(&buf[h.method.clone()], b"POST");
        assert_eq!(&buf[h.path.clone()], b"/reset/verify");
        assert_eq!(&buf[h.query.clone().unwrap()], b"a=1");
        assert_eq!(h.header(buf, "x-a"), Some(&b"1"[..]));
        assert_eq!(h.framing, Framing::Length(5));
        assert_eq!(&buf[h.len..], b"hello");
        assert!(h.keep_alive && h.http11 && !h.expects_continue);
    }

    #[test]
    fn a_partial_head_waits_and_an_endless_one_is_refused() {
        assert!(parse_request(b"POST /reset HTTP/1.1\r\nHost: x\r\n")
            .unwrap()
            .is_none());
        let endless = format!(
            "GET / HTTP/1.1\r\nHost: x\r\nX: {}",
            "a".repeat(MAX_REQUEST_HEAD + 1)
        );
        assert_eq!(
            parse_request(endless.as_bytes()).unwrap_err(),
            HeadError::TooLarge
        );
        let many: String = (0..MAX_REQUEST_HEADERS + 1)
            .map(|i| format!("X-{i}: 1\r\n"))
            .collect();
        let wire = format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n");
        assert_eq!(
            parse_request(wire.as_bytes()).unwrap_err(),
            HeadError::TooLarge
        );
    }

    #[test]
    fn a_vendors_retry_after_is_seconds_or_a_date() {
        let now = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_445_412_480);
        // 2015-10-21 07:28:00 GMT, and 30 s later in each of the three forms RFC 9110 accepts.
        assert_eq!(
            retry_after_date("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(30)
        );
        assert_eq!(
            retry_after_date("Wednesday, 21-Oct-15 07:28:30 GMT", now),
            Some(30)
        );
        assert_eq!(retry_after_date("Wed Oct 21 07:28:30 2015", now), Some(30));
        assert_eq!(
            retry_after_date("Wed, 21 Oct 2015 07:27:00 GMT", now),
            Some(0)
        );
        assert_eq!(retry_after_date("soon", now), None);
        assert_eq!(retry_after_secs("120"), Some(120));
        assert_eq!(retry_after_secs("-5"), None);
    }

    #[test]
    fn framing_that_could_smuggle_a_request_is_refused() {
        for wire in [
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 00\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/2.0\r\n\r\n",
            "POST /\r\n\r\n",
            // A bare LF inside the head: one field here, two in a proxy that takes only CRLF.
            "POST / HTTP/1.1\r\nHost: x\r\nX: a\nContent-Length: 3\r\n\r\n",
            "GET / HTTP/1.1\nHost: x\n\n",
            "GET / HTTP/1.1\r\nHost: x\r\n\n",
        ] {
            assert!(
                matches!(parse_request(wire.as_bytes()), Err(HeadError::Malformed(_))),
                "{wire:?}"
            );
        }
        // Empty lines before the request line are skipped, whichever line ends they have.
        head("\r\n\nGET / HTTP/1.1\r\nHost: x\r\n\r\n");
        let same_twice =
            head("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n");
        assert_eq!(same_twice.framing, Framing::Length(3));
    }

    #[test]
    fn an_http11_request_names_one_host_and_no_request_two() {
        for wire in [
            "GET /healthz HTTP/1.1\r\n\r\n",
            "GET /healthz HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n",
            "GET /healthz HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n",
        ] {
            assert!(
                matches!(parse_request(wire.as_bytes()), Err(HeadError::Malformed(_))),
                "{wire:?}"
            );
        }
        // HTTP/1.0 has no Host requirement; an answer's fields are not a request's.
        head("GET /healthz HTTP/1.0\r\n\r\n");
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 1024)
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn connection_options_follow_the_version() {
        assert!(!head("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").keep_alive);
        assert!(!head("GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
        // Close wins, in one field or two, in either order.
        for fields in [
            "Connection: close, keep-alive\r\n",
            "Connection: keep-alive, close\r\n",
            "Connection: close\r\nConnection: keep-alive\r\n",
        ] {
            let request = format!("GET / HTTP/1.0\r\n{fields}\r\n");
            assert!(!head(&request).keep_alive, "{fields:?}");
        }
        assert!(
            head("POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n").expects_continue
        );
        assert_eq!(
            head("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n").framing,
            Framing::Chunked
        );
    }

    #[test]
    fn an_absolute_target_is_served_by_its_path() {
        let wire = "GET http://gw.example/openapi.json?x HTTP/1.1\r\nHost: x\r\n\r\n";
        let h = head(wire);
        assert_eq!(&wire.as_bytes()[h.path.clone()], b"/openapi.json");
        let wire = "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(&wire.as_bytes()[head(wire).path], b"*");
    }

    #[test]
    fn chunk_extensions_and_trailers_as_the_grammar_writes_them_are_read() {
        let raw = b"5 ;name=\"quoted value\"\t; flag\r\nhello\r\n0\r\nX-T: a\tb\r\nY:\r\n\r\n";
        assert_eq!(
            decode_chunked(raw, 100).unwrap(),
            Chunked::Complete {
                payload: b"hello".to_vec(),
                consumed: raw.len()
            }
        );
    }

    #[test]
    fn chunked_bodies_decode_and_are_bounded() {
        let raw = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\nNEXT";
        assert_eq!(
            decode_chunked(raw, 100).unwrap(),
            Chunked::Complete {
                payload: b"hello world".to_vec(),
                consumed: raw.len() - 4
            }
        );
        for cut in 0..raw.len() - 4 {
            assert_eq!(
                decode_chunked(&raw[..cut], 100).unwrap(),
                Chunked::Incomplete,
                "cut at {cut}"
            );
        }
        assert_eq!(decode_chunked(raw, 10), Err(ChunkedError::TooLarge));
        // The declared size alone is enough to refuse.
        assert_eq!(
            decode_chunked(b"ffffff\r\n", 100),
            Err(ChunkedError::TooLarge)
        );
        for bad in [
            &b"x\r\n"[..],
            b"5\r\nhelloXX0\r\n\r\n",
            b"5\nhello\r\n",
            b"fffffffffffffffff\r\n",
            b"\r\n",
            // Loosely written sizes a proxy in front may read otherwise (RFC 9112 section 7.1).
            b"5\r\r\nhello\r\n0\r\n\r\n",
            b"\t5\r\nhello\r\n0\r\n\r\n",
            b" 5\r\nhello\r\n0\r\n\r\n",
            b"5 \r\nhello\r\n0\r\n\r\n",
            b"5\x0c\r\nhello\r\n0\r\n\r\n",
            b"+5\r\nhello\r\n0\r\n\r\n",
            b"0x5\r\nhello\r\n0\r\n\r\n",
            b"5;\x00\rX\r\nhello\r\n0\r\n\r\n",
            // Trailers must be field lines.
            b"0\r\n no-colon\r\n\r\n",
            b"0\r\nName: a\x00b\r\n\r\n",
            b"0\r\nBad Name: x\r\n\r\n",
            b"0\r\n: x\r\n\r\n",
        ] {
            assert_eq!(
                decode_chunked(bad, 100),
                Err(ChunkedError::Malformed),
                "{bad:?}"
            );
        }
        // Fed a byte at a time with its progress kept, the same body decodes the same.
        let mut progress = ChunkedProgress::default();
        for cut in 0..raw.len() - 4 {
            assert_eq!(
                decode_chunked_from(&raw[..cut], 100, &mut progress),
                Ok(Chunked::Incomplete)
            );
        }
        assert_eq!(
            decode_chunked_from(raw, 100, &mut progress),
            decode_chunked(raw, 100)
        );
        let long_line = format!("1;{}", "e".repeat(MAX_CHUNK_LINE));
        assert_eq!(
            decode_chunked(long_line.as_bytes(), 100),
            Err(ChunkedError::Malformed)
        );
    }

    #[test]
    fn a_head_is_parsed_only_once_an_empty_line_may_end_it() {
        assert!(may_end_head(b"Host: x\r\n\r\n"));
        assert!(may_end_head(b"\n\n"));
        assert!(may_end_head(b"x\n\r\n"));
        assert!(!may_end_head(b"x\r\n\r"));
        assert!(!may_end_head(b"\n\r"));
        assert!(!may_end_head(b"GET / HTTP/1.1\r\nHost: x\r\n"));
        assert!(!may_end_head(b""));
    }

    #[test]
    fn field_names_match_in_any_case_and_only_whole() {
        assert!(is_field(b"Content-Length", "Content-Length"));
        assert!(is_field(b"content-length", "Content-Length"));
        assert!(is_field(b"CONTENT-LENGTH", "Content-Length"));
        assert!(!is_field(b"Content-Lengtx", "Content-Length"));
        assert!(!is_field(b"Content-Length ", "Content-Length"));
        assert!(!is_field(b"Content-Lengt", "Content-Length"));
        assert!(!is_field(b"", "Expect"));
        let head = b"POST /reset HTTP/1.1\r\nhost: a\r\ncOnTeNt-LeNgTh: 2\r\n\r\n{}";
        let parsed = parse_request(head).unwrap().unwrap();
        assert_eq!(parsed.header(head, "Content-Length"), Some(&b"2"[..]));
        assert_eq!(parsed.framing, Framing::Length(2));
    }

    #[test]
    fn may_end_head_finds_an_empty_line_wherever_it_is() {
        // Every string of up to seven bytes over CR, LF and one other byte, against the
        // definition: an LF followed by an LF, or by a CR and an LF.
        let reference =
            |t: &[u8]| t.windows(2).any(|w| w == b"\n\n") || t.windows(3).any(|w| w == b"\n\r\n");
        for len in 0..=7u32 {
            for n in 0..3usize.pow(len) {
                let t: Vec<u8> = (0..len)
                    .map(|i| [b'\r', b'\n', b'x'][n / 3usize.pow(i) % 3])
                    .collect();
                assert_eq!(may_end_head(&t), reference(&t), "{t:?}");
            }
        }
    }

    #[test]
    fn json_and_xml_answers_are_told_from_others_by_their_media_type() {
        for readable in [
            "application/json",
            "Application/JSON; charset=utf-8",
            " text/json ",
            "application/xml",
            "TEXT/XML;charset=UTF-8",
            "application/problem+json",
            "application/soap+XML",
        ] {
            assert_eq!(MediaType::of(readable), MediaType::JsonOrXml, "{readable}");
        }
        assert_eq!(
            MediaType::of("Text/HTML; charset=utf-8"),
            MediaType::Other("text/html".into())
        );
        assert_eq!(MediaType::of(""), MediaType::Other(String::new()));
        assert_eq!(MediaType::of("json"), MediaType::Other("json".into()));
        // Shown in an error: printable, bounded.
        let long = format!("x/{}\u{7}\u{e9}", "a".repeat(100));
        assert_eq!(
            MediaType::of(&long),
            MediaType::Other(format!("x/{}", "a".repeat(58)))
        );
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        let h = parse_response(head, 1024).unwrap().unwrap();
        assert_eq!(h.content_type, MediaType::Unstated);
    }

    #[test]
    fn an_answer_head_gives_status_type_and_framing() {
        let wire = b"HTTP/1.1 429 Too Many\r\nContent-Type: application/json\r\nRetry-After: 7\r\nContent-Length: 2\r\n\r\n{}";
        let h = parse_response(wire, 1024).unwrap().unwrap();
        assert_eq!(
            h,
            ResponseHead {
                len: wire.len() - 2,
                status: 429,
                content_type: MediaType::JsonOrXml,
                retry_after: Some(7),
                framing: Framing::Length(2),
                keep_alive: true,
            }
        );
        let h = parse_response(b"HTTP/1.1 200 OK\r\n\r\n", 1024)
            .unwrap()
            .unwrap();
        assert_eq!((h.framing, h.keep_alive), (Framing::UntilClose, false));
        let h = parse_response(b"HTTP/1.1 204 No\r\nContent-Length: 9\r\n\r\n", 1024)
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, Framing::Length(0));
        let h = parse_response(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", 1024)
            .unwrap()
            .unwrap();
        assert!(!h.keep_alive);
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n", 1024)
            .unwrap()
            .is_none());
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nX: aaaaaaaaaa", 8).unwrap_err(),
            HeadError::TooLarge
        );
        assert!(parse_response(b"<html>", 1024).is_err());
    }
}
