// A minimal test harness for the C++ tests (no third-party framework to install).
//
//   TEST(name) { CHECK(x == 1); CHECK_EQ(a, b); CHECK_CONTAINS(text, "needle"); }
//   int main(int argc, char** argv) { return meshtalk_test::run_all(argc, argv); }
//
// A failed check prints file:line, the expression and the values, marks the test failed and goes
// on; run_all returns 1 when any test failed. `prog NAME...` runs only the tests whose name contains
// one of the NAMEs.
#pragma once

#include <cstdio>
#include <cstring>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

namespace meshtalk_test {

struct Case {
  const char* name;
  std::function<void()> fn;
};

inline std::vector<Case>& registry() {
  static std::vector<Case> cases;
  return cases;
}

inline int& failures() {
  static int n = 0;
  return n;
}

struct Register {
  Register(const char* name, std::function<void()> fn) { registry().push_back({name, std::move(fn)}); }
};

inline void fail(const char* file, int line, const std::string& what) {
  ++failures();
  std::fprintf(stderr, "%s:%d: FAILED: %s\n", file, line, what.c_str());
}

template <class A, class B>
void check_eq(const A& a, const B& b, const char* ea, const char* eb, const char* file, int line) {
  if (a == b) return;
  std::ostringstream s;
  s << ea << " == " << eb << " (" << a << " vs " << b << ")";
  fail(file, line, s.str());
}

inline void check_contains(const std::string& text, const std::string& needle, const char* expr, const char* file,
                           int line) {
  if (text.find(needle) != std::string::npos) return;
  fail(file, line, std::string(expr) + " contains \"" + needle + "\" (text: \"" + text + "\")");
}

inline int run_all(int argc, char** argv) {
  int ran = 0, failed_tests = 0;
  for (const Case& c : registry()) {
    bool selected = argc <= 1;
    for (int i = 1; i < argc && !selected; ++i) selected = std::strstr(c.name, argv[i]) != nullptr;
    if (!selected) continue;
    const int before = failures();
    c.fn();
    ++ran;
    const bool ok = failures() == before;
    failed_tests += ok ? 0 : 1;
    std::printf("%s %s\n", ok ? "[ ok ]" : "[FAIL]", c.name);
  }
  std::printf("%d tests, %d failed\n", ran, failed_tests);
  if (ran == 0) {
    std::fprintf(stderr, "no test matched the arguments\n");
    return 1;
  }
  return failed_tests == 0 ? 0 : 1;
}

}  // namespace meshtalk_test

#define TEST(name)                                                         \
  static void name();                                                      \
  static const meshtalk_test::Register name##_registered(#name, &name);    \
  static void name()

#define CHECK(cond) \
  ((cond) ? (void)0 : meshtalk_test::fail(__FILE__, __LINE__, #cond))
#define CHECK_EQ(a, b) meshtalk_test::check_eq((a), (b), #a, #b, __FILE__, __LINE__)
#define CHECK_CONTAINS(text, needle) \
  meshtalk_test::check_contains((text), (needle), #text, __FILE__, __LINE__)
