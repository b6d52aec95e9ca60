// Experiment 63 (docs/performance.md): is wgmma with the weights as the register A operand cheaper
// per 16x16 weight step than mma.sync m16n8k16, for the GEMV's batch-1 shape (N = 8, one useful
// column)? A microbenchmark, not part of the build: compiled on the GPU machine with
//   nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -Xptxas -v exp63-wgmma-rate.cu
// Every kernel runs the same per-step decode as the GEMV's 4-bit path (per A register one shift,
// one LOP3 with the magic exponent, one HFMA2 with exact constants) on loop-varying words, then
// either an mma.sync m16n8k16 (per warp) or a quarter of a wgmma m64n8k16 (per warpgroup, batches
// of 4 steps, A double-buffered in registers, accumulators read once per 8 steps as the GEMV does
// with its group scales). Variants without the decode isolate the tensor instruction's cost.
// Also checks the B-descriptor trick the GEMV would use: x stored as one contiguous 16-value run per
// step with the leading-dimension offset = 16 bytes, so that column 0 of B is that run (the other
// seven columns alias later x values and are never read back).
#include <cstdio>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>
#include <algorithm>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

typedef uint32_t u32;
#define CK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { printf("%s:%d %s\n", __FILE__, __LINE__, cudaGetErrorString(e)); exit(1); } } while (0)

__device__ __forceinline__ u32 lop3_and_or(u32 a, u32 mask, u32 magic) {
    u32 r;
    asm("lop3.b32 %0, %1, %2, %3, 0xea;\n" : "=r"(r) : "r"(a), "r"(mask), "r"(magic));
    return r;
}
__device__ __forceinline__ u32 fma2(u32 a, u32 b, u32 c) {
    u32 r;
    asm("fma.rn.f16x2 %0, %1, %2, %3;\n" : "=r"(r) : "r"(a), "r"(b), "r"(c));
    return r;
}
__device__ __forceinline__ void mma16816(float* c, u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}
__device__ __forceinline__ void wg_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wg_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N> __device__ __forceinline__ void wg_wait() { asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory"); }
// D (64x8, f32) += A (64x16 f16, registers: the mma.m16n8k16 A fragment of this warp's 16 rows) * B (smem)
__device__ __forceinline__ void wgmma_rs(float* d, const u32* a, unsigned long long desc, int scale_d) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %9, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n8k16.f32.f16.f16 {%0,%1,%2,%3}, {%4,%5,%6,%7}, %8, p, 1, 1, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(scale_d));
}
__device__ __forceinline__ unsigned long long bdesc(const void* p, u32 lbo, u32 sbo) {
    const u32 addr = (u32)__cvta_generic_to_shared(p);
    return (unsigned long long)((addr & 0x3FFFF) >> 4) | ((unsigned long long)(lbo >> 4) << 16) |
           ((unsigned long long)(sbo >> 4) << 32);
}

#define MAGIC 0x64006400u
// the 4 A registers of one step from word w (the GEMV's 4-bit f16 decode)
__device__ __forceinline__ void decode4(u32 w, u32 bias, u32* a) {
    a[0] = fma2(lop3_and_or(w, 0x000F000Fu, MAGIC), 0x3C003C00u, bias);
    a[1] = fma2(lop3_and_or(w, 0x00F000F0u, MAGIC), 0x2C002C00u, bias);
    a[2] = fma2(lop3_and_or(w >> 8, 0x000F000Fu, MAGIC), 0x3C003C00u, bias);
    a[3] = fma2(lop3_and_or(w >> 8, 0x00F000F0u, MAGIC), 0x2C002C00u, bias);
}

