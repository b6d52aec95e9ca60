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
    static constexpr int U = (BITS == 4) ? 4 : 3;  // uint4 per (lane, chunk)
    u32 bc[2][3];                                  // -(magic * S_j + z) per row and position class
    float sc[2];                                   // group scales

    __device__ __forceinline__ void set_group(u32 vg, u32 v8) {
        u32 v[2] = {vg, v8};
#pragma unroll
        for (int r = 0; r < 2; r++) {
            sc[r] = __uint_as_float(v[r] & ~0xFu);
            float z = (float)(v[r] & 0xFu);
#pragma unroll
            for (int j = 0; j < 3; j++) {
                float S = (BITS == 4) ? (j == 0 ? 1.f : 1.f / 16.f) : (j == 0 ? 1.f : (j == 1 ? 0.125f : 1.f / 64.f));
                bc[r][j] = splat2<T>(-(Mg<T>::MF * S + z));
            }
        }
    }
    // value of the code pair found at (word >> shift) bits (pos, pos+16), row r, scale class j
    __device__ __forceinline__ u32 pair(u32 w, int shift, int pos, int r, int j) const {
        u32 mask = ((BITS == 4 ? 0xFu : 0x7u) << pos) * 0x10001u;
        float S = (BITS == 4) ? (j == 0 ? 1.f : 1.f / 16.f) : (j == 0 ? 1.f : (j == 1 ? 0.125f : 1.f / 64.f));
        return fma2<T>(lop3_and_or(w >> shift, mask, Mg<T>::M), splat2<T>(S), bc[r][j]);
    }
    __device__ __forceinline__ u32 spread(u32 w0, u32 w1, u32 w2, int r) const {
        u32 v = lop3_and_or(w0 >> 15, 0x00010001u, Mg<T>::M);
        v = lop3_and_or(w1 >> 14, 0x00020002u, v);
        v = lop3_and_or(w2 >> 13, 0x00040004u, v);
        return fma2<T>(v, splat2<T>(1.f), bc[r][0]);
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
// Salient-channel selection (one warp per 1024-channel chunk, deterministic).
// Bucket floors as the original: f_i = a + (b - a) * i / 15 for i < 16, b * (31 - i) / 16 after.
// The channels of buckets above the boundary bucket are all taken; inside the boundary bucket the
// lowest channel indices first. Output in increasing channel order.
// ----------------------------------------------------------------------------------------------
__device__ __forceinline__ float bucket_floor_raw(float a, float b, int i) {
    if (i < 16) return __fadd_rn(a, __fdiv_rn(__fmul_rn(__fsub_rn(b, a), (float)i), 15.f));
    return __fdiv_rn(__fmul_rn(b, (float)(31 - i)), 16.f);
}

template <typename T>
__device__ void select_chunk_warp(const T* __restrict__ x, int lo, int size, int kc, float a, float b,
                                  int* out_idx, float* out_val) {
    const int lane = threadIdx.x & 31;
    // lane i holds floor[i] = min(raw floors 0..=i) (decdec_core::selection::bucket_floors)
    float fl = bucket_floor_raw(a, b, lane);
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        float t = __shfl_up_sync(0xffffffffu, fl, o);
        if (lane >= o) fl = fminf(fl, t);
    }
    auto bucket_floor = [&](float, float, int i) { return __shfl_sync(0xffffffffu, fl, i); };
    // lane owns elements [32*lane, 32*lane + 32) of the chunk
    float v[32];
#pragma unroll
    for (int i = 0; i < 32; i++) {
        int e = 32 * lane + i;
        v[i] = (e < size) ? fabsf(Dt<T>::to_f(x[lo + e])) : -1.f;
    }
    auto count_ge = [&](float f) {
        int c = 0;
#pragma unroll
        for (int i = 0; i < 32; i++) c += (v[i] >= f) ? 1 : 0;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) c += __shfl_xor_sync(0xffffffffu, c, o);
        return c;
    };
    int lo_b = 0, hi_b = 31;
    while (lo_b < hi_b) {
        int mid = (lo_b + hi_b) >> 1;
        if (count_ge(bucket_floor(a, b, mid)) >= kc) hi_b = mid; else lo_b = mid + 1;
    }
    const int B = lo_b;
    const float fB = bucket_floor(a, b, B);
    const float fA = B > 0 ? bucket_floor(a, b, B - 1) : __int_as_float(0x7f800000);
    const int above = B > 0 ? count_ge(fA) : 0;
    const int need = kc - above;
    // rank of boundary-bucket members in channel order
    int nb = 0;
