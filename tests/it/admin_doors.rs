//! The admin API's door, against the real binary over plain HTTP: what a page on another site can
//! make the operator's browser send (forms, `text/plain`, a foreign `Origin`) steers nothing; a page
//! under a rebound name (`Host: evil.example`) reads nothing; IP addresses, `localhost` and the names
//! in `admin.allowed_hosts` are let in; every answer is `no-store`; the control commands still work;
//! with `admin.token` the token's rules hold and the `Host` check comes first.
//!
//! Requests are written on a connection of their own, byte for byte, so that a test says exactly
//! which `Host`, `Origin` and `Content-Type` a call has (and can leave any of them out).

use std::net::SocketAddr;
use std::time::Duration;

use actix_rt::net::TcpStream;
use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::process::{
    busy_world, cli, free_port, service_env, spawn, Env, Finished, Running,
};
use crate::common::{eventually, TestApp};
use registry_repair::registry::simulator::RegistrySimulator;

const EVIL: &str = "http://evil.example";
const TOKEN: &str = "door-t0ken";

/// The paths that answer a read.
const READS: [&str; 4] = ["/", "/status", "/damage", "/metrics"];

/// An answer as it came over the wire.
#[derive(Debug)]
struct Answer {
    status: u16,
    /// Names lowercased.
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("the answer is not JSON ({e}): {self:?}"))
    }

    /// The `{"error": ...}` of a refusal.
    fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error in {self:?}"))
            .to_string()
    }

    fn parse(raw: &[u8]) -> Result<Self, String> {
        let text = String::from_utf8_lossy(raw);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| format!("no end of headers in {text:?}"))?;
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|line| line.split(' ').nth(1))
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| format!("no status line in {text:?}"))?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let chunked = headers
            .iter()
            .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
        let body = if chunked {
            dechunk(body)?
        } else {
            body.to_string()
        };
        Ok(Self {
            status,
            headers,
            body,
        })
    }
}

fn dechunk(mut rest: &str) -> Result<String, String> {
    let mut body = String::new();
    loop {
        let (size, after) = rest
            .split_once("\r\n")
            .ok_or_else(|| format!("a chunk without its size: {rest:?}"))?;
        let size = usize::from_str_radix(size.trim(), 16)
            .map_err(|e| format!("chunk size {size:?}: {e}"))?;
        if size == 0 {
            return Ok(body);
        }
        let chunk = after
            .get(..size)
            .ok_or_else(|| format!("a chunk shorter than {size}: {after:?}"))?;
        body.push_str(chunk);
        rest = after[size..].trim_start_matches("\r\n");
    }
}

/// `method path` on a connection of its own with exactly `headers` (no `Host` unless given) and
/// `body`; `Err` when nothing answers.
async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<Answer, String> {
    let mut request = format!("{method} {path} HTTP/1.1\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    exchange(addr, &format!("{method} {path}"), &request).await
}

/// `request` as it is, on a connection of its own; `what` names it in errors.
async fn exchange(addr: SocketAddr, what: &str, request: &str) -> Result<Answer, String> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(raw)
    };
    let raw = tokio::time::timeout(Duration::from_secs(15), exchange)
        .await
        .map_err(|_| format!("{what}: no answer within 15 s"))?
        .map_err(|e| format!("{what} to {addr}: {e}"))?;
    Answer::parse(&raw)
}

/// [`send`], which must answer.
async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    send(addr, method, path, headers, body)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// `GET path` with `host` and `more` headers.
async fn get(addr: SocketAddr, path: &str, host: &str, more: &[(&str, &str)]) -> Answer {
    let mut headers = vec![("Host", host)];
    headers.extend_from_slice(more);
    call(addr, "GET", path, &headers, "").await
}

/// `POST path` with `host`, `{}` as JSON and `more` headers.
async fn post_json(addr: SocketAddr, path: &str, host: &str, more: &[(&str, &str)]) -> Answer {
    let mut headers = vec![("Host", host), ("Content-Type", "application/json")];
    headers.extend_from_slice(more);
    call(addr, "POST", path, &headers, "{}").await
}

