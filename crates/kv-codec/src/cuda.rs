//! The CUDA backend (feature `cuda`): kv-codec's codecs described to `kv-cuda`'s kernels, a
//! [`CudaCodec`] that runs batch calls on a GPU, and the device types for callers that keep
//! their K/V in device memory.
//!
//! The CPU codecs are the specification: [`kernel_codec`] reads the numbers a codec's kernels
//! need from the CPU codec itself (its scale multipliers, its Lloyd–Max levels), and
//! [`CudaCodec`] checks that the kernels' size per vector equals the CPU codec's.
//!
//! Codecs on the GPU: `voronoi-e8-q<q>-s<k>` (q ≤ 256), `compat-d4-q<Q>[-joint]` and
//! `compat-e8-q<Q>[-joint]` (boxes of fewer than 2^64 points), `turboquant-b<b>`,
//! `fp8-e4m3[-g<n>]`, `int<b>[-g<n>]` and `bf16`, at head dimensions that are multiples of 8
//! up to 256 (groups multiples of 8). Not yet: `q8_0`/`q4_0` and the strawman. Others return
//! [`Error::Cuda`] with [`kv_cuda::Error::Unsupported`].

use std::sync::Arc;

use half::slice::HalfFloatSliceExt;

pub use kv_cuda::Error as CudaError;
pub use kv_cuda::{
    BoxLattice, Device, DeviceBuffer, DevicePlan, Dtype, KernelCodec, Launch, Op, Plan, Values,
    ValuesMut, is_available, kernel_source,
};

use crate::codec::{Input, Output, VectorCodec};
use crate::codecs::baselines::turboquant::TurboQuantCodec;
use crate::codecs::compat::CompatCodec;
use crate::codecs::voronoi::VoronoiCodec;
use crate::config::CodecConfig;
use crate::error::Error;
use crate::spec::{CodecSpec, CompatLattice};

/// The kernels' description of the codec `config` builds.
///
/// # Errors
/// The codec's own parameter errors; [`Error::Cuda`] with [`kv_cuda::Error::Unsupported`]
/// for a codec that has no kernels.
pub fn kernel_codec(config: &CodecConfig) -> Result<KernelCodec, Error> {
    let d = config.head_dim;
    let whole = |group: u32| if group == 0 { d } else { group as usize };
    Ok(match config.spec {
        spec @ CodecSpec::Voronoi { q, .. } => {
            let codec = VoronoiCodec::new(spec, d, config.seed)?;
            KernelCodec::Voronoi {
                head_dim: d,
                seed: config.seed,
                q,
                fill_q: codec.fill_q(),
                alphas: codec.alphas().to_vec(),
            }
        }
        spec @ CodecSpec::TurboQuant { bits } => {
            let codec = TurboQuantCodec::new(spec, d, config.seed)?;
            KernelCodec::TurboQuant {
                head_dim: d,
                seed: config.seed,
                bits,
                levels: codec.levels().to_vec(),
                thresholds: codec.thresholds().to_vec(),
            }
        }
        CodecSpec::Fp8E4m3 { group } => KernelCodec::Fp8E4m3 {
            head_dim: d,
            group: whole(group),
        },
        CodecSpec::Int { bits, group } => KernelCodec::Int {
            head_dim: d,
            bits,
            group: whole(group),
        },
        CodecSpec::Bf16 => KernelCodec::Bf16 { head_dim: d },
        spec @ CodecSpec::Compat { lattice, q, joint } => {
            // Builds the CPU codec for its parameter and head_dim checks.
            CompatCodec::new(spec, d)?;
            KernelCodec::Compat {
                head_dim: d,
                lattice: match lattice {
                    CompatLattice::D4 => BoxLattice::D4,
                    CompatLattice::E8 => BoxLattice::E8,
                },
                q,
                joint,
            }
        }
        other => {
            let (id, _) = other.wire();
            return Err(Error::Cuda(kv_cuda::Error::Unsupported {
                what: "codec id",
                value: u64::from(id),
                supported: "voronoi-e8, compat, turboquant, fp8-e4m3, int, bf16",
            }));
        }
    })
}

/// Maps the kernels' data faults to the CPU codec's errors (so both backends report the
/// same `Error` for the same bad input), and everything else to [`Error::Cuda`].
fn from_cuda(e: kv_cuda::Error) -> Error {
    match e {
        kv_cuda::Error::NonFinite { vector } => Error::NonFinite { vector },
        kv_cuda::Error::CorruptPayload { vector, reason } => {
            Error::CorruptPayload { vector, reason }
        }
        kv_cuda::Error::LengthMismatch {
            what,
            expected,
            actual,
        } => Error::LengthMismatch {
            what,
            expected,
            actual,
        },
        other => Error::Cuda(other),
    }
}

/// A codec whose batch calls run on a GPU; single-vector calls run the CPU codec (the same
/// bytes either way).
#[derive(Debug)]
pub struct CudaCodec {
    cpu: Box<dyn VectorCodec>,
    plan: DevicePlan,
}

