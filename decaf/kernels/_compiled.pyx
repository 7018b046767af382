# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""The compiled kernels: a thin wrapper over csrc/*.c.

Every function has the signature of its twin in ``decaf.kernels.reference`` and writes into the
output arrays it is given. The typed memoryviews make Cython check dtype (float32; int32 for
argmax), number of dimensions and C-contiguity, raising ValueError; the shape checks below make
sure the C code never reads or writes outside the arrays. Inputs may be read-only (memory-mapped
weights). Outputs must not overlap inputs. The C calls release the GIL.
"""
from libc.math cimport sqrtf
from operator import index as _index


cdef extern from "isa.h":
    int DECAF_ISA_COUNT
    const char *decaf_isa_name(int isa) nogil
    int decaf_isa_supported(int isa) nogil
    int decaf_isa_best() nogil
    int decaf_isa_select(int isa) nogil
    int decaf_isa_current() nogil

cdef extern from "threads.h":
    void decaf_set_num_threads(int n) nogil
    int decaf_get_num_threads() nogil
    double decaf_last_cache_bytes() nogil

cdef extern from "elementwise.h":
    Py_ssize_t decaf_copy_count_nonfinite(const float *src, float *dst, Py_ssize_t n) nogil
    void decaf_sgd_step(float *w, float *v, const float *g, Py_ssize_t n, float lr, float mu, float decay,
                        float scale, int nesterov) nogil
    void decaf_erf(const float *x, float *y, Py_ssize_t n) nogil
    void decaf_gelu(const float *x, float *y, Py_ssize_t n) nogil
    void decaf_transpose(const float *x, float *y, Py_ssize_t B, Py_ssize_t M, Py_ssize_t N) nogil

cdef extern from "gemm.h":
    void decaf_set_sgemm(void *cblas_sgemm, void *cblas_sgemv, void *get_num_threads,
                         void *set_num_threads) nogil
    int decaf_have_sgemm() nogil
    void decaf_sgemm(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda,
                     const float *B, int ldb, float beta, float *C, int ldc) nogil

cdef extern from "activation.h":
    ctypedef struct decaf_epilogue:
        int act
        float lo, hi, alpha
        const float *residual
        float *out

cdef extern from "conv.h":
    ctypedef struct decaf_conv_geom:
        int B, C, H, W, K, G, kh, kw, sh, sw, pad_top, pad_left, dh, dw, Ho, Wo
    ctypedef enum decaf_conv_split:
        DECAF_SPLIT_GROUPS, DECAF_SPLIT_ROWS, DECAF_SPLIT_CHANNELS
    ctypedef struct decaf_conv_plan:
        int isa, threads, backward, direct, winograd, grouped, pointwise, stem, by_image
        decaf_conv_split split
        int block
        Py_ssize_t cols, partial, slot
        int slots
        Py_ssize_t work
        int pack
        Py_ssize_t packed
    enum: DECAF_PLAN_FORWARD, DECAF_PLAN_BACKWARD, DECAF_PLAN_PREPACKED, DECAF_PLAN_WEIGHT_GRAD
    decaf_conv_plan decaf_conv_make_plan(const decaf_conv_geom *g, int threads, int mode) nogil
    void decaf_conv_forward(const decaf_conv_geom *g, const decaf_conv_plan *p, const float *x, const float *w,
                            const float *packed, const float *bias, float *y, float *work,
                            const decaf_epilogue *ep) nogil
    void decaf_conv_pack(const decaf_conv_geom *g, const decaf_conv_plan *p, const float *w, float *packed) nogil
    void decaf_conv_backward(const decaf_conv_geom *g, const decaf_conv_plan *p, const float *x, const float *w,
                             const float *dy, float *dx, float *dw, float *db, float *work) nogil

cdef extern from "winograd.h":
    int decaf_winograd_supported(const decaf_conv_geom *g) nogil
    Py_ssize_t decaf_winograd_packed_size(const decaf_conv_geom *g) nogil
    void decaf_winograd_pack(const decaf_conv_geom *g, const float *w, float *u) nogil
    Py_ssize_t decaf_winograd_work_size(const decaf_conv_geom *g, int threads) nogil
    void decaf_winograd_forward(const decaf_conv_geom *g, int threads, const float *x, const float *u,
                                const float *bias, float *y, float *work, const decaf_epilogue *ep) nogil
    int decaf_winograd_preferred(const decaf_conv_geom *g, int threads) nogil
    Py_ssize_t decaf_winograd_weight_grad_work_size(const decaf_conv_geom *g) nogil
    void decaf_winograd_weight_grad(const decaf_conv_geom *g, int threads, const float *x, const float *dy,
                                    float *dw, float *db, float *work) nogil

cdef extern from "im2col.h":
    void decaf_im2col(const float *x, float *cols, int B, int C, int H, int W, int kh, int kw,
                      int sh, int sw, int pad_top, int pad_left, int dh, int dw, int Ho, int Wo) nogil
    void decaf_col2im(const float *cols, float *x, int B, int C, int H, int W, int kh, int kw,
                      int sh, int sw, int pad_top, int pad_left, int dh, int dw, int Ho, int Wo) nogil

cdef extern from "pool.h":
    void decaf_max_pool_forward(const float *x, float *y, int *argmax, int B, int C, int H, int W,
                                int Ho, int Wo, int kh, int kw, int sh, int sw,
                                int pad_top, int pad_left) nogil
    void decaf_max_pool_values(const float *x, float *y, int B, int C, int H, int W,
                               int Ho, int Wo, int kh, int kw, int sh, int sw, int pad_top, int pad_left) nogil
    void decaf_max_pool_backward(const float *dy, const int *argmax, float *dx, int B, int C, int H, int W,
                                 int Ho, int Wo) nogil
    void decaf_avg_pool_forward(const float *x, float *y, int B, int C, int H, int W, int Ho, int Wo,
                                int kh, int kw, int sh, int sw, int pad_top, int pad_left,
                                int pad_bottom, int pad_right, int count_include_pad) nogil
    void decaf_avg_pool_backward(const float *dy, float *dx, int B, int C, int H, int W, int Ho, int Wo,
                                 int kh, int kw, int sh, int sw, int pad_top, int pad_left,
                                 int pad_bottom, int pad_right, int count_include_pad) nogil

cdef extern from "lrn.h":
    void decaf_lrn_forward(const float *x, float *y, float *scale, int B, int C, int HW,
                           int local_size, float alpha, float beta, float k) nogil
    void decaf_lrn_backward(const float *x, const float *y, const float *scale, const float *dy,
                            float *dx, int B, int C, int HW, int local_size, float alpha, float beta) nogil

cdef extern from "channel_affine.h":
    void decaf_channel_affine(const float *x, Py_ssize_t x_image, const float *scale, const float *shift, float *y,
                              Py_ssize_t B, Py_ssize_t C, Py_ssize_t HW, const decaf_epilogue *ep) nogil

cdef extern from "depthwise.h":
    void decaf_depthwise_conv_forward(const float *x, const float *w, const float *bias, float *y,
                                      int B, int C, int H, int W,
                                      int kh, int kw, int Ho, int Wo, int sh, int sw,
                                      int pad_top, int pad_left, int dil_h, int dil_w,
                                      const decaf_epilogue *ep, float *means) nogil
    void decaf_depthwise_conv_backward(const float *x, const float *w, const float *dy, float *dx,
                                       float *dw, int B, int C, int H, int W, int kh, int kw,
                                       int Ho, int Wo, int sh, int sw, int pad_top, int pad_left,
                                       int dil_h, int dil_w) nogil


# ---- threads -------------------------------------------------------------------------------

def set_num_threads(int n):
    """Threads for decaf's own loops in every Python thread; n <= 0 restores the OpenMP default."""
    decaf_set_num_threads(n)


def get_num_threads():
    """Threads decaf's own loops use."""
    return decaf_get_num_threads()


def last_cache_bytes():
    """The last-level cache's size as the kernels see it (sysfs; 16 MB when unknown): larger 1x1
    convolution outputs are stored past the caches (csrc/pointwise.c)."""
    return int(decaf_last_cache_bytes())


# ---- instruction set variant (decaf.cpu decides which; csrc/isa.h) ---------------------------

def isa_variants():
    """The names of the kernel variants, in order: ("generic", "avx2", "avx512")."""
    return tuple(decaf_isa_name(i).decode() for i in range(DECAF_ISA_COUNT))


def isa_supported(str name):
    """True when the variant is built into this extension and the CPU runs it."""
    return bool(decaf_isa_supported(_isa_number(name)))


def isa_best():
    """The best variant this CPU runs (what runs unless isa_select chose another)."""
    return decaf_isa_name(decaf_isa_best()).decode()


def isa_current():
    """The variant the kernels use now."""
    return decaf_isa_name(decaf_isa_current()).decode()


def isa_select(str name):
    """Use this variant from now on; ValueError when unknown, RuntimeError when not supported."""
    if decaf_isa_select(_isa_number(name)) != 0:
        raise RuntimeError(f"kernel variant {name!r} is not supported here")


def _isa_number(str name):
    names = isa_variants()
    if name not in names:
        raise ValueError(f"unknown kernel variant {name!r}; choose one of {names}")
    return names.index(name)


# ---- argument checks -------------------------------------------------------------------------

def _ints(value, str name, int count, int minimum):
    """A tuple of `count` Python ints, each >= minimum, from `value`."""
    if type(value) is tuple and len(<tuple>value) == count:     # the common case, without a generator
        for v in <tuple>value:
            if type(v) is not int or v < minimum:
                break
        else:
            return value
    try:
        items = tuple(_index(v) for v in value)
    except TypeError:
        raise TypeError(f"{name} must be a tuple of {count} ints, got {value!r}") from None
    if len(items) != count or any(v < minimum for v in items):
        raise ValueError(f"{name} must be {count} ints >= {minimum}, got {value!r}")
    return items


