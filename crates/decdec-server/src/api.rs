//! The OpenAI wire format: request validation (from raw JSON, so every bad field gets a 400 that
//! names it) and the response / stream-chunk bodies.

use crate::error::ApiError;
use decdec_model::generate::FinishReason;
use decdec_model::sampling::SamplingParams;
use decdec_model::ChatMessage;
use serde_json::{json, Map, Value};

/// At most this many stop strings per request (OpenAI allows 4; local clients sometimes send more).
pub const MAX_STOP_STRINGS: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Chat,
    Completions,
}

impl Endpoint {
    pub fn label(self) -> &'static str {
        match self {
            Endpoint::Chat => "chat",
            Endpoint::Completions => "completions",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum PromptInput {
    /// Chat messages, rendered through the model's chat template.
    Chat(Vec<ChatMessage>),
    /// Plain completion text (the tokenizer's BOS rule applies).
    Text(String),
    /// Completion prompt given as token ids.
    Tokens(Vec<u32>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct ParsedRequest {
    pub endpoint: Endpoint,
    pub prompt: PromptInput,
    /// `None`: until the context is full.
    pub max_tokens: Option<usize>,
    pub sampling: SamplingParams,
    pub stop: Vec<String>,
    pub stream: bool,
    pub include_usage: bool,
}

/// OpenAI's default for /v1/completions when `max_tokens` is absent.
const COMPLETIONS_DEFAULT_MAX_TOKENS: usize = 16;

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A field that is absent or JSON null.
fn field<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.get(name).filter(|v| !v.is_null())
}

fn get_bool(obj: &Map<String, Value>, name: &str) -> Result<Option<bool>, ApiError> {
    match field(obj, name) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(ApiError::invalid(
            Some(name),
            format!("`{name}` must be a boolean, got {}", type_name(v)),
        )),
    }
}

fn get_f64(obj: &Map<String, Value>, name: &str) -> Result<Option<f64>, ApiError> {
    match field(obj, name) {
        None => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(v) => Err(ApiError::invalid(
            Some(name),
            format!("`{name}` must be a number, got {}", type_name(v)),
        )),
    }
}

/// Integers written as `5` or `5.0` are accepted; `5.5` is not.
fn get_i64(obj: &Map<String, Value>, name: &str) -> Result<Option<i64>, ApiError> {
    let bad = |v: &Value| {
        ApiError::invalid(
            Some(name),
            format!("`{name}` must be an integer, got {}", value_preview(v)),
        )
    };
    match field(obj, name) {
        None => Ok(None),
        Some(v @ Value::Number(n)) => {
            if let Some(i) = n.as_i64() {
                Ok(Some(i))
            } else if let Some(u) = n.as_u64() {
                // Larger than i64::MAX: saturate (only seeds and huge limits get here).
                let _ = u;
                Ok(Some(i64::MAX))
            } else {
                match n.as_f64() {
                    Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(Some(f as i64)),
                    _ => Err(bad(v)),
                }
            }
        }
        Some(v) => Err(bad(v)),
    }
}

fn value_preview(v: &Value) -> String {
    match v {
        Value::Number(n) => n.to_string(),
        other => type_name(other).to_string(),
    }
}

fn parse_stop(obj: &Map<String, Value>) -> Result<Vec<String>, ApiError> {
    let stops = match field(obj, "stop") {
        None => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => {
            let mut out = Vec::with_capacity(a.len());
            for (i, s) in a.iter().enumerate() {
                match s {
                    Value::String(s) => out.push(s.clone()),
                    other => {
                        return Err(ApiError::invalid(
                            Some("stop"),
                            format!("`stop[{i}]` must be a string, got {}", type_name(other)),
                        ))
                    }
                }
            }
            out
        }
        Some(v) => {
            return Err(ApiError::invalid(
                Some("stop"),
                format!(
                    "`stop` must be a string or an array of strings, got {}",
                    type_name(v)
                ),
            ))
        }
    };
    if stops.len() > MAX_STOP_STRINGS {
        return Err(ApiError::invalid(
            Some("stop"),
            format!(
                "at most {MAX_STOP_STRINGS} stop strings are supported, got {}",
                stops.len()
            ),
        ));
    }
    Ok(stops.into_iter().filter(|s| !s.is_empty()).collect())
}

fn parse_messages(obj: &Map<String, Value>) -> Result<Vec<ChatMessage>, ApiError> {
    let Some(v) = field(obj, "messages") else {
        return Err(ApiError::invalid(
            Some("messages"),
            "`messages` is required",
        ));
    };
    let Value::Array(items) = v else {
        return Err(ApiError::invalid(
            Some("messages"),
            format!("`messages` must be an array, got {}", type_name(v)),
        ));
    };
    if items.is_empty() {
        return Err(ApiError::invalid(
            Some("messages"),
            "`messages` must hold at least one message",
        ));
    }
    let mut out = Vec::with_capacity(items.len());
    for (i, m) in items.iter().enumerate() {
        let param = format!("messages[{i}]");
        let Value::Object(m) = m else {
            return Err(ApiError::invalid(
                Some(&param),
                format!("`{param}` must be an object, got {}", type_name(m)),
            ));
        };
        let role = match m.get("role") {
            Some(Value::String(r)) => r.as_str(),
            _ => {
                return Err(ApiError::invalid(
                    Some(&format!("{param}.role")),
                    format!("`{param}.role` must be a string"),
                ))
            }
        };
        let role = match role {
            "system" | "user" | "assistant" | "tool" => role,
            // Newer OpenAI name for the system role; templates only know `system`.
            "developer" => "system",
            other => {
                return Err(ApiError::invalid(
                    Some(&format!("{param}.role")),
                    format!(
                        "`{param}.role` must be one of system, developer, user, assistant, tool; got `{other}`"
                    ),
                ))
            }
        };
        let content = match m.get("content") {
            None | Some(Value::Null) if role == "assistant" => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(parts)) => {
                let mut text = String::new();
                for (j, p) in parts.iter().enumerate() {
                    let pparam = format!("{param}.content[{j}]");
                    let ty = p.get("type").and_then(Value::as_str);
                    match (ty, p.get("text")) {
                        (Some("text"), Some(Value::String(t))) => text.push_str(t),
                        (Some("text"), _) => {
                            return Err(ApiError::invalid(
                                Some(&pparam),
                                format!("`{pparam}.text` must be a string"),
                            ))
                        }
                        (Some(other), _) => {
                            return Err(ApiError::invalid(
                                Some(&pparam),
                                format!(
                                    "content parts of type `{other}` are not supported (text only)"
                                ),
                            ))
                        }
                        (None, _) => {
                            return Err(ApiError::invalid(
                                Some(&pparam),
                                format!("`{pparam}` needs a `type`"),
                            ))
                        }
                    }
                }
                text
            }
            _ => {
                return Err(ApiError::invalid(
                    Some(&format!("{param}.content")),
                    format!("`{param}.content` must be a string or an array of text parts"),
                ))
            }
        };
        out.push(ChatMessage::new(role, &content));
    }
    Ok(out)
}

fn parse_prompt(obj: &Map<String, Value>, vocab_size: usize) -> Result<PromptInput, ApiError> {
    let Some(v) = field(obj, "prompt") else {
        return Err(ApiError::invalid(Some("prompt"), "`prompt` is required"));
    };
    let tokens = |a: &[Value]| -> Result<PromptInput, ApiError> {
        let mut ids = Vec::with_capacity(a.len());
        for t in a {
            match t.as_u64() {
                Some(id) if (id as usize) < vocab_size => ids.push(id as u32),
                _ => {
                    return Err(ApiError::invalid(
                        Some("prompt"),
                        format!(
                            "token prompts must hold integers in [0, {vocab_size}), got {}",
                            value_preview(t)
                        ),
                    ))
                }
            }
        }
        Ok(PromptInput::Tokens(ids))
    };
    match v {
        Value::String(s) => Ok(PromptInput::Text(s.clone())),
        Value::Array(a) if a.len() == 1 && a[0].is_string() => Ok(PromptInput::Text(
            a[0].as_str().unwrap_or_default().to_string(),
        )),
        Value::Array(a) if a.len() == 1 && a[0].is_array() => {
            tokens(a[0].as_array().map(Vec::as_slice).unwrap_or_default())
        }
        Value::Array(a) if a.iter().all(Value::is_number) && !a.is_empty() => tokens(a),
        Value::Array(a) if a.len() > 1 => Err(ApiError::invalid(
            Some("prompt"),
            "batched prompts are not supported: send one prompt per request",
        )),
        other => Err(ApiError::invalid(
            Some("prompt"),
            format!(
                "`prompt` must be a string or an array of token ids, got {}",
                type_name(other)
            ),
        )),
    }
}

/// Reject parameters we accept in the schema but cannot honour, rather than silently ignoring them.
fn reject_unsupported(obj: &Map<String, Value>, endpoint: Endpoint) -> Result<(), ApiError> {
    if let Some(n) = get_i64(obj, "n")? {
        if n != 1 {
            return Err(ApiError::invalid(Some("n"), "only `n` = 1 is supported"));
        }
    }
    for name in ["presence_penalty", "frequency_penalty"] {
        if let Some(p) = get_f64(obj, name)? {
            if p != 0.0 {
                return Err(ApiError::invalid(
                    Some(name),
                    format!("`{name}` is not supported (only 0)"),
                ));
            }
        }
    }
    match field(obj, "logprobs") {
        None | Some(Value::Bool(false)) => {}
        Some(Value::Number(n)) if n.as_f64() == Some(0.0) => {}
        Some(_) => {
            return Err(ApiError::invalid(
                Some("logprobs"),
                "`logprobs` is not supported",
            ))
        }
    }
    if let Some(Value::Array(t)) = field(obj, "tools") {
        if !t.is_empty() {
            return Err(ApiError::invalid(
                Some("tools"),
                "tool calling is not supported",
            ));
        }
    }
    if let Some(rf) = field(obj, "response_format") {
        if rf.get("type").and_then(Value::as_str) != Some("text") {
            return Err(ApiError::invalid(
                Some("response_format"),
                "only `response_format` {\"type\": \"text\"} is supported",
            ));
        }
    }
    if endpoint == Endpoint::Completions {
        if get_bool(obj, "echo")? == Some(true) {
            return Err(ApiError::invalid(Some("echo"), "`echo` is not supported"));
        }
        if field(obj, "suffix").is_some() {
            return Err(ApiError::invalid(
                Some("suffix"),
                "`suffix` is not supported",
            ));
        }
        if let Some(b) = get_i64(obj, "best_of")? {
            if b != 1 {
                return Err(ApiError::invalid(
                    Some("best_of"),
                    "only `best_of` = 1 is supported",
                ));
            }
        }
    }
    Ok(())
}

/// Parse and validate a request body. `model_name` is the one model this server serves.
pub fn parse_request(
    endpoint: Endpoint,
    body: &[u8],
    model_name: &str,
    vocab_size: usize,
) -> Result<ParsedRequest, ApiError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::invalid(None, format!("the request body is not valid JSON: {e}"))
            .with_code("invalid_json")
    })?;
    let Value::Object(obj) = v else {
        return Err(ApiError::invalid(
            None,
            format!(
                "the request body must be a JSON object, got {}",
                type_name(&v)
            ),
        ));
    };
    match field(&obj, "model") {
        Some(Value::String(m)) if m == model_name => {}
        Some(Value::String(m)) => return Err(ApiError::unknown_model(m, model_name)),
        Some(other) => {
            return Err(ApiError::invalid(
                Some("model"),
                format!("`model` must be a string, got {}", type_name(other)),
            ))
        }
        None => return Err(ApiError::invalid(Some("model"), "`model` is required")),
    }
    reject_unsupported(&obj, endpoint)?;

    let prompt = match endpoint {
        Endpoint::Chat => PromptInput::Chat(parse_messages(&obj)?),
        Endpoint::Completions => parse_prompt(&obj, vocab_size)?,
    };

    // `max_completion_tokens` is the newer chat name; either is accepted.
    let mut max_tokens = None;
    for name in ["max_tokens", "max_completion_tokens"] {
        if let Some(n) = get_i64(&obj, name)? {
            if n < 1 {
                return Err(ApiError::invalid(
                    Some(name),
                    format!("`{name}` must be at least 1, got {n}"),
                ));
            }
            max_tokens = Some(n as usize);
        }
    }
    if max_tokens.is_none() && endpoint == Endpoint::Completions {
        max_tokens = Some(COMPLETIONS_DEFAULT_MAX_TOKENS);
    }

    let temperature = get_f64(&obj, "temperature")?.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(ApiError::invalid(
            Some("temperature"),
            format!("`temperature` must be in [0, 2], got {temperature}"),
        ));
    }
    let top_p = get_f64(&obj, "top_p")?.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::invalid(
            Some("top_p"),
            format!("`top_p` must be in (0, 1], got {top_p}"),
        ));
    }
    // Not in OpenAI's schema but sent by llama.cpp / vLLM clients; -1 and 0 both mean "off".
    let top_k = match get_i64(&obj, "top_k")? {
        None => 0,
        Some(k) if k >= -1 => k.max(0) as usize,
        Some(k) => {
            return Err(ApiError::invalid(
                Some("top_k"),
                format!("`top_k` must be >= 0 (or -1 for off), got {k}"),
            ))
        }
    };
    // Without a seed every request samples differently, as with OpenAI.
    let seed = match get_i64(&obj, "seed")? {
        Some(s) => s as u64,
        None => rand::random::<u64>(),
    };
    let stop = parse_stop(&obj)?;
    let stream = get_bool(&obj, "stream")?.unwrap_or(false);
    let include_usage = match field(&obj, "stream_options") {
        None => false,
        Some(Value::Object(o)) => get_bool(o, "include_usage")
            .map_err(|e| ApiError {
                param: Some("stream_options.include_usage".into()),
                ..e
            })?
            .unwrap_or(false),
        Some(v) => {
            return Err(ApiError::invalid(
                Some("stream_options"),
                format!("`stream_options` must be an object, got {}", type_name(v)),
            ))
        }
    };

    Ok(ParsedRequest {
        endpoint,
        prompt,
        max_tokens,
        sampling: SamplingParams {
            temperature: temperature as f32,
            top_k,
            top_p: top_p as f32,
            seed,
        },
        stop,
        stream,
        include_usage,
    })
}