impl CudaCodec {
    /// The codec `config` builds, on CUDA device `ordinal`.
    ///
    /// # Errors
    /// As [`kernel_codec`]; [`Error::Cuda`] for device failures.
    ///
    /// # Panics
    /// If the kernels' bits per vector differ from the CPU codec's (a bug).
    pub fn new(config: &CodecConfig, ordinal: usize) -> Result<Self, Error> {
        let cpu = config.build()?;
        let plan = Plan::new(kernel_codec(config)?)?;
        assert_eq!(
            plan.bits_per_vector(),
            cpu.bits_per_vector(),
            "kernel and CPU sizes differ for {}",
            config.spec
        );
        let device = Arc::new(Device::new(ordinal)?);
        let plan = device.load(plan)?;
        Ok(Self { cpu, plan })
    }

    /// The plan loaded on the device, for callers whose K/V already sit in device memory
    /// ([`DevicePlan::encode`], [`DevicePlan::decode`]).
    pub fn device_plan(&self) -> &DevicePlan {
        &self.plan
    }

    fn vectors(&self, values: usize, what: &'static str) -> Result<usize, Error> {
        let d = self.cpu.head_dim();
        if values.is_multiple_of(d) {
            Ok(values / d)
        } else {
            Err(Error::LengthMismatch {
                what,
                expected: values.next_multiple_of(d),
                actual: values,
            })
        }
    }
}

impl VectorCodec for CudaCodec {
    fn spec(&self) -> CodecSpec {
        self.cpu.spec()
    }

    fn head_dim(&self) -> usize {
        self.cpu.head_dim()
    }

    fn bits_per_vector(&self) -> u32 {
        self.cpu.bits_per_vector()
    }

    fn scratch_len(&self) -> usize {
        self.cpu.scratch_len()
    }

    fn encode_vector(&self, x: &[f32], out: &mut [u8], scratch: &mut [f32]) {
        self.cpu.encode_vector(x, out, scratch);
    }

    fn decode_vector(
        &self,
        bytes: &[u8],
        out: &mut [f32],
        scratch: &mut [f32],
    ) -> Result<(), &'static str> {
        self.cpu.decode_vector(bytes, out, scratch)
    }

    fn encode(&self, input: Input<'_>, out: &mut [u8]) -> Result<(), Error> {
        let values = match input {
            Input::F32(v) => v.len(),
            Input::F16(v) => v.len(),
            Input::Bf16(v) => v.len(),
        };
        let n = self.vectors(values, "input")?;
        let expected = self.encoded_len(n);
        if out.len() != expected {
            return Err(Error::LengthMismatch {
                what: "encoded output",
                expected,
                actual: out.len(),
            });
        }
        let device = self.plan.device();
        let mut bytes = device.zeros::<u8>(out.len())?;
        match input {
            Input::F32(v) => {
                let x = device.upload(v)?;
                self.plan.encode(Values::F32(&x), &mut bytes)
            }
            Input::F16(v) => {
                let x = device.upload(v.reinterpret_cast())?;
                self.plan.encode(Values::F16(&x), &mut bytes)
            }
            Input::Bf16(v) => {
                let x = device.upload(v.reinterpret_cast())?;
                self.plan.encode(Values::Bf16(&x), &mut bytes)
            }
        }
        .map_err(from_cuda)?;
        device.download(&bytes, out).map_err(from_cuda)
    }

    fn decode(&self, bytes: &[u8], out: Output<'_>) -> Result<(), Error> {
        let values = match &out {
            Output::F32(v) => v.len(),
            Output::F16(v) => v.len(),
            Output::Bf16(v) => v.len(),
        };
        let n = self.vectors(values, "decoded output")?;
        let expected = self.encoded_len(n);
        if bytes.len() != expected {
            return Err(Error::LengthMismatch {
                what: "encoded input",
                expected,
                actual: bytes.len(),
            });
        }
        let device = self.plan.device();
        let src = device.upload(bytes)?;
        match out {
            Output::F32(v) => {
                let mut y = device.zeros::<f32>(v.len())?;
                self.plan
                    .decode(&src, ValuesMut::F32(&mut y))
                    .map_err(from_cuda)?;
                device.download(&y, v)?;
            }
            Output::F16(v) => {
                let mut y = device.zeros::<u16>(v.len())?;
                self.plan
                    .decode(&src, ValuesMut::F16(&mut y))
                    .map_err(from_cuda)?;
                device.download(&y, v.reinterpret_cast_mut())?;
            }
            Output::Bf16(v) => {
                let mut y = device.zeros::<u16>(v.len())?;
                self.plan
                    .decode(&src, ValuesMut::Bf16(&mut y))
                    .map_err(from_cuda)?;
                device.download(&y, v.reinterpret_cast_mut())?;
            }
        }
        Ok(())
    }
}
