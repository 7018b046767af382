/* Runtime CPU dispatch: the kernels exist once per instruction set, in one extension.
 *
 * setup.py compiles the kernel sources (its ISA_KERNEL_SOURCES: conv.c, direct_conv.c, im2col.c,
 * gemm.c, pool.c, lrn.c, depthwise.c, elementwise.c, channel_affine.c) several times, once per
 * variant, each time with other flags and with DECAF_ISA_SUFFIX set:
 *     generic  the x86-64 baseline (SSE2), no flag           names end in _generic
 *     avx2     -mavx2 -mfma                                  names end in _avx2
 *     avx512   -mavx512f -mavx512bw -mavx512vl -mavx512dq    names end in _avx512
 * Inside a variant the code sees __AVX2__ / __AVX512F__ as usual and takes its intrinsic paths.
 * Every kernel header includes this file first, so that in a variant's compile each of the names
 * below becomes its suffixed twin (decaf_conv_forward -> decaf_conv_forward_avx2): the variants
 * link side by side, and calls between kernel files stay inside one variant. Without
 * DECAF_ISA_SUFFIX (the Cython wrapper, dispatch.c) the names are the public ones, which
 * dispatch.c defines: each calls the variant chosen once, at import, by decaf.cpu (from CPUID,
 * or $DECAF_ISA).
 *
 * A new non-static function in a kernel source needs a line below (else the link fails with a
 * duplicate symbol), and, if code outside the kernels calls it, an entry in dispatch.c. Shared
 * state (threads.c, blas.c, dispatch.c) is compiled once, for the baseline. */
#ifndef DECAF_ISA_H
#define DECAF_ISA_H

enum { DECAF_ISA_GENERIC = 0, DECAF_ISA_AVX2 = 1, DECAF_ISA_AVX512 = 2, DECAF_ISA_COUNT = 3 };

/* "generic", "avx2", "avx512" for 0, 1, 2; NULL for another number. */
const char *decaf_isa_name(int isa);
/* 1 when the variant is in this build and the CPU (and the OS: the registers' state is saved on a
 * context switch) runs it. */
int decaf_isa_supported(int isa);
/* The best supported variant: what runs unless decaf_isa_select chose another. */
int decaf_isa_best(void);
/* Use variant `isa` from now on; returns 0, or -1 (nothing changed) when it is not supported.
 * A convolution plan keeps the variant it was made for (decaf_conv_plan.isa). */
int decaf_isa_select(int isa);
int decaf_isa_current(void);

#ifdef DECAF_ISA_SUFFIX
#define DECAF_ISA_CAT2(a, b) a##b
#define DECAF_ISA_CAT(a, b) DECAF_ISA_CAT2(a, b)
#define DECAF_ISA_NAME(name) DECAF_ISA_CAT(name, DECAF_ISA_SUFFIX)