/// OpenAI's finish reasons; a cancelled request only reaches a client that has gone, so "stop".
pub fn finish_reason_str(r: FinishReason) -> &'static str {
    match r {
        FinishReason::Stop | FinishReason::Cancelled => "stop",
        FinishReason::Length => "length",
    }
}

/// Identity fields shared by every body of one response.
#[derive(Clone, Debug)]
pub struct ResponseMeta {
    pub id: String,
    pub created: u64,
    pub model: String,
    pub endpoint: Endpoint,
}

pub fn usage(prompt_tokens: usize, completion_tokens: usize) -> Value {
    json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    })
}

pub fn full_response(
    meta: &ResponseMeta,
    text: &str,
    finish: FinishReason,
    prompt_tokens: usize,
    completion_tokens: usize,
) -> Value {
    let choice = match meta.endpoint {
        Endpoint::Chat => json!({
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "logprobs": null,
            "finish_reason": finish_reason_str(finish),
        }),
        Endpoint::Completions => json!({
            "index": 0,
            "text": text,
            "logprobs": null,
            "finish_reason": finish_reason_str(finish),
        }),
    };
    json!({
        "id": meta.id,
        "object": match meta.endpoint {
            Endpoint::Chat => "chat.completion",
            Endpoint::Completions => "text_completion",
        },
        "created": meta.created,
        "model": meta.model,
        "system_fingerprint": null,
        "choices": [choice],
        "usage": usage(prompt_tokens, completion_tokens),
    })
}

