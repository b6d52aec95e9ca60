// Experiment 69 (docs/performance.md): can the TMA engine (cp.async.bulk) gather residual rows from
// mapped pinned host memory faster, or with fewer blocks, than the SM loads the DEC blocks use now?
// Experiment 19 found the zero-copy rate of plain loads set by the number of SMs issuing them
// (~0.7 GB/s per SM), which is why the DEC blocks take 32-64 GEMV slots. A microbenchmark, not part
// of the build: compiled on the GPU machine with
//   nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a exp69-bulk-zero-copy.cu
// Each case gathers `rows` random rows of `rb` bytes (the residual rows of one projection at one
// k_chunk) with `nb` blocks: units = (row, piece), pieces per row = max(1, nb / rows), dealt to the
// blocks round-robin. "bulk": thread 0 issues one cp.async.bulk per unit into shared memory
// (mbarrier completion, batches of at most 96 KB per block); "ldg": the block's 128 threads read
// the units with 16-byte loads, 8 in flight per thread. Time: median over 15 replays of a CUDA graph
// of 20 calls, per call (launch gaps included, as in `decdec bench kernels`), and an empty kernel's
// per-call time for reference.
#include <cstdio>
#include <cstdint>
#include <cstdlib>
#include <vector>
#include <algorithm>
#include <cuda_runtime.h>

typedef uint32_t u32;
#define CK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { printf("%s:%d %s\n", __FILE__, __LINE__, cudaGetErrorString(e)); exit(1); } } while (0)

#define SMEM_BYTES (96 * 1024)
#define NSETS 4096
#define MAX_ROWS 256


struct Job {
    const char* host;   // mapped pinned host memory (device pointer)
    const int* row_sets; // [NSETS][MAX_ROWS] random rows; each call takes the next set (*ctr), so
                         // that replays never re-read rows another call left in L2
    int* ctr;
    int rows, rb, pieces, piece_bytes;
    u32* sink;
};

__device__ __forceinline__ const int* row_set(const Job& j) {
    return j.row_sets + (size_t)(*reinterpret_cast<volatile int*>(j.ctr) % NSETS) * MAX_ROWS;
}
__device__ __forceinline__ void next_set(const Job& j) {
    if (blockIdx.x == 0 && threadIdx.x == 0) atomicAdd(j.ctr, 1);
}

__device__ __forceinline__ u32 smem_u32(const void* p) { return (u32)__cvta_generic_to_shared(p); }

__global__ void empty_kernel(u32* sink) {
    if (threadIdx.x == 0 && blockIdx.x == 1000000) sink[0] = 1;
}

__global__ void __launch_bounds__(128) gather_bulk(Job j) {
    extern __shared__ __align__(128) unsigned char buf[];
    __shared__ __align__(8) unsigned long long bar;
    const int units = j.rows * j.pieces;
    const int* row_idx = row_set(j);
    if (threadIdx.x == 0) {
        asm volatile("mbarrier.init.shared.b64 [%0], 1;" ::"r"(smem_u32(&bar)));
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    __syncthreads();
    u32 acc = 0;
    int phase = 0;
    int u = blockIdx.x;
    while (u < units) {
        // one batch: as many of this block's units as fit in the buffer
        if (threadIdx.x == 0) {
            int off = 0, v = u;
            int bytes_total = 0;
            // count first so that expect_tx precedes the copies
            for (; v < units; v += gridDim.x) {
                const int r = v / j.pieces, p = v % j.pieces;
                const int nbytes = min(j.piece_bytes, j.rb - p * j.piece_bytes);
                if (off + nbytes > SMEM_BYTES) break;
                off += nbytes;
                bytes_total += nbytes;
                (void)r;
            }
            asm volatile("mbarrier.arrive.expect_tx.shared.b64 _, [%0], %1;" ::"r"(smem_u32(&bar)), "r"(bytes_total) : "memory");
            off = 0;
            for (v = u; v < units; v += gridDim.x) {
                const int r = v / j.pieces, p = v % j.pieces;
                const int nbytes = min(j.piece_bytes, j.rb - p * j.piece_bytes);
                if (off + nbytes > SMEM_BYTES) break;
                const char* src = j.host + (size_t)row_idx[r] * j.rb + (size_t)p * j.piece_bytes;
                asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];"
                             ::"r"(smem_u32(buf + off)), "l"(src), "r"(nbytes), "r"(smem_u32(&bar)) : "memory");
                off += nbytes;
            }
        }
        // every thread advances u the same way (the batch boundary depends only on sizes)
        {
            int off = 0, v = u;
            for (; v < units; v += gridDim.x) {
                const int p = v % j.pieces;
                const int nbytes = min(j.piece_bytes, j.rb - p * j.piece_bytes);
                if (off + nbytes > SMEM_BYTES) break;
                off += nbytes;
            }
            u = v;
        }
        // wait for the batch
        u32 done = 0;
        while (!done) {
            asm volatile("{ .reg .pred p; mbarrier.try_wait.parity.shared.b64 p, [%1], %2; selp.u32 %0, 1, 0, p; }"
                         : "=r"(done) : "r"(smem_u32(&bar)), "r"(phase) : "memory");
        }
        phase ^= 1;
        acc += reinterpret_cast<const u32*>(buf)[threadIdx.x];
        __syncthreads();  // buffer reused by the next batch
    }
    if (acc == 0x12345678u) j.sink[0] = acc;
    __syncthreads();
    next_set(j);
}

