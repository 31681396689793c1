/* One decoding step of a Llama-shaped model, all layers in one call (no Python per op).
 *
 * Built once per machine by storyloom.engine.native (gcc -O3 -march=native -fopenmp) and called
 * through ctypes with raw pointers into tensors that Python owns. The KV cache has the layout of
 * storyloom.engine.fast_llama.KVState: [layers][2][batch][kv_heads][capacity][head_dim], fp32, so
 * the torch prefill and this step share it.
 *
 * Weight matrices come in three formats (a row is one output feature, groups run along it):
 *   0  Q4_1: 32 weights per group, w = q * scale + min, q in 0..15, two per byte (the low nibble is
 *      the group's first 16 weights, the high nibble its last 16), as in GGUF's Q4_1
 *   1  Q8_0: 32 weights per group, w = q * scale, q int8, as in GGUF's Q8_0
 *   2  fp32 as it is
 * The arithmetic is fp32 throughout; a model whose weights lie on one of these grids (a GGUF model
 * converted to safetensors) is computed on exactly its own weights.
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__AVX512F__) || defined(__AVX2__) || defined(__F16C__)
#include <immintrin.h>
#endif

#define GROUP 32
#define MAX_COLS 4096  /* the widest matrix input (columns) this build handles; see sl_step */
#ifndef PREFETCH_HINT
#define PREFETCH_HINT 3
#endif
#ifndef PREFETCH_ROWS
#define PREFETCH_ROWS 16
#endif

typedef struct {
    int32_t kind, rows, cols;
    int32_t half_scales;  /* scale and min are fp16 (exact for GGUF's own, which are fp16) */
    const void *q;        /* packed weights */
    const void *scale;    /* [rows][cols / 32] (Q4_1, Q8_0), fp32 or fp16 */
    const void *minv;     /* [rows][cols / 32] (Q4_1) */
} Matrix;

static inline float half_to_float(uint16_t h) {  /* finite values: all a scale can be */
#if defined(__F16C__)
    return _cvtsh_ss(h);
#else
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exponent = (h >> 10) & 0x1fu, mantissa = h & 0x3ffu;
    uint32_t bits;
    if (exponent == 0) {  /* zero or subnormal: mantissa * 2^-24 */
        const float f = (float)mantissa * (1.0f / 16777216.0f);
        memcpy(&bits, &f, 4);
        bits |= sign;
    } else {
        bits = sign | ((exponent + 112u) << 23) | (mantissa << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
#endif
}

/* Group g's scale (or min) of a row whose scales start at p */
static inline __attribute__((always_inline)) float scale_at(const int half, const void *p, int g) {
    return half ? half_to_float(((const uint16_t *)p)[g]) : ((const float *)p)[g];
}

typedef struct {
    const float *norm1, *norm2;
    Matrix qkv, o, gate_up, down;
} Layer;

typedef struct {
    int32_t layers, dim, intermediate, heads, kv_heads, head_dim, vocab, threads;
    float eps;
    int32_t pad;
    const float *embed;       /* [vocab][dim] fp32 */
    const float *final_norm;
    const float *inv_freq;    /* [head_dim / 2] */
    Matrix lm_head;
    const Layer *layer;
} Model;

/* One output row's dot product with one x, per format, for CPUs without AVX-512 (with it, rows()
 * below handles every input of a batch at once). xsum[g] is the sum of x over group g. */
static inline float dot_q4_1(const uint8_t *q, const float *sc, const float *mn, const float *x,
                             const float *xsum, int groups) {
    float low_terms = 0.f;
    for (int g = 0; g < groups; g++) low_terms += mn[g] * xsum[g];
#if defined(__AVX2__)
    const __m128i nibble = _mm_set1_epi8(15);
    __m256 acc = _mm256_setzero_ps();
    for (int g = 0; g < groups; g++) {
        const __m128i raw = _mm_loadu_si128((const __m128i *)(q + g * 16));
        const __m128i lo = _mm_and_si128(raw, nibble), hi = _mm_and_si128(_mm_srli_epi16(raw, 4), nibble);
        const float *xg = x + g * 32;
        __m256 s = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo)), _mm256_loadu_ps(xg));
        s = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8))), _mm256_loadu_ps(xg + 8), s);
        s = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi)), _mm256_loadu_ps(xg + 16), s);
        s = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8))), _mm256_loadu_ps(xg + 24), s);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(sc[g]), s, acc);
    }
    __m128 r = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    r = _mm_hadd_ps(r, r);
    r = _mm_hadd_ps(r, r);
    return _mm_cvtss_f32(r) + low_terms;
