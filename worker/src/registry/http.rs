//! `http.request`: call a URL, so any service in any language can be a task function.
//!
//! Arguments: `url` (first argument or keyword), and keywords `method`
//! (default GET, or POST when a body is given), `headers` (object), `json`
//! (any JSON body) or `body` (text). The result is `{"status", "body"}`, the
//! body parsed as JSON when it is JSON. A status of 400 or more fails the task.

use std::time::Duration;

use serde_json::{Value, json};
use ureq::http;

use super::{Call, Registry};
use crate::task::TaskError;

/// Largest response body read, in bytes.
const MAX_RESPONSE_BYTES: u64 = 10 * 1024 * 1024;
/// Limit on a request when the task has no timeout.
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(300);
/// How much of an error response's body a failure message quotes.
const QUOTED_BODY_CHARS: usize = 500;

pub(super) fn register(registry: &mut Registry) {
    registry.register("http.request", request);
}

fn request(call: &Call) -> Result<Value, TaskError> {
    let url = call.arg(0, "url").and_then(Value::as_str).ok_or_else(|| {
        TaskError::bad_arguments("http.request: give the url as first argument or url=…")
    })?;
    let json_body = call.kwargs.get("json");
    let text_body = call.kwargs.get("body").and_then(Value::as_str);
    let default_method = if json_body.is_some() || text_body.is_some() {
        "POST"
    } else {
        "GET"
    };
    let method = call
        .kwargs
        .get("method")
        .and_then(Value::as_str)
        .unwrap_or(default_method)
        .to_ascii_uppercase();

    let mut builder = http::Request::builder().method(method.as_str()).uri(url);
    if let Some(headers) = call.kwargs.get("headers") {
        let headers = headers
            .as_object()
            .ok_or_else(|| TaskError::bad_arguments("http.request: headers must be an object"))?;
        for (name, value) in headers {
            let value = value
                .as_str()
                .map_or_else(|| value.to_string(), str::to_string);
            builder = builder.header(name.as_str(), value);
        }
    }
    let body = match (json_body, text_body) {
        (Some(value), _) => {
            builder = builder.header("content-type", "application/json");
            value.to_string()
        }
        (None, Some(text)) => text.to_string(),
        (None, None) => String::new(),
    };
    let request = builder
        .body(body)
        .map_err(|e| TaskError::bad_arguments(format!("http.request: {e}")))?;

    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(call.timeout.unwrap_or(DEFAULT_REQUEST_TIMEOUT)))
        .build()
        .into();
    let mut response = agent
        .run(request)
        .map_err(|e| TaskError::failed(format!("http.request {method} {url}: {e}")))?;
    let status = response.status().as_u16();
    let text = response
        .body_mut()
        .with_config()
        .limit(MAX_RESPONSE_BYTES)
        .read_to_string()
        .map_err(|e| {
            TaskError::failed(format!(
                "http.request {method} {url}: reading the body: {e}"
            ))
        })?;
    if status >= 400 {
        let quoted: String = text.chars().take(QUOTED_BODY_CHARS).collect();
        return Err(TaskError::failed(format!(
            "http.request {method} {url}: status {status}: {quoted}"
        )));
    }
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok(json!({ "status": status, "body": body }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;

    /// A one-request HTTP server on 127.0.0.1: replies `status` with `body`, returns what it received.
    fn serve_once(status: u16, body: &'static str) -> (String, std::thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("address"));
        let handle = std::thread::spawn(move || {
            let (stream, _) = listener.accept().expect("accept");
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut head = String::new();
            let mut length = 0;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).expect("read");
                if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = value.trim().parse().expect("length");
                }
                head.push_str(&line);
                if line == "\r\n" {
                    break;
                }
            }
            let mut request_body = vec![0; length];
            std::io::Read::read_exact(&mut reader, &mut request_body).expect("body");
            let mut stream = stream;
            write!(
                stream,
                "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )
            .expect("reply");
            head + &String::from_utf8_lossy(&request_body)
        });
        (url, handle)
    }

    fn call(args: Vec<Value>, kwargs: Value) -> Result<Value, TaskError> {
        let kwargs: Map<String, Value> = serde_json::from_value(kwargs).expect("object");
        request(&Call {
            func: "http.request",
            args: &args,
            kwargs: &kwargs,
            timeout: Some(Duration::from_secs(10)),
        })
    }

    #[test]
    fn json_body_is_posted_and_the_json_answer_is_the_result() {
        let (url, server) = serve_once(200, r#"{"ok": true}"#);
        let result = call(
            vec![json!(url)],
            json!({"json": {"n": 1}, "headers": {"x-token": "t"}}),
        )
        .expect("succeeds");
        assert_eq!(result, json!({"status": 200, "body": {"ok": true}}));
        let received = server.join().expect("server");
        assert!(received.starts_with("POST /hook"), "{received}");
        assert!(
            received.to_ascii_lowercase().contains("x-token: t"),
            "{received}"
        );
        assert!(received.ends_with(r#"{"n":1}"#), "{received}");
    }

    #[test]
    fn error_status_fails_the_task_with_the_body() {
        let (url, server) = serve_once(503, "try later");
        let error = call(vec![json!(url)], json!({})).expect_err("fails");
        assert!(
            error.message.contains("status 503: try later"),
            "{}",
            error.message
        );
        assert!(server.join().expect("server").starts_with("GET /hook"));
    }
}
