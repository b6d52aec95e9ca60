// Decoder-step kernels (everything but the quantized GEMV) and benchmark helpers.
// The residual stream h is kept in f32; linear inputs/outputs and the KV cache are in the activation
// dtype T. All reductions use a fixed order (no float atomics), so results are bit-reproducible.

#define OPS_THREADS 256
#define NWARP_ATTN 8

template <int NT> __device__ __forceinline__ float block_sum(float v, float* sh) {
    v = warp_sum(v);
    const int w = threadIdx.x >> 5, l = threadIdx.x & 31;
    __syncthreads();
    if (l == 0) sh[w] = v;
    __syncthreads();
    float t = 0.f;
    if (threadIdx.x < 32) {
        t = (l < NT / 32) ? sh[l] : 0.f;
        t = warp_sum(t);
        if (l == 0) sh[0] = t;
    }
    __syncthreads();
    return sh[0];
}
template <int NT> __device__ __forceinline__ float block_max(float v, float* sh) {
    v = warp_max(v);
    const int w = threadIdx.x >> 5, l = threadIdx.x & 31;
    __syncthreads();
    if (l == 0) sh[w] = v;
    __syncthreads();
    if (threadIdx.x < 32) {
        float t = (l < NT / 32) ? sh[l] : __int_as_float(0xff800000);
        t = warp_max(t);
        if (l == 0) sh[0] = t;
    }
    __syncthreads();
    return sh[0];
}

// out = T(h * rsqrt(mean(h^2) + eps) * w); one block of 1024 threads.
// out32 (optional) receives the same values in f32 (what error compensation selects on).
template <typename T> __device__ void rmsnorm(const float* h, const float* w, T* out, float* out32, int d, float eps) {
    pdl_launch_dependents();
    pdl_wait();
    __shared__ float sh[32];
    float ss = 0.f;
    for (int i = threadIdx.x; i < d; i += 1024) ss = fmaf(h[i], h[i], ss);
    ss = block_sum<1024>(ss, sh);
    const float inv = 1.f / sqrtf(ss / (float)d + eps);
    for (int i = threadIdx.x; i < d; i += 1024) {
        float v = h[i] * inv * w[i];
        out[i] = Dt<T>::from_f(v);
        if (out32) out32[i] = v;
    }
}
extern "C" __global__ void __launch_bounds__(1024) rmsnorm_f16(const float* h, const float* w, __half* out, float* out32, int d, float eps) { rmsnorm(h, w, out, out32, d, eps); }
extern "C" __global__ void __launch_bounds__(1024) rmsnorm_bf16(const float* h, const float* w, __nv_bfloat16* out, float* out32, int d, float eps) { rmsnorm(h, w, out, out32, d, eps); }

// Rotary embedding of one pair at position pos and frequency f, rounded as the CPU twin
// (decdec_core::ops::rope_half_split) rounds it: every product and sum on its own, no FMA
// contraction, whose choice of product differed between rope_kv and the fused attention
// (experiment 78: they must agree bit for bit).
__device__ __forceinline__ void rope_sincos(int pos, float f, float& s, float& c) {
    sincosf(__fmul_rn((float)pos, f), &s, &c);
}
__device__ __forceinline__ void rope_rotate(float x0, float x1, float s, float c, float& o0, float& o1) {
    o0 = __fsub_rn(__fmul_rn(x0, c), __fmul_rn(x1, s));
    o1 = __fadd_rn(__fmul_rn(x1, c), __fmul_rn(x0, s));
}

// Rotary embedding (HF half-split) of q and k heads in place in the fused qkv output, and append
// k, v of this position to the KV cache (layout [max_seq][n_kv][hd]). Block b < nh: q head b;
// nh <= b < nh + nkv: k head; then v heads. pos is read from device memory (graph replays).
template <typename T>
__device__ void rope_kv_at(T* qkv, const float* inv_freq, T* kc, T* vc, int pos, int nh, int nkv, int hd, int b) {
    const int half = hd / 2;
    const int qd = nh * hd, kd = nkv * hd;
    if (b < nh + nkv) {
        T* v = qkv + (b < nh ? b * hd : qd + (b - nh) * hd);
        for (int i = threadIdx.x; i < half; i += blockDim.x) {
            float sn, cs, r0, r1;
            rope_sincos(pos, inv_freq[i], sn, cs);
            rope_rotate(Dt<T>::to_f(v[i]), Dt<T>::to_f(v[i + half]), sn, cs, r0, r1);
            const T o0 = Dt<T>::from_f(r0), o1 = Dt<T>::from_f(r1);
            if (b < nh) {
                v[i] = o0;
                v[i + half] = o1;
            } else {
                T* dst = kc + ((size_t)pos * nkv + (b - nh)) * hd;
                dst[i] = o0;
                dst[i + half] = o1;
            }
        }
    } else {
        const int h = b - nh - nkv;
        const T* src = qkv + qd + kd + h * hd;
        T* dst = vc + ((size_t)pos * nkv + h) * hd;
        for (int i = threadIdx.x; i < hd; i += blockDim.x) dst[i] = src[i];
    }
}
template <typename T>
__device__ void rope_kv(T* qkv, const float* inv_freq, T* kc, T* vc, const int* pos_p, int nh, int nkv, int hd) {
    pdl_launch_dependents();
    pdl_wait();
    rope_kv_at(qkv, inv_freq, kc, vc, *pos_p, nh, nkv, hd, blockIdx.x);
}
extern "C" __global__ void rope_kv_f16(__half* qkv, const float* f, __half* kc, __half* vc, const int* p, int nh, int nkv, int hd) { rope_kv(qkv, f, kc, vc, p, nh, nkv, hd); }
extern "C" __global__ void rope_kv_bf16(__nv_bfloat16* qkv, const float* f, __nv_bfloat16* kc, __nv_bfloat16* vc, const int* p, int nh, int nkv, int hd) { rope_kv(qkv, f, kc, vc, p, nh, nkv, hd); }

// The block arrives at `counter` (acq_rel, after all its threads' writes) as one of `n`: true in
// every thread of the last to arrive, which also resets the counter for the next launch.
__device__ __forceinline__ bool block_arrive_last(int* counter, int n) {
    __shared__ int last;
    __syncthreads();  // the block's writes are done before the release below
    if (threadIdx.x == 0) {
        int old;
        asm volatile("atom.acq_rel.gpu.global.add.s32 %0, [%1], 1;\n" : "=r"(old) : "l"(counter) : "memory");
        last = (old + 1 == n);
        if (last) *counter = 0;
    }
    __syncthreads();
    return last;
}

// Salient channels of the attention output for the o projection's compensation: a block that
// has written its part of 1024-channel chunk c of out32 arrives (acq_rel counter per chunk, reset
// by the last); the last of the chunk's `writers` selects it (256 threads, 4 channels each).
__device__ void o_chunk_arrive(const SelArgs& sa, const float* out32, int* chunk_cnt, int c, int size, int writers) {
    __shared__ int ssh[SEL_SH];
    if (block_arrive_last(chunk_cnt + c, writers)) {
        float v[4];
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int e = 4 * threadIdx.x + i;
            v[i] = e < size ? __ldcg(out32 + c * 1024 + e) : 0.f;
        }
        select_chunk_for(sa, v, c, size, ssh);
    }
}

// acc[u] (dim lane + 32 u) += p_j * v_j[dim] for this warp's positions j = j0, j0 + 8, ... below
// `end`, in increasing order; row j at rows + j * stride. The values of VU positions are loaded
// before their FMAs so that VU * 8 loads per lane are in flight. Returns the next position.
#ifndef ATTN_VU
#define ATTN_VU 8
#endif
template <typename T>
__device__ __forceinline__ int attn_v_rows(float (&acc)[8], const T* rows, size_t stride, const float* p, int j0,
                                           int end, int hd, int lane) {
    constexpr int VU = ATTN_VU;
    int j = j0;
    for (; j + NWARP_ATTN * (VU - 1) < end; j += NWARP_ATTN * VU) {
        float vv[VU][8];
#pragma unroll
        for (int t = 0; t < VU; t++) {
            const T* v = rows + (j + NWARP_ATTN * t) * stride;
#pragma unroll
            for (int u = 0; u < 8; u++) {
                const int i = lane + 32 * u;
                vv[t][u] = i < hd ? Dt<T>::to_f(v[i]) : 0.f;
            }
        }
#pragma unroll
        for (int t = 0; t < VU; t++) {
            const float pj = p[j + NWARP_ATTN * t];
#pragma unroll
            for (int u = 0; u < 8; u++)
                if (lane + 32 * u < hd) acc[u] = fmaf(pj, vv[t][u], acc[u]);
        }
    }
    for (; j < end; j += NWARP_ATTN) {
        const T* v = rows + j * stride;
        const float pj = p[j];
#pragma unroll
        for (int u = 0; u < 8; u++) {
            const int i = lane + 32 * u;
            if (i < hd) acc[u] = fmaf(pj, Dt<T>::to_f(v[i]), acc[u]);
        }
    }
    return j;
}

