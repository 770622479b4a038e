// pair_style mlip: see pair_mlip.h and README.md.

#include "pair_mlip.h"

#include "atom.h"
#include "comm.h"
#include "domain.h"
#include "error.h"
#include "force.h"
#include "json.h"
#include "kspace.h"
#include "memory.h"
#include "modify.h"
#include "compute.h"
#include "neigh_list.h"
#include "neighbor.h"
#include "platform.h"
#include "update.h"
#include "utils.h"

#include <ATen/Parallel.h>

#include <malloc.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <exception>
#include <optional>

using namespace LAMMPS_NS;

namespace {

// torch's messages span many lines (TorchScript tracebacks): keep the first and the last.
std::string short_message(const char *text)
{
  std::string s(text);
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  auto first_end = s.find('\n');
  if (first_end == std::string::npos) return s;
  return s.substr(0, first_end) + " ... " + s.substr(s.rfind('\n') + 1);
}

std::vector<double> to_doubles(const torch::Tensor &t)
{
  torch::Tensor c = t.detach().to(torch::kFloat64).contiguous();
  const double *p = c.data_ptr<double>();
  return std::vector<double>(p, p + c.numel());
}

// Calls fn(i, j) for the edges of local atoms i in [i_begin, i_end): j local or ghost,
// |x_j - x_i| < cutoff, from a full neighbour list (indexed by atom). Two atoms at the same
// place are a LAMMPS error naming their atom IDs, as the ASE calculator refuses such a
// structure (fingerprints.neighbors.neighbor_list): the model's energy is not defined there.
template <typename Fn>
void for_each_edge(Atom *atom, Error *error, NeighList *list, double cutoff, int i_begin, int i_end, Fn &&fn)
{
  double **x = atom->x;
  double cutsq = cutoff * cutoff;
  for (int i = i_begin; i < i_end; i++) {
    const int *jlist = list->firstneigh[i];
    for (int jj = 0; jj < list->numneigh[i]; jj++) {
      int j = jlist[jj] & NEIGHMASK;
      double dx = x[j][0] - x[i][0], dy = x[j][1] - x[i][1], dz = x[j][2] - x[i][2];
      double rsq = dx * dx + dy * dy + dz * dz;
      if (rsq <= 0.0)
        error->one(FLERR, "pair_style mlip: atoms {} and {} (atom IDs) are at the same place", atom->tag[i],
                   atom->tag[j]);
      if (rsq < cutsq) fn(i, j);
    }
  }
}

// erfc(x) exp(x^2)-free form used by pair_style coul/long without tables (Abramowitz & Stegun
// 7.1.26, |error| < 1.5e-7): the real-space potential must be that of the energy LAMMPS computes.
double erfc_coul_long(double x)
{
  constexpr double P = 0.3275911, A1 = 0.254829592, A2 = -0.284496736, A3 = 1.421413741, A4 = -1.453152027,
                   A5 = 1.061405429;
  double t = 1.0 / (1.0 + P * x);
  return t * (A1 + t * (A2 + t * (A3 + t * (A4 + t * A5)))) * std::exp(-x * x);
}

}    // namespace

PairMLIP::PairMLIP(LAMMPS *lmp) : Pair(lmp)
{
  single_enable = 0;
  restartinfo = 0;
  one_coeff = 1;
  manybody_flag = 1;
  no_virial_fdotr_compute = 1;
  centroidstressflag = CENTROID_AVAIL;    // cvatom: 9 components, see tally_edge_virials
  // newton_pair off: ghost forces (3), per-atom virials (6) and centroid virials (9) go to
  // their owners through the reverse communication of this pair style
  comm_reverse_off = 3 + 6 + 9;
  comm_reverse = 3 + 6 + 9;    // the Coulomb path's step 2 sends its ghost rows itself, newton on or off
                               // (settings: more for a committee's member forces)
  comm_forward = 1;            // the Coulomb path: charges of ghost atoms
}

PairMLIP::~PairMLIP()
{
  if (copymode) return;
  coulomb_teardown();
  if (deviation_fp_) fclose(deviation_fp_);
  if (allocated) {
    memory->destroy(setflag);
    memory->destroy(cutsq);
  }
}

void PairMLIP::allocate()
{
  allocated = 1;
  int n = atom->ntypes + 1;
  memory->create(setflag, n, n, "pair:setflag");
  memory->create(cutsq, n, n, "pair:cutsq");
  for (int i = 0; i < n; i++)
    for (int j = 0; j < n; j++) setflag[i][j] = 0;
}

/* pair_style mlip <model.pt> [chunk N] [heap_pad MiB] [total_charge Q] [deviation_file F] [every N] */

void PairMLIP::settings(int narg, char **arg)
{
  const char *usage = "expected 'pair_style mlip <model.pt> [chunk N] [heap_pad MiB] [total_charge Q] "
                      "[deviation_file F] [every N]'";
  if (narg < 1 || narg % 2 != 1) error->all(FLERR, "Illegal pair_style mlip command: {}", usage);
  chunk_ = DEFAULT_CHUNK;
  total_charge_ = 0.0;
  deviation_path_.clear();
  deviation_every_ = 1;
  for (int a = 1; a < narg; a += 2) {
    if (strcmp(arg[a], "total_charge") == 0) {
      total_charge_ = utils::numeric(FLERR, arg[a + 1], false, lmp);
      continue;
    }
    if (strcmp(arg[a], "deviation_file") == 0) {
      deviation_path_ = arg[a + 1];
      continue;
    }
    if (strcmp(arg[a], "every") == 0) {
      deviation_every_ = utils::inumeric(FLERR, arg[a + 1], false, lmp);
      if (deviation_every_ < 1) error->all(FLERR, "pair_style mlip: every must be >= 1 (steps)");
      continue;
    }
    if (strcmp(arg[a], "chunk") == 0) {
      chunk_ = utils::inumeric(FLERR, arg[a + 1], false, lmp);
      if (chunk_ < 0) error->all(FLERR, "pair_style mlip: chunk must be >= 0 (0 = all local atoms at once)");
    } else if (strcmp(arg[a], "heap_pad") == 0) {
      // glibc returns freed memory at the top of the heap to the kernel once it exceeds
      // M_TOP_PAD (128 KiB by default); libtorch frees and re-allocates the model's
      // intermediates on every call, which then page-fault in again (system time). A pad
      // larger than those intermediates keeps them. It applies to the whole process.
      int mib = utils::inumeric(FLERR, arg[a + 1], false, lmp);
      if (mib <= 0 || mib > 2047)    // mallopt takes an int of bytes
        error->all(FLERR, "pair_style mlip: heap_pad must be 1 to 2047 (MiB)");
      if (mallopt(M_TOP_PAD, mib << 20) != 1) error->all(FLERR, "pair_style mlip: mallopt(M_TOP_PAD) failed");
    } else {
      error->all(FLERR, "Illegal pair_style mlip command: unknown keyword '{}'; {}", arg[a], usage);
    }
  }
  if (strcmp(update->unit_style, "metal") != 0)
    error->all(FLERR,
               "pair_style mlip requires 'units metal' (models use eV and Angstrom); "
               "this input uses 'units {}'",
               update->unit_style);
  load_model(arg[0]);
  if (!deviation_path_.empty() && committee_ < 2)
    error->all(FLERR,
               "pair_style mlip: deviation_file needs a committee model, and '{}' is a single model: train "
               "one with 'mlip train ... --committee 4' or combine runs with 'mlip committee'",
               model_path_);
  if (deviation_fp_) fclose(deviation_fp_);
  deviation_fp_ = nullptr;
  if (!deviation_path_.empty() && comm->me == 0) {
    deviation_fp_ = fopen(deviation_path_.c_str(), "w");
    if (deviation_fp_ == nullptr)
      error->one(FLERR, "pair_style mlip: cannot write deviation_file '{}': {}", deviation_path_,
                 utils::getsyserror());
    fmt::print(deviation_fp_, "#       step         max_devi_f         min_devi_f         avg_devi_f\n");
    fflush(deviation_fp_);
  }
  // reverse communication: forces + per-atom virials (3 + 6 + 9), or the members' forces (3 K)
  comm_reverse = comm_reverse_off = std::max(3 + 6 + 9, 3 * committee_);
  if (coulomb_)
    coulomb_setup();
  else
    coulomb_teardown();
  // a new model may have other elements: pair_coeff must map the types again
  if (allocated)
    for (int i = 0; i <= atom->ntypes; i++)
      for (int j = 0; j <= atom->ntypes; j++) setflag[i][j] = 0;
}

