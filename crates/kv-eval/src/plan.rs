//! Cache plans: how each layer of the model holds its keys and values, in the form
//! `kv-eval` takes on its command line, turned into kv-codec [`LayerPolicy`]s.
//!
//! A layer is either coded vector by vector (a kv-codec [`LayerPlan`]: a codec for K and
//! one for V, `None` for uncompressed) or held by the KIVI baseline ([`Kivi`]). Uncompressed
//! means **f16**, as in kv-codec's own plan (its JSON's `null`): what an engine keeps its
//! cache in, and what [`CachePlan::bits_per_value`] counts (16 bits per value). The exact
//! reference is a separate store ([`ExactStore`](crate::store::ExactStore), f32).
//!
//! Text form (`kv-eval --codec`): comma-separated items
//!
//! * `SPEC` — a kv-codec codec spec for K and V of every layer (`voronoi-e8-q16-s4`);
//! * `k=SPEC`, `v=SPEC` — the codec of the keys or of the values only (the other kind stays
//!   as a `SPEC` item set it, or uncompressed);
//! * `kivi-bB-gG-rR` — KIVI for every layer: `B` bits per code, groups of `G` tokens (keys)
//!   and channels (values), the last `R` or more tokens in f16; `kivi` alone is KIVI-2 as
//!   published (`kivi-b2-g32-r128`); it cannot be combined with codec items;
//! * `raw=L:L:…` — layers kept uncompressed (f16);
//! * `protect=S:R:C[:int8]` — kv-codec's [`Protection`] of every coded per-vector layer:
//!   the first `S` positions and the last `R` tokens also held in the window format (f16, or
//!   the `int8` codec with `:int8`), keys coded around the mean of positions `S..S+C`
//!   (`C = 0`: not centred).
//!
//! Examples: `voronoi-e8-q16-s4`, `k=voronoi-e8-q23-s4,v=turboquant-b3`,
//! `voronoi-e8-q13-s2,raw=0:29`, `kivi-b2-g32-r32`, `voronoi-e8-q13-s2,protect=4:16:64`. A plan can also come from kv-codec's
//! per-layer plan JSON, as `kvc plan --out` writes it ([`CachePlan::from_json`]).
//!
//! [`layer_policy`] is the one place that turns a layer's choice into a kv-codec policy.

use kv_codec::cache::{Kivi, LayerPlan, LayerPolicy, Protection};
use kv_codec::{CodecConfig, CodecSpec};

use crate::error::{Error, Result};
use crate::eval::family;

/// How one layer holds its keys and values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerChoice {
    /// Each vector coded on its own (or held in f16), as kv-codec's per-layer plan says.
    PerVector(LayerPlan),
    /// The KIVI baseline.
    Kivi(Kivi),
}

impl LayerChoice {
    /// K and V uncompressed (f16).
    pub const RAW: Self = Self::PerVector(per_vector(None, None));

    /// A per-vector layer: a codec for K and one for V, `None` for f16.
    pub const fn codecs(k: Option<CodecSpec>, v: Option<CodecSpec>) -> Self {
        Self::PerVector(per_vector(k, v))
    }

    /// The text of this layer's choice, as a plan item (`raw` for an uncompressed layer).
    fn label(&self) -> String {
        match self {
            Self::Kivi(k) => kivi_label(k),
            Self::PerVector(p) => {
                let codecs = match (p.k, p.v) {
                    (None, None) => "raw".to_owned(),
                    (Some(k), Some(v)) if k == v => k.to_string(),
                    (k, v) => {
                        let s =
                            |c: Option<CodecSpec>| c.map_or("raw".to_owned(), |c| c.to_string());
                        format!("k={}/v={}", s(k), s(v))
                    }
                };
                match protect_label(&p.protection) {
                    Some(protect) => format!("{codecs}/{protect}"),
                    None => codecs,
                }
            }
        }
    }
}

/// The `protect=S:R:C[:int8]` item of a protection (none when nothing is protected).
fn protect_label(p: &Protection) -> Option<String> {
    (!p.is_none()).then(|| format!("protect={p}"))
}

