#!/usr/bin/env python3
"""Disassemble one kernel of kernels/*.cu the way the engine compiles it (NVRTC, same options),
without a GPU, and print the instruction mix of its loops that hold tensor-core instructions.

    scripts/sass.py gemv gemv_u3_g128_f16_s2 [--arch sm_90] [--dump FILE] [--timeline] [-DNAME=VALUE ...]

--timeline compiles the kernel as `bench decode --timeline` does (every kernel body opened with
TL_SCOPE(), -DDECDEC_TIMELINE; src/compile.rs `instrument`), to see what the stamps cost it.

Needs the CUDA 13 NVRTC wheel (scripts/test.sh installs it into target/ci-venv) and cuobjdump +
nvdisasm (`pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm`; a newer version than NVRTC is
fine). Found with it (docs/performance.md, experiment 45): the per-chunk loop of the 3-bit GEMV
is ~370 instructions for 256 weights per lane group, ~40% of them address arithmetic."""
import argparse, collections, ctypes, glob, os, re, site, subprocess, sys, tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KDIR = os.environ.get("DECDEC_KERNELS_DIR") or os.path.join(ROOT, "crates/decdec-cuda/kernels")


def find(pattern):
    for sp in site.getsitepackages() + [site.getusersitepackages()]:
        hits = sorted(glob.glob(os.path.join(sp, pattern)))
        if hits:
            return hits[-1]
    sys.exit(f"not found: {pattern} (see the docstring for what to install)")


def instrument(src):
    """compile.rs `instrument`: ` TL_SCOPE("name");` after the opening brace of every kernel."""
    out, rest, key = [], src, 'extern "C" __global__'
    while key in rest:
        i = rest.index(key)
        body = rest.index("{", i + len(key))
        head = re.sub(r"__launch_bounds__\s*\([^)]*\)", "", rest[i + len(key):body])
        name = head[:head.index("(")].split()[-1]
        out.append(rest[:body + 1] + (" TL_SCOPE(#NAME);" if name == "NAME" else f' TL_SCOPE("{name}");'))
        rest = rest[body + 1:]
    return "".join(out) + rest


def compile_cubin(src_name, arch, defines, timeline=False):
    # libnvrtc opens its builtins library by name: load it first so that no LD_LIBRARY_PATH is needed
    ctypes.CDLL(find("nvidia/cu13/lib/libnvrtc-builtins.so.13.*"), mode=ctypes.RTLD_GLOBAL)
    lib = ctypes.CDLL(find("nvidia/cu13/lib/libnvrtc.so.13"))
    inc = os.path.dirname(find("nvidia/cu13/include/cuda_fp16.h"))
    src = (open(os.path.join(KDIR, "common.cuh")).read() + '\n#line 1 "select.cuh"\n'
           + open(os.path.join(KDIR, "select.cuh")).read() + f'\n#line 1 "{src_name}.cu"\n'
           + (instrument if timeline else str)(open(os.path.join(KDIR, src_name + ".cu")).read()))
    prog = ctypes.c_void_p()
    if lib.nvrtcCreateProgram(ctypes.byref(prog), src.encode(), f"{src_name}.cu".encode(), 0, None, None):
        sys.exit("nvrtcCreateProgram failed")
    opts = [f"--gpu-architecture={arch}", "-std=c++17", "-default-device", f"--include-path={inc}",
            f"--include-path={inc}/cccl"]
    # the engine's default register budget unless the command line sets its own GEMV_MINB
    if not any(d.startswith("GEMV_MINB") for d in defines):
        opts.append("-DGEMV_MINB=3")
    opts += [f"-D{d}" for d in defines] + (["-DDECDEC_TIMELINE"] if timeline else [])
    arr = (ctypes.c_char_p * len(opts))(*[o.encode() for o in opts])
    rc = lib.nvrtcCompileProgram(prog, len(opts), arr)
    n = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(n))
    log = ctypes.create_string_buffer(n.value)
    lib.nvrtcGetProgramLog(prog, log)
    if rc:
        sys.exit(log.value.decode())
    lib.nvrtcGetCUBINSize(prog, ctypes.byref(n))
    buf = ctypes.create_string_buffer(n.value)
    lib.nvrtcGetCUBIN(prog, buf)
    return buf.raw


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("source", help="kernel source: gemv or ops")
    ap.add_argument("kernel")
    ap.add_argument("--arch", default="sm_90")
    ap.add_argument("--dump", help="write the full SASS here")
    ap.add_argument("--timeline", action="store_true", help="with the step-timeline stamps")
    ap.add_argument("defines", nargs="*", help="NAME=VALUE, as DECDEC_DEFINES")
    a = ap.parse_args()
    cubin = compile_cubin(a.source, a.arch, [d.removeprefix("-D") for d in a.defines], a.timeline)
    bindir = os.path.dirname(find("nvidia/cu13/bin/cuobjdump"))
    nvd = os.path.dirname(find("nvidia/cu13/bin/nvdisasm"))
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        env = dict(os.environ, PATH=nvd + os.pathsep + os.environ.get("PATH", ""))
        sass = subprocess.run([os.path.join(bindir, "cuobjdump"), "-sass", "-fun", a.kernel, f.name],
                              capture_output=True, text=True, env=env, check=True).stdout
    if a.dump:
        open(a.dump, "w").write(sass)
    lines = [l for l in sass.splitlines() if re.search(r"/\*[0-9a-f]{4}\*/", l)]
    addr = [int(re.search(r"/\*([0-9a-f]{4})\*/", l).group(1), 16) for l in lines]
    ops = [(re.search(r"\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]+)", l) or [None, "?"])[1] for l in lines]
    local = sum(o.startswith(("STL", "LDL")) for o in ops)
    print(f"{a.kernel} ({a.arch}): {len(ops)} instructions, {local} local-memory (spill) instructions")
    for i, l in enumerate(lines):
        m = re.search(r"BRA\s+(?:`\()?(?:0x)?([0-9a-f]+)", l)
        if m and int(m.group(1), 16) < addr[i]:
            j = addr.index(int(m.group(1), 16))
            body = ops[j:i + 1]
            mma = sum(o.startswith(("HMMA", "IMMA", "HGMMA")) for o in body)
            if mma:
                mix = collections.Counter(o.split(".")[0] for o in body).most_common(14)
                print(f"  loop {addr[j]:#x}-{addr[i]:#x}: {len(body)} instructions, {mma} mma: "
                      + ", ".join(f"{k} {v}" for k, v in mix))


if __name__ == "__main__":
    main()
