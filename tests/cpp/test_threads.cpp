// The core's thread pool (threads.hpp: workers that spin a short while before sleeping) and the work
// split over it at one stream: every task runs once per job across thousands of jobs, with and without
// pauses longer than the spin (so workers go to sleep and are woken), errors are rethrown and leave
// the pool usable, and a streaming smoother split over 2 or 3 threads gives the same bits as on one.
// ctest runs this file three times: with the default spin, MESHTALK_SPIN_US=0 (never spin) and an
// unreadable value (the default).
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "check.hpp"
#include "meshtalk/smoothing.hpp"
#include "meshtalk/threads.hpp"

namespace {

// xorshift in [-1, 1)
struct Noise {
  uint64_t x;
  float next() {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return static_cast<float>(x >> 40) / static_cast<float>(1 << 23) - 1.0f;
  }
};

}  // namespace

TEST(spin_setting_is_read_from_the_environment) {
  const char* text = std::getenv("MESHTALK_SPIN_US");
  const std::string value = text ? text : "";
  if (value == "0") CHECK_EQ(meshtalk::spin_microseconds(), int64_t(0));
  else if (value == "not-a-number" || value.empty()) CHECK_EQ(meshtalk::spin_microseconds(), int64_t(200));
  else CHECK_EQ(meshtalk::spin_microseconds(), static_cast<int64_t>(std::atoll(value.c_str())));
}

