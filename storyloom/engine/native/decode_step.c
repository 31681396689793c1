/* One decoding step of a Llama-shaped model (llama, mistral, qwen2, qwen3), all layers in one call.
 *
 * Weights are GGUF blocks read where they lie (sl.h lists the types). As llama.cpp does, each
 * quantized matrix's input is rounded once to 8 bits (a float scale per 32 values for the
 * 32-weight blocks; per 256, as llama.cpp's Q8_K, for the K-quants, so a super-block sums in
 * integers) and the dot products are integer: VNNI `vpdpbusd`/`vpdpwssd` in the avx512vnni build,
 * `maddubs`/`madd` in the avx2 build, plain C in the generic one. native/__init__.py compiles this
 * file once per level and loads the best one the CPU reports (never one it cannot run);
 * sl_cpu_level() tells it which that is.
 *
 * Every weight block is unpacked to bytes once and used for every input of the batch (row kernels
 * are specialised on the batch, 1..8), and what each input costs per block is kept to its integer
 * products: unsigned formats (Q4_1, Q4_K, Q5_K) add their min term from the input's sums, and in
 * the avx512vnni build Q6_K and Q8_0 go in unsigned too, their offsets taken off from the input's
 * sums, and the weights are prefetched 16 KB ahead (elsewhere the signed formats use the sign
 * trick, per input). F32, F16, BF16 matrices, and Q4_1/Q8_0 ones flagged SL_EXACT (the
 * transformers packer's), multiply fp32 inputs; in the AVX2 and AVX-512 builds those are repacked
 * at load into tiles of 16 rows (sl_tile, SL_TILED), where the scales factor out of each block's sum.
 * Matmuls and attention run on a small thread pool (below) that never spins long.
 *
 * The KV cache has the layout of storyloom.engine.fast_llama.KVState:
 * [layers][2][batch][kv_heads][capacity][head_dim], fp32, so a torch prefill and this step share it.
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sl.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif
#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#define SL_HWCAP_ASIMDDP (1UL << 20)  /* asm/hwcap.h's HWCAP_ASIMDDP */
#elif defined(__aarch64__) && defined(__APPLE__)
#include <sys/sysctl.h>
#endif

#if defined(__AVX512VNNI__) && defined(__AVX512VL__) && defined(__AVX2__) && defined(__FMA__)
#define SL_SIMD 1
#define SL_ISA "avx512vnni"
static inline __m256i dot_us(__m256i u, __m256i s) { return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s); }
#elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define SL_SIMD 1
#define SL_ISA "avx2"
static inline __m256i dot_us(__m256i u, __m256i s) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}
#else
#define SL_SIMD 0
#if defined(__aarch64__) && defined(__ARM_NEON)
#include <arm_neon.h>
/* the plain C kernels with their integer dot products in NEON: `vdotq_s32` in the dotprod build
 * (ARMv8.2), widening multiplies and pairwise adds in the baseline one (every aarch64 has them) */
#if defined(__ARM_FEATURE_DOTPROD)
#define SL_ISA "neon-dotprod"
#else
#define SL_ISA "neon"
#endif
#else
#define SL_ISA "generic"
#endif
#endif

#define MAXB 8  /* inputs per row pass; larger batches go in slices */

const char *sl_isa(void) { return SL_ISA; }

/* The best kernel level this CPU (and OS) can run: 2 avx512vnni, 1 avx2, 0 generic. Asked of the
 * generic build, which runs anywhere, before a faster build is loaded. */
int sl_cpu_level(void) {
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    const int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")
                     && __builtin_cpu_supports("f16c");
    if (avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
        && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq")
        && __builtin_cpu_supports("avx512vnni"))
        return 2;
    return avx2 ? 1 : 0;
#elif defined(__aarch64__) && defined(__linux__)
    return (getauxval(AT_HWCAP) & SL_HWCAP_ASIMDDP) ? 1 : 0;  /* 1: dotprod */
#elif defined(__aarch64__) && defined(__APPLE__)
    int dot = 0;
    size_t size = sizeof dot;
    return sysctlbyname("hw.optional.arm.FEAT_DotProd", &dot, &size, NULL, 0) == 0 && dot ? 1 : 0;
#else
    return 0;
#endif
}

/* An input batch quantized for the integer kernels, in one or both of two layouts:
 * per 32 values (for the 32-weight blocks): int8 q, scale d (x ~ d * q), s = d * sum(q);
 * per 256 (K-quants, as llama.cpp's Q8_K): int8 k, scale kd per 256, ks = sum of each 32 of k
 * (their min terms), kmf = kd * ks as floats (the same, scaled: one multiply-add per super-block
 * for all eight mins), k16 = sum of each 16 of k (Q6_K's offset of 32, folded into its integer
 * sums), so a whole super-block accumulates in integers. */
typedef struct {
    int8_t *q;    /* [batch][cols] */
    float *d;     /* [batch][cols / 32] */
    float *s;     /* [batch][cols / 32] */
    int8_t *k;    /* [batch][cols] */
    float *kd;    /* [batch][cols / 256] */
    int16_t *ks;  /* [batch][cols / 32] */
    float *kmf;   /* [batch][cols / 32] */
    int16_t *k16; /* [batch][cols / 16] */
    float *xs;    /* [batch][cols / 32] the fp32 inputs' sums (SL_TILED Q4_1's min terms) */
    int cols;
} Act;

enum { NEED32 = 1, NEED256 = 2, NEEDSUMS = 4 };

static void quantize_act(const float *x, int batch, int cols, Act *a, int need) {
    const int chunks = cols / 32;
    a->cols = cols;
    for (int b = 0; b < batch; b++) {
        const float *row = x + (size_t)b * cols;
        if (need & NEEDSUMS)
            for (int c = 0; c < chunks; c++) {
                float sum = 0.f;
                for (int j = 0; j < 32; j++) sum += row[32 * c + j];
                a->xs[b * chunks + c] = sum;
            }
        if (need & NEED32)
            for (int c = 0; c < chunks; c++) {
                const float *v = row + 32 * c;
                float amax = 0.f;
                for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(v[j]));
                const float d = amax / 127.f, id = d > 0.f ? 1.f / d : 0.f;
                int8_t *q = a->q + (size_t)b * cols + 32 * c;
                int sum = 0;
                for (int j = 0; j < 32; j++) {
                    const int n = (int)nearbyintf(v[j] * id);
                    q[j] = (int8_t)n;
                    sum += n;
                }
                a->d[b * chunks + c] = d;
                a->s[b * chunks + c] = d * (float)sum;
            }
        if (need & NEED256)
            for (int c = 0; c < cols / 256; c++) {
                const float *v = row + 256 * c;
                float amax = 0.f;
                for (int j = 0; j < 256; j++) amax = fmaxf(amax, fabsf(v[j]));
                const float d = amax / 127.f, id = d > 0.f ? 1.f / d : 0.f;
                int8_t *q = a->k + (size_t)b * cols + 256 * c;
                for (int j = 0; j < 256; j++) q[j] = (int8_t)(int)nearbyintf(v[j] * id);
                for (int g = 0; g < 16; g++) {
                    int sum = 0;
                    for (int j = 0; j < 16; j++) sum += q[16 * g + j];
                    a->k16[b * (cols / 16) + 16 * c + g] = (int16_t)sum;
                }
                for (int g = 0; g < 8; g++) {
                    const int sum = a->k16[b * (cols / 16) + 16 * c + 2 * g] + a->k16[b * (cols / 16) + 16 * c + 2 * g + 1];
                    a->ks[b * chunks + 8 * c + g] = (int16_t)sum;
                    a->kmf[b * chunks + 8 * c + g] = d * (float)sum;
                }
                a->kd[b * (cols / 256) + c] = d;
            }
    }
}

static inline int quantized(int type) { return type != T_F32 && type != T_F16 && type != T_BF16; }

/* -- a small thread pool for the step ----------------------------------------------------------
 * Work is split into chunks that threads take from a shared counter, so a thread the OS has
 * descheduled (another program is busy) holds back at most one chunk; the caller does chunks too
 * and finishes alone if need be. Idle workers spin briefly (the next matmul is microseconds away
 * within a step), then yield, then sleep on a condition variable: they never burn a core that
 * another program wants. (OpenMP's spinning barriers made the step 8x slower under load.) */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <unistd.h>

typedef void (*range_fn)(void *ctx, int lo, int hi);

#define MAX_WORKERS 63
/* pauses an idle worker spins before it yields and sleeps: enough to span the gaps between one
 * token's matmuls (sleeping inside a token costs a wake-up per matmul) */
#ifndef SPINS
#define SPINS 30000
#endif
static struct {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    pthread_t threads[MAX_WORKERS];
    int started;                 /* workers running */
    _Atomic int allowed;         /* workers that may take part in the current job */
    _Atomic uint64_t state;      /* job generation << 32 | next chunk */
    _Atomic int done;            /* chunks finished in this job */
    range_fn fn;
    void *ctx;
    int total, chunk, chunks;
    pid_t pid;                   /* the process the workers belong to (a fork's child has none) */
} pool = {.lock = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER};
static pthread_mutex_t pool_calls = PTHREAD_MUTEX_INITIALIZER;  /* one job at a time */

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    _mm_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield");
#endif
}

/* Take and run chunks of generation `gen` until none are left (or a newer job began). */
static void run_chunks(uint32_t gen, range_fn fn, void *ctx, int total, int chunk, int chunks) {
    for (;;) {
        uint64_t st = atomic_load_explicit(&pool.state, memory_order_acquire);
        if ((uint32_t)(st >> 32) != gen || (int)(uint32_t)st >= chunks) return;
        if (!atomic_compare_exchange_weak_explicit(&pool.state, &st, st + 1, memory_order_acq_rel, memory_order_relaxed))
            continue;
        const int c = (int)(uint32_t)st, lo = c * chunk, hi = lo + chunk < total ? lo + chunk : total;
        fn(ctx, lo, hi);
        atomic_fetch_add_explicit(&pool.done, 1, memory_order_release);
    }
}

static void *worker(void *arg) {
    const int id = (int)(intptr_t)arg;
    uint32_t seen = 0;
    for (;;) {
        uint32_t gen;
        int spins = 0;
        while ((gen = (uint32_t)(atomic_load_explicit(&pool.state, memory_order_acquire) >> 32)) == seen) {
            if (++spins < SPINS) {
                cpu_relax();
            } else if (spins < SPINS + 64) {
                sched_yield();
            } else {
                pthread_mutex_lock(&pool.lock);
                while ((uint32_t)(atomic_load_explicit(&pool.state, memory_order_acquire) >> 32) == seen)
                    pthread_cond_wait(&pool.wake, &pool.lock);
                pthread_mutex_unlock(&pool.lock);
                spins = 0;
            }
        }
        seen = gen;
        if (id >= atomic_load_explicit(&pool.allowed, memory_order_acquire)) continue;
        /* the job's fields were written before its generation was published */
        pthread_mutex_lock(&pool.lock);
        const range_fn fn = pool.fn;
        void *ctx = pool.ctx;
        const int total = pool.total, chunk = pool.chunk, chunks = pool.chunks;
        const uint32_t now = (uint32_t)(atomic_load_explicit(&pool.state, memory_order_acquire) >> 32);
        pthread_mutex_unlock(&pool.lock);
        if (now == gen) run_chunks(gen, fn, ctx, total, chunk, chunks);
    }
    return NULL;
}

/* fn(ctx, lo, hi) over [0, total) in chunks of `chunk`, on up to `threads` threads (this one too) */
static void parallel_for(int total, int chunk, range_fn fn, void *ctx, int threads) {
    if (total <= 0) return;
    if (chunk < 1) chunk = 1;
    const int chunks = (total + chunk - 1) / chunk;
    if (threads > MAX_WORKERS + 1) threads = MAX_WORKERS + 1;
    if (threads <= 1 || chunks == 1) { fn(ctx, 0, total); return; }
    pthread_mutex_lock(&pool_calls);
    pthread_mutex_lock(&pool.lock);
    if (pool.pid != getpid()) {  /* first use, or a forked child: its workers did not come along */
        pool.started = 0;
        pool.pid = getpid();
    }
    while (pool.started < threads - 1) {
        if (pthread_create(&pool.threads[pool.started], NULL, worker, (void *)(intptr_t)pool.started) != 0) break;
        pthread_detach(pool.threads[pool.started]);
        pool.started++;
    }
    pool.fn = fn;
    pool.ctx = ctx;
    pool.total = total;
    pool.chunk = chunk;
    pool.chunks = chunks;
    atomic_store_explicit(&pool.done, 0, memory_order_relaxed);
    atomic_store_explicit(&pool.allowed, threads - 1, memory_order_relaxed);
    const uint32_t gen = (uint32_t)(atomic_load_explicit(&pool.state, memory_order_relaxed) >> 32) + 1;
    atomic_store_explicit(&pool.state, (uint64_t)gen << 32, memory_order_release);
    pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.lock);
    run_chunks(gen, fn, ctx, total, chunk, chunks);
    for (int spins = 0; atomic_load_explicit(&pool.done, memory_order_acquire) < chunks; spins++) {
        if (spins < 4000) cpu_relax();
        else sched_yield();  /* a worker is mid-chunk but off its core: let it run */
    }
    pthread_mutex_unlock(&pool_calls);
}

/* The weights PF_AHEAD bytes on (the rows that follow), into L1: the hardware's prefetchers alone
 * left a single core at 26 GB/s of its 44 on Q6_K rows, and at batch 4 on 8192-wide rows (ffn_down)
 * 4x batch 1's time; 16 KB ahead: 42 GB/s and 1.85x. (A prefetch never faults: past the end of
 * the matrix it is only wasted.) */
#ifndef PF_AHEAD
#define PF_AHEAD 16384
#endif
static inline __attribute__((always_inline)) void prefetch_ahead(const uint8_t *p, int bytes) {
    for (int off = 0; off < bytes; off += 64) __builtin_prefetch(p + PF_AHEAD + off, 0, 3);
}

