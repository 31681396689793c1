/* The sampler's pass over the vocabulary, for engine/logits.py: each row's top-k after the bans,
 * the repetition penalty and the temperature.
 *
 * In torch these were a copy of the logits, a gather and a scatter, a division and a top-k per
 * token: half a millisecond at 4 rows of the default model's 49,152, most of it the passes over
 * memory and the ops' dispatch. (The drawn tokens' log-probs are decode_step.c's sl_logprobs: a
 * log-sum-exp wants its vectorised exp.) Built without fast-math or fp
 * contraction (native/__init__.py compiles it on quants.c's flags): the penalty and the
 * temperature divide and multiply in fp32 as torch does, so the k values are torch's bit for bit
 * and a seeded draw is the same. */
#include <math.h>
#include <stdint.h>
#include <string.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

/* a before b: the larger value, and of equal ones the lower id (torch leaves that order open) */
static inline int before(float a, int64_t ia, float b, int64_t ib) { return a > b || (a == b && ia < ib); }

/* A heap of the k best so far with the worst on top (v[0]). */
static void sift(float *v, int64_t *id, int k, int i) {
    for (;;) {
        int worst = i;
        const int l = 2 * i + 1, r = l + 1;
        if (l < k && before(v[worst], id[worst], v[l], id[l])) worst = l;
        if (r < k && before(v[worst], id[worst], v[r], id[r])) worst = r;
        if (worst == i) return;
        const float tv = v[i]; v[i] = v[worst]; v[worst] = tv;
        const int64_t ti = id[i]; id[i] = id[worst]; id[worst] = ti;
        i = worst;
    }
}

/* For each of `batch` rows of logits (row b at logits + b * stride, left as they are): the row
 * with the tokens in banned[b * per_row ..] (-1: none) at -inf, then each token of
 * history[b * hist_stride .. + hist_len] scaled by the CTRL penalty (x / penalty above 0, else
 * x * penalty, once however often it occurs), divided by the temperature; its k largest values
 * best first into vals[b * k ..] and their ids into ids[b * k ..]. `work` holds `vocab` floats.
 * Returns 0, or -1 when the sizes make no sense. */
int sl_top_k(const float *logits, long stride, int batch, int vocab, const int64_t *banned, int per_row,
             const int64_t *history, long hist_stride, int hist_len, float penalty, float temperature, int k,
             float *work, float *vals, int64_t *ids) {
    if (batch < 1 || vocab < 1 || k < 1 || k > vocab || per_row < 0 || hist_len < 0 || !(temperature > 0.f))
        return -1;
    for (int b = 0; b < batch; b++) {
        const float *row = logits + (size_t)b * stride;
        memcpy(work, row, (size_t)vocab * sizeof(float));
        for (int j = 0; j < per_row; j++) {
            const int64_t t = banned[(size_t)b * per_row + j];
            if (t >= 0 && t < vocab) work[t] = -INFINITY;
        }
        if (penalty != 1.0f) {
            const int64_t *seen = history + (size_t)b * hist_stride;
            for (int j = 0; j < hist_len; j++) {
                const int64_t t = seen[j];
                if (t < 0 || t >= vocab) return -1;
                /* from the banned row's value, not one already scaled: a repeat scales once */
                const float x = work[t] == -INFINITY ? -INFINITY : row[t];
                work[t] = x > 0.f ? x / penalty : x * penalty;
            }
        }
        float *v = vals + (size_t)b * k;
        int64_t *id = ids + (size_t)b * k;
        for (int t = 0; t < k; t++) { v[t] = work[t]; id[t] = t; }
        for (int i = k / 2 - 1; i >= 0; i--) sift(v, id, k, i);
        /* ids rise: an equal value comes after the one held, so only a larger one gets in */
        int t = k;
#if defined(__AVX512F__)
        for (; t + 16 <= vocab; t += 16) {  /* 16 at a time against the worst held, nearly all below it */
            __mmask16 above = _mm512_cmp_ps_mask(_mm512_loadu_ps(work + t), _mm512_set1_ps(v[0]), _CMP_GT_OQ);
            while (above) {
                const int i = t + __builtin_ctz(above);
                above &= above - 1;
                if (work[i] > v[0]) { v[0] = work[i]; id[0] = i; sift(v, id, k, 0); }
            }
        }
#endif
        for (; t < vocab; t++)
            if (work[t] > v[0]) { v[0] = work[t]; id[0] = t; sift(v, id, k, 0); }
        for (int n = k - 1; n > 0; n--) {  /* heap order to best first: the worst goes last */
            const float tv = v[0]; v[0] = v[n]; v[n] = tv;
            const int64_t ti = id[0]; id[0] = id[n]; id[n] = ti;
            sift(v, id, n, 0);
        }
        for (int t = 0; t < k; t++) v[t] = v[t] / temperature;
    }
    return 0;
}
