/* meshtalk_example: load a model with the C API and print what an engine needs to know about it.
 *
 *   meshtalk_example MODEL.safetensors
 *
 * MODEL is a file written by MeshTalk.save (Python). The output is one `key=value` per line. Errors
 * go to stderr as `meshtalk_example: <status>: <message>`, exit code 1. */
#include <stdio.h>
#include <string.h>

#include "meshtalk/meshtalk.h"

static int fail(mt_status status) {
  fprintf(stderr, "meshtalk_example: %s: %s\n", mt_status_string(status), mt_last_error());
  return 1;
}

int main(int argc, char** argv) {
  mt_model_params params = mt_model_default_params();
  mt_session_params session = mt_session_default_params();
  mt_model* model = NULL;
  mt_model_info info;
  int64_t frames_per_minute = 0, latency_smoothed = 0;
  mt_status status;

  if (argc != 2) {
    fprintf(stderr, "usage: meshtalk_example MODEL.safetensors\n");
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

  mt_model_free(model);
  return 0;
}