#if SL_SIMD
/* -- x86 kernels (AVX2 registers; VNNI where the build has it) ------------------------------- */
static inline float hsum(__m256 v) {
    __m128 r = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    r = _mm_add_ss(r, _mm_movehdup_ps(r));
    return _mm_cvtss_f32(r);
}

static inline float h2f(uint16_t h) { return _cvtsh_ss(h); }

#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
static inline __m256i madd_acc(__m256i acc, __m256i p16, __m256i s16) { return _mm256_dpwssd_epi32(acc, p16, s16); }
#else
static inline __m256i madd_acc(__m256i acc, __m256i p16, __m256i s16) {
    return _mm256_add_epi32(acc, _mm256_madd_epi16(p16, s16));
}
#endif
#define XK(b, off) _mm256_loadu_si256((const __m256i *)(a->k + (size_t)(b) * cols + (off)))

static inline __m256i bytes_from_bits_32(const uint8_t *x) {  /* bit j -> byte j = 0xFF */
    uint32_t x32;
    memcpy(&x32, x, 4);
    const __m256i shuf = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0);
    __m256i bytes = _mm256_shuffle_epi8(_mm256_set1_epi32((int)x32), shuf);
    bytes = _mm256_or_si256(bytes, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
    return _mm256_cmpeq_epi8(bytes, _mm256_set1_epi64x(-1));
}

static inline __m256i nibbles16(const uint8_t *p) {  /* 16 bytes -> [low nibbles | high nibbles] */
    const __m128i raw = _mm_loadu_si128((const __m128i *)p), m4 = _mm_set1_epi8(15);
    return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(raw, 4), m4), _mm_and_si128(raw, m4));
}

/* One chunk of 32 weights against every input: W signed int8, or U unsigned with its min term. */
#define XQ(b, C) _mm256_loadu_si256((const __m256i *)(a->q + (size_t)(b) * cols + 32 * (C)))
#define CHUNK_S(W, SV, C) do { \
        const __m256i w_ = (W), aw_ = _mm256_sign_epi8(w_, w_); const __m256 sv_ = (SV); \
        for (int b = 0; b < B; b++) { \
            const __m256i p_ = dot_us(aw_, _mm256_sign_epi8(XQ(b, C), w_)); \
            acc[b] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p_), _mm256_mul_ps(sv_, _mm256_set1_ps(a->d[b * chunks + (C)])), acc[b]); \
        } } while (0)
#define CHUNK_U(U, S, MINC, C) do { \
        const __m256i u_ = (U); const float s_ = (S), m_ = (MINC); \
        for (int b = 0; b < B; b++) { \
            const __m256i p_ = dot_us(u_, XQ(b, C)); \
            acc[b] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p_), _mm256_set1_ps(s_ * a->d[b * chunks + (C)]), acc[b]); \
            mins[b] += m_ * a->s[b * chunks + (C)]; \
        } } while (0)

#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
/* K-quant rows in 512-bit registers: two sub-blocks of 32 per instruction. Per input and 64
 * weights only a maddubs (unsigned weights times the int8 input) and a dpwssd (times the
 * sub-blocks' scales) run; per input and super-block, one convert and one multiply-add, plus one
 * multiply-add for all eight Q4_K/Q5_K mins (kmf) or one dpwssd for Q6_K's offset of 32 (k16):
 * Q6_K's weights go in unsigned, 0..63, and -32 * scale * sum(x) per 16 comes off in integers. */
static inline __attribute__((always_inline)) void row_k512(const int type, const int B, const uint8_t *p,
                                                           const Act *a, float *out) {
    const int cols = a->cols, chunks = cols / 32, nb = cols / 256, bytes = sl_block_bytes(type);
    __m512 acc[MAXB];  /* the mins go into its low 8 lanes: fewer registers at batch 5-8 */
    for (int b = 0; b < B; b++) acc[b] = _mm512_setzero_ps();
    const __m512i m4 = _mm512_set1_epi8(15);
    /* shift counts per 16-bit lane: 0 in the low 256 bits, 4 in the high 256 */
    const __m512i half4 = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(4), 1);
    for (int i = 0; i < nb; i++, p += bytes) {
        prefetch_ahead(p, bytes);
        __m512i si[MAXB];
        for (int b = 0; b < B; b++) si[b] = _mm512_setzero_si512();
        const int8_t *xk = a->k + 256 * i;
        float d;
        if (type == T_Q6_K) {
            const uint8_t *ql = p, *qhp = p + 128;
            d = h2f(sl_u16(p + 208));
            const __m128i sc8 = _mm_loadu_si128((const __m128i *)(p + 192));
            /* the offset: -32 * scale of each 16 (int16), against each 16's input sum */
            const __m512i off = _mm512_zextsi256_si512(_mm256_mullo_epi16(_mm256_cvtepi8_epi16(sc8), _mm256_set1_epi16(-32)));
            for (int b = 0; b < B; b++)
                si[b] = _mm512_dpwssd_epi32(si[b], off, _mm512_zextsi256_si512(
                    _mm256_loadu_si256((const __m256i *)(a->k16 + b * (cols / 16) + 16 * i))));
            const __m512i m2 = _mm512_set1_epi8(3);
            for (int h = 0; h < 2; h++) {
                const __m512i l01 = _mm512_loadu_si512((const void *)(ql + 64 * h));  /* [l0 | l1] */
                const __m512i qh = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(qhp + 32 * h)));
                /* this half's 8 scales as int16, in every 128-bit lane */
                const __m512i sc16 = _mm512_broadcast_i32x4(_mm_cvtepi8_epi16(_mm_srli_si128(sc8, 8 * h)));
                for (int k = 0; k < 4; k += 2) {  /* sub-blocks k (from l0) and k + 1 (from l1) */
                    const __m512i lo = _mm512_and_si512(k ? _mm512_srli_epi16(l01, 4) : l01, m4);
                    /* qh's bits 2k (low half) and 2k + 2 (high half) */
                    const __m512i sh = _mm512_add_epi16(_mm512_set1_epi16(2 * k), _mm512_srli_epi16(half4, 1));
                    const __m512i hi = _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(qh, sh), m2), 4);
                    const __m512i w = _mm512_or_si512(lo, hi);
                    /* 128-bit lane t holds the 16 weights of scale 2k + t */
                    const __m512i s16 = _mm512_shuffle_epi8(sc16, _mm512_add_epi8(
                        _mm512_set_epi32(0x07060706, 0x07060706, 0x07060706, 0x07060706,
                                         0x05040504, 0x05040504, 0x05040504, 0x05040504,
                                         0x03020302, 0x03020302, 0x03020302, 0x03020302,
                                         0x01000100, 0x01000100, 0x01000100, 0x01000100),
                        _mm512_set1_epi8((char)(4 * k))));
                    for (int b = 0; b < B; b++) {
                        const __m512i xv = _mm512_loadu_si512((const void *)(xk + (size_t)b * cols + 128 * h + 32 * k));
                        si[b] = _mm512_dpwssd_epi32(si[b], _mm512_maddubs_epi16(w, xv), s16);
                    }
                }
            }
        } else {
            const int five = type == T_Q5_K;
            d = h2f(sl_u16(p));
            const float dmin = h2f(sl_u16(p + 2));
            uint32_t u[3];
            memcpy(u, p + 4, 12);
            /* the 6-bit scales and mins of sub-blocks 0..7 as bytes (sl_scale_min_k4, 4 at a time) */
            const uint32_t s0 = u[0] & 0x3f3f3f3fu, s1 = (u[2] & 0x0f0f0f0fu) | ((u[0] >> 6) & 0x03030303u) << 4;
            const uint32_t n0 = u[1] & 0x3f3f3f3fu, n1 = ((u[2] >> 4) & 0x0f0f0f0fu) | ((u[1] >> 6) & 0x03030303u) << 4;
            const __m512i sc16 = _mm512_broadcast_i32x4(_mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long)((uint64_t)s1 << 32 | s0))));
            const __m512 mins = _mm512_zextps256_ps512(_mm256_mul_ps(
                _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)((uint64_t)n1 << 32 | n0)))), _mm256_set1_ps(dmin)));
            for (int b = 0; b < B; b++)
                acc[b] = _mm512_fnmadd_ps(mins, _mm512_zextps256_ps512(_mm256_loadu_ps(a->kmf + b * chunks + 8 * i)), acc[b]);
            const uint8_t *qs = p + (five ? 48 : 16);
            const __m512i qh = five ? _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(p + 16))) : _mm512_setzero_si512();
            for (int j = 0; j < 8; j += 2) {  /* sub-blocks j (low nibbles) and j + 1 (high) */
                const __m512i raw = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(qs + 16 * j)));
                __m512i w = _mm512_and_si512(_mm512_srlv_epi16(raw, half4), m4);
                if (five) {  /* qh's bit j (low half), j + 1 (high half), as 16 */
                    const __m512i sh = _mm512_add_epi16(_mm512_set1_epi16(j), _mm512_srli_epi16(half4, 2));
                    w = _mm512_or_si512(w, _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(qh, sh), _mm512_set1_epi8(1)), 4));
                }
                /* lanes of the low half get scale j, of the high half scale j + 1 */
                const __m512i s16 = _mm512_shuffle_epi8(sc16, _mm512_add_epi8(
                    _mm512_set_epi32(0x03020302, 0x03020302, 0x03020302, 0x03020302,
                                     0x03020302, 0x03020302, 0x03020302, 0x03020302,
                                     0x01000100, 0x01000100, 0x01000100, 0x01000100,
                                     0x01000100, 0x01000100, 0x01000100, 0x01000100),
                    _mm512_set1_epi8((char)(2 * j))));
                for (int b = 0; b < B; b++) {
                    const __m512i xv = _mm512_loadu_si512((const void *)(xk + (size_t)b * cols + 32 * j));
                    si[b] = _mm512_dpwssd_epi32(si[b], _mm512_maddubs_epi16(w, xv), s16);
                }
            }
        }
        for (int b = 0; b < B; b++)
            acc[b] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(si[b]), _mm512_set1_ps(d * a->kd[b * nb + i]), acc[b]);
    }
    for (int b = 0; b < B; b++) out[b] = _mm512_reduce_add_ps(acc[b]);
}
#endif

#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
/* Q8_0 rows, two blocks per 512-bit register. The weights go in unsigned (w + 128, so that one
 * vpdpbusd per input and 64 weights does the products) and 128 * sum(x) comes off once per row:
 * -128 * sum over blocks of d * a->s (s = the input's scale times its sum, per 32). Per input and
 * 64 weights: vpdpbusd, a convert, the two blocks' scale products, a multiply-add. */
static inline __attribute__((always_inline)) void row_q8_512(const int B, const uint8_t *p, const Act *a, float *out) {
    const int cols = a->cols, chunks = cols / 32;
    __m512 acc[MAXB], corr[MAXB];
    for (int b = 0; b < B; b++) acc[b] = corr[b] = _mm512_setzero_ps();
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    const __m512i two = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    for (int g = 0; g < chunks; g += 16) {
        const int n = chunks - g < 16 ? chunks - g : 16;
        __m512 d16 = _mm512_setzero_ps();  /* these 16 blocks' scales, for the sum(x) term */
        for (int c = 0; c < n; c += 2, p += 68) {
            prefetch_ahead(p, 68);
            const int pair = c + 1 < n;  /* else an odd block at the end: the low half alone */
            const __mmask16 lanes = pair ? 0xffff : 0x00ff;
            const __m512i w = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(p + 2))),
                                                 pair ? _mm256_loadu_si256((const __m256i *)(p + 36)) : _mm256_setzero_si256(), 1);
            const __m512i u = _mm512_maskz_xor_epi32(lanes, w, flip);
            const __m128 dd = _mm_cvtph_ps(_mm_insert_epi16(_mm_cvtsi32_si128(sl_u16(p)), pair ? sl_u16(p + 34) : 0, 1));
            d16 = _mm512_mask_expand_ps(d16, (__mmask16)(3u << c), _mm512_castps128_ps512(dd));
            const __m512 d2 = _mm512_permutexvar_ps(two, _mm512_castps128_ps512(dd));
            for (int b = 0; b < B; b++) {
                const int8_t *x = a->q + (size_t)b * cols + 32 * (g + c);
                const __m512i xv = pair ? _mm512_loadu_si512((const void *)x) : _mm512_zextsi256_si512(_mm256_loadu_si256((const __m256i *)x));
                const __m512i dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u, xv);
                const float *dx = a->d + b * chunks + g + c;
                const __m512 dx2 = pair ? _mm512_permutexvar_ps(two, _mm512_castps128_ps512(_mm_castpd_ps(_mm_load_sd((const double *)dx))))
                                        : _mm512_set1_ps(*dx);
                acc[b] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(d2, dx2), acc[b]);
            }
        }
        const __mmask16 have = (__mmask16)((1u << n) - 1);
        for (int b = 0; b < B; b++)
            corr[b] = _mm512_fmadd_ps(d16, _mm512_maskz_loadu_ps(have, a->s + b * chunks + g), corr[b]);
    }
    for (int b = 0; b < B; b++) out[b] = _mm512_reduce_add_ps(_mm512_fnmadd_ps(corr[b], _mm512_set1_ps(128.f), acc[b]));
}

#endif

