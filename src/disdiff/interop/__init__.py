"""Bringing work done with other code bases into disdiff.

* :mod:`disdiff.interop.original` — key names of the original DisDiff code's checkpoints and
  their disdiff names (a pure mapping, spec section 10);
* :mod:`disdiff.interop.original_config` — the original's YAML configs as disdiff configs;
* :mod:`disdiff.interop.importer` — ``disdiff import-original``: an original checkpoint plus its
  config becomes a disdiff run directory.
"""
