"""Runtime CPU dispatch (decaf.cpu, csrc/isa.h, csrc/dispatch.c): every kernel variant this machine
runs gives the NumPy reference's results; DECAF_ISA forces a variant or is refused with a clear
error; `decaf info` says what runs; the generic code has no AVX instruction and the build has no
-march=native.

Tolerances (float32), as in test_kernels.py: exact where both sides do the same operations in the
same order (pooling maxima, depthwise sums of multiply-then-add in tap order, copies, ReLU clamps
of equal values); rtol = atol = 1e-5 (relative to the largest value) where the summation order
differs (convolutions and products: FMA and blocking against NumPy's matmul; LRN; the AVX2
variant's depthwise strips, which sum each window row with FMAs).
A variant the CPU lacks (AVX-512 on an AVX2 machine) is skipped here; the project's AVX-512
machines run it.
"""
import json
import os
import pathlib
import re
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import decaf.blas as blas
from decaf import cpu
from decaf.kernels import reference

from depthwise_order import sums_like_reference

_compiled = pytest.importorskip("decaf.kernels._compiled")
ROOT = Path(__file__).resolve().parents[2]
F32 = np.float32


def close(actual, expected):
    scale = max(float(np.abs(expected).max()), 1.0) if expected.size else 1.0
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5 * scale)


# ---- every variant == the NumPy reference --------------------------------------------------------

# (B, C, H, W, K, group, kernel, stride, pad): CaffeNet-like layers the direct kernel takes
# (16k input channels per group at stride 1: the blocked layout; 3 channels at stride 4 and a
# stride-2 layer: the plain one), and ones it leaves to im2col + GEMM (1x1, 8 outputs per group)
CONV_CASES = [
    (2, 32, 13, 13, 64, 1, 3, 1, 1),      # direct, blocked, 13 = 5 + 4 + 4 (AVX2 tiles)
    (3, 64, 9, 27, 64, 2, 5, 1, 2),       # direct, blocked, grouped, 27 = 6 + 6 + 5 + 5 + 5
    (2, 3, 35, 35, 32, 1, 11, 4, 0),      # direct, plain (conv1-like)
    (1, 8, 11, 10, 32, 1, 3, 2, 1),       # direct, plain, stride 2, one image (split over threads)
    (2, 16, 7, 7, 24, 1, 1, 1, 0),        # im2col-free 1x1
    (2, 12, 9, 9, 16, 2, 3, 1, 1),        # 8 outputs per group: im2col + GEMM
]
DIRECT_CASES = {0, 1, 2, 3}