static inline __attribute__((always_inline)) void row_quant(const int type, const int B, const uint8_t *p,
                                                            const Act *a, float *out) {
    const int cols = a->cols, chunks = cols / 32, bytes = sl_block_bytes(type);
    const int nb = cols / sl_block(type);
#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
    if (sl_block(type) == 256) { row_k512(type, B, p, a, out); return; }
    if (type == T_Q8_0) { row_q8_512(B, p, a, out); return; }
#endif
    __m256 acc[MAXB];
    float mins[MAXB];
    for (int b = 0; b < B; b++) { acc[b] = _mm256_setzero_ps(); mins[b] = 0.f; }
    const __m256i m4 = _mm256_set1_epi8(15);
    for (int i = 0; i < nb; i++, p += bytes) {
        switch (type) {
        case T_Q4_0:
            CHUNK_S(_mm256_sub_epi8(nibbles16(p + 2), _mm256_set1_epi8(8)), _mm256_set1_ps(h2f(sl_u16(p))), i);
            break;
        case T_Q4_1:
            CHUNK_U(nibbles16(p + 4), h2f(sl_u16(p)), h2f(sl_u16(p + 2)), i);
            break;
        case T_Q5_0: {
            const __m256i hb = _mm256_and_si256(bytes_from_bits_32(p + 2), _mm256_set1_epi8(16));
            const __m256i w = _mm256_sub_epi8(_mm256_or_si256(nibbles16(p + 6), hb), _mm256_set1_epi8(16));
            CHUNK_S(w, _mm256_set1_ps(h2f(sl_u16(p))), i);
            break;
        }
        case T_Q8_0:
            CHUNK_S(_mm256_loadu_si256((const __m256i *)(p + 2)), _mm256_set1_ps(h2f(sl_u16(p))), i);
            break;
#if !(defined(__AVX512VNNI__) && defined(__AVX512BW__))  /* 512 bits: row_k512 */
        case T_Q4_K: case T_Q5_K: {
            /* super-block i against the per-256 input: integer sums scaled by the 6-bit scales */
            const float d = h2f(sl_u16(p)), dmin = h2f(sl_u16(p + 2));
            const int five = type == T_Q5_K;
            const uint8_t *qs = p + (five ? 48 : 16);
            const __m256i qh = five ? _mm256_loadu_si256((const __m256i *)(p + 16)) : _mm256_setzero_si256();
            uint8_t sc[8], mn[8];
            for (int j = 0; j < 8; j++) sl_scale_min_k4(j, p + 4, &sc[j], &mn[j]);
            __m256i si[MAXB];
            for (int b = 0; b < B; b++) si[b] = _mm256_setzero_si256();
            for (int j = 0; j < 8; j += 2) {
                const __m256i raw = _mm256_loadu_si256((const __m256i *)(qs + 16 * j));
                __m256i lo = _mm256_and_si256(raw, m4), hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m4);
                if (five) {
                    const __m256i one = _mm256_set1_epi8(1);
                    lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, j), one), 4));
                    hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, j + 1), one), 4));
                }
                const __m256i s0 = _mm256_set1_epi16(sc[j]), s1 = _mm256_set1_epi16(sc[j + 1]);
                for (int b = 0; b < B; b++) {
                    si[b] = madd_acc(si[b], _mm256_maddubs_epi16(lo, XK(b, 256 * i + 32 * j)), s0);
                    si[b] = madd_acc(si[b], _mm256_maddubs_epi16(hi, XK(b, 256 * i + 32 * j + 32)), s1);
                }
            }
            for (int b = 0; b < B; b++) {
                const float dx = a->kd[b * (cols / 256) + i];
                const int16_t *ks = a->ks + b * chunks + 8 * i;
                int msum = 0;
                for (int j = 0; j < 8; j++) msum += mn[j] * ks[j];
                acc[b] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(si[b]), _mm256_set1_ps(d * dx), acc[b]);
                mins[b] -= dmin * dx * (float)msum;
            }
            break;
        }
        case T_Q6_K: {
            const uint8_t *ql = p, *qhp = p + 128;
            const int8_t *sc = (const int8_t *)(p + 192);
            const float d = h2f(sl_u16(p + 208));
            const __m256i m2 = _mm256_set1_epi8(3), off = _mm256_set1_epi8(32);
            __m256i si[MAXB];
            for (int b = 0; b < B; b++) si[b] = _mm256_setzero_si256();
            for (int h = 0; h < 2; h++) {
                const __m256i l0 = _mm256_loadu_si256((const __m256i *)(ql + 64 * h));
                const __m256i l1 = _mm256_loadu_si256((const __m256i *)(ql + 64 * h + 32));
                const __m256i qh = _mm256_loadu_si256((const __m256i *)(qhp + 32 * h));
                for (int k = 0; k < 4; k++) {
                    const __m256i src = k & 1 ? l1 : l0;
                    const __m256i lo = _mm256_and_si256(k & 2 ? _mm256_srli_epi16(src, 4) : src, m4);
                    const __m256i hi = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * k), m2), 4);
                    const __m256i w = _mm256_sub_epi8(_mm256_or_si256(lo, hi), off), aw = _mm256_sign_epi8(w, w);
                    const int g = 8 * h + 2 * k;  /* this 32's two scales, one per 16 */
                    const __m256i s16 = _mm256_set_m128i(_mm_set1_epi16(sc[g + 1]), _mm_set1_epi16(sc[g]));
                    for (int b = 0; b < B; b++) {
                        const __m256i xv = XK(b, 256 * i + 128 * h + 32 * k);
                        si[b] = madd_acc(si[b], _mm256_maddubs_epi16(aw, _mm256_sign_epi8(xv, w)), s16);
                    }
                }
            }
            for (int b = 0; b < B; b++)
                acc[b] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(si[b]), _mm256_set1_ps(d * a->kd[b * (cols / 256) + i]), acc[b]);
            break;
        }
#endif
        default: break;
        }
    }
    for (int b = 0; b < B; b++) out[b] = hsum(acc[b]) + mins[b];
}

static inline __attribute__((always_inline)) void row_float(const int type, const int B, const uint8_t *p,
                                                            const float *x, int cols, float *out) {
    __m256 acc[MAXB];
    for (int b = 0; b < B; b++) acc[b] = _mm256_setzero_ps();
    for (int j = 0; j < cols; j += 8) {
        __m256 w;
        if (type == T_F32) w = _mm256_loadu_ps((const float *)p + j);
        else if (type == T_F16) w = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)p + j)));
        else w = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint16_t *)p + j))), 16));
        for (int b = 0; b < B; b++) acc[b] = _mm256_fmadd_ps(w, _mm256_loadu_ps(x + (size_t)b * cols + j), acc[b]);
    }
    for (int b = 0; b < B; b++) out[b] = hsum(acc[b]);
}

/* SL_EXACT rows of Q4_1 / Q8_0 (what the transformers packer writes): each block's 32 weights
 * rebuilt in fp32 and multiplied with the fp32 inputs, as the library's forward does. */
#if defined(__AVX512F__)
/* One block's 32 weights in fp32. Each weight's byte goes to its own 32-bit lane with vpmovzxbd /
 * vpmovsxbd from memory (in-lane byte shuffles of a broadcast, 2 instructions, were 8-30% slower
 * here: Zen 5), and one conversion brings in the fp16 d and min together. With `table`, Q4_1's 16
 * levels d * q + min are computed once (one multiply-add, as each weight's was) and each weight
 * looked up (vpermps): that frees the multiply-add units at batch 1-3 (Q4_1 rows 6-8% faster),
 * not above, where the inputs' multiply-adds fill those units and the lookups' shuffles share one
 * of them (batch 4 10% slower). */
static inline __attribute__((always_inline)) void exact_block(const int type, const uint8_t *p, __m512 *w0, __m512 *w1,
                                                              const int table) {
    if (type == T_Q4_1) {
        uint32_t dm;
        memcpy(&dm, p, 4);
        const __m512 both = _mm512_cvtph_ps(_mm256_set1_epi32((int)dm));  /* d, min, d, min, ... */
        const __m512 d = _mm512_moveldup_ps(both), mn = _mm512_movehdup_ps(both);
        const __m512i q = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(p + 4)));  /* byte i in lane i */
        if (table) {  /* vpermps reads the low 4 bits of each lane: the low nibble, unmasked */
            const __m512 levels = _mm512_fmadd_ps(_mm512_set_ps(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0), d, mn);
            *w0 = _mm512_permutexvar_ps(q, levels);
            *w1 = _mm512_permutexvar_ps(_mm512_srli_epi32(q, 4), levels);
        } else {
            const __m512i m4 = _mm512_set1_epi32(15);
            *w0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_and_si512(q, m4)), d, mn);
            *w1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(q, 4)), d, mn);
        }
    } else {  /* Q8_0 */
        const __m512 d = _mm512_cvtph_ps(_mm256_set1_epi16((short)sl_u16(p)));
        *w0 = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(p + 2)))), d);
        *w1 = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(p + 18)))), d);
    }
}

/* Each input sums in two chains of multiply-adds, four at batch 1 (two blocks a pass): with one,
 * two dependent multiply-adds per block held a block to their latency (the default model's rows at
 * batch 1, 10-15% slower). */
static inline __attribute__((always_inline)) void row_exact(const int type, const int B, const uint8_t *p,
                                                            const float *x, int cols, float *out) {
    __m512 acc[MAXB][4];
    const int chains = B == 1 ? 4 : 2;
    for (int b = 0; b < B; b++) for (int c = 0; c < chains; c++) acc[b][c] = _mm512_setzero_ps();
    const int bytes = sl_block_bytes(type);
    int j = 0;
    if (chains == 4)
        for (; j + 64 <= cols; j += 64, p += 2 * bytes) {
            prefetch_ahead(p, 2 * bytes);
            __m512 w0, w1, w2, w3;
            exact_block(type, p, &w0, &w1, B <= 3);
            exact_block(type, p + bytes, &w2, &w3, B <= 3);
            for (int b = 0; b < B; b++) {
                const float *xb = x + (size_t)b * cols + j;
                acc[b][0] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(xb), acc[b][0]);
                acc[b][1] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(xb + 16), acc[b][1]);
                acc[b][2] = _mm512_fmadd_ps(w2, _mm512_loadu_ps(xb + 32), acc[b][2]);
                acc[b][3] = _mm512_fmadd_ps(w3, _mm512_loadu_ps(xb + 48), acc[b][3]);
            }
        }
    for (; j < cols; j += 32, p += bytes) {
        prefetch_ahead(p, bytes);
        __m512 w0, w1;
        exact_block(type, p, &w0, &w1, B <= 3);
        for (int b = 0; b < B; b++) {
            const float *xb = x + (size_t)b * cols + j;
            acc[b][0] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(xb), acc[b][0]);
            acc[b][1] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(xb + 16), acc[b][1]);
        }
    }
    for (int b = 0; b < B; b++) {
        __m512 t = _mm512_add_ps(acc[b][0], acc[b][1]);
        if (chains == 4) t = _mm512_add_ps(t, _mm512_add_ps(acc[b][2], acc[b][3]));
        out[b] = _mm512_reduce_add_ps(t);
    }
}

