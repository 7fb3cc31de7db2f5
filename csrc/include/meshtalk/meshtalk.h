/*
 * meshtalk.h: the C API of the meshtalk_fast core. Speech in, face meshes out; no Python.
 *
 * Compiles as C (C99; C89 with a <stdint.h>) and as C++. Link the CMake target
 * meshtalk_fast::core (find_package(meshtalk_fast CONFIG REQUIRED); `meshtalk-fast cmake-dir`
 * prints the folder to give CMake). The library is C++ inside: link with the C++ runtime (CMake
 * does so when the project enables CXX, see csrc/examples/CMakeLists.txt).
 *
 * Objects (opaque handles, each released by its *_free):
 *   mt_model    the weights of one model file written by MeshTalk.save (Python). Immutable after
 *               loading; share one model among any number of sessions and threads.
 *   mt_session  one speaker's stream: push 16 kHz float32 PCM as it arrives, pop the animated
 *               meshes ([V, 3] float32 per frame, 30 fps for the released model) as they are ready.
 *   mt_batch    steps many sessions of one model together on a thread pool (a server's loop).
 * mt_animate    the whole utterance at once (offline).
 *   mt_blendshape_solver  frames -> a rig's K blendshape weights, live (mt_session_pop_weights).
 *
 * Conventions, for every function of this header:
 *   - Functions that can fail return mt_status; MT_OK (0) is success. They never abort, never throw
 *     a C++ exception across this boundary and never read or write outside the buffers whose sizes
 *     they are given: every size, count and shape is checked before memory is touched.
 *   - Error text: every call returning mt_status sets the calling thread's error text
 *     (mt_last_error()): "" on MT_OK, otherwise one readable line naming the argument or item, what
 *     was expected and what was found, e.g.
 *       "mt_model_load: path: expected a NUL-terminated file name, found NULL"
 *       "mt_model_load: safetensors 'face.safetensors': header length 9000 exceeds the 120 bytes
 *        that follow it (is the file truncated?)"
 *     Functions that do not return mt_status (getters of constants, *_free) leave it unchanged.
 *   - Output arguments are written only on MT_OK, except where a function says otherwise (a
 *     handle output is set to NULL on failure; mt_animate reports the frame count it needs).
 *   - Pointer arguments must not be NULL unless documented as optional; a NULL one is refused with
 *     MT_ERR_INVALID_ARGUMENT naming the argument.
 *   - Parameter structs: get them from the *_default_params() function, change the fields you need,
 *     pass a pointer. Their first field, struct_size, lets the library refuse a struct from a
 *     header of another version (MT_ERR_INVALID_ARGUMENT) instead of misreading it.
 *   - Units: audio is mono float32 PCM at 16000 Hz taken as given (no resampling, no loudness
 *     normalisation: scale it as the model's training data was, e.g. Python's
 *     load_audio(normalize=True) divides by 100 * mean(|audio|)); sizes in samples, frames or
 *     floats as named; a frame is n_vertices * 3 float32 (x, y, z per vertex, vertex-major), in the
 *     units of the template mesh.
 *
 * Thread safety (each function repeats what applies to it):
 *   - The error text is per thread: errors on one thread never overwrite another thread's text.
 *   - A model is immutable after loading: any number of threads may use one model at once
 *     (create sessions from it, query it, mt_animate with it).
 *   - A session is not locked internally: one thread at a time per session. Sessions on different
 *     threads do not interfere, even when they share a model.
 *   - A batch, and the sessions in it while mt_batch_step runs, are used by one thread at a time.
 */
#ifndef MESHTALK_MESHTALK_H
#define MESHTALK_MESHTALK_H

#include <stddef.h>
#include <stdint.h>

/* MT_API marks the exported functions. MESHTALK_BUILDING_LIBRARY is defined while the library
 * itself is compiled; MESHTALK_SHARED is defined for consumers of the shared library (CMake sets it
 * on meshtalk_fast::shared). */
