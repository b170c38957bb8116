/*
 * coserve fast release: an LD_PRELOAD shim for the embedded tritonserver.
 *
 * When Triton destroys a Python-backend model instance, python_backend's
 * StubLauncher::UpdateHealth() (src/stub_launcher.cc) clears the stub's health flag, calls
 * sleep(1) "so that the child process has a chance to change the health variable", and only
 * then sends Finalize. Every unload therefore keeps the model process (and its memory) for one
 * more second, whatever the model's size (docs/triton.md).
 *
 * This shim makes sleep() return at once for calls made from libtriton_python.so, and only for
 * those: every other caller gets the real sleep(). The health flag then reads "not healthy", so
 * Triton takes its own path for an unhealthy stub: it kills the stub process and reaps it
 * (StubLauncher::KillStubProcess), 4-8 ms instead of ~1.1 s. The model's finalize() does not run;
 * the coserve_ort backend keeps nothing that needs it.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <string.h>
#include <unistd.h>

typedef unsigned int (*sleep_fn)(unsigned int);

unsigned int sleep(unsigned int seconds) {
    Dl_info info;
    void *caller = __builtin_return_address(0);
    if (dladdr(caller, &info) != 0 && info.dli_fname != NULL &&
        strstr(info.dli_fname, "libtriton_python.so") != NULL) {
        return 0;
    }
    static sleep_fn real_sleep = NULL;
    if (real_sleep == NULL) {
        real_sleep = (sleep_fn)dlsym(RTLD_NEXT, "sleep");
    }
    return real_sleep != NULL ? real_sleep(seconds) : 0;
}
