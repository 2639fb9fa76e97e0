//! The coupon state of one coupon-issue partition and how it changes.
//!
//! Kept compact because a flash sale can issue a million units on one
//! partition: a user or a request id is held as a 128-bit hash (xxh3-128,
//! stable across versions and machines; a collision among 10^9 ids has a
//! probability around 10^-21), never as its string.
//!
//! Changelog layout (compacted topic, one key per live fact):
//! - `c` + couponId → terms: stock, active window (last value wins);
//! - `q` + request identity (request id within its coupon, see
//!   [`request_identity`]) → the request's fingerprint (what it asked for,
//!   so a restored book still tells a retry from a reused id), preceded,
//!   for one that was ISSUED, by user hash + sequence + couponId (rebuilds
//!   the holders); see `request_value` for the exact bytes and the layouts
//!   written before fingerprints existed, which still restore; `r` + bare
//!   request hash is the same entry as versions before coupon-scoped ids
//!   wrote it (still restored, see `KEY_REQUEST_UNSCOPED`);
//! - `u` + order hash + couponId → the user hash whose unit that order
//!   uses (a redemption); a tombstone when the order released it;
//! - `t` → the partition's stream clock (see [`Bucket`]): the latest
//!   minute a record's log timestamp reached, and the first one.
//!
//! The dedupe window (issue 14). A request that issued a unit is remembered
//! forever: its entry carries the holder, and there are at most `stock` of
//! them; so is one that set a coupon's terms (CREATED, ADJUSTED: few, and a
//! late retry of an AdjustStock must not apply its delta twice). Every
//! other decided request (SOLD_OUT, DUPLICATE, NOT_ACTIVE, UNKNOWN_COUPON,
//! INVALID, the saga's redeem and release) is remembered for the dedupe window
//! of stream time (the input topic's retention), then forgotten: removed
//! from the book and tombstoned in the changelog, so state and restore time
//! stay flat as history grows. Expiry follows the log, never the wall
//! clock: the stream clock is the latest record timestamp seen on the
//! partition, in whole minutes ([`BUCKET_MS`]). Expiry runs in the
//! processor's tick (at most `EXPIRE_PER_TICK` entries a tick) and a little
//! on every record; its tombstones ride the transaction like any change.
//! Request values of this version: 17 bytes (decision time, fingerprint,
//! 0xFE; see [`stamped_request_value`]) for what expires or is kept for
//! good without a holder, the 0xFF layout of [`request_value`] for ISSUED.
//! Entries restored from a layout with no time count as decided when the
//! clock first moved after the upgrade (see [`UNSTAMPED`]). Older versions
//! cannot read this version's changelog (no downgrade).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::num::{NonZeroU32, NonZeroU64};

use surge_engine::canonical::Canonical;
use surge_schemas::coupon::{CouponAction, CouponCommand, Discount, DiscountKind};
use surge_schemas::Money;

use surge_engine::{ChangelogRecord, PartitionState};

/// 128-bit identity hash of a user or request id.
pub fn id_hash(id: &str) -> u128 {
    xxhash_rust::xxh3::xxh3_128(id.as_bytes())
}

/// The identity of a request: its request id within its coupon (issue 14).
/// A request id names one request of one coupon, because only the
/// coupon's partition can decide it: two partitions cannot tell each other
/// that an id is taken without a coordination step on every request. So
/// `r1` sent for `c1` and for `c2` are two requests, decided on their own
/// coupons' books wherever those live, and a second `r1` for `c1` with
/// other content is a reused id (dead-lettered).
///
/// The request hash XOR a seeded hash of the coupon: computable from an
/// entry written under the bare request hash plus its coupon (see
/// [`KEY_REQUEST_UNSCOPED`]), and the seed keeps (a, b) and (b, a) apart.
pub fn request_identity(coupon_id: &str, request_id: &str) -> u128 {
    scoped(id_hash(request_id), coupon_id)
}

fn scoped(request: u128, coupon_id: &str) -> u128 {
    const COUPON_SEED: u64 = 0x5375_7267_6543_6F75; // "SurgeCou"
    request ^ xxhash_rust::xxh3::xxh3_128_with_seed(coupon_id.as_bytes(), COUPON_SEED)
}

/// What a request asked for: xxh3-64 over a canonical encoding of its
/// content ([`fingerprint`]). Never 0, so an unknown fingerprint costs no
/// extra byte in the book (`Option<Fingerprint>` is 8 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(NonZeroU64);

impl Fingerprint {
    /// A hash as a fingerprint (0, one value in 2^64, becomes 1).
    pub fn from_hash(hash: u64) -> Self {
        Self(NonZeroU64::new(hash).unwrap_or(NonZeroU64::MIN))
    }
    pub fn get(self) -> u64 {
        self.0.get()
    }
}

/// The fingerprint of `cmd`: its coupon, its action and every field of the
/// action (user, order, stock, active window, discount, delta and its
/// reason) — everything but the request id (the key it is kept under) and
/// `requested_at` (an upstream retry carries a new one).
///
/// Fingerprints are persisted in the changelog: this encoding is frozen. A
/// change to it would make every retry of a request decided before the
/// upgrade look like a reused id. A field added to a command later must be
/// left out when it has its default value, so that old fingerprints hold.
///
/// Encoding: a string is its length (u64 BE) then its bytes, a number i64
/// BE, an optional value a byte 0 (none) or 1 followed by the value; then
/// coupon id, one tag byte per action and the action's fields in order.
/// Hashed in a streaming hasher on the stack: no allocation.
pub fn fingerprint(cmd: &CouponCommand) -> Fingerprint {
    let mut c = Canonical::new();
    c.str(&cmd.coupon_id);
    match &cmd.command {
        CouponAction::Issue { user_id } => {
            c.tag(b'I');
            c.str(user_id);
        }
        CouponAction::Create {
            stock,
            active_from,
            active_until,
            discount,
        } => {
            c.tag(b'C');
            c.int(*stock);
            c.opt(active_from.map(|t| t.timestamp_millis()), Canonical::int);
            c.opt(active_until.map(|t| t.timestamp_millis()), Canonical::int);
            c.opt(discount.as_ref(), |c, d| {
                c.tag(match d.kind {
                    DiscountKind::Fixed => b'F',
                    DiscountKind::Percent => b'P',
                });
                c.int(d.value.0);
                c.opt(d.cap.map(|m| m.0), Canonical::int);
            });
        }
        CouponAction::AdjustStock { delta, reason } => {
            c.tag(b'A');
            c.int(*delta);
            c.opt(reason.as_deref(), Canonical::str);
        }
        CouponAction::Redeem { order_id, user_id } => {
            c.tag(b'R');
            c.str(order_id);
            c.str(user_id);
        }
        CouponAction::Release { order_id } => {
            c.tag(b'L');
            c.str(order_id);
        }
    }
    Fingerprint::from_hash(c.digest64())
}

/// Width of a stream-clock bucket: one minute of log time. Expiry works in
/// whole buckets, so an entry lives between the window and the window plus
/// two minutes of stream time. Fixed (not derived from the window): a
/// restore knows no settings, and a bucket of the clock is a key of the
/// expiry queue (about 10,000 of them for a 7-day window).
pub const BUCKET_MS: i64 = 60_000;

/// Stream time in whole minutes since the Unix epoch (u32: no wraparound
/// before the year 10000; negative or absent timestamps count as 0).
pub type Bucket = u32;

