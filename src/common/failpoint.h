#pragma once
// Fault injection for the integration tests. Compiled in only where INFERBOX_FAILPOINTS is
// defined (builds that build the tests; the container images do not), and inert unless the
// environment variable `env` names a file: while that file exists, failpoint(env) is true; the
// file holds how many times to fire (default 1) and is counted down, then removed.
//
//   INFERBOX_FAILPOINT_DECODE        a decode fails as a failed llama_decode would (engine.cpp)
//   INFERBOX_FAILPOINT_STEP_THROW    an engine step throws std::bad_alloc (engine.cpp)
//   INFERBOX_FAILPOINT_HANDLER_THROW an inference handler throws (api/routes.cpp)
//   INFERBOX_FAILPOINT_IO_THROW      a read completion throws before the handler's catch-all, so
//                                    only the I/O thread's own catch-all stands (api/http_server.cpp)
//
// failpoint_ms(env) reads a duration instead: the variable's value in milliseconds (0 when unset).
//   INFERBOX_FAILPOINT_STEP_DELAY_MS each engine step waits this long first, so a test can act
//                                    while a stream is still running (engine.cpp)
//   INFERBOX_FAILPOINT_QUANTIZE_DELAY_MS `import --quantize` waits this long after writing its
//                                    output, before adding it to the cache, so a test can interrupt
//                                    it there (cli/store_commands.cpp)
//   INFERBOX_FAILPOINT_VECTOR_STORE_DAY_MS an expires_after day of a vector store lasts this long
//                                    (whole seconds), so a test sees a store expire
//                                    (retrieval/vector_store_catalog.cpp)

namespace inferbox {

#ifdef INFERBOX_FAILPOINTS
bool failpoint(const char *env);
int  failpoint_ms(const char *env);
#else
inline bool failpoint(const char * /*env*/) {
    return false;
}
inline int failpoint_ms(const char * /*env*/) {
    return 0;
}
#endif

} // namespace inferbox