// Decode attention for one new token over positions 0..=pos, GQA (head h reads kv head h / (nh/nkv)).
// One block per query head. Scores: one thread per position (16-byte loads of the key row), in
// dynamic shared memory (after the staged V rows). Output: warp w sums positions w, w+8, ... for
// all dims, then the 8 partials are added in warp order (deterministic).
// Dynamic shared memory: [vcap rows of V, hd T each][scores, one float per position]; the host
// sizes it (vcap = 0 when hd is not a multiple of 8: rows are staged in 16-byte pieces).
// ROPE: the kernel also does rope_kv's work (one launch less per layer): q is the un-rotated fused
// qkv output; every block rotates its q head into shared memory and appends its kv head's rotated
// k and v of this position to the cache (rounded to T exactly as rope_kv stores them; the blocks
// of one kv head write identical values). Bit-identical to rope_kv + attn_decode.
template <typename T, bool ROPE>
__device__ void attn_decode(const T* q, T* kc, T* vc, T* out, float* out32, const int* pos_p, int nh, int nkv,
                            int hd, float scale, SelArgs sa, int* chunk_cnt, int vcap, const float* inv_freq,
                            const int h) {
#ifndef ATTN_LATE_TRIGGER
    pdl_launch_dependents();
#endif
    extern __shared__ __align__(16) float dyn[];
    T* vs = reinterpret_cast<T*>(dyn);
    const int vrows = (hd & 7) == 0 ? vcap : 0;  // rows staged (vcap only sizes the layout)
    float* sc = dyn + (size_t)vcap * hd * sizeof(T) / sizeof(float);
    __shared__ float sh[32];
    __shared__ float qs[256];
    __shared__ float part[NWARP_ATTN][256];
    // Before waiting for the previous kernel (earlier positions do not depend on it), thread j
    // loads its key row (hd = 128) into registers and the block copies the first vcap value rows
    // into shared memory (later rows: L2 prefetches). The position may not be written yet
    // (earlier kernels of the step may still run: PDL triggers early), so pos_pre is a guess:
    // rows below both it and the real position were written by earlier, finished steps, so only
    // those preloaded rows are used.
    const int kvh = h / (nh / nkv);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const size_t kv_stride = (size_t)nkv * hd;  // elements between positions of one kv head
    const T* kh = kc + (size_t)kvh * hd;
    const T* vh = vc + (size_t)kvh * hd;
    const int pieces = hd / 8;  // 16-byte pieces of a row
    const int pos_pre = *reinterpret_cast<const volatile int*>(pos_p);
    bool kpre_ok = hd == 128 && (int)threadIdx.x < pos_pre;
    uint4 kpre[16];
    if (kpre_ok) {
        const uint4* kr = reinterpret_cast<const uint4*>(kh + threadIdx.x * kv_stride);
#pragma unroll
        for (int u = 0; u < 16; u++) kpre[u] = kr[u];
    }
    const int vpre = min(pos_pre, vrows);
    for (int p = threadIdx.x; p < vpre * pieces; p += blockDim.x) {
        const int j = p / pieces, u = p - j * pieces;
        cp_async16(vs + j * hd + u * 8, vh + j * kv_stride + u * 8);
    }
    for (int j = vpre + threadIdx.x; j < pos_pre; j += blockDim.x) {
        const char* vr = reinterpret_cast<const char*>(vh + j * kv_stride);
        for (int b = 0; b < hd * (int)sizeof(T); b += 128) asm volatile("prefetch.global.L2 [%0];" ::"l"(vr + b));
    }
    for (int j = blockDim.x + threadIdx.x; j < pos_pre; j += blockDim.x) {
        const char* kr = reinterpret_cast<const char*>(kh + j * kv_stride);
        for (int b = 0; b < hd * (int)sizeof(T); b += 128) asm volatile("prefetch.global.L2 [%0];" ::"l"(kr + b));
    }
    float fr = 0.f;  // ROPE: this thread's frequency (pair i = threadIdx.x; hd <= 256, engine)
    if constexpr (ROPE) {
        if ((int)threadIdx.x < hd / 2) fr = inv_freq[threadIdx.x];
    }
    pdl_wait();
    // This step's row, written by the previous kernel (ROPE: made here from the raw qkv output),
    // is requested together with the position and q: one L2 round trip after the wait, not three
    // (position, then the key row in the score loop, then the value row in the V loop). Without
    // ROPE its address comes from pos_pre, the guess, and the rows are used only if it holds.
    bool kcur = false;
    float rq0 = 0.f, rq1 = 0.f, rk0 = 0.f, rk1 = 0.f;
    T rv = Dt<T>::from_f(0.f);
    if constexpr (ROPE) {
        const int half = hd / 2, i = threadIdx.x;
        if (i < half) {
            rq0 = Dt<T>::to_f(q[h * hd + i]);
            rq1 = Dt<T>::to_f(q[h * hd + i + half]);
            rk0 = Dt<T>::to_f(q[(nh + kvh) * hd + i]);
            rk1 = Dt<T>::to_f(q[(nh + kvh) * hd + i + half]);
        }
        if (i < hd) rv = q[(nh + nkv + kvh) * hd + i];
    } else {
        if (hd == 128 && (int)threadIdx.x == pos_pre) {
            const uint4* kr = reinterpret_cast<const uint4*>(kh + threadIdx.x * kv_stride);
#pragma unroll
            for (int u = 0; u < 16; u++) kpre[u] = kr[u];
            kcur = true;
        }
        if (pos_pre < vrows)
            for (int u = threadIdx.x; u < pieces; u += blockDim.x)
                cp_async16(vs + pos_pre * hd + u * 8, vh + pos_pre * kv_stride + u * 8);
    }
    cp_async_commit();
    const int pos = *reinterpret_cast<const volatile int*>(pos_p);
    const int n = pos + 1;
#ifdef ATTN_NO_GUESS
    const bool guessed = false;  // (bisection knob: this step's row never from the requests above)
#else
    const bool guessed = pos == pos_pre;
#endif
    kpre_ok = (kpre_ok && (int)threadIdx.x < pos) || (kcur && guessed);
    // value rows [0, vs_n) are read from shared memory, the rest from global memory
    const int vs_n = guessed ? min(n, vrows) : min(min(pos, pos_pre), vrows);
    if constexpr (ROPE) {
        // Every block of the kv head writes the same rotated k and v of position pos to the cache
        // (identical values, a benign race) and keeps them for itself: the value row among the
        // staged rows (when the guess held nothing was copied there before the wait), the key
        // row in shared memory for the thread that scores position pos (below). The loops keep
        // no special case for position pos (which serialized them: experiment 60). Arithmetic as
        // rope_kv's, so the cache and the output are bit-identical to rope_kv + attn_decode.
        __shared__ __align__(16) T kcur_s[256];
        const int half = hd / 2, i = threadIdx.x;
        if (i < half) {
            float sn, cs, q0, q1, r0, r1;
            rope_sincos(pos, fr, sn, cs);
            rope_rotate(rq0, rq1, sn, cs, q0, q1);
            rope_rotate(rk0, rk1, sn, cs, r0, r1);
            qs[i] = Dt<T>::to_f(Dt<T>::from_f(q0));
            qs[i + half] = Dt<T>::to_f(Dt<T>::from_f(q1));
            const T k0 = Dt<T>::from_f(r0), k1 = Dt<T>::from_f(r1);
            T* kdst = kc + ((size_t)pos * nkv + kvh) * hd;
            kdst[i] = k0;
            kdst[i + half] = k1;
            kcur_s[i] = k0;
            kcur_s[i + half] = k1;
        }
        if (i < hd) {
            vc[((size_t)pos * nkv + kvh) * hd + i] = rv;
            if (guessed && pos < vrows) vs[pos * hd + i] = rv;
        }
        __syncthreads();
        if (hd == 128 && (int)threadIdx.x == pos) {
#pragma unroll
            for (int u = 0; u < 16; u++) kpre[u] = reinterpret_cast<const uint4*>(kcur_s)[u];
            kpre_ok = true;
        }
    } else {
        for (int i = threadIdx.x; i < hd; i += blockDim.x) qs[i] = Dt<T>::to_f(q[h * hd + i]);
        __syncthreads();
    }
    // Scores: one thread per position. The key row's 16-byte loads are all issued before the
    // first FMA (up to 16 in flight per thread): the loop is latency-bound, not bandwidth-bound.
    for (int j = threadIdx.x; j < n; j += blockDim.x) {
        const T* k = kh + j * kv_stride;
        float s = 0.f;
        if (kpre_ok && j == (int)threadIdx.x) {
#pragma unroll
            for (int u = 0; u < 16; u++) {
                const T* kt = reinterpret_cast<const T*>(&kpre[u]);
#pragma unroll
                for (int e = 0; e < 8; e++) s = fmaf(qs[8 * u + e], Dt<T>::to_f(kt[e]), s);
            }
        } else if ((hd & 7) == 0) {
            const uint4* kr = reinterpret_cast<const uint4*>(k);
            const int nv = hd / 8;
            for (int i0 = 0; i0 < nv; i0 += 16) {
                uint4 kv[16];
#pragma unroll
                for (int u = 0; u < 16; u++)
                    if (i0 + u < nv) kv[u] = kr[i0 + u];
#pragma unroll
                for (int u = 0; u < 16; u++) {
                    if (i0 + u < nv) {
                        const T* kt = reinterpret_cast<const T*>(&kv[u]);
#pragma unroll
                        for (int e = 0; e < 8; e++) s = fmaf(qs[8 * (i0 + u) + e], Dt<T>::to_f(kt[e]), s);
                    }
                }
            }
        } else {
            for (int i = 0; i < hd; i++) s = fmaf(qs[i], Dt<T>::to_f(k[i]), s);
        }
        sc[j] = s * scale;
    }
    cp_async_wait<0>();  // the staged value rows, visible to the block after the barrier
    __syncthreads();
    float m = __int_as_float(0xff800000);
    for (int j = threadIdx.x; j < n; j += blockDim.x) m = fmaxf(m, sc[j]);
    m = block_max<OPS_THREADS>(m, sh);
    float sum = 0.f;
    for (int j = threadIdx.x; j < n; j += blockDim.x) {
        float e = expf(sc[j] - m);
        sc[j] = e;
        sum += e;
    }
    sum = block_sum<OPS_THREADS>(sum, sh);
    const float inv = 1.f / sum;
    float acc[8];
#pragma unroll
    for (int u = 0; u < 8; u++) acc[u] = 0.f;
    // Weighted sum: warp w adds positions w, w + 8, ... in order, the staged rows from shared
    // memory first, then the rest from global memory (same summation order either way).
    int j = attn_v_rows<T>(acc, vs, hd, sc, warp, vs_n, hd, lane);
    attn_v_rows<T>(acc, vh, kv_stride, sc, j, n, hd, lane);
#pragma unroll
    for (int u = 0; u < 8; u++) {
        int i = lane + 32 * u;
        if (i < hd) part[warp][i] = acc[u];
    }
    __syncthreads();
    for (int i = threadIdx.x; i < hd; i += blockDim.x) {
        float o = 0.f;
#pragma unroll
        for (int w = 0; w < NWARP_ATTN; w++) o += part[w][i];
        o *= inv;
        out[h * hd + i] = Dt<T>::from_f(o);
        if (out32) out32[h * hd + i] = o;
    }
#ifdef ATTN_LATE_TRIGGER
    pdl_launch_dependents();
#endif
    // Salient channels of the output for the o projection's compensation: the last head block of
    // each 1024-channel chunk selects it (needs out32, head_dim dividing 1024, 256 threads).
    if (sa.sel_idx != nullptr && out32 != nullptr) {
        const int c = (h * hd) / 1024, size = min(1024, nh * hd - c * 1024);
        o_chunk_arrive(sa, out32, chunk_cnt, c, size, (size + hd - 1) / hd);
    }
}
extern "C" __global__ void __launch_bounds__(OPS_THREADS) attn_decode_f16(const __half* q, const __half* kc, const __half* vc, __half* out, float* o32, const int* p, int nh, int nkv, int hd, float scale, SelArgs sa, int* cnt, int vcap) { attn_decode<__half, false>(q, const_cast<__half*>(kc), const_cast<__half*>(vc), out, o32, p, nh, nkv, hd, scale, sa, cnt, vcap, nullptr, blockIdx.x); }
extern "C" __global__ void __launch_bounds__(OPS_THREADS) attn_decode_bf16(const __nv_bfloat16* q, const __nv_bfloat16* kc, const __nv_bfloat16* vc, __nv_bfloat16* out, float* o32, const int* p, int nh, int nkv, int hd, float scale, SelArgs sa, int* cnt, int vcap) { attn_decode<__nv_bfloat16, false>(q, const_cast<__nv_bfloat16*>(kc), const_cast<__nv_bfloat16*>(vc), out, o32, p, nh, nkv, hd, scale, sa, cnt, vcap, nullptr, blockIdx.x); }
// RoPE + KV append + attention in one launch (the decode step); qkv is not modified.
extern "C" __global__ void __launch_bounds__(OPS_THREADS) attn_rope_decode_f16(const __half* qkv, __half* kc, __half* vc, __half* out, float* o32, const int* p, int nh, int nkv, int hd, float scale, SelArgs sa, int* cnt, int vcap, const float* inv_freq) { attn_decode<__half, true>(qkv, kc, vc, out, o32, p, nh, nkv, hd, scale, sa, cnt, vcap, inv_freq, blockIdx.x); }
extern "C" __global__ void __launch_bounds__(OPS_THREADS) attn_rope_decode_bf16(const __nv_bfloat16* qkv, __nv_bfloat16* kc, __nv_bfloat16* vc, __nv_bfloat16* out, float* o32, const int* p, int nh, int nkv, int hd, float scale, SelArgs sa, int* cnt, int vcap, const float* inv_freq) { attn_decode<__nv_bfloat16, true>(qkv, kc, vc, out, o32, p, nh, nkv, hd, scale, sa, cnt, vcap, inv_freq, blockIdx.x); }

