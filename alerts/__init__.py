"""Alert policy: rules, profiles, alert lifecycle, reduction proposals. Pure."""

# The mypyc-compiled hot path, when built for these very sources (compiled_core).
import compiled_core

compiled_core.extend(__path__, __name__)
