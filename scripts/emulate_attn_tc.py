#!/usr/bin/env python3
"""CPU emulation of the tensor-core split-KV decode attention (kernels/ops.cu `attn_split_tc`,
experiment 81), written when no GPU was lent (session 17) to check its index math before the first
GPU run: the per-warp cp.async rings (addresses, zero fill past the range, stage cycling), the A
fragments of q, ldmatrix (plain and transposed) and mma.m16n8k16 with the fragment layouts of the
PTX ISA, the mask, the online softmax with quad reductions, the merge of the warps and of the
splits. Rows past the context are NaN, so reading one shows. Compared with plain attention in
f64: agreement to ~1e-16 means the layout and control flow are right (the GPU's own rounding is
what gpu-test checks). Run: target/ci-venv/bin/python scripts/emulate_attn_tc.py (needs numpy)."""
import numpy as np
rng = np.random.default_rng(1)
NW, NS = 8, 2

def ldsm(mem, addrs, trans):
    # mem: 2D array (rows, cols) of the shared ring view; addrs: per lane (row, col) start of 8 elems
    regs = np.zeros((32, 4, 2))
    for i in range(4):
        rows = [addrs[8 * i + r] for r in range(8)]
        m = np.array([mem[r][c:c + 8] for (r, c) in rows])  # 8x8 stored
        if trans: m = m.T
        for L in range(32):
            regs[L, i, 0] = m[L >> 2, 2 * (L & 3)]
            regs[L, i, 1] = m[L >> 2, 2 * (L & 3) + 1]
    return regs

def mma(c, a, b):
    # a: [32][4][2], b: [32][2][2], c: [32][4]; returns new c
    A = np.zeros((16, 16)); B = np.zeros((16, 8)); C = np.zeros((16, 8))
    for L in range(32):
        g, t = L >> 2, L & 3
        A[g, 2*t:2*t+2] = a[L, 0]; A[g+8, 2*t:2*t+2] = a[L, 1]
        A[g, 2*t+8:2*t+10] = a[L, 2]; A[g+8, 2*t+8:2*t+10] = a[L, 3]
        B[2*t:2*t+2, g] = b[L, 0]; B[2*t+8:2*t+10, g] = b[L, 1]
        C[g, 2*t:2*t+2] = c[L, 0:2]; C[g+8, 2*t:2*t+2] = c[L, 2:4]
    D = C + A @ B
    out = np.zeros((32, 4))
    for L in range(32):
        g, t = L >> 2, L & 3
        out[L, 0:2] = D[g, 2*t:2*t+2]; out[L, 2:4] = D[g+8, 2*t:2*t+2]
    return out

