//! Procedural in-context samples, drawn fresh for every training sample: a task from
//! `xprompt_data::procedural` with hidden parameters, 1..=`max_shots` example pairs and a query
//! on distinct base images, VQ-encoded on the fly. No instruction names the task (most samples
//! carry none, some a generic "do what the example does"), so the answer can only come from the
//! examples — every sample is a task the model has never seen.
//!
//! The same module builds the fixed validation probes of the in-context metric: each probe is
//! a task with its right examples and the examples of another task, scored on the same answer
//! (the ICL gap, [`crate::trainer::IclMetrics`]).

use candle_core::Device;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use xprompt_core::sequence::ImageGrid;
use xprompt_data::img::Img;
use xprompt_data::procedural::{draw_task, Input, Pool, Selection, Task};
use xprompt_generate::incontext::{Answer, Example, PromptBuilder, PromptMode, Query};
use xprompt_vqgan::image_io::U8Image;
use xprompt_vqgan::preprocess::to_tensor;
use xprompt_vqgan::Vqgan;

use crate::error::{Result, TrainError};
use crate::sample::Sample;

/// The instruction some procedural samples carry: it says to follow the example, never what
/// the task is.
pub const GENERIC_INSTRUCTION: &str = "Do to the image what the example does.";

/// The `[procedural]` section of an experiment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ProceduralConfig {
    /// Task suite whose images (train / val splits, held-out tasks excluded) are the base
    /// images; relative to the experiment file.
    pub suite: std::path::PathBuf,
    /// Fraction of training samples that are procedural (the rest come from the manifest).
    pub share: f64,
    /// Probability that a task is two transforms in sequence.
    pub p_compose: f64,
    /// Probability that a task is the identity (output = input): rewards copying the query.
    pub p_identity: f64,
    /// Example pairs per sample, drawn uniformly in `1..=max_shots`.
    pub max_shots: usize,
    /// Also train on every example output after the first (LVM-style multi-pair loss).
    pub loss_on_examples: bool,
    /// Probability that a sample carries [`GENERIC_INSTRUCTION`].
    pub p_generic_instruction: f64,
    /// At most this many base images per kind (plain, segmentation, depth) per split.
    pub pool_images: usize,
    /// Validation probes of the in-context metric (0 = none).
    pub val_probes: usize,
}

impl Default for ProceduralConfig {
    fn default() -> Self {
        Self {
            suite: "suite".into(),
            share: 0.7,
            p_compose: 0.25,
            p_identity: 0.0,
            max_shots: 2,
            loss_on_examples: true,
            p_generic_instruction: 0.2,
            pool_images: 4000,
            val_probes: 32,
        }
    }
}

impl ProceduralConfig {
    pub fn validate(&self) -> std::result::Result<(), String> {
        let p = |name: &str, v: f64| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(format!("procedural.{name} = {v} must be in [0, 1]"))
            }
        };
        p("share", self.share)?;
        p("p_compose", self.p_compose)?;
        p("p_identity", self.p_identity)?;
        p("p_generic_instruction", self.p_generic_instruction)?;
        if self.max_shots == 0 || self.max_shots > 8 {
            return Err(format!(
                "procedural.max_shots = {} must be in 1..=8",
                self.max_shots
            ));
        }
        if self.pool_images < 2 {
            return Err("procedural.pool_images must be at least 2".into());
        }
        Ok(())
    }
}

/// A validation probe: one query answered under its own task's examples and under another's.
#[derive(Debug, Clone)]
pub struct IclProbe {
    pub right: Vec<Example>,
    pub wrong: Vec<Example>,
    pub query: Query,
    pub answer: Answer,
}

/// Draws procedural samples: the base-image pools, the VQGAN that encodes them, the settings.
pub struct ProceduralSource {
    vqgan: Vqgan,
    train: Pool,
    val: Pool,
    /// Codes of the pools' input images, encoded once: only outputs are encoded per sample.
    train_codes: InputCodes,
    val_codes: InputCodes,
    pub config: ProceduralConfig,
}

