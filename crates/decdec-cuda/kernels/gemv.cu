// Batch-1 quantized GEMV on the tensor cores + dynamic error compensation (DEC).
//
// Tiled weight layout (built by src/repack.rs from the canonical formats of docs/formats.md):
//   rows are grouped into tiles of 16, K is padded to chunks of 256 columns. One warp decodes one
//   (tile, chunk) at a time: 16 mma.m16n8k16 steps. Lane l (g = l/4, t = l%4) owns, in step s, the A
//   fragment registers R0 (row g), R1 (row g+8), R2 (row g), R3 (row g+8); each register is a pair of
//   consecutive mma-k positions. The mma-k order inside a chunk is permuted so that lane t's x values
//   for steps 2sp and 2sp+1 are x[256c + 32sp + 8t .. +8): one 16-byte load feeds two steps.
//   Codes of a register pair sit at bit positions (p, p + 16) of a u32 so that one LOP3 with a magic
//   exponent turns both into f16/bf16 integers (1024 + q or 128 + q), one FMA2 removes the magic and the
//   zero point exactly, and the tensor core multiplies the exact integer (q - z) with x, accumulating
//   in f32. The group scale is applied in f32 once per group.
//   4-bit: one u32 per (lane, step): R0 at bits 0/16, R1 at 4/20, R2 at 8/24, R3 at 12/28.
//   3-bit: 3 u32 per (lane, 4 steps): pairs p = 4*(s%4) + R; p < 15 -> word p/5, slot p%5 at bits
//          3*(p%5) (+16), p = 15 -> bit i of its two codes at bits 15 / 31 of word i.
//   Both arrays are chunk-major (chunk c / group j of every tile contiguous) so that the warps
//   streaming the same chunk of many tiles read one contiguous region.
//   Per (tile, group, row) one u32: the f32 group scale with its low 4 mantissa bits replaced by the
//   integer zero point (relative change of the scale < 2^-19).
//
// DEC (design "fused"): the first n_dec blocks of the launch select the salient channels (every DEC
// block computes the same deterministic selection, so no grid-wide sync is needed), gather their
// residual rows from mapped pinned host memory, and publish the f32 compensation of each output in
// a per-output word that holds DEC_EMPTY between calls; the GEMV blocks stream the weights meanwhile
// and only their epilogue waits for (and re-empties) the words of their own rows: one L2 round trip,
// issued before the block's split-K reduction, instead of a counter + finalizer hand-off
// (experiment 24). Relies on lower block indices being dispatched first (as decoupled look-back
// does): a GEMV block only ever waits for DEC blocks, which wait for no GEMV block.

#define TILE 16
#define CHUNK 256
#define NWARP 8
#define NTHREADS 256
#define SLICE_WORDS 32   // residual words per slice and warp pass (128 B per warp load)
#define SLICE_COLS 256   // 8 four-bit codes per word
#define STAGES 3         // default cp.async pipeline depth of the GEMV (chunks per warp in flight + 1);
                         // the `_s2` entries use 2 (faster for K <= 4096, see GpuLinear::stages)
#ifndef GEMV_MINB
#define GEMV_MINB 3      // resident blocks per SM the register allocation is sized for
#endif

template <bool C, typename A, typename B> struct Cond { typedef A type; };
template <typename A, typename B> struct Cond<false, A, B> { typedef B type; };

template <typename T> struct Mg;
template <> struct Mg<__half> {
    static constexpr u32 M = 0x64006400u;
    static constexpr float MF = 1024.f;
};
template <> struct Mg<__nv_bfloat16> {
    static constexpr u32 M = 0x43004300u;
    static constexpr float MF = 128.f;
};

// ----------------------------------------------------------------------------------------------
// Decoders: produce the four A registers of one step.
// ----------------------------------------------------------------------------------------------

// Uniform: per group constants for rows g (r=0) and g+8 (r=1).
template <typename T, int BITS> struct UniformDec {
    u32 bc[2][3];   // -(magic * S_j + z) per row and position class
    float sc[2];    // group scales

    static __device__ __forceinline__ float sval(int j) {
        return (BITS == 4) ? (j == 0 ? 1.f : 1.f / 16.f) : (j == 0 ? 1.f : (j == 1 ? 0.125f : 1.f / 64.f));
    }
    static __device__ __forceinline__ u32 sbits(int j) {
        return (BITS == 4) ? (j == 0 ? K2<T>::one : K2<T>::sixteenth)
                           : (j == 0 ? K2<T>::one : (j == 1 ? K2<T>::eighth : K2<T>::s64));
    }
    // -(magic * S_j + z) as exact f16/bf16 bit patterns built with integer ops (no conversions):
    // magic * S_j is a power of two whose ulp is S_j, so adding z moves the mantissa by z / S_j.
    static __device__ __forceinline__ u32 neg_bias(u32 z, int j) {
        u32 h;
        if (Mg<T>::M == 0x64006400u) {
            if (BITS == 4) h = j == 0 ? (0xE400u | z) : (0xD400u + (z << 4));
            else h = j == 0 ? (0xE400u | z) : (j == 1 ? (0xD800u + (z << 3)) : (0xCC00u + (z << 6)));
        } else {
            h = j == 0 ? (0xC300u | z) : (0xC180u + (z << 3));
        }
        return h * 0x10001u;
    }
    __device__ __forceinline__ void set_group(u32 vg, u32 v8) {
        u32 v[2] = {vg, v8};
#pragma unroll
        for (int r = 0; r < 2; r++) {
            sc[r] = __uint_as_float(v[r] & ~0xFu);
            const u32 z = v[r] & 0xFu;
#pragma unroll
            for (int j = 0; j < 3; j++) bc[r][j] = neg_bias(z, j);
        }
    }
    // value of the code pair found at (word >> shift) bits (pos, pos+16), row r, scale class j
    __device__ __forceinline__ u32 pair(u32 w, int shift, int pos, int r, int j) const {
        u32 mask = ((BITS == 4 ? 0xFu : 0x7u) << pos) * 0x10001u;
        return fma2<T>(lop3_and_or(w >> shift, mask, Mg<T>::M), sbits(j), bc[r][j]);
    }
    __device__ __forceinline__ u32 spread(u32 w0, u32 w1, u32 w2, int r) const {
        u32 v = lop3_and_or(w0 >> 15, 0x00010001u, Mg<T>::M);
        v = lop3_and_or(w1 >> 14, 0x00020002u, v);
        v = lop3_and_or(w2 >> 13, 0x00040004u, v);
        return fma2<T>(v, K2<T>::one, bc[r][0]);
    }
};

// LUT: per-block shared table of code pairs -> (lut[lo], lut[hi]) packed in the activation dtype.
template <typename T, int BITS> struct LutDec {
    static constexpr int U = (BITS == 4) ? 4 : 3;
    const u32* tab_g;  // table of row g
    const u32* tab_8;  // table of row g+8
    // Build the pair table of row tile rt in shared memory `tab` (whole block) and point this
    // lane's rows at it.
    __device__ void load_tile(const float* lut, int N, int rt, u32* tab) {
        constexpr int NE = 1 << (2 * BITS);
        constexpr int L = 1 << BITS;
        for (int i = threadIdx.x; i < TILE * NE; i += NTHREADS) {
            int r = i / NE, e = i % NE;
            int row = rt * TILE + r;
            float lo = 0.f, hi = 0.f;
            if (row < N) {
                lo = lut[(size_t)row * L + (e & (L - 1))];
                hi = lut[(size_t)row * L + (e >> BITS)];
            }
            T tl = Dt<T>::from_f(lo), th = Dt<T>::from_f(hi);
            tab[i] = (u32)(*reinterpret_cast<unsigned short*>(&tl)) |
                     ((u32)(*reinterpret_cast<unsigned short*>(&th)) << 16);
        }
        __syncthreads();
        const int gq = (threadIdx.x & 31) >> 2;
        tab_g = tab + gq * NE;
        tab_8 = tab + (gq + 8) * NE;
    }
    __device__ __forceinline__ u32 lookup(u32 lo, u32 hi, int r) const {
        const u32* t = r ? tab_8 : tab_g;
        return t[lo | (hi << BITS)];
    }
    __device__ __forceinline__ u32 pair(u32 w, int shift, int pos, int r, int) const {
        u32 m = (BITS == 4) ? 0xFu : 0x7u;
        u32 v = w >> shift;
        return lookup((v >> pos) & m, (v >> (pos + 16)) & m, r);
    }
    __device__ __forceinline__ u32 spread(u32 w0, u32 w1, u32 w2, int r) const {
        u32 lo = ((w0 >> 15) & 1u) | ((w1 >> 14) & 2u) | ((w2 >> 13) & 4u);
        u32 hi = ((w0 >> 31) & 1u) | ((w1 >> 30) & 2u) | ((w2 >> 29) & 4u);
        return lookup(lo, hi, r);
    }
};

