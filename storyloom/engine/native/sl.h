/* Shared by decode_step.c and quants.c: the structs ctypes mirrors (native/__init__.py) and the
 * GGUF block formats the weights come in (ggml's layouts; see native_interface.md). */
#ifndef SL_H
#define SL_H
#include <stdint.h>
#include <string.h>

enum { T_F32 = 0, T_F16 = 1, T_Q4_0 = 2, T_Q4_1 = 3, T_Q5_0 = 6, T_Q8_0 = 8,
       T_Q4_K = 12, T_Q5_K = 13, T_Q6_K = 14, T_BF16 = 30 };

enum { SL_EXACT = 1,    /* Matrix.flags: multiply fp32 inputs, no 8-bit rounding (slower) */
       SL_TILED = 2 };  /* with SL_EXACT: data in sl_tile's layout of 16-row tiles, not GGUF rows */

typedef struct {
    int32_t type;          /* ggml type id above */
    int32_t rows, cols;
    int32_t flags;         /* 0, or SL_EXACT (the transformers packer: greedy text as the library's), | SL_TILED */
    const void *data;      /* rows x (cols / block) blocks, GGUF layout */
    const float *bias;     /* [rows] fp32 or NULL */
} Matrix;

typedef struct {
    const float *norm1, *norm2;      /* fp32 [dim] */
    const float *q_norm, *k_norm;    /* fp32 [head_dim], or NULL */
    Matrix q, k, v, o, gate, up, down;
} Layer;

typedef struct {
    int32_t layers, dim, intermediate, heads, kv_heads, head_dim, vocab, threads;
    float eps;
    int32_t rope_neox;
    Matrix embed;
    const float *final_norm;
    const float *inv_freq;
    Matrix lm_head;
    const Layer *layer;
} Model;

/* weights per block and bytes per block; 0 for a type this build does not know */
static inline int sl_block(int type) {
    switch (type) {
    case T_F32: case T_F16: case T_BF16: return 1;
    case T_Q4_0: case T_Q4_1: case T_Q5_0: case T_Q8_0: return 32;
    case T_Q4_K: case T_Q5_K: case T_Q6_K: return 256;
    default: return 0;
    }
}

static inline int sl_block_bytes(int type) {
    switch (type) {
    case T_F32: return 4;
    case T_F16: case T_BF16: return 2;
    case T_Q4_0: return 18;
    case T_Q4_1: return 20;
    case T_Q5_0: return 22;
    case T_Q8_0: return 34;
    case T_Q4_K: return 144;
    case T_Q5_K: return 176;
    case T_Q6_K: return 210;
    default: return 0;
    }
}

static inline size_t sl_row_bytes(int type, long cols) {
    return (size_t)(cols / sl_block(type)) * sl_block_bytes(type);
}

static inline uint16_t sl_u16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }

static inline float sl_half(uint16_t h) {  /* exact, any fp16 (inf and NaN included) */
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
    uint32_t bits;
    if (e == 0) {
        if (mant == 0) {
            bits = sign;
        } else {  /* subnormal: normalise */
            int shift = 0;
            uint32_t m = mant;
            while (!(m & 0x400u)) { m <<= 1; shift++; }
            bits = sign | ((uint32_t)(113 - shift) << 23) | ((m & 0x3ffu) << 13);
        }
    } else if (e == 31) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else {
        bits = sign | ((e + 112u) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static inline float sl_bf16(uint16_t b) {
    const uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Q4_K / Q5_K: the 6-bit scale and min of sub-block j (0..7) from the 12 packed bytes */
static inline void sl_scale_min_k4(int j, const uint8_t *q, uint8_t *sc, uint8_t *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

/* quants.c: one row of `cols` weights as fp32, computed exactly as gguf-py's dequantizers do */
void sl_dequant_row(int type, const void *row, long cols, float *dst);
#endif