#else
    float total = 0.f;
    for (int g = 0; g < groups; g++) {
        const uint8_t *qg = q + g * 16;
        const float *xg = x + g * 32;
        float s = 0.f;
        for (int j = 0; j < 16; j++) s += (float)(qg[j] & 15) * xg[j] + (float)(qg[j] >> 4) * xg[j + 16];
        total += sc[g] * s;
    }
    return total + low_terms;
#endif
}

static inline float dot_q8_0(const int8_t *q, const float *sc, const float *x, int groups) {
    float total = 0.f;
    for (int g = 0; g < groups; g++) {
        const int8_t *qg = q + g * 32;
        const float *xg = x + g * 32;
        float s = 0.f;
        for (int j = 0; j < 32; j++) s += (float)qg[j] * xg[j];
        total += sc[g] * s;
    }
    return total;
}

static inline float dot_f32(const float *w, const float *x, int cols) {
    float s = 0.f;
    for (int j = 0; j < cols; j++) s += w[j] * x[j];
    return s;
}

#if defined(__AVX512F__)
/* One row against B inputs at once: each group is unpacked (and scaled) once and used B times, so
 * a batch of candidates costs little more than one. B is a constant at every call (see rows()). */
static inline __attribute__((always_inline)) void rows_q4_1(const int B, const int HALF, const uint8_t *q,
        const void *sc, const void *mn, const float *x, int cols, int groups, float *out) {
    const __m128i nibble = _mm_set1_epi8(15);
    __m512 acc[8];
    for (int b = 0; b < B; b++) acc[b] = _mm512_setzero_ps();
    for (int g = 0; g < groups; g++) {
        const __m128i raw = _mm_loadu_si128((const __m128i *)(q + g * 16));
        const __m512 scale = _mm512_set1_ps(scale_at(HALF, sc, g)), low = _mm512_set1_ps(scale_at(HALF, mn, g));
        /* the group's 32 weights themselves: q * scale + min */
        const __m512 lo = _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_and_si128(raw, nibble))), low);
        const __m512 hi = _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(
            _mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(raw, 4), nibble))), low);
        for (int b = 0; b < B; b++) {
            const float *xg = x + (size_t)b * cols + g * 32;
            acc[b] = _mm512_fmadd_ps(lo, _mm512_loadu_ps(xg), acc[b]);
            acc[b] = _mm512_fmadd_ps(hi, _mm512_loadu_ps(xg + 16), acc[b]);
        }
    }
    for (int b = 0; b < B; b++) out[b] = _mm512_reduce_add_ps(acc[b]);
}

static inline __attribute__((always_inline)) void rows_q8_0(const int B, const int HALF, const int8_t *q,
        const void *sc, const float *x, int cols, int groups, float *out) {
    __m512 acc[8];
    for (int b = 0; b < B; b++) acc[b] = _mm512_setzero_ps();
    for (int g = 0; g < groups; g++) {
        const __m256i raw = _mm256_loadu_si256((const __m256i *)(q + g * 32));
        const __m512 scale = _mm512_set1_ps(scale_at(HALF, sc, g));
        const __m512 a = _mm512_mul_ps(scale, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_castsi256_si128(raw))));
        const __m512 c = _mm512_mul_ps(scale, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_extracti128_si256(raw, 1))));
        for (int b = 0; b < B; b++) {
            const float *xg = x + (size_t)b * cols + g * 32;
            acc[b] = _mm512_fmadd_ps(a, _mm512_loadu_ps(xg), acc[b]);
            acc[b] = _mm512_fmadd_ps(c, _mm512_loadu_ps(xg + 16), acc[b]);
        }
    }
    for (int b = 0; b < B; b++) out[b] = _mm512_reduce_add_ps(acc[b]);
}

