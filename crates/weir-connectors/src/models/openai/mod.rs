//! `openai` connections: any chat endpoint that speaks OpenAI's `/chat/completions` (OpenAI, Azure OpenAI's v1
//! API, vLLM, llama.cpp's server, Ollama, LM Studio, LiteLLM). Answers are held to the step's schema with
//! `response_format: json_schema` (strict) where the server has it, or JSON mode.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use datafusion::error::{DataFusionError, Result};
use reqwest::{Method, Url};
use serde_json::{Value, json};
use weir_engine::ResolvedConnection;
use weir_spec::{Capabilities, ConnectionKind, ConnectionOption, Family, OptionType, UrlUse};

use super::{ChatModel, ModelKind, Question, Reply, Sending};
use crate::http::auth::Auth;
use crate::http::client::{Client, Request};

const OPTIONS: &[ConnectionOption] = &[
    ConnectionOption::new("model", OptionType::Text, "the model to ask, as the server names it"),
    ConnectionOption::new("api_key", OptionType::Secret, "sent as `Authorization: Bearer …`; best `${OPENAI_API_KEY}`"),
    ConnectionOption::new(
        "temperature",
        OptionType::Text,
        "sampling temperature; 0 answers the same text the same way",
    )
    .default("0"),
    ConnectionOption::new("seed", OptionType::Integer, "asks the server for repeatable sampling, where it can"),
    ConnectionOption::new("max_tokens", OptionType::Integer, "the most tokens one answer may take").default("512"),
    ConnectionOption::new("timeout", OptionType::Duration, "time allowed for one request").default("60s"),
    ConnectionOption::new(
        "structured_output",
        OptionType::Text,
        "`json_schema` (strict structured output) or `json_object` (JSON mode, for servers without it)",
    )
    .default("json_schema"),
    ConnectionOption::new("input_price_per_1k", OptionType::Text, "price of 1,000 prompt tokens, for the cost figures"),
    ConnectionOption::new("output_price_per_1k", OptionType::Text, "price of 1,000 answer tokens"),
];

pub const KIND: ConnectionKind = ConnectionKind {
    name: "openai",
    family: Family::Model,
    description: "a language model behind an OpenAI-compatible chat endpoint, for ai_extract",
    url: UrlUse::Required("https://api.openai.com/v1"),
    option_groups: &[OPTIONS],
    feature: None,
    can: Capabilities { read: true, write: false, execute: false, dead_letters: false, checkpoints: false },
};

/// The `openai` kind's entry in the registry of connection kinds.
pub const CONNECTOR: Option<crate::registry::Connector> = Some(crate::registry::Connector::Model(&OpenAiKind));

struct OpenAiKind;

impl ModelKind for OpenAiKind {
    fn connect(&self, conn: &ResolvedConnection, sending: Sending) -> Result<Box<dyn ChatModel>> {
        let bad = |message: String| DataFusionError::Plan(format!("connection `{}`: {message}", conn.name));
        if let Some(unknown) = conn.options.keys().find(|k| KIND.option(k).is_none()) {
            let known: Vec<&str> = KIND.options().map(|o| o.name).collect();
            return Err(bad(format!("no option `{unknown}`; the options are {}", known.join(", "))));
        }
        let text = |key: &str| conn.options.get(key).map(|v| v.expose().trim().to_string());
        let number = |key: &str| -> Result<Option<f64>> {
            text(key).map(|v| v.parse::<f64>().map_err(|_| bad(format!("`{key}` is `{v}`, not a number")))).transpose()
        };
        let model = text("model").ok_or_else(|| bad("needs option `model`: the model to ask".into()))?;
        let structured = match text("structured_output").as_deref() {
            None | Some("json_schema") => Structured::JsonSchema,
            Some("json_object") => Structured::JsonObject,
            Some(other) => {
                return Err(bad(format!("`structured_output` is `{other}`; use json_schema or json_object")));
            }
        };
        let timeout = match (sending.timeout, text("timeout")) {
            (Some(step), _) => step,
            (None, Some(t)) => humantime::parse_duration(&t).map_err(|e| bad(format!("`timeout`: {e}")))?,
            (None, None) => Duration::from_secs(60),
        };
        let integer = |key: &str| -> Result<Option<u64>> {
            text(key)
                .map(|v| v.parse::<u64>().map_err(|_| bad(format!("`{key}` is `{v}`, not a whole number"))))
                .transpose()
        };
        let auth = conn.options.get("api_key").map_or(Auth::None, |key| Auth::Bearer(key.clone()));
        let client = Client::new(auth, timeout, sending.retry, None)?.counting_retries(sending.counters);
        let url = Url::parse(&format!("{}/chat/completions", conn.url.expose().trim_end_matches('/')))
            .map_err(|e| bad(format!("`url` is not a URL: {e}")))?;
        Ok(Box::new(OpenAi {
            client,
            url,
            model,
            temperature: number("temperature")?.unwrap_or(0.0),
            seed: integer("seed")?,
            max_tokens: integer("max_tokens")?.unwrap_or(512),
            structured,
            prices: (number("input_price_per_1k")?, number("output_price_per_1k")?),
        }))
    }
}