/// The bucket of a log timestamp.
pub fn bucket_of(ms: i64) -> Bucket {
    (ms.max(0) / BUCKET_MS).min(Bucket::MAX as i64) as Bucket
}

/// The bucket of an entry decided before the clock ran: written by a
/// version that kept no decision time (or decided at a log time in the
/// first minute of 1970). It counts as decided at the partition's origin,
/// the first bucket the clock reached, so it expires one window after the
/// first record this version decided there.
pub const UNSTAMPED: Bucket = 0;

/// The bucket of an entry that never expires, in a stamped changelog
/// value (accepted admin terms: there are few, and a late retry of an
/// AdjustStock must never apply its delta twice).
pub const NEVER: Bucket = Bucket::MAX;

/// How many buckets a window spans, rounded up: an entry is kept for at
/// least `window`.
pub fn window_buckets(window: std::time::Duration) -> Bucket {
    let ms = window.as_millis().min(i64::MAX as u128) as i64;
    ((ms + BUCKET_MS - 1) / BUCKET_MS).min(Bucket::MAX as i64) as Bucket
}

/// A request being decided: its identity ([`request_identity`]), what it
/// asks for, and the stream-clock bucket it is decided in (its entry
/// expires from there; set by the processor, [`UNSTAMPED`] from
/// [`Request::of`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub id: u128,
    /// The bare request-id hash, what versions before coupon-scoped ids
    /// kept their entries under (looked up only on a book restored with
    /// such entries).
    pub unscoped: u128,
    pub fingerprint: Fingerprint,
    pub at: Bucket,
}

impl Request {
    pub fn of(cmd: &CouponCommand) -> Self {
        let unscoped = id_hash(&cmd.request_id);
        Request {
            id: scoped(unscoped, &cmd.coupon_id),
            unscoped,
            fingerprint: fingerprint(cmd),
            at: UNSTAMPED,
        }
    }

    /// The same request, decided in bucket `at`.
    pub fn at(self, at: Bucket) -> Self {
        Request { at, ..self }
    }
}

/// What the book knows of a request id about to be decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Not decided on this partition yet.
    New,
    /// Decided, for the same content: an upstream retry.
    Retry,
    /// Decided by a version that kept no fingerprint (restored from an old
    /// changelog entry): taken as a retry, as that version did.
    RetryUnchecked,
    /// Decided for a different content: the id was reused for another request.
    Reused,
}

/// What an admin set for a coupon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Terms {
    pub stock: i64,
    /// Unix millis; requests before are NOT_ACTIVE.
    pub active_from: Option<i64>,
    /// Unix millis; requests at or after are NOT_ACTIVE.
    pub active_until: Option<i64>,
    /// What a unit takes off the order it is redeemed with.
    pub discount: Option<Discount>,
}

/// One coupon: its terms, who holds a unit, and which order uses whose unit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CouponLedger {
    pub terms: Option<Terms>,
    holders: HashSet<u128>,
    /// order hash → the user whose unit the order uses.
    redemptions: HashMap<u128, u128>,
    /// user hash → the order using that user's unit (the inverse).
    used_by: HashMap<u128, u128>,
}

impl CouponLedger {
    pub fn terms(&self) -> Option<&Terms> {
        self.terms.as_ref()
    }
    pub fn issued(&self) -> i64 {
        self.holders.len() as i64
    }
    pub fn holds(&self, user: u128) -> bool {
        self.holders.contains(&user)
    }
    /// The order using `user`'s unit, if any.
    pub fn used_by(&self, user: u128) -> Option<u128> {
        self.used_by.get(&user).copied()
    }
    /// The user whose unit `order` uses, if any.
    pub fn redemption(&self, order: u128) -> Option<u128> {
        self.redemptions.get(&order).copied()
    }
    /// Units used by an order right now.
    pub fn redeemed(&self) -> usize {
        self.redemptions.len()
    }
}

/// A request hash as the book's key: its top 96 bits as three u32s, so an
/// entry with its short fingerprint is 16 bytes, what a bare `u128` entry
/// cost before fingerprints (a `u128` key is 16-aligned and would pad the
/// entry to 32). 96 bits of xxh3 keep collisions negligible: about 10^-15
/// for ten million requests on one partition.
type Slot = [u32; 3];

fn slot(request: u128) -> Slot {
    [
        (request >> 64) as u32,
        (request >> 32) as u32,
        request as u32,
    ]
}

/// The book keeps a fingerprint folded to 32 bits (the changelog keeps all
/// 64): a reused id passes for a retry only if two different requests agree
/// on them, one chance in 4 billion.
type ShortFingerprint = NonZeroU32;

fn short(f: Fingerprint) -> ShortFingerprint {
    let h = f.get();
    NonZeroU32::new((h >> 32) as u32 ^ h as u32).unwrap_or(NonZeroU32::MIN)
}

/// One entry of `CouponBook::decided`.
type DecidedEntry = (Slot, Option<ShortFingerprint>);

/// The stream clock and the expirable entries of `CouponBook::decided`,
/// oldest bucket first. Holds the full 128-bit request hash (the book keeps
/// 96 bits), which the changelog tombstone needs for its key: 16 bytes per
/// expirable entry on top of its book entry; permanent (ISSUED) entries
/// cost nothing here.
#[derive(Debug, Default, Clone)]
struct Expiry {
    /// The latest bucket a record's log timestamp reached on this partition.
    clock: Bucket,
    /// The first bucket the clock reached ([`UNSTAMPED`] entries count as
    /// decided then); 0 until the clock first moves.
    origin: Bucket,
    /// Bucket → the requests decided in it, in decision order (expired from
    /// the front, so a restore meets the tombstones at the front too).
    queue: BTreeMap<Bucket, VecDeque<u128>>,
}

impl Expiry {
    fn push(&mut self, bucket: Bucket, id: u128) {
        self.queue.entry(bucket).or_default().push_back(id);
    }

    /// Removes `id` from `bucket` (searched from the back: a revert removes
    /// the latest). Whether it was there.
    fn remove_from(&mut self, bucket: Bucket, id: u128) -> bool {
        let Some(q) = self.queue.get_mut(&bucket) else {
            return false;
        };
        let found = if q.back() == Some(&id) {
            q.pop_back();
            true
        } else if let Some(i) = q.iter().rposition(|r| *r == id) {
            q.remove(i);
            true
        } else {
            false
        };
        if q.is_empty() {
            self.queue.remove(&bucket);
        }
        found
    }

    /// Removes `id` wherever it is: at the front of the oldest bucket when
    /// a restore meets the tombstones expiry wrote (the usual case), else
    /// by a scan (only after compaction reordered what a restore sees).
    fn remove_anywhere(&mut self, id: u128) {
        if let Some(mut first) = self.queue.first_entry() {
            if first.get().front() == Some(&id) {
                first.get_mut().pop_front();
                if first.get().is_empty() {
                    first.remove();
                }
                return;
            }
        }
        let bucket = self
            .queue
            .iter()
            .find(|(_, q)| q.contains(&id))
            .map(|(b, _)| *b);
        if let Some(b) = bucket {
            self.remove_from(b, id);
        }
    }

