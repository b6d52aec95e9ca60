//! Thin layer over the CUDA driver API (through cudarc's dynamically loaded bindings): one context,
//! raw device buffers, mapped pinned host buffers, kernel launches, events and CUDA graphs.
//!
//! Raw pointers rather than cudarc's tracked slices: the decode step is captured once as a CUDA graph
//! and replayed, so buffers must have stable addresses and no implicit event bookkeeping.

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, Context, Result};
use cudarc::driver::{sys, CudaContext, CudaModule};

use crate::compile;

/// Turn a driver result code into an error naming the call.
pub fn ck(r: sys::CUresult, what: &str) -> Result<()> {
    if r == sys::CUresult::CUDA_SUCCESS {
        Ok(())
    } else {
        Err(anyhow!("CUDA error {:?} in {}", r, what))
    }
}

/// Activation dtype of the GPU kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Dtype {
    F16,
    Bf16,
}

impl Dtype {
    pub fn suffix(self) -> &'static str {
        match self {
            Dtype::F16 => "f16",
            Dtype::Bf16 => "bf16",
        }
    }
    /// Round an f32 to this dtype and return its bits.
    pub fn to_bits(self, v: f32) -> u16 {
        match self {
            Dtype::F16 => half::f16::from_f32(v).to_bits(),
            Dtype::Bf16 => half::bf16::from_f32(v).to_bits(),
        }
    }
    pub fn from_bits(self, b: u16) -> f32 {
        match self {
            Dtype::F16 => half::f16::from_bits(b).to_f32(),
            Dtype::Bf16 => half::bf16::from_bits(b).to_f32(),
        }
    }
    /// Round-trip through the dtype.
    pub fn round(self, v: f32) -> f32 {
        self.from_bits(self.to_bits(v))
    }
}

/// A device allocation (freed on drop).
pub struct DevBuf {
    pub ptr: sys::CUdeviceptr,
    pub bytes: usize,
}

impl DevBuf {
    pub fn raw(&self) -> u64 {
        self.ptr
    }
    /// Byte offset view (raw pointer arithmetic for sub-buffers).
    pub fn at(&self, byte_off: usize) -> u64 {
        debug_assert!(byte_off <= self.bytes);
        self.ptr + byte_off as u64
    }
}

impl Drop for DevBuf {
    fn drop(&mut self) {
        if self.ptr != 0 {
            unsafe {
                let _ = sys::cuMemFree_v2(self.ptr);
            }
        }
    }
}

/// Page-locked host memory mapped into the device address space (`cuMemHostAlloc(DEVICEMAP |
/// PORTABLE)`): kernels read it directly over PCIe (zero-copy).
pub struct HostMapped {
    pub host: *mut u8,
    pub dev: sys::CUdeviceptr,
    pub bytes: usize,
}

// SAFETY: the allocation is owned by this value and only accessed through it.
unsafe impl Send for HostMapped {}
unsafe impl Sync for HostMapped {}

impl HostMapped {
    pub fn as_mut_slice<T: bytemuck::Pod>(&mut self) -> &mut [T] {
        // SAFETY: the allocation is `bytes` long, page aligned and owned by self.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.host as *mut T,
                self.bytes / std::mem::size_of::<T>(),
            )
        }
    }
}

impl Drop for HostMapped {
    fn drop(&mut self) {
        if !self.host.is_null() {
            unsafe {
                let _ = sys::cuMemFreeHost(self.host as *mut c_void);
            }
        }
    }
}

/// Kernel arguments: pointers to each argument value, in order.
#[macro_export]
macro_rules! kargs {
    ($($a:expr),* $(,)?) => {
        &mut [$( $a as *const _ as *mut ::std::ffi::c_void ),*]
    };
}