// Where the code pair of register R of step s lives, for each bit width and dtype.
// 4-bit: f16 uses positions 0 and 4 of (w >> 0) and (w >> 8); bf16 (7-bit mantissa) only position 0.
template <typename T, int BITS, typename D>
__device__ __forceinline__ void decode_step(const D& d, const u32* wv, int s, u32* a) {
    if constexpr (BITS == 4) {
        u32 w = wv[s];
        if constexpr (sizeof(T) == 2 && Mg<T>::M == 0x64006400u) {
            a[0] = d.pair(w, 0, 0, 0, 0);
            a[1] = d.pair(w, 0, 4, 1, 1);
            a[2] = d.pair(w, 8, 0, 0, 0);
            a[3] = d.pair(w, 8, 4, 1, 1);
        } else {
            a[0] = d.pair(w, 0, 0, 0, 0);
            a[1] = d.pair(w, 4, 0, 1, 0);
            a[2] = d.pair(w, 8, 0, 0, 0);
            a[3] = d.pair(w, 12, 0, 1, 0);
        }
    } else {
        const u32* w3 = wv + 3 * (s / 4);
#pragma unroll
        for (int R = 0; R < 4; R++) {
            int p = 4 * (s % 4) + R;
            int r = R & 1;
            if (p == 15) {
                a[R] = d.spread(w3[0], w3[1], w3[2], r);
            } else {
                u32 w = w3[p / 5];
                int j = p % 5;
                if (Mg<T>::M == 0x64006400u) {
                    int shift = j < 3 ? 0 : 9;
                    int jj = j < 3 ? j : j - 3;
                    a[R] = d.pair(w, shift, 3 * jj, r, jj);
                } else {
                    int shift = (j / 2) * 6;
                    int jj = j % 2;
                    a[R] = d.pair(w, shift, 3 * jj, r, jj);
                }
            }
        }
    }
}

// The 16-byte slice of x at column k0 (8 elements) into shared address `dst`, zero-filled past K;
// a slice wholly past K reads nothing (its source is clamped to the last 16-byte-aligned slice).
template <typename T>
__device__ __forceinline__ void cp_async_x16(u32 dst, const T* x, int K, int k0) {
    cp_async16_zfill_s(dst, x + min(k0, (K - 1) & ~7), max(0, min(16, 2 * (K - k0))));
}

__host__ __device__ __forceinline__ int dec_total_rows(int K, int k_chunk) {
    int full = K / 1024, rem = K % 1024;
    return full * k_chunk + (k_chunk * rem) / 1024;
}

// Gather the residual rows of the selected channels for one slice of 256 output columns:
// d[n] = scale[n] * sum_r x_r * (code - 8), fixed summation order (rows by warp, then warps 0..7).
__device__ void fetch_slice(const u32* __restrict__ res, const float* __restrict__ rscale, int N, int W, int s,
                            const int* sidx, const float* sval, int ktot, float* red, float* dvec) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int wcol = s * SLICE_WORDS + lane;
    float acc[8];
#pragma unroll
    for (int t = 0; t < 8; t++) acc[t] = 0.f;
    if (wcol < W) {
        for (int i0 = warp; i0 < ktot; i0 += NWARP * 8) {
            u32 wv[8];
            float xv[8];
#pragma unroll
            for (int u = 0; u < 8; u++) {
                int i = i0 + NWARP * u;
                wv[u] = 0x88888888u;
                xv[u] = 0.f;
                if (i < ktot) {
                    wv[u] = res[(size_t)sidx[i] * W + wcol];
                    xv[u] = sval[i];
                }
            }
#pragma unroll
            for (int u = 0; u < 8; u++) {
#pragma unroll
                for (int t = 0; t < 8; t++) acc[t] = fmaf(xv[u], (float)((int)((wv[u] >> (4 * t)) & 15u) - 8), acc[t]);
            }
        }
    }
    __syncthreads();
#pragma unroll
    for (int t = 0; t < 8; t++) red[warp * SLICE_COLS + lane * 8 + t] = acc[t];
    __syncthreads();
    {
        int n = s * SLICE_COLS + threadIdx.x;
        float sum = 0.f;
#pragma unroll
        for (int w = 0; w < NWARP; w++) sum += red[w * SLICE_COLS + threadIdx.x];
        if (n < N) __stcg(dvec + n, sum * rscale[n]);
    }
}

// The compensation word of an output between calls: a NaN bit pattern no arithmetic produces (the
// GPU's NaN results are 0x7fffffff), so a written word is never mistaken for an empty one.
#define DEC_EMPTY 0xffffffffu

__device__ __forceinline__ float ld_relaxed(const float* p) {
    float v;
    asm volatile("ld.relaxed.gpu.global.f32 %0, [%1];\n" : "=f"(v) : "l"(p) : "memory");
    return v;
}

// The compensation of output n, first read `v` (issued early by the caller): wait until the DEC
// block has written it, then leave the word empty for the next call.
__device__ __forceinline__ float take_dvec(float* dvec, int n, float v) {
    while (__float_as_uint(v) == DEC_EMPTY) {
        __nanosleep(64);
        v = ld_relaxed(dvec + n);
    }
    __stcg(dvec + n, __uint_as_float(DEC_EMPTY));
    return v;
}

__device__ __forceinline__ void spin_until(const int* c, int target) {
    int v;
    do {
        asm volatile("ld.acquire.gpu.global.s32 %0, [%1];\n" : "=r"(v) : "l"(c) : "memory");
    } while (v < target);
}

// ----------------------------------------------------------------------------------------------
// Kernel arguments
// ----------------------------------------------------------------------------------------------
struct DecArgs {
    const u32* res;       // mapped pinned host memory: residual [K][W] (4-bit codes)
    const float* rscale;  // device: residual scales [N]
    float* dvec;          // device [N]: compensation per output, DEC_EMPTY between calls
    int* sel_sync;        // device [2], zero between calls: chunks selected, DEC blocks done
    int* sel_idx;         // device [>= rows]: selected channels (also the debug output)
    float* sel_val;       // device [>= rows]
    float a, b;           // bucket anchors thresholds[0], thresholds[kk-1]
    int k_chunk;
    int n_dec;            // number of DEC blocks at the front of the grid (0 = no DEC)
    long long* dbg_t;     // optional: clock64 stamps of DEC block 0 / GEMV block 0 phases
    const float* x32;     // optional: the input in f32 (selection and activations as on the CPU)
    int presel;           // 1: sel_idx/sel_val were written by the kernel that produced x
};

struct GemvArgs {
    const uint4* qw;   // tiled codes
    const u32* sz;     // tiled scale|zero (uniform) or nullptr
    const float* lut;  // canonical LUT [N][2^bits] (LUT format) or nullptr
    const void* x;     // activations [K]
    void* y;           // output (see out_mode)
    int N, K, KC, GP;  // rows, columns, 256-chunks, groups per tile row (padded)
    int out_mode;      // 0: y = T[N]; 1: y = f32[N], y += result; 2: y = f32[N], y = result
    int split;         // warps per row tile (split-K inside the block): 1, 2, 4 or 8
    const float* nw;   // xmode 1: RMSNorm weight [K]
    float eps;         // xmode 1: RMSNorm epsilon
    int xmode;         // 0: x is T[K]; 1: x is the f32 residual stream h[K], the GEMV input is
                       //    T(rmsnorm(h) * nw) computed by every block exactly as rmsnorm_sel does;
                       // 2: x is T[K], staged whole in shared memory (tile kernel, long K); the
                       //    tile kernel copies x chunk by chunk into its rings in mode 0
    float* part;       // stream schedule: per-warp partial rows [n_tiles][maxnc][TILE]
    int* tile_cnt;     // stream schedule: [n_tiles], zero between calls: partials arrived per tile
    int maxnc;         // stream schedule: partial slots per tile
    int early;         // tile kernel: 1 = let the next kernel launch right after the prologue
                       // (experiment 51), 0 = after the main loop
};

template <typename T>
__device__ __forceinline__ void store_out(const GemvArgs& g, int n, float v) {
    if (g.out_mode == 0) reinterpret_cast<T*>(g.y)[n] = Dt<T>::from_f(v);
    else if (g.out_mode == 1) reinterpret_cast<float*>(g.y)[n] += v;
    else reinterpret_cast<float*>(g.y)[n] = v;
}

// 1 / rms of h from each thread's partial sum of squares, in a fixed order (lanes, then warps
// 0..7): the fused RMSNorm of the GEMV and rmsnorm_sel share it, so their x is bit-identical.
__device__ __forceinline__ float block_rms_inv(float ss, float* nred, int K, float eps) {
    ss = warp_sum(ss);
    if ((threadIdx.x & 31) == 0) nred[threadIdx.x >> 5] = ss;
    __syncthreads();
    float tot = 0.f;
#pragma unroll
    for (int i = 0; i < NWARP; i++) tot += nred[i];
    return 1.f / sqrtf(tot / (float)K + eps);
}

