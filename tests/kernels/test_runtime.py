"""The runtime decisions and their one owner each: threads (decaf.threads), the SGEMM (decaf.blas,
asked by decaf.kernels itself) and the work partitioning of a convolution (csrc/conv.c's plan)."""
import os
import subprocess
import sys

import numpy as np
import pytest

import decaf
import decaf.kernels as kernels
from decaf import threads

_compiled = kernels._compiled
needs_compiled = pytest.mark.skipif(_compiled is None, reason="compiled kernels not built")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_python(code, **env):
    full = {**os.environ, "PYTHONPATH": ROOT, **env}
    result = subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def numpy_blas_threads():
    return threads.get_num_threads()[1]


# ---- threads ---------------------------------------------------------------------------------

@needs_compiled
def test_set_num_threads_round_trips_and_governs_kernels_and_blas():
    before = threads.get_num_threads()
    try:
        for n in (1, 3, 2):
            decaf.set_num_threads(n)
            kernel_threads, blas_threads = decaf.get_num_threads()
            assert kernel_threads == n and _compiled.get_num_threads() == n
            assert blas_threads in (n, None)       # None: threadpoolctl finds no NumPy BLAS
    finally:
        decaf.set_num_threads(before[0])
    assert threads.get_num_threads()[0] == before[0]


@needs_compiled
def test_using_threads_sets_both_for_a_while_then_restores_both():
    decaf.set_num_threads(2)
    try:
        with threads.using_threads(1):
            assert threads.get_num_threads()[0] == 1 and numpy_blas_threads() in (1, None)
            with threads.using_threads(3):
                assert threads.get_num_threads()[0] == 3 and numpy_blas_threads() in (3, None)
            assert threads.get_num_threads()[0] == 1
        assert threads.get_num_threads()[0] == 2 and numpy_blas_threads() in (2, None)
        with pytest.raises(RuntimeError, match="inside"):
            with threads.using_threads(1):
                raise RuntimeError("inside")
        assert threads.get_num_threads()[0] == 2        # restored on an error too
        with threads.using_threads(None):                # None: leave both as they are
            assert threads.get_num_threads()[0] == 2
    finally:
        decaf.set_num_threads(os.cpu_count() or 1)


@pytest.mark.parametrize("env, spin", [({}, "10000"), ({"OMP_WAIT_POLICY": "passive"}, "unset"),
                                       ({"OMP_WAIT_POLICY": "active"}, "unset"), ({"GOMP_SPINCOUNT": "0"}, "0")])
