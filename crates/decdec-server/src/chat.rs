//! Terminal chat: history, streaming replies, `/reset`, `/exit` (EOF exits too).

use anyhow::Result;
use decdec_model::generate::{generate, GenerateParams};
use decdec_model::{ChatMessage, Engine, Tokenizer};
use std::io::{BufRead, Write};

#[derive(Clone, Debug)]
pub struct ChatOptions {
    /// Optional system message kept at the top of the history (survives `/reset`).
    pub system: Option<String>,
    /// Sampling and the per-reply token limit. Turn `i` samples with `seed + i`, so a seeded
    /// session is reproducible without every turn drawing the same random numbers.
    pub params: GenerateParams,
    /// Print a `> ` prompt before reading each line (interactive terminals).
    pub show_prompt: bool,
}

/// Token ids for the conversation, rendered through the model's chat template.
pub fn conversation_ids(tokenizer: &Tokenizer, messages: &[ChatMessage]) -> Result<Vec<u32>> {
    let text = tokenizer.apply_chat_template(messages, true)?;
    // Templates carry their own special tokens; the plain fallback transcript needs BOS.
    tokenizer.encode(&text, tokenizer.chat_template.is_none())
}

pub const HELP: &str = "commands: /reset clears the history, /exit quits (Ctrl-D too)";

/// Run the chat until `/exit` or end of input. Replies stream to `out` as they are generated.
pub fn chat_loop(
    engine: &mut dyn Engine,
    tokenizer: &Tokenizer,
    opts: &ChatOptions,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
) -> Result<()> {
    let base: Vec<ChatMessage> = opts
        .system
        .iter()
        .map(|s| ChatMessage::new("system", s))
        .collect();
    let mut history = base.clone();
    let mut turn: u64 = 0;
    let mut line = String::new();
    loop {
        if opts.show_prompt {
            write!(out, "> ")?;
            out.flush()?;
        }
        line.clear();
        if input.read_line(&mut line)? == 0 {
            if opts.show_prompt {
                writeln!(out)?;
            }
            return Ok(());
        }
        let msg = line.trim_end_matches(['\n', '\r']);
        match msg.trim() {
            "" => continue,
            "/exit" | "/quit" => return Ok(()),
            "/reset" => {
                history = base.clone();
                writeln!(out, "(history cleared)")?;
                continue;
            }
            cmd if cmd.starts_with('/') => {
                writeln!(out, "unknown command {cmd}; {HELP}")?;
                continue;
            }
            _ => {}
        }
        history.push(ChatMessage::new("user", msg));
        let ids = match fit_history(engine, tokenizer, &mut history, base.len(), &opts.params) {
            Ok(ids) => ids,
            Err(e) => {
                history.pop();
                writeln!(out, "error: {e:#}")?;
                continue;
            }
        };
        let room = engine.max_seq_len() - ids.len();
        let mut params = opts.params.clone();
        params.max_tokens = params.max_tokens.min(room);
        params.sampling.seed = params.sampling.seed.wrapping_add(turn);
        turn += 1;
        let mut write_err = None;
        let result = generate(engine, tokenizer, &ids, &params, &mut |delta| match out
            .write_all(delta.as_bytes())
            .and_then(|_| out.flush())
        {
            Ok(()) => true,
            Err(e) => {
                write_err = Some(e);
                false
            }
        });
        if let Some(e) = write_err {
            return Err(e.into());
        }
        match result {
            Ok(reply) => {
                writeln!(out)?;
                history.push(ChatMessage::new("assistant", &reply.text));
            }
            Err(e) => {
                history.pop();
                writeln!(out, "\nerror: {e:#}")?;
            }
        }
    }
}

/// Drop the oldest exchanges (never the system message nor the newest user message) until the
/// prompt leaves room for a reply; returns the prompt ids.
fn fit_history(
    engine: &dyn Engine,
    tokenizer: &Tokenizer,
    history: &mut Vec<ChatMessage>,
    keep: usize,
    params: &GenerateParams,
) -> Result<Vec<u32>> {
    let max_seq = engine.max_seq_len();
    // Leave room for a useful reply, but never more than half the context.
    let reserve = params.max_tokens.clamp(1, (max_seq / 2).max(1));
    loop {
        let ids = conversation_ids(tokenizer, history)?;
        if ids.len() + reserve <= max_seq {
            return Ok(ids);
        }
        if history.len() <= keep + 1 {
            anyhow::bail!(
                "the message is too long: {} prompt tokens, the context holds {} with {} kept for the reply",
                ids.len(),
                max_seq,
                reserve
            );
        }
        history.remove(keep);
    }
}
