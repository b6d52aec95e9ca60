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