#define BATCH_CASES(CALL, H) \
    switch (batch) { case 1: CALL(1, H); break; case 2: CALL(2, H); break; case 3: CALL(3, H); break; \
                     case 4: CALL(4, H); break; case 5: CALL(5, H); break; case 6: CALL(6, H); break; \
                     case 7: CALL(7, H); break; default: CALL(8, H); break; }
#define ROWS_CASES(CALL) if (m->half_scales) { BATCH_CASES(CALL, 1) } else { BATCH_CASES(CALL, 0) }

/* out[b] = row r of m times x[b], for every input b */
static void rows(const Matrix *m, int r, const float *x, int batch, const float *xsum, float *out) {
    (void)xsum;  /* the min term is folded into the weights here */
    const int cols = m->cols, groups = cols / GROUP;
    if (m->kind == 0) {
        const uint8_t *q = (const uint8_t *)m->q + (size_t)r * (cols / 2);
        const size_t at = (size_t)r * groups * (m->half_scales ? 2 : 4);
        const char *sc = (const char *)m->scale + at, *mn = (const char *)m->minv + at;
#define Q4(B, H) rows_q4_1(B, H, q, sc, mn, x, cols, groups, out)
        ROWS_CASES(Q4)
#undef Q4
    } else if (m->kind == 1) {
        const int8_t *q = (const int8_t *)m->q + (size_t)r * cols;
        const char *sc = (const char *)m->scale + (size_t)r * groups * (m->half_scales ? 2 : 4);
#define Q8(B, H) rows_q8_0(B, H, q, sc, x, cols, groups, out)
        ROWS_CASES(Q8)
#undef Q8
    } else {
        for (int b = 0; b < batch; b++) out[b] = dot_f32((const float *)m->q + (size_t)r * cols, x + (size_t)b * cols, cols);
    }
}
#else
static void rows(const Matrix *m, int r, const float *x, int batch, const float *xsum, float *out) {
    const int cols = m->cols, groups = cols / GROUP;
    float sc[MAX_COLS / GROUP], mn[MAX_COLS / GROUP];  /* this row's scales as fp32 */
    if (m->kind != 2) {
        const size_t at = (size_t)r * groups * (m->half_scales ? 2 : 4);
        for (int g = 0; g < groups; g++) {
            sc[g] = scale_at(m->half_scales, (const char *)m->scale + at, g);
            mn[g] = m->kind == 0 ? scale_at(m->half_scales, (const char *)m->minv + at, g) : 0.f;
        }
    }
    for (int b = 0; b < batch; b++) {
        if (m->kind == 0)
            out[b] = dot_q4_1((const uint8_t *)m->q + (size_t)r * (cols / 2), sc, mn, x + (size_t)b * cols,
                              xsum + b * groups, groups);
        else if (m->kind == 1)
            out[b] = dot_q8_0((const int8_t *)m->q + (size_t)r * cols, sc, x + (size_t)b * cols, groups);
        else
            out[b] = dot_f32((const float *)m->q + (size_t)r * cols, x + (size_t)b * cols, cols);
    }
}
#endif