// ---------------------------------------------------------------------------------------------
// Split-KV decode attention (flash-decoding) with GQA sharing: the decode step's kernel from 512
// positions on (engine/attn.rs `tier_plan`; below, the one-block kernel's shorter chain wins).
// The one-block-per-query-head kernel above reads its kv head's whole cache once per query head,
// on nh SMs, which at long contexts costs tens of microseconds per layer. Here block b handles
// the GB query heads h0 .. h0+GB-1 (GB divides nh/nkv, GB <= 4) of one kv head over one range of
// positions: b = w * S + s, w = h0 / GB the head group, s the split. Positions 0..n-1 (n = pos+1)
// are cut into ranges of P = max(ATTN_PMIN, ceil(n / S)) rounded up to 32; A = ceil(n / P) splits
// are active, so a short context uses few blocks and a long one all S. With A == 1, split 0
// writes the output itself; otherwise every active split writes its (max, sum of exponentials,
// unnormalized output) per head to `part`, and the last split to arrive (acq_rel counter per head
// group) merges the A partials in split order: deterministic whatever the arrival order.
// Needs hd % 8 == 0 and hd <= 256 (the host falls back to attn_decode otherwise).
// Dynamic shared memory (floats): warp partials [NWARP_ATTN][GB][hd], scores [GB][P].
// ---------------------------------------------------------------------------------------------
#define ATTN_PMIN 64
#ifndef ATTN_SVU
#define ATTN_SVU 2  // passes of K/V pieces loaded before their FMAs (2 beat 4 and 8: experiment 53e)
#endif

__device__ __forceinline__ int attn_split_range(int n, int S) { return max(ATTN_PMIN, ((n + S - 1) / S + 31) & ~31); }
// the tensor-core kernel's ranges: whole 16-position tiles
__device__ __forceinline__ int attn_tc_range(int n, int S) { return max(16, ((n + S - 1) / S + 15) & ~15); }

// max (or sum) over the block of GB values per thread, all GB at once; every thread gets the
// results (fixed order: warp shuffles, then warps 0..7)
template <int GB, bool MAX> __device__ __forceinline__ void block_reduce_g(float (&v)[GB], float* sh) {
    const int w = threadIdx.x >> 5, l = threadIdx.x & 31;
#pragma unroll
    for (int g = 0; g < GB; g++) v[g] = MAX ? warp_max(v[g]) : warp_sum(v[g]);
    __syncthreads();  // sh free (previous reduction read)
    if (l == 0) {
#pragma unroll
        for (int g = 0; g < GB; g++) sh[w * GB + g] = v[g];
    }
    __syncthreads();
#pragma unroll
    for (int g = 0; g < GB; g++) {
        float t = sh[g];
#pragma unroll
        for (int i = 1; i < NWARP_ATTN; i++) t = MAX ? fmaxf(t, sh[i * GB + g]) : t + sh[i * GB + g];
        v[g] = t;
    }
}

// This lane's 16-byte piece of the cache rows of ATTN_SVU passes (position base + t * step + slot
// of the split's range starting at lo), all loads issued before any use; zero past the range.
template <typename T>
__device__ __forceinline__ void load_pass_pieces(const T* cache, uint4 (&p)[ATTN_SVU], int base, int step, int slot,
                                                 int cnt, bool has_piece, int lo, int nkv, int kvh, int hd, int pl) {
#pragma unroll
    for (int t = 0; t < ATTN_SVU; t++) {
        const int jj = base + t * step + slot;
        p[t] = make_uint4(0, 0, 0, 0);
        if (jj < cnt && has_piece)
            p[t] = *reinterpret_cast<const uint4*>(cache + ((size_t)(lo + jj) * nkv + kvh) * hd + 8 * pl);
    }
}

// L2 prefetch of kv head kvh's K and V rows j0 <= j < j1 by the block (before a PDL wait: rows of
// earlier steps are final).
template <typename T>
__device__ __forceinline__ void attn_prefetch_rows(const T* kc, const T* vc, int j0, int j1, int nkv, int kvh, int hd) {
    for (int j = j0 + (int)threadIdx.x; j < j1; j += blockDim.x) {
        const char* kr = reinterpret_cast<const char*>(kc + ((size_t)j * nkv + kvh) * hd);
        const char* vr = reinterpret_cast<const char*>(vc + ((size_t)j * nkv + kvh) * hd);
        for (int b = 0; b < hd * (int)sizeof(T); b += 128) {
            asm volatile("prefetch.global.L2 [%0];" ::"l"(kr + b));
            asm volatile("prefetch.global.L2 [%0];" ::"l"(vr + b));
        }
    }
}

// The start of split s of S (either split kernel; TC: the tensor-core kernel's ranges): L2 prefetch
// of its rows below the position read before the PDL wait (a guess, maybe the last step's: rows
// of earlier steps are final), the wait, then its range [lo, lo + cnt) of the n = pos + 1
// positions (ranges of P) and the number A of active splits; false when this split has none.
template <bool TC, typename T>
__device__ __forceinline__ bool attn_split_begin(const T* kc, const T* vc, const int* pos_p, int s, int S, int nkv,
                                                 int kvh, int hd, int& P, int& lo, int& cnt, int& A) {
    {
        const int n_pre = *reinterpret_cast<const volatile int*>(pos_p);
        const int P_pre = TC ? attn_tc_range(n_pre, S) : attn_split_range(n_pre, S);
        attn_prefetch_rows(kc, vc, s * P_pre, min(n_pre, s * P_pre + P_pre), nkv, kvh, hd);
    }
    pdl_wait();
    const int n = *reinterpret_cast<const volatile int*>(pos_p) + 1;
    P = TC ? attn_tc_range(n, S) : attn_split_range(n, S);
    A = (n + P - 1) / P;
    if (s >= A) return false;
    lo = s * P;
    cnt = min(n, lo + P) - lo;
    return true;
}

// The end of a split-KV attention block (both split kernels): y_of(e) is the block's unnormalized
// output element e of its GB heads [GB][hd] (heads h0..h0+GB-1 of head group w), ml[2g], ml[2g+1]
// head g's max and sum of exponentials. With one active split (A == 1) the block writes the output;
// otherwise it writes its part record and the last split of the head group to arrive merges the A
// records in split order, then takes its share of the o projection's selection.
template <typename T, typename F>
__device__ void attn_split_finish(F y_of, const float* ml, int GB, int h0, int w, int s, int S, int A, int nh,
                                  int hd, T* out, float* out32, float* part, int* grp_cnt, const SelArgs& sa,
                                  int* chunk_cnt) {
    const int rec = hd + 2;  // part record: max, sum, output[hd]
    if (A == 1) {
        for (int e = threadIdx.x; e < GB * hd; e += blockDim.x) {
            const float y = y_of(e) / ml[2 * (e / hd) + 1];
            out[h0 * hd + e] = Dt<T>::from_f(y);
            if (out32) out32[h0 * hd + e] = y;
        }
    } else {
        for (int e = threadIdx.x; e < GB * hd; e += blockDim.x) {
            const int g = e / hd, i = e % hd;
            const float y = y_of(e);
            float* r = part + ((size_t)(h0 + g) * S + s) * rec;
            r[2 + i] = y;
            if (i == 0) {
                r[0] = ml[2 * g];
                r[1] = ml[2 * g + 1];
            }
        }
        if (!block_arrive_last(grp_cnt + w, A)) return;
        // merge the A splits in split order
        for (int e = threadIdx.x; e < GB * hd; e += blockDim.x) {
            const int g = e / hd, i = e % hd;
            const float* r = part + (size_t)(h0 + g) * S * rec;
            float M = __int_as_float(0xff800000);
            for (int t = 0; t < A; t++) M = fmaxf(M, __ldcg(r + (size_t)t * rec));
            float L = 0.f, Y = 0.f;
            for (int t = 0; t < A; t++) {
                const float f = expf(__ldcg(r + (size_t)t * rec) - M);
                L = fmaf(f, __ldcg(r + (size_t)t * rec + 1), L);
                Y = fmaf(f, __ldcg(r + (size_t)t * rec + 2 + i), Y);
            }
            const float y = Y / L;
            out[h0 * hd + e] = Dt<T>::from_f(y);
            if (out32) out32[h0 * hd + e] = y;
        }
    }
    // Salient channels of the output for the o projection's compensation: this block wrote the
    // channels [h0 * hd, (h0 + GB) * hd); the last head group to finish a 1024-channel chunk
    // selects it (needs out32 and 256 threads).
    if (sa.sel_idx != nullptr && out32 != nullptr) {
        const int W = GB * hd, a = h0 * hd;
        for (int c = a / 1024; c * 1024 < a + W; c++) {
            const int clo = c * 1024, size = min(1024, nh * hd - clo);
            o_chunk_arrive(sa, out32, chunk_cnt, c, size, (clo + size - 1) / W - clo / W + 1);
        }
    }
}