def _expect_shape(str func, str name, tuple shape, tuple expected):
    if shape != expected:
        raise ValueError(f"{func}: {name} has shape {shape}, expected {expected}")


cdef const float *_bias_data(str func, bias, Py_ssize_t n) except? NULL:
    """The floats of `bias` (a contiguous float32 vector of n values; the caller keeps it alive), or
    NULL for None."""
    if bias is None:
        return NULL
    cdef const float[::1] b = bias
    _expect_shape(func, "bias", (b.shape[0],), (n,))
    return &b[0]


cdef const float *_variant_packed(str func, packed, Py_ssize_t expected, Py_ssize_t floats) except? NULL:
    """The floats of `packed` ((kind, array) from a kernel's own pack function; the caller keeps it
    alive), or NULL for None. Refused unless it was packed by the kernel variant running now and
    has `expected` floats (the form's `floats`, at least 1)."""
    if packed is None:
        return NULL
    kind, arr = packed
    cdef const float[::1] pk = arr
    if kind != decaf_isa_current() or pk.shape[0] != expected:
        raise ValueError(f"{func}: packed weights of variant {kind} ({pk.shape[0]} floats) do not fit this "
                         f"convolution in variant {decaf_isa_current()} ({floats} floats)")
    return &pk[0]


cdef tuple _shape4(const float[:, :, :, ::1] a):
    return (a.shape[0], a.shape[1], a.shape[2], a.shape[3])


cdef tuple _ishape4(const int[:, :, :, ::1] a):
    return (a.shape[0], a.shape[1], a.shape[2], a.shape[3])


# ---- im2col / col2im -------------------------------------------------------------------------

def im2col(const float[:, :, :, ::1] x not None, float[:, ::1] cols not None,
           kernel, stride, pads, dilation, out_hw):
    cdef int kh, kw, sh, sw, pt, pl, dh, dw, Ho, Wo
    kh, kw = _ints(kernel, "kernel", 2, 1)
    sh, sw = _ints(stride, "stride", 2, 1)
    pt, pl, _, _ = _ints(pads, "pads", 4, 0)
    dh, dw = _ints(dilation, "dilation", 2, 1)
    Ho, Wo = _ints(out_hw, "out_hw", 2, 0)
    cdef int B = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    _expect_shape("im2col", "cols", (cols.shape[0], cols.shape[1]), (C * kh * kw, B * Ho * Wo))
    with nogil:
        decaf_im2col(&x[0, 0, 0, 0], &cols[0, 0], B, C, H, W, kh, kw, sh, sw, pt, pl, dh, dw, Ho, Wo)


def col2im(const float[:, ::1] cols not None, float[:, :, :, ::1] x not None,
           kernel, stride, pads, dilation, out_hw):
    cdef int kh, kw, sh, sw, pt, pl, dh, dw, Ho, Wo
    kh, kw = _ints(kernel, "kernel", 2, 1)
    sh, sw = _ints(stride, "stride", 2, 1)
    pt, pl, _, _ = _ints(pads, "pads", 4, 0)
    dh, dw = _ints(dilation, "dilation", 2, 1)
    Ho, Wo = _ints(out_hw, "out_hw", 2, 0)
    cdef int B = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    _expect_shape("col2im", "cols", (cols.shape[0], cols.shape[1]), (C * kh * kw, B * Ho * Wo))
    with nogil:
        decaf_col2im(&cols[0, 0], &x[0, 0, 0, 0], B, C, H, W, kh, kw, sh, sw, pt, pl, dh, dw, Ho, Wo)


# ---- pooling ---------------------------------------------------------------------------------

def max_pool_forward(const float[:, :, :, ::1] x not None, float[:, :, :, ::1] y not None,
                     int[:, :, :, ::1] argmax not None, kernel, stride, pads):
    cdef int kh, kw, sh, sw, pt, pl
    kh, kw = _ints(kernel, "kernel", 2, 1)
    sh, sw = _ints(stride, "stride", 2, 1)
    pt, pl, _, _ = _ints(pads, "pads", 4, 0)
    cdef int B = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef int Ho = y.shape[2], Wo = y.shape[3]
    _expect_shape("max_pool_forward", "y", _shape4(y), (B, C, Ho, Wo))
    _expect_shape("max_pool_forward", "argmax", _ishape4(argmax), (B, C, Ho, Wo))
    with nogil:
        decaf_max_pool_forward(&x[0, 0, 0, 0], &y[0, 0, 0, 0], &argmax[0, 0, 0, 0],
                               B, C, H, W, Ho, Wo, kh, kw, sh, sw, pt, pl)


def max_pool_values(const float[:, :, :, ::1] x not None, float[:, :, :, ::1] y not None,
                    kernel, stride, pads):
    cdef int kh, kw, sh, sw, pt, pl
    kh, kw = _ints(kernel, "kernel", 2, 1)
    sh, sw = _ints(stride, "stride", 2, 1)
    pt, pl, _, _ = _ints(pads, "pads", 4, 0)
    cdef int B = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef int Ho = y.shape[2], Wo = y.shape[3]
    _expect_shape("max_pool_values", "y", _shape4(y), (B, C, Ho, Wo))
    if B * C * Ho * Wo == 0:
        return
    with nogil:
        decaf_max_pool_values(&x[0, 0, 0, 0], &y[0, 0, 0, 0], B, C, H, W, Ho, Wo, kh, kw, sh, sw, pt, pl)


def max_pool_backward(const float[:, :, :, ::1] dy not None, const int[:, :, :, ::1] argmax not None,
                      float[:, :, :, ::1] dx not None):
    cdef int B = dy.shape[0], C = dy.shape[1], Ho = dy.shape[2], Wo = dy.shape[3]
    cdef int H = dx.shape[2], W = dx.shape[3]
    _expect_shape("max_pool_backward", "argmax", _ishape4(argmax), (B, C, Ho, Wo))
    _expect_shape("max_pool_backward", "dx", _shape4(dx), (B, C, H, W))
    with nogil:
        decaf_max_pool_backward(&dy[0, 0, 0, 0], &argmax[0, 0, 0, 0], &dx[0, 0, 0, 0], B, C, H, W, Ho, Wo)


def avg_pool_forward(const float[:, :, :, ::1] x not None, float[:, :, :, ::1] y not None,
                     kernel, stride, pads, count_include_pad):
    cdef int kh, kw, sh, sw, pt, pl, pb, pr
    kh, kw = _ints(kernel, "kernel", 2, 1)
    sh, sw = _ints(stride, "stride", 2, 1)
    pt, pl, pb, pr = _ints(pads, "pads", 4, 0)
    cdef int include_pad = bool(count_include_pad)
    cdef int B = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef int Ho = y.shape[2], Wo = y.shape[3]
    _expect_shape("avg_pool_forward", "y", _shape4(y), (B, C, Ho, Wo))
    with nogil:
        decaf_avg_pool_forward(&x[0, 0, 0, 0], &y[0, 0, 0, 0], B, C, H, W, Ho, Wo,
                               kh, kw, sh, sw, pt, pl, pb, pr, include_pad)


def avg_pool_backward(const float[:, :, :, ::1] dy not None, float[:, :, :, ::1] dx not None,
                      kernel, stride, pads, count_include_pad):
    cdef int kh, kw, sh, sw, pt, pl, pb, pr
    kh, kw = _ints(kernel, "kernel", 2, 1)
    sh, sw = _ints(stride, "stride", 2, 1)
    pt, pl, pb, pr = _ints(pads, "pads", 4, 0)
    cdef int include_pad = bool(count_include_pad)
    cdef int B = dy.shape[0], C = dy.shape[1], Ho = dy.shape[2], Wo = dy.shape[3]
    cdef int H = dx.shape[2], W = dx.shape[3]
    _expect_shape("avg_pool_backward", "dx", _shape4(dx), (B, C, H, W))
    with nogil:
        decaf_avg_pool_backward(&dy[0, 0, 0, 0], &dx[0, 0, 0, 0], B, C, H, W, Ho, Wo,
                                kh, kw, sh, sw, pt, pl, pb, pr, include_pad)


# ---- local response normalisation ------------------------------------------------------------

def lrn_forward(const float[:, :, :, ::1] x not None, float[:, :, :, ::1] y not None,
                float[:, :, :, ::1] scale not None, local_size, double alpha, double beta, double k):
    cdef int n = _ints((local_size,), "local_size", 1, 1)[0]
    shape = _shape4(x)
    _expect_shape("lrn_forward", "y", _shape4(y), shape)
    _expect_shape("lrn_forward", "scale", _shape4(scale), shape)
    if &y[0, 0, 0, 0] == &x[0, 0, 0, 0] and x.shape[0] * x.shape[1] * x.shape[2] * x.shape[3] > 0:
        raise ValueError("lrn_forward: y must not be x (the running window sum reads x after y is written)")
    cdef int B = x.shape[0], C = x.shape[1], HW = x.shape[2] * x.shape[3]
    with nogil:
        decaf_lrn_forward(&x[0, 0, 0, 0], &y[0, 0, 0, 0], &scale[0, 0, 0, 0], B, C, HW, n, alpha, beta, k)


