// Ctrl-C, kill and hang-up for commands that write: the first signal asks the
// running command to stop at its next read or write (it then unwinds and
// removes what it wrote); a second one ends the process at once.
#pragma once

namespace strata {

// Installs the handlers for SIGINT, SIGTERM and SIGHUP (no SA_RESTART, so a
// blocked read returns). Commands that only read keep the default behaviour.
void CatchInterrupts();

}  // namespace strata
