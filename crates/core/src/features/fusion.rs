//! SD + DINOv2 fusion, as "A Tale of Two Features" (Zhang et al., NeurIPS
//! 2023) computes it in its code (Junyi42/sd-dino: `pck_spair_pascal.py`,
//! `utils/utils_correspondence.py::co_pca`):
//!
//! 1. each chosen diffusion layer of the two images is reduced by one joint
//!    PCA of both images' vectors (centred on their joint mean) to its
//!    dimension (published: 256 per layer);
//! 2. the reduced layers are combined coarse to fine: the coarser stack is
//!    resized bilinearly (`align_corners = false`) to the next finer grid and
//!    put after that layer's channels (sd-dino: `[s3, up(s4, up(s5))]`), so
//!    the common grid is the finest chosen layer's;
//! 3. the diffusion part and the DINOv2 patch tokens (resized to the common
//!    grid if their grid differs) are each L2-normalised per cell, weighted
//!    `sd_weight` and `1 − sd_weight` (published: equal weights; sd-dino's
//!    `WEIGHT[3] = WEIGHT[4] = 1`, the paper's α = 0.5: the same up to a
//!    common factor no cosine sees) and concatenated.
//!
//! Our PCA is exact (symmetric eigen-decomposition in f64 of the `C × C`
//! covariance, or of the `N × N` Gram matrix when there are fewer vectors
//! than channels) where sd-dino calls the randomised `torch.pca_lowrank`;
//! each component's largest-magnitude entry is made positive.
//!
//! The published defaults ([`FusionSettings::default`]): PCA dims 256, 256,
//! 256 (`--PCA_DIMS`), equal weights (`--WEIGHT 1 1 1 1 1`), DINOv2 ViT-B/14
//! (`--MODEL_SIZE base`), tokens of its last block ("layer 11, facet token")
//! at 840 px (`img_size = 840`), diffusion at the layers below. sd-dino taps
//! ODISE's decoder blocks 2, 5 and 8: the last block of each of the first
//! three decoder levels *before* its upsampler (strides 64, 32, 16). This
//! tool's taps have no such point; the defaults are the taps at the same
//! strides one block earlier: `us2`, `us5`, `us8`.

use nalgebra::{DMatrix, SymmetricEigen};
use serde::{Deserialize, Serialize};

use super::extract::ExtractError;
use crate::matching::FeatureMap;
use crate::model::FeatureKey;

/// sd-dino's PCA dimension per diffusion layer (`--PCA_DIMS 256 256 256`).
pub const DEFAULT_PCA_DIM: usize = 256;
/// sd-dino's DINOv2 input size (`img_size = 840 if DINOV2`).
pub const DEFAULT_DINO_SIZE: u32 = 840;
/// Equal weight of the two halves (the paper's α = 0.5).
pub const DEFAULT_SD_WEIGHT: f32 = 0.5;

/// How the DINOv2 half is computed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DinoSettings {
    /// Preset, folder or repo id of the DINOv2 model (default
    /// `dinov2-base`).
    pub model: String,
    /// Which tokens: `None` = the last block's output before the final
    /// layernorm (sd-dino's "layer 11, facet token" for ViT-B).
    pub layer: Option<crate::model::dino::DinoLayer>,
    /// Input side in pixels (rounded down to a multiple of the patch size).
    pub size: u32,
}

impl Default for DinoSettings {
    fn default() -> Self {
        DinoSettings {
            model: crate::model::dino::load::DEFAULT_DINO.to_string(),
            layer: None,
            size: DEFAULT_DINO_SIZE,
        }
    }
}

/// Everything that decides a fused map beside the diffusion settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FusionSettings {
    /// Diffusion layers fused (any order; combined coarse to fine).
    pub layers: Vec<FeatureKey>,
    /// PCA dimension per layer (one per layer, or one for all).
    pub pca_dims: Vec<usize>,
    /// Weight of the diffusion half; DINOv2 gets `1 − sd_weight`.
    pub sd_weight: f32,
    pub dino: DinoSettings,
}

