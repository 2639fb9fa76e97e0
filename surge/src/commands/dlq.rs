//! `surge dlq list|replay`: the pipelines' dead letters, with their reasons
//! and provenance, and their replay to the source topic after a fix.
//!
//! A dead letter is the original record (key, value bytes, headers) plus the
//! `surge.dlq.*` headers the engine adds (pipelines/engine/src/deadletter.rs):
//! source topic, partition and offset, reason, message, pipeline.
//!
//! Replay is exactly once per dead letter, across reruns, crashes and
//! concurrent replays. For each dead-letter topic `<dlq>`:
//!
//! - one transactional producer with the fixed transactional.id
//!   `<prefix>surge-dlq-replay-<dlq>`: a second replay of the same topic
//!   fences the first, and its `init_transactions` ends (aborts) whatever
//!   transaction a crashed or fenced replay left open;
//! - the replayed record and a marker record, keyed `<partition>/<offset>` of
//!   the dead letter, on the compacted topic `<dlq>-replayed`, are written in
//!   the same transaction;
//! - only after `init_transactions` are the markers read (read_committed, to
//!   the end), and letters that have one are skipped.
//!
//! So a letter's replay is visible to read_committed readers (the pipelines)
//! if and only if its marker is, and a replay never skips a letter whose
//! marker is not committed. The marker topic is not declared in
//! config/topics.toml (the file declares exactly the names
//! `surge_core::Names` makes, which a surge-kafka test checks): the first
//! real replay of a topic creates it, compacted and kept forever, with the
//! dead-letter topic's replication settings.
//!
//! Test hook: `SURGE_TEST_DLQ_REPLAY_HOLD=before_commit` makes a replay stop
//! after its first transaction's records are acknowledged by the broker and
//! before the commit, printing a line on stderr and sleeping, so a test can
//! SIGKILL it there or start a second replay that fences it.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{ArgGroup, Args, Subcommand};
use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::json;
use surge_core::names::{Names, PIPELINES};
use surge_core::Settings;
use surge_kafka::{ClientFactory, QuietEofContext};

use surge_engine::deadletter::{
    MESSAGE, PIPELINE, REASON, SOURCE_OFFSET, SOURCE_PARTITION, SOURCE_TOPIC,
};
/// Every header surge adds to a dead letter starts with this; a replay drops them.
const DLQ_HEADER_PREFIX: &str = "surge.dlq.";
/// On a replayed record: the dead letter it is a replay of, `<dlq-topic>/<partition>/<offset>`.
pub const REPLAY_OF: &str = "surge.dlq.replay-of";
/// The test hook (see the module documentation).
pub const HOLD_VAR: &str = "SURGE_TEST_DLQ_REPLAY_HOLD";

/// Dead letters replayed per transaction.
const CHUNK: usize = 100;
/// Kafka calls (metadata, watermarks, transactions).
const TIMEOUT: Duration = Duration::from_secs(30);
/// A reader that receives nothing for this long gives up.
const STALL: Duration = Duration::from_secs(30);
/// Progress on stderr every this often while reading a long topic.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

const LIST_ABOUT: &str = "\
List dead letters: one line per record of the dead-letter topic(s), with why \
it could not be processed, where it came from, and whether it was replayed.

Reads the dead-letter topic of --pipeline (<prefix><name>-pipeline-dlq), the \
topic --topic names, or, without either, of every pipeline, as a \
read_committed consumer from the beginning to the current end, and stops \
there (progress on stderr when that takes long). Each line:

  <dlq-topic>/<partition>/<offset> <time> pipeline=<name> reason=<reason>
    source=<topic>/<partition>/<offset> key=\"<key>\" bytes=<value size>
    replayed=<no | <topic>/<partition>/<offset>@<time>> [replay-of=<dlq-topic>/<p>/<o>]
    message=\"<the error>\"

(on one line). `replayed` is where `surge dlq replay` wrote the record back \
and when; `replay-of` marks a dead letter that is itself a replayed record \
that failed again. Reasons are the codec's (empty, truncated, bad_magic, \
unknown_schema_id, bad_avro_body, contract_violation) or a pipeline's own. \
The last line counts the matching dead letters by reason (on stderr with \
--json, so stdout is one JSON object per dead letter).";

const LIST_EXAMPLES: &str = "\
Examples:
  surge dlq list                                  every pipeline's dead letters
  surge dlq list --pipeline coupon --reason unknown_schema_id
  surge dlq list --topic tenant-a.order-pipeline-dlq --limit 20
  surge dlq list --pipeline coupon --json | jq -r 'select(.replayed | not) | .coordinates'";

const REPLAY_ABOUT: &str = "\
Replay dead letters to where they came from, exactly once, after the cause \
is fixed (e.g. the missing schema is registered).