    /// The oldest bucket whose entries are past `window` buckets of stream
    /// time: decided more than `window` whole buckets before the clock.
    fn due(&self, window: Bucket) -> Option<Bucket> {
        let (&bucket, _) = self.queue.first_key_value()?;
        let decided = if bucket == UNSTAMPED {
            self.origin
        } else {
            bucket
        };
        (decided != UNSTAMPED && u64::from(self.clock) > u64::from(decided) + u64::from(window))
            .then_some(bucket)
    }

    fn len(&self) -> usize {
        self.queue.values().map(VecDeque::len).sum()
    }
}

/// Equal when the clock and each bucket's set of requests are: the order
/// within a bucket is the order of decision live, the changelog's order
/// after a restore, and the two differ when a request expired and was
/// decided again in one transaction (the changelog writes its key once,
/// where it was first written). Only which of a due bucket's entries goes
/// first depends on it.
impl PartialEq for Expiry {
    fn eq(&self, other: &Self) -> bool {
        let sorted = |q: &VecDeque<u128>| {
            let mut v: Vec<u128> = q.iter().copied().collect();
            v.sort_unstable();
            v
        };
        self.clock == other.clock
            && self.origin == other.origin
            && self.queue.len() == other.queue.len()
            && self
                .queue
                .iter()
                .zip(&other.queue)
                .all(|((a, qa), (b, qb))| {
                    a == b && qa.len() == qb.len() && sorted(qa) == sorted(qb)
                })
    }
}

impl Eq for Expiry {}

/// All coupons of one partition and the request ids already decided there.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CouponBook {
    coupons: HashMap<String, CouponLedger>,
    /// Request hash → the fingerprint of what it asked for (`None`: decided
    /// by a version that kept none).
    decided: HashMap<Slot, Option<ShortFingerprint>>,
    /// Which of `decided` expire, and when.
    expiry: Expiry,
    /// Restored with entries of requests that issued nothing written under
    /// bare request hashes ([`KEY_REQUEST_UNSCOPED`]): until they expire, a
    /// request is looked up under its bare hash too, and an expiry
    /// tombstones both keys.
    unscoped_entries: Hint,
}

/// A flag that only saves work: with it set, the book answers the same as
/// without it once what it hints at is gone (an unscoped entry expired,
/// say), so two books equal in content are equal whatever it says.
#[derive(Debug, Default, Clone, Copy)]
struct Hint(bool);

impl PartialEq for Hint {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Hint {}

impl CouponBook {
    pub fn coupon(&self, id: &str) -> Option<&CouponLedger> {
        self.coupons.get(id).filter(|c| c.terms.is_some())
    }
    /// Every coupon created here, with its ledger.
    pub fn coupons(&self) -> impl Iterator<Item = (&str, &CouponLedger)> {
        self.coupons
            .iter()
            .filter(|(_, c)| c.terms.is_some())
            .map(|(id, c)| (id.as_str(), c))
    }
    pub fn already_decided(&self, request: u128) -> bool {
        self.decided.contains_key(&slot(request))
    }
    /// Whether `request` is new here, a retry of one decided, or a reuse of
    /// a decided request's id for something else.
    pub fn seen(&self, request: &Request) -> Seen {
        let entry = self.decided.get(&slot(request.id)).or_else(|| {
            self.unscoped_entries
                .0
                .then(|| self.decided.get(&slot(request.unscoped)))
                .flatten()
        });
        match entry {
            None => Seen::New,
            Some(None) => Seen::RetryUnchecked,
            Some(Some(f)) if *f == short(request.fingerprint) => Seen::Retry,
            Some(Some(_)) => Seen::Reused,
        }
    }
    /// Decides `request` for good (it issued a unit: never expires).
    fn decide(&mut self, request: &Request) {
        self.decided
            .insert(slot(request.id), Some(short(request.fingerprint)));
    }
    fn undecide(&mut self, request: &Request) {
        self.decided.remove(&slot(request.id));
    }
    /// Decides `request` until the window after its bucket has passed.
    fn decide_for_now(&mut self, request: &Request) {
        self.decide(request);
        self.expiry.push(request.at, request.id);
    }
    fn undecide_for_now(&mut self, request: &Request) {
        self.undecide(request);
        self.expiry.remove_from(request.at, request.id);
    }
    /// Decided request ids remembered (permanent and expirable).
    pub fn decided_len(&self) -> usize {
        self.decided.len()
    }
    /// Decided request ids that will expire (all but ISSUED requests and
    /// accepted admin terms).
    pub fn expirable_len(&self) -> usize {
        self.expiry.len()
    }
    /// The stream clock: the latest bucket a record reached here.
    pub fn clock(&self) -> Bucket {
        self.expiry.clock
    }
    /// The change that moves the stream clock to the bucket of log time
    /// `timestamp`, if that is later than the clock.
    pub fn advance(&self, timestamp: i64) -> Option<CouponChange> {
        let to = bucket_of(timestamp);
        (to > self.expiry.clock).then_some(CouponChange::Clock {
            previous: self.expiry.clock,
            now: to,
        })
    }
    /// The change that expires up to `limit` requests of the oldest bucket
    /// past `window` buckets of stream time, if there is one.
    pub fn expire(&self, window: Bucket, limit: usize) -> Option<CouponChange> {
        let bucket = self.expiry.due(window)?;
        let requests: Vec<(u128, Option<NonZeroU32>)> = self.expiry.queue[&bucket]
            .iter()
            .take(limit)
            .map(|id| (*id, self.decided.get(&slot(*id)).copied().flatten()))
            .collect();
        (!requests.is_empty()).then_some(CouponChange::Expired { bucket, requests })
    }
    pub fn issued_users(&self) -> usize {
        self.coupons.values().map(|c| c.holders.len()).sum()
    }
}

/// A change to a [`CouponBook`]; each carries what its revert needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CouponChange {
    /// A request was decided without issuing.
    Decided { request: Request },
    /// A unit was issued to `user` (the request is decided too).
    Issued {
        request: Request,
        coupon: String,
        user: u128,
        sequence: i64,
    },
    /// Admin terms set (`previous` for the revert). The request is decided too.
    Terms {
        request: Request,
        coupon: String,
        terms: Terms,
        previous: Option<Terms>,
    },
    /// `order` now uses `user`'s unit (the request is decided too).
    Redeemed {
        request: Request,
        coupon: String,
        order: u128,
        user: u128,
    },
    /// `order` gave `user`'s unit back (the request is decided too).
    Released {
        request: Request,
        coupon: String,
        order: u128,
        user: u128,
    },
    /// The stream clock moved from bucket `previous` to `now` (later).
    Clock { previous: Bucket, now: Bucket },
    /// The first requests (in decision order) of `bucket` are forgotten:
    /// their window has passed. Each with its book fingerprint, for the
    /// revert.
    Expired {
        bucket: Bucket,
        requests: Vec<(u128, Option<NonZeroU32>)>,
    },
}

const KEY_TERMS: u8 = b'c';
/// `q` + [`request_identity`]: a request's entry.
const KEY_REQUEST: u8 = b'q';
/// `r` + bare request-id hash: a request's entry as versions before
/// coupon-scoped ids wrote it. Still restored: an ISSUED one names its
/// coupon, so it is kept under its identity (its changelog record stays
/// where it is; it never expires); one that issued nothing is kept under
/// its bare hash until it expires (see `CouponBook::unscoped_entries`).
const KEY_REQUEST_UNSCOPED: u8 = b'r';
const KEY_REDEMPTION: u8 = b'u';
const KEY_CLOCK: u8 = b't';
const NONE: i64 = i64::MIN;

