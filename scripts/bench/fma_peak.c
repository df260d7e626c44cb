/* The machine's f32 multiply-add peak per vector instruction set, measured:
 * every thread runs independent FMA chains (enough to hide the latency) and
 * never touches memory. Prints one JSON object, GFLOP/s over all threads:
 *   {"threads": 2, "avx2": 214.1, "avx512": 401.3, "avx512bf16": 802.5, "amx": 5900.2}
 * ("avx512bf16": bf16 multiply-adds with vdpbf16ps, 32 per instruction;
 * "amx": bf16 multiply-adds on AMX tiles; both counted as 2 FLOP each like
 * the others; an instruction set the CPU lacks, or Linux does not grant, is
 * left out). Built by
 * scripts/bench_extract.sh with the system C compiler.
 *
 *   cc -O2 -pthread -o fma_peak fma_peak.c && ./fma_peak 2
 */
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define STEPS 40000000L

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

__attribute__((target("avx512f"))) static void *run512(void *out) {
  __m512 acc[24], b = _mm512_set1_ps(0.9999f), c = _mm512_set1_ps(1e-4f);
  for (int i = 0; i < 24; i++) acc[i] = _mm512_set1_ps(i * 1e-3f);
  for (long n = 0; n < STEPS / 24; n++)
#pragma GCC unroll 24
    for (int i = 0; i < 24; i++) acc[i] = _mm512_fmadd_ps(acc[i], b, c);
  float s = 0;
  for (int i = 0; i < 24; i++) s += _mm512_reduce_add_ps(acc[i]);
  *(float *)out = s;
  return NULL;
}

__attribute__((target("avx2,fma"))) static void *run256(void *out) {
  __m256 acc[12], b = _mm256_set1_ps(0.9999f), c = _mm256_set1_ps(1e-4f);
  for (int i = 0; i < 12; i++) acc[i] = _mm256_set1_ps(i * 1e-3f);
  for (long n = 0; n < STEPS / 12; n++)
#pragma GCC unroll 12
    for (int i = 0; i < 12; i++) acc[i] = _mm256_fmadd_ps(acc[i], b, c);
  float lanes[8], s = 0;
  for (int i = 0; i < 12; i++) {
    _mm256_storeu_ps(lanes, acc[i]);
    s += lanes[0];
  }
  *(float *)out = s;
  return NULL;
}

/* vdpbf16ps: 24 independent accumulators, each instruction 16 lanes x 2
 * bf16 products. */
__attribute__((target("avx512f,avx512bf16"))) static void *run512bf16(void *out) {
  __m512 acc[24];
  __m512bh a = (__m512bh)_mm512_set1_epi32(0x3f803f80), b = (__m512bh)_mm512_set1_epi32(0x38d138d1);
  for (int i = 0; i < 24; i++) acc[i] = _mm512_set1_ps(i * 1e-3f);
  for (long n = 0; n < STEPS / 24; n++)
#pragma GCC unroll 24
    for (int i = 0; i < 24; i++) acc[i] = _mm512_dpbf16_ps(acc[i], a, b);
  float s = 0;
  for (int i = 0; i < 24; i++) s += _mm512_reduce_add_ps(acc[i]);
  *(float *)out = s;
  return NULL;
}

/* AMX: four accumulator tiles fed by two A and two B tiles that stay in
 * registers; each tdpbf16ps is 16 x 16 x 32 multiply-adds. */
#define AMX_STEPS 2000000L
struct tilecfg {
  unsigned char palette, start_row, reserved[14];
  unsigned short colsb[16];
  unsigned char rows[16];
};

__attribute__((target("amx-tile,amx-bf16"))) static void *run_amx(void *out) {
  struct tilecfg cfg = {0};
  cfg.palette = 1;
  for (int t = 0; t < 8; t++) {
    cfg.colsb[t] = 64;
    cfg.rows[t] = 16;
  }
  _tile_loadconfig(&cfg);
  static unsigned short zeros[16 * 32] __attribute__((aligned(64)));
  _tile_loadd(4, zeros, 64);
  _tile_loadd(5, zeros, 64);
  _tile_loadd(6, zeros, 64);
  _tile_loadd(7, zeros, 64);
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  for (long n = 0; n < AMX_STEPS; n++) {
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
  }
  float c[16 * 16];
  _tile_stored(0, c, 64);
  _tile_release();
  *(float *)out = c[0];
  return NULL;
}

static int amx_granted(void) {
  __builtin_cpu_init();
  unsigned a, b, c, d;
  __asm__("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(7), "c"(0));
  if (!((d >> 22) & 1) || !((d >> 24) & 1)) return 0;
  return syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XTILEDATA */) == 0;
}

/* GFLOP/s of `threads` threads each running `f` (flops: per thread). */
static double measure(void *(*f)(void *), int threads, double flops) {
  pthread_t t[256];
  float sink[256];
  double best = 0;
  for (int round = 0; round < 3; round++) {
    double t0 = now();
    for (int i = 0; i < threads; i++) pthread_create(&t[i], NULL, f, &sink[i]);
    for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
    double g = threads * flops / (now() - t0) / 1e9;
    if (g > best) best = g;
  }
  return best;
}

int main(int argc, char **argv) {
  int threads = argc > 1 ? atoi(argv[1]) : 1;
  if (threads < 1 || threads > 256) return 2;
  __builtin_cpu_init();
  printf("{\"threads\": %d", threads);
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    printf(", \"avx2\": %.1f", measure(run256, threads, (STEPS / 12) * 12.0 * 16));
  if (__builtin_cpu_supports("avx512f"))
    printf(", \"avx512\": %.1f", measure(run512, threads, (STEPS / 24) * 24.0 * 32));
  if (__builtin_cpu_supports("avx512bf16"))
    printf(", \"avx512bf16\": %.1f", measure(run512bf16, threads, (STEPS / 24) * 24.0 * 64));
  if (amx_granted())
    printf(", \"amx\": %.1f", measure(run_amx, threads, AMX_STEPS * 4.0 * 16 * 16 * 32 * 2));
  printf("}\n");
  return 0;
}
