/* meshtalk_example: an engine's use of the C API.
 *
 *   meshtalk_example MODEL.safetensors
 *     prints what an engine needs to know about the model, one `key=value` per line;
 *   meshtalk_example MODEL.safetensors TEMPLATE.f32 AUDIO.wav|AUDIO.f32 OUT.f32 [options]
 *     animates the audio (a 16 kHz mono WAV, 16-bit PCM or float, or raw float32 samples) on the
 *     template (raw float32, n_vertices * 3) through a session fed --chunk samples per push (or
 *     mt_animate with --offline) and writes the frames [T, V, 3] as raw float32 to OUT.
 *
 * MODEL is a file written by MeshTalk.save (Python). Errors go to stderr as
 * `meshtalk_example: <status>: <message>`, exit code 1. */
#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "meshtalk/meshtalk.h"

static int fail(mt_status status) {
  fprintf(stderr, "meshtalk_example: %s: %s\n", mt_status_string(status), mt_last_error());
  return 1;
}

/* ---------------------------------------------------------------------------------------------
 * Animation: meshtalk_example MODEL TEMPLATE AUDIO OUT [options]
 * ------------------------------------------------------------------------------------------- */

/* Reads a whole file into a new buffer (*size bytes). Returns NULL (message on stderr) on failure. */
static unsigned char* read_file(const char* path, size_t* size) {
  FILE* f = fopen(path, "rb");
  unsigned char* data = NULL;
  long n;
  if (f == NULL) {
    fprintf(stderr, "meshtalk_example: cannot open '%s'\n", path);
    return NULL;
  }
  if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
    fprintf(stderr, "meshtalk_example: cannot size '%s'\n", path);
    fclose(f);
    return NULL;
  }
  data = (unsigned char*)malloc((size_t)n + 1);
  if (data == NULL || fread(data, 1, (size_t)n, f) != (size_t)n) {
    fprintf(stderr, "meshtalk_example: cannot read '%s'\n", path);
    free(data);
    fclose(f);
    return NULL;
  }
  fclose(f);
  *size = (size_t)n;
  return data;
}