/* y[b][rows] (+)= W x[b] for `batch` inputs of W's `cols` */
static void matvec(const Matrix *m, const float *x, int batch, float *y, int accumulate, int threads) {
    const int rows_n = m->rows, cols = m->cols, groups = cols / GROUP;
    float xsum[8 * MAX_COLS / GROUP];  /* per input, per group: the sum of x (Q4_1's min term) */
#if !defined(__AVX512F__)
    if (m->kind == 0) {
        for (int b = 0; b < batch; b++)
            for (int g = 0; g < groups; g++) {
                float s = 0.f;
                for (int j = 0; j < GROUP; j++) s += x[b * cols + g * GROUP + j];
                xsum[b * groups + g] = s;
            }
    }
#endif
    const size_t row_bytes = m->kind == 0 ? (size_t)cols / 2 : m->kind == 1 ? (size_t)cols : (size_t)cols * 4;
    #pragma omp parallel for schedule(static) num_threads(threads)
    for (int r = 0; r < rows_n; r++) {
        /* Stream the weights ahead of use: the hardware prefetcher alone leaves the loads waiting. */
#if PREFETCH_ROWS > 0
        if (r + PREFETCH_ROWS < rows_n) {
            const char *next = (const char *)m->q + (size_t)(r + PREFETCH_ROWS) * row_bytes;
            for (size_t at = 0; at < row_bytes; at += 64) __builtin_prefetch(next + at, 0, PREFETCH_HINT);
            const size_t at = (size_t)(r + PREFETCH_ROWS) * groups * (m->half_scales ? 2 : 4);
            if (m->kind != 2) __builtin_prefetch((const char *)m->scale + at, 0, 0);
            if (m->kind == 0) __builtin_prefetch((const char *)m->minv + at, 0, 0);
        }
#endif
        float v[8];
        rows(m, r, x, batch, xsum, v);
        for (int b = 0; b < batch; b++) {
            if (accumulate) y[(size_t)b * rows_n + r] += v[b];
            else y[(size_t)b * rows_n + r] = v[b];
        }
    }
}

/* e^x to within ~2 ulp (Cephes' polynomial), written so that loops around it vectorize; libm's
 * expf is a call per element. */
static inline float exp_approx(float x) {
    x = __builtin_fminf(__builtin_fmaxf(x, -87.0f), 88.0f);
    const float t = x * 1.44269504088896341f;
    const int n = (int)(t + __builtin_copysignf(0.5f, t));
    const float r = (x - (float)n * 0.693359375f) + (float)n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    const int32_t bits = (int32_t)((uint32_t)(n + 127) << 23);
    float scale;
    memcpy(&scale, &bits, 4);
    return p * scale;
}

static void rms_norm(const float *x, const float *w, int dim, float eps, float *out) {
    float ss = 0.f;
    for (int i = 0; i < dim; i++) ss += x[i] * x[i];
    const float inv = 1.0f / sqrtf(ss / dim + eps);
    for (int i = 0; i < dim; i++) out[i] = w[i] * (x[i] * inv);
}

/* rotate_half convention: element i pairs with i + half */
static void rope(float *v, const float *cs, const float *sn, int half) {
    for (int i = 0; i < half; i++) {
        const float a = v[i], b = v[i + half];
        v[i] = a * cs[i] - b * sn[i];
        v[i + half] = b * cs[i] + a * sn[i];
    }
}

/* Scratch needs scratch_floats(model, batch, capacity) floats. */
long sl_scratch_floats(const Model *m, int batch, int capacity) {
    const long qkv = (long)(m->heads + 2 * m->kv_heads) * m->head_dim;
    const long widest = m->intermediate > m->dim ? m->intermediate : m->dim;
    return (long)batch * (m->dim + widest + qkv + (long)m->heads * m->head_dim + 2L * m->intermediate)
         + (long)m->heads * batch * capacity;
}

/* tokens[batch] at position `pos` (every row at the same position); logits[batch][vocab].
 * Returns 0, or -1 when a size is beyond what this build handles. */