void PairMLIP::load_model(const std::string &path)
{
  if (!platform::file_is_readable(path))
    error->all(FLERR, "pair_style mlip: cannot read model file '{}' (missing or not readable)", path);

  torch::jit::ExtraFilesMap extra{{"metadata.json", ""}};
  try {
    model_ = torch::jit::load(path, torch::kCPU, extra);
  } catch (const std::exception &e) {
    error->all(FLERR, "pair_style mlip: '{}' is not a valid TorchScript model file: {}", path,
               short_message(e.what()));
  }
  model_.eval();
  model_path_ = path;
  // models exported before per-atom virials take no edge_forces argument: they still run,
  // without per-atom virials
  has_edge_forces_ =
      model_.get_method("forward").function().getSchema().argumentIndexWithName("edge_forces").has_value();

  const std::string &text = extra["metadata.json"];
  if (text.empty())
    error->all(FLERR, "pair_style mlip: model '{}' has no metadata.json (export it with mlip export)", path);
  try {
    json meta = json::parse(text);
    elements_ = meta.at("elements").get<std::vector<std::string>>();
    cutoff_ = meta.at("cutoff").get<double>();
    long_range_ = meta.at("long_range").get<bool>();
    overlay_ = meta.value("lammps_overlay", std::vector<std::string>{});
    coulomb_ = meta.contains("lammps_coulomb") && !meta.at("lammps_coulomb").is_null();
    committee_ = meta.value("committee", 1);
    typical_q_.clear();
    if (coulomb_) typical_q_ = meta.at("lammps_coulomb").value("typical_charges", std::vector<double>{});
    std::string dtype = meta.at("dtype").get<std::string>();
    if (dtype == "float64")
      dtype_ = torch::kFloat64;
    else if (dtype == "float32")
      dtype_ = torch::kFloat32;
    else
      error->all(FLERR, "pair_style mlip: model '{}' has dtype '{}'; supported: float64, float32", path,
                 dtype);
    // extrapolation warnings: older model files have neither key and are not checked
    rmin_species_.assign(elements_.size() * elements_.size(), 0.0);
    if (meta.contains("min_pair_distance"))
      for (const auto &item : meta.at("min_pair_distance").items()) {
        const std::string &pair = item.key();
        auto dash = pair.find('-');
        auto a = std::find(elements_.begin(), elements_.end(), pair.substr(0, dash));
        auto b = std::find(elements_.begin(), elements_.end(), pair.substr(dash + 1));
        if (dash == std::string::npos || a == elements_.end() || b == elements_.end())
          error->all(FLERR, "pair_style mlip: model '{}' has a min_pair_distance for an unknown pair '{}'",
                     path, pair);
        size_t ia = a - elements_.begin(), ib = b - elements_.begin();
        rmin_species_[ia * elements_.size() + ib] = rmin_species_[ib * elements_.size() + ia] =
            item.value().get<double>();
      }
    margin_ = meta.value("feature_range", false) ? meta.value("extrapolation_margin", 0.25) : -1.0;
    std::string units = meta.value("units", std::string("metal"));
    if (units != "metal")
      error->all(FLERR, "pair_style mlip: model '{}' uses units '{}'; only metal is supported", path, units);
  } catch (const json::exception &e) {
    error->all(FLERR, "pair_style mlip: bad metadata.json in model '{}': {}", path, e.what());
  }
  if (elements_.empty() || !(cutoff_ > 0.0))
    error->all(FLERR, "pair_style mlip: model '{}' needs a non-empty element list and a positive cutoff",
               path);
  warned_pairs_.clear();
  warned_atoms_.clear();
  pair_warnings_left_ = atom_warnings_left_ = MAX_WARNINGS;
  model_loaded_ = true;
}

/* pair_coeff * * El1 El2 ... (one model element per LAMMPS atom type) */

void PairMLIP::coeff(int narg, char **arg)
{
  if (!model_loaded_) error->all(FLERR, "pair_coeff for pair_style mlip before the model is loaded");
  if (!allocated) allocate();
  int ntypes = atom->ntypes;
  if (narg != 2 + ntypes || strcmp(arg[0], "*") != 0 || strcmp(arg[1], "*") != 0)
    error->all(FLERR, "Incorrect args for pair_coeff: expected 'pair_coeff * * <element>' with one element "
                      "for each of the {} atom types",
               ntypes);

  std::string known;
  for (const auto &el : elements_) known += " " + el;
  type_to_species_.assign(ntypes + 1, -1);
  for (int t = 1; t <= ntypes; t++) {
    auto it = std::find(elements_.begin(), elements_.end(), std::string(arg[1 + t]));
    if (it == elements_.end())
      error->all(FLERR, "pair_coeff: element '{}' (atom type {}) is not in model '{}'; its elements are:{}",
                 arg[1 + t], t, model_path_, known);
    type_to_species_[t] = it - elements_.begin();
  }
  for (int i = 1; i <= ntypes; i++)
    for (int j = i; j <= ntypes; j++) setflag[i][j] = 1;

  if (coulomb_) start_charges();

  size_t ns = elements_.size();
  rmin_sq_type_.assign((ntypes + 1) * (ntypes + 1), 0.0);
  check_pairs_ = false;
  for (int i = 1; i <= ntypes; i++)
    for (int j = 1; j <= ntypes; j++) {
      double r = rmin_species_[type_to_species_[i] * ns + type_to_species_[j]];
      rmin_sq_type_[i * (ntypes + 1) + j] = r * r;
      check_pairs_ = check_pairs_ || r > 0.0;
    }
}

/* The Coulomb path: kspace chooses its splitting and mesh from the charges when it is set up,
   before the model has run. An uncharged system (every q 0, e.g. a data file from atom_style
   atomic data) starts from the model's typical charge of each element (metadata). */