// MODE 0: decode + mma.sync; 1: mma.sync on raw words; 2: decode only (xor)
template <int MODE>
__global__ void __launch_bounds__(256, 3) k_mma(int iters, u32 seed, float* out) {
    u32 w = seed * (threadIdx.x + 1) + blockIdx.x;
    const u32 bias = 0xE400E400u ^ (seed & 0x000F000Fu);
    const u32 b0 = 0x3C003C00u ^ (seed & 1), b1 = 0x3800B800u ^ (seed & 2);
    float c[2][4] = {};
    u32 x = 0;
    for (int i = 0; i < iters; i += 2) {
#pragma unroll
        for (int h = 0; h < 2; h++) {
            u32 a[4];
            w += 0x01010101u;
            if (MODE == 1) { a[0] = w; a[1] = w ^ 0x5555u; a[2] = w + 7; a[3] = w * 3; }
            else decode4(w, bias, a);
            if (MODE == 2) x ^= a[0] ^ a[1] ^ a[2] ^ a[3];
            else mma16816(c[h], a[0], a[1], a[2], a[3], b0, b1);
        }
    }
    float r = c[0][0] + c[1][0] + c[0][2] + c[1][2] + __uint_as_float(x & 0x007fffffu);
    if (r == 12345.f) out[0] = r;
}

// MODE 0: decode + wgmma; 1: wgmma on raw words. One warpgroup step = 64 rows x 16 columns; per warp
// the same 16x16 of weights as one mma.sync step. Batches of 4 steps, A double-buffered.
template <int MODE>
__global__ void __launch_bounds__(256, 3) k_wgmma(int iters, u32 seed, float* out) {
    __shared__ __align__(128) __half xs[1024];
    for (int i = threadIdx.x; i < 1024; i += 256) xs[i] = __float2half((float)((i * 37 + seed) % 17) * 0.01f);
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
    __syncthreads();
    u32 w = seed * (threadIdx.x + 1) + blockIdx.x;
    const u32 bias = 0xE400E400u ^ (seed & 0x000F000Fu);
    float d0[4] = {}, d1[4] = {};
    float acc0 = 0.f, acc1 = 0.f;
    u32 a0[16], a1[16];
    // per iteration two 128-column groups (16 steps): batches 0, 1 -> d0, batches 2, 3 -> d1; every
    // index static so that ptxas can see which accumulators are in flight
    auto batch = [&](u32* a, float* d, int first, int s0) {
#pragma unroll
        for (int s = 0; s < 4; s++) {
            w += 0x01010101u;
            if (MODE == 1) { a[4 * s] = w; a[4 * s + 1] = w ^ 0x5555u; a[4 * s + 2] = w + 7; a[4 * s + 3] = w * 3; }
            else decode4(w, bias, a + 4 * s);
        }
        wg_fence();
#pragma unroll
        for (int s = 0; s < 4; s++) wgmma_rs(d, a + 4 * s, bdesc(xs + 16 * (s0 + s), 16, 256), (first == 0) || (s != 0));
        wg_commit();
        wg_wait<1>();
    };
    for (int i = 0; i < iters; i += 16) {
        batch(a0, d0, 1, 0);
        acc1 = fmaf(0.9999f, d1[0], acc1);  // group of d1 (previous iteration) complete
        batch(a1, d0, 0, 4);
        batch(a0, d1, 1, 8);
        acc0 = fmaf(1.0001f, d0[0], acc0);  // group of d0 complete
        batch(a1, d1, 0, 12);
    }
    wg_wait<0>();
    float r = acc0 + acc1 + d0[2] + d1[2];
    if (r == 12345.f) out[0] = r;
}

// Correctness of the register-A wgmma with the contiguous-x descriptor (LBO = 16 bytes): one
// warpgroup, A = 64x16 f16 from `am` in the mma fragment layout, B column 0 = x[0..16).
__global__ void k_check(const __half* am, const __half* x, float* dout) {
    __shared__ __align__(128) __half xs[16 + 64];
    const int t = threadIdx.x, warp = t >> 5, lane = t & 31, g = lane >> 2, tq = lane & 3;
    if (t < 80) xs[t] = t < 16 ? x[t] : __float2half(1000.f + t);  // garbage beyond column 0's run
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
    __syncthreads();
    auto pk = [&](int r, int k) {
        __half lo = am[r * 16 + k], hi = am[r * 16 + k + 1];
        return (u32)__half_as_ushort(lo) | ((u32)__half_as_ushort(hi) << 16);
    };
    const int r0 = 16 * warp + g;
    u32 a[4] = {pk(r0, 2 * tq), pk(r0 + 8, 2 * tq), pk(r0, 2 * tq + 8), pk(r0 + 8, 2 * tq + 8)};
    float d[4] = {0.f, 0.f, 0.f, 0.f};
    wg_fence();
    wgmma_rs(d, a, bdesc(xs, 16, 256), 0);
    wg_commit();
    wg_wait<0>();
    if (tq == 0) {
        dout[r0] = d[0];
        dout[r0 + 8] = d[2];
    }
}