int sl_step(const Model *m, const int64_t *tokens, int batch, int pos, float *cache, int capacity,
            float *logits, float *scratch) {
    const int dim = m->dim, hd = m->head_dim, half = hd / 2, H = m->heads, KV = m->kv_heads;
    const int inter = m->intermediate, qkv_n = (H + 2 * KV) * hd, per_kv = H / KV;
    /* rows() and matvec() keep per-group scales on the stack for up to MAX_COLS columns: the
     * o-projection's columns are heads x head_dim, which may exceed dim (e.g. 64 x 128). */
    if (batch > 8 || dim > MAX_COLS || inter > MAX_COLS || H * hd > MAX_COLS || hd > 512 || KV <= 0
        || H % KV != 0 || pos >= capacity) return -1;
    float *h = scratch;                       /* [batch][dim] residual stream */
    float *xn = h + batch * dim;              /* [batch][max(dim, inter)] normed input / activation */
    float *qkv = xn + batch * (inter > dim ? inter : dim);
    float *att = qkv + batch * qkv_n;         /* [batch][H * hd] */
    float *gu = att + batch * H * hd;         /* [batch][2 * inter] */
    float *probs = gu + batch * 2 * inter;    /* [H][batch][capacity] */
    float cs[256], sn[256];
    for (int i = 0; i < half; i++) {
        const float f = (float)pos * m->inv_freq[i];
        cs[i] = cosf(f);
        sn[i] = sinf(f);
    }
    for (int b = 0; b < batch; b++) memcpy(h + b * dim, m->embed + (size_t)tokens[b] * dim, dim * sizeof(float));
    const float scale = 1.0f / sqrtf((float)hd);
    const size_t row_stride = (size_t)capacity * hd;             /* one kv head */
    const size_t kind_stride = (size_t)batch * KV * row_stride;  /* keys -> values */
    for (int l = 0; l < m->layers; l++) {
        const Layer *L = &m->layer[l];
        float *keys = cache + (size_t)l * 2 * kind_stride, *values = keys + kind_stride;
        for (int b = 0; b < batch; b++) rms_norm(h + b * dim, L->norm1, dim, m->eps, xn + b * dim);
        matvec(&L->qkv, xn, batch, qkv, 0, m->threads);
        for (int b = 0; b < batch; b++) {
            float *row = qkv + b * qkv_n;
            for (int k = 0; k < H + KV; k++) rope(row + k * hd, cs, sn, half);
            for (int k = 0; k < KV; k++) {
                const size_t at = ((size_t)b * KV + k) * row_stride + (size_t)pos * hd;
                memcpy(keys + at, row + (H + k) * hd, hd * sizeof(float));
                memcpy(values + at, row + (H + KV + k) * hd, hd * sizeof(float));
            }
        }
        #pragma omp parallel for collapse(2) schedule(static) num_threads(m->threads)
        for (int k = 0; k < H; k++)
            for (int b = 0; b < batch; b++) {
                const float *q = qkv + b * qkv_n + k * hd;
                const size_t base = ((size_t)b * KV + k / per_kv) * row_stride;
                const float *kk = keys + base, *vv = values + base;
                float *p = probs + ((size_t)k * batch + b) * capacity;
                float top = -FLT_MAX;
                for (int t = 0; t <= pos; t++) {
                    float s = 0.f;
                    for (int i = 0; i < hd; i++) s += q[i] * kk[(size_t)t * hd + i];
                    p[t] = s * scale;
                    if (p[t] > top) top = p[t];
                }
                float total = 0.f;
                #pragma omp simd reduction(+ : total)
                for (int t = 0; t <= pos; t++) {
                    p[t] = exp_approx(p[t] - top);
                    total += p[t];
                }
                float *out = att + b * H * hd + k * hd;
                for (int i = 0; i < hd; i++) out[i] = 0.f;
                for (int t = 0; t <= pos; t++) {
                    const float w = p[t] / total;
                    for (int i = 0; i < hd; i++) out[i] += w * vv[(size_t)t * hd + i];
                }
            }
        matvec(&L->o, att, batch, h, 1, m->threads);
        for (int b = 0; b < batch; b++) rms_norm(h + b * dim, L->norm2, dim, m->eps, xn + b * dim);
        matvec(&L->gate_up, xn, batch, gu, 0, m->threads);
        for (int b = 0; b < batch; b++) {
            const float *g = gu + b * 2 * inter, *u = g + inter;
            float *a = xn + b * inter;
            #pragma omp simd
            for (int i = 0; i < inter; i++) a[i] = g[i] / (1.0f + exp_approx(-g[i])) * u[i];
        }
        matvec(&L->down, xn, batch, h, 1, m->threads);
    }
    for (int b = 0; b < batch; b++) rms_norm(h + b * dim, m->final_norm, dim, m->eps, xn + b * dim);
    matvec(&m->lm_head, xn, batch, logits, 0, m->threads);
    return 0;
}

/* -- helpers for a long prompt's prefill ---------------------------------------------------
 * The prompt's matmuls and attention run in torch (bf16 on the CPU's matrix units); these do the
 * elementwise work between them in one pass each, in place of a dozen torch ops per layer
 * (SiLU and the gate product are fused into oneDNN's matmuls instead). */