Each chosen dead letter's original key, value bytes and headers (without the \
surge.dlq.* headers, plus surge.dlq.replay-of=<dlq-topic>/<partition>/<offset>) \
are produced to its source topic and source partition; the pipeline decides \
it there like any record (or dead-letters it again, as a new dead letter \
showing replay-of). Choose with --offsets (requires --pipeline or --topic), \
--reason or --all; --pipeline/--topic as for `surge dlq list` (default: every \
pipeline's dead-letter topic).

Exactly once across reruns, crashes and concurrent runs: per dead-letter \
topic one transactional producer (transactional.id \
<prefix>surge-dlq-replay-<dlq-topic>, so a second replay of the same topic \
fences the first) writes each replayed record and a marker (compacted topic \
<dlq-topic>-replayed, key <partition>/<offset>, created on first use) in one \
transaction; markers are read after the producer is initialised and letters \
with one are skipped. Rerunning the same command is always safe: it replays \
what has not been replayed. Prints one line per dead letter (replayed, \
skipped, or with --dry-run would replay) and a summary per topic.";

const REPLAY_EXAMPLES: &str = "\
Examples:
  surge dlq replay --pipeline coupon --reason unknown_schema_id --dry-run
  surge dlq replay --pipeline coupon --reason unknown_schema_id
  surge dlq replay --pipeline order --offsets 0:17,0:18
  surge dlq replay --all

Exit codes: 0 when every chosen dead letter is replayed or was already; 1 on \
an error (nothing of an unfinished transaction is visible; rerun to \
continue); 2 on bad arguments (unknown pipeline, malformed PARTITION:OFFSET).";

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead letters with their reasons, provenance and replay state; counts by reason.
    #[command(long_about = LIST_ABOUT, after_long_help = LIST_EXAMPLES)]
    List(ListArgs),
    /// Replay chosen dead letters to their source topic and partition, exactly once.
    #[command(long_about = REPLAY_ABOUT, after_long_help = REPLAY_EXAMPLES)]
    Replay(ReplayArgs),
}

/// Which dead-letter topic(s).
#[derive(Debug, Clone, Args)]
pub struct Which {
    /// The dead-letter topic of this pipeline (<prefix><NAME>-pipeline-dlq).
    #[arg(
        long,
        value_name = "NAME",
        value_parser = clap::builder::PossibleValuesParser::new(PIPELINES.iter().copied()),
        conflicts_with = "topic"
    )]
    pipeline: Option<String>,
    /// A dead-letter topic by its full Kafka name (prefix included).
    #[arg(long, value_name = "DLQ_TOPIC")]
    topic: Option<String>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    which: Which,
    /// Only dead letters with this reason (e.g. unknown_schema_id, truncated).
    #[arg(long, value_name = "R")]
    reason: Option<String>,
    /// Print only the newest N matching dead letters (the summary still counts all).
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// One JSON object per dead letter on stdout (the summary goes to stderr).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("select").required(true).args(["offsets", "reason", "all"])))]
pub struct ReplayArgs {
    #[command(flatten)]
    which: Which,
    /// These dead letters, as PARTITION:OFFSET in the dead-letter topic
    /// (as `surge dlq list` prints them), comma-separated: 0:17,0:18.
    #[arg(long, value_name = "P:O", value_delimiter = ',', value_parser = parse_coord)]
    offsets: Vec<Coord>,
    /// Every dead letter with this reason.
    #[arg(long, value_name = "R")]
    reason: Option<String>,
    /// Every dead letter.
    #[arg(long)]
    all: bool,
    /// Print what would be replayed and skipped; write nothing.
    #[arg(long)]
    dry_run: bool,
}

/// A record's place in its topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Coord {
    partition: i32,
    offset: i64,
}

impl fmt::Display for Coord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.partition, self.offset)
    }
}

fn parse_coord(s: &str) -> Result<Coord, String> {
    let bad = || format!("`{s}`: expected PARTITION:OFFSET (two numbers ≥ 0), e.g. 0:17");
    let (p, o) = s.trim().split_once(':').ok_or_else(bad)?;
    let partition = p.trim().parse::<i32>().ok().filter(|p| *p >= 0);
    let offset = o.trim().parse::<i64>().ok().filter(|o| *o >= 0);
    match (partition, offset) {
        (Some(partition), Some(offset)) => Ok(Coord { partition, offset }),
        _ => Err(bad()),
    }
}

/// The marker key of a dead letter: `<partition>/<offset>`.
fn parse_marker_key(s: &str) -> Option<Coord> {
    let (p, o) = s.split_once('/')?;
    Some(Coord {
        partition: p.parse().ok()?,
        offset: o.parse().ok()?,
    })
}

/// The topic of `dlq`'s replay markers.
pub fn marker_topic(dlq: &str) -> String {
    format!("{dlq}-replayed")
}