// The RMSNorm weight of this thread's channels (i = threadIdx.x + NTHREADS * j), read before the PDL
// wait (it does not depend on the previous kernel) when K fits the register copy.
// NR registers per thread (K <= NR * NTHREADS; 0 in the 4-blocks-per-SM kernels, whose 64
// registers it would spill into the main loop).
#define XN_REGS 16
template <int NR> struct NormPre {
    float w[NR > 0 ? NR : 1];
    bool ok;  // K <= NR * NTHREADS and xmode 1: w holds nw, stage_x keeps h in registers too
};
template <int NR> __device__ __forceinline__ void norm_preload(const GemvArgs& g, NormPre<NR>& p) {
    p.ok = NR > 0 && g.xmode == 1 && g.K <= NR * NTHREADS;
    if (!p.ok) return;
#pragma unroll
    for (int j = 0; j < NR; j++) {
        const int i = threadIdx.x + NTHREADS * j;
        p.w[j] = i < g.K ? g.nw[i] : 0.f;
    }
}

// Stage the GEMV input x (padded with zeros to whole chunks) in shared memory, once per block, with
// all of its loads in flight at once (experiment 72: the staging sat between the PDL wait and the
// first chunk, and its loops waited for one L2 round trip per 2-4 loads).
template <typename T, int NR = 0>
__device__ void stage_x(const GemvArgs& g, uint4* xs, const NormPre<NR>* pre = nullptr) {
    if (g.xmode == 1) {
        // RMSNorm fused into the consumer (no separate launch): the same summation order and
        // arithmetic as rmsnorm_sel, so x is bit-identical to the two-kernel path.
        const float* h = reinterpret_cast<const float*>(g.x);
        __shared__ float nred[NWARP];
        T* xt = reinterpret_cast<T*>(xs);
        float ss = 0.f;
        if (NR > 0 && pre != nullptr && pre->ok) {
            float hv[NR > 0 ? NR : 1];
#pragma unroll
            for (int j = 0; j < NR; j++) {
                const int i = threadIdx.x + NTHREADS * j;
                hv[j] = i < g.K ? h[i] : 0.f;
            }
#pragma unroll
            for (int j = 0; j < NR; j++)
                if (threadIdx.x + NTHREADS * j < g.K) ss = fmaf(hv[j], hv[j], ss);
            const float inv = block_rms_inv(ss, nred, g.K, g.eps);
#pragma unroll
            for (int j = 0; j < NR; j++) {
                const int i = threadIdx.x + NTHREADS * j;
                if (i < g.KC * CHUNK) xt[i] = Dt<T>::from_f(i < g.K ? hv[j] * inv * pre->w[j] : 0.f);
            }
            return;
        }
        for (int i = threadIdx.x; i < g.K; i += NTHREADS) ss = fmaf(h[i], h[i], ss);
        const float inv = block_rms_inv(ss, nred, g.K, g.eps);
        for (int i = threadIdx.x; i < g.KC * CHUNK; i += NTHREADS)
            xt[i] = Dt<T>::from_f(i < g.K ? h[i] * inv * g.nw[i] : 0.f);
    } else {
        // one cp.async per 16 bytes, zero-filled past K (the source clamped into x); the wait
        // also covers the weights already in flight, which the first chunk needs anyway
        const T* x = reinterpret_cast<const T*>(g.x);
        for (int i = threadIdx.x; i < g.KC * (CHUNK / 8); i += NTHREADS)
            cp_async_x16(smem_addr(xs + i), x, g.K, 8 * i);
        cp_async_commit();
        cp_async_wait<0>();
    }
}

// Wait for the oldest chunk of the warp's cp.async ring (stage st) and take the lane's weight
// words and (SC) its NS group scale words; each lane reads only what its own copies wrote.
// RS: uint4 per lane and stage in `ring` (U, or U + 1 where the stage also holds a slice of x).
template <int ST, int U, int NS, bool SC, int RS = U>
__device__ __forceinline__ void ring_take(const uint4* ring, const u32* sring, int st, int lane, uint4* w0,
                                          u32* s0) {
    cp_async_wait<ST - 2>();
#pragma unroll
    for (int i = 0; i < U; i++) w0[i] = ring[(st * RS + i) * 32 + lane];
    if constexpr (SC) {
#pragma unroll
        for (int j = 0; j < NS; j++) s0[j] = sring[(st * NS + j) * 32 + lane];
    }
}