#if defined(_WIN32) && defined(MESHTALK_SHARED)
#  if defined(MESHTALK_BUILDING_LIBRARY)
#    define MT_API __declspec(dllexport)
#  else
#    define MT_API __declspec(dllimport)
#  endif
#elif defined(__GNUC__) && defined(MESHTALK_BUILDING_LIBRARY)
#  define MT_API __attribute__((visibility("default")))
#else
#  define MT_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* The version of this C API: raised on every incompatible change of a declaration in this header.
 * Compare it with mt_api_version() to detect a header/library mismatch. */
#define MT_API_VERSION 1

/* ==============================================================================================
 * Status, errors, versions
 * ============================================================================================ */

typedef enum mt_status {
  MT_OK = 0,
  MT_ERR_INVALID_ARGUMENT = 1, /* a NULL pointer, a size or value out of range, a wrong struct_size */
  MT_ERR_INVALID_FORMAT = 2,   /* a model file is malformed, truncated or not a MeshTalk.save file */
  MT_ERR_KEY_NOT_FOUND = 3,    /* a model file lacks a tensor the model needs */
  MT_ERR_FILE_NOT_FOUND = 4,   /* the path does not exist */
  MT_ERR_IO = 5,               /* the file exists but cannot be read (permissions, a folder, ...) */
  MT_ERR_OUT_OF_MEMORY = 6,    /* an allocation failed; nothing was changed */
  MT_ERR_BUFFER_TOO_SMALL = 7, /* an output buffer cannot hold the result (mt_animate) */
  MT_ERR_INVALID_STATE = 8,    /* the call does not fit the object's state (push after finish, ...) */
  MT_ERR_INTERNAL = 9          /* a bug in the library; the error text says where */
} mt_status;

/* A constant English name of `status` ("ok", "invalid argument", ...; "unknown status" for a value
 * not in mt_status). Never NULL. Thread-safe. Does not change the error text. */
MT_API const char* mt_status_string(mt_status status);

/* The calling thread's error text: "" after a successful call, the message of the failure after a
 * failed one (see the conventions above). Never NULL. The pointer stays valid until the next call
 * of this library on the same thread that returns mt_status, or until the thread exits; copy the
 * text to keep it. Thread-safe: each thread has its own text. */
MT_API const char* mt_last_error(void);

/* The library's version, "MAJOR.MINOR.PATCH" (the meshtalk_fast package version). Static storage,
 * never NULL, thread-safe. */
MT_API const char* mt_version(void);

/* MT_API_VERSION of the compiled library. Thread-safe. */
MT_API int32_t mt_api_version(void);

/* ==============================================================================================
 * Model
 * ============================================================================================ */

typedef struct mt_model mt_model;

/* Matrix-product backend of the prepared weights. */
typedef enum mt_gemm_backend {
  MT_GEMM_BUILTIN = 0, /* the library's own kernels (default; results independent of the batch) */
  MT_GEMM_BLAS = 1     /* OpenBLAS, only in a build linked against it (not the installed package) */
} mt_gemm_backend;

/* Audio frame clock of a model (its config "clock"). */
typedef enum mt_clock {
  MT_CLOCK_RELEASED = 0, /* the released models': 16000 / fps samples per frame, rounded down */
  MT_CLOCK_EXACT = 1     /* drift-free: frame k is centred on sample ((2k + 1) * 16000 + fps) / (2 fps) */
} mt_clock;

/* How a model reads audio for a frame (its config "framing"). */
typedef enum mt_framing {
  MT_FRAMING_WINDOW = 0, /* a log-mel of the 1 s window around each frame (released models) */
  MT_FRAMING_STREAM = 1  /* one log-mel of the whole stream, read at one position per frame */
} mt_framing;

/* How the model stores the weights of its per-frame products (the prior's layers and the decoder's
 * LSTM and skip decoder; the audio encoder and the template encoder stay float32). A live stream
 * reads every one of these weights once per frame (~90 MB in float32 at the released sizes), so one
 * stream's speed is bound by memory bandwidth, and smaller weights make it faster. Activations and
 * the order of every sum stay float32: a product equals the float32 one on the rounded weights.
 * What each costs in precision (label agreement, vertex error) is measured in benchmarks/RESULTS.md. */