/// `GET /status` as the operator sends it (by IP address), with `more` headers.
async fn status(addr: SocketAddr, more: &[(&str, &str)]) -> serde_json::Value {
    let answer = get(addr, "/status", &addr.to_string(), more).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    answer.json()
}

/// `registry-repair run` with `env`, listening on `addr`: up once its `/status` answers 200 to a
/// call with `auth`.
async fn started(env: &Env, addr: SocketAddr, auth: &[(&str, &str)]) -> Running {
    let mut service = spawn(&["run"], env);
    let host = addr.to_string();
    let mut headers = vec![("Host", host.as_str())];
    headers.extend_from_slice(auth);
    let up = eventually(Duration::from_secs(30), || async {
        matches!(send(addr, "GET", "/status", &headers, "").await, Ok(a) if a.status == 200)
    })
    .await;
    if !up || service.has_exited() {
        service.signal(libc::SIGTERM);
        panic!(
            "the admin API never answered\n{}",
            service.wait(Duration::from_secs(30)).await.dump()
        );
    }
    service
}

async fn stop(mut service: Running) -> Finished {
    service.signal(libc::SIGTERM);
    let out = service.wait(Duration::from_secs(30)).await;
    out.assert_exit(0).assert_no_panic();
    out
}

/// The registry is asked for more projects within 30 s: the service keeps analysing.
async fn keeps_analysing(registry: &RegistrySimulator) {
    let before = registry.stats().list_requests;
    assert!(
        eventually(Duration::from_secs(30), || async {
            registry.stats().list_requests >= before + 3
        })
        .await,
        "the service stopped analysing: {:?}",
        registry.stats()
    );
}

fn no_store(answer: &Answer, what: &str) {
    assert_eq!(
        answer.header("cache-control"),
        Some("no-store"),
        "{what}: {answer:?}"
    );
}

/// What a form on another site can make a browser post: (content type, body).
fn cross_site_bodies() -> [(Option<&'static str>, &'static str); 4] {
    [
        (Some("application/x-www-form-urlencoded"), "enabled=false"),
        (
            Some("multipart/form-data; boundary=x"),
            "--x\r\nContent-Disposition: form-data; name=\"enabled\"\r\n\r\nfalse\r\n--x--\r\n",
        ),
        (Some("text/plain"), "{\"enabled\": false}"),
        (None, ""),
    ]
}