fn redemption_key(order: u128, coupon: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(17 + coupon.len());
    k.push(KEY_REDEMPTION);
    k.extend_from_slice(&order.to_be_bytes());
    k.extend_from_slice(coupon.as_bytes());
    k
}

fn request_key(request: &Request) -> Vec<u8> {
    request_id_key(request.id)
}

fn request_id_key(id: u128) -> Vec<u8> {
    let mut k = Vec::with_capacity(17);
    k.push(KEY_REQUEST);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// Ends a request value that carries a decision time and a fingerprint
/// (one that expires). 0xFE never occurs in UTF-8 either.
const STAMPED: u8 = 0xFE;
/// decision time (8) + fingerprint (8) + [`STAMPED`].
const STAMPED_LEN: usize = 17;

/// The value of an expirable request's entry (one that issued nothing):
/// the start of its bucket (i64 BE, ms since the epoch), the fingerprint
/// (u64 BE) and 0xFE, exactly 17 bytes. No other layout is 17 bytes long
/// (see [`request_value`]: 0, 9, 24 or more), so a value is of this layout
/// exactly when it is 17 bytes long and ends with 0xFE. The time is in
/// milliseconds so the layout outlives a change of [`BUCKET_MS`].
fn stamped_request_value(request: &Request) -> Vec<u8> {
    let mut v = Vec::with_capacity(STAMPED_LEN);
    v.extend_from_slice(&(i64::from(request.at) * BUCKET_MS).to_be_bytes());
    v.extend_from_slice(&request.fingerprint.get().to_be_bytes());
    v.push(STAMPED);
    v
}

/// Ends a request value that carries a fingerprint. 0xFF never occurs in
/// UTF-8, which is what makes the layouts below unambiguous.
const FINGERPRINTED: u8 = 0xFF;
/// user hash (16) + sequence (8), before the couponId of an ISSUED value.
const ISSUED_HEAD: usize = 24;
/// fingerprint (8) + [`FINGERPRINTED`].
const TRAILER: usize = 9;

/// The value of an ISSUED request's changelog entry (expirable requests of
/// this version are written by [`stamped_request_value`]; this version
/// still reads every layout below): the payload, then the
/// fingerprint (u64 BE) and the byte 0xFF. The payload is empty for a
/// request that issued nothing, user hash (16) + sequence (i64 BE, 8) +
/// couponId (UTF-8) for one that was ISSUED:
///
/// | written by | decided, nothing issued | ISSUED |
/// |---|---|---|
/// | this version | fingerprint, 0xFF: exactly 9 bytes | user, sequence, couponId, fingerprint, 0xFF: 33 bytes or more |
/// | versions before fingerprints | empty | user, sequence, couponId: 24 bytes or more |
///
/// No old value is 9 bytes long, and an old value of 33 bytes or more ends
/// inside its couponId, valid UTF-8, so never with 0xFF: a value is of this
/// version exactly when it is 9 or at least 33 bytes long and ends with
/// 0xFF (an old value of 24 bytes can end with 0xFF, in its sequence; its
/// length tells it apart). See [`split_request_value`].
fn request_value(request: &Request, issued: Option<(u128, i64, &str)>) -> Vec<u8> {
    let payload = issued.map_or(0, |(_, _, coupon)| ISSUED_HEAD + coupon.len());
    let mut v = Vec::with_capacity(payload + TRAILER);
    if let Some((user, sequence, coupon)) = issued {
        v.extend_from_slice(&user.to_be_bytes());
        v.extend_from_slice(&sequence.to_be_bytes());
        v.extend_from_slice(coupon.as_bytes());
    }
    v.extend_from_slice(&request.fingerprint.get().to_be_bytes());
    v.push(FINGERPRINTED);
    v
}

/// A request value's payload, fingerprint (`None` for a value written
/// before fingerprints existed) and decision time in ms (`None` unless
/// written by [`stamped_request_value`]). See [`request_value`].
fn split_request_value(value: &[u8]) -> Result<SplitValue<'_>, String> {
    let n = value.len();
    let fingerprint_at = |i: usize| {
        let hash = u64::from_be_bytes(value[i..i + 8].try_into().expect("8 bytes"));
        NonZeroU64::new(hash)
            .map(Fingerprint)
            .ok_or("request fingerprint of 0".to_string())
    };
    if n == STAMPED_LEN && value.last() == Some(&STAMPED) {
        let at = i64::from_be_bytes(value[..8].try_into().expect("8 bytes"));
        return Ok((&[], Some(fingerprint_at(8)?), Some(at)));
    }
    if value.last() != Some(&FINGERPRINTED) || (n != TRAILER && n < ISSUED_HEAD + TRAILER) {
        return Ok((value, None, None));
    }
    Ok((
        &value[..n - TRAILER],
        Some(fingerprint_at(n - TRAILER)?),
        None,
    ))
}

/// Payload, fingerprint and decision time (ms) of a request value.
type SplitValue<'a> = (&'a [u8], Option<Fingerprint>, Option<i64>);

impl PartitionState for CouponBook {
    type Change = CouponChange;

    fn apply(&mut self, change: &CouponChange) {
        match change {
            CouponChange::Decided { request } => {
                self.decide_for_now(request);
            }
            CouponChange::Issued {
                request,
                coupon,
                user,
                ..
            } => {
                self.decide(request);
                self.coupons
                    .entry(coupon.clone())
                    .or_default()
                    .holders
                    .insert(*user);
            }
            CouponChange::Terms {
                request,
                coupon,
                terms,
                ..
            } => {
                self.decide(request);
                self.coupons.entry(coupon.clone()).or_default().terms = Some(*terms);
            }
            CouponChange::Redeemed {
                request,
                coupon,
                order,
                user,
            } => {
                self.decide_for_now(request);
                let c = self.coupons.entry(coupon.clone()).or_default();
                c.redemptions.insert(*order, *user);
                c.used_by.insert(*user, *order);
            }
            CouponChange::Released {
                request,
                coupon,
                order,
                user,
            } => {
                self.decide_for_now(request);
                let c = self.coupons.entry(coupon.clone()).or_default();
                c.redemptions.remove(order);
                c.used_by.remove(user);
            }
            CouponChange::Clock { now, .. } => {
                if self.expiry.origin == UNSTAMPED {
                    self.expiry.origin = *now;
                }
                self.expiry.clock = *now;
            }
            CouponChange::Expired { bucket, requests } => {
                if let Some(q) = self.expiry.queue.get_mut(bucket) {
                    for (id, _) in requests {
                        if q.front() == Some(id) {
                            q.pop_front();
                        } else if let Some(i) = q.iter().position(|r| r == id) {
                            q.remove(i);
                        }
                    }
                    if q.is_empty() {
                        self.expiry.queue.remove(bucket);
                    }
                }
                for (id, _) in requests {
                    self.decided.remove(&slot(*id));
                }
                // A hash map keeps the capacity of its peak. Once a sale's
                // peak has expired, give the memory back (amortized: only
                // when three quarters of it is empty, to half full).
                let (len, capacity) = (self.decided.len(), self.decided.capacity());
                if capacity > 4096 && len < capacity / 4 {
                    self.decided.shrink_to(len * 2);
                }
            }
        }
    }