typedef enum mt_weights {
  MT_WEIGHTS_F32 = 0,  /* float32 as in the file: exact (default) */
  MT_WEIGHTS_BF16 = 1, /* bfloat16 (rounded to nearest even): half the bytes */
  MT_WEIGHTS_INT8 = 2  /* int8 with one float32 scale per output channel (max |w| / 127): a quarter */
} mt_weights;

typedef struct mt_model_params {
  uint32_t struct_size; /* sizeof(mt_model_params), set by mt_model_default_params(). The struct of the
                           header before `weights` existed (8 bytes) is accepted as weights = F32 */
  int32_t gemm;         /* an mt_gemm_backend; default MT_GEMM_BUILTIN */
  int32_t weights;      /* an mt_weights; default MT_WEIGHTS_F32. BF16 and INT8 need the builtin GEMM
                           and a CPU with AVX2+FMA or AVX-512 (else MT_ERR_INVALID_ARGUMENT, naming
                           the mode that runs: MT_WEIGHTS_F32) */
  int32_t audio_context_ms; /* the audio context the caller expects the model to have: 0 (default) accepts
                           the file's; 1000 (released: a 1 s window, look-ahead 500 ms centred) or 600 (a
                           600 ms window, look-ahead 300 ms centred) requires it: a file of the other context
                           is refused with MT_ERR_INVALID_ARGUMENT, "audio context mismatch: expected
                           audio_context_ms=<asked> (asked for), found <file's> ms ...". The struct of the
                           header before this field (12 bytes) is accepted as 0 */
} mt_model_params;

/* Defaults: gemm = MT_GEMM_BUILTIN, weights = MT_WEIGHTS_F32, audio_context_ms = 0. Thread-safe. */
MT_API mt_model_params mt_model_default_params(void);

/* Loads the safetensors file at `path` written by MeshTalk.save (Python) and prepares its weights.
 *
 * path:      NUL-terminated file name (UTF-8 on Linux and macOS).
 * params:    optional; NULL means mt_model_default_params().
 * out_model: receives the new model (NULL on failure). Release it with mt_model_free.
 *
 * The file is read into memory and validated completely before any tensor is used: the
 * safetensors header (length, JSON, dtypes, shapes, that every tensor's bytes lie inside the file
 * and overlap no other), the metadata (format "meshtalk_fast", format_version "1", a config with
 * sizes in range), and every tensor the model needs (present, floating point, of the shape the
 * config implies). Float tensors may be stored as F32, F16, BF16, F64, F8_E4M3 or F8_E5M2.
 * Errors: MT_ERR_INVALID_ARGUMENT (NULL argument, bad params), MT_ERR_FILE_NOT_FOUND, MT_ERR_IO,
 * MT_ERR_INVALID_FORMAT (malformed, truncated or hostile file, bad config), MT_ERR_KEY_NOT_FOUND
 * (a tensor is missing), MT_ERR_OUT_OF_MEMORY. A file is never trusted: no content makes this
 * crash or read outside the file's bytes.
 * Thread-safe: loads on different threads are independent. */
MT_API mt_status mt_model_load(const char* path, const mt_model_params* params, mt_model** out_model);

/* As mt_model_load, from a file image in memory (`size` bytes at `data`, copied: the caller's
 * buffer may be freed when this returns). Error messages name the file "<memory>".
 * data may be NULL only when size is 0 (which is then refused as a truncated file). Thread-safe. */
MT_API mt_status mt_model_load_from_memory(const void* data, size_t size, const mt_model_params* params,
                                           mt_model** out_model);

/* Releases the caller's handle. Sessions and batches created from the model hold their own
 * reference to its weights, so the model may be freed while they are alive; the weights go when
 * the last of them is freed. NULL is ignored. Must not run concurrently with another call using
 * the same handle. */
MT_API void mt_model_free(mt_model* model);

