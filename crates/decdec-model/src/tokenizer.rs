//! Tokenizer (`tokenizer.json` through the `tokenizers` crate) plus `tokenizer_config.json`
//! (chat template, bos/eos) and incremental detokenization for streaming.

use anyhow::{anyhow, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: &str, content: &str) -> Self {
        ChatMessage {
            role: role.to_string(),
            content: content.to_string(),
        }
    }
}

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    /// Token ids that end generation (eos from tokenizer_config and config.json).
    pub eos_ids: Vec<u32>,
    pub chat_template: Option<String>,
    pub path: PathBuf,
}

fn special_token_text(v: Option<&Value>) -> Option<String> {
    match v {
        Some(Value::String(s)) => Some(s.clone()),
        // Some configs store {"content": "<s>", ...}
        Some(Value::Object(o)) => o.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

impl Tokenizer {
    /// Load `tokenizer.json` and, if present beside it, `tokenizer_config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        if !path.exists() {
            anyhow::bail!(
                "missing tokenizer: {} does not exist (pass --tokenizer PATH to point at a tokenizer.json)",
                path.display()
            );
        }
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| anyhow!("cannot load tokenizer {}: {e}", path.display()))?;
        let mut tok = Tokenizer {
            inner,
            bos_token: None,
            eos_token: None,
            eos_ids: Vec::new(),
            chat_template: None,
            path: path.to_path_buf(),
        };
        let cfg_path = path.with_file_name("tokenizer_config.json");
        if cfg_path.exists() {
            let text = std::fs::read_to_string(&cfg_path)
                .with_context(|| format!("cannot read {}", cfg_path.display()))?;
            let v: Value = serde_json::from_str(&text)
                .with_context(|| format!("{}: invalid JSON", cfg_path.display()))?;
            tok.bos_token = special_token_text(v.get("bos_token"));
            tok.eos_token = special_token_text(v.get("eos_token"));
            tok.chat_template = match v.get("chat_template") {
                Some(Value::String(s)) => Some(s.clone()),
                // A list of named templates: take "default".
                Some(Value::Array(a)) => a.iter().find_map(|t| {
                    (t.get("name").and_then(Value::as_str) == Some("default"))
                        .then(|| {
                            t.get("template")
                                .and_then(Value::as_str)
                                .map(str::to_string)
                        })
                        .flatten()
                }),
                _ => None,
            };
            if let Some(eos) = &tok.eos_token {
                if let Some(id) = tok.inner.token_to_id(eos) {
                    tok.eos_ids.push(id);
                }
            }
        }
        Ok(tok)
    }

    /// Add end-of-sequence ids from the model config (deduplicated).
    pub fn add_eos_ids(&mut self, ids: &[u32]) {
        for &id in ids {
            if !self.eos_ids.contains(&id) {
                self.eos_ids.push(id);
            }
        }
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Encode text; with `add_special` the tokenizer's post-processor decides BOS (as the perplexity
    /// protocol requires).
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode_fast(text, add_special)
            .map_err(|e| anyhow!("tokenizer {}: encode failed: {e}", self.path.display()))?;
        Ok(enc.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, true)
            .map_err(|e| anyhow!("tokenizer {}: decode failed: {e}", self.path.display()))
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn is_eos(&self, id: u32) -> bool {
        self.eos_ids.contains(&id)
    }

    /// Render the chat template. Models without one get a plain "role: content" transcript.
    pub fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String> {
        let Some(template) = &self.chat_template else {
            let mut s = String::new();
            for m in messages {
                s.push_str(&format!("{}: {}\n", m.role, m.content));
            }
            if add_generation_prompt {
                s.push_str("assistant:");
            }
            return Ok(s);
        };
        let mut env = minijinja::Environment::new();
        env.set_unknown_method_callback(minijinja_contrib_like_methods);
        env.add_function(
            "raise_exception",
            |msg: String| -> Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        env.add_template("chat", template)
            .context("the model's chat_template does not parse")?;
        let tmpl = env.get_template("chat")?;
        let out = tmpl
            .render(minijinja::context! {
                messages => messages,
                add_generation_prompt => add_generation_prompt,
                bos_token => self.bos_token.clone().unwrap_or_default(),
                eos_token => self.eos_token.clone().unwrap_or_default(),
            })
            .context("rendering the chat template failed")?;
        Ok(out)
    }
}

/// Python string methods used by common chat templates (`strip`, `startswith`, ...).
fn minijinja_contrib_like_methods(
    _state: &minijinja::State,
    value: &minijinja::Value,
    method: &str,
    args: &[minijinja::Value],
) -> Result<minijinja::Value, minijinja::Error> {
    let Some(s) = value.as_str() else {
        return Err(minijinja::Error::new(
            minijinja::ErrorKind::UnknownMethod,
            format!("unknown method {method}"),
        ));
    };
    let arg = |i: usize| args.get(i).and_then(|a| a.as_str()).unwrap_or("");
    Ok(match method {
        "strip" => s.trim().into(),
        "lstrip" => s.trim_start().into(),
        "rstrip" => s.trim_end().into(),
        "upper" => s.to_uppercase().into(),
        "lower" => s.to_lowercase().into(),
        "startswith" => s.starts_with(arg(0)).into(),
        "endswith" => s.ends_with(arg(0)).into(),
        "split" => {
            let parts: Vec<String> = if args.is_empty() {
                s.split_whitespace().map(str::to_string).collect()
            } else {
                s.split(arg(0)).map(str::to_string).collect()
            };
            parts.into()
        }
        "replace" => s.replace(arg(0), arg(1)).into(),
        _ => {
            return Err(minijinja::Error::new(
                minijinja::ErrorKind::UnknownMethod,
                format!("unknown string method {method}"),
            ))
        }
    })
}

/// Turns a growing list of generated ids into text deltas, holding back incomplete UTF-8 sequences
/// (byte-fallback tokens) until they complete.
pub struct StreamDecoder {
    ids: Vec<u32>,
    emitted: usize,
}

impl Default for StreamDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamDecoder {
    pub fn new() -> Self {
        StreamDecoder {
            ids: Vec::new(),
            emitted: 0,
        }
    }

    /// Push one id; returns the newly completed text (possibly empty).
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> Result<String> {
        self.ids.push(id);
        let text = tok.decode(&self.ids)?;
        if text.ends_with('\u{FFFD}') {
            return Ok(String::new());
        }
        if text.len() < self.emitted || !text.is_char_boundary(self.emitted) {
            // The decoder rewrote earlier text (rare with cleanup rules): emit nothing new.
            return Ok(String::new());
        }
        let delta = text[self.emitted..].to_string();
        self.emitted = text.len();
        Ok(delta)
    }

    pub fn text(&self, tok: &Tokenizer) -> Result<String> {
        tok.decode(&self.ids)
    }
}