/* The sums of 4 vectors, [sum a, sum b, sum c, sum d]: 4 reductions sharing their shuffles */
static inline __m128 hsum4(__m512 a, __m512 b, __m512 c, __m512 d) {
    const __m512 ab = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
    const __m512 cd = _mm512_add_ps(_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
    /* per 128-bit lane: a, b, c, d partial sums */
    const __m512 abcd = _mm512_add_ps(_mm512_shuffle_ps(ab, cd, 0x44), _mm512_shuffle_ps(ab, cd, 0xee));
    const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(abcd), _mm512_extractf32x8_ps(abcd, 1));
    return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

/* R rows (consecutive, `stride` bytes apart) against B inputs in one pass: each input's values
 * are loaded once for the R rows' blocks, each row and input sums in its own chain (two where
 * R x B < 8: latency), and the sums are reduced four at a time. One row at a time, batch 4 loaded
 * every input twice per block and reduced 4 sums alone per row. y[b * ys + r] (+)= the sum
 * (+ bias[r]): four rows' sums of an input are stored together. */
static inline __attribute__((always_inline)) void rows_exact(const int type, const int R, const int B, const uint8_t *p,
                                                             size_t stride, const float *x, int cols, float *y,
                                                             size_t ys, const float *bias, int accumulate) {
    __m512 acc[4][MAXB][2];
    const int two = R * B < 8;
    for (int r = 0; r < R; r++) for (int b = 0; b < B; b++) acc[r][b][0] = acc[r][b][1] = _mm512_setzero_ps();
    const int bytes = sl_block_bytes(type);
    for (int j = 0, blk = 0; j < cols; j += 32, blk++) {
        /* the R rows are one stretch of memory, read at R blocks a pass */
        prefetch_ahead(p + (size_t)blk * R * bytes, R * bytes);
        __m512 w0[4], w1[4];
        for (int r = 0; r < R; r++) exact_block(type, p + r * stride + (size_t)blk * bytes, &w0[r], &w1[r], B <= 3);
        for (int b = 0; b < B; b++) {
            const __m512 xa = _mm512_loadu_ps(x + (size_t)b * cols + j), xb = _mm512_loadu_ps(x + (size_t)b * cols + j + 16);
            for (int r = 0; r < R; r++) {
                acc[r][b][0] = _mm512_fmadd_ps(w0[r], xa, acc[r][b][0]);
                acc[r][b][two] = _mm512_fmadd_ps(w1[r], xb, acc[r][b][two]);
            }
        }
    }
    __m512 t[4][MAXB];
    for (int r = 0; r < R; r++)
        for (int b = 0; b < B; b++) t[r][b] = two ? _mm512_add_ps(acc[r][b][0], acc[r][b][1]) : acc[r][b][0];
    for (int b = 0; b < B; b++) {
        float *out = y + (size_t)b * ys;
        if (R == 4) {
            __m128 v = hsum4(t[0][b], t[1][b], t[2][b], t[3][b]);
            if (bias) v = _mm_add_ps(v, _mm_loadu_ps(bias));
            if (accumulate) v = _mm_add_ps(v, _mm_loadu_ps(out));
            _mm_storeu_ps(out, v);
        } else {
            for (int r = 0; r < R; r++)
                out[r] = (accumulate ? out[r] : 0.f) + _mm512_reduce_add_ps(t[r][b]) + (bias ? bias[r] : 0.f);
        }
    }
}
#define MULTI_ROWS 1

/* SL_TILED matrices (EXACT Q4_1 / Q8_0 that sl_tile repacked at load): 16 rows side by side, one
 * block of each per tile, so a register holds one column of 16 rows and each input value is
 * broadcast from memory into the multiply-add. The scales then factor out of a block's sum:
 * t = sum_c q[.][c] x[c], acc += d t (+ min * sum(x over the block), the input's sums computed
 * once per matmul): one multiply-add per weight and input, where the GGUF rows first rebuild each
 * weight (d q + min) in fp32, shared by the batch but one more multiply-add per weight.
 * Tile layout, Q4_1: 16 fp16 d, 16 fp16 min, then for c < 16 the 16 rows' byte c of their block
 * (row r's weight c in the low nibble, c + 16 in the high: GGUF's own bytes); Q8_0: 16 fp16 d,
 * then for c < 32 the 16 rows' weight c. A tile has the 16 blocks' bytes, so the sizes match. */
#define TILED_ROWS 16
#ifndef TILED_GROUPS
#define TILED_GROUPS 2
#endif
static inline int tile_bytes(int type) { return TILED_ROWS * sl_block_bytes(type); }

/* acc[g][b] (16 rows) = row group g's dot products with input b (x at x + b * cols, its block
 * sums at xs + b * blocks), for G = 1 or 2 groups `stride` bytes apart: two groups share each
 * input value's broadcast (batch 2-4 5-10% faster than one group a pass). The sums go in CH
 * chains per group and input, 8 or more in all (fewer are held to the latency; 16 at batch 4 of
 * 2 groups, 5% faster than 8). */
static inline __attribute__((always_inline)) void tile_exact(const int type, const int G, const int B, const uint8_t *p,
                                                             size_t stride, int blocks, const float *x, int cols,
                                                             const float *xs, __m512 acc[2][4]) {
    const int CH = G * B >= 4 ? 2 : 4;
    for (int g = 0; g < G; g++) for (int b = 0; b < B; b++) acc[g][b] = _mm512_setzero_ps();
    const int tb = tile_bytes(type);
    const __m512i m4 = _mm512_set1_epi32(15);
    for (int k = 0; k < blocks; k++, p += tb) {
        for (int g = 0; g < G; g++) prefetch_ahead(p + g * stride, tb);
        __m512 t[2][4][4];
        for (int g = 0; g < G; g++) for (int b = 0; b < B; b++) for (int i = 0; i < CH; i++) t[g][b][i] = _mm512_setzero_ps();
        const float *xk = x + 32 * k;
        /* chain indices are constants in each step (an index that varied with c put the sums in memory) */
        if (type == T_Q4_1) {
#define Q4_STEP(c, i) do { \
                __m512 lo[2], hi[2]; \
                for (int g = 0; g < G; g++) { \
                    const __m512i q = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(p + g * stride + 64 + 16 * (c)))); \
                    lo[g] = _mm512_cvtepi32_ps(_mm512_and_si512(q, m4)), hi[g] = _mm512_cvtepi32_ps(_mm512_srli_epi32(q, 4)); \
                } \
                for (int b = 0; b < B; b++) { \
                    const __m512 xl = _mm512_set1_ps(xk[(size_t)b * cols + (c)]), xh = _mm512_set1_ps(xk[(size_t)b * cols + (c) + 16]); \
                    for (int g = 0; g < G; g++) { \
                        t[g][b][i] = _mm512_fmadd_ps(lo[g], xl, t[g][b][i]); \
                        t[g][b][(i) + (CH > 1)] = _mm512_fmadd_ps(hi[g], xh, t[g][b][(i) + (CH > 1)]); \
                    } \
                } } while (0)
            for (int c = 0; c < 16; c += 2) {
                Q4_STEP(c, 0);
                Q4_STEP(c + 1, CH == 4 ? 2 : 0);
            }
        } else {  /* Q8_0 */
#define Q8_STEP(c, i) do { \
                __m512 q[2]; \
                for (int g = 0; g < G; g++) \
                    q[g] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(p + g * stride + 32 + 16 * (c))))); \
                for (int b = 0; b < B; b++) { \
                    const __m512 xv = _mm512_set1_ps(xk[(size_t)b * cols + (c)]); \
                    for (int g = 0; g < G; g++) t[g][b][i] = _mm512_fmadd_ps(q[g], xv, t[g][b][i]); \
                } } while (0)
            for (int c = 0; c < 32; c += 4) {
                Q8_STEP(c, 0);
                Q8_STEP(c + 1, CH > 1 ? 1 : 0);
                Q8_STEP(c + 2, CH == 4 ? 2 : 0);
                Q8_STEP(c + 3, CH == 4 ? 3 : CH == 2 ? 1 : 0);
            }
        }
#undef Q4_STEP
#undef Q8_STEP
        for (int g = 0; g < G; g++) {
            const uint8_t *pg = p + g * stride;
            const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)pg));
            const __m512 mn = type == T_Q4_1 ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(pg + 32))) : d;
            for (int b = 0; b < B; b++) {
                __m512 s = t[g][b][0];
                if (CH > 1) s = _mm512_add_ps(s, t[g][b][1]);
                if (CH == 4) s = _mm512_add_ps(s, _mm512_add_ps(t[g][b][2], t[g][b][3]));
                acc[g][b] = _mm512_fmadd_ps(d, s, acc[g][b]);
                if (type == T_Q4_1) acc[g][b] = _mm512_fmadd_ps(mn, _mm512_set1_ps(xs[(size_t)b * blocks + k]), acc[g][b]);
            }
        }
    }
}

/* y[b * ys + r] (+)= row r . x[b] (+ bias[r]) for G groups of 16 rows, the rows from <= r < to
 * of them (with G = 1 a chunk boundary may fall inside the group: the rest of it is computed
 * and not stored) */
static inline __attribute__((always_inline)) void tiles_exact(const int type, const int G, const int B, const uint8_t *p,
                                                              size_t stride, int blocks, const float *x, int cols,
                                                              const float *xs, float *y, size_t ys, const float *bias,
                                                              int accumulate, int from, int to) {
    __m512 acc[2][4];
    tile_exact(type, G, B, p, stride, blocks, x, cols, xs, acc);
    for (int g = 0; g < G; g++) {
        const int lo = g ? 0 : from, hi = g == G - 1 ? to : TILED_ROWS;
        const __mmask16 keep = (__mmask16)(((1u << hi) - 1) & ~((1u << lo) - 1));
        const float *bg = bias ? bias + g * TILED_ROWS : NULL;
        for (int b = 0; b < B; b++) {
            float *out = y + (size_t)b * ys + g * TILED_ROWS;
            __m512 v = acc[g][b];
            if (bg) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(keep, bg));
            if (accumulate) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(keep, out));
            _mm512_mask_storeu_ps(out, keep, v);
        }
    }
}
#else
/* Each input sums in CH chains of multiply-adds (4 at batch 1-2, 2 at 3-4, 1 above: 8 or fewer
 * accumulators, which the 16 registers hold beside the block's 4 weight vectors). With one chain an
 * input's 4 multiply-adds per block waited on each other: every block took 4 latencies whatever
 * the batch (Zen 3, 2.45 GHz, 1 thread: 6.0-8.0 ns a Q4_1 block-row at batch 1, 8.4 at batch 4). */
static inline __attribute__((always_inline)) void row_exact(const int type, const int B, const uint8_t *p,
                                                            const float *x, int cols, float *out) {
    const int CH = B <= 2 ? 4 : B <= 4 ? 2 : 1;  /* a constant once inlined (B is) */
    __m256 acc[MAXB][4];
    for (int b = 0; b < B; b++) for (int c = 0; c < CH; c++) acc[b][c] = _mm256_setzero_ps();
    const int bytes = sl_block_bytes(type);
    for (int j = 0; j < cols; j += 32, p += bytes) {
        __m256 w[4];
        const __m256 d = _mm256_set1_ps(h2f(sl_u16(p)));
        if (type == T_Q4_1) {
            const __m128i raw = _mm_loadu_si128((const __m128i *)(p + 4)), m4 = _mm_set1_epi8(15);
            const __m128i lo = _mm_and_si128(raw, m4), hi = _mm_and_si128(_mm_srli_epi16(raw, 4), m4);
            const __m256 mn = _mm256_set1_ps(h2f(sl_u16(p + 2)));
            w[0] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo));
            w[1] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8)));
            w[2] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi));
            w[3] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8)));
            for (int k = 0; k < 4; k++) w[k] = _mm256_fmadd_ps(w[k], d, mn);
        } else {  /* Q8_0 */
            for (int k = 0; k < 4; k++)
                w[k] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(p + 2 + 8 * k)))), d);
        }
        for (int b = 0; b < B; b++) {
            const float *xb = x + (size_t)b * cols + j;
            for (int k = 0; k < 4; k++) acc[b][k % CH] = _mm256_fmadd_ps(w[k], _mm256_loadu_ps(xb + 8 * k), acc[b][k % CH]);
        }
    }
    for (int b = 0; b < B; b++) {
        __m256 t = acc[b][0];
        if (CH == 2) t = _mm256_add_ps(t, acc[b][1]);
        if (CH == 4) t = _mm256_add_ps(_mm256_add_ps(t, acc[b][1]), _mm256_add_ps(acc[b][2], acc[b][3]));
        out[b] = hsum(t);
    }
}

/* SL_TILED matrices in the AVX2 build: sl_tile's layout of 16-row tiles (as the AVX-512 builds
 * read it), taken 8 rows at a time (a register holds one column of 8 rows; each input value is
 * broadcast from memory). The scales factor out of a block's sum, t = sum_c q[.][c] x[c],
 * acc += d t (+ min * the block's sum of x): per weight and input one multiply-add, where the GGUF
 * rows first rebuild each weight (d q + min), one more per weight, and the weights stay exact. */
#define TILED_ROWS 16
#ifndef TILED_GROUPS
#define TILED_GROUPS 2
#endif
static inline int tile_bytes(int type) { return TILED_ROWS * sl_block_bytes(type); }

/* acc[h][b] = rows 8h..8h+7 of a tile group (both halves, H = 2, or half `h0` alone) . input b,
 * B <= 4. Both halves at once share each input value's broadcast (a load of its own here: AVX2's
 * multiply-add takes no broadcast operand). The sums go in CH chains per row half and input, 8
 * in all (fewer wait on the latency; more do not fit the 16 registers), and the running totals
 * stay in `acc` (memory: one load and store per block and chain, beside 32 multiply-adds). */
static inline __attribute__((always_inline)) void halves_exact(const int type, const int H, const int B, const uint8_t *p,
                                                               int h0, int blocks, const float *x, int cols,
                                                               const float *xs, float acc[2][4][8]) {
    const int CH = H * B >= 8 ? 1 : 8 / (H * B) > 4 ? 4 : 8 / (H * B);
    for (int h = 0; h < H; h++) for (int b = 0; b < B; b++) _mm256_storeu_ps(acc[h][b], _mm256_setzero_ps());
    const int tb = tile_bytes(type);
    const __m256i m4 = _mm256_set1_epi32(15);
    for (int k = 0; k < blocks; k++, p += tb) {
        __m256 t[2][4][4];
        for (int h = 0; h < H; h++) for (int b = 0; b < B; b++) for (int i = 0; i < CH; i++) t[h][b][i] = _mm256_setzero_ps();
        const float *xk = x + 32 * k;
        /* chain indices are constants in each step (an index that varied with c put the sums in memory) */
        if (type == T_Q4_1) {
            const int per = CH > 1 ? CH / 2 : 1;  /* columns a pass: each feeds two chains (one when CH is 1) */
            for (int c0 = 0; c0 < 16; c0 += per) {
#pragma GCC unroll 4
                for (int u = 0; u < per; u++) {
                    const int c = c0 + u, i = CH > 1 ? 2 * u : 0, i2 = CH > 1 ? 2 * u + 1 : 0;
                    __m256 lo[2], hi[2];
                    for (int h = 0; h < H; h++) {
                        const __m256i q = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(p + 64 + 16 * c + 8 * (h + h0))));
                        lo[h] = _mm256_cvtepi32_ps(_mm256_and_si256(q, m4));
                        hi[h] = _mm256_cvtepi32_ps(_mm256_srli_epi32(q, 4));
                    }
                    for (int b = 0; b < B; b++) {
                        const float *xb = xk + (size_t)b * cols;
                        const __m256 xl = _mm256_broadcast_ss(xb + c), xh = _mm256_broadcast_ss(xb + c + 16);
                        for (int h = 0; h < H; h++) {
                            t[h][b][i] = _mm256_fmadd_ps(lo[h], xl, t[h][b][i]);
                            t[h][b][i2] = _mm256_fmadd_ps(hi[h], xh, t[h][b][i2]);
                        }
                    }
                }
            }
        } else {  /* Q8_0 */
            for (int c0 = 0; c0 < 32; c0 += CH) {
#pragma GCC unroll 4
                for (int u = 0; u < CH; u++) {
                    const int c = c0 + u;
                    __m256 q[2];
                    for (int h = 0; h < H; h++)
                        q[h] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(p + 32 + 16 * c + 8 * (h + h0)))));
                    for (int b = 0; b < B; b++) {
                        const __m256 xv = _mm256_broadcast_ss(xk + (size_t)b * cols + c);
                        for (int h = 0; h < H; h++) t[h][b][u] = _mm256_fmadd_ps(q[h], xv, t[h][b][u]);
                    }
                }
            }
        }
        for (int h = 0; h < H; h++) {
            const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 16 * (h + h0))));
            const __m256 mn = type == T_Q4_1 ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 32 + 16 * (h + h0)))) : d;
            for (int b = 0; b < B; b++) {
                __m256 s = t[h][b][0];
                for (int i = 1; i < CH; i++) s = _mm256_add_ps(s, t[h][b][i]);
                __m256 v = _mm256_fmadd_ps(d, s, _mm256_loadu_ps(acc[h][b]));
                if (type == T_Q4_1) v = _mm256_fmadd_ps(mn, _mm256_broadcast_ss(xs + (size_t)b * blocks + k), v);
                _mm256_storeu_ps(acc[h][b], v);
            }
        }
    }
}