void PairMLIP::start_charges()
{
  if (!atom->q_flag || typical_q_.size() != elements_.size()) return;
  double mine = 0.0, all = 0.0;
  for (int i = 0; i < atom->nlocal; i++) mine = std::max(mine, std::fabs(atom->q[i]));
  MPI_Allreduce(&mine, &all, 1, MPI_DOUBLE, MPI_MAX, world);
  if (all > 0.0) return;
  for (int i = 0; i < atom->nlocal; i++) atom->q[i] = typical_q_[type_to_species_[atom->type[i]]];
}

void PairMLIP::init_style()
{
  if (!model_loaded_) error->all(FLERR, "pair_style mlip: no model loaded");
  if (long_range_ && !coulomb_ && !atom->tag_enable)
    error->all(FLERR, "pair_style mlip with a long-range model requires atom IDs");
  // the Coulomb path: without LAMMPS' electrostatics the results would silently be short-range
  if (coulomb_) {
    if (!atom->q_flag)
      error->all(FLERR,
                 "pair_style mlip: model '{}' predicts charges for LAMMPS' electrostatics, which needs "
                 "'atom_style charge' (or full); see '{}.lammps'",
                 model_path_, model_path_);
    if (force->pair_match("coul/long", 1) == nullptr)
      error->all(FLERR,
                 "pair_style mlip: model '{}' needs pair_style coul/long next to mlip for the real-space "
                 "electrostatics of its charges: use the lines of '{}.lammps' (pair_style hybrid/overlay "
                 "mlip ... coul/long ...)",
                 model_path_, model_path_);
    if (force->kspace == nullptr)
      error->all(FLERR,
                 "pair_style mlip: model '{}' needs a kspace_style for the long-range electrostatics of its "
                 "charges: use the lines of '{}.lammps' (kspace_style pppm ...)",
                 model_path_, model_path_);
    int dim = 0;
    auto *cut = static_cast<double *>(force->pair_match("coul/long", 1)->extract("cut_coul", dim));
    if (cut == nullptr || *cut > cutoff_)
      error->all(FLERR, "pair_style mlip: the coul/long cutoff must not exceed the model's cutoff {} Å", cutoff_);
    if (modify->get_fix_by_id(FixMLIPCoulomb::ID) == nullptr)
      error->all(FLERR, "pair_style mlip: fix {} (created by pair_style mlip) was deleted", FixMLIPCoulomb::ID);
  }
  // an exported model may leave parameter-free terms (D3, ZBL) to LAMMPS' own pair styles:
  // without them in a hybrid/overlay the results would silently lack those terms
  for (const std::string &term : overlay_) {
    const std::string style = term == "d3" ? "dispersion/d3" : term;
    if (force->pair_match(style, 0) == nullptr)
      error->all(FLERR,
                 "pair_style mlip: model '{}' leaves its {} term to LAMMPS pair_style {}, which is not "
                 "defined: use the lines of '{}.lammps' (pair_style hybrid/overlay mlip ... {} ...)",
                 model_path_, term, style, model_path_, style);
  }
  neighbor->add_request(this, NeighConst::REQ_FULL);
  at::set_num_threads(std::max(1, comm->nthreads));
}

double PairMLIP::init_one(int, int)
{
  return cutoff_;
}

void PairMLIP::compute(int eflag, int vflag)
{
  ev_init(eflag, vflag);
  if ((vflag_atom || cvflag_atom) && ((long_range_ && !coulomb_) || !has_edge_forces_) && !warned_vatom_) {
    if (comm->me == 0)
      error->warning(FLERR, "pair_style mlip: per-atom virials are zero: {}",
                     long_range_ ? "not computed for long-range models"
                                 : "the model has no edge_forces output (exported by an older mlip)");
    warned_vatom_ = true;
  }
  if (margin_ >= 0.0) extrapolation_.assign(atom->nlocal, 0.0);
  if (coulomb_)
    compute_charges(atom->nlocal);
  else if (long_range_)
    compute_gathered(atom->nlocal);
  else
    compute_short_range(atom->nlocal, atom->nlocal + atom->nghost);
  if ((check_pairs_ && pair_warnings_left_ > 0) || (margin_ >= 0.0 && atom_warnings_left_ > 0))
    check_extrapolation(atom->nlocal);
}

/* Extrapolation warnings: pairs nearer than the training data's shortest distance of their
   elements, atoms whose descriptors lie beyond the training range by more than margin_ widths.
   Each rank finds its new ones (each pair once: from the atom with the smaller ID), the ranks'
   counts and worst cases are gathered, and rank 0 warns: one line per kind and step, each atom
   pair or atom once, at most MAX_WARNINGS lines of each kind. */

void PairMLIP::check_extrapolation(int nlocal)
{
  enum { NPAIR, RATIO, TAG_I, TAG_J, R, RMIN, SP_I, SP_J, NATOM, EXCESS, TAG_A, NFIELD };
  double mine[NFIELD] = {0.0, HUGE_VAL, 0, 0, 0, 0, 0, 0, 0.0, -1.0, 0};
  double **x = atom->x;
  int *type = atom->type;
  tagint *tag = atom->tag;
  int nt = atom->ntypes + 1;
  if (check_pairs_ && pair_warnings_left_ > 0 && atom->tag_enable) {
    for_each_edge(atom, error, list, cutoff_, 0, nlocal, [&](int i, int j) {
      double limit = rmin_sq_type_[type[i] * nt + type[j]];
      if (tag[i] >= tag[j] || limit <= 0.0) return;
      double dx = x[j][0] - x[i][0], dy = x[j][1] - x[i][1], dz = x[j][2] - x[i][2];
      double rsq = dx * dx + dy * dy + dz * dz;
      if (rsq >= limit || !warned_pairs_.insert({tag[i], tag[j]}).second) return;
      mine[NPAIR] += 1.0;
      double ratio = std::sqrt(rsq / limit);
      if (ratio < mine[RATIO]) {
        double v[] = {ratio, (double) tag[i], (double) tag[j], std::sqrt(rsq), std::sqrt(limit),
                      (double) type_to_species_[type[i]], (double) type_to_species_[type[j]]};
        std::copy(v, v + 7, mine + RATIO);
      }
    });
  }
  if (margin_ >= 0.0 && atom_warnings_left_ > 0 && atom->tag_enable)
    for (int i = 0; i < nlocal; i++) {
      if (extrapolation_[i] <= margin_ || !warned_atoms_.insert(tag[i]).second) continue;
      mine[NATOM] += 1.0;
      if (extrapolation_[i] > mine[EXCESS]) {
        mine[EXCESS] = extrapolation_[i];
        mine[TAG_A] = (double) tag[i];
      }
    }

  std::vector<double> all(NFIELD * (size_t) comm->nprocs);
  MPI_Allgather(mine, NFIELD, MPI_DOUBLE, all.data(), NFIELD, MPI_DOUBLE, world);
  double total[NFIELD];
  std::copy(all.begin(), all.begin() + NFIELD, total);
  for (int p = 1; p < comm->nprocs; p++) {
    const double *o = &all[NFIELD * (size_t) p];
    if (o[RATIO] < total[RATIO]) std::copy(o + RATIO, o + NATOM, total + RATIO);
    if (o[EXCESS] > total[EXCESS]) std::copy(o + EXCESS, o + NFIELD, total + EXCESS);
    total[NPAIR] += o[NPAIR];
    total[NATOM] += o[NATOM];
  }
  if (total[NPAIR] > 0) {
    pair_warnings_left_--;
    if (comm->me == 0)
      error->warning(FLERR,
                     "pair_style mlip: {} atom pair(s) closer than the training data's shortest distance; "
                     "closest: atoms {} and {} (atom IDs, {}-{}) at {:.3f} Å, shortest in training {:.3f} Å: "
                     "the energy there is the repulsive core's, not fitted{}",
                     (long) total[NPAIR], (long) total[TAG_I], (long) total[TAG_J], elements_[(int) total[SP_I]],
                     elements_[(int) total[SP_J]], total[R], total[RMIN],
                     pair_warnings_left_ ? "" : " (the last such warning)");
  }
  if (total[NATOM] > 0) {
    atom_warnings_left_--;
    if (comm->me == 0)
      error->warning(FLERR,
                     "pair_style mlip: {} atom(s) with descriptors outside the training range by more than "
                     "{:g} of its width; worst: atom {} (atom ID), {:.2f} widths outside{}",
                     (long) total[NATOM], margin_, (long) total[TAG_A], total[EXCESS],
                     atom_warnings_left_ ? "" : " (the last such warning)");
  }
}