def conv_arrays(case, seed):
    B, C, H, W, K, group, k, s, p = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, C, H, W)).astype(F32)
    w = (rng.standard_normal((K, C // group, k, k)) / np.sqrt(C // group * k * k)).astype(F32)
    bias = rng.standard_normal(K).astype(F32)
    params = ((k, k), (s, s), (p, p, p, p), (1, 1))
    out_hw = ((H + 2 * p - k) // s + 1, (W + 2 * p - k) // s + 1)
    return x, w, bias, params, group, out_hw


@pytest.mark.skipif(not blas.have_own_blas(), reason="decaf's OpenBLAS is not loaded")
@pytest.mark.parametrize("index", range(len(CONV_CASES)))
def test_convolution_and_fused_activations_match_reference(isa, index):
    x, w, bias, params, group, out_hw = conv_arrays(CONV_CASES[index], index)
    plan = _compiled.conv_plan(x.shape, w.shape, group, *params, out_hw)
    assert plan["isa"] == isa
    assert plan["direct"] == (index in DIRECT_CASES and isa != "generic")   # AVX2 and AVX-512 have it
    y_shape = (x.shape[0], w.shape[0]) + out_hw
    work = np.full(plan["work"], np.nan, F32)
    for relu, relu_max in ((False, np.inf), (True, np.inf), (True, 6.0)):     # none, ReLU, ReLU6
        y, ry = np.empty(y_shape, F32), np.empty(y_shape, F32)
        r, rr = np.empty(y_shape, F32), np.empty(y_shape, F32)
        _compiled.conv_forward(x, w, bias, y, work, *params, group, relu=relu, relu_out=r if relu else None,
                               relu_max=relu_max)
        reference.conv_forward(x, w, bias, ry, None, *params, group, relu=relu, relu_out=rr if relu else None,
                               relu_max=relu_max)
        close(y, ry)
        if relu:
            np.testing.assert_array_equal(r, np.minimum(np.maximum(y, 0), relu_max))   # the clamp of y: exact
            close(r, rr)


@pytest.mark.skipif(not blas.have_own_blas(), reason="decaf's OpenBLAS is not loaded")
def test_convolution_backward_matches_reference(isa):
    x, w, bias, params, group, out_hw = conv_arrays(CONV_CASES[1], 7)
    dy = np.random.default_rng(8).standard_normal((x.shape[0], w.shape[0]) + out_hw).astype(F32)
    work = np.full(_compiled.conv_work_size(x.shape, w.shape, group, *params, out_hw, True), np.nan, F32)
    got = [np.empty_like(x), np.empty_like(w), np.empty_like(bias)]
    want = [np.empty_like(x), np.empty_like(w), np.empty_like(bias)]
    _compiled.conv_backward(x, w, dy, *got, work, *params, group)
    reference.conv_backward(x, w, dy, *want, None, *params, group)
    for g, r in zip(got, want):
        close(g, r)


@pytest.mark.skipif(not blas.have_own_blas(), reason="decaf's OpenBLAS is not loaded")
@pytest.mark.parametrize("m", [1, 10])      # a fully connected layer at batch 1 and 10 (row / skinny kernels)
def test_fully_connected_products_match_numpy(isa, m):
    rng = np.random.default_rng(m)
    a, wt = rng.standard_normal((m, 1030)).astype(F32), rng.standard_normal((77, 1030)).astype(F32)
    out = np.full((m, 77), np.nan, F32)
    _compiled.gemm(a, wt.T, out)
    close(out, (a.astype(np.float64) @ wt.T.astype(np.float64)).astype(F32))


# depthwise: (C, H, W, k, stride, pad); widths around the 8 / 16 lanes, strides 1 and 2
DEPTHWISE_CASES = [(5, 13, 13, 3, 1, 1), (4, 17, 33, 5, 2, 2), (3, 9, 7, 3, 2, 1), (2, 40, 70, 3, 1, 1)]


@pytest.mark.parametrize("index", range(len(DEPTHWISE_CASES)))
def test_depthwise_matches_reference(isa, index):
    C, H, W, k, s, p = DEPTHWISE_CASES[index]
    rng = np.random.default_rng(index)
    x = rng.standard_normal((2, C, H, W)).astype(F32)
    w, bias = rng.standard_normal((C, 1, k, k)).astype(F32), rng.standard_normal(C).astype(F32)
    Ho, Wo = (H + 2 * p - k) // s + 1, (W + 2 * p - k) // s + 1
    for relu in (0.0, 6.0, np.inf):
        y, ry = np.empty((2, C, Ho, Wo), F32), np.empty((2, C, Ho, Wo), F32)
        args = ((s, s), (p, p, p, p), (1, 1), bias, relu)
        _compiled.depthwise_conv_forward(x, w, y, *args)
        reference.depthwise_conv_forward(x, w, ry, *args)
        if sums_like_reference(isa, (k, k), (s, s)):
            np.testing.assert_array_equal(y, ry)     # the same products summed in the same order
        else:   # the AVX2 strips: FMAs, window row by window row
            close(y, ry)


# pooling: (H, W, k, stride, pad)
POOL_CASES = [(13, 13, 3, 2, 0), (27, 27, 3, 2, 1), (10, 21, 2, 1, 1), (55, 55, 3, 2, 0), (8, 9, 3, 3, 1)]


@pytest.mark.parametrize("index", range(len(POOL_CASES)))
def test_pooling_matches_reference(isa, index):
    H, W, k, s, p = POOL_CASES[index]
    rng = np.random.default_rng(index)
    x = rng.standard_normal((2, 3, H, W)).astype(F32)
    x[0, 1, H // 2, W // 2] = np.nan                     # a NaN poisons its windows
    Ho, Wo = (H + 2 * p - k) // s + 1, (W + 2 * p - k) // s + 1
    params = ((k, k), (s, s), (p, p, p, p))
    y, ry = np.empty((2, 3, Ho, Wo), F32), np.empty((2, 3, Ho, Wo), F32)
    _compiled.max_pool_values(x, y, *params)
    reference.max_pool_values(x, ry, *params)
    np.testing.assert_array_equal(y, ry)
    a, ra = np.empty(y.shape, np.int32), np.empty(y.shape, np.int32)
    _compiled.max_pool_forward(x, y, a, *params)
    reference.max_pool_forward(x, ry, ra, *params)
    np.testing.assert_array_equal(y, ry)
    np.testing.assert_array_equal(a, ra)
    _compiled.avg_pool_forward(x, y, *params, True)
    reference.avg_pool_forward(x, ry, *params, True)
    # the column sums first, then across (csrc/pool.c): within float32 rounding of the reference's
    # window row after row (|x| <= 5, windows of at most 9 values); the NaN's windows NaN in both
    np.testing.assert_allclose(y, ry, rtol=1e-5, atol=1e-6)


def test_lrn_and_input_copy_match_reference(isa):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 13, 9, 31)).astype(F32)
    dy = rng.standard_normal(x.shape).astype(F32)
    for beta in (0.75, 0.6):
        got = [np.empty_like(x) for _ in range(3)]
        want = [np.empty_like(x) for _ in range(3)]
        _compiled.lrn_forward(x, got[0], got[1], 5, 1e-3, beta, 2.0)
        reference.lrn_forward(x, want[0], want[1], 5, 1e-3, beta, 2.0)
        _compiled.lrn_backward(x, got[0], got[1], dy, got[2], 5, 1e-3, beta)
        reference.lrn_backward(x, want[0], want[1], dy, want[2], 5, 1e-3, beta)
        for g, r in zip(got, want):
            close(g, r)
    src = rng.standard_normal(100_003).astype(F32)
    src[[5, 77_777]] = np.nan, np.inf
    dst = np.empty_like(src)
    assert _compiled.copy_count_nonfinite(src, dst) == 2
    np.testing.assert_array_equal(dst, src)


# ---- choosing a variant --------------------------------------------------------------------------

def test_set_isa_refuses_unknown_and_unsupported_names():
    before = cpu.get_isa()
    with pytest.raises(ValueError, match="unknown instruction set 'sse9'"):
        cpu.set_isa("sse9")
    missing = [n for n in cpu.ISAS if n not in cpu.supported_isas()]
    for name in missing:
        with pytest.raises(RuntimeError, match=f"cannot run the {name} kernels.*supported here"):
            cpu.set_isa(name)
    assert cpu.get_isa() == before                        # a refusal changes nothing
    assert cpu.best_isa() == cpu.supported_isas()[-1] and "generic" in cpu.supported_isas()


def test_best_variant_follows_the_cpu_flags():
    flags = set(cpu.cpu_flags())
    if not flags:
        pytest.skip("no /proc/cpuinfo flags to compare with")
    expected = "avx512" if {"avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags else \
        "avx2" if {"avx2", "fma"} <= flags else "generic"
    assert cpu.best_isa() == expected


def run_decaf(args, **env):
    full = dict(os.environ, **env)
    full["PYTHONPATH"] = str(ROOT) + os.pathsep + full.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, *args], env=full, capture_output=True, text=True, timeout=120,
                          cwd=ROOT)


def test_decaf_isa_environment_forces_or_refuses():
    code = ["-c", "import decaf, decaf.cpu as c; print(c.get_isa())"]
    assert run_decaf(code, DECAF_ISA="generic").stdout.strip() == "generic"
    assert run_decaf(code, DECAF_ISA=" AVX2 " if "avx2" in cpu.supported_isas() else "generic") \
        .stdout.strip() == ("avx2" if "avx2" in cpu.supported_isas() else "generic")
    bad = run_decaf(code, DECAF_ISA="sse9")
    assert bad.returncode != 0 and "DECAF_ISA='sse9' is not one of generic, avx2, avx512 or auto" in bad.stderr
    for name in (n for n in cpu.ISAS if n not in cpu.supported_isas()):
        refused = run_decaf(code, DECAF_ISA=name)
        assert refused.returncode != 0
        assert f"DECAF_ISA='{name}': cannot run the {name} kernels" in refused.stderr
        assert "supported here: generic" in refused.stderr


def test_decaf_info_prints_the_path_blas_and_threads():
    result = run_decaf(["-m", "decaf", "info", "--json"], DECAF_ISA="generic", DECAF_NUM_THREADS="1")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["isa"] == "generic" and info["forced"] == "generic" and info["best"] == cpu.best_isa()
    assert info["supported"] == list(cpu.supported_isas()) and info["cpu"] == cpu.cpu_model()
    assert info["threads"] == 1 and info["backend"] == "compiled"
    assert info["blas"] == blas.blas_info()
    text = run_decaf(["-m", "decaf", "info"], DECAF_ISA="")            # unset: the best
    assert text.returncode == 0, text.stderr
    assert re.search(rf"^kernel path: +{cpu.best_isa()} \(the best this CPU runs\)$", text.stdout, re.M)
    assert re.search(r"^cpu: +\S", text.stdout, re.M) and re.search(r"^blas: +\S", text.stdout, re.M)
    assert re.search(r"^threads: +\d+ \(decaf's kernels\)", text.stdout, re.M)
    assert info["openmp_wait"]["GOMP_SPINCOUNT"] == os.environ.get("GOMP_SPINCOUNT")   # (this process's)
    # the last-level cache as sysfs gives it (16 MB when it does not), as the kernels use it
    sysfs = pathlib.Path("/sys/devices/system/cpu/cpu0/cache/index3/size")
    if sysfs.exists() and sysfs.read_text().strip().endswith("K"):
        assert info["last_cache_bytes"] == 1024 * int(sysfs.read_text().strip()[:-1])
    assert re.search(r"^last cache: +\d+(\.\d+)? MB \(", text.stdout, re.M)
    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    env.update(OMP_WAIT_POLICY="passive", PYTHONPATH=str(ROOT))
    passive = subprocess.run([sys.executable, "-m", "decaf", "info"], env=env, capture_output=True, text=True,
                             timeout=120, cwd=ROOT)
    assert re.search(r"^openmp wait: +OMP_WAIT_POLICY=passive \(", passive.stdout, re.M), passive.stdout


# ---- the build: portable flags, no AVX in the generic code -----------------------------------------

def setup_module_flags():
    """setup.py's flag tables, read without building (setup() runs only as __main__)."""
    return runpy.run_path(str(ROOT / "setup.py"), run_name="decaf_setup_flags")


def test_build_uses_no_native_flags():
    flags = setup_module_flags()
    ext = flags["kernels"]                                # the Extension that `pip wheel .` builds
    for shared in (flags["BASE_FLAGS"], ext.extra_compile_args, ext.extra_link_args):
        assert not any(f.startswith(("-march", "-mtune", "-mavx", "-mfma", "-mcpu")) for f in shared), shared
    variants = flags["X86_VARIANTS"]
    assert variants["generic"] == [] and {"-mavx2", "-mfma"} <= set(variants["avx2"])
    assert "-mavx512f" in variants["avx512"] and not any("native" in f for v in variants.values() for f in v)
    import sysconfig
    assert "native" not in (sysconfig.get_config_var("CFLAGS") or "")     # Python's own flags, added too


AVX_INSTRUCTION = re.compile(r"%[yz]mm\d|^\s*[0-9a-f]+:\s+v[a-z0-9]+\s", re.M)   # ymm/zmm, or a VEX/EVEX op


def objdump(path):
    return subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(path)], capture_output=True, text=True,
                          check=True).stdout


