//! Chat templates come from the model's tokenizer_config.json and render like Hugging Face's.

use decdec_model::{ChatMessage, Tokenizer};
use std::path::Path;

#[test]
fn smollm2_chat_template_renders_and_encodes_special_tokens() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/models/smollm2-135m-instruct/tokenizer.json");
    let tok = Tokenizer::from_file(&path).unwrap();
    let text = tok
        .apply_chat_template(&[ChatMessage::new("user", "Hi there")], true)
        .unwrap();
    assert_eq!(
        text,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
         <|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n"
    );
    let ids = tok.encode(&text, false).unwrap();
    assert_eq!(ids[0], tok.token_to_id("<|im_start|>").unwrap());
    assert!(tok.is_eos(tok.token_to_id("<|im_end|>").unwrap()));
    // A system message replaces the default one.
    let text = tok
        .apply_chat_template(
            &[
                ChatMessage::new("system", "Be brief."),
                ChatMessage::new("user", "Hi"),
            ],
            false,
        )
        .unwrap();
    assert!(text.starts_with("<|im_start|>system\nBe brief.<|im_end|>\n"));
    assert!(!text.contains("SmolLM"));
}

#[test]
fn models_without_a_template_get_a_plain_transcript() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/stories260K/tokenizer.json");
    let tok = Tokenizer::from_file(&path).unwrap();
    let text = tok
        .apply_chat_template(&[ChatMessage::new("user", "Tell a story")], true)
        .unwrap();
    assert_eq!(text, "user: Tell a story\nassistant:");
}
