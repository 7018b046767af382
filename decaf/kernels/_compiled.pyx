# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""The compiled kernels: a thin wrapper over csrc/*.c.

Every function has the signature of its twin in ``decaf.kernels.reference`` and writes into the
output arrays it is given. The typed memoryviews make Cython check dtype (float32; int32 for
argmax), number of dimensions and C-contiguity, raising ValueError; the shape checks below make
sure the C code never reads or writes outside the arrays. Inputs may be read-only (memory-mapped
weights). Outputs must not overlap inputs. The C calls release the GIL.
"""
from operator import index as _index

cimport openmp


cdef extern from "threads.h":
    void decaf_set_num_threads(int n) nogil
    int decaf_get_num_threads() nogil

cdef extern from "im2col.h":
    void decaf_im2col(const float *x, float *cols, int B, int C, int H, int W, int kh, int kw,
                      int sh, int sw, int pad_top, int pad_left, int dh, int dw, int Ho, int Wo) nogil
    void decaf_col2im(const float *cols, float *x, int B, int C, int H, int W, int kh, int kw,
                      int sh, int sw, int pad_top, int pad_left, int dh, int dw, int Ho, int Wo) nogil

cdef extern from "pool.h":
    void decaf_max_pool_forward(const float *x, float *y, int *argmax, int B, int C, int H, int W,
                                int Ho, int Wo, int kh, int kw, int sh, int sw,
                                int pad_top, int pad_left) nogil
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

cdef extern from "depthwise.h":
    void decaf_depthwise_conv_forward(const float *x, const float *w, float *y, int B, int C, int H, int W,
                                      int kh, int kw, int Ho, int Wo, int sh, int sw,
                                      int pad_top, int pad_left, int dil_h, int dil_w) nogil
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


def omp_set_num_threads(int n):
    """OpenMP's own setting, for the calling thread only (decaf's loops follow set_num_threads)."""
    openmp.omp_set_num_threads(n)


def omp_get_max_threads():
    """OpenMP's default team size for the calling thread."""
    return openmp.omp_get_max_threads()


# ---- argument checks -------------------------------------------------------------------------

def _ints(value, str name, int count, int minimum):
    """A tuple of `count` Python ints, each >= minimum, from `value`."""
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


# ---- depthwise convolution -------------------------------------------------------------------

def depthwise_conv_forward(const float[:, :, :, ::1] x not None, const float[:, :, :, ::1] w not None,
                           float[:, :, :, ::1] y not None, stride, pads, dilation):
    cdef int sh, sw, pt, pl, dh, dw
    sh, sw = _ints(stride, "stride", 2, 1)
    pt, pl, _, _ = _ints(pads, "pads", 4, 0)
    dh, dw = _ints(dilation, "dilation", 2, 1)
    cdef int B = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef int kh = w.shape[2], kw = w.shape[3], Ho = y.shape[2], Wo = y.shape[3]
    _expect_shape("depthwise_conv_forward", "w", _shape4(w), (C, 1, kh, kw))
    _expect_shape("depthwise_conv_forward", "y", _shape4(y), (B, C, Ho, Wo))
    with nogil:
        decaf_depthwise_conv_forward(&x[0, 0, 0, 0], &w[0, 0, 0, 0], &y[0, 0, 0, 0], B, C, H, W,
                                     kh, kw, Ho, Wo, sh, sw, pt, pl, dh, dw)


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
