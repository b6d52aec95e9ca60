//! A real server on loopback (port 0), driven by hyper's HTTP/1 client, serving the bundled
//! stories260K model. Expected texts come from running `generate` directly on a separate engine.

use decdec_model::config::ModelConfig;
use decdec_model::generate::{generate, FinishReason, GenerateParams};
use decdec_model::model::Logits;
use decdec_model::sampling::SamplingParams;
use decdec_model::{ChatMessage, CpuEngine, Engine, LoadOptions, LoadedModel};
use decdec_server::chat::{chat_loop, conversation_ids, ChatOptions};
use decdec_server::{start, ServerHandle, ServerOptions};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

const MODEL_NAME: &str = "stories260K";

fn model_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/stories260K")
}

fn load() -> LoadedModel {
    decdec_model::open(&model_dir(), &LoadOptions::default()).expect("load stories260K")
}

/// Guards every test against hangs (a stalled server fails instead of blocking CI forever).
async fn guarded<F: std::future::Future<Output = ()>>(f: F) {
    tokio::time::timeout(Duration::from_secs(300), f)
        .await
        .expect("the test did not finish: the server stalled");
}

async fn serve(
    engine: Box<dyn Engine>,
    lm: LoadedModel,
    max_queue: usize,
    max_body: usize,
) -> ServerHandle {
    let mut opts = ServerOptions::new(MODEL_NAME);
    opts.max_queue = max_queue;
    opts.max_body_bytes = max_body;
    opts.k_chunk = Some([4, 4, 5, 5]);
    start(engine, lm.tokenizer, opts, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("start the server")
}

async fn serve_cpu(max_queue: usize) -> ServerHandle {
    let lm = load();
    let engine = Box::new(CpuEngine::new(Arc::new(load().model), None));
    serve(engine, lm, max_queue, 1 << 20).await
}

/// One request on its own connection. Returns the response head and streaming body, plus the
/// connection task (abort it to drop the TCP connection).
async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> (Response<Incoming>, tokio::task::JoinHandle<()>) {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    let conn = tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = sender.send_request(req).await.expect("send request");
    (resp, conn)
}

async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> (StatusCode, hyper::HeaderMap, Bytes) {
    let (resp, _conn) = send(addr, method, path, body).await;
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .expect("read body")
        .to_bytes();
    (status, headers, bytes)
}

async fn post_json(addr: SocketAddr, path: &str, body: &Value) -> (StatusCode, Value) {
    let (status, _, bytes) = call(addr, "POST", path, body.to_string().into_bytes()).await;
    let v: Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "{path}: response is not JSON ({e}): {}",
            String::from_utf8_lossy(&bytes)
        )
    });
    (status, v)
}

/// `data:` payloads of an SSE body, in order.
fn sse_payloads(body: &str) -> Vec<String> {
    assert!(
        body.ends_with("\n\n"),
        "SSE body must end with a blank line: {body:?}"
    );
    body.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            e.strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not an SSE data event: {e:?}"))
                .to_string()
        })
        .collect()
}

struct Expected {
    text: String,
    prompt_tokens: usize,
    completion_tokens: usize,
    finish: &'static str,
}

/// Generate directly (no server) on a fresh engine.
fn expected_for_ids(lm: &LoadedModel, ids: &[u32], params: &GenerateParams) -> Expected {
    let mut engine = CpuEngine::new(Arc::new(load().model), None);
    let out = generate(&mut engine, &lm.tokenizer, ids, params, &mut |_| true).expect("generate");
    Expected {
        text: out.text,
        prompt_tokens: out.prompt_tokens,
        completion_tokens: out.tokens.len(),
        finish: match out.finish_reason {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Cancelled => panic!("reference generation cancelled"),
        },
    }
}

fn greedy(max_tokens: usize) -> GenerateParams {
    GenerateParams {
        max_tokens,
        sampling: SamplingParams::default(),
        stop: Vec::new(),
    }
}

