// pair_style mlip: evaluates a deployed mlip TorchScript model (model.pt) in LAMMPS.
//
// The model contract (inputs, outputs, metadata) is documented in docs/architecture.md.
// Short-range models run with ordinary domain decomposition: each rank passes its local
// atoms in chunks, each chunk with the neighbours (local or ghost) that its edges reach;
// per-atom virials come from the model's edge forces. Charge models whose long range is
// Ewald (metadata "lammps_coulomb") stay domain-decomposed: pair_style mlip sets each atom's
// charge, LAMMPS' coul/long + kspace compute the electrostatics, and fix mlip/coulomb (created
// by the pair style) feeds the potential phi_i = dE/dq_i back to the model after kspace (see
// README.md, "The Coulomb path"). Other long-range models (metadata "long_range": true) see
// the whole periodic system: every rank gathers all atoms and all edges and evaluates the model
// on the full system (see README.md, "Cost").

#ifndef MLIP_PAIR_MLIP_H
#define MLIP_PAIR_MLIP_H

#include "fix.h"
#include "pair.h"

#include <torch/script.h>

#include <set>
#include <string>
#include <utility>
#include <vector>

namespace LAMMPS_NS {

class PairMLIP : public Pair {
 public:
  PairMLIP(class LAMMPS *);
  ~PairMLIP() override;

  void compute(int, int) override;
  void settings(int, char **) override;
  void coeff(int, char **) override;
  void init_style() override;
  double init_one(int, int) override;
  void *extract(const char *, int &) override;
  void *extract_peratom(const char *, int &) override;
  int pack_forward_comm(int, int *, double *, int, int *) override;
  void unpack_forward_comm(int, int, double *) override;
  int pack_reverse_comm(int, int, double *) override;
  void unpack_reverse_comm(int, int *, double *) override;
  double memory_usage() override;

  // the Coulomb path, step 2 (called by fix mlip/coulomb after kspace): forces through the charges
  void coulomb_forces(class FixMLIPCoulomb *fix);

 private:
  struct ModelInput {
    std::vector<double> positions;    // (n, 3) Å
    std::vector<int64_t> species;     // (n,) index into elements_
    std::vector<int64_t> edges_i, edges_j;
    std::vector<double> shifts;       // (E, 3) Å
    int64_t n_atoms = 0;
    int64_t n_local = 0;
    bool edge_forces = false;         // ask the model for its edge forces
    bool deviation = false;           // ask a committee for its members' forces
    std::vector<double> potential;    // (n_local,) eV/e, the Coulomb path's step 2
  };
  struct ModelOutput {
    double energy = 0.0;
    std::vector<double> atomic_energies;    // (n_local,) eV
    std::vector<double> forces;             // (n, 3) eV/Å
    double virial[3][3];                    // eV, -dE/dstrain
    std::vector<double> edge_forces;        // (E, 3) eV/Å, F_e = -dE/dr_ij, when asked for
    std::vector<double> extrapolation;      // (n_local,) features outside the training range, if given
    std::vector<double> charges;            // (n_local,) e before the total-charge shift (Coulomb path)
    std::vector<double> member_forces;      // (K, n, 3) eV/Å, a committee's, when asked
  };
  enum class Call { FORWARD, CHARGES, COULOMB_FORCES };    // model method of a call

  void load_model(const std::string &path);
  void allocate();
  void compute_short_range(int nlocal, int nall);
  void compute_gathered(int nlocal);
  void compute_charges(int nlocal);
  void build_chunk(int start, int end, ModelInput &in, std::vector<int> &atoms);
  void evaluate(const ModelInput &in, ModelOutput &out, Call call = Call::FORWARD);
  void tally_virial(const double w[3][3], double scale);
  void check_extrapolation(int nlocal);
  void tally_edge_virials(const ModelInput &in, const std::vector<int> &atoms,
                          const std::vector<double> &edge_forces, double **vat, double **cvat);
  void coulomb_setup();
  void start_charges();
  void coulomb_teardown();
  void coulomb_potential(int nlocal, std::vector<double> &phi);
  void finish_deviation(int nlocal);

