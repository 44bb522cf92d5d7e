#pragma once
// Fault injection for the integration tests. Compiled in only where INFERBOX_FAILPOINTS is
// defined (builds that build the tests; the container images do not), and inert unless the
// environment variable `env` names a file: while that file exists, failpoint(env) is true; the
// file holds how many times to fire (default 1) and is counted down, then removed.
//
//   INFERBOX_FAILPOINT_DECODE        a decode fails as a failed llama_decode would (engine.cpp)
//   INFERBOX_FAILPOINT_STEP_THROW    an engine step throws std::bad_alloc (engine.cpp)
//   INFERBOX_FAILPOINT_HANDLER_THROW an inference handler throws (api/routes.cpp)

namespace inferbox {

#ifdef INFERBOX_FAILPOINTS
bool failpoint(const char *env);
#else
inline bool failpoint(const char * /*env*/) {
    return false;
}
#endif

} // namespace inferbox