/// One streamed chunk. `delta_text` None with `role` = the opening chat chunk.
pub fn chunk(
    meta: &ResponseMeta,
    delta_text: Option<&str>,
    opening: bool,
    finish: Option<FinishReason>,
) -> Value {
    let finish = finish.map(finish_reason_str);
    let choice = match meta.endpoint {
        Endpoint::Chat => {
            let mut delta = Map::new();
            if opening {
                delta.insert("role".into(), json!("assistant"));
                delta.insert("content".into(), json!(""));
            }
            if let Some(t) = delta_text {
                delta.insert("content".into(), json!(t));
            }
            json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish})
        }
        Endpoint::Completions => json!({
            "index": 0,
            "text": delta_text.unwrap_or(""),
            "logprobs": null,
            "finish_reason": finish,
        }),
    };
    chunk_envelope(meta, vec![choice])
}

/// The trailing usage chunk of `stream_options.include_usage` (empty `choices`).
pub fn usage_chunk(meta: &ResponseMeta, prompt_tokens: usize, completion_tokens: usize) -> Value {
    let mut c = chunk_envelope(meta, Vec::new());
    c["usage"] = usage(prompt_tokens, completion_tokens);
    c
}

/// The fields every streamed chunk carries around its `choices`.
fn chunk_envelope(meta: &ResponseMeta, choices: Vec<Value>) -> Value {
    json!({
        "id": meta.id,
        "object": match meta.endpoint {
            Endpoint::Chat => "chat.completion.chunk",
            Endpoint::Completions => "text_completion",
        },
        "created": meta.created,
        "model": meta.model,
        "system_fingerprint": null,
        "choices": choices,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<ParsedRequest, ApiError> {
        parse_request(Endpoint::Chat, body.as_bytes(), "m", 512)
    }

    #[test]
    fn fields_are_validated_by_name() {
        let ok = parse(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":5,"stop":"x","seed":3,"temperature":0}"#).unwrap();
        assert_eq!(ok.max_tokens, Some(5));
        assert_eq!(ok.stop, vec!["x".to_string()]);
        assert_eq!(ok.sampling.seed, 3);
        assert_eq!(ok.sampling.temperature, 0.0);
        let cases = [
            (
                r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":-1}"#,
                Some("max_tokens"),
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":1.5}"#,
                Some("max_tokens"),
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":"hot"}"#,
                Some("temperature"),
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"top_p":0}"#,
                Some("top_p"),
            ),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stop":[1]}"#,
                Some("stop"),
            ),
            (r#"{"model":"m","messages":[]}"#, Some("messages")),
            (
                r#"{"model":"m","messages":[{"role":"wizard","content":"hi"}]}"#,
                Some("messages[0].role"),
            ),
            (
                r#"{"model":"other","messages":[{"role":"user","content":"hi"}]}"#,
                Some("model"),
            ),
            (
                r#"{"messages":[{"role":"user","content":"hi"}]}"#,
                Some("model"),
            ),
            (r#"[1,2]"#, None),
            (r#"{"model":"m","#, None),
        ];
        for (body, param) in cases {
            let e = parse(body).expect_err(body);
            assert_eq!(e.status, 400, "{body}");
            assert_eq!(e.param.as_deref(), param, "{body}: {}", e.message);
        }
    }

    #[test]
    fn completion_prompts_accept_text_and_token_ids() {
        let p = |b: &str| parse_request(Endpoint::Completions, b.as_bytes(), "m", 10);
        assert_eq!(
            p(r#"{"model":"m","prompt":"abc"}"#).unwrap().prompt,
            PromptInput::Text("abc".into())
        );
        let r = p(r#"{"model":"m","prompt":[1,2,3]}"#).unwrap();
        assert_eq!(r.prompt, PromptInput::Tokens(vec![1, 2, 3]));
        assert_eq!(r.max_tokens, Some(16));
        assert_eq!(
            p(r#"{"model":"m","prompt":[1,20]}"#)
                .unwrap_err()
                .param
                .as_deref(),
            Some("prompt")
        );
        assert_eq!(
            p(r#"{"model":"m","prompt":["a","b"]}"#)
                .unwrap_err()
                .param
                .as_deref(),
            Some("prompt")
        );
    }
}