pub struct Gpu {
    pub ctx: Arc<CudaContext>,
    /// Main stream (non-blocking) for everything, and a second one for fork/join variants.
    pub stream: sys::CUstream,
    pub stream2: sys::CUstream,
    pub name: String,
    pub cc: (i32, i32),
    pub sms: i32,
    pub l2_bytes: i32,
    /// shared memory one block may opt in to (bytes)
    pub smem_optin: usize,
    pub total_mem: usize,
    /// SM clock in kHz (for clock64 stamps)
    pub clock_khz: i32,
    /// Launch the decode-step kernels with programmatic dependent launch (sm_90+): the next
    /// kernel's independent prologue (weight prefetch) overlaps the previous kernel's tail.
    /// `DECDEC_NO_PDL=1` turns it off.
    pub pdl: bool,
    _modules: Vec<Arc<CudaModule>>,
    funcs: HashMap<String, sys::CUfunction>,
    pub cublas: Option<cudarc::cublas::sys::cublasHandle_t>,
    ev_fork: sys::CUevent,
    ev_join: sys::CUevent,
    /// The step timeline's state when the kernels carry its stamps (`compile::set_timeline`).
    timeline: Option<Mutex<TimelineDev>>,
}

/// One kernel launch as queued (the step timeline's key to its records).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub name: String,
    pub grid: u32,
    /// decoder layer the launch belongs to (-1: none)
    pub layer: i32,
    /// what the launch does in the step (`Gpu::timeline_tag`)
    pub role: &'static str,
}

/// One block's stamps (common.cuh `TlRec`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct TlRec {
    pub grid: u64,
    pub gtime: u64,
    pub c_start: u64,
    pub c_wait: u64,
    pub c_trig: u64,
    pub c_end: u64,
    pub smid: u32,
    pub block: u32,
    /// `compile::name_hash` of the kernel's name
    pub kernel: u32,
    pub pad: u32,
}

