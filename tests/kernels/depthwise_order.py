"""Which depthwise shapes the compiled kernels sum in the reference's order, so that their results
must equal decaf.kernels.reference's bit for bit (csrc/depthwise.c)."""


def sums_like_reference(isa, kernel, stride, dilation=(1, 1)):
    """False for the shapes the AVX2 variant runs in strips, which sum each window row with FMAs:
    3x3 windows at stride 1 or 2, 5x5 and 7x7 at stride 1 (the same both ways, no dilation). (Some
    of these still go to the tiles, a stride-2 input that is prefetched, 5x5 or 7x7 on planes at
    most 8 wide; they are not asserted bit for bit either.)"""
    (kh, kw), (sh, sw) = tuple(kernel), tuple(stride)
    if isa != "avx2" or tuple(dilation) != (1, 1) or kh != kw or sh != sw:
        return True
    return not ((kh == 3 and sh in (1, 2)) or (kh in (5, 7) and sh == 1))
