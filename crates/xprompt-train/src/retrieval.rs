//! RAIE for training (PAPER.md §4): for editing items, the nearest other items by instruction
//! (the built-in lexical embedder of `xprompt-retrieval`, fitted on the training instructions)
//! become candidate in-context examples, so the model learns to use retrieved — not merely
//! same-task — examples, as it will at inference with `xprompt generate --raie`.

use std::collections::HashMap;

use xprompt_retrieval::embed::lexical::{LexicalEmbedder, LexicalParams};
use xprompt_retrieval::Embedder;

use crate::error::{Result, TrainError};
use crate::sample::TaskItem;

/// For every item of `family` with an instruction: the indices of its `k` nearest other items
/// of that family (cosine of lexical embeddings, best first; ties by index).
pub fn instruction_neighbours(
    items: &[TaskItem],
    family: &str,
    k: usize,
) -> Result<HashMap<usize, Vec<usize>>> {
    let idx: Vec<usize> = (0..items.len())
        .filter(|&i| {
            items[i].family == family
                && items[i]
                    .instruction
                    .as_deref()
                    .is_some_and(|s| !s.trim().is_empty())
        })
        .collect();
    if idx.len() < 2 || k == 0 {
        return Ok(HashMap::new());
    }
    let texts: Vec<&str> = idx
        .iter()
        .map(|&i| items[i].instruction.as_deref().unwrap_or_default())
        .collect();
    let mut emb = LexicalEmbedder::new(LexicalParams::default())
        .map_err(|e| TrainError::Data(e.to_string()))?;
    emb.fit(&texts);
    let vecs = emb
        .embed(&texts)
        .map_err(|e| TrainError::Data(e.to_string()))?;
    let mut out = HashMap::new();
    for (a, &ia) in idx.iter().enumerate() {
        let mut scored: Vec<(f32, usize)> = idx
            .iter()
            .enumerate()
            .filter(|&(b, _)| b != a)
            .map(|(b, &ib)| (vecs[a].iter().zip(&vecs[b]).map(|(x, y)| x * y).sum(), ib))
            .collect();
        scored.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)));
        out.insert(ia, scored.into_iter().take(k).map(|(_, i)| i).collect());
    }
    Ok(out)
}
