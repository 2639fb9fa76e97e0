//! The gateway against hostile and careless clients, over real sockets to
//! the real binary: slow and idle connections are cut off within their
//! timeouts while a normal client is served; the connection cap makes new
//! connections wait and serves them as others close; every error is the
//! JSON error body, with a status the OpenAPI document lists; wrong admin
//! tokens are throttled per address while the right token keeps working;
//! and a Kafka outage is logged once (and its end once), with a gauge.

mod common;

use common::orders::stack;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::coupon::Fixture;
use common::gateway::{spawn_gateway, Gateway, ADMIN_TOKEN};
use common::orders::BrokerRestart;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::RwLock;

/// The outage test stops the broker; every other test needs it (/health,
/// 202s), so they share this lock and the outage takes it alone.
static BROKER: RwLock<()> = RwLock::const_new(());

fn address(gw: &Gateway) -> String {
    gw.url.trim_start_matches("http://").to_string()
}

/// Reads until the server closes the connection (a reset counts) or
/// `limit` passes: what arrived, and when it closed counted from `from`.
async fn until_closed(
    mut s: TcpStream,
    from: Instant,
    limit: Duration,
) -> (String, Option<Duration>) {
    let mut buf = Vec::new();
    let closed = match tokio::time::timeout(limit, s.read_to_end(&mut buf)).await {
        Ok(_) => Some(from.elapsed()),
        Err(_) => None,
    };
    (String::from_utf8_lossy(&buf).into_owned(), closed)
}

/// One Prometheus sample (`name` with its labels, as exported); panics
/// when the gateway does not export it.
async fn metric(gw: &Gateway, series: &str) -> f64 {
    gw.metric(series)
        .await
        .unwrap_or_else(|| panic!("no {series} in /metrics"))
}

/// The gateway's error body: an object with a non-empty `error` and at most
/// a string `field`, nothing else (the document's Error schema).
fn error_body(text: &str) -> Result<Value, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON ({e}): {text}"))?;
    let o = v.as_object().ok_or(format!("not an object: {text}"))?;
    let message = o.get("error").and_then(Value::as_str).unwrap_or("");
    if message.is_empty() {
        return Err(format!("no error message: {text}"));
    }
    if o.keys().any(|k| k != "error" && k != "field")
        || o.get("field").is_some_and(|f| !f.is_string())
    {
        return Err(format!("not the Error shape: {text}"));
    }
    Ok(v)
}

/// Reads one answer — its head and the body its Content-Length announces —
/// or what had arrived when the server closed or `limit` passed.
async fn one_answer(s: &mut TcpStream, limit: Duration) -> String {
    let mut seen = Vec::new();
    let read = async {
        let mut buf = [0u8; 8192];
        loop {
            let text = String::from_utf8_lossy(&seen).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head.to_ascii_lowercase().lines().find_map(|l| {
                    l.strip_prefix("content-length:")?
                        .trim()
                        .parse::<usize>()
                        .ok()
                });
                if length.is_some_and(|n| body.len() >= n) {
                    return;
                }
            }
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    };
    let _ = tokio::time::timeout(limit, read).await;
    String::from_utf8_lossy(&seen).into_owned()
}