/// kv-codec's per-layer plan entry. Its only construction in this crate, so that new
/// per-layer options of kv-codec's plan are wired in here.
const fn per_vector(k: Option<CodecSpec>, v: Option<CodecSpec>) -> LayerPlan {
    LayerPlan {
        k,
        v,
        protection: Protection::NONE,
    }
}

/// The kv-codec policy of a layer: the one place `kv-eval` builds [`LayerPolicy`]s.
///
/// Per-vector layers go through kv-codec's `From<LayerPlan>` (uncompressed kinds in f16),
/// KIVI layers become [`LayerPolicy::Kivi`].
pub fn layer_policy(choice: &LayerChoice) -> LayerPolicy {
    match *choice {
        LayerChoice::PerVector(plan) => LayerPolicy::from(plan),
        LayerChoice::Kivi(kivi) => LayerPolicy::Kivi(kivi),
    }
}

/// How many of a layer's most recent tokens can still change how they decode: tokens that
/// sit in an f16 window and are coded only when they leave it. A store that keeps a decoded
/// copy gathers them again after every append (see
/// [`CacheStore`](crate::store::CacheStore)). KIVI's window holds fewer than `R + G` tokens;
/// per-vector layers code every token when it is appended, unless their [`Protection`]
/// keeps the last `R` in f16 (and, with a key offset, every token until positions `S + C`
/// exist). Sinks never change; neither do coded tokens (the key offset is fixed before the
/// first token is coded).
pub fn unsettled_tail(choice: &LayerChoice) -> usize {
    match choice {
        LayerChoice::PerVector(p) => {
            let p = p.protection;
            let recent = usize::from(p.recent_tokens);
            if p.key_centre_tokens == 0 {
                recent
            } else {
                recent.max(usize::from(p.sink_tokens) + usize::from(p.key_centre_tokens) - 1)
            }
        }
        LayerChoice::Kivi(k) => (k.residual + k.group) as usize,
    }
}

fn kivi_label(k: &Kivi) -> String {
    format!("kivi-b{}-g{}-r{}", k.bits, k.group, k.residual)
}

/// Parses `kivi` or `kivi-bB-gG-rR`: `None` when `item` is not a KIVI item at all,
/// `Some(None)` when it is a malformed one.
fn parse_kivi(item: &str) -> Option<Option<Kivi>> {
    let rest = item.strip_prefix("kivi")?;
    if rest.is_empty() {
        return Some(Some(Kivi::KIVI2));
    }
    Some(kivi_fields(rest))
}

/// The `-bB-gG-rR` of a KIVI item.
fn kivi_fields(rest: &str) -> Option<Kivi> {
    let mut it = rest.strip_prefix('-')?.split('-');
    let mut field = |tag: char| it.next()?.strip_prefix(tag)?.parse::<u32>().ok();
    let kivi = Kivi {
        bits: field('b')?,
        group: field('g')?,
        residual: field('r')?,
    };
    it.next().is_none().then_some(kivi)
}

/// A choice per layer (see the module documentation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachePlan {
    /// One entry per layer.
    pub layers: Vec<LayerChoice>,
    /// A name for plans that have no short text form (a plan file's name).
    pub name: Option<String>,
}

impl CachePlan {
    /// The same codec for K and V of every layer.
    pub fn uniform(spec: CodecSpec, layers: usize) -> Self {
        Self {
            layers: vec![LayerChoice::codecs(Some(spec), Some(spec)); layers],
            name: None,
        }
    }

