//! The OpenAPI document and the server agree: schemathesis (from PyPI)
//! reads /openapi.json from the live gateway and throws generated requests
//! at every operation — schema-valid and schema-violating bodies, path ids,
//! headers, missing and wrong auth, unsupported methods, and stateful
//! sequences along the links it infers (create a product, read it back) —
//! with every check on: no 5xx, every status and content type documented,
//! every body and header matching its schema, valid data accepted, invalid
//! data rejected. The gateway runs in front of the real pipelines (coupon,
//! inventory, order) and both sinks, so reads answer 200 with real records
//! as well as 404, and every 202 is a real record on Kafka.
//!
//! The executable is `SURGE_SCHEMATHESIS` (scripts/test exports what
//! scripts/lib/ensure-schemathesis prints). Examples per operation:
//! `SURGE_SCHEMATHESIS_EXAMPLES` (default 50); seed:
//! `SURGE_SCHEMATHESIS_SEED` (default 1), so a failure in CI reproduces with
//! the same numbers. A failing run prints schemathesis's report, with a
//! curl line per failure; the files of the run are kept under
//! target/test-logs/<prefix>/.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::coupon::Fixture;
use common::gateway::{spawn_gateway, ADMIN_TOKEN};

/// Where schemathesis is; never a silent skip when it is not there.
fn schemathesis() -> PathBuf {
    let Some(path) = std::env::var_os("SURGE_SCHEMATHESIS") else {
        panic!(
            "SURGE_SCHEMATHESIS is not set: run scripts/lib/ensure-schemathesis (it installs \
             schemathesis from PyPI and prints the executable's path) and export \
             SURGE_SCHEMATHESIS=<that path>, or run scripts/test, which does both"
        );
    };
    let path = PathBuf::from(path);
    assert!(
        path.is_file(),
        "SURGE_SCHEMATHESIS={} does not exist: run scripts/lib/ensure-schemathesis",
        path.display()
    );
    path
}

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a whole number")),
        Err(_) => default,
    }
}

/// What schemathesis is told beyond its defaults, and why. Each entry is a
/// rule of the API that JSON Schema cannot state, allowed only where it
/// applies; everything else is held to the document exactly.
const CONFIG: &str = r#"
# positive_data_acceptance: an Idempotency-Key names one request, so a key
# reused for a different request is refused 422, as the document says on
# every POST (all of them take the header). Schemathesis draws keys from a
# small space ("0", "00", ...) and reuses them across bodies; a schema
# cannot say "unique per request". Only 422 is added to the defaults.
[[operations]]
include-method = "POST"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx", "422"]
"#;

/// The one cross-field rule: a coupon's activeUntil must be after its
/// activeFrom (400 naming activeUntil). JSON Schema cannot compare two
/// fields, so a schema-valid body can break it; this drops exactly that
/// rejection (the body really breaks the rule, and the answer is exactly
/// that 400) and nothing else.
const HOOKS: &str = r#"
import datetime
import schemathesis


def _instant(text):
    return datetime.datetime.fromisoformat(text.upper().replace("Z", "+00:00"))


@schemathesis.hook
def filter_failure(context, failure, case, response):
    if failure.code != "ST202" or case.operation.label != "POST /admin/coupons":
        return True
    body = case.body
    if response.status_code != 400 or not isinstance(body, dict):
        return True
    try:
        error = response.json()
        broken = _instant(body["activeUntil"]) <= _instant(body["activeFrom"])
    except Exception:
        return True
    expected = {"error": "activeUntil must be after activeFrom", "field": "activeUntil"}
    return not (broken and error == expected)
"#;

/// The tables the gateway reads (all of connectors/postgres/migrations).
const TABLES: &[&str] = &[
    "coupons",
    "coupon_decisions",
    "orders",
    "order_lines",
    "order_status_history",
    "product_stock",
];