// Decode + tensor-core product of one 256-column chunk of one row tile (lane's A fragments in
// `wv`, its group scale words in `s0`, x of the chunk at `xc`). Uniform: the group scale is applied
// in f32 per group into acc_g (row g) / acc_8 (row g+8); LUT: values are exact in the table, the
// products accumulate in `cl` over all K.
template <typename T, int BITS, bool LUT, int GSZ, typename Dec, int MODE = 0>
__device__ __forceinline__ void chunk_mma(Dec& dec, const u32* wv, const u32* s0, const uint4* xc, float& acc_g,
                                          float& acc_8, float (&cl)[2][4]) {
    constexpr int GPC = CHUNK / GSZ;
    constexpr int SPG = GSZ / 16;
#pragma unroll
    for (int gi = 0; gi < GPC; gi++) {
        float cf[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
        if constexpr (!LUT) dec.set_group(s0[2 * gi], s0[2 * gi + 1]);
        uint4 xv;
#pragma unroll
        for (int ls = 0; ls < SPG; ls++) {
            const int s = gi * SPG + ls;
            // x of a step pair loaded where it is used, not per group (fewer live registers: the
            // 4-blocks-per-SM kernels no longer spill, experiment 64)
            if ((ls & 1) == 0) xv = xc[4 * (s >> 1)];
            u32 a[4];
            if constexpr (MODE == 4) {
#pragma unroll
                for (int R = 0; R < 4; R++) a[R] = wv[(4 * s + R) % (BITS == 4 ? 16 : 12)];
            } else {
                decode_step<T, BITS>(dec, wv, s, a);
            }
            u32 b0 = (s & 1) ? xv.z : xv.x;
            u32 b1 = (s & 1) ? xv.w : xv.y;
            if constexpr (MODE == 3) {
                // ablation: decode without the tensor core (the results stay live through an xor)
                cf[s & 1][0] = __uint_as_float(__float_as_uint(cf[s & 1][0]) ^ a[0] ^ a[1] ^ a[2] ^ a[3]);
                continue;
            }
            if constexpr (LUT) mma16816<T>(cl[s & 1], a[0], a[1], a[2], a[3], b0, b1);
            else mma16816<T>(cf[s & 1], a[0], a[1], a[2], a[3], b0, b1);
        }
        if constexpr (!LUT) {
            acc_g = fmaf(dec.sc[0], cf[0][0] + cf[1][0], acc_g);
            acc_8 = fmaf(dec.sc[1], cf[0][2] + cf[1][2], acc_8);
        }
    }
}

// ----------------------------------------------------------------------------------------------
// GEMV blocks: (8 / split) row tiles per block, `split` warps per tile share its chunks.
// Weights (and the group scale words) are prefetched STAGES - 1 chunks ahead with cp.async.
// ----------------------------------------------------------------------------------------------
// MODE (ablation only): 0 normal, 1 loads only (no decode/mma), 2 compute only (no weight loads),
// 3 decode only (no weight loads, no mma), 4 mma only (no weight loads, no decode)
template <typename T, int BITS, bool LUT, int GSZ, int MODE = 0, int ST = STAGES, int NR = XN_REGS>
__device__ void gemv_block(const GemvArgs& g, const DecArgs& d, int bid, float* smem) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int gq = lane >> 2, tq = lane & 3;
    constexpr int U = (BITS == 4) ? 4 : 3;
    constexpr int GPC = CHUNK / GSZ;   // groups per chunk
    const int S = LUT ? NWARP : g.split;
    const int TPB = NWARP / S;          // tiles per block
    const int rt = bid * TPB + warp / S;
    const int split = warp % S;
    const int n_tiles = (g.N + TILE - 1) / TILE;

    float* red = smem;  // [NWARP][TILE]
    using Dec = typename Cond<LUT, LutDec<T, BITS>, UniformDec<T, BITS>>::type;
    Dec dec;
    if constexpr (LUT) dec.load_tile(g.lut, g.N, rt, reinterpret_cast<u32*>(smem + NWARP * TILE));

    float acc_g = 0.f, acc_8 = 0.f;
    float cl[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};  // LUT: accumulators over all K
    // chunk-major layouts: chunk c of tile rt at (c * n_tiles + rt); group j of tile rt at (j * n_tiles + rt)
    const uint4* qbase = g.qw + (size_t)rt * U * 32 + lane;
    const u32* szbase = g.sz + (size_t)rt * TILE + gq;
    const size_t qstride = (size_t)n_tiles * U * 32;    // uint4 per chunk of all tiles
    const size_t sstride = (size_t)n_tiles * TILE;      // words per group of all tiles
    const bool live = rt < n_tiles;
    // Per-warp ring of ST chunks in shared memory filled by cp.async (no registers held by
    // loads in flight): lane l's words of stage st at ring[(st * UX + i) * 32 + l], i < U, its group
    // scale words at sring[(st * SZN + j) * 32 + l]; ring[(st * UX + U) * 32 + l] holds x of the
    // chunk's columns 8l..8l+7 (xmode 0), so that no block-wide staging of x delays the first chunk.
    // xmodes 1 and 2 stage x in `xs` behind the rings instead.
    constexpr int SZN = LUT ? 1 : 2 * GPC;
    constexpr int UX = U + 1;
    uint4* rbase = reinterpret_cast<uint4*>(smem + NWARP * TILE + (LUT ? TILE * (1 << (2 * BITS)) : 0));
    uint4* ring = rbase + warp * (ST * UX * 32);
    u32* sring = reinterpret_cast<u32*>(rbase + NWARP * ST * UX * 32) + warp * (ST * SZN * 32);
    uint4* xs = reinterpret_cast<uint4*>(reinterpret_cast<u32*>(rbase + NWARP * ST * UX * 32) + NWARP * ST * SZN * 32);
    const T* xg = reinterpret_cast<const T*>(g.x);
    // The prologue's copy of x keeps its own clamp rather than cp_async_x16: through the helper,
    // ptxas gave the 3-stage 3-bit main loop 8 more instructions (scripts/sass.py).
    auto issue_x = [&](int c, int st) {
        if (g.xmode == 0 && live && c < g.KC) {
            const int k0 = c * CHUNK + 8 * lane;
            const int bytes = max(0, min(16, 2 * (g.K - k0)));
            cp_async16_zfill(ring + (st * UX + U) * 32 + lane, xg + (bytes > 0 ? k0 : 0), bytes);
        }
    };
    // weights (and group scale words) of chunk c into stage st. Only the prologue uses these two;
    // the loop refills with its own incremented addresses (experiment 64). Routing the prologue
    // through the loop's form cost the 3-stage loop 9 instructions and down 0.26 us (run JH).
    auto issue_w = [&](int c, int st) {
        if (MODE <= 1 && live && c < g.KC) {
#pragma unroll
            for (int i = 0; i < U; i++) cp_async16(ring + (st * UX + i) * 32 + lane, qbase + (size_t)c * qstride + i * 32);
            if constexpr (!LUT) {
#pragma unroll
                for (int gi = 0; gi < GPC; gi++) {
                    cp_async4(sring + (st * SZN + 2 * gi) * 32 + lane, szbase + (size_t)(c * GPC + gi) * sstride);
                    cp_async4(sring + (st * SZN + 2 * gi + 1) * 32 + lane, szbase + (size_t)(c * GPC + gi) * sstride + 8);
                }
            }
        }
    };
    // Weights first (they do not depend on the previous kernel of the step), x after its wait.
    // cp.async groups: {weights of stages 0..ST-2, x of stage 0}, {x of stage 1}, ..., then one
    // group per refilled stage, so that waiting for stage st's group covers its weights and x.
#pragma unroll
    for (int st = 0; st < ST - 1; st++) issue_w(split + st * S, st);
    if (g.early) pdl_launch_dependents();
    NormPre<NR> npre;
    norm_preload<NR>(g, npre);
    pdl_wait();
    if (g.xmode != 0) stage_x<T, NR>(g, xs, &npre);
#pragma unroll
    for (int st = 0; st < ST - 1; st++) {
        issue_x(split + st * S, st);
        cp_async_commit();
    }
    if (g.xmode != 0) __syncthreads();
    if (live) {
        // The refill addresses advance by S chunks per iteration (pointer increments instead of
        // per-chunk 64-bit products with the runtime strides: experiment 64).
        int cf = split + (ST - 1) * S;  // chunk refilled in this iteration
        const uint4* qf = qbase + (size_t)cf * qstride;
        const u32* sf = szbase + (size_t)cf * GPC * sstride;
        const size_t qstep = (size_t)S * qstride, sstep = (size_t)S * GPC * sstride;
        int kf = cf * CHUNK + 8 * lane;  // first column of this lane's 16-byte slice of x
        int st = 0, stf = ST - 1;        // stage consumed / refilled in this iteration
        const u32 ring_s = smem_addr(ring + lane), sring_s = smem_addr(sring + lane);
        for (int c = split; c < g.KC; c += S) {
            uint4 w0[U];
            u32 s0[SZN];
            ring_take<ST, U, SZN, !LUT, UX>(ring, sring, st, lane, w0, s0);
            __syncwarp();  // the chunk's x was copied by all lanes of the warp
            // refill the slot consumed in the previous iteration
            if (cf < g.KC) {
                const u32 rf = ring_s + stf * (UX * 32 * 16);
                if constexpr (MODE <= 1) {
#pragma unroll
                    for (int i = 0; i < U; i++) cp_async16_s(rf + i * 512, qf + i * 32);
                    if constexpr (!LUT) {
                        const u32 sfs = sring_s + stf * (SZN * 32 * 4);
#pragma unroll
                        for (int gi = 0; gi < GPC; gi++) {
                            cp_async4_s(sfs + 2 * gi * 128, sf + gi * sstride);
                            cp_async4_s(sfs + (2 * gi + 1) * 128, sf + gi * sstride + 8);
                        }
                    }
                }
                if (g.xmode == 0) cp_async_x16(rf + U * 512, xg, g.K, kf);
            }
            cp_async_commit();
            cf += S;
            qf += qstep;
            sf += sstep;
            kf += S * CHUNK;
            const int stc = st;
            st = st + 1 == ST ? 0 : st + 1;
            stf = stf + 1 == ST ? 0 : stf + 1;
            if constexpr (MODE == 1) {
                acc_g += __uint_as_float((w0[0].x ^ w0[U - 1].w ^ s0[0]) & 0x007fffffu);
                continue;
            }
            const uint4* xc = (g.xmode != 0 ? xs + c * (CHUNK / 8) : ring + (stc * UX + U) * 32) + tq;
            chunk_mma<T, BITS, LUT, GSZ, Dec, MODE>(dec, reinterpret_cast<const u32*>(w0), s0, xc, acc_g, acc_8, cl);
        }
    }
    cp_async_wait<0>();
    // the weights are streamed: let the next kernel of the step start its prologue during our tail
    pdl_launch_dependents();
    // DEC: the first read of this thread's compensation word overlaps the reduction below
    const int n_mine = bid * TPB * TILE + threadIdx.x;
    const bool dec_mine = d.n_dec > 0 && threadIdx.x < TPB * TILE && n_mine < g.N;
    float dv = dec_mine ? ld_relaxed(d.dvec + n_mine) : 0.f;
    if constexpr (LUT) {
        acc_g = cl[0][0] + cl[1][0];
        acc_8 = cl[0][2] + cl[1][2];
    }
    if (tq == 0) {
        red[warp * TILE + gq] = acc_g;
        red[warp * TILE + gq + 8] = acc_8;
    }
    __syncthreads();
    // fixed-order split-K reduction: thread t -> tile t/16 of the block, row t%16
    float sum = 0.f;
    int n = -1;
    if (threadIdx.x < TPB * TILE) {
        const int tl = threadIdx.x / TILE, r = threadIdx.x % TILE;
        for (int sp = 0; sp < S; sp++) sum += red[(tl * S + sp) * TILE + r];
        n = (bid * TPB + tl) * TILE + r;
        if (n >= g.N) n = -1;
    }
    // (n == n_mine where n >= 0)
    if (dec_mine) sum += take_dvec(d.dvec, n_mine, dv);
    if (n >= 0) store_out<T>(g, n, sum);
}

template <typename T>
__device__ void dec_blocks(const GemvArgs& g, const DecArgs& d, float* smem) {
    const int K = g.K;
    const int ktot = dec_total_rows(K, d.k_chunk);
    const int nchunks = (K + 1023) / 1024;
    int* sh = reinterpret_cast<int*>(smem + NWARP * SLICE_COLS);
    int* sidx = sh + SEL_SH;
    float* sval = reinterpret_cast<float*>(sidx + ktot);
    const bool stamp = d.dbg_t != nullptr && blockIdx.x == 0 && threadIdx.x == 0;
    if (stamp) d.dbg_t[0] = clock64();
    // 1. selection: chunk c by DEC block c % n_dec (unless the producer of x already selected)
    for (int c = blockIdx.x; c < nchunks && !d.presel; c += d.n_dec) {
        const int lo = c * 1024, size = min(1024, K - lo);
        const int kc = (d.k_chunk * size) / 1024;
        if (kc > 0)
            select_chunk_block<T>(reinterpret_cast<const T*>(g.x), d.x32, lo, size, kc, d.a, d.b,
                                  d.sel_idx + c * d.k_chunk, d.sel_val + c * d.k_chunk, sh,
                                  (d.dbg_t != nullptr && blockIdx.x == 0 && c == 0) ? d.dbg_t + 10 : nullptr);
        __syncthreads();
        if (threadIdx.x == 0) asm volatile("red.release.gpu.global.add.s32 [%0], 1;\n" ::"l"(d.sel_sync) : "memory");
    }
    if (stamp) d.dbg_t[1] = clock64();
    // 2. wait for every chunk (all DEC blocks are resident: they are the lowest block indices)
    if (threadIdx.x == 0 && !d.presel) spin_until(d.sel_sync, nchunks);
    if (stamp) d.dbg_t[2] = clock64();
    __syncthreads();
    for (int i = threadIdx.x; i < ktot; i += NTHREADS) {
        sidx[i] = __ldcg(d.sel_idx + i);
        sval[i] = __ldcg(d.sel_val + i);
    }
    __syncthreads();
    // 3. gather slices; each output's compensation goes to its word for the GEMV thread that owns it
    const int W = (g.N + 7) / 8;
    const int n_slices = (W + SLICE_WORDS - 1) / SLICE_WORDS;
    for (int s = blockIdx.x; s < n_slices; s += d.n_dec) {
        fetch_slice(d.res, d.rscale, g.N, W, s, sidx, sval, ktot, smem, d.dvec);
        if (stamp && s == 0) d.dbg_t[3] = clock64();
        __syncthreads();  // smem reused by the next slice
        if (stamp && s == 0) d.dbg_t[4] = clock64();
    }
    // the last DEC block to finish (all are past the wait) leaves the counters zero for the next
    // call; at the end, so that no block waits for this atomic before gathering
    if (threadIdx.x == 0 && !d.presel && atomicAdd(d.sel_sync + 1, 1) == d.n_dec - 1) {
        d.sel_sync[0] = 0;
        d.sel_sync[1] = 0;
    }
}

