//! Automatic choice of the delta base: the stored model whose tensors give the smallest
//! deltas for a sample of the new model's tensors.

use std::collections::{HashMap, HashSet};

use mcodec::delta::{self, DeltaMethod};
use rayon::prelude::*;

use crate::error::{obj_err, Result};
use crate::input::InputTensor;
use crate::key::ObjectKey;
use crate::manifest::{validate_name, Manifest, TensorEntry};
use crate::object::{self, TensorMeta};
use crate::report::{BaseScores, SkippedBase};
use crate::Store;

/// Models compared in full when choosing a base automatically.
const MAX_BASE_CANDIDATES: usize = 8;
/// Tensors sampled per candidate base.
const BASE_SAMPLES: usize = 6;
/// Bytes of each sampled tensor that are delta-coded to score a base.
const SAMPLE_BYTES: usize = 1 << 20;
/// Tensors smaller than this are not sampled (biases and norms say little).
const SAMPLE_MIN_BYTES: u64 = 4096;

/// Which delta coder `add` uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeltaMode {
    /// Every method of [`mcodec::delta`], keeping the smallest.
    #[default]
    Best,
    /// Only BitX (the published baseline), for comparison.
    BitX,
    /// No deltas: tensors are deduplicated and coded on their own.
    Off,
}

impl Store {
    /// Chooses the base among stored models with matching tensors: the one whose
    /// sampled tensors give the smallest deltas. Returns it, every candidate's score and
    /// the candidates skipped because they could not be read.
    pub(crate) fn choose_base(
        &self,
        tensors: &[InputTensor<'_>],
        name: &str,
        mode: DeltaMode,
    ) -> Result<(Option<Manifest>, BaseScores, Vec<SkippedBase>)> {
        let mut candidates: Vec<(usize, Manifest)> = Vec::new();
        let mut skipped = Vec::new();
        for n in self.backend.list_manifests()? {
            if n == name || validate_name(&n).is_err() {
                continue;
            }
            // One unreadable model must not stop every automatic add: it is skipped and
            // reported.
            let m = match self.manifest(&n) {
                Ok(m) => m,
                Err(e) => {
                    skipped.push(SkippedBase {
                        name: n,
                        problem: e.to_string(),
                    });
                    continue;
                }
            };
            let theirs: HashSet<(&str, &str, &[u64])> = m
                .tensors()
                .map(|t| (t.name.as_str(), t.dtype.as_str(), &t.shape[..]))
                .collect();
            let matching = tensors
                .iter()
                .filter(|t| {
                    theirs.contains(&(t.info.name.as_str(), t.info.dtype.name(), &t.info.shape[..]))
                })
                .count();
            // At least half of the new model's tensors must have a counterpart.
            if matching > 0 && 2 * matching >= tensors.len() {
                candidates.push((matching, m));
            }
        }
        candidates.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.name.cmp(&b.1.name)));
        candidates.truncate(MAX_BASE_CANDIDATES);
        let mut scores = Vec::new();
        let mut best: Option<(f64, Manifest)> = None;
        for (_, m) in candidates {
            let score = match self.score_base(tensors, &m, mode) {
                Ok(s) => s,
                Err(e) => {
                    skipped.push(SkippedBase {
                        name: m.name.clone(),
                        problem: e.to_string(),
                    });
                    continue;
                }
            };
            scores.push((m.name.clone(), score));
            if best.as_ref().is_none_or(|(s, _)| score < *s) {
                best = Some((score, m));
            }
        }
        Ok((best.map(|(_, m)| m), scores, skipped))
    }

    /// Sampled delta size of `tensors` against base `m`: delta bytes over sampled bytes,
    /// a tensor without a counterpart counting as incompressible.
    fn score_base(
        &self,
        tensors: &[InputTensor<'_>],
        m: &Manifest,
        mode: DeltaMode,
    ) -> Result<f64> {
        let theirs: HashMap<(&str, &str, &[u64]), &TensorEntry> = m
            .tensors()
            .map(|t| ((t.name.as_str(), t.dtype.as_str(), &t.shape[..]), t))
            .collect();
        let big: Vec<&InputTensor<'_>> = tensors
            .iter()
            .filter(|t| t.bytes.len() as u64 >= SAMPLE_MIN_BYTES)
            .collect();
        let pool: Vec<&InputTensor<'_>> = if big.is_empty() {
            tensors.iter().collect()
        } else {
            big
        };
        let step = pool.len().div_ceil(BASE_SAMPLES).max(1);
        let sampled: Vec<(u64, u64)> = pool
            .iter()
            .step_by(step)
            .collect::<Vec<_>>()
            .par_iter()
            .map(|t| {
                let n = t.bytes.len().min(SAMPLE_BYTES) as u64;
                let key = (t.info.name.as_str(), t.info.dtype.name(), &t.info.shape[..]);
                let Some(e) = theirs.get(&key) else {
                    return Ok((n, n));
                };
                let width = t.info.dtype.element_size().unwrap_or(1);
                let n = (n as usize) / width * width;
                if e.key == ObjectKey::tensor(&t.info.dtype, &t.info.shape, t.bytes) {
                    return Ok((n as u64, 0));
                }
                let base = match &e.inline {
                    Some(_) => {
                        let mut b = object::alloc(e.len).map_err(obj_err(e.object))?;
                        self.get_tensor_into(e, &mut b)?;
                        b
                    }
                    // Scored against the plain root, which is what a delta would be coded
                    // against; checked to be the tensor the manifest says (a damaged store
                    // could hold a shorter one there).
                    None => {
                        let meta = TensorMeta {
                            dtype: e.dtype(),
                            shape: e.shape.clone(),
                            raw_len: e.len,
                        };
                        self.load_tensor(&e.root(), Some(&meta), false, false)?
                    }
                };
                // Same dtype and shape but another length: an unknown dtype whose manifest
                // length is not tied to its shape. No counterpart, then.
                if base.len() != t.bytes.len() {
                    return Ok((n as u64, n as u64));
                }
                let d = match mode {
                    DeltaMode::BitX => delta::encode_with(
                        DeltaMethod::BitX,
                        &t.info.dtype,
                        &base[..n],
                        &t.bytes[..n],
                    ),
                    _ => delta::encode(&t.info.dtype, &base[..n], &t.bytes[..n]),
                };
                Ok((n as u64, d.map_or(n, |d| d.len()) as u64))
            })
            .collect::<Result<_>>()?;
        let (total, coded) = sampled
            .iter()
            .fold((0u64, 0u64), |(a, b), (n, d)| (a + n, b + d));
        Ok(if total == 0 {
            1.0
        } else {
            coded as f64 / total as f64
        })
    }
}
