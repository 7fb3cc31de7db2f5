/* The C API from C: meshtalk.h compiles as C99 (and, in test_header_c89.c, C89) with every warning
 * an error, and the model part works from a C program.
 *   test_capi_c MODEL.safetensors   a model written by mt_write_test_model with its defaults */
#include <stdio.h>
#include <string.h>

#include "meshtalk/meshtalk.h"

static int failures = 0;

#define EXPECT(cond)                                                         \
  do {                                                                       \
    if (!(cond)) {                                                           \
      fprintf(stderr, "%s:%d: FAILED: %s\n", __FILE__, __LINE__, #cond);     \
      ++failures;                                                            \
    }                                                                        \
  } while (0)

int main(int argc, char** argv) {
  mt_model* model = NULL;
  mt_model_params params = mt_model_default_params();
  mt_model_info info;
  int64_t frames = -1;
  mt_status st;

  if (argc != 2) {
    fprintf(stderr, "usage: test_capi_c MODEL.safetensors\n");
    return 2;
  }
  EXPECT(mt_api_version() == MT_API_VERSION);
  EXPECT(strlen(mt_version()) >= 5);
  EXPECT(strcmp(mt_status_string(MT_ERR_FILE_NOT_FOUND), "file not found") == 0);
  EXPECT(params.struct_size == sizeof(mt_model_params) && params.gemm == MT_GEMM_BUILTIN);

  st = mt_model_load(argv[1], &params, &model);
  EXPECT(st == MT_OK && model != NULL);
  if (st != MT_OK) {
    fprintf(stderr, "%s: %s\n", mt_status_string(st), mt_last_error());
    return 1;
  }
  EXPECT(mt_last_error()[0] == '\0');

  memset(&info, 0, sizeof info);
  info.struct_size = sizeof info;
  EXPECT(mt_model_get_info(model, &info) == MT_OK);
  EXPECT(info.n_vertices == 5 && info.heads == 3 && info.classes == 4 && info.audio_dim == 6);
  EXPECT(info.fps == 30 && info.clock == MT_CLOCK_RELEASED && info.framing == MT_FRAMING_WINDOW);
  EXPECT(info.sample_rate == 16000 && info.lookahead_samples == 8000 && info.latency_samples == 8534);
  EXPECT(mt_model_num_frames(model, 16000, &frames) == MT_OK && frames == 30);

  EXPECT(mt_model_num_frames(model, -1, &frames) == MT_ERR_INVALID_ARGUMENT);
  EXPECT(strstr(mt_last_error(), "mt_model_num_frames: n_samples") != NULL);
  mt_model_free(model);

  model = (mt_model*)&info; /* must be reset to NULL on failure */
  EXPECT(mt_model_load("no/such/file.safetensors", NULL, &model) == MT_ERR_FILE_NOT_FOUND);
  EXPECT(model == NULL);
  EXPECT(strstr(mt_last_error(), "no such file") != NULL);

  /* A blendshape solver for the model's 5 vertices: two shapes, known weights recovered. */
  {
    float neutral[15], deltas[30], frame[15], weights[2] = {-1.0f, -1.0f};
    mt_blendshape_params bp = mt_blendshape_default_params();
    mt_blendshape_solver* solver = NULL;
    mt_blendshape_solver_info binfo;
    int j;
    for (j = 0; j < 15; ++j) {
      neutral[j] = (float)j * 0.1f;
      deltas[j] = (float)(j % 4) - 1.5f;
      deltas[15 + j] = (float)(j % 3) * 0.5f - 0.25f * (float)(j % 2);
      frame[j] = neutral[j] + 0.25f * deltas[j] + 0.75f * deltas[15 + j];
    }
    EXPECT(bp.struct_size == sizeof(mt_blendshape_params) && bp.lo == 0.0f && bp.hi == 1.0f);
    st = mt_model_load(argv[1], NULL, &model);
    EXPECT(st == MT_OK);
    EXPECT(mt_blendshape_solver_create_for_model(model, 2, neutral, deltas, NULL, &bp, &solver) == MT_OK);
    mt_model_free(model);
    EXPECT(solver != NULL);
    EXPECT(mt_blendshape_solver_solve(solver, frame, 1, weights) == MT_OK);
    EXPECT(weights[0] > 0.2499f && weights[0] < 0.2501f && weights[1] > 0.7499f && weights[1] < 0.7501f);
    memset(&binfo, 0, sizeof binfo);
    binfo.struct_size = sizeof binfo;
    EXPECT(mt_blendshape_solver_get_info(solver, &binfo) == MT_OK);
    EXPECT(binfo.n_vertices == 5 && binfo.n_shapes == 2 && binfo.frames_solved == 1 && binfo.condition >= 1.0);
    mt_blendshape_solver_free(solver);
    bp.lo = 2.0f;
    EXPECT(mt_blendshape_solver_create(5, 2, neutral, deltas, NULL, &bp, &solver) == MT_ERR_INVALID_ARGUMENT);
    EXPECT(solver == NULL);
    EXPECT(strstr(mt_last_error(), "params->bounds") != NULL);
    mt_blendshape_solver_free(solver); /* NULL: ignored */
  }

  printf("%s\n", failures == 0 ? "ok" : "FAILED");
  return failures == 0 ? 0 : 1;
}
