/* Fused selective scan without autograd (the Mamba recurrence in one pass, no state tensor in
 * memory): for every line b, channel e and state n,
 *     h_t = exp(delta_t,e A_e,n) h_{t-1} + delta_t,e x_t,e B_t,n,   y_t,e = sum_n C_t,n h_t + D_e x_t,e.
 * Shapes (float32, contiguous): x, delta, y (B, L, E); At (N, E) = A transposed; Bm, Cm (B, L, N);
 * D (E). Work is split over (line, block of 64 channels) with OpenMP; the channel loop is the
 * vector loop (compiled with -ffast-math so gcc calls glibc's vector expf, libmvec).
 * Built and loaded by isdrama/models/blocks/cpu_scan.py. */
#include <stdint.h>
#include <string.h>
#include <math.h>

#define EB 64

void isdrama_selective_scan(const float *x, const float *delta, const float *At, const float *Bm,
                            const float *Cm, const float *D, float *y, int64_t B, int64_t L,
                            int64_t E, int64_t N, int threads) {
    const int64_t nblk = (E + EB - 1) / EB;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t idx = 0; idx < B * nblk; ++idx) {
        const int64_t b = idx / nblk, e0 = (idx % nblk) * EB;
        const int64_t ne = E - e0 < EB ? E - e0 : EB;
        float h[N * EB];
        float acc[EB], dx[EB];
        memset(h, 0, sizeof(float) * N * EB);
        for (int64_t t = 0; t < L; ++t) {
            const int64_t row = b * L + t;
            const float *dt = delta + row * E + e0, *xt = x + row * E + e0;
            const float *bt = Bm + row * N, *ct = Cm + row * N;
#pragma omp simd
            for (int64_t e = 0; e < ne; ++e) {
                acc[e] = 0.0f;
                dx[e] = dt[e] * xt[e];
            }
            for (int64_t n = 0; n < N; ++n) {
                const float *a = At + n * E + e0;
                const float bn = bt[n], cn = ct[n];
                float *hn = h + n * EB;
#pragma omp simd
                for (int64_t e = 0; e < ne; ++e) {
                    const float hv = expf(dt[e] * a[e]) * hn[e] + dx[e] * bn;
                    hn[e] = hv;
                    acc[e] += cn * hv;
                }
            }
            float *yt = y + row * E + e0;
            const float *De = D + e0;
#pragma omp simd
            for (int64_t e = 0; e < ne; ++e) yt[e] = acc[e] + De[e] * xt[e];
        }
    }
}