#pragma unroll
    for (int i = 0; i < 32; i++) nb += (v[i] >= fB && v[i] < fA) ? 1 : 0;
    int incl = nb;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        int t = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl += t;
    }
    int rank = incl - nb;
    unsigned sel = 0;
    int ns = 0;
#pragma unroll
    for (int i = 0; i < 32; i++) {
        bool in_b = v[i] >= fB && v[i] < fA;
        bool s = (v[i] >= fA) || (in_b && rank < need);
        if (in_b) rank++;
        if (s) { sel |= 1u << i; ns++; }
    }
    int pincl = ns;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        int t = __shfl_up_sync(0xffffffffu, pincl, o);
        if (lane >= o) pincl += t;
    }
    int pos = pincl - ns;
    int total = __shfl_sync(0xffffffffu, pincl, 31);
#pragma unroll
    for (int i = 0; i < 32; i++) {
        if ((sel >> i) & 1u) {
            if (pos < kc) {
                out_idx[pos] = lo + 32 * lane + i;
                out_val[pos] = Dt<T>::to_f(x[lo + 32 * lane + i]);
            }
            pos++;
        }
    }
    // NaN activations can leave the budget unfilled: pad with zero contributions.
    for (int p = total + lane; p < kc; p += 32) {
        out_idx[p] = lo;
        out_val[p] = 0.f;
    }
}

// Every warp of the block takes chunks warp, warp + nwarps, ...; result in smem, block-synchronized.
template <typename T>
__device__ void select_all_block(const T* __restrict__ x, int K, int k_chunk, float a, float b, int* sidx,
                                 float* sval) {
    const int warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    const int nchunks = (K + 1023) / 1024;
    for (int c = warp; c < nchunks; c += nw) {
        int lo = c * 1024;
        int size = min(1024, K - lo);
        int kc = (k_chunk * size) / 1024;
        if (kc > 0) select_chunk_warp<T>(x, lo, size, kc, a, b, sidx + c * k_chunk, sval + c * k_chunk);
    }
    __syncthreads();
}

__host__ __device__ __forceinline__ int dec_total_rows(int K, int k_chunk) {
    int full = K / 1024, rem = K % 1024;
    return full * k_chunk + (k_chunk * rem) / 1024;
}

// Gather the residual rows of the selected channels for one slice of 256 output columns and write
// d[n] = scale[n] * sum_r x_r * (code - 8). Fixed summation order (rows by warp, then warps 0..7).
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
    __syncthreads();
}

// ----------------------------------------------------------------------------------------------
// The GEMV (+ fused DEC) kernel body.
// ----------------------------------------------------------------------------------------------
struct DecArgs {
    const u32* res;       // mapped pinned host memory: residual [K][W] (4-bit codes)
    const float* rscale;  // device: residual scales [N]
    float* dvec;          // device scratch [N]
    int* flags;           // device [n_slices] (zero between calls)
    int* consumed;        // device [n_slices] (zero between calls)
    int* dbg_sel;         // optional: selected channels written by DEC block 0
    float a, b;           // bucket anchors thresholds[0], thresholds[k-1]
    int k_chunk;
    int n_dec;            // number of DEC blocks at the front of the grid (0 = no DEC)
};

struct GemvArgs {
    const uint4* qw;   // tiled codes
    const u32* sz;     // tiled scale|zero (uniform) or nullptr
    const float* lut;  // canonical LUT [N][2^bits] (LUT format) or nullptr
    const void* x;     // activations [K]
    void* y;           // output (see out_mode)
    int N, K, KC, GP;  // rows, columns, 256-chunks, groups per tile row (padded)
    int out_mode;      // 0: y = T[N]; 1: y = f32[N], y += result; 2: y = f32[N], y = result
};