static inline float bf16_to_f32(uint16_t b) {
    const uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint16_t f32_to_bf16(float f) {  /* round to nearest even, as torch does */
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

/* out[t] = bf16(rms_norm(h[t]) * w) */
void sl_norm_bf16(const float *h, const float *w, int rows, int dim, float eps, uint16_t *out, int threads) {
    #pragma omp parallel for schedule(static) num_threads(threads)
    for (int t = 0; t < rows; t++) {
        const float *x = h + (size_t)t * dim;
        float ss = 0.f;
        for (int i = 0; i < dim; i++) ss += x[i] * x[i];
        const float inv = 1.0f / sqrtf(ss / dim + eps);
        uint16_t *o = out + (size_t)t * dim;
        for (int i = 0; i < dim; i++) o[i] = f32_to_bf16(w[i] * (x[i] * inv));
    }
}

/* h += bf16 y */
void sl_add_bf16(float *h, const uint16_t *y, long n, int threads) {
    #pragma omp parallel for schedule(static) num_threads(threads)
    for (long i = 0; i < n; i++) h[i] += bf16_to_f32(y[i]);
}

/* qkv[t] = [q heads | k heads | v heads] (bf16) for positions start..start+rows: rotate q and k
 * (cos/sin tables [rows][head_dim/2]), write rotated k and v to this layer's fp32 cache (batch 0,
 * [kv_heads][capacity][head_dim]) and q, k, v in bf16 to their own [rows][heads][head_dim] arrays. */
void sl_rope_split(const uint16_t *qkv, int rows, int start, const float *cos_t, const float *sin_t,
                   int heads, int kv_heads, int hd, uint16_t *q_out, uint16_t *k_out, uint16_t *v_out,
                   float *kcache, float *vcache, int capacity, int threads) {
    const int half = hd / 2, width = (heads + 2 * kv_heads) * hd;
    #pragma omp parallel for schedule(static) num_threads(threads)
    for (int t = 0; t < rows; t++) {
        const uint16_t *row = qkv + (size_t)t * width;
        const float *cs = cos_t + (size_t)t * half, *sn = sin_t + (size_t)t * half;
        float v[512];
        for (int k = 0; k < heads + kv_heads; k++) {
            const uint16_t *src = row + k * hd;
            for (int i = 0; i < hd; i++) v[i] = bf16_to_f32(src[i]);
            rope(v, cs, sn, half);
            if (k < heads) {
                uint16_t *dst = q_out + ((size_t)t * heads + k) * hd;
                for (int i = 0; i < hd; i++) dst[i] = f32_to_bf16(v[i]);
            } else {
                const int kv = k - heads;
                uint16_t *dst = k_out + ((size_t)t * kv_heads + kv) * hd;
                for (int i = 0; i < hd; i++) dst[i] = f32_to_bf16(v[i]);
                memcpy(kcache + ((size_t)kv * capacity + start + t) * hd, v, hd * sizeof(float));
            }
        }
        for (int kv = 0; kv < kv_heads; kv++) {
            const uint16_t *src = row + (heads + kv_heads + kv) * hd;
            memcpy(v_out + ((size_t)t * kv_heads + kv) * hd, src, hd * sizeof(uint16_t));
            float *dst = vcache + ((size_t)kv * capacity + start + t) * hd;
            for (int i = 0; i < hd; i++) dst[i] = bf16_to_f32(src[i]);
        }
    }
}

/* logits[b] = lm_head(rms_norm(h[b]) * final_norm) for `batch` rows of h */
void sl_head(const Model *m, const float *h, int batch, float *logits) {
    float xn[8 * MAX_COLS];
    if (m->dim > MAX_COLS) return;  /* NativeLlama.build refuses such models; never overflow */
    for (int b = 0; b < batch && b < 8; b++) rms_norm(h + (size_t)b * m->dim, m->final_norm, m->dim, m->eps, xn + b * m->dim);
    matvec(&m->lm_head, xn, batch < 8 ? batch : 8, logits, 0, m->threads);
}