/* y[b * ys + r] (+)= row r . x[b] (+ bias[r]) for G groups of 16 rows `stride` bytes apart, the
 * rows from <= r < to of them (the first group from `from`, the last to `to`) */
static inline __attribute__((always_inline)) void tiles_exact(const int type, const int G, const int B, const uint8_t *p,
                                                              size_t stride, int blocks, const float *x, int cols,
                                                              const float *xs, float *y, size_t ys, const float *bias,
                                                              int accumulate, int from, int to) {
    for (int g = 0; g < G; g++) {
        const int lo = g ? 0 : from, hi = g == G - 1 ? to : TILED_ROWS;
        float acc[2][4][8];
        const int h0 = lo >= 8, H = hi <= 8 || lo >= 8 ? 1 : 2;  /* the halves holding rows lo..hi-1 */
        if (H == 2)
            halves_exact(type, 2, B, p + g * stride, 0, blocks, x, cols, xs, acc);
        else
            halves_exact(type, 1, B, p + g * stride, h0, blocks, x, cols, xs, acc);
        for (int h = 0; h < H; h++) {
            const int base = g * TILED_ROWS + 8 * (h + h0);
            for (int b = 0; b < B; b++) {
                float *out = y + (size_t)b * ys + base;
                for (int r = 0; r < 8; r++) {
                    const int row = 8 * (h + h0) + r;
                    if (row < lo || row >= hi) continue;
                    out[r] = (accumulate ? out[r] : 0.f) + acc[h][b][r] + (bias ? bias[base + r] : 0.f);
                }
            }
        }
    }
}
#endif
#define FLOAT_STEP 8
#else
/* -- plain C kernels: the same arithmetic, one chunk of 32 weights unpacked to bytes ---------- */
/* the integer dot products of w[0..15] . x[0..15] and w[16..31] . x[16..31] */
static inline void dot16x2(const int8_t *w, const int8_t *x, int *lo, int *hi) {
#if defined(__aarch64__) && defined(__ARM_NEON)
    const int8x16_t w0 = vld1q_s8(w), w1 = vld1q_s8(w + 16), x0 = vld1q_s8(x), x1 = vld1q_s8(x + 16);
#if defined(__ARM_FEATURE_DOTPROD)
    *lo = vaddvq_s32(vdotq_s32(vdupq_n_s32(0), w0, x0));
    *hi = vaddvq_s32(vdotq_s32(vdupq_n_s32(0), w1, x1));
#else  /* each product fits 16 bits; pairs are summed into 32 before they could overflow */
    *lo = vaddvq_s32(vpadalq_s16(vpaddlq_s16(vmull_s8(vget_low_s8(w0), vget_low_s8(x0))), vmull_high_s8(w0, x0)));
    *hi = vaddvq_s32(vpadalq_s16(vpaddlq_s16(vmull_s8(vget_low_s8(w1), vget_low_s8(x1))), vmull_high_s8(w1, x1)));
#endif
#else
    int a = 0, b = 0;
    for (int l = 0; l < 16; l++) { a += w[l] * x[l]; b += w[l + 16] * x[l + 16]; }
    *lo = a;
    *hi = b;
#endif
}

/* w[32] as small integers, scales for its two halves, its min coefficient (0 for signed types) */
static inline void unpack_chunk(int type, const uint8_t *p, int8_t *w, float *s, float *minc) {
    *minc = 0.f;
    switch (type) {
    case T_Q4_0: case T_Q4_1: {
        const uint8_t *qs = p + (type == T_Q4_0 ? 2 : 4);
        const int off = type == T_Q4_0 ? 8 : 0;
        for (int l = 0; l < 16; l++) { w[l] = (int8_t)((qs[l] & 15) - off); w[l + 16] = (int8_t)((qs[l] >> 4) - off); }
        s[0] = s[1] = sl_half(sl_u16(p));
        if (type == T_Q4_1) *minc = sl_half(sl_u16(p + 2));
        break;
    }
    case T_Q5_0: {
        uint32_t qh;
        memcpy(&qh, p + 2, 4);
        for (int l = 0; l < 16; l++) {
            w[l] = (int8_t)(((p[6 + l] & 15) | (((qh >> l) & 1) << 4)) - 16);
            w[l + 16] = (int8_t)(((p[6 + l] >> 4) | (((qh >> (l + 16)) & 1) << 4)) - 16);
        }
        s[0] = s[1] = sl_half(sl_u16(p));
        break;
    }
    case T_Q8_0:
        memcpy(w, p + 2, 32);
        s[0] = s[1] = sl_half(sl_u16(p));
        break;
    default: memset(w, 0, 32); s[0] = s[1] = 0.f; break;
    }
}

/* K-quants' sub-block j (0..7) of 32: w as small integers, integer scales of its two halves, its
 * integer min (0 for Q6_K) */
static inline void unpack_k(int type, const uint8_t *p, int j, int8_t *w, int *s0, int *s1, int *mn) {
    if (type == T_Q6_K) {
        const int h = j / 4, k = j % 4;
        const int8_t *sc = (const int8_t *)(p + 192);
        for (int l = 0; l < 32; l++) {
            const int lo = (p[64 * h + 32 * (k & 1) + l] >> (4 * (k >> 1))) & 15;
            const int hi = (p[128 + 32 * h + l] >> (2 * k)) & 3;
            w[l] = (int8_t)((lo | (hi << 4)) - 32);
        }
        *s0 = sc[2 * j];
        *s1 = sc[2 * j + 1];
        *mn = 0;
        return;
    }
    const int five = type == T_Q5_K;
    uint8_t sc, m;
    sl_scale_min_k4(j, p + 4, &sc, &m);
    const uint8_t *q = p + (five ? 48 : 16) + 32 * (j / 2), *qh = p + 16;
    for (int l = 0; l < 32; l++) {
        int v = (q[l] >> (4 * (j & 1))) & 15;
        if (five) v |= ((qh[l] >> j) & 1) << 4;
        w[l] = (int8_t)v;
    }
    *s0 = *s1 = sc;
    *mn = m;
}

static inline __attribute__((always_inline)) void row_quant(const int type, const int B, const uint8_t *p,
                                                            const Act *a, float *out) {
    const int cols = a->cols, chunks = cols / 32, bytes = sl_block_bytes(type);
    float acc[MAXB];
    for (int b = 0; b < B; b++) acc[b] = 0.f;
    if (sl_block(type) == 256) {
        for (int i = 0; i < cols / 256; i++, p += bytes) {
            int si[MAXB], ms[MAXB];
            for (int b = 0; b < B; b++) si[b] = ms[b] = 0;
            for (int j = 0; j < 8; j++) {
                int8_t w[32];
                int s0, s1, mn;
                unpack_k(type, p, j, w, &s0, &s1, &mn);
                for (int b = 0; b < B; b++) {
                    int lo, hi;
                    dot16x2(w, a->k + (size_t)b * cols + 256 * i + 32 * j, &lo, &hi);
                    si[b] += s0 * lo + s1 * hi;
                    ms[b] += mn * a->ks[b * chunks + 8 * i + j];
                }
            }
            const float d = sl_half(sl_u16(type == T_Q6_K ? p + 208 : p));
            const float dmin = type == T_Q6_K ? 0.f : sl_half(sl_u16(p + 2));
            for (int b = 0; b < B; b++) {
                const float dx = a->kd[b * (cols / 256) + i];
                acc[b] += d * dx * (float)si[b] - dmin * dx * (float)ms[b];
            }
        }
        for (int b = 0; b < B; b++) out[b] = acc[b];
        return;
    }
    for (int c = 0; c < chunks; c++) {
        int8_t w[32];
        float s[2], minc;
        unpack_chunk(type, p + (size_t)c * bytes, w, s, &minc);
        for (int b = 0; b < B; b++) {
            int lo, hi;
            dot16x2(w, a->q + (size_t)b * cols + 32 * c, &lo, &hi);
            acc[b] += a->d[b * chunks + c] * (s[0] * (float)lo + s[1] * (float)hi) + minc * a->s[b * chunks + c];
        }
    }
    for (int b = 0; b < B; b++) out[b] = acc[b];
}

static inline __attribute__((always_inline)) void row_float(const int type, const int B, const uint8_t *p,
                                                            const float *x, int cols, float *out) {
    float acc[MAXB][16];
    for (int b = 0; b < B; b++) for (int l = 0; l < 16; l++) acc[b][l] = 0.f;
    for (int j = 0; j < cols; j += 16) {
        float w[16];
        for (int l = 0; l < 16; l++) {
            const uint16_t *h = (const uint16_t *)p + j + l;
            w[l] = type == T_F32 ? ((const float *)p)[j + l] : type == T_F16 ? sl_half(*h) : sl_bf16(*h);
        }
        for (int b = 0; b < B; b++)
            for (int l = 0; l < 16; l++) acc[b][l] += w[l] * x[(size_t)b * cols + j + l];
    }
    for (int b = 0; b < B; b++) {
        float t = 0.f;
        for (int l = 0; l < 16; l++) t += acc[b][l];
        out[b] = t;
    }
}

/* SL_EXACT rows of Q4_1 / Q8_0: the block's weights rebuilt in fp32, times the fp32 inputs */
static inline __attribute__((always_inline)) void row_exact(const int type, const int B, const uint8_t *p,
                                                            const float *x, int cols, float *out) {
    float acc[MAXB][16];
    for (int b = 0; b < B; b++) for (int l = 0; l < 16; l++) acc[b][l] = 0.f;
    const int bytes = sl_block_bytes(type);
    for (int j = 0; j < cols; j += 32, p += bytes) {
        int8_t q[32];
        float s[2], minc, w[32];
        unpack_chunk(type, p, q, s, &minc);
        for (int l = 0; l < 32; l++) w[l] = (float)q[l] * s[0] + minc;
        for (int b = 0; b < B; b++)
            for (int l = 0; l < 32; l++) acc[b][l & 15] += w[l] * x[(size_t)b * cols + j + l];
    }
    for (int b = 0; b < B; b++) {
        float t = 0.f;
        for (int l = 0; l < 16; l++) t += acc[b][l];
        out[b] = t;
    }
}
#define FLOAT_STEP 16
#endif

/* Row kernels specialised on type and batch: the compiler unrolls the batch loops. */
#define BATCHES(CALL) switch (batch) { case 1: CALL(1); break; case 2: CALL(2); break; case 3: CALL(3); break; \
    case 4: CALL(4); break; case 5: CALL(5); break; case 6: CALL(6); break; case 7: CALL(7); break; default: CALL(8); break; }
#define QUANT_ROW(T, NAME) static void NAME(int batch, const uint8_t *p, const Act *a, float *out) { \
        _Pragma("GCC diagnostic push") _Pragma("GCC diagnostic ignored \"-Wunused\"") \
        BATCHES(ROW_##NAME) _Pragma("GCC diagnostic pop") }
#define FLOAT_ROW(T, NAME) static void NAME(int batch, const uint8_t *p, const float *x, int cols, float *out) { \
        BATCHES(ROW_##NAME) }
#define ROW_rq4_0(B) row_quant(T_Q4_0, B, p, a, out)
#define ROW_rq4_1(B) row_quant(T_Q4_1, B, p, a, out)
#define ROW_rq5_0(B) row_quant(T_Q5_0, B, p, a, out)
#define ROW_rq8_0(B) row_quant(T_Q8_0, B, p, a, out)
#define ROW_rq4_k(B) row_quant(T_Q4_K, B, p, a, out)
#define ROW_rq5_k(B) row_quant(T_Q5_K, B, p, a, out)
#define ROW_rq6_k(B) row_quant(T_Q6_K, B, p, a, out)
#define ROW_rf32(B) row_float(T_F32, B, p, x, cols, out)
#define ROW_rf16(B) row_float(T_F16, B, p, x, cols, out)
#define ROW_rbf16(B) row_float(T_BF16, B, p, x, cols, out)
#define ROW_xq4_1(B) row_exact(T_Q4_1, B, p, x, cols, out)
#define ROW_xq8_0(B) row_exact(T_Q8_0, B, p, x, cols, out)
QUANT_ROW(T_Q4_0, rq4_0)
QUANT_ROW(T_Q4_1, rq4_1)
QUANT_ROW(T_Q5_0, rq5_0)
QUANT_ROW(T_Q8_0, rq8_0)
QUANT_ROW(T_Q4_K, rq4_k)
QUANT_ROW(T_Q5_K, rq5_k)
QUANT_ROW(T_Q6_K, rq6_k)
FLOAT_ROW(T_F32, rf32)
FLOAT_ROW(T_F16, rf16)
FLOAT_ROW(T_BF16, rbf16)
FLOAT_ROW(T_Q4_1, xq4_1)
FLOAT_ROW(T_Q8_0, xq8_0)

#ifdef MULTI_ROWS
/* rows of an EXACT matrix taken together: 4 up to batch 4, 2 above (registers for the sums) */
static inline int rows_at_once(int batch) { return batch <= 4 ? 4 : 2; }
#define XROWS(T, NAME) static void NAME(int batch, const uint8_t *p, size_t stride, const float *x, int cols, float *y, \
                                      size_t ys, const float *bias, int acc) { \
    switch (batch) { \
    case 1: rows_exact(T, 4, 1, p, stride, x, cols, y, ys, bias, acc); break; \
    case 2: rows_exact(T, 4, 2, p, stride, x, cols, y, ys, bias, acc); break; \
    case 3: rows_exact(T, 4, 3, p, stride, x, cols, y, ys, bias, acc); break; \
    case 4: rows_exact(T, 4, 4, p, stride, x, cols, y, ys, bias, acc); break; \
    case 5: rows_exact(T, 2, 5, p, stride, x, cols, y, ys, bias, acc); break; \
    case 6: rows_exact(T, 2, 6, p, stride, x, cols, y, ys, bias, acc); break; \
    case 7: rows_exact(T, 2, 7, p, stride, x, cols, y, ys, bias, acc); break; \
    default: rows_exact(T, 2, 8, p, stride, x, cols, y, ys, bias, acc); break; } }
XROWS(T_Q4_1, xrows4_1)
XROWS(T_Q8_0, xrows8_0)
#endif

#ifdef TILED_ROWS
/* `groups` (1 or 2) row groups of an SL_TILED matrix against the batch: up to 4 inputs a pass */
#define XTILES(T, NAME) static void NAME(int groups, int batch, const uint8_t *p, size_t stride, int blocks, const float *x, \
                                       int cols, const float *xs, float *y, size_t ys, const float *bias, int acc, int from, \
                                       int to) { \
    const int b4 = batch < 4 ? batch : 4; \
    if (groups == 2) switch (b4) { \
    case 1: tiles_exact(T, 2, 1, p, stride, blocks, x, cols, xs, y, ys, bias, acc, from, to); break; \
    case 2: tiles_exact(T, 2, 2, p, stride, blocks, x, cols, xs, y, ys, bias, acc, from, to); break; \
    case 3: tiles_exact(T, 2, 3, p, stride, blocks, x, cols, xs, y, ys, bias, acc, from, to); break; \
    default: tiles_exact(T, 2, 4, p, stride, blocks, x, cols, xs, y, ys, bias, acc, from, to); break; } \
    else switch (b4) { \
    case 1: tiles_exact(T, 1, 1, p, stride, blocks, x, cols, xs, y, ys, bias, acc, from, to); break; \
    case 2: tiles_exact(T, 1, 2, p, stride, blocks, x, cols, xs, y, ys, bias, acc, from, to); break; \
    case 3: tiles_exact(T, 1, 3, p, stride, blocks, x, cols, xs, y, ys, bias, acc, from, to); break; \
    default: tiles_exact(T, 1, 4, p, stride, blocks, x, cols, xs, y, ys, bias, acc, from, to); break; } \
    if (batch > 4) NAME(groups, batch - 4, p, stride, blocks, x + 4 * (size_t)cols, cols, xs + 4 * (size_t)blocks, \
                        y + 4 * ys, ys, bias, acc, from, to); }