/// Host side of the timeline: where each module keeps its `g_tl`, the record buffer, and the
/// launches queued since the last capture began.
struct TimelineDev {
    globals: Vec<u64>,
    buf: Option<DevBuf>,
    cap: usize,
    launches: Vec<Launch>,
    tag: (i32, &'static str),
}

impl Gpu {
    /// Open device 0, compile (or load from the disk cache) every kernel for its arch.
    pub fn new() -> Result<Gpu> {
        if !unsafe { sys::is_culib_present() } {
            bail!("the CUDA driver library (libcuda.so) was not found: no GPU on this machine?");
        }
        let ctx = CudaContext::new(0).map_err(|e| anyhow!("cannot open CUDA device 0: {e:?}"))?;
        let name = ctx.name().map_err(|e| anyhow!("{e:?}"))?;
        let cc = ctx.compute_capability().map_err(|e| anyhow!("{e:?}"))?;
        if cc.0 < 8 {
            bail!(
                "GPU {name} has compute capability {}.{}; decdec needs sm_80 or newer (bf16 + mma)",
                cc.0,
                cc.1
            );
        }
        let attr = |a| ctx.attribute(a).map_err(|e| anyhow!("{e:?}"));
        let sms = attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?;
        let l2_bytes = attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE)?;
        let clock_khz = attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_CLOCK_RATE)?;
        let smem_optin =
            attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)?
                as usize;
        let total_mem = ctx.total_mem().map_err(|e| anyhow!("{e:?}"))?;
        let arch = format!("sm_{}{}", cc.0, cc.1);
        let mut modules = Vec::new();
        let mut funcs = HashMap::new();
        for (src_name, _) in compile::SOURCES {
            let cubin = compile::cached_cubin(src_name, &arch)?;
            let module = ctx
                .load_module(cudarc::nvrtc::Ptx::from_binary(cubin))
                .map_err(|e| anyhow!("loading kernels '{src_name}' for {arch}: {e:?}"))?;
            for f in compile::kernel_names(src_name) {
                let func = module
                    .load_function(&f)
                    .map_err(|e| anyhow!("kernel {f} missing from '{src_name}': {e:?}"))?;
                if std::env::var_os("DECDEC_KERNEL_INFO").is_some() {
                    println!(
                        "kernel {f}: {} registers, {} bytes local (spills), {} bytes static smem",
                        func.num_regs().unwrap_or(-1),
                        func.local_size_bytes().unwrap_or(-1),
                        func.shared_size_bytes().unwrap_or(-1)
                    );
                }
                funcs.insert(f.clone(), func.cu_function());
            }
            modules.push(module);
        }
        let timeline = if compile::timeline() {
            let mut globals = Vec::new();
            for (src_name, _) in compile::SOURCES {
                let f = compile::kernel_names(src_name)
                    .first()
                    .and_then(|k| funcs.get(k).copied())
                    .ok_or_else(|| anyhow!("timeline: no kernel in '{src_name}'"))?;
                let (mut m, mut ptr, mut bytes) = (std::ptr::null_mut(), 0u64, 0usize);
                unsafe {
                    ck(sys::cuFuncGetModule(&mut m, f), "cuFuncGetModule")?;
                    ck(
                        sys::cuModuleGetGlobal_v2(&mut ptr, &mut bytes, m, c"g_tl".as_ptr()),
                        &format!("timeline: g_tl in '{src_name}'"),
                    )?;
                }
                globals.push(ptr);
            }
            Some(Mutex::new(TimelineDev {
                globals,
                buf: None,
                cap: 0,
                launches: Vec::new(),
                tag: (-1, ""),
            }))
        } else {
            None
        };
        let mut stream = std::ptr::null_mut();
        let mut stream2 = std::ptr::null_mut();
        let flags = sys::CUstream_flags::CU_STREAM_NON_BLOCKING as u32;
        unsafe {
            ck(sys::cuStreamCreate(&mut stream, flags), "cuStreamCreate")?;
            ck(sys::cuStreamCreate(&mut stream2, flags), "cuStreamCreate")?;
        }
        let mut ev_fork = std::ptr::null_mut();
        let mut ev_join = std::ptr::null_mut();
        let ef = sys::CUevent_flags::CU_EVENT_DISABLE_TIMING as u32;
        unsafe {
            ck(sys::cuEventCreate(&mut ev_fork, ef), "cuEventCreate")?;
            ck(sys::cuEventCreate(&mut ev_join, ef), "cuEventCreate")?;
        }
        let cublas = if unsafe { cudarc::cublas::sys::is_culib_present() } {
            let h = cudarc::cublas::result::create_handle()
                .map_err(|e| anyhow!("cublasCreate: {e:?}"))?;
            unsafe {
                cudarc::cublas::result::set_stream(h, stream as _)
                    .map_err(|e| anyhow!("cublasSetStream: {e:?}"))?;
            }
            Some(h)
        } else {
            None
        };
        Ok(Gpu {
            ctx,
            stream,
            stream2,
            name,
            cc,
            sms,
            l2_bytes,
            smem_optin,
            total_mem,
            clock_khz,
            pdl: cc.0 >= 9 && std::env::var_os("DECDEC_NO_PDL").is_none(),
            _modules: modules,
            funcs,
            cublas,
            ev_fork,
            ev_join,
            timeline,
        })
    }

    pub fn func(&self, name: &str) -> Result<sys::CUfunction> {
        self.funcs
            .get(name)
            .copied()
            .ok_or_else(|| anyhow!("no kernel named {name}"))
    }

    pub fn alloc(&self, bytes: usize) -> Result<DevBuf> {
        let mut ptr = 0;
        unsafe {
            ck(
                sys::cuMemAlloc_v2(&mut ptr, bytes.max(4)),
                &format!("cuMemAlloc({bytes} bytes)"),
            )?
        };
        Ok(DevBuf { ptr, bytes })
    }

    pub fn alloc_zeroed(&self, bytes: usize) -> Result<DevBuf> {
        let b = self.alloc(bytes)?;
        self.memset(&b, 0)?;
        Ok(b)
    }

    pub fn memset(&self, b: &DevBuf, byte: u8) -> Result<()> {
        unsafe {
            ck(
                sys::cuMemsetD8Async(b.ptr, byte, b.bytes, self.stream),
                "cuMemsetD8",
            )?
        };
        Ok(())
    }

    pub fn upload<T: bytemuck::Pod>(&self, data: &[T]) -> Result<DevBuf> {
        let bytes: &[u8] = bytemuck::cast_slice(data);
        let b = self.alloc(bytes.len())?;
        self.write(&b, 0, data)?;
        Ok(b)
    }

    /// Synchronous host-to-device copy at a byte offset.
    pub fn write<T: bytemuck::Pod>(&self, b: &DevBuf, byte_off: usize, data: &[T]) -> Result<()> {
        let bytes: &[u8] = bytemuck::cast_slice(data);
        if byte_off + bytes.len() > b.bytes {
            bail!(
                "write of {} bytes at {} overflows a {}-byte buffer",
                bytes.len(),
                byte_off,
                b.bytes
            );
        }
        self.sync()?;
        unsafe {
            ck(
                sys::cuMemcpyHtoD_v2(
                    b.ptr + byte_off as u64,
                    bytes.as_ptr() as *const c_void,
                    bytes.len(),
                ),
                "cuMemcpyHtoD",
            )?
        };
        Ok(())
    }

    /// Synchronous device-to-host copy of `n` elements from a raw device address.
    pub fn read_raw<T: bytemuck::Pod + Default + Clone>(
        &self,
        ptr: u64,
        n: usize,
    ) -> Result<Vec<T>> {
        self.sync()?;
        let mut out = vec![T::default(); n];
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut out);
        unsafe {
            ck(
                sys::cuMemcpyDtoH_v2(bytes.as_mut_ptr() as *mut c_void, ptr, bytes.len()),
                "cuMemcpyDtoH",
            )?
        };
        Ok(out)
    }

    pub fn read<T: bytemuck::Pod + Default + Clone>(&self, b: &DevBuf) -> Result<Vec<T>> {
        self.read_raw(b.ptr, b.bytes / std::mem::size_of::<T>())
    }

    pub fn host_mapped(&self, bytes: usize) -> Result<HostMapped> {
        let flags = sys::CU_MEMHOSTALLOC_DEVICEMAP | sys::CU_MEMHOSTALLOC_PORTABLE;
        let mut host: *mut c_void = std::ptr::null_mut();
        unsafe {
            ck(
                sys::cuMemHostAlloc(&mut host, bytes.max(16), flags),
                &format!("cuMemHostAlloc({bytes} bytes)"),
            )?;
        }
        let mut dev = 0;
        unsafe {
            ck(
                sys::cuMemHostGetDevicePointer_v2(&mut dev, host, 0),
                "cuMemHostGetDevicePointer",
            )?
        };
        Ok(HostMapped {
            host: host as *mut u8,
            dev,
            bytes,
        })
    }

    pub fn sync(&self) -> Result<()> {
        unsafe {
            ck(sys::cuStreamSynchronize(self.stream), "cuStreamSynchronize")?;
            ck(
                sys::cuStreamSynchronize(self.stream2),
                "cuStreamSynchronize",
            )?;
        }
        Ok(())
    }

    /// Blocks of `block` threads with `smem` bytes of dynamic shared memory that fit on one SM.
    pub fn blocks_per_sm(&self, name: &str, block: u32, smem: u32) -> Result<u32> {
        let f = self.func(name)?;
        let mut n = 0i32;
        unsafe {
            allow_dynamic_smem(f, smem)?;
            ck(
                sys::cuOccupancyMaxActiveBlocksPerMultiprocessor(
                    &mut n,
                    f,
                    block as i32,
                    smem as usize,
                ),
                &format!("occupancy of {name} with {smem} bytes of shared memory"),
            )?;
        }
        if n < 1 {
            bail!("kernel {name} does not fit on an SM with {smem} bytes of shared memory");
        }
        Ok(n as u32)
    }

    /// Launch `name` on `stream`.
    ///
    /// # Safety
    /// `args` must match the kernel's parameter list in order and layout.
    pub unsafe fn launch_on(
        &self,
        stream: sys::CUstream,
        name: &str,
        grid: u32,
        block: u32,
        smem: u32,
        args: &mut [*mut c_void],
    ) -> Result<()> {
        let f = self.func(name)?;
        allow_dynamic_smem(f, smem)?;
        self.timeline_log(name, grid);
        if self.pdl && pdl_kernel(name) {
            let mut attr: sys::CUlaunchAttribute = std::mem::zeroed();
            attr.id =
                sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
            attr.value.programmaticStreamSerializationAllowed = 1;
            let cfg = sys::CUlaunchConfig {
                gridDimX: grid,
                gridDimY: 1,
                gridDimZ: 1,
                blockDimX: block,
                blockDimY: 1,
                blockDimZ: 1,
                sharedMemBytes: smem,
                hStream: stream,
                attrs: &mut attr,
                numAttrs: 1,
            };
            return ck(
                sys::cuLaunchKernelEx(&cfg, f, args.as_mut_ptr(), std::ptr::null_mut()),
                &format!("launch {name} grid {grid} block {block} smem {smem} (PDL)"),
            );
        }
        ck(
            sys::cuLaunchKernel(
                f,
                grid,
                1,
                1,
                block,
                1,
                1,
                smem,
                stream,
                args.as_mut_ptr(),
                std::ptr::null_mut(),
            ),
            &format!("launch {name} grid {grid} block {block} smem {smem}"),
        )
    }

    /// # Safety
    /// As [`Gpu::launch_on`].
    pub unsafe fn launch(
        &self,
        name: &str,
        grid: u32,
        block: u32,
        smem: u32,
        args: &mut [*mut c_void],
    ) -> Result<()> {
        self.launch_on(self.stream, name, grid, block, smem, args)
    }

    /// # Safety
    /// As [`Gpu::launch_on`]; all blocks must fit on the device at once.
    pub unsafe fn launch_cooperative_on(
        &self,
        stream: sys::CUstream,
        name: &str,
        grid: u32,
        block: u32,
        smem: u32,
        args: &mut [*mut c_void],
    ) -> Result<()> {
        let f = self.func(name)?;
        self.timeline_log(name, grid);
        ck(
            sys::cuLaunchCooperativeKernel(
                f,
                grid,
                1,
                1,
                block,
                1,
                1,
                smem,
                stream,
                args.as_mut_ptr(),
            ),
            &format!("cooperative launch {name} grid {grid}"),
        )
    }

    /// Make `stream2` wait for the work queued so far on the main stream.
    pub fn fork(&self) -> Result<()> {
        self.wait_for(self.stream2, self.stream, self.ev_fork)
    }

    /// Make the main stream wait for the work queued on `stream2`.
    pub fn join(&self) -> Result<()> {
        self.wait_for(self.stream, self.stream2, self.ev_join)
    }

    /// `waiter` waits for the work queued so far on `on` (through event `ev`).
    fn wait_for(&self, waiter: sys::CUstream, on: sys::CUstream, ev: sys::CUevent) -> Result<()> {
        unsafe {
            ck(sys::cuEventRecord(ev, on), "cuEventRecord")?;
            ck(sys::cuStreamWaitEvent(waiter, ev, 0), "cuStreamWaitEvent")
        }
    }

    /// Check for asynchronous kernel faults.
    pub fn check(&self) -> Result<()> {
        self.sync().context("a kernel failed")
    }

    /// Capture everything `f` queues on the main stream (and streams forked from it) as a graph.
    pub fn capture(&self, f: impl FnOnce() -> Result<()>) -> Result<Graph> {
        if let Some(t) = &self.timeline {
            lock(t).launches.clear();
        }
        unsafe {
            ck(
                sys::cuStreamBeginCapture_v2(
                    self.stream,
                    sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED,
                ),
                "cuStreamBeginCapture",
            )?;
        }
        let r = f();
        let mut graph = std::ptr::null_mut();
        let end = unsafe { sys::cuStreamEndCapture(self.stream, &mut graph) };
        r?;
        ck(end, "cuStreamEndCapture")?;
        let mut exec = std::ptr::null_mut();
        unsafe {
            ck(
                sys::cuGraphInstantiateWithFlags(&mut exec, graph, 0),
                "cuGraphInstantiate",
            )?
        };
        let launches = self
            .timeline
            .as_ref()
            .map(|t| std::mem::take(&mut lock(t).launches))
            .unwrap_or_default();
        Ok(Graph {
            graph,
            exec,
            launches,
        })
    }

    /// Whether the kernels carry the step timeline's stamps.
    pub fn timeline_on(&self) -> bool {
        self.timeline.is_some()
    }

    /// Label the launches queued from now on (timeline builds only): decoder `layer` (-1: none)
    /// and the launch's `role` in the step.
    pub fn timeline_tag(&self, layer: i32, role: &'static str) {
        if let Some(t) = &self.timeline {
            lock(t).tag = (layer, role);
        }
    }

    fn timeline_log(&self, name: &str, grid: u32) {
        if let Some(t) = &self.timeline {
            let mut t = lock(t);
            let (layer, role) = t.tag;
            t.launches.push(Launch {
                name: name.to_string(),
                grid,
                layer,
                role,
            });
        }
    }

    /// Make room for `records` block records, empty the buffer and point every module's `g_tl`
    /// at it: the blocks of the kernels launched from now on record their stamps.
    pub fn timeline_arm(&self, records: usize) -> Result<()> {
        let t = self
            .timeline
            .as_ref()
            .ok_or_else(|| anyhow!("the kernels were built without the timeline stamps"))?;
        let mut t = lock(t);
        let rec = std::mem::size_of::<TlRec>();
        // nothing in flight may still write into a buffer about to be replaced
        self.sync()?;
        if t.cap < records {
            t.buf = None;
            t.buf = Some(self.alloc(records * rec + rec)?);
            t.cap = records;
        }
        let buf = t.buf.as_ref().expect("allocated above");
        // the count word sits after the records
        let count = buf.ptr + (t.cap * rec) as u64;
        self.write(buf, t.cap * rec, &[0u32; 4])?;
        Self::timeline_point(&t.globals, [buf.ptr, count, t.cap as u64])
    }

    /// Set every module's `g_tl` (buffer, count word, capacity); a null count disarms it.
    fn timeline_point(globals: &[u64], state: [u64; 3]) -> Result<()> {
        for &g in globals {
            unsafe {
                ck(
                    sys::cuMemcpyHtoD_v2(g, state.as_ptr() as *const c_void, 20),
                    "timeline: cuMemcpyHtoD g_tl",
                )?;
            }
        }
        Ok(())
    }

    /// The records written since [`Gpu::timeline_arm`] (synchronizes); disarms the timeline,
    /// so that later launches record nothing.
    pub fn timeline_records(&self) -> Result<Vec<TlRec>> {
        let t = self
            .timeline
            .as_ref()
            .ok_or_else(|| anyhow!("the kernels were built without the timeline stamps"))?;
        let t = lock(t);
        let buf = t
            .buf
            .as_ref()
            .ok_or_else(|| anyhow!("timeline: not armed"))?;
        let rec = std::mem::size_of::<TlRec>();
        let n = self.read_raw::<u32>(buf.ptr + (t.cap * rec) as u64, 1)?[0] as usize;
        Self::timeline_point(&t.globals, [0; 3])?;
        if n > t.cap {
            bail!(
                "timeline: {n} block records, room for {}: arm it for more",
                t.cap
            );
        }
        self.read_raw::<TlRec>(buf.ptr, n)
    }

    pub fn replay(&self, g: &Graph) -> Result<()> {
        unsafe { ck(sys::cuGraphLaunch(g.exec, self.stream), "cuGraphLaunch") }
    }

    pub fn event(&self) -> Result<Event> {
        let mut e = std::ptr::null_mut();
        unsafe {
            ck(
                sys::cuEventCreate(&mut e, sys::CUevent_flags::CU_EVENT_DEFAULT as u32),
                "cuEventCreate",
            )?
        };
        Ok(Event(e))
    }

    pub fn record(&self, e: &Event) -> Result<()> {
        unsafe { ck(sys::cuEventRecord(e.0, self.stream), "cuEventRecord") }
    }

    /// Milliseconds between two recorded events (synchronizes on `end`).
    pub fn elapsed_ms(&self, start: &Event, end: &Event) -> Result<f32> {
        let mut ms = 0f32;
        unsafe {
            ck(sys::cuEventSynchronize(end.0), "cuEventSynchronize")?;
            ck(
                sys::cuEventElapsedTime_v2(&mut ms, start.0, end.0),
                "cuEventElapsedTime",
            )?;
        }
        Ok(ms)
    }

    /// Median microseconds of `reps` runs of `f` (one run = whatever `f` queues), after `warm` runs.
    pub fn time_us(
        &self,
        warm: usize,
        reps: usize,
        mut f: impl FnMut() -> Result<()>,
    ) -> Result<Vec<f64>> {
        let (a, b) = (self.event()?, self.event()?);
        for _ in 0..warm {
            f()?;
        }
        self.sync()?;
        let mut v = Vec::with_capacity(reps);
        for _ in 0..reps {
            self.record(&a)?;
            f()?;
            self.record(&b)?;
            v.push(self.elapsed_ms(&a, &b)? as f64 * 1000.0);
        }
        Ok(v)
    }
}