typedef struct mt_model_info {
  uint32_t struct_size;      /* in: set by the caller to sizeof(mt_model_info) */
  int32_t sample_rate;       /* audio samples per second the model expects: 16000 */
  int64_t n_vertices;        /* V: a frame is V * 3 floats; a template is V * 3 floats */
  int64_t heads;             /* H: categorical heads of the latent code (16 released) */
  int64_t classes;           /* C: classes per head (128 released) */
  int64_t audio_dim;         /* size of the audio code per frame (128 released) */
  int32_t fps;               /* video frames per second of the output (30 released) */
  int32_t clock;             /* an mt_clock */
  int32_t framing;           /* an mt_framing */
  int32_t gemm;              /* the mt_gemm_backend the weights were prepared for */
  int64_t window_samples;    /* audio a frame's code is computed from: the model's audio context, 16000
                                (1 s, released) or 9600 (600 ms) */
  int64_t lookahead_samples; /* samples after a frame's centre in its window (8000 released; 4800 for a
                                600 ms model trained centred) */
  int64_t latency_samples;   /* lookahead_samples + one frame (16000 / fps, rounded up): the audio a
                                frame waits for in a session without smoothing, compute time not
                                included. See mt_model_latency_samples for a session's latency. */
  uint64_t weight_bytes;     /* memory held by the prepared weights */
  int32_t weights;           /* the mt_weights the model was loaded with (a struct_size without this
                                field, from an older header, is accepted and gets the fields before it) */
} mt_model_info;

/* Fills `*info` with the model's sizes and audio framing. The caller sets info->struct_size =
 * sizeof(mt_model_info) first. Thread-safe (the model is immutable). */
MT_API mt_status mt_model_get_info(const mt_model* model, mt_model_info* info);

/* The number of frames an utterance of n_samples samples yields (mt_animate's output length, and
 * what a session has produced in all after mt_session_finish), per the model's fps and clock.
 * n_samples in [0, 2^40]. Thread-safe. */
MT_API mt_status mt_model_num_frames(const mt_model* model, int64_t n_samples, int64_t* out_frames);

/* ==============================================================================================
 * Session: one speaker's stream
 * ============================================================================================ */

typedef struct mt_session mt_session;

typedef struct mt_session_params {
  uint32_t struct_size;             /* sizeof(mt_session_params), set by mt_session_default_params() */
  int32_t argmax;                   /* nonzero: the prior's most likely code instead of sampling one
                                       (deterministic, less lively upper face); default 0 */
  uint64_t seed;                    /* seed of the sampling noise; default 0. The frames depend only on
                                       (model, template, audio, seed, argmax, smoothing), never on how
                                       the audio was split into pushes or which batch ran them */
  const float* template_vertices;   /* required: the neutral face, [n_vertices * 3] float32
                                       (vertex-major x, y, z); copied when the session is created.
                                       Model files do not store a template. Default NULL */
  int64_t template_size;            /* floats at template_vertices: must equal n_vertices * 3 */
  int32_t smoothing;                /* nonzero: the released post-processing, a 9-tap Gaussian over
                                       time (sigma 2 frames) blended by forehead_mask, then a second
                                       pass blended by neck_mask; default 0 (frames as decoded) */
  int32_t smoothing_delay;          /* 4 (default) or 8 frames a smoothed frame waits for its
                                       successors. 8: exactly the offline result. 4: equal to it for
                                       every vertex outside forehead AND neck mask, elsewhere within
                                       forehead * neck * 0.042 * the largest move of the vertex over
                                       frames t+4 .. t+8 (below float rounding with the released
                                       masks, whose product is at most 1.1e-6). Not used by
                                       mt_animate, which smooths the whole sequence exactly */
  const float* forehead_mask;       /* [n_vertices] weights in [0, 1]; required when smoothing; copied */
  const float* neck_mask;           /* [n_vertices] weights in [0, 1]; required when smoothing; copied */
  int64_t mask_size;                /* floats in each mask: must equal n_vertices when smoothing */
  int32_t threads;                  /* cores the session's own work may use: 1 (default) = the calling
                                       thread only; 0 = every core this process may use; at most 4096.
                                       One pool for the session's encoder, sampler, decoder and
                                       smoothing; after a task its threads spin up to MESHTALK_SPIN_US
                                       microseconds (environment; default 200, 0 = never) before they
                                       sleep. In a batch the batch's threads do all the session's work */
} mt_session_params;

