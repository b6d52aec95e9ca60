// Shared helpers of the decdec kernels. Compiled by NVRTC at run time (see src/compile.rs).

#include <cuda_fp16.h>
#include <cuda_bf16.h>

typedef unsigned int u32;
typedef unsigned long long u64;

// Activation dtype traits: f16 and bf16 kernels share one template body.
template <typename T> struct Dt;
template <> struct Dt<__half> {
    static __device__ __forceinline__ float to_f(__half v) { return __half2float(v); }
    static __device__ __forceinline__ __half from_f(float v) { return __float2half_rn(v); }
};
template <> struct Dt<__nv_bfloat16> {
    static __device__ __forceinline__ float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }
    static __device__ __forceinline__ __nv_bfloat16 from_f(float v) { return __float2bfloat16_rn(v); }
};

// Two values rounded to the activation dtype, packed into one register (a in the low half).
template <typename T> __device__ __forceinline__ u32 pack_pair(float a, float b) {
    T v[2] = {Dt<T>::from_f(a), Dt<T>::from_f(b)};
    return *reinterpret_cast<const u32*>(v);
}

__device__ __forceinline__ u32 lop3_and_or(u32 a, u32 mask, u32 magic) {
    u32 r;
    // r = (a & mask) | magic, one LOP3 instruction.
    asm("lop3.b32 %0, %1, %2, %3, 0xea;\n" : "=r"(r) : "r"(a), "r"(mask), "r"(magic));
    return r;
}

// Two-lane fused multiply-add in the activation dtype: r = a * b + c (one rounding).
template <typename T> __device__ __forceinline__ u32 fma2(u32 a, u32 b, u32 c);
template <> __device__ __forceinline__ u32 fma2<__half>(u32 a, u32 b, u32 c) {
    u32 r;
    asm("fma.rn.f16x2 %0, %1, %2, %3;\n" : "=r"(r) : "r"(a), "r"(b), "r"(c));
    return r;
}
template <> __device__ __forceinline__ u32 fma2<__nv_bfloat16>(u32 a, u32 b, u32 c) {
    u32 r;
    asm("fma.rn.bf16x2 %0, %1, %2, %3;\n" : "=r"(r) : "r"(a), "r"(b), "r"(c));
    return r;
}

// Both lanes = v, for compile-time constants: bit patterns (the conversion intrinsics are not folded).
template <typename T> struct K2;
template <> struct K2<__half> {
    static constexpr u32 one = 0x3C003C00u, eighth = 0x30003000u, sixteenth = 0x2C002C00u, s64 = 0x24002400u;
};
template <> struct K2<__nv_bfloat16> {
    static constexpr u32 one = 0x3F803F80u, eighth = 0x3E003E00u, sixteenth = 0x3D803D80u, s64 = 0x3C803C80u;
};

// Both lanes = v (run-time values).
template <typename T> __device__ __forceinline__ u32 splat2(float v);
template <> __device__ __forceinline__ u32 splat2<__half>(float v) {
    __half h = __float2half_rn(v);
    unsigned short b = __half_as_ushort(h);
    return (u32)b | ((u32)b << 16);
}
template <> __device__ __forceinline__ u32 splat2<__nv_bfloat16>(float v) {
    __nv_bfloat16 h = __float2bfloat16_rn(v);
    unsigned short b = __bfloat16_as_ushort(h);
    return (u32)b | ((u32)b << 16);
}