/* batchnorm.c */
#define decaf_batchnorm_train_forward DECAF_ISA_NAME(decaf_batchnorm_train_forward)
#define decaf_batchnorm_train_backward DECAF_ISA_NAME(decaf_batchnorm_train_backward)
/* channel_affine.c */
#define decaf_channel_affine DECAF_ISA_NAME(decaf_channel_affine)
/* conv.c */
#define decaf_conv_make_plan DECAF_ISA_NAME(decaf_conv_make_plan)
#define decaf_conv_forward DECAF_ISA_NAME(decaf_conv_forward)
#define decaf_conv_backward DECAF_ISA_NAME(decaf_conv_backward)
#define decaf_conv_pack DECAF_ISA_NAME(decaf_conv_pack)
/* direct_conv.c */
#define decaf_direct_conv_supported DECAF_ISA_NAME(decaf_direct_conv_supported)
#define decaf_direct_conv_scratch DECAF_ISA_NAME(decaf_direct_conv_scratch)
#define decaf_direct_conv_forward DECAF_ISA_NAME(decaf_direct_conv_forward)
#define decaf_direct_conv_packed_size DECAF_ISA_NAME(decaf_direct_conv_packed_size)
#define decaf_direct_conv_pack DECAF_ISA_NAME(decaf_direct_conv_pack)
/* im2col.c */
#define decaf_im2col DECAF_ISA_NAME(decaf_im2col)
#define decaf_col2im DECAF_ISA_NAME(decaf_col2im)
#define decaf_im2col_row DECAF_ISA_NAME(decaf_im2col_row)
#define decaf_im2col_serial DECAF_ISA_NAME(decaf_im2col_serial)
#define decaf_col2im_serial DECAF_ISA_NAME(decaf_col2im_serial)
#define decaf_pad_plane DECAF_ISA_NAME(decaf_pad_plane)
/* gemm.c (the BLAS state, blas.c, is shared) */
#define decaf_sgemm DECAF_ISA_NAME(decaf_sgemm)
/* pool.c */
#define decaf_max_pool_forward DECAF_ISA_NAME(decaf_max_pool_forward)
#define decaf_max_pool_values DECAF_ISA_NAME(decaf_max_pool_values)
#define decaf_max_pool_backward DECAF_ISA_NAME(decaf_max_pool_backward)
#define decaf_avg_pool_forward DECAF_ISA_NAME(decaf_avg_pool_forward)
#define decaf_avg_pool_backward DECAF_ISA_NAME(decaf_avg_pool_backward)
/* lrn.c */
#define decaf_lrn_forward DECAF_ISA_NAME(decaf_lrn_forward)
#define decaf_lrn_backward DECAF_ISA_NAME(decaf_lrn_backward)
/* depthwise.c */
#define decaf_depthwise_conv_forward DECAF_ISA_NAME(decaf_depthwise_conv_forward)
#define decaf_depthwise_conv_backward DECAF_ISA_NAME(decaf_depthwise_conv_backward)
/* elementwise.c */
#define decaf_copy_count_nonfinite DECAF_ISA_NAME(decaf_copy_count_nonfinite)
#define decaf_sgd_step DECAF_ISA_NAME(decaf_sgd_step)
#define decaf_erf DECAF_ISA_NAME(decaf_erf)
#define decaf_gelu DECAF_ISA_NAME(decaf_gelu)
#define decaf_transpose DECAF_ISA_NAME(decaf_transpose)
/* layernorm.c */
#define decaf_layernorm DECAF_ISA_NAME(decaf_layernorm)
/* winograd.c */
#define decaf_winograd_supported DECAF_ISA_NAME(decaf_winograd_supported)
#define decaf_winograd_packed_size DECAF_ISA_NAME(decaf_winograd_packed_size)
#define decaf_winograd_pack DECAF_ISA_NAME(decaf_winograd_pack)
#define decaf_winograd_work_size DECAF_ISA_NAME(decaf_winograd_work_size)
#define decaf_winograd_forward DECAF_ISA_NAME(decaf_winograd_forward)
#define decaf_winograd_weight_grad DECAF_ISA_NAME(decaf_winograd_weight_grad)
#define decaf_winograd_weight_grad_work_size DECAF_ISA_NAME(decaf_winograd_weight_grad_work_size)
#define decaf_winograd_preferred DECAF_ISA_NAME(decaf_winograd_preferred)
/* grouped_conv.c */
#define decaf_grouped_conv_supported DECAF_ISA_NAME(decaf_grouped_conv_supported)
#define decaf_grouped_conv_work_size DECAF_ISA_NAME(decaf_grouped_conv_work_size)
#define decaf_grouped_conv_forward DECAF_ISA_NAME(decaf_grouped_conv_forward)
#define decaf_grouped_conv_preferred DECAF_ISA_NAME(decaf_grouped_conv_preferred)
#define decaf_grouped_conv_packed_size DECAF_ISA_NAME(decaf_grouped_conv_packed_size)
#define decaf_grouped_conv_pack DECAF_ISA_NAME(decaf_grouped_conv_pack)
#define decaf_grouped_conv_forward_packed DECAF_ISA_NAME(decaf_grouped_conv_forward_packed)
/* pointwise.c */
#define decaf_pointwise_supported DECAF_ISA_NAME(decaf_pointwise_supported)
#define decaf_pointwise_preferred DECAF_ISA_NAME(decaf_pointwise_preferred)
#define decaf_pointwise_packed_size DECAF_ISA_NAME(decaf_pointwise_packed_size)
#define decaf_pointwise_pack DECAF_ISA_NAME(decaf_pointwise_pack)
#define decaf_pointwise_work_size DECAF_ISA_NAME(decaf_pointwise_work_size)
#define decaf_pointwise_forward DECAF_ISA_NAME(decaf_pointwise_forward)
/* stem_conv.c */
#define decaf_stem_conv_supported DECAF_ISA_NAME(decaf_stem_conv_supported)
#define decaf_stem_conv_preferred DECAF_ISA_NAME(decaf_stem_conv_preferred)
#define decaf_stem_conv_work_size DECAF_ISA_NAME(decaf_stem_conv_work_size)
#define decaf_stem_conv_forward DECAF_ISA_NAME(decaf_stem_conv_forward)
#endif

#endif
