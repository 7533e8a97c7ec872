// Signals turned into strata::Interrupted (see interrupt.h).
#include "interrupt.h"

#include <signal.h>

#include <cstring>

#include "strata/formats/file.h"

namespace strata {

namespace {

volatile sig_atomic_t g_seen = 0;

void OnSignal(int sig) {
  if (g_seen) {
    signal(sig, SIG_DFL);  // a second signal: stop now
    raise(sig);
    return;
  }
  g_seen = 1;
  RequestInterrupt(sig);
}

}  // namespace

void CatchInterrupts() {
  struct sigaction sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sa_handler = OnSignal;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) sigaction(sig, &sa, nullptr);
}

}  // namespace strata
