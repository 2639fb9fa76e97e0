//! The names and settings one pipeline runs with.

use surge_core::settings::PipelineSettings;

/// Topics, group and settings of one pipeline. Names come resolved (with
/// the deployment's prefix) from `surge_core::names`, never built here.
#[derive(Debug, Clone)]
pub struct PipelineSpec {
    /// Short name: metrics label, client ids.
    pub name: String,
    /// Input topics, co-partitioned: partition p of every input belongs to
    /// the same task, so they must have equal partition counts (checked at
    /// start). Index i here is `Incoming::input == i`.
    pub inputs: Vec<String>,
    /// Every topic a processor may send to (besides the changelog and the
    /// dead-letter topic). Misrouted inputs are forwarded to their own topic,
    /// which needs no declaration.
    pub outputs: Vec<String>,
    pub changelog_topic: String,
    pub dlq_topic: String,
    pub group_id: String,
    pub settings: PipelineSettings,
}

impl PipelineSpec {
    /// transactional.id: stable per instance, so a restart fences its predecessor.
    pub fn transactional_id(&self) -> String {
        format!("{}-{}", self.group_id, self.settings.instance_id)
    }

    /// The index of input `topic`.
    pub fn input_index(&self, topic: &str) -> Option<usize> {
        self.inputs.iter().position(|t| t == topic)
    }
}
