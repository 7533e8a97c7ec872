// cuBLAS by dlopen (see cublas_loader.h).
#include "cublas_loader.h"

#include <string>

#include "strata/formats/error.h"

#ifndef STRATA_CUDA_EMU
#include <dlfcn.h>
#endif

namespace strata::cuda {

namespace {

#ifdef STRATA_CUDA_EMU

CublasApi Load() {  // the emulator's stand-ins (tests/emu/cuda_emu.cc), linked in
  CublasApi a;
  a.create = cublasCreate;
  a.destroy = cublasDestroy;
  a.set_stream = cublasSetStream;
  a.gemm_ex = cublasGemmEx;
  a.status_name = cublasGetStatusName;
  a.status_string = cublasGetStatusString;
  return a;
}

#else

#ifndef STRATA_CUBLAS_DIR
#define STRATA_CUBLAS_DIR ""
#endif

template <typename F>
void Resolve(void* lib, const char* name, const std::string& path, F* out) {
  void* p = dlsym(lib, name);
  if (!p) {
    const char* e = dlerror();
    throw Error("cuBLAS at " + path + " lacks " + name + " (" + (e ? e : "not found") +
                "); the CUDA backend needs the cuBLAS of CUDA 13 (libcublas.so.13)");
  }
  *out = reinterpret_cast<F>(p);
}

CublasApi Load() {
  std::string dir = STRATA_CUBLAS_DIR;
  std::string tried;
  void* lib = nullptr;
  std::string path;
  for (const std::string& cand : {std::string("libcublas.so.13"), std::string("libcublas.so"),
                                  dir.empty() ? std::string() : dir + "/libcublas.so.13",
                                  dir.empty() ? std::string() : dir + "/libcublas.so"}) {
    if (cand.empty()) continue;
    lib = dlopen(cand.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (lib) {
      path = cand;
      break;
    }
    const char* e = dlerror();
    tried += "\n  " + cand + ": " + (e ? e : "not found");
  }
  if (!lib)
    throw Error("the CUDA backend needs cuBLAS (libcublas.so.13 from the CUDA 13 toolkit), and it could not be "
                "loaded:" + tried + "\ninstall the CUDA toolkit's cuBLAS or add its directory to LD_LIBRARY_PATH; "
                "or run with --device cpu");
  CublasApi a;
  Resolve(lib, "cublasCreate_v2", path, &a.create);
  Resolve(lib, "cublasDestroy_v2", path, &a.destroy);
  Resolve(lib, "cublasSetStream_v2", path, &a.set_stream);
  Resolve(lib, "cublasGemmEx", path, &a.gemm_ex);
  Resolve(lib, "cublasGetStatusName", path, &a.status_name);
  Resolve(lib, "cublasGetStatusString", path, &a.status_string);
  return a;  // the library stays loaded for the process's lifetime
}

#endif

}  // namespace

const CublasApi& Cublas() {
  static const CublasApi api = Load();  // a failed load throws and is retried on the next call
  return api;
}

}  // namespace strata::cuda