@pytest.mark.skipif(shutil.which("objdump") is None or shutil.which("gcc") is None,
                    reason="needs objdump and gcc")
def test_generic_objects_have_no_avx(tmp_path):
    """Compiles the C sources with setup.py's flags (the generic variant and the shared files),
    then reads the machine code: not one ymm/zmm register or VEX-encoded instruction."""
    flags = setup_module_flags()
    base = flags["BASE_FLAGS"] + ["-fPIC", "-I", str(ROOT / "csrc"), "-c"]
    jobs = [(src, ["-DDECAF_ISA_SUFFIX=_generic"]) for src in flags["ISA_KERNEL_SOURCES"]]
    jobs += [(src, []) for src in flags["SHARED_SOURCES"]]
    compiling = []                                         # all at once: a few seconds in all
    for src, extra in jobs:
        obj = tmp_path / (Path(src).stem + ".o")
        compiling.append((src, obj, subprocess.Popen(["gcc", *base, *extra, str(ROOT / src), "-o", str(obj)])))
    for src, obj, process in compiling:
        assert process.wait(timeout=120) == 0, f"gcc failed on {src}"
        found = AVX_INSTRUCTION.findall(objdump(obj))
        assert not found, f"{src} (generic) has AVX instructions: {found[:5]}"


@pytest.mark.skipif(shutil.which("objdump") is None, reason="needs objdump")
def test_built_extension_keeps_avx_inside_the_avx_variants():
    """In the extension itself: the Cython wrapper, the dispatch and every function of the generic
    variant (names ending in _generic, their OpenMP bodies included) have no AVX instruction; the
    AVX2 direct convolution's micro-kernels (tile8_blocked and tile8_plain, only in that variant)
    are ymm multiply-adds."""
    code = objdump(_compiled.__file__)
    functions = {}
    for body in re.split(r"\n(?=[0-9a-f]+ <)", code):
        name = re.match(r"[0-9a-f]+ <([^>]+)>:", body)
        if name:
            functions[name.group(1)] = body.split("\n", 1)[-1]
    if "avx2" in _compiled.isa_variants():
        for kernel in ("tile8_blocked", "tile8_plain"):
            assert kernel in functions, f"no symbol {kernel} for the AVX2 micro-kernels (a stripped build?)"
            # one unrolled body per tile width T = 1..6, 2 T multiply-adds each: 42 at least
            assert len(re.findall(r"vfmadd\d+ps\s+\S*%ymm", functions[kernel])) >= 42
            assert "zmm" not in functions[kernel]
    checked = 0
    for name, body in functions.items():
        if name.startswith("__pyx_") or "_generic" in name or name.startswith("decaf_isa_") \
                or name in ("decaf_conv_forward", "decaf_conv_make_plan", "decaf_sgemm", "decaf_max_pool_values"):
            checked += 1
            assert not AVX_INSTRUCTION.search(body), f"{name} has AVX instructions"
    assert checked > 50