template <typename T, int BITS, bool LUT, int GSZ>
__device__ void gemv_block(const GemvArgs& g, const DecArgs& d, int rt, float* smem) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int gq = lane >> 2, tq = lane & 3;
    constexpr int U = (BITS == 4) ? 4 : 3;
    constexpr int GPC = CHUNK / GSZ;   // groups per chunk
    constexpr int SPG = GSZ / 16;      // steps per group
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
    float cl[4] = {0.f, 0.f, 0.f, 0.f};  // LUT: one accumulator over all K
    const uint4* qbase = g.qw + (size_t)rt * g.KC * U * 32 + lane;
    uint4 wcur[U], wnext[U];
    int c = warp;
    if (c < g.KC) {
#pragma unroll
        for (int i = 0; i < U; i++) wcur[i] = ldg_stream(qbase + ((size_t)c * U + i) * 32);
    }
    for (; c < g.KC; c += NWARP) {
        if (c + NWARP < g.KC) {
#pragma unroll
            for (int i = 0; i < U; i++) wnext[i] = ldg_stream(qbase + ((size_t)(c + NWARP) * U + i) * 32);
        }
        const u32* wv = reinterpret_cast<const u32*>(wcur);
        const int xb = c * CHUNK + 8 * tq;
#pragma unroll
        for (int gi = 0; gi < GPC; gi++) {
            float cf[4] = {0.f, 0.f, 0.f, 0.f};
            if constexpr (!LUT) {
                const u32* szp = g.sz + ((size_t)rt * g.GP + c * GPC + gi) * TILE;
                dec.set_group(szp[gq], szp[gq + 8]);
            }
            uint4 xv;
#pragma unroll
            for (int ls = 0; ls < SPG; ls++) {
                const int s = gi * SPG + ls;
                if ((s & 1) == 0) xv = load_x8<T>(x, g.K, xb + 32 * (s >> 1));
                u32 a[4];
                decode_step<T, BITS>(dec, wv, s, a);
                u32 b0 = (s & 1) ? xv.z : xv.x;
                u32 b1 = (s & 1) ? xv.w : xv.y;
                if constexpr (LUT) mma16816<T>(cl, a[0], a[1], a[2], a[3], b0, b1);
                else mma16816<T>(cf, a[0], a[1], a[2], a[3], b0, b1);
            }
            if constexpr (!LUT) {
                acc_g = fmaf(dec.sc[0], cf[0], acc_g);
                acc_8 = fmaf(dec.sc[1], cf[2], acc_8);
            }
        }
#pragma unroll
        for (int i = 0; i < U; i++) wcur[i] = wnext[i];
    }
    if constexpr (LUT) {
        acc_g = cl[0];
        acc_8 = cl[2];
    }
    if (tq == 0) {
        red[warp * TILE + gq] = acc_g;
        red[warp * TILE + gq + 8] = acc_8;
    }
    __syncthreads();

    // DEC: wait for the slice holding this tile (flags are set by the DEC blocks of this launch).
    const int slice = (rt * TILE) / SLICE_COLS;
    if (d.n_dec > 0) {
        if (threadIdx.x == 0) {
            volatile int* f = d.flags + slice;
            while (*f == 0) __nanosleep(64);
            __threadfence();
        }
        __syncthreads();
    }
    if (threadIdx.x < TILE) {
        const int n = rt * TILE + threadIdx.x;
        float sum = 0.f;
#pragma unroll
        for (int w = 0; w < NWARP; w++) sum += red[w * TILE + threadIdx.x];
        if (d.n_dec > 0 && n < g.N) sum += __ldcg(d.dvec + n);
        if (n < g.N) {
            if (g.out_mode == 0) reinterpret_cast<T*>(g.y)[n] = Dt<T>::from_f(sum);
            else if (g.out_mode == 1) reinterpret_cast<float*>(g.y)[n] += sum;
            else reinterpret_cast<float*>(g.y)[n] = sum;
        }
    }
    if (d.n_dec > 0 && threadIdx.x == 0) {
        // the last consumer of a slice resets its flag for the next call
        int n_tiles = (g.N + TILE - 1) / TILE;
        int first = slice * (SLICE_COLS / TILE);
        int consumers = min(SLICE_COLS / TILE, n_tiles - first);
        int old = atomicAdd(d.consumed + slice, 1);
        if (old == consumers - 1) {
            d.consumed[slice] = 0;
            d.flags[slice] = 0;
        }
    }
}