XTILES(T_Q4_1, xtiles4_1)
XTILES(T_Q8_0, xtiles8_0)
#endif

static inline int exact(const Matrix *m) {
    return (m->flags & SL_EXACT) && (m->type == T_Q4_1 || m->type == T_Q8_0);
}

/* Can this build run `m` as SL_TILED says it is laid out? (Only the AVX2 and AVX-512 builds have
 * the kernels; elsewhere sl_tile never tiles, and a matrix that claims it is refused.) */
static inline int tiled_ok(const Matrix *m) {
#ifdef TILED_ROWS
    return exact(m) && m->rows % TILED_ROWS == 0;
#else
    (void)m;
    return 0;
#endif
}

/* out[b] = the row of `type` at p . the quantized inputs */
static void row_q(int type, const uint8_t *p, const Act *a, int batch, float *out) {
#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
    /* 7 or 8 inputs of a K-quant row in two passes (the weights unpacked twice): in one, their
     * accumulators spill (8 at once took 1.75 ms on a Q6_K 2048x8192, 4 + 4 1.37) */
    if (batch > 6 && sl_block(type) == 256) {
        const int h = (batch + 1) / 2, cols = a->cols, chunks = cols / 32;
        row_q(type, p, a, h, out);
        Act t = *a;
        t.q += (size_t)h * cols, t.k += (size_t)h * cols, t.d += h * chunks, t.s += h * chunks;
        t.kmf += h * chunks, t.ks += h * chunks, t.k16 += h * (cols / 16), t.kd += h * (cols / 256);
        row_q(type, p, &t, batch - h, out + h);
        return;
    }
#endif
    switch (type) {
    case T_Q4_0: rq4_0(batch, p, a, out); break;
    case T_Q4_1: rq4_1(batch, p, a, out); break;
    case T_Q5_0: rq5_0(batch, p, a, out); break;
    case T_Q8_0: rq8_0(batch, p, a, out); break;
    case T_Q4_K: rq4_k(batch, p, a, out); break;
    case T_Q5_K: rq5_k(batch, p, a, out); break;
    case T_Q6_K: rq6_k(batch, p, a, out); break;
    default: for (int b = 0; b < batch; b++) out[b] = 0.f; break;
    }
}

/* out[b] = row r of m . x[b] for b < batch <= MAXB */
static void row_dot(const Matrix *m, int r, const float *x, const Act *a, int batch, float *out) {
    const uint8_t *p = (const uint8_t *)m->data + (size_t)r * sl_row_bytes(m->type, m->cols);
    if (m->flags & SL_EXACT) {
        if (m->type == T_Q4_1) { xq4_1(batch, p, x, m->cols, out); return; }
        if (m->type == T_Q8_0) { xq8_0(batch, p, x, m->cols, out); return; }
    }
    switch (m->type) {
    case T_Q4_0: case T_Q4_1: case T_Q5_0: case T_Q8_0: case T_Q4_K: case T_Q5_K: case T_Q6_K:
        row_q(m->type, p, a, batch, out);
        break;
    case T_F32: rf32(batch, p, x, m->cols, out); break;
    case T_F16: rf16(batch, p, x, m->cols, out); break;
    case T_BF16: rbf16(batch, p, x, m->cols, out); break;
    default: for (int b = 0; b < batch; b++) out[b] = 0.f; break;
    }
}

/* y_i[b][rows_i] (+)= W_i x[b] (+ bias_i) for up to 3 matrices sharing the input x (q/k/v,
 * gate/up): one parallel pass over all their rows. `a` is x quantized (used by quantized types). */
typedef struct {
    const Matrix *const *ms;
    float *const *ys;
    int ends[3];
    const float *x;
    const Act *a;
    int batch, accumulate;
} MatvecJob;

static void matvec_rows(void *arg, int lo, int hi) {
    const MatvecJob *j = (const MatvecJob *)arg;
    for (int r = lo; r < hi;) {
        const int i = r < j->ends[0] ? 0 : r < j->ends[1] ? 1 : 2;
        const Matrix *m = j->ms[i];
        const int row = i ? r - j->ends[i - 1] : r;
        float *y = j->ys[i];
#ifdef TILED_ROWS
        if (m->flags & SL_TILED) {  /* the row's group of 16 (and the next, when whole), as far as this chunk and matrix go */
            const int group = row - row % TILED_ROWS, from = row - group, left = hi - r < m->rows - row ? hi - r : m->rows - row;
            const int groups = TILED_GROUPS > 1 && from == 0 && left >= 2 * TILED_ROWS ? 2 : 1;
            const int to = from + left < groups * TILED_ROWS ? from + left - (groups - 1) * TILED_ROWS : TILED_ROWS;
            const int blocks = m->cols / 32;
            const size_t stride = (size_t)blocks * tile_bytes(m->type);
            const uint8_t *p = (const uint8_t *)m->data + (size_t)(group / TILED_ROWS) * stride;
            (m->type == T_Q4_1 ? xtiles4_1 : xtiles8_0)(groups, j->batch, p, stride, blocks, j->x, m->cols, j->a->xs,
                                                        y + group, m->rows, m->bias ? m->bias + group : NULL,
                                                        j->accumulate, from, to);
            r += (groups - 1) * TILED_ROWS + to - from;
            continue;
        }
#endif
#ifdef MULTI_ROWS
        const int group = rows_at_once(j->batch);
        if (exact(m) && r + group <= hi && row + group <= m->rows) {
            const size_t stride = sl_row_bytes(m->type, m->cols);
            const uint8_t *p = (const uint8_t *)m->data + (size_t)row * stride;
            (m->type == T_Q4_1 ? xrows4_1 : xrows8_0)(j->batch, p, stride, j->x, m->cols, y + row, m->rows,
                                                      m->bias ? m->bias + row : NULL, j->accumulate);
            r += group;
            continue;
        }
#endif
        float v[MAXB];
        row_dot(m, row, j->x, j->a, j->batch, v);
        const float bias = m->bias ? m->bias[row] : 0.f;
        for (int b = 0; b < j->batch; b++) {
            float *out = y + (size_t)b * m->rows + row;
            *out = (j->accumulate ? *out : 0.f) + v[b] + bias;
        }
        r++;
    }
}

static void matvec(const Matrix *const *ms, float *const *ys, int count, const float *x, const Act *a,
                   int batch, int accumulate, int threads) {
    MatvecJob job = {ms, ys, {0, 0, 0}, x, a, batch, accumulate};
    int total = 0;
    for (int i = 0; i < count; i++) job.ends[i] = total += ms[i]->rows;
    for (int i = count; i < 3; i++) job.ends[i] = total;
    /* ~SL_CHUNKS chunks per thread: enough to rebalance around a descheduled thread, few enough
     * that a small model's matmuls are not all hand-offs (16 cost the default model 27% idle) */
#ifndef SL_CHUNKS
#define SL_CHUNKS 4
#endif
    int chunk = total / (threads * SL_CHUNKS > 0 ? threads * SL_CHUNKS : 1);
    chunk = chunk < 16 ? 16 : (chunk + 15) & ~15;
    parallel_for(total, chunk, matvec_rows, &job, threads);
}


static int needs_act(const Matrix *const *ms, int count) {
    int need = 0;
    for (int i = 0; i < count; i++)
        if (quantized(ms[i]->type) && !exact(ms[i])) need |= sl_block(ms[i]->type) == 256 ? NEED256 : NEED32;
        else if ((ms[i]->flags & SL_TILED) && ms[i]->type == T_Q4_1) need |= NEEDSUMS;
    return need;
}

/* e^x to within ~2 ulp (Cephes' polynomial), written so that loops around it vectorize */
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

typedef struct {
    const float *q, *keys, *values;
    float *probs, *att;
    int batch, KV, per_kv, qd, hd, pos, capacity;
    size_t row_stride;
    float scale;
    int parts;  /* each group's query heads in this many items (so that small models fill the threads) */
    int shared; /* positions below this are the same in every row's cache: read from row 0's */
    const int *rows; /* the cache row of each batch row (NULL: the same) */
} AttnJob;

#if SL_SIMD && defined(__AVX512F__)
/* Attention in 512-bit registers, for head sizes that are multiples of 64, in groups of up to 4
 * query heads: each key and value row is loaded once for the group, and every sum has its own
 * register. (The plain loops reduced each score alone and kept the output in memory: a chain of
 * dependent multiply-adds per head and position, ~75 cycles each; the attention was a sixth of
 * the default model's batch-4 step at 140 positions.) */
#define ATT_SIMD 1
/* keys and values prefetched this many positions ahead: the cache comes from memory (the weights
 * pass through the L3 between one step's use and the next), 2-4% of the step at 400 positions */
#ifndef KV_AHEAD
#define KV_AHEAD 16
#endif

/* p[h * ps + t] = scale * q_h . k_t for g heads (q_h at q + h * hd), positions from <= t < n */
static inline __attribute__((always_inline)) void scores_g(const int g, const float *q, const float *kk, int from, int n,
                                                           int hd, float scale, float *p, size_t ps) {
    const __m128 sc = _mm_set1_ps(scale);
    int t = from;
    for (; t + 4 <= n; t += 4) {  /* four positions, their sums reduced together */
        __m512 acc[4][4];
        for (int h = 0; h < g; h++) for (int i = 0; i < 4; i++) acc[h][i] = _mm512_setzero_ps();
        for (int off = 0; off < 4 * hd; off += 16) __builtin_prefetch(kk + (size_t)(t + KV_AHEAD) * hd + off, 0, 3);
        for (int c = 0; c < hd; c += 16)
            for (int i = 0; i < 4; i++) {
                const __m512 k = _mm512_loadu_ps(kk + (size_t)(t + i) * hd + c);
                for (int h = 0; h < g; h++) acc[h][i] = _mm512_fmadd_ps(_mm512_loadu_ps(q + (size_t)h * hd + c), k, acc[h][i]);
            }
        for (int h = 0; h < g; h++) _mm_storeu_ps(p + h * ps + t, _mm_mul_ps(hsum4(acc[h][0], acc[h][1], acc[h][2], acc[h][3]), sc));
    }
    for (; t < n; t++) {
        __m512 acc[4];
        for (int h = 0; h < g; h++) acc[h] = _mm512_setzero_ps();
        for (int c = 0; c < hd; c += 16) {
            const __m512 k = _mm512_loadu_ps(kk + (size_t)t * hd + c);
            for (int h = 0; h < g; h++) acc[h] = _mm512_fmadd_ps(_mm512_loadu_ps(q + (size_t)h * hd + c), k, acc[h]);
        }
        for (int h = 0; h < g; h++) p[h * ps + t] = _mm512_reduce_add_ps(acc[h]) * scale;
    }
}

/* out_h = sum over t < n of p[h * ps + t] v_t for g heads (out_h at out + h * hd), 64 values a
 * pass; v_t from vv0 below `shared`, from vv above */
static inline __attribute__((always_inline)) void mix_g(const int g, const float *p, size_t ps, const float *vv0, int shared,
                                                        const float *vv, int n, int hd, float *out) {
    for (int c = 0; c < hd; c += 64) {
        __m512 acc[4][4];
        for (int h = 0; h < g; h++) for (int i = 0; i < 4; i++) acc[h][i] = _mm512_setzero_ps();
        for (int t = 0; t < n; t++) {
            const float *v = (t < shared ? vv0 : vv) + (size_t)t * hd + c;
            for (int off = 0; off < 64; off += 16) __builtin_prefetch(v + KV_AHEAD * hd + off, 0, 3);
            const __m512 v0 = _mm512_loadu_ps(v), v1 = _mm512_loadu_ps(v + 16), v2 = _mm512_loadu_ps(v + 32), v3 = _mm512_loadu_ps(v + 48);
            for (int h = 0; h < g; h++) {
                const __m512 w = _mm512_set1_ps(p[h * ps + t]);
                acc[h][0] = _mm512_fmadd_ps(w, v0, acc[h][0]);
                acc[h][1] = _mm512_fmadd_ps(w, v1, acc[h][1]);
                acc[h][2] = _mm512_fmadd_ps(w, v2, acc[h][2]);
                acc[h][3] = _mm512_fmadd_ps(w, v3, acc[h][3]);
            }
        }
        for (int h = 0; h < g; h++) for (int i = 0; i < 4; i++) _mm512_storeu_ps(out + (size_t)h * hd + c + 16 * i, acc[h][i]);
    }
}