// The first n_dec blocks of a fused launch (either schedule) are its DEC blocks: true when this
// block is one, after it has done its part.
template <typename T> __device__ __forceinline__ bool ran_as_dec_block(const GemvArgs& g, const DecArgs& d, float* smem) {
    if ((int)blockIdx.x >= d.n_dec) return false;
    pdl_wait();
    dec_blocks<T>(g, d, smem);
    return true;
}

template <typename T, int BITS, bool LUT, int GSZ, int MODE = 0, int ST = STAGES, int NR = XN_REGS>
__device__ void gemv_dec_kernel(const GemvArgs& g, const DecArgs& d) {
    extern __shared__ float smem[];
    if (ran_as_dec_block<T>(g, d, smem)) return;
    const bool stamp = d.dbg_t != nullptr && blockIdx.x == d.n_dec && threadIdx.x == 0;
    if (stamp) d.dbg_t[8] = clock64();
    gemv_block<T, BITS, LUT, GSZ, MODE, ST, NR>(g, d, blockIdx.x - d.n_dec, smem);
    if (stamp) d.dbg_t[9] = clock64();
}


// ----------------------------------------------------------------------------------------------
// Stream schedule (uniform formats): the (tile, chunk) units of the whole matrix, tile-major, are
// split evenly over all GEMV warps of the launch, one contiguous range per warp. Every warp streams
// the same number of bytes in a single wave (no partial last wave, no idle SMs at the tail), its
// cp.async ring stays full across tile boundaries, and the grid leaves room for the DEC blocks
// instead of queueing GEMV blocks behind them. A tile whose chunks span several warps is reduced
// by the last of them to finish, from per-warp partials summed in warp order (deterministic).
// ----------------------------------------------------------------------------------------------

// Warp `gw` (of W) finished its part of tile t (acc_g / acc_8 in the lanes with tq == 0).
// `whole`: it covered every chunk of the tile, so no cross-warp reduction is needed.
template <typename T>
__device__ void stream_flush(const GemvArgs& g, const DecArgs& d, int t, bool whole, long long gw,
                             long long W, long long units, float acc_g, float acc_8) {
    const int lane = threadIdx.x & 31, gq = lane >> 2, tq = lane & 3;
    float v;
    if (whole) {
        // row r of the tile to lane r: rows 0-7 from acc_g, 8-15 from acc_8 of lane 4 * (r % 8)
        const float a = __shfl_sync(0xffffffffu, acc_g, (lane & 7) * 4);
        const float b = __shfl_sync(0xffffffffu, acc_8, (lane & 7) * 4);
        v = lane < 8 ? a : b;
    } else {
        // contributors of the tile: the warps whose ranges meet units [t*KC, t*KC + KC)
        const long long lo = (long long)t * g.KC;
        const long long wfirst = ((lo + 1) * W - 1) / units;
        const long long wlast = ((lo + g.KC) * W - 1) / units;
        const int nc = (int)(wlast - wfirst + 1);
        float* part = g.part + ((size_t)t * g.maxnc + (size_t)(gw - wfirst)) * TILE;
        if (tq == 0) {
            part[gq] = acc_g;
            part[gq + 8] = acc_8;
        }
        __syncwarp();
        int old = 0;
        if (lane == 0)
            asm volatile("atom.acq_rel.gpu.global.add.s32 %0, [%1], 1;\n" : "=r"(old) : "l"(g.tile_cnt + t) : "memory");
        old = __shfl_sync(0xffffffffu, old, 0);
        if (old != nc - 1) return;
        if (lane == 0) g.tile_cnt[t] = 0;
        __syncwarp();
        // all partials of a batch in flight at once (one L2 round trip per 8 slots), summed in
        // slot order
        v = 0.f;
        if (lane < TILE) {
            const float* pp = g.part + (size_t)t * g.maxnc * TILE + lane;
            for (int i0 = 0; i0 < nc; i0 += 8) {
                float pv[8];
#pragma unroll
                for (int i = 0; i < 8; i++) pv[i] = i0 + i < nc ? __ldcg(pp + (size_t)(i0 + i) * TILE) : 0.f;
#pragma unroll
                for (int i = 0; i < 8; i++) v += pv[i];
            }
        }
    }
    const int n = t * TILE + lane;
    if (lane < TILE && n < g.N) {
        if (d.n_dec > 0) v += take_dvec(d.dvec, n, ld_relaxed(d.dvec + n));
        store_out<T>(g, n, v);
    }
}

// MODE (ablation only): 0 normal, 1 loads only, 2 compute only. `nb` GEMV blocks, this is `gb`.
template <typename T, int BITS, int GSZ, int MODE, int ST>
__device__ void gemv_stream(const GemvArgs& g, const DecArgs& d, int gb, int nb, float* smem) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int gq = lane >> 2, tq = lane & 3;
    constexpr int U = (BITS == 4) ? 4 : 3;
    constexpr int GPC = CHUNK / GSZ;
    constexpr int SZN = 2 * GPC;
    const int KC = g.KC;
    const int n_tiles = (g.N + TILE - 1) / TILE;
    const long long units = (long long)n_tiles * KC;
    const long long W = min((long long)nb * NWARP, units);
    const long long gw = (long long)gb * NWARP + warp;
    // the warp's units [u0, u1): 64-bit division once here, then (tile, chunk) counters only
    // (a 64-bit division per unit costs more instructions than decoding the unit)
    const int u0 = gw < W ? (int)(gw * units / W) : 0;
    const int nu = gw < W ? (int)((gw + 1) * units / W) - u0 : 0;
    const size_t sstride = (size_t)n_tiles * TILE;
    uint4* xs = reinterpret_cast<uint4*>(smem + NWARP * TILE);
    uint4* ring = xs + KC * (CHUNK / 8) + warp * (ST * U * 32);
    u32* sring = reinterpret_cast<u32*>(xs + KC * (CHUNK / 8) + NWARP * ST * U * 32) + warp * (ST * SZN * 32);
    int it_t = u0 / KC, it_c = u0 % KC;  // next unit to issue
    auto issue = [&](int i, int st) {
        if (MODE != 2 && i < nu) {
            const uint4* qp = g.qw + ((size_t)it_c * n_tiles + it_t) * U * 32 + lane;
#pragma unroll
            for (int k = 0; k < U; k++) cp_async16(ring + (st * U + k) * 32 + lane, qp + k * 32);
            const u32* sp = g.sz + (size_t)it_t * TILE + gq;
#pragma unroll
            for (int gi = 0; gi < GPC; gi++) {
                cp_async4(sring + (st * SZN + 2 * gi) * 32 + lane, sp + (size_t)(it_c * GPC + gi) * sstride);
                cp_async4(sring + (st * SZN + 2 * gi + 1) * 32 + lane, sp + (size_t)(it_c * GPC + gi) * sstride + 8);
            }
            if (++it_c == KC) {
                it_c = 0;
                it_t++;
            }
        }
        cp_async_commit();
    };
