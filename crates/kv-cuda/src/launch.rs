//! Everything that talks to the CUDA driver: library detection, the [`Device`] (context,
//! stream and the NVRTC-compiled module), device buffers, and kernel launches. This is the
//! only module of the crate that may use `unsafe`; each block names its invariant.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtrMut, DeviceRepr, LaunchConfig,
    PushKernelArg, ValidAsZeroBits, result::DriverError, sys,
};
use cudarc::nvrtc::{CompileError, CompileOptions, Ptx};

use crate::error::Error;
use crate::params::Params;
use crate::plan::{Dtype, Launch, Op, Plan};
use crate::source::{KERNELS, kernel_source};

// SAFETY: `Params` is `repr(C)` over `[u32; WORDS]`, plain data with no padding and no
// pointers, laid out exactly as the generated CUDA `struct Params` (4-byte fields in the
// same order; see params::c_struct), so passing its bytes as a kernel argument is sound.
unsafe impl DeviceRepr for Params {}

/// Whether the CUDA driver and NVRTC can be loaded and at least one device is present.
///
/// Call this before anything else on machines that may lack a GPU: the driver bindings
/// abort the process when their library is missing, and this function looks first.
pub fn is_available() -> bool {
    libraries_present().is_ok() && matches!(CudaContext::device_count(), Ok(n) if n > 0)
}

/// Checks that both dynamic libraries load, without touching them otherwise.
fn libraries_present() -> Result<(), Error> {
    // SAFETY: `is_culib_present` only tries `dlopen` on the library's candidate names and
    // drops what it opened; it runs no code of the library beyond its initialisers.
    if !unsafe { sys::is_culib_present() } {
        return Err(Error::LibraryMissing {
            library: "CUDA driver (libcuda)",
        });
    }
    // SAFETY: as above, for NVRTC.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err(Error::LibraryMissing {
            library: "NVRTC (libnvrtc)",
        });
    }
    Ok(())
}

fn driver(op: &'static str) -> impl Fn(DriverError) -> Error {
    move |e| Error::Driver {
        op,
        code: e.0 as u32,
        name: e
            .error_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "unknown".to_owned()),
    }
}

/// PTX per virtual architecture (`compute_90`, ...): NVRTC runs once per architecture per
/// process, however many devices or plans are made.
fn ptx_for(arch: &str) -> Result<String, Error> {
    static CACHE: OnceLock<Mutex<HashMap<String, String>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    let mut cache = cache
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(ptx) = cache.get(arch) {
        return Ok(ptx.clone());
    }
    // The options are part of the bit-exact contract: no contraction into fused
    // multiply-adds, IEEE division and square root, and subnormals kept.
    let options = CompileOptions {
        ftz: Some(false),
        prec_sqrt: Some(true),
        prec_div: Some(true),
        fmad: Some(false),
        options: vec![
            format!("--gpu-architecture={arch}"),
            "--std=c++17".to_owned(),
        ],
        name: Some("kv_cuda_kernels.cu".to_owned()),
        ..CompileOptions::default()
    };
    let ptx = cudarc::nvrtc::compile_ptx_with_opts(kernel_source(), options).map_err(|e| {
        Error::Compile {
            arch: arch.to_owned(),
            log: match e {
                CompileError::CompileError { log, .. } => log.to_string_lossy().into_owned(),
                other => format!("{other:?}"),
            },
        }
    })?;
    let text = ptx.to_src();
    cache.insert(arch.to_owned(), text.clone());
    Ok(text)
}

/// One GPU: its context, the stream every operation of this crate runs on, and the kernels
/// compiled for its architecture.
#[derive(Debug)]
pub struct Device {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    functions: HashMap<&'static str, CudaFunction>,
    name: String,
    arch: String,
}

/// Element types of device buffers.
pub trait Element: DeviceRepr + ValidAsZeroBits + Copy + Default + private::Sealed {}

mod private {
    /// Keeps [`super::Element`] closed to the types below.
    pub trait Sealed {}
}

