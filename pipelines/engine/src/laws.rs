//! What every [`PartitionState`] must satisfy for the engine's guarantees
//! to hold, as checks a pipeline's tests call on its own state type:
//!
//! - apply then revert (in reverse) is the identity, or an abort would
//!   leave a trace;
//! - restoring the changelog of a run rebuilds the state of the run, or a
//!   restart would decide differently from the instance it replaced.

use std::fmt::Debug;

use crate::processor::{ChangelogRecord, PartitionState};

/// Applies `changes` to a copy of `state`, reverts them in reverse order,
/// and asserts the copy equals `state` again.
pub fn assert_apply_revert_identity<S>(state: &S, changes: &[S::Change])
where
    S: PartitionState + Clone + PartialEq + Debug,
{
    let mut s = state.clone();
    for c in changes {
        s.apply(c);
    }
    for c in changes.iter().rev() {
        s.revert(c);
    }
    assert_eq!(&s, state, "apply then revert must be the identity");
}

/// State rebuilt from a changelog, in log order.
pub fn restore_from<S: PartitionState>(log: &[ChangelogRecord]) -> S {
    let mut s = S::default();
    for (i, (k, v)) in log.iter().enumerate() {
        if let Err(e) = s.restore(k, v.as_deref()) {
            panic!("changelog record {i} does not restore: {e}");
        }
    }
    s
}

/// Asserts that `log` restores to `state`.
pub fn assert_restore_rebuilds<S>(state: &S, log: &[ChangelogRecord])
where
    S: PartitionState + PartialEq + Debug,
{
    let restored: S = restore_from(log);
    assert_eq!(
        &restored, state,
        "restoring the changelog must rebuild the state of the run"
    );
}

/// Changelog records for `changes` applied in order to a default state,
/// coalesced per key as the engine writes them at commit.
pub fn changelog_of<S: PartitionState>(changes: &[S::Change]) -> (S, Vec<ChangelogRecord>) {
    let mut s = S::default();
    for c in changes {
        s.apply(c);
    }
    let mut records = Vec::new();
    for c in changes {
        s.changelog_records(c, &mut records);
    }
    let log = crate::task::coalesce(records);
    (s, log)
}
