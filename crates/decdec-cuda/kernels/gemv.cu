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
//   Per (tile, group, row) one u32: the f32 group scale with its low 4 mantissa bits replaced by the
//   integer zero point (relative change of the scale < 2^-19).
//
// DEC (design "fused"): the first n_dec blocks of the launch select the salient channels (every DEC
// block computes the same deterministic selection, so no grid-wide sync is needed), gather their
// residual rows from mapped pinned host memory, and publish f32 partial outputs per 256-column slice
// with a flag; the GEMV blocks stream the weights meanwhile and only their epilogue waits for the flag
// of their slice. Relies on lower block indices being dispatched first (as decoupled look-back does).

#define TILE 16
#define CHUNK 256
#define NWARP 8
#define NTHREADS 256
#define SLICE_WORDS 32   // residual words per slice and warp pass (128 B per warp load)
#define SLICE_COLS 256   // 8 four-bit codes per word

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
    __device__ __forceinline__ void set_group(u32 vg, u32 v8) {
        u32 v[2] = {vg, v8};
#pragma unroll
        for (int r = 0; r < 2; r++) {
            sc[r] = __uint_as_float(v[r] & ~0xFu);
            float z = (float)(v[r] & 0xFu);
#pragma unroll
            for (int j = 0; j < 3; j++) bc[r][j] = splat2<T>(-(Mg<T>::MF * sval(j) + z));
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

// x values of lane t for the step pair sp of chunk c (8 consecutive elements, zero past K).
template <typename T>
__device__ __forceinline__ uint4 load_x8(const T* __restrict__ x, int K, int base) {
    if (base + 8 <= K) return *reinterpret_cast<const uint4*>(x + base);
    unsigned short e[8];
#pragma unroll
    for (int i = 0; i < 8; i++) {
        T v = (base + i < K) ? x[base + i] : Dt<T>::from_f(0.f);
        e[i] = *reinterpret_cast<unsigned short*>(&v);
    }
    uint4 r;
    r.x = e[0] | ((u32)e[1] << 16);
    r.y = e[2] | ((u32)e[3] << 16);
    r.z = e[4] | ((u32)e[5] << 16);
    r.w = e[6] | ((u32)e[7] << 16);
    return r;
}

// ----------------------------------------------------------------------------------------------
// Salient-channel selection of one 1024-channel chunk by a whole block (4 channels per thread),
// exactly decdec_core::selection::select_bucket: bucket floors f_i = a + ((b - a) * i) / 15 (i < 16),
// (b * (31 - i)) / 16 (i >= 16), running min; bucket(v) = min{i : |v| >= f_i}, NaN -> 31; whole
// buckets while they fit the budget, then the lowest channel indices of the boundary bucket.
// Output: the selected channels in increasing order, padded with zero contributions if short.
// ----------------------------------------------------------------------------------------------
__device__ __forceinline__ float bucket_floor_raw(float a, float b, int i) {
    if (i < 16) return __fadd_rn(a, __fdiv_rn(__fmul_rn(__fsub_rn(b, a), (float)i), 15.f));
    return __fdiv_rn(__fmul_rn(b, (float)(31 - i)), 16.f);
}

// exclusive block scan of one int per thread (NTHREADS threads); sh: >= NWARP ints
__device__ __forceinline__ int block_excl_scan(int v, int* sh, int& total) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int incl = v;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        int t = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl += t;
    }
    __syncthreads();
    if (lane == 31) sh[warp] = incl;
    __syncthreads();
    int before = 0;
    total = 0;
#pragma unroll
    for (int w = 0; w < NWARP; w++) {
        int t = sh[w];
        if (w < warp) before += t;
        total += t;
    }
    return before + incl - v;
}

template <typename T>
__device__ void select_chunk_block(const T* __restrict__ x, int lo, int size, int kc, float a, float b,
                                   int* gidx, float* gval, int* sh) {
    const int lane = threadIdx.x & 31;
    float fl = bucket_floor_raw(a, b, lane);
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        float t = __shfl_up_sync(0xffffffffu, fl, o);
        if (lane >= o) fl = fminf(fl, t);
    }
    int* hist = sh;        // 32
    int* scan = sh + 32;   // NWARP
    int* bnd = sh + 48;    // boundary bucket, need
    if (threadIdx.x < 32) hist[threadIdx.x] = 0;
    const int e0 = 4 * threadIdx.x;
    float v[4];
    int bk[4];
    if (e0 + 4 <= size && ((lo + e0) & 3) == 0) {
        // one 8-byte load for the thread's 4 channels
        uint2 r = *reinterpret_cast<const uint2*>(x + lo + e0);
        const T* t = reinterpret_cast<const T*>(&r);
#pragma unroll
        for (int i = 0; i < 4; i++) v[i] = Dt<T>::to_f(t[i]);
    } else {
#pragma unroll
        for (int i = 0; i < 4; i++) v[i] = (e0 + i < size) ? Dt<T>::to_f(x[lo + e0 + i]) : 0.f;
    }
    int l[4] = {0, 0, 0, 0};
    // first i with floor[i] <= |v| (floors non-increasing, floor[31] = 0): 5 halving steps, the
    // four channels interleaved
