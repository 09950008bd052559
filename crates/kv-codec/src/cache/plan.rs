//! The per-layer cache plan: which codec stores each layer's keys and values, as JSON.
//!
//! The audit's planner (`kv-audit`) writes it and [`super::CacheConfig::from_plan`] reads
//! it. The schema is exactly:
//!
//! ```json
//! {"layers": [{"k": "voronoi-e8-q16-s4", "v": "voronoi-e8-q13-s2"},
//!             {"k": null, "v": "bf16"}]}
//! ```
//!
//! * `layers`: one object per model layer, in order (layer 0 first).
//! * `k`, `v`: both required; a codec spec string, exactly as [`CodecSpec`]'s `FromStr`
//!   parses and its `Display` writes it (`kvc codecs` lists them), or `null` for
//!   uncompressed f16.
//! * `protection`: optional, absent when nothing is protected; an object with the
//!   optional integer fields `sink_tokens`, `recent_tokens` and `key_centre_tokens` of
//!   [`Protection`] (absent fields are 0) and the optional `window`, `"f16"` (the default,
//!   left out when written) or `"int8"` ([`crate::cache::WindowFormat`]), e.g.
//!   `{"k":"voronoi-e8-q16-s4","v":"voronoi-e8-q16-s4","protection":{"sink_tokens":4,"recent_tokens":16,"key_centre_tokens":64}}`.
//!
//! Unknown fields are refused, so a typo cannot silently leave a layer uncompressed.
//!
//! ```
//! use kv_codec::cache::{CachePlan, LayerPolicy, Protection, Storage};
//! use kv_codec::format::Dtype;
//!
//! let plan = CachePlan::from_json(
//!     r#"{"layers":[{"k":"voronoi-e8-q16-s4","v":"voronoi-e8-q13-s2",
//!                    "protection":{"sink_tokens":4,"recent_tokens":16}},
//!                   {"k":null,"v":"bf16"}]}"#,
//! )?;
//! let policies = plan.policies();
//! let protection = Protection { sink_tokens: 4, recent_tokens: 16, ..Protection::NONE };
//! assert_eq!(
//!     policies[0],
//!     LayerPolicy::codecs("voronoi-e8-q16-s4".parse()?, "voronoi-e8-q13-s2".parse()?)
//!         .with_protection(protection)
//! );
//! assert_eq!(
//!     policies[1],
//!     LayerPolicy::PerVector {
//!         k: Storage::Dense(Dtype::F16),
//!         v: Storage::Codec("bf16".parse()?),
//!         protection: Protection::NONE,
//!     }
//! );
//! assert_eq!(CachePlan::from_json(&plan.to_json())?, plan);
//! # Ok::<(), kv_codec::Error>(())
//! ```

use serde::{Deserialize, Serialize};

use super::{LayerPolicy, Protection, Storage};
use crate::error::Error;
use crate::format::Dtype;
use crate::spec::CodecSpec;

/// A per-layer plan (see the module docs for the JSON schema).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CachePlan {
    /// One entry per layer.
    pub layers: Vec<LayerPlan>,
}

/// The codecs of one layer; `None` is uncompressed f16.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerPlan {
    /// Codec of the keys.
    // `deserialize_with` makes the field required (an explicit `null`, not a missing key).
    #[serde(deserialize_with = "Option::deserialize")]
    pub k: Option<CodecSpec>,
    /// Codec of the values.
    #[serde(deserialize_with = "Option::deserialize")]
    pub v: Option<CodecSpec>,
    /// Tokens kept beside the pages, and the key offset.
    #[serde(default, skip_serializing_if = "Protection::is_none")]
    pub protection: Protection,
}

impl From<LayerPlan> for LayerPolicy {
    fn from(plan: LayerPlan) -> Self {
        let storage =
            |spec: Option<CodecSpec>| spec.map_or(Storage::Dense(Dtype::F16), Storage::Codec);
        LayerPolicy::PerVector {
            k: storage(plan.k),
            v: storage(plan.v),
            protection: plan.protection,
        }
    }
}

impl CachePlan {
    /// Parses a plan.
    ///
    /// # Errors
    /// [`Error::PlanJson`] for text that is not a plan (the message names the problem,
    /// including a spec that does not parse).
    pub fn from_json(text: &str) -> Result<Self, Error> {
        Ok(serde_json::from_str(text)?)
    }

    /// The plan as compact JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a plan of strings and nulls serialises")
    }

    /// The layer policies, in order.
    pub fn policies(&self) -> Vec<LayerPolicy> {
        self.layers.iter().map(|&l| l.into()).collect()
    }

    /// The policies for a model of `layers` layers.
    ///
    /// # Errors
    /// [`Error::PlanLayers`] when the plan has another number of layers.
    pub fn policies_for(&self, layers: usize) -> Result<Vec<LayerPolicy>, Error> {
        if self.layers.len() != layers {
            return Err(Error::PlanLayers {
                expected: layers,
                actual: self.layers.len(),
            });
        }
        Ok(self.policies())
    }
}