/* Short-range model: the local atoms are evaluated in chunks of at most chunk_ centres: the
   model's intermediates scale with the edges of a call, and smaller calls run faster per atom
   once they no longer fit in the CPU caches (about 2x at 4000 atoms). A call gets the chunk's
   centres first, then the other atoms (local or ghost) that their edges reach, in the order the
   neighbour list meets them; edges from the full list, shifts zero (ghosts are explicit). */

void PairMLIP::compute_short_range(int nlocal, int nall)
{
  int chunk = chunk_ > 0 ? chunk_ : std::max(nlocal, 1);
  bool edges = (vflag_atom || cvflag_atom) && has_edge_forces_;
  bool dev = committee_ > 1 &&
      (deviation_request_ || (!deviation_path_.empty() && update->ntimestep % deviation_every_ == 0));
  if (dev) mbuf_.assign(3 * (size_t) committee_ * nall, 0.0);
  fbuf_.assign(3 * (size_t) nall, 0.0);
  slot_.assign(nall, -1);
  // with newton_pair off LAMMPS clears only the local rows of vatom/cvatom
  comm_vatom_ = edges && vflag_atom && !force->newton_pair;
  comm_cvatom_ = edges && cvflag_atom && !force->newton_pair;
  for (int k = nlocal; k < nall; k++) {
    if (comm_vatom_) std::fill(vatom[k], vatom[k] + 6, 0.0);
    if (comm_cvatom_) std::fill(cvatom[k], cvatom[k] + 9, 0.0);
  }

  for (int start = 0; start < nlocal; start += chunk) {
    int end = std::min(nlocal, start + chunk), m = end - start;
    std::vector<int> atoms;    // LAMMPS index of each atom of the call
    ModelInput in;
    build_chunk(start, end, in, atoms);
    in.edge_forces = edges;
    in.deviation = dev;

    ModelOutput out;
    evaluate(in, out);
    if (dev) {
      size_t n = atoms.size();
      for (int k = 0; k < committee_; k++)
        for (size_t q = 0; q < n; q++)
          for (int d = 0; d < 3; d++)
            mbuf_[(atoms[q] * (size_t) committee_ + k) * 3 + d] += out.member_forces[(k * n + q) * 3 + d];
    }
    for (size_t q = 0; q < atoms.size(); q++)
      for (int d = 0; d < 3; d++) fbuf_[3 * atoms[q] + d] += out.forces[3 * q + d];
    if (eflag_global) eng_vdwl += out.energy;
    if (eflag_atom)
      for (int q = 0; q < m; q++) eatom[start + q] += out.atomic_energies[q];
    if ((int) out.extrapolation.size() == m) std::copy(out.extrapolation.begin(), out.extrapolation.end(),
                                                      extrapolation_.begin() + start);
    if (vflag_global) tally_virial(out.virial, 1.0);
    if (edges) tally_edge_virials(in, atoms, out.edge_forces, vflag_atom ? vatom : nullptr,
                                  cvflag_atom ? cvatom : nullptr);
    for (int k : atoms) slot_[k] = -1;
  }

  double **f = atom->f;
  if (force->newton_pair) {
    for (int i = 0; i < nall; i++)
      for (int d = 0; d < 3; d++) f[i][d] += fbuf_[3 * i + d];
  } else {
    // LAMMPS neither clears nor reverse-communicates ghost forces (or ghost per-atom virials)
    // with newton_pair off: send the ghost rows to their owners through pack_reverse_comm.
    comm->reverse_comm(this);
    for (int i = 0; i < nlocal; i++)
      for (int d = 0; d < 3; d++) f[i][d] += fbuf_[3 * i + d];
  }
  if (dev) finish_deviation(nlocal);
}

/* Committee force deviation: the members' forces on ghost atoms go to their owners (reverse
   communication of 3 K numbers per atom), then d_i = sqrt(mean_k |F_i^k - mean_k F_i^k|^2) per
   local atom (fix pair "deviation"), and on deviation_file steps rank 0 writes the step and the
   max, min and mean of d_i over all atoms (DeePMD's model_devi.out columns for forces). */

void PairMLIP::finish_deviation(int nlocal)
{
  comm_members_ = true;
  comm->reverse_comm(this);
  comm_members_ = false;
  deviation_.assign(std::max(nlocal, 1), 0.0);
  double stats[3] = {0.0, HUGE_VAL, 0.0};    // max, min, sum
  int K = committee_;
  for (int i = 0; i < nlocal; i++) {
    const double *fk = &mbuf_[(size_t) i * K * 3];
    double mean[3] = {0.0, 0.0, 0.0}, var = 0.0;
    for (int k = 0; k < K; k++)
      for (int d = 0; d < 3; d++) mean[d] += fk[3 * k + d] / K;
    for (int k = 0; k < K; k++)
      for (int d = 0; d < 3; d++) var += (fk[3 * k + d] - mean[d]) * (fk[3 * k + d] - mean[d]) / K;
    deviation_[i] = std::sqrt(var);
    stats[0] = std::max(stats[0], deviation_[i]);
    stats[1] = std::min(stats[1], deviation_[i]);
    stats[2] += deviation_[i];
  }
  if (deviation_path_.empty() || update->ntimestep % deviation_every_ != 0) return;
  double all[3];
  MPI_Reduce(&stats[0], &all[0], 1, MPI_DOUBLE, MPI_MAX, 0, world);
  MPI_Reduce(&stats[1], &all[1], 1, MPI_DOUBLE, MPI_MIN, 0, world);
  MPI_Reduce(&stats[2], &all[2], 1, MPI_DOUBLE, MPI_SUM, 0, world);
  if (deviation_fp_) {
    fmt::print(deviation_fp_, "{:>12} {:>18.10e} {:>18.10e} {:>18.10e}\n", update->ntimestep, all[0], all[1],
               all[2] / atom->natoms);
    fflush(deviation_fp_);
  }
}