/// The transactional.id of every replay of `dlq`.
pub fn transactional_id(names: &Names, dlq: &str) -> String {
    format!("{}surge-dlq-replay-{dlq}", names.prefix())
}

pub async fn run(cmd: DlqCommand, settings: &Settings) -> anyhow::Result<ExitCode> {
    let settings = settings.clone();
    let runtime = tokio::runtime::Handle::current();
    // Kafka's consumer polls and transaction calls block: off the async workers.
    tokio::task::spawn_blocking(move || match cmd {
        DlqCommand::List(args) => list(args, &settings),
        DlqCommand::Replay(args) => replay(args, &settings, &runtime),
    })
    .await?
}

/// A dead-letter topic to read, and whether the user named it (then it must exist).
struct Target {
    topic: String,
    named: bool,
}

fn targets(which: &Which, names: &Names) -> Vec<Target> {
    match (&which.pipeline, &which.topic) {
        (Some(p), _) => vec![Target {
            topic: names.dlq(p),
            named: true,
        }],
        (None, Some(t)) => vec![Target {
            topic: t.clone(),
            named: true,
        }],
        (None, None) => PIPELINES
            .iter()
            .map(|p| Target {
                topic: names.dlq(p),
                named: false,
            })
            .collect(),
    }
}

/// One record as read, headers in order.
struct Rec {
    coord: Coord,
    timestamp: Option<i64>,
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

/// Where a dead letter came from.
struct Source {
    topic: String,
    partition: i32,
    offset: i64,
}

impl Rec {
    fn from_message(m: &BorrowedMessage<'_>) -> Self {
        Self {
            coord: Coord {
                partition: m.partition(),
                offset: m.offset(),
            },
            timestamp: m.timestamp().to_millis(),
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().map(<[u8]>::to_vec),
            headers: m
                .headers()
                .map(|hs| {
                    hs.iter()
                        .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// The last header `key` (the engine appends its own after the
    /// original ones, so the last one is surge's).
    fn header(&self, key: &str) -> Option<String> {
        self.headers
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.as_deref())
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    fn source(&self) -> Option<Source> {
        Some(Source {
            topic: self.header(SOURCE_TOPIC)?,
            partition: self.header(SOURCE_PARTITION)?.parse().ok()?,
            offset: self.header(SOURCE_OFFSET)?.parse().ok()?,
        })
    }

    fn reason(&self) -> String {
        self.header(REASON).unwrap_or_else(|| "-".into())
    }

    /// The headers the record had before it was dead-lettered.
    fn original_headers(&self) -> impl Iterator<Item = &(String, Option<Vec<u8>>)> {
        self.headers
            .iter()
            .filter(|(k, _)| !k.starts_with(DLQ_HEADER_PREFIX))
    }
}

fn time_text(millis: Option<i64>) -> String {
    millis
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| "-".into())
}

fn consumer(
    factory: &ClientFactory,
    names: &Names,
) -> anyhow::Result<BaseConsumer<QuietEofContext>> {
    // librdkafka wants a group id even for assign(); nothing is ever committed.
    let group = format!("{}surge-dlq-{}", names.prefix(), std::process::id());
    let mut cfg = factory.read_committed_consumer_config("dlq", &group);
    cfg.set("enable.partition.eof", "true");
    Ok(cfg.create_with_context(QuietEofContext)?)
}

/// The partition count of `topic`, `None` when it does not exist.
fn partitions(
    consumer: &BaseConsumer<QuietEofContext>,
    topic: &str,
) -> anyhow::Result<Option<i32>> {
    let md = consumer
        .fetch_metadata(Some(topic), TIMEOUT)
        .with_context(|| format!("metadata of {topic}"))?;
    let Some(t) = md.topics().first() else {
        return Ok(None);
    };
    match t.error() {
        None if !t.partitions().is_empty() => Ok(Some(t.partitions().len() as i32)),
        None => Ok(None),
        Some(e) => match RDKafkaErrorCode::from(e) {
            RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic => Ok(None),
            code => bail!("metadata of {topic}: {code}"),
        },
    }
}

/// The low and high watermarks of one partition, retrying while its leader
/// is being elected (a topic created a moment ago).
fn watermarks(
    consumer: &BaseConsumer<QuietEofContext>,
    topic: &str,
    partition: i32,
) -> anyhow::Result<(i64, i64)> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match consumer.fetch_watermarks(topic, partition, TIMEOUT) {
            Ok(w) => return Ok(w),
            Err(e)
                if Instant::now() < deadline
                    && matches!(
                        e.rdkafka_error_code(),
                        Some(
                            RDKafkaErrorCode::NotLeaderForPartition
                                | RDKafkaErrorCode::LeaderNotAvailable
                                | RDKafkaErrorCode::UnknownTopicOrPartition
                        )
                    ) =>
            {
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("watermarks of {topic} partition {partition}"))
            }
        }
    }
}

/// Reads every partition of `topic` (which has `count` partitions) as a
/// read_committed consumer from the beginning up to its end as of now (the
/// high watermark, or the last stable offset when a transaction is open),
/// calling `each` per record in partition order.
fn read_topic(
    consumer: &BaseConsumer<QuietEofContext>,
    topic: &str,
    count: i32,
    mut each: impl FnMut(Rec),
) -> anyhow::Result<()> {
    let mut ends: HashMap<i32, i64> = HashMap::new();
    let mut tpl = TopicPartitionList::new();
    let mut total = 0i64;
    for p in 0..count {
        let (low, high) = watermarks(consumer, topic, p)?;
        if high > low {
            ends.insert(p, high);
            tpl.add_partition_offset(topic, p, Offset::Beginning)?;
            total += high - low;
        }
    }
    if ends.is_empty() {
        return Ok(());
    }
    consumer.assign(&tpl)?;
    let started = Instant::now();
    let mut last_record = Instant::now();
    let mut last_report = Instant::now();
    let mut read = 0u64;
    while !ends.is_empty() {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                last_record = Instant::now();
                let (p, o) = (m.partition(), m.offset());
                if let Some(&high) = ends.get(&p) {
                    if o < high {
                        each(Rec::from_message(&m));
                        read += 1;
                    }
                    if o + 1 >= high {
                        ends.remove(&p);
                    }
                }
            }
            // For read_committed, the end is the last stable offset.
            Some(Err(KafkaError::PartitionEOF(p))) => {
                last_record = Instant::now();
                ends.remove(&p);
            }
            Some(Err(e)) => return Err(e).with_context(|| format!("reading {topic}")),
            None => {
                // Transaction markers at the end are never delivered: the position passes them.
                if let Ok(pos) = consumer.position() {
                    for e in pos.elements() {
                        if let (Offset::Offset(o), Some(&high)) =
                            (e.offset(), ends.get(&e.partition()))
                        {
                            if o >= high {
                                ends.remove(&e.partition());
                            }
                        }
                    }
                }
                if last_record.elapsed() > STALL {
                    bail!(
                        "reading {topic}: nothing received for {}s with {} partition(s) not at their end (is Kafka reachable?)",
                        STALL.as_secs(),
                        ends.len()
                    );
                }
            }
        }
        if started.elapsed() >= PROGRESS_EVERY && last_report.elapsed() >= PROGRESS_EVERY {
            eprintln!("[dlq] {topic}: {read} of ~{total} records read");
            last_report = Instant::now();
        }
    }
    consumer.unassign()?;
    Ok(())
}

