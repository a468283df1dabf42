//! The X-Prompt sample builder (PAPER.md §2–3): for a target item, draw k in-context examples
//! of the same task, apply task augmentation, and lay out IE | XP | TD with labels on the TD
//! answer only (the answer span or text plus its closing separator).
//!
//! Augmentations, each with its own probability, applied to the examples and the target alike
//! so the examples always demonstrate the task being asked:
//! - **reverse task**: input and output swapped, the reverse instruction (image outputs only);
//! - **difference description**: the inputs are the input and output images, the answer is
//!   the exact description text;
//! - **dense caption** (text-to-image items): the image is the input, the caption the answer.

use std::collections::HashMap;

use rand::seq::IndexedRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use xprompt_core::sequence::ImageGrid;
use xprompt_generate::incontext::{Answer, Example, PromptBuilder, PromptMode, Query, Segment};

use crate::error::{Result, TrainError};

/// One task instance with its images already tokenized.
#[derive(Debug, Clone)]
pub struct TaskItem {
    pub id: String,
    pub task: String,
    pub family: String,
    pub instruction: Option<String>,
    pub inputs: Vec<ImageGrid>,
    pub output: Answer,
    pub description: Option<String>,
    pub reverse_instruction: Option<String>,
}

/// Sampling settings (the `[data]` part of the experiment config).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SampleConfig {
    /// In-context examples per sample.
    pub shots: usize,
    pub p_reverse: f64,
    pub p_description: f64,
    pub p_caption: f64,
    /// Probability of a zero-shot sample (no examples), so the model also learns 0-shot.
    pub p_zero_shot: f64,
    pub mode: PromptMode,
    /// RAIE training: probability that an item with retrieval neighbours takes its examples
    /// from them (nearest instructions, any task of the family) instead of its own task.
    pub p_retrieved: f64,
    /// Family whose items get retrieval neighbours, and how many.
    pub retrieval_family: String,
    pub retrieval_k: usize,
    /// Probability that an in-context sample drops its task instruction from the examples and
    /// the query (example-only prompting: the task must be read from the examples).
    pub p_no_instruction: f64,
    /// Probability that an in-context sample uses the causal mask instead of `mode`, so one
    /// model answers under both masks.
    pub p_causal: f64,
}

impl Default for SampleConfig {
    fn default() -> Self {
        Self {
            shots: 1,
            p_reverse: 0.25,
            p_description: 0.1,
            p_caption: 0.1,
            p_zero_shot: 0.1,
            mode: PromptMode::XPrompt,
            p_retrieved: 0.0,
            retrieval_family: "editing".into(),
            retrieval_k: 4,
            p_no_instruction: 0.0,
            p_causal: 0.0,
        }
    }
}

impl SampleConfig {
    /// The mask of an in-context sample: `mode`, or causal with probability `p_causal` (drawn
    /// only when enabled, so runs without it keep their sample stream).
    pub fn in_context_mode(&self, rng: &mut ChaCha8Rng) -> PromptMode {
        if self.p_causal > 0.0 && rng.random::<f64>() < self.p_causal {
            PromptMode::Causal
        } else {
            self.mode
        }
    }
}

/// A laid-out training sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub ids: Vec<u32>,
    pub segments: Vec<Segment>,
    /// `true` where the token is a prediction target (the TD answer and its separator).
    pub is_target: Vec<bool>,
    pub mode: PromptMode,
}

impl Sample {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn targets(&self) -> usize {
        self.is_target.iter().filter(|&&t| t).count()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Forward,
    Reverse,
    Describe,
    Caption,
}

/// Items grouped by task, plus the sampling rules.
pub struct SampleBuilder<'a> {
    items: &'a [TaskItem],
    by_task: HashMap<&'a str, Vec<usize>>,
    /// Retrieval neighbours per item (see `retrieval::instruction_neighbours`).
    neighbours: Option<&'a HashMap<usize, Vec<usize>>>,
    pub config: SampleConfig,
}

