//! Target `gateway`: over HTTP, as upstream services that speak HTTP would.
//! Coupons are created through the admin API first; then issue requests go
//! out with `concurrency` in flight, each request id as its Idempotency-Key,
//! so an upstream retry is the same request. A 503 (Kafka unavailable) is
//! retried with the same key until accepted, as a well-behaved client would.

use std::time::Duration;

use anyhow::{bail, Context};
use futures::StreamExt;
use surge_coupon::scenario::Scenario;
use surge_schemas::coupon::{CouponAction, CouponCommand};

use super::traffic::{Pace, Progress};

pub struct Gateway {
    pub url: String,
    pub admin_token: Option<String>,
    pub concurrency: usize,
}

/// What the gateway made of the traffic.
#[derive(Debug, Default)]
pub struct Sent {
    pub accepted: usize,
    /// 503s that were retried (each eventually accepted).
    pub retried_unavailable: usize,
}

pub async fn send(scenario: &Scenario, rate: u64, gw: &Gateway) -> anyhow::Result<Sent> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(gw.concurrency)
        .build()?;
    let base = gw.url.trim_end_matches('/');
    let total = scenario.coupons + scenario.requests;
    let mut progress = Progress::new(total);
    let mut sent = Sent::default();
    let mut commands = scenario.commands().peekable();

    // Creates first, each acknowledged before any request for it is sent.
    while let Some(c) = commands.next_if(|c| matches!(c.command, CouponAction::Create { .. })) {
        let retries = post(&client, base, &c, gw.admin_token.as_deref()).await?;
        sent.accepted += 1;
        sent.retried_unavailable += retries;
    }
    let pace = Pace::new(rate);
    let mut in_flight = futures::stream::iter(commands.enumerate())
        .map(|(i, c)| {
            let client = &client;
            let pace = &pace;
            async move {
                pace.slot(i).await;
                post(client, base, &c, None).await
            }
        })
        .buffer_unordered(gw.concurrency.max(1));
    while let Some(result) = in_flight.next().await {
        sent.retried_unavailable += result?;
        sent.accepted += 1;
        progress.tick(sent.accepted, "accepted (202)");
    }
    progress.tick(sent.accepted, "accepted (202)");
    Ok(sent)
}

/// POSTs one command until it is accepted; returns how many 503s it took.
pub async fn post(
    client: &reqwest::Client,
    base: &str,
    c: &CouponCommand,
    admin_token: Option<&str>,
) -> anyhow::Result<usize> {
    let (url, body) = match &c.command {
        CouponAction::Issue { user_id } => (
            format!("{base}/coupons/{}/issue", c.coupon_id),
            serde_json::json!({ "userId": user_id }),
        ),
        CouponAction::Create {
            stock, discount, ..
        } => {
            let mut body = serde_json::json!({ "couponId": c.coupon_id, "stock": stock });
            if let Some(d) = discount {
                let mut discount =
                    serde_json::json!({ "kind": d.kind.symbol(), "value": d.value.to_string() });
                if let Some(cap) = d.cap {
                    discount["cap"] = cap.to_string().into();
                }
                body["discount"] = discount;
            }
            (format!("{base}/admin/coupons"), body)
        }
        CouponAction::AdjustStock { delta, .. } => (
            format!("{base}/admin/coupons/{}/stock", c.coupon_id),
            serde_json::json!({ "delta": delta }),
        ),
        CouponAction::Redeem { .. } | CouponAction::Release { .. } => {
            anyhow::bail!("the gateway has no route for the order saga's redeem/release commands")
        }
    };
    post_until_accepted(client, &url, &c.request_id, &body, admin_token).await
}

/// POSTs `body` under Idempotency-Key `key` until it is accepted (202);
/// returns how many 503s (or refused connections) it took.
pub async fn post_until_accepted(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    body: &serde_json::Value,
    admin_token: Option<&str>,
) -> anyhow::Result<usize> {
    let mut unavailable = 0usize;
    loop {
        let mut request = client.post(url).header("Idempotency-Key", key).json(body);
        if let Some(token) = admin_token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await;
        match response {
            Ok(r) if r.status() == reqwest::StatusCode::ACCEPTED => return Ok(unavailable),
            Ok(r) if r.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE => {}
            Ok(r) => {
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                bail!("{url}: {status}: {text}");
            }
            Err(e) if e.is_connect() || e.is_timeout() => {}
            Err(e) => return Err(e).with_context(|| format!("POST {url}")),
        }
        unavailable += 1;
        if unavailable > 600 {
            bail!("{url}: still unavailable after {unavailable} tries");
        }
        tokio::time::sleep(Duration::from_millis(200 * (unavailable as u64).min(5))).await;
    }
}