macro_rules! element {
    ($($t:ty),*) => {$(
        impl private::Sealed for $t {}
        impl Element for $t {}
    )*};
}
element!(u8, u16, u32, u64, f32);

/// A buffer of `T` in device memory, owned (freed on drop).
#[derive(Debug)]
pub struct DeviceBuffer<T: Element> {
    /// At least one element (the driver refuses empty allocations).
    slice: CudaSlice<T>,
    len: usize,
}

impl<T: Element> DeviceBuffer<T> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer holds no element.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Values in device memory, as an encoder reads them.
#[derive(Clone, Copy, Debug)]
pub enum Values<'a> {
    /// 32-bit floats.
    F32(&'a DeviceBuffer<f32>),
    /// IEEE half precision bits.
    F16(&'a DeviceBuffer<u16>),
    /// bfloat16 bits.
    Bf16(&'a DeviceBuffer<u16>),
}

impl Values<'_> {
    fn len(&self) -> usize {
        match self {
            Self::F32(b) => b.len(),
            Self::F16(b) | Self::Bf16(b) => b.len(),
        }
    }

    fn dtype(&self) -> Dtype {
        match self {
            Self::F32(_) => Dtype::F32,
            Self::F16(_) => Dtype::F16,
            Self::Bf16(_) => Dtype::Bf16,
        }
    }
}

/// Where a decoder writes values in device memory.
#[derive(Debug)]
pub enum ValuesMut<'a> {
    /// 32-bit floats.
    F32(&'a mut DeviceBuffer<f32>),
    /// IEEE half precision bits (rounded to nearest even).
    F16(&'a mut DeviceBuffer<u16>),
    /// bfloat16 bits (rounded to nearest even).
    Bf16(&'a mut DeviceBuffer<u16>),
}

impl ValuesMut<'_> {
    fn len(&self) -> usize {
        match self {
            Self::F32(b) => b.len(),
            Self::F16(b) | Self::Bf16(b) => b.len(),
        }
    }

    fn dtype(&self) -> Dtype {
        match self {
            Self::F32(_) => Dtype::F32,
            Self::F16(_) => Dtype::F16,
            Self::Bf16(_) => Dtype::Bf16,
        }
    }
}

impl Device {
    /// Opens device `ordinal` and compiles the kernels for it (NVRTC runs once per
    /// architecture per process).
    ///
    /// # Errors
    /// [`Error::LibraryMissing`] without a driver or NVRTC, [`Error::NoSuchDevice`],
    /// [`Error::Driver`] or [`Error::Compile`].
    pub fn new(ordinal: usize) -> Result<Self, Error> {
        libraries_present()?;
        let count = CudaContext::device_count().map_err(driver("cuDeviceGetCount"))?;
        let count = usize::try_from(count).unwrap_or(0);
        if ordinal >= count {
            return Err(Error::NoSuchDevice { ordinal, count });
        }
        let ctx = CudaContext::new(ordinal).map_err(driver("cuCtxCreate"))?;
        let (major, minor) = ctx
            .compute_capability()
            .map_err(driver("cuDeviceGetAttribute"))?;
        let arch = format!("compute_{major}{minor}");
        let ptx = ptx_for(&arch)?;
        let module = ctx
            .load_module(Ptx::from_src(ptx))
            .map_err(driver("cuModuleLoadData"))?;
        let mut functions = HashMap::new();
        for name in KERNELS {
            let f = module
                .load_function(name)
                .map_err(driver("cuModuleGetFunction"))?;
            functions.insert(name, f);
        }
        let name = ctx.name().map_err(driver("cuDeviceGetName"))?;
        let stream = ctx.default_stream();
        Ok(Self {
            ctx,
            stream,
            functions,
            name,
            arch,
        })
    }

    /// The device's name, e.g. `NVIDIA H100 80GB HBM3`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The virtual architecture the kernels were compiled for, e.g. `compute_90`.
    pub fn arch(&self) -> &str {
        &self.arch
    }

    /// A zeroed buffer of `len` elements.
    ///
    /// # Errors
    /// [`Error::Driver`] (out of memory, for instance).
    pub fn zeros<T: Element>(&self, len: usize) -> Result<DeviceBuffer<T>, Error> {
        // The driver refuses empty allocations; an empty buffer holds one unused element.
        let slice = self
            .stream
            .alloc_zeros::<T>(len.max(1))
            .map_err(driver("cuMemAlloc"))?;
        Ok(DeviceBuffer { slice, len })
    }

    /// A buffer holding a copy of `host`.
    ///
    /// # Errors
    /// [`Error::Driver`].
    pub fn upload<T: Element>(&self, host: &[T]) -> Result<DeviceBuffer<T>, Error> {
        let mut buffer = self.zeros(host.len())?;
        self.write(host, &mut buffer)?;
        Ok(buffer)
    }

    /// Copies `host` into `buffer`.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] unless the lengths are equal; [`Error::Driver`].
    pub fn write<T: Element>(&self, host: &[T], buffer: &mut DeviceBuffer<T>) -> Result<(), Error> {
        check_len("host source", buffer.len(), host.len())?;
        if host.is_empty() {
            return Ok(());
        }
        self.stream
            .memcpy_htod(host, &mut buffer.slice)
            .map_err(driver("cuMemcpyHtoD"))
    }

    /// Copies `buffer` into `host` (waits for the device).
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] unless the lengths are equal; [`Error::Driver`].
    pub fn download<T: Element>(
        &self,
        buffer: &DeviceBuffer<T>,
        host: &mut [T],
    ) -> Result<(), Error> {
        check_len("host destination", buffer.len(), host.len())?;
        if !host.is_empty() {
            self.stream
                .memcpy_dtoh(&buffer.slice.slice(..host.len()), host)
                .map_err(driver("cuMemcpyDtoH"))?;
        }
        self.synchronize()
    }

    /// Copies `src` to `dst` on the device (the copy bandwidth is the benchmarks' roofline).
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] unless the lengths are equal; [`Error::Driver`].
    pub fn copy<T: Element>(
        &self,
        src: &DeviceBuffer<T>,
        dst: &mut DeviceBuffer<T>,
    ) -> Result<(), Error> {
        check_len("copy destination", src.len(), dst.len())?;
        if src.is_empty() {
            return Ok(());
        }
        self.stream
            .memcpy_dtod(&src.slice, &mut dst.slice)
            .map_err(driver("cuMemcpyDtoD"))
    }

    /// Sets every byte of `buffer` to `byte`: tests poison outputs with it so that an
    /// element a kernel fails to write is caught.
    ///
    /// # Errors
    /// [`Error::Driver`].
    pub fn fill_bytes<T: Element>(
        &self,
        buffer: &mut DeviceBuffer<T>,
        byte: u8,
    ) -> Result<(), Error> {
        let bytes = buffer.len * std::mem::size_of::<T>();
        let (ptr, _record) = buffer.slice.device_ptr_mut(&self.stream);
        // SAFETY: `ptr` is the start of the live allocation `buffer` owns, which holds at least
        // `bytes` bytes; it was allocated on `self.stream`, the stream the memset runs on; and
        // every byte pattern is a valid value of the element types (integers and f32).
        unsafe {
            cudarc::driver::result::memset_d8_async(ptr, byte, bytes, self.stream.cu_stream())
        }
        .map_err(driver("cuMemsetD8Async"))
    }

    /// Waits until all work queued on this device's stream has finished.
    ///
    /// # Errors
    /// [`Error::Driver`], including faults of earlier kernels.
    pub fn synchronize(&self) -> Result<(), Error> {
        self.stream
            .synchronize()
            .map_err(driver("cuStreamSynchronize"))
    }

    /// Runs `work` (which queues operations on this device) between two events and returns
    /// its result with the elapsed device time in milliseconds.
    ///
    /// # Errors
    /// [`Error::Driver`], or `work`'s error.
    pub fn timed<R>(&self, work: impl FnOnce() -> Result<R, Error>) -> Result<(R, f32), Error> {
        let flags = Some(sys::CUevent_flags::CU_EVENT_DEFAULT);
        let start = self.ctx.new_event(flags).map_err(driver("cuEventCreate"))?;
        let end = self.ctx.new_event(flags).map_err(driver("cuEventCreate"))?;
        start
            .record(&self.stream)
            .map_err(driver("cuEventRecord"))?;
        let result = work()?;
        end.record(&self.stream).map_err(driver("cuEventRecord"))?;
        let ms = start
            .elapsed_ms(&end)
            .map_err(driver("cuEventElapsedTime"))?;
        Ok((result, ms))
    }

    /// Uploads `plan` (its tables) to this device.
    ///
    /// # Errors
    /// [`Error::Driver`].
    pub fn load(self: &Arc<Self>, plan: Plan) -> Result<DevicePlan, Error> {
        let tables = self.upload(plan.tables())?;
        let status = Mutex::new(self.upload(&[NO_FAULT])?);
        Ok(DevicePlan {
            device: Arc::clone(self),
            plan,
            tables,
            status,
        })
    }

    fn run(
        &self,
        launch: &Launch,
        src: &CudaSlice<impl DeviceRepr>,
        dst: &mut CudaSlice<impl DeviceRepr>,
        tables: &DeviceBuffer<u32>,
        status: &mut DeviceBuffer<u64>,
    ) -> Result<(), Error> {
        let f = &self.functions[launch.kernel];
        let cfg = LaunchConfig {
            grid_dim: (launch.grid, 1, 1),
            block_dim: (launch.block, 1, 1),
            shared_mem_bytes: launch.shared_bytes,
        };
        let mut args = self.stream.launch_builder(f);
        args.arg(&launch.params)
            .arg(src)
            .arg(dst)
            .arg(&tables.slice)
            .arg(&mut status.slice);
        // SAFETY: every kernel has the signature (Params, const void*, void*, const u32*,
        // u64*), which the five arguments above match in order and kind. The caller checked
        // that `src` and `dst` hold exactly the elements the launch's `n`, `d` and `bits`
        // imply (values: n·d elements; packed: ⌈n·bits/8⌉ bytes), and the kernels index no
        // further: blocks cover whole 32-vector chunks and skip vectors at or past `n`; the
        // table offsets in `params` were computed from this plan's own table buffer; and the
        // status buffer holds one u64. Shared memory is sized from `bits` by the plan.
        unsafe { args.launch(cfg) }.map_err(driver("cuLaunchKernel"))?;
        Ok(())
    }
}

