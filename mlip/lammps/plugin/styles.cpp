// Registration of pair_style mlip and fix mlip/coulomb with LAMMPS, in the implementation
// library (mlipplugin_torch.so). LAMMPS loads mlipplugin.so, whose lammpsplugin_init opens this
// library and calls mlip_register_styles (mlipplugin.cpp says why).
//
// The wheel does not ship lammpsplugin.h; the structure below follows the layout that the
// LAMMPS manual ("Writing plugins") describes: version, style, name, info, author, a union
// of creator functions, and the dlopen handle, passed to the registration callback.

#include "pair_mlip.h"

#ifndef MLIP_LAMMPS_VERSION
#define MLIP_LAMMPS_VERSION "22 Jul 2025"
#endif

namespace {

struct PluginInfo {
  const char *version;
  const char *style;
  const char *name;
  const char *info;
  const char *author;
  union {
    void *(*v1)(void *);                 // pair styles: creator(LAMMPS *)
    void *(*v2)(void *, int, char **);   // fix/compute styles
  } creator;
  void *handle;
};

using RegisterFunc = void (*)(PluginInfo *, void *);

void *create_pair_mlip(void *lmp)
{
  return new LAMMPS_NS::PairMLIP(static_cast<LAMMPS_NS::LAMMPS *>(lmp));
}

void *create_fix_mlip_coulomb(void *lmp, int narg, char **arg)
{
  return new LAMMPS_NS::FixMLIPCoulomb(static_cast<LAMMPS_NS::LAMMPS *>(lmp), narg, arg);
}

}    // namespace

// lammpsplugin_init's arguments, forwarded by mlipplugin.so: the LAMMPS instance, the handle of
// mlipplugin.so (LAMMPS counts its styles per handle for "plugin unload") and the callback.
extern "C" void mlip_register_styles(void *lmp, void *handle, void *regfunc)
{
  PluginInfo plugin;
  plugin.version = MLIP_LAMMPS_VERSION;
  plugin.style = "pair";
  plugin.name = "mlip";
  plugin.info = "mlip machine-learned potential (TorchScript model.pt)";
  plugin.author = "mlip developers";
  plugin.creator.v1 = &create_pair_mlip;
  plugin.handle = handle;
  reinterpret_cast<RegisterFunc>(regfunc)(&plugin, lmp);

  plugin.style = "fix";
  plugin.name = "mlip/coulomb";
  plugin.info = "mlip Coulomb path: forces through the charges after kspace (created by pair_style mlip)";
  plugin.creator.v2 = &create_fix_mlip_coulomb;
  reinterpret_cast<RegisterFunc>(regfunc)(&plugin, lmp);
}