  torch::jit::Module model_;
  torch::Dtype dtype_ = torch::kFloat64;
  std::string model_path_;
  std::vector<std::string> elements_;
  double cutoff_ = 0.0;
  bool long_range_ = false;
  std::vector<std::string> overlay_;  // terms the model leaves to LAMMPS pair styles (mlip export)
  bool model_loaded_ = false;
  bool warned_vatom_ = false;
  bool has_edge_forces_ = false;    // the model's forward takes the edge_forces argument
  bool comm_vatom_ = false, comm_cvatom_ = false;    // per-atom virials in the reverse comm
  static constexpr int DEFAULT_CHUNK = 1000;
  int chunk_ = DEFAULT_CHUNK;    // local atoms per model call (short-range), 0 = all

  std::vector<int64_t> type_to_species_;    // (ntypes + 1), -1 when unmapped

  // Extrapolation warnings (metadata min_pair_distance, feature_range; see README.md)
  static constexpr int MAX_WARNINGS = 10;    // of each kind, per pair style
  std::vector<double> rmin_species_;         // (nspecies^2) Å, 0 = not checked
  std::vector<double> rmin_sq_type_;         // (ntypes + 1)^2 Å^2, 0 = not checked
  bool check_pairs_ = false;
  double margin_ = -1.0;                     // feature range margin (widths), < 0: not checked
  std::vector<double> extrapolation_;        // (nlocal) the model's extrapolation of each local atom
  std::set<std::pair<tagint, tagint>> warned_pairs_;    // atom ID pairs already reported (this rank)
  std::set<tagint> warned_atoms_;
  int pair_warnings_left_ = MAX_WARNINGS, atom_warnings_left_ = MAX_WARNINGS;
  std::vector<double> fbuf_;                // (nall, 3) forces of this step (local + ghost)
  std::vector<int> slot_;                   // (nall) atom's index in the current model call, -1: absent

  // The Coulomb path (metadata lammps_coulomb; README.md, "The Coulomb path")
  bool coulomb_ = false;
  double total_charge_ = 0.0;               // e, pair_style keyword total_charge
  std::vector<double> typical_q_;           // e per element (metadata), start of an uncharged system
  std::vector<double> qraw_;                // (nlocal) charges before the total-charge shift
  std::vector<double> vbuf_, cvbuf_;        // (nall, 6), (nall, 9) per-atom virials of step 2
  bool comm_fbuf_only_ = false;             // reverse comm of step 2: which buffers travel
  bool comm_vbuf_ = false, comm_cvbuf_ = false;

  // Committee force deviation (metadata committee >= 2; README.md, "Force deviation")
  int committee_ = 1;                       // members K
  int deviation_request_ = 0;               // set by fix pair ("deviation" with trigger 1)
  std::string deviation_path_;              // pair_style keyword deviation_file
  int deviation_every_ = 1;                 // pair_style keyword every
  FILE *deviation_fp_ = nullptr;            // rank 0
  bool comm_members_ = false;               // reverse comm of member forces only
  std::vector<double> mbuf_;                // (nall, K, 3) member forces of this step
  std::vector<double> deviation_;           // (nlocal) d_i = sqrt(mean_k |F_i^k - mean F_i|^2) eV/Å
};

// Created by pair_style mlip for a Coulomb-path model: after kspace (pre_reverse) it calls
// PairMLIP::coulomb_forces, and it makes LAMMPS tally per-atom energies on every step (kspace's
// per-atom energies give phi_i). Its virial is the model's virial through the charges.
class FixMLIPCoulomb : public Fix {
 public:
  FixMLIPCoulomb(class LAMMPS *, int, char **);
  int setmask() override;
  void init() override;
  void setup(int) override;
  void setup_pre_reverse(int, int) override;
  void pre_reverse(int, int) override;
  void min_pre_reverse(int, int) override;
  void end_of_step() override;
  void min_setup(int) override;

  bool tally_global() const { return vflag_global; }     // this step's virial requests
  bool tally_atom() const { return vflag_atom; }
  bool tally_centroid() const { return cvflag_atom; }

  static const char *const ID;        // its fix ID
  static const char *const PE_ID;     // its compute pe/atom's ID

 private:
  PairMLIP *pair_ = nullptr;
  void request_peratom_energy(bigint step);
  void feed_back(int vflag);
};

}    // namespace LAMMPS_NS

#endif