// D = A(16x16, row) * B(16x8, col) + C, f32 accumulation on the tensor cores.
template <typename T>
__device__ __forceinline__ void mma16816(float* c, u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1);
template <>
__device__ __forceinline__ void mma16816<__half>(float* c, u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
    asm(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}
template <>
__device__ __forceinline__ void mma16816<__nv_bfloat16>(float* c, u32 a0, u32 a1, u32 a2, u32 a3, u32 b0,
                                                        u32 b1) {
    asm(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint4 ldg_stream(const uint4* p) {
    // Weights are read exactly once per call: do not let them evict x or the KV cache from L1.
    uint4 r;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
                 : "l"(p));
    return r;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// ldmatrix of four 8x8 b16 tiles (plain and transposed) from shared memory
__device__ __forceinline__ void ldsm_x4(u32& r0, u32& r1, u32& r2, u32& r3, const void* p) {
    const u32 a = (u32)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(a));
}
__device__ __forceinline__ void ldsm_x4_trans(u32& r0, u32& r1, u32& r2, u32& r3, const void* p) {
    const u32 a = (u32)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(a));
}
// (a, b) -> the register of their activation-dtype roundings (hi) and that of the remainders (lo)
template <typename T> __device__ __forceinline__ void split_pair(float a, float b, u32& hi, u32& lo) {
    hi = pack_pair<T>(a, b);
    const T* h = reinterpret_cast<const T*>(&hi);
    lo = pack_pair<T>(a - Dt<T>::to_f(h[0]), b - Dt<T>::to_f(h[1]));
}

// Asynchronous global -> shared copies (sm_80+), completion per thread by commit groups. The `_s`
// forms take a shared-window address (loops keep it in a register instead of converting a generic
// pointer per copy); the pointer forms convert and call them.
__device__ __forceinline__ u32 smem_addr(const void* p) { return (u32)__cvta_generic_to_shared(p); }
__device__ __forceinline__ void cp_async16_s(u32 sa, const void* gmem) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(sa), "l"(gmem) : "memory");
}
// 16 bytes of which the first `src_bytes` are read (the rest zero-filled), kept in L1 as well:
// for data every warp of the block reads (the GEMV input x).
__device__ __forceinline__ void cp_async16_zfill_s(u32 sa, const void* gmem, int src_bytes) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 16, %2;\n" ::"r"(sa), "l"(gmem), "r"(src_bytes) : "memory");
}
// The same, L2 only: for data streamed once per block (the decode attention's K/V rows).
__device__ __forceinline__ void cp_async16_cg_zfill_s(u32 sa, const void* gmem, int src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(sa), "l"(gmem), "r"(src_bytes) : "memory");
}
__device__ __forceinline__ void cp_async4_s(u32 sa, const void* gmem) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(sa), "l"(gmem) : "memory");
}
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) { cp_async16_s(smem_addr(smem), gmem); }
__device__ __forceinline__ void cp_async16_zfill(void* smem, const void* gmem, int src_bytes) {
    cp_async16_zfill_s(smem_addr(smem), gmem, src_bytes);
}
__device__ __forceinline__ void cp_async4(void* smem, const void* gmem) { cp_async4_s(smem_addr(smem), gmem); }
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N> __device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// Step timeline (`bench decode --timeline`; compiled only with -DDECDEC_TIMELINE, so the kernels
// of a normal run have none of it). The host's source rewrite (compile::instrument) opens every
// kernel body with TL_SCOPE("its name"). Per block it records the SM's cycle counter at the block's start,
// at its first PDL wait's release, at its first PDL trigger and when its last warp leaves, plus
// one %globaltimer reading that lets the host align the SMs' counters, keyed by the launch's
// %gridid. Cost per block: one barrier at the start, one global atomic (its result used only at
// the exit), a few shared atomics, one 64-byte record.
#ifdef DECDEC_TIMELINE
struct TlRec {
    u64 grid;   // %gridid of the launch
    u64 gtime;  // %globaltimer (ns) at the block's start
    u64 c_start, c_wait, c_trig, c_end;  // clock64; ~0: the block never waited / triggered
    u32 smid, block;
    u32 kernel;  // tl_hash of the kernel's name (compile::name_hash on the host)
    u32 pad;
};
struct TlState {
    TlRec* buf;
    u32* count;
    u32 cap;
};
__device__ TlState g_tl;  // set by the host (Gpu::timeline_arm)
struct __align__(16) TlShared {
    u64 g_start, c_start, c_wait, c_trig, c_end;
    u32 warps, slot, kernel;
};
__shared__ TlShared tl_sh;
__device__ __forceinline__ u64 tl_clock() { return (u64)clock64(); }
// FNV-1a of a kernel's name, folded at compile time (the same function as compile::name_hash)
__device__ constexpr u32 tl_hash(const char* s, u32 h = 2166136261u) {
    return *s ? tl_hash(s + 1, (h ^ (unsigned char)*s) * 16777619u) : h;
}
__device__ __forceinline__ void tl_first(u64* slot) {
    if ((threadIdx.x & 31) == 0) atomicMin((unsigned long long*)slot, (unsigned long long)tl_clock());
}
struct TlScope {
    // thread 0 reserves the block's record at the start: the atomic's round trip then overlaps
    // the kernel instead of delaying the block's exit (and so its dependents' wait release)
    u32 slot, kernel;
    __device__ TlScope(u32 kernel_hash) : kernel(kernel_hash) {
        if (threadIdx.x == 0) {
            slot = g_tl.count != nullptr ? atomicAdd(g_tl.count, 1u) : ~0u;
            tl_sh.c_wait = ~0ull;
            tl_sh.c_trig = ~0ull;
            tl_sh.c_end = 0;
            tl_sh.warps = 0;
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            u64 g;
            asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(g));
            tl_sh.g_start = g;
            tl_sh.c_start = tl_clock();
        }
    }
    // lane 0 of every warp on its way out; the last one writes the block's record
    __device__ ~TlScope() {
        if ((threadIdx.x & 31) != 0) return;
        atomicMax((unsigned long long*)&tl_sh.c_end, (unsigned long long)tl_clock());
        if (threadIdx.x == 0) {
            tl_sh.slot = slot;
            tl_sh.kernel = kernel;
        }
        __threadfence_block();
        const u32 nw = (blockDim.x + 31) >> 5;
        if (atomicAdd(&tl_sh.warps, 1u) != nw - 1) return;
        __threadfence_block();
        const u32 i = ((volatile TlShared*)&tl_sh)->slot;
        if (i >= g_tl.cap) return;
        const volatile TlShared* v = &tl_sh;
        TlRec r;
        asm volatile("mov.u64 %0, %%gridid;" : "=l"(r.grid));
        r.gtime = v->g_start;
        r.c_start = v->c_start;
        r.c_wait = v->c_wait;
        r.c_trig = v->c_trig;
        r.c_end = v->c_end;
        asm volatile("mov.u32 %0, %%smid;" : "=r"(r.smid));
        r.block = blockIdx.x;
        r.kernel = ((volatile TlShared*)&tl_sh)->kernel;
        r.pad = 0;
        g_tl.buf[i] = r;
    }
};
#define TL_SCOPE(name) TlScope tl_scope_(tl_hash(name))
#define TL_FIRST(field) tl_first(&tl_sh.field)
#else
#define TL_SCOPE(name)
#define TL_FIRST(field)
#endif

// Programmatic dependent launch (sm_90+; no-ops before): let the next kernel of the stream start
// its independent prologue early, and wait for the previous kernel's results before touching them.
__device__ __forceinline__ void pdl_launch_dependents() {
    TL_FIRST(c_trig);
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
    TL_FIRST(c_wait);
}