    fn revert(&mut self, change: &CouponChange) {
        match change {
            CouponChange::Decided { request } => {
                self.undecide_for_now(request);
            }
            CouponChange::Issued {
                request,
                coupon,
                user,
                ..
            } => {
                self.undecide(request);
                if let Some(c) = self.coupons.get_mut(coupon) {
                    c.holders.remove(user);
                }
            }
            CouponChange::Terms {
                request,
                coupon,
                previous,
                ..
            } => {
                self.undecide(request);
                match previous {
                    Some(p) => self.coupons.entry(coupon.clone()).or_default().terms = Some(*p),
                    None => {
                        self.coupons.remove(coupon);
                    }
                }
            }
            CouponChange::Redeemed {
                request,
                coupon,
                order,
                user,
            } => {
                self.undecide_for_now(request);
                if let Some(c) = self.coupons.get_mut(coupon) {
                    c.redemptions.remove(order);
                    c.used_by.remove(user);
                }
            }
            CouponChange::Released {
                request,
                coupon,
                order,
                user,
            } => {
                self.undecide_for_now(request);
                let c = self.coupons.entry(coupon.clone()).or_default();
                c.redemptions.insert(*order, *user);
                c.used_by.insert(*user, *order);
            }
            CouponChange::Clock { previous, .. } => {
                self.expiry.clock = *previous;
                if *previous == UNSTAMPED {
                    self.expiry.origin = UNSTAMPED;
                }
            }
            CouponChange::Expired { bucket, requests } => {
                let q = self.expiry.queue.entry(*bucket).or_default();
                for (id, fingerprint) in requests.iter().rev() {
                    q.push_front(*id);
                    self.decided.insert(slot(*id), *fingerprint);
                }
            }
        }
    }

    fn changelog_records(&self, change: &CouponChange, out: &mut Vec<ChangelogRecord>) {
        match change {
            CouponChange::Decided { request } => {
                out.push((request_key(request), Some(stamped_request_value(request))))
            }
            CouponChange::Issued {
                request,
                coupon,
                user,
                sequence,
            } => {
                let v = request_value(request, Some((*user, *sequence, coupon)));
                out.push((request_key(request), Some(v)));
            }
            CouponChange::Terms {
                request,
                coupon,
                terms,
                ..
            } => {
                let never = request.at(NEVER);
                out.push((request_key(request), Some(stamped_request_value(&never))));
                let mut k = Vec::with_capacity(1 + coupon.len());
                k.push(KEY_TERMS);
                k.extend_from_slice(coupon.as_bytes());
                out.push((k, Some(encode_terms(terms))));
            }
            CouponChange::Redeemed {
                request,
                coupon,
                order,
                user,
            } => {
                out.push((request_key(request), Some(stamped_request_value(request))));
                out.push((
                    redemption_key(*order, coupon),
                    Some(user.to_be_bytes().to_vec()),
                ));
            }
            CouponChange::Released {
                request,
                coupon,
                order,
                ..
            } => {
                out.push((request_key(request), Some(stamped_request_value(request))));
                out.push((redemption_key(*order, coupon), None));
            }
            CouponChange::Clock { .. } => {
                // The clock as it is at commit (the last value wins).
                let mut v = Vec::with_capacity(16);
                v.extend_from_slice(&(i64::from(self.expiry.clock) * BUCKET_MS).to_be_bytes());
                v.extend_from_slice(&(i64::from(self.expiry.origin) * BUCKET_MS).to_be_bytes());
                out.push((vec![KEY_CLOCK], Some(v)));
            }
            CouponChange::Expired { requests, .. } => {
                out.extend(requests.iter().map(|(id, _)| (request_id_key(*id), None)));
                if self.unscoped_entries.0 {
                    // The id may be a bare hash under the old key: one
                    // tombstone too many is harmless, a missing one is not.
                    out.extend(requests.iter().map(|(id, _)| {
                        let mut k = request_id_key(*id);
                        k[0] = KEY_REQUEST_UNSCOPED;
                        (k, None)
                    }));
                }
            }
        }
    }

    fn restore(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), String> {
        if let (Some((&KEY_REDEMPTION, rest)), None) = (key.split_first(), value) {
            // A released redemption: forget it (it may have been restored earlier in the log).
            let (order, coupon) = split_redemption_key(rest)?;
            if let Some(c) = self.coupons.get_mut(coupon) {
                if let Some(user) = c.redemptions.remove(&order) {
                    c.used_by.remove(&user);
                }
            }
            return Ok(());
        }
        if let (Some((&(KEY_REQUEST | KEY_REQUEST_UNSCOPED), hash)), None) =
            (key.split_first(), value)
        {
            // An expired request: forget it (restore is in log order; it
            // may have been compacted away already).
            let request = request_hash(hash)?;
            if self.decided.remove(&slot(request)).is_some() {
                self.expiry.remove_anywhere(request);
            }
            return Ok(());
        }
        let Some(value) = value else { return Ok(()) }; // other tombstones: nothing kept
        match key.split_first() {
            Some((&KEY_TERMS, coupon)) => {
                let coupon = std::str::from_utf8(coupon).map_err(|e| format!("coupon id: {e}"))?;
                let terms = decode_terms(value)?;
                self.coupons.entry(coupon.to_string()).or_default().terms = Some(terms);
            }
            Some((&KEY_REDEMPTION, rest)) => {
                let (order, coupon) = split_redemption_key(rest)?;
                let user = u128::from_be_bytes(
                    value
                        .try_into()
                        .map_err(|_| "redemption value is not 16 bytes".to_string())?,
                );
                let c = self.coupons.entry(coupon.to_string()).or_default();
                c.redemptions.insert(order, user);
                c.used_by.insert(user, order);
            }
            Some((&KEY_CLOCK, [])) => {
                if value.len() != 16 {
                    return Err(format!("clock value of {} bytes", value.len()));
                }
                let at = |i: usize| i64::from_be_bytes(value[i..i + 8].try_into().expect("8"));
                self.expiry.clock = bucket_of(at(0));
                self.expiry.origin = bucket_of(at(8));
            }
            Some((&(kind @ KEY_REQUEST | kind @ KEY_REQUEST_UNSCOPED), hash)) => {
                let (payload, fingerprint, at) = split_request_value(value)?;
                let issued = if payload.is_empty() {
                    None
                } else {
                    if payload.len() < ISSUED_HEAD {
                        return Err(format!("issued value of {} bytes", value.len()));
                    }
                    let user = u128::from_be_bytes(payload[..16].try_into().expect("16 bytes"));
                    let coupon = std::str::from_utf8(&payload[ISSUED_HEAD..])
                        .map_err(|e| format!("coupon id: {e}"))?;
                    Some((user, coupon))
                };
                let request = match (kind, issued) {
                    (KEY_REQUEST_UNSCOPED, Some((_, coupon))) => {
                        scoped(request_hash(hash)?, coupon)
                    }
                    (KEY_REQUEST_UNSCOPED, None) => {
                        self.unscoped_entries = Hint(true);
                        request_hash(hash)?
                    }
                    _ => request_hash(hash)?,
                };
                if self
                    .decided
                    .insert(slot(request), fingerprint.map(short))
                    .is_some()
                {
                    // Written twice with no tombstone between: keep the last.
                    self.expiry.remove_anywhere(request);
                }
                match issued {
                    None => {
                        // Issued nothing: expires, from its time if it has one.
                        let bucket = at.map_or(UNSTAMPED, bucket_of);
                        if bucket != NEVER {
                            self.expiry.push(bucket, request);
                        }
                    }
                    Some((user, coupon)) => {
                        self.coupons
                            .entry(coupon.to_string())
                            .or_default()
                            .holders
                            .insert(user);
                    }
                }
            }
            _ => return Err(format!("unknown changelog key {key:?}")),
        }
        Ok(())
    }