/// Codes of a pool's inputs per kind (plain, segmentation photos, depth photos).
struct InputCodes([Vec<ImageGrid>; 3]);

impl InputCodes {
    fn of(vqgan: &Vqgan, pool: &Pool, cache: Option<&std::path::Path>) -> Result<Self> {
        const KINDS: [Input; 3] = [Input::Image, Input::Segmentation, Input::Depth];
        let imgs: Vec<&Img> = KINDS
            .iter()
            .flat_map(|&k| (0..pool.input_count(k)).map(move |i| pool.input(k, i)))
            .collect();
        let mut codes = crate::code_cache::load_or_encode(cache, &imgs, |imgs| {
            let mut out = Vec::with_capacity(imgs.len());
            for chunk in imgs.chunks(32) {
                out.extend(encode_images(vqgan, chunk)?);
            }
            Ok(out)
        })?
        .into_iter();
        let mut next = |k: Input| codes.by_ref().take(pool.input_count(k)).collect::<Vec<_>>();
        Ok(Self([
            next(Input::Image),
            next(Input::Segmentation),
            next(Input::Depth),
        ]))
    }

    fn get(&self, input: Input, i: usize) -> &ImageGrid {
        let k = match input {
            Input::Image => 0,
            Input::Segmentation => 1,
            Input::Depth => 2,
        };
        &self.0[k][i]
    }
}

impl ProceduralSource {
    pub fn new(vqgan: Vqgan, train: Pool, val: Pool, config: ProceduralConfig) -> Result<Self> {
        Self::with_code_cache(vqgan, train, val, config, None)
    }

    /// [`ProceduralSource::new`] keeping the pools' input codes in `cache_dir` between starts
    /// (see [`crate::code_cache`]).
    pub fn with_code_cache(
        vqgan: Vqgan,
        train: Pool,
        val: Pool,
        config: ProceduralConfig,
        cache_dir: Option<&std::path::Path>,
    ) -> Result<Self> {
        config.validate().map_err(TrainError::Data)?;
        if train.images.len() < 2 {
            return Err(TrainError::Data(format!(
                "procedural samples need at least 2 base images, the suite gave {}",
                train.images.len()
            )));
        }
        let cache =
            |split: &str| cache_dir.map(|d| d.join(format!("procedural-codes-{split}.json")));
        let train_codes = InputCodes::of(&vqgan, &train, cache("train").as_deref())?;
        let val_codes = InputCodes::of(&vqgan, &val, cache("val").as_deref())?;
        Ok(Self {
            vqgan,
            train,
            val,
            train_codes,
            val_codes,
            config,
        })
    }

    pub fn train_pool(&self) -> &Pool {
        &self.train
    }

    /// VQ codes of images (one encoder call for all of them).
    pub fn encode(&self, imgs: &[&Img]) -> Result<Vec<ImageGrid>> {
        encode_images(&self.vqgan, imgs)
    }

    /// One training sample with a fresh task.
    pub fn sample(
        &self,
        builder: &PromptBuilder,
        mode: PromptMode,
        rng: &mut ChaCha8Rng,
    ) -> Result<Sample> {
        let c = &self.config;
        // Drawn only when enabled, so runs without it keep their sample stream.
        let task = if c.p_identity > 0.0 && rng.random::<f64>() < c.p_identity {
            Task::identity()
        } else {
            draw_task(&Selection::train(c.p_compose), &self.train, rng).map_err(TrainError::Data)?
        };
        let shots = rng.random_range(1..=c.max_shots);
        let outputs = task.outputs(&self.train, shots + 1, rng);
        if outputs.len() < 2 {
            return Err(TrainError::Data(format!(
                "task {} found fewer than 2 base images",
                task.label
            )));
        }
        let instruction = (rng.random::<f64>() < c.p_generic_instruction)
            .then(|| GENERIC_INSTRUCTION.to_string());
        let pairs = self.encode_pairs(&self.train_codes, task.input, &outputs)?;
        let (examples, query, answer) = lay_out(pairs, instruction);
        build_sample(
            builder,
            &examples,
            &query,
            &answer,
            mode,
            c.loss_on_examples,
        )
    }

