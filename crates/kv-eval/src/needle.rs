//! Needle in a haystack on the real model: a fact inserted at several depths of a long
//! stretch of real text, then a question, answered by greedy decoding through each store.
//!
//! The chat prompt (system line, the text with the fact, the question, and the start of
//! the assistant's answer) is built in tokens: the haystack is a window of the corpus's own
//! tokens and the fact goes in after the first full stop at or past the requested depth.
//! Everything up to the end of the haystack is prefilled once with the exact store and
//! copied into each plan's store; the question is then decoded token by token through all
//! stores (the same tokens for every row), and each row generates its answer greedily from
//! its own predictions.

use serde::Serialize;

use crate::error::{Error, Result};
use crate::metrics::argmax;
use crate::model::{Llama, Logits};
use crate::plan::CachePlan;
use crate::progress::Progress;
use crate::store::{AttentionPath, ExactStore, KvStore, rows_from};
use crate::text::Corpus;
use crate::tokenizer::GgufTokenizer;

/// The inserted fact.
pub const NEEDLE: &str = " The secret passcode of the library is 7294.";
/// What a correct answer contains.
pub const ANSWER: &str = "7294";
/// Before the haystack.
const HEAD: &str = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\n";
/// After the haystack: the question and the start of the answer.
const TAIL: &str = "\n\nWhat is the secret passcode of the library?<|im_end|>\n<|im_start|>assistant\nThe secret passcode of the library is";

/// The shape of a needle run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NeedleSettings {
    /// Haystack tokens (the prompt adds the system line, the fact and the question).
    pub context: usize,
    /// Where the fact goes, as fractions of the haystack.
    pub depths: Vec<f64>,
    /// Corpus tokens skipped before the haystack.
    pub skip: usize,
    /// Tokens generated per answer.
    pub max_new: usize,
    /// Prefill chunk.
    pub chunk: usize,
    /// How the compressed stores attend.
    pub attention: AttentionPath,
}

impl Default for NeedleSettings {
    fn default() -> Self {
        Self {
            context: 4096,
            depths: vec![0.1, 0.3, 0.5, 0.7, 0.9],
            skip: 2000,
            max_new: 8,
            chunk: 512,
            attention: AttentionPath::Pages,
        }
    }
}

/// One store's answer.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Answer {
    /// The plan ("exact" for the f32 store).
    pub plan: String,
    /// The generated text.
    pub text: String,
    /// Whether it contains [`ANSWER`].
    pub found: bool,
    /// Whether its tokens are exactly the exact store's.
    pub same_as_exact: bool,
}

/// One depth.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Trial {
    /// Requested depth.
    pub depth: f64,
    /// Haystack token after which the fact was inserted.
    pub inserted_at: usize,
    /// Prompt tokens up to the answer.
    pub prompt_tokens: usize,
    /// One answer per store, exact first.
    pub answers: Vec<Answer>,
}

/// Successes of one store over all depths.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Score {
    /// The plan.
    pub plan: String,
    /// Depths answered correctly.
    pub found: usize,
    /// Depths whose answer is token-identical to the exact store's.
    pub same_as_exact: usize,
    /// Depths tried.
    pub trials: usize,
}

/// A needle run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NeedleReport {
    /// The settings.
    pub settings: NeedleSettings,
    /// The fact.
    pub needle: &'static str,
    /// The answer looked for.
    pub answer: &'static str,
    /// One entry per depth.
    pub trials: Vec<Trial>,
    /// Per store, exact first.
    pub scores: Vec<Score>,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// Index just past the first haystack token at or after `from` that ends a sentence (its
/// text ends with a full stop and the next one starts with white space); `from` itself when
/// none does within 400 tokens.
fn sentence_end(haystack: &[u32], from: usize, tokenizer: &GgufTokenizer) -> Result<usize> {
    for i in from..(from + 400).min(haystack.len().saturating_sub(1)) {
        let here = tokenizer.decode(&haystack[i..=i])?;
        let next = tokenizer.decode(&haystack[i + 1..=i + 1])?;
        if here.ends_with('.') && next.starts_with(char::is_whitespace) {
            return Ok(i + 1);
        }
    }
    Ok(from)
}