impl Default for FusionSettings {
    fn default() -> Self {
        FusionSettings {
            layers: vec![FeatureKey::Us2, FeatureKey::Us5, FeatureKey::Us8],
            pca_dims: vec![DEFAULT_PCA_DIM; 3],
            sd_weight: DEFAULT_SD_WEIGHT,
            dino: DinoSettings::default(),
        }
    }
}

impl FusionSettings {
    /// Checks values a person typed.
    pub fn validate(&self) -> Result<(), ExtractError> {
        if self.layers.is_empty() {
            return Err(ExtractError::Invalid(
                "fusion needs at least one diffusion layer".into(),
            ));
        }
        for (i, k) in self.layers.iter().enumerate() {
            if self.layers[..i].contains(k) {
                return Err(ExtractError::Invalid(format!(
                    "fusion layer {k} is listed twice"
                )));
            }
        }
        if self.pca_dims.len() != 1 && self.pca_dims.len() != self.layers.len() {
            return Err(ExtractError::Invalid(format!(
                "{} PCA dims for {} fusion layers: give one, or one per layer",
                self.pca_dims.len(),
                self.layers.len()
            )));
        }
        if self.pca_dims.contains(&0) {
            return Err(ExtractError::Invalid(
                "a PCA dim of 0: each layer needs at least one component".into(),
            ));
        }
        if !self.sd_weight.is_finite() || !(0.0..=1.0).contains(&self.sd_weight) {
            return Err(ExtractError::Invalid(format!(
                "fusion weight {} is outside [0, 1]",
                self.sd_weight
            )));
        }
        if self.dino.size < 14 {
            return Err(ExtractError::Invalid(format!(
                "DINOv2 size {} is below one patch",
                self.dino.size
            )));
        }
        Ok(())
    }

    /// The PCA dimension of layer `i`.
    pub fn dim(&self, i: usize) -> usize {
        if self.pca_dims.len() == 1 {
            self.pca_dims[0]
        } else {
            self.pca_dims[i]
        }
    }
}

/// Fuses the diffusion maps (one per layer, same order for both images) and
/// DINOv2 maps of images A and B. `dims[i]` is layer `i`'s PCA dimension
/// (capped at its channels and vector count). Returns the fused maps of A
/// and B, each on its finest diffusion grid.
pub fn fuse_pair(
    sd_a: &[&FeatureMap],
    sd_b: &[&FeatureMap],
    dino_a: &FeatureMap,
    dino_b: &FeatureMap,
    dims: &[usize],
    sd_weight: f32,
) -> Result<(FeatureMap, FeatureMap), ExtractError> {
    if sd_a.is_empty() || sd_a.len() != sd_b.len() || dims.len() != sd_a.len() {
        return Err(ExtractError::Invalid(format!(
            "fusion: {} / {} diffusion maps and {} PCA dims",
            sd_a.len(),
            sd_b.len(),
            dims.len()
        )));
    }
    if dino_a.c != dino_b.c {
        return Err(ExtractError::Invalid(
            "fusion: the DINOv2 maps have different widths".into(),
        ));
    }
    // Coarse to fine by image A's grid (stable: ties keep the given order).
    let mut order: Vec<usize> = (0..sd_a.len()).collect();
    order.sort_by_key(|&i| sd_a[i].h * sd_a[i].w);
    let mut red_a = Vec::new();
    let mut red_b = Vec::new();
    for &i in &order {
        let (a, b) = joint_pca(sd_a[i], sd_b[i], dims[i])?;
        red_a.push(a);
        red_b.push(b);
    }
    let side = |red: Vec<FeatureMap>, dino: &FeatureMap| -> Result<FeatureMap, ExtractError> {
        let mut it = red.into_iter();
        let mut acc = it
            .next()
            .ok_or_else(|| ExtractError::Invalid("fusion: no layers".into()))?;
        for next in it {
            let up = resize_bilinear(&acc, next.h, next.w);
            acc = concat(&[&next, &up])?;
        }
        let d = resize_bilinear(dino, acc.h, acc.w);
        let sd = scaled_unit(&acc, sd_weight);
        let dn = scaled_unit(&d, 1.0 - sd_weight);
        concat(&[&sd, &dn])
    };
    Ok((side(red_a, dino_a)?, side(red_b, dino_b)?))
}