    /// Tokens of the longest sample this source can draw (`max_shots` pairs, the generic
    /// instruction, every image of the pool's size), so a run can refuse a too-short context
    /// before it starts.
    pub fn max_sample_len(&self, builder: &PromptBuilder) -> Result<usize> {
        let g = self.train_codes.get(Input::Image, 0).clone();
        let pairs = vec![(g.clone(), g); self.config.max_shots + 1];
        let (examples, query, answer) = lay_out(pairs, Some(GENERIC_INSTRUCTION.into()));
        let s = build_sample(
            builder,
            &examples,
            &query,
            &answer,
            PromptMode::XPrompt,
            false,
        )?;
        Ok(s.len())
    }

    /// (input codes, output codes) of drawn pairs: inputs from the cache, outputs encoded in
    /// one call.
    fn encode_pairs(
        &self,
        codes: &InputCodes,
        input: Input,
        outputs: &[(usize, Img)],
    ) -> Result<Vec<(ImageGrid, ImageGrid)>> {
        let imgs: Vec<&Img> = outputs.iter().map(|(_, o)| o).collect();
        let encoded = self.encode(&imgs)?;
        Ok(outputs
            .iter()
            .zip(encoded)
            .map(|((i, _), out)| (codes.get(input, *i).clone(), out))
            .collect())
    }

    /// `n` fixed probes on the validation pool (seeded: the same probes at every validation),
    /// `shots` examples each, from the trained families over their training ranges.
    pub fn probes(&self, n: usize, shots: usize, seed: u64) -> Result<Vec<IclProbe>> {
        let (pool, codes) = if self.val.images.len() > shots {
            (&self.val, &self.val_codes)
        } else {
            (&self.train, &self.train_codes)
        };
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let sel = Selection::train(self.config.p_compose);
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let task = draw_task(&sel, pool, &mut rng).map_err(TrainError::Data)?;
            let other = draw_task(&sel, pool, &mut rng).map_err(TrainError::Data)?;
            let right = task.outputs(pool, shots + 1, &mut rng);
            let wrong = other.outputs(pool, shots, &mut rng);
            if right.len() < shots + 1 || wrong.len() < shots {
                continue;
            }
            let right = self.encode_pairs(codes, task.input, &right)?;
            let mut wrong = self.encode_pairs(codes, other.input, &wrong)?;
            wrong.push(right[shots].clone());
            let (right, query, answer) = lay_out(right, None);
            let (wrong, _, _) = lay_out(wrong, None);
            out.push(IclProbe {
                right,
                wrong,
                query,
                answer,
            });
        }
        Ok(out)
    }
}

/// Pairs of codes into examples (all but the last pair), a query and its answer.
fn lay_out(
    pairs: Vec<(ImageGrid, ImageGrid)>,
    instruction: Option<String>,
) -> (Vec<Example>, Query, Answer) {
    let mut pairs = pairs;
    let (q, a) = pairs.pop().expect("at least one pair");
    let examples = pairs
        .into_iter()
        .map(|(input, output)| Example {
            instruction: instruction.clone(),
            inputs: vec![input],
            output: Answer::Image(output),
        })
        .collect();
    (
        examples,
        Query {
            instruction,
            images: vec![q],
        },
        Answer::Image(a),
    )
}

