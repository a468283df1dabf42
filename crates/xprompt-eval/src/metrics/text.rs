//! Text answers: SQuAD-style normalisation (lower case, punctuation removed, articles "a/an/the" dropped,
//! whitespace collapsed), exact match, and token F1 over the multiset of normalised tokens.

use std::collections::HashMap;

pub fn normalise_answer(s: &str) -> Vec<String> {
    let lowered: String = s
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c.is_whitespace() {
                c
            } else {
                ' '
            }
        })
        .collect();
    lowered
        .split_whitespace()
        .filter(|t| !matches!(*t, "a" | "an" | "the"))
        .map(str::to_string)
        .collect()
}

pub fn exact_match(pred: &str, gold: &str) -> f64 {
    if normalise_answer(pred) == normalise_answer(gold) {
        1.0
    } else {
        0.0
    }
}

/// Token F1; two empty answers score 1, one empty answer scores 0.
pub fn token_f1(pred: &str, gold: &str) -> f64 {
    let (p, g) = (normalise_answer(pred), normalise_answer(gold));
    if p.is_empty() || g.is_empty() {
        return if p.is_empty() && g.is_empty() {
            1.0
        } else {
            0.0
        };
    }
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for t in &g {
        *counts.entry(t.as_str()).or_insert(0) += 1;
    }
    let mut common = 0usize;
    for t in &p {
        if let Some(c) = counts.get_mut(t.as_str()) {
            if *c > 0 {
                *c -= 1;
                common += 1;
            }
        }
    }
    if common == 0 {
        return 0.0;
    }
    let precision = common as f64 / p.len() as f64;
    let recall = common as f64 / g.len() as f64;
    2.0 * precision * recall / (precision + recall)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_and_exact_match() {
        assert_eq!(normalise_answer("The  Brown, slug!"), vec!["brown", "slug"]);
        assert_eq!(exact_match("a brown slug.", "Brown slug"), 1.0);
        assert_eq!(exact_match("a brown snail", "a brown slug"), 0.0);
    }

    #[test]
    fn token_f1_hand_values() {
        // pred {red, apple, tree}, gold {red, apple}: P = 2/3, R = 1 → F1 = 0.8
        assert!((token_f1("a red apple tree", "the red apple") - 0.8).abs() < 1e-12);
        // repeated tokens count once per occurrence: pred {cat, cat}, gold {cat}: P = 1/2, R = 1 → 2/3
        assert!((token_f1("cat cat", "cat") - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(token_f1("", ""), 1.0);
        assert_eq!(token_f1("dog", ""), 0.0);
        assert_eq!(token_f1("dog", "cat"), 0.0);
    }
}