#pragma unroll
    for (int step = 16; step >= 1; step >>= 1) {
#pragma unroll
        for (int i = 0; i < 4; i++) {
            float f = __shfl_sync(0xffffffffu, fl, l[i] + step - 1);
            if (f > fabsf(v[i])) l[i] += step;
        }
    }
#pragma unroll
    for (int i = 0; i < 4; i++) {
        float av = fabsf(v[i]);
        bk[i] = (e0 + i >= size) ? 32 : (av != av ? 31 : min(l[i], 31));
    }
    __syncthreads();
#pragma unroll
    for (int i = 0; i < 4; i++)
        if (bk[i] < 32) atomicAdd(hist + bk[i], 1);
    __syncthreads();
    if (threadIdx.x < 32) {
        int hcnt = hist[lane];
        int incl = hcnt;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            int t = __shfl_up_sync(0xffffffffu, incl, o);
            if (lane >= o) incl += t;
        }
        // boundary: first bucket whose inclusive count exceeds the budget (whole buckets that fit)
        unsigned over = __ballot_sync(0xffffffffu, incl > kc);
        int B = over ? __ffs(over) - 1 : 32;
        int before = __shfl_sync(0xffffffffu, incl - hcnt, B & 31);
        if (lane == 0) {
            bnd[0] = B;
            bnd[1] = B < 32 ? kc - before : 0;
        }
    }
    __syncthreads();
    const int B = bnd[0], need = bnd[1];
    int nb = 0;
#pragma unroll
    for (int i = 0; i < 4; i++) nb += bk[i] == B ? 1 : 0;
    int tot;
    int rank = block_excl_scan(nb, scan, tot);
    int flags = 0, ns = 0;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        bool s = bk[i] < B || (bk[i] == B && rank < need);
        if (bk[i] == B) rank++;
        if (s) { flags |= 1 << i; ns++; }
    }
    int total;
    int pos = block_excl_scan(ns, scan, total);
#pragma unroll
    for (int i = 0; i < 4; i++) {
        if ((flags >> i) & 1) {
            if (pos < kc) {
                gidx[pos] = lo + e0 + i;
                gval[pos] = v[i];
            }
            pos++;
        }
    }
    for (int p = total + threadIdx.x; p < kc; p += NTHREADS) {
        gidx[p] = lo;
        gval[p] = 0.f;
    }
    __syncthreads();
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
        if (n < N) dvec[n] = sum * rscale[n];
    }
}

// ----------------------------------------------------------------------------------------------
// Kernel arguments
// ----------------------------------------------------------------------------------------------
struct DecArgs {
    const u32* res;       // mapped pinned host memory: residual [K][W] (4-bit codes)
    const float* rscale;  // device: residual scales [N]
    float* dvec;          // device scratch [N]: compensation
    float* bvec;          // device scratch [N]: base GEMV result (fused design)
    int* slice_cnt;       // device [n_slices], zero between calls: arrivals per slice
    int* sel_sync;        // device [2], zero between calls: chunks selected, DEC blocks past the wait
    int* sel_idx;         // device [>= rows]: selected channels (also the debug output)
    float* sel_val;       // device [>= rows]
    float a, b;           // bucket anchors thresholds[0], thresholds[kk-1]
    int k_chunk;
    int n_dec;            // number of DEC blocks at the front of the grid (0 = no DEC)
    long long* dbg_t;     // optional: clock64 stamps of DEC block 0 / GEMV block 0 phases
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
};

template <typename T>
__device__ __forceinline__ void store_out(const GemvArgs& g, int n, float v) {
    if (g.out_mode == 0) reinterpret_cast<T*>(g.y)[n] = Dt<T>::from_f(v);
    else if (g.out_mode == 1) reinterpret_cast<float*>(g.y)[n] += v;
    else reinterpret_cast<float*>(g.y)[n] = v;
}

