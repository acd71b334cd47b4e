// The Python entry point of classy_fast._C: build metadata only.
//
// Importing the module loads the shared library, whose static initialisers register the ops
// with the dispatcher (TORCH_LIBRARY / TORCH_LIBRARY_IMPL); the ops themselves are reached as
// torch.ops.classy_fast.*. Plain CPython API (no pybind11) keeps this file quick to compile.
// Only setup.py defines CLASSY_FAST_BUILD_PYTHON_MODULE; the CMake library has no PyInit and
// is loaded with torch.ops.load_library instead.
#ifdef CLASSY_FAST_BUILD_PYTHON_MODULE

#include <Python.h>

#define CLASSY_FAST_STRINGIFY_(...) #__VA_ARGS__
#define CLASSY_FAST_STRINGIFY(...) CLASSY_FAST_STRINGIFY_(__VA_ARGS__)

#ifdef CLASSY_FAST_WITH_CUDA
static const int kCudaCompiled = 1;
// setup.py passes the arch list as one preprocessor token, "8.0_9.0"; Python splits on '_'.
static const char* kCudaArchs = CLASSY_FAST_STRINGIFY(CLASSY_FAST_CUDA_ARCHS);
#else
static const int kCudaCompiled = 0;
static const char* kCudaArchs = "";
#endif

#ifdef CLASSY_FAST_BUILD_TORCH_VERSION
static const char* kTorchVersion = CLASSY_FAST_STRINGIFY(CLASSY_FAST_BUILD_TORCH_VERSION);
#else
static const char* kTorchVersion = "unknown";
#endif

static PyModuleDef classy_fast_c_module = {
    PyModuleDef_HEAD_INIT,
    "_C",
    "classy_fast compiled ops (registered as torch.ops.classy_fast.*) and their build metadata.",
    -1,
    nullptr,
};

PyMODINIT_FUNC PyInit__C(void) {
  PyObject* m = PyModule_Create(&classy_fast_c_module);
  if (m == nullptr) return nullptr;
  if (PyModule_AddIntConstant(m, "cuda_compiled", kCudaCompiled) < 0 ||
      PyModule_AddStringConstant(m, "cuda_archs_raw", kCudaArchs) < 0 ||
      PyModule_AddStringConstant(m, "build_torch_version", kTorchVersion) < 0 ||
      PyModule_AddStringConstant(m, "build_compiler", __VERSION__) < 0) {
    Py_DECREF(m);
    return nullptr;
  }
  return m;
}

#endif  // CLASSY_FAST_BUILD_PYTHON_MODULE
