//! Dropout with its mask from a counter-based hash: burn's `Dropout` samples a Bernoulli per
//! element through a scalar ChaCha generator, then multiplies twice — 12% of a MiniLM
//! training step on the CPU (perf, docs/BENCHMARKS.md). Here each element's keep/drop comes
//! from hashing its index with a per-call seed, which vectorises and splits over threads with
//! the same result, and the input is multiplied once by the mask already scaled by 1/keep.
//! The product is burn's own multiplication, so autodiff records it as usual: the gradient
//! is the incoming one times the same mask.

use burn::nn::Dropout;
use burn::tensor::{Distribution, Tensor, TensorData, backend::Backend};

/// `layer` applied to `x`: unchanged outside training (no autodiff) or with probability 0;
/// on the CPU backend (burn-flex, plain or under `Autodiff`) with the hashed mask; elsewhere
/// burn's own dropout (a GPU backend draws its mask on the device).
pub fn dropout<B: Backend, const D: usize>(layer: &Dropout, x: Tensor<B, D>) -> Tensor<B, D> {
    let device = x.device();
    if !B::ad_enabled(&device) || layer.prob == 0.0 {
        return x;
    }
    if !super::is_flex_device::<B>() {
        return layer.forward(x);
    }
    let shape = x.shape();
    let mask = dropout_mask(shape.num_elements(), layer.prob, mask_seed::<B>(&device));
    x * Tensor::from_data(TensorData::new(mask, shape), &device)
}

std::thread_local! {
    /// This thread's dropout stream: its seed and the number of masks drawn from it.
    static STREAM: core::cell::Cell<Option<(u64, u64)>> = const { core::cell::Cell::new(None) };
}

/// Seeds the dropout masks drawn on this thread: the n-th mask after this call comes from
/// (`seed`, n) alone, whatever other threads draw meanwhile. Data-parallel training seeds each
/// model copy's thread, so its masks do not depend on how the threads interleave (burn-flex's
/// own generator is one for the process). Threads never seeded draw from the backend's
/// generator.
pub fn seed_dropout(seed: u64) {
    STREAM.with(|stream| stream.set(Some((seed, 0))));
}

/// The next mask's seed: from this thread's stream, or else from the backend's generator.
pub(crate) fn mask_seed<B: Backend>(device: &B::Device) -> u64 {
    next_seed().unwrap_or_else(|| draw_seed::<B>(device))
}

fn next_seed() -> Option<u64> {
    STREAM.with(|stream| {
        let (seed, drawn) = stream.get()?;
        stream.set(Some((seed, drawn + 1)));
        Some(splitmix64(seed ^ splitmix64(drawn)))
    })
}

/// SplitMix64's output function: a 64-bit hash that spreads nearby inputs apart.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// 48 random bits from the backend's seeded generator (`Backend::seed`), so training stays
/// repeatable from its seed like burn's dropout.
fn draw_seed<B: Backend>(device: &B::Device) -> u64 {
    let draws = Tensor::<B, 1>::random([2], Distribution::Default, device).into_data();
    let bits = |u: f32| ((u.clamp(0.0, 1.0) * (1 << 24) as f32) as u64) & 0xff_ffff;
    match draws.as_slice::<f32>() {
        Ok([a, b]) => bits(*a) << 24 | bits(*b),
        // Another float type: its first value still gives a seed.
        _ => draws.iter::<f32>().next().map_or(0, bits),
    }
}

/// `len` mask values: 0 with probability `prob`, else 1/(1 − prob).
pub(crate) fn dropout_mask(len: usize, prob: f64, seed: u64) -> Vec<f32> {
    let mut mask = vec![0f32; len];
    let keep = Mask::new(prob, seed);
    super::for_each_rows(&mut mask, 1, |chunk, first| keep.fill(chunk, first));
    mask
}

/// One mask's draw: element n of the mask depends on (seed, n) alone, so any range of it can
/// be filled on its own (the attention kernel's backward step refills each head's).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Mask {
    keys: (u32, u32),
    /// Keep when the hash's top 24 bits fall below keep·2²⁴ (the resolution of an f32 draw).
    threshold: u32,
    /// 1/(1 − prob), or 0 when everything is dropped.
    scale: f32,
}

impl Mask {
    pub(crate) fn new(prob: f64, seed: u64) -> Self {
        let keep = (1.0 - prob).clamp(0.0, 1.0);
        Self {
            keys: (seed as u32, (seed >> 32) as u32),
            threshold: (keep * (1u64 << 24) as f64).round() as u32,
            scale: if keep > 0.0 { (1.0 / keep) as f32 } else { 0.0 },
        }
    }

    /// Elements `first..first + chunk.len()` of the mask into `chunk`: a branch-free loop
    /// that vectorises.
    pub(crate) fn fill(&self, chunk: &mut [f32], first: usize) {
        for (i, value) in chunk.iter_mut().enumerate() {
            let hash = mix(mix((first + i) as u32 ^ self.keys.0) ^ self.keys.1);
            *value = if hash >> 8 < self.threshold {
                self.scale
            } else {
                0.0
            };
        }
    }
}

/// A 32-bit integer hash with low bias (Chris Wellons' "lowbias32"): every input bit flips
/// each output bit with probability close to ½. Applied twice, each time with a key.
#[inline(always)]
fn mix(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^ (x >> 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_asked_share_and_scales_what_it_keeps() {
        for prob in [0.1, 0.5, 0.9] {
            let mask = dropout_mask(1 << 20, prob, 7);
            let kept = mask.iter().filter(|&&m| m != 0.0).count() as f64 / mask.len() as f64;
            // 2^20 draws: the share's standard deviation is below 5e-4.
            assert!(
                (kept - (1.0 - prob)).abs() < 3e-3,
                "prob {prob}: kept {kept}"
            );
            let scale = (1.0 / (1.0 - prob)) as f32;
            assert!(mask.iter().all(|&m| m == 0.0 || m == scale));
            let mean = mask.iter().map(|&m| m as f64).sum::<f64>() / mask.len() as f64;
            assert!((mean - 1.0).abs() < 2e-2, "prob {prob}: mean {mean}");
        }
    }

    #[test]
    fn the_seed_decides_the_mask_and_neighbours_are_independent() {
        let a = dropout_mask(100_000, 0.5, 1);
        assert_eq!(a, dropout_mask(100_000, 0.5, 1));
        let b = dropout_mask(100_000, 0.5, 2);
        let same = a.iter().zip(&b).filter(|(x, y)| x == y).count() as f64 / a.len() as f64;
        assert!((same - 0.5).abs() < 0.01, "two seeds agree on {same}");
        // Adjacent elements (one row of a tensor) agree half the time, as independent draws.
        let pairs = a.windows(2).filter(|w| w[0] == w[1]).count() as f64 / (a.len() - 1) as f64;
        assert!((pairs - 0.5).abs() < 0.01, "neighbours agree on {pairs}");
        // Seeds that differ only in their high half give other masks too.
        let c = dropout_mask(100_000, 0.5, 1 | 1 << 40);
        let same = a.iter().zip(&c).filter(|(x, y)| x == y).count() as f64 / a.len() as f64;
        assert!((same - 0.5).abs() < 0.01, "high seed bits: agree on {same}");
    }

    #[test]
    fn edge_probabilities_and_sizes() {
        assert!(dropout_mask(1000, 1.0, 3).iter().all(|&m| m == 0.0));
        assert!(dropout_mask(0, 0.5, 3).is_empty());
        assert_eq!(dropout_mask(1, 1e-9, 3), [1.0]);
    }
}
