//! The attention kernel inside training (kernels/tracked.rs records it as one autodiff op, BERT
//! attention without position terms): the forward pass keeps each (sequence, head) pair's
//! probabilities; the backward pass refills dropout's mask from its seed and runs the pair's
//! five products. burn's composition records about ten ops here, each writing a `[batch, heads,
//! seq, seq]` or head-split tensor, and copies q, k, v and the context between layouts.

use super::on_flex::{Operands, Shape};
use crate::kernels::dropout::Mask;
use crate::kernels::matmul::{Product, View, product};
use crate::kernels::softmax::{Broadcast, softmax_backward_rows};

/// What the backward step needs besides q, k and v: every pair's probabilities before
/// dropout, `[batch, heads, seq, seq]`, and the dropout mask's draw. Training's shapes are
/// padded with q shaped like k (tracked.rs asks for that), so every pair is `[seq, seq]`.
#[derive(Clone, Debug)]
pub(crate) struct Saved {
    shape: Shape,
    probs: Vec<f32>,
    dropout: Option<Mask>,
}

/// The context `[batch, seq, heads·d]` of q, k, v (`[batch, seq, heads·d]` each, `shape`), with
/// `bias` added to the scores. `dropout` multiplies the probabilities by its mask, element n of
/// the `[batch, heads, seq, seq]` layout taking the mask's element n (burn's composition's
/// order).
pub(crate) fn forward(
    [q, k, v]: [&[f32]; 3],
    shape: Shape,
    bias: Option<&Broadcast>,
    dropout: Option<Mask>,
) -> (Vec<f32>, Saved) {
    let operands = Operands {
        q,
        k,
        v,
        bias,
        tables: None,
    };
    let pairs = shape.each_pair(|b, h| {
        let probs = shape.probs(b, h, &operands);
        let v = &v[shape.first(b, h)..];
        let context = match dropout {
            Some(mask) => {
                let mask = pair_mask(mask, b * shape.heads + h, probs.len());
                shape.times_values(b, &times(&probs, &mask), v)
            }
            None => shape.times_values(b, &probs, v),
        };
        (probs, context)
    });
    let (probs, contexts): (Vec<_>, Vec<_>) = pairs.into_iter().unzip();
    let context = shape.merge(&contexts);
    let saved = Saved {
        shape,
        probs: probs.concat(),
        dropout,
    };
    (context, saved)
}

/// The gradients of q, k and v, `[batch, seq, heads·d]` each, from the context's `grad`.
pub(crate) fn backward(saved: &Saved, [q, k, v]: [&[f32]; 3], grad: &[f32]) -> [Vec<f32>; 3] {
    let shape = &saved.shape;
    let pairs = shape.each_pair(|b, h| {
        let first = shape.first(b, h);
        let seq = shape.span(b).keys;
        let area = seq * seq;
        let pair = b * shape.heads + h;
        let probs = &saved.probs[pair * area..(pair + 1) * area];
        let inputs = [&q[first..], &k[first..], &v[first..]];
        let dropout = saved.dropout.map(|mask| (mask, pair));
        pair_gradients(shape, seq, inputs, probs, &grad[first..], dropout)
    });
    let mut merged = [0, 1, 2].map(|_| Vec::with_capacity(pairs.len()));
    for [dq, dk, dv] in pairs {
        merged[0].push(dq);
        merged[1].push(dk);
        merged[2].push(dv);
    }
    merged.map(|heads| shape.merge(&heads))
}

/// Pair `pair`'s range of the mask, `area` values (its `[seq, seq]` probabilities).
fn pair_mask(mask: Mask, pair: usize, area: usize) -> Vec<f32> {
    let mut values = vec![0f32; area];
    mask.fill(&mut values, pair * area);
    values
}

/// `a ⊙ b`.
fn times(a: &[f32], b: &[f32]) -> Vec<f32> {
    a.iter().zip(b).map(|(x, y)| x * y).collect()
}

/// dV = P'ᵀ·dC, dP = (dC·Vᵀ) ⊙ mask, dS = softmax backward of dP, dQ = scale·dS·K,
/// dK = scale·dSᵀ·Q, with P' the probabilities after dropout; q, k, v and `grad` start at
/// the pair's first element in the `[batch, seq, heads·d]` layout. `[seq, d]` each.
fn pair_gradients(
    shape: &Shape,
    seq: usize,
    [q, k, v]: [&[f32]; 3],
    probs: &[f32],
    grad: &[f32],
    dropout: Option<(Mask, usize)>,
) -> [Vec<f32>; 3] {
    let (d, width) = (shape.d, shape.width());
    let mask = dropout.map(|(mask, pair)| pair_mask(mask, pair, seq * seq));
    let kept = match &mask {
        Some(mask) => times(probs, mask),
        None => probs.to_vec(),
    };
    let rows = |values, cols| View::rows(values, cols);
    let dv = product(
        [seq, d],
        rows(&kept, seq).transposed(),
        rows(grad, width),
        seq,
        Product::PLAIN,
    );
    let mut dp = product(
        [seq, seq],
        rows(grad, width),
        rows(v, width).transposed(),
        d,
        Product::PLAIN,
    );
    if let Some(mask) = &mask {
        dp.iter_mut().zip(mask).for_each(|(g, m)| *g *= m);
    }
    softmax_backward_rows(&mut dp, probs, seq);
    let scaled = Product::scaled(shape.scale(None));
    let dq = product([seq, d], rows(&dp, seq), rows(k, width), seq, scaled);
    let dk = product(
        [seq, d],
        rows(&dp, seq).transposed(),
        rows(q, width),
        seq,
        scaled,
    );
    [dq, dk, dv]
}
