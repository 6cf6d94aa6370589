//! `stats`: logical and physical sizes, with the savings of dedup, delta and entropy
//! coding (STORE.md §9).

use std::collections::{BTreeMap, HashMap, HashSet};

use rayon::prelude::*;

use crate::error::Result;
use crate::key::ObjectKey;
use crate::manifest::Manifest;
use crate::object::Header;
use crate::report::{KindStats, ModelStats, OrgStats, Stats};
use crate::Store;

impl Store {
    /// Logical and physical sizes, per model and store-wide, with the savings attributed
    /// to dedup, delta and entropy coding.
    pub fn stats(&self) -> Result<Stats> {
        self.par(|| self.stats_inner())
    }

    fn stats_inner(&self) -> Result<Stats> {
        let manifests = self.manifests()?;
        let listed: HashMap<ObjectKey, u64> = self
            .backend
            .list_objects()?
            .into_iter()
            .map(|o| (o.key, o.size))
            .collect();
        let size_of = |k: &ObjectKey| listed.get(k).copied().unwrap_or(0);
        // Decoded size and kind of each referenced object.
        #[derive(Clone, Copy, PartialEq)]
        enum Kind {
            Blob,
            Plain,
            Delta,
        }
        let mut kinds: HashMap<ObjectKey, (Kind, u64)> = HashMap::new();
        let mut inline_objects: HashMap<ObjectKey, (u64, u64)> = HashMap::new();
        let mut users: HashMap<ObjectKey, usize> = HashMap::new();
        for m in &manifests {
            for f in &m.files {
                if let Some(b) = f.blob {
                    kinds.insert(b, (Kind::Blob, f.size));
                }
                if let Some(st) = &f.safetensors {
                    kinds.insert(st.header, (Kind::Blob, st.header_len));
                    for t in &st.tensors {
                        if let Some(i) = &t.inline {
                            inline_objects.insert(t.object, (t.len, i.0.len() as u64));
                            continue;
                        }
                        match t.delta_base {
                            Some(b) => {
                                kinds.insert(t.object, (Kind::Delta, t.len));
                                kinds.entry(b).or_insert((Kind::Plain, t.len));
                            }
                            None => {
                                kinds.insert(t.object, (Kind::Plain, t.len));
                            }
                        }
                    }
                }
            }
            let mine: HashSet<ObjectKey> = m.objects().into_iter().map(|(k, _)| k).collect();
            for k in mine {
                *users.entry(k).or_default() += 1;
            }
        }
        let mut blobs = KindStats::default();
        let mut plain = KindStats::default();
        let mut delta = KindStats::default();
        let mut delta_plain_bytes = 0u64;
        let delta_keys: Vec<ObjectKey> = kinds
            .iter()
            .filter(|(_, (k, _))| *k == Kind::Delta)
            .map(|(key, _)| *key)
            .collect();
        let plain_lens: HashMap<ObjectKey, u64> = delta_keys
            .par_iter()
            .map(|k| {
                let plain_len = match self.header(k) {
                    Ok(Header::Delta { plain_len, .. }) => plain_len,
                    _ => 0,
                };
                (*k, plain_len)
            })
            .collect();
        for (key, (kind, raw)) in &kinds {
            let s = match kind {
                Kind::Blob => &mut blobs,
                Kind::Plain => &mut plain,
                Kind::Delta => {
                    delta_plain_bytes += plain_lens.get(key).copied().unwrap_or(0);
                    &mut delta
                }
            };
            s.objects += 1;
            s.raw_bytes += raw;
            s.stored_bytes += size_of(key);
        }
        let models = manifests
            .iter()
            .map(|m| {
                let mine: HashSet<ObjectKey> = m.objects().into_iter().map(|(k, _)| k).collect();
                ModelStats {
                    name: m.name.clone(),
                    base: m.base.clone(),
                    logical_bytes: m.logical_size(),
                    delta_tensors: m.tensors().filter(|t| t.delta_base.is_some()).count(),
                    plain_tensors: m.tensors().filter(|t| t.delta_base.is_none()).count(),
                    needed_bytes: mine.iter().map(size_of).sum(),
                    exclusive_bytes: mine
                        .iter()
                        .filter(|k| users.get(*k) == Some(&1))
                        .map(size_of)
                        .sum(),
                }
            })
            .collect();
        let organisations = org_stats(&manifests, &size_of);
        let manifest_bytes: u64 = manifests.iter().map(|m| m.to_json().len() as u64).sum();
        let logical_bytes: u64 = manifests.iter().map(Manifest::logical_size).sum();
        let mut inline = KindStats::default();
        for (raw, stored) in inline_objects.values() {
            inline.objects += 1;
            inline.raw_bytes += raw;
            inline.stored_bytes += stored;
        }
        let unique_bytes = blobs.raw_bytes + plain.raw_bytes + delta.raw_bytes + inline.raw_bytes;
        let stored = blobs.stored_bytes + plain.stored_bytes + delta.stored_bytes;
        let (orphan_objects, orphan_bytes) = listed
            .iter()
            .filter(|(k, _)| !kinds.contains_key(*k))
            .fold((0, 0), |(n, b), (_, s)| (n + 1, b + s));
        let saved_by_delta = delta_plain_bytes as i64 - delta.stored_bytes as i64;
        Ok(Stats {
            models,
            organisations,
            logical_bytes,
            unique_bytes,
            physical_bytes: stored + manifest_bytes,
            manifest_bytes,
            saved_by_dedup: logical_bytes as i64 - unique_bytes as i64,
            saved_by_delta,
            saved_by_entropy: unique_bytes as i64
                - stored as i64
                - inline.stored_bytes as i64
                - saved_by_delta,
            blobs,
            plain,
            delta,
            inline,
            delta_plain_bytes,
            orphan_objects,
            orphan_bytes,
        })
    }
}

/// The organisation of a model name: its first segment when it has more than one.
pub(crate) fn org_of(name: &str) -> &str {
    name.split_once('/').map_or("", |(org, _)| org)
}

/// Sizes per organisation: objects counted once per organisation, and as exclusive when
/// no model of another organisation needs them.
fn org_stats(manifests: &[Manifest], size_of: &impl Fn(&ObjectKey) -> u64) -> Vec<OrgStats> {
    let mut objects: BTreeMap<&str, HashSet<ObjectKey>> = BTreeMap::new();
    let mut stats: BTreeMap<&str, OrgStats> = BTreeMap::new();
    for m in manifests {
        let org = org_of(&m.name);
        let s = stats.entry(org).or_insert_with(|| OrgStats {
            org: org.to_owned(),
            ..OrgStats::default()
        });
        s.models += 1;
        s.logical_bytes += m.logical_size();
        objects
            .entry(org)
            .or_default()
            .extend(m.objects().into_iter().map(|(k, _)| k));
    }
    let mut orgs_of: HashMap<ObjectKey, usize> = HashMap::new();
    for keys in objects.values() {
        for k in keys {
            *orgs_of.entry(*k).or_default() += 1;
        }
    }
    for (org, keys) in &objects {
        let s = stats.get_mut(org).expect("every organisation has stats");
        s.needed_bytes = keys.iter().map(size_of).sum();
        s.exclusive_bytes = keys
            .iter()
            .filter(|k| orgs_of.get(*k) == Some(&1))
            .map(size_of)
            .sum();
    }
    stats.into_values().collect()
}
