// Salient-channel selection shared by the GEMV (gemv.cu) and the producers of x (ops.cu).
#ifndef NWARP
#define NWARP 8
#endif
#ifndef NTHREADS
#define NTHREADS 256
#endif

// Shared memory (ints) a block needs for one selection: the per-warp bucket histograms.
#define SEL_SH (NWARP * 32)

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

// Two block barriers: every warp builds the 32-bucket histogram of its 128 channels with ballots
// (lane j counts bucket j), publishes it in shared memory, and then every warp derives, from the 8
// histograms alone, the boundary bucket, the budget left for it, and the number of channels
// selected in the warps before it; ranks and positions inside a warp come from ballots and shuffles.
__device__ void select_chunk_vals(const float* v, int lo, int size, int kc, float a, float b, int* gidx, float* gval,
                                  int* sh, long long* st) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const unsigned lt = (1u << lane) - 1u;  // lanes before this one
    float fl = bucket_floor_raw(a, b, lane);
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        float t = __shfl_up_sync(0xffffffffu, fl, o);
        if (lane >= o) fl = fminf(fl, t);
    }
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
    // warp histogram: the lanes whose bucket bits all equal this lane's index
    int cnt = 0;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        unsigned m = __ballot_sync(0xffffffffu, bk[i] < 32);
#pragma unroll
        for (int bit = 0; bit < 5; bit++) {
            const unsigned bb = __ballot_sync(0xffffffffu, (bk[i] >> bit) & 1);
            m &= ((lane >> bit) & 1) ? bb : ~bb;
        }
        cnt += __popc(m);
    }
    sh[warp * 32 + lane] = cnt;
    __syncthreads();
    // lane j: bucket j's count in the whole chunk and in the warps before this one
    int tot = 0, pre = 0;
#pragma unroll
    for (int w = 0; w < NWARP; w++) {
        const int c = sh[w * 32 + lane];
        tot += c;
        pre += w < warp ? c : 0;
    }
    int incl = tot;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        int t = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl += t;
    }
    // boundary: first bucket whose inclusive count exceeds the budget (whole buckets that fit)
    const unsigned over = __ballot_sync(0xffffffffu, incl > kc);
    const int B = over ? __ffs(over) - 1 : 32;
    const int before = __shfl_sync(0xffffffffu, incl - tot, B & 31);
    const int need = B < 32 ? kc - before : 0;
    const int total = B < 32 ? kc : __shfl_sync(0xffffffffu, incl, 31);  // channels selected
    // earlier warps: channels of buckets below B, and of bucket B (the first `need` of B count)
    int less_pre = lane < B ? pre : 0;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) less_pre += __shfl_xor_sync(0xffffffffu, less_pre, o);
    const int b_pre = __shfl_sync(0xffffffffu, pre, B & 31);
    if (st && threadIdx.x == 0) st[2] = clock64();
    // rank of this thread's bucket-B channels among all of the chunk's, in channel order
    int rank = b_pre;
#pragma unroll
    for (int i = 0; i < 4; i++) rank += __popc(__ballot_sync(0xffffffffu, bk[i] == B) & lt);
    int flags = 0, ns = 0;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        bool s = bk[i] < B || (bk[i] == B && rank < need);
        if (bk[i] == B) rank++;
        if (s) { flags |= 1 << i; ns++; }
    }
    int pos = ns;  // inclusive warp scan, then exclusive
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        int t = __shfl_up_sync(0xffffffffu, pos, o);
        if (lane >= o) pos += t;
    }
    pos += less_pre + (B < 32 ? min(need, b_pre) : 0) - ns;
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
    __syncthreads();  // sh is reused by the caller
    if (st && threadIdx.x == 0) st[3] = clock64();
}