impl Drop for Gpu {
    fn drop(&mut self) {
        unsafe {
            let _ = sys::cuStreamSynchronize(self.stream);
            let _ = sys::cuStreamSynchronize(self.stream2);
            if let Some(h) = self.cublas.take() {
                let _ = cudarc::cublas::result::destroy_handle(h);
            }
            let _ = sys::cuEventDestroy_v2(self.ev_fork);
            let _ = sys::cuEventDestroy_v2(self.ev_join);
            let _ = sys::cuStreamDestroy_v2(self.stream);
            let _ = sys::cuStreamDestroy_v2(self.stream2);
        }
    }
}

pub struct Event(sys::CUevent);

impl Drop for Event {
    fn drop(&mut self) {
        unsafe {
            let _ = sys::cuEventDestroy_v2(self.0);
        }
    }
}

pub struct Graph {
    graph: sys::CUgraph,
    exec: sys::CUgraphExec,
    /// the kernels captured, in order (timeline builds only)
    pub launches: Vec<Launch>,
}

/// A poisoned lock only means another thread panicked while logging; the log itself is valid.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Drop for Graph {
    fn drop(&mut self) {
        unsafe {
            let _ = sys::cuGraphExecDestroy(self.exec);
            let _ = sys::cuGraphDestroy(self.graph);
        }
    }
}

