//! A configurable fault proxy in front of a provider's test server (moto for EC2, the Fly test
//! server): what real providers do to clients at the worst moments, on demand.
//!
//! - **Token buckets** as EC2 documents them ("Request throttling for the Amazon EC2 API"): a
//!   request bucket per action, and a resource bucket of instances for `RunInstances`; a call
//!   beyond them is answered `RequestLimitExceeded` (Fly: 429 with `Retry-After`). Refill rates
//!   can be time-scaled so tests of many nodes stay short.
//! - **Storms** for a window of time: every (or every create) request answered with a
//!   throttle, a 5xx, or forwarded and its answer lost — the provider acted, the client never
//!   learns it (the case that makes duplicate machines).
//!
//! It forwards HTTP/1.1 with `Content-Length` bodies, one request at a time per connection,
//! which is what the AWS SDK and reqwest send.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Which provider's dialect the proxy speaks when it answers on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// EC2's query API: `Action=...` in a form body, XML errors.
    Ec2,
    /// Fly's Machines REST API: JSON errors, 429 with `Retry-After`.
    Fly,
}

/// A token bucket: `size` tokens, `refill_per_s` added each second.
#[derive(Debug, Clone)]
pub struct Bucket {
    size: f64,
    refill_per_s: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// A full bucket.
    pub fn new(size: f64, refill_per_s: f64) -> Self {
        Bucket {
            size,
            refill_per_s,
            tokens: size,
            last: Instant::now(),
        }
    }

    /// Take `n` tokens if there are that many.
    fn take(&mut self, n: f64) -> bool {
        let now = Instant::now();
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.refill_per_s).min(self.size);
        self.last = now;
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }
}

/// What the proxy does to requests; tests change it while the proxy runs.
#[derive(Debug, Default)]
pub struct Faults {
    /// Request buckets by action (`RunInstances`, `POST /machines`).
    pub request_buckets: HashMap<String, Bucket>,
    /// `RunInstances`' resource bucket (instances).
    pub instance_bucket: Option<Bucket>,
    /// Buckets every machine gets of its own, by action (`DELETE /machines/:id`; `*` for any
    /// action not listed): Fly limits most actions per machine, not per app.
    pub machine_bucket_rules: HashMap<String, Bucket>,
    /// The per-machine buckets in use, by action and machine id.
    pub machine_buckets: HashMap<(String, String), Bucket>,
    /// Throttle every affected request until then.
    pub throttle_until: Option<Instant>,
    /// `Retry-After` seconds in throttled answers (Fly).
    pub retry_after_s: u64,
    /// Answer every affected request with a 5xx until then.
    pub errors_until: Option<Instant>,
    /// Forward every affected request and lose its answer until then.
    pub lose_until: Option<Instant>,
    /// Forward the next affected requests and lose their answers.
    pub lose_next: u32,
    /// Storms touch only creates (`RunInstances`, `POST /machines`), not reads and deletes.
    pub creates_only: bool,
    /// Requests seen, by action.
    pub seen: HashMap<String, u32>,
    /// Requests answered with a throttle.
    pub throttled: u32,
    /// Requests answered with a 5xx.
    pub errored: u32,
    /// Requests whose answers were lost.
    pub lost: u32,
}

/// EC2's documented throttling of the calls a run makes, refills sped up by `speed`
/// (1.0: EC2's own figures; request bucket 5 calls + 2/s for RunInstances, resource bucket
/// 1,000 instances + 2/s; TerminateInstances 1,000 instances + 20/s).
pub fn ec2_buckets(faults: &mut Faults, speed: f64) {
    faults
        .request_buckets
        .insert("RunInstances".into(), Bucket::new(5.0, 2.0 * speed));
    faults.instance_bucket = Some(Bucket::new(1000.0, 2.0 * speed));
}

/// Fly's documented Machines API limits ("Rate limits" in Fly's Machines API docs), refills
/// sped up by `speed`: 1 request a second per action with bursts of 3 (creates and lists per
/// app, everything else per machine), except getting a machine: 5 a second, bursts of 10.
pub fn fly_buckets(faults: &mut Faults, speed: f64) {
    for app_action in ["POST /machines", "GET /machines"] {
        (faults.request_buckets).insert(app_action.into(), Bucket::new(3.0, speed));
    }
    let rules = &mut faults.machine_bucket_rules;
    rules.insert("GET /machines/:id".into(), Bucket::new(10.0, 5.0 * speed));
    rules.insert("*".into(), Bucket::new(3.0, speed));
}

/// A running proxy.
pub struct FaultProxy {
    /// Its URL (what the client is given instead of the server's).
    pub url: String,
    /// Its rules and counters.
    pub faults: Arc<Mutex<Faults>>,
}

/// What to do with one request.
enum Verdict {
    Forward,
    Throttle,
    Error,
    ForwardAndLose,
}