/* Defaults as documented per field (template NULL: set it before creating a session). Thread-safe. */
MT_API mt_session_params mt_session_default_params(void);

/* The latency, in samples, of a session of `model` created with `params` (optional; NULL means
 * mt_session_default_params(); only smoothing and smoothing_delay are read): the audio a frame
 * waits for before it can be computed, compute time not included: lookahead + (1 + delay) frames
 * of 16000 / fps samples, rounded up, where delay is smoothing_delay when smoothing is set, else 0.
 * Thread-safe. */
MT_API mt_status mt_model_latency_samples(const mt_model* model, const mt_session_params* params,
                                          int64_t* out_samples);

/* Creates a session for one speaker's stream.
 *
 * model:       the model; the session keeps its weights alive (mt_model_free may come first).
 * params:      required (a template is): template, masks and the rest are checked and copied.
 * out_session: receives the new session (NULL on failure). Release it with mt_session_free.
 * Errors: MT_ERR_INVALID_ARGUMENT (NULL argument; template_size != n_vertices * 3; smoothing
 * without both masks or with mask_size != n_vertices; a mask weight outside [0, 1] or a template
 * coordinate that is not finite; smoothing_delay not 4 or 8; threads out of range),
 * MT_ERR_OUT_OF_MEMORY. The sampler, decoder and smoothing state is allocated here, independent of
 * the stream's length; the audio buffer and the frame queue grow only when more is waiting than
 * ever before in this session (pop frames regularly to keep memory flat).
 * Thread-safe (the model is shared read-only). */
MT_API mt_status mt_session_create(const mt_model* model, const mt_session_params* params,
                                   mt_session** out_session);

/* Frees the session and everything it holds; a session still in a batch is removed from it first
 * (so this must not run concurrently with mt_batch_step on that batch). NULL is ignored. */
MT_API void mt_session_free(mt_session* session);

/* Appends n_samples samples of speech (16 kHz mono float32, as given) to the stream.
 *
 * pcm may be NULL only when n_samples is 0; n_samples >= 0, and at most 2^40 samples in all per
 * stream. Every sample must be finite (NaN or infinity is refused with MT_ERR_INVALID_ARGUMENT,
 * nothing appended).
 * A standalone session computes here every frame whose audio is now complete (frame k needs the
 * samples up to its centre + lookahead; with smoothing, also smoothing_delay later frames) and
 * queues it for mt_session_pop_frames. A session in a batch only stores the samples; the next
 * mt_batch_step computes its frames.
 * Errors: MT_ERR_INVALID_ARGUMENT, MT_ERR_INVALID_STATE (after mt_session_finish: reset first).
 * One thread at a time per session. */
MT_API mt_status mt_session_push_audio(mt_session* session, const float* pcm, int64_t n_samples);

/* The number of frames queued and not yet popped. One thread at a time per session. */
MT_API mt_status mt_session_frames_available(const mt_session* session, int64_t* out_frames);

/* Moves up to max_frames queued frames, oldest first, into `out` and removes them from the queue.
 *
 * out:        [max_frames, n_vertices, 3] float32 (max_frames * n_vertices * 3 floats); may be NULL
 *             only when max_frames is 0.
 * max_frames: >= 0.
 * out_frames: receives the number of frames written, min(max_frames, frames available).
 * One thread at a time per session. */
MT_API mt_status mt_session_pop_frames(mt_session* session, float* out, int64_t max_frames, int64_t* out_frames);

/* Ends the stream: the frames still waiting for audio are computed as if the audio continued with
 * silence (as offline), so that after this the session has produced mt_model_num_frames(total
 * samples pushed) frames in all; pop them as usual. A standalone session computes them here; a
 * session in a batch at the next mt_batch_step. Further pushes fail with MT_ERR_INVALID_STATE
 * until mt_session_reset. Finishing twice is MT_ERR_INVALID_STATE. One thread at a time. */
MT_API mt_status mt_session_finish(mt_session* session);

/* Starts a new stream with the same parameters (the seed restarts too): pushed audio, queued frames
 * and the sampler and decoder state are discarded. Allocates nothing. A session in a batch stays in
 * it. One thread at a time per session. */