QEMU_CHECK = """
import numpy as np
import decaf.blas, decaf.cpu as cpu
from decaf.kernels import _compiled, reference
rng = np.random.default_rng(0)
x, w = rng.standard_normal((2, 32, 9, 9)).astype(np.float32), rng.standard_normal((32, 32, 3, 3)).astype(np.float32)
y, r = np.empty((2, 32, 9, 9), np.float32), np.empty((2, 32, 9, 9), np.float32)
args = ((3, 3), (1, 1), (1, 1, 1, 1), (1, 1))
work = np.empty(_compiled.conv_work_size(x.shape, w.shape, 1, *args, (9, 9), False), np.float32)
_compiled.conv_forward(x, w, None, y, work, *args, 1, relu=True)
reference.conv_forward(x, w, None, r, None, *args, 1, relu=True)
np.testing.assert_allclose(y, r, rtol=1e-5, atol=1e-4)
print(cpu.get_isa())
"""


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("qemu-x86_64") is None, reason="needs qemu-user (apt-get install qemu-user)")
@pytest.mark.parametrize("model,expected", [("Nehalem", "generic"), ("Haswell", "avx2")])
def test_dispatch_follows_an_emulated_cpu(model, expected):
    """Under qemu-user with an older CPU model, CPUID says no AVX (Nehalem) or AVX2 without AVX-512
    (Haswell): the dispatch picks that variant, and a convolution still matches the reference.
    (qemu 7.2 executes AVX instructions whatever the model, so this checks the choice, not the
    absence of AVX in the generic code: the objdump tests above do that.)"""
    import sysconfig
    paths = os.pathsep.join([str(ROOT), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    env = dict(os.environ, PYTHONPATH=paths, DECAF_NUM_THREADS="1", DECAF_ISA="")
    result = subprocess.run(["qemu-x86_64", "-cpu", model, os.path.realpath(sys.executable), "-c", QEMU_CHECK],
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == expected


@pytest.mark.parametrize("env, message", [
    ({"DECAF_ISA": "bogus"}, "decaf: error: DECAF_ISA='bogus' is not one of generic, avx2, avx512 or auto"),
    ({"DECAF_NUM_THREADS": "x"}, "decaf: error: DECAF_NUM_THREADS='x' is not an integer"),
    ({"DECAF_BACKEND": "x"}, "decaf: error: DECAF_BACKEND='x' is not one of ('compiled', 'numpy')")])
def test_bad_configuration_is_one_line_from_the_command(env, message):
    """The variables are read when decaf is imported, before the CLI's own error handling: the
    command still says what is wrong in one line and exits 2 (Python callers get the ConfigError)."""
    import shutil
    import subprocess
    import sys
    exe = shutil.which("decaf", path=os.path.dirname(sys.executable))
    if exe is None:
        pytest.skip("the decaf command is not installed beside this Python")
    done = subprocess.run([exe, "info"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env})
    assert done.returncode == 2
    assert done.stderr.strip() == message
    done = subprocess.run([sys.executable, "-c", "import decaf"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env})
    assert done.returncode == 1 and "decaf.errors.ConfigError" in done.stderr


@pytest.mark.parametrize("hw", [(1, 1), (4, 4), (7, 7), (5, 3), (13, 13), (9, 13), (14, 14), (56, 56)])
def test_global_average_pooling_equals_the_generic_loop_bit_for_bit(isa, hw):
    # the vector variants keep the generic loop's 16 running sums (8 + 8 lanes, the last n % 16
    # values in sums 0.. through masked loads) and its pairwise reduction: the same floats; planes of
    # 1, 16, 49, 15, 169 (a tail in both registers), 117, 196 and 3136 values
    x = np.random.default_rng(hw[0] * 31 + hw[1]).standard_normal((2, 24) + hw).astype(F32) * 3
    got = np.full((2, 24, 1, 1), np.nan, F32)
    _compiled.avg_pool_forward(x, got, hw, (1, 1), (0, 0, 0, 0), True)
    before = cpu.get_isa()
    try:
        cpu.set_isa("generic")
        want = np.full_like(got, np.nan)
        _compiled.avg_pool_forward(x, want, hw, (1, 1), (0, 0, 0, 0), True)
    finally:
        cpu.set_isa(before)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(got, x.astype(np.float64).mean(axis=(2, 3), keepdims=True), rtol=0, atol=1e-5)