#[actix_rt::test]
async fn without_a_token_a_page_elsewhere_can_neither_steer_nor_read_the_service() {
    // Long enough to outlast the test: one project at a time, each a little slow.
    let world = busy_world(1000);
    let TestApp { db, registry, .. } = TestApp::prepare(&world).await;
    registry.set_latency(Duration::from_millis(40));
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let addr: SocketAddr = listen.parse().expect("an address");
    let env = service_env(&db, &registry.url(), &listen).set("WORKER__MAX_CONCURRENCY", "1");
    let service = started(&env, addr, &[]).await;
    let ip_host = listen.clone();

    // A cross-site form, multipart or text/plain post, and one with no content type, each with
    // and without a foreign Origin: none pauses the service.
    for (content_type, body) in cross_site_bodies() {
        for origin in [None, Some(EVIL)] {
            let mut headers = vec![("Host", ip_host.as_str())];
            if let Some(content_type) = content_type {
                headers.push(("Content-Type", content_type));
            }
            if let Some(origin) = origin {
                headers.push(("Origin", origin));
            }
            let answer = call(addr, "POST", "/pause", &headers, body).await;
            let what = format!("POST /pause as {content_type:?} from {origin:?}");
            match origin {
                Some(_) => {
                    assert_eq!(answer.status, 403, "{what}: {answer:?}");
                    assert!(
                        answer.error().contains("Origin: `http://evil.example`"),
                        "{what}"
                    );
                }
                None => {
                    assert_eq!(answer.status, 415, "{what}: {answer:?}");
                    let error = answer.error();
                    assert!(
                        error.contains("Content-Type: application/json")
                            && error.contains("CORS preflight"),
                        "{what}: {error}"
                    );
                }
            }
            no_store(&answer, &what);
        }
    }
    // JSON from a page elsewhere: a browser would have asked first (a preflight, never answered),
    // but if it comes, the Origin shuts the door.
    let answer = post_json(addr, "/pause", &ip_host, &[("Origin", EVIL)]).await;
    assert_eq!(answer.status, 403, "{answer:?}");
    let answer = post_json(addr, "/concurrency", &ip_host, &[("Origin", "null")]).await;
    assert_eq!(answer.status, 403, "{answer:?}");
    let s = status(addr, &[]).await;
    assert_eq!(s["enabled"], serde_json::json!(true), "{s}");
    assert_eq!(s["max_concurrency"], serde_json::json!(1), "{s}");
    keeps_analysing(&registry).await;

    // A page under a rebound name reads nothing, and nothing that names a project.
    let rebound = format!("evil.example:{port}");
    for path in READS {
        let answer = get(addr, path, &rebound, &[]).await;
        assert_eq!(answer.status, 403, "GET {path}: {answer:?}");
        let error = answer.error();
        assert!(
            error.contains(&format!("`{rebound}`")) && error.contains("admin.allowed_hosts"),
            "GET {path}: {error}"
        );
        for private in ["busy-org", "analysed", "registry_repair_", "<html"] {
            assert!(!answer.body.contains(private), "GET {path}: {answer:?}");
        }
        no_store(&answer, &format!("GET {path} refused"));
    }
    // Nor steers it, with JSON and its own name as Origin.
    let origin = format!("http://{rebound}");
    let answer = post_json(addr, "/pause", &rebound, &[("Origin", &origin)]).await;
    assert_eq!(answer.status, 403, "{answer:?}");
    // No Host at all is no name either (HTTP/1.1 requires one: actix-web answers 400 before the
    // door; HTTP/1.0 did not).
    let answer = call(addr, "GET", "/status", &[], "").await;
    assert_eq!(answer.status, 400, "{answer:?}");
    let answer = exchange(
        addr,
        "GET /status without Host",
        "GET /status HTTP/1.0\r\n\r\n",
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(answer.status, 403, "{answer:?}");
    assert!(answer.error().contains("(Host: none)"), "{answer:?}");

    // The names it is reached by: any IP address, localhost; every read marked no-store.
    for host in [
        ip_host.clone(),
        format!("localhost:{port}"),
        format!("LocalHost.:{port}"),
        format!("[::1]:{port}"),
    ] {
        for path in READS {
            let answer = get(addr, path, &host, &[]).await;
            assert_eq!(answer.status, 200, "GET {path} as {host}: {answer:?}");
            no_store(&answer, &format!("GET {path} as {host}"));
        }
    }
    // A same-origin read from the live page carries its Origin, or none.
    let answer = get(
        addr,
        "/damage",
        &ip_host,
        &[("Origin", &format!("http://{ip_host}"))],
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");

    // A JSON control call: without Origin (curl, the CLI) and from the service's own origin.
    let answer = post_json(addr, "/pause", &ip_host, &[]).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.json()["enabled"], serde_json::json!(false));
    no_store(&answer, "POST /pause");
    assert_eq!(status(addr, &[]).await["enabled"], serde_json::json!(false));
    let localhost = format!("localhost:{port}");
    let own_origin = format!("http://{localhost}");
    // Two content types are ambiguous: refused, even if one is JSON.
    let answer = post_json(
        addr,
        "/resume",
        &localhost,
        &[("Origin", &own_origin), ("Content-Type", "text/plain")],
    )
    .await;
    assert_eq!(answer.status, 415, "{answer:?}");
    // JSON with a charset, from the service's own origin.
    let answer = call(
        addr,
        "POST",
        "/resume",
        &[
            ("Host", &localhost),
            ("Origin", &own_origin),
            ("Content-Type", "application/json; charset=utf-8"),
        ],
        "{}",
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.json()["enabled"], serde_json::json!(true));
    keeps_analysing(&registry).await;

    // The control commands, which speak JSON.
    let control = Env::new().set("ADMIN__LISTEN", &listen);
    for args in [
        &["pause"][..],
        &["resume"],
        &["concurrency", "3"],
        &["status"],
    ] {
        cli(args, &control, Duration::from_secs(15))
            .await
            .assert_exit(0)
            .assert_no_panic();
    }
    let s = status(addr, &[]).await;
    assert_eq!(s["enabled"], serde_json::json!(true), "{s}");
    assert_eq!(s["max_concurrency"], serde_json::json!(3), "{s}");
    stop(service).await;
}

#[actix_rt::test]
async fn a_name_in_admin_allowed_hosts_is_let_in_and_no_other() {
    let world = busy_world(20);
    let TestApp { db, registry, .. } = TestApp::prepare(&world).await;
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let addr: SocketAddr = listen.parse().expect("an address");
    let env = service_env(&db, &registry.url(), &listen)
        .set("ADMIN__ALLOWED_HOSTS", "rr.example.com,Proxy.Internal");
    let service = started(&env, addr, &[]).await;

    for host in [
        "RR.Example.com",
        "rr.example.com:443",
        "proxy.internal:8080",
        "proxy.internal.",
    ] {
        for path in READS {
            let answer = get(addr, path, host, &[]).await;
            assert_eq!(answer.status, 200, "GET {path} as {host}: {answer:?}");
        }
    }
    for host in ["evil.example", "rr.example.com.evil.example", "example.com"] {
        let answer = get(addr, "/status", host, &[]).await;
        assert_eq!(answer.status, 403, "{host}: {answer:?}");
    }
    // Behind a proxy that passes its own name on, and one that names the service by address:
    // the proxy's pages are let in either way.
    let answer = post_json(
        addr,
        "/pause",
        "rr.example.com",
        &[("Origin", "https://rr.example.com")],
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let answer = post_json(
        addr,
        "/resume",
        &listen,
        &[("Origin", "https://rr.example.com")],
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let answer = post_json(addr, "/pause", "rr.example.com", &[("Origin", EVIL)]).await;
    assert_eq!(answer.status, 403, "{answer:?}");
    assert_eq!(status(addr, &[]).await["enabled"], serde_json::json!(true));
    stop(service).await;
}

#[actix_rt::test]
async fn with_admin_token_its_rules_hold_behind_the_host_check() {
    let world = busy_world(20);
    let TestApp { db, registry, .. } = TestApp::prepare(&world).await;
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let addr: SocketAddr = listen.parse().expect("an address");
    let env = service_env(&db, &registry.url(), &listen)
        .set("ADMIN__TOKEN", TOKEN)
        .set("LOG__LEVEL", "info,registry_repair::admin=debug");
    let bearer = format!("Bearer {TOKEN}");
    let bearer: &[(&str, &str)] = &[("Authorization", &bearer)];
    let service = started(&env, addr, bearer).await;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("ops:{TOKEN}"))
    );

    // Bearer on a JSON control call.
    let answer = post_json(addr, "/pause", &listen, bearer).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.json()["enabled"], serde_json::json!(false));
    let answer = post_json(addr, "/resume", &listen, bearer).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    // Basic: on the reads over loopback, never on a control call.
    let answer = get(addr, "/status", &listen, &[("Authorization", &basic)]).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let answer = post_json(addr, "/pause", &listen, &[("Authorization", &basic)]).await;
    assert_eq!(answer.status, 401, "{answer:?}");
    assert!(
        answer.error().contains("only on the read-only GET calls"),
        "{answer:?}"
    );
    no_store(&answer, "POST /pause with Basic");
    // A wrong token: refused, and logged without it.
    let wrong = "Bearer not-the-right-one";
    let answer = get(addr, "/metrics", &listen, &[("Authorization", wrong)]).await;
    assert_eq!(answer.status, 401, "{answer:?}");
    assert!(
        service
            .logs_within("admin call refused", Duration::from_secs(10))
            .await,
        "a refusal is logged at debug"
    );
    // Nothing: 401, the page alone challenges.
    let answer = get(addr, "/status", &listen, &[]).await;
    assert_eq!(answer.status, 401, "{answer:?}");
    assert_eq!(answer.header("www-authenticate"), None);
    let answer = get(addr, "/", &listen, &[]).await;
    assert_eq!(answer.status, 401, "{answer:?}");
    assert_eq!(
        answer.header("www-authenticate"),
        Some("Basic realm=\"registry-repair\"")
    );
    no_store(&answer, "GET / without credentials");
    // A path no route serves is behind the same door: what a route added later would get.
    let answer = get(addr, "/no-such-route", &listen, &[]).await;
    assert_eq!(answer.status, 401, "{answer:?}");
    let answer = get(
        addr,
        "/no-such-route",
        &format!("evil.example:{port}"),
        bearer,
    )
    .await;
    assert_eq!(answer.status, 403, "{answer:?}");
    let answer = get(addr, "/no-such-route", &listen, bearer).await;
    assert_eq!(answer.status, 404, "{answer:?}");
    no_store(&answer, "GET /no-such-route");

    // The right token does not open the door to a rebound name, a foreign page, or a form.
    let rebound = format!("evil.example:{port}");
    for path in READS {
        let answer = get(addr, path, &rebound, bearer).await;
        assert_eq!(answer.status, 403, "GET {path}: {answer:?}");
    }
    let answer = post_json(addr, "/pause", &rebound, bearer).await;
    assert_eq!(answer.status, 403, "{answer:?}");
    let mut from_elsewhere = bearer.to_vec();
    from_elsewhere.push(("Origin", EVIL));
    let answer = post_json(addr, "/pause", &listen, &from_elsewhere).await;
    assert_eq!(answer.status, 403, "{answer:?}");
    for (content_type, body) in cross_site_bodies() {
        let mut headers = vec![("Host", listen.as_str())];
        headers.extend_from_slice(bearer);
        if let Some(content_type) = content_type {
            headers.push(("Content-Type", content_type));
        }
        let answer = call(addr, "POST", "/pause", &headers, body).await;
        assert_eq!(answer.status, 415, "{content_type:?}: {answer:?}");
    }
    assert_eq!(
        status(addr, bearer).await["enabled"],
        serde_json::json!(true)
    );

    // The control commands send the token and JSON.
    let control = Env::new()
        .set("ADMIN__LISTEN", &listen)
        .set("ADMIN__TOKEN", TOKEN);
    for args in [
        &["pause"][..],
        &["resume"],
        &["concurrency", "3"],
        &["status"],
    ] {
        cli(args, &control, Duration::from_secs(15))
            .await
            .assert_exit(0)
            .assert_no_panic();
    }
    assert_eq!(
        status(addr, bearer).await["max_concurrency"],
        serde_json::json!(3)
    );
    let out = stop(service).await;
    let refusals: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("admin call refused"))
        .collect();
    assert!(
        refusals
            .iter()
            .any(|l| l.contains("/metrics") && l.contains("GET")),
        "{}",
        out.dump()
    );
    assert!(
        refusals.iter().any(|l| l.contains("evil.example")),
        "{}",
        out.dump()
    );
    for secret in [TOKEN, "not-the-right-one"] {
        assert!(!out.stderr.contains(secret), "{}", out.dump());
    }
}

#[actix_rt::test]
async fn a_bad_allowed_host_stops_the_start_naming_the_key() {
    let env = Env::new().set(
        "ADMIN__ALLOWED_HOSTS",
        "rr.example.com,https://proxy.example",
    );
    let out = cli(&["status"], &env, Duration::from_secs(15)).await;
    out.assert_exit(2)
        .assert_no_panic()
        .assert_stderr_has("admin.allowed_hosts")
        .assert_stderr_has("https://proxy.example");
}