MT_API mt_status mt_session_reset(mt_session* session);

/* The text of this session's most recent failure, "" if none since creation or the last reset:
 * set by a failing call on the session and by an mt_batch_step that failed on this session (whose
 * own return value then names the session). Never NULL; valid until the next call on the session.
 * Unlike mt_last_error it is per session, so a server can tell which stream of a batch failed.
 * One thread at a time per session. */
MT_API const char* mt_session_error(const mt_session* session);

/* ==============================================================================================
 * Batch: many sessions stepped together (server use)
 * ============================================================================================ */

typedef struct mt_batch mt_batch;

typedef struct mt_batch_params {
  uint32_t struct_size; /* sizeof(mt_batch_params), set by mt_batch_default_params() */
  int32_t threads;      /* cores the batch's steps use: 0 (default) = every core this process may
                           use, else 1 .. 4096 */
  int32_t max_sessions; /* the most sessions the batch holds at once, 1 .. 4096 (default 64): the
                           batch's sampler and decoder state is allocated for them at creation */
} mt_batch_params;

/* Defaults: threads = 0, max_sessions = 64. Thread-safe. */
MT_API mt_batch_params mt_batch_default_params(void);

/* Creates an empty batch for sessions of `model` (which it keeps alive) with its own thread pool.
 * params: optional; NULL means mt_batch_default_params(). out_batch: NULL on failure.
 * Thread-safe (the model is shared read-only). */
MT_API mt_status mt_batch_create(const mt_model* model, const mt_batch_params* params, mt_batch** out_batch);

/* Detaches every session as mt_batch_remove does (they stay valid, as standalone sessions; an error
 * while one computes its pending frames is kept in its mt_session_error) and frees the batch and its
 * threads. NULL is ignored. One thread at a time per batch. */
MT_API void mt_batch_free(mt_batch* batch);

/* Adds `session` to the batch; from now on its frames are computed by mt_batch_step. The session
 * must come from the same model (MT_ERR_INVALID_ARGUMENT) and be in no batch
 * (MT_ERR_INVALID_STATE; adding it twice to this batch too). A session joins at the start of a
 * stream: it must not have computed a frame since its creation or last reset (audio pushed that
 * yielded no frame yet is kept), else MT_ERR_INVALID_STATE (reset it first): the sampler and
 * decoder state of a stream do not move between a session and a batch. A full batch (max_sessions)
 * is MT_ERR_INVALID_STATE too.
 * One thread at a time per batch; the session must not be in use on another thread. */
MT_API mt_status mt_batch_add(mt_batch* batch, mt_session* session);

/* Removes `session` from the batch: it becomes standalone again. If the batch has computed none of
 * its frames yet, its stream goes on: the frames its waiting audio (and a finish) make ready are
 * computed in this call, later ones in its pushes. If the batch has computed frames of it, its
 * stream cannot continue outside the batch: its queued frames stay poppable, and push and finish
 * return MT_ERR_INVALID_STATE until mt_session_reset. MT_ERR_INVALID_STATE when it is not in this
 * batch. One thread at a time per batch. */
MT_API mt_status mt_batch_remove(mt_batch* batch, mt_session* session);

/* The number of sessions in the batch. One thread at a time per batch. */
MT_API mt_status mt_batch_size(const mt_batch* batch, int64_t* out_sessions);

/* Computes, for every session in the batch, every frame that became ready since the last step (the
 * same frames a standalone session would compute in its pushes and finish), batched across
 * sessions on the batch's threads, and queues them in each session for mt_session_pop_frames.
 * out_frames: optional; receives the number of frames computed in all (also when a session failed:
 *             the other sessions' frames were computed).
 * A session that fails keeps its error in mt_session_error and computes nothing more until reset;
 * the other sessions still advance, and the call returns MT_ERR_INTERNAL (MT_ERR_OUT_OF_MEMORY when
 * an allocation failed) with a message naming the session (its index in the batch and its handle).
 * Per session the frames equal those of the same session run standalone. The sessions' audio
 * encoders and smoothing run in parallel across sessions, and the sampler and decoder batched over
 * the sessions, all on the batch's threads (a session's own threads stay idle while it is in a batch).
 * One thread at a time per batch; no call on its sessions from other threads meanwhile. */
