//! Who is in a consumer group, and what each member owns, as the group
//! coordinator sees it (DescribeGroups): what an operator asks when
//! partitions stall (`surge chaos` prints it when verify finds requests
//! undecided). (Not who holds an instance now: a static member that rejoins a
//! stable group takes over the old member's entry, client.id included.)
//!
//! A pipeline's group consumer sets its client.id with
//! [`member_client_id`], so the answer names instance and process: this API
//! does not return group.instance.id, and the pid tells one process from
//! its successor with the same instance.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaResult;

use crate::ClientFactory;

/// One member as the coordinator describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    pub member_id: String,
    pub client_id: String,
    pub host: String,
    /// (topic, partition) pairs of its current assignment.
    pub assignment: Vec<(String, i32)>,
}

impl MemberView {
    /// The (instance, pid) a pipeline consumer put in its client.id.
    pub fn identity(&self) -> Option<(&str, u32)> {
        parse_member_client_id(&self.client_id)
    }
}

/// A consumer group's state and members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupView {
    pub state: String,
    pub members: Vec<MemberView>,
}

impl GroupView {
    /// The member that owns `partition` of `topic`, if any.
    pub fn owner_of(&self, topic: &str, partition: i32) -> Option<&MemberView> {
        self.members.iter().find(|m| {
            m.assignment
                .iter()
                .any(|(t, p)| t == topic && *p == partition)
        })
    }
}

const INSTANCE_MARK: &str = "-instance-";
const PID_MARK: &str = "-pid-";

/// The client.id of a pipeline's group consumer: `<base>-instance-<i>-pid-<pid>`.
pub fn member_client_id(base: &str, instance: &str, pid: u32) -> String {
    format!("{base}{INSTANCE_MARK}{instance}{PID_MARK}{pid}")
}

fn parse_member_client_id(client_id: &str) -> Option<(&str, u32)> {
    let (_, rest) = client_id.split_once(INSTANCE_MARK)?;
    let (instance, pid) = rest.rsplit_once(PID_MARK)?;
    Some((instance, pid.parse().ok()?))
}

/// Describes `group` (blocking, up to `timeout`).
pub fn describe(factory: &ClientFactory, group: &str, timeout: Duration) -> KafkaResult<GroupView> {
    let consumer: BaseConsumer = factory.plain_config("describe-group").create()?;
    let list = consumer.fetch_group_list(Some(group), timeout)?;
    let Some(g) = list.groups().iter().find(|g| g.name() == group) else {
        return Ok(GroupView {
            state: "Dead".into(),
            members: vec![],
        });
    };
    let members = g
        .members()
        .iter()
        .map(|m| MemberView {
            member_id: m.id().to_string(),
            client_id: m.client_id().to_string(),
            host: m.client_host().to_string(),
            assignment: m.assignment().map(parse_assignment).unwrap_or_default(),
        })
        .collect();
    Ok(GroupView {
        state: g.state().to_string(),
        members,
    })
}

/// Decodes a ConsumerProtocolAssignment (any version: the topic-partition
/// array comes first after the version; what follows is ignored). A
/// malformed one reads as empty: this is for display and identity, never
/// for ownership decisions.
fn parse_assignment(bytes: &[u8]) -> Vec<(String, i32)> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if b.len() < n {
            return None;
        }
        let (head, tail) = b.split_at(n);
        *b = tail;
        Some(head)
    }
    fn i16_(b: &mut &[u8]) -> Option<i16> {
        Some(i16::from_be_bytes(take(b, 2)?.try_into().ok()?))
    }
    fn i32_(b: &mut &[u8]) -> Option<i32> {
        Some(i32::from_be_bytes(take(b, 4)?.try_into().ok()?))
    }
    fn parse(mut b: &[u8]) -> Option<Vec<(String, i32)>> {
        let _version = i16_(&mut b)?;
        let topics = i32_(&mut b)?.max(0);
        let mut out = Vec::new();
        for _ in 0..topics {
            let len = i16_(&mut b)?.max(0) as usize;
            let topic = String::from_utf8(take(&mut b, len)?.to_vec()).ok()?;
            let partitions = i32_(&mut b)?.max(0);
            for _ in 0..partitions {
                out.push((topic.clone(), i32_(&mut b)?));
            }
        }
        Some(out)
    }
    parse(bytes).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(client_id: &str, assignment: Vec<(String, i32)>) -> MemberView {
        MemberView {
            member_id: format!("m-{client_id}"),
            client_id: client_id.into(),
            host: "/127.0.0.1".into(),
            assignment,
        }
    }

    #[test]
    fn the_client_id_carries_instance_and_pid() {
        let id = member_client_id("surge-coupon", "0", 4242);
        assert_eq!(parse_member_client_id(&id), Some(("0", 4242)));
        // Instance names may contain the separators' words.
        let id = member_client_id("surge-coupon", "a-instance-b", 7);
        assert_eq!(parse_member_client_id(&id), Some(("a-instance-b", 7)));
        assert_eq!(parse_member_client_id("surge-coupon"), None);
        assert_eq!(parse_member_client_id("x-instance-0-pid-notanumber"), None);
    }

    #[test]
    fn assignments_decode_and_name_their_owner() {
        let mut b = vec![0, 1]; // version 1
        b.extend(1i32.to_be_bytes()); // one topic
        b.extend(5i16.to_be_bytes());
        b.extend(b"issue");
        b.extend(2i32.to_be_bytes());
        b.extend(3i32.to_be_bytes());
        b.extend(5i32.to_be_bytes());
        b.extend((-1i32).to_be_bytes()); // user data: null
        let parts = parse_assignment(&b);
        assert_eq!(parts, vec![("issue".into(), 3), ("issue".into(), 5)]);
        let g = GroupView {
            state: "Stable".into(),
            members: vec![member("a", vec![]), member("b", parts)],
        };
        assert_eq!(
            g.owner_of("issue", 5).map(|m| m.client_id.as_str()),
            Some("b")
        );
        assert!(g.owner_of("issue", 4).is_none());
        // Truncated bytes read as no assignment, never a panic.
        assert!(parse_assignment(&b[..9]).is_empty());
    }
}
