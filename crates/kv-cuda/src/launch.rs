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

use crate::attention::{self, PageLayout, PagesShape};
use crate::error::Error;
use crate::params::{AttnParams, Params};
use crate::plan::{Dtype, Launch, Op, Plan};
use crate::source::{ATTENTION_KERNELS, KERNELS, kernel_source};

// SAFETY: `Params` is `repr(C)` over `[u32; WORDS]`, plain data with no padding and no
// pointers, laid out exactly as the generated CUDA `struct Params` (4-byte fields in the
// same order; see params::c_struct), so passing its bytes as a kernel argument is sound.
unsafe impl DeviceRepr for Params {}

// SAFETY: as for `Params`: `AttnParams` is `repr(C)` over `[u32; ATTN_WORDS]`, laid out as
// the generated CUDA `struct AttnParams` (params::c_struct).
unsafe impl DeviceRepr for AttnParams {}

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
    /// Whether the device runs the tensor-core attention kernels (compute capability 8.0 on).
    tensor_cores: bool,
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
        // mma.sync on bf16, which the int pages' attention kernels use, came with sm_80.
        let tensor_cores = major >= 8;
        let ptx = ptx_for(&arch)?;
        let module = ctx
            .load_module(Ptx::from_src(ptx))
            .map_err(driver("cuModuleLoadData"))?;
        let mut functions = HashMap::new();
        for name in KERNELS.into_iter().chain(ATTENTION_KERNELS) {
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
            tensor_cores,
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
        // The driver refuses empty allocations; and every allocation has at least 16 zeroed
        // bytes past its last element, so that kernels may read a packed field's words with
        // whole-word loads however the field ends.
        let spare = 16usize.div_ceil(std::mem::size_of::<T>());
        let slice = self
            .stream
            .alloc_zeros::<T>(len + spare)
            .map_err(driver("cuMemAlloc"))?;
        Ok(DeviceBuffer { slice, len })
    }

    /// Copies `host` into `buffer` from element `offset` on.
    fn write_at<T: Element>(
        &self,
        host: &[T],
        buffer: &mut DeviceBuffer<T>,
        offset: usize,
    ) -> Result<(), Error> {
        let end = offset.checked_add(host.len()).filter(|&e| e <= buffer.len);
        let Some(end) = end else {
            return Err(Error::LengthMismatch {
                what: "buffer range",
                expected: buffer.len,
                actual: offset.saturating_add(host.len()),
            });
        };
        if host.is_empty() {
            return Ok(());
        }
        self.stream
            .memcpy_htod(host, &mut buffer.slice.slice_mut(offset..end))
            .map_err(driver("cuMemcpyHtoD"))
    }

    /// Copies elements `offset..offset + host.len()` of `buffer` into `host` (waits).
    fn read_at<T: Element>(
        &self,
        buffer: &DeviceBuffer<T>,
        offset: usize,
        host: &mut [T],
    ) -> Result<(), Error> {
        let end = offset.checked_add(host.len()).filter(|&e| e <= buffer.len);
        let Some(end) = end else {
            return Err(Error::LengthMismatch {
                what: "buffer range",
                expected: buffer.len,
                actual: offset.saturating_add(host.len()),
            });
        };
        if !host.is_empty() {
            self.stream
                .memcpy_dtoh(&buffer.slice.slice(offset..end), host)
                .map_err(driver("cuMemcpyDtoH"))?;
        }
        self.synchronize()
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

/// Waits for the device, then reads and resets a fault word: the first fault since the last
/// reset, as an error.
fn take_fault(device: &Device, status: &mut DeviceBuffer<u64>) -> Result<(), Error> {
    let mut word = [0u64];
    device.download(status, &mut word)?;
    if word[0] == NO_FAULT {
        return Ok(());
    }
    device.write(&[NO_FAULT], status)?;
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
        take_fault(&self.device, &mut status)
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

/// One of the two pools of a layer's pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PagePool {
    /// The keys' pages.
    K,
    /// The values' pages.
    V,
}

/// The K and V pages of one layer in device memory: per pool, `streams · max_pages` pages of
/// [`PageLayout::stride`] bytes, and a page table (`[streams, max_pages]` of page indices)
/// that the attention kernels read, so that pages need not be contiguous. A page holds
/// exactly the bytes kv-codec's cache holds for it; pages start zeroed, and writes OR bits
/// in, so tokens must be written in order, each once.
#[derive(Debug)]
pub struct DevicePages {
    device: Arc<Device>,
    shape: PagesShape,
    k: PageLayout,
    v: PageLayout,
    k_pool: DeviceBuffer<u8>,
    v_pool: DeviceBuffer<u8>,
    table: DeviceBuffer<u32>,
}

impl DevicePages {
    /// Zeroed pages of `shape` for vectors of `k_bits` and `v_bits` bits; stream `s` owns
    /// pages `s · max_pages ..` of each pool.
    ///
    /// # Errors
    /// [`Error::Unsupported`] for sizes beyond the kernels' 32-bit fields; [`Error::Driver`]
    /// (out of memory, for instance).
    pub fn new(
        device: &Arc<Device>,
        shape: PagesShape,
        k_bits: u32,
        v_bits: u32,
    ) -> Result<Self, Error> {
        shape.check()?;
        let layout = |bits| PageLayout {
            page_tokens: shape.page_tokens,
            bits,
        };
        let (k, v) = (layout(k_bits), layout(v_bits));
        let pages = shape.streams() * shape.max_pages;
        for l in [k, v] {
            if l.stride() > u32::MAX as usize || bits_overflow(l) {
                return Err(Error::Unsupported {
                    what: "page bytes",
                    value: l.stride() as u64,
                    supported: "pages below 2^29 bytes",
                });
            }
        }
        let table: Vec<u32> = (0..pages as u32).collect();
        Ok(Self {
            device: Arc::clone(device),
            shape,
            k,
            v,
            k_pool: device.zeros(pages * k.stride())?,
            v_pool: device.zeros(pages * v.stride())?,
            table: device.upload(&table)?,
        })
    }

    /// The shape of the pages.
    pub fn shape(&self) -> PagesShape {
        self.shape
    }

    /// The layout of one pool.
    pub fn layout(&self, pool: PagePool) -> PageLayout {
        match pool {
            PagePool::K => self.k,
            PagePool::V => self.v,
        }
    }

    fn pool(&self, pool: PagePool) -> &DeviceBuffer<u8> {
        match pool {
            PagePool::K => &self.k_pool,
            PagePool::V => &self.v_pool,
        }
    }

    /// Byte offset of page `page` of stream `stream` in a pool of `layout`.
    fn offset(&self, layout: PageLayout, stream: usize, page: usize) -> Result<usize, Error> {
        if stream >= self.shape.streams() || page >= self.shape.max_pages {
            return Err(Error::PageOutOfRange {
                stream,
                page,
                streams: self.shape.streams(),
                pages: self.shape.max_pages,
            });
        }
        Ok((stream * self.shape.max_pages + page) * layout.stride())
    }

    /// Copies `bytes` (one page's payload, [`PageLayout::page_bytes`]) into page `page` of
    /// stream `stream`.
    ///
    /// # Errors
    /// [`Error::PageOutOfRange`], [`Error::LengthMismatch`], [`Error::Driver`].
    pub fn write_page(
        &mut self,
        pool: PagePool,
        stream: usize,
        page: usize,
        bytes: &[u8],
    ) -> Result<(), Error> {
        let layout = self.layout(pool);
        check_len("page bytes", layout.page_bytes(), bytes.len())?;
        let at = self.offset(layout, stream, page)?;
        let buffer = match pool {
            PagePool::K => &mut self.k_pool,
            PagePool::V => &mut self.v_pool,
        };
        self.device.write_at(bytes, buffer, at)
    }

    /// Copies page `page` of stream `stream` into `out` (waits for the device).
    ///
    /// # Errors
    /// [`Error::PageOutOfRange`], [`Error::LengthMismatch`], [`Error::Driver`].
    pub fn read_page(
        &self,
        pool: PagePool,
        stream: usize,
        page: usize,
        out: &mut [u8],
    ) -> Result<(), Error> {
        let layout = self.layout(pool);
        check_len("page bytes", layout.page_bytes(), out.len())?;
        let at = self.offset(layout, stream, page)?;
        self.device.read_at(self.pool(pool), at, out)
    }

    /// Queues the writing of `count` tokens per stream at positions `start..start + count`:
    /// `packed` holds their vectors bit-packed back to back, stream-major (what
    /// [`DevicePlan::enqueue_encode`] writes for a `[streams, count, head_dim]` batch). The
    /// bits of those positions must still be zero.
    ///
    /// # Errors
    /// [`Error::TooManyTokens`] past the capacity, [`Error::LengthMismatch`] unless `packed`
    /// holds exactly `streams · count` vectors, [`Error::Driver`].
    pub fn enqueue_write(
        &mut self,
        pool: PagePool,
        packed: &DeviceBuffer<u8>,
        start: usize,
        count: usize,
    ) -> Result<(), Error> {
        let layout = self.layout(pool);
        let vectors = self.shape.streams() * count;
        check_len(
            "packed tokens",
            (vectors * layout.bits as usize).div_ceil(8),
            packed.len(),
        )?;
        let Some((params, grid, block)) = attention::plan_write(self.shape, layout, start, count)?
        else {
            return Ok(());
        };
        let f = &self.device.functions["kvc_pages_write"];
        let cfg = LaunchConfig {
            grid_dim: (grid, 1, 1),
            block_dim: (block, 1, 1),
            shared_mem_bytes: 0,
        };
        let (pool_buf, stream) = match pool {
            PagePool::K => (&mut self.k_pool, &self.device.stream),
            PagePool::V => (&mut self.v_pool, &self.device.stream),
        };
        let mut args = stream.launch_builder(f);
        args.arg(&params)
            .arg(&packed.slice)
            .arg(&mut pool_buf.slice)
            .arg(&self.table.slice);
        // SAFETY: kvc_pages_write takes (AttnParams, const u8* packed, u8* pool, const u32*
        // table), matched above. `packed` holds streams·count vectors of `bits` bits (checked)
        // plus the 16 spare bytes every allocation has, which cover the one word past a
        // field that the kernel reads; the table holds streams·max_pages entries, each a page
        // of this pool (made by `new`), and plan_write checked start + count ≤ capacity, so
        // every word written lies in a page of the pool (the word after a page's last field
        // lies in the page's 16-byte-aligned stride or the spare bytes).
        unsafe { args.launch(cfg) }.map_err(driver("cuLaunchKernel"))?;
        Ok(())
    }
}

/// Whether bit offsets within a page overflow the kernels' 32-bit arithmetic.
fn bits_overflow(layout: PageLayout) -> bool {
    (layout.page_tokens as u64 * u64::from(layout.bits) + 128) > u64::from(u32::MAX)
}

/// Scratch of attention calls, grown as calls need (never shrunk).
#[derive(Debug)]
struct AttnScratch {
    query: DeviceBuffer<f32>,
    acc: DeviceBuffer<f32>,
    ml: DeviceBuffer<f32>,
}

/// Decode attention on a layer's pages ([`DevicePages`]): one query position per batch row
/// (the next token's), which sees every token written so far. K and V may use different
/// codecs; each is loaded as a [`DevicePlan`], which also encodes tokens for the pages.
///
/// Queries are `[batch, q_heads, head_dim]` f32, query head `h` reading KV head
/// `h / (q_heads / kv_heads)`; outputs have the same shape. The result matches kv-codec's
/// CPU cache attention up to f32 rounding (see `attention.cu`).
#[derive(Debug)]
pub struct DeviceAttention {
    k: DevicePlan,
    v: DevicePlan,
    scratch: Mutex<Option<AttnScratch>>,
    status: Mutex<DeviceBuffer<u64>>,
}

impl DeviceAttention {
    /// Attention over pages of keys coded by `k` and values coded by `v`.
    ///
    /// # Errors
    /// [`Error::Unsupported`] for codecs the attention kernels do not decode (compat, joint
    /// Voronoi packing) or head dimensions that differ; [`Error::Driver`].
    pub fn new(device: &Arc<Device>, k: Plan, v: Plan) -> Result<Self, Error> {
        attention::check_codec(&k)?;
        attention::check_codec(&v)?;
        if k.head_dim() != v.head_dim() {
            return Err(Error::Unsupported {
                what: "value head_dim",
                value: v.head_dim() as u64,
                supported: "the keys' head_dim",
            });
        }
        Ok(Self {
            k: device.load(k)?,
            v: device.load(v)?,
            scratch: Mutex::new(None),
            status: Mutex::new(device.upload(&[NO_FAULT])?),
        })
    }

    /// The keys' plan on the device (to encode keys for the pages).
    pub fn k_plan(&self) -> &DevicePlan {
        &self.k
    }

    /// The values' plan on the device.
    pub fn v_plan(&self) -> &DevicePlan {
        &self.v
    }

    /// Queues attention of `queries` (`[batch, q_heads, head_dim]`) over the first `len`
    /// tokens of every stream of `pages`, into `out` (same shape).
    ///
    /// # Errors
    /// As [`attention::plan_call`]; [`Error::LengthMismatch`] for queries or outputs of
    /// another length, or pages of other bit counts; [`Error::Driver`].
    pub fn enqueue_attend(
        &self,
        pages: &DevicePages,
        len: usize,
        q_heads: usize,
        queries: &DeviceBuffer<f32>,
        out: &mut DeviceBuffer<f32>,
    ) -> Result<(), Error> {
        let (k, v) = (self.k.plan(), self.v.plan());
        if !Arc::ptr_eq(&pages.device, &self.k.device) {
            return Err(Error::Unsupported {
                what: "pages on another device, ordinal",
                value: 0,
                supported: "pages made on the attention's own Device",
            });
        }
        check_len(
            "key page bits",
            k.bits_per_vector() as usize,
            pages.k.bits as usize,
        )?;
        check_len(
            "value page bits",
            v.bits_per_vector() as usize,
            pages.v.bits as usize,
        )?;
        let call =
            attention::plan_call(k, v, pages.shape, len, q_heads, pages.device.tensor_cores)?;
        check_len("queries", call.query_floats, queries.len())?;
        check_len("attention output", call.query_floats, out.len())?;
        let device = &pages.device;
        let mut scratch = self.scratch.lock().unwrap_or_else(|p| p.into_inner());
        let fits = scratch.as_ref().is_some_and(|s| {
            s.query.len() >= call.query_floats
                && s.acc.len() >= call.acc_floats
                && s.ml.len() >= call.ml_floats
        });
        if !fits {
            let grow = |old: Option<usize>, need: usize| old.unwrap_or(0).max(need);
            let old = scratch.take();
            let sizes = (
                grow(old.as_ref().map(|s| s.query.len()), call.query_floats),
                grow(old.as_ref().map(|s| s.acc.len()), call.acc_floats),
                grow(old.as_ref().map(|s| s.ml.len()), call.ml_floats),
            );
            drop(old);
            *scratch = Some(AttnScratch {
                query: device.zeros(sizes.0)?,
                acc: device.zeros(sizes.1)?,
                ml: device.zeros(sizes.2)?,
            });
        }
        let s = scratch.as_mut().expect("scratch was just made");
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        let mut pk = *k.params();
        pk.set("dtype", Dtype::F32.id());
        let pv = *v.params();
        let stream = &device.stream;
        let fns = &device.functions;
        let vector_cfg = LaunchConfig {
            grid_dim: (call.vector_grid, 1, 1),
            block_dim: (call.vector_block, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut args = stream.launch_builder(&fns["kvc_attn_query"]);
        args.arg(&pk)
            .arg(&call.params)
            .arg(&queries.slice)
            .arg(&mut s.query.slice)
            .arg(&self.k.tables.slice);
        // SAFETY: kvc_attn_query takes (Params, AttnParams, const float* q, float* qrot,
        // const u32* tables), matched above. It reads and writes batch·q_heads·head_dim floats
        // (the queries' checked length; the scratch holds at least as many) and the K plan's
        // own tables at the offsets its parameters name.
        unsafe { args.launch(vector_cfg) }.map_err(driver("cuLaunchKernel"))?;
        let mut args = stream.launch_builder(&fns[call.partial_kernel]);
        args.arg(&pk)
            .arg(&pv)
            .arg(&call.params)
            .arg(&s.query.slice)
            .arg(&pages.k_pool.slice)
            .arg(&pages.v_pool.slice)
            .arg(&pages.table.slice)
            .arg(&self.k.tables.slice)
            .arg(&self.v.tables.slice)
            .arg(&mut s.acc.slice)
            .arg(&mut s.ml.slice)
            .arg(&mut status.slice);
        let partial_cfg = LaunchConfig {
            grid_dim: (call.partial_grid.0, call.partial_grid.1, 1),
            block_dim: (call.partial_block, 1, 1),
            shared_mem_bytes: call.partial_shared,
        };
        // SAFETY: the partial kernels take (Params K, Params V, AttnParams, const float* qrot,
        // const u8* kpool, const u8* vpool, const u32* table, const u32* ktab, const u32*
        // vtab, float* acc, float* ml, u64* status), matched above. Tokens read are below len
        // ≤ capacity (plan_call), their pages come from the table of `pages` (streams ·
        // max_pages entries, each a page of both pools), whose bit counts were checked to be
        // the plans'; staged reads (16-byte units from a 16-byte boundary of a page to one
        // word past a chunk's last bit) stay within a page's stride or the pools' 16 spare
        // bytes, and fit the two staging buffers of `partial_shared` bytes (plan_call sizes
        // them for the largest chunk); the scratch holds the acc_floats and ml_floats the
        // call writes, and the status one u64.
        unsafe { args.launch(partial_cfg) }.map_err(driver("cuLaunchKernel"))?;
        let combine_cfg = LaunchConfig {
            grid_dim: (call.combine_grid, 1, 1),
            block_dim: (call.combine_block, 1, 1),
            shared_mem_bytes: call.combine_shared,
        };
        let mut args = stream.launch_builder(&fns["kvc_attn_combine"]);
        args.arg(&pv)
            .arg(&call.params)
            .arg(&s.acc.slice)
            .arg(&s.ml.slice)
            .arg(&mut out.slice)
            .arg(&self.v.tables.slice);
        // SAFETY: kvc_attn_combine takes (Params, AttnParams, const float* acc, const float*
        // ml, float* out, const u32* tables), matched above; it reads the partial states the
        // previous launch wrote (same sizes), writes batch·q_heads·head_dim floats (the
        // output's checked length) and uses the `combine_shared` bytes plan_call sized for
        // its warps' sums.
        unsafe { args.launch(combine_cfg) }.map_err(driver("cuLaunchKernel"))?;
        Ok(())
    }

    /// Waits for queued attention and reports the first fault (a page field no encoder
    /// writes; `vector` is the token's position) since the previous call.
    ///
    /// # Errors
    /// [`Error::CorruptPayload`], [`Error::Driver`].
    pub fn finish(&self) -> Result<(), Error> {
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        take_fault(&self.k.device, &mut status)
    }

    /// [`DeviceAttention::enqueue_attend`], then [`DeviceAttention::finish`].
    ///
    /// # Errors
    /// As both.
    pub fn attend(
        &self,
        pages: &DevicePages,
        len: usize,
        q_heads: usize,
        queries: &DeviceBuffer<f32>,
        out: &mut DeviceBuffer<f32>,
    ) -> Result<(), Error> {
        self.enqueue_attend(pages, len, q_heads, queries, out)?;
        self.finish()
    }
}