#elif SL_SIMD
/* The same in the AVX2 build (256-bit registers, head sizes that are multiples of 32): the plain
 * loops cost a chain of dependent multiply-adds per head and position here too, and at batch 4
 * they were a quarter of the default model's step at 400 positions (Zen 3). */
#define ATT_SIMD 1
#ifndef KV_AHEAD
#define KV_AHEAD 16
#endif

/* [sum a, sum b, sum c, sum d] of 4 vectors */
static inline __m128 hsum4_256(__m256 a, __m256 b, __m256 c, __m256 d) {
    const __m256 ab = _mm256_hadd_ps(a, b), cd = _mm256_hadd_ps(c, d);  /* a01 a23 b01 b23 | ... */
    const __m256 abcd = _mm256_hadd_ps(ab, cd);                          /* a b c d (lane 0) | a b c d (lane 1) */
    return _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1));
}

/* p[h * ps + t] = scale * q_h . k_t for g heads (q_h at q + h * hd), positions from <= t < n:
 * four positions a pass for up to 3 heads, two for 4 (the sums' registers) */
static inline __attribute__((always_inline)) void scores_g(const int g, const float *q, const float *kk, int from, int n,
                                                           int hd, float scale, float *p, size_t ps) {
    const int P = g <= 3 ? 4 : 2;
    int t = from;
    for (; t + P <= n; t += P) {
        __m256 acc[4][4];
        for (int h = 0; h < g; h++) for (int i = 0; i < P; i++) acc[h][i] = _mm256_setzero_ps();
        for (int off = 0; off < P * hd; off += 16) __builtin_prefetch(kk + (size_t)(t + KV_AHEAD) * hd + off, 0, 3);
        for (int c = 0; c < hd; c += 8)
            for (int i = 0; i < P; i++) {
                const __m256 k = _mm256_loadu_ps(kk + (size_t)(t + i) * hd + c);
                for (int h = 0; h < g; h++) acc[h][i] = _mm256_fmadd_ps(_mm256_loadu_ps(q + (size_t)h * hd + c), k, acc[h][i]);
            }
        for (int h = 0; h < g; h++) {
            if (P == 4) {
                _mm_storeu_ps(p + h * ps + t, _mm_mul_ps(hsum4_256(acc[h][0], acc[h][1], acc[h][2], acc[h][3]), _mm_set1_ps(scale)));
            } else {
                p[h * ps + t] = hsum(acc[h][0]) * scale;
                p[h * ps + t + 1] = hsum(acc[h][1]) * scale;
            }
        }
    }
    for (; t < n; t++) {
        __m256 acc[4];
        for (int h = 0; h < g; h++) acc[h] = _mm256_setzero_ps();
        for (int c = 0; c < hd; c += 8) {
            const __m256 k = _mm256_loadu_ps(kk + (size_t)t * hd + c);
            for (int h = 0; h < g; h++) acc[h] = _mm256_fmadd_ps(_mm256_loadu_ps(q + (size_t)h * hd + c), k, acc[h]);
        }
        for (int h = 0; h < g; h++) p[h * ps + t] = hsum(acc[h]) * scale;
    }
}

/* out_h = sum over t < n of p[h * ps + t] v_t for g heads (out_h at out + h * hd), 16 values a
 * pass; v_t from vv0 below `shared`, from vv above */
static inline __attribute__((always_inline)) void mix_g(const int g, const float *p, size_t ps, const float *vv0, int shared,
                                                        const float *vv, int n, int hd, float *out) {
    for (int c = 0; c < hd; c += 16) {
        __m256 acc[4][2];
        for (int h = 0; h < g; h++) acc[h][0] = acc[h][1] = _mm256_setzero_ps();
        for (int t = 0; t < n; t++) {
            const float *v = (t < shared ? vv0 : vv) + (size_t)t * hd + c;
            if (c == 0) for (int off = 0; off < hd; off += 16) __builtin_prefetch(v + KV_AHEAD * hd + off, 0, 3);
            const __m256 v0 = _mm256_loadu_ps(v), v1 = _mm256_loadu_ps(v + 8);
            for (int h = 0; h < g; h++) {
                const __m256 w = _mm256_broadcast_ss(p + h * ps + t);
                acc[h][0] = _mm256_fmadd_ps(w, v0, acc[h][0]);
                acc[h][1] = _mm256_fmadd_ps(w, v1, acc[h][1]);
            }
        }
        for (int h = 0; h < g; h++) {
            _mm256_storeu_ps(out + (size_t)h * hd + c, acc[h][0]);
            _mm256_storeu_ps(out + (size_t)h * hd + c + 8, acc[h][1]);
        }
    }
}
#else
#define ATT_SIMD 0
#endif

#if ATT_SIMD
#define HEAD_GROUPS(CALL) switch (g) { case 1: CALL(1); break; case 2: CALL(2); break; case 3: CALL(3); break; default: CALL(4); break; }
static void scores(const float *q, int G, const float *kk0, int shared, const float *kk, int n, int hd, float scale,
                   float *p, size_t ps) {
    for (int h = 0; h < G; h += 4) {
        const int g = G - h < 4 ? G - h : 4;
#define SCORES(k) do { scores_g(k, q + (size_t)h * hd, kk0, 0, shared, hd, scale, p + h * ps, ps); \
                       scores_g(k, q + (size_t)h * hd, kk, shared, n, hd, scale, p + h * ps, ps); } while (0)
        HEAD_GROUPS(SCORES)
    }
}

static void mix(const float *p, size_t ps, int G, const float *vv0, int shared, const float *vv, int n, int hd, float *out) {
    for (int h = 0; h < G; h += 4) {
        const int g = G - h < 4 ? G - h : 4;
#define MIX(k) mix_g(k, p + h * ps, ps, vv0, shared, vv, n, hd, out + (size_t)h * hd)
        HEAD_GROUPS(MIX)
    }
}
#endif

/* items lo..hi of kv heads x parts x batch: for each query head of the item, softmax(q K^T /
 * sqrt(hd)) V over positions 0..pos. A group's heads go together, so each key and value row is
 * read once for all of them (one item per query head read the cache per_kv times: 4x on Llama 3).
 * Positions below J->shared (the prompt that candidates share) are read from row 0's copy for every
 * row, and a group's rows are neighbouring items: the prompt's keys and values come from memory
 * once per step for the batch, then from the cache (4 copies of a 400-token prompt are 37 MB on
 * the default model, more than the L3 beside the weights). */
static void attend(void *arg, int lo, int hi) {
    const AttnJob *J = (const AttnJob *)arg;
    const int hd = J->hd, pos = J->pos, batch = J->batch, G = J->per_kv / J->parts, shared = J->shared;
    const size_t ps = (size_t)batch * J->capacity;  /* one head's probabilities to the next's */
    for (int item = lo; item < hi; item++) {
        const int b = item % batch, part = item / batch % J->parts, g = item / batch / J->parts;
        const int j0 = g * J->per_kv + part * G;
        const size_t base = ((size_t)(J->rows ? J->rows[b] : b) * J->KV + g) * J->row_stride;
        const float *kk = J->keys + base, *vv = J->values + base;
        const float *kk0 = J->keys + (size_t)g * J->row_stride, *vv0 = J->values + (size_t)g * J->row_stride;
        const float *q0 = J->q + (size_t)b * J->qd + (size_t)j0 * hd;
        float *p0 = J->probs + ((size_t)j0 * batch + b) * J->capacity;
        float *out0 = J->att + (size_t)b * J->qd + (size_t)j0 * hd;
        const int simd = ATT_SIMD && hd % 64 == 0;
#if ATT_SIMD
        if (simd) scores(q0, G, kk0, shared, kk, pos + 1, hd, J->scale, p0, ps);
#endif
        if (!simd)
            for (int t = 0; t <= pos; t++) {
                const float *kt = (t < shared ? kk0 : kk) + (size_t)t * hd;
                for (int h = 0; h < G; h++) {
                    const float *qh = q0 + (size_t)h * hd;
                    float s = 0.f;
                    #pragma omp simd reduction(+ : s)
                    for (int i = 0; i < hd; i++) s += qh[i] * kt[i];
                    p0[h * ps + t] = s * J->scale;
                }
            }
        for (int h = 0; h < G; h++) {
            float *p = p0 + h * ps;
            float top = -FLT_MAX;
            for (int t = 0; t <= pos; t++) top = p[t] > top ? p[t] : top;
            float total = 0.f;
            #pragma omp simd reduction(+ : total)
            for (int t = 0; t <= pos; t++) {
                p[t] = exp_approx(p[t] - top);
                total += p[t];
            }
            const float inv = 1.0f / total;
            for (int t = 0; t <= pos; t++) p[t] *= inv;
        }
#if ATT_SIMD
        if (simd) mix(p0, ps, G, vv0, shared, vv, pos + 1, hd, out0);
#endif
        if (!simd) {
            for (int i = 0; i < G * hd; i++) out0[i] = 0.f;
            for (int t = 0; t <= pos; t++) {
                const float *vt = (t < shared ? vv0 : vv) + (size_t)t * hd;
                for (int h = 0; h < G; h++) {
                    const float w = p0[h * ps + t];
                    float *out = out0 + (size_t)h * hd;
                    #pragma omp simd
                    for (int i = 0; i < hd; i++) out[i] += w * vt[i];
                }
            }
        }
    }
}

static void rms_norm(const float *x, const float *w, int dim, float eps, float *out) {
    float ss = 0.f;
    for (int i = 0; i < dim; i++) ss += x[i] * x[i];
    const float inv = 1.0f / sqrtf(ss / dim + eps);
    for (int i = 0; i < dim; i++) out[i] = w[i] * (x[i] * inv);
}

/* neox: element i pairs with i + half (HF rotate_half); else 2i with 2i + 1 (GGML normal) */
static void rope(float *v, const float *cs, const float *sn, int half, int neox) {
    for (int i = 0; i < half; i++) {
        const int i0 = neox ? i : 2 * i, i1 = neox ? i + half : 2 * i + 1;
        const float a = v[i0], b = v[i1];
        v[i0] = a * cs[i] - b * sn[i];
        v[i1] = b * cs[i] + a * sn[i];
    }
}

static int widest(const Model *m) {
    int w = m->dim;
    if (m->intermediate > w) w = m->intermediate;
    if (m->heads * m->head_dim > w) w = m->heads * m->head_dim;
    return w;
}

/* floats of scratch an Act of `batch` x `cols` needs (both layouts) */
static long act_floats(int batch, int cols) {
    const long values = ((long)batch * cols + 63) / 64 * 16;  /* int8s, in floats, 64-byte aligned */
    const long per32 = (long)batch * (cols / 32);
    return 2 * values + 4 * per32 + (long)batch * (cols / 256) + per32 / 2 + per32 + 64;
}

static Act act_at(float *at, int batch, int cols) {
    const long values = ((long)batch * cols + 63) / 64 * 16, per32 = (long)batch * (cols / 32);
    Act a;
    a.q = (int8_t *)at;
    a.k = (int8_t *)(at + values);
    a.d = at + 2 * values;
    a.s = a.d + per32;
    a.kmf = a.s + per32;
    a.kd = a.kmf + per32;
    a.k16 = (int16_t *)(a.kd + (long)batch * (cols / 256));  /* per32 floats: 2 per 32 int16s */
    a.ks = a.k16 + 2 * per32;                                /* per32 / 2 floats */
    a.xs = (float *)a.ks + (per32 + 1) / 2;                  /* per32 floats */
    a.cols = cols;
    return a;
}

long sl_scratch_floats(const Model *m, int batch, int capacity) {
    const long qd = (long)m->heads * m->head_dim, kvd = (long)m->kv_heads * m->head_dim;
    return (long)batch * (m->dim + widest(m) + 2 * qd + 2 * kvd + 2L * m->intermediate)
         + (long)m->heads * batch * capacity + m->head_dim + act_floats(batch, widest(m)) + 64;
}

static int matrix_ok(const Matrix *w, int rows, int cols) {
    const int block = sl_block(w->type);
    /* float rows go 16 at a time; quantized inputs are cut in 32s */
    return block && w->data && w->rows == rows && w->cols == cols && cols % block == 0
           && cols % (quantized(w->type) ? 32 : 16) == 0 && (!(w->flags & SL_TILED) || tiled_ok(w));
}

/* Is every size what the step will read? (A wrong one would be an out-of-bounds read.) */
static int model_ok(const Model *m) {
    const int dim = m->dim, hd = m->head_dim, qd = m->heads * hd, kvd = m->kv_heads * hd;
    if (m->layers <= 0 || dim <= 0 || hd <= 0 || hd % 2 || m->kv_heads <= 0 || m->heads % m->kv_heads
        || m->intermediate <= 0 || m->vocab <= 0 || !m->layer || !m->final_norm || !m->inv_freq)
        return 0;
    if (!matrix_ok(&m->embed, m->vocab, dim) || !matrix_ok(&m->lm_head, m->vocab, dim)) return 0;
    if (m->embed.flags & SL_TILED) return 0;  /* its rows are read one by one, as GGUF rows */
    for (int l = 0; l < m->layers; l++) {
        const Layer *L = &m->layer[l];
        if (!L->norm1 || !L->norm2 || !matrix_ok(&L->q, qd, dim) || !matrix_ok(&L->k, kvd, dim)
            || !matrix_ok(&L->v, kvd, dim) || !matrix_ok(&L->o, dim, qd)
            || !matrix_ok(&L->gate, m->intermediate, dim) || !matrix_ok(&L->up, m->intermediate, dim)
            || !matrix_ok(&L->down, dim, m->intermediate))
            return 0;
    }
    return 1;
}

