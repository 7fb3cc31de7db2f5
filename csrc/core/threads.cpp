#include "meshtalk/threads.hpp"

#include <chrono>
#include <cstdlib>
#include <string>

#include "meshtalk/status.hpp"

#if defined(__linux__)
#include <sched.h>
#endif

namespace meshtalk {

int default_thread_count() {
#if defined(__linux__)
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
#endif
  const unsigned n = std::thread::hardware_concurrency();
  return n > 0 ? static_cast<int>(n) : 1;
}

int resolve_thread_count(int64_t threads, const char* what) {
  if (threads < 0 || threads > 4096)
    throw_mismatch(what, "0 (all cores) or a thread count in [1, 4096]", std::to_string(threads));
  return threads == 0 ? default_thread_count() : static_cast<int>(threads);
}

int64_t spin_microseconds() {
  static const int64_t us = [] {
    const char* text = std::getenv("MESHTALK_SPIN_US");
    if (text == nullptr || *text == '\0') return int64_t(200);
    char* end = nullptr;
    const long long v = std::strtoll(text, &end, 10);
    if (*end != '\0' || v < 0 || v > 100000) return int64_t(200);
    return static_cast<int64_t>(v);
  }();
  return us;
}

namespace {
inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}
}  // namespace

ThreadPool::ThreadPool(int threads) : spin_ns_(spin_microseconds() * 1000) {
  for (int i = 1; i < threads; ++i) workers_.emplace_back([this] { worker_loop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
    stopping_.store(true, std::memory_order_release);
  }
  wake_.notify_all();
  for (std::thread& t : workers_) t.join();
}

template <class Pred>
bool ThreadPool::spin_until(Pred pred) const {
  if (pred()) return true;
  if (spin_ns_ <= 0) return false;
  const auto until = std::chrono::steady_clock::now() + std::chrono::nanoseconds(spin_ns_);
  for (int i = 1;; ++i) {
    cpu_relax();
    if (pred()) return true;
    if (i % 64 == 0 && std::chrono::steady_clock::now() >= until) return false;
  }
}

void ThreadPool::drain() {
  std::unique_lock<std::mutex> lock(mutex_);
  while (next_ < job_size_) {
    const int64_t i = next_++;
    const std::function<void(int64_t)>* job = job_;
    lock.unlock();
    try {
      (*job)(i);
    } catch (...) {
      std::lock_guard<std::mutex> guard(mutex_);
      if (!error_) error_ = std::current_exception();
    }
    lock.lock();
    remaining_.store(--unfinished_, std::memory_order_release);
    if (unfinished_ == 0) done_.notify_all();
  }
}

void ThreadPool::worker_loop() {
  uint64_t seen = 0;
  while (true) {
    // Right after work: spin for the next job a short while before sleeping (threads.hpp).
    spin_until([&] {
      return published_.load(std::memory_order_acquire) != seen || stopping_.load(std::memory_order_acquire);
    });
    {
      std::unique_lock<std::mutex> lock(mutex_);
      if (!stop_ && generation_ == seen) {
        ++sleepers_;
        wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
        --sleepers_;
      }
      if (stop_) return;
      seen = generation_;
    }
    drain();
  }
}

void ThreadPool::parallel_for(int64_t n, const std::function<void(int64_t)>& fn) {
  if (n <= 0) return;
  if (workers_.empty() || n == 1) {  // no hand-off needed
    for (int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
  bool sleeping = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    job_ = &fn;
    job_size_ = n;
    next_ = 0;
    unfinished_ = n;
    remaining_.store(n, std::memory_order_relaxed);
    error_ = nullptr;
    ++generation_;
    published_.store(generation_, std::memory_order_release);
    sleeping = sleepers_ > 0;  // spinning workers see published_ without a wake-up
  }
  if (sleeping) wake_.notify_all();
  drain();
  spin_until([&] { return remaining_.load(std::memory_order_acquire) == 0; });
  std::exception_ptr error;
  {
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [&] { return unfinished_ == 0; });
    job_ = nullptr;
    job_size_ = 0;
    error = error_;
    error_ = nullptr;
  }
  if (error) std::rethrow_exception(error);
}

}  // namespace meshtalk
