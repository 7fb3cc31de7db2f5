// A small fixed thread pool for the decoding core.
//
// The core splits work only into tasks that write disjoint outputs and compute each output the same
// way whichever thread runs it, so results do not depend on the thread count (threads = 1 is simply
// the same computation on one core).
//
// Waiting: a worker that has just finished a task spins for a short while (MESHTALK_SPIN_US
// microseconds, default 200, 0 = never) before it sleeps on a condition variable, and so does the
// caller waiting for the last task. A live stream calls parallel_for a few times per frame with
// short serial stretches in between; waking a sleeping thread costs tens of microseconds on a VM,
// which is the size of a whole product at one stream. An idle pool sleeps (it spins only right after
// work), so it costs nothing between frames. One pool per session or batch, shared by its encoder,
// sampler, decoder and smoother, so that no two spinning pools compete for the same cores.
#pragma once

#include <atomic>
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

// How long an idle worker (or a waiting caller) spins before sleeping: MESHTALK_SPIN_US read once
// (an integer in [0, 100000] microseconds; anything else: the default, 200).
int64_t spin_microseconds();

class ThreadPool {
 public:
  // `threads` workers in all: the calling thread plus threads - 1 started here.
  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const noexcept { return static_cast<int>(workers_.size()) + 1; }

  // Runs fn(i) for every i in [0, n) (the caller takes part) and returns when all are done. If a
  // task throws, the remaining tasks still run and the first exception is rethrown here. Not
  // reentrant: a task must not call parallel_for on the pool that runs it.
  void parallel_for(int64_t n, const std::function<void(int64_t)>& fn);

 private:
  void worker_loop();
  void drain();  // runs tasks of the current job until none is left
  // Spins until pred() or the spin time is over; returns pred().
  template <class Pred>
  bool spin_until(Pred pred) const;

  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  const std::function<void(int64_t)>* job_ = nullptr;
  int64_t job_size_ = 0;
  int64_t next_ = 0;        // next task index to hand out (guarded by mutex_)
  int64_t unfinished_ = 0;  // tasks handed out or waiting, not yet finished
  uint64_t generation_ = 0;
  int sleepers_ = 0;  // workers waiting on wake_ (guarded by mutex_)
  bool stop_ = false;
  std::exception_ptr error_;
  // Mirrors for spinning without the mutex: generation_ as published, unfinished_ as counted.
  std::atomic<uint64_t> published_{0};
  std::atomic<int64_t> remaining_{0};
  std::atomic<bool> stopping_{false};
  int64_t spin_ns_ = 0;
};

}  // namespace meshtalk