// Slice s has all its parts (base tiles + compensation): the last arriver writes the outputs.
template <typename T>
__device__ void arrive_slice(const GemvArgs& g, const DecArgs& d, int s, int parts) {
    __shared__ int last;
    __syncthreads();
    if (threadIdx.x == 0) {
        const int n_tiles = (g.N + TILE - 1) / TILE;
        const int expect = min(SLICE_COLS / TILE, n_tiles - s * (SLICE_COLS / TILE)) + 1;
        // release this block's writes (ordered before by the barrier), acquire the others'
        int old;
        asm volatile("atom.acq_rel.gpu.global.add.s32 %0, [%1], %2;\n" : "=r"(old) : "l"(d.slice_cnt + s), "r"(parts) : "memory");
        last = (old + parts == expect);
        if (last) d.slice_cnt[s] = 0;
    }
    __syncthreads();
    if (last) {
        const int n = s * SLICE_COLS + threadIdx.x;
        if (n < g.N) store_out<T>(g, n, __ldcg(d.bvec + n) + __ldcg(d.dvec + n));
    }
}

// ----------------------------------------------------------------------------------------------
// GEMV blocks: (8 / split) row tiles per block, `split` warps per tile share its chunks.
// Weights (and the group scale words) are prefetched three chunks ahead.
// ----------------------------------------------------------------------------------------------
template <typename T, int BITS, bool LUT, int GSZ>
__device__ void gemv_block(const GemvArgs& g, const DecArgs& d, int bid, float* smem) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int gq = lane >> 2, tq = lane & 3;
    constexpr int U = (BITS == 4) ? 4 : 3;
    constexpr int GPC = CHUNK / GSZ;   // groups per chunk
    constexpr int SPG = GSZ / 16;      // steps per group
    const int S = LUT ? NWARP : g.split;
    const int TPB = NWARP / S;          // tiles per block
    const int rt = bid * TPB + warp / S;
    const int split = warp % S;
    const int n_tiles = (g.N + TILE - 1) / TILE;
    const T* x = reinterpret_cast<const T*>(g.x);

    float* red = smem;  // [NWARP][TILE]
    using Dec = typename Cond<LUT, LutDec<T, BITS>, UniformDec<T, BITS>>::type;
    Dec dec;
    if constexpr (LUT) {
        u32* tab = reinterpret_cast<u32*>(smem + NWARP * TILE);
        constexpr int NE = 1 << (2 * BITS);
        constexpr int L = 1 << BITS;
        for (int i = threadIdx.x; i < TILE * NE; i += NTHREADS) {
            int r = i / NE, e = i % NE;
            int row = rt * TILE + r;
            float lo = 0.f, hi = 0.f;
            if (row < g.N) {
                lo = g.lut[(size_t)row * L + (e & (L - 1))];
                hi = g.lut[(size_t)row * L + (e >> BITS)];
            }
            T tl = Dt<T>::from_f(lo), th = Dt<T>::from_f(hi);
            tab[i] = (u32)(*reinterpret_cast<unsigned short*>(&tl)) |
                     ((u32)(*reinterpret_cast<unsigned short*>(&th)) << 16);
        }
        __syncthreads();
        dec.tab_g = tab + gq * NE;
        dec.tab_8 = tab + (gq + 8) * NE;
    }

    float acc_g = 0.f, acc_8 = 0.f;
    float cl[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};  // LUT: accumulators over all K
    const uint4* qbase = g.qw + (size_t)rt * g.KC * U * 32 + lane;
    const u32* szbase = g.sz + (size_t)rt * g.GP * TILE + gq;
    uint4 w0[U], w1[U], w2[U], w3[U];
    u32 s0[2 * GPC], s1[2 * GPC], s2[2 * GPC], s3[2 * GPC];
    const bool live = rt < n_tiles;
    auto load = [&](int c, uint4* w, u32* sc) {
        if (live && c < g.KC) {
#pragma unroll
            for (int i = 0; i < U; i++) w[i] = ldg_stream(qbase + ((size_t)c * U + i) * 32);
            if constexpr (!LUT) {
#pragma unroll
                for (int gi = 0; gi < GPC; gi++) {
                    sc[2 * gi] = __ldg(szbase + (size_t)(c * GPC + gi) * TILE);
                    sc[2 * gi + 1] = __ldg(szbase + (size_t)(c * GPC + gi) * TILE + 8);
                }
            }
        }
    };
    // weights first (longest latency), then stage x in shared memory while they are in flight
    load(split, w0, s0);
    load(split + S, w1, s1);
    load(split + 2 * S, w2, s2);
    uint4* xs = reinterpret_cast<uint4*>(smem + NWARP * TILE + (LUT ? TILE * (1 << (2 * BITS)) : 0));
    for (int i = threadIdx.x; i < g.KC * (CHUNK / 8); i += NTHREADS) xs[i] = load_x8<T>(x, g.K, 8 * i);
    __syncthreads();
    if (live) {
        for (int c = split; c < g.KC; c += S) {
            load(c + 3 * S, w3, s3);
            const u32* wv = reinterpret_cast<const u32*>(w0);
            const uint4* xc = xs + c * (CHUNK / 8) + tq;
#pragma unroll
            for (int gi = 0; gi < GPC; gi++) {
                float cf[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
                if constexpr (!LUT) dec.set_group(s0[2 * gi], s0[2 * gi + 1]);
                uint4 xg[SPG / 2];
#pragma unroll
                for (int p = 0; p < SPG / 2; p++) xg[p] = xc[4 * (gi * SPG / 2 + p)];
#pragma unroll
                for (int ls = 0; ls < SPG; ls++) {
                    const int s = gi * SPG + ls;
                    const uint4 xv = xg[ls >> 1];
                    u32 a[4];
                    decode_step<T, BITS>(dec, wv, s, a);
                    u32 b0 = (s & 1) ? xv.z : xv.x;
                    u32 b1 = (s & 1) ? xv.w : xv.y;
                    if constexpr (LUT) mma16816<T>(cl[s & 1], a[0], a[1], a[2], a[3], b0, b1);
                    else mma16816<T>(cf[s & 1], a[0], a[1], a[2], a[3], b0, b1);
                }
                if constexpr (!LUT) {
                    acc_g = fmaf(dec.sc[0], cf[0][0] + cf[1][0], acc_g);
                    acc_8 = fmaf(dec.sc[1], cf[0][2] + cf[1][2], acc_8);
                }
            }
#pragma unroll
            for (int i = 0; i < U; i++) { w0[i] = w1[i]; w1[i] = w2[i]; w2[i] = w3[i]; }
#pragma unroll
            for (int i = 0; i < 2 * GPC; i++) { s0[i] = s1[i]; s1[i] = s2[i]; s2[i] = s3[i]; }
        }
    }
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
    if (d.n_dec == 0) {
        if (n >= 0) store_out<T>(g, n, sum);
        return;
    }
    // DEC: publish the base result; the last part of the slice writes the outputs
    if (n >= 0) d.bvec[n] = sum;
    const int first_tile = bid * TPB;
    const int tiles_here = min(TPB, n_tiles - first_tile);
    arrive_slice<T>(g, d, (first_tile * TILE) / SLICE_COLS, tiles_here);
}