TEST(every_task_runs_once_per_job_across_many_jobs) {
  for (int threads : {1, 2, 3, 5}) {
    meshtalk::ThreadPool pool(threads);
    CHECK_EQ(pool.size(), threads);
    std::vector<std::atomic<int>> counts(40);
    int bad_jobs = 0;
    for (int job = 0; job < 3000; ++job) {
      const int64_t n = 1 + (job * 7) % 37;
      for (int64_t i = 0; i < n; ++i) counts[static_cast<size_t>(i)].store(0);
      pool.parallel_for(n, [&](int64_t i) { counts[static_cast<size_t>(i)].fetch_add(1); });
      bool ok = true;
      for (int64_t i = 0; i < n; ++i) ok = ok && counts[static_cast<size_t>(i)].load() == 1;
      bad_jobs += ok ? 0 : 1;
      // Now and then a pause longer than the spin: the workers sleep and the next job wakes them.
      if (job % 500 == 499) std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    CHECK_EQ(bad_jobs, 0);
  }
}

TEST(the_callers_view_of_the_tasks_writes_is_complete) {
  meshtalk::ThreadPool pool(3);
  std::vector<int64_t> out(64, 0);
  int64_t wrong = 0;
  for (int64_t job = 1; job <= 2000; ++job) {
    pool.parallel_for(64, [&](int64_t i) { out[static_cast<size_t>(i)] = job * 100 + i; });
    for (int64_t i = 0; i < 64; ++i) wrong += out[static_cast<size_t>(i)] == job * 100 + i ? 0 : 1;
  }
  CHECK_EQ(wrong, int64_t(0));
}

TEST(a_failing_task_is_rethrown_and_the_pool_goes_on) {
  meshtalk::ThreadPool pool(2);
  std::atomic<int> ran{0};
  std::string message;
  try {
    pool.parallel_for(9, [&](int64_t i) {
      ran.fetch_add(1);
      if (i == 4) throw std::runtime_error("task 4 failed");
    });
  } catch (const std::runtime_error& e) {
    message = e.what();
  }
  CHECK_EQ(message, std::string("task 4 failed"));
  CHECK_EQ(ran.load(), 9);  // the other tasks still ran
  std::atomic<int> after{0};
  pool.parallel_for(5, [&](int64_t) { after.fetch_add(1); });
  CHECK_EQ(after.load(), 5);
}

TEST(a_pool_destroyed_while_its_workers_spin_or_sleep_stops) {
  for (int pause_ms : {0, 3}) {
    meshtalk::ThreadPool pool(4);
    std::atomic<int> ran{0};
    pool.parallel_for(8, [&](int64_t) { ran.fetch_add(1); });
    if (pause_ms) std::this_thread::sleep_for(std::chrono::milliseconds(pause_ms));
    CHECK_EQ(ran.load(), 8);
  }  // the destructor joins workers that are spinning (0 ms) or asleep (3 ms)
}

// The streaming smoother split into blocks of columns over a pool: the same bits as on the calling
// thread, for pushes and close, every delay, and vertex counts with one, two or three blocks.
TEST(streaming_smoother_on_threads_is_the_same_bits) {
  for (int64_t V : {int64_t(1000), int64_t(2731), int64_t(6172)}) {
    Noise noise{static_cast<uint64_t>(V) * 2654435761u + 1};
    std::vector<float> forehead(static_cast<size_t>(V)), neck(static_cast<size_t>(V));
    for (float& m : forehead) m = 0.5f + 0.5f * noise.next();
    for (float& m : neck) m = 0.5f + 0.5f * noise.next();
    const int64_t T = 23, V3 = V * 3;
    std::vector<float> frames(static_cast<size_t>(T * V3));
    for (float& x : frames) x = noise.next();
    for (int64_t delay : {int64_t(0), int64_t(4), int64_t(8)}) {
      std::vector<std::vector<float>> outs;
      for (int threads : {0, 2, 3}) {  // 0: no pool
        std::shared_ptr<meshtalk::ThreadPool> pool = threads ? std::make_shared<meshtalk::ThreadPool>(threads) : nullptr;
        meshtalk::StreamingSmoother s(V, forehead.data(), neck.data(), delay, pool);
        std::vector<float> out(static_cast<size_t>(T * V3), -7.0f);
        int64_t got = 0;
        for (int64_t t = 0; t < T; ++t) {
          if (t == 11 && threads) s.set_threaded(false);  // a session joining a batch mid-way
          if (t == 15 && threads) s.set_threaded(true);
          if (s.push(frames.data() + t * V3, out.data() + got * V3)) ++got;
        }
        got += s.close(out.data() + got * V3, T - got);
        CHECK_EQ(got, T);
        outs.push_back(out);
      }
      CHECK(std::memcmp(outs[0].data(), outs[1].data(), outs[0].size() * sizeof(float)) == 0);
      CHECK(std::memcmp(outs[0].data(), outs[2].data(), outs[0].size() * sizeof(float)) == 0);
    }
  }
}

// With delay 8 the streaming smoother is post_smooth of the whole sequence (smoothing.hpp), on threads too.
TEST(threaded_streaming_smoother_with_delay_8_is_post_smooth) {
  const int64_t V = 2900, T = 17, V3 = V * 3;
  Noise noise{99};
  std::vector<float> forehead(static_cast<size_t>(V)), neck(static_cast<size_t>(V)), frames(static_cast<size_t>(T * V3));
  for (float& m : forehead) m = 0.5f + 0.5f * noise.next();
  for (float& m : neck) m = 0.5f + 0.5f * noise.next();
  for (float& x : frames) x = noise.next();
  std::vector<float> whole(frames.size()), streamed(frames.size());
  meshtalk::post_smooth(frames.data(), 1, T, V, forehead.data(), neck.data(), whole.data(), 2);
  meshtalk::StreamingSmoother s(V, forehead.data(), neck.data(), 8, std::make_shared<meshtalk::ThreadPool>(2));
  int64_t got = 0;
  for (int64_t t = 0; t < T; ++t)
    if (s.push(frames.data() + t * V3, streamed.data() + got * V3)) ++got;
  got += s.close(streamed.data() + got * V3, T - got);
  CHECK_EQ(got, T);
  CHECK(std::memcmp(whole.data(), streamed.data(), whole.size() * sizeof(float)) == 0);
}

int main(int argc, char** argv) { return meshtalk_test::run_all(argc, argv); }
