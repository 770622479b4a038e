"""Importers of potentials trained by other codes (n2p2/RuNNer: :mod:`mlip.interop.n2p2`)."""
