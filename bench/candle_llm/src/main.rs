//! Generation speed of candle-transformers' quantized llama on a GGUF file, for comparison
//! with llama.cpp (embedded and llama-server) on the same file. Prompts arrive as token ids
//! (one line each, comma-separated, from llama-server's tokenizer) so that no tokenizer is
//! needed; prints `prompts, generated tokens, seconds, tokens/s`.
//!
//!     candle-llm-bench MODEL.gguf PROMPT_IDS.txt MAX_NEW_TOKENS EOS_ID

use std::io::BufRead;
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::quantized::gguf_file;
use candle_core::{Device, Tensor};
use candle_transformers::generation::LogitsProcessor;
use candle_transformers::models::quantized_llama::ModelWeights;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, model, prompts, max_new, eos] = args.as_slice() else {
        anyhow::bail!("usage: candle-llm-bench MODEL.gguf PROMPT_IDS.txt MAX_NEW_TOKENS EOS_ID");
    };
    let (max_new, eos): (usize, u32) = (max_new.parse()?, eos.parse()?);
    let device = Device::Cpu;
    let mut file = std::fs::File::open(model).context("opening the GGUF")?;
    let content = gguf_file::Content::read(&mut file)?;
    let prompts: Vec<Vec<u32>> = std::io::BufReader::new(std::fs::File::open(prompts)?)
        .lines()
        .map(|l| Ok(l?.split(',').map(|t| t.trim().parse()).collect::<Result<_, _>>()?))
        .collect::<Result<_>>()?;
    let mut weights = ModelWeights::from_gguf(content, &mut file, &device)?;
    let (mut generated, start) = (0usize, Instant::now());
    for (i, prompt) in prompts.iter().enumerate() {
        // A fresh cache per prompt: index_pos 0 resets it.
        let mut sampler = LogitsProcessor::new(i as u64, Some(0.7), Some(0.95));
        let input = Tensor::new(prompt.as_slice(), &device)?.unsqueeze(0)?;
        let mut logits = weights.forward(&input, 0)?.squeeze(0)?;
        let mut position = prompt.len();
        for _ in 0..max_new {
            let token = sampler.sample(&logits)?;
            if token == eos {
                break;
            }
            generated += 1;
            let input = Tensor::new(&[token], &device)?.unsqueeze(0)?;
            logits = weights.forward(&input, position)?.squeeze(0)?;
            position += 1;
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    println!("{}, {generated}, {seconds:.2}, {:.1}", prompts.len(), generated as f64 / seconds);
    Ok(())
}
