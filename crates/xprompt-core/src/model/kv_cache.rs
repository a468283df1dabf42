//! Key/value cache of one attention layer.
//!
//! Keys are stored after q/k-norm and RoPE (as transformers does), so a cached span can be
//! dropped without touching the rest: X-Prompt evicts the in-context examples (IE) once the
//! X-Prompt tokens (XP) have attended to them, and the remaining keys keep their original
//! positions. The buffer is preallocated and grows by doubling, so decoding one token costs a
//! write of one row rather than a copy of the whole cache.

use candle_core::{Result, Tensor};

/// Keys and values of one layer, `(B, H_kv, len, D)` views over a `(B, H_kv, capacity, D)` buffer.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    k: Option<Tensor>,
    v: Option<Tensor>,
    len: usize,
}

const SEQ_DIM: usize = 2;
const MIN_CAPACITY: usize = 64;

impl KvCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `k`, `v` of shape `(B, H_kv, T, D)` and returns the full cached `(k, v)`.
    pub fn append(&mut self, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let new_len = self.len + k.dim(SEQ_DIM)?;
        let capacity = self
            .k
            .as_ref()
            .map(|t| t.dim(SEQ_DIM))
            .transpose()?
            .unwrap_or(0);
        if new_len > capacity {
            let cap = new_len.next_power_of_two().max(MIN_CAPACITY);
            // Both grown before either is replaced: a failed allocation leaves the cache whole.
            let nk = Self::grow(self.k.clone(), self.len, k, cap)?;
            let nv = Self::grow(self.v.clone(), self.len, v, cap)?;
            (self.k, self.v) = (Some(nk), Some(nv));
        }
        let (kb, vb) = (
            self.k.as_ref().expect("allocated"),
            self.v.as_ref().expect("allocated"),
        );
        kb.slice_set(&k.contiguous()?, SEQ_DIM, self.len)?;
        vb.slice_set(&v.contiguous()?, SEQ_DIM, self.len)?;
        self.len = new_len;
        self.current()
    }

    fn grow(old: Option<Tensor>, len: usize, like: &Tensor, cap: usize) -> Result<Tensor> {
        let (b, h, _, d) = like.dims4()?;
        let buf = Tensor::zeros((b, h, cap, d), like.dtype(), like.device())?;
        if let Some(old) = old {
            if len > 0 {
                buf.slice_set(&old.narrow(SEQ_DIM, 0, len)?.contiguous()?, SEQ_DIM, 0)?;
            }
        }
        Ok(buf)
    }

    /// The cached `(k, v)`, each `(B, H_kv, len, D)`.
    pub fn current(&self) -> Result<(Tensor, Tensor)> {
        match (&self.k, &self.v) {
            (Some(k), Some(v)) => Ok((
                k.narrow(SEQ_DIM, 0, self.len)?,
                v.narrow(SEQ_DIM, 0, self.len)?,
            )),
            _ => candle_core::bail!("kv cache is empty"),
        }
    }

    /// Keeps the first `len` positions.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Removes the positions `start..end` (e.g. the in-context examples after XP prefill).
    pub fn drop_span(&mut self, start: usize, end: usize) -> Result<()> {
        if start > end || end > self.len {
            candle_core::bail!(
                "drop_span {start}..{end} outside cache of length {}",
                self.len
            )
        }
        if start == end {
            return Ok(());
        }
        let (k, v) = self.current()?;
        let keep = |t: &Tensor| -> Result<Tensor> {
            let head = t.narrow(SEQ_DIM, 0, start)?;
            let tail = t.narrow(SEQ_DIM, end, self.len - end)?;
            Tensor::cat(&[&head, &tail], SEQ_DIM)
        };
        let (k, v) = (keep(&k)?, keep(&v)?);
        let remaining = self.len - (end - start);
        *self = Self::default();
        if remaining > 0 {
            self.append(&k, &v)?;
        }
        Ok(())
    }

    /// A deep copy of the cached span (independent of later in-place appends).
    pub fn snapshot(&self) -> Result<Self> {
        if self.len == 0 {
            return Ok(Self::default());
        }
        let (k, v) = self.current()?;
        let mut copy = Self::default();
        copy.append(&k.copy()?, &v.copy()?)?;
        Ok(copy)
    }

    /// Builds a cache holding exactly `k`, `v` (used when loading a saved task context).
    pub fn from_tensors(k: &Tensor, v: &Tensor) -> Result<Self> {
        let mut cache = Self::default();
        if k.dim(SEQ_DIM)? > 0 {
            cache.append(k, v)?;
        }
        Ok(cache)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    fn seq(start: usize, n: usize) -> Tensor {
        Tensor::arange(start as u32, (start + n) as u32, &Device::Cpu)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            .reshape((1, 1, n, 1))
            .unwrap()
    }

    fn values(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn append_grows_past_capacity_and_keeps_order() {
        let mut c = KvCache::new();
        c.append(&seq(0, 50), &seq(0, 50)).unwrap();
        for i in 50..200 {
            c.append(&seq(i, 1), &seq(i, 1)).unwrap();
        }
        let (k, _) = c.current().unwrap();
        assert_eq!(values(&k), (0..200).map(|x| x as f32).collect::<Vec<_>>());
    }

    #[test]
    fn drop_span_removes_exactly_the_span() {
        let mut c = KvCache::new();
        c.append(&seq(0, 10), &seq(100, 10)).unwrap();
        c.drop_span(2, 7).unwrap();
        let (k, v) = c.current().unwrap();
        assert_eq!(values(&k), vec![0., 1., 7., 8., 9.]);
        assert_eq!(values(&v), vec![100., 101., 107., 108., 109.]);
        c.append(&seq(10, 1), &seq(110, 1)).unwrap();
        assert_eq!(c.len(), 6);
        assert!(c.drop_span(3, 9).is_err());
    }

    #[test]
    fn snapshot_is_independent_of_later_writes() {
        let mut c = KvCache::new();
        c.append(&seq(0, 4), &seq(0, 4)).unwrap();
        let snap = c.snapshot().unwrap();
        c.truncate(2);
        c.append(&seq(50, 2), &seq(50, 2)).unwrap();
        assert_eq!(values(&snap.current().unwrap().0), vec![0., 1., 2., 3.]);
        assert_eq!(values(&c.current().unwrap().0), vec![0., 1., 50., 51.]);
    }
}