def block(q, kc, vc, n, S, kvh, s, nh, nkv, HD, scale):
    G = nh // nkv
    P = max(16, ((n + S - 1) // S + 15) & ~15)
    A = (n + P - 1) // P
    if s >= A: return None
    lo = s * P; cnt = min(n, lo + P) - lo
    ntile = (cnt + 15) // 16
    LD = HD + 8; CPR = HD // 8; RSTEP = 32 // CPR
    # qa fragments
    qa = np.zeros((HD // 16, 32, 4, 2))
    for kk in range(HD // 16):
        for L in range(32):
            g, t = L >> 2, L & 3
            for i in range(4):
                row = g + 8 * (i & 1); col = 16 * kk + 2 * t + 8 * (i >> 1)
                if row < G: qa[kk, L, i] = q[kvh * G + row, col:col + 2]
    states = []
    for w in range(NW):
        ring = np.full((NS, 2, 16, LD), np.nan)
        def issue(ti, st):
            if ti < ntile and 32 % CPR != 0:  # rows that do not tile a warp (96)
                for L in range(32):
                    for u in range(2 * 16 * CPR // 32):
                        idx = L + 32 * u
                        kv, r, c = idx // (16 * CPR), (idx // CPR) % 16, idx % CPR
                        ok = 16 * ti + r < cnt
                        cache = vc if kv else kc
                        ring[st, kv, r, 8*c:8*c+8] = cache[lo + 16*ti + r, kvh, 8*c:8*c+8] if ok else 0
            elif ti < ntile:
                for L in range(32):
                    r0, c = L // CPR, L % CPR
                    for u in range(16 // RSTEP):
                        r = r0 + RSTEP * u
                        ok = 16 * ti + r < cnt
                        for kv, cache in ((0, kc), (1, vc)):
                            ring[st, kv, r, 8*c:8*c+8] = cache[lo + 16*ti + r, kvh, 8*c:8*c+8] if ok else 0
        for st in range(NS - 1): issue(w + NW * st, st)
        o = np.zeros((HD // 8, 32, 4)); m = np.full((32, 2), -np.inf); l = np.zeros((32, 2))
        st = 0
        for ti in range(w, ntile, NW):
            issue(ti + NW * (NS - 1), NS - 1 if st == 0 else st - 1)
            ks = ring[st, 0]; vs = ring[st, 1]
            sc = np.zeros((2, 32, 4))
            for kk in range(HD // 16):
                addrs = [((L & 7) + (L >> 4) * 8, 16 * kk + ((L >> 3) & 1) * 8) for L in range(32)]
                b = ldsm(ks, addrs, False)
                sc[0] = mma(sc[0], qa[kk], b[:, 0:2]); sc[1] = mma(sc[1], qa[kk], b[:, 2:4])
            mx = np.full((32, 2), -np.inf)
            for L in range(32):
                t = L & 3
                for nt in range(2):
                    for e in range(4):
                        jj = 16 * ti + 8 * nt + 2 * t + (e & 1)
                        v = sc[nt, L, e] * scale if jj < cnt else -np.inf
                        sc[nt, L, e] = v; mx[L, e >> 1] = max(mx[L, e >> 1], v)
            # quad max (the two xor shuffles)
            mxq = mx.copy()
            for L in range(32):
                base = L & ~3
                mxq[L] = mx[base:base + 4].max(axis=0)
            for L in range(32):
                for r in range(2):
                    mn = max(m[L, r], mxq[L, r]); corr = np.exp(m[L, r] - mn); m[L, r] = mn; l[L, r] *= corr
                    o[:, L, 2*r:2*r+2] *= corr
                for nt in range(2):
                    for e in range(4):
                        sc[nt, L, e] = np.exp(sc[nt, L, e] - m[L, e >> 1]); l[L, e >> 1] += sc[nt, L, e]
            a = np.zeros((32, 4, 2))
            a[:, 0] = sc[0][:, 0:2]; a[:, 1] = sc[0][:, 2:4]; a[:, 2] = sc[1][:, 0:2]; a[:, 3] = sc[1][:, 2:4]
            for dn in range(0, HD // 8, 2):
                addrs = [((L & 7) + ((L >> 3) & 1) * 8, 8 * dn + (L >> 4) * 8) for L in range(32)]
                b = ldsm(vs, addrs, True)
                o[dn] = mma(o[dn], a, b[:, 0:2]); o[dn + 1] = mma(o[dn + 1], a, b[:, 2:4])
            st = (st + 1) % NS
        # quad sum of l
        lq = l.copy()
        for L in range(32):
            base = L & ~3; lq[L] = l[base:base + 4].sum(axis=0)
        mw = np.full(16, -np.inf); lw = np.zeros(16); ow = np.zeros((G, HD))
        for L in range(32):
            g, t = L >> 2, L & 3
            for r in range(2):
                row = g + 8 * r
                if row < G:
                    if t == 0: mw[row] = m[L, r]; lw[row] = lq[L, r]
                    for dn in range(HD // 8):
                        ow[row, 8*dn + 2*t: 8*dn + 2*t + 2] = o[dn, L, 2*r:2*r+2]
        states.append((mw, lw, ow))
    M = np.array([max(st[0][r] for st in states) for r in range(G)])
    fw = [np.exp(st[0][:G] - M) for st in states]
    L_ = sum(f * st[1][:G] for f, st in zip(fw, states))
    y = sum(f[:, None] * st[2] for f, st in zip(fw, states))
    return M, L_, y, A

def run(nh, nkv, HD, pos, S):
    n = pos + 1
    q = rng.standard_normal((nh, HD)).astype(np.float16).astype(np.float64)
    kc = rng.standard_normal((n + 40, nkv, HD)).astype(np.float16).astype(np.float64)
    vc = rng.standard_normal((n + 40, nkv, HD)).astype(np.float16).astype(np.float64)
    kc[n:] = np.nan; vc[n:] = np.nan  # rows past the context must never be read
    scale = 1 / np.sqrt(HD); G = nh // nkv
    out = np.zeros((nh, HD))
    for kvh in range(nkv):
        recs = [block(q, kc, vc, n, S, kvh, s, nh, nkv, HD, scale) for s in range(S)]
        recs = [r for r in recs if r is not None]
        A = recs[0][3]; assert len(recs) == A
        Mall = np.max([r[0] for r in recs], axis=0)
        Lt = sum(np.exp(r[0] - Mall) * r[1] for r in recs)
        Yt = sum(np.exp(r[0] - Mall)[:, None] * r[2] for r in recs)
        out[kvh * G:(kvh + 1) * G] = Yt / Lt[:, None]
    ref = np.zeros((nh, HD))
    for h in range(nh):
        kvh = h // G
        sc = kc[:n, kvh] @ q[h] * scale
        p = np.exp(sc - sc.max()); p /= p.sum()
        ref[h] = p @ vc[:n, kvh]
    err = np.linalg.norm(out - ref) / np.linalg.norm(ref)
    print(f"nh={nh} nkv={nkv} hd={HD} len={n} S={S}: rel err {err:.2e}")
    assert err < 1e-9, err

run(8, 2, 64, 0, 3)
run(8, 2, 64, 16, 3)
run(4, 4, 64, 300, 1)
run(9, 3, 64, 200, 4)
run(16, 1, 64, 40, 2)
run(8, 2, 128, 70, 2)
run(6, 2, 96, 50, 2)
print("ok")