MT_API mt_status mt_batch_step(mt_batch* batch, int64_t* out_frames);

/* ==============================================================================================
 * Offline
 * ============================================================================================ */

/* Animates a whole utterance: pcm[n_samples] (16 kHz mono float32, as given) ->
 * out[frames, n_vertices, 3] with frames = mt_model_num_frames(model, n_samples).
 *
 * params:          required (the template); smoothing uses the whole sequence (replicate padding at
 *                  both ends, exactly Python's post_smooth), smoothing_delay is not used; threads as
 *                  documented in mt_session_params (0 = every core).
 * out:             capacity_frames * n_vertices * 3 floats; may be NULL when capacity_frames is 0.
 * capacity_frames: frames `out` can hold.
 * out_frames:      receives the frame count; also on MT_ERR_BUFFER_TOO_SMALL, which is returned
 *                  before any work when capacity_frames is smaller (call with NULL, 0 to ask).
 * The frames equal those of a session with the same params that pushes the same audio (in any
 * pieces), then finishes, with smoothing_delay 8.
 * Errors: as mt_session_create and mt_session_push_audio, plus MT_ERR_BUFFER_TOO_SMALL.
 * Thread-safe (the model is shared read-only; the work runs on the calling thread and, with threads
 * != 1, threads started for this call). */
MT_API mt_status mt_animate(const mt_model* model, const float* pcm, int64_t n_samples,
                            const mt_session_params* params, float* out, int64_t capacity_frames,
                            int64_t* out_frames);

/* ==============================================================================================
 * Blendshape weights: frames -> a rig's K weights (ARKit's 52, or any morph-target rig), live
 * ============================================================================================ */

/* Per frame t, with r = frame - neutral, m the vertex weights (ones when NULL) and S = sum(m), the
 * weights w [K] minimise
 *   (1/S) sum_v m_v |sum_k w_k deltas[k, v] - r[v]|^2 + smoothing |w - w_prev|^2
 * subject to lo <= w_k <= hi, exactly (an active-set QP warm-started from the previous frame); the
 * first frame after creation or reset has no smoothing term. The Gram matrix of the basis is
 * computed once, at creation; a frame then costs one [K, 3V] product and a K x K solve, and
 * allocates nothing. (meshtalk::BlendshapeSolver, csrc/include/meshtalk/blendshapes.hpp; Python:
 * meshtalk_fast.solve_blendshapes, backend "cpp".) */
typedef struct mt_blendshape_solver mt_blendshape_solver;

typedef struct mt_blendshape_params {
  uint32_t struct_size; /* sizeof(mt_blendshape_params), set by mt_blendshape_default_params() */
  float lo;             /* lower bound of every weight; default 0 (-INFINITY: none) */
  float hi;             /* upper bound of every weight; default 1 (+INFINITY: none); lo <= hi */
  float smoothing;      /* >= 0, the weight of |w - w_prev|^2 (pulls each frame towards the
                           previous one); default 0 */
} mt_blendshape_params;

/* Defaults: lo = 0, hi = 1, smoothing = 0. Thread-safe. */
MT_API mt_blendshape_params mt_blendshape_default_params(void);

/* Creates a solver for one blendshape basis.
 *
 * n_vertices:     V, 1 .. 2^24.
 * n_shapes:       K, 1 .. 256.
 * neutral:        [V, 3] float32, the rig's rest shape (vertex-major x, y, z); copied.
 * deltas:         [K, V, 3] float32, shape k's offsets from neutral (morph target k); copied.
 * vertex_weights: optional [V] weights >= 0, not all 0 (e.g. 0 outside the face); NULL: all 1.
 * params:         optional; NULL means mt_blendshape_default_params().
 * out_solver:     receives the new solver (NULL on failure). Release it with
 *                 mt_blendshape_solver_free.
 * A basis with a zero or linearly dependent shape is accepted (its weights are then not determined
 * by the meshes: the solver picks the solution nearest 0 through a tiny ridge); its condition number
 * (mt_blendshape_solver_info) is then large or infinite: warn the user.
 * Errors: MT_ERR_INVALID_ARGUMENT (NULL argument, a size out of range, a value that is not finite, a
 * negative vertex weight or all zero, lo > hi or NaN, a negative or non-finite smoothing, bad
 * struct_size), MT_ERR_OUT_OF_MEMORY. Thread-safe. */
