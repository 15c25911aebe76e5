"""The multilingual probe set: schema, loading, validation and selection profiles."""

from unredact.probes.loader import DEFAULT_PROBES, load_probes, select_probes, validate_file
from unredact.probes.schema import Probe

__all__ = ["DEFAULT_PROBES", "Probe", "load_probes", "select_probes", "validate_file"]