impl FaultProxy {
    /// Start in front of `upstream` (a port of 127.0.0.1), answering in `flavor`'s dialect.
    pub fn start(upstream: u16, flavor: Flavor) -> FaultProxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let faults = Arc::new(Mutex::new(Faults {
            retry_after_s: 1,
            ..Default::default()
        }));
        let shared = faults.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let faults = shared.clone();
                std::thread::spawn(move || {
                    let _ = serve(client, upstream, flavor, &faults);
                });
            }
        });
        FaultProxy { url, faults }
    }
}

fn serve(
    mut client: TcpStream,
    upstream: u16,
    flavor: Flavor,
    faults: &Mutex<Faults>,
) -> std::io::Result<()> {
    let mut server = TcpStream::connect(("127.0.0.1", upstream))?;
    while let Some(request) = read_message(&mut client)? {
        let (action, instances) = action_of(&request, flavor);
        let machine = (flavor == Flavor::Fly)
            .then(|| machine_of(&request))
            .flatten();
        let verdict = judge(
            &mut faults.lock().unwrap(),
            &action,
            machine.as_deref(),
            instances,
        );
        match verdict {
            Verdict::Throttle => client.write_all(&throttled(flavor, faults))?,
            Verdict::Error => client.write_all(&server_error(flavor))?,
            Verdict::Forward | Verdict::ForwardAndLose => {
                server.write_all(&request)?;
                let Some(response) = read_message(&mut server)? else {
                    return Ok(());
                };
                if let Verdict::ForwardAndLose = verdict {
                    // The provider acted; its answer dies with the connection.
                    return Ok(());
                }
                client.write_all(&response)?;
            }
        }
    }
    Ok(())
}

fn is_create(action: &str) -> bool {
    action == "RunInstances" || action == "POST /machines"
}

/// Apply the rules to one request (on `machine`, for Fly's per-machine actions) and count it.
fn judge(f: &mut Faults, action: &str, machine: Option<&str>, instances: u32) -> Verdict {
    *f.seen.entry(action.to_string()).or_default() += 1;
    let now = Instant::now();
    let affected = !f.creates_only || is_create(action);
    let during = |until: Option<Instant>| affected && until.is_some_and(|u| now < u);
    if during(f.errors_until) {
        f.errored += 1;
        return Verdict::Error;
    }
    let over_request = f
        .request_buckets
        .get_mut(action)
        .is_some_and(|b| !b.take(1.0));
    let over_resource = action == "RunInstances"
        && f.instance_bucket
            .as_mut()
            .is_some_and(|b| !b.take(f64::from(instances)));
    let over_machine = machine.is_some_and(|id| over_machine_bucket(f, action, id));
    if during(f.throttle_until) || over_request || over_resource || over_machine {
        f.throttled += 1;
        return Verdict::Throttle;
    }
    if during(f.lose_until) || (affected && f.lose_next > 0) {
        f.lose_next = f.lose_next.saturating_sub(1);
        f.lost += 1;
        return Verdict::ForwardAndLose;
    }
    Verdict::Forward
}

/// Take a token from `machine`'s own bucket for `action`, made from its rule on first use;
/// `true` when the bucket is empty (no rule: never).
fn over_machine_bucket(f: &mut Faults, action: &str, machine: &str) -> bool {
    let Some(rule) = (f.machine_bucket_rules.get(action))
        .or_else(|| f.machine_bucket_rules.get("*"))
        .cloned()
    else {
        return false;
    };
    let key = (action.to_string(), machine.to_string());
    !f.machine_buckets.entry(key).or_insert(rule).take(1.0)
}

/// The machine id in a Fly request's path (`/v1/apps/APP/machines/ID/...`), if any.
fn machine_of(request: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(request);
    let path = text.split_whitespace().nth(1)?.split('?').next()?;
    let id = path.split("/machines/").nth(1)?.split('/').next()?;
    (!id.is_empty()).then(|| id.to_string())
}

/// The request's action (`RunInstances`; `POST /machines`, paths with ids collapsed) and, for
/// `RunInstances`, how many instances it asks for.
fn action_of(request: &[u8], flavor: Flavor) -> (String, u32) {
    let text = String::from_utf8_lossy(request);
    match flavor {
        Flavor::Ec2 => {
            let field = |name: &str| {
                text.split(['&', '\n'])
                    .find_map(|p| p.trim().strip_prefix(&format!("{name}=")))
                    .map(str::to_string)
            };
            let action = field("Action").unwrap_or_default();
            let count = field("MaxCount").and_then(|c| c.parse().ok()).unwrap_or(1);
            (action, count)
        }
        Flavor::Fly => {
            let mut words = text.split_whitespace();
            let method = words.next().unwrap_or_default();
            let path = words
                .next()
                .unwrap_or_default()
                .split('?')
                .next()
                .unwrap_or("");
            // /v1/apps/APP/machines[/ID[/verb]] → "METHOD /machines[/:id[/verb]]"
            let Some(after) = path.split("/machines").nth(1) else {
                // The app itself (`POST /v1/apps`, `GET /v1/apps/APP`).
                return (format!("{method} /apps"), 1);
            };
            let shape: Vec<&str> = after.split('/').filter(|s| !s.is_empty()).collect();
            let shape = match shape.as_slice() {
                [] => "/machines".to_string(),
                [_] => "/machines/:id".to_string(),
                [_, verb, ..] => format!("/machines/:id/{verb}"),
            };
            (format!("{method} {shape}"), 1)
        }
    }
}