/// A dead letter's replay, as its marker says.
#[derive(Debug, Clone)]
struct Replayed {
    to: String,
    at: String,
}

/// The committed markers of `dlq` (letter → its replay); a tombstone un-marks.
fn read_markers(
    consumer: &BaseConsumer<QuietEofContext>,
    topic: &str,
    count: i32,
) -> anyhow::Result<HashMap<Coord, Replayed>> {
    let mut out = HashMap::new();
    let mut unreadable = 0usize;
    read_topic(consumer, topic, count, |r| {
        let Some(coord) = r
            .key
            .as_deref()
            .and_then(|k| std::str::from_utf8(k).ok())
            .and_then(parse_marker_key)
        else {
            unreadable += 1;
            return;
        };
        match r.payload {
            None => {
                out.remove(&coord);
            }
            Some(p) => {
                // A marker whose value is not ours still marks the letter:
                // never replay twice because of a detail.
                let v: serde_json::Value = serde_json::from_slice(&p).unwrap_or_default();
                let field = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("?").to_string();
                out.insert(
                    coord,
                    Replayed {
                        to: field("replayed_to"),
                        at: field("replayed_at"),
                    },
                );
            }
        }
    })?;
    if unreadable > 0 {
        eprintln!(
            "[dlq] {topic}: {unreadable} record(s) without a <partition>/<offset> key ignored"
        );
    }
    Ok(out)
}

/// Markers of `dlq` for display: none when the marker topic does not exist yet.
fn markers_if_any(
    consumer: &BaseConsumer<QuietEofContext>,
    dlq: &str,
) -> anyhow::Result<HashMap<Coord, Replayed>> {
    let topic = marker_topic(dlq);
    match partitions(consumer, &topic)? {
        Some(n) => read_markers(consumer, &topic, n),
        None => Ok(HashMap::new()),
    }
}

// ---------------------------------------------------------------- list

/// What `list` prints of one dead letter.
struct View {
    text: String,
    json: serde_json::Value,
}