def test_openmp_wait_is_decafs_default_only_where_the_user_chose_none(env, spin):
    """decaf sets GOMP_SPINCOUNT=10000 before OpenMP starts, unless the user set it or
    OMP_WAIT_POLICY (which GNU OpenMP would let GOMP_SPINCOUNT override)."""
    clean = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    code = "import os, decaf.kernels; print(os.environ.get('GOMP_SPINCOUNT', 'unset'))"
    result = subprocess.run([sys.executable, "-c", code], env={**clean, "PYTHONPATH": ROOT, **env},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [spin]


def test_bad_thread_counts_are_refused():
    for bad in (0, -2):
        with pytest.raises(ValueError, match=f"thread count must be >= 1, got {bad}"):
            decaf.set_num_threads(bad)
        with pytest.raises(ValueError, match="thread count must be >= 1"):
            with threads.using_threads(bad):
                pass


@needs_compiled
def test_decaf_num_threads_is_read_at_import():
    code = "import decaf; k, b = decaf.get_num_threads(); print(k, b)"
    kernel_threads, blas_threads = run_python(code, DECAF_NUM_THREADS="3")
    assert kernel_threads == "3" and blas_threads in ("3", "None")


@pytest.mark.parametrize("value,message", [("two", "DECAF_NUM_THREADS='two' is not an integer"),
                                           ("0", "DECAF_NUM_THREADS='0': the thread count must be >= 1")])
def test_bad_decaf_num_threads_names_the_variable(value, message):
    full = {**os.environ, "PYTHONPATH": ROOT, "DECAF_NUM_THREADS": value}
    result = subprocess.run([sys.executable, "-c", "import decaf"], env=full, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode != 0 and message in result.stderr


# ---- BLAS: decaf.kernels asks decaf.blas itself ------------------------------------------------

# decaf.kernels imported without running decaf/__init__.py (a bare package object stands in for
# it), so nothing but decaf.kernels itself can load decaf.blas. Then one convolution through the
# dispatcher, checked against the NumPy reference.
ALONE = """
import sys, types, numpy as np
package = types.ModuleType("decaf"); package.__path__ = [{path!r}]; sys.modules["decaf"] = package
import decaf.kernels as k
print("blas-before", "decaf.blas" in sys.modules)
rng = np.random.default_rng(0)
x = rng.standard_normal((2, 3, 9, 9)).astype(np.float32); w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
args = ((3, 3), (1, 1), (1, 1, 1, 1), (1, 1))
work = np.empty(k.conv_work_size(x, w, 1, *args, (9, 9)), np.float32)
y = np.empty((2, 4, 9, 9), np.float32); ref = np.empty_like(y)
k.conv_forward(x, w, None, y, work, *args, 1)
k.reference.conv_forward(x, w, None, ref, None, *args, 1)
import decaf.blas as b
print("blas-after", "decaf.blas" in sys.modules, "own", b.have_own_blas(),
      "compiled", k._for_gemm(x) is k._compiled, "close", bool(np.allclose(y, ref, rtol=1e-4, atol=1e-4)))
"""


@needs_compiled
def test_kernels_work_imported_on_their_own():
    out = run_python(ALONE.format(path=os.path.join(ROOT, "decaf")))
    assert out[:2] == ["blas-before", "False"]     # not loaded by the import...
    result = dict(zip(out[2::2], out[3::2]))
    assert result["blas-after"] == "True"           # ...but by the first GEMM-based kernel call
    assert result["compiled"] == result["own"]      # one answer: compiled exactly when decaf's BLAS is there
    assert result["close"] == "True"


# ---- the convolution plan (csrc/conv.c) ------------------------------------------------------

# (B, C, H, W, K, G, kh, kw, sh, sw, pad, Ho, Wo) -> (forward, backward) work floats for 1..4
# threads, as the code before decaf_conv_plan computed them (without the direct convolution: a
# build without AVX-512).
OLD_WORK = [
    ((1, 3, 32, 32, 8, 1, 3, 3, 1, 1, 1, 32, 32), [(27648, 55520), (55296, 55296), (82944, 55296), (110592, 55296)]),
    ((2, 3, 32, 32, 8, 1, 3, 3, 1, 1, 1, 32, 32), [(27648, 55520), (55296, 111040), (82944, 55296), (110592, 55296)]),
    ((5, 16, 9, 9, 32, 2, 3, 3, 1, 1, 1, 9, 9), [(57024, 106016), (85536, 160192), (85536, 162528), (114048, 216704)]),
    ((3, 8, 40, 40, 6, 1, 1, 1, 1, 1, 0, 40, 40), [(0, 54), (0, 108), (0, 162), (0, 0)]),
    ((1, 8, 40, 40, 6, 2, 1, 1, 1, 1, 0, 40, 40), [(0, 30), (0, 0), (0, 0), (0, 0)]),
    ((4, 96, 27, 27, 64, 2, 5, 5, 1, 1, 2, 27, 27),
     [(1749600, 3576064), (3499200, 7152128), (5248800, 10728192), (6998400, 14304256)]),
    ((2, 4, 7, 7, 12, 4, 3, 3, 2, 2, 1, 4, 4), [(1536, 2808), (1152, 2544), (1728, 1152), (2304, 1152)]),
    ((8, 3, 20, 20, 16, 1, 5, 5, 3, 3, 0, 6, 6), [(26208, 49024), (26208, 50240), (29484, 57432), (26208, 52672)]),
    ((1, 64, 13, 13, 64, 1, 3, 3, 1, 1, 1, 13, 13), [(97344, 231616), (194688, 194688), (292032, 194688), (389376, 194688)]),
    ((7, 32, 14, 14, 64, 1, 3, 3, 1, 1, 1, 14, 14),
     [(137984, 269376), (275968, 538752), (413952, 808128), (551936, 1077504)]),
]


def plan_args(shape):
    B, C, H, W, K, G, kh, kw, sh, sw, pad, Ho, Wo = shape
    return ((B, C, H, W), (K, C // G, kh, kw), G, (kh, kw), (sh, sw), (pad,) * 4, (1, 1), (Ho, Wo))


def old_direct_work(shape, threads, isa="avx512"):
    """The direct convolution's scratch as direct_conv.c sizes it: packed weights, then a packed
    (zero-padded, tile-rounded) image per thread, or one shared when B < threads; + 16 to align.
    The AVX2 kernel's tiles end at Wo: no rounding."""
    B, C, H, W, K, G, kh, kw, sh, sw, pad, Ho, Wo = shape
    ceil_to = lambda v, m: -(-v // m) * m                                            # noqa: E731
    tile = 13 if ceil_to(Wo, 13) < ceil_to(Wo, 14) else 14
    cols = Wo if isa == "avx2" else ceil_to(Wo, tile)
    packed_input = C * ((Ho - 1) * sh + kh) * ((cols - 1) * sw + kw)
    return K * (C // G) * kh * kw + (threads if B >= threads else 1) * packed_input + 16


@needs_compiled
@pytest.mark.parametrize("shape,sizes", OLD_WORK, ids=lambda v: "x".join(map(str, v[:6])) if len(v) == 13 else "")
def test_plan_partitions_as_the_old_work_size_functions(shape, sizes):
    for threads_, (forward, backward) in enumerate(sizes, start=1):
        fwd = _compiled.conv_plan(*plan_args(shape), backward=False, threads=threads_)
        bwd = _compiled.conv_plan(*plan_args(shape), backward=True, threads=threads_)
        if fwd["grouped"]:       # groups of <= 8 channels: csrc/grouped_conv.c sizes its own scratch
            assert fwd["work"] == fwd["slot"] > 0 and fwd["pack"] and shape[5] > 1
        elif fwd["stem"]:        # 3x3 of <= 4 channels: csrc/stem_conv.c sizes its own (no packed form)
            assert fwd["work"] == fwd["slot"] > 0 and not fwd["pack"] and shape[1] <= 4
        else:
            assert fwd["work"] == (old_direct_work(shape, threads_, fwd["isa"]) if fwd["direct"] else forward), \
                (shape, threads_)
        assert bwd["work"] == backward and not bwd["direct"], (shape, threads_)
        for plan in (fwd, bwd):
            assert plan["threads"] == threads_ and plan["by_image"] == (shape[0] >= threads_)
            if not plan["direct"] and not plan["grouped"]:
                assert plan["work"] == plan["slots"] * plan["slot"]


@needs_compiled
def test_plan_splits_few_images_by_groups_rows_or_channels(monkeypatch):
    monkeypatch.setenv("DECAF_STEM_CONV", "off")   # (the 3-channel ones: im2col + GEMM, not csrc/stem_conv.c)

    def split(shape, threads_):
        plan = _compiled.conv_plan(*plan_args(shape), threads=threads_)
        assert not plan["by_image"] and not plan["direct"] and not plan["grouped"] and plan["block"] == 1
        return plan["split"]
    # 4 groups over 2 threads (of 16 channels: narrower ones run the grouped kernel, csrc/grouped_conv.c)
    assert split((1, 64, 7, 7, 48, 4, 3, 3, 2, 2, 1, 4, 4), 2) == "groups"
    assert split((1, 3, 32, 32, 8, 1, 3, 3, 1, 1, 1, 32, 32), 3) == "rows"    # 1024 output pixels
    assert split((1, 3, 31, 31, 8, 1, 3, 3, 1, 1, 1, 31, 31), 3) == "channels"


@needs_compiled
def test_plan_blocks_images_and_shares_the_few_images_backward_scratch():
    # 8x8 outputs: blocks of up to 256 / 64 = 4 images; 7 images on 2 threads = 4 per thread
    shape = (7, 3, 8, 8, 5, 1, 3, 3, 1, 1, 1, 8, 8)
    plan = _compiled.conv_plan(*plan_args(shape), backward=True, threads=2)
    assert plan["by_image"] and plan["block"] == 4 and plan["slots"] == 2
    assert plan["cols"] == 3 * 9 * 4 * 64 and plan["partial"] == 5 * 27 + 5
    few = _compiled.conv_plan(*plan_args(shape), backward=True, threads=8)
    assert not few["by_image"] and few["slots"] == 1 and few["partial"] == 0


@needs_compiled
def test_work_size_is_the_plans():
    shape = OLD_WORK[2][0]
    with threads.using_threads(3):
        for backward in (False, True):
            assert _compiled.conv_work_size(*plan_args(shape), backward) == \
                _compiled.conv_plan(*plan_args(shape), backward=backward)["work"]
