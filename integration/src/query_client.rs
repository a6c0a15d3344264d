//! A small client of flamepipe's query API for the end-to-end tests: plain HTTP calls that
//! keep status, headers and body, Connect unary JSON calls, Connect envelopes, and the two
//! stream transports (NDJSON and Connect JSON). Nothing here uses flamepipe's own code.

use serde_json::{Value, json};

use crate::Flamepipe;
use crate::process::http;

/// An HTTP answer, whatever its status.
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub headers: ureq::http::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    /// A header's value, or `""`.
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{} {:?} is not JSON: {e}", self.status, self.text()))
    }
}

fn reply(mut resp: ureq::http::Response<ureq::Body>) -> Reply {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = resp
        .body_mut()
        .with_config()
        .limit(256 << 20)
        .read_to_vec()
        .expect("response body");
    Reply {
        status,
        content_type,
        headers,
        body,
    }
}

/// POSTs bytes.
pub fn post_bytes(url: &str, content_type: &str, body: &[u8], headers: &[(&str, &str)]) -> Reply {
    let mut req = http().post(url).header("Content-Type", content_type);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    reply(req.send(body).expect("POST"))
}

/// GETs a URL.
pub fn get(url: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = http().get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    reply(req.call().expect("GET"))
}

/// Percent-encodes a query parameter value.
pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A protobuf JSON 64-bit integer (a JSON string).
pub fn int64(v: &Value) -> i64 {
    v.as_str()
        .unwrap_or_else(|| panic!("a 64-bit integer must be a JSON string, got {v}"))
        .parse()
        .unwrap_or_else(|e| panic!("{v}: {e}"))
}

/// A Connect unary call of `querier.v1.QuerierService` with a JSON body.
pub fn connect_unary(fp: &Flamepipe, method: &str, body: &Value, tenant: Option<&str>) -> Reply {
    let headers: Vec<(&str, &str)> = tenant.map(|t| ("X-Scope-OrgID", t)).into_iter().collect();
    post_bytes(
        &format!("{}/querier.v1.QuerierService/{method}", fp.url),
        "application/json",
        body.to_string().as_bytes(),
        &headers,
    )
}

/// The 5-byte Connect envelope around `payload`.
pub fn envelope(flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![flags];
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Splits a Connect stream body into (flags, payload) envelopes; the body must end exactly
/// at an envelope boundary.
pub fn envelopes(mut body: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while !body.is_empty() {
        assert!(body.len() >= 5, "truncated envelope header: {body:?}");
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        assert!(body.len() >= 5 + len, "truncated envelope: {len} bytes announced");
        out.push((body[0], body[5..5 + len].to_vec()));
        body = &body[5 + len..];
    }
    out
}

/// An NDJSON stream: its events; an error line fails.
pub fn ndjson(url: &str) -> Vec<Value> {
    let Reply {
        status,
        content_type,
        body,
        ..
    } = get(url, &[]);
    let text = String::from_utf8(body).expect("utf-8");
    assert_eq!(status, 200, "{url}: {text}");
    assert_eq!(content_type, "application/x-ndjson", "{url}");
    assert!(text.ends_with('\n'), "{url}: every event is a line");
    text.lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{url}: line {l:?}: {e}"));
            assert!(v.get("error").is_none(), "{url}: {v}");
            v
        })
        .collect()
}

/// A Connect JSON stream of `querier.v1.QuerierStreamService`: its events, checking that it
/// ends with an end-stream `{}`.
pub fn connect_stream(fp: &Flamepipe, method: &str, request: &Value) -> Vec<Value> {
    let Reply {
        status,
        content_type,
        body,
        ..
    } = post_bytes(
        &format!("{}/querier.v1.QuerierStreamService/{method}", fp.url),
        "application/connect+json",
        &envelope(0, request.to_string().as_bytes()),
        &[("Flamepipe-Snapshot-Interval", "10ms")],
    );
    assert_eq!(status, 200, "{method}: {}", String::from_utf8_lossy(&body));
    assert_eq!(content_type, "application/connect+json", "{method}");
    let mut all = envelopes(&body);
    let (flags, end) = all.pop().expect("an end-stream envelope");
    assert_eq!(flags, 2, "{method}: the last envelope ends the stream");
    let end: Value = serde_json::from_slice(&end).expect("end-stream JSON");
    assert_eq!(end, json!({}), "{method}: end-stream");
    all.into_iter()
        .map(|(flags, payload)| {
            assert_eq!(flags, 0, "{method}: only the last envelope has flags");
            serde_json::from_slice(&payload).expect("event JSON")
        })
        .collect()
}