fn view(dlq: &str, r: &Rec, replayed: Option<&Replayed>) -> View {
    let coordinates = format!("{dlq}/{}", r.coord);
    let source = r.source();
    let source_text = source.as_ref().map_or_else(
        || "?".to_string(),
        |s| format!("{}/{}/{}", s.topic, s.partition, s.offset),
    );
    let key = r
        .key
        .as_deref()
        .map(|k| String::from_utf8_lossy(k).into_owned());
    let bytes = r.payload.as_ref().map_or(0, Vec::len);
    let pipeline = r.header(PIPELINE).unwrap_or_else(|| "-".into());
    let reason = r.reason();
    let message = r.header(MESSAGE).unwrap_or_default();
    let replay_of = r.header(REPLAY_OF);
    let time = time_text(r.timestamp);
    let mut text = format!(
        "{coordinates} {time} pipeline={pipeline} reason={reason} source={source_text} key={:?} bytes={bytes} replayed={}",
        key.as_deref().unwrap_or(""),
        replayed.map_or_else(|| "no".to_string(), |m| format!("{}@{}", m.to, m.at)),
    );
    if let Some(of) = &replay_of {
        text.push_str(&format!(" replay-of={of}"));
    }
    text.push_str(&format!(" message={message:?}"));
    let headers: serde_json::Map<String, serde_json::Value> = r
        .original_headers()
        .map(|(k, v)| {
            (
                k.clone(),
                v.as_deref().map_or(serde_json::Value::Null, |v| {
                    String::from_utf8_lossy(v).into_owned().into()
                }),
            )
        })
        .collect();
    let json = json!({
        "dlq_topic": dlq,
        "partition": r.coord.partition,
        "offset": r.coord.offset,
        "coordinates": coordinates,
        "timestamp": r.timestamp.map(|_| time.clone()),
        "pipeline": r.header(PIPELINE),
        "reason": r.header(REASON),
        "message": r.header(MESSAGE),
        "source": source.as_ref().map(|s| json!({
            "topic": s.topic, "partition": s.partition, "offset": s.offset,
        })),
        "key": key,
        "value_bytes": bytes,
        "headers": headers,
        "replay_of": replay_of,
        "replayed": replayed.is_some(),
        "replayed_to": replayed.map(|m| m.to.clone()),
        "replayed_at": replayed.map(|m| m.at.clone()),
    });
    View { text, json }
}

