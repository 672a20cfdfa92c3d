"""Domain core of budgetwatch: events, calendar, ledger, indicators.

Pure: nothing here does I/O or reads the clock; dates are arguments.
"""