#pragma unroll
    for (int st = 0; st < ST - 1; st++) issue(st, st);
    pdl_wait();
    stage_x<T>(g, xs);
    __syncthreads();
    UniformDec<T, BITS> dec;
    float cl[2][4];
    float acc_g = 0.f, acc_8 = 0.f;
    int t = u0 / KC, c = u0 % KC;  // unit being computed
    bool seg_whole = c == 0;       // the warp's part of tile t starts at its chunk 0
    for (int i = 0; i < nu; i++) {
        const int st = i % ST;
        uint4 w0[U];
        u32 s0[SZN];
        ring_take<ST, U, SZN, true>(ring, sring, st, lane, w0, s0);
        issue(i + ST - 1, (i + ST - 1) % ST);
        if constexpr (MODE == 1) {
            acc_g += __uint_as_float((w0[0].x ^ w0[U - 1].w ^ s0[0]) & 0x007fffffu);
        } else {
            chunk_mma<T, BITS, false, GSZ>(dec, reinterpret_cast<const u32*>(w0), s0, xs + c * (CHUNK / 8) + tq,
                                           acc_g, acc_8, cl);
        }
        if (c == KC - 1 || i + 1 == nu) {
            stream_flush<T>(g, d, t, seg_whole && c == KC - 1, gw, W, units, acc_g, acc_8);
            acc_g = 0.f;
            acc_8 = 0.f;
            seg_whole = true;
        }
        if (++c == KC) {
            c = 0;
            t++;
        }
    }
    cp_async_wait<0>();
    pdl_launch_dependents();
}

template <typename T, int BITS, int GSZ, int MODE = 0, int ST = STAGES>
__device__ void gemv_stream_kernel(const GemvArgs& g, const DecArgs& d) {
    extern __shared__ float smem[];
    if (ran_as_dec_block<T>(g, d, smem)) return;
    gemv_stream<T, BITS, GSZ, MODE, ST>(g, d, blockIdx.x - d.n_dec, gridDim.x - d.n_dec, smem);
}

#define GEMV_ENTRY(NAME, T, BITS, LUT, GSZ)                                                        \
    extern "C" __global__ void __launch_bounds__(NTHREADS, GEMV_MINB) NAME(GemvArgs g, DecArgs d) {       \
        gemv_dec_kernel<T, BITS, LUT, GSZ>(g, d);                                                  \
    }
// Two-stage ring (less shared memory, shorter prologue).
#define GEMV_ENTRY_S2(NAME, T, BITS, LUT, GSZ)                                                     \
    extern "C" __global__ void __launch_bounds__(NTHREADS, GEMV_MINB) NAME(GemvArgs g, DecArgs d) {       \
        gemv_dec_kernel<T, BITS, LUT, GSZ, 0, 2>(g, d);                                            \
    }

// Two-stage ring for 4 resident blocks per SM (64 registers): wide short-K matrices, compensated
// or not (GpuLinear::b4_for, experiments 31 and 66).
#define GEMV_ENTRY_S2_B4(NAME, T, BITS, GSZ)                                                        \
    extern "C" __global__ void __launch_bounds__(NTHREADS, 4) NAME(GemvArgs g, DecArgs d) {            \
        gemv_dec_kernel<T, BITS, false, GSZ, 0, 2, 0>(g, d);                                      \
    }

// Stream schedule (see gemv_stream), ring depth ST.
#define GEMV_ENTRY_ST(NAME, T, BITS, GSZ, ST)                                                       \
    extern "C" __global__ void __launch_bounds__(NTHREADS, GEMV_MINB) NAME(GemvArgs g, DecArgs d) {       \
        gemv_stream_kernel<T, BITS, GSZ, 0, ST>(g, d);                                             \
    }

GEMV_ENTRY(gemv_u3_g128_f16, __half, 3, false, 128)
GEMV_ENTRY(gemv_u4_g128_f16, __half, 4, false, 128)
GEMV_ENTRY(gemv_u3_g128_bf16, __nv_bfloat16, 3, false, 128)
GEMV_ENTRY(gemv_u4_g128_bf16, __nv_bfloat16, 4, false, 128)
GEMV_ENTRY(gemv_u3_g64_f16, __half, 3, false, 64)
GEMV_ENTRY(gemv_u4_g64_f16, __half, 4, false, 64)
GEMV_ENTRY(gemv_u3_g64_bf16, __nv_bfloat16, 3, false, 64)
GEMV_ENTRY(gemv_u4_g64_bf16, __nv_bfloat16, 4, false, 64)
GEMV_ENTRY(gemv_u3_g32_f16, __half, 3, false, 32)
GEMV_ENTRY(gemv_u4_g32_f16, __half, 4, false, 32)
GEMV_ENTRY(gemv_u3_g32_bf16, __nv_bfloat16, 3, false, 32)
GEMV_ENTRY(gemv_u4_g32_bf16, __nv_bfloat16, 4, false, 32)
GEMV_ENTRY(gemv_u3_g256_f16, __half, 3, false, 256)
GEMV_ENTRY(gemv_u4_g256_f16, __half, 4, false, 256)
GEMV_ENTRY(gemv_u3_g256_bf16, __nv_bfloat16, 3, false, 256)
GEMV_ENTRY(gemv_u4_g256_bf16, __nv_bfloat16, 4, false, 256)
GEMV_ENTRY_S2(gemv_u3_g128_f16_s2, __half, 3, false, 128)
GEMV_ENTRY_S2(gemv_u4_g128_f16_s2, __half, 4, false, 128)
GEMV_ENTRY_S2(gemv_u3_g128_bf16_s2, __nv_bfloat16, 3, false, 128)
GEMV_ENTRY_S2(gemv_u4_g128_bf16_s2, __nv_bfloat16, 4, false, 128)
GEMV_ENTRY_S2(gemv_u3_g64_f16_s2, __half, 3, false, 64)
GEMV_ENTRY_S2(gemv_u4_g64_f16_s2, __half, 4, false, 64)
GEMV_ENTRY_S2(gemv_u3_g64_bf16_s2, __nv_bfloat16, 3, false, 64)
GEMV_ENTRY_S2(gemv_u4_g64_bf16_s2, __nv_bfloat16, 4, false, 64)
GEMV_ENTRY_S2(gemv_u3_g32_f16_s2, __half, 3, false, 32)
GEMV_ENTRY_S2(gemv_u4_g32_f16_s2, __half, 4, false, 32)
GEMV_ENTRY_S2(gemv_u3_g32_bf16_s2, __nv_bfloat16, 3, false, 32)
GEMV_ENTRY_S2(gemv_u4_g32_bf16_s2, __nv_bfloat16, 4, false, 32)
GEMV_ENTRY_S2(gemv_u3_g256_f16_s2, __half, 3, false, 256)
GEMV_ENTRY_S2(gemv_u4_g256_f16_s2, __half, 4, false, 256)
GEMV_ENTRY_S2(gemv_u3_g256_bf16_s2, __nv_bfloat16, 3, false, 256)
GEMV_ENTRY_S2(gemv_u4_g256_bf16_s2, __nv_bfloat16, 4, false, 256)
GEMV_ENTRY_S2_B4(gemv_u3_g128_f16_s2_b4, __half, 3, 128)
GEMV_ENTRY_S2_B4(gemv_u4_g128_f16_s2_b4, __half, 4, 128)
GEMV_ENTRY_S2_B4(gemv_u3_g128_bf16_s2_b4, __nv_bfloat16, 3, 128)
GEMV_ENTRY_S2_B4(gemv_u4_g128_bf16_s2_b4, __nv_bfloat16, 4, 128)
GEMV_ENTRY_ST(gemv_u3_g128_f16_st3, __half, 3, 128, 3)
GEMV_ENTRY_ST(gemv_u3_g128_bf16_st3, __nv_bfloat16, 3, 128, 3)
GEMV_ENTRY_ST(gemv_u4_g128_f16_st3, __half, 4, 128, 3)
GEMV_ENTRY_ST(gemv_u4_g128_bf16_st3, __nv_bfloat16, 4, 128, 3)
GEMV_ENTRY(gemv_l3_f16, __half, 3, true, 256)
GEMV_ENTRY(gemv_l4_f16, __half, 4, true, 256)
GEMV_ENTRY(gemv_l3_bf16, __nv_bfloat16, 3, true, 256)
GEMV_ENTRY(gemv_l4_bf16, __nv_bfloat16, 4, true, 256)

// Ablation entries (bench only): the 3-bit f16 GEMV with loads only / compute only.
extern "C" __global__ void __launch_bounds__(NTHREADS, GEMV_MINB) gemv_u3_g128_f16_memonly(GemvArgs g, DecArgs d) {
    gemv_dec_kernel<__half, 3, false, 128, 1>(g, d);
}
extern "C" __global__ void __launch_bounds__(NTHREADS, GEMV_MINB) gemv_u3_g128_f16_computeonly(GemvArgs g, DecArgs d) {
    gemv_dec_kernel<__half, 3, false, 128, 2>(g, d);
}
extern "C" __global__ void __launch_bounds__(NTHREADS, GEMV_MINB) gemv_u3_g128_f16_memonly_s2(GemvArgs g, DecArgs d) {
    gemv_dec_kernel<__half, 3, false, 128, 1, 2>(g, d);
}
extern "C" __global__ void __launch_bounds__(NTHREADS, GEMV_MINB) gemv_u3_g128_f16_computeonly_s2(GemvArgs g, DecArgs d) {
    gemv_dec_kernel<__half, 3, false, 128, 2, 2>(g, d);
}

