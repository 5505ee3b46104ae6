//! A loopback HTTP proxy in front of moto that records each AWS call it forwards: the
//! operation (`X-Amz-Target`; SQS, DynamoDB, EventBridge, SSM and Secrets Manager all speak
//! the AWS JSON protocol; S3's object calls by method and path) and the resources the
//! request names. A function built with this
//! endpoint is observed exactly as AWS would authorize it: one call, one IAM check.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// One forwarded request: its operation, every resource its body names, and the body.
#[derive(Debug, Clone)]
pub struct Call {
    pub operation: String,
    pub resources: Vec<String>,
    pub body: serde_json::Value,
}

/// Answers to give instead of forwarding: `(operation, JSON body)`, each used once.
type Faults = Arc<Mutex<Vec<(String, String)>>>;

#[derive(Clone)]
pub struct Recorder {
    endpoint: String,
    calls: Arc<Mutex<Vec<Call>>>,
    faults: Faults,
}

/// The body fields that name what a request acts on.
const RESOURCE_FIELDS: [&str; 5] = ["QueueUrl", "TableName", "EventBusName", "Name", "SecretId"];

fn resources(body: &serde_json::Value, out: &mut Vec<String>) {
    match body {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match v {
                    serde_json::Value::String(s) if RESOURCE_FIELDS.contains(&k.as_str()) => {
                        if !out.contains(s) {
                            out.push(s.clone());
                        }
                    }
                    other => resources(other, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|i| resources(i, out)),
        _ => {}
    }
}

impl Recorder {
    /// Forward `127.0.0.1:<free port>` to `upstream` (`http://host:port`).
    pub async fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        let calls = Arc::new(Mutex::new(Vec::new()));
        let faults: Faults = Arc::default();
        let recorder = Self {
            endpoint,
            calls: calls.clone(),
            faults: faults.clone(),
        };
        let upstream = upstream.trim_end_matches('/').to_owned();
        let http = reqwest::Client::new();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(serve(
                    conn,
                    upstream.clone(),
                    http.clone(),
                    calls.clone(),
                    faults.clone(),
                ));
            }
        });
        recorder
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The next `operation` request is answered `200` with `body` instead of reaching moto
    /// (recorded all the same): a service's answer the emulator cannot be made to give.
    pub fn answer_next(&self, operation: &str, body: &str) {
        self.faults
            .lock()
            .expect("faults")
            .push((operation.to_owned(), body.to_owned()));
    }

    /// The calls recorded since the last `take`.
    pub fn take(&self) -> Vec<Call> {
        std::mem::take(&mut *self.calls.lock().expect("calls"))
    }
}

/// S3 speaks REST, not the JSON protocol: an object operation is its method on a
/// path-style `/bucket/key` (the adapter uses path style with an explicit endpoint).
fn s3_operation(method: &str, path: &str) -> Option<String> {
    let object = path.trim_start_matches('/').split('?').next()?;
    object.split_once('/').filter(|(_, key)| !key.is_empty())?;
    let op = match method {
        "PUT" => "PutObject",
        "GET" | "HEAD" => "GetObject",
        "DELETE" => "DeleteObject",
        _ => return None,
    };
    Some(format!("AmazonS3.{op}"))
}

/// The ARN IAM checks an object operation against.
fn s3_object_arn(path: &str) -> String {
    let object = path.trim_start_matches('/').split('?').next().unwrap_or("");
    format!("arn:aws:s3:::{object}")
}

/// One keep-alive connection: requests with a `content-length` body, as the SDK sends them.
async fn serve(
    conn: TcpStream,
    upstream: String,
    http: reqwest::Client,
    calls: Arc<Mutex<Vec<Call>>>,
    faults: Faults,
) {
    let (read, mut write) = conn.into_split();
    let mut read = BufReader::new(read);
    loop {
        let mut request_line = String::new();
        if read.read_line(&mut request_line).await.unwrap_or(0) == 0 {
            return;
        }
        let mut parts = request_line.split_whitespace();
        let (Some(method), Some(path)) = (parts.next(), parts.next()) else {
            return;
        };
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            if read.read_line(&mut line).await.unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
            }
        }
        let header = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let length: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        if read.read_exact(&mut body).await.is_err() {
            return;
        }
        let mut call = Call {
            operation: header("x-amz-target")
                .or_else(|| s3_operation(method, path))
                .unwrap_or_else(|| format!("(no target) {path}")),
            resources: Vec::new(),
            body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        };
        match call.operation.strip_prefix("AmazonS3.") {
            Some(_) => call.resources.push(s3_object_arn(path)),
            None => resources(&call.body, &mut call.resources),
        }
        let fault = {
            let mut faults = faults.lock().expect("faults");
            let at = faults.iter().position(|(op, _)| *op == call.operation);
            at.map(|i| faults.remove(i).1)
        };
        calls.lock().expect("calls").push(call);
        if let Some(answer) = fault {
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/x-amz-json-1.1\r\nx-amzn-requestid: injected\r\ncontent-length: {}\r\n\r\n",
                answer.len()
            );
            if write.write_all(head.as_bytes()).await.is_err()
                || write.write_all(answer.as_bytes()).await.is_err()
            {
                return;
            }
            continue;
        }

        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut forward = http.request(method, format!("{upstream}{path}")).body(body);
        for (name, value) in &headers {
            if !matches!(name.as_str(), "host" | "content-length" | "connection") {
                forward = forward.header(name, value);
            }
        }
        let Ok(resp) = forward.send().await else {
            return;
        };
        let status = resp.status();
        let mut head = format!(
            "HTTP/1.1 {} {}\r\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        );
        for (name, value) in resp.headers() {
            if !matches!(
                name.as_str(),
                "content-length" | "transfer-encoding" | "connection"
            ) {
                head.push_str(&format!(
                    "{}: {}\r\n",
                    name,
                    value.to_str().unwrap_or_default()
                ));
            }
        }
        let Ok(bytes) = resp.bytes().await else {
            return;
        };
        head.push_str(&format!("content-length: {}\r\n\r\n", bytes.len()));
        if write.write_all(head.as_bytes()).await.is_err() || write.write_all(&bytes).await.is_err()
        {
            return;
        }
    }
}