static void project(const Matrix *const *ms, float *const *ys, int count, const float *x, int batch, int cols,
                    Act *a, int accumulate, int threads) {
    const int need = needs_act(ms, count);
    if (need) quantize_act(x, batch, cols, a, need);
    a->cols = cols;
    matvec(ms, ys, count, x, a, batch, accumulate, threads);
}

/* tokens[batch] at position `pos` (every row at the same position); logits[batch][vocab]. The
 * cache holds `cached` rows, batch row b in cache row rows[b] (rows NULL: b, and cached = batch):
 * candidates that finished leave the batch without their caches being moved. The cache rows hold
 * the same keys and values below position `shared` (a prompt the candidates share; 0: nothing
 * known to be shared), which are then read from cache row 0's alone.
 * Returns 0, or -1 when the model or the sizes are not what this step can run. */
int sl_step_rows(const Model *m, const int64_t *tokens, int batch, const int *rows, int cached, int pos,
                 float *cache, int capacity, float *logits, float *scratch, int shared) {
    if (batch < 1 || batch > MAXB || pos < 0 || pos >= capacity || shared < 0 || shared > pos || !model_ok(m)) return -1;
    if (!rows) cached = batch;
    for (int b = 0; b < batch; b++) {
        if (tokens[b] < 0 || tokens[b] >= m->vocab) return -1;
        if (rows && (rows[b] < 0 || rows[b] >= cached)) return -1;
    }
    const int dim = m->dim, hd = m->head_dim, half = hd / 2, H = m->heads, KV = m->kv_heads;
    const int inter = m->intermediate, qd = H * hd, kvd = KV * hd, per_kv = H / KV, T = m->threads;
    float *h = scratch;                        /* [batch][dim] residual stream */
    float *xn = h + (size_t)batch * dim;       /* [batch][widest] normed input / activation */
    float *q = xn + (size_t)batch * widest(m); /* [batch][qd] */
    float *k = q + (size_t)batch * qd, *v = k + (size_t)batch * kvd;
    float *att = v + (size_t)batch * kvd;      /* [batch][qd] */
    float *g = att + (size_t)batch * qd, *u = g + (size_t)batch * inter;
    float *probs = u + (size_t)batch * inter;  /* [H][batch][capacity] */
    float *cs = probs + (size_t)H * batch * capacity, *sn = cs + half;
    float *act_mem = (float *)(((uintptr_t)(sn + half) + 63) & ~(uintptr_t)63);
    Act a = act_at(act_mem, batch, widest(m));
    for (int i = 0; i < half; i++) {
        const float f = (float)pos * m->inv_freq[i];
        cs[i] = cosf(f);
        sn[i] = sinf(f);
    }
    const size_t embed_row = sl_row_bytes(m->embed.type, dim);
    for (int b = 0; b < batch; b++)
        sl_dequant_row(m->embed.type, (const uint8_t *)m->embed.data + (size_t)tokens[b] * embed_row, dim, h + (size_t)b * dim);
    const float scale = 1.0f / sqrtf((float)hd);
    int parts = 1;  /* at least 4 attention items per thread where the heads allow (SmolLM2: 3 groups) */
    while (parts < per_kv && (long)batch * KV * parts < 4L * T)
        for (parts++; per_kv % parts; parts++) {}
    const size_t row_stride = (size_t)capacity * hd;             /* one kv head */
    const size_t kind_stride = (size_t)cached * KV * row_stride;  /* keys -> values */
    for (int l = 0; l < m->layers; l++) {
        const Layer *L = &m->layer[l];
        float *keys = cache + (size_t)l * 2 * kind_stride, *values = keys + kind_stride;
        for (int b = 0; b < batch; b++) rms_norm(h + (size_t)b * dim, L->norm1, dim, m->eps, xn + (size_t)b * dim);
        const Matrix *qkv[3] = {&L->q, &L->k, &L->v};
        float *qkv_out[3] = {q, k, v};
        project(qkv, qkv_out, 3, xn, batch, dim, &a, 0, T);
        for (int b = 0; b < batch; b++) {
            for (int j = 0; j < H; j++) {
                float *row = q + (size_t)b * qd + j * hd;
                if (L->q_norm) rms_norm(row, L->q_norm, hd, m->eps, row);
                rope(row, cs, sn, half, m->rope_neox);
            }
            for (int j = 0; j < KV; j++) {
                float *row = k + (size_t)b * kvd + j * hd;
                if (L->k_norm) rms_norm(row, L->k_norm, hd, m->eps, row);
                rope(row, cs, sn, half, m->rope_neox);
                const size_t at = ((size_t)(rows ? rows[b] : b) * KV + j) * row_stride + (size_t)pos * hd;
                memcpy(keys + at, row, hd * sizeof(float));
                memcpy(values + at, v + (size_t)b * kvd + j * hd, hd * sizeof(float));
            }
        }
        AttnJob job = {q, keys, values, probs, att, batch, KV, per_kv, qd, hd, pos, capacity, row_stride, scale, parts,
                       shared, rows};
        parallel_for(batch * KV * parts, 1, attend, &job, T);
        const Matrix *o[1] = {&L->o};
        float *o_out[1] = {h};
        project(o, o_out, 1, att, batch, qd, &a, 1, T);
        for (int b = 0; b < batch; b++) rms_norm(h + (size_t)b * dim, L->norm2, dim, m->eps, xn + (size_t)b * dim);
        const Matrix *gu[2] = {&L->gate, &L->up};
        float *gu_out[2] = {g, u};
        project(gu, gu_out, 2, xn, batch, dim, &a, 0, T);
        for (long i = 0; i < (long)batch * inter; i++) xn[i] = g[i] / (1.0f + exp_approx(-g[i])) * u[i];
        const Matrix *down[1] = {&L->down};
        float *down_out[1] = {h};
        project(down, down_out, 1, xn, batch, inter, &a, 1, T);
    }
    for (int b = 0; b < batch; b++) rms_norm(h + (size_t)b * dim, m->final_norm, dim, m->eps, xn + (size_t)b * dim);
    const Matrix *head[1] = {&m->lm_head};
    float *head_out[1] = {logits};
    project(head, head_out, 1, xn, batch, dim, &a, 0, T);
    return 0;
}

int sl_step_shared(const Model *m, const int64_t *tokens, int batch, int pos, float *cache, int capacity,
                   float *logits, float *scratch, int shared) {
    return sl_step_rows(m, tokens, batch, NULL, batch, pos, cache, capacity, logits, scratch, shared);
}

int sl_step(const Model *m, const int64_t *tokens, int batch, int pos, float *cache, int capacity,
            float *logits, float *scratch) {
    return sl_step_rows(m, tokens, batch, NULL, batch, pos, cache, capacity, logits, scratch, 0);
}

/* y[n][rows] = x[n][cols] W^T + bias, any n (slices of MAXB inputs) */
void sl_matmul(const Matrix *w, const float *x, int n, float *y, int threads) {
    if (!matrix_ok(w, w->rows, w->cols) || n <= 0) return;
    const int cols = w->cols;
    float *mem = (float *)malloc(act_floats(MAXB, cols) * sizeof(float));
    if (!mem) return;
    Act a = act_at(mem, MAXB, cols);
    const Matrix *ms[1] = {w};
    for (int at = 0; at < n; at += MAXB) {
        const int batch = n - at < MAXB ? n - at : MAXB;
        float *ys[1] = {y + (size_t)at * w->rows};
        project(ms, ys, 1, x + (size_t)at * cols, batch, cols, &a, 0, threads);
    }
    free(mem);
}

/* logits[b] = lm_head(rms_norm(h[b]) * final_norm) for `batch` rows of h */
void sl_head(const Model *m, const float *h, int batch, float *logits) {
    if (batch <= 0 || !matrix_ok(&m->lm_head, m->vocab, m->dim) || !m->final_norm) return;
    float *xn = (float *)malloc(((size_t)MAXB * m->dim + act_floats(MAXB, m->dim)) * sizeof(float));
    if (!xn) return;
    Act a = act_at(xn + (size_t)MAXB * m->dim, MAXB, m->dim);
    const Matrix *ms[1] = {&m->lm_head};
    for (int at = 0; at < batch; at += MAXB) {
        const int n = batch - at < MAXB ? batch - at : MAXB;
        for (int b = 0; b < n; b++) rms_norm(h + (size_t)(at + b) * m->dim, m->final_norm, m->dim, m->eps, xn + (size_t)b * m->dim);
        float *ys[1] = {logits + (size_t)at * m->vocab};
        project(ms, ys, 1, xn, n, m->dim, &a, 0, m->threads);
    }
    free(xn);
}

/* -- helpers for a long prompt's prefill ---------------------------------------------------
 * The prompt's matmuls and attention run in torch (bf16 on the CPU's matrix units); these do the
 * elementwise work between them in one pass each, in place of a dozen torch ops per layer. */
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
    for (long i = 0; i < n; i++) h[i] += sl_bf16(y[i]);
}

/* qkv[t] = [q heads | k heads | v heads] (bf16) for positions start..start+rows: rotate q and k
 * (cos/sin tables [rows][head_dim/2]; `neox` as in Model.rope_neox), write rotated k and v to
 * this layer's fp32 cache (batch 0, [kv_heads][capacity][head_dim]) and q, k, v in bf16 to their
 * own [rows][heads][head_dim] arrays. */
void sl_rope_split(const uint16_t *qkv, int rows, int start, const float *cos_t, const float *sin_t,
                   int heads, int kv_heads, int hd, uint16_t *q_out, uint16_t *k_out, uint16_t *v_out,
                   float *kcache, float *vcache, int capacity, int threads, int neox) {
    const int half = hd / 2, width = (heads + 2 * kv_heads) * hd;
    #pragma omp parallel num_threads(threads)
    {
        float *v = (float *)malloc((size_t)hd * sizeof(float));
        #pragma omp for schedule(static)
        for (int t = 0; t < rows; t++) {
            if (!v) continue;
            const uint16_t *row = qkv + (size_t)t * width;
            const float *cs = cos_t + (size_t)t * half, *sn = sin_t + (size_t)t * half;
            for (int k = 0; k < heads + kv_heads; k++) {
                const uint16_t *src = row + k * hd;
                for (int i = 0; i < hd; i++) v[i] = sl_bf16(src[i]);
                rope(v, cs, sn, half, neox);
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
                for (int i = 0; i < hd; i++) dst[i] = sl_bf16(src[i]);
            }
        }
        free(v);
    }
}

/* sizeof(Matrix), sizeof(Layer), sizeof(Model) for which = 0, 1, 2: the ctypes mirrors are checked
 * against them */
long sl_sizeof(int which) {
    return which == 0 ? (long)sizeof(Matrix) : which == 1 ? (long)sizeof(Layer) : which == 2 ? (long)sizeof(Model) : -1;
}

/* An EXACT Q4_1 / Q8_0 matrix's GGUF rows (src) in SL_TILED's layout (dst, as many bytes; see
 * tile_exact). Returns 1, or 0 when this build has no tiled kernels or the shape does not tile
 * (rows not a multiple of 16, cols not of 32): the caller keeps the GGUF rows. */
int sl_tile(int type, int rows, int cols, const void *src, void *dst) {
#ifdef TILED_ROWS
    if ((type != T_Q4_1 && type != T_Q8_0) || rows <= 0 || rows % TILED_ROWS || cols <= 0 || cols % 32) return 0;
    const int blocks = cols / 32, bb = sl_block_bytes(type), tb = tile_bytes(type), head = type == T_Q4_1 ? 4 : 2;
    const size_t row_bytes = (size_t)blocks * bb;
    for (int g = 0; g < rows / TILED_ROWS; g++)
        for (int k = 0; k < blocks; k++) {
            uint8_t *t = (uint8_t *)dst + ((size_t)g * blocks + k) * tb;
            for (int r = 0; r < TILED_ROWS; r++) {
                const uint8_t *blk = (const uint8_t *)src + (size_t)(g * TILED_ROWS + r) * row_bytes + (size_t)k * bb;
                memcpy(t + 2 * r, blk, 2);                                        /* d */
                if (type == T_Q4_1) memcpy(t + 32 + 2 * r, blk + 2, 2);           /* min */
                for (int c = 0; c < bb - head; c++) t[TILED_ROWS * (head + c) + r] = blk[head + c];
            }
        }
    return 1;
#else
    (void)type, (void)rows, (void)cols, (void)src, (void)dst;
    return 0;
#endif
}

/* Last in the file on purpose: placed before the attention code, it made gcc build the generic
 * aarch64 Q4_1 matmul differently (its bits no longer those of the dotprod build;
 * tests/unit/test_native_arm.py), though that code does not call it.
 *
 * out[b] = the log-prob of tokens[b] under row b of logits (at logits + b * stride): its logit less
 * the row's log-sum-exp, summed in double (the sampler's record of what it drew; engine/logits.py).
 * Returns 0, or -1 for a token outside the vocabulary. */
int sl_logprobs(const float *logits, long stride, int batch, int vocab, const int64_t *tokens, float *out) {
    for (int b = 0; b < batch; b++) if (tokens[b] < 0 || tokens[b] >= vocab) return -1;
    for (int b = 0; b < batch; b++) {
        const float *row = logits + (size_t)b * stride;
        float top = row[0];
        for (int t = 1; t < vocab; t++) top = row[t] > top ? row[t] : top;
        double total = 0.0;
        #pragma omp simd reduction(+ : total)
        for (int t = 0; t < vocab; t++) total += (double)exp_approx(row[t] - top);
        out[b] = (float)((double)row[tokens[b]] - ((double)top + log(total)));
    }
    return 0;
}