/// The fault word's value when no kernel reported a fault.
const NO_FAULT: u64 = u64::MAX;

fn check_len(what: &'static str, expected: usize, actual: usize) -> Result<(), Error> {
    if expected == actual {
        Ok(())
    } else {
        Err(Error::LengthMismatch {
            what,
            expected,
            actual,
        })
    }
}

/// The reason texts of decode faults, by the kernels' fault codes (the same words as the CPU
/// decoders of kv-codec use, so that both backends report the same error).
fn fault_reason(code: u32) -> &'static str {
    match code {
        1 => "scale is not finite",
        2 => "joint index out of range",
        3 => "norm has its sign bit set",
        4 => "norm is not finite",
        5 => "bf16 value is not finite",
        6 => "scale has its sign bit set",
        7 => "fp8 NaN code",
        8 => "scale escape out of range",
        9 => "scale is negative",
        10 => "integer level −2^(b−1) is never written",
        11 => "block index out of range",
        12 => "scale is not finite and non-negative",
        _ => "unknown fault",
    }
}

/// A [`Plan`] loaded on a device: its tables in device memory and a fault word.
///
/// Operations are queued on the device's stream. The `enqueue_*` methods return once the
/// kernel is queued; [`DevicePlan::finish`] waits and reports the first fault (a non-finite
/// input, a corrupt payload) found since the previous `finish`. `encode` and `decode` do both.
/// The fault word is shared by the plan's calls: use one plan per thread that queues work.
#[derive(Debug)]
pub struct DevicePlan {
    device: Arc<Device>,
    plan: Plan,
    tables: DeviceBuffer<u32>,
    status: Mutex<DeviceBuffer<u64>>,
}