template <typename T>
__device__ void dec_blocks(const GemvArgs& g, const DecArgs& d, float* smem) {
    const int K = g.K;
    const int ktot = dec_total_rows(K, d.k_chunk);
    const int nchunks = (K + 1023) / 1024;
    int* sh = reinterpret_cast<int*>(smem + NWARP * SLICE_COLS);
    int* sidx = sh + 64;
    float* sval = reinterpret_cast<float*>(sidx + ktot);
    const bool stamp = d.dbg_t != nullptr && blockIdx.x == 0 && threadIdx.x == 0;
    if (stamp) d.dbg_t[0] = clock64();
    // 1. selection: chunk c by DEC block c % n_dec
    for (int c = blockIdx.x; c < nchunks; c += d.n_dec) {
        const int lo = c * 1024, size = min(1024, K - lo);
        const int kc = (d.k_chunk * size) / 1024;
        if (kc > 0)
            select_chunk_block<T>(reinterpret_cast<const T*>(g.x), lo, size, kc, d.a, d.b, d.sel_idx + c * d.k_chunk,
                                  d.sel_val + c * d.k_chunk, sh);
        __syncthreads();
        if (threadIdx.x == 0) asm volatile("red.release.gpu.global.add.s32 [%0], 1;\n" ::"l"(d.sel_sync) : "memory");
    }
    if (stamp) d.dbg_t[1] = clock64();
    // 2. wait for every chunk (all DEC blocks are resident: they are the lowest block indices)
    if (threadIdx.x == 0) {
        int ready;
        do {
            asm volatile("ld.acquire.gpu.global.s32 %0, [%1];\n" : "=r"(ready) : "l"(d.sel_sync) : "memory");
        } while (ready < nchunks);
    }
    if (stamp) d.dbg_t[2] = clock64();
    __syncthreads();
    for (int i = threadIdx.x; i < ktot; i += NTHREADS) {
        sidx[i] = __ldcg(d.sel_idx + i);
        sval[i] = __ldcg(d.sel_val + i);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        // the last DEC block past the wait resets the counters for the next call
        if (atomicAdd(d.sel_sync + 1, 1) == d.n_dec - 1) {
            d.sel_sync[0] = 0;
            d.sel_sync[1] = 0;
        }
    }
    // 3. gather slices and hand them to the finalizer
    const int W = (g.N + 7) / 8;
    const int n_slices = (W + SLICE_WORDS - 1) / SLICE_WORDS;
    for (int s = blockIdx.x; s < n_slices; s += d.n_dec) {
        fetch_slice(d.res, d.rscale, g.N, W, s, sidx, sval, ktot, smem, d.dvec);
        if (stamp && s == 0) d.dbg_t[3] = clock64();
        arrive_slice<T>(g, d, s, 1);
        if (stamp && s == 0) d.dbg_t[4] = clock64();
    }
}