/* fix pair: "deviation_flag" (the trigger) and "deviation" (d_i of the local atoms, eV/Å) */

void *PairMLIP::extract(const char *str, int &dim)
{
  dim = 0;
  if (strcmp(str, "deviation_flag") != 0) return nullptr;
  if (committee_ < 2)
    error->all(FLERR,
               "pair_style mlip: model '{}' is a single model and has no force deviation: train a committee "
               "('mlip train ... --committee 4') or combine runs ('mlip committee a/ b/ c/ -o model.pt')",
               model_path_);
  if (long_range_)
    error->all(FLERR, "pair_style mlip: force deviation is computed for short-range committee models only");
  return &deviation_request_;
}

void *PairMLIP::extract_peratom(const char *str, int &ncol)
{
  ncol = 0;
  if (strcmp(str, "deviation") != 0 || committee_ < 2) return nullptr;
  if (deviation_.empty()) deviation_.assign(std::max(atom->nlocal, 1), 0.0);
  return deviation_.data();
}

/* One model call's inputs: the local atoms [start, end) as centres, then the other atoms (local
   or ghost) that their edges reach, in the order the neighbour list meets them (slot_ maps a
   LAMMPS index to its place in the call; the caller resets it), edge shifts zero. */

void PairMLIP::build_chunk(int start, int end, ModelInput &in, std::vector<int> &atoms)
{
  double **x = atom->x;
  int m = end - start;
  atoms.reserve(4 * (size_t) m);
  for (int i = start; i < end; i++) {
    slot_[i] = atoms.size();
    atoms.push_back(i);
  }
  for_each_edge(atom, error, list, cutoff_, start, end, [&](int i, int j) {
    if (slot_[j] < 0) {
      slot_[j] = atoms.size();
      atoms.push_back(j);
    }
    in.edges_i.push_back(slot_[i]);
    in.edges_j.push_back(slot_[j]);
  });
  in.shifts.assign(3 * in.edges_i.size(), 0.0);
  in.n_atoms = atoms.size();
  in.n_local = m;
  in.positions.resize(3 * atoms.size());
  in.species.resize(atoms.size());
  for (size_t q = 0; q < atoms.size(); q++) {
    for (int d = 0; d < 3; d++) in.positions[3 * q + d] = x[atoms[q]][d];
    in.species[q] = type_to_species_[atom->type[atoms[q]]];
  }
}

/* Per-atom virials from the edge forces F_e = -dE/dr_ij (the force of edge e = (i, j) on j;
   -F_e acts on i), r_ij = x_j - x_i. The edge's virial is v_e = r_ij (x) F_e (that of the
   force pair, (x_i - x_j) (x) (-F_e) + 0, in LAMMPS' sum_k x_k (x) f_k), and sum_e v_e is the
   model's virial.
   - compute stress/atom (vatom; xx yy zz xy xz yz): half of v_e to i and half to j, as LAMMPS
     shares the virial of a pair force.
   - compute centroid/stress/atom (cvatom; xx yy zz xy xz yz yx zx zy): LAMMPS gives each atom of
     an interaction its position relative to the interaction's centre times the force the
     interaction puts on it. The interaction here is the atomic energy E_i (the edges of centre
     i carry only E_i's dependence on r_ij), centred on atom i, to which pe/atom assigns E_i
     (not on the geometric centroid of i and its neighbours, as for an angle whose energy is
     shared evenly): j gets r_ij (x) F_e, i (at the centre) nothing. With that choice compute
     heat/flux with pe/atom gives the heat current of the per-atom energies E_i exactly. */

void PairMLIP::tally_edge_virials(const ModelInput &in, const std::vector<int> &atoms,
                                  const std::vector<double> &edge_forces, double **vat, double **cvat)
{
  double **x = atom->x;
  for (size_t e = 0; e < in.edges_i.size(); e++) {
    int i = atoms[in.edges_i[e]], j = atoms[in.edges_j[e]];
    const double *fe = &edge_forces[3 * e];
    double r[3] = {x[j][0] - x[i][0], x[j][1] - x[i][1], x[j][2] - x[i][2]};
    if (vat) {
      double v[6] = {r[0] * fe[0], r[1] * fe[1], r[2] * fe[2], r[0] * fe[1], r[0] * fe[2], r[1] * fe[2]};
      for (int c = 0; c < 6; c++) {
        vat[i][c] += 0.5 * v[c];
        vat[j][c] += 0.5 * v[c];
      }
    }
    if (cvat) {
      double v[9] = {r[0] * fe[0], r[1] * fe[1], r[2] * fe[2], r[0] * fe[1], r[0] * fe[2],
                     r[1] * fe[2], r[1] * fe[0], r[2] * fe[0], r[2] * fe[1]};
      for (int c = 0; c < 9; c++) cvat[j][c] += v[c];
    }
  }
}

/* Long-range model: every rank gathers all atoms and edges, evaluates the full system,
   and keeps its own atoms' forces and energies plus 1/nprocs of the virial. */

