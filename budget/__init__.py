"""Domain core of budgetwatch: events, calendar, ledger, indicators.

Pure: nothing here does I/O or reads the clock; dates are arguments.
"""

# The mypyc-compiled hot path, when built for these very sources (compiled_core).
import compiled_core

compiled_core.extend(__path__, __name__)