extern "C" __global__ void __launch_bounds__(NTHREADS, GEMV_MINB) gemv_u3_g128_f16_decodeonly(GemvArgs g, DecArgs d) {
    gemv_dec_kernel<__half, 3, false, 128, 3>(g, d);
}
extern "C" __global__ void __launch_bounds__(NTHREADS, GEMV_MINB) gemv_u3_g128_f16_decodeonly_s2(GemvArgs g, DecArgs d) {
    gemv_dec_kernel<__half, 3, false, 128, 3, 2>(g, d);
}
extern "C" __global__ void __launch_bounds__(NTHREADS, GEMV_MINB) gemv_u3_g128_f16_mmaonly(GemvArgs g, DecArgs d) {
    gemv_dec_kernel<__half, 3, false, 128, 4>(g, d);
}
extern "C" __global__ void __launch_bounds__(NTHREADS, GEMV_MINB) gemv_u3_g128_f16_mmaonly_s2(GemvArgs g, DecArgs d) {
    gemv_dec_kernel<__half, 3, false, 128, 4, 2>(g, d);
}
extern "C" __global__ void __launch_bounds__(NTHREADS, GEMV_MINB) gemv_u3_g128_f16_memonly_st3(GemvArgs g, DecArgs d) {
    gemv_stream_kernel<__half, 3, 128, 1, 3>(g, d);
}
extern "C" __global__ void __launch_bounds__(NTHREADS, GEMV_MINB) gemv_u3_g128_f16_computeonly_st3(GemvArgs g, DecArgs d) {
    gemv_stream_kernel<__half, 3, 128, 2, 3>(g, d);
}

// ----------------------------------------------------------------------------------------------
// DEC with the original's structure (for parity and ablation): one cooperative kernel, selection by
// chunks, a grid-wide barrier, then the gather over column slices; writes dvec, which `add_dvec`
// folds into the output of a GEMV that ran concurrently on another stream.
// ----------------------------------------------------------------------------------------------
template <typename T>
__device__ void dec_coop(const T* __restrict__ x, int N, int K, DecArgs d, u32* bar) {
    pdl_launch_dependents();
    pdl_wait();
    extern __shared__ float smem[];
    const int ktot = dec_total_rows(K, d.k_chunk);
    const int nchunks = (K + 1023) / 1024;
    int* sh = reinterpret_cast<int*>(smem + NWARP * SLICE_COLS);
    for (int c = blockIdx.x; c < nchunks; c += gridDim.x) {
        int lo = c * 1024;
        int size = min(1024, K - lo);
        int kc = (d.k_chunk * size) / 1024;
        if (kc > 0)
            select_chunk_block<T>(x, d.x32, lo, size, kc, d.a, d.b, d.sel_idx + c * d.k_chunk, d.sel_val + c * d.k_chunk, sh);
    }
    // grid-wide barrier (co-residency guaranteed by the cooperative launch)
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) {
        volatile u32* vb = bar;
        u32 gen = vb[1];
        if (atomicAdd(bar, 1u) == gridDim.x - 1) {
            bar[0] = 0;
            __threadfence();
            atomicAdd(bar + 1, 1u);
        } else {
            while (vb[1] == gen) __nanosleep(32);
        }
        __threadfence();
    }
    __syncthreads();
    int* sidx = sh + SEL_SH;
    float* sval = reinterpret_cast<float*>(sidx + ktot);
    for (int i = threadIdx.x; i < ktot; i += blockDim.x) {
        sidx[i] = __ldcg(d.sel_idx + i);
        sval[i] = __ldcg(d.sel_val + i);
    }
    __syncthreads();
    const int W = (N + 7) / 8;
    const int n_slices = (W + SLICE_WORDS - 1) / SLICE_WORDS;
    for (int s = blockIdx.x; s < n_slices; s += gridDim.x) {
        fetch_slice(d.res, d.rscale, N, W, s, sidx, sval, ktot, smem, d.dvec);
        __syncthreads();
    }
}

extern "C" __global__ void __launch_bounds__(NTHREADS)
    dec_coop_f16(const __half* x, int N, int K, DecArgs d, u32* bar) {
    dec_coop<__half>(x, N, K, d, bar);
}
extern "C" __global__ void __launch_bounds__(NTHREADS)
    dec_coop_bf16(const __nv_bfloat16* x, int N, int K, DecArgs d, u32* bar) {
    dec_coop<__nv_bfloat16>(x, N, K, d, bar);
}

// (leaves the words empty for the fused design's hand-off)
template <typename T> __device__ void add_dvec(T* y, float* dvec, int N) {
    pdl_launch_dependents();
    pdl_wait();
    int n = blockIdx.x * blockDim.x + threadIdx.x;
    if (n < N) {
        y[n] = Dt<T>::from_f(Dt<T>::to_f(y[n]) + dvec[n]);
        dvec[n] = __uint_as_float(DEC_EMPTY);
    }
}
extern "C" __global__ void add_dvec_f16(__half* y, float* dvec, int N) { add_dvec(y, dvec, N); }
extern "C" __global__ void add_dvec_bf16(__nv_bfloat16* y, float* dvec, int N) { add_dvec(y, dvec, N); }

// ----------------------------------------------------------------------------------------------
// Producers that select where x is made (the decode step): one block per 1024-channel chunk
// computes its chunk of x and the salient channels of that chunk for the consumer GEMV's DEC.
// ----------------------------------------------------------------------------------------------

template <typename T>
__device__ void rmsnorm_sel(const float* h, const float* w, T* out, float* out32, int d, float eps, SelArgs sa) {
    pdl_launch_dependents();
    // this thread's 4 channels of the chunk: the weight before the PDL wait, h with the sum's
    // loads (one L2 round trip each on the decode step's critical path, not three; experiment 74)
    const int lo = blockIdx.x * 1024, size = min(1024, d - lo);
    float wv[4], hv[4];
#pragma unroll
    for (int i = 0; i < 4; i++) wv[i] = 4 * (int)threadIdx.x + i < size ? w[lo + 4 * threadIdx.x + i] : 0.f;
    pdl_wait();
    __shared__ float red[NWARP];
    __shared__ int sh[SEL_SH];
#pragma unroll
    for (int i = 0; i < 4; i++) hv[i] = 4 * (int)threadIdx.x + i < size ? h[lo + 4 * threadIdx.x + i] : 0.f;
    float ss = 0.f;
    for (int i = threadIdx.x; i < d; i += NTHREADS) ss = fmaf(h[i], h[i], ss);
    const float inv = block_rms_inv(ss, red, d, eps);
    float v[4];
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const int e = 4 * threadIdx.x + i;
        v[i] = 0.f;
        if (e < size) {
            v[i] = hv[i] * inv * wv[i];
            out[lo + e] = Dt<T>::from_f(v[i]);
            if (out32) out32[lo + e] = v[i];
        }
    }
    select_chunk_for(sa, v, blockIdx.x, size, sh);
}
extern "C" __global__ void __launch_bounds__(NTHREADS) rmsnorm_sel_f16(const float* h, const float* w, __half* out, float* o32, int d, float eps, SelArgs sa) { rmsnorm_sel(h, w, out, o32, d, eps, sa); }
extern "C" __global__ void __launch_bounds__(NTHREADS) rmsnorm_sel_bf16(const float* h, const float* w, __nv_bfloat16* out, float* o32, int d, float eps, SelArgs sa) { rmsnorm_sel(h, w, out, o32, d, eps, sa); }

template <typename T>
__device__ void silu_sel(const T* gu, T* out, float* out32, int f, SelArgs sa) {
    pdl_launch_dependents();
    pdl_wait();
    __shared__ int sh[SEL_SH];
    const int lo = blockIdx.x * 1024, size = min(1024, f - lo);
    float v[4];
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const int e = 4 * threadIdx.x + i;
        v[i] = 0.f;
        if (e < size) {
            float g = Dt<T>::to_f(gu[lo + e]), u = Dt<T>::to_f(gu[f + lo + e]);
            v[i] = g / (1.f + expf(-g)) * u;
            out[lo + e] = Dt<T>::from_f(v[i]);
            if (out32) out32[lo + e] = v[i];
        }
    }
    select_chunk_for(sa, v, blockIdx.x, size, sh);
}
extern "C" __global__ void __launch_bounds__(NTHREADS) silu_sel_f16(const __half* gu, __half* out, float* o32, int f, SelArgs sa) { silu_sel(gu, out, o32, f, sa); }
extern "C" __global__ void __launch_bounds__(NTHREADS) silu_sel_bf16(const __nv_bfloat16* gu, __nv_bfloat16* out, float* o32, int f, SelArgs sa) { silu_sel(gu, out, o32, f, sa); }

