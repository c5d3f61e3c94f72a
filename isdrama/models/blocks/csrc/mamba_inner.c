/* The Mamba layer's inner stream without autograd, fused (sampling on CPU): no state tensor in
 * memory, one pass per kernel. Built and loaded by isdrama/models/blocks/cpu_kernels.py.
 *
 * isdrama_selective_scan (padded lines: the chunked backend without autograd, and training's
 * forward, which passes hc): for every line b, channel e and state n,
 *     delta = softplus(dt + dt_bias) (or dt itself when dt_bias is NULL),
 *     h_t = exp(delta_t,e A_e,n) h_{t-1} + delta_t,e x_t,e B_t,n,
 *     y_t,e = (sum_n C_t,n h_t + D_e x_t,e) * silu(z_t,e)   (no gate when z is NULL);
 *     hc (B, ceil(L / CK), N, E), when not NULL: the state entering every chunk of CK frames.
 * isdrama_scan_train_backward: its backward (delta given, no gate) from hc.
 * isdrama_selective_scan_lines / isdrama_conv_silu_lines (the sampling layer): the same scan, and
 *     the causal depthwise convolution then silu, out_t,e = silu(bias_e + sum_k w_k,e x_t-(K-1)+k,e),
 *     over packed lines (no padding rows), each read forwards or backwards (the two directions of a
 *     bidirectional layer without flipped copies).
 *
 * Layout (float32): a "rows" tensor (B, L, F) or (R, F) has unit stride along F and row r at
 * r * stride, so views of one projection's output (chunks, splits) pass without copies. A is
 * given transposed, At (N, E); the conv weight transposed, Wt (K, E).
 * Work is split over (line, block of 64 channels) with OpenMP; the channel loop is the vector
 * loop (compiled with -ffast-math so gcc calls glibc's vector expf / log1pf, libmvec). */
#include <math.h>
#include <stdint.h>
#include <string.h>

#define EB 64
/* frames per chunk whose entering state the training forward keeps (hc) */
#define CK 32

static inline float silu(float v) { return v / (1.0f + expf(-v)); }

/* torch.nn.functional.softplus (beta 1, threshold 20) */
static inline float softplus(float v) { return v > 20.0f ? v : log1pf(expf(v)); }

/* One line's scan over one block of ne <= EB channels from e0: its rows are row0 + k * step for
 * k = 0 .. len - 1 (step -1: the line read backwards, the second direction of a bidirectional
 * layer); hcb (ceil(len / CK), N, E) or NULL: the state entering every chunk of CK frames. */
