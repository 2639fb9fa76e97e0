//! The saga's three co-partitioned inputs, all keyed by orderId.

use surge_engine::Inputs;
use surge_schemas::order::{OrderCancel, OrderCreate, OrderReply};
use surge_schemas::{Contract, DecodeError, TopicCodec};

/// Index of each input in the pipeline spec (`Incoming::input`).
pub const CREATE: usize = 0;
pub const CANCEL: usize = 1;
pub const REPLIES: usize = 2;

/// Base names of the inputs, in index order.
pub const TOPICS: [&str; 3] = [OrderCreate::TOPIC, OrderCancel::TOPIC, OrderReply::TOPIC];

/// One decoded input of the saga.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SagaInput {
    Create(OrderCreate),
    Cancel(OrderCancel),
    Reply(OrderReply),
}

/// Decodes each input with its topic's codec.
#[derive(Clone)]
pub struct SagaInputs {
    pub create: TopicCodec<OrderCreate>,
    pub cancel: TopicCodec<OrderCancel>,
    pub replies: TopicCodec<OrderReply>,
}

impl Inputs for SagaInputs {
    type Message = SagaInput;

    async fn decode(&self, input: usize, bytes: Option<&[u8]>) -> Result<SagaInput, DecodeError> {
        Ok(match input {
            CREATE => SagaInput::Create(self.create.decode(bytes).await?),
            CANCEL => SagaInput::Cancel(self.cancel.decode(bytes).await?),
            _ => SagaInput::Reply(self.replies.decode(bytes).await?),
        })
    }

    fn owner_key(message: &SagaInput) -> &str {
        match message {
            SagaInput::Create(m) => m.key(),
            SagaInput::Cancel(m) => m.key(),
            SagaInput::Reply(m) => m.key(),
        }
    }
}