void PairMLIP::compute_gathered(int nlocal)
{
  ModelInput in;
  int nprocs = comm->nprocs, me = comm->me;
  std::vector<int> counts(nprocs), displs(nprocs, 0);
  MPI_Allgather(&nlocal, 1, MPI_INT, counts.data(), 1, MPI_INT, world);
  for (int p = 1; p < nprocs; p++) displs[p] = displs[p - 1] + counts[p - 1];
  int ntotal = displs[nprocs - 1] + counts[nprocs - 1];

  std::vector<int> counts3(nprocs), displs3(nprocs);
  for (int p = 0; p < nprocs; p++) {
    counts3[p] = 3 * counts[p];
    displs3[p] = 3 * displs[p];
  }
  std::vector<double> gpos(3 * (size_t) ntotal);
  std::vector<int> gtype(ntotal);
  std::vector<tagint> gtag(ntotal);
  MPI_Allgatherv(atom->x[0], 3 * nlocal, MPI_DOUBLE, gpos.data(), counts3.data(), displs3.data(),
                 MPI_DOUBLE, world);
  MPI_Allgatherv(atom->type, nlocal, MPI_INT, gtype.data(), counts.data(), displs.data(), MPI_INT, world);
  MPI_Allgatherv(atom->tag, nlocal, MPI_LMP_TAGINT, gtag.data(), counts.data(), displs.data(),
                 MPI_LMP_TAGINT, world);

  tagint maxtag = 0;
  for (tagint t : gtag) maxtag = std::max(maxtag, t);
  std::vector<int> global_of_tag(maxtag + 1, -1);
  for (int g = 0; g < ntotal; g++) global_of_tag[gtag[g]] = g;

  // An edge to a ghost becomes an edge to the atom it is an image of, with the image shift
  // x_ghost - x_owner, so that positions[j] - positions[i] + shift = x_j - x_i.
  ModelInput mine;
  double **x = atom->x;
  tagint *tag = atom->tag;
  int offset = displs[me];
  for_each_edge(atom, error, list, cutoff_, 0, nlocal, [&](int i, int j) {
    int gj = tag[j] < (tagint) global_of_tag.size() ? global_of_tag[tag[j]] : -1;
    if (gj < 0) error->one(FLERR, "pair_style mlip: neighbour atom ID {} not found among gathered atoms", tag[j]);
    mine.edges_i.push_back(offset + i);
    mine.edges_j.push_back(gj);
    for (int d = 0; d < 3; d++) mine.shifts.push_back(x[j][d] - gpos[3 * gj + d]);
  });

  int nedge = mine.edges_i.size();
  std::vector<int> ecounts(nprocs), edispls(nprocs, 0);
  MPI_Allgather(&nedge, 1, MPI_INT, ecounts.data(), 1, MPI_INT, world);
  for (int p = 1; p < nprocs; p++) edispls[p] = edispls[p - 1] + ecounts[p - 1];
  int etotal = edispls[nprocs - 1] + ecounts[nprocs - 1];
  std::vector<int> ecounts3(nprocs), edispls3(nprocs);
  for (int p = 0; p < nprocs; p++) {
    ecounts3[p] = 3 * ecounts[p];
    edispls3[p] = 3 * edispls[p];
  }
  in.edges_i.resize(etotal);
  in.edges_j.resize(etotal);
  in.shifts.resize(3 * (size_t) etotal);
  MPI_Allgatherv(mine.edges_i.data(), nedge, MPI_INT64_T, in.edges_i.data(), ecounts.data(),
                 edispls.data(), MPI_INT64_T, world);
  MPI_Allgatherv(mine.edges_j.data(), nedge, MPI_INT64_T, in.edges_j.data(), ecounts.data(),
                 edispls.data(), MPI_INT64_T, world);
  MPI_Allgatherv(mine.shifts.data(), 3 * nedge, MPI_DOUBLE, in.shifts.data(), ecounts3.data(),
                 edispls3.data(), MPI_DOUBLE, world);

  in.n_atoms = ntotal;
  in.n_local = ntotal;
  in.positions = std::move(gpos);
  in.species.resize(ntotal);
  for (int g = 0; g < ntotal; g++) in.species[g] = type_to_species_[gtype[g]];

  ModelOutput out;
  evaluate(in, out);

  double **f = atom->f;
  for (int i = 0; i < nlocal; i++)
    for (int k = 0; k < 3; k++) f[i][k] += out.forces[3 * (offset + i) + k];
  if ((int) out.extrapolation.size() == ntotal)
    std::copy(out.extrapolation.begin() + offset, out.extrapolation.begin() + offset + nlocal,
              extrapolation_.begin());

  // Energy not assigned to atoms by the model is shared evenly (over ranks, over atoms).
  double sum_all = 0.0, sum_mine = 0.0;
  for (int g = 0; g < ntotal; g++) sum_all += out.atomic_energies[g];
  for (int i = 0; i < nlocal; i++) sum_mine += out.atomic_energies[offset + i];
  double remainder = out.energy - sum_all;
  if (eflag_global) eng_vdwl += sum_mine + remainder / nprocs;
  if (eflag_atom)
    for (int i = 0; i < nlocal; i++) eatom[i] += out.atomic_energies[offset + i] + remainder / ntotal;
  if (vflag_global) tally_virial(out.virial, 1.0 / nprocs);
}

void PairMLIP::evaluate(const ModelInput &in, ModelOutput &out, Call call)
{
  int64_t n = in.n_atoms, nedge = in.edges_i.size();
  auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
  auto i64 = torch::TensorOptions().dtype(torch::kInt64);
  // from_blob does not copy: cast (and copy) before the model sees the tensors.
  torch::Tensor pos = torch::from_blob((void *) in.positions.data(), {n, 3}, f64).to(dtype_, false, true);
  torch::Tensor species = torch::from_blob((void *) in.species.data(), {n}, i64).clone();
  torch::Tensor edge_index =
      torch::stack({torch::from_blob((void *) in.edges_i.data(), {nedge}, i64),
                    torch::from_blob((void *) in.edges_j.data(), {nedge}, i64)});
  torch::Tensor shifts =
      torch::from_blob((void *) in.shifts.data(), {nedge, 3}, f64).to(dtype_, false, true);
  double h[9] = {domain->xprd, 0.0, 0.0, domain->xy, domain->yprd, 0.0, domain->xz, domain->yz, domain->zprd};
  torch::Tensor cell = torch::from_blob(h, {3, 3}, f64).to(dtype_, false, true);
  torch::Tensor pbc = torch::tensor({(bool) domain->xperiodic, (bool) domain->yperiodic,
                                     (bool) domain->zperiodic});

  std::vector<double> w;
  bool want_energy = call != Call::COULOMB_FORCES, want_forces = call != Call::CHARGES;
  // the Coulomb path's step 1 needs no derivatives (TorchScript may not honour the model's own
  // no_grad after its first calls): no autograd graph is recorded
  std::optional<torch::NoGradGuard> no_grad;
  if (call == Call::CHARGES) no_grad.emplace();
  try {
    std::vector<torch::jit::IValue> args{pos, species, edge_index, shifts, cell, pbc, in.n_local};
    if (call == Call::FORWARD && (in.edge_forces || in.deviation)) args.emplace_back(in.edge_forces);
    if (call == Call::FORWARD && in.deviation) args.emplace_back(true);
    if (call == Call::COULOMB_FORCES) {
      args.emplace_back(torch::from_blob((void *) in.potential.data(), {in.n_local}, f64).to(dtype_, false, true));
      args.emplace_back(in.edge_forces);
    }
    auto result = (call == Call::FORWARD ? model_.forward(args)
                   : call == Call::CHARGES ? model_.get_method("lammps_charges")(args)
                                           : model_.get_method("lammps_coulomb_forces")(args))
                      .toGenericDict();
    if (call == Call::FORWARD) out.energy = result.at("energy").toTensor().to(torch::kFloat64).item<double>();
    if (want_energy) out.atomic_energies = to_doubles(result.at("atomic_energies").toTensor());
    if (call == Call::CHARGES) out.charges = to_doubles(result.at("charges").toTensor());
    if (want_forces) {
      out.forces = to_doubles(result.at("forces").toTensor());
      w = to_doubles(result.at("virial").toTensor());
    }
    if (in.edge_forces) out.edge_forces = to_doubles(result.at("edge_forces").toTensor());
    if (in.deviation) out.member_forces = to_doubles(result.at("member_forces").toTensor());
    if (want_energy && margin_ >= 0.0 && result.contains("extrapolation"))
      out.extrapolation = to_doubles(result.at("extrapolation").toTensor());
  } catch (const std::exception &e) {
    error->one(FLERR, "pair_style mlip: evaluating model '{}' failed: {}", model_path_, short_message(e.what()));
  }
  if ((want_energy && (int64_t) out.atomic_energies.size() != in.n_local) ||
      (call == Call::CHARGES && (int64_t) out.charges.size() != in.n_local) ||
      (want_forces && ((int64_t) out.forces.size() != 3 * n || w.size() != 9)) ||
      (in.edge_forces && (int64_t) out.edge_forces.size() != 3 * nedge) ||
      (in.deviation && (int64_t) out.member_forces.size() != 3 * n * committee_))
    error->one(FLERR,
               "pair_style mlip: model '{}' returned atomic_energies, charges, forces, virial or edge_forces "
               "of a wrong shape",
               model_path_);
  if (call == Call::CHARGES) {    // energy of the centres: the sum of their atomic energies
    out.energy = 0.0;
    for (double e : out.atomic_energies) out.energy += e;
  }
  if (want_forces)
    for (int a = 0; a < 3; a++)
      for (int b = 0; b < 3; b++) out.virial[a][b] = w[3 * a + b];
}