    /// Parses the text form (see the module documentation) for a model of `layers` layers.
    ///
    /// # Errors
    /// [`Error::InvalidCodecSpec`] for a spec kv-codec rejects; [`Error::InvalidValue`] for
    /// other malformed items, a layer out of range, or KIVI mixed with codec items.
    pub fn parse(text: &str, layers: usize) -> Result<Self> {
        let bad = || Error::InvalidValue {
            option: "--codec",
            value: text.to_owned(),
            expected: "SPEC, k=SPEC, v=SPEC, kivi-bB-gG-rR, raw=L:L:… and protect=S:R:C[:int8], \
                       comma-separated",
        };
        let spec = |s: &str| {
            s.parse::<CodecSpec>()
                .map_err(|source| Error::InvalidCodecSpec {
                    value: s.to_owned(),
                    source,
                })
        };
        let (mut k, mut v, mut kivi, mut raw) = (None, None, None, Vec::new());
        let mut protection = Protection::NONE;
        for item in text.split(',').map(str::trim) {
            match item.split_once('=') {
                None if item.is_empty() => return Err(bad()),
                None => match parse_kivi(item) {
                    Some(parsed) => kivi = Some(parsed.ok_or_else(bad)?),
                    None => {
                        let s = spec(item)?;
                        (k, v) = (Some(s), Some(s));
                    }
                },
                Some(("k", s)) => k = Some(spec(s)?),
                Some(("v", s)) => v = Some(spec(s)?),
                Some(("protect", list)) => protection = list.parse().map_err(|_| bad())?,
                Some(("raw", list)) => {
                    for l in list.split(':') {
                        let l: usize = l.parse().map_err(|_| bad())?;
                        if l >= layers {
                            return Err(bad());
                        }
                        raw.push(l);
                    }
                }
                _ => return Err(bad()),
            }
        }
        let every = match kivi {
            Some(_) if k.is_some() || v.is_some() || !protection.is_none() => return Err(bad()),
            Some(kivi) => LayerChoice::Kivi(kivi),
            None => LayerChoice::PerVector(LayerPlan {
                protection,
                ..per_vector(k, v)
            }),
        };
        let mut plan = Self {
            layers: vec![every; layers],
            name: None,
        };
        for l in raw {
            plan.layers[l] = LayerChoice::RAW;
        }
        Ok(plan)
    }

    /// Reads kv-codec's per-layer plan JSON (`{"layers":[{"k":SPEC|null,"v":SPEC|null},…]}`,
    /// what `kvc plan --out` writes) for a model of `layers` layers; the plan is named
    /// `name` (its file name, say).
    ///
    /// # Errors
    /// [`Error::InvalidCodecSpec`] for text kv-codec does not accept as a plan or a plan of
    /// another number of layers.
    pub fn from_json(text: &str, layers: usize, name: &str) -> Result<Self> {
        let invalid = |source| Error::InvalidCodecSpec {
            value: name.to_owned(),
            source,
        };
        let plan = kv_codec::cache::CachePlan::from_json(text).map_err(invalid)?;
        if plan.layers.len() != layers {
            return Err(invalid(kv_codec::Error::PlanLayers {
                expected: layers,
                actual: plan.layers.len(),
            }));
        }
        Ok(Self {
            layers: plan
                .layers
                .into_iter()
                .map(LayerChoice::PerVector)
                .collect(),
            name: Some(name.to_owned()),
        })
    }

    /// kv-codec's policy of every layer, in order ([`layer_policy`]).
    pub fn policies(&self) -> Vec<LayerPolicy> {
        self.layers.iter().map(layer_policy).collect()
    }

    /// The canonical text form: a single item when every layer (other than the raw ones)
    /// makes the same choice, else the plan's name, else one `L<i>:…` item per layer.
    pub fn label(&self) -> String {
        let held: Vec<&LayerChoice> = self
            .layers
            .iter()
            .filter(|l| **l != LayerChoice::RAW)
            .collect();
        let Some(&&reference) = held.first() else {
            return "exact-f16".to_owned();
        };
        if !held.iter().all(|l| **l == reference) {
            if let Some(name) = &self.name {
                return name.clone();
            }
            let items: Vec<String> = self
                .layers
                .iter()
                .enumerate()
                .map(|(l, c)| format!("L{l}:{}", c.label()))
                .collect();
            return items.join(",");
        }
        let mut items = Vec::new();
        match reference {
            LayerChoice::Kivi(k) => items.push(kivi_label(&k)),
            LayerChoice::PerVector(p) => {
                match (p.k, p.v) {
                    (Some(k), Some(v)) if k == v => items.push(k.to_string()),
                    (k, v) => {
                        items.extend(k.map(|k| format!("k={k}")));
                        items.extend(v.map(|v| format!("v={v}")));
                    }
                }
                items.extend(protect_label(&p.protection));
            }
        }
        let raw: Vec<String> = (0..self.layers.len())
            .filter(|&l| self.layers[l] == LayerChoice::RAW)
            .map(|l| l.to_string())
            .collect();
        if !raw.is_empty() {
            items.push(format!("raw={}", raw.join(":")));
        }
        items.join(",")
    }