fn throttled(flavor: Flavor, faults: &Mutex<Faults>) -> Vec<u8> {
    match flavor {
        Flavor::Ec2 => ec2_error(503, "RequestLimitExceeded", "Request limit exceeded."),
        Flavor::Fly => {
            let retry = faults.lock().unwrap().retry_after_s;
            http(
                429,
                &format!("Retry-After: {retry}\r\n"),
                "application/json",
                r#"{"error":"rate limit exceeded"}"#,
            )
        }
    }
}

fn server_error(flavor: Flavor) -> Vec<u8> {
    match flavor {
        Flavor::Ec2 => ec2_error(500, "InternalError", "An internal error has occurred."),
        Flavor::Fly => http(
            503,
            "",
            "application/json",
            r#"{"error":"service unavailable"}"#,
        ),
    }
}

fn ec2_error(status: u16, code: &str, message: &str) -> Vec<u8> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors><RequestID>fault-proxy</RequestID></Response>"
    );
    http(status, "", "text/xml;charset=UTF-8", &body)
}

fn http(status: u16, headers: &str, content_type: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} Fault\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{headers}\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// One HTTP/1.1 message: head and a Content-Length body.
pub(crate) fn read_message(stream: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut data = Vec::new();
    let mut byte = [0u8; 1];
    while !data.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 {
            return Ok(None);
        }
        data.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&data).to_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body)?;
    data.extend_from_slice(&body);
    Ok(Some(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_are_named_per_dialect() {
        let run = b"POST / HTTP/1.1\r\nHost: x\r\n\r\nAction=RunInstances&MaxCount=7&Version=2016";
        assert_eq!(action_of(run, Flavor::Ec2), ("RunInstances".into(), 7));
        let create = b"POST /v1/apps/app/machines HTTP/1.1\r\n\r\n";
        assert_eq!(action_of(create, Flavor::Fly).0, "POST /machines");
        let wait = b"GET /v1/apps/app/machines/e123/wait?state=started HTTP/1.1\r\n\r\n";
        assert_eq!(action_of(wait, Flavor::Fly).0, "GET /machines/:id/wait");
        assert_eq!(machine_of(wait).as_deref(), Some("e123"));
        assert_eq!(machine_of(create), None);
        let app = b"POST /v1/apps HTTP/1.1\r\n\r\n";
        assert_eq!(action_of(app, Flavor::Fly).0, "POST /apps");
    }

    #[test]
    fn buckets_refuse_beyond_their_tokens_and_refill() {
        let mut faults = Faults::default();
        ec2_buckets(&mut faults, 1000.0);
        for _ in 0..5 {
            assert!(matches!(
                judge(&mut faults, "RunInstances", None, 1),
                Verdict::Forward
            ));
        }
        assert!(matches!(
            judge(&mut faults, "RunInstances", None, 1),
            Verdict::Throttle
        ));
        std::thread::sleep(Duration::from_millis(5)); // 2000/s x 5 ms = 10 tokens back
        assert!(matches!(
            judge(&mut faults, "RunInstances", None, 1),
            Verdict::Forward
        ));
        assert!(matches!(
            judge(&mut faults, "DescribeInstances", None, 1),
            Verdict::Forward
        ));
        assert_eq!(faults.throttled, 1);
    }

    /// Fly limits per machine: one machine's empty bucket does not throttle another's, and
    /// creates share the app's.
    #[test]
    fn fly_buckets_are_per_machine_except_creates() {
        let mut faults = Faults::default();
        fly_buckets(&mut faults, 0.001);
        let delete = "DELETE /machines/:id";
        for _ in 0..3 {
            assert!(matches!(
                judge(&mut faults, delete, Some("a"), 1),
                Verdict::Forward
            ));
        }
        assert!(matches!(
            judge(&mut faults, delete, Some("a"), 1),
            Verdict::Throttle
        ));
        assert!(matches!(
            judge(&mut faults, delete, Some("b"), 1),
            Verdict::Forward
        ));
        let get = "GET /machines/:id";
        for _ in 0..10 {
            assert!(matches!(
                judge(&mut faults, get, Some("a"), 1),
                Verdict::Forward
            ));
        }
        assert!(matches!(
            judge(&mut faults, get, Some("a"), 1),
            Verdict::Throttle
        ));
        for _ in 0..3 {
            assert!(matches!(
                judge(&mut faults, "POST /machines", None, 1),
                Verdict::Forward
            ));
        }
        assert!(matches!(
            judge(&mut faults, "POST /machines", None, 1),
            Verdict::Throttle
        ));
        assert_eq!(faults.throttled, 3);
    }
}
