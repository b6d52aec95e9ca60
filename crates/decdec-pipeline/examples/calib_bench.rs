fn main() -> anyhow::Result<()> {
    let p = std::path::Path::new("/work/shared/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf");
    let lm = decdec_model::open(p, &Default::default())?;
    let text = decdec_model::ppl::read_text(std::path::Path::new("/work/shared/corpora/tinyshakespeare.txt"))?;
    let w = decdec_pipeline::calib::windows(&lm.tokenizer, &text, 8, 512, 42)?;
    for thr in [false, true, false, true] {
        let t0 = std::time::Instant::now();
        let c = decdec_pipeline::calib::calibrate(&lm.model, &w, thr, 0, "x", false)?;
        println!("thresholds={thr}: {:.2} s ({} tokens)", t0.elapsed().as_secs_f64(), c.tokens);
    }
    Ok(())
}
