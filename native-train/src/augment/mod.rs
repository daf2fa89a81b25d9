//! `harmaug augment`: HarmAug's data synthesis, one pipeline stage per module.

pub mod eda;
pub mod generate;
pub mod respond;

use anyhow::Result;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum AugmentCommand {
    /// Synthesise harmful prompts: few-shot exemplars + an affirmative prefix the LLM continues.
    Generate(generate::GenerateArgs),
    /// Write a response (and optionally a refusal) for every prompt.
    Respond(respond::RespondArgs),
    /// The simple baseline: EDA-style word edits (insert, swap, delete) of labelled prompts.
    Eda(eda::EdaArgs),
}

pub fn run(command: AugmentCommand) -> Result<()> {
    match command {
        AugmentCommand::Generate(args) => generate::run(args),
        AugmentCommand::Respond(args) => respond::run(args),
        AugmentCommand::Eda(args) => eda::run(args),
    }
}
