/* canopy_bench_capi: a small C API over Canopy's public C++ API, for the GPU
 * benchmark (bench/gpu/run_bench.py loads libcanopy_bench_capi.so with ctypes).
 *
 * Every function returns a status code (CANOPY_BENCH_OK, or the kind of the
 * canopy::Error that stopped it); the message of the last failure on the
 * calling thread is canopy_bench_last_error(). Handles are opaque pointers.
 * Strings returned through `const char**` belong to the handle they came from
 * (valid until the next call on it, or its destruction), or to the calling
 * thread for functions without a handle (valid until its next such call).
 *
 * Typical use (see bench/gpu/canopy_capi.py):
 *   canopy_bench_workload_from_suite("two-level-3", suite_json, &w);
 *   canopy_bench_runtime_create(0, cache_dir, NULL, &rt);     // fails without a GPU
 *   canopy_bench_plan_create(rt, w, "{\"prefix_blind\": false}", NULL, &p);
 *   canopy_bench_run(rt, p, q, k, v, out, 0, stream);         // launches only
 * Without a GPU, canopy_bench_plan_create(NULL, w, options, device, &p) plans
 * for a described device, and canopy_bench_prewarm_* compiles the plan's
 * kernels into a cubin cache directory. */
#ifndef CANOPY_BENCH_CAPI_H_
#define CANOPY_BENCH_CAPI_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CANOPY_BENCH_EXPORT __attribute__((visibility("default")))

/* Status codes: 0 is success; the others follow canopy::ErrorKind. */
enum {
  CANOPY_BENCH_OK = 0,
  CANOPY_BENCH_INVALID_ARGUMENT = 1,
  CANOPY_BENCH_NOT_SUPPORTED = 2,
  CANOPY_BENCH_COMPILE = 3,
  CANOPY_BENCH_DRIVER = 4,
  CANOPY_BENCH_NO_DEVICE = 5,
  CANOPY_BENCH_CACHE = 6,
  CANOPY_BENCH_IO = 7,
  CANOPY_BENCH_OTHER = 8 /* any other std::exception, or an unknown one */
};

/* Bumped when a signature changes; canopy_capi.py checks it. */
#define CANOPY_BENCH_ABI_VERSION 1

CANOPY_BENCH_EXPORT int canopy_bench_abi_version(void);
/* The message of the last failure on this thread ("" after none). */
CANOPY_BENCH_EXPORT const char* canopy_bench_last_error(void);
/* *available = 1 when libcuda.so.1 loads and reports a device; *why says why not. */
CANOPY_BENCH_EXPORT int canopy_bench_gpu_available(int* available, const char** why);

/* ---- Runtime (needs a GPU) ---------------------------------------------- */
/* cache_dir: NULL or "" for Canopy's default ($CANOPY_CACHE_DIR, ...), "off" for none.
 * tuning_db: NULL or "" for Canopy's search ($CANOPY_TUNING_DB, ...), else a
 * database file or folder searched first (RuntimeOptions::tuning_db). */
CANOPY_BENCH_EXPORT int canopy_bench_runtime_create(int device, const char* cache_dir,
                                                    const char* tuning_db, void** runtime);
CANOPY_BENCH_EXPORT int canopy_bench_runtime_destroy(void* runtime);
/* {"device_name", "arch", "num_sms", "max_smem_per_block", "tuned", "tuning_db",
 *  "tuning_message"} */
CANOPY_BENCH_EXPORT int canopy_bench_runtime_info(void* runtime, const char** json);

/* ---- Workloads (workloads/workload.hpp) --------------------------------- */
/* JSON list of the suite's workload names, in suite order. suite_path NULL or "": default. */
CANOPY_BENCH_EXPORT int canopy_bench_suite_names(const char* suite_path, const char** json);
CANOPY_BENCH_EXPORT int canopy_bench_workload_from_suite(const char* name, const char* suite_path,
                                                         void** workload);
/* model NULL: "llama3-8b"; dtype NULL: "fp16"; page_size <= 0: 16. */
CANOPY_BENCH_EXPORT int canopy_bench_workload_from_tree(const char* tree, const char* model,
                                                        const char* dtype, int page_size,
                                                        void** workload);
CANOPY_BENCH_EXPORT int canopy_bench_workload_from_batch(const char* path, void** workload);
CANOPY_BENCH_EXPORT int canopy_bench_workload_destroy(void* workload);
/* {"name", "tree", "model", "num_qo_heads", "num_kv_heads", "head_dim", "q_dtype",
 *  "kv_dtype", "o_dtype", "kv_layout", "page_size", "sm_scale" (effective),
 *  "logits_soft_cap", "with_lse", "batch_size", "num_indices", "num_pages"} */