template <typename T, int GB>
__device__ void attn_split(const T* q, const T* kc, const T* vc, T* out, float* out32, const int* pos_p, int nh,
                           int nkv, int hd, float scale, const SelArgs& sa, int* chunk_cnt, float* part,
                           int* grp_cnt, int S) {
    pdl_launch_dependents();
    extern __shared__ float smem[];
    __shared__ float sh[NWARP_ATTN * 4];
    const int G = nh / nkv, HG = G / GB;
    const int w = blockIdx.x / S, s = blockIdx.x % S;
    const int kvh = w / HG, h0 = w * GB;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int P, lo, cnt, A;
    if (!attn_split_begin<false>(kc, vc, pos_p, s, S, nkv, kvh, hd, P, lo, cnt, A)) return;
    float* pw = smem;                      // [NWARP_ATTN][GB][hd]
    float* sc = pw + NWARP_ATTN * GB * hd; // [GB][P]
    // Rows are read as 16-byte pieces, LP lanes per row (a power of two >= hd / 8), so a warp
    // covers PPW = 32 / LP positions per pass; lane = (slot, piece). Loops stay rolled: a block
    // runs each instruction only a few times at short contexts, where an unrolled body costs more
    // in instruction fetches than it saves.
    const int npc = hd / 8;
    const int LP = npc <= 1 ? 1 : npc <= 2 ? 2 : npc <= 4 ? 4 : npc <= 8 ? 8 : npc <= 16 ? 16 : 32;
    const int PPW = 32 / LP, slot = lane / LP, pl = lane % LP;
    const bool has_piece = pl < npc;
    const int step = NWARP_ATTN * PPW;
    // this lane's piece of q for each head, in registers
    float qr[GB][8];
#pragma unroll
    for (int g = 0; g < GB; g++) {
        uint4 qv = make_uint4(0, 0, 0, 0);
        if (has_piece) qv = *reinterpret_cast<const uint4*>(q + (size_t)(h0 + g) * hd + 8 * pl);
        const T* qt = reinterpret_cast<const T*>(&qv);
#pragma unroll
        for (int e = 0; e < 8; e++) qr[g][e] = Dt<T>::to_f(qt[e]);
    }
    // scores: ATTN_SVU passes' key pieces loaded before their FMAs; partial dots summed over the
    // row's LP lanes with xor shuffles (fixed order)
    float mx[GB];
#pragma unroll
    for (int g = 0; g < GB; g++) mx[g] = __int_as_float(0xff800000);
    for (int base = warp * PPW; base < cnt; base += ATTN_SVU * step) {
        uint4 kv[ATTN_SVU];
        load_pass_pieces(kc, kv, base, step, slot, cnt, has_piece, lo, nkv, kvh, hd, pl);
#pragma unroll
        for (int t = 0; t < ATTN_SVU; t++) {
            // warp-uniform: short ranges skip the empty passes (no break: the loop must unroll)
            if (base + t * step < cnt) {
                const T* kt = reinterpret_cast<const T*>(&kv[t]);
                float kf[8];
#pragma unroll
                for (int e = 0; e < 8; e++) kf[e] = Dt<T>::to_f(kt[e]);
                float d[GB];
#pragma unroll
                for (int g = 0; g < GB; g++) {
                    d[g] = 0.f;
#pragma unroll
                    for (int e = 0; e < 8; e++) d[g] = fmaf(qr[g][e], kf[e], d[g]);
                }
                // the heads' reductions interleaved (independent shuffles in flight)
#pragma unroll
                for (int o = 16; o > 0; o >>= 1) {
                    if (o < LP) {
#pragma unroll
                        for (int g = 0; g < GB; g++) d[g] += __shfl_xor_sync(0xffffffffu, d[g], o);
                    }
                }
                const int jj = base + t * step + slot;
                if (pl == 0 && jj < cnt) {
#pragma unroll
                    for (int g = 0; g < GB; g++) {
                        const float v = d[g] * scale;
                        sc[g * P + jj] = v;
                        mx[g] = fmaxf(mx[g], v);
                    }
                }
            }
        }
    }
    block_reduce_g<GB, true>(mx, sh);  // (its first barrier also publishes sc)
    float l[GB];
#pragma unroll
    for (int g = 0; g < GB; g++) l[g] = 0.f;
    for (int jj = threadIdx.x; jj < cnt; jj += blockDim.x) {
#pragma unroll
        for (int g = 0; g < GB; g++) {
            const float e = expf(sc[g * P + jj] - mx[g]);
            sc[g * P + jj] = e;
            l[g] += e;
        }
    }
    block_reduce_g<GB, false>(l, sh);
    // weighted sum of V: lane (slot, piece) adds its positions' pieces in order; then the slots
    // of a warp are added with xor shuffles and the warps in order
    float acc[GB][8];
#pragma unroll
    for (int g = 0; g < GB; g++)
#pragma unroll
        for (int e = 0; e < 8; e++) acc[g][e] = 0.f;
    for (int base = warp * PPW; base < cnt; base += ATTN_SVU * step) {
        uint4 vv[ATTN_SVU];
        load_pass_pieces(vc, vv, base, step, slot, cnt, has_piece, lo, nkv, kvh, hd, pl);
#pragma unroll
        for (int t = 0; t < ATTN_SVU; t++) {
            const int jj = base + t * step + slot;
            if (base + t * step < cnt && jj < cnt) {  // (the first test is warp-uniform)
                const T* vt = reinterpret_cast<const T*>(&vv[t]);
                float vf[8];
#pragma unroll
                for (int e = 0; e < 8; e++) vf[e] = Dt<T>::to_f(vt[e]);
#pragma unroll
                for (int g = 0; g < GB; g++) {
                    const float p = sc[g * P + jj];
#pragma unroll
                    for (int e = 0; e < 8; e++) acc[g][e] = fmaf(p, vf[e], acc[g][e]);
                }
            }
        }
    }
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        if (o >= LP) {
#pragma unroll
            for (int g = 0; g < GB; g++)
#pragma unroll
                for (int e = 0; e < 8; e++) acc[g][e] += __shfl_xor_sync(0xffffffffu, acc[g][e], o);
        }
    }
    if (slot == 0 && has_piece) {
#pragma unroll
        for (int g = 0; g < GB; g++)
#pragma unroll
            for (int e = 0; e < 8; e++) pw[(warp * GB + g) * hd + 8 * pl + e] = acc[g][e];
    }
    __syncthreads();
    // this split's unnormalized output per head (warps added in order); max and sum per head
    // through shared memory (a register array indexed at run time would live in local memory)
    __shared__ float ml[2 * 4];
    if (threadIdx.x == 0) {
#pragma unroll
        for (int g = 0; g < GB; g++) {
            ml[2 * g] = mx[g];
            ml[2 * g + 1] = l[g];
        }
    }
    __syncthreads();
    attn_split_finish<T>([&](int e) {
        float y = 0.f;
#pragma unroll
        for (int ww = 0; ww < NWARP_ATTN; ww++) y += pw[ww * GB * hd + e];
        return y;
    }, ml, GB, h0, w, s, S, A, nh, hd, out, out32, part, grp_cnt, sa, chunk_cnt);
}

#define ATTN_SPLIT_ENTRY(NAME, T)                                                                                        \
    extern "C" __global__ void __launch_bounds__(OPS_THREADS) NAME(const T* q, const T* kc, const T* vc, T* out,          \
                                                                   float* o32, const int* p, int nh, int nkv, int hd,     \
                                                                   float scale, SelArgs sa, int* cnt, float* part,       \
                                                                   int* gcnt, int S, int GB) {                           \
        switch (GB) {                                                                                                    \
            case 1: attn_split<T, 1>(q, kc, vc, out, o32, p, nh, nkv, hd, scale, sa, cnt, part, gcnt, S); break;         \
            case 2: attn_split<T, 2>(q, kc, vc, out, o32, p, nh, nkv, hd, scale, sa, cnt, part, gcnt, S); break;         \
            case 3: attn_split<T, 3>(q, kc, vc, out, o32, p, nh, nkv, hd, scale, sa, cnt, part, gcnt, S); break;         \
            default: attn_split<T, 4>(q, kc, vc, out, o32, p, nh, nkv, hd, scale, sa, cnt, part, gcnt, S); break;        \
        }                                                                                                                \
    }
ATTN_SPLIT_ENTRY(attn_split_decode_f16, __half)
ATTN_SPLIT_ENTRY(attn_split_decode_bf16, __nv_bfloat16)