template <typename F>
float time_ms(F launch, int reps) {
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    launch();
    CK(cudaDeviceSynchronize());
    std::vector<float> v;
    for (int r = 0; r < reps; r++) {
        CK(cudaEventRecord(e0));
        launch();
        CK(cudaEventRecord(e1));
        CK(cudaEventSynchronize(e1));
        float ms;
        CK(cudaEventElapsedTime(&ms, e0, e1));
        v.push_back(ms);
    }
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

int main() {
    cudaDeviceProp p;
    CK(cudaGetDeviceProperties(&p, 0));
    int clk = 0;
    CK(cudaDeviceGetAttribute(&clk, cudaDevAttrClockRate, 0));
    printf("device %s, %d SMs, clock attr %d MHz\n", p.name, p.multiProcessorCount, clk / 1000);
    // correctness of the descriptor trick
    {
        std::vector<__half> am(64 * 16), x(16);
        std::vector<float> ref(64, 0.f);
        for (int i = 0; i < 64 * 16; i++) am[i] = __float2half((float)((i * 7919) % 13 - 6));
        for (int k = 0; k < 16; k++) x[k] = __float2half((float)(k % 5) - 2.f + 0.5f * (k & 1));
        for (int r = 0; r < 64; r++)
            for (int k = 0; k < 16; k++) ref[r] += __half2float(am[r * 16 + k]) * __half2float(x[k]);
        __half *dam, *dx;
        float* dd;
        CK(cudaMalloc(&dam, 64 * 16 * 2));
        CK(cudaMalloc(&dx, 32));
        CK(cudaMalloc(&dd, 64 * 4));
        CK(cudaMemcpy(dam, am.data(), 64 * 16 * 2, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(dx, x.data(), 32, cudaMemcpyHostToDevice));
        k_check<<<1, 128>>>(dam, dx, dd);
        CK(cudaDeviceSynchronize());
        std::vector<float> got(64);
        CK(cudaMemcpy(got.data(), dd, 64 * 4, cudaMemcpyDeviceToHost));
        int bad = 0;
        for (int r = 0; r < 64; r++) bad += got[r] != ref[r];
        printf("descriptor trick (LBO 16 B, contiguous x run): %d of 64 rows differ (row 5: got %g want %g)\n", bad, got[5], ref[5]);
    }
    float* out;
    CK(cudaMalloc(&out, 4));
    const int sms = p.multiProcessorCount;
    const int iters = 8192;  // steps per warp
    for (int bps : {2, 3}) {
        const int grid = sms * bps;
        const double steps_per_sm = (double)bps * 8 * iters;  // 16x16 weight steps per SM
        auto report = [&](const char* name, float ms) {
            printf("  %-28s blocks/SM %d: %8.3f ms  %6.2f SM cycles per 16x16 step (at 1980 MHz)\n", name, bps, ms,
                   ms * 1e-3 * 1.98e9 / steps_per_sm);
        };
        report("mma.sync + decode", time_ms([&] { k_mma<0><<<grid, 256>>>(iters, 12345u, out); }, 7));
        report("mma.sync, no decode", time_ms([&] { k_mma<1><<<grid, 256>>>(iters, 12345u, out); }, 7));
        report("decode only", time_ms([&] { k_mma<2><<<grid, 256>>>(iters, 12345u, out); }, 7));
        report("wgmma + decode", time_ms([&] { k_wgmma<0><<<grid, 256>>>(iters, 12345u, out); }, 7));
        report("wgmma, no decode", time_ms([&] { k_wgmma<1><<<grid, 256>>>(iters, 12345u, out); }, 7));
    }
    CK(cudaGetLastError());
    return 0;
}