/// Kernels that call `griddepcontrol.wait` before touching their predecessor's results, and so
/// may be launched with programmatic stream serialization. Everything else (fills, probes,
/// cooperative launches) keeps the plain stream order.
/// Opt `f` in to more than the default 48 KB of dynamic shared memory when `smem` needs it.
///
/// # Safety
/// `f` must be a loaded function of this context.
unsafe fn allow_dynamic_smem(f: sys::CUfunction, smem: u32) -> Result<()> {
    if smem > 48 * 1024 {
        ck(
            sys::cuFuncSetAttribute(
                f,
                sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                smem as i32,
            ),
            "cuFuncSetAttribute",
        )?;
    }
    Ok(())
}

fn pdl_kernel(name: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "gemv_",
        "dense_gemv_",
        "head_u8_gemv_",
        "rmsnorm_",
        "rope_kv_",
        "attn_decode_",
        "attn_rope_decode_",
        "attn_split_decode_",
        "silu_",
        "embed_",
        "add_bias_",
        "add_dvec_",
        "select_only_",
        "dequant_",
        "step_begin",
        "argmax_f32",
    ];
    PREFIXES.iter().any(|p| name.starts_with(p))
}

pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return f64::NAN;
    }
    let m = s.len() / 2;
    if s.len() % 2 == 1 {
        s[m]
    } else {
        0.5 * (s[m - 1] + s[m])
    }
}