// One step of the tensor-core attentions' online softmax and P V (attn_split_tc, pf_attn_tc):
// s holds NT 8-position tiles of scaled, masked scores as mma accumulators (rows g and g + 8 of
// the lane's quad), mx their per-lane row maxima; m, l, o are the running max, sum of exponentials
// and output of the two rows; V rows of the NT * 8 positions at vs (stride LD elements).
template <typename T, int HD, int NT, int LD>
__device__ __forceinline__ void tc_softmax_pv(float (&s)[NT][4], float (&mx)[2], float (&m)[2], float (&l)[2],
                                              float (&o)[HD / 8][4], const T* vs, int lane) {
    float corr[2];
#pragma unroll
    for (int r = 0; r < 2; r++) {
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
        const float mn = fmaxf(m[r], mx[r]);
        corr[r] = expf(m[r] - mn);
        m[r] = mn;
        l[r] *= corr[r];
    }
#pragma unroll
    for (int dn = 0; dn < HD / 8; dn++) {
        o[dn][0] *= corr[0];
        o[dn][1] *= corr[0];
        o[dn][2] *= corr[1];
        o[dn][3] *= corr[1];
    }
#pragma unroll
    for (int nt = 0; nt < NT; nt++) {
#pragma unroll
        for (int e = 0; e < 4; e++) {
            s[nt][e] = expf(s[nt][e] - m[e >> 1]);  // masked: exp(-inf) = 0
            l[e >> 1] += s[nt][e];
        }
    }
    // O += P V, 16 positions per step: P's A fragments come straight from the S accumulators
#pragma unroll
    for (int kp = 0; kp < NT / 2; kp++) {
        u32 ah[4], al[4];
        split_pair<T>(s[2 * kp][0], s[2 * kp][1], ah[0], al[0]);
        split_pair<T>(s[2 * kp][2], s[2 * kp][3], ah[1], al[1]);
        split_pair<T>(s[2 * kp + 1][0], s[2 * kp + 1][1], ah[2], al[2]);
        split_pair<T>(s[2 * kp + 1][2], s[2 * kp + 1][3], ah[3], al[3]);
#pragma unroll
        for (int dn = 0; dn < HD / 8; dn += 2) {
            u32 b0, b1, b2, b3;  // B fragments of dim tiles dn, dn + 1 (V transposed by ldmatrix)
            ldsm_x4_trans(b0, b1, b2, b3, vs + (16 * kp + (lane & 7) + ((lane >> 3) & 1) * 8) * LD + 8 * dn + (lane >> 4) * 8);
            mma16816<T>(o[dn], ah[0], ah[1], ah[2], ah[3], b0, b1);
            mma16816<T>(o[dn], al[0], al[1], al[2], al[3], b0, b1);
            mma16816<T>(o[dn + 1], ah[0], ah[1], ah[2], ah[3], b2, b3);
            mma16816<T>(o[dn + 1], al[0], al[1], al[2], al[3], b2, b3);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Split-KV decode attention on the tensor cores (experiment 81), head_dim HD in {64, 96, 128}, GQA
// group G = nh / nkv <= 16: block b = kvh * S + s takes all G query heads of kv head kvh (each K/V
// row loaded once) over one range of positions (ranges of max(16, ceil(n / S)) rounded up to 16).
// The G heads are the 16 rows of mma.m16n8k16's A operand (q, rows past G zero), so one tile of 16
// positions is S = Q K^T in 2 x HD/16 mmas (K rows as stored, ldmatrix from shared memory) and
// O += P V in 2 x HD/8 mmas (V by transposed ldmatrix; P split into hi + lo activation-dtype parts
// as in pf_attn_tc, ~2^-16 relative). Warp w takes the range's tiles w, w + 8, ..., streams them
// through its own ring of ATTN_TC_STAGES stages (cp.async, zero-filled past the range) and keeps an
// online softmax in f32 (max, sum, output per head row); the warps' states are merged in warp
// order in shared memory, then the block ends as the CUDA-core split kernel does
// (attn_split_finish: part records merged in split order by the last split; the o selection).
// The old kernel's FMA chains cost ~160 instructions per (position, kv head) at 4096 positions;
// here ~6 per position (48 mmas + 16 ldmatrix + the softmax per 16 positions).
// Dynamic shared memory: NWARP_ATTN * ATTN_TC_STAGES * 2 * 16 * (HD + 8) elements of T (the ring;
// reused for the merge: [NWARP_ATTN][16] max and sum, [NWARP_ATTN][G][HD] outputs in f32).
// ---------------------------------------------------------------------------------------------
#ifndef ATTN_TC_STAGES
#define ATTN_TC_STAGES 2
#endif

// ROPE (the decode step's default for this kernel): q is the fused qkv output before RoPE; every
// block rotates its G query heads in registers (the frequencies' sines and cosines computed before
// the PDL wait at the position read then, again after it if that was the previous step's), and the
// last split, whose range holds this step's position, rotates this kv head's k, appends k and v
// to the caches and only then loads its tiles: rope_kv's work without its launch (experiment 78
// did the same in the one-block kernel), with rope_kv_at's rounding, bit for bit.
template <typename T, int HD, bool ROPE>
__device__ void attn_split_tc(const T* q, T* kc, T* vc, T* out, float* out32, const int* pos_p, int nh, int nkv,
                              float scale, const SelArgs& sa, int* chunk_cnt, float* part, int* grp_cnt, int S,
                              const float* inv_freq) {
    pdl_launch_dependents();
    constexpr int LD = HD + 8;              // shared row stride (elements): ldmatrix rows spread over the banks
    constexpr int TILE_E = 16 * LD;         // elements of one 16-row K (or V) tile
    constexpr int CPR = HD / 8;             // 16-byte pieces per row
    extern __shared__ __align__(16) unsigned char smem_raw[];
    T* ring = reinterpret_cast<T*>(smem_raw);
    __shared__ float ml[2 * 16];
    __shared__ float fw[NWARP_ATTN * 16];   // per warp and head row: exp(m_w - M)
    const int G = nh / nkv;
    const int kvh = blockIdx.x / S, s = blockIdx.x % S;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    // RoPE: the sines and cosines of the HD / 2 frequencies at this step's position, in shared
    // memory (one sincosf per thread, computed before the PDL wait at the position read then and
    // again after it if that was the previous step's)
    __shared__ float rsn[ROPE ? HD / 2 : 1], rcs[ROPE ? HD / 2 : 1];
    int pos_g = 0;
    if constexpr (ROPE) {
        pos_g = *reinterpret_cast<const volatile int*>(pos_p);
        for (int i = threadIdx.x; i < HD / 2; i += blockDim.x) rope_sincos(pos_g, inv_freq[i], rsn[i], rcs[i]);
    }
    int P, lo, cnt, A;
    if (!attn_split_begin<true>(kc, vc, pos_p, s, S, nkv, kvh, HD, P, lo, cnt, A)) return;
    if constexpr (ROPE) {
        const int pos = *reinterpret_cast<const volatile int*>(pos_p);
        if (pos != pos_g) {
            __syncthreads();
            for (int i = threadIdx.x; i < HD / 2; i += blockDim.x) rope_sincos(pos, inv_freq[i], rsn[i], rcs[i]);
        }
        __syncthreads();
        if (s == A - 1) {
            // this step's k (rotated) and v of kv head kvh into the caches, before any tile load
            const T* kq = q + (size_t)(nh + kvh) * HD;
            const T* vq = q + (size_t)(nh + nkv + kvh) * HD;
            T* kd = kc + ((size_t)pos * nkv + kvh) * HD;
            T* vd = vc + ((size_t)pos * nkv + kvh) * HD;
            for (int i = threadIdx.x; i < HD / 2; i += blockDim.x) {
                float r0, r1;
                rope_rotate(Dt<T>::to_f(kq[i]), Dt<T>::to_f(kq[i + HD / 2]), rsn[i], rcs[i], r0, r1);
                kd[i] = Dt<T>::from_f(r0);
                kd[i + HD / 2] = Dt<T>::from_f(r1);
            }
            for (int i = threadIdx.x; i < HD; i += blockDim.x) vd[i] = vq[i];
            // the tile copies read L2 (cp.async.cg): the row must be there, not only ordered
            // within the block, before the warp holding this position copies it
            __threadfence();
            __syncthreads();
        }
    }
    const int ntile = (cnt + 15) / 16;
    T* wring = ring + warp * ATTN_TC_STAGES * 2 * TILE_E;
    const u32 wring_s = smem_addr(wring);
    // tile ti (local positions 16 ti ..) into stage st: lane copies piece lane % CPR of rows
    // lane / CPR + RSTEP u of K and of V (zero-filled past the range)
    auto issue = [&](int ti, int st) {
        if constexpr (32 % CPR != 0) {
            // head dimensions whose rows do not tile a warp (96): pieces lane, lane + 32, ...
            if (ti < ntile) {
#pragma unroll
                for (int u = 0; u < 2 * 16 * CPR / 32; u++) {
                    const int idx = lane + 32 * u;
                    const int kvsel = idx / (16 * CPR), r = (idx / CPR) % 16, c = idx % CPR;
                    const bool ok = 16 * ti + r < cnt;
                    const T* src = (kvsel ? vc : kc) + ((size_t)(lo + 16 * ti + r) * nkv + kvh) * HD + 8 * c;
                    cp_async16_cg_zfill_s(wring_s + 2 * ((st * 2 + kvsel) * TILE_E + r * LD + 8 * c),
                                          ok ? src : kc, ok ? 16 : 0);
                }
            }
        } else if (ti < ntile) {
            constexpr int RSTEP = 32 / CPR;  // rows per pass of the warp
            const int r0 = lane / CPR, c = lane % CPR;
            const size_t rs = (size_t)nkv * HD;  // elements from one position to the next
            const size_t off0 = ((size_t)(lo + 16 * ti + r0) * nkv + kvh) * HD + 8 * c;
            const u32 d0 = wring_s + 2 * (st * 2 * TILE_E + r0 * LD + 8 * c);
#pragma unroll
            for (int u = 0; u < 16 / RSTEP; u++) {
                const bool ok = 16 * ti + r0 + RSTEP * u < cnt;
                const size_t off = off0 + (size_t)(RSTEP * u) * rs;
                const u32 d = d0 + 2 * RSTEP * u * LD;
                cp_async16_cg_zfill_s(d, ok ? kc + off : kc, ok ? 16 : 0);
                cp_async16_cg_zfill_s(d + 2 * TILE_E, ok ? vc + off : vc, ok ? 16 : 0);
            }
        }
        cp_async_commit();
    };
    // A fragments of q: rows g, g + 8 (query heads kvh * G + row; zero past G), columns of k-step kk
    u32 qa[HD / 16][4];
#pragma unroll
    for (int kk = 0; kk < HD / 16; kk++) {
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int row = g + 8 * (i & 1), col = 16 * kk + 2 * t + 8 * (i >> 1);
            qa[kk][i] = row < G ? *reinterpret_cast<const u32*>(q + (size_t)(kvh * G + row) * HD + col) : 0u;
        }
    }
    if constexpr (ROPE) {
        // the lane's columns 16 kk + 2 t + 8 h + e of the first half pair with those HD / 2
        // further: the same slot of k-step kk + HD / 32
        constexpr int RK = HD / 32;
#pragma unroll
        for (int kk = 0; kk < RK; kk++) {
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const T* x0 = reinterpret_cast<const T*>(&qa[kk][i]);
                const T* x1 = reinterpret_cast<const T*>(&qa[kk + RK][i]);
                float o0[2], o1[2];
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    const int c = 16 * kk + 2 * t + 8 * (i >> 1) + e;
                    rope_rotate(Dt<T>::to_f(x0[e]), Dt<T>::to_f(x1[e]), rsn[c], rcs[c], o0[e], o1[e]);
                }
                qa[kk][i] = pack_pair<T>(o0[0], o0[1]);
                qa[kk + RK][i] = pack_pair<T>(o1[0], o1[1]);
            }
        }
    }
#pragma unroll
    for (int st = 0; st < ATTN_TC_STAGES - 1; st++) issue(warp + NWARP_ATTN * st, st);
    float o[HD / 8][4];
#pragma unroll
    for (int dn = 0; dn < HD / 8; dn++) o[dn][0] = o[dn][1] = o[dn][2] = o[dn][3] = 0.f;
    float m[2] = {__int_as_float(0xff800000), __int_as_float(0xff800000)}, l[2] = {0.f, 0.f};
    int st = 0;
    for (int ti = warp; ti < ntile; ti += NWARP_ATTN) {
        issue(ti + NWARP_ATTN * (ATTN_TC_STAGES - 1), st == 0 ? ATTN_TC_STAGES - 1 : st - 1);
        cp_async_wait<ATTN_TC_STAGES - 1>();
        __syncwarp();
        const T* ks = wring + (st * 2) * TILE_E;
        const T* vs = ks + TILE_E;
        float sc[2][4];
#pragma unroll
        for (int nt = 0; nt < 2; nt++) sc[nt][0] = sc[nt][1] = sc[nt][2] = sc[nt][3] = 0.f;
#pragma unroll
        for (int kk = 0; kk < HD / 16; kk++) {
            u32 b0, b1, b2, b3;  // B fragments of positions 0-7 and 8-15 (K rows as stored)
            ldsm_x4(b0, b1, b2, b3, ks + ((lane & 7) + (lane >> 4) * 8) * LD + 16 * kk + ((lane >> 3) & 1) * 8);
            mma16816<T>(sc[0], qa[kk][0], qa[kk][1], qa[kk][2], qa[kk][3], b0, b1);
            mma16816<T>(sc[1], qa[kk][0], qa[kk][1], qa[kk][2], qa[kk][3], b2, b3);
        }
        // scale, mask past the range, online softmax per head row (a quad shares a row)
        float mx[2] = {__int_as_float(0xff800000), __int_as_float(0xff800000)};
#pragma unroll
        for (int nt = 0; nt < 2; nt++) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int jj = 16 * ti + 8 * nt + 2 * t + (e & 1);
                const float v = jj < cnt ? sc[nt][e] * scale : __int_as_float(0xff800000);
                sc[nt][e] = v;
                mx[e >> 1] = fmaxf(mx[e >> 1], v);
            }
        }
        tc_softmax_pv<T, HD, 2, LD>(sc, mx, m, l, o, vs, lane);
        __syncwarp();  // every lane has read the stage before it is refilled
        st = st + 1 == ATTN_TC_STAGES ? 0 : st + 1;
    }
    cp_async_wait<0>();
    // merge the warps' states in warp order: max and sum per head row, then outputs scaled by
    // exp(m_w - M) (a warp without tiles has m = -inf, sum and output zero: factor 0)
#pragma unroll
    for (int r = 0; r < 2; r++) {
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
    }
    __syncthreads();  // every warp is done with its ring
    float* mw = reinterpret_cast<float*>(smem_raw);  // [NWARP_ATTN][16] max, then [NWARP_ATTN][16] sum
    float* lw = mw + NWARP_ATTN * 16;
    float* ow = lw + NWARP_ATTN * 16;                 // [NWARP_ATTN][G][HD]
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int row = g + 8 * r;
        if (row < G) {
            if (t == 0) {
                mw[warp * 16 + row] = m[r];
                lw[warp * 16 + row] = l[r];
            }
#pragma unroll
            for (int dn = 0; dn < HD / 8; dn++) {
                float* d = ow + ((size_t)warp * G + row) * HD + 8 * dn + 2 * t;
                d[0] = o[dn][2 * r];
                d[1] = o[dn][2 * r + 1];
            }
        }
    }
    __syncthreads();
    if (threadIdx.x < G) {
        const int row = threadIdx.x;
        float M = __int_as_float(0xff800000);
#pragma unroll
        for (int w = 0; w < NWARP_ATTN; w++) M = fmaxf(M, mw[w * 16 + row]);
        float L = 0.f;
#pragma unroll
        for (int w = 0; w < NWARP_ATTN; w++) {
            const float f = expf(mw[w * 16 + row] - M);
            fw[w * 16 + row] = f;
            L = fmaf(f, lw[w * 16 + row], L);
        }
        ml[2 * row] = M;
        ml[2 * row + 1] = L;
    }
    __syncthreads();
    attn_split_finish<T>([&](int e) {
        const int row = e / HD, i = e % HD;
        float y = 0.f;
#pragma unroll
        for (int w = 0; w < NWARP_ATTN; w++) y = fmaf(fw[w * 16 + row], ow[((size_t)w * G + row) * HD + i], y);
        return y;
    }, ml, G, kvh * G, kvh, s, S, A, nh, HD, out, out32, part, grp_cnt, sa, chunk_cnt);
}

// (the same parameters as attn_split_decode, whose last, heads per block, is the GQA group here;
// with ROPE q is the fused qkv output before RoPE and the frequencies follow)
#define ATTN_SPLIT_TC_ENTRY(NAME, T, HD, ROPE)                                                                     \
    extern "C" __global__ void __launch_bounds__(OPS_THREADS) NAME(const T* q, T* kc, T* vc, T* out, float* o32,     \
                                                                   const int* p, int nh, int nkv, int hd,          \
                                                                   float scale, SelArgs sa, int* cnt, float* part, \
                                                                   int* gcnt, int S, int, const float* f) {        \
        attn_split_tc<T, HD, ROPE>(q, kc, vc, out, o32, p, nh, nkv, scale, sa, cnt, part, gcnt, S, f);             \
    }
ATTN_SPLIT_TC_ENTRY(attn_split_tc64_f16, __half, 64, false)
ATTN_SPLIT_TC_ENTRY(attn_split_tc96_f16, __half, 96, false)
ATTN_SPLIT_TC_ENTRY(attn_split_tc128_f16, __half, 128, false)
ATTN_SPLIT_TC_ENTRY(attn_split_tc64_bf16, __nv_bfloat16, 64, false)
ATTN_SPLIT_TC_ENTRY(attn_split_tc96_bf16, __nv_bfloat16, 96, false)
ATTN_SPLIT_TC_ENTRY(attn_split_tc128_bf16, __nv_bfloat16, 128, false)
ATTN_SPLIT_TC_ENTRY(attn_rope_split_tc64_f16, __half, 64, true)
ATTN_SPLIT_TC_ENTRY(attn_rope_split_tc96_f16, __half, 96, true)
ATTN_SPLIT_TC_ENTRY(attn_rope_split_tc128_f16, __half, 128, true)
ATTN_SPLIT_TC_ENTRY(attn_rope_split_tc64_bf16, __nv_bfloat16, 64, true)
ATTN_SPLIT_TC_ENTRY(attn_rope_split_tc96_bf16, __nv_bfloat16, 96, true)
ATTN_SPLIT_TC_ENTRY(attn_rope_split_tc128_bf16, __nv_bfloat16, 128, true)