/// Joint PCA of the vectors of `a` and `b` (same channels): the projections
/// of each (centred on the joint mean) on the leading `dim` components.
pub fn joint_pca(
    a: &FeatureMap,
    b: &FeatureMap,
    dim: usize,
) -> Result<(FeatureMap, FeatureMap), ExtractError> {
    if a.c != b.c {
        return Err(ExtractError::Invalid(format!(
            "joint PCA of maps with {} and {} channels",
            a.c, b.c
        )));
    }
    let c = a.c;
    let (na, nb) = (a.h * a.w, b.h * b.w);
    let n = na + nb;
    let dim = dim.min(c).min(n).max(1);
    // X: n x c, centred, f64.
    let mut x = DMatrix::<f64>::zeros(n, c);
    for (m, off, cells) in [(a, 0, na), (b, na, nb)] {
        for ch in 0..c {
            for p in 0..cells {
                x[(off + p, ch)] = f64::from(m.data[ch * cells + p]);
            }
        }
    }
    for ch in 0..c {
        let mean = x.column(ch).sum() / n as f64;
        x.column_mut(ch).add_scalar_mut(-mean);
    }
    // Leading eigenvectors v (c x dim) of the covariance.
    let v = if c <= n {
        let cov = x.transpose() * &x / n as f64;
        let eig = SymmetricEigen::new(cov);
        let idx = leading(&eig.eigenvalues, dim);
        let mut v = DMatrix::<f64>::zeros(c, dim);
        for (j, &k) in idx.iter().enumerate() {
            v.set_column(j, &eig.eigenvectors.column(k));
        }
        v
    } else {
        let gram = &x * x.transpose() / n as f64;
        let eig = SymmetricEigen::new(gram);
        let idx = leading(&eig.eigenvalues, dim);
        let mut v = DMatrix::<f64>::zeros(c, dim);
        for (j, &k) in idx.iter().enumerate() {
            let u = eig.eigenvectors.column(k);
            let col = x.transpose() * u;
            let norm = col.norm();
            if norm > 1e-12 {
                v.set_column(j, &(col / norm));
            }
        }
        v
    };
    let mut v = v;
    for j in 0..dim {
        let col = v.column(j);
        let (mut best, mut at) = (0.0f64, 0);
        for (i, &e) in col.iter().enumerate() {
            if e.abs() > best {
                best = e.abs();
                at = i;
            }
        }
        if col[at] < 0.0 {
            v.column_mut(j).neg_mut();
        }
    }
    let p = &x * &v; // n x dim
    let pick = |off: usize, cells: usize, m: &FeatureMap| -> Result<FeatureMap, ExtractError> {
        let mut data = vec![0f32; dim * cells];
        for j in 0..dim {
            for q in 0..cells {
                data[j * cells + q] = p[(off + q, j)] as f32;
            }
        }
        FeatureMap::new(dim, m.h, m.w, data).map_err(|e| ExtractError::Invalid(e.to_string()))
    };
    Ok((pick(0, na, a)?, pick(na, nb, b)?))
}

/// Indices of the `k` largest values, largest first.
fn leading(vals: &nalgebra::DVector<f64>, k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..vals.len()).collect();
    idx.sort_by(|&i, &j| vals[j].total_cmp(&vals[i]));
    idx.truncate(k);
    idx
}

