/* GGUF blocks to fp32 (and bf16), bit for bit as gguf-py's reference dequantizers compute them.
 *
 * Built without fast-math or fp contraction (native/__init__.py compiles this file on its own
 * flags): `d * q + m` must round twice, as numpy does, for the tests to compare exactly. Used
 * for the embedding row of each token, and by the loaders (sl_dequant, sl_dequant_bf16). */
#include <stdlib.h>

#include "sl.h"

static void q4_k_like(const uint8_t *b, int five, float *y) {
    const float d = sl_half(sl_u16(b)), dmin = sl_half(sl_u16(b + 2));
    const uint8_t *scales = b + 4, *qh = b + 16, *qs = five ? b + 48 : b + 16;
    for (int j = 0; j < 8; j++) {
        uint8_t sc, m;
        sl_scale_min_k4(j, scales, &sc, &m);
        const float dl = d * (float)sc, ml = dmin * (float)m;
        const uint8_t *q = qs + 32 * (j / 2);
        for (int l = 0; l < 32; l++) {
            int v = (q[l] >> (4 * (j & 1))) & 15;
            if (five) v |= ((qh[l] >> j) & 1) << 4;
            y[32 * j + l] = dl * (float)v - ml;
        }
    }
}

void sl_dequant_row(int type, const void *row, long cols, float *y) {
    const uint8_t *p = (const uint8_t *)row;
    const long nb = cols / sl_block(type);
    const int bytes = sl_block_bytes(type);
    switch (type) {
    case T_F32: memcpy(y, row, (size_t)cols * 4); return;
    case T_F16: for (long i = 0; i < cols; i++) y[i] = sl_half(sl_u16(p + 2 * i)); return;
    case T_BF16: for (long i = 0; i < cols; i++) y[i] = sl_bf16(sl_u16(p + 2 * i)); return;
    default: break;
    }
    for (long i = 0; i < nb; i++, p += bytes) {
        float *o = y + i * sl_block(type);
        switch (type) {
        case T_Q4_0: {
            const float d = sl_half(sl_u16(p));
            for (int l = 0; l < 16; l++) {
                o[l] = d * (float)((p[2 + l] & 15) - 8);
                o[l + 16] = d * (float)((p[2 + l] >> 4) - 8);
            }
            break;
        }
        case T_Q4_1: {
            const float d = sl_half(sl_u16(p)), m = sl_half(sl_u16(p + 2));
            for (int l = 0; l < 16; l++) {
                o[l] = d * (float)(p[4 + l] & 15) + m;
                o[l + 16] = d * (float)(p[4 + l] >> 4) + m;
            }
            break;
        }
        case T_Q5_0: {
            const float d = sl_half(sl_u16(p));
            uint32_t qh;
            memcpy(&qh, p + 2, 4);
            for (int l = 0; l < 16; l++) {
                const int lo = (p[6 + l] & 15) | (((qh >> l) & 1) << 4);
                const int hi = (p[6 + l] >> 4) | (((qh >> (l + 16)) & 1) << 4);
                o[l] = d * (float)(lo - 16);
                o[l + 16] = d * (float)(hi - 16);
            }
            break;
        }
        case T_Q8_0: {
            const float d = sl_half(sl_u16(p));
            for (int l = 0; l < 32; l++) o[l] = (float)(int8_t)p[2 + l] * d;
            break;
        }
        case T_Q4_K: q4_k_like(p, 0, o); break;
        case T_Q5_K: q4_k_like(p, 1, o); break;
        case T_Q6_K: {
            const uint8_t *ql = p, *qh = p + 128;
            const int8_t *sc = (const int8_t *)(p + 192);
            const float d = sl_half(sl_u16(p + 208));
            for (int h = 0; h < 2; h++)
                for (int k = 0; k < 4; k++)
                    for (int l = 0; l < 32; l++) {
                        const int lo = (ql[64 * h + 32 * (k & 1) + l] >> (4 * (k >> 1))) & 15;
                        const int hi = (qh[32 * h + l] >> (2 * k)) & 3;
                        const int at = 128 * h + 32 * k + l;
                        o[at] = (d * (float)sc[at / 16]) * (float)((lo | (hi << 4)) - 32);
                    }
            break;
        }
        default: break;
        }
    }
}

void sl_dequant(int type, const void *src, long rows, long cols, float *dst, int threads) {
    if (sl_block(type) == 0 || cols % sl_block(type)) return;
    const size_t stride = sl_row_bytes(type, cols);
    #pragma omp parallel for schedule(static) num_threads(threads)
    for (long r = 0; r < rows; r++) sl_dequant_row(type, (const uint8_t *)src + r * stride, cols, dst + r * cols);
}

static inline uint16_t to_bf16(float f) {  /* round to nearest even, as torch does */
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);  /* NaN stays NaN */
    return (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

void sl_dequant_bf16(int type, const void *src, long rows, long cols, uint16_t *dst, int threads) {
    if (sl_block(type) == 0 || cols % sl_block(type)) return;
    const size_t stride = sl_row_bytes(type, cols);
    #pragma omp parallel num_threads(threads)
    {
        float *tmp = type == T_BF16 ? NULL : (float *)malloc((size_t)cols * sizeof(float));
        #pragma omp for schedule(static)
        for (long r = 0; r < rows; r++) {
            const uint8_t *row = (const uint8_t *)src + r * stride;
            uint16_t *o = dst + r * cols;
            if (type == T_BF16) { memcpy(o, row, (size_t)cols * 2); continue; }
            if (!tmp) continue;  /* out of memory: the rows stay as they were */
            sl_dequant_row(type, row, cols, tmp);
            for (long i = 0; i < cols; i++) o[i] = to_bf16(tmp[i]);
        }
        free(tmp);
    }
}
