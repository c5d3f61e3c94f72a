/* The Mamba layer's inner stream without autograd, fused (sampling on CPU): no state tensor in
 * memory, one pass per kernel. Built and loaded by isdrama/models/blocks/cpu_kernels.py.
 *
 * isdrama_selective_scan: for every line b, channel e and state n,
 *     delta = softplus(dt + dt_bias) (or dt itself when dt_bias is NULL),
 *     h_t = exp(delta_t,e A_e,n) h_{t-1} + delta_t,e x_t,e B_t,n,
 *     y_t,e = (sum_n C_t,n h_t + D_e x_t,e) * silu(z_t,e)   (no gate when z is NULL).
 * isdrama_conv_silu: the causal depthwise convolution of the masked input, then silu and the mask
 *     again: out_t,e = keep_t silu(bias_e + sum_k w_k,e keep_s x_s,e), s = t - (K - 1) + k >= 0.
 *
 * Layout (float32): a "rows" tensor (B, L, F) has unit stride along F and row r = b L + t at
 * r * stride, so views of one projection's output (chunks, splits) pass without copies. A is
 * given transposed, At (N, E); the conv weight transposed, Wt (K, E); keep (B, L) or NULL.
 * Work is split over (line, block of 64 channels) with OpenMP; the channel loop is the vector
 * loop (compiled with -ffast-math so gcc calls glibc's vector expf / log1pf, libmvec). */
#include <math.h>
#include <stdint.h>
#include <string.h>

#define EB 64

static inline float silu(float v) { return v / (1.0f + expf(-v)); }

/* torch.nn.functional.softplus (beta 1, threshold 20) */
static inline float softplus(float v) { return v > 20.0f ? v : log1pf(expf(v)); }

void isdrama_selective_scan(const float *x, int64_t x_stride, const float *dt, int64_t dt_stride,
                            const float *dt_bias, const float *At, const float *Bm, int64_t b_stride,
                            const float *Cm, int64_t c_stride, const float *D, const float *z,
                            int64_t z_stride, float *y, int64_t B, int64_t L, int64_t E, int64_t N,
                            int threads) {
    const int64_t nblk = (E + EB - 1) / EB;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t idx = 0; idx < B * nblk; ++idx) {
        const int64_t b = idx / nblk, e0 = (idx % nblk) * EB;
        const int64_t ne = E - e0 < EB ? E - e0 : EB;
        float h[N * EB];
        float acc[EB], dl[EB], dx[EB];
        memset(h, 0, sizeof(float) * N * EB);
        for (int64_t t = 0; t < L; ++t) {
            const int64_t row = b * L + t;
            const float *xt = x + row * x_stride + e0, *dtt = dt + row * dt_stride + e0;
            const float *bt = Bm + row * b_stride, *ct = Cm + row * c_stride;
            if (dt_bias) {
                const float *bias = dt_bias + e0;
#pragma omp simd
                for (int64_t e = 0; e < ne; ++e) dl[e] = softplus(dtt[e] + bias[e]);
            } else {
#pragma omp simd
                for (int64_t e = 0; e < ne; ++e) dl[e] = dtt[e];
            }
#pragma omp simd
            for (int64_t e = 0; e < ne; ++e) {
                acc[e] = 0.0f;
                dx[e] = dl[e] * xt[e];
            }
            for (int64_t n = 0; n < N; ++n) {
                const float *a = At + n * E + e0;
                const float bn = bt[n], cn = ct[n];
                float *hn = h + n * EB;
#pragma omp simd
                for (int64_t e = 0; e < ne; ++e) {
                    const float hv = expf(dl[e] * a[e]) * hn[e] + dx[e] * bn;
                    hn[e] = hv;
                    acc[e] += cn * hv;
                }
            }
            float *yt = y + row * E + e0;
            const float *De = D + e0;
            if (z) {
                const float *zt = z + row * z_stride + e0;
#pragma omp simd
                for (int64_t e = 0; e < ne; ++e) yt[e] = (acc[e] + De[e] * xt[e]) * silu(zt[e]);
            } else {
#pragma omp simd
                for (int64_t e = 0; e < ne; ++e) yt[e] = acc[e] + De[e] * xt[e];
            }
        }
    }
}

void isdrama_conv_silu(const float *x, int64_t x_stride, const float *Wt, const float *bias,
                       const float *keep, float *out, int64_t B, int64_t L, int64_t E, int64_t K,
                       int threads) {
    const int64_t nblk = (E + EB - 1) / EB;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t idx = 0; idx < B * nblk; ++idx) {
        const int64_t b = idx / nblk, e0 = (idx % nblk) * EB;
        const int64_t ne = E - e0 < EB ? E - e0 : EB;
        float acc[EB];
        for (int64_t t = 0; t < L; ++t) {
            const int64_t row = b * L + t;
#pragma omp simd
            for (int64_t e = 0; e < ne; ++e) acc[e] = bias[e0 + e];
            for (int64_t k = 0; k < K; ++k) {
                const int64_t s = t - (K - 1) + k;
                if (s < 0) continue;
                const float m = keep ? keep[b * L + s] : 1.0f;
                const float *xs = x + (b * L + s) * x_stride + e0, *w = Wt + k * E + e0;
#pragma omp simd
                for (int64_t e = 0; e < ne; ++e) acc[e] += w[e] * (xs[e] * m);
            }
            const float mt = keep ? keep[row] : 1.0f;
            float *o = out + row * E + e0;
#pragma omp simd
            for (int64_t e = 0; e < ne; ++e) o[e] = silu(acc[e]) * mt;
        }
    }
}
