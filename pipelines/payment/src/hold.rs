//! A test hook: stop the pipeline at one step of a payment so a test can
//! SIGKILL it exactly there (the crash-point matrix). Armed only by the
//! environment variable `SURGE_TEST_PAYMENT_HOLD_AT=<kind>:<step>`, e.g.
//! `refund:answer_received`; unset, every check is a no-op.

use crate::attempts::{Attempt, Kind};

pub const VAR: &str = "SURGE_TEST_PAYMENT_HOLD_AT";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The attempt's intent is committed; no call made.
    IntentRecorded,
    /// The call is on its way to the provider.
    RequestSent,
    /// The definite answer is in memory, not committed.
    AnswerReceived,
    /// The answer is committed with the reply.
    ResultCommitted,
}

impl Step {
    pub const ALL: [Step; 4] = [
        Step::IntentRecorded,
        Step::RequestSent,
        Step::AnswerReceived,
        Step::ResultCommitted,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Step::IntentRecorded => "intent_recorded",
            Step::RequestSent => "request_sent",
            Step::AnswerReceived => "answer_received",
            Step::ResultCommitted => "result_committed",
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Hold(Option<(Kind, Step)>);

impl Hold {
    pub fn from_env() -> Self {
        let Ok(value) = std::env::var(VAR) else {
            return Self(None);
        };
        let parsed = value.split_once(':').and_then(|(k, s)| {
            let kind = match k {
                "charge" => Kind::Charge,
                "refund" => Kind::Refund,
                _ => return None,
            };
            Step::ALL
                .into_iter()
                .find(|step| step.label() == s)
                .map(|step| (kind, step))
        });
        match parsed {
            Some(h) => {
                tracing::warn!(message = "test hook armed: the pipeline will stop at a payment step", hook = %value);
                Self(Some(h))
            }
            None => panic!("{VAR}={value:?}: expected <charge|refund>:<step>"),
        }
    }

    pub fn at(&self, step: Step, kind: Kind) -> bool {
        self.0 == Some((kind, step))
    }

    pub fn at_any(&self, step: Step, attempts: &[(i32, Attempt)]) -> bool {
        attempts.iter().any(|(_, a)| self.at(step, a.kind))
    }

    /// The kind the hook waits for at `step`, if armed there.
    pub fn armed(&self, step: Step) -> Option<Kind> {
        self.0.filter(|(_, s)| *s == step).map(|(k, _)| k)
    }

    fn announce(step: Step) {
        // Tests wait for this line, then kill the process.
        tracing::warn!(
            message = "payment pipeline held at a step (test hook)",
            step = %step.label()
        );
    }

    /// Parks the calling task for good.
    pub async fn stop(&self, step: Step) {
        Self::announce(step);
        std::future::pending::<()>().await;
    }

    /// Parks the pipeline loop's thread for good.
    pub fn block(&self, step: Step) {
        Self::announce(step);
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
}
