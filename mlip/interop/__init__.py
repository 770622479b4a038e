"""Readers and importers of potential files written by other codes: n2p2/RuNNer models
(:mod:`mlip.interop.n2p2`) and RANN parameter files (:mod:`mlip.interop.rann`)."""