// out[i] = silu(gu[i]) * gu[f + i]  (fused gate-up output: gate rows first, then up rows)
template <typename T> __device__ void silu_mul(const T* gu, T* out, float* out32, int f) {
    pdl_launch_dependents();
    pdl_wait();
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < f) {
        float g = Dt<T>::to_f(gu[i]), u = Dt<T>::to_f(gu[f + i]);
        float v = g / (1.f + expf(-g)) * u;
        out[i] = Dt<T>::from_f(v);
        if (out32) out32[i] = v;
    }
}
extern "C" __global__ void silu_mul_f16(const __half* gu, __half* out, float* o32, int f) { silu_mul(gu, out, o32, f); }
extern "C" __global__ void silu_mul_bf16(const __nv_bfloat16* gu, __nv_bfloat16* out, float* o32, int f) { silu_mul(gu, out, o32, f); }

// h = f32(emb[token]); token read from device memory.
template <typename T> __device__ void embed(const T* emb, const int* tok, float* h, int d) {
    pdl_launch_dependents();
    pdl_wait();
    const size_t t = (size_t)(*tok);
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < d; i += gridDim.x * blockDim.x) h[i] = Dt<T>::to_f(emb[t * d + i]);
}
extern "C" __global__ void embed_f16(const __half* e, const int* t, float* h, int d) { embed(e, t, h, d); }
extern "C" __global__ void embed_bf16(const __nv_bfloat16* e, const int* t, float* h, int d) { embed(e, t, h, d); }

// Dense GEMV (f16/bf16 weights [N][K] row-major, used for lm_head and the 16-bit baseline).
// One warp per row, 16-byte loads, f32 accumulation, fixed-order warp reduction. K % 8 == 0.
// out_mode as in gemv.cu: 0 T store, 1 f32 +=, 2 f32 store.
template <typename T>
__device__ void dense_gemv(const T* __restrict__ w, const T* __restrict__ x, void* y, int N, int K, int out_mode) {
    pdl_launch_dependents();
    pdl_wait();
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int row = blockIdx.x * (blockDim.x >> 5) + warp;
    if (row >= N) return;
    float acc = 0.f;
    if ((K & 7) != 0) {
        // rows not 16-byte aligned (e.g. K = 172): plain loads
        for (int i = lane; i < K; i += 32) acc = fmaf(Dt<T>::to_f(w[(size_t)row * K + i]), Dt<T>::to_f(x[i]), acc);
    } else {
    const uint4* wr = reinterpret_cast<const uint4*>(w + (size_t)row * K);
    const uint4* xr = reinterpret_cast<const uint4*>(x);
    const int nv = K / 8;
    int i = lane;
    for (; i + 96 < nv; i += 128) {
        uint4 wv[4], xv[4];
#pragma unroll
        for (int u = 0; u < 4; u++) wv[u] = ldg_stream(wr + i + 32 * u);
#pragma unroll
        for (int u = 0; u < 4; u++) xv[u] = xr[i + 32 * u];
#pragma unroll
        for (int u = 0; u < 4; u++) {
            const T* a = reinterpret_cast<const T*>(&wv[u]);
            const T* b = reinterpret_cast<const T*>(&xv[u]);
#pragma unroll
            for (int e = 0; e < 8; e++) acc = fmaf(Dt<T>::to_f(a[e]), Dt<T>::to_f(b[e]), acc);
        }
    }
    for (; i < nv; i += 32) {
        uint4 wv = ldg_stream(wr + i), xv = xr[i];
        const T* a = reinterpret_cast<const T*>(&wv);
        const T* b = reinterpret_cast<const T*>(&xv);
#pragma unroll
        for (int e = 0; e < 8; e++) acc = fmaf(Dt<T>::to_f(a[e]), Dt<T>::to_f(b[e]), acc);
    }
    }
    acc = warp_sum(acc);
    if (lane == 0) {
        if (out_mode == 0) reinterpret_cast<T*>(y)[row] = Dt<T>::from_f(acc);
        else if (out_mode == 1) reinterpret_cast<float*>(y)[row] += acc;
        else reinterpret_cast<float*>(y)[row] = acc;
    }
}
extern "C" __global__ void __launch_bounds__(256) dense_gemv_f16(const __half* w, const __half* x, void* y, int N, int K, int m) { dense_gemv(w, x, y, N, K, m); }
extern "C" __global__ void __launch_bounds__(256) dense_gemv_bf16(const __nv_bfloat16* w, const __nv_bfloat16* x, void* y, int N, int K, int m) { dense_gemv(w, x, y, N, K, m); }

// GEMV of an output projection quantized to 8 bits at load time (`--head-bits 8`): the canonical
// uniform format (docs/formats.md) with bits = 8, i.e. row-major code bytes [N][Kp] (Kp = K rounded
// up to 32), an f32 scale and a u8 zero point per group of G = 2^gshift input channels; f32 result
// sum_g s_g * sum_{j in g} (q_j - z_g) x_j. x is staged once per block in shared memory as f32
// (K floats of dynamic shared memory, swizzled); warps take rows blockIdx.x * 8 + warp, += gridDim.x * 8; per
// 512-channel step lane l covers 16 consecutive channels (one 16-byte load of codes), all in one
// group (G % 16 == 0, K % 16 == 0). (q - z) is exact: one PRMT puts the code byte into the mantissa
// of 2^23, one FADD subtracts 2^23 + z. Fixed summation order: deterministic.
#ifndef HEAD_U8_BATCH
#define HEAD_U8_BATCH 4  // 16-byte code loads per lane in flight
#endif
template <typename T>
__device__ void head_u8_gemv(const unsigned char* __restrict__ codes, const float* __restrict__ scales,
                             const unsigned char* __restrict__ zeros, const T* __restrict__ x, void* y, int N, int K,
                             int Kp, int gshift, int out_mode) {
    pdl_launch_dependents();
    pdl_wait();
    extern __shared__ float xs[];
    // 16-byte unit U of x sits at unit U ^ ((U >> 3) & 3): the 8 lanes of a shared-memory phase
    // (lane l reads unit 4 l + u) then hit 8 different bank quads (unswizzled: 4-way conflicts)
    for (int i = threadIdx.x; i < K; i += blockDim.x) {
        const int U = i >> 2;
        xs[((U ^ ((U >> 3) & 3)) << 2) | (i & 3)] = Dt<T>::to_f(x[i]);
    }
    __syncthreads();
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int ng = (K + (1 << gshift) - 1) >> gshift;
    // this lane's four x units of every 512-channel step (the swizzle only permutes them)
    const float4* xl[4];
#pragma unroll
    for (int u = 0; u < 4; u++) xl[u] = reinterpret_cast<const float4*>(xs) + lane * 4 + (u ^ ((lane >> 1) & 3));
    for (int row = blockIdx.x * 8 + warp; row < N; row += gridDim.x * 8) {
        const unsigned char* cr = codes + (size_t)row * Kp + lane * 16;
        const float* sr = scales + (size_t)row * ng;
        const unsigned char* zr = zeros + (size_t)row * ng;
        float acc = 0.f;
        // all loads of a batch first (ldg_stream is asm volatile: program order), then the math
        for (int c0 = 0; c0 < K; c0 += 512 * HEAD_U8_BATCH) {
            uint4 w[HEAD_U8_BATCH];
            float s[HEAD_U8_BATCH], zb[HEAD_U8_BATCH];
#pragma unroll
            for (int t = 0; t < HEAD_U8_BATCH; t++) {
                const int c = c0 + 512 * t + lane * 16;
                if (c < K) {
                    w[t] = ldg_stream(reinterpret_cast<const uint4*>(cr + c0 + 512 * t));
                    s[t] = __ldg(sr + (c >> gshift));
                    zb[t] = -(8388608.f + (float)__ldg(zr + (c >> gshift)));
                }
            }
#pragma unroll
            for (int t = 0; t < HEAD_U8_BATCH; t++) {
                if (c0 + 512 * t + lane * 16 >= K) break;
                const int ub = (c0 >> 2) + 128 * t;
                const u32 wv[4] = {w[t].x, w[t].y, w[t].z, w[t].w};
                float part = 0.f;
#pragma unroll
                for (int u = 0; u < 4; u++) {
                    const float4 xx = xl[u][ub];
                    const float xe[4] = {xx.x, xx.y, xx.z, xx.w};
#pragma unroll
                    for (int b = 0; b < 4; b++) {
                        const float q = __uint_as_float(__byte_perm(wv[u], 0x4b000000u, 0x7440u | b)) + zb[t];
                        part = fmaf(q, xe[b], part);
                    }
                }
                acc = fmaf(s[t], part, acc);
            }
        }
        acc = warp_sum(acc);
        if (lane == 0) {
            if (out_mode == 0) reinterpret_cast<T*>(y)[row] = Dt<T>::from_f(acc);
            else if (out_mode == 1) reinterpret_cast<float*>(y)[row] += acc;
            else reinterpret_cast<float*>(y)[row] = acc;
        }
    }
}
extern "C" __global__ void __launch_bounds__(256) head_u8_gemv_f16(const unsigned char* c, const float* s, const unsigned char* z, const __half* x, void* y, int N, int K, int Kp, int G, int m) { head_u8_gemv(c, s, z, x, y, N, K, Kp, G, m); }
extern "C" __global__ void __launch_bounds__(256) head_u8_gemv_bf16(const unsigned char* c, const float* s, const unsigned char* z, const __nv_bfloat16* x, void* y, int N, int K, int Kp, int G, int m) { head_u8_gemv(c, s, z, x, y, N, K, Kp, G, m); }

// y[i] += bias[i] (f32 bias, activation-dtype output)
template <typename T> __device__ void add_bias(T* y, const float* b, int n) {
    pdl_launch_dependents();
    pdl_wait();
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = Dt<T>::from_f(Dt<T>::to_f(y[i]) + b[i]);
}
extern "C" __global__ void add_bias_f16(__half* y, const float* b, int n) { add_bias(y, b, n); }
extern "C" __global__ void add_bias_bf16(__nv_bfloat16* y, const float* b, int n) { add_bias(y, b, n); }

// Start of a decode step: token and position from mapped host memory (src; or the previous
// step's argmax when feedback != 0) into device memory, read by every later kernel of the step.
extern "C" __global__ void step_begin(const int* src, const int* argmax_tok, int* dst, int feedback) {
    pdl_launch_dependents();
    pdl_wait();
    if (threadIdx.x == 0) {
        int tok = feedback ? *argmax_tok : src[0];
        int pos = feedback ? dst[1] + 1 : src[1];
        dst[0] = tok;
        dst[1] = pos;
    }
}