    /// The family the iso-quality table files this plan under, when every layer codes its
    /// keys and values with codecs of one family (see [`family`]): that family, followed by
    /// `per-layer` when the layers' settings differ (a planned allocation), else by `k≠v`
    /// when K and V settings differ (K and V coded at different rates), and by the
    /// `protect=S:R:C` item when the layers are protected (all alike), so that these
    /// variants form rows of their own; `kivi` when every layer is the same KIVI; else none.
    pub fn family(&self) -> Option<String> {
        let first = self.layers.first()?;
        if let LayerChoice::Kivi(_) = first {
            return self
                .layers
                .iter()
                .all(|l| l == first)
                .then(|| "kivi".to_owned());
        }
        let mut name = None;
        let mut protection = None;
        for l in &self.layers {
            let LayerChoice::PerVector(LayerPlan {
                k: Some(k),
                v: Some(v),
                protection: p,
            }) = *l
            else {
                return None;
            };
            if family(k) != family(v)
                || name.is_some_and(|n| n != family(k))
                || protection.is_some_and(|q| q != p)
            {
                return None;
            }
            (name, protection) = (Some(family(k)), Some(p));
        }
        let mut out = name?.to_owned();
        if self.layers.iter().any(|l| l != first) {
            out.push_str(" per-layer");
        } else if let LayerChoice::PerVector(LayerPlan { k, v, .. }) = first
            && k != v
        {
            out.push_str(" k≠v");
        }
        if let Some(protect) = protection.as_ref().and_then(protect_label) {
            out.push(' ');
            out.push_str(&protect);
        }
        Some(out)
    }