#[tokio::test(flavor = "multi_thread")]
async fn the_gateway_does_what_its_openapi_document_says() {
    let st = schemathesis();
    let examples = env_number("SURGE_SCHEMATHESIS_EXAMPLES", 50);
    let seed = env_number("SURGE_SCHEMATHESIS_SEED", 1);

    // A database of the test's own: reads fall back to PostgreSQL, whose
    // tables the sink creates; migrating the shared database from a test
    // would pin whatever migrations this checkout holds.
    let pg_url = common::fresh_database(&common::settings().postgres.url).await;
    let database = pg_url.rsplit_once('/').unwrap().1.to_string();
    let fx = Fixture::with_env("gw-st", &[("SURGE_POSTGRES__URL", pg_url.as_str())]).await;
    let pg_sink = fx.spawn_sink("postgres", &[]);
    wait_for_tables(&pg_url).await;
    let redis_sink = fx.spawn_sink("redis", &[]);
    let coupon = fx.spawn_pipeline("0", &[]);
    let inventory = common::orders::spawn(&fx, "inventory");
    let order = common::orders::spawn(&fx, "order");
    let gw = spawn_gateway(&fx, &[]).await;
    // Every operation of the document but the document's own (schemathesis
    // does not test where it read the schema from).
    let (_, doc) = gw.get("/openapi.json").await;
    let operations: usize = doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .filter(|(path, _)| *path != "/openapi.json")
        .map(|(_, ops)| ops.as_object().expect("operations").len())
        .sum();

    let dir = fx.logs.join("schemathesis");
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("schemathesis.toml");
    let hooks = dir.join("hooks.py");
    std::fs::write(&config, CONFIG).unwrap();
    std::fs::write(&hooks, HOOKS).unwrap();
    let auth = format!("Authorization: Bearer {ADMIN_TOKEN}");
    let args: Vec<String> = vec![
        "--config-file".into(),
        config.display().to_string(),
        "run".into(),
        format!("{}/openapi.json", gw.url),
        "--checks".into(),
        "all".into(),
        "--header".into(),
        auth,
        "--max-examples".into(),
        examples.to_string(),
        "--seed".into(),
        seed.to_string(),
        // One worker: requests in one order, so a seed is one run (the
        // server's state, e.g. which keys are taken, depends on the order).
        "--workers".into(),
        "1".into(),
        // No examples carried over from earlier runs: the seed alone decides.
        "--generation-database".into(),
        "none".into(),
        "--request-timeout".into(),
        "30".into(),
        "--no-color".into(),
        "--report".into(),
        "junit,ndjson".into(),
        "--report-dir".into(),
        dir.join("report").display().to_string(),
    ];
    let shown = args
        .iter()
        .map(|a| {
            if a.starts_with("Authorization:") {
                format!("'{a}'")
            } else {
                a.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    eprintln!(
        "$ SCHEMATHESIS_HOOKS={} {} {shown}",
        hooks.display(),
        st.display()
    );
    let started = Instant::now();
    let out_path = dir.join("output.txt");
    let out_file = std::fs::File::create(&out_path).unwrap();
    let mut child = Command::new(&st)
        .args(&args)
        .current_dir(&dir)
        .env("SCHEMATHESIS_HOOKS", &hooks)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::from(out_file.try_clone().unwrap()))
        .stderr(Stdio::from(out_file))
        .spawn()
        .unwrap_or_else(|e| panic!("run {}: {e}", st.display()));
    // A deadline of our own, whatever schemathesis does.
    let limit = Duration::from_secs(900);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let output = std::fs::read_to_string(&out_path).unwrap_or_default();
    eprintln!(
        "schemathesis ran {:.0} s ({examples} examples per operation, seed {seed})",
        started.elapsed().as_secs_f64()
    );

    // Everything the gateway's neighbours logged stays in fx.logs; stop them
    // before judging, so a failed assertion leaks nothing.
    drop(gw);
    drop((order, inventory, coupon, redis_sink, pg_sink));
    drop_database(&database).await;

    let Some(status) = status else {
        panic!(
            "schemathesis did not finish within {limit:?}\n{output}\n(files in {})",
            dir.display()
        );
    };
    assert!(
        status.success(),
        "schemathesis found the gateway and its document disagreeing ({status}); reproduce \
         with SURGE_SCHEMATHESIS_SEED={seed} SURGE_SCHEMATHESIS_EXAMPLES={examples} \
         (files in {}):\n{output}",
        dir.display()
    );
    // Every operation was selected and tested.
    for line in [
        format!("Selected: {operations}/{operations}"),
        format!("Tested: {operations}"),
    ] {
        assert!(output.contains(&line), "no {line:?} in:\n{output}");
    }
}

async fn wait_for_tables(url: &str) {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let tables: Vec<String> = TABLES.iter().map(|t| t.to_string()).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (found,): (i64,) = sqlx::query_as(
            "select count(*) from information_schema.tables \
             where table_schema = 'public' and table_name = any($1)",
        )
        .bind(&tables)
        .fetch_one(&pool)
        .await
        .unwrap();
        if found == TABLES.len() as i64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the postgres sink did not migrate {url}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    pool.close().await;
}

async fn drop_database(name: &str) {
    let admin = sqlx::PgPool::connect(&common::settings().postgres.url)
        .await
        .unwrap();
    sqlx::query(&format!("drop database if exists {name} with (force)"))
        .execute(&admin)
        .await
        .unwrap();
}