// argmax over f32 logits, lowest index wins ties; one block of 1024 threads.
extern "C" __global__ void __launch_bounds__(1024) argmax_f32(const float* v, int n, int* out) {
    pdl_launch_dependents();
    pdl_wait();
    __shared__ float sv[32];
    __shared__ int si[32];
    float bv = __int_as_float(0xff800000);
    int bi = 0x7fffffff;
    for (int i = threadIdx.x; i < n; i += 1024) {
        float x = v[i];
        if (x > bv) { bv = x; bi = i; }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_xor_sync(0xffffffffu, bv, o);
        int oi = __shfl_xor_sync(0xffffffffu, bi, o);
        if (ov > bv || (ov == bv && oi < bi)) { bv = ov; bi = oi; }
    }
    const int w = threadIdx.x >> 5, l = threadIdx.x & 31;
    if (l == 0) { sv[w] = bv; si[w] = bi; }
    __syncthreads();
    if (w == 0) {
        bv = sv[l];
        bi = si[l];
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            float ov = __shfl_xor_sync(0xffffffffu, bv, o);
            int oi = __shfl_xor_sync(0xffffffffu, bi, o);
            if (ov > bv || (ov == bv && oi < bi)) { bv = ov; bi = oi; }
        }
        if (l == 0) *out = bi == 0x7fffffff ? 0 : bi;
    }
}

// ---------------------------------------------------------------------------------------------
// Prefill: T tokens at once (CudaEngine::forward with a prompt or a perplexity chunk). Row-batched
// twins of the decode-step kernels above; the linears run as dequantize + cuBLAS GEMM (f32 out)
// and `pf_finish` (gemv.cu's `pf_select` / `pf_dec_gather` add the per-row compensation first).
// Grids are 1-D: blockIdx.x = row * blocks_per_row + block. Launched without PDL (cuBLAS runs
// between them); pdl_wait() is then a no-op.
// ---------------------------------------------------------------------------------------------

// h[t, :] = f32(emb[tok[t], :]); ceil(d / 256) blocks per row.
template <typename T> __device__ void pf_embed(const T* emb, const int* tok, float* h, int d) {
    const int bpr = (d + blockDim.x - 1) / blockDim.x;
    const int t = blockIdx.x / bpr, i = (blockIdx.x % bpr) * blockDim.x + threadIdx.x;
    if (i < d) h[(size_t)t * d + i] = Dt<T>::to_f(emb[(size_t)tok[t] * d + i]);
}
extern "C" __global__ void pf_embed_f16(const __half* e, const int* t, float* h, int d) { pf_embed(e, t, h, d); }
extern "C" __global__ void pf_embed_bf16(const __nv_bfloat16* e, const int* t, float* h, int d) { pf_embed(e, t, h, d); }

// RMSNorm of row blockIdx.x (1024 threads per row), as `rmsnorm`.
extern "C" __global__ void __launch_bounds__(1024) pf_rmsnorm_f16(const float* h, const float* w, __half* out, float* out32, int d, float eps) {
    const size_t o = (size_t)blockIdx.x * d;
    rmsnorm(h + o, w, out + o, out32 ? out32 + o : nullptr, d, eps);
}
extern "C" __global__ void __launch_bounds__(1024) pf_rmsnorm_bf16(const float* h, const float* w, __nv_bfloat16* out, float* out32, int d, float eps) {
    const size_t o = (size_t)blockIdx.x * d;
    rmsnorm(h + o, w, out + o, out32 ? out32 + o : nullptr, d, eps);
}

// RoPE + KV append of row t at position pos0 + t; nh + 2 nkv blocks per row, as `rope_kv`.
template <typename T>
__device__ void pf_rope_kv(T* qkv, const float* inv_freq, T* kc, T* vc, int pos0, int nh, int nkv, int hd) {
    const int nb = nh + 2 * nkv, t = blockIdx.x / nb;
    rope_kv_at(qkv + (size_t)t * nb * hd, inv_freq, kc, vc, pos0 + t, nh, nkv, hd, blockIdx.x % nb);
}
extern "C" __global__ void pf_rope_kv_f16(__half* qkv, const float* f, __half* kc, __half* vc, int pos0, int nh, int nkv, int hd) { pf_rope_kv(qkv, f, kc, vc, pos0, nh, nkv, hd); }
extern "C" __global__ void pf_rope_kv_bf16(__nv_bfloat16* qkv, const float* f, __nv_bfloat16* kc, __nv_bfloat16* vc, int pos0, int nh, int nkv, int hd) { pf_rope_kv(qkv, f, kc, vc, pos0, nh, nkv, hd); }

// Causal attention of rows r0.. (row t at position pos0 + t, its k, v already appended), flash
// style: a block takes one query head and PF_ROWS consecutive rows (2 per warp) and walks the
// cache in tiles of PF_KT positions staged in shared memory (f32), shared by its rows; per row an
// online softmax in f32 (running max and sum, fixed order: deterministic). Lane l owns output
// dims l, l + 32, ... (hd <= 256). The decode-step kernel would read the whole cache once per
// (head, row): 34 ms of a 70 ms 512-token prefill on the H200 (docs/performance.md).
#define PF_ROWS 16
#define PF_KT 64
template <typename T>
__device__ void pf_attn(const T* qkv, const T* kc, const T* vc, T* out, float* out32, int pos0, int rows, int nh,
                        int nkv, int hd, float scale) {
    extern __shared__ float sm[];
    const int ntile = (rows + PF_ROWS - 1) / PF_ROWS;
    // the longest tiles (last rows) first
    const int h = blockIdx.x % nh, tile = ntile - 1 - blockIdx.x / nh;
    const int kvh = h / (nh / nkv);
    const int r0 = tile * PF_ROWS;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const size_t qd = (size_t)(nh + 2 * nkv) * hd;
    const int dim = nh * hd;
    float* qs = sm;                          // [PF_ROWS][hd]
    float* ks = qs + PF_ROWS * hd;           // [PF_KT][hd + 1]
    float* vs = ks + PF_KT * (hd + 1);       // [PF_KT][hd]
    for (int i = threadIdx.x; i < PF_ROWS * hd; i += blockDim.x) {
        const int r = i / hd, d = i % hd;
        qs[i] = (r0 + r < rows) ? Dt<T>::to_f(qkv[(size_t)(r0 + r) * qd + h * hd + d]) : 0.f;
    }
    const int last = pos0 + min(r0 + PF_ROWS, rows) - 1;  // last position any row of the tile sees
    float m[2], l[2], acc[2][8];
#pragma unroll
    for (int i = 0; i < 2; i++) {
        m[i] = __int_as_float(0xff800000);
        l[i] = 0.f;
#pragma unroll
        for (int u = 0; u < 8; u++) acc[i][u] = 0.f;
    }
    // this warp's rows 2 warp + i: both read every key and value of a tile from shared memory
    // once (register blocking: 4 FMAs per 4 loads in the scores, 2 per load in the sum)
    const int pa = pos0 + r0 + 2 * warp;  // position of row 2 warp; row 2 warp + 1 is at pa + 1
    const bool valid[2] = {r0 + 2 * warp < rows, r0 + 2 * warp + 1 < rows};
    for (int j0 = 0; j0 <= last; j0 += PF_KT) {
        __syncthreads();
        if ((hd & 7) == 0) {
            // 16-byte loads: 8 dims of one position
            const int hv = hd >> 3;
            for (int i = threadIdx.x; i < PF_KT * hv; i += blockDim.x) {
                const int jj = i / hv, d = (i % hv) * 8, j = j0 + jj;
                uint4 kr = make_uint4(0, 0, 0, 0), vr = kr;
                if (j <= last) {
                    const size_t o = ((size_t)j * nkv + kvh) * hd + d;
                    kr = *reinterpret_cast<const uint4*>(kc + o);
                    vr = *reinterpret_cast<const uint4*>(vc + o);
                }
                const T* kt = reinterpret_cast<const T*>(&kr);
                const T* vt = reinterpret_cast<const T*>(&vr);
#pragma unroll
                for (int e = 0; e < 8; e++) {
                    ks[jj * (hd + 1) + d + e] = Dt<T>::to_f(kt[e]);
                    vs[jj * hd + d + e] = Dt<T>::to_f(vt[e]);
                }
            }
        } else {
            for (int i = threadIdx.x; i < PF_KT * hd; i += blockDim.x) {
                const int jj = i / hd, d = i % hd, j = j0 + jj;
                const size_t o = ((size_t)j * nkv + kvh) * hd + d;
                ks[jj * (hd + 1) + d] = j <= last ? Dt<T>::to_f(kc[o]) : 0.f;
                vs[jj * hd + d] = j <= last ? Dt<T>::to_f(vc[o]) : 0.f;
            }
        }
        __syncthreads();
        // rows that see this tile (warp-uniform)
        const bool act[2] = {valid[0] && pa >= j0, valid[1] && pa + 1 >= j0};
        if (!act[0] && !act[1]) continue;
        const float* qa = qs + 2 * warp * hd;
        const float* qb = qa + hd;
        float s[2][2] = {{0.f, 0.f}, {0.f, 0.f}};
        for (int d = 0; d < hd; d++) {
            const float k0 = ks[lane * (hd + 1) + d], k1 = ks[(lane + 32) * (hd + 1) + d];
            const float x = qa[d], y = qb[d];
            s[0][0] = fmaf(x, k0, s[0][0]);
            s[0][1] = fmaf(x, k1, s[0][1]);
            s[1][0] = fmaf(y, k0, s[1][0]);
            s[1][1] = fmaf(y, k1, s[1][1]);
        }
        float e[2][2];
#pragma unroll
        for (int i = 0; i < 2; i++) {
            e[i][0] = e[i][1] = 0.f;  // inactive rows add nothing below
            if (!act[i]) continue;
            const int p = pa + i;
            const float s0 = (j0 + lane <= p) ? s[i][0] * scale : __int_as_float(0xff800000);
            const float s1 = (j0 + lane + 32 <= p) ? s[i][1] * scale : __int_as_float(0xff800000);
            const float mn = fmaxf(m[i], warp_max(fmaxf(s0, s1)));
            const float corr = expf(m[i] - mn);
            e[i][0] = expf(s0 - mn);
            e[i][1] = expf(s1 - mn);
            l[i] = l[i] * corr + warp_sum(e[i][0] + e[i][1]);
            m[i] = mn;
#pragma unroll
            for (int u = 0; u < 8; u++) acc[i][u] *= corr;
        }
        // masked positions and inactive rows have e = 0: fmaf(0, v, acc) == acc
        const int nj = min(PF_KT, (act[1] ? pa + 1 : pa) - j0 + 1);
        for (int jj = 0; jj < nj; jj++) {
            const float p0 = __shfl_sync(0xffffffffu, jj < 32 ? e[0][0] : e[0][1], jj & 31);
            const float p1 = __shfl_sync(0xffffffffu, jj < 32 ? e[1][0] : e[1][1], jj & 31);
            const float* v = vs + jj * hd;
#pragma unroll
            for (int u = 0; u < 8; u++) {
                const int d = lane + 32 * u;
                if (d < hd) {
                    const float vd = v[d];
                    acc[0][u] = fmaf(p0, vd, acc[0][u]);
                    acc[1][u] = fmaf(p1, vd, acc[1][u]);
                }
            }
        }
    }
#pragma unroll
    for (int i = 0; i < 2; i++) {
        const int r = 2 * warp + i;
        if (r0 + r >= rows) continue;
        const float inv = 1.f / l[i];
#pragma unroll
        for (int u = 0; u < 8; u++) {
            const int d = lane + 32 * u;
            if (d < hd) {
                const float o = acc[i][u] * inv;
                const size_t oi = (size_t)(r0 + r) * dim + h * hd + d;
                out[oi] = Dt<T>::from_f(o);
                if (out32) out32[oi] = o;
            }
        }
    }
}
extern "C" __global__ void __launch_bounds__(OPS_THREADS) pf_attn_f16(const __half* qkv, const __half* kc, const __half* vc, __half* out, float* o32, int pos0, int rows, int nh, int nkv, int hd, float scale) { pf_attn(qkv, kc, vc, out, o32, pos0, rows, nh, nkv, hd, scale); }
extern "C" __global__ void __launch_bounds__(OPS_THREADS) pf_attn_bf16(const __nv_bfloat16* qkv, const __nv_bfloat16* kc, const __nv_bfloat16* vc, __nv_bfloat16* out, float* o32, int pos0, int rows, int nh, int nkv, int hd, float scale) { pf_attn(qkv, kc, vc, out, o32, pos0, rows, nh, nkv, hd, scale); }