/* LAMMPS' virial (xx, yy, zz, xy, xz, yz) is sum_i x_i f_i, which equals the model's
   virial W = -dE/dstrain for row vectors strained as x -> x (1 + strain). */

void PairMLIP::tally_virial(const double w[3][3], double scale)
{
  virial[0] += scale * w[0][0];
  virial[1] += scale * w[1][1];
  virial[2] += scale * w[2][2];
  virial[3] += scale * w[0][1];
  virial[4] += scale * w[0][2];
  virial[5] += scale * w[1][2];
}

/* Ghost rows to their owners: the force buffer and, when tallied, the per-atom virials (vatom
   and cvatom with newton_pair off; the Coulomb path's step-2 buffers always) */

int PairMLIP::pack_reverse_comm(int n, int first, double *buf)
{
  int m = 0;
  if (comm_members_) {
    for (int i = first; i < first + n; i++)
      for (int c = 0; c < 3 * committee_; c++) buf[m++] = mbuf_[(size_t) i * 3 * committee_ + c];
    return m;
  }
  for (int i = first; i < first + n; i++) {
    for (int k = 0; k < 3; k++) buf[m++] = fbuf_[3 * i + k];
    if (comm_vatom_)
      for (int k = 0; k < 6; k++) buf[m++] = vatom[i][k];
    if (comm_cvatom_)
      for (int k = 0; k < 9; k++) buf[m++] = cvatom[i][k];
    if (comm_vbuf_)
      for (int k = 0; k < 6; k++) buf[m++] = vbuf_[6 * i + k];
    if (comm_cvbuf_)
      for (int k = 0; k < 9; k++) buf[m++] = cvbuf_[9 * i + k];
  }
  return m;
}

void PairMLIP::unpack_reverse_comm(int n, int *list, double *buf)
{
  int m = 0;
  if (comm_members_) {
    for (int i = 0; i < n; i++)
      for (int c = 0; c < 3 * committee_; c++) mbuf_[(size_t) list[i] * 3 * committee_ + c] += buf[m++];
    return;
  }
  for (int i = 0; i < n; i++) {
    int j = list[i];
    for (int k = 0; k < 3; k++) fbuf_[3 * j + k] += buf[m++];
    if (comm_vatom_)
      for (int k = 0; k < 6; k++) vatom[j][k] += buf[m++];
    if (comm_cvatom_)
      for (int k = 0; k < 9; k++) cvatom[j][k] += buf[m++];
    if (comm_vbuf_)
      for (int k = 0; k < 6; k++) vbuf_[6 * j + k] += buf[m++];
    if (comm_cvbuf_)
      for (int k = 0; k < 9; k++) cvbuf_[9 * j + k] += buf[m++];
  }
}

/* The Coulomb path: charges of the ghost atoms */

int PairMLIP::pack_forward_comm(int n, int *list, double *buf, int, int *)
{
  for (int i = 0; i < n; i++) buf[i] = atom->q[list[i]];
  return n;
}

void PairMLIP::unpack_forward_comm(int n, int first, double *buf)
{
  for (int i = 0; i < n; i++) atom->q[first + i] = buf[i];
}

/* ----------------------------------------------------------------------
   The Coulomb path (metadata lammps_coulomb; README.md, "The Coulomb path").
   Total energy E = E_short(x) + E_coul(q(x), x), with q_i = r_i - (sum_j r_j - Q) / N the raw
   charges r_i of the model shifted to the total charge Q (pair_style keyword total_charge).
   Step 1 (pair compute): the model's E_short and r_i, chunk by chunk, without derivatives; the
     charges go into atom->q (ghosts by forward communication) for coul/long and kspace, which
     then compute E_coul and its fixed-charge forces and virial.
   Step 2 (fix mlip/coulomb, pre_reverse, after kspace): phi_i = dE_coul/dq_i, the real-space
     part from the neighbour list, the k-space part from kspace's per-atom energies
     (eatom_i = q_i phi_i^k / 2, self and background terms included); dE/dr_i = phi_i - mean(phi).
     The model's derivatives of E_short + sum_i (phi_i - mean phi) r_i (phi fixed) through its
     edges give the remaining forces, the virial and the per-atom virials.
   ---------------------------------------------------------------------- */

void PairMLIP::compute_charges(int nlocal)
{
  int nall = nlocal + atom->nghost;
  int chunk = chunk_ > 0 ? chunk_ : std::max(nlocal, 1);
  slot_.assign(nall, -1);
  qraw_.assign(nlocal, 0.0);
  for (int start = 0; start < nlocal; start += chunk) {
    int end = std::min(nlocal, start + chunk), m = end - start;
    std::vector<int> atoms;
    ModelInput in;
    build_chunk(start, end, in, atoms);
    ModelOutput out;
    evaluate(in, out, Call::CHARGES);
    if (eflag_global) eng_vdwl += out.energy;
    if (eflag_atom)
      for (int q = 0; q < m; q++) eatom[start + q] += out.atomic_energies[q];
    if ((int) out.extrapolation.size() == m)
      std::copy(out.extrapolation.begin(), out.extrapolation.end(), extrapolation_.begin() + start);
    std::copy(out.charges.begin(), out.charges.end(), qraw_.begin() + start);
    for (int k : atoms) slot_[k] = -1;
  }
  double mine[2] = {0.0, (double) nlocal}, all[2];
  for (int i = 0; i < nlocal; i++) mine[0] += qraw_[i];
  MPI_Allreduce(mine, all, 2, MPI_DOUBLE, MPI_SUM, world);
  double shift = (all[0] - total_charge_) / all[1];
  for (int i = 0; i < nlocal; i++) atom->q[i] = qraw_[i] - shift;
  comm->forward_comm(this);
  force->kspace->qsum_qsq(0);    // kspace's self and background energies follow the new charges
}

/* phi_i = dE_coul/dq_i (eV/e) of the local atoms: coul/long's real-space sum over the neighbour
   list (its erfc, its cutoff) plus kspace's 2 eatom_i / q_i. */

void PairMLIP::coulomb_potential(int nlocal, std::vector<double> &phi)
{
  if (update->eflag_atom != update->ntimestep || force->kspace->eatom == nullptr)
    error->all(FLERR, "pair_style mlip: kspace did not compute per-atom energies on step {} (needed by the "
                      "Coulomb path; fix {} requests them)", update->ntimestep, FixMLIPCoulomb::ID);
  int dim = 0;
  double cut = *static_cast<double *>(force->pair_match("coul/long", 1)->extract("cut_coul", dim));
  double g = force->kspace->g_ewald, qqrd2e = force->qqrd2e, *q = atom->q, **x = atom->x;
  const double *ek = force->kspace->eatom;
  phi.assign(nlocal, 0.0);
  for (int i = 0; i < nlocal; i++) phi[i] = q[i] != 0.0 ? 2.0 * ek[i] / q[i] : 0.0;
  for_each_edge(atom, error, list, cut, 0, nlocal, [&](int i, int j) {
    double dx = x[j][0] - x[i][0], dy = x[j][1] - x[i][1], dz = x[j][2] - x[i][2];
    double r = std::sqrt(dx * dx + dy * dy + dz * dz);
    phi[i] += qqrd2e * q[j] * erfc_coul_long(g * r) / r;
  });
}