MT_API mt_status mt_blendshape_solver_create(int64_t n_vertices, int64_t n_shapes, const float* neutral,
                                             const float* deltas, const float* vertex_weights,
                                             const mt_blendshape_params* params, mt_blendshape_solver** out_solver);

/* As mt_blendshape_solver_create with n_vertices = the model's (mt_model_info.n_vertices), for the
 * frames of its sessions. The solver does not keep the model. Thread-safe. */
MT_API mt_status mt_blendshape_solver_create_for_model(const mt_model* model, int64_t n_shapes, const float* neutral,
                                                       const float* deltas, const float* vertex_weights,
                                                       const mt_blendshape_params* params,
                                                       mt_blendshape_solver** out_solver);

/* Frees the solver. NULL is ignored. Must not run concurrently with another call using it. */
MT_API void mt_blendshape_solver_free(mt_blendshape_solver* solver);

typedef struct mt_blendshape_solver_info {
  uint32_t struct_size;       /* in: set by the caller to sizeof(mt_blendshape_solver_info) */
  int64_t n_vertices;         /* V */
  int64_t n_shapes;           /* K: a solved frame is K floats */
  double condition;           /* lambda_max / lambda_min of the weighted Gram matrix D^T M D / S
                                 (the square of the weighted basis' condition number); +infinity
                                 when it is singular. Above ~1e6 the weights are poorly determined */
  int64_t frames_solved;      /* frames solved since creation */
  int64_t unconverged_frames; /* frames whose active-set loop hit its iteration cap (their weights
                                 are then a feasible point better than the warm start); 0 normally */
} mt_blendshape_solver_info;

/* Fills `*info`; the caller sets info->struct_size = sizeof(mt_blendshape_solver_info) first.
 * One thread at a time per solver. */
MT_API mt_status mt_blendshape_solver_get_info(const mt_blendshape_solver* solver, mt_blendshape_solver_info* info);

/* Solves n_frames consecutive frames of one stream: frames [n_frames, V, 3] float32 ->
 * out_weights [n_frames, K] float32. Frame i is warm-started from (and, with smoothing, pulled
 * towards) frame i - 1; the first from the last frame of the previous call, unless
 * mt_blendshape_solver_reset came between. frames and out_weights may be NULL when n_frames is 0.
 * Errors: MT_ERR_INVALID_ARGUMENT (NULL buffer, n_frames < 0, a coordinate that is not finite: the
 * message names the frame and vertex; the frames before it were written and are the solver's
 * previous frames now). One thread at a time per solver. */
MT_API mt_status mt_blendshape_solver_solve(mt_blendshape_solver* solver, const float* frames, int64_t n_frames,
                                            float* out_weights);

/* Starts a new stream: the next frame is solved cold and without the smoothing term. Allocates
 * nothing. One thread at a time per solver. */
MT_API mt_status mt_blendshape_solver_reset(mt_blendshape_solver* solver);

/* As mt_session_pop_frames, but each popped frame is solved by `solver` into K weights:
 * out_weights [max_frames, K] float32 (may be NULL only when max_frames is 0), out_frames receives
 * the number of frames popped and solved. The solver's V must be the session's model's
 * (MT_ERR_INVALID_ARGUMENT, nothing popped). Frames are popped one at a time into a buffer the
 * solver owns (no allocation). Should a frame fail to solve (a non-finite coordinate), it is
 * consumed, the call fails, and *out_frames receives the frames written before it (an exception to
 * the output rule). Use one solver per session (it carries the stream's previous frame); reset both
 * together. One thread at a time per session and per solver. */
MT_API mt_status mt_session_pop_weights(mt_session* session, mt_blendshape_solver* solver, float* out_weights,
                                        int64_t max_frames, int64_t* out_frames);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* MESHTALK_MESHTALK_H */
