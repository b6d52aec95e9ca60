// Salient-channel selection shared by the GEMV (gemv.cu) and the producers of x (ops.cu).
#ifndef NWARP
#define NWARP 8
#endif
#ifndef NTHREADS
#define NTHREADS 256
#endif

// Selection request handed to a producer kernel: where the consumer GEMV's DEC blocks read it.
struct SelArgs {
    int* sel_idx;    // consumer's selection buffers (nullptr: no selection)
    float* sel_val;
    float a, b;
    int k_chunk;
};

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

// v: this thread's 4 channels lo + 4*threadIdx.x + i (values past `size` are ignored).
__device__ void select_chunk_vals(const float* v, int lo, int size, int kc, float a, float b, int* gidx, float* gval,
                                  int* sh, long long* st = nullptr);

// A producer's share of a selection request: chunk c (channels [1024 c, 1024 c + size)) of the
// consumer's selection, from this thread's 4 values `v`; nothing when the request is empty or the
// chunk's budget rounds to zero.
__device__ __forceinline__ void select_chunk_for(const SelArgs& sa, const float* v, int c, int size, int* sh) {
    const int kc = (sa.k_chunk * size) / 1024;
    if (sa.sel_idx != nullptr && kc > 0)
        select_chunk_vals(v, c * 1024, size, kc, sa.a, sa.b, sa.sel_idx + c * sa.k_chunk, sa.sel_val + c * sa.k_chunk, sh);
}

template <typename T>
__device__ void select_chunk_block(const T* __restrict__ x, const float* __restrict__ x32, int lo, int size, int kc,
                                   float a, float b, int* gidx, float* gval, int* sh, long long* st = nullptr) {
    if (st && threadIdx.x == 0) st[0] = clock64();
    const int e0 = 4 * threadIdx.x;
    float v[4];
    if (x32 != nullptr) {
#pragma unroll
        for (int i = 0; i < 4; i++) v[i] = (e0 + i < size) ? x32[lo + e0 + i] : 0.f;
    } else if (e0 + 4 <= size && ((lo + e0) & 3) == 0) {
        // one 8-byte load for the thread's 4 channels
        uint2 r = *reinterpret_cast<const uint2*>(x + lo + e0);
        const T* t = reinterpret_cast<const T*>(&r);
#pragma unroll
        for (int i = 0; i < 4; i++) v[i] = Dt<T>::to_f(t[i]);
    } else {
#pragma unroll
        for (int i = 0; i < 4; i++) v[i] = (e0 + i < size) ? Dt<T>::to_f(x[lo + e0 + i]) : 0.f;
    }
    select_chunk_vals(v, lo, size, kc, a, b, gidx, gval, sh, st);
}

__device__ void select_chunk_vals(const float* v, int lo, int size, int kc, float a, float b, int* gidx, float* gval,
                                  int* sh, long long* st) {
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
    int bk[4];
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
    if (st && threadIdx.x == 0) st[1] = clock64() + (bk[0] & 0);
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
    if (st && threadIdx.x == 0) st[2] = clock64();
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
    if (st && threadIdx.x == 0) st[3] = clock64();
}