// Selection alone (benchmarks: the cost of selecting in a separate launch).
template <typename T> __device__ void select_only(const T* x, int K, SelArgs sa) {
    pdl_launch_dependents();
    pdl_wait();
    __shared__ int sh[SEL_SH];
    const int lo = blockIdx.x * 1024, size = min(1024, K - lo);
    const int kc = (sa.k_chunk * size) / 1024;
    if (kc > 0)
        select_chunk_block<T>(x, nullptr, lo, size, kc, sa.a, sa.b, sa.sel_idx + blockIdx.x * sa.k_chunk,
                              sa.sel_val + blockIdx.x * sa.k_chunk, sh);
}
extern "C" __global__ void __launch_bounds__(NTHREADS) select_only_f16(const __half* x, int K, SelArgs sa) { select_only(x, K, sa); }
extern "C" __global__ void __launch_bounds__(NTHREADS) select_only_bf16(const __nv_bfloat16* x, int K, SelArgs sa) { select_only(x, K, sa); }

// ----------------------------------------------------------------------------------------------
// Prefill compensation (T rows at once, each compensated as if decoded alone, as on the CPU):
// `pf_select` writes the salient channels of row t at sel_idx/sel_val + t * stride (chunk-major,
// k_chunk slots per chunk, as the decode step's list), `pf_dec_gather` turns them into the f32
// compensation comp[t, :] (one block per row and 256-column slice) that `pf_finish` adds.
// ----------------------------------------------------------------------------------------------
extern "C" __global__ void __launch_bounds__(NTHREADS) pf_select(const float* x32, int K, SelArgs sa, int stride) {
    __shared__ int sh[SEL_SH];
    const int nchunks = (K + 1023) / 1024;
    const int t = blockIdx.x / nchunks, c = blockIdx.x % nchunks;
    const int lo = c * 1024, size = min(1024, K - lo);
    const int kc = (sa.k_chunk * size) / 1024;
    if (kc == 0) return;
    const float* x = x32 + (size_t)t * K + lo;
    float v[4];
#pragma unroll
    for (int i = 0; i < 4; i++) v[i] = (4 * (int)threadIdx.x + i < size) ? x[4 * threadIdx.x + i] : 0.f;
    select_chunk_vals(v, lo, size, kc, sa.a, sa.b, sa.sel_idx + (size_t)t * stride + c * sa.k_chunk,
                      sa.sel_val + (size_t)t * stride + c * sa.k_chunk, sh);
}

extern "C" __global__ void __launch_bounds__(NTHREADS)
    pf_dec_gather(DecArgs d, int N, int K, int stride, float* comp) {
    extern __shared__ float smem[];
    const int ktot = dec_total_rows(K, d.k_chunk);
    const int W = (N + 7) / 8;
    const int n_slices = (W + SLICE_WORDS - 1) / SLICE_WORDS;
    const int t = blockIdx.x / n_slices, s = blockIdx.x % n_slices;
    int* sidx = reinterpret_cast<int*>(smem + NWARP * SLICE_COLS);
    float* sval = reinterpret_cast<float*>(sidx + ktot);
    for (int i = threadIdx.x; i < ktot; i += blockDim.x) {
        sidx[i] = d.sel_idx[(size_t)t * stride + i];
        sval[i] = d.sel_val[(size_t)t * stride + i];
    }
    __syncthreads();
    fetch_slice(d.res, d.rscale, N, W, s, sidx, sval, ktot, smem, comp + (size_t)t * N);
}

// ----------------------------------------------------------------------------------------------
// Dequantization of the tiled layout to a dense row-major [N][K] matrix in the activation dtype
// (prefill: dequantize + cuBLAS GEMM). One block per row tile, warps over chunks. With `lo`, the
// weight is split in two: out = T(w), lo = T(w - out), so that two GEMMs (out, then lo added)
// multiply by w to ~2^-22 instead of one T rounding (the GEMV multiplies the exact (q - z)).
// ----------------------------------------------------------------------------------------------
// 8 consecutive values of one row at p (and their remainders at q when q != nullptr); 16-byte
// stores when all 8 are inside the row and aligned (K % 8 == 0), else element by element.
template <typename T> __device__ __forceinline__ void store8(T* p, T* q, const float* v, int left, bool vec) {
    float hi[8];
#pragma unroll
    for (int i = 0; i < 8; i++) hi[i] = Dt<T>::to_f(Dt<T>::from_f(v[i]));
    if (vec && left >= 8) {
        *reinterpret_cast<uint4*>(p) = make_uint4(pack_pair<T>(v[0], v[1]), pack_pair<T>(v[2], v[3]),
                                                  pack_pair<T>(v[4], v[5]), pack_pair<T>(v[6], v[7]));
        if (q)
            *reinterpret_cast<uint4*>(q) = make_uint4(
                pack_pair<T>(v[0] - hi[0], v[1] - hi[1]), pack_pair<T>(v[2] - hi[2], v[3] - hi[3]),
                pack_pair<T>(v[4] - hi[4], v[5] - hi[5]), pack_pair<T>(v[6] - hi[6], v[7] - hi[7]));
        return;
    }
#pragma unroll
    for (int i = 0; i < 8; i++) {
        if (i < left) {
            p[i] = Dt<T>::from_f(v[i]);
            if (q) q[i] = Dt<T>::from_f(v[i] - hi[i]);
        }
    }
}

template <typename T, int BITS, bool LUT, int GSZ>
__device__ void dequant_tiled(const GemvArgs& g, T* out, T* lo) {
    pdl_launch_dependents();
    pdl_wait();
    extern __shared__ float smem[];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int gq = lane >> 2, tq = lane & 3;
    constexpr int U = (BITS == 4) ? 4 : 3;
    constexpr int GPC = CHUNK / GSZ;
    constexpr int SPG = GSZ / 16;
    static_assert(SPG % 2 == 0, "steps are stored in pairs");
    const int rt = blockIdx.x;
    const int n_tiles = (g.N + TILE - 1) / TILE;
    const bool vec = (g.K & 7) == 0;
    using Dec = typename Cond<LUT, LutDec<T, BITS>, UniformDec<T, BITS>>::type;
    Dec dec;
    if constexpr (LUT) dec.load_tile(g.lut, g.N, rt, reinterpret_cast<u32*>(smem));
    for (int c = warp; c < g.KC; c += NWARP) {
        uint4 w0[U];
#pragma unroll
        for (int i = 0; i < U; i++) w0[i] = g.qw[(((size_t)c * n_tiles + rt) * U + i) * 32 + lane];
        const u32* wv = reinterpret_cast<const u32*>(w0);
#pragma unroll
        for (int gi = 0; gi < GPC; gi++) {
            if constexpr (!LUT) {
                const u32* szp = g.sz + ((size_t)(c * GPC + gi) * n_tiles + rt) * TILE;
                dec.set_group(szp[gq], szp[gq + 8]);
            }
#pragma unroll
            for (int ls = 0; ls < SPG; ls += 2) {
                // steps s (even) and s + 1 hold this lane's columns k0 + 0..3 and k0 + 4..7 of
                // rows gq (registers 0, 2) and gq + 8 (registers 1, 3)
                const int s = gi * SPG + ls;
                u32 a[2][4];
                decode_step<T, BITS>(dec, wv, s, a[0]);
                decode_step<T, BITS>(dec, wv, s + 1, a[1]);
                const int k0 = c * CHUNK + 32 * (s >> 1) + 8 * tq;
#pragma unroll
                for (int r = 0; r < 2; r++) {
                    const int row = rt * TILE + gq + 8 * r;
                    if (row >= g.N || k0 >= g.K) continue;
                    float v[8];
#pragma unroll
                    for (int h = 0; h < 2; h++)
#pragma unroll
                        for (int p = 0; p < 2; p++) {
                            const T* pr = reinterpret_cast<const T*>(&a[h][r + 2 * p]);
#pragma unroll
                            for (int e = 0; e < 2; e++) {
                                float x = Dt<T>::to_f(pr[e]);
                                if constexpr (!LUT) x *= dec.sc[r];
                                v[4 * h + 2 * p + e] = x;
                            }
                        }
                    const size_t o = (size_t)row * g.K + k0;
                    store8<T>(out + o, lo ? lo + o : nullptr, v, g.K - k0, vec);
                }
            }
        }
    }
}

#define DEQUANT_ENTRY(NAME, T, BITS, LUT, GSZ) \
    extern "C" __global__ void __launch_bounds__(NTHREADS) NAME(GemvArgs g, T* out, T* lo) { dequant_tiled<T, BITS, LUT, GSZ>(g, out, lo); }

DEQUANT_ENTRY(dequant_u3_g128_f16, __half, 3, false, 128)
DEQUANT_ENTRY(dequant_u4_g128_f16, __half, 4, false, 128)
DEQUANT_ENTRY(dequant_u3_g128_bf16, __nv_bfloat16, 3, false, 128)
DEQUANT_ENTRY(dequant_u4_g128_bf16, __nv_bfloat16, 4, false, 128)
DEQUANT_ENTRY(dequant_l3_f16, __half, 3, true, 256)
DEQUANT_ENTRY(dequant_l4_f16, __half, 4, true, 256)
DEQUANT_ENTRY(dequant_l3_bf16, __nv_bfloat16, 3, true, 256)
DEQUANT_ENTRY(dequant_l4_bf16, __nv_bfloat16, 4, true, 256)