template <typename T, int BITS, bool LUT, int GSZ>
__device__ void gemv_dec_kernel(const GemvArgs& g, const DecArgs& d) {
    extern __shared__ float smem[];
    if ((int)blockIdx.x < d.n_dec) {
        dec_blocks<T>(g, d, smem);
        return;
    }
    const bool stamp = d.dbg_t != nullptr && blockIdx.x == d.n_dec && threadIdx.x == 0;
    if (stamp) d.dbg_t[8] = clock64();
    gemv_block<T, BITS, LUT, GSZ>(g, d, blockIdx.x - d.n_dec, smem);
    if (stamp) d.dbg_t[9] = clock64();
}

#define GEMV_ENTRY(NAME, T, BITS, LUT, GSZ)                                                        \
    extern "C" __global__ void __launch_bounds__(NTHREADS, 2) NAME(GemvArgs g, DecArgs d) {       \
        gemv_dec_kernel<T, BITS, LUT, GSZ>(g, d);                                                  \
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
GEMV_ENTRY(gemv_l3_f16, __half, 3, true, 256)
GEMV_ENTRY(gemv_l4_f16, __half, 4, true, 256)
GEMV_ENTRY(gemv_l3_bf16, __nv_bfloat16, 3, true, 256)
GEMV_ENTRY(gemv_l4_bf16, __nv_bfloat16, 4, true, 256)

// ----------------------------------------------------------------------------------------------
// DEC with the original's structure (for parity and ablation): one cooperative kernel, selection by
// chunks, a grid-wide barrier, then the gather over column slices; writes dvec, which `add_dvec`
// folds into the output of a GEMV that ran concurrently on another stream.
// ----------------------------------------------------------------------------------------------
template <typename T>
__device__ void dec_coop(const T* __restrict__ x, int N, int K, DecArgs d, u32* bar) {
    extern __shared__ float smem[];
    const int ktot = dec_total_rows(K, d.k_chunk);
    const int nchunks = (K + 1023) / 1024;
    int* sh = reinterpret_cast<int*>(smem + NWARP * SLICE_COLS);
    for (int c = blockIdx.x; c < nchunks; c += gridDim.x) {
        int lo = c * 1024;
        int size = min(1024, K - lo);
        int kc = (d.k_chunk * size) / 1024;
        if (kc > 0) select_chunk_block<T>(x, lo, size, kc, d.a, d.b, d.sel_idx + c * d.k_chunk, d.sel_val + c * d.k_chunk, sh);
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
    int* sidx = sh + 64;
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

template <typename T> __device__ void add_dvec(T* y, const float* dvec, int N) {
    int n = blockIdx.x * blockDim.x + threadIdx.x;
    if (n < N) y[n] = Dt<T>::from_f(Dt<T>::to_f(y[n]) + dvec[n]);
}
extern "C" __global__ void add_dvec_f16(__half* y, const float* dvec, int N) { add_dvec(y, dvec, N); }
extern "C" __global__ void add_dvec_bf16(__nv_bfloat16* y, const float* dvec, int N) { add_dvec(y, dvec, N); }
