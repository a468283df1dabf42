//! How much memory there is, and how much a prefill will need: the numbers behind the
//! "before any allocation" checks of long prompts and training runs.

use crate::config::ChameleonConfig;

/// `MemAvailable` from /proc/meminfo in bytes; `None` where it cannot be read (not Linux).
pub fn available_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: u64 = text
        .lines()
        .find(|l| l.starts_with("MemAvailable:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Peak bytes a forward pass of `new` tokens over `total` positions (cache included) adds to
/// the loaded model, in f32: the KV cache of all `total` positions, the attention mask, one
/// layer's attention scores, softmax and masked copy (the inference path materialises
/// `(heads, new, total)`), one layer's activations, and logits for every new token. An upper
/// estimate for refusing requests that cannot fit, not an exact figure.
pub fn prefill_bytes(cfg: &ChameleonConfig, new: usize, total: usize) -> u64 {
    let (new, total) = (new as u64, total as u64);
    let kv = total
        * cfg.num_hidden_layers as u64
        * 2
        * cfg.num_key_value_heads as u64
        * cfg.head_dim as u64;
    let mask = new * total;
    let scores = 3 * cfg.num_attention_heads as u64 * new * total;
    let activations = new * (4 * cfg.hidden_size as u64 + 3 * cfg.intermediate_size as u64);
    let logits = new * cfg.vocab_size as u64;
    4 * (kv + mask + scores + activations + logits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_estimate_grows_with_the_square_of_the_length() {
        let cfg = ChameleonConfig::tiny(100);
        let small = prefill_bytes(&cfg, 100, 100);
        let big = prefill_bytes(&cfg, 1000, 1000);
        assert!(big > 50 * small, "{small} -> {big}");
        // 4 heads × 1000 × 1000 scores, three copies, f32: at least 48 MB.
        assert!(big >= 3 * 4 * 1000 * 1000 * 4);
    }

    #[test]
    fn available_memory_is_read_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(available_bytes().is_some_and(|b| b > 0));
        }
    }
}