impl DevicePlan {
    /// The plan.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The device it runs on.
    pub fn device(&self) -> &Arc<Device> {
        &self.device
    }

    fn vectors(&self, values: usize) -> Result<usize, Error> {
        let d = self.plan.head_dim();
        if values.is_multiple_of(d) {
            Ok(values / d)
        } else {
            Err(Error::LengthMismatch {
                what: "values",
                expected: values.next_multiple_of(d),
                actual: values,
            })
        }
    }

    /// Queues the encoding of `input` (a whole number of vectors) into `out`
    /// ([`Plan::encoded_len`] bytes).
    ///
    /// # Errors
    /// [`Error::LengthMismatch`], [`Error::BatchTooLarge`], [`Error::Driver`].
    pub fn enqueue_encode(
        &self,
        input: Values<'_>,
        out: &mut DeviceBuffer<u8>,
    ) -> Result<(), Error> {
        let n = self.vectors(input.len())?;
        check_len("encoded output", self.plan.encoded_len(n), out.len())?;
        let Some(launch) = self.plan.launch(Op::Encode, n, input.dtype())? else {
            return Ok(());
        };
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        match input {
            Values::F32(b) => {
                self.device
                    .run(&launch, &b.slice, &mut out.slice, &self.tables, &mut status)
            }
            Values::F16(b) | Values::Bf16(b) => {
                self.device
                    .run(&launch, &b.slice, &mut out.slice, &self.tables, &mut status)
            }
        }
    }

