// A small fixed thread pool for the decoding core.
//
// The core splits work only into tasks that write disjoint outputs and compute each output the same
// way whichever thread runs it, so results do not depend on the thread count (threads = 1 is simply
// the same computation on one core).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace meshtalk {

// The cores this process may run on (sched_getaffinity on Linux, else hardware_concurrency), >= 1.
int default_thread_count();

// threads = 0 means default_thread_count(); negative values throw kInvalidArgument naming `what`.
int resolve_thread_count(int64_t threads, const char* what = "threads");

class ThreadPool {
 public:
  // `threads` workers in all: the calling thread plus threads - 1 started here.
  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const noexcept { return static_cast<int>(workers_.size()) + 1; }

  // Runs fn(i) for every i in [0, n) (the caller takes part) and returns when all are done. If a
  // task throws, the remaining tasks still run and the first exception is rethrown here.
  void parallel_for(int64_t n, const std::function<void(int64_t)>& fn);

 private:
  void worker_loop();
  void drain();  // runs tasks of the current job until none is left

  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  const std::function<void(int64_t)>* job_ = nullptr;
  int64_t job_size_ = 0;
  int64_t next_ = 0;        // next task index to hand out (guarded by mutex_)
  int64_t unfinished_ = 0;  // tasks handed out or waiting, not yet finished
  uint64_t generation_ = 0;
  bool stop_ = false;
  std::exception_ptr error_;
};

}  // namespace meshtalk
