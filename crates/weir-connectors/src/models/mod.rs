//! Language models: the `ai_extract` step, what it needs of a model ([`ChatModel`]), and one folder per kind of
//! endpoint ([`openai`]). The step knows nothing of any endpoint's wire format; an endpoint knows nothing of
//! fields, caching or dead letters.

mod extract;
mod fields;
mod limits;
pub mod openai;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::error::Result;
use weir_engine::{ResolvedConnection, StepCounters};
use weir_spec::Retry;

pub use extract::table as extract;

/// One question to a chat model: a system message, worked examples as earlier turns, the user's message, and the
/// JSON Schema the answer must fit.
#[derive(Debug, Clone)]
pub struct Question {
    pub system: String,
    /// (user message, the answer expected), in order.
    pub examples: Vec<(String, String)>,
    pub user: String,
    pub schema: serde_json::Value,
}

/// What a model said, and what it counted.
#[derive(Debug)]
pub struct Reply {
    /// The answer's text, or why there is none (a refusal, an answer cut off at the token limit).
    pub answer: std::result::Result<String, String>,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// A model a step can ask.
#[async_trait]
pub trait ChatModel: Send + Sync {
    /// What identifies the model's answers: kept answers are found again by it.
    fn identity(&self) -> String;

    /// The request `question` becomes, as sent (no credentials), for `--dry-run`.
    fn request(&self, question: &Question) -> serde_json::Value;

    /// Asks, retrying as the step's policy says; `Err` when the request failed for good.
    async fn ask(&self, question: &Question) -> Result<Reply>;

    /// The most tokens an answer may take, for the tokens-per-minute estimate.
    fn max_answer_tokens(&self) -> u64;

    /// What `input` and `output` tokens cost, in millionths, when the connection sets prices.
    fn cost_micros(&self, input: u64, output: u64) -> Option<u64>;
}

/// How a step's requests are sent: its timeout (else the connection's), its retry policy, where retries count.
pub struct Sending {
    pub timeout: Option<Duration>,
    pub retry: Retry,
    pub counters: Arc<StepCounters>,
}

/// A kind of model endpoint, as the registry lists it.
pub trait ModelKind: Sync {
    fn connect(&self, connection: &ResolvedConnection, sending: Sending) -> Result<Box<dyn ChatModel>>;
}