    fn approx_bytes(&self) -> usize {
        // hashbrown: one control byte per bucket plus the value, buckets >= len.
        let set = |cap: usize, item: usize| cap * (item + 1);
        set(self.decided.capacity(), std::mem::size_of::<DecidedEntry>())
            + self
                .coupons
                .iter()
                .map(|(k, c)| {
                    k.capacity()
                        + std::mem::size_of::<CouponLedger>()
                        + set(c.holders.capacity(), 16)
                        + set(c.redemptions.capacity(), 32)
                        + set(c.used_by.capacity(), 32)
                })
                .sum::<usize>()
            + self
                .expiry
                .queue
                .values()
                .map(|q| 64 + q.capacity() * 16)
                .sum::<usize>()
    }
}

fn request_hash(hash: &[u8]) -> Result<u128, String> {
    Ok(u128::from_be_bytes(
        hash.try_into()
            .map_err(|_| "request key is not 16 bytes".to_string())?,
    ))
}

fn split_redemption_key(rest: &[u8]) -> Result<(u128, &str), String> {
    if rest.len() < 16 {
        return Err("redemption key shorter than an order hash".into());
    }
    let order = u128::from_be_bytes(rest[..16].try_into().expect("16 bytes"));
    let coupon = std::str::from_utf8(&rest[16..]).map_err(|e| format!("coupon id: {e}"))?;
    Ok((order, coupon))
}

/// Terms as 24 bytes (stock, from, until) plus, when the coupon has a
/// discount, 17 more (kind, value, cap). Terms written before discounts
/// existed are 24 bytes and restore with no discount.
fn encode_terms(terms: &Terms) -> Vec<u8> {
    let mut v = Vec::with_capacity(41);
    v.extend_from_slice(&terms.stock.to_be_bytes());
    v.extend_from_slice(&terms.active_from.unwrap_or(NONE).to_be_bytes());
    v.extend_from_slice(&terms.active_until.unwrap_or(NONE).to_be_bytes());
    if let Some(d) = &terms.discount {
        v.push(match d.kind {
            DiscountKind::Fixed => b'F',
            DiscountKind::Percent => b'P',
        });
        v.extend_from_slice(&d.value.0.to_be_bytes());
        v.extend_from_slice(&d.cap.map_or(NONE, |c| c.0).to_be_bytes());
    }
    v
}