fn expected_completion(lm: &LoadedModel, prompt: &str, params: &GenerateParams) -> Expected {
    let ids = lm.tokenizer.encode(prompt, true).unwrap();
    expected_for_ids(lm, &ids, params)
}

fn expected_chat(lm: &LoadedModel, messages: &[ChatMessage], params: &GenerateParams) -> Expected {
    // stories260K has no chat template: the documented fallback is a "role: content" transcript
    // ending in "assistant:", encoded with the tokenizer's BOS rule.
    assert!(lm.tokenizer.chat_template.is_none());
    let mut text = String::new();
    for m in messages {
        text.push_str(&format!("{}: {}\n", m.role, m.content));
    }
    text.push_str("assistant:");
    let ids = lm.tokenizer.encode(&text, true).unwrap();
    expected_for_ids(lm, &ids, params)
}

fn assert_error_body(v: &Value, param: Option<&str>) {
    let e = v
        .get("error")
        .unwrap_or_else(|| panic!("no `error` object: {v}"));
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    assert!(e["type"].is_string(), "{v}");
    assert!(e.get("code").is_some(), "{v}");
    assert_eq!(e.get("param").and_then(Value::as_str), param, "{v}");
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("metric {series} missing from:\n{text}"))
        .parse()
        .unwrap()
}