impl<'a> SampleBuilder<'a> {
    pub fn new(items: &'a [TaskItem], config: SampleConfig) -> Result<Self> {
        if items.is_empty() {
            return Err(TrainError::Data("no training items".into()));
        }
        let mut by_task: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, it) in items.iter().enumerate() {
            by_task.entry(it.task.as_str()).or_default().push(i);
        }
        Ok(Self {
            items,
            by_task,
            neighbours: None,
            config,
        })
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Uses `neighbours` as RAIE candidates (with probability `config.p_retrieved`).
    pub fn with_neighbours(mut self, neighbours: &'a HashMap<usize, Vec<usize>>) -> Self {
        self.neighbours = Some(neighbours);
        self
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    fn variant(&self, it: &TaskItem, rng: &mut ChaCha8Rng) -> Variant {
        let c = &self.config;
        let image_out = matches!(it.output, Answer::Image(_));
        if image_out && it.inputs.is_empty() {
            return if rng.random::<f64>() < c.p_caption {
                Variant::Caption
            } else {
                Variant::Forward
            };
        }
        let u: f64 = rng.random();
        if image_out && it.reverse_instruction.is_some() && it.inputs.len() == 1 && u < c.p_reverse
        {
            Variant::Reverse
        } else if image_out && it.description.is_some() && u < c.p_reverse + c.p_description {
            Variant::Describe
        } else {
            Variant::Forward
        }
    }

    /// `(instruction, inputs, answer)` of an item under a variant.
    fn view(it: &TaskItem, v: Variant) -> (Option<String>, Vec<ImageGrid>, Answer) {
        match (v, &it.output) {
            (Variant::Reverse, Answer::Image(out)) => (
                it.reverse_instruction.clone(),
                vec![out.clone()],
                Answer::Image(it.inputs[0].clone()),
            ),
            (Variant::Describe, Answer::Image(out)) => {
                let mut inputs = it.inputs.clone();
                inputs.push(out.clone());
                let desc = it.description.clone().unwrap_or_default();
                (
                    Some("What changed between these images?".into()),
                    inputs,
                    Answer::Text(desc),
                )
            }
            (Variant::Caption, Answer::Image(out)) => (
                Some("Describe the image.".into()),
                vec![out.clone()],
                Answer::Text(it.instruction.clone().unwrap_or_default()),
            ),
            _ => (it.instruction.clone(), it.inputs.clone(), it.output.clone()),
        }
    }

    /// Builds the sample whose target is item `index`.
    pub fn build(
        &self,
        index: usize,
        builder: &PromptBuilder,
        rng: &mut ChaCha8Rng,
    ) -> Result<Sample> {
        let it = &self.items[index];
        let variant = self.variant(it, rng);
        let retrieved = self
            .neighbours
            .and_then(|n| n.get(&index))
            .filter(|n| !n.is_empty() && rng.random::<f64>() < self.config.p_retrieved);
        let peers: Vec<usize> = match retrieved {
            Some(n) => n.iter().copied().filter(|&j| j != index).collect(),
            None => self.by_task[it.task.as_str()]
                .iter()
                .copied()
                .filter(|&j| j != index)
                .collect(),
        };
        let zero_shot = self.config.shots == 0
            || peers.is_empty()
            || rng.random::<f64>() < self.config.p_zero_shot;
        let mode = if zero_shot {
            PromptMode::ZeroShot
        } else {
            self.config.in_context_mode(rng)
        };
        // Drawn only when enabled, so runs without it keep their sample stream.
        let drop_instruction = !zero_shot
            && self.config.p_no_instruction > 0.0
            && rng.random::<f64>() < self.config.p_no_instruction;
        let mut examples: Vec<Example> = if zero_shot {
            Vec::new()
        } else {
            (0..self.config.shots)
                .map(|_| {
                    let j = *peers.choose(rng).expect("peers not empty");
                    let (instruction, inputs, output) = Self::view(&self.items[j], variant);
                    Example {
                        instruction,
                        inputs,
                        output,
                    }
                })
                .collect()
        };
        let (mut instruction, images, answer) = Self::view(it, variant);
        if drop_instruction && !images.is_empty() {
            instruction = None;
            examples.iter_mut().for_each(|e| e.instruction = None);
        }
        let layout = builder.full(
            &examples,
            &Query {
                instruction,
                images,
            },
            Some(&answer),
            mode,
        )?;
        let answer_len = builder.answer_ids(&answer)?.len();
        let n = layout.len();
        let is_target = (0..n).map(|i| i >= n - answer_len).collect();
        Ok(Sample {
            ids: layout.ids,
            segments: layout.segments,
            is_target,
            mode,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use xprompt_core::config::ImageGeometry;
    use xprompt_core::sequence::ImageFormat;
    use xprompt_core::vocab::{compact_vocabulary_map, Vocabulary};

    fn item(i: usize, task: &str, instruction: &str, code: u32) -> TaskItem {
        let g = ImageGrid::new(2, 2, vec![code; 4]).unwrap();
        TaskItem {
            id: i.to_string(),
            task: task.into(),
            family: "editing".into(),
            instruction: Some(instruction.into()),
            inputs: vec![g.clone()],
            output: Answer::Image(g),
            description: None,
            reverse_instruction: None,
        }
    }

    #[test]
    fn retrieved_examples_come_from_neighbours_never_the_item_itself() {
        let items = vec![
            item(0, "add", "add a red cat on the left", 1),
            item(1, "recolour", "make the red cat blue", 2),
            item(2, "add", "add a red cat on the right", 3),
            item(3, "remove", "remove the dog", 4),
        ];
        let nb = crate::retrieval::instruction_neighbours(&items, "editing", 1).unwrap();
        assert_eq!(
            nb[&0],
            vec![2],
            "nearest instruction to 'add a red cat on the left'"
        );
        assert!(nb.values().all(|v| v.len() == 1));
        assert!(nb.iter().all(|(k, v)| !v.contains(k)));
        let (map, n) = compact_vocabulary_map(8, 4, &[]);
        let vocab = Vocabulary::from_map(&map, n + 2, vec![n as u32, n as u32 + 1]).unwrap();
        let geometry = ImageGeometry {
            cells_per_size_unit: 1,
            pixels_per_cell: 1,
        };
        let cfg = SampleConfig {
            p_retrieved: 1.0,
            p_zero_shot: 0.0,
            p_reverse: 0.0,
            p_description: 0.0,
            ..Default::default()
        };
        // Item 3's neighbour is of another task: with p_retrieved = 1 it is still used.
        let mut forced = HashMap::new();
        forced.insert(3usize, vec![1usize]);
        let builder = PromptBuilder {
            format: ImageFormat::new(&vocab, geometry),
            tokenizer: None,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let instr_free: Vec<TaskItem> = items
            .iter()
            .cloned()
            .map(|mut i| {
                i.instruction = None;
                i
            })
            .collect();
        let sb2 = SampleBuilder::new(&instr_free, cfg)
            .unwrap()
            .with_neighbours(&forced);
        let s = sb2.build(3, &builder, &mut rng).unwrap();
        // The example's input/output grids carry code 2 (item 1), the query code 4 (item 3).
        let code2 = vocab.code_to_id(2).unwrap();
        assert!(
            s.ids.contains(&code2),
            "the retrieved neighbour (another task) is the example"
        );
    }
}
