/* The machine's f32 multiply-add peak per vector instruction set, measured:
 * every thread runs independent FMA chains (enough to hide the latency) and
 * never touches memory. Prints one JSON object, GFLOP/s over all threads:
 *   {"threads": 2, "avx2": 214.1, "avx512": 401.3}
 * (an instruction set the CPU lacks is left out). Built by
 * scripts/bench_extract.sh with the system C compiler.
 *
 *   cc -O2 -pthread -o fma_peak fma_peak.c && ./fma_peak 2
 */
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

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
  printf("}\n");
  return 0;
}