fn decode_terms(value: &[u8]) -> Result<Terms, String> {
    if value.len() != 24 && value.len() != 41 {
        return Err(format!(
            "terms value of {} bytes, expected 24 or 41",
            value.len()
        ));
    }
    let at = |i: usize| i64::from_be_bytes(value[i..i + 8].try_into().expect("8 bytes"));
    let opt = |v: i64| (v != NONE).then_some(v);
    let discount = if value.len() == 41 {
        let kind = match value[24] {
            b'F' => DiscountKind::Fixed,
            b'P' => DiscountKind::Percent,
            k => return Err(format!("unknown discount kind {k}")),
        };
        Some(Discount {
            kind,
            value: Money(at(25)),
            cap: opt(at(33)).map(Money),
        })
    } else {
        None
    };
    Ok(Terms {
        stock: at(0),
        active_from: opt(at(8)),
        active_until: opt(at(16)),
        discount,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;

    fn req(id: u128) -> Request {
        Request {
            id,
            unscoped: id,
            fingerprint: Fingerprint::from_hash(id as u64 * 7 + 1),
            at: 0,
        }
    }

    fn command(request: &str, coupon: &str, at: i64, command: CouponAction) -> CouponCommand {
        CouponCommand {
            request_id: request.into(),
            coupon_id: coupon.into(),
            requested_at: DateTime::from_timestamp_millis(at).unwrap(),
            command,
        }
    }

    fn issue(request: &str, coupon: &str, user: &str) -> CouponCommand {
        command(
            request,
            coupon,
            1_000,
            CouponAction::Issue {
                user_id: user.into(),
            },
        )
    }

    /// The value an entry had before fingerprints: empty, or user +
    /// sequence + couponId for an ISSUED one.
    fn old_value(issued: Option<(u128, i64, &str)>) -> Vec<u8> {
        let mut v = Vec::new();
        if let Some((user, sequence, coupon)) = issued {
            v.extend_from_slice(&user.to_be_bytes());
            v.extend_from_slice(&sequence.to_be_bytes());
            v.extend_from_slice(coupon.as_bytes());
        }
        v
    }

    fn replay(changes: &[CouponChange]) -> CouponBook {
        let mut book = CouponBook::default();
        let (_, records) = surge_engine::laws::changelog_of::<CouponBook>(changes);
        for (k, v) in records {
            book.restore(&k, v.as_deref()).unwrap();
        }
        book
    }

    #[test]
    fn changelog_restores_what_apply_built() {
        let terms = Terms {
            stock: 2,
            active_from: Some(5),
            active_until: None,
            discount: Some(Discount::percent(Money(1000), Some(Money(500)))),
        };
        let changes = vec![
            CouponChange::Terms {
                request: req(1),
                coupon: "c".into(),
                terms,
                previous: None,
            },
            CouponChange::Issued {
                request: req(2),
                coupon: "c".into(),
                user: id_hash("u1"),
                sequence: 1,
            },
            CouponChange::Decided { request: req(3) },
        ];
        let mut live = CouponBook::default();
        changes.iter().for_each(|c| live.apply(c));
        let restored = replay(&changes);
        assert!(
            restored.already_decided(1),
            "an admin command's request id survives a restore"
        );
        for book in [&live, &restored] {
            assert_eq!(book.coupon("c").unwrap().terms(), Some(&terms));
            assert!(book.coupon("c").unwrap().holds(id_hash("u1")));
            assert_eq!(book.coupon("c").unwrap().issued(), 1);
            assert!(book.already_decided(2) && book.already_decided(3));
        }
    }

    #[test]
    fn revert_undoes_in_reverse() {
        let mut book = CouponBook::default();
        let t1 = Terms {
            stock: 1,
            active_from: None,
            active_until: None,
            discount: None,
        };
        let t2 = Terms { stock: 5, ..t1 };
        let changes = [
            CouponChange::Terms {
                request: req(1),
                coupon: "c".into(),
                terms: t1,
                previous: None,
            },
            CouponChange::Issued {
                request: req(2),
                coupon: "c".into(),
                user: 9,
                sequence: 1,
            },
            CouponChange::Terms {
                request: req(3),
                coupon: "c".into(),
                terms: t2,
                previous: Some(t1),
            },
        ];
        changes.iter().for_each(|c| book.apply(c));
        changes[1..].iter().rev().for_each(|c| book.revert(c));
        assert_eq!(book.coupon("c").unwrap().terms(), Some(&t1));
        assert_eq!(book.coupon("c").unwrap().issued(), 0);
        assert!(book.already_decided(1) && !book.already_decided(2) && !book.already_decided(3));
        book.revert(&changes[0]);
        assert!(book.coupon("c").is_none());
    }

    #[test]
    fn fingerprints_cover_the_content_but_not_the_time() {
        let base = issue("r1", "c1", "u1");
        let f = fingerprint(&base);
        let retry = command("r1", "c1", 99_999, base.command.clone());
        assert_eq!(fingerprint(&retry), f, "a retry carries a new requested_at");
        assert_eq!(
            fingerprint(&issue("r2", "c1", "u1")),
            f,
            "the request id is the key, not the content"
        );
        let create = |stock, from: Option<i64>, discount| CouponAction::Create {
            stock,
            active_from: from.and_then(DateTime::from_timestamp_millis),
            active_until: None,
            discount,
        };
        let others = [
            issue("r1", "c2", "u1"),
            issue("r1", "c1", "u9"),
            command(
                "r1",
                "c1",
                1_000,
                CouponAction::Redeem {
                    order_id: "o1".into(),
                    user_id: "u1".into(),
                },
            ),
            command(
                "r1",
                "c1",
                1_000,
                CouponAction::Redeem {
                    order_id: "o2".into(),
                    user_id: "u1".into(),
                },
            ),
            // Strings are length-prefixed: moving a byte across fields is another request.
            command(
                "r1",
                "c1",
                1_000,
                CouponAction::Redeem {
                    order_id: "o2u".into(),
                    user_id: "1".into(),
                },
            ),
            command(
                "r1",
                "c1",
                1_000,
                CouponAction::Release {
                    order_id: "o1".into(),
                },
            ),
            command("r1", "c1", 1_000, create(5, None, None)),
            command("r1", "c1", 1_000, create(6, None, None)),
            command("r1", "c1", 1_000, create(5, Some(0), None)),
            command("r1", "c1", 1_000, create(5, Some(1), None)),
            command(
                "r1",
                "c1",
                1_000,
                create(5, None, Some(Discount::fixed(Money(500)))),
            ),
            command(
                "r1",
                "c1",
                1_000,
                create(5, None, Some(Discount::percent(Money(500), None))),
            ),
            command(
                "r1",
                "c1",
                1_000,
                create(5, None, Some(Discount::percent(Money(500), Some(Money(1))))),
            ),
            command(
                "r1",
                "c1",
                1_000,
                CouponAction::AdjustStock {
                    delta: 1,
                    reason: None,
                },
            ),
            command(
                "r1",
                "c1",
                1_000,
                CouponAction::AdjustStock {
                    delta: -1,
                    reason: None,
                },
            ),
            command(
                "r1",
                "c1",
                1_000,
                CouponAction::AdjustStock {
                    delta: 1,
                    reason: Some(String::new()),
                },
            ),
        ];
        let mut seen = vec![f];
        for (i, other) in others.iter().enumerate() {
            let g = fingerprint(other);
            assert!(!seen.contains(&g), "command {i} ({other:?}) collides");
            seen.push(g);
        }
    }

    #[test]
    fn the_fingerprint_encoding_is_frozen() {
        // Persisted in the changelog: if this changes, every retry of a
        // request decided before the upgrade would be dead-lettered as a
        // reused id.
        let redeem = command(
            "r",
            "c1",
            0,
            CouponAction::Redeem {
                order_id: "o1".into(),
                user_id: "u1".into(),
            },
        );
        let create = command(
            "r",
            "c1",
            0,
            CouponAction::Create {
                stock: 5,
                active_from: DateTime::from_timestamp_millis(10),
                active_until: None,
                discount: Some(Discount::percent(Money(1000), Some(Money(500)))),
            },
        );
        let got = [
            fingerprint(&issue("r", "c1", "u1")).get(),
            fingerprint(&redeem).get(),
            fingerprint(&create).get(),
        ];
        // The documented bytes, hashed in one piece.
        let s = |s: &str| [&(s.len() as u64).to_be_bytes()[..], s.as_bytes()].concat();
        let i = |v: i64| v.to_be_bytes().to_vec();
        let bytes = [
            [s("c1"), b"I".to_vec(), s("u1")].concat(),
            [s("c1"), b"R".to_vec(), s("o1"), s("u1")].concat(),
            [
                s("c1"),
                b"C".to_vec(),
                i(5),
                vec![1],
                i(10),
                vec![0],
                vec![1, b'P'],
                i(1000),
                vec![1],
                i(500),
            ]
            .concat(),
        ];
        assert_eq!(got, bytes.map(|b| xxhash_rust::xxh3::xxh3_64(&b)));
        assert_eq!(
            got,
            [
                17245464051369417339,
                16807520484313728075,
                12812024416260024949
            ]
        );
    }

    #[test]
    fn request_values_tell_the_old_layouts_from_the_new() {
        let r = req(5);
        let fp = Some(r.fingerprint);
        let unstamped = request_value(&r, None);
        assert_eq!(unstamped.len(), 9);
        assert_eq!(
            split_request_value(&unstamped).unwrap(),
            (&[][..], fp, None)
        );
        assert_eq!(split_request_value(&[]).unwrap(), (&[][..], None, None));
        // The layout of this version for what expires: every bucket, and
        // fingerprints whose bytes look like the other markers.
        for at in [0, 1, 255, 0xFF_FF, Bucket::MAX] {
            for f in [1, 0xFF, 0xFE, u64::MAX, 0xFEFE_FEFE_FEFE_FEFE] {
                let r = Request {
                    id: 7,
                    unscoped: 7,
                    fingerprint: Fingerprint::from_hash(f),
                    at,
                };
                let v = stamped_request_value(&r);
                assert_eq!(v.len(), 17);
                let ms = i64::from(at) * BUCKET_MS;
                assert_eq!(
                    split_request_value(&v).unwrap(),
                    (&[][..], Some(r.fingerprint), Some(ms))
                );
                assert_eq!(bucket_of(ms), at, "a bucket survives the round trip");
            }
        }
        // Every coupon length, and sequences whose last byte is a marker.
        let coupon = "c".repeat(40);
        for len in 0..=40 {
            let coupon = &coupon[..len];
            for sequence in [0, 1, 254, 255, -1, -2, i64::MAX] {
                for user in [0, u128::MAX, id_hash("u")] {
                    let issued = Some((user, sequence, coupon));
                    let old = old_value(issued);
                    assert_eq!(split_request_value(&old).unwrap(), (&old[..], None, None));
                    let new = request_value(&r, issued);
                    assert_eq!(new.len(), 24 + len + 9);
                    assert_eq!(split_request_value(&new).unwrap(), (&old[..], fp, None));
                }
            }
        }
        // Multi-byte UTF-8 couponIds end with continuation bytes, never 0xFE or 0xFF.
        for coupon in ["coupon-é€😀", "é", "€", "😀"] {
            let old = old_value(Some((1, 2, coupon)));
            assert_eq!(split_request_value(&old).unwrap(), (&old[..], None, None));
        }
        // The only 17-byte layout ending with 0xFE is the stamped one: no
        // old value is 17 bytes (0 or >= 24) and no other of this version
        // (9 or >= 33).
        for len in [0usize, 9, 24, 33] {
            assert_ne!(len, STAMPED_LEN);
        }
    }

    #[test]
    fn a_restored_book_knows_what_each_request_asked_for() {
        let create = command(
            "admin",
            "c1",
            0,
            CouponAction::Create {
                stock: 5,
                active_from: None,
                active_until: None,
                discount: None,
            },
        );
        let (admin, first) = (Request::of(&create), Request::of(&issue("r1", "c1", "u1")));
        let changes = vec![
            CouponChange::Terms {
                request: admin,
                coupon: "c1".into(),
                terms: Terms {
                    stock: 5,
                    active_from: None,
                    active_until: None,
                    discount: None,
                },
                previous: None,
            },
            CouponChange::Issued {
                request: first,
                coupon: "c1".into(),
                user: id_hash("u1"),
                sequence: 1,
            },
        ];
        let (live, _) = surge_engine::laws::changelog_of::<CouponBook>(&changes);
        let restored = replay(&changes);
        assert_eq!(restored, live);
        for book in [&live, &restored] {
            assert_eq!(book.seen(&first), Seen::Retry);
            assert_eq!(
                book.seen(&Request::of(&issue("r1", "c1", "u1"))),
                Seen::Retry
            );
            assert_eq!(
                book.seen(&Request::of(&issue("r1", "c2", "u1"))),
                Seen::New,
                "a request id names a request of one coupon"
            );
            assert_eq!(
                book.seen(&Request::of(&issue("r1", "c1", "u9"))),
                Seen::Reused
            );
            assert_eq!(
                book.seen(&Request::of(&issue("admin", "c1", "u1"))),
                Seen::Reused
            );
            assert_eq!(book.seen(&Request::of(&issue("r2", "c1", "u1"))), Seen::New);
        }
    }

    /// A request's key as versions before coupon-scoped ids wrote it.
    fn unscoped_key(request: &str) -> Vec<u8> {
        let mut k = request_id_key(id_hash(request));
        k[0] = KEY_REQUEST_UNSCOPED;
        k
    }

    #[test]
    fn old_changelog_entries_restore_with_no_fingerprint() {
        let key = unscoped_key;
        let mut terms_key = vec![KEY_TERMS];
        terms_key.extend_from_slice(b"c1");
        let terms = Terms {
            stock: 5,
            active_from: None,
            active_until: None,
            discount: None,
        };
        // As a version before fingerprints wrote them, then one entry of this version.
        let log: Vec<ChangelogRecord> = vec![
            (key("admin"), Some(old_value(None))),
            (terms_key, Some(encode_terms(&terms))),
            (key("r1"), Some(old_value(Some((id_hash("u1"), 1, "c1"))))),
            (key("r2"), Some(old_value(None))),
            (
                key("r3"),
                Some(request_value(&Request::of(&issue("r3", "c1", "u3")), None)),
            ),
        ];
        let book: CouponBook = surge_engine::laws::restore_from(&log);
        let c1 = book.coupon("c1").unwrap();
        assert_eq!(c1.terms(), Some(&terms));
        assert!(c1.holds(id_hash("u1")) && c1.issued() == 1);
        for r in ["admin", "r2"] {
            assert!(book.already_decided(id_hash(r)), "kept under its bare hash");
            for cmd in [issue(r, "c1", "u1"), issue(r, "c2", "u9")] {
                assert_eq!(
                    book.seen(&Request::of(&cmd)),
                    Seen::RetryUnchecked,
                    "{r}: decided with no fingerprint nor coupon, any repeat is a retry"
                );
            }
        }
        // An old ISSUED entry names its coupon: kept under its identity.
        assert!(book.already_decided(request_identity("c1", "r1")));
        assert!(!book.already_decided(id_hash("r1")));
        assert_eq!(
            book.seen(&Request::of(&issue("r1", "c1", "u9"))),
            Seen::RetryUnchecked
        );
        assert_eq!(
            book.seen(&Request::of(&issue("r1", "c2", "u1"))),
            Seen::New,
            "r1 of another coupon is another request"
        );
        assert_eq!(
            book.seen(&Request::of(&issue("r3", "c1", "u3"))),
            Seen::Retry
        );
        assert_eq!(
            book.seen(&Request::of(&issue("r3", "c1", "u1"))),
            Seen::Reused
        );
        let approx = book.approx_bytes();
        assert!(
            approx >= book.decided.capacity() * 17,
            "a decided entry is 16 bytes and a control byte: {approx}"
        );
    }

    /// Entries from layouts with no decision time count as decided when
    /// the clock first moved (the first record this version decided on the
    /// partition), so they expire one window after it, not at once; an
    /// old ISSUED entry never expires.
    #[test]
    fn entries_without_a_time_expire_one_window_after_the_clock_started() {
        let key = unscoped_key;
        let legacy: Vec<ChangelogRecord> = vec![
            (key("old-empty"), Some(old_value(None))),
            (
                key("old-issued"),
                Some(old_value(Some((id_hash("u1"), 1, "c1")))),
            ),
            (
                key("unstamped"),
                Some(request_value(
                    &Request::of(&issue("unstamped", "c1", "u3")),
                    None,
                )),
            ),
        ];
        let mut book: CouponBook = surge_engine::laws::restore_from(&legacy);
        assert_eq!((book.decided_len(), book.expirable_len()), (3, 2));
        let window = 60;
        assert!(
            book.expire(window, 10).is_none(),
            "a clock that never moved expires nothing"
        );
        let origin = 29_000_000; // minutes: 2025
        let at = |b: u32| i64::from(b) * BUCKET_MS;
        let mut changes = vec![book.advance(at(origin)).unwrap()];
        book.apply(&changes[0]);
        for (b, due) in [(origin + window, false), (origin + window + 1, true)] {
            let c = book.advance(at(b)).unwrap();
            book.apply(&c);
            changes.push(c);
            assert_eq!(
                book.expire(window, 10).is_some(),
                due,
                "clock at origin + {}",
                b - origin
            );
        }
        let expired = book.expire(window, 10).unwrap();
        book.apply(&expired);
        changes.push(expired);
        assert!(book.already_decided(request_identity("c1", "old-issued")));
        assert!(
            !book.already_decided(id_hash("old-empty"))
                && !book.already_decided(id_hash("unstamped"))
        );
        assert!(book.coupon("c1").is_none(), "no terms restored");
        assert_eq!(book.coupons["c1"].issued(), 1, "the old holder stays");
        // The whole log (old entries, then what this version wrote) restores the book.
        let mut log = legacy.clone();
        for c in &changes {
            book.changelog_records(c, &mut log);
        }
        assert!(log.contains(&(key("old-empty"), None)) && log.contains(&(key("unstamped"), None)));
        assert!(
            !log.contains(&(key("old-issued"), None)),
            "an ISSUED entry is never tombstoned"
        );
        surge_engine::laws::assert_restore_rebuilds(&book, &log);
        // As a restore meets it after compaction: the tombstones only.
        let compacted: Vec<ChangelogRecord> = log
            .iter()
            .filter(|(k, v)| v.is_none() || (k != &key("old-empty") && k != &key("unstamped")))
            .cloned()
            .collect();
        surge_engine::laws::assert_restore_rebuilds(&book, &compacted);
        // Revert undoes it all, back to the restored legacy book.
        for c in changes.iter().rev() {
            book.revert(c);
        }
        assert_eq!(book, surge_engine::laws::restore_from(&legacy));
    }

    #[test]
    fn an_entry_stays_twenty_bytes_or_less() {
        // The book's entry is unchanged by expiry (16 bytes); an expirable
        // entry adds its full hash (16) to the expiry queue.
        assert_eq!(std::mem::size_of::<DecidedEntry>(), 16);
    }
}