    /// Mean nominal bits per value over all K and V of a model with this plan: each codec's
    /// bits per value, KIVI's `b + 32/G` (its groups' minimum and step, not its f16 window),
    /// uncompressed kinds at 16 (f16). What a store really holds, windows and page rounding
    /// included, is [`KvStore::held_bytes`](crate::store::KvStore::held_bytes).
    ///
    /// # Errors
    /// [`Error::Codec`] when a codec does not build at `head_dim`.
    pub fn bits_per_value(&self, head_dim: usize) -> Result<f64> {
        let codec = |spec: Option<CodecSpec>| -> Result<f64> {
            let Some(spec) = spec else { return Ok(16.0) };
            CodecConfig::new(spec, head_dim)
                .build()
                .map(|c| c.bits_per_value())
                .map_err(|source| Error::Codec {
                    spec: spec.to_string(),
                    source,
                })
        };
        let mut total = 0.0;
        for l in &self.layers {
            total += match l {
                LayerChoice::PerVector(p) => codec(p.k)? + codec(p.v)?,
                LayerChoice::Kivi(k) => 2.0 * (f64::from(k.bits) + 32.0 / f64::from(k.group)),
            };
        }
        Ok(total / (2 * self.layers.len().max(1)) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kv_codec::cache::{Storage, WindowFormat};
    use kv_codec::format::Dtype;

    #[test]
    fn plans_parse_and_print() {
        let p = CachePlan::parse("voronoi-e8-q16-s4", 3).unwrap();
        assert_eq!(p.label(), "voronoi-e8-q16-s4");
        assert_eq!(p.family().as_deref(), Some("voronoi"));
        let p = CachePlan::parse("voronoi-e8-q9-s2,protect=4:16:64", 3).unwrap();
        assert_eq!(p.label(), "voronoi-e8-q9-s2,protect=4:16:64");
        assert_eq!(p.family().as_deref(), Some("voronoi protect=4:16:64"));
        let protection = Protection {
            sink_tokens: 4,
            recent_tokens: 16,
            key_centre_tokens: 64,
            ..Protection::NONE
        };
        assert_eq!(
            p.policies()[2],
            LayerPolicy::codecs(
                "voronoi-e8-q9-s2".parse().unwrap(),
                "voronoi-e8-q9-s2".parse().unwrap()
            )
            .with_protection(protection)
        );
        assert_eq!(unsettled_tail(&p.layers[0]), 67);
        let p = CachePlan::parse("voronoi-e8-q9-s2,protect=4:32:64:int8", 3).unwrap();
        assert_eq!(p.label(), "voronoi-e8-q9-s2,protect=4:32:64:int8");
        assert_eq!(p.family().as_deref(), Some("voronoi protect=4:32:64:int8"));
        let LayerPolicy::PerVector { protection, .. } = p.policies()[1] else {
            panic!("a per-vector layer")
        };
        assert_eq!(protection.window, WindowFormat::Int8);
        assert_eq!(protection.recent_tokens, 32);
        for bad in [
            "int8,protect=1:2",
            "int8,protect=1:2:x",
            "int8,protect=1:2:3:int4",
            "int8,protect=1:2:3:int8:0",
            "kivi,protect=0:1:0",
        ] {
            assert!(CachePlan::parse(bad, 3).is_err(), "{bad}");
        }
        let p = CachePlan::parse("k=int8,v=turboquant-b3,raw=0:2", 3).unwrap();
        assert_eq!(p.label(), "k=int8,v=turboquant-b3,raw=0:2");
        assert_eq!(p.layers[0], LayerChoice::RAW);
        assert_eq!(p.family(), None);
        let p =
            CachePlan::parse("k=voronoi-e8-q13-s2,v=voronoi-e8-q6-s3,protect=4:16:64", 3).unwrap();
        assert_eq!(p.family().as_deref(), Some("voronoi k≠v protect=4:16:64"));
        let p = CachePlan::parse("k=int8,v=turboquant-b3", 3).unwrap();
        assert_eq!(p.family(), None);
        let bf16 = CachePlan::parse("bf16", 2).unwrap();
        assert!((bf16.bits_per_value(64).unwrap() - 16.0).abs() < 1e-12);
        // Uncompressed kinds count at 16 bits: (8.25 + 16) / 2.
        let half = CachePlan::parse("k=int8", 2).unwrap();
        assert_eq!(half.label(), "k=int8");
        assert!((half.bits_per_value(64).unwrap() - (8.25 + 16.0) / 2.0).abs() < 1e-12);
        assert_eq!(CachePlan::parse("raw=0:1", 2).unwrap().label(), "exact-f16");
        for bad in ["raw=3", "q=int8", "int8,,int4", "raw=x"] {
            assert!(
                matches!(CachePlan::parse(bad, 3), Err(Error::InvalidValue { .. })),
                "{bad}"
            );
        }
        assert!(matches!(
            CachePlan::parse("voronoi-x", 3),
            Err(Error::InvalidCodecSpec { .. })
        ));
    }

    #[test]
    fn kivi_items_parse_print_and_count() {
        let p = CachePlan::parse("kivi-b2-g32-r32,raw=1", 3).unwrap();
        let kivi = Kivi {
            bits: 2,
            group: 32,
            residual: 32,
        };
        assert_eq!(p.layers[0], LayerChoice::Kivi(kivi));
        assert_eq!(p.layers[1], LayerChoice::RAW);
        assert_eq!(p.label(), "kivi-b2-g32-r32,raw=1");
        assert_eq!(p.family(), None);
        let every = CachePlan::parse("kivi-b4-g32-r128", 2).unwrap();
        assert_eq!(every.family().as_deref(), Some("kivi"));
        assert_eq!(every.policies()[1], LayerPolicy::Kivi(every_kivi(&every)));
        // b + 32/G bits per value for K and V.
        assert!((every.bits_per_value(64).unwrap() - 5.0).abs() < 1e-12);
        assert_eq!(
            CachePlan::parse("kivi", 1).unwrap().layers[0],
            LayerChoice::Kivi(Kivi::KIVI2)
        );
        for bad in [
            "kivi-b2-g32",
            "kivi-b2-g32-rx",
            "kivi2",
            "kivi,k=int8",
            "v=int4,kivi",
        ] {
            assert!(
                matches!(CachePlan::parse(bad, 3), Err(Error::InvalidValue { .. })),
                "{bad}"
            );
        }
    }

    fn every_kivi(p: &CachePlan) -> Kivi {
        match p.layers[0] {
            LayerChoice::Kivi(k) => k,
            LayerChoice::PerVector(_) => panic!("not KIVI"),
        }
    }

    #[test]
    fn policies_hold_uncompressed_kinds_in_f16() {
        let p = CachePlan::parse("k=int8,raw=1", 2).unwrap();
        let policies = p.policies();
        let int8: CodecSpec = "int8".parse().unwrap();
        // The same policies kv-codec's own plan gives for the same choices.
        let json = format!(r#"{{"layers":[{{"k":"{int8}","v":null}},{{"k":null,"v":null}}]}}"#);
        let reference = kv_codec::cache::CachePlan::from_json(&json).unwrap();
        assert_eq!(policies, reference.policies());
        assert_eq!(policies[1], LayerPolicy::uncompressed(Dtype::F16));
        assert!(matches!(
            policies[0],
            LayerPolicy::PerVector {
                k: Storage::Codec(_),
                ..
            }
        ));
    }

    #[test]
    fn json_plans_are_read_and_checked() {
        let text = r#"{"layers":[{"k":"voronoi-e8-q16-s4","v":"voronoi-e8-q13-s2"},{"k":null,"v":"bf16"}]}"#;
        let p = CachePlan::from_json(text, 2, "plan.json").unwrap();
        assert_eq!(p.label(), "plan.json");
        assert_eq!(
            p.layers[1],
            LayerChoice::codecs(None, Some(CodecSpec::Bf16))
        );
        assert_eq!(
            p.policies(),
            kv_codec::cache::CachePlan::from_json(text)
                .unwrap()
                .policies()
        );
        assert!(matches!(
            CachePlan::from_json(text, 3, "plan.json"),
            Err(Error::InvalidCodecSpec {
                source: kv_codec::Error::PlanLayers { .. },
                ..
            })
        ));
        assert!(matches!(
            CachePlan::from_json(r#"{"layers":[{"k":"int8"}]}"#, 1, "x"),
            Err(Error::InvalidCodecSpec { .. })
        ));
        // A layer in f16 leaves the plan out of every family.
        assert_eq!(p.family(), None);
        // Layers of one family at different rates, protected alike: a planned allocation.
        let planned = r#"{"layers":[
            {"k":"voronoi-e8-q17-s3","v":"voronoi-e8-q6-s3","protection":{"sink_tokens":4,"recent_tokens":16,"key_centre_tokens":64}},
            {"k":"voronoi-e8-q9-s2","v":"voronoi-e8-q6-s3","protection":{"sink_tokens":4,"recent_tokens":16,"key_centre_tokens":64}}]}"#;
        let planned = CachePlan::from_json(planned, 2, "b3.json").unwrap();
        assert_eq!(planned.label(), "b3.json");
        assert_eq!(
            planned.family().as_deref(),
            Some("voronoi per-layer protect=4:16:64")
        );
        // Protected differently, or of two families: no family.
        let mut mixed = planned.clone();
        mixed.layers[1] = LayerChoice::codecs(
            Some("voronoi-e8-q9-s2".parse().unwrap()),
            Some("voronoi-e8-q6-s3".parse().unwrap()),
        );
        assert_eq!(mixed.family(), None);
        mixed.layers[1] = planned.layers[1];
        if let LayerChoice::PerVector(l) = &mut mixed.layers[1] {
            l.v = Some("turboquant-b3".parse().unwrap());
        }
        assert_eq!(mixed.family(), None);
        // Without a name, a non-uniform plan is spelled out layer by layer.
        let unnamed = CachePlan { name: None, ..p };
        assert_eq!(
            unnamed.label(),
            "L0:k=voronoi-e8-q16-s4/v=voronoi-e8-q13-s2,L1:k=raw/v=bf16"
        );
    }
}
