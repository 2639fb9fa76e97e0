//! Every key surge keeps in Redis, named in one place. Readers (the gateway,
//! `surge verify`) use these too, so the layout cannot drift between them.

/// `<keyspace>:...`: the first segment isolates deployments sharing a Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyspace(String);

impl Keyspace {
    pub fn new(keyspace: &str) -> Self {
        Self(keyspace.to_string())
    }

    /// Hash: the coupon's stock, issued, remaining after its latest decision.
    pub fn coupon(&self, coupon_id: &str) -> String {
        format!("{}:coupon:{coupon_id}", self.0)
    }

    /// Hash: the decision of request `request_id` of coupon `coupon_id` (a
    /// request id names a request of one coupon). The coupon id's length in
    /// bytes comes first, so any two ids split back apart
    /// ([`Keyspace::request_of`]): `<ks>:request:<len>:<couponId>:<requestId>`.
    pub fn request(&self, coupon_id: &str, request_id: &str) -> String {
        format!(
            "{}:request:{}:{coupon_id}:{request_id}",
            self.0,
            coupon_id.len()
        )
    }

    /// The (coupon id, request id) of a key made by [`Keyspace::request`].
    pub fn request_of<'k>(&self, key: &'k str) -> Option<(&'k str, &'k str)> {
        let rest = self.id_of(key, "request")?;
        let (len, rest) = rest.split_once(':')?;
        let len: usize = len.parse().ok()?;
        let coupon = rest.get(..len)?;
        let request = rest.get(len..)?.strip_prefix(':')?;
        Some((coupon, request))
    }

    /// Hash: coupon id → `1` for each coupon with a decision under request
    /// id `request_id`, written once per decision; what a poll by request id
    /// alone reads first.
    pub fn request_coupons(&self, request_id: &str) -> String {
        format!("{}:request-coupons:{request_id}", self.0)
    }

    /// Hash: user id → `<offset> <OUTCOME> [<sequence>]` for one coupon.
    pub fn users(&self, coupon_id: &str) -> String {
        format!("{}:users:{coupon_id}", self.0)
    }

    /// String with a TTL: the gateway accepted request (or order) `id` and
    /// Kafka acknowledged it; written by the gateway only, best effort.
    pub fn accepted(&self, id: &str) -> String {
        format!("{}:accepted:{id}", self.0)
    }

    /// String with a TTL: what the client-given Idempotency-Key `id` was
    /// first used for (a fingerprint); written by the gateway only.
    pub fn idempotency(&self, id: &str) -> String {
        format!("{}:idempotency:{id}", self.0)
    }

    /// Hash: an order's state after its latest transition.
    pub fn order(&self, order_id: &str) -> String {
        format!("{}:order:{order_id}", self.0)
    }

    /// Hash: `lines` → the order's lines as JSON, written once.
    pub fn order_lines(&self, order_id: &str) -> String {
        format!("{}:order-lines:{order_id}", self.0)
    }

    /// Hash: `<partition>:<offset>` → one order-status record as JSON.
    pub fn order_history(&self, order_id: &str) -> String {
        format!("{}:order-history:{order_id}", self.0)
    }

    /// Hash: a product's available, reserved, sold and created units.
    pub fn product(&self, product_id: &str) -> String {
        format!("{}:product:{product_id}", self.0)
    }

    /// Hash: partition → next offset to consume, for one topic.
    pub fn offsets(&self, topic: &str) -> String {
        format!("{}:sink:offsets:{topic}", self.0)
    }

    /// A SCAN pattern for every key of this keyspace.
    pub fn all_pattern(&self) -> String {
        format!("{}:*", self.0)
    }

    /// A SCAN pattern for every request key.
    pub fn request_pattern(&self) -> String {
        format!("{}:request:*", self.0)
    }

    /// A SCAN pattern for every coupon key.
    pub fn coupon_pattern(&self) -> String {
        format!("{}:coupon:*", self.0)
    }

    /// A SCAN pattern for every order key.
    pub fn order_pattern(&self) -> String {
        format!("{}:order:*", self.0)
    }

    /// A SCAN pattern for every product key.
    pub fn product_pattern(&self) -> String {
        format!("{}:product:*", self.0)
    }

    /// A SCAN pattern for every users key.
    pub fn users_pattern(&self) -> String {
        format!("{}:users:*", self.0)
    }

    /// The id at the end of a key made by one of the above.
    pub fn id_of<'k>(&self, key: &'k str, kind: &str) -> Option<&'k str> {
        key.strip_prefix(&self.0)?
            .strip_prefix(':')?
            .strip_prefix(kind)?
            .strip_prefix(':')
    }
}

/// A user's status for a coupon as stored: `<offset> <OUTCOME> [<sequence>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserStatus {
    pub offset: i64,
    pub outcome: String,
    pub sequence: Option<i64>,
}

impl UserStatus {
    pub fn encode(&self) -> String {
        match self.sequence {
            Some(s) => format!("{} {} {s}", self.offset, self.outcome),
            None => format!("{} {}", self.offset, self.outcome),
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = s.split(' ');
        let offset = parts.next()?.parse().ok()?;
        let outcome = parts.next()?.to_string();
        let sequence = match parts.next() {
            Some(p) => Some(p.parse().ok()?),
            None => None,
        };
        Some(Self {
            offset,
            outcome,
            sequence,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_ids_round_trip() {
        let ks = Keyspace::new("t1-surge");
        assert_eq!(ks.coupon("c:1"), "t1-surge:coupon:c:1");
        assert_eq!(ks.id_of(&ks.coupon("c:1"), "coupon"), Some("c:1"));
        assert_eq!(ks.id_of(&ks.request("c", "r"), "coupon"), None);
        for (coupon, request) in [("c", "r"), ("c:1", "r:2"), ("", ":"), ("é:9:", "9:é")] {
            let key = ks.request(coupon, request);
            assert_eq!(ks.request_of(&key), Some((coupon, request)), "{key}");
        }
        assert_ne!(ks.request("a:1", "b"), ks.request("a", "1:b"));
        assert_eq!(ks.request_of("t1-surge:request:old-layout"), None);
        assert_eq!(ks.request_of("t1-surge:request:9:c:r"), None);
        assert_eq!(ks.id_of("other:coupon:x", "coupon"), None);
    }

    #[test]
    fn user_status_round_trips() {
        for s in ["12 ISSUED 3", "7 SOLD_OUT"] {
            assert_eq!(UserStatus::parse(s).unwrap().encode(), s);
        }
        assert_eq!(UserStatus::parse("x ISSUED"), None);
        assert_eq!(UserStatus::parse("1 ISSUED y"), None);
    }
}