fn list(args: ListArgs, settings: &Settings) -> anyhow::Result<ExitCode> {
    let names = Names::from_settings(settings);
    let factory = ClientFactory::new(settings.kafka.clone());
    let consumer = consumer(&factory, &names)?;
    // reason → (count, replayed)
    let mut by_reason: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut kept: VecDeque<View> = VecDeque::new();
    let mut shown = 0u64;
    let mut read_any = false;
    let emit = |v: &View| {
        if args.json {
            println!("{}", v.json);
        } else {
            println!("{}", v.text);
        }
    };
    for target in targets(&args.which, &names) {
        let Some(count) = partitions(&consumer, &target.topic)? else {
            if target.named {
                bail!(
                    "dead-letter topic {} does not exist (names carry the prefix {:?}; `surge topics apply` creates the declared ones)",
                    target.topic,
                    names.prefix()
                );
            }
            eprintln!("[dlq] {}: no such topic, skipped", target.topic);
            continue;
        };
        read_any = true;
        let markers = markers_if_any(&consumer, &target.topic)?;
        read_topic(&consumer, &target.topic, count, |r| {
            let reason = r.reason();
            if args.reason.as_deref().is_some_and(|want| want != reason) {
                return;
            }
            let replayed = markers.get(&r.coord);
            let entry = by_reason.entry(reason).or_default();
            entry.0 += 1;
            entry.1 += u64::from(replayed.is_some());
            let v = view(&target.topic, &r, replayed);
            match args.limit {
                None => {
                    emit(&v);
                    shown += 1;
                }
                Some(n) => {
                    kept.push_back(v);
                    if kept.len() > n {
                        kept.pop_front();
                    }
                }
            }
        })?;
    }
    for v in &kept {
        emit(v);
        shown += 1;
    }
    if !read_any {
        bail!("none of the pipelines' dead-letter topics exists (prefix {:?}; see `surge topics apply`)", names.prefix());
    }
    let total: u64 = by_reason.values().map(|(n, _)| n).sum();
    let replayed: u64 = by_reason.values().map(|(_, r)| r).sum();
    let reasons = if by_reason.is_empty() {
        "none".to_string()
    } else {
        by_reason
            .iter()
            .map(|(r, (n, _))| format!("{r} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let summary = format!(
        "{total} dead letter(s){}, {replayed} replayed, {shown} shown; by reason: {reasons}",
        args.reason
            .as_deref()
            .map(|r| format!(" with reason {r}"))
            .unwrap_or_default()
    );
    if args.json {
        eprintln!("{summary}");
    } else {
        println!("{summary}");
    }
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------- replay

enum Selection {
    Offsets(BTreeSet<Coord>),
    Reason(String),
    All,
}

impl Selection {
    fn wants(&self, r: &Rec) -> bool {
        match self {
            Self::Offsets(set) => set.contains(&r.coord),
            Self::Reason(reason) => r.header(REASON).as_deref() == Some(reason.as_str()),
            Self::All => true,
        }
    }
}

#[derive(Default)]
struct Tally {
    replayed: u64,
    already: u64,
    unreplayable: u64,
}

fn replay(
    args: ReplayArgs,
    settings: &Settings,
    runtime: &tokio::runtime::Handle,
) -> anyhow::Result<ExitCode> {
    let selection = if !args.offsets.is_empty() {
        if args.which.pipeline.is_none() && args.which.topic.is_none() {
            eprintln!("surge dlq replay: --offsets needs --pipeline NAME or --topic DLQ_TOPIC (offsets are per dead-letter topic)");
            return Ok(ExitCode::from(2));
        }
        Selection::Offsets(args.offsets.iter().copied().collect())
    } else if let Some(r) = &args.reason {
        Selection::Reason(r.clone())
    } else {
        Selection::All
    };
    let names = Names::from_settings(settings);
    let factory = ClientFactory::new(settings.kafka.clone());
    let consumer = consumer(&factory, &names)?;
    let mut any = false;
    for target in targets(&args.which, &names) {
        let Some(count) = partitions(&consumer, &target.topic)? else {
            if target.named {
                bail!(
                    "dead-letter topic {} does not exist (names carry the prefix {:?})",
                    target.topic,
                    names.prefix()
                );
            }
            continue;
        };
        any = true;
        let tally = replay_topic(
            &target.topic,
            count,
            &selection,
            args.dry_run,
            settings,
            &names,
            &factory,
            &consumer,
            runtime,
        )?;
        let Tally {
            replayed,
            already,
            unreplayable,
        } = tally;
        let verb = if args.dry_run {
            "would replay"
        } else {
            "replayed"
        };
        println!(
            "{}: {verb} {replayed}, skipped {already} already replayed, {unreplayable} without provenance{}",
            target.topic,
            if args.dry_run { " (dry run: nothing written)" } else { "" }
        );
    }
    if !any {
        bail!("none of the pipelines' dead-letter topics exists (prefix {:?}; see `surge topics apply`)", names.prefix());
    }
    Ok(ExitCode::SUCCESS)
}

#[allow(clippy::too_many_arguments)]
fn replay_topic(
    dlq: &str,
    count: i32,
    selection: &Selection,
    dry_run: bool,
    settings: &Settings,
    names: &Names,
    factory: &ClientFactory,
    consumer: &BaseConsumer<QuietEofContext>,
    runtime: &tokio::runtime::Handle,
) -> anyhow::Result<Tally> {
    let mut chosen: Vec<Rec> = Vec::new();
    let mut reasons: BTreeSet<String> = BTreeSet::new();
    read_topic(consumer, dlq, count, |r| {
        reasons.insert(r.reason());
        if selection.wants(&r) {
            chosen.push(r);
        }
    })?;
    if let Selection::Offsets(set) = selection {
        let found: BTreeSet<Coord> = chosen.iter().map(|r| r.coord).collect();
        let missing: Vec<String> = set
            .difference(&found)
            .map(|c| format!("{}:{}", c.partition, c.offset))
            .collect();
        if !missing.is_empty() {
            bail!(
                "{dlq} has no dead letter at {} (nothing replayed; `surge dlq list --topic {dlq}` shows them as <topic>/<partition>/<offset>)",
                missing.join(", ")
            );
        }
    }
    if chosen.is_empty() {
        if let Selection::Reason(r) = selection {
            eprintln!(
                "[dlq] {dlq}: no dead letter with reason {r} (reasons there: {})",
                if reasons.is_empty() {
                    "none".to_string()
                } else {
                    reasons.into_iter().collect::<Vec<_>>().join(", ")
                }
            );
        }
        return Ok(Tally::default());
    }

    let mut tally = Tally::default();
    let mut todo: Vec<(Rec, Source)> = Vec::new();
    for r in chosen {
        match r.source() {
            Some(s) => todo.push((r, s)),
            None => {
                println!(
                    "skipped  {dlq}/{}: not a surge dead letter (no {SOURCE_TOPIC}/partition/offset headers)",
                    r.coord
                );
                tally.unreplayable += 1;
            }
        }
    }
    // Every source partition must exist before anything is written.
    let mut counts: HashMap<String, Option<i32>> = HashMap::new();
    for (r, s) in &todo {
        if !counts.contains_key(&s.topic) {
            counts.insert(s.topic.clone(), partitions(consumer, &s.topic)?);
        }
        match counts[&s.topic] {
            Some(n) if s.partition < n => {}
            Some(n) => bail!(
                "{dlq}/{}: source partition {} of {} does not exist (it has {n}); nothing replayed",
                r.coord,
                s.partition,
                s.topic
            ),
            None => bail!(
                "{dlq}/{}: source topic {} does not exist; nothing replayed",
                r.coord,
                s.topic
            ),
        }
    }

    if dry_run {
        let markers = markers_if_any(consumer, dlq)?;
        for (r, s) in &todo {
            match markers.get(&r.coord) {
                Some(m) => {
                    println!(
                        "skipped  {dlq}/{}: already replayed as {} at {}",
                        r.coord, m.to, m.at
                    );
                    tally.already += 1;
                }
                None => {
                    println!(
                        "would replay {dlq}/{} -> {}/{} (reason {}, originally {}/{}/{})",
                        r.coord,
                        s.topic,
                        s.partition,
                        r.reason(),
                        s.topic,
                        s.partition,
                        s.offset
                    );
                    tally.replayed += 1;
                }
            }
        }
        return Ok(tally);
    }

    let markers_topic = marker_topic(dlq);
    let marker_partitions = ensure_marker_topic(dlq, settings, factory, consumer, runtime)?;
    let txid = transactional_id(names, dlq);
    let producer: FutureProducer = factory
        .transactional_producer_config("dlq-replay", &txid)
        .create()
        .context("creating the replay producer")?;
    // Fences any other replay of this topic and ends (commits or aborts) the
    // transaction a previous one left open: only then are the markers complete.
    producer.init_transactions(TIMEOUT).with_context(|| {
        format!("starting transactions under transactional.id {txid} (another replay of {dlq} running?)")
    })?;
    let markers = read_markers(consumer, &markers_topic, marker_partitions)?;
    let mut pending: Vec<(Rec, Source)> = Vec::new();
    for (r, s) in todo {
        match markers.get(&r.coord) {
            Some(m) => {
                println!(
                    "skipped  {dlq}/{}: already replayed as {} at {}",
                    r.coord, m.to, m.at
                );
                tally.already += 1;
            }
            None => pending.push((r, s)),
        }
    }
    let hold = std::env::var(HOLD_VAR).ok();
    if let Some(h) = &hold {
        if h != "before_commit" {
            bail!("{HOLD_VAR}={h:?}: the only hook is before_commit");
        }
    }
    let total = pending.len();
    for chunk in pending.chunks(CHUNK) {
        let done =
            send_chunk(&producer, dlq, &markers_topic, chunk, hold.is_some()).and_then(|lines| {
                producer
                    .commit_transaction(TIMEOUT)
                    .context("committing the replay transaction")?;
                Ok(lines)
            });
        match done {
            Ok(lines) => {
                for l in lines {
                    println!("{l}");
                }
                tally.replayed += chunk.len() as u64;
                if total > CHUNK {
                    eprintln!("[dlq] {dlq}: {} of {total} replayed", tally.replayed);
                }
            }
            Err(e) => {
                let _ = producer.abort_transaction(TIMEOUT);
                return Err(e.context(format!(
                    "{dlq}: {} replayed and committed before this error; the failed transaction's records are not visible to read_committed readers — rerun the same command to replay the rest (what committed is skipped)",
                    tally.replayed
                )));
            }
        }
    }
    Ok(tally)
}

/// Replays `chunk` and writes its markers inside a new transaction (not
/// committed here); returns the lines to print once it commits.
fn send_chunk(
    producer: &FutureProducer,
    dlq: &str,
    markers_topic: &str,
    chunk: &[(Rec, Source)],
    hold: bool,
) -> anyhow::Result<Vec<String>> {
    producer.begin_transaction()?;
    let mut deliveries: Vec<DeliveryFuture> = Vec::with_capacity(chunk.len());
    for (r, s) in chunk {
        let replay_of = format!("{dlq}/{}", r.coord);
        let mut headers = OwnedHeaders::new();
        for (k, v) in r.original_headers() {
            headers = headers.insert(Header {
                key: k.as_str(),
                value: v.as_deref(),
            });
        }
        headers = headers.insert(Header {
            key: REPLAY_OF,
            value: Some(replay_of.as_str()),
        });
        let mut record = FutureRecord::<[u8], [u8]>::to(&s.topic)
            .partition(s.partition)
            .headers(headers);
        if let Some(k) = &r.key {
            record = record.key(k.as_slice());
        }
        if let Some(p) = &r.payload {
            record = record.payload(p.as_slice());
        }
        let d = producer
            .send_result(record)
            .map_err(|(e, _)| e)
            .with_context(|| format!("replaying {replay_of}"))?;
        deliveries.push(d);
    }
    let mut lines = Vec::with_capacity(chunk.len());
    let mut marker_deliveries = Vec::with_capacity(chunk.len());
    let now = time_text(Some(chrono::Utc::now().timestamp_millis()));
    for ((r, s), d) in chunk.iter().zip(deliveries) {
        let delivered = futures::executor::block_on(d)
            .map_err(|_| anyhow::anyhow!("the producer went away"))?
            .map_err(|(e, _)| e)
            .with_context(|| format!("replaying {dlq}/{} to {}", r.coord, s.topic))?;
        let to = format!("{}/{}/{}", s.topic, delivered.partition, delivered.offset);
        let key = r.coord.to_string();
        let value = json!({
            "dlq": format!("{dlq}/{}", r.coord),
            "source": format!("{}/{}/{}", s.topic, s.partition, s.offset),
            "reason": r.header(REASON),
            "replayed_to": to,
            "replayed_at": now,
        })
        .to_string();
        let m = producer
            .send_result(
                FutureRecord::<str, str>::to(markers_topic)
                    .key(&key)
                    .payload(&value),
            )
            .map_err(|(e, _)| e)
            .context("writing a replay marker")?;
        marker_deliveries.push(m);
        lines.push(format!(
            "replayed {dlq}/{} -> {to} (reason {}, originally {}/{}/{})",
            r.coord,
            r.reason(),
            s.topic,
            s.partition,
            s.offset
        ));
    }
    for m in marker_deliveries {
        futures::executor::block_on(m)
            .map_err(|_| anyhow::anyhow!("the producer went away"))?
            .map_err(|(e, _)| e)
            .context("writing a replay marker")?;
    }
    if hold {
        eprintln!(
            "[dlq] test hook {HOLD_VAR}=before_commit: {} replay(s) and marker(s) acknowledged, holding the transaction open",
            chunk.len()
        );
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    Ok(lines)
}

/// Creates `<dlq>-replayed` when missing (compacted, kept forever, one
/// partition, the dead-letter topic's replication settings) and waits until
/// it is in the metadata; returns its partition count.
fn ensure_marker_topic(
    dlq: &str,
    settings: &Settings,
    factory: &ClientFactory,
    consumer: &BaseConsumer<QuietEofContext>,
    runtime: &tokio::runtime::Handle,
) -> anyhow::Result<i32> {
    let topic = marker_topic(dlq);
    if let Some(n) = partitions(consumer, &topic)? {
        return Ok(n);
    }
    let declared = surge_kafka::topics::load(&settings.topics.file, &settings.topics)
        .ok()
        .and_then(|specs| specs.into_iter().find(|s| s.name == dlq));
    let rf = declared
        .as_ref()
        .map(|s| s.replication_factor)
        .or(settings.topics.replication_factor)
        .unwrap_or(1);
    let min_isr = declared
        .as_ref()
        .map(|s| s.min_insync_replicas)
        .or(settings.topics.min_insync_replicas)
        .unwrap_or(1)
        .to_string();
    let new = NewTopic::new(&topic, 1, TopicReplication::Fixed(rf))
        .set("cleanup.policy", "compact")
        .set("retention.ms", "-1")
        .set("min.insync.replicas", &min_isr);
    let admin = factory.admin()?;
    let opts = AdminOptions::new()
        .operation_timeout(Some(TIMEOUT))
        .request_timeout(Some(TIMEOUT));
    for r in runtime.block_on(admin.create_topics([&new], &opts))? {
        match r {
            Ok(name) => eprintln!("[dlq] created {name} (replay markers: compacted, kept forever)"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => bail!("cannot create the marker topic {name}: {code}"),
        }
    }
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(n) = partitions(consumer, &topic)? {
            return Ok(n);
        }
        if Instant::now() >= deadline {
            bail!("{topic} was created but is not in the metadata after {TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coordinates_parse_strictly() {
        assert_eq!(
            parse_coord("0:17"),
            Ok(Coord {
                partition: 0,
                offset: 17
            })
        );
        assert_eq!(
            parse_coord(" 2 : 5 ").map(|c| c.to_string()),
            Ok("2/5".into())
        );
        for bad in ["", "0", "0:", ":1", "a:1", "0:x", "-1:3", "0:-3", "0/17"] {
            assert!(parse_coord(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            parse_marker_key("3/44"),
            Some(Coord {
                partition: 3,
                offset: 44
            })
        );
        assert_eq!(parse_marker_key("3:44"), None);
    }

    #[test]
    fn replay_names_derive_from_the_dead_letter_topic() {
        let n = Names::new("t1-");
        let dlq = n.dlq("coupon");
        assert_eq!(marker_topic(&dlq), "t1-coupon-pipeline-dlq-replayed");
        assert_eq!(
            transactional_id(&n, &dlq),
            "t1-surge-dlq-replay-t1-coupon-pipeline-dlq"
        );
    }
}