static inline void scan_line(const float *x, int64_t x_stride, const float *dt, int64_t dt_stride,
                             const float *dt_bias, const float *At, const float *Bm, int64_t b_stride,
                             const float *Cm, int64_t c_stride, const float *D, const float *z,
                             int64_t z_stride, float *y, int64_t y_stride, float *hcb, int64_t row0,
                             int64_t step, int64_t len, int64_t e0, int64_t ne, int64_t E, int64_t N) {
    float h[N * EB];
    float acc[EB], dl[EB], dx[EB];
    memset(h, 0, sizeof(float) * N * EB);
    for (int64_t t = 0; t < len; ++t) {
        if (hcb && t % CK == 0) { /* training: the state entering chunk t / CK */
            float *dst = hcb + (t / CK) * N * E + e0;
            for (int64_t n = 0; n < N; ++n) memcpy(dst + n * E, h + n * EB, sizeof(float) * ne);
        }
        const int64_t row = row0 + t * step;
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
        float *yt = y + row * y_stride + e0;
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

/* Padded lines (B, L, .): row b L + t; y (B, L, E) contiguous; hc (B, ceil(L / CK), N, E) or NULL. */
void isdrama_selective_scan(const float *x, int64_t x_stride, const float *dt, int64_t dt_stride,
                            const float *dt_bias, const float *At, const float *Bm, int64_t b_stride,
                            const float *Cm, int64_t c_stride, const float *D, const float *z,
                            int64_t z_stride, float *y, float *hc, int64_t B, int64_t L, int64_t E,
                            int64_t N, int threads) {
    const int64_t nblk = (E + EB - 1) / EB, nck = (L + CK - 1) / CK;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t idx = 0; idx < B * nblk; ++idx) {
        const int64_t b = idx / nblk, e0 = (idx % nblk) * EB;
        const int64_t ne = E - e0 < EB ? E - e0 : EB;
        scan_line(x, x_stride, dt, dt_stride, dt_bias, At, Bm, b_stride, Cm, c_stride, D, z, z_stride, y, E,
                  hc ? hc + b * nck * N * E : NULL, b * L, 1, L, e0, ne, E, N);
    }
}

/* Packed lines (sampling, no padding): line s has rows starts[s] .. starts[s] + lengths[s] - 1 of
 * the (R, .) inputs, read backwards when reverse; y (R, .) with row stride y_stride. */
void isdrama_selective_scan_lines(const float *x, int64_t x_stride, const float *dt, int64_t dt_stride,
                                  const float *dt_bias, const float *At, const float *Bm, int64_t b_stride,
                                  const float *Cm, int64_t c_stride, const float *D, const float *z,
                                  int64_t z_stride, float *y, int64_t y_stride, const int64_t *starts,
                                  const int64_t *lengths, int64_t S, int64_t E, int64_t N, int reverse,
                                  int threads) {
    const int64_t nblk = (E + EB - 1) / EB;
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
    for (int64_t idx = 0; idx < S * nblk; ++idx) {
        const int64_t s = idx / nblk, e0 = (idx % nblk) * EB;
        const int64_t ne = E - e0 < EB ? E - e0 : EB, len = lengths[s];
        if (len <= 0) continue;
        scan_line(x, x_stride, dt, dt_stride, dt_bias, At, Bm, b_stride, Cm, c_stride, D, z, z_stride, y,
                  y_stride, NULL, reverse ? starts[s] + len - 1 : starts[s], reverse ? -1 : 1, len, e0, ne, E, N);
    }
}

/* Packed lines as above: out_t = silu(bias + sum_k w_k x_{t - (K - 1) + k}) over the line's own
 * frames (causal in the direction it is read: reverse reads x_{t + (K - 1) - k}); out (R, E). */
void isdrama_conv_silu_lines(const float *x, int64_t x_stride, const float *Wt, const float *bias,
                             float *out, const int64_t *starts, const int64_t *lengths, int64_t S,
                             int64_t E, int64_t K, int reverse, int threads) {
    const int64_t nblk = (E + EB - 1) / EB;
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
    for (int64_t idx = 0; idx < S * nblk; ++idx) {
        const int64_t s = idx / nblk, e0 = (idx % nblk) * EB;
        const int64_t ne = E - e0 < EB ? E - e0 : EB, len = lengths[s], step = reverse ? -1 : 1;
        const int64_t row0 = reverse ? starts[s] + len - 1 : starts[s];
        float acc[EB];
        for (int64_t t = 0; t < len; ++t) {
#pragma omp simd
            for (int64_t e = 0; e < ne; ++e) acc[e] = bias[e0 + e];
            for (int64_t k = 0; k < K; ++k) {
                const int64_t u = t - (K - 1) + k; /* the frame read, counted in the direction read */
                if (u < 0) continue;
                const float *xs = x + (row0 + u * step) * x_stride + e0, *w = Wt + k * E + e0;
#pragma omp simd
                for (int64_t e = 0; e < ne; ++e) acc[e] += w[e] * xs[e];
            }
            float *o = out + (row0 + t * step) * E + e0;
#pragma omp simd
            for (int64_t e = 0; e < ne; ++e) o[e] = silu(acc[e]);
        }
    }
}

/* The backward of isdrama_selective_scan (delta given, no gate), given dy (B, L, E) and the hc it wrote: per (line, channel
 * block), chunks in reverse; each chunk's states are recomputed from hc into a buffer, then the
 * adjoint g_t = C_t dy_t + exp(delta_{t+1} A) g_{t+1} runs backwards through it. Writes dx, ddelta
 * (B, L, E) and, per channel block, partial sums over its channels: dBp, dCp (nblk, B, L, N); per
 * line: dAp (B, N, E) (transposed like At), dDp (B, E). The caller sums the partials. */
void isdrama_scan_train_backward(const float *x, const float *delta, const float *At, const float *Bm,
                                 const float *Cm, const float *D, const float *hc, const float *dy,
                                 float *dx, float *ddelta, float *dBp, float *dCp, float *dAp,
                                 float *dDp, int64_t B, int64_t L, int64_t E, int64_t N, int threads) {
    const int64_t nblk = (E + EB - 1) / EB, nck = (L + CK - 1) / CK;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t idx = 0; idx < B * nblk; ++idx) {
        const int64_t b = idx / nblk, blk = idx % nblk, e0 = blk * EB;
        const int64_t ne = E - e0 < EB ? E - e0 : EB;
        float g[N * EB], dAacc[N * EB], hs[(CK + 1) * N * EB];
        float dDacc[EB];
        memset(g, 0, sizeof(float) * N * EB);
        memset(dAacc, 0, sizeof(float) * N * EB);
        memset(dDacc, 0, sizeof(float) * EB);
        for (int64_t c = nck - 1; c >= 0; --c) {
            const int64_t t0 = c * CK, t1 = t0 + CK < L ? t0 + CK : L;
            /* hs[k] = the state before frame t0 + k (k = 0 .. t1 - t0) */
            const float *src = hc + ((b * nck + c) * N) * E + e0;
            for (int64_t n = 0; n < N; ++n) memcpy(hs + n * EB, src + n * E, sizeof(float) * ne);
            for (int64_t t = t0; t < t1; ++t) {
                const int64_t row = b * L + t;
                const float *xt = x + row * E + e0, *dl = delta + row * E + e0, *bt = Bm + row * N;
                const float *prev = hs + (t - t0) * N * EB;
                float *cur = hs + (t - t0 + 1) * N * EB;
                for (int64_t n = 0; n < N; ++n) {
                    const float *a = At + n * E + e0;
                    const float bn = bt[n];
#pragma omp simd
                    for (int64_t e = 0; e < ne; ++e)
                        cur[n * EB + e] = expf(dl[e] * a[e]) * prev[n * EB + e] + dl[e] * xt[e] * bn;
                }
            }
            for (int64_t t = t1 - 1; t >= t0; --t) {
                const int64_t row = b * L + t;
                const float *xt = x + row * E + e0, *dl = delta + row * E + e0, *dyt = dy + row * E + e0;
                const float *bt = Bm + row * N, *ct = Cm + row * N;
                const float *prev = hs + (t - t0) * N * EB, *cur = hs + (t - t0 + 1) * N * EB;
                float *dxt = dx + row * E + e0, *ddt = ddelta + row * E + e0;
                float *dbt = dBp + ((blk * B + b) * L + t) * N, *dct = dCp + ((blk * B + b) * L + t) * N;
                float gx[EB], gd[EB];
#pragma omp simd
                for (int64_t e = 0; e < ne; ++e) {
                    gx[e] = D[e0 + e] * dyt[e];
                    gd[e] = 0.0f;
                    dDacc[e] += dyt[e] * xt[e];
                }
                for (int64_t n = 0; n < N; ++n) {
                    const float *a = At + n * E + e0;
                    const float bn = bt[n], cn = ct[n];
                    float *gn = g + n * EB, *dan = dAacc + n * EB;
                    const float *hp = prev + n * EB, *hc_ = cur + n * EB;
                    float sc = 0.0f, sb = 0.0f;
#pragma omp simd reduction(+ : sc, sb)
                    for (int64_t e = 0; e < ne; ++e) {
                        sc += dyt[e] * hc_[e];                 /* dC_t,n */
                        const float gv = gn[e] + cn * dyt[e];  /* dL/dh_t */
                        const float da = expf(dl[e] * a[e]);
                        const float gdh = gv * da * hp[e];     /* through the decay */
                        gd[e] += gdh * a[e] + gv * xt[e] * bn;
                        gx[e] += gv * dl[e] * bn;
                        sb += gv * dl[e] * xt[e];              /* dB_t,n */
                        dan[e] += gdh * dl[e];
                        gn[e] = gv * da;                       /* to h_{t-1} */
                    }
                    dct[n] = sc;
                    dbt[n] = sb;
                }
#pragma omp simd
                for (int64_t e = 0; e < ne; ++e) {
                    dxt[e] = gx[e];
                    ddt[e] = gd[e];
                }
            }
        }
        float *dA_out = dAp + (b * N) * E + e0;
        for (int64_t n = 0; n < N; ++n) memcpy(dA_out + n * E, dAacc + n * EB, sizeof(float) * ne);
        memcpy(dDp + b * E + e0, dDacc, sizeof(float) * ne);
    }
}