/// Runs the needle test for the exact store and each plan.
///
/// # Errors
/// Text too short; model, tokenizer, store and codec errors.
pub fn needle(
    model: &Llama,
    tokenizer: &GgufTokenizer,
    corpus: &Corpus,
    plans: &[CachePlan],
    settings: &NeedleSettings,
    quiet: bool,
) -> Result<NeedleReport> {
    let haystack = corpus
        .passages(settings.context, 1, settings.skip)
        .map(|s| &corpus.tokens[s[0]..s[0] + settings.context])?;
    let (head, fact, tail) = (
        tokenizer.encode(HEAD)?,
        tokenizer.encode(NEEDLE)?,
        tokenizer.encode(TAIL)?,
    );
    // Fail before any work when the whole prompt and answer do not fit the context.
    let total = head.len() + haystack.len() + fact.len() + tail.len() + settings.max_new;
    if total > model.config().context {
        return Err(Error::ContextExceeded {
            position: total - 1,
            context: model.config().context,
        });
    }
    let shape = model.config().store_shape();
    let rows = plans.len() + 1;
    let labels: Vec<String> = std::iter::once("exact".to_owned())
        .chain(plans.iter().map(CachePlan::label))
        .collect();
    let mut progress = Progress::new(
        "needle",
        settings.depths.len() * (1 + tail.len() + settings.max_new),
        quiet,
    );
    let mut trials = Vec::new();
    for (d, &depth) in settings.depths.iter().enumerate() {
        let target = ((depth.clamp(0.0, 1.0) * haystack.len() as f64) as usize).min(haystack.len());
        let at = sentence_end(haystack, target, tokenizer)?;
        let mut prompt = head.clone();
        prompt.extend_from_slice(&haystack[..at]);
        prompt.extend_from_slice(&fact);
        prompt.extend_from_slice(&haystack[at..]);
        let note = format!("depth {}/{}", d + 1, settings.depths.len());
        let mut exact = ExactStore::new(shape);
        model.prefill(&prompt, &mut exact, settings.chunk, Logits::Last)?;
        progress.advance(1, &format!("{note}: prefilled {} tokens", prompt.len()));
        let mut stores = rows_from(&exact, plans, settings.attention)?;
        let vocab = model.config().vocab;
        let step = |inputs: &[u32], stores: &mut Vec<Box<dyn KvStore>>| -> Result<Vec<u32>> {
            let batch: Vec<&[u32]> = inputs.iter().map(std::slice::from_ref).collect();
            let mut refs: Vec<&mut dyn KvStore> = stores
                .iter_mut()
                .map(|s| s.as_mut() as &mut dyn KvStore)
                .collect();
            let logits = model.forward(&batch, &mut refs, Logits::Last)?;
            let flat = logits.flatten_all()?.to_vec1::<f32>()?;
            Ok(flat
                .chunks_exact(vocab)
                .map(|row| argmax(row) as u32)
                .collect())
        };
        // The question, token by token, the same for every row; the last step's argmax is
        // each row's first answer token.
        let mut next = Vec::new();
        for &t in &tail {
            next = step(&vec![t; rows], &mut stores)?;
            progress.advance(1, &note);
        }
        let mut generated: Vec<Vec<u32>> = vec![Vec::new(); rows];
        for i in 0..settings.max_new {
            for (g, &t) in generated.iter_mut().zip(&next) {
                g.push(t);
            }
            if i + 1 < settings.max_new {
                next = step(&next, &mut stores)?;
            }
            progress.advance(1, &note);
        }
        let answers = generated
            .iter()
            .zip(&labels)
            .map(|(g, label)| {
                let text = tokenizer.decode(g)?;
                Ok(Answer {
                    plan: label.clone(),
                    found: text.contains(ANSWER),
                    same_as_exact: *g == generated[0],
                    text,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        trials.push(Trial {
            depth,
            inserted_at: at,
            prompt_tokens: prompt.len() + tail.len(),
            answers,
        });
    }
    let scores = labels
        .iter()
        .enumerate()
        .map(|(r, plan)| Score {
            plan: plan.clone(),
            found: trials.iter().filter(|t| t.answers[r].found).count(),
            same_as_exact: trials.iter().filter(|t| t.answers[r].same_as_exact).count(),
            trials: trials.len(),
        })
        .collect();
    Ok(NeedleReport {
        settings: settings.clone(),
        needle: NEEDLE,
        answer: ANSWER,
        trials,
        scores,
        seconds: progress.elapsed_s(),
    })
}

/// A text table of a needle run.
pub fn table(report: &NeedleReport) -> String {
    let mut out = format!(
        "needle {:?} in {} tokens of text; answer {:?}\n",
        report.needle.trim(),
        report.settings.context,
        report.answer
    );
    for t in &report.trials {
        out.push_str(&format!(
            "depth {:.2} (after haystack token {}, prompt {} tokens)\n",
            t.depth, t.inserted_at, t.prompt_tokens
        ));
        for a in &t.answers {
            out.push_str(&format!(
                "  {:<28} {} {:?}\n",
                a.plan,
                if a.found { "found  " } else { "MISSED " },
                a.text
            ));
        }
    }
    out.push_str("score (found / same answer as exact / depths):\n");
    for s in &report.scores {
        out.push_str(&format!(
            "  {:<28} {}/{}/{}\n",
            s.plan, s.found, s.same_as_exact, s.trials
        ));
    }
    out
}