    /// Queues the decoding of `bytes` into `out` (a whole number of vectors, whose count
    /// fixes the expected byte length).
    ///
    /// # Errors
    /// [`Error::LengthMismatch`], [`Error::BatchTooLarge`], [`Error::Driver`].
    pub fn enqueue_decode(
        &self,
        bytes: &DeviceBuffer<u8>,
        out: ValuesMut<'_>,
    ) -> Result<(), Error> {
        let n = self.vectors(out.len())?;
        check_len("encoded input", self.plan.encoded_len(n), bytes.len())?;
        let Some(launch) = self.plan.launch(Op::Decode, n, out.dtype())? else {
            return Ok(());
        };
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        match out {
            ValuesMut::F32(b) => self.device.run(
                &launch,
                &bytes.slice,
                &mut b.slice,
                &self.tables,
                &mut status,
            ),
            ValuesMut::F16(b) | ValuesMut::Bf16(b) => self.device.run(
                &launch,
                &bytes.slice,
                &mut b.slice,
                &self.tables,
                &mut status,
            ),
        }
    }

    /// Waits for the queued work and reports the first fault since the previous call.
    ///
    /// # Errors
    /// [`Error::NonFinite`] or [`Error::CorruptPayload`] for faults in the data (the first
    /// vector at fault, as the CPU reports it); [`Error::Driver`].
    pub fn finish(&self) -> Result<(), Error> {
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        let mut word = [0u64];
        self.device.download(&status, &mut word)?;
        if word[0] == NO_FAULT {
            return Ok(());
        }
        self.device.write(&[NO_FAULT], &mut status)?;
        let vector = (word[0] >> 32) as usize;
        let code = (word[0] & 0xff) as u32;
        Err(if code == 0 {
            Error::NonFinite { vector }
        } else {
            Error::CorruptPayload {
                vector,
                reason: fault_reason(code),
            }
        })
    }

    /// Encodes and waits: [`DevicePlan::enqueue_encode`] then [`DevicePlan::finish`].
    ///
    /// # Errors
    /// As both.
    pub fn encode(&self, input: Values<'_>, out: &mut DeviceBuffer<u8>) -> Result<(), Error> {
        self.enqueue_encode(input, out)?;
        self.finish()
    }

    /// Decodes and waits: [`DevicePlan::enqueue_decode`] then [`DevicePlan::finish`].
    ///
    /// # Errors
    /// As both.
    pub fn decode(&self, bytes: &DeviceBuffer<u8>, out: ValuesMut<'_>) -> Result<(), Error> {
        self.enqueue_decode(bytes, out)?;
        self.finish()
    }
}