// The same attention on the tensor cores for head_dim HD in {64, 128} (FlashAttention-2 style):
// a block of 4 warps takes one query head and PF_TC_ROWS = 64 rows (16 per warp, Q held as mma A
// fragments), walks the cache in tiles of 64 positions staged in shared memory (K and V as stored,
// rows padded by 16 bytes so that ldmatrix spreads over the banks), S = Q K^T by mma.m16n8k16
// with f32 accumulation (exact products, as the CPU's f32 dot), an online softmax in f32 per row
// (running max and sum, the thread's partial sums reduced over its quad at the end), and O += P V
// with P split into hi + lo activation-dtype parts (two mmas) so that the probabilities keep
// ~2^-16 relative precision in bf16 too. Fixed order everywhere: deterministic.
#define PF_TC_ROWS 64
template <typename T, int HD>
__device__ void pf_attn_tc(const T* qkv, const T* kc, const T* vc, T* out, float* out32, int pos0, int rows, int nh,
                           int nkv, float scale) {
    constexpr int LD = HD + 8;  // shared row stride (elements)
    __shared__ __align__(16) T ks[PF_KT * LD];
    __shared__ __align__(16) T vs[PF_KT * LD];
    const int ntile = (rows + PF_TC_ROWS - 1) / PF_TC_ROWS;
    const int h = blockIdx.x % nh, tile = ntile - 1 - blockIdx.x / nh;  // the longest tiles first
    const int kvh = h / (nh / nkv);
    const int r0 = tile * PF_TC_ROWS;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const size_t qd = (size_t)(nh + 2 * nkv) * HD;
    const int wr0 = r0 + 16 * warp;  // the warp's first row
    u32 qa[HD / 16][4];              // A fragments of the warp's 16 query rows
#pragma unroll
    for (int kk = 0; kk < HD / 16; kk++) {
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int row = wr0 + g + 8 * (i & 1), col = 16 * kk + 2 * t + 8 * (i >> 1);
            qa[kk][i] = row < rows ? *reinterpret_cast<const u32*>(qkv + (size_t)row * qd + h * HD + col) : 0u;
        }
    }
    float o[HD / 8][4];
#pragma unroll
    for (int dn = 0; dn < HD / 8; dn++) o[dn][0] = o[dn][1] = o[dn][2] = o[dn][3] = 0.f;
    float m[2] = {__int_as_float(0xff800000), __int_as_float(0xff800000)}, l[2] = {0.f, 0.f};
    const int last = pos0 + min(r0 + PF_TC_ROWS, rows) - 1;  // last position any row of the block sees
    const bool wlive = wr0 < rows;
    const int wlast = pos0 + min(wr0 + 16, rows) - 1;       // ... any row of this warp
    const int pr[2] = {pos0 + wr0 + g, pos0 + wr0 + g + 8};   // positions of the lane's rows
    for (int j0 = 0; j0 <= last; j0 += PF_KT) {
        __syncthreads();
        for (int i = threadIdx.x; i < PF_KT * (HD / 8); i += blockDim.x) {
            const int jj = i / (HD / 8), c = (i % (HD / 8)) * 8, j = j0 + jj;
            uint4 kr = make_uint4(0, 0, 0, 0), vr = kr;
            if (j <= last) {
                const size_t off = ((size_t)j * nkv + kvh) * HD + c;
                kr = *reinterpret_cast<const uint4*>(kc + off);
                vr = *reinterpret_cast<const uint4*>(vc + off);
            }
            *reinterpret_cast<uint4*>(ks + jj * LD + c) = kr;
            *reinterpret_cast<uint4*>(vs + jj * LD + c) = vr;
        }
        __syncthreads();
        if (!wlive || j0 > wlast) continue;  // warp-uniform: the tile is past all of the warp's rows
        float s[8][4];
#pragma unroll
        for (int nt = 0; nt < 8; nt++) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
#pragma unroll
        for (int kk = 0; kk < HD / 16; kk++) {
#pragma unroll
            for (int nt = 0; nt < 8; nt += 2) {
                u32 b0, b1, b2, b3;  // B fragments of position tiles nt, nt + 1 (K rows as stored)
                ldsm_x4(b0, b1, b2, b3, ks + (8 * nt + (lane & 7) + (lane >> 4) * 8) * LD + 16 * kk + ((lane >> 3) & 1) * 8);
                mma16816<T>(s[nt], qa[kk][0], qa[kk][1], qa[kk][2], qa[kk][3], b0, b1);
                mma16816<T>(s[nt + 1], qa[kk][0], qa[kk][1], qa[kk][2], qa[kk][3], b2, b3);
            }
        }
        // scale, causal mask, online softmax (rows g and g + 8 of the warp; a quad shares a row)
        float mx[2] = {__int_as_float(0xff800000), __int_as_float(0xff800000)};
#pragma unroll
        for (int nt = 0; nt < 8; nt++) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int j = j0 + 8 * nt + 2 * t + (e & 1), r = e >> 1;
                const float v = j <= pr[r] ? s[nt][e] * scale : __int_as_float(0xff800000);
                s[nt][e] = v;
                mx[r] = fmaxf(mx[r], v);
            }
        }
        tc_softmax_pv<T, HD, 8, LD>(s, mx, m, l, o, vs, lane);
    }
    if (!wlive) return;
    const int dim = nh * HD;
#pragma unroll
    for (int r = 0; r < 2; r++) {
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
        const int row = wr0 + g + 8 * r;
        if (row >= rows) continue;
        const float inv = 1.f / l[r];
#pragma unroll
        for (int dn = 0; dn < HD / 8; dn++) {
            const float a = o[dn][2 * r] * inv, b = o[dn][2 * r + 1] * inv;
            const size_t oi = (size_t)row * dim + h * HD + 8 * dn + 2 * t;
            out[oi] = Dt<T>::from_f(a);
            out[oi + 1] = Dt<T>::from_f(b);
            if (out32) {
                out32[oi] = a;
                out32[oi + 1] = b;
            }
        }
    }
}
#define PF_ATTN_TC_ENTRY(NAME, T, HD)                                                                              \
    extern "C" __global__ void __launch_bounds__(128) NAME(const T* qkv, const T* kc, const T* vc, T* out, float* o32, \
                                                           int pos0, int rows, int nh, int nkv, int hd, float scale) { \
        pf_attn_tc<T, HD>(qkv, kc, vc, out, o32, pos0, rows, nh, nkv, scale);                                          \
    }
PF_ATTN_TC_ENTRY(pf_attn_tc64_f16, __half, 64)
PF_ATTN_TC_ENTRY(pf_attn_tc128_f16, __half, 128)
PF_ATTN_TC_ENTRY(pf_attn_tc64_bf16, __nv_bfloat16, 64)
PF_ATTN_TC_ENTRY(pf_attn_tc128_bf16, __nv_bfloat16, 128)

// out[t, i] = silu(gu[t, i]) * gu[t, f + i] for rows * f elements (gate-up rows of 2 f).
template <typename T> __device__ void pf_silu(const T* gu, T* out, float* out32, int f, int rows) {
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)rows * f) return;
    const size_t t = i / f, j = i % f;
    float g = Dt<T>::to_f(gu[t * 2 * f + j]), u = Dt<T>::to_f(gu[t * 2 * f + f + j]);
    float v = g / (1.f + expf(-g)) * u;
    out[i] = Dt<T>::from_f(v);
    if (out32) out32[i] = v;
}
extern "C" __global__ void pf_silu_f16(const __half* gu, __half* out, float* o32, int f, int rows) { pf_silu(gu, out, o32, f, rows); }
extern "C" __global__ void pf_silu_bf16(const __nv_bfloat16* gu, __nv_bfloat16* out, float* o32, int f, int rows) { pf_silu(gu, out, o32, f, rows); }

// The end of one linear of the prefill: v = y32[t, j] (+ comp[t, j]) (+ bias[j]) for rows * n
// elements, stored in the activation dtype at out[t * ldo + j] or added to the f32 residual
// stream h[t * n + j] (out == nullptr), as the decode step's GEMV does with its f32 result.
template <typename T>
__device__ void pf_finish(const float* y32, const float* comp, const float* bias, int n, int rows, T* out, int ldo,
                          float* h) {
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)rows * n) return;
    const size_t t = i / n, j = i % n;
    float v = y32[i];
    if (comp) v += comp[i];
    if (bias) v += bias[j];
    if (out)
        out[t * ldo + j] = Dt<T>::from_f(v);
    else
        h[i] += v;
}
extern "C" __global__ void pf_finish_f16(const float* y, const float* c, const float* b, int n, int rows, __half* out, int ldo, float* h) { pf_finish(y, c, b, n, rows, out, ldo, h); }
extern "C" __global__ void pf_finish_bf16(const float* y, const float* c, const float* b, int n, int rows, __nv_bfloat16* out, int ldo, float* h) { pf_finish(y, c, b, n, rows, out, ldo, h); }

// ---------------------------------------------------------------------------------------------
// Benchmark / synthetic-model helpers
// ---------------------------------------------------------------------------------------------
__device__ __forceinline__ u64 splitmix(u64 z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
// random 32-bit words (random codes in any packed layout)
extern "C" __global__ void fill_random_u32(u32* p, u64 n, u64 seed) {
    for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x)
        p[i] = (u32)splitmix(seed * 0x100000001B3ull + i);
}
// uniform floats in [lo, hi)
extern "C" __global__ void fill_uniform_f32(float* p, u64 n, u64 seed, float lo, float hi) {
    for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x) {
        float u = (float)(splitmix(seed * 0x100000001B3ull + i) >> 40) * (1.f / 16777216.f);
        p[i] = lo + (hi - lo) * u;
    }
}
template <typename T> __device__ void fill_uniform_t(T* p, u64 n, u64 seed, float lo, float hi) {
    for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x) {
        float u = (float)(splitmix(seed * 0x100000001B3ull + i) >> 40) * (1.f / 16777216.f);
        p[i] = Dt<T>::from_f(lo + (hi - lo) * u);
    }
}
extern "C" __global__ void fill_uniform_f16(__half* p, u64 n, u64 seed, float lo, float hi) { fill_uniform_t(p, n, seed, lo, hi); }
extern "C" __global__ void fill_uniform_bf16(__nv_bfloat16* p, u64 n, u64 seed, float lo, float hi) { fill_uniform_t(p, n, seed, lo, hi); }
// random scale|zero words of the tiled uniform layout: scale in [lo, hi), zero in [0, 2^bits)
extern "C" __global__ void fill_scale_zero(u32* p, u64 n, u64 seed, float lo, float hi, int bits) {
    for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x) {
        u64 r = splitmix(seed * 0x100000001B3ull + i);
        float u = (float)(r >> 40) * (1.f / 16777216.f);
        float s = lo + (hi - lo) * u;
        p[i] = (__float_as_uint(s) & ~0xFu) | (u32)(r & ((1u << bits) - 1));
    }
}

// Streaming copy (bandwidth probe): dst = src, 16-byte accesses.
extern "C" __global__ void copy_u4(const uint4* src, uint4* dst, u64 n) {
    for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x) dst[i] = src[i];
}
// Zero-copy read probe: every block reads 2 KB rows of mapped host memory; xor-reduced so nothing is elided.
extern "C" __global__ void zero_copy_read(const uint4* src, u64 n, u32* sink) {
    u32 acc = 0;
    for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x) {
        uint4 v = src[i];
        acc ^= v.x ^ v.y ^ v.z ^ v.w;
    }
    if (acc == 0x12345678u) *sink = acc;
}