/// VQ codes of 8-bit-exact images through one encoder call.
pub fn encode_images(vqgan: &Vqgan, imgs: &[&Img]) -> Result<Vec<ImageGrid>> {
    let err = |e: xprompt_vqgan::VqganError| TrainError::Data(format!("VQ encoding: {e}"));
    let tensors = imgs
        .iter()
        .map(|img| {
            let u8img = U8Image {
                width: img.w,
                height: img.h,
                channels: 3,
                data: img.to_rgb8().into_raw(),
            };
            to_tensor(&u8img, &Device::Cpu).map_err(err)
        })
        .collect::<Result<Vec<_>>>()?;
    let x = candle_core::Tensor::cat(&tensors, 0)?;
    let g = vqgan.encode(&x).map_err(err)?;
    let per = g.height * g.width;
    g.codes
        .chunks_exact(per)
        .map(|c| Ok(ImageGrid::new(g.height, g.width, c.to_vec())?))
        .collect()
}

/// Lays out a sample with targets on the answer and, with `loss_on_examples`, on the output of
/// every example after the first (the first has nothing in context to learn from).
pub fn build_sample(
    builder: &PromptBuilder,
    examples: &[Example],
    query: &Query,
    answer: &Answer,
    mode: PromptMode,
    loss_on_examples: bool,
) -> Result<Sample> {
    let layout = builder.full(examples, query, Some(answer), mode)?;
    let n = layout.len();
    let answer_len = builder.answer_ids(answer)?.len();
    let mut is_target: Vec<bool> = (0..n).map(|i| i >= n - answer_len).collect();
    if loss_on_examples && mode != PromptMode::ZeroShot {
        // BOS, then each example's ids in order; its output closes it.
        let mut start = 1;
        for (i, e) in examples.iter().enumerate() {
            let len = builder.example_ids(e)?.len();
            if i > 0 {
                let out = builder.answer_ids(&e.output)?.len();
                is_target[start + len - out..start + len].fill(true);
            }
            start += len;
        }
    }
    Ok(Sample {
        ids: layout.ids,
        segments: layout.segments,
        is_target,
        mode,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use xprompt_core::config::ImageGeometry;
    use xprompt_core::sequence::ImageFormat;
    use xprompt_core::vocab::{compact_vocabulary_map, Vocabulary};

    fn grid(code: u32) -> ImageGrid {
        ImageGrid::new(2, 2, vec![code; 4]).unwrap()
    }

    #[test]
    fn multi_pair_loss_targets_every_example_output_after_the_first_and_the_answer() {
        let (map, n) = compact_vocabulary_map(8, 4, &[]);
        let vocab = Vocabulary::from_map(&map, n + 2, vec![n as u32, n as u32 + 1]).unwrap();
        let builder = PromptBuilder {
            format: ImageFormat::new(
                &vocab,
                ImageGeometry {
                    cells_per_size_unit: 1,
                    pixels_per_cell: 1,
                },
            ),
            tokenizer: None,
        };
        let pairs = vec![(grid(1), grid(2)), (grid(3), grid(4)), (grid(5), grid(6))];
        let (examples, query, answer) = lay_out(pairs, None);
        let targets_of = |loss_on_examples| {
            let s = build_sample(
                &builder,
                &examples,
                &query,
                &answer,
                PromptMode::XPrompt,
                loss_on_examples,
            )
            .unwrap();
            s.ids
                .iter()
                .zip(&s.is_target)
                .filter(|(_, &t)| t)
                .map(|(&id, _)| id)
                .collect::<Vec<u32>>()
        };
        let code = |c| vocab.code_to_id(c).unwrap();
        let answer_only = targets_of(false);
        assert_eq!(answer_only.iter().filter(|&&i| i == code(6)).count(), 4);
        assert!(!answer_only.contains(&code(4)) && !answer_only.contains(&code(2)));
        let multi = targets_of(true);
        assert_eq!(
            multi.len(),
            2 * answer_only.len(),
            "second example's output + answer"
        );
        assert_eq!(
            multi.iter().filter(|&&i| i == code(4)).count(),
            4,
            "second output"
        );
        assert!(
            !multi.contains(&code(2)),
            "the first output has no context to learn from"
        );
        assert!(
            !multi.contains(&code(3)) && !multi.contains(&code(5)),
            "inputs never"
        );
    }
}