/// Bilinear resize of a map's grid as PyTorch's `F.interpolate(mode=
/// "bilinear", align_corners=False)` (no antialiasing): source coordinate
/// `(i + 0.5)·in/out − 0.5`, clamped at 0, neighbours clamped to the border.
pub fn resize_bilinear(m: &FeatureMap, h: usize, w: usize) -> FeatureMap {
    if (m.h, m.w) == (h, w) {
        return m.clone();
    }
    let axis = |inp: usize, out: usize| -> Vec<(usize, usize, f32)> {
        let scale = inp as f64 / out as f64;
        (0..out)
            .map(|i| {
                let src = ((i as f64 + 0.5) * scale - 0.5).max(0.0);
                let i0 = (src.floor() as usize).min(inp - 1);
                let i1 = (i0 + 1).min(inp - 1);
                (i0, i1, (src - i0 as f64) as f32)
            })
            .collect()
    };
    let (ys, xs) = (axis(m.h, h), axis(m.w, w));
    let cells = m.h * m.w;
    let mut data = vec![0f32; m.c * h * w];
    for ch in 0..m.c {
        let plane = &m.data[ch * cells..(ch + 1) * cells];
        let out = &mut data[ch * h * w..(ch + 1) * h * w];
        for (y, &(y0, y1, ly)) in ys.iter().enumerate() {
            for (x, &(x0, x1, lx)) in xs.iter().enumerate() {
                let top = plane[y0 * m.w + x0] * (1.0 - lx) + plane[y0 * m.w + x1] * lx;
                let bot = plane[y1 * m.w + x0] * (1.0 - lx) + plane[y1 * m.w + x1] * lx;
                out[y * w + x] = top * (1.0 - ly) + bot * ly;
            }
        }
    }
    FeatureMap { c: m.c, h, w, data }
}

/// Each cell's vector scaled to length `weight` (zero vectors stay zero).
fn scaled_unit(m: &FeatureMap, weight: f32) -> FeatureMap {
    let cells = m.h * m.w;
    let mut norm = vec![0f32; cells];
    for ch in 0..m.c {
        for (n, v) in norm.iter_mut().zip(&m.data[ch * cells..(ch + 1) * cells]) {
            *n += v * v;
        }
    }
    let inv: Vec<f32> = norm.iter().map(|n| weight / n.sqrt().max(1e-12)).collect();
    let mut data = m.data.clone();
    for ch in 0..m.c {
        for (v, s) in data[ch * cells..(ch + 1) * cells].iter_mut().zip(&inv) {
            *v *= s;
        }
    }
    FeatureMap {
        c: m.c,
        h: m.h,
        w: m.w,
        data,
    }
}

/// Channel concatenation of maps on the same grid.
fn concat(maps: &[&FeatureMap]) -> Result<FeatureMap, ExtractError> {
    let (h, w) = (maps[0].h, maps[0].w);
    if maps.iter().any(|m| (m.h, m.w) != (h, w)) {
        return Err(ExtractError::Invalid(
            "fusion: maps on different grids".into(),
        ));
    }
    let c = maps.iter().map(|m| m.c).sum();
    let data = maps.iter().flat_map(|m| m.data.iter().copied()).collect();
    FeatureMap::new(c, h, w, data).map_err(|e| ExtractError::Invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(c: usize, h: usize, w: usize, f: impl Fn(usize) -> f32) -> FeatureMap {
        FeatureMap::new(c, h, w, (0..c * h * w).map(f).collect()).unwrap()
    }

    #[test]
    fn halves_have_their_weights() {
        let sd = map(4, 2, 2, |i| (i as f32 * 0.37).sin());
        let sd2 = map(4, 2, 2, |i| (i as f32 * 0.11).cos());
        let d = map(3, 1, 1, |i| i as f32 + 1.0);
        let (a, _) = fuse_pair(&[&sd], &[&sd2], &d, &d, &[2], 0.25).unwrap();
        assert_eq!((a.c, a.h, a.w), (5, 2, 2));
        for p in 0..4 {
            let n = |r: std::ops::Range<usize>| -> f32 {
                r.map(|ch| a.data[ch * 4 + p].powi(2)).sum::<f32>().sqrt()
            };
            assert!((n(0..2) - 0.25).abs() < 1e-5);
            assert!((n(2..5) - 0.75).abs() < 1e-5);
        }
    }

    #[test]
    fn resize_identity_and_constant() {
        let m = map(2, 3, 3, |_| 2.5);
        let r = resize_bilinear(&m, 7, 5);
        assert!(r.data.iter().all(|v| (v - 2.5).abs() < 1e-6));
        assert_eq!(resize_bilinear(&m, 3, 3), m);
    }
}