/// A raw HTTP answer's status and (JSON) body, when it has them.
fn split_raw(answer: &str) -> (Option<u16>, String, String) {
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((answer, ""));
    let status = head
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok());
    (status, head.to_ascii_lowercase(), body.to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_and_idle_clients_are_cut_off_while_others_are_served() {
    let _broker = BROKER.read().await;
    let fx = Fixture::new("gw-slow").await;
    let gw = spawn_gateway(
        &fx,
        &[
            ("SURGE_GATEWAY__HEADER_READ_TIMEOUT", "2s"),
            ("SURGE_GATEWAY__BODY_READ_TIMEOUT", "2s"),
            ("SURGE_GATEWAY__IDLE_TIMEOUT", "3s"),
        ],
    )
    .await;
    let at = address(&gw);
    let connect = || async { TcpStream::connect(&at).await.unwrap() };
    let limit = Duration::from_secs(15);

    // Each kind of slow client, 30 of each (20 tricklers), all at once.
    let mut silent = Vec::new();
    let mut half_head = Vec::new();
    let mut trickle = Vec::new();
    let mut half_body = Vec::new();
    let mut idle = Vec::new();
    for _ in 0..30 {
        let started = Instant::now();
        let s = connect().await;
        silent.push(tokio::spawn(until_closed(s, started, limit)));

        let started = Instant::now();
        let mut s = connect().await;
        s.write_all(b"GET /health HTTP/1.1\r\nHost: gw\r\n")
            .await
            .unwrap();
        half_head.push(tokio::spawn(until_closed(s, started, limit)));

        let started = Instant::now();
        let mut s = connect().await;
        s.write_all(b"POST /coupons/c1/issue HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"userId\"")
            .await
            .unwrap();
        half_body.push(tokio::spawn(until_closed(s, started, limit)));

        // A complete request, then nothing: idle from the end of its answer.
        let mut s = connect().await;
        s.write_all(b"GET /openapi.json HTTP/1.1\r\nHost: gw\r\n\r\n")
            .await
            .unwrap();
        idle.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut buf = [0u8; 65536];
            // The document is one JSON object: it has arrived when it parses.
            loop {
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0, "closed before the answer");
                seen.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&seen);
                if let Some((_, body)) = text.split_once("\r\n\r\n") {
                    if serde_json::from_str::<Value>(body).is_ok() {
                        break;
                    }
                }
            }
            until_closed(s, Instant::now(), limit).await
        }));
    }
    for _ in 0..20 {
        let started = Instant::now();
        let s = connect().await;
        trickle.push(tokio::spawn(async move {
            let (mut r, mut w) = s.into_split();
            // One byte every 200 ms: never a complete head.
            let writer = tokio::spawn(async move {
                for b in b"GET /health HTTP/1.1\r\nHost: gw\r\nX-Slow: "
                    .iter()
                    .cycle()
                {
                    if w.write_all(&[*b]).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            });
            let mut buf = Vec::new();
            let closed = tokio::time::timeout(limit, r.read_to_end(&mut buf))
                .await
                .ok()
                .map(|_| started.elapsed());
            writer.abort();
            (String::from_utf8_lossy(&buf).into_owned(), closed)
        }));
    }

    // Meanwhile a normal client is served promptly, again and again.
    let normal = reqwest::Client::new();
    let until = Instant::now() + Duration::from_secs(5);
    let mut served = 0;
    while Instant::now() < until {
        let started = Instant::now();
        let r = normal
            .get(format!("{}/health", gw.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let issue = normal
            .post(format!("{}/coupons/{}c/issue", gw.url, fx.prefix))
            .json(&json!({ "userId": "normal" }))
            .send()
            .await
            .unwrap();
        assert_eq!(issue.status(), 202, "served while slow clients hang on");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        served += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served >= 10, "{served}");

    // Each slow client was cut off within its timeout (with slack for a
    // loaded 2-core machine), never before it.
    let window = |what: &str, closed: Option<Duration>, timeout: f64| {
        let closed = closed.unwrap_or_else(|| panic!("{what}: never closed"));
        let s = closed.as_secs_f64();
        assert!(
            s >= timeout - 0.5 && s < timeout + 2.5,
            "{what}: closed after {closed:?}"
        );
    };
    for h in silent {
        let (answer, closed) = h.await.unwrap();
        window("silent", closed, 2.0);
        assert!(answer.is_empty(), "no head, no answer: {answer}");
    }
    for (what, handles) in [
        ("half-sent head", half_head),
        ("trickled head", trickle),
        ("half-sent body", half_body),
    ] {
        for h in handles {
            let (answer, closed) = h.await.unwrap();
            window(what, closed, 2.0);
            let (status, head, body) = split_raw(&answer);
            assert_eq!(status, Some(408), "{what}: {answer}");
            assert!(
                head.contains("content-type: application/json"),
                "{what}: {answer}"
            );
            error_body(&body).unwrap();
        }
    }
    for h in idle {
        let (_, closed) = h.await.unwrap();
        window("idle", closed, 3.0);
    }
    assert!(
        metric(
            &gw,
            "surge_gateway_connection_timeouts_total{kind=\"header\"}"
        )
        .await
            >= 80.0
    );
    assert!(
        metric(
            &gw,
            "surge_gateway_connection_timeouts_total{kind=\"body\"}"
        )
        .await
            >= 30.0
    );
    assert!(
        metric(
            &gw,
            "surge_gateway_connection_timeouts_total{kind=\"idle\"}"
        )
        .await
            >= 30.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn at_the_connection_cap_new_connections_wait_and_are_served_as_others_close() {
    let _broker = BROKER.read().await;
    let fx = Fixture::new("gw-cap").await;
    // Long timeouts: here only clients closing frees a slot.
    let gw = spawn_gateway(
        &fx,
        &[
            ("SURGE_GATEWAY__MAX_CONNECTIONS", "20"),
            ("SURGE_GATEWAY__HEADER_READ_TIMEOUT", "60s"),
            ("SURGE_GATEWAY__IDLE_TIMEOUT", "60s"),
        ],
    )
    .await;
    assert_eq!(metric(&gw, "surge_gateway_max_connections").await, 20.0);
    let at = address(&gw);
    let mut hogs = Vec::new();
    for _ in 0..20 {
        hogs.push(TcpStream::connect(&at).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A new client waits (it is not refused, nothing is answered)...
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let url = format!("{}/health", gw.url);
    let waiting = tokio::spawn(async move {
        let r = fresh.get(url).send().await.unwrap();
        (r.status().as_u16(), Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!waiting.is_finished(), "served past a full cap");

    // ... and is served as soon as some connections go.
    let freed = Instant::now();
    hogs.truncate(15);
    let (status, served_at) = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("served once connections closed")
        .unwrap();
    assert_eq!(status, 200);
    assert!(
        served_at - freed < Duration::from_secs(3),
        "{:?}",
        served_at - freed
    );
    drop(hogs);
    for _ in 0..20 {
        let (status, _) = gw.get("/health").await;
        assert_eq!(status, 200);
    }
    assert!(metric(&gw, "surge_gateway_connection_cap_waits_total").await >= 1.0);
    let log = std::fs::read_to_string(fx.logs.join("gateway.log")).unwrap();
    assert_eq!(log.matches("connection cap reached").count(), 1, "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_error_is_json_with_a_status_the_document_lists() {
    let _broker = BROKER.read().await;
    let fx = Fixture::new("gw-json").await;
    let gw = spawn_gateway(&fx, &[("SURGE_GATEWAY__MAX_BODY_BYTES", "1024")]).await;
    let (_, doc) = gw.get("/openapi.json").await;
    let json_ct = ("content-type", "application/json");
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let admin = ("authorization", bearer.as_str());
    let big_header = "a".repeat(20_000);
    let long = "x".repeat(129);
    let accented = "é".repeat(128);
    let create = "/admin/coupons";
    // (what, method, path, the route template if the method is served there,
    //  headers, body, status, field)
    type Case<'a> = (
        &'a str,
        &'a str,
        String,
        Option<&'a str>,
        Vec<(&'a str, &'a str)>,
        String,
        u16,
        Option<&'a str>,
    );
    let cases: Vec<Case> = vec![
        (
            "unknown route",
            "GET",
            "/nope".into(),
            None,
            vec![],
            String::new(),
            404,
            None,
        ),
        (
            "unknown route, POST",
            "POST",
            "/coupons".into(),
            None,
            vec![json_ct],
            "{}".into(),
            404,
            None,
        ),
        (
            "wrong method",
            "DELETE",
            "/health".into(),
            None,
            vec![],
            String::new(),
            405,
            None,
        ),
        (
            "wrong method on issue",
            "GET",
            "/coupons/c1/issue".into(),
            None,
            vec![],
            String::new(),
            405,
            None,
        ),
        (
            "wrong method on admin",
            "GET",
            create.into(),
            None,
            vec![admin],
            String::new(),
            405,
            None,
        ),
        (
            "head too large",
            "GET",
            "/health".into(),
            Some("/health"),
            vec![("x-big", big_header.as_str())],
            String::new(),
            431,
            None,
        ),
        (
            "invalid UTF-8 coupon id",
            "GET",
            "/coupons/%FF".into(),
            Some("/coupons/{couponId}"),
            vec![],
            String::new(),
            400,
            Some("couponId"),
        ),
        (
            "invalid UTF-8 request id",
            "GET",
            "/coupon-requests/a%C3".into(),
            Some("/coupon-requests/{requestId}"),
            vec![],
            String::new(),
            400,
            Some("requestId"),
        ),
        (
            "invalid UTF-8 on issue",
            "POST",
            "/coupons/%FF/issue".into(),
            Some("/coupons/{couponId}/issue"),
            vec![json_ct],
            "{\"userId\":\"u\"}".into(),
            400,
            Some("couponId"),
        ),
        (
            "invalid UTF-8 on admin",
            "POST",
            "/admin/coupons/%FF/stock".into(),
            Some("/admin/coupons/{couponId}/stock"),
            vec![json_ct, admin],
            "{\"delta\":1}".into(),
            400,
            Some("couponId"),
        ),
        (
            "129-character id on a read",
            "GET",
            format!("/coupons/{long}"),
            Some("/coupons/{couponId}"),
            vec![],
            String::new(),
            400,
            Some("couponId"),
        ),
        (
            "129 characters on a write",
            "POST",
            format!("/coupons/{}/issue", "é".repeat(129)),
            Some("/coupons/{couponId}/issue"),
            vec![json_ct],
            "{\"userId\":\"u\"}".into(),
            400,
            Some("couponId"),
        ),
        (
            "array body",
            "POST",
            "/coupons/c1/issue".into(),
            Some("/coupons/{couponId}/issue"),
            vec![json_ct],
            "[\"u1\"]".into(),
            400,
            None,
        ),
        (
            "string body",
            "POST",
            "/coupons/c1/issue".into(),
            Some("/coupons/{couponId}/issue"),
            vec![json_ct],
            "\"u1\"".into(),
            400,
            None,
        ),
        (
            "null body",
            "POST",
            "/coupons/c1/issue".into(),
            Some("/coupons/{couponId}/issue"),
            vec![json_ct],
            "null".into(),
            400,
            None,
        ),
        (
            "malformed JSON",
            "POST",
            "/coupons/c1/issue".into(),
            Some("/coupons/{couponId}/issue"),
            vec![json_ct],
            "{\"userId\":".into(),
            400,
            None,
        ),
        (
            "null userId",
            "POST",
            "/coupons/c1/issue".into(),
            Some("/coupons/{couponId}/issue"),
            vec![json_ct],
            "{\"userId\":null}".into(),
            400,
            Some("userId"),
        ),
        (
            "null activeFrom",
            "POST",
            create.into(),
            Some(create),
            vec![json_ct, admin],
            "{\"couponId\":\"c\",\"stock\":1,\"activeFrom\":null}".into(),
            400,
            Some("activeFrom"),
        ),
        (
            "null reason",
            "POST",
            "/admin/coupons/c/stock".into(),
            Some("/admin/coupons/{couponId}/stock"),
            vec![json_ct, admin],
            "{\"delta\":1,\"reason\":null}".into(),
            400,
            Some("reason"),
        ),
        (
            "year 0000",
            "POST",
            create.into(),
            Some(create),
            vec![json_ct, admin],
            "{\"couponId\":\"c\",\"stock\":1,\"activeFrom\":\"0000-01-01T00:00:00Z\"}".into(),
            400,
            Some("activeFrom"),
        ),
        (
            "year 0 in UTC",
            "POST",
            create.into(),
            Some(create),
            vec![json_ct, admin],
            "{\"couponId\":\"c\",\"stock\":1,\"activeUntil\":\"0001-01-01T00:30:00+01:00\"}".into(),
            400,
            Some("activeUntil"),
        ),
        (
            "year 10000 in UTC",
            "POST",
            create.into(),
            Some(create),
            vec![json_ct, admin],
            "{\"couponId\":\"c\",\"stock\":1,\"activeUntil\":\"9999-12-31T23:30:00-01:00\"}".into(),
            400,
            Some("activeUntil"),
        ),
        (
            "body over the limit",
            "POST",
            "/coupons/c1/issue".into(),
            Some("/coupons/{couponId}/issue"),
            vec![json_ct],
            format!("{{\"userId\":\"{}\"}}", "a".repeat(2_000)),
            413,
            None,
        ),
        (
            "wrong content type",
            "POST",
            "/coupons/c1/issue".into(),
            Some("/coupons/{couponId}/issue"),
            vec![("content-type", "text/plain")],
            "{\"userId\":\"u\"}".into(),
            415,
            None,
        ),
        (
            "admin without a token",
            "POST",
            create.into(),
            Some(create),
            vec![json_ct],
            "{\"couponId\":\"c\",\"stock\":1}".into(),
            401,
            None,
        ),
        (
            "admin with a wrong token",
            "POST",
            create.into(),
            Some(create),
            vec![json_ct, ("authorization", "Bearer nope")],
            "{\"couponId\":\"c\",\"stock\":1}".into(),
            403,
            None,
        ),
        (
            "admin with another scheme",
            "POST",
            create.into(),
            Some(create),
            vec![json_ct, ("authorization", "Basic Zm9vOmJhcg==")],
            "{\"couponId\":\"c\",\"stock\":1}".into(),
            401,
            None,
        ),
        (
            "two Idempotency-Keys",
            "POST",
            "/coupons/c1/issue".into(),
            Some("/coupons/{couponId}/issue"),
            vec![
                json_ct,
                ("idempotency-key", "two-a"),
                ("idempotency-key", "two-b"),
            ],
            "{\"userId\":\"u\"}".into(),
            400,
            Some("Idempotency-Key"),
        ),
    ];
    let documented = |template: Option<&str>, method: &str, status: u16| -> bool {
        match template {
            Some(t) => doc["paths"][t][method.to_lowercase()]["responses"]
                .get(status.to_string())
                .is_some(),
            // Not an operation's answer: every operation's `default` says it.
            None => doc["paths"].as_object().unwrap().values().all(|ops| {
                ops.as_object().unwrap().values().all(|op| {
                    op["responses"]["default"]["description"]
                        .as_str()
                        .is_some_and(|d| d.contains(&status.to_string()))
                })
            }),
        }
    };
    let mut failures = Vec::new();
    for (what, method, path, template, headers, body, status, field) in &cases {
        let mut r = gw
            .http
            .request(method.parse().unwrap(), format!("{}{path}", gw.url));
        if !body.is_empty() {
            r = r.body(body.clone());
        }
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        let response = r.send().await.unwrap();
        let got = response.status().as_u16();
        let ct = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let allow = response.headers().get("allow").is_some();
        let text = response.text().await.unwrap();
        let problem = match error_body(&text) {
            _ if got != *status => Some(format!("got {got}")),
            _ if ct != "application/json" => Some(format!("content-type {ct:?}")),
            Err(e) => Some(e),
            Ok(v) if v["field"].as_str() != *field => Some("wrong field".into()),
            Ok(_) if got == 405 && !allow => Some("no Allow header".into()),
            Ok(_) if !documented(*template, method, got) => Some("not in the document".into()),
            Ok(_) => None,
        };
        if let Some(p) = problem {
            failures.push(format!("{what}: want {status} {field:?}: {p}: {text}"));
        }
    }

    // What hyper refuses before any route sees it is JSON too.
    let at = address(&gw);
    let raw: [(&str, &[u8], u16); 3] = [
        (
            "garbage request line",
            b"GARBAGE\x01 / HTTP/1.1\r\n\r\n",
            400,
        ),
        (
            "raw non-ASCII byte in the path",
            b"GET /coupons/\xff HTTP/1.1\r\nHost: gw\r\n\r\n",
            400,
        ),
        ("150 headers", &[], 431),
    ];
    let many: Vec<u8> = {
        let mut h = b"GET /health HTTP/1.1\r\nHost: gw\r\n".to_vec();
        for i in 0..150 {
            h.extend_from_slice(format!("x-h{i}: 1\r\n").as_bytes());
        }
        h.extend_from_slice(b"\r\n");
        h
    };
    for (what, bytes, status) in raw {
        let mut s = TcpStream::connect(&at).await.unwrap();
        s.write_all(if bytes.is_empty() { &many } else { bytes })
            .await
            .unwrap();
        let (answer, _) = until_closed(s, Instant::now(), Duration::from_secs(10)).await;
        let (got, head, body) = split_raw(&answer);
        let template = (status == 431).then_some("/health");
        if got != Some(status)
            || !head.contains("content-type: application/json")
            || error_body(&body).is_err()
            || !documented(template, "get", status)
        {
            failures.push(format!("{what}: want {status}: {answer}"));
        }
    }
    // A Content-Length over the limit is 413 at once, the body unread: not
    // 408 after body_read_timeout (10 s) for a body that never comes.
    for declared in ["20000", "99999999999"] {
        let mut s = TcpStream::connect(&at).await.unwrap();
        let head = format!(
            "POST /coupons/c1/issue HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: {declared}\r\n\r\n"
        );
        s.write_all(head.as_bytes()).await.unwrap();
        let started = Instant::now();
        let answer = one_answer(&mut s, Duration::from_secs(5)).await;
        let took = started.elapsed();
        let (got, head, body) = split_raw(&answer);
        if got != Some(413)
            || !head.contains("content-type: application/json")
            || error_body(&body).is_err()
            || took > Duration::from_secs(3)
        {
            failures.push(format!(
                "Content-Length {declared} and no body: want 413 at once, got in {took:?}: {answer}"
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");

    // 128 characters (256 bytes) is an id: JSON Schema's maxLength counts characters.
    let (status, body) = gw
        .post(
            &format!("/coupons/{accented}/issue"),
            &[],
            json!({ "userId": accented }),
        )
        .await;
    assert_eq!(status, 202, "{body}");

    // The Bearer scheme is case-insensitive.
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let auth = format!("{scheme} {ADMIN_TOKEN}");
        let (status, body) = gw
            .post(
                create,
                &[("authorization", auth.as_str())],
                json!({ "couponId": format!("{}{scheme}", fx.prefix), "stock": 1, "activeFrom": "0001-01-01T00:00:00Z", "activeUntil": "9999-12-31T23:59:59.999Z" }),
            )
            .await;
        assert_eq!(status, 202, "{scheme}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_admin_tokens_are_throttled_per_address_and_the_right_one_still_works() {
    let _broker = BROKER.read().await;
    let fx = Fixture::new("gw-throttle").await;
    let gw = spawn_gateway(
        &fx,
        &[
            ("SURGE_GATEWAY__ADMIN_AUTH_BURST", "5"),
            ("SURGE_GATEWAY__ADMIN_AUTH_REFILL", "2s"),
        ],
    )
    .await;
    let from = |ip: &str| {
        reqwest::Client::builder()
            .local_address(ip.parse::<IpAddr>().unwrap())
            .build()
            .unwrap()
    };
    let create = |client: &reqwest::Client, token: String, coupon: String| {
        let r = client
            .post(format!("{}/admin/coupons", gw.url))
            .header("authorization", token)
            .json(&json!({ "couponId": coupon, "stock": 1 }));
        async move {
            let r = r.send().await.unwrap();
            let status = r.status().as_u16();
            let retry = r
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
            let ct = r.headers().get("content-type").cloned();
            let text = r.text().await.unwrap();
            if status >= 400 {
                assert_eq!(
                    ct.as_ref().and_then(|v| v.to_str().ok()),
                    Some("application/json")
                );
                error_body(&text).unwrap();
            }
            (status, retry)
        }
    };

    // Another scheme is no guess: 401 however often, and nothing used up
    // (the burst is 5; the failures counter is checked below).
    let guesser = from("127.0.0.1");
    for _ in 0..20 {
        let (status, _) = create(&guesser, "Basic Zm9vOmJhcg==".into(), "c".into()).await;
        assert_eq!(status, 401, "another scheme");
    }

    // 2,000 guesses from one address, 50 at a time.
    let started = Instant::now();
    let answers: Vec<(u16, Option<u64>)> = futures::stream::iter(0..2_000)
        .map(|i| create(&guesser, format!("Bearer guess-{i}"), "c".into()))
        .buffer_unordered(50)
        .collect()
        .await;
    let took = started.elapsed();
    let forbidden = answers.iter().filter(|(s, _)| *s == 403).count();
    let throttled: Vec<u64> = answers
        .iter()
        .filter(|(s, _)| *s == 429)
        .map(|(_, retry)| retry.expect("429 has Retry-After"))
        .collect();
    assert_eq!(forbidden + throttled.len(), 2_000, "only 403 and 429");
    // A burst of 5, then one per 2 s.
    let allowed = 5 + (took.as_secs_f64() / 2.0).ceil() as usize + 1;
    assert!(
        forbidden <= allowed,
        "{forbidden} wrong tokens compared in {took:?}"
    );
    assert!(throttled.len() >= 1_900, "{}", throttled.len());
    assert!(
        throttled.iter().all(|s| (1..=2).contains(s)),
        "Retry-After within one refill"
    );

    // Throttled means throttled: even the right token is refused there...
    let right = format!("Bearer {ADMIN_TOKEN}");
    let (status, retry) = create(&guesser, right.clone(), format!("{}a", fx.prefix)).await;
    assert_eq!(status, 429);
    // ... not from another address, where successes are never throttled.
    let admin = from("127.0.0.2");
    for i in 0..20 {
        let (status, _) = create(&admin, right.clone(), format!("{}b{i}", fx.prefix)).await;
        assert_eq!(status, 202);
    }
    // And the guesser's address may try again once the bucket refilled.
    tokio::time::sleep(Duration::from_secs(retry.unwrap()) + Duration::from_millis(200)).await;
    let (status, _) = create(&guesser, right.clone(), format!("{}c", fx.prefix)).await;
    assert_eq!(status, 202);

    assert_eq!(
        metric(&gw, "surge_gateway_admin_auth_failures_total").await,
        forbidden as f64
    );
    assert!(metric(&gw, "surge_gateway_admin_auth_throttled_total").await >= 1_901.0);
    let log = std::fs::read_to_string(fx.logs.join("gateway.log")).unwrap();
    assert_eq!(
        log.matches("too many wrong admin tokens").count(),
        1,
        "one episode, one line:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kafka_outage_is_logged_once_and_its_end_once_with_a_gauge() {
    let _broker = BROKER.write().await;
    let fx = Fixture::new("gw-outage").await;
    let gw = spawn_gateway(&fx, &[("SURGE_GATEWAY__PRODUCE_TIMEOUT", "2s")]).await;
    let gauge = "surge_gateway_kafka_reachable";
    assert_eq!(metric(&gw, gauge).await, 1.0);
    let issue = format!("/coupons/{}c/issue", fx.prefix);

    let _restart = BrokerRestart;
    stack(&["kill", "kafka"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(&gw, gauge).await != 0.0 {
        assert!(
            Instant::now() < deadline,
            "the gauge never showed the outage"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Requests keep failing during the outage, and librdkafka keeps retrying.
    let until = Instant::now() + Duration::from_secs(8);
    let mut refused = 0;
    while Instant::now() < until {
        let answers: Vec<u16> = futures::stream::iter(0..10)
            .map(|u| {
                let (gw, issue) = (&gw, &issue);
                async move {
                    gw.post(issue, &[], json!({ "userId": format!("u{u}") }))
                        .await
                        .0
                }
            })
            .buffer_unordered(10)
            .collect()
            .await;
        assert!(answers.iter().all(|s| *s == 503), "{answers:?}");
        refused += answers.len();
    }
    stack(&["up", "kafka"]);
    let deadline = Instant::now() + Duration::from_secs(90);
    while metric(&gw, gauge).await != 1.0 {
        assert!(
            Instant::now() < deadline,
            "the gauge never showed the broker back"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while gw.post(&issue, &[], json!({ "userId": "after" })).await.0 != 202 {
        assert!(Instant::now() < deadline, "not accepting after the outage");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // librdkafka re-learns leaders and its producer id just after: still quiet.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let log = std::fs::read_to_string(fx.logs.join("gateway.log")).unwrap();
    let noisy: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" ERROR ") || l.contains(" WARN "))
        .collect();
    assert_eq!(
        noisy.len(),
        1,
        "{refused} refused requests; one WARN line for the outage:\n{}",
        noisy.join("\n")
    );
    assert!(noisy[0].contains("Kafka unreachable"), "{}", noisy[0]);
    assert_eq!(log.matches("Kafka reachable again").count(), 1, "{log}");
}