def lrn_backward(const float[:, :, :, ::1] x not None, const float[:, :, :, ::1] y not None,
                 const float[:, :, :, ::1] scale not None, const float[:, :, :, ::1] dy not None,
                 float[:, :, :, ::1] dx not None, local_size, double alpha, double beta):
    cdef int n = _ints((local_size,), "local_size", 1, 1)[0]
    shape = _shape4(x)
    for name, arr in (("y", y), ("scale", scale), ("dy", dy), ("dx", dx)):
        _expect_shape("lrn_backward", name, _shape4(arr), shape)
    if &dx[0, 0, 0, 0] == &dy[0, 0, 0, 0] and x.shape[0] * x.shape[1] * x.shape[2] * x.shape[3] > 0:
        raise ValueError("lrn_backward: dx must not be dy (the running window sum reads dy after dx is written)")
    cdef int B = x.shape[0], C = x.shape[1], HW = x.shape[2] * x.shape[3]
    with nogil:
        decaf_lrn_backward(&x[0, 0, 0, 0], &y[0, 0, 0, 0], &scale[0, 0, 0, 0], &dy[0, 0, 0, 0],
                           &dx[0, 0, 0, 0], B, C, HW, n, alpha, beta)


# ---- the epilogue of the convolutions (csrc/activation.h) ------------------------------------

# activation kinds, by the numbers of csrc/activation.h's DECAF_ACT_*
ACTIVATIONS = {"none": 0, "clamp": 1, "leaky": 2, "hardswish": 3, "silu": 4, "sigmoid": 5, "hardsigmoid": 6,
               "gelu": 7}


cdef int _epilogue(str func, decaf_epilogue *e, act, bint relu, float relu_max, relu_out, residual,
                   float[:, :, :, ::1] y) except -1:
    """Fill e from the Python arguments (see conv_forward); y is the output it must fit."""
    cdef float[:, :, :, ::1] r
    cdef const float[:, :, :, ::1] res
    e.act, e.lo, e.hi, e.alpha, e.residual, e.out = 0, 0.0, 0.0, 0.0, NULL, NULL
    if relu:
        if act is not None:
            raise ValueError(f"{func}: relu and act both given")
        if not relu_max > 0:
            raise ValueError(f"{func}: relu_max must be > 0, got {relu_max}")
        act = ("clamp", 0.0, relu_max, 0.0)
    if act is not None:
        kind, lo, hi, alpha = act
        if kind not in ACTIVATIONS:
            raise ValueError(f"{func}: unknown activation {kind!r}; choose one of {sorted(ACTIVATIONS)}")
        e.act, e.lo, e.hi, e.alpha = ACTIVATIONS[kind], lo, hi, alpha
        if kind == "clamp" and not e.lo <= e.hi:
            raise ValueError(f"{func}: clamp bounds {lo} > {hi}")
    if relu_out is not None:
        if e.act == 0:
            raise ValueError(f"{func}: relu_out without relu (or act)")
        r = relu_out
        _expect_shape(func, "relu_out", _shape4(r), _shape4(y))
        e.out = &r[0, 0, 0, 0]
        if e.out == &y[0, 0, 0, 0]:
            e.out = NULL         # the same array: in place
    if residual is not None:
        res = residual
        _expect_shape(func, "residual", _shape4(res), _shape4(y))
        e.residual = &res[0, 0, 0, 0]
        if e.residual == &y[0, 0, 0, 0]:
            raise ValueError(f"{func}: the residual must not be y itself")
    return 0


# ---- depthwise convolution -------------------------------------------------------------------

cdef class DepthwiseForward:
    """depthwise_conv_forward's call with its arguments checked once: ``run()`` computes it again,
    from what x and w hold now, into the same y. It keeps the arrays alive; a blob reshaped to
    another size is a new array, which needs a new DepthwiseForward (decaf/layers/conv.py keeps
    one per set of arrays)."""
    cdef const float[:, :, :, ::1] x, w
    cdef float[:, :, :, ::1] y
    cdef const float *bias
    cdef float *means
    cdef object keep
    cdef int B, C, H, W, kh, kw, Ho, Wo, sh, sw, pt, pl, dh, dw
    cdef decaf_epilogue e

    def __init__(self, const float[:, :, :, ::1] x not None, const float[:, :, :, ::1] w not None,
                 float[:, :, :, ::1] y not None, stride, pads, dilation, bias=None, float relu=0.0,
                 act=None, residual=None, relu_out=None, means=None):
        self.sh, self.sw = _ints(stride, "stride", 2, 1)
        self.pt, self.pl, _, _ = _ints(pads, "pads", 4, 0)
        self.dh, self.dw = _ints(dilation, "dilation", 2, 1)
        self.B, self.C, self.H, self.W = x.shape[0], x.shape[1], x.shape[2], x.shape[3]
        self.kh, self.kw, self.Ho, self.Wo = w.shape[2], w.shape[3], y.shape[2], y.shape[3]
        _expect_shape("depthwise_conv_forward", "w", _shape4(w), (self.C, 1, self.kh, self.kw))
        _expect_shape("depthwise_conv_forward", "y", _shape4(y), (self.B, self.C, self.Ho, self.Wo))
        self.bias = _bias_data("depthwise_conv_forward", bias, self.C)
        _epilogue("depthwise_conv_forward", &self.e, act, relu > 0, relu, relu_out, residual, y)
        cdef float[:, :, :, ::1] m
        self.means = NULL
        if means is not None:
            m = means
            _expect_shape("depthwise_conv_forward", "means", _shape4(m), (self.B, self.C, 1, 1))
            self.means = &m[0, 0, 0, 0]
        self.x, self.w, self.y, self.keep = x, w, y, (bias, residual, relu_out, means)

    def run(self):
        with nogil:
            decaf_depthwise_conv_forward(&self.x[0, 0, 0, 0], &self.w[0, 0, 0, 0], self.bias, &self.y[0, 0, 0, 0],
                                         self.B, self.C, self.H, self.W, self.kh, self.kw, self.Ho, self.Wo,
                                         self.sh, self.sw, self.pt, self.pl, self.dh, self.dw, &self.e, self.means)


def depthwise_conv_forward(x, w, y, stride, pads, dilation, bias=None, float relu=0.0, act=None, residual=None,
                           relu_out=None, means=None):
    DepthwiseForward(x, w, y, stride, pads, dilation, bias, relu, act, residual, relu_out, means).run()


def depthwise_conv_backward(const float[:, :, :, ::1] x not None, const float[:, :, :, ::1] w not None,
                            const float[:, :, :, ::1] dy not None, float[:, :, :, ::1] dx,
                            float[:, :, :, ::1] dw, stride, pads, dilation):
    cdef int sh, sw, pt, pl, dil_h, dil_w
    sh, sw = _ints(stride, "stride", 2, 1)
    pt, pl, _, _ = _ints(pads, "pads", 4, 0)
    dil_h, dil_w = _ints(dilation, "dilation", 2, 1)
    cdef int B = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef int kh = w.shape[2], kw = w.shape[3], Ho = dy.shape[2], Wo = dy.shape[3]
    _expect_shape("depthwise_conv_backward", "w", _shape4(w), (C, 1, kh, kw))
    _expect_shape("depthwise_conv_backward", "dy", _shape4(dy), (B, C, Ho, Wo))
    cdef float *dx_ptr = NULL
    cdef float *dw_ptr = NULL
    if dx is not None:
        _expect_shape("depthwise_conv_backward", "dx", _shape4(dx), (B, C, H, W))
        dx_ptr = &dx[0, 0, 0, 0]
    if dw is not None:
        _expect_shape("depthwise_conv_backward", "dw", _shape4(dw), (C, 1, kh, kw))
        dw_ptr = &dw[0, 0, 0, 0]
    with nogil:
        decaf_depthwise_conv_backward(&x[0, 0, 0, 0], &w[0, 0, 0, 0], &dy[0, 0, 0, 0], dx_ptr, dw_ptr,
                                      B, C, H, W, kh, kw, Ho, Wo, sh, sw, pt, pl, dil_h, dil_w)


# ---- GEMM and the fused convolution ----------------------------------------------------------

def set_sgemm(size_t sgemm, size_t sgemv=0, size_t get_num_threads=0, size_t set_num_threads=0):
    """Use the cblas_sgemm and cblas_sgemv at these addresses (from a BLAS loaded with ctypes; 0 =
    none), and keep that BLAS single-threaded with its get/set_num_threads (0 = it has none)."""
    decaf_set_sgemm(<void *>sgemm, <void *>sgemv, <void *>get_num_threads, <void *>set_num_threads)


cdef int _gemm_operand(const float[:, :] a, int *trans, int *ld) except -1:
    """BLAS view of a 2-D operand: rows contiguous (no transpose) or columns contiguous (transposed)."""
    cdef Py_ssize_t s0 = a.strides[0] // 4, s1 = a.strides[1] // 4
    if a.strides[0] % 4 or a.strides[1] % 4:
        raise ValueError("gemm: operand strides are not whole floats")
    if s1 == 1 or a.shape[1] <= 1:
        trans[0], ld[0] = 0, max(s0, a.shape[1], 1)
    elif s0 == 1 or a.shape[0] <= 1:
        trans[0], ld[0] = 1, max(s1, a.shape[0], 1)
    else:
        raise ValueError("gemm: an operand must have contiguous rows or columns")
    return 0


def gemm(const float[:, :] a not None, const float[:, :] b not None, float[:, ::1] out not None,
         float alpha=1.0, float beta=0.0):
    """out = alpha a @ b + beta out, split over decaf's threads (a, b may be transposed views)."""
    if not decaf_have_sgemm():
        raise RuntimeError("gemm: no BLAS loaded (importing decaf.blas loads decaf's own)")
    cdef int M = a.shape[0], K = a.shape[1], N = b.shape[1], ta, tb, lda, ldb
    if b.shape[0] != K or out.shape[0] != M or out.shape[1] != N:
        raise ValueError(f"gemm: shapes {(a.shape[0], a.shape[1])} @ {(b.shape[0], b.shape[1])} "
                         f"-> {(out.shape[0], out.shape[1])} do not match")
    if M == 0 or N == 0:
        return
    if K == 0:
        for i in range(M):
            for j in range(N):
                out[i, j] = beta * out[i, j] if beta != 0 else 0.0
        return
    _gemm_operand(a, &ta, &lda)
    _gemm_operand(b, &tb, &ldb)
    with nogil:
        decaf_sgemm(ta, tb, M, N, K, alpha, &a[0, 0], lda, &b[0, 0], ldb, beta, &out[0, 0], max(N, 1))