#[derive(Debug, Clone, Copy)]
enum Structured {
    JsonSchema,
    JsonObject,
}

struct OpenAi {
    client: Client,
    url: Url,
    model: String,
    temperature: f64,
    seed: Option<u64>,
    max_tokens: u64,
    structured: Structured,
    prices: (Option<f64>, Option<f64>),
}

#[async_trait]
impl ChatModel for OpenAi {
    fn identity(&self) -> String {
        format!("{} temperature={} seed={:?}", self.model, self.temperature, self.seed)
    }

    fn request(&self, question: &Question) -> Value {
        let mut messages = vec![json!({ "role": "system", "content": question.system })];
        for (user, answer) in &question.examples {
            messages.push(json!({ "role": "user", "content": user }));
            messages.push(json!({ "role": "assistant", "content": answer }));
        }
        messages.push(json!({ "role": "user", "content": question.user }));
        let response_format = match self.structured {
            Structured::JsonSchema => json!({
                "type": "json_schema",
                "json_schema": { "name": "extraction", "strict": true, "schema": question.schema },
            }),
            Structured::JsonObject => json!({ "type": "json_object" }),
        };
        let mut body = json!({
            "model": self.model,
            "messages": messages,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "response_format": response_format,
        });
        if let Some(seed) = self.seed {
            body["seed"] = json!(seed);
        }
        body
    }

    async fn ask(&self, question: &Question) -> Result<Reply> {
        let body = serde_json::to_vec(&self.request(question)).map_err(|e| DataFusionError::External(Box::new(e)))?;
        let request =
            Request { method: Method::POST, url: self.url.clone(), headers: Vec::new(), body: Some(Bytes::from(body)) };
        let page = self.client.send(&request).await?;
        parse_completion(&page.body).map_err(|why| DataFusionError::Execution(format!("POST {}: {why}", self.url)))
    }

    fn max_answer_tokens(&self) -> u64 {
        self.max_tokens
    }

    fn cost_micros(&self, input: u64, output: u64) -> Option<u64> {
        match self.prices {
            (None, None) => None,
            // Prices are per 1,000 tokens; the figure is in millionths.
            (i, o) => {
                Some(((input as f64 * i.unwrap_or(0.0) + output as f64 * o.unwrap_or(0.0)) * 1000.0).round() as u64)
            }
        }
    }
}

/// The answer of a chat completion: its first choice's message, a refusal, or an answer cut off at the limit.
fn parse_completion(body: &[u8]) -> std::result::Result<Reply, String> {
    let completion: Value = serde_json::from_slice(body).map_err(|e| {
        format!(
            "the server's response is not JSON ({e}): {}",
            weir_engine::truncate(&String::from_utf8_lossy(body), 300)
        )
    })?;
    let usage = &completion["usage"];
    let tokens = |key: &str| usage[key].as_u64().unwrap_or(0);
    let choice = &completion["choices"][0];
    let message = &choice["message"];
    if message.is_null() {
        return Err(format!(
            "the response has no choices[0].message: {}",
            weir_engine::truncate(&completion.to_string(), 300)
        ));
    }
    let content = message["content"].as_str().map(str::to_string);
    let answer = match (message["refusal"].as_str(), choice["finish_reason"].as_str(), content) {
        (Some(refusal), ..) => Err(format!("the model refused: {refusal}")),
        (None, Some("length"), content) => {
            Err(format!("the answer was cut off at max_tokens: {}", content.as_deref().unwrap_or_default()))
        }
        (None, _, Some(content)) => Ok(content),
        (None, _, None) => Err("the model gave no answer (choices[0].message.content is empty)".to_string()),
    };
    Ok(Reply { answer, input_tokens: tokens("prompt_tokens"), output_tokens: tokens("completion_tokens") })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_give_the_answer_or_say_why_there_is_none() {
        let ok = br#"{"choices":[{"message":{"content":"{\"a\":1}"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":3}}"#;
        let reply = parse_completion(ok).unwrap();
        assert_eq!((reply.answer.unwrap(), reply.input_tokens, reply.output_tokens), ("{\"a\":1}".into(), 12, 3));
        let refused = br#"{"choices":[{"message":{"content":null,"refusal":"I cannot help with that"}}]}"#;
        assert_eq!(
            parse_completion(refused).unwrap().answer.unwrap_err(),
            "the model refused: I cannot help with that"
        );
        let cut = br#"{"choices":[{"message":{"content":"{\"a\":"},"finish_reason":"length"}]}"#;
        assert!(parse_completion(cut).unwrap().answer.unwrap_err().contains("cut off at max_tokens"));
        assert!(parse_completion(b"<html>").unwrap_err().contains("not JSON"));
    }
}