async fn metrics_text(addr: SocketAddr) -> String {
    let (status, headers, body) = call(addr, "GET", "/metrics", Vec::new()).await;
    assert_eq!(status, 200);
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    String::from_utf8(body.to_vec()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_match_the_openai_schema_and_direct_generation() {
    guarded(async {
        let server = serve_cpu(8).await;
        let addr = server.addr();
        let lm = load();

        // Non-streaming chat.
        let messages = vec![ChatMessage::new("user", "Tell me a story about a dog.")];
        let want = expected_chat(&lm, &messages, &greedy(24));
        let (status, v) = post_json(
            addr,
            "/v1/chat/completions",
            &json!({"model": MODEL_NAME, "messages": [{"role": "user", "content": "Tell me a story about a dog."}],
                    "max_tokens": 24, "temperature": 0}),
        )
        .await;
        assert_eq!(status, 200, "{v}");
        assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
        assert_eq!(v["object"], "chat.completion");
        assert!(v["created"].as_u64().unwrap() > 1_600_000_000);
        assert_eq!(v["model"], MODEL_NAME);
        let choices = v["choices"].as_array().unwrap();
        assert_eq!(choices.len(), 1);
        assert_eq!(choices[0]["index"], 0);
        assert_eq!(choices[0]["message"]["role"], "assistant");
        assert_eq!(choices[0]["message"]["content"], want.text.as_str());
        assert_eq!(choices[0]["finish_reason"], want.finish);
        assert_eq!(v["usage"]["prompt_tokens"], want.prompt_tokens);
        assert_eq!(v["usage"]["completion_tokens"], want.completion_tokens);
        assert_eq!(v["usage"]["total_tokens"], want.prompt_tokens + want.completion_tokens);
        assert!(!want.text.is_empty());

        // Streaming chat with the trailing usage chunk.
        let (resp, _conn) = send(
            addr,
            "POST",
            "/v1/chat/completions",
            json!({"model": MODEL_NAME, "messages": [{"role": "user", "content": "Tell me a story about a dog."}],
                   "max_tokens": 24, "temperature": 0, "stream": true, "stream_options": {"include_usage": true}})
            .to_string()
            .into_bytes(),
        )
        .await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let payloads = sse_payloads(std::str::from_utf8(&body).unwrap());
        assert_eq!(payloads.last().unwrap(), "[DONE]");
        let chunks: Vec<Value> = payloads[..payloads.len() - 1]
            .iter()
            .map(|p| serde_json::from_str(p).unwrap())
            .collect();
        let id = chunks[0]["id"].as_str().unwrap();
        assert!(id.starts_with("chatcmpl-"));
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        let mut text = String::new();
        let mut finishes = Vec::new();
        for c in &chunks {
            assert_eq!(c["id"], id);
            assert_eq!(c["object"], "chat.completion.chunk");
            assert_eq!(c["model"], MODEL_NAME);
            assert!(c["created"].is_u64());
            for ch in c["choices"].as_array().unwrap() {
                if let Some(t) = ch["delta"]["content"].as_str() {
                    text.push_str(t);
                }
                if !ch["finish_reason"].is_null() {
                    finishes.push(ch["finish_reason"].as_str().unwrap().to_string());
                }
            }
        }
        assert_eq!(text, want.text);
        assert_eq!(finishes, vec![want.finish.to_string()]);
        // The usage chunk is last and has no choices.
        let last = chunks.last().unwrap();
        assert_eq!(last["choices"].as_array().unwrap().len(), 0);
        assert_eq!(last["usage"]["completion_tokens"], want.completion_tokens);
        assert_eq!(last["usage"]["prompt_tokens"], want.prompt_tokens);
        // Exactly one chunk (the one before usage) carries the finish reason, with an empty delta.
        let closing = &chunks[chunks.len() - 2]["choices"][0];
        assert_eq!(closing["finish_reason"], want.finish);
        assert_eq!(closing["delta"], json!({}));

        // Completions, both ways.
        let prompt = "Once upon a time, there was a little girl";
        let want = expected_completion(&lm, prompt, &greedy(30));
        let (status, v) = post_json(
            addr,
            "/v1/completions",
            &json!({"model": MODEL_NAME, "prompt": prompt, "max_tokens": 30, "temperature": 0}),
        )
        .await;
        assert_eq!(status, 200, "{v}");
        assert!(v["id"].as_str().unwrap().starts_with("cmpl-"));
        assert_eq!(v["object"], "text_completion");
        assert_eq!(v["choices"][0]["text"], want.text.as_str());
        assert_eq!(v["choices"][0]["finish_reason"], want.finish);
        assert_eq!(v["usage"]["prompt_tokens"], want.prompt_tokens);
        assert_eq!(v["usage"]["completion_tokens"], want.completion_tokens);

        let (_, _, body) = call(
            addr,
            "POST",
            "/v1/completions",
            json!({"model": MODEL_NAME, "prompt": prompt, "max_tokens": 30, "temperature": 0, "stream": true})
                .to_string()
                .into_bytes(),
        )
        .await;
        let payloads = sse_payloads(std::str::from_utf8(&body).unwrap());
        assert_eq!(payloads.last().unwrap(), "[DONE]");
        let mut text = String::new();
        for p in &payloads[..payloads.len() - 1] {
            let c: Value = serde_json::from_str(p).unwrap();
            assert_eq!(c["object"], "text_completion");
            assert!(c.get("usage").is_none(), "usage only with stream_options.include_usage");
            text.push_str(c["choices"][0]["text"].as_str().unwrap());
        }
        assert_eq!(text, want.text);

        // A stop string cuts the text before its first occurrence and finishes with "stop".
        let mid = (want.text.len() / 2..).find(|&i| want.text.is_char_boundary(i)).unwrap();
        let stop: String = want.text[mid..].chars().take(3).collect();
        let cut = want.text.find(&stop).unwrap();
        assert!(cut > 0 && cut <= mid);
        let (status, v) = post_json(
            addr,
            "/v1/completions",
            &json!({"model": MODEL_NAME, "prompt": prompt, "max_tokens": 30, "temperature": 0, "stop": [stop, "\u{1}"]}),
        )
        .await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["choices"][0]["text"], &want.text[..cut]);
        assert_eq!(v["choices"][0]["finish_reason"], "stop");

        // Seeded sampling: repeatable, and equal to sampling directly with the same seed.
        let sampled = GenerateParams {
            max_tokens: 20,
            sampling: SamplingParams { temperature: 1.0, top_k: 40, top_p: 0.9, seed: 7 },
            stop: Vec::new(),
        };
        let want = expected_completion(&lm, prompt, &sampled);
        for _ in 0..2 {
            let (status, v) = post_json(
                addr,
                "/v1/completions",
                &json!({"model": MODEL_NAME, "prompt": prompt, "max_tokens": 20, "temperature": 1.0,
                        "top_k": 40, "top_p": 0.9, "seed": 7}),
            )
            .await;
            assert_eq!(status, 200, "{v}");
            assert_eq!(v["choices"][0]["text"], want.text.as_str());
        }

        // Models, health, metrics.
        let (status, _, body) = call(addr, "GET", "/v1/models", Vec::new()).await;
        assert_eq!(status, 200);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["object"], "list");
        assert_eq!(v["data"][0]["id"], MODEL_NAME);
        assert_eq!(v["data"][0]["object"], "model");
        let (status, _, _) = call(addr, "GET", &format!("/v1/models/{MODEL_NAME}"), Vec::new()).await;
        assert_eq!(status, 200);
        let (status, _, body) = call(addr, "GET", "/health", Vec::new()).await;
        assert_eq!(status, 200);
        assert_eq!(serde_json::from_slice::<Value>(&body).unwrap()["status"], "ok");
        let m = metrics_text(addr).await;
        assert_eq!(metric(&m, "decdec_requests_total{endpoint=\"chat\",outcome=\"ok\"}"), 2.0);
        assert_eq!(metric(&m, "decdec_requests_total{endpoint=\"completions\",outcome=\"ok\"}"), 5.0);
        assert_eq!(metric(&m, "decdec_time_to_first_token_seconds_count"), 7.0);
        assert_eq!(metric(&m, "decdec_queue_depth"), 0.0);
        assert_eq!(metric(&m, "decdec_dec_k_chunk{proj=\"gate_up\"}"), 5.0);
        assert!(metric(&m, "decdec_decode_tokens_per_second") > 0.0);
        assert_eq!(metric(&m, "decdec_dec_residual_bytes_fetched_total"), 0.0, "the CPU engine fetches no residuals");
        server.shutdown().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_openai_error_bodies() {
    guarded(async {
        let lm = load();
        let engine = Box::new(CpuEngine::new(Arc::new(load().model), Some(64)));
        let server = serve(engine, lm, 8, 64 * 1024).await;
        let addr = server.addr();
        let chat = "/v1/chat/completions";
        let user = json!([{"role": "user", "content": "hi"}]);

        let (status, _, body) = call(
            addr,
            "POST",
            chat,
            b"{\"model\": \"stories260K\", \"messages\": [".to_vec(),
        )
        .await;
        assert_eq!(status, 400);
        assert_error_body(&serde_json::from_slice(&body).unwrap(), None);

        let (status, v) =
            post_json(addr, chat, &json!({"model": "gpt-4o", "messages": user})).await;
        assert_eq!(status, 400);
        assert_error_body(&v, Some("model"));
        assert_eq!(v["error"]["code"], "model_not_found");

        let (status, v) = post_json(
            addr,
            chat,
            &json!({"model": MODEL_NAME, "messages": user, "max_tokens": -5}),
        )
        .await;
        assert_eq!(status, 400);
        assert_error_body(&v, Some("max_tokens"));

        let (status, v) = post_json(
            addr,
            "/v1/completions",
            &json!({"model": MODEL_NAME, "prompt": "x", "max_tokens": -1}),
        )
        .await;
        assert_eq!(status, 400);
        assert_error_body(&v, Some("max_tokens"));

        let (status, v) = post_json(
            addr,
            chat,
            &json!({"model": MODEL_NAME, "messages": user, "temperature": "warm"}),
        )
        .await;
        assert_eq!(status, 400);
        assert_error_body(&v, Some("temperature"));

        let (status, v) =
            post_json(addr, chat, &json!({"model": MODEL_NAME, "messages": "hi"})).await;
        assert_eq!(status, 400);
        assert_error_body(&v, Some("messages"));

        // Longer than the 64-position context.
        let long = "the cat sat on the mat. ".repeat(40);
        let (status, v) = post_json(
            addr,
            "/v1/completions",
            &json!({"model": MODEL_NAME, "prompt": long}),
        )
        .await;
        assert_eq!(status, 400);
        assert_error_body(&v, Some("prompt"));
        assert_eq!(v["error"]["code"], "context_length_exceeded");

        // Body over the 64 KiB limit.
        let big = json!({"model": MODEL_NAME, "prompt": "a".repeat(100 * 1024)}).to_string();
        let (status, _, body) = call(addr, "POST", "/v1/completions", big.into_bytes()).await;
        assert_eq!(status, 413);
        assert_error_body(&serde_json::from_slice(&body).unwrap(), None);

        // Not valid UTF-8 / not an object.
        let (status, _, body) = call(addr, "POST", chat, vec![0xff, 0xfe, 0x00]).await;
        assert_eq!(status, 400);
        assert_error_body(&serde_json::from_slice(&body).unwrap(), None);
        let (status, _, body) = call(addr, "POST", chat, b"[]".to_vec()).await;
        assert_eq!(status, 400);
        assert_error_body(&serde_json::from_slice(&body).unwrap(), None);

        let (status, _, body) = call(addr, "GET", "/v1/nothing", Vec::new()).await;
        assert_eq!(status, 404);
        assert_error_body(&serde_json::from_slice(&body).unwrap(), None);
        let (status, _, body) = call(addr, "GET", chat, Vec::new()).await;
        assert_eq!(status, 405);
        assert_error_body(&serde_json::from_slice(&body).unwrap(), None);

        // The server is still fine and counted the rejections.
        let (status, v) = post_json(
            addr,
            "/v1/completions",
            &json!({"model": MODEL_NAME, "prompt": "Once", "max_tokens": 3, "temperature": 0}),
        )
        .await;
        assert_eq!(status, 200, "{v}");
        let m = metrics_text(addr).await;
        assert_eq!(
            metric(
                &m,
                "decdec_requests_total{endpoint=\"chat\",outcome=\"bad_request\"}"
            ),
            7.0
        );
        assert_eq!(
            metric(
                &m,
                "decdec_requests_total{endpoint=\"completions\",outcome=\"bad_request\"}"
            ),
            2.0
        );
        assert_eq!(
            metric(
                &m,
                "decdec_requests_total{endpoint=\"completions\",outcome=\"too_large\"}"
            ),
            1.0
        );
        server.shutdown().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_concurrent_clients_get_their_single_client_answers() {
    guarded(async {
        let server = serve_cpu(64).await;
        let addr = server.addr();
        let lm = load();
        let prompts = [
            "Once upon a time",
            "The little dog",
            "Lily and Ben went to the park",
            "One day, a big bear",
            "Tom had a red ball",
            "The sun was hot and",
            "Sue liked to sing",
            "There was a tiny bird",
        ];
        let wants: Vec<String> = prompts
            .iter()
            .map(|p| expected_completion(&lm, p, &greedy(40)).text)
            .collect();
        // Distinct prompts give distinct answers, so a mixed-up response cannot pass.
        for i in 0..wants.len() {
            for j in 0..i {
                assert_ne!(wants[i], wants[j]);
            }
        }
        let mut tasks = Vec::new();
        for c in 0..32usize {
            let prompt = prompts[c % prompts.len()];
            let stream = c % 2 == 1;
            tasks.push(tokio::spawn(async move {
                let body = json!({"model": MODEL_NAME, "prompt": prompt, "max_tokens": 40, "temperature": 0, "stream": stream});
                let (status, _, bytes) = call(addr, "POST", "/v1/completions", body.to_string().into_bytes()).await;
                assert_eq!(status, 200, "client {c}: {}", String::from_utf8_lossy(&bytes));
                let text = if stream {
                    let payloads = sse_payloads(std::str::from_utf8(&bytes).unwrap());
                    assert_eq!(payloads.last().unwrap(), "[DONE]");
                    payloads[..payloads.len() - 1]
                        .iter()
                        .map(|p| serde_json::from_str::<Value>(p).unwrap()["choices"][0]["text"].as_str().unwrap().to_string())
                        .collect::<String>()
                } else {
                    let v: Value = serde_json::from_slice(&bytes).unwrap();
                    v["choices"][0]["text"].as_str().unwrap().to_string()
                };
                (c, text)
            }));
        }
        for t in tasks {
            let (c, text) = t.await.expect("client task");
            assert_eq!(text, wants[c % prompts.len()], "client {c}");
        }
        let m = metrics_text(addr).await;
        assert_eq!(metric(&m, "decdec_requests_total{endpoint=\"completions\",outcome=\"ok\"}"), 32.0);
        server.shutdown().await.unwrap();
    })
    .await;
}

/// Lets the test hold the engine inside `forward`: closed, each forward needs a permit.
#[derive(Default)]
struct Gate {
    state: Mutex<GateState>,
    cv: Condvar,
    waiting: AtomicUsize,
}

#[derive(Default)]
struct GateState {
    open: bool,
    permits: usize,
}

impl Gate {
    fn pass(&self) {
        let mut s = self.state.lock().unwrap();
        self.waiting.fetch_add(1, Ordering::SeqCst);
        while !s.open && s.permits == 0 {
            s = self.cv.wait(s).unwrap();
        }
        if !s.open {
            s.permits -= 1;
        }
        self.waiting.fetch_sub(1, Ordering::SeqCst);
    }
    fn permit(&self, n: usize) {
        self.state.lock().unwrap().permits += n;
        self.cv.notify_all();
    }
    fn open(&self) {
        self.state.lock().unwrap().open = true;
        self.cv.notify_all();
    }
    /// The engine is parked in `forward` with no permits left.
    fn parked(&self) -> bool {
        self.waiting.load(Ordering::SeqCst) == 1 && self.state.lock().unwrap().permits == 0
    }
}

struct GatedEngine {
    inner: CpuEngine,
    gate: Arc<Gate>,
}

impl Engine for GatedEngine {
    fn config(&self) -> &ModelConfig {
        self.inner.config()
    }
    fn backend(&self) -> &'static str {
        "cpu-gated"
    }
    fn forward(&mut self, tokens: &[u32], logits: Logits) -> anyhow::Result<Vec<f32>> {
        self.gate.pass();
        self.inner.forward(tokens, logits)
    }
    fn position(&self) -> usize {
        self.inner.position()
    }
    fn truncate(&mut self, len: usize) {
        self.inner.truncate(len)
    }
    fn max_seq_len(&self) -> usize {
        self.inner.max_seq_len()
    }
}

async fn serve_gated(max_queue: usize) -> (ServerHandle, Arc<Gate>) {
    let gate = Arc::new(Gate::default());
    let engine = Box::new(GatedEngine {
        inner: CpuEngine::new(Arc::new(load().model), None),
        gate: gate.clone(),
    });
    (serve(engine, load(), max_queue, 1 << 20).await, gate)
}

async fn wait_until(mut cond: impl FnMut() -> bool) {
    while !cond() {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn health(addr: SocketAddr) -> Value {
    let (_, _, body) = call(addr, "GET", "/health", Vec::new()).await;
    serde_json::from_slice(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_mid_stream_is_cancelled_and_does_not_stall_the_next() {
    guarded(async {
        let (server, gate) = serve_gated(8).await;
        let addr = server.addr();
        let lm = load();
        let prompt = "Once upon a time";
        // Precondition: the first two generated tokens produce text, so a content chunk exists.
        assert!(!expected_completion(&lm, prompt, &greedy(2)).text.is_empty());

        let (resp, conn) = send(
            addr,
            "POST",
            "/v1/chat/completions",
            json!({"model": MODEL_NAME, "messages": [{"role": "user", "content": prompt}],
                   "max_tokens": 300, "temperature": 0, "stream": true})
            .to_string()
            .into_bytes(),
        )
        .await;
        assert_eq!(resp.status(), 200);
        // Prefill plus two decode steps, then the engine parks.
        gate.permit(3);
        wait_until(|| gate.parked()).await;
        let mut body = resp.into_body();
        let mut seen = String::new();
        // The opening role chunk, then at least one content chunk.
        while seen.matches("data: ").count() < 2 {
            let frame = body.frame().await.expect("stream ended early").unwrap();
            if let Ok(data) = frame.into_data() {
                seen.push_str(std::str::from_utf8(&data).unwrap());
            }
        }
        // Leave: drop the body and the TCP connection.
        drop(body);
        conn.abort();
        let _ = conn.await;

        // Step the engine one token at a time until the server notices the closed connection.
        let metrics = server.metrics();
        let mut steps = 0;
        while metrics.outcome_count("cancelled") == 0 {
            assert_eq!(metrics.outcome_count("ok"), 0, "the abandoned request ran to the end");
            gate.permit(1);
            steps += 1;
            wait_until(|| gate.parked() || metrics.outcome_count("cancelled") > 0 || metrics.outcome_count("ok") > 0)
                .await;
        }
        assert!(steps < 290, "cancelled only after {steps} more tokens");

        // The next request is served normally, with the single-client answer.
        gate.open();
        let want = expected_completion(&lm, "The little dog", &greedy(25));
        let (status, v) = post_json(
            addr,
            "/v1/completions",
            &json!({"model": MODEL_NAME, "prompt": "The little dog", "max_tokens": 25, "temperature": 0}),
        )
        .await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["choices"][0]["text"], want.text.as_str());
        assert_eq!(health(addr).await["running"], false);
        let m = metrics_text(addr).await;
        assert_eq!(metric(&m, "decdec_requests_total{endpoint=\"chat\",outcome=\"cancelled\"}"), 1.0);
        server.shutdown().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_429_and_queued_requests_still_complete() {
    guarded(async {
        let (server, gate) = serve_gated(1).await;
        let addr = server.addr();
        let lm = load();
        let body = |p: &str| {
            json!({"model": MODEL_NAME, "prompt": p, "max_tokens": 12, "temperature": 0})
                .to_string()
                .into_bytes()
        };
        let first = tokio::spawn(call(
            addr,
            "POST",
            "/v1/completions",
            body("Once upon a time"),
        ));
        // The first request is on the engine (parked in prefill), so the queue is empty.
        wait_until(|| gate.parked()).await;
        assert_eq!(health(addr).await["queue_depth"], 0);
        let second = tokio::spawn(call(
            addr,
            "POST",
            "/v1/completions",
            body("The little dog"),
        ));
        loop {
            if health(addr).await["queue_depth"] == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let (status, headers, bytes) =
            call(addr, "POST", "/v1/completions", body("Tom had a red ball")).await;
        assert_eq!(status, 429);
        assert_eq!(headers["retry-after"], "1");
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_error_body(&v, None);
        assert_eq!(v["error"]["type"], "rate_limit_error");

        gate.open();
        for (task, prompt) in [(first, "Once upon a time"), (second, "The little dog")] {
            let (status, _, bytes) = task.await.unwrap();
            assert_eq!(status, 200);
            let v: Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(
                v["choices"][0]["text"],
                expected_completion(&lm, prompt, &greedy(12)).text.as_str()
            );
        }
        let m = metrics_text(addr).await;
        assert_eq!(
            metric(
                &m,
                "decdec_requests_total{endpoint=\"completions\",outcome=\"queue_full\"}"
            ),
            1.0
        );
        assert_eq!(metric(&m, "decdec_queue_wait_seconds_count"), 2.0);
        server.shutdown().await.unwrap();
    })
    .await;
}

#[test]
fn terminal_chat_keeps_history_streams_and_resets() {
    let lm = load();
    let mut engine = CpuEngine::new(Arc::new(load().model), None);
    let params = greedy(20);
    let opts = ChatOptions {
        system: None,
        params: params.clone(),
        show_prompt: false,
    };
    let mut input =
        std::io::Cursor::new("Hello there\nWhat next?\n/reset\nWhat next?\n/exit\nnever read\n");
    let mut out = Vec::new();
    chat_loop(&mut engine, &lm.tokenizer, &opts, &mut input, &mut out).unwrap();

    // Expected replies: turn 1 alone; turn 2 sees turn 1 and its reply; after /reset turn 3 sees
    // only its own message.
    let u1 = ChatMessage::new("user", "Hello there");
    let r1 = expected_chat(&lm, std::slice::from_ref(&u1), &params).text;
    let u2 = ChatMessage::new("user", "What next?");
    let r2 = expected_chat(
        &lm,
        &[u1.clone(), ChatMessage::new("assistant", &r1), u2.clone()],
        &params,
    )
    .text;
    let r3 = expected_chat(&lm, std::slice::from_ref(&u2), &params).text;
    assert_ne!(
        r2, r3,
        "history must change the answer for this test to mean anything"
    );
    assert_eq!(
        String::from_utf8(out).unwrap(),
        format!("{r1}\n{r2}\n(history cleared)\n{r3}\n")
    );
    // The library helper renders the same prompt the test built by hand.
    let ids = conversation_ids(&lm.tokenizer, std::slice::from_ref(&u1)).unwrap();
    assert_eq!(
        ids,
        lm.tokenizer
            .encode("user: Hello there\nassistant:", true)
            .unwrap()
    );

    // EOF ends the chat like /exit.
    let mut input = std::io::Cursor::new("Hello there\n");
    let mut out = Vec::new();
    chat_loop(&mut engine, &lm.tokenizer, &opts, &mut input, &mut out).unwrap();
    assert_eq!(String::from_utf8(out).unwrap(), format!("{r1}\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_key_guards_the_v1_routes_only() {
    guarded(async {
        let lm = load();
        let engine = Box::new(CpuEngine::new(Arc::new(load().model), None));
        let mut opts = ServerOptions::new(MODEL_NAME);
        opts.api_key = Some("sk-local-123".into());
        let server = start(engine, lm.tokenizer, opts, "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let addr = server.addr();
        let ask = |auth: Option<&'static str>| async move {
            let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .unwrap();
            tokio::spawn(conn);
            let mut req = Request::builder()
                .method("POST")
                .uri("/v1/completions")
                .header("host", "localhost");
            if let Some(a) = auth {
                req = req.header("authorization", a);
            }
            let body = json!({"model": MODEL_NAME, "prompt": "Once", "max_tokens": 2}).to_string();
            let resp = sender
                .send_request(req.body(Full::new(Bytes::from(body))).unwrap())
                .await
                .unwrap();
            let status = resp.status();
            let bytes = resp.into_body().collect().await.unwrap().to_bytes();
            (status, serde_json::from_slice::<Value>(&bytes).unwrap())
        };
        for auth in [
            None,
            Some("Bearer wrong"),
            Some("sk-local-123"),
            Some("Bearer sk-local-1234"),
        ] {
            let (status, v) = ask(auth).await;
            assert_eq!(status, 401, "{auth:?}");
            assert_error_body(&v, None);
            assert_eq!(v["error"]["code"], "invalid_api_key");
        }
        let (status, v) = ask(Some("Bearer sk-local-123")).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["object"], "text_completion");
        let (status, _, _) = call(addr, "GET", "/health", Vec::new()).await;
        assert_eq!(status, 200);
        let (status, _, _) = call(addr, "GET", "/v1/models", Vec::new()).await;
        assert_eq!(status, 401);
        server.shutdown().await.unwrap();
    })
    .await;
}