cdef decaf_conv_geom _conv_geom(tuple x_shape, tuple w_shape, int group, kernel, stride, pads, dilation,
                                out_hw) except *:
    cdef decaf_conv_geom g
    g.B, g.C, g.H, g.W = x_shape
    g.K = w_shape[0]
    g.G = _ints((group,), "group", 1, 1)[0]
    g.kh, g.kw = _ints(kernel, "kernel", 2, 1)
    g.sh, g.sw = _ints(stride, "stride", 2, 1)
    g.pad_top, g.pad_left, _, _ = _ints(pads, "pads", 4, 0)
    g.dh, g.dw = _ints(dilation, "dilation", 2, 1)
    g.Ho, g.Wo = _ints(out_hw, "out_hw", 2, 1)
    if g.C % g.G or g.K % g.G:
        raise ValueError(f"conv: channels {g.C} and outputs {g.K} must be divisible by group {g.G}")
    _expect_shape("conv", "w", w_shape, (g.K, g.C // g.G, g.kh, g.kw))
    return g


_SPLITS = {DECAF_SPLIT_GROUPS: "groups", DECAF_SPLIT_ROWS: "rows", DECAF_SPLIT_CHANNELS: "channels"}


cdef int _plan_mode(backward, bint prepacked) except -1:
    """backward: False (a forward), True (the backward) or "weights" (its dw and db only)."""
    if backward not in (False, True, "weights"):
        raise ValueError(f"conv: backward must be False, True or 'weights', got {backward!r}")
    if backward and prepacked:
        raise ValueError("conv: a backward plan reads the weights unpacked (prepacked=True is for forwards)")
    if backward == "weights":
        return DECAF_PLAN_WEIGHT_GRAD
    return DECAF_PLAN_BACKWARD if backward else DECAF_PLAN_PREPACKED if prepacked else DECAF_PLAN_FORWARD


def conv_plan(x_shape, w_shape, int group, kernel, stride, pads, dilation, out_hw, backward=False,
              threads=None, bint prepacked=False):
    """The work partitioning conv_forward (or, backward=True, conv_backward; backward="weights":
    conv_backward with dx None and weights_only; prepacked=True: a forward given packed weights)
    uses for this geometry with `threads` threads (None: the current count), as a dict of the
    fields of csrc/conv.h's decaf_conv_plan ("split" named: "groups", "rows" or "channels")."""
    cdef decaf_conv_geom g = _conv_geom(tuple(x_shape), tuple(w_shape), group, kernel, stride, pads,
                                        dilation, out_hw)
    cdef int n = decaf_get_num_threads() if threads is None else _ints((threads,), "threads", 1, 1)[0]
    cdef decaf_conv_plan p = decaf_conv_make_plan(&g, n, _plan_mode(backward, prepacked))
    return {"isa": decaf_isa_name(p.isa).decode(), "threads": p.threads, "backward": bool(p.backward),
            "direct": bool(p.direct), "winograd": bool(p.winograd), "grouped": bool(p.grouped), "pointwise": bool(p.pointwise),
            "stem": bool(p.stem),
            "by_image": bool(p.by_image), "split": _SPLITS[p.split], "block": p.block, "cols": p.cols,
            "partial": p.partial, "slot": p.slot, "slots": p.slots, "work": p.work,
            "pack": p.pack, "packed": p.packed}


def conv_work_size(x_shape, w_shape, int group, kernel, stride, pads, dilation, out_hw, backward,
                   bint prepacked=False):
    """Floats of scratch space conv_forward / conv_backward need with the current thread count
    (prepacked: a forward given packed weights; backward="weights": a weights_only backward)."""
    cdef decaf_conv_geom g = _conv_geom(tuple(x_shape), tuple(w_shape), group, kernel, stride, pads,
                                        dilation, out_hw)
    return decaf_conv_make_plan(&g, decaf_get_num_threads(), _plan_mode(backward, prepacked)).work


def conv_packing(x_shape, w_shape, int group, kernel, stride, pads, dilation, out_hw):
    """(kind, floats) of the prepacked weights conv_forward's plan for this geometry reads with the
    current thread count and instruction set: kind 0 (none: nothing to pack) or a positive number
    naming the form (it changes with the plan); conv_pack writes it."""
    cdef decaf_conv_geom g = _conv_geom(tuple(x_shape), tuple(w_shape), group, kernel, stride, pads,
                                        dilation, out_hw)
    cdef decaf_conv_plan p = decaf_conv_make_plan(&g, decaf_get_num_threads(), DECAF_PLAN_PREPACKED)
    return (p.isa * 16 + p.pack if p.pack else 0), p.packed


def conv_pack(x_shape, const float[:, :, :, ::1] w not None, float[::1] packed not None, int group, kernel,
              stride, pads, dilation, out_hw):
    """packed = w in the form conv_packing names (its size), for conv_forward(..., packed=)."""
    cdef decaf_conv_geom g = _conv_geom(tuple(x_shape), _shape4(w), group, kernel, stride, pads, dilation,
                                        out_hw)
    cdef decaf_conv_plan p = decaf_conv_make_plan(&g, decaf_get_num_threads(), DECAF_PLAN_PREPACKED)
    if p.pack == 0:
        raise ValueError("conv_pack: this convolution's plan reads its weights unpacked")
    if packed.shape[0] != p.packed:
        raise ValueError(f"conv_pack: packed has {packed.shape[0]} floats, the plan's form {p.packed}")
    with nogil:
        decaf_conv_pack(&g, &p, &w[0, 0, 0, 0], &packed[0])


cdef class ConvForward:
    """conv_forward's call with its arguments checked and its plan made once: ``run()`` computes
    the convolution again, from what x, w (or the packed weights) and the bias hold now, into the
    same y, with the plan's thread count. Each check of a call costs microseconds, as much as a
    small layer's arithmetic at batch 1; a net runs the same calls every pass. It keeps the arrays
    alive; a blob reshaped to another size is a new array, which needs a new ConvForward
    (decaf/layers/conv.py keeps one per set of arrays, thread count and weights)."""
    cdef decaf_conv_geom g
    cdef decaf_conv_plan plan
    cdef decaf_epilogue e
    cdef const float[:, :, :, ::1] x, w
    cdef float[:, :, :, ::1] y
    cdef float[::1] work
    cdef const float *bias
    cdef const float *packed
    cdef object keep

    def __init__(self, const float[:, :, :, ::1] x not None, const float[:, :, :, ::1] w not None, bias,
                 float[:, :, :, ::1] y not None, float[::1] work not None,
                 kernel, stride, pads, dilation, int group, bint relu=False, relu_out=None,
                 float relu_max=float("inf"), act=None, residual=None, packed=None):
        if not decaf_have_sgemm():
            raise RuntimeError("conv_forward: no BLAS loaded (importing decaf.blas loads decaf's own)")
        self.g = _conv_geom(_shape4(x), _shape4(w), group, kernel, stride, pads, dilation, (y.shape[2], y.shape[3]))
        _expect_shape("conv_forward", "y", _shape4(y), (self.g.B, self.g.K, self.g.Ho, self.g.Wo))
        self.bias = _bias_data("conv_forward", bias, self.g.K)
        _epilogue("conv_forward", &self.e, act, relu, relu_max, relu_out, residual, y)
        self.plan = decaf_conv_make_plan(&self.g, decaf_get_num_threads(),
                                         DECAF_PLAN_FORWARD if packed is None else DECAF_PLAN_PREPACKED)
        if work.shape[0] < self.plan.work:
            raise ValueError(f"conv_forward: work has {work.shape[0]} floats, needs {self.plan.work}")
        cdef const float[::1] pk
        self.packed = NULL
        if packed is not None:
            kind, pk = packed
            if not self.plan.pack or kind != self.plan.isa * 16 + self.plan.pack or pk.shape[0] != self.plan.packed:
                form = self.plan.isa * 16 + self.plan.pack if self.plan.pack else 0
                raise ValueError(f"conv_forward: packed weights of form {kind} ({pk.shape[0]} floats) do not fit "
                                 f"this plan (form {form}, {self.plan.packed})")
            self.packed = &pk[0]
        self.x, self.w, self.y, self.work, self.keep = x, w, y, work, (bias, relu_out, residual, packed)

    def run(self):
        if self.g.B == 0:
            return
        with nogil:
            decaf_conv_forward(&self.g, &self.plan, &self.x[0, 0, 0, 0], &self.w[0, 0, 0, 0], self.packed, self.bias,
                               &self.y[0, 0, 0, 0], &self.work[0], &self.e)


def conv_forward(x, w, bias, y, work, kernel, stride, pads, dilation, int group, bint relu=False, relu_out=None,
                 float relu_max=float("inf"), act=None, residual=None, packed=None):
    """y = conv(x, w) + bias (direct, or im2col + SGEMM per image and group), + residual (an array
    like y, not y); then with relu min(max(., 0), relu_max), or the activation act = (kind, lo, hi,
    alpha) (kind one of ACTIVATIONS), in y or into relu_out (y keeping the values before it).
    packed: None, or (kind, array) from conv_packing / conv_pack for w: the forward reads the
    weights from it instead of packing w again (a kind other than the plan's is refused)."""
    ConvForward(x, w, bias, y, work, kernel, stride, pads, dilation, group, relu, relu_out, relu_max, act, residual,
                packed).run()


def conv_backward(const float[:, :, :, ::1] x not None, const float[:, :, :, ::1] w not None,
                  const float[:, :, :, ::1] dy not None, float[:, :, :, ::1] dx,
                  float[:, :, :, ::1] dw not None, float[::1] db, float[::1] work not None,
                  kernel, stride, pads, dilation, int group, bint weights_only=False):
    """dw, db (None: no bias) = gradients summed over the batch; dx (None: skip) = input gradient.
    weights_only: dx must be None, and the plan may pick kernels that only give dw and db (Winograd)."""
    if not decaf_have_sgemm():
        raise RuntimeError("conv_backward: no BLAS loaded (importing decaf.blas loads decaf's own)")
    cdef decaf_conv_geom g = _conv_geom(_shape4(x), _shape4(w), group, kernel, stride, pads, dilation,
                                        (dy.shape[2], dy.shape[3]))
    _expect_shape("conv_backward", "dy", _shape4(dy), (g.B, g.K, g.Ho, g.Wo))
    _expect_shape("conv_backward", "dw", _shape4(dw), _shape4(w))
    cdef float *dx_ptr = NULL
    cdef float *db_ptr = NULL
    if dx is not None and weights_only:
        raise ValueError("conv_backward: weights_only computes dw and db only: dx must be None")
    if dx is not None:
        _expect_shape("conv_backward", "dx", _shape4(dx), _shape4(x))
        dx_ptr = &dx[0, 0, 0, 0]
    if db is not None:
        _expect_shape("conv_backward", "db", (db.shape[0],), (g.K,))
        db_ptr = &db[0]
    cdef decaf_conv_plan plan = decaf_conv_make_plan(&g, decaf_get_num_threads(),
                                                     DECAF_PLAN_WEIGHT_GRAD if weights_only else DECAF_PLAN_BACKWARD)
    if work.shape[0] < plan.work:
        raise ValueError(f"conv_backward: work has {work.shape[0]} floats, needs {plan.work}")
    if g.B == 0:
        dw[...] = 0
        if db is not None:
            db[...] = 0
        return
    with nogil:
        decaf_conv_backward(&g, &plan, &x[0, 0, 0, 0], &w[0, 0, 0, 0], &dy[0, 0, 0, 0], dx_ptr,
                            &dw[0, 0, 0, 0], db_ptr, &work[0])


# ---- Winograd F(4x4, 3x3) (csrc/winograd.c) ---------------------------------------------------

cdef decaf_conv_geom _winograd_geom(str func, x_shape, w_shape, pads) except *:
    """The geometry of a stride-1, undilated convolution of x (B, C, H, W) by w (K, Cw, kh, kw) with
    pads (top, left, bottom, right); ValueError for malformed shapes or an empty output."""
    cdef decaf_conv_geom g
    x4 = _ints(x_shape, f"{func}: x_shape", 4, 0)
    w4 = _ints(w_shape, f"{func}: w_shape", 4, 1)
    pt, pl, pb, pr = _ints(pads, f"{func}: pads", 4, 0)
    g.B, g.C, g.H, g.W = x4
    g.K, g.kh, g.kw = w4[0], w4[2], w4[3]
    g.G, g.sh, g.sw, g.dh, g.dw, g.pad_top, g.pad_left = 1, 1, 1, 1, 1, pt, pl
    g.Ho, g.Wo = g.H + pt + pb - g.kh + 1, g.W + pl + pr - g.kw + 1
    if g.Ho < 1 or g.Wo < 1:
        raise ValueError(f"{func}: input {g.H}x{g.W} with pads {tuple(pads)} is smaller than the "
                         f"{g.kh}x{g.kw} kernel")
    if w4[1] != g.C:
        g.G = 0                  # grouped (or mismatched): not a convolution Winograd runs
    return g


def winograd_supported(x_shape, w_shape, pads):
    """Whether winograd_forward runs this convolution: a 3x3 kernel, one group (w_shape[1] equal to
    the input channels), stride 1, no dilation; any padding and size."""
    cdef decaf_conv_geom g = _winograd_geom("winograd_supported", x_shape, w_shape, pads)
    return g.G == 1 and g.B >= 1 and bool(decaf_winograd_supported(&g))


cdef decaf_conv_geom _winograd_checked(str func, x_shape, w_shape, pads) except *:
    cdef decaf_conv_geom g = _winograd_geom(func, x_shape, w_shape, pads)
    if g.G != 1:
        raise ValueError(f"{func}: w has shape {tuple(w_shape)}, expected ({g.K}, {g.C}, 3, 3) "
                         f"(one group: its second dimension the input channels)")
    if g.kh != 3 or g.kw != 3:
        raise ValueError(f"{func}: a {g.kh}x{g.kw} kernel; Winograd F(4x4, 3x3) needs 3x3")
    return g


def winograd_pack(const float[:, :, :, ::1] w not None):
    """The Winograd transform U of the weights w (K, C, 3, 3): a float32 array of 36 K C floats (36
    matrices (K, C), one per position of the 6x6 tile) for winograd_forward."""
    import numpy as np
    shape = _shape4(w)
    if shape[2:] != (3, 3):
        raise ValueError(f"winograd_pack: a {shape[2]}x{shape[3]} kernel; Winograd F(4x4, 3x3) needs 3x3")
    cdef decaf_conv_geom g = _winograd_checked("winograd_pack", (1, shape[1], 3, 3), shape, (1, 1, 1, 1))
    u = np.empty(decaf_winograd_packed_size(&g), np.float32)
    cdef float[::1] uv = u
    with nogil:
        decaf_winograd_pack(&g, &w[0, 0, 0, 0], &uv[0])
    return u


def winograd_work_size(x_shape, w_shape, pads, threads=None):
    """Floats of scratch winograd_forward needs with `threads` threads (None: the current count)."""
    cdef decaf_conv_geom g = _winograd_checked("winograd_work_size", x_shape, w_shape, pads)
    cdef int n = decaf_get_num_threads() if threads is None else _ints((threads,), "threads", 1, 1)[0]
    return decaf_winograd_work_size(&g, n) if g.B > 0 else 0


def winograd_forward(const float[:, :, :, ::1] x not None, const float[::1] u not None, w_shape, bias,
                     float[:, :, :, ::1] y not None, pads, act=None, residual=None, float[::1] work=None):
    """y = conv(x, w) + bias (None: none) by Winograd F(4x4, 3x3), from u = winograd_pack(w) and
    w's shape (K, C, 3, 3); stride 1, pads (top, left, bottom, right). Then + residual (an array
    like y, not y) and the activation act = (kind, lo, hi, alpha) (kind one of ACTIVATIONS), in y.
    work: scratch of winograd_work_size floats (None: allocated for the call)."""
    if not decaf_have_sgemm():
        raise RuntimeError("winograd_forward: no BLAS loaded (importing decaf.blas loads decaf's own)")
    cdef decaf_conv_geom g = _winograd_checked("winograd_forward", _shape4(x), w_shape, pads)
    _expect_shape("winograd_forward", "y", _shape4(y), (g.B, g.K, g.Ho, g.Wo))
    if u.shape[0] != decaf_winograd_packed_size(&g):
        raise ValueError(f"winograd_forward: u has {u.shape[0]} floats, expected "
                         f"{decaf_winograd_packed_size(&g)} (winograd_pack of a {tuple(w_shape)} w)")
    cdef const float *bias_ptr = _bias_data("winograd_forward", bias, g.K)
    cdef decaf_epilogue e
    _epilogue("winograd_forward", &e, act, False, float("inf"), None, residual, y)
    if g.B == 0:
        return
    cdef int threads = decaf_get_num_threads()
    cdef Py_ssize_t need = decaf_winograd_work_size(&g, threads)
    if work is None:
        import numpy as np
        work = np.empty(max(need, 1), np.float32)
    elif work.shape[0] < need:
        raise ValueError(f"winograd_forward: work has {work.shape[0]} floats, needs {need}")
    with nogil:
        decaf_winograd_forward(&g, threads, &x[0, 0, 0, 0], &u[0], bias_ptr, &y[0, 0, 0, 0], &work[0], &e)


def winograd_weight_grad(const float[:, :, :, ::1] x not None, const float[:, :, :, ::1] dy not None,
                         float[:, :, :, ::1] dw not None, db, pads, float[::1] work=None):
    """dw (K, C, 3, 3) and db (K,; None: skip) = the weight and bias gradients of the 3x3, stride-1
    convolution of x (B, C, H, W) with pads (top, left, bottom, right) for its output gradient dy
    (B, K, Ho, Wo), summed over the batch, by Winograd F(4x4, 3x3)'s transposed transforms (what
    conv_backward(..., weights_only=True) runs where its plan picks Winograd). work: scratch (None:
    allocated for the call)."""
    if not decaf_have_sgemm():
        raise RuntimeError("winograd_weight_grad: no BLAS loaded (importing decaf.blas loads decaf's own)")
    cdef decaf_conv_geom g = _winograd_checked("winograd_weight_grad", _shape4(x), _shape4(dw), pads)
    _expect_shape("winograd_weight_grad", "dy", _shape4(dy), (g.B, g.K, g.Ho, g.Wo))
    cdef float[::1] dbv
    cdef float *db_ptr = NULL
    if db is not None:
        dbv = db
        _expect_shape("winograd_weight_grad", "db", (dbv.shape[0],), (g.K,))
        db_ptr = &dbv[0]
    if g.B == 0:
        dw[...] = 0
        if db is not None:
            db[...] = 0
        return
    cdef Py_ssize_t need = decaf_winograd_weight_grad_work_size(&g)
    if work is None:
        import numpy as np
        work = np.empty(need, np.float32)
    elif work.shape[0] < need:
        raise ValueError(f"winograd_weight_grad: work has {work.shape[0]} floats, needs {need}")
    with nogil:
        decaf_winograd_weight_grad(&g, decaf_get_num_threads(), &x[0, 0, 0, 0], &dy[0, 0, 0, 0],
                                   &dw[0, 0, 0, 0], db_ptr, &work[0])


def winograd_preferred(x_shape, w_shape, pads, threads):
    """Whether Winograd is expected to be faster than conv_forward for this convolution with
    `threads` threads (False where it is not supported)."""
    cdef decaf_conv_geom g = _winograd_geom("winograd_preferred", x_shape, w_shape, pads)
    cdef int n = _ints((threads,), "winograd_preferred: threads", 1, 1)[0]
    return g.G == 1 and g.B >= 1 and bool(decaf_winograd_preferred(&g, n))


# ---- whole-array passes ----------------------------------------------------------------------

def copy_count_nonfinite(const float[::1] src not None, float[::1] dst not None):
    """dst[...] = src; returns the number of NaN or infinite values (flat float32 arrays)."""
    if src.shape[0] != dst.shape[0]:
        raise ValueError(f"copy_count_nonfinite: {src.shape[0]} values into {dst.shape[0]}")
    if src.shape[0] == 0:
        return 0
    cdef Py_ssize_t bad
    with nogil:
        bad = decaf_copy_count_nonfinite(&src[0], &dst[0], src.shape[0])
    return bad


def transpose(const float[:, :, ::1] x not None, float[:, :, ::1] y not None):
    """y[b] = x[b].T for x (B, M, N) and y (B, N, M), float32, apart (csrc/elementwise.c)."""
    _expect_shape("transpose", "y", (y.shape[0], y.shape[1], y.shape[2]), (x.shape[0], x.shape[2], x.shape[1]))
    cdef Py_ssize_t n = x.shape[0] * x.shape[1] * x.shape[2]
    if n == 0:
        return
    cdef const float *px = &x[0, 0, 0]
    cdef float *py = &y[0, 0, 0]
    if _shares(px, n, py, n):
        raise ValueError("transpose: y overlaps x")
    with nogil:
        decaf_transpose(px, py, x.shape[0], x.shape[1], x.shape[2])


cdef bint _value_map(str func, const float[::1] x, float[::1] y) except -1:
    """Checks y = f(x) over flat arrays: as many values, y either x itself or apart from it. False
    when there is nothing to do (no values)."""
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{func}: {x.shape[0]} values into {y.shape[0]}")
    if x.shape[0] == 0:
        return False
    if &x[0] != &y[0] and _shares(&x[0], x.shape[0], &y[0], y.shape[0]):
        raise ValueError(f"{func}: y overlaps x without being x")
    return True


def erf(const float[::1] x not None, float[::1] y not None):
    """y = erf(x) over flat float32 arrays (y may be x): within 2.5e-7 relative for |x| < 0.5, 2.5e-7
    absolute elsewhere (csrc/elementwise.c)."""
    if _value_map("erf", x, y):
        with nogil:
            decaf_erf(&x[0], &y[0], x.shape[0])


def gelu(const float[::1] x not None, float[::1] y not None):
    """y = x (1 + erf(x / sqrt 2)) / 2 over flat float32 arrays (y may be x): within 3e-7 max(1, |x|)
    absolute; GELU(inf) = inf, GELU(-inf) = -0, NaN stays NaN (csrc/elementwise.c)."""
    if _value_map("gelu", x, y):
        with nogil:
            decaf_gelu(&x[0], &y[0], x.shape[0])


def sgd_step(float[::1] w not None, float[::1] v not None, const float[::1] g not None, float lr, float mu,
             float decay, float scale, bint nesterov):
    """One SGD step with momentum in one pass over flat float32 arrays (g unchanged):
    g' = scale g + decay w; v_new = mu v + lr g'; w -= v_new (nesterov: (1 + mu) v_new - mu v)."""
    if not (w.shape[0] == v.shape[0] == g.shape[0]):
        raise ValueError(f"sgd_step: w, v and g have {w.shape[0]}, {v.shape[0]} and {g.shape[0]} values")
    if w.shape[0] == 0:
        return
    with nogil:
        decaf_sgd_step(&w[0], &v[0], &g[0], w.shape[0], lr, mu, decay, scale, nesterov)


# ---- per-channel affine (BatchNorm at inference, Scale) ----------------------------------------

cdef bint _overlap(const float[:, :, :, ::1] a, const float[:, :, :, ::1] b):
    """Do two equally shaped arrays share memory without being the same elements?"""
    cdef Py_ssize_t n = a.shape[0] * a.shape[1] * a.shape[2] * a.shape[3]
    if n == 0:
        return False
    cdef const float *pa = &a[0, 0, 0, 0]
    cdef const float *pb = &b[0, 0, 0, 0]
    return pa != pb and pa < pb + n and pb < pa + n


cdef Py_ssize_t _image_stride(str func, str name, const float[:, :, :, :] a) except -1:
    """Floats from one image of `a` (B, C, H, W) to the next, when each image is contiguous (C H W
    values in order) and the images are in order, as apart as they may be: a contiguous array, or
    a run of channels of a wider one (a[:, c0:c1]). Else ValueError."""
    cdef Py_ssize_t C = a.shape[1], H = a.shape[2], W = a.shape[3], item = sizeof(float)
    if ((W > 1 and a.strides[3] != item) or (H > 1 and a.strides[2] != W * item)
            or (C > 1 and a.strides[1] != H * W * item)):
        raise ValueError(f"{func}: each image of {name} must be contiguous (strides {[a.strides[i] for i in range(4)]})")
    if a.shape[0] <= 1:
        return C * H * W
    if a.strides[0] % item or a.strides[0] < C * H * W * item:
        raise ValueError(f"{func}: the images of {name} overlap or are out of order (strides {[a.strides[i] for i in range(4)]})")
    return a.strides[0] // item


def channel_affine(const float[:, :, :, :] x not None, const float[::1] scale not None,
                   const float[::1] shift, float[:, :, :, ::1] y not None, act=None, act_out=None):
    """y = x * scale[c] + shift[c] over (B, C, H, W) (y may be x; shift None: 0); then the activation
    act = (kind, lo, hi, alpha) (see conv_forward) in y, or into act_out (y keeping the values before it).
    x may be a run of channels of a wider tensor (each image contiguous, the images apart)."""
    shape = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    cdef Py_ssize_t B = x.shape[0], C = x.shape[1], HW = x.shape[2] * x.shape[3]
    cdef Py_ssize_t x_image = _image_stride("channel_affine", "x", x)
    _expect_shape("channel_affine", "y", _shape4(y), shape)
    _expect_shape("channel_affine", "scale", (scale.shape[0],), (C,))
    cdef const float *shift_ptr = NULL
    if shift is not None:
        _expect_shape("channel_affine", "shift", (shift.shape[0],), (C,))
        if C:
            shift_ptr = &shift[0]
    if act_out is not None and act is None:
        raise ValueError("channel_affine: act_out without act")
    cdef float[:, :, :, ::1] out
    if act_out is not None:
        out = act_out
        _expect_shape("channel_affine", "act_out", _shape4(out), shape)
    cdef decaf_epilogue e
    _epilogue("channel_affine", &e, act, False, 0.0, act_out, None, y)
    if B * C * HW == 0:
        return
    # the span of x's memory (its images with the gaps between them) against y's and act_out's
    cdef const float *px = &x[0, 0, 0, 0]
    cdef const float *py = &y[0, 0, 0, 0]
    cdef const float *po
    cdef Py_ssize_t nx = (B - 1) * x_image + C * HW, n = B * C * HW
    if px == py and x_image != C * HW:
        raise ValueError("channel_affine: y is x's memory but x is not contiguous")
    if px != py and px < py + n and py < px + nx:
        raise ValueError("channel_affine: y overlaps x without being x")
    if act_out is not None:
        po = &out[0, 0, 0, 0]
        if _overlap(out, y) or (po != px and po < px + nx and px < po + n):
            raise ValueError("channel_affine: act_out overlaps x or y without being it")
        if po == px and x_image != C * HW:
            raise ValueError("channel_affine: act_out is x's memory but x is not contiguous")
    with nogil:
        decaf_channel_affine(px, x_image, &scale[0], shift_ptr, &y[0, 0, 0, 0], B, C, HW, &e)


def batchnorm_scale_shift(const float[::1] mean not None, const float[::1] var not None, weight, bias,
                          double eps, float[::1] scale not None, float[::1] shift not None):
    """scale = weight / sqrt(var + eps), shift = bias - scale mean (weight None: 1, bias None: 0),
    per channel (float32; simple loops over pointers, which the compiler vectorises)."""
    cdef Py_ssize_t c, C = mean.shape[0]
    cdef const float[::1] w
    cdef const float[::1] b
    for name, a in (("var", var), ("scale", scale), ("shift", shift)):
        _expect_shape("batchnorm_scale_shift", name, (a.shape[0],), (C,))
    if weight is not None:
        w = weight
        _expect_shape("batchnorm_scale_shift", "weight", (w.shape[0],), (C,))
    if bias is not None:
        b = bias
        _expect_shape("batchnorm_scale_shift", "bias", (b.shape[0],), (C,))
    if C == 0:
        return
    cdef float e = eps
    cdef float *s = &scale[0]
    cdef float *t = &shift[0]
    cdef const float *m = &mean[0]
    cdef const float *v = &var[0]
    cdef const float *wp = &w[0] if weight is not None else NULL
    cdef const float *bp = &b[0] if bias is not None else NULL
    with nogil:
        for c in range(C):
            s[c] = sqrtf(v[c] + e)
        if wp:
            for c in range(C):
                s[c] = wp[c] / s[c]
        else:
            for c in range(C):
                s[c] = 1.0 / s[c]
        for c in range(C):
            t[c] = -(s[c] * m[c])
        if bp:
            for c in range(C):
                t[c] = bp[c] + t[c]
# ---- grouped convolution, direct (csrc/grouped_conv.c) ----------------------------------------

cdef extern from "grouped_conv.h":
    int decaf_grouped_conv_supported(const decaf_conv_geom *g) nogil
    Py_ssize_t decaf_grouped_conv_work_size(const decaf_conv_geom *g, int threads) nogil
    void decaf_grouped_conv_forward(const decaf_conv_geom *g, int threads, const float *x, const float *w,
                                    const float *bias, float *y, float *work, const decaf_epilogue *ep) nogil
    int decaf_grouped_conv_preferred(const decaf_conv_geom *g, int threads) nogil
    Py_ssize_t decaf_grouped_conv_packed_size(const decaf_conv_geom *g) nogil
    void decaf_grouped_conv_pack(const decaf_conv_geom *g, const float *w, float *packed) nogil
    void decaf_grouped_conv_forward_packed(const decaf_conv_geom *g, int threads, const float *x,
                                           const float *packed, const float *bias, float *y, float *work,
                                           const decaf_epilogue *ep) nogil


def grouped_conv_supported(x_shape, w_shape, int group, kernel, stride, pads, dilation, out_hw):
    """True when the direct grouped kernel (grouped_conv_forward) is meant for this convolution in
    the instruction set variant in use: G > 1 groups, not depthwise, dilation 1 (AVX2 or AVX-512)."""
    cdef decaf_conv_geom g = _conv_geom(tuple(x_shape), tuple(w_shape), group, kernel, stride, pads,
                                        dilation, out_hw)
    return bool(decaf_grouped_conv_supported(&g))


def grouped_conv_preferred(x_shape, w_shape, int group, kernel, stride, pads, dilation, out_hw, threads=None):
    """True where benchmarks/bench_grouped.py measured the direct grouped kernel faster than
    conv_forward's im2col + GEMM for this geometry with `threads` threads (None: the current count)."""
    cdef decaf_conv_geom g = _conv_geom(tuple(x_shape), tuple(w_shape), group, kernel, stride, pads,
                                        dilation, out_hw)
    cdef int n = decaf_get_num_threads() if threads is None else _ints((threads,), "threads", 1, 1)[0]
    return bool(decaf_grouped_conv_preferred(&g, n))


def grouped_conv_pack(const float[:, :, :, ::1] w not None, int group):
    """(kind, packed): the weights w (K, C/group, kh, kw) in the form grouped_conv_forward(...,
    packed=) reads instead of w (it then skips packing them on every call); kind names the kernel
    variant that packed them (a forward in another variant refuses them)."""
    import numpy as np
    cdef decaf_conv_geom g
    cdef int K = w.shape[0]
    if group < 1 or K % group:
        raise ValueError(f"grouped_conv_pack: outputs {K} must be divisible by group {group}")
    g.B, g.C, g.H, g.W, g.K, g.G = 1, w.shape[1] * group, 1, 1, K, group
    g.kh, g.kw, g.sh, g.sw, g.pad_top, g.pad_left, g.dh, g.dw, g.Ho, g.Wo = w.shape[2], w.shape[3], 1, 1, 0, 0, 1, 1, 1, 1
    cdef float[::1] packed = np.empty(max(decaf_grouped_conv_packed_size(&g), 1), np.float32)
    if K * w.shape[1] * w.shape[2] * w.shape[3] > 0:
        with nogil:
            decaf_grouped_conv_pack(&g, &w[0, 0, 0, 0], &packed[0])
    return decaf_isa_current(), np.asarray(packed)


def grouped_conv_forward(const float[:, :, :, ::1] x not None, const float[:, :, :, ::1] w not None, bias,
                         float[:, :, :, ::1] y not None, stride, pads, int group, act=None, residual=None,
                         packed=None):
    """y = conv(x, w) with `group` groups (dilation 1) + bias (None: none), + residual (an array like
    y, not y), then the activation act = (kind, lo, hi, alpha) (kind one of ACTIVATIONS), computed
    by the direct grouped kernel with decaf's threads. pads = (top, left, bottom, right); y's shape
    must be the one they give. Any group count works (in the generic variant by plain loops);
    grouped_conv_supported says where the kernel is meant to run. packed: None, or
    grouped_conv_pack(w, group) (then w gives only the shape)."""
    import numpy as np
    func = "grouped_conv_forward"
    cdef int sh, sw, pt, pl, pb, pr
    sh, sw = _ints(stride, "stride", 2, 1)
    pt, pl, pb, pr = _ints(pads, "pads", 4, 0)
    cdef int B = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3], K = w.shape[0]
    cdef int kh = w.shape[2], kw = w.shape[3]
    if group < 1 or C % group or K % group:
        raise ValueError(f"{func}: channels {C} and outputs {K} must be divisible by group {group}")
    _expect_shape(func, "w", _shape4(w), (K, C // group, kh, kw))
    if kh < 1 or kw < 1 or H + pt + pb < kh or W + pl + pr < kw:
        raise ValueError(f"{func}: a {kh}x{kw} kernel does not fit the padded {H + pt + pb}x{W + pl + pr} input")
    cdef int Ho = (H + pt + pb - kh) // sh + 1, Wo = (W + pl + pr - kw) // sw + 1
    _expect_shape(func, "y", _shape4(y), (B, K, Ho, Wo))
    cdef decaf_conv_geom g = _conv_geom(_shape4(x), _shape4(w), group, (kh, kw), (sh, sw), (pt, pl, pb, pr),
                                        (1, 1), (Ho, Wo))
    cdef const float *bias_ptr = _bias_data(func, bias, K)
    cdef decaf_epilogue e
    _epilogue(func, &e, act, False, 0.0, None, residual, y)
    cdef const float *packed_ptr = _variant_packed(func, packed, max(decaf_grouped_conv_packed_size(&g), 1),
                                                   decaf_grouped_conv_packed_size(&g))
    cdef int threads = decaf_get_num_threads()
    cdef float[::1] work = np.empty(max(decaf_grouped_conv_work_size(&g, threads), 1), np.float32)
    if B == 0 or K == 0:
        return
    with nogil:
        if packed_ptr != NULL:
            decaf_grouped_conv_forward_packed(&g, threads, &x[0, 0, 0, 0], packed_ptr, bias_ptr, &y[0, 0, 0, 0],
                                              &work[0], &e)
        else:
            decaf_grouped_conv_forward(&g, threads, &x[0, 0, 0, 0], &w[0, 0, 0, 0], bias_ptr, &y[0, 0, 0, 0],
                                       &work[0], &e)


# ---- BatchNorm with batch statistics (csrc/batchnorm.c) ----------------------------------------

cdef extern from "batchnorm.h":
    void decaf_batchnorm_train_forward(const float *x, const float *gamma, const float *beta, float *y,
                                       float *mean, float *var, Py_ssize_t B, Py_ssize_t C, Py_ssize_t HW,
                                       float eps, const decaf_epilogue *ep) nogil
    void decaf_batchnorm_train_backward(const float *x, const float *dy, const float *mean, const float *var,
                                        const float *gamma, float *dx, float *dgamma, float *dbeta, Py_ssize_t B,
                                        Py_ssize_t C, Py_ssize_t HW, float eps) nogil


cdef const float *_channel_in(str func, str name, a, Py_ssize_t C) except? NULL:
    """The floats of an input vector of C values (the caller keeps it alive), or NULL for None."""
    if a is None:
        return NULL
    cdef const float[::1] v = a
    _expect_shape(func, name, (v.shape[0],), (C,))
    return &v[0] if C else NULL


cdef float *_channel_out(str func, str name, a, Py_ssize_t C) except? NULL:
    """The floats of an output vector of C values (the caller keeps it alive), or NULL for None."""
    if a is None:
        return NULL
    cdef float[::1] v = a
    _expect_shape(func, name, (v.shape[0],), (C,))
    return &v[0] if C else NULL


def _check_eps(str func, double eps):
    if not eps >= 0:
        raise ValueError(f"{func}: eps must be >= 0, got {eps}")


def batchnorm_train_forward(const float[:, :, :, ::1] x not None, gamma, beta, float[:, :, :, ::1] y not None,
                            float[::1] mean not None, float[::1] var not None, double eps, act=None,
                            act_out=None):
    """Batch mean and biased variance per channel of x (B, C, H, W) into mean and var (C,), and
    y = (x - mean) / sqrt(var + eps) * gamma + beta (gamma, beta (C,) or None: 1 and 0); then the
    activation act (see conv_forward) in y, or into act_out (y keeping the values before it)."""
    func = "batchnorm_train_forward"
    cdef Py_ssize_t c, B = x.shape[0], C = x.shape[1], HW = x.shape[2] * x.shape[3]
    _expect_shape(func, "y", _shape4(y), _shape4(x))
    _check_eps(func, eps)
    cdef const float *g = _channel_in(func, "gamma", gamma, C)
    cdef const float *b = _channel_in(func, "beta", beta, C)
    _expect_shape(func, "mean", (mean.shape[0],), (C,))
    _expect_shape(func, "var", (var.shape[0],), (C,))
    if act_out is not None and act is None:
        raise ValueError(f"{func}: act_out without act")
    if B * C * HW and (&x[0, 0, 0, 0] == &y[0, 0, 0, 0] or _overlap(x, y)):
        raise ValueError(f"{func}: y overlaps x")
    cdef float[:, :, :, ::1] out
    if act_out is not None:
        out = act_out
        _expect_shape(func, "act_out", _shape4(out), _shape4(x))
        if B * C * HW and (&out[0, 0, 0, 0] == &x[0, 0, 0, 0] or _overlap(out, x) or _overlap(out, y)):
            raise ValueError(f"{func}: act_out overlaps x, or y without being it")
    cdef decaf_epilogue e
    _epilogue(func, &e, act, False, 0.0, act_out, None, y)
    if B * C * HW == 0:
        for c in range(C):       # the statistics of no values, as NumPy's mean and var give them
            mean[c] = var[c] = float("nan")
        return
    with nogil:
        decaf_batchnorm_train_forward(&x[0, 0, 0, 0], g, b, &y[0, 0, 0, 0], &mean[0], &var[0], B, C, HW, eps,
                                      &e)


def batchnorm_train_backward(const float[:, :, :, ::1] x not None, const float[:, :, :, ::1] dy not None,
                             const float[::1] mean not None, const float[::1] var not None, gamma, dx, dgamma,
                             dbeta, double eps):
    """With mean and var the batch statistics of x (batchnorm_train_forward's) and xhat = (x - mean)
    / sqrt(var + eps): dbeta = sum(dy), dgamma = sum(dy xhat) per channel, and
    dx = gamma / sqrt(var + eps) (dy - dbeta / m - xhat dgamma / m) over the m = B H W values of a
    channel (gamma None: 1). dx, dgamma, dbeta None: not computed."""
    func = "batchnorm_train_backward"
    cdef Py_ssize_t B = x.shape[0], C = x.shape[1], HW = x.shape[2] * x.shape[3]
    _expect_shape(func, "dy", _shape4(dy), _shape4(x))
    _expect_shape(func, "mean", (mean.shape[0],), (C,))
    _expect_shape(func, "var", (var.shape[0],), (C,))
    _check_eps(func, eps)
    cdef const float *g = _channel_in(func, "gamma", gamma, C)
    cdef float *dg = _channel_out(func, "dgamma", dgamma, C)
    cdef float *db = _channel_out(func, "dbeta", dbeta, C)
    cdef float[:, :, :, ::1] d
    cdef float *dx_ptr = NULL
    if dx is not None:
        d = dx
        _expect_shape(func, "dx", _shape4(d), _shape4(x))
        if B * C * HW:
            dx_ptr = &d[0, 0, 0, 0]
            if dx_ptr == &x[0, 0, 0, 0] or dx_ptr == &dy[0, 0, 0, 0] or _overlap(d, x) or _overlap(d, dy):
                raise ValueError(f"{func}: dx overlaps x or dy")
    if B * C * HW == 0:
        return
    with nogil:
        decaf_batchnorm_train_backward(&x[0, 0, 0, 0], &dy[0, 0, 0, 0], &mean[0], &var[0], g, dx_ptr, dg, db,
                                       B, C, HW, eps)


# ---- 1x1 convolution, direct (csrc/pointwise.c) -------------------------------------------------

cdef extern from "pointwise.h":
    int decaf_pointwise_preferred(const decaf_conv_geom *g, int threads) nogil
    Py_ssize_t decaf_pointwise_packed_size(const decaf_conv_geom *g) nogil
    void decaf_pointwise_pack(const decaf_conv_geom *g, const float *w, float *packed) nogil
    void decaf_pointwise_forward(const decaf_conv_geom *g, int threads, const float *x, const float *w,
                                 const float *packed, const float *bias, float *y, float *work,
                                 const decaf_epilogue *ep) nogil


cdef decaf_conv_geom _pointwise_geom(str func, tuple x_shape, tuple w_shape) except *:
    cdef decaf_conv_geom g
    B, C, H, W = x_shape
    _expect_shape(func, "w", w_shape, (w_shape[0], C, 1, 1))
    g.B, g.C, g.H, g.W, g.K, g.G = B, C, H, W, w_shape[0], 1
    g.kh, g.kw, g.sh, g.sw, g.pad_top, g.pad_left, g.dh, g.dw, g.Ho, g.Wo = 1, 1, 1, 1, 0, 0, 1, 1, H, W
    return g


def pointwise_forward(const float[:, :, :, ::1] x not None, const float[:, :, :, ::1] w not None, bias,
                      float[:, :, :, ::1] y not None, act=None, residual=None, packed=None):
    """y = conv(x, w) + bias (None: none), + residual (an array like y, not y), then the activation
    act = (kind, lo, hi, alpha), for a 1x1 kernel (stride 1, no padding, one group), computed by the
    direct pointwise kernel (csrc/pointwise.c) with decaf's threads. packed: None, or
    pointwise_pack(w) (then w gives only the shape)."""
    import numpy as np
    func = "pointwise_forward"
    cdef decaf_conv_geom g = _pointwise_geom(func, _shape4(x), _shape4(w))
    _expect_shape(func, "y", _shape4(y), (g.B, g.K, g.H, g.W))
    cdef const float *bias_ptr = _bias_data(func, bias, g.K)
    cdef decaf_epilogue e
    _epilogue(func, &e, act, False, 0.0, None, residual, y)
    cdef const float *packed_ptr = _variant_packed(func, packed, decaf_pointwise_packed_size(&g),
                                                   decaf_pointwise_packed_size(&g))
    cdef int threads = decaf_get_num_threads()
    cdef float[::1] work = np.empty(1, np.float32)   # (the kernel needs no scratch: pointwise.c's work size is 0)
    if g.B == 0 or g.K == 0 or g.H * g.W == 0:
        return
    if g.C == 0:
        raise ValueError(f"{func}: x has no channels")
    with nogil:
        decaf_pointwise_forward(&g, threads, &x[0, 0, 0, 0], &w[0, 0, 0, 0], packed_ptr, bias_ptr,
                                &y[0, 0, 0, 0], &work[0], &e)


def pointwise_pack(const float[:, :, :, ::1] w not None):
    """(kind, packed): w (K, C, 1, 1) in the form pointwise_forward(..., packed=) reads; kind names
    the kernel variant that packed it."""
    import numpy as np
    cdef decaf_conv_geom g = _pointwise_geom("pointwise_pack", (1, w.shape[1], 1, 1), _shape4(w))
    cdef float[::1] packed = np.empty(max(decaf_pointwise_packed_size(&g), 1), np.float32)
    if w.shape[0] * w.shape[1] > 0:
        with nogil:
            decaf_pointwise_pack(&g, &w[0, 0, 0, 0], &packed[0])
    return decaf_isa_current(), np.asarray(packed)


def pointwise_preferred(x_shape, w_shape, threads):
    """Whether conv_forward's plan would run this 1x1 convolution by the pointwise kernel."""
    cdef decaf_conv_geom g = _pointwise_geom("pointwise_preferred", tuple(x_shape), tuple(w_shape))
    return bool(decaf_pointwise_preferred(&g, _ints((threads,), "pointwise_preferred: threads", 1, 1)[0]))


# ---- LayerNorm over one axis (csrc/layernorm.c) -------------------------------------------------

cdef extern from "layernorm.h":
    void decaf_layernorm(const float *x, const float *gamma, const float *beta, float *y, float *mean,
                         float *inv_std, Py_ssize_t outer, Py_ssize_t C, Py_ssize_t inner, float eps) nogil


cdef bint _shares(const float *a, Py_ssize_t na, const float *b, Py_ssize_t nb) noexcept nogil:
    """Do the runs a[:na] and b[:nb] (both non-empty) share memory?"""
    return a < b + nb and b < a + na


def layernorm(const float[:, :, ::1] x not None, const float[::1] gamma not None, const float[::1] beta not None,
              double eps, float[:, :, ::1] y not None, float[:, ::1] mean not None, float[:, ::1] inv_std not None):
    """For x (outer, C, inner), float32, C-contiguous: over the C values x[o, :, i] of each (o, i),
    mean and biased variance into mean and inv_std = 1 / sqrt(var + eps) ((outer, inner) each), and
    y = (x - mean) inv_std gamma[c] + beta[c] (y may be x; gamma, beta (C,))."""
    func = "layernorm"
    cdef Py_ssize_t outer = x.shape[0], C = x.shape[1], inner = x.shape[2], n = outer * C * inner
    _expect_shape(func, "gamma", (gamma.shape[0],), (C,))
    _expect_shape(func, "beta", (beta.shape[0],), (C,))
    _expect_shape(func, "y", (y.shape[0], y.shape[1], y.shape[2]), (outer, C, inner))
    _expect_shape(func, "mean", (mean.shape[0], mean.shape[1]), (outer, inner))
    _expect_shape(func, "inv_std", (inv_std.shape[0], inv_std.shape[1]), (outer, inner))
    _check_eps(func, eps)
    if C == 0:
        raise ValueError(f"{func}: x has no values to normalise over (C = 0)")
    if n == 0:
        return
    cdef const float *px = &x[0, 0, 0]
    cdef float *py = &y[0, 0, 0]
    cdef float *pm = &mean[0, 0]
    cdef float *ps = &inv_std[0, 0]
    cdef Py_ssize_t m = outer * inner
    if px != py and _shares(px, n, py, n):
        raise ValueError(f"{func}: y overlaps x without being x")
    if _shares(pm, m, ps, m) or _shares(pm, m, px, n) or _shares(pm, m, py, n) or _shares(ps, m, px, n) \
            or _shares(ps, m, py, n):
        raise ValueError(f"{func}: mean and inv_std must be apart from each other, x and y")
    with nogil:
        decaf_layernorm(px, &gamma[0], &beta[0], py, pm, ps, outer, C, inner, eps)
