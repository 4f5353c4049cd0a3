//! Webhook requests: who may send them, and which deliveries were seen already.

mod authenticate;
mod replay;

pub use authenticate::{Refused, authenticate};
pub use replay::{Answer, Delivery, Replays};
