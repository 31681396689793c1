/* Cross-check of the kernels on another architecture: random blocks (a fixed LCG), sl_dequant,
 * sl_matmul against a double-precision matmul on the dequantized weights; prints one line per
 * type with a checksum of the dequantized values (to compare across machines) and the error. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "sl.h"
void sl_dequant(int type, const void *src, long rows, long cols, float *dst, int threads);
void sl_matmul(const Matrix *w, const float *x, int n, float *y, int threads);
const char *sl_isa(void);
static uint64_t st = 88172645463325252ull;
static uint32_t rnd(void) { st ^= st << 13; st ^= st >> 7; st ^= st << 17; return (uint32_t)st; }
static uint16_t f2h(float f) { /* normal range only */
    uint32_t u; memcpy(&u, &f, 4);
    uint32_t sign = (u >> 16) & 0x8000, e = (u >> 23) & 0xff, m = u & 0x7fffff;
    return (uint16_t)(sign | ((e - 112) << 10) | (m >> 13));
}
int main(void) {
    int types[] = {T_F32, T_F16, T_BF16, T_Q4_0, T_Q4_1, T_Q5_0, T_Q8_0, T_Q4_K, T_Q5_K, T_Q6_K};
    float scale[] = {0, 0, 0, 8e-3, 8e-3, 4e-3, 8e-4, 3e-4, 1.5e-4, 6e-5};
    const int rows = 37, cols = 512, n = 5;
    printf("isa %s\n", sl_isa());
    int bad = 0;
    for (int t = 0; t < 10; t++) {
        const int type = types[t];
        const size_t rb = sl_row_bytes(type, cols), nb = rows * (cols / sl_block(type));
        uint8_t *data = malloc(rows * rb);
        for (size_t i = 0; i < rows * rb; i++) data[i] = (uint8_t)rnd();
        if (type == T_F32 || type == T_F16 || type == T_BF16) {
            for (long i = 0; i < (long)rows * cols; i++) {
                float v = ((rnd() % 20001) / 10000.0f - 1.0f) * 0.05f;
                if (type == T_F32) memcpy(data + 4 * i, &v, 4);
                else { uint32_t u; memcpy(&u, &v, 4); uint16_t h = type == T_F16 ? f2h(v) : (uint16_t)(u >> 16); if (v == 0) h = 0; memcpy(data + 2 * i, &h, 2); }
            }
        } else {
            const int bytes = sl_block_bytes(type);
            int offs[2] = {0, 2}, count = (type == T_Q4_1 || type == T_Q4_K || type == T_Q5_K) ? 2 : 1;
            if (type == T_Q6_K) offs[0] = 208;
            for (size_t b = 0; b < nb; b++)
                for (int k = 0; k < count; k++) {
                    uint16_t h = f2h(scale[t] * (0.2f + 0.8f * (rnd() % 1000) / 1000.0f));
                    memcpy(data + b * bytes + offs[k], &h, 2);
                }
        }
        float *w = malloc(sizeof(float) * rows * cols), *x = malloc(sizeof(float) * n * cols), *y = malloc(sizeof(float) * n * rows);
        sl_dequant(type, data, rows, cols, w, 1);
        uint64_t sum = 1469598103934665603ull;
        for (long i = 0; i < (long)rows * cols; i++) { uint32_t u; memcpy(&u, w + i, 4); sum = (sum ^ u) * 1099511628211ull; }
        for (int i = 0; i < n * cols; i++) x[i] = (rnd() % 20001) / 10000.0f - 1.0f;
        Matrix m = {type, rows, cols, 0, data, NULL};
        sl_matmul(&m, x, n, y, 2);
        double err = 0, top = 0;
        for (int b = 0; b < n; b++)
            for (int r = 0; r < rows; r++) {
                double ref = 0;
                for (int c = 0; c < cols; c++) ref += (double)x[b * cols + c] * w[r * cols + c];
                err = fmax(err, fabs(ref - y[b * rows + r]));
                top = fmax(top, fabs(ref));
            }
        uint64_t ysum = 1469598103934665603ull;
        for (int i = 0; i < n * rows; i++) { uint32_t u; memcpy(&u, y + i, 4); ysum = (ysum ^ u) * 1099511628211ull; }
        const double tol = (type == T_F32 || type == T_F16 || type == T_BF16) ? 1e-4 : 0.03;
        const int ok = err <= tol * top;
        bad += !ok;
        printf("type %2d dequant-fnv %016llx matmul-fnv %016llx matmul-rel-err %.2e %s\n", type,
               (unsigned long long)sum, (unsigned long long)ysum, err / top, ok ? "ok" : "BAD");
        free(data); free(w); free(x); free(y);
    }
    return bad != 0;
}