static uint32_t le32(const unsigned char* p) {
  return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static uint16_t le16(const unsigned char* p) { return (uint16_t)(p[0] | (p[1] << 8)); }

/* Raw little-endian float32 file -> floats (*count). NULL on failure. */
static float* read_floats(const char* path, int64_t* count) {
  size_t size = 0, i;
  unsigned char* data = read_file(path, &size);
  float* out;
  if (data == NULL) return NULL;
  if (size % 4 != 0) {
    fprintf(stderr, "meshtalk_example: '%s': expected raw float32 (a multiple of 4 bytes), found %lu bytes\n", path,
            (unsigned long)size);
    free(data);
    return NULL;
  }
  out = (float*)malloc(size > 0 ? size : 1);
  for (i = 0; out != NULL && i < size / 4; ++i) {
    uint32_t bits = le32(data + 4 * i);
    memcpy(&out[i], &bits, 4);
  }
  free(data);
  *count = (int64_t)(size / 4);
  return out;
}

/* A WAV file (RIFF, 16 kHz mono, 16-bit PCM or 32-bit float) -> float samples (16-bit scaled by
 * 1/32768). NULL (message on stderr) for anything else. */
static float* read_wav(const char* path, int64_t* count) {
  size_t size = 0, pos = 12, i, n = 0;
  unsigned char* data = read_file(path, &size);
  int format = 0, channels = 0, bits = 0;
  uint32_t rate = 0;
  const unsigned char* samples = NULL;
  float* out = NULL;
  if (data == NULL) return NULL;
  if (size < 12 || memcmp(data, "RIFF", 4) != 0 || memcmp(data + 8, "WAVE", 4) != 0) {
    fprintf(stderr, "meshtalk_example: '%s': expected a RIFF/WAVE file\n", path);
    free(data);
    return NULL;
  }
  while (pos + 8 <= size) {
    const uint32_t len = le32(data + pos + 4);
    const unsigned char* body = data + pos + 8;
    if (len > size - pos - 8) break;
    if (memcmp(data + pos, "fmt ", 4) == 0 && len >= 16) {
      format = le16(body);
      channels = le16(body + 2);
      rate = le32(body + 4);
      bits = le16(body + 14);
      if (format == 0xFFFE && len >= 26) format = le16(body + 24); /* WAVE_FORMAT_EXTENSIBLE: the sub-format */
    } else if (memcmp(data + pos, "data", 4) == 0) {
      samples = body;
      n = len;
    }
    pos += 8 + (size_t)len + (len & 1u);
  }
  if (samples == NULL || channels != 1 || rate != 16000 || !((format == 1 && bits == 16) || (format == 3 && bits == 32))) {
    fprintf(stderr,
            "meshtalk_example: '%s': expected 16 kHz mono WAV, 16-bit PCM or 32-bit float, found format %d, %d "
            "channels, %lu Hz, %d bits%s\n",
            path, format, channels, (unsigned long)rate, bits, samples == NULL ? ", no data chunk" : "");
    free(data);
    return NULL;
  }
  n /= (size_t)(bits / 8);
  out = (float*)malloc(n > 0 ? n * sizeof(float) : 1);
  for (i = 0; out != NULL && i < n; ++i) {
    if (bits == 16) {
      out[i] = (float)(int16_t)le16(samples + 2 * i) / 32768.0f;
    } else {
      uint32_t b = le32(samples + 4 * i);
      memcpy(&out[i], &b, 4);
    }
  }
  free(data);
  *count = (int64_t)n;
  return out;
}

static int ends_with(const char* s, const char* suffix) {
  size_t a = strlen(s), b = strlen(suffix);
  return a >= b && strcmp(s + a - b, suffix) == 0;
}

static double now_seconds(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int compare_doubles(const void* a, const void* b) {
  const double x = *(const double*)a, y = *(const double*)b;
  return x < y ? -1 : x > y;
}

static int animate_usage(void) {
  fprintf(stderr,
          "usage: meshtalk_example MODEL.safetensors TEMPLATE.f32 AUDIO.wav|AUDIO.f32 OUT.f32 [--seed S] [--argmax]\n"
          "         [--smooth MASKS.f32 [--delay 4|8]] [--chunk SAMPLES] [--offline] [--threads N]\n"
          "         [--sessions N [--batch]] [--weights f32|bf16|int8] [--timing]\n");
  return 2;
}

/* The resident memory of this process in KiB (Linux: /proc/self/statm), or -1 where unknown. */
static long resident_kib(void) {
  long pages_total = 0, pages_resident = -1;
  FILE* f = fopen("/proc/self/statm", "r");
  if (f == NULL) return -1;
  if (fscanf(f, "%ld %ld", &pages_total, &pages_resident) != 2) pages_resident = -1;
  fclose(f);
  return pages_resident < 0 ? -1 : pages_resident * 4; /* 4 KiB pages (x86-64, arm64 Linux defaults) */
}

/* Animates AUDIO with the template and writes the frames [T, V, 3] as raw float32 to OUT. With
 * --sessions N (1 .. 4096), N sessions (seeds S, S+1, ...) run on the same audio, in one mt_batch
 * of max_sessions N with --batch; OUT receives the first one's frames. --weights picks
 * mt_model_params.weights (default f32). --timing prints per-push latency (p50, p99 in ms, pushes
 * of --chunk samples that produced frames), the real-time factor (audio seconds / wall seconds), the
 * process's CPU seconds and the resident memory (KiB) after the sessions were created and at each quarter of the audio. */
static int animate(int argc, char** argv) {
  mt_model* model = NULL;
  mt_model_info info;
  mt_session_params params = mt_session_default_params();
  mt_model_params model_params = mt_model_default_params();
  mt_batch_params batch_params = mt_batch_default_params();
  mt_session** sessions = NULL;
  mt_batch* batch = NULL;
  long rss[5] = {-1, -1, -1, -1, -1};
  int quarter = 1;
  float *templ = NULL, *audio = NULL, *masks = NULL, *frames = NULL, *scratch = NULL;
  double *latency = NULL, start, wall, cpu;
  clock_t cpu_start;
  int64_t n_templ = 0, n_audio = 0, n_masks = 0, total = 0, got = 0, chunk = 533, n_lat = 0, k;
  int64_t n_sessions = 1, i, j;
  int offline = 0, use_batch = 0, timing = 0, rc = 1;
  mt_status status = MT_OK;
  FILE* out = NULL;

  for (i = 5; i < argc; ++i) {
    const char* flag = argv[i];
    if (strcmp(flag, "--argmax") == 0) params.argmax = 1;
    else if (strcmp(flag, "--offline") == 0) offline = 1;
    else if (strcmp(flag, "--batch") == 0) use_batch = 1;
    else if (strcmp(flag, "--timing") == 0) timing = 1;
    else if (i + 1 >= argc) return animate_usage();
    else if (strcmp(flag, "--seed") == 0) params.seed = strtoull(argv[++i], NULL, 10);
    else if (strcmp(flag, "--delay") == 0) params.smoothing_delay = atoi(argv[++i]);
    else if (strcmp(flag, "--chunk") == 0) chunk = atoll(argv[++i]);
    else if (strcmp(flag, "--threads") == 0) params.threads = atoi(argv[++i]);
    else if (strcmp(flag, "--sessions") == 0) n_sessions = atoll(argv[++i]);
    else if (strcmp(flag, "--weights") == 0) {
      const char* w = argv[++i];
      if (strcmp(w, "f32") == 0) model_params.weights = MT_WEIGHTS_F32;
      else if (strcmp(w, "bf16") == 0) model_params.weights = MT_WEIGHTS_BF16;
      else if (strcmp(w, "int8") == 0) model_params.weights = MT_WEIGHTS_INT8;
      else return animate_usage();
    }
    else if (strcmp(flag, "--smooth") == 0) {
      masks = read_floats(argv[++i], &n_masks);
      if (masks == NULL) goto done;
    } else return animate_usage();
  }
  if (chunk < 1 || n_sessions < 1 || n_sessions > 4096) return animate_usage();
  sessions = (mt_session**)calloc((size_t)n_sessions, sizeof(mt_session*));
  if (sessions == NULL) {
    fprintf(stderr, "meshtalk_example: out of memory\n");
    goto done;
  }

  status = mt_model_load(argv[1], &model_params, &model);
  if (status != MT_OK) goto done;
  memset(&info, 0, sizeof info);
  info.struct_size = sizeof info;
  status = mt_model_get_info(model, &info);
  if (status != MT_OK) goto done;
  templ = read_floats(argv[2], &n_templ);
  audio = ends_with(argv[3], ".wav") ? read_wav(argv[3], &n_audio) : read_floats(argv[3], &n_audio);
  if (templ == NULL || audio == NULL) goto done;
  params.template_vertices = templ;
  params.template_size = n_templ;
  if (masks != NULL) {
    params.smoothing = 1;
    params.forehead_mask = masks;
    params.neck_mask = masks + n_masks / 2;
    params.mask_size = n_masks / 2;
  }
  status = mt_model_num_frames(model, n_audio, &total);
  if (status != MT_OK) goto done;
  frames = (float*)malloc((size_t)(total > 0 ? total : 1) * (size_t)info.n_vertices * 3 * sizeof(float));
  scratch = (float*)malloc((size_t)(total > 0 ? total : 1) * (size_t)info.n_vertices * 3 * sizeof(float));
  latency = (double*)malloc((size_t)(n_audio / chunk + 2) * sizeof(double));
  if (frames == NULL || scratch == NULL || latency == NULL) {
    fprintf(stderr, "meshtalk_example: out of memory\n");
    goto done;
  }

  start = now_seconds();
  cpu_start = clock();
  if (offline) {
    status = mt_animate(model, audio, n_audio, &params, frames, total, &got);
    if (status != MT_OK) goto done;
  } else {
    for (j = 0; j < n_sessions; ++j) {
      mt_session_params p = params;
      p.seed = params.seed + (uint64_t)j;
      status = mt_session_create(model, &p, &sessions[j]);
      if (status != MT_OK) goto done;
    }
    rss[0] = resident_kib();
    if (use_batch) {
      batch_params.max_sessions = (int32_t)n_sessions;
      status = mt_batch_create(model, &batch_params, &batch);
      for (j = 0; status == MT_OK && j < n_sessions; ++j) status = mt_batch_add(batch, sessions[j]);
      if (status != MT_OK) goto done;
    }
    for (k = 0; k <= n_audio; k += chunk) {
      const int64_t n = n_audio - k < chunk ? n_audio - k : chunk;
      const int last = k + chunk > n_audio;
      const double t0 = now_seconds();
      int64_t before = got, popped = 0;
      for (j = 0; j < n_sessions; ++j) {
        status = mt_session_push_audio(sessions[j], audio + k, n);
        if (status == MT_OK && last) status = mt_session_finish(sessions[j]);
        if (status != MT_OK) goto done;
      }
      if (batch != NULL && (status = mt_batch_step(batch, NULL)) != MT_OK) goto done;
      for (j = 0; j < n_sessions; ++j) {
        float* dst = j == 0 ? frames + got * info.n_vertices * 3 : scratch;
        status = mt_session_pop_frames(sessions[j], dst, total - (j == 0 ? got : 0), &popped);
        if (status != MT_OK) goto done;
        if (j == 0) got += popped;
      }
      if (got > before) latency[n_lat++] = now_seconds() - t0;
      if (timing && quarter < 4 && k + chunk >= quarter * (n_audio / 4)) rss[quarter++] = resident_kib();
      if (last) break;
    }
  }
  wall = now_seconds() - start;
  cpu = (double)(clock() - cpu_start) / CLOCKS_PER_SEC;
  rss[4] = resident_kib();
  if (got != total) {
    fprintf(stderr, "meshtalk_example: produced %lld frames, expected %lld\n", (long long)got, (long long)total);
    goto done;
  }
  out = fopen(argv[4], "wb");
  if (out == NULL || fwrite(frames, sizeof(float) * 3 * (size_t)info.n_vertices, (size_t)total, out) != (size_t)total) {
    fprintf(stderr, "meshtalk_example: cannot write '%s'\n", argv[4]);
    goto done;
  }
  printf("frames=%lld\n", (long long)total);
  if (timing) {
    qsort(latency, (size_t)n_lat, sizeof(double), compare_doubles);
    printf("sessions=%lld\nwall_s=%.6f\nreal_time_factor=%.6f\n", (long long)n_sessions, wall,
           wall > 0 ? ((double)n_audio / 16000.0) / wall : 0.0);
    /* CPU time of the process (all threads): on a machine shared with other work, audio seconds per
     * CPU second x the threads used is what the stream would reach with those cores to itself. */
    printf("cpu_s=%.6f\n", cpu);
    if (n_lat > 0)
      printf("push_latency_ms_p50=%.4f\npush_latency_ms_p99=%.4f\n", 1e3 * latency[n_lat / 2],
             1e3 * latency[(n_lat * 99) / 100 < n_lat ? (n_lat * 99) / 100 : n_lat - 1]);
    printf("rss_kib_start=%ld\nrss_kib_q1=%ld\nrss_kib_q2=%ld\nrss_kib_q3=%ld\nrss_kib_end=%ld\n", rss[0], rss[1],
           rss[2], rss[3], rss[4]);
  }
  rc = 0;

done:
  if (status != MT_OK) fail(status);
  if (out != NULL) fclose(out);
  mt_batch_free(batch);
  for (j = 0; sessions != NULL && j < n_sessions; ++j) mt_session_free(sessions[j]);
  free(sessions);
  mt_model_free(model);
  free(templ);
  free(audio);
  free(masks);
  free(frames);
  free(scratch);
  free(latency);
  return rc;
}

int main(int argc, char** argv) {
  mt_model_params params = mt_model_default_params();
  mt_session_params session = mt_session_default_params();
  mt_model* model = NULL;
  mt_model_info info;
  int64_t frames_per_minute = 0, latency_smoothed = 0;
  mt_status status;

  if (argc >= 5) return animate(argc, argv);
  if (argc != 2) {
    fprintf(stderr, "usage: meshtalk_example MODEL.safetensors [TEMPLATE.f32 AUDIO.wav|AUDIO.f32 OUT.f32 [options]]\n");
    return 2;
  }
  if (mt_api_version() != MT_API_VERSION) {
    fprintf(stderr, "meshtalk_example: built with C API %d, running with %d\n", MT_API_VERSION, (int)mt_api_version());
    return 1;
  }

  status = mt_model_load(argv[1], &params, &model);
  if (status != MT_OK) return fail(status);

  memset(&info, 0, sizeof info);
  info.struct_size = sizeof info;
  status = mt_model_get_info(model, &info);
  if (status == MT_OK) status = mt_model_num_frames(model, 60 * (int64_t)info.sample_rate, &frames_per_minute);
  session.smoothing = 1; /* the released post-processing adds smoothing_delay (4) frames of latency */
  if (status == MT_OK) status = mt_model_latency_samples(model, &session, &latency_smoothed);
  if (status != MT_OK) {
    mt_model_free(model);
    return fail(status);
  }

  printf("version=%s\n", mt_version());
  printf("n_vertices=%lld\n", (long long)info.n_vertices);
  printf("heads=%lld\n", (long long)info.heads);
  printf("classes=%lld\n", (long long)info.classes);
  printf("audio_dim=%lld\n", (long long)info.audio_dim);
  printf("sample_rate=%d\n", (int)info.sample_rate);
  printf("fps=%d\n", (int)info.fps);
  printf("clock=%s\n", info.clock == MT_CLOCK_EXACT ? "exact" : "released");
  printf("framing=%s\n", info.framing == MT_FRAMING_STREAM ? "stream" : "window");
  printf("lookahead_samples=%lld\n", (long long)info.lookahead_samples);
  printf("latency_samples=%lld\n", (long long)info.latency_samples);
  printf("latency_samples_smoothed=%lld\n", (long long)latency_smoothed);
  printf("frames_per_minute=%lld\n", (long long)frames_per_minute);
  printf("weight_bytes=%llu\n", (unsigned long long)info.weight_bytes);
  printf("weights=%s\n", info.weights == MT_WEIGHTS_INT8 ? "int8" : info.weights == MT_WEIGHTS_BF16 ? "bf16" : "f32");

  mt_model_free(model);
  return 0;
}
