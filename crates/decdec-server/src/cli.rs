//! `decdec serve` and `decdec chat`: clap arguments and entry points for the decdec binary.

use crate::chat::{chat_loop, ChatOptions, HELP};
use crate::server::{start, ServerOptions};
use anyhow::{bail, Context, Result};
use clap::Args;
use decdec_model::generate::GenerateParams;
use decdec_model::options::ModelArgs;
use decdec_model::sampling::SamplingParams;
use decdec_model::{Engine, Model, Tokenizer};
use std::io::IsTerminal;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;

#[derive(Args, Clone, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Name clients send as `model` (default: the model directory's name).
    #[arg(long)]
    pub model_name: Option<String>,
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Requests that may wait behind the running one; further requests get 429.
    #[arg(long, default_value_t = 64)]
    pub max_queue: usize,
    /// Largest request body in bytes; larger bodies get 413.
    #[arg(long, default_value_t = 4 << 20)]
    pub max_body_bytes: usize,
    /// Context length (KV cache positions; default: the model's, capped at 4096).
    #[arg(long)]
    pub ctx: Option<usize>,
    /// Require `Authorization: Bearer KEY` on /v1/* (default: no authentication).
    #[arg(long)]
    pub api_key: Option<String>,
}

#[derive(Args, Clone, Debug)]
pub struct ChatArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// System message placed before the conversation.
    #[arg(long)]
    pub system: Option<String>,
    /// Most tokens per reply.
    #[arg(long, default_value_t = 256)]
    pub max_tokens: usize,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.7)]
    pub temperature: f32,
    /// 0 = off.
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    #[arg(long, default_value_t = 0.9)]
    pub top_p: f32,
    /// Random seed (default: from the clock).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Context length (default: the model's, capped at 4096).
    #[arg(long)]
    pub ctx: Option<usize>,
}

/// The k_chunk each projection group of `model` runs with (`None` when no linear has residuals),
/// so /metrics reports the model's own defaults as well as `--k-chunk`.
pub fn effective_k_chunk(model: &Model) -> Option<[usize; 4]> {
    let mut k = [0usize; 4];
    let mut any = false;
    for layer in &model.layers {
        for lin in layer.linears() {
            if let Some(dec) = &lin.dec {
                let g = lin.proj.group().index();
                k[g] = k[g].max(dec.config.k_chunk);
                any = true;
            }
        }
    }
    any.then_some(k)
}

fn check_ctx(ctx: Option<usize>) -> Result<()> {
    if ctx == Some(0) {
        bail!("--ctx must be at least 1");
    }
    Ok(())
}

/// Default served name: the model directory's (or file's) name.
pub fn default_model_name(path: &Path) -> String {
    let p = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "decdec".to_string())
}

/// Ctrl-C, or SIGTERM (what service managers and `docker stop` send).
async fn wait_for_stop_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}

/// Serve `engine` until Ctrl-C or SIGTERM (the lead's CUDA engine plugs in here).
pub fn serve_blocking(
    engine: Box<dyn Engine>,
    tokenizer: Tokenizer,
    opts: ServerOptions,
    addr: SocketAddr,
) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let backend = engine.backend();
        let ctx = engine.max_seq_len();
        let model_name = opts.model_name.clone();
        let handle = start(engine, tokenizer, opts, addr).await?;
        eprintln!(
            "decdec serve: `{model_name}` on {backend} (context {ctx}) at http://{}/v1 (Ctrl-C stops)",
            handle.addr()
        );
        wait_for_stop_signal()
            .await
            .context("cannot listen for Ctrl-C / SIGTERM")?;
        eprintln!("decdec serve: stopping (finishing queued requests)");
        handle.shutdown().await
    })
}

pub fn run_serve(args: ServeArgs) -> Result<()> {
    check_ctx(args.ctx)?;
    if args.max_queue == 0 {
        bail!("--max-queue must be at least 1");
    }
    let addr = (args.host.as_str(), args.port)
        .to_socket_addrs()
        .with_context(|| format!("--host {} --port {}: not an address", args.host, args.port))?
        .next()
        .with_context(|| format!("--host {}: no address found", args.host))?;
    let lm = args.model.open()?;
    let k_chunk = effective_k_chunk(&lm.model);
    let engine = args.model.engine(lm.model, args.ctx)?;
    let opts = ServerOptions {
        model_name: args
            .model_name
            .clone()
            .unwrap_or_else(|| default_model_name(&args.model.model)),
        max_queue: args.max_queue,
        max_body_bytes: args.max_body_bytes,
        k_chunk,
        api_key: args.api_key.clone().filter(|k| !k.is_empty()),
    };
    serve_blocking(engine, lm.tokenizer, opts, addr)
}

pub fn run_chat(args: ChatArgs) -> Result<()> {
    check_ctx(args.ctx)?;
    if args.max_tokens == 0 {
        bail!("--max-tokens must be at least 1");
    }
    let sampling = SamplingParams {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        seed: args.seed.unwrap_or_else(rand::random),
    };
    sampling
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid flag: {e}"))?;
    let lm = args.model.open()?;
    let mut engine = args.model.engine(lm.model, args.ctx)?;
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        eprintln!(
            "decdec chat: {} on {} — {HELP}",
            default_model_name(&args.model.model),
            engine.backend()
        );
    }
    let opts = ChatOptions {
        system: args.system.clone(),
        params: GenerateParams {
            max_tokens: args.max_tokens,
            sampling,
            stop: Vec::new(),
        },
        show_prompt: interactive,
    };
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let mut out = std::io::stdout();
    chat_loop(engine.as_mut(), &lm.tokenizer, &opts, &mut input, &mut out)
}