__global__ void __launch_bounds__(128) gather_ldg(Job j) {
    const int units = j.rows * j.pieces;
    const int* row_idx = row_set(j);
    u32 acc = 0;
    for (int u = blockIdx.x; u < units; u += gridDim.x) {
        const int r = u / j.pieces, p = u % j.pieces;
        const int nbytes = min(j.piece_bytes, j.rb - p * j.piece_bytes);
        const uint4* src = reinterpret_cast<const uint4*>(j.host + (size_t)row_idx[r] * j.rb + (size_t)p * j.piece_bytes);
        const int n16 = nbytes / 16;
        for (int i0 = threadIdx.x; i0 < n16; i0 += 128 * 8) {
            uint4 v[8];
#pragma unroll
            for (int k = 0; k < 8; k++) {
                const int i = i0 + 128 * k;
                v[k] = i < n16 ? src[i] : make_uint4(0, 0, 0, 0);
            }
#pragma unroll
            for (int k = 0; k < 8; k++) acc += v[k].x ^ v[k].w;
        }
    }
    if (acc == 0x12345678u) j.sink[0] = acc;
    __syncthreads();
    next_set(j);
}

static float median(std::vector<float> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

template <typename F> static float time_graph(cudaStream_t s, F launch) {
    cudaGraph_t g;
    cudaGraphExec_t ge;
    CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
    for (int i = 0; i < 20; i++) launch(i);
    CK(cudaStreamEndCapture(s, &g));
    CK(cudaGraphInstantiate(&ge, g, 0));
    cudaEvent_t a, b;
    CK(cudaEventCreate(&a));
    CK(cudaEventCreate(&b));
    std::vector<float> t;
    for (int r = 0; r < 18; r++) {
        CK(cudaEventRecord(a, s));
        CK(cudaGraphLaunch(ge, s));
        CK(cudaEventRecord(b, s));
        CK(cudaEventSynchronize(b));
        float ms;
        CK(cudaEventElapsedTime(&ms, a, b));
        if (r >= 3) t.push_back(ms * 1000.f / 20.f);
    }
    CK(cudaGetLastError());
    CK(cudaGraphExecDestroy(ge));
    CK(cudaGraphDestroy(g));
    return median(t);
}

int main() {
    const size_t host_bytes = 512ull << 20;
    char* h;
    CK(cudaHostAlloc(&h, host_bytes, cudaHostAllocMapped));
    for (size_t i = 0; i < host_bytes / 4; i++) reinterpret_cast<u32*>(h)[i] = (u32)(i * 2654435761u);
    char* hd;
    CK(cudaHostGetDevicePointer(&hd, h, 0));
    u32* sink;
    CK(cudaMalloc(&sink, 4));
    CK(cudaFuncSetAttribute(gather_bulk, cudaFuncAttributeMaxDynamicSharedMemorySize, SMEM_BYTES));
    cudaStream_t s;
    CK(cudaStreamCreate(&s));
    int* idx;
    CK(cudaMalloc(&idx, (size_t)NSETS * MAX_ROWS * sizeof(int)));
    int* ctr;
    CK(cudaMalloc(&ctr, 4));
    CK(cudaMemset(ctr, 0, 4));
    float empty = time_graph(s, [&](int) { empty_kernel<<<132, 128, 0, s>>>(sink); });
    printf("empty kernel (132 blocks): %.2f us per call\n", empty);
    struct Case { const char* name; int rows, rb; };
    Case cases[] = {
        {"o k4 (16 x 2 KB)", 16, 2048},
        {"qkv k4 (16 x 3 KB)", 16, 3072},
        {"qkv k8 (32 x 3 KB)", 32, 3072},
        {"down k4 (56 x 2 KB)", 56, 2048},
        {"gate-up k4 (16 x 14 KB)", 16, 14336},
        {"gate-up k8 (32 x 14 KB)", 32, 14336},
    };
    const int nbs[] = {1, 2, 4, 8, 16, 32, 64, 132};
    srand(7);
    for (const Case& c : cases) {
        const int nrow_total = (int)(host_bytes / c.rb);
        std::vector<int> hi((size_t)NSETS * MAX_ROWS);
        for (int& v : hi) v = rand() % nrow_total;
        CK(cudaMemcpy(idx, hi.data(), hi.size() * sizeof(int), cudaMemcpyHostToDevice));
        const double bytes = (double)c.rows * c.rb;
        printf("\n%s: %.0f KB per call\n", c.name, bytes / 1024);
        printf("  %5s %12s %9s %12s %9s\n", "nb", "bulk us", "GB/s", "ldg us", "GB/s");
        for (int nb : nbs) {
            Job j;
            j.host = hd;
            j.rows = c.rows;
            j.rb = c.rb;
            j.pieces = std::max(1, nb / c.rows);
            j.piece_bytes = ((c.rb / j.pieces) + 15) / 16 * 16;
            j.sink = sink;
            j.row_sets = idx;
            j.ctr = ctr;
            float tb = time_graph(s, [&](int) { gather_bulk<<<nb, 128, SMEM_BYTES, s>>>(j); });
            float tl = time_graph(s, [&](int) { gather_ldg<<<nb, 128, 0, s>>>(j); });
            printf("  %5d %12.2f %9.1f %12.2f %9.1f\n", nb, tb, bytes / tb / 1e3, tl, bytes / tl / 1e3);
        }
    }
    CK(cudaDeviceSynchronize());
    return 0;
}