void PairMLIP::coulomb_forces(FixMLIPCoulomb *fix)
{
  int nlocal = atom->nlocal, nall = nlocal + atom->nghost;
  std::vector<double> phi;
  coulomb_potential(nlocal, phi);
  double mine[2] = {0.0, (double) nlocal}, all[2];
  for (int i = 0; i < nlocal; i++) mine[0] += phi[i];
  MPI_Allreduce(mine, all, 2, MPI_DOUBLE, MPI_SUM, world);
  double mean = all[0] / all[1];

  bool vat = fix->tally_atom(), cvat = fix->tally_centroid(), edges = vat || cvat;
  fbuf_.assign(3 * (size_t) nall, 0.0);
  vbuf_.assign(vat ? 6 * (size_t) nall : 0, 0.0);
  cvbuf_.assign(cvat ? 9 * (size_t) nall : 0, 0.0);
  std::vector<double *> vrows(vat ? nall : 0), cvrows(cvat ? nall : 0);
  for (int k = 0; vat && k < nall; k++) vrows[k] = &vbuf_[6 * (size_t) k];
  for (int k = 0; cvat && k < nall; k++) cvrows[k] = &cvbuf_[9 * (size_t) k];
  slot_.assign(nall, -1);
  int chunk = chunk_ > 0 ? chunk_ : std::max(nlocal, 1);
  for (int start = 0; start < nlocal; start += chunk) {
    int end = std::min(nlocal, start + chunk);
    std::vector<int> atoms;
    ModelInput in;
    build_chunk(start, end, in, atoms);
    in.edge_forces = edges;
    in.potential.assign(phi.begin() + start, phi.begin() + end);
    for (double &p : in.potential) p -= mean;
    ModelOutput out;
    evaluate(in, out, Call::COULOMB_FORCES);
    for (size_t a = 0; a < atoms.size(); a++)
      for (int d = 0; d < 3; d++) fbuf_[3 * atoms[a] + d] += out.forces[3 * a + d];
    if (fix->tally_global()) {
      const double w[6] = {out.virial[0][0], out.virial[1][1], out.virial[2][2],
                           out.virial[0][1], out.virial[0][2], out.virial[1][2]};
      for (int c = 0; c < 6; c++) fix->virial[c] += w[c];
    }
    if (edges)
      tally_edge_virials(in, atoms, out.edge_forces, vat ? vrows.data() : nullptr, cvat ? cvrows.data() : nullptr);
    for (int k : atoms) slot_[k] = -1;
  }
  comm_vatom_ = comm_cvatom_ = false;
  comm_vbuf_ = vat;
  comm_cvbuf_ = cvat;
  comm->reverse_comm(this);
  comm_vbuf_ = comm_cvbuf_ = false;
  double **f = atom->f;
  for (int i = 0; i < nlocal; i++) {
    for (int d = 0; d < 3; d++) f[i][d] += fbuf_[3 * i + d];
    if (vat)
      for (int c = 0; c < 6; c++) fix->vatom[i][c] += vbuf_[6 * (size_t) i + c];
    if (cvat)
      for (int c = 0; c < 9; c++) fix->cvatom[i][c] += cvbuf_[9 * (size_t) i + c];
  }
}

void PairMLIP::coulomb_setup()
{
  if (modify->get_compute_by_id(FixMLIPCoulomb::PE_ID) == nullptr)
    modify->add_compute(fmt::format("{} all pe/atom", FixMLIPCoulomb::PE_ID));
  if (modify->get_fix_by_id(FixMLIPCoulomb::ID) == nullptr)
    modify->add_fix(fmt::format("{} all mlip/coulomb", FixMLIPCoulomb::ID));
}

void PairMLIP::coulomb_teardown()
{
  if (modify == nullptr) return;
  if (modify->get_fix_by_id(FixMLIPCoulomb::ID)) modify->delete_fix(FixMLIPCoulomb::ID);
  if (modify->get_compute_by_id(FixMLIPCoulomb::PE_ID)) modify->delete_compute(FixMLIPCoulomb::PE_ID);
}

double PairMLIP::memory_usage()
{
  return Pair::memory_usage() +
      (fbuf_.capacity() + qraw_.capacity() + vbuf_.capacity() + cvbuf_.capacity() + mbuf_.capacity() +
       deviation_.capacity()) * sizeof(double) +
      slot_.capacity() * sizeof(int);
}

/* ---------------------------------------------------------------------- */

const char *const FixMLIPCoulomb::ID = "MLIP_COULOMB";
const char *const FixMLIPCoulomb::PE_ID = "MLIP_COULOMB_PE";

FixMLIPCoulomb::FixMLIPCoulomb(LAMMPS *lmp, int narg, char **arg) : Fix(lmp, narg, arg)
{
  if (narg != 3) error->all(FLERR, "fix mlip/coulomb takes no arguments (pair_style mlip creates it)");
  nevery = 1;
  virial_global_flag = virial_peratom_flag = 1;
  thermo_virial = 1;
  centroidstressflag = CENTROID_AVAIL;
}

int FixMLIPCoulomb::setmask()
{
  return FixConst::PRE_REVERSE | FixConst::MIN_PRE_REVERSE | FixConst::END_OF_STEP;
}

void FixMLIPCoulomb::init()
{
  pair_ = dynamic_cast<PairMLIP *>(force->pair_match("mlip", 1));
  if (pair_ == nullptr) error->all(FLERR, "fix mlip/coulomb needs pair_style mlip (which creates it)");
  request_peratom_energy(update->ntimestep);
}

/* kspace's per-atom energies give phi_i: LAMMPS tallies per-atom energies on the steps that a
   compute with per-atom energy asks for, so this fix's compute pe/atom asks for every step. */

void FixMLIPCoulomb::request_peratom_energy(bigint step)
{
  Compute *pe = modify->get_compute_by_id(PE_ID);
  if (pe == nullptr) error->all(FLERR, "fix mlip/coulomb: compute {} (created by pair_style mlip) was deleted", PE_ID);
  pe->addstep(step);
}

void FixMLIPCoulomb::setup(int)
{
  request_peratom_energy(update->ntimestep + 1);
}

void FixMLIPCoulomb::min_setup(int)
{
  request_peratom_energy(update->ntimestep + 1);
}

void FixMLIPCoulomb::end_of_step()
{
  request_peratom_energy(update->ntimestep + 1);
}

void FixMLIPCoulomb::feed_back(int vflag)
{
  v_init(vflag);
  pair_->coulomb_forces(this);
}

void FixMLIPCoulomb::setup_pre_reverse(int, int vflag)
{
  feed_back(vflag);
}

void FixMLIPCoulomb::pre_reverse(int, int vflag)
{
  feed_back(vflag);
}

void FixMLIPCoulomb::min_pre_reverse(int, int vflag)
{
  request_peratom_energy(update->ntimestep);
  request_peratom_energy(update->ntimestep + 1);
  feed_back(vflag);
}