CANOPY_BENCH_EXPORT int canopy_bench_workload_info(void* workload, const char** json);
CANOPY_BENCH_EXPORT int canopy_bench_workload_sizes(void* workload, int64_t* batch_size,
                                                    int64_t* num_indices, int64_t* num_pages);
/* Copies the block tables: indptr [batch + 1], indices [num_indices], seq_lens [batch]. */
CANOPY_BENCH_EXPORT int canopy_bench_workload_tables(void* workload, int32_t* indptr,
                                                     int32_t* indices, int32_t* seq_lens);

/* ---- Plans ---------------------------------------------------------------- */
/* options_json: NULL, "" or a planner-options object, parsed by the library
 * (canopy::planner_options_from_json, docs/planner.md): any of "format",
 * "candidates", "row_tiles", "allow_absorb", "allow_split", "waves",
 * "min_split_tokens", "head_packs", "prefix_blind", "coefficients"; unknown keys
 * and bad values are an error naming them.
 * device_json: NULL/"" or an object with any of "name", "arch", "num_sms",
 * "max_smem_per_block" (bytes): the device the cost model plans for. With a
 * runtime and no device_json, the runtime's device; without a runtime, an
 * H200 (arch 90, 132 SMs, 227 KB) unless device_json says otherwise. Options
 * with "coefficients" replace the runtime's (or the H200's) coefficients, and
 * device_json applies on top of them.
 * With a runtime the plan is prepared (kernels compiled and loaded, metadata on
 * the device) and can run; without one it is a host plan (info, prewarm). */
CANOPY_BENCH_EXPORT int canopy_bench_plan_create(void* runtime, void* workload,
                                                 const char* options_json, const char* device_json,
                                                 void** plan);
CANOPY_BENCH_EXPORT int canopy_bench_plan_destroy(void* plan);
/* Summary: {"prepared", "arch", "num_sms", "kernel_launches", "launch_steps", "items",
 * "direct_items", "merge_rows", "configs", "launch_configs" (the schedule),
 * "kernels", "predicted_us", "workspace_bytes",
 * "batch_size", "tree_depth", "num_partial_slots", "max_merge_fan_in", "plan_ms",
 * "options" (every planner option, canopy::planner_options_to_json)} */
CANOPY_BENCH_EXPORT int canopy_bench_plan_info(void* plan, const char** json);
/* The whole plan, canopy::plan_to_json. */
CANOPY_BENCH_EXPORT int canopy_bench_plan_json(void* plan, const char** json);
/* Kernel launches one run makes (what ncu sees per run). */
CANOPY_BENCH_EXPORT int canopy_bench_plan_launches(void* plan, int* launches);

/* Launches a prepared plan on `stream` (a CUstream; a torch cudaStream_t is one;
 * NULL: the legacy stream). Device pointers as in canopy::DeviceTensors; lse must
 * be 0 unless the workload's spec has with_lse. No allocation, no sync:
 * graph-capturable. */
CANOPY_BENCH_EXPORT int canopy_bench_run(void* runtime, void* plan, uint64_t q, uint64_t k_cache,
                                         uint64_t v_cache, uint64_t out, uint64_t lse,
                                         void* stream);

/* ---- Prewarm (no GPU needed) ---------------------------------------------- */
/* Collects the kernels of plans (host or prepared), then compiles them with
 * NVRTC into cache_dir (NULL/"": Canopy's default) with `threads` threads (<= 0:
 * all cores). compile's json: {"kernels", "compiled", "disk_hits", "failures",
 * "first_error", "seconds", "dir", "specs"}; it fails (after compiling the rest)
 * when any kernel failed. */
CANOPY_BENCH_EXPORT int canopy_bench_prewarm_create(const char* cache_dir, void** prewarm);
CANOPY_BENCH_EXPORT int canopy_bench_prewarm_add(void* prewarm, void* plan);
CANOPY_BENCH_EXPORT int canopy_bench_prewarm_compile(void* prewarm, int threads, const char** json);
CANOPY_BENCH_EXPORT int canopy_bench_prewarm_destroy(void* prewarm);

#ifdef __cplusplus
}
#endif

#endif /* CANOPY_BENCH_CAPI_H_ */