template <typename T, int BITS, bool LUT, int GSZ>
__device__ void gemv_dec_kernel(const GemvArgs& g, const DecArgs& d) {
    extern __shared__ float smem[];
    if ((int)blockIdx.x < d.n_dec) {
        // DEC block: selection (identical in every DEC block), then gather slices.
        const int K = g.K;
        const int ktot = dec_total_rows(K, d.k_chunk);
        int* sidx = reinterpret_cast<int*>(smem + NWARP * SLICE_COLS);
        float* sval = reinterpret_cast<float*>(sidx + ktot);
        select_all_block<T>(reinterpret_cast<const T*>(g.x), K, d.k_chunk, d.a, d.b, sidx, sval);
        if (blockIdx.x == 0 && d.dbg_sel != nullptr)
            for (int i = threadIdx.x; i < ktot; i += blockDim.x) d.dbg_sel[i] = sidx[i];
        const int W = (g.N + 7) / 8;
        const int n_slices = (W + SLICE_WORDS - 1) / SLICE_WORDS;
        for (int s = blockIdx.x; s < n_slices; s += d.n_dec) {
            fetch_slice(d.res, d.rscale, g.N, W, s, sidx, sval, ktot, smem, d.dvec);
            __threadfence();
            __syncthreads();
            if (threadIdx.x == 0) atomicExch(d.flags + s, 1);
        }
        return;
    }
    gemv_block<T, BITS, LUT, GSZ>(g, d, blockIdx.x - d.n_dec, smem);
}

#define GEMV_ENTRY(NAME, T, BITS, LUT, GSZ)                                                        \
    extern "C" __global__ void __launch_bounds__(NTHREADS) NAME(GemvArgs g, DecArgs d) {          \
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
__device__ void dec_coop(const T* __restrict__ x, int N, int K, DecArgs d, int* gsel, float* gval, u32* bar) {
    extern __shared__ float smem[];
    const int warp = threadIdx.x >> 5;
    const int ktot = dec_total_rows(K, d.k_chunk);
    const int nchunks = (K + 1023) / 1024;
    for (int c = blockIdx.x * NWARP + warp; c < nchunks; c += gridDim.x * NWARP) {
        int lo = c * 1024;
        int size = min(1024, K - lo);
        int kc = (d.k_chunk * size) / 1024;
        if (kc > 0) select_chunk_warp<T>(x, lo, size, kc, d.a, d.b, gsel + c * d.k_chunk, gval + c * d.k_chunk);
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
    int* sidx = reinterpret_cast<int*>(smem + NWARP * SLICE_COLS);
    float* sval = reinterpret_cast<float*>(sidx + ktot);
    for (int i = threadIdx.x; i < ktot; i += blockDim.x) {
        sidx[i] = __ldcg(gsel + i);
        sval[i] = __ldcg(gval + i);
    }
    __syncthreads();
    const int W = (N + 7) / 8;
    const int n_slices = (W + SLICE_WORDS - 1) / SLICE_WORDS;
    for (int s = blockIdx.x; s < n_slices; s += gridDim.x)
        fetch_slice(d.res, d.rscale, N, W, s, sidx, sval, ktot, smem, d.dvec);
}

extern "C" __global__ void __launch_bounds__(NTHREADS)
    dec_coop_f16(const __half* x, int N, int K, DecArgs d, int* gsel, float* gval, u32* bar) {
    dec_coop<__half>(x, N, K, d, gsel, gval, bar);
}
extern "C" __global__ void __launch_bounds__(NTHREADS)
    dec_coop_bf16(const __nv_bfloat16* x, int N, int K, DecArgs d, int* gsel, float* gval, u32* bar) {
    dec_coop<__nv_bfloat16>(x, N, K, d, gsel, gval, bar);
}

template <typename T> __device__ void add_dvec(T* y, const float* dvec, int N) {
    int n = blockIdx.x * blockDim.x + threadIdx.x;
    if (n < N) y[n] = Dt<T>::from_f(Dt<T>::to_f(y[n]) + dvec[n]);
}
extern "C" __global__ void add_dvec_f16(__half* y, const float* dvec, int N) { add_dvec(y, dvec, N); }
extern "C" __global__ void add_dvec_bf16(__nv_bfloat16* y, const float* dvec, int N) { add_dvec(y, dvec, N); }
